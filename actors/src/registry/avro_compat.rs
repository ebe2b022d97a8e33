//! Avro reader/writer compatibility with the semantics of Apache Avro's Java
//! `SchemaCompatibility`, which Confluent Schema Registry uses: a reader schema can read
//! data written with a writer schema when schema resolution succeeds for every datum.
//!
//! - Primitives match themselves; promotions `int → long → float → double` and
//!   `string ↔ bytes`. Logical types are checked as their underlying type.
//! - Named types (record, enum, fixed) match when their unqualified names are equal or the
//!   reader lists the writer's full name among its aliases.
//! - Records: every reader field is found in the writer by name or by one of the reader
//!   field's aliases, or has a default. Writer fields the reader lacks are skipped.
//! - Enums: every writer symbol is a reader symbol, unless the reader has a default symbol.
//! - Fixed: same size. Arrays and maps: their items/values.
//! - Unions: a writer union needs every branch readable; a reader union needs some branch
//!   that reads the writer.
use apache_avro::schema::{Name, NamesRef, ResolvedSchema, Schema};
use std::collections::HashSet;

/// One reason a reader cannot read a writer, with a JSON-pointer-like location in the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// Avro's incompatibility type, e.g. `READER_FIELD_MISSING_DEFAULT_VALUE`.
    pub kind: &'static str,
    /// Location in the reader schema, e.g. `/fields/1/type`.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

/// Check whether `reader` can read data written with `writer`; empty means compatible.
pub fn check(reader: &Schema, writer: &Schema) -> Vec<Incompatibility> {
    let (Ok(rr), Ok(wr)) = (ResolvedSchema::try_from(reader), ResolvedSchema::try_from(writer)) else {
        return vec![Incompatibility { kind: "UNRESOLVED_REFERENCE", location: "/".into(), message: "schema has unresolved named references".into() }];
    };
    let mut c = Checker { rnames: rr.get_names(), wnames: wr.get_names(), in_progress: HashSet::new(), out: Vec::new() };
    c.check(reader, writer, "");
    c.out
}

struct Checker<'a, 's> {
    rnames: &'a NamesRef<'s>,
    wnames: &'a NamesRef<'s>,
    /// Named pairs being checked (recursive types): assumed compatible while in progress.
    in_progress: HashSet<(String, String)>,
    out: Vec<Incompatibility>,
}

/// The schema a logical type is stored as; refs resolved through `names`.
fn base<'x>(s: &'x Schema, names: &'x NamesRef<'_>) -> Base<'x> {
    match s {
        Schema::Ref { name } => match lookup(names, name) {
            Some(t) => base(t, names),
            None => Base::Unresolved(name.fullname(None)),
        },
        Schema::Null => Base::Null,
        Schema::Boolean => Base::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Base::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Base::Long,
        Schema::Float => Base::Float,
        Schema::Double => Base::Double,
        Schema::Bytes | Schema::BigDecimal => Base::Bytes,
        Schema::String | Schema::Uuid => Base::String,
        Schema::Decimal(d) => base(&d.inner, names),
        Schema::Duration => Base::Duration,
        Schema::Array(a) => Base::Array(&a.items),
        Schema::Map(m) => Base::Map(&m.types),
        Schema::Union(u) => Base::Union(u.variants()),
        Schema::Record(r) => Base::Record(r),
        Schema::Enum(e) => Base::Enum(e),
        Schema::Fixed(f) => Base::Fixed(f),
    }
}

fn lookup<'x>(names: &'x NamesRef<'_>, name: &Name) -> Option<&'x Schema> {
    if let Some(s) = names.get(name) {
        return Some(s);
    }
    let full = name.fullname(None);
    names.iter().find(|(n, _)| n.fullname(None) == full).map(|(_, s)| *s)
}

enum Base<'x> {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Duration,
    Array(&'x Schema),
    Map(&'x Schema),
    Union(&'x [Schema]),
    Record(&'x apache_avro::schema::RecordSchema),
    Enum(&'x apache_avro::schema::EnumSchema),
    Fixed(&'x apache_avro::schema::FixedSchema),
    Unresolved(String),
}

impl Base<'_> {
    fn type_name(&self) -> String {
        match self {
            Base::Null => "null".into(),
            Base::Boolean => "boolean".into(),
            Base::Int => "int".into(),
            Base::Long => "long".into(),
            Base::Float => "float".into(),
            Base::Double => "double".into(),
            Base::Bytes => "bytes".into(),
            Base::String => "string".into(),
            Base::Duration => "fixed(duration)".into(),
            Base::Array(_) => "array".into(),
            Base::Map(_) => "map".into(),
            Base::Union(_) => "union".into(),
            Base::Record(r) => format!("record {}", r.name.fullname(None)),
            Base::Enum(e) => format!("enum {}", e.name.fullname(None)),
            Base::Fixed(f) => format!("fixed {}", f.name.fullname(None)),
            Base::Unresolved(n) => format!("unresolved {n}"),
        }
    }
}

/// Java's `schemaNameEquals`: equal unqualified names, or the writer's full name among the
/// reader's aliases.
fn names_match(rname: &Name, raliases: &Option<Vec<apache_avro::schema::Alias>>, wname: &Name) -> bool {
    if rname.name.rsplit('.').next() == wname.name.rsplit('.').next() {
        return true;
    }
    let wfull = wname.fullname(None);
    raliases.iter().flatten().any(|a| a.fullname(rname.namespace.clone()) == wfull || a.fullname(None) == wfull)
}

impl Checker<'_, '_> {
    fn fail(&mut self, kind: &'static str, location: &str, message: String) -> bool {
        self.out.push(Incompatibility { kind, location: if location.is_empty() { "/".into() } else { location.into() }, message });
        false
    }

    /// Whether `r` reads `w`, recording why not. `loc` is the location in the reader.
    fn check(&mut self, r: &Schema, w: &Schema, loc: &str) -> bool {
        let (rb, wb) = (base(r, self.rnames), base(w, self.wnames));
        if let Base::Unresolved(n) = &rb {
            return self.fail("UNRESOLVED_REFERENCE", loc, format!("reader refers to unknown type {n}"));
        }
        if let Base::Unresolved(n) = &wb {
            return self.fail("UNRESOLVED_REFERENCE", loc, format!("writer refers to unknown type {n}"));
        }
        match (&rb, &wb) {
            (Base::Null, Base::Null)
            | (Base::Boolean, Base::Boolean)
            | (Base::Int, Base::Int)
            | (Base::Long, Base::Long)
            | (Base::Float, Base::Float)
            | (Base::Double, Base::Double)
            | (Base::Bytes, Base::Bytes)
            | (Base::String, Base::String)
            | (Base::Duration, Base::Duration) => true,
            (Base::Array(ri), Base::Array(wi)) => self.check(ri, wi, &format!("{loc}/items")),
            (Base::Map(rv), Base::Map(wv)) => self.check(rv, wv, &format!("{loc}/values")),
            (Base::Fixed(rf), Base::Fixed(wf)) => {
                let mut ok = true;
                if !names_match(&rf.name, &rf.aliases, &wf.name) {
                    ok = self.fail("NAME_MISMATCH", &format!("{loc}/name"), format!("expected: {}", wf.name.fullname(None)));
                }
                if rf.size != wf.size {
                    ok = self.fail("FIXED_SIZE_MISMATCH", &format!("{loc}/size"), format!("expected: {}, found: {}", wf.size, rf.size));
                }
                ok
            }
            (Base::Enum(re), Base::Enum(we)) => {
                let mut ok = true;
                if !names_match(&re.name, &re.aliases, &we.name) {
                    ok = self.fail("NAME_MISMATCH", &format!("{loc}/name"), format!("expected: {}", we.name.fullname(None)));
                }
                let missing: Vec<&String> = we.symbols.iter().filter(|s| !re.symbols.contains(s)).collect();
                let reader_default = re.default.as_ref().is_some_and(|d| re.symbols.contains(d));
                if !missing.is_empty() && !reader_default {
                    let list = missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                    ok = self.fail("MISSING_ENUM_SYMBOLS", &format!("{loc}/symbols"), format!("[{list}]"));
                }
                ok
            }
            (Base::Record(rr), Base::Record(wr)) => {
                if !names_match(&rr.name, &rr.aliases, &wr.name) {
                    return self.fail("NAME_MISMATCH", &format!("{loc}/name"), format!("expected: {}", wr.name.fullname(None)));
                }
                let pair = (rr.name.fullname(None), wr.name.fullname(None));
                if !self.in_progress.insert(pair.clone()) {
                    return true;
                }
                let mut ok = true;
                for (i, rf) in rr.fields.iter().enumerate() {
                    let floc = format!("{loc}/fields/{i}");
                    let mut matches = wr.fields.iter().filter(|wf| wf.name == rf.name || rf.aliases.iter().flatten().any(|a| *a == wf.name));
                    match (matches.next(), matches.next()) {
                        (Some(wf), None) => ok &= self.check(&rf.schema, &wf.schema, &format!("{floc}/type")),
                        (Some(_), Some(_)) => {
                            ok = self.fail("AMBIGUOUS_FIELD", &floc, format!("reader field '{}' matches several writer fields by name and aliases", rf.name));
                        }
                        (None, _) if rf.default.is_some() => {}
                        (None, _) => {
                            ok = self.fail(
                                "READER_FIELD_MISSING_DEFAULT_VALUE",
                                &floc,
                                format!("field '{}' is missing from the writer schema and has no default value in the reader", rf.name),
                            );
                        }
                    }
                }
                self.in_progress.remove(&pair);
                ok
            }
            (_, Base::Union(wbranches)) => {
                // Every writer branch must be readable (reader union or not).
                let mut ok = true;
                for (i, wbr) in wbranches.iter().enumerate() {
                    if !self.readable(r, wbr) {
                        let wt = base(wbr, self.wnames).type_name();
                        ok = self.fail(
                            if matches!(rb, Base::Union(_)) { "MISSING_UNION_BRANCH" } else { "TYPE_MISMATCH" },
                            loc,
                            format!("reader {} cannot read writer union branch {i} ({wt})", rb.type_name()),
                        );
                    }
                }
                ok
            }
            (Base::Union(rbranches), _) => {
                if rbranches.iter().any(|rbr| self.readable(rbr, w)) {
                    true
                } else {
                    self.fail("MISSING_UNION_BRANCH", loc, format!("reader union lacks a branch that reads writer type {}", wb.type_name()))
                }
            }
            (Base::Long, Base::Int) | (Base::Float, Base::Int | Base::Long) | (Base::Double, Base::Int | Base::Long | Base::Float) => true,
            (Base::Bytes, Base::String) | (Base::String, Base::Bytes) => true,
            _ => self.fail("TYPE_MISMATCH", loc, format!("reader type {} cannot read writer type {}", rb.type_name(), wb.type_name())),
        }
    }

    /// Like [`Self::check`] but records nothing (used to pick union branches).
    fn readable(&mut self, r: &Schema, w: &Schema) -> bool {
        let saved = self.out.len();
        let ok = self.check(r, w, "");
        self.out.truncate(saved);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Schema {
        Schema::parse_str(t).unwrap()
    }

    #[test]
    fn recursive_types_terminate() {
        let list = r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"],"default":null}]}"#;
        assert!(check(&s(list), &s(list)).is_empty());
        let list2 = r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","Node"],"default":null}]}"#;
        assert!(check(&s(list2), &s(list)).is_empty());
        assert!(!check(&s(list), &s(list2)).is_empty());
    }

    #[test]
    fn messages_name_the_location() {
        let w = s(r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"}]}"#);
        let r = s(r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"},{"name":"b","type":"string"}]}"#);
        let out = check(&r, &w);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, "READER_FIELD_MISSING_DEFAULT_VALUE");
        assert_eq!(out[0].location, "/fields/1");
    }
}
