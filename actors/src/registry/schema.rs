//! Parsed schemas — Avro (apache-avro) and JSON Schema (jsonschema) — and the canonical
//! text that decides whether two registrations are the same schema.
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Schema type, spelled as Confluent's `schemaType` (`AVRO` when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SchemaType {
    /// Apache Avro.
    Avro,
    /// JSON Schema (drafts 4 to 2020-12).
    Json,
}

impl SchemaType {
    /// Confluent's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
        }
    }

    /// Parse Confluent's `schemaType`; absent means AVRO.
    ///
    /// # Errors
    /// A message naming the unsupported type.
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s.map(str::trim) {
            None | Some("") => Ok(SchemaType::Avro),
            Some(t) if t.eq_ignore_ascii_case("AVRO") => Ok(SchemaType::Avro),
            Some(t) if t.eq_ignore_ascii_case("JSON") => Ok(SchemaType::Json),
            Some(t) if t.eq_ignore_ascii_case("PROTOBUF") => Err("schema type PROTOBUF is not supported by this registry (AVRO and JSON are)".into()),
            Some(t) => Err(format!("unknown schema type `{t}` (AVRO or JSON)")),
        }
    }
}

impl fmt::Display for SchemaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A schema that parsed, ready for compatibility checks and decoding.
pub struct ParsedSchema {
    kind: SchemaType,
    canonical: String,
    json: Value,
    body: Body,
}

enum Body {
    Avro(apache_avro::Schema),
    Json(Box<jsonschema::Validator>),
}

impl fmt::Debug for ParsedSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedSchema").field("kind", &self.kind).field("canonical", &self.canonical).finish()
    }
}

impl ParsedSchema {
    /// Parse schema text of the given type.
    ///
    /// # Errors
    /// A message saying what is wrong with the schema (Confluent returns it with 42201).
    pub fn parse(kind: SchemaType, text: &str) -> Result<Self, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("schema is not valid JSON: {e}"))?;
        let canonical = canonical_json(&json);
        let body = match kind {
            SchemaType::Avro => {
                // apache-avro panics on some malformed names instead of returning an error.
                let parsed = std::panic::catch_unwind(|| apache_avro::Schema::parse(&json))
                    .map_err(|_| "invalid Avro schema: the parser rejected a name or namespace".to_string())?;
                Body::Avro(parsed.map_err(|e| format!("invalid Avro schema: {e}"))?)
            }
            SchemaType::Json => {
                if !(json.is_object() || json.is_boolean()) {
                    return Err("invalid JSON Schema: must be an object or a boolean".into());
                }
                let v = jsonschema::validator_for(&json).map_err(|e| format!("invalid JSON Schema: {e}"))?;
                Body::Json(Box::new(v))
            }
        };
        Ok(Self { kind, canonical, json, body })
    }

    /// The schema type.
    pub fn kind(&self) -> SchemaType {
        self.kind
    }

    /// Canonical text: the schema's JSON with object keys sorted and no whitespace. Two
    /// registrations with the same canonical text are the same schema (same id).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The schema as JSON.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The Avro schema, if this is one.
    pub fn avro(&self) -> Option<&apache_avro::Schema> {
        match &self.body {
            Body::Avro(s) => Some(s),
            Body::Json(_) => None,
        }
    }

    /// The compiled JSON Schema validator, if this is one.
    pub fn json_validator(&self) -> Option<&jsonschema::Validator> {
        match &self.body {
            Body::Json(v) => Some(v),
            Body::Avro(_) => None,
        }
    }

    /// Check every Avro record field default against the field's type (a union's default
    /// must match its first branch), as Confluent does with `avro.validate.defaults=true`.
    /// JSON Schemas pass.
    ///
    /// # Errors
    /// A message naming the field whose default does not match.
    pub fn check_defaults(&self) -> Result<(), String> {
        match self.avro() {
            Some(a) => check_avro_defaults(a),
            None => Ok(()),
        }
    }
}

fn check_avro_defaults(schema: &apache_avro::Schema) -> Result<(), String> {
    let resolved = apache_avro::schema::ResolvedSchema::try_from(schema).map_err(|e| format!("invalid Avro schema: {e}"))?;
    let mut seen = std::collections::HashSet::new();
    walk_defaults(schema, resolved.get_names(), &mut seen, 0)
}

type Names<'a> = apache_avro::schema::NamesRef<'a>;

fn deref<'a>(s: &'a apache_avro::Schema, names: &'a Names<'_>) -> Option<&'a apache_avro::Schema> {
    match s {
        apache_avro::Schema::Ref { name } => {
            names.get(name).copied().or_else(|| names.iter().find(|(n, _)| n.fullname(None) == name.fullname(None)).map(|(_, s)| *s))
        }
        other => Some(other),
    }
}

fn walk_defaults(s: &apache_avro::Schema, names: &Names<'_>, seen: &mut std::collections::HashSet<String>, depth: usize) -> Result<(), String> {
    use apache_avro::Schema as S;
    if depth > 64 {
        return Ok(());
    }
    match s {
        S::Record(r) => {
            if !seen.insert(r.name.fullname(None)) {
                return Ok(());
            }
            for f in &r.fields {
                if let Some(d) = &f.default {
                    if !default_matches(&f.schema, d, names, 0) {
                        return Err(format!(
                            "invalid Avro schema: default {d} of field `{}` in record {} does not match its type",
                            f.name,
                            r.name.fullname(None)
                        ));
                    }
                }
                walk_defaults(&f.schema, names, seen, depth + 1)?;
            }
            Ok(())
        }
        S::Array(a) => walk_defaults(&a.items, names, seen, depth + 1),
        S::Map(m) => walk_defaults(&m.types, names, seen, depth + 1),
        S::Union(u) => u.variants().iter().try_for_each(|v| walk_defaults(v, names, seen, depth + 1)),
        _ => Ok(()),
    }
}

fn default_matches(s: &apache_avro::Schema, v: &Value, names: &Names<'_>, depth: usize) -> bool {
    use apache_avro::Schema as S;
    if depth > 64 {
        return true;
    }
    let Some(s) = deref(s, names) else { return false };
    match s {
        S::Null => v.is_null(),
        S::Boolean => v.is_boolean(),
        S::Int | S::Long | S::Date | S::TimeMillis | S::TimeMicros | S::TimestampMillis | S::TimestampMicros | S::TimestampNanos => v.is_i64() || v.is_u64(),
        S::LocalTimestampMillis | S::LocalTimestampMicros | S::LocalTimestampNanos => v.is_i64() || v.is_u64(),
        S::Float | S::Double => v.is_number(),
        S::Bytes | S::String | S::Uuid | S::Fixed(_) | S::Duration | S::Decimal(_) | S::BigDecimal => v.is_string(),
        S::Enum(e) => v.as_str().is_some_and(|x| e.symbols.iter().any(|s| s == x)),
        S::Array(a) => v.as_array().is_some_and(|xs| xs.iter().all(|x| default_matches(&a.items, x, names, depth + 1))),
        S::Map(m) => v.as_object().is_some_and(|o| o.values().all(|x| default_matches(&m.types, x, names, depth + 1))),
        S::Union(u) => u.variants().first().is_some_and(|first| default_matches(first, v, names, depth + 1)),
        S::Record(r) => v.as_object().is_some_and(|o| {
            r.fields.iter().all(|f| match o.get(&f.name) {
                Some(x) => default_matches(&f.schema, x, names, depth + 1),
                None => f.default.is_some(),
            })
        }),
        S::Ref { .. } => false,
    }
}

/// JSON text with object keys sorted recursively and no insignificant whitespace.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_ignores_key_order_and_whitespace() {
        let a = ParsedSchema::parse(SchemaType::Avro, r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"}]}"#).unwrap();
        let b = ParsedSchema::parse(SchemaType::Avro, r#"{ "name" : "r", "fields":[{"type":"int","name":"a"}], "type":"record" }"#).unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert!(a.avro().is_some());
    }

    #[test]
    fn bad_schemas_are_rejected_with_reasons() {
        assert!(ParsedSchema::parse(SchemaType::Avro, "{").unwrap_err().contains("not valid JSON"));
        assert!(ParsedSchema::parse(SchemaType::Avro, r#"{"type":"record","name":"r"}"#).unwrap_err().contains("invalid Avro"));
        assert!(ParsedSchema::parse(SchemaType::Avro, r#"{"type":"record","name":"1bad","fields":[]}"#).is_err());
        // Like Confluent (avro.validate.defaults=false), a default that does not match the
        // first union branch parses; the strict check rejects it.
        let bad_default = r#"{"type":"record","name":"r","fields":[{"name":"f","type":["null","string"],"default":"null"}]}"#;
        let parsed = ParsedSchema::parse(SchemaType::Avro, bad_default).unwrap();
        assert!(parsed.check_defaults().unwrap_err().contains("field `f`"));
        let nested = r#"{"type":"record","name":"r","fields":[{"name":"n","type":{"type":"record","name":"n","fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["A"]},"default":"B"}]}}]}"#;
        // (apache-avro itself rejects some bad defaults at parse time; either way it is refused.)
        assert!(ParsedSchema::parse(SchemaType::Avro, nested).map_or(true, |p| p.check_defaults().is_err()));
        let nested_union = r#"{"type":"record","name":"r","fields":[{"name":"n","type":{"type":"record","name":"n","fields":[{"name":"u","type":["int","null"],"default":null}]}}]}"#;
        assert!(ParsedSchema::parse(SchemaType::Avro, nested_union).unwrap().check_defaults().unwrap_err().contains("field `u`"));
        let good = r#"{"type":"record","name":"r","fields":[{"name":"f","type":["null","string"],"default":null},{"name":"l","type":{"type":"array","items":"int"},"default":[1,2]}]}"#;
        assert!(ParsedSchema::parse(SchemaType::Avro, good).unwrap().check_defaults().is_ok());
        assert!(ParsedSchema::parse(SchemaType::Json, "[1]").unwrap_err().contains("object or a boolean"));
        assert!(ParsedSchema::parse(SchemaType::Json, r#"{"type":"nope"}"#).is_err());
        assert_eq!(SchemaType::parse(Some("PROTOBUF")).unwrap_err(), "schema type PROTOBUF is not supported by this registry (AVRO and JSON are)");
        assert_eq!(SchemaType::parse(None), Ok(SchemaType::Avro));
    }
}
