//! Registry tests: the compatibility table (Confluent's documented verdicts), the
//! subject/version/id rules, and the REST API under malformed input.
use super::compat;
use super::schema::{ParsedSchema, SchemaType};
use super::state::{Lifecycle, VersionSel};
use super::*;
use vigil_config::Compatibility::{self, Backward, BackwardTransitive, Forward, ForwardTransitive, Full, FullTransitive};

fn rec(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"myrecord","fields":[{fields}]}}"#)
}

// Schemas of Confluent's AvroCompatibilityTest.
fn s1() -> String {
    rec(r#"{"type":"string","name":"f1"}"#)
}
fn s2() -> String {
    rec(r#"{"type":"string","name":"f1"},{"type":"string","name":"f2","default":"foo"}"#)
}
fn s3() -> String {
    rec(r#"{"type":"string","name":"f1"},{"type":"string","name":"f2"}"#)
}
fn s4() -> String {
    rec(r#"{"type":"string","name":"f1_new","aliases":["f1"]}"#)
}
fn s6() -> String {
    rec(r#"{"type":["null","string"],"name":"f1","doc":"doc of f1"}"#)
}
fn s7() -> String {
    rec(r#"{"type":["null","string","int"],"name":"f1","doc":"doc of f1"}"#)
}
fn s8() -> String {
    rec(r#"{"type":"string","name":"f1"},{"type":"string","name":"f2","default":"foo"},{"type":"string","name":"f3","default":"bar"}"#)
}
fn field(t: &str) -> String {
    rec(&format!(r#"{{"name":"f","type":{t}}}"#))
}
fn enum_field(symbols: &str, default: Option<&str>) -> String {
    let d = default.map(|d| format!(r#","default":"{d}""#)).unwrap_or_default();
    field(&format!(r#"{{"type":"enum","name":"E","symbols":[{symbols}]{d}}}"#))
}
fn fixed(name: &str, size: u32, aliases: &str) -> String {
    field(&format!(r#"{{"type":"fixed","name":"{name}","size":{size},"aliases":[{aliases}]}}"#))
}
fn named(name: &str, ns: &str, aliases: &str) -> String {
    format!(r#"{{"type":"record","name":"{name}","namespace":"{ns}","aliases":[{aliases}],"fields":[{{"name":"a","type":"int"}}]}}"#)
}
fn nested(inner_fields: &str) -> String {
    rec(&format!(r#"{{"name":"inner","type":{{"type":"record","name":"Inner","fields":[{inner_fields}]}}}}"#))
}

fn obj(props: &str, extra: &str) -> String {
    format!(r#"{{"type":"object","properties":{{{props}}}{extra}}}"#)
}

struct Case {
    name: &'static str,
    level: Compatibility,
    kind: SchemaType,
    new: String,
    previous: Vec<String>,
    compatible: bool,
}

fn avro(name: &'static str, level: Compatibility, new: String, previous: Vec<String>, compatible: bool) -> Case {
    Case { name, level, kind: SchemaType::Avro, new, previous, compatible }
}

fn json(name: &'static str, level: Compatibility, new: String, previous: Vec<String>, compatible: bool) -> Case {
    Case { name, level, kind: SchemaType::Json, new, previous, compatible }
}

fn cases() -> Vec<Case> {
    let a_str = obj(r#""a":{"type":"string"}"#, "");
    let a_str_closed = obj(r#""a":{"type":"string"}"#, r#","additionalProperties":false"#);
    vec![
        // --- Confluent AvroCompatibilityTest: backward
        avro("adding a field with default is backward compatible", Backward, s2(), vec![s1()], true),
        avro("adding a field without default is not backward compatible", Backward, s3(), vec![s1()], false),
        avro("renaming a field with an alias is backward compatible", Backward, s4(), vec![s1()], true),
        avro("evolving a field type to a union is backward compatible", Backward, s6(), vec![s1()], true),
        avro("removing a type from a union is not backward compatible", Backward, s1(), vec![s6()], false),
        avro("adding a type to a union is backward compatible", Backward, s7(), vec![s6()], true),
        avro("removing a type from a 3-union is not backward compatible", Backward, s6(), vec![s7()], false),
        // --- backward transitive
        avro("BACKWARD checks only the latest version", Backward, s3(), vec![s1(), s2()], true),
        avro("BACKWARD_TRANSITIVE: adding a default field", BackwardTransitive, s2(), vec![s1()], true),
        avro("BACKWARD_TRANSITIVE: two defaulted fields over two versions", BackwardTransitive, s8(), vec![s1(), s2()], true),
        avro("BACKWARD_TRANSITIVE: only the oldest version conflicts", BackwardTransitive, s3(), vec![s1(), s2()], false),
        // --- forward
        avro("adding a field is forward compatible", Forward, s2(), vec![s1()], true),
        avro("adding a field without default is forward compatible", Forward, s3(), vec![s1()], true),
        avro("adding a default to a field is forward compatible", Forward, s3(), vec![s2()], true),
        avro("removing a default is forward compatible", Forward, s2(), vec![s3()], true),
        avro("removing a field the old schema requires is not forward compatible", Forward, s1(), vec![s3()], false),
        avro("FORWARD checks only the latest version", Forward, s1(), vec![s3(), s2()], true),
        avro("FORWARD_TRANSITIVE: only the oldest version conflicts", ForwardTransitive, s1(), vec![s3(), s2()], false),
        // --- full
        avro("FULL: adding a default field", Full, s2(), vec![s1()], true),
        avro("FULL: adding a field without default", Full, s3(), vec![s1()], false),
        avro("FULL checks only the latest version", Full, s3(), vec![s1(), s2()], true),
        avro("FULL_TRANSITIVE: adding a field without default across versions", FullTransitive, s3(), vec![s1(), s2()], false),
        avro("FULL: removing a defaulted field", Full, s1(), vec![s3(), s2()], true),
        avro("FULL_TRANSITIVE: removing a field one old version requires", FullTransitive, s1(), vec![s3(), s2()], false),
        avro("NONE accepts anything", Compatibility::None, s3(), vec![s1()], true),
        avro("NONE accepts a type change", Compatibility::None, field(r#""int""#), vec![field(r#""string""#)], true),
        // --- promotions (Avro spec)
        avro("int to long is backward compatible", Backward, field(r#""long""#), vec![field(r#""int""#)], true),
        avro("long to int is not backward compatible", Backward, field(r#""int""#), vec![field(r#""long""#)], false),
        avro("int to float is backward compatible", Backward, field(r#""float""#), vec![field(r#""int""#)], true),
        avro("long to double is backward compatible", Backward, field(r#""double""#), vec![field(r#""long""#)], true),
        avro("float to double is backward compatible", Backward, field(r#""double""#), vec![field(r#""float""#)], true),
        avro("double to float is not backward compatible", Backward, field(r#""float""#), vec![field(r#""double""#)], false),
        avro("string to bytes is backward compatible", Backward, field(r#""bytes""#), vec![field(r#""string""#)], true),
        avro("bytes to string is backward compatible", Backward, field(r#""string""#), vec![field(r#""bytes""#)], true),
        avro("int to string is not backward compatible", Backward, field(r#""string""#), vec![field(r#""int""#)], false),
        avro("int to long is not forward compatible", Forward, field(r#""long""#), vec![field(r#""int""#)], false),
        avro("int to long is not fully compatible", Full, field(r#""long""#), vec![field(r#""int""#)], false),
        avro("string to bytes is fully compatible", Full, field(r#""bytes""#), vec![field(r#""string""#)], true),
        avro("logical timestamp-millis reads long", Backward, field(r#"{"type":"long","logicalType":"timestamp-millis"}"#), vec![field(r#""long""#)], true),
        avro("primitive schema string to bytes", Backward, r#""bytes""#.into(), vec![r#""string""#.into()], true),
        avro("primitive schema int to string", Backward, r#""string""#.into(), vec![r#""int""#.into()], false),
        // --- enums
        avro("adding an enum symbol is backward compatible", Backward, enum_field(r#""A","B","C""#, None), vec![enum_field(r#""A","B""#, None)], true),
        avro("removing an enum symbol is not backward compatible", Backward, enum_field(r#""A""#, None), vec![enum_field(r#""A","B""#, None)], false),
        avro(
            "removing an enum symbol with a reader default is backward compatible",
            Backward,
            enum_field(r#""A","Z""#, Some("Z")),
            vec![enum_field(r#""A","B""#, None)],
            true,
        ),
        avro(
            "adding an enum symbol is not forward compatible without a default",
            Forward,
            enum_field(r#""A","B","C""#, None),
            vec![enum_field(r#""A","B""#, None)],
            false,
        ),
        avro(
            "adding an enum symbol is forward compatible when the old enum has a default",
            Forward,
            enum_field(r#""A","B","C""#, Some("A")),
            vec![enum_field(r#""A","B""#, Some("A"))],
            true,
        ),
        // --- fixed
        avro("fixed with the same size", Full, fixed("F", 4, ""), vec![fixed("F", 4, "")], true),
        avro("fixed size change is not compatible", Backward, fixed("F", 8, ""), vec![fixed("F", 4, "")], false),
        avro("fixed rename is not compatible", Backward, fixed("G", 4, ""), vec![fixed("F", 4, "")], false),
        avro("fixed rename with an alias is backward compatible", Backward, fixed("G", 4, r#""F""#), vec![fixed("F", 4, "")], true),
        // --- arrays, maps
        avro("array items int to long", Backward, field(r#"{"type":"array","items":"long"}"#), vec![field(r#"{"type":"array","items":"int"}"#)], true),
        avro("array items long to int", Backward, field(r#"{"type":"array","items":"int"}"#), vec![field(r#"{"type":"array","items":"long"}"#)], false),
        avro("map values int to double", Backward, field(r#"{"type":"map","values":"double"}"#), vec![field(r#"{"type":"map","values":"int"}"#)], true),
        avro("map to array is not compatible", Backward, field(r#"{"type":"array","items":"int"}"#), vec![field(r#"{"type":"map","values":"int"}"#)], false),
        // --- names and nesting
        avro("record rename is not compatible", Backward, named("Other", "ns", ""), vec![named("Rec", "ns", "")], false),
        avro("record rename with an alias is backward compatible", Backward, named("Other", "ns", r#""ns.Rec""#), vec![named("Rec", "ns", "")], true),
        avro("namespace change alone is compatible (unqualified names match)", Full, named("Rec", "ns2", ""), vec![named("Rec", "ns1", "")], true),
        avro(
            "nested record gains a defaulted field",
            Full,
            nested(r#"{"name":"x","type":"int"},{"name":"y","type":"int","default":0}"#),
            vec![nested(r#"{"name":"x","type":"int"}"#)],
            true,
        ),
        avro("nested record field type change", Backward, nested(r#"{"name":"x","type":"string"}"#), vec![nested(r#"{"name":"x","type":"int"}"#)], false),
        avro("a union reads a plain writer of one of its branches", Backward, field(r#"["null","string"]"#), vec![field(r#""string""#)], true),
        avro("a plain reader cannot read a writer union with other branches", Backward, field(r#""string""#), vec![field(r#"["null","string"]"#)], false),
        avro("a long reader reads an int/long writer union", Backward, field(r#""long""#), vec![field(r#"["int","long"]"#)], true),
        avro("removing a field is backward compatible", Backward, s1(), vec![s3()], true),
        avro("the first version of a subject is always compatible", FullTransitive, s3(), vec![], true),
        // --- JSON Schema (Confluent's content-model rules)
        json(
            "open model: adding a property is not backward compatible",
            Backward,
            obj(r#""a":{"type":"string"},"b":{"type":"string"}"#, ""),
            vec![a_str.clone()],
            false,
        ),
        json("open model: removing a property is backward compatible", Backward, obj("", ""), vec![a_str.clone()], true),
        json(
            "open model: adding a property is forward compatible",
            Forward,
            obj(r#""a":{"type":"string"},"b":{"type":"string"}"#, ""),
            vec![a_str.clone()],
            true,
        ),
        json("open model: removing a property is not forward compatible", Forward, obj("", ""), vec![a_str.clone()], false),
        json(
            "closed model: adding an optional property is backward compatible",
            Backward,
            obj(r#""a":{"type":"string"},"b":{"type":"string"}"#, r#","additionalProperties":false"#),
            vec![a_str_closed.clone()],
            true,
        ),
        json(
            "closed model: adding a required property is not backward compatible",
            Backward,
            obj(r#""a":{"type":"string"},"b":{"type":"string"}"#, r#","additionalProperties":false,"required":["b"]"#),
            vec![a_str_closed.clone()],
            false,
        ),
        json(
            "closed model: adding a required property with a default is backward compatible",
            Backward,
            obj(r#""a":{"type":"string"},"b":{"type":"string","default":"x"}"#, r#","additionalProperties":false,"required":["b"]"#),
            vec![a_str_closed.clone()],
            true,
        ),
        json(
            "closed model: removing a property is not backward compatible",
            Backward,
            obj("", r#","additionalProperties":false"#),
            vec![a_str_closed.clone()],
            false,
        ),
        json(
            "closed model: adding an optional property is not fully compatible",
            Full,
            obj(r#""a":{"type":"string"},"b":{"type":"string"}"#, r#","additionalProperties":false"#),
            vec![a_str_closed.clone()],
            false,
        ),
        json("opening a closed model is backward compatible", Backward, a_str.clone(), vec![a_str_closed.clone()], true),
        json("closing an open model is not backward compatible", Backward, a_str_closed.clone(), vec![a_str.clone()], false),
        json(
            "partially open model: a covered property is fully compatible",
            Full,
            obj(r#""a":{"type":"string"},"b":{"type":"string"}"#, r#","additionalProperties":{"type":"string"}"#),
            vec![obj(r#""a":{"type":"string"}"#, r#","additionalProperties":{"type":"string"}"#)],
            true,
        ),
        json(
            "partially open model: an uncovered property is not backward compatible",
            Backward,
            obj(r#""a":{"type":"string"},"b":{"type":"integer"}"#, r#","additionalProperties":{"type":"string"}"#),
            vec![obj(r#""a":{"type":"string"}"#, r#","additionalProperties":{"type":"string"}"#)],
            false,
        ),
        json("integer to number is backward compatible", Backward, obj(r#""a":{"type":"number"}"#, ""), vec![obj(r#""a":{"type":"integer"}"#, "")], true),
        json("number to integer is not backward compatible", Backward, obj(r#""a":{"type":"integer"}"#, ""), vec![obj(r#""a":{"type":"number"}"#, "")], false),
        json("string to integer is not backward compatible", Backward, obj(r#""a":{"type":"integer"}"#, ""), vec![a_str.clone()], false),
        json("adding null to a type list is backward compatible", Backward, obj(r#""a":{"type":["string","null"]}"#, ""), vec![a_str.clone()], true),
        json("removing null from a type list is not backward compatible", Backward, a_str.clone(), vec![obj(r#""a":{"type":["string","null"]}"#, "")], false),
        json("maxLength added is not backward compatible", Backward, obj(r#""a":{"type":"string","maxLength":10}"#, ""), vec![a_str.clone()], false),
        json(
            "maxLength increased is backward compatible",
            Backward,
            obj(r#""a":{"type":"string","maxLength":20}"#, ""),
            vec![obj(r#""a":{"type":"string","maxLength":10}"#, "")],
            true,
        ),
        json(
            "maxLength decreased is not backward compatible",
            Backward,
            obj(r#""a":{"type":"string","maxLength":5}"#, ""),
            vec![obj(r#""a":{"type":"string","maxLength":10}"#, "")],
            false,
        ),
        json("maxLength removed is backward compatible", Backward, a_str.clone(), vec![obj(r#""a":{"type":"string","maxLength":10}"#, "")], true),
        json(
            "minimum decreased is backward compatible",
            Backward,
            obj(r#""a":{"type":"number","minimum":0}"#, ""),
            vec![obj(r#""a":{"type":"number","minimum":5}"#, "")],
            true,
        ),
        json(
            "minimum increased is not backward compatible",
            Backward,
            obj(r#""a":{"type":"number","minimum":10}"#, ""),
            vec![obj(r#""a":{"type":"number","minimum":5}"#, "")],
            false,
        ),
        json("enum extended is backward compatible", Backward, obj(r#""a":{"enum":["x","y","z"]}"#, ""), vec![obj(r#""a":{"enum":["x","y"]}"#, "")], true),
        json("enum narrowed is not backward compatible", Backward, obj(r#""a":{"enum":["x"]}"#, ""), vec![obj(r#""a":{"enum":["x","y"]}"#, "")], false),
        json("enum narrowed is forward compatible", Forward, obj(r#""a":{"enum":["x"]}"#, ""), vec![obj(r#""a":{"enum":["x","y"]}"#, "")], true),
        json(
            "making a property required is not backward compatible",
            Backward,
            obj(r#""a":{"type":"string"}"#, r#","required":["a"]"#),
            vec![a_str.clone()],
            false,
        ),
        json("making a property optional is backward compatible", Backward, a_str.clone(), vec![obj(r#""a":{"type":"string"}"#, r#","required":["a"]"#)], true),
        json(
            "anyOf gaining a branch is backward compatible",
            Backward,
            r#"{"anyOf":[{"type":"string"},{"type":"integer"}]}"#.into(),
            vec![r#"{"anyOf":[{"type":"string"}]}"#.into()],
            true,
        ),
        json(
            "anyOf losing a branch is not backward compatible",
            Backward,
            r#"{"anyOf":[{"type":"string"}]}"#.into(),
            vec![r#"{"anyOf":[{"type":"string"},{"type":"integer"}]}"#.into()],
            false,
        ),
        json(
            "a type becoming oneOf including it is backward compatible",
            Backward,
            r#"{"oneOf":[{"type":"string"},{"type":"null"}]}"#.into(),
            vec![r#"{"type":"string"}"#.into()],
            true,
        ),
        json(
            "BACKWARD_TRANSITIVE: only the oldest version conflicts",
            BackwardTransitive,
            obj(r#""a":{"type":"integer"}"#, ""),
            vec![obj(r#""a":{"type":"number"}"#, ""), obj(r#""a":{"type":"integer"}"#, "")],
            false,
        ),
        json(
            "BACKWARD ignores the oldest version",
            Backward,
            obj(r#""a":{"type":"integer"}"#, ""),
            vec![obj(r#""a":{"type":"number"}"#, ""), obj(r#""a":{"type":"integer"}"#, "")],
            true,
        ),
        json(
            "FORWARD_TRANSITIVE: only the oldest version conflicts",
            ForwardTransitive,
            obj(r#""a":{"type":"number"}"#, ""),
            vec![obj(r#""a":{"type":"integer"}"#, ""), obj(r#""a":{"type":"number"}"#, "")],
            false,
        ),
        json("FULL_TRANSITIVE: identical schemas", FullTransitive, a_str.clone(), vec![a_str.clone(), a_str.clone()], true),
        json(
            "NONE accepts a closed model losing a property",
            Compatibility::None,
            obj("", r#","additionalProperties":false"#),
            vec![a_str_closed.clone()],
            true,
        ),
        json(
            "additionalProperties {} is partially open: an untyped added property is covered",
            Backward,
            obj(r#""a":{"type":"string"},"b":{}"#, r#","additionalProperties":{}"#),
            vec![obj(r#""a":{"type":"string"}"#, r#","additionalProperties":{}"#)],
            true,
        ),
        json(
            "additionalProperties {} does not cover a typed added property",
            Backward,
            obj(r#""a":{"type":"string"},"b":{"type":"integer"}"#, r#","additionalProperties":{}"#),
            vec![obj(r#""a":{"type":"string"}"#, r#","additionalProperties":{}"#)],
            false,
        ),
        json(
            "patternProperties cover an added property",
            Backward,
            obj(r#""a":{"type":"string"},"x_b":{"type":"string"}"#, r#","patternProperties":{"^x_":{"type":"string"}}"#),
            vec![obj(r#""a":{"type":"string"}"#, r#","patternProperties":{"^x_":{"type":"string"}}"#)],
            true,
        ),
        json(
            "a property with schema false can be removed from a closed model",
            Backward,
            obj("", r#","additionalProperties":false"#),
            vec![obj(r#""a":false"#, r#","additionalProperties":false"#)],
            true,
        ),
        json(
            "required naming an undeclared property is not checked",
            Backward,
            obj(r#""a":{"type":"string"}"#, r#","additionalProperties":false,"required":["zz"]"#),
            vec![a_str_closed.clone()],
            true,
        ),
        json(
            "dependency array narrowed is backward compatible",
            Backward,
            obj(r#""a":{"type":"string"},"b":{"type":"string"}"#, r#","dependencies":{"a":["b"]}"#),
            vec![obj(r#""a":{"type":"string"},"b":{"type":"string"}"#, r#","dependencies":{"a":["b","c"]}"#)],
            true,
        ),
        json(
            "dependency array added is not backward compatible",
            Backward,
            obj(r#""a":{"type":"string"},"b":{"type":"string"}"#, r#","dependencies":{"a":["b"]}"#),
            vec![obj(r#""a":{"type":"string"},"b":{"type":"string"}"#, "")],
            false,
        ),
        json(
            "nested object property type change",
            Backward,
            obj(r#""o":{"type":"object","properties":{"x":{"type":"boolean"}}}"#, ""),
            vec![obj(r#""o":{"type":"object","properties":{"x":{"type":"string"}}}"#, "")],
            false,
        ),
        json(
            "array items widened",
            Backward,
            obj(r#""l":{"type":"array","items":{"type":"number"}}"#, ""),
            vec![obj(r#""l":{"type":"array","items":{"type":"integer"}}"#, "")],
            true,
        ),
    ]
}

#[test]
fn compatibility_table_matches_confluent() {
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for level in Compatibility::ALL {
        assert!(cases.iter().any(|c| c.level == level), "no case for {level}");
    }
    let mut failures = Vec::new();
    for c in &cases {
        let new = ParsedSchema::parse(c.kind, &c.new).unwrap_or_else(|e| panic!("{}: new schema: {e}", c.name));
        let prev: Vec<ParsedSchema> =
            c.previous.iter().map(|p| ParsedSchema::parse(c.kind, p).unwrap_or_else(|e| panic!("{}: previous: {e}", c.name))).collect();
        let refs: Vec<(u32, &ParsedSchema)> = prev.iter().enumerate().map(|(i, p)| (i as u32 + 1, p)).collect();
        let msgs = compat::check(c.level, &new, &refs);
        if msgs.is_empty() != c.compatible {
            failures.push(format!("{} [{}]: expected {}, got {:?}", c.name, c.level, if c.compatible { "compatible" } else { "incompatible" }, msgs));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases disagree:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn schema_type_change_is_incompatible() {
    let a = ParsedSchema::parse(SchemaType::Avro, &s1()).unwrap();
    let j = ParsedSchema::parse(SchemaType::Json, r#"{"type":"object"}"#).unwrap();
    assert!(!compat::check(Backward, &j, &[(1, &a)]).is_empty());
}

// ------------------------------------------------------------------ registry rules

fn parse(t: &str) -> Arc<ParsedSchema> {
    Registry::parse(None, t).unwrap()
}

#[test]
fn ids_are_shared_by_identical_schemas_and_never_reused() {
    let r = Registry::in_memory();
    let a = r.register("t", "a-value", parse(&s1())).unwrap();
    assert_eq!((a.id, a.version, a.existing), (1, 1, false));
    // Same schema again: same id, no new version.
    let again = r.register("t", "a-value", parse(&s1())).unwrap();
    assert_eq!((again.id, again.version, again.existing), (1, 1, true));
    // Same schema under another subject: same global id.
    let b = r.register("t", "b-value", parse(&s1())).unwrap();
    assert_eq!((b.id, b.version), (1, 1));
    let c = r.register("t", "a-value", parse(&s2())).unwrap();
    assert_eq!((c.id, c.version), (2, 2));
    // Hard-delete everything using id 2; a new schema gets 3, not 2.
    r.delete_version("t", "a-value", VersionSel::Number(2), false).unwrap();
    r.delete_version("t", "a-value", VersionSel::Number(2), true).unwrap();
    assert!(r.snapshot().schema(2).is_none());
    let d = r.register("t", "a-value", parse(&s8())).unwrap();
    assert_eq!(d.id, 3);
    assert_eq!(d.version, 2, "version numbers continue after the highest remaining");
}

#[test]
fn incompatible_registration_is_refused_with_409() {
    let r = Registry::in_memory();
    r.register("t", "s", parse(&s1())).unwrap();
    let e = r.register("t", "s", parse(&s3())).unwrap_err();
    assert_eq!((e.status(), e.code()), (409, 409));
    assert!(e.to_string().contains("READER_FIELD_MISSING_DEFAULT_VALUE"), "{e}");
    r.set_config("t", Some("s"), Compatibility::None).unwrap();
    assert!(r.register("t", "s", parse(&s3())).is_ok());
}

#[test]
fn soft_and_hard_delete_follow_confluent() {
    let r = Registry::in_memory();
    r.register("t", "s", parse(&s1())).unwrap();
    r.register("t", "s", parse(&s2())).unwrap();
    assert_eq!(r.delete_subject("t", "s", true).unwrap_err().code(), 40405, "permanent needs a soft delete first");
    assert_eq!(r.delete_subject("t", "s", false).unwrap(), vec![1, 2]);
    assert_eq!(r.delete_subject("t", "s", false).unwrap_err().code(), 40404);
    assert_eq!(r.snapshot().versions("s", false).unwrap_err().code(), 40401);
    assert_eq!(r.snapshot().versions("s", true).unwrap(), vec![1, 2]);
    // A soft-deleted id still resolves for reading old data.
    assert!(r.snapshot().resolve("s", 1).is_ok());
    assert_eq!(r.delete_subject("t", "s", true).unwrap(), vec![1, 2]);
    assert!(r.snapshot().schema(1).is_none());
    assert_eq!(r.delete_subject("t", "s", true).unwrap_err().code(), 40401);
    r.register("t", "v", parse(&s1())).unwrap();
    assert_eq!(r.delete_version("t", "v", VersionSel::Number(1), true).unwrap_err().code(), 40407);
    r.delete_version("t", "v", VersionSel::Number(1), false).unwrap();
    assert_eq!(r.delete_version("t", "v", VersionSel::Number(1), false).unwrap_err().code(), 40406);
    assert_eq!(r.delete_version("t", "v", VersionSel::Number(9), false).unwrap_err().code(), 40402);
}

#[test]
fn lifecycle_and_resolution() {
    let r = Registry::in_memory();
    r.register("t", "s", parse(&s1())).unwrap();
    r.register("t", "s", parse(&s2())).unwrap();
    let res = r.snapshot().resolve("s", 1).unwrap();
    assert_eq!((res.version, res.state), (1, Lifecycle::Active));
    assert!(res.reader.is_some(), "reads v1 data as the latest version");
    assert!(r.snapshot().resolve("s", 2).unwrap().reader.is_none());
    assert_eq!(r.snapshot().resolve("other", 1).unwrap_err(), state::Unresolved::WrongSubject);
    assert_eq!(r.snapshot().resolve("s", 99).unwrap_err(), state::Unresolved::UnknownId);
    let g = r.generation();
    r.set_lifecycle("ops", "s", VersionSel::Number(1), Lifecycle::Deprecated).unwrap();
    assert!(r.generation() > g);
    assert_eq!(r.set_lifecycle("ops", "s", VersionSel::Number(1), Lifecycle::Deprecated).unwrap_err().code(), 40901);
    r.set_lifecycle("ops", "s", VersionSel::Number(1), Lifecycle::Archived).unwrap();
    assert_eq!(r.snapshot().resolve("s", 1).unwrap().state, Lifecycle::Archived);
    let audit = r.audit(10).unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, vec!["register", "register", "deprecate", "archive"]);
    assert_eq!(audit[3].before.as_deref(), Some("deprecated"));
    assert_eq!(audit[3].actor, "ops");
}

#[test]
fn policy_archives_deprecated_versions() {
    let cfg = SchemaRegistryConfig {
        lifecycle: vigil_config::LifecyclePolicy { archive_after_deprecated: Some(std::time::Duration::from_secs(60)), archive_after_idle: None },
        ..SchemaRegistryConfig::default()
    };
    let r = Registry::open(Arc::new(MemStorage::default()), cfg).unwrap();
    r.register("t", "s", parse(&s1())).unwrap();
    r.set_lifecycle("t", "s", VersionSel::Number(1), Lifecycle::Deprecated).unwrap();
    let now = vigil_runtime::now_ms();
    assert!(r.apply_lifecycle_policy(now).unwrap().is_empty());
    let done = r.apply_lifecycle_policy(now + 61_000).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(r.snapshot().version("s", VersionSel::Number(1), false).unwrap().state, Lifecycle::Archived);
}

#[test]
fn invalid_defaults_are_refused_only_when_configured() {
    let bad = r#"{"type":"record","name":"myrecord","fields":[{"type":["null","string"],"name":"f1","default":"null"}]}"#;
    assert!(Registry::in_memory().register("t", "s", parse(bad)).is_ok(), "Confluent's default accepts it");
    let strict =
        Registry::open(Arc::new(MemStorage::default()), SchemaRegistryConfig { avro_validate_defaults: true, ..SchemaRegistryConfig::default() }).unwrap();
    assert_eq!(strict.register("t", "s", parse(bad)).unwrap_err().code(), 42201);
}

#[test]
fn state_survives_reopen() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::default());
    {
        let r = Registry::open(storage.clone(), SchemaRegistryConfig::default()).unwrap();
        r.register("t", "s", parse(&s1())).unwrap();
        r.register("t", "s", parse(&s2())).unwrap();
        r.set_config("t", Some("s"), Full).unwrap();
        r.set_config("t", None, Forward).unwrap();
        r.delete_version("t", "s", VersionSel::Number(1), false).unwrap();
        r.record_usage(&[((Arc::from("s"), 2), 5)].into_iter().collect(), 1000);
        r.flush_usage().unwrap();
    }
    let r = Registry::open(storage, SchemaRegistryConfig::default()).unwrap();
    let st = r.snapshot();
    assert_eq!(st.versions("s", false).unwrap(), vec![2]);
    assert_eq!(st.versions("s", true).unwrap(), vec![1, 2]);
    assert_eq!(st.subject_level("s"), Some(Full));
    assert_eq!(st.global_level(Backward), Forward);
    assert_eq!(r.usage()[&("s".to_string(), 2)].records, 5);
    assert_eq!(r.register("t", "s", parse(&s8())).unwrap().id, 3);
    assert_eq!(r.audit(100).unwrap().len(), 6);
}

#[test]
fn a_failed_write_changes_nothing() {
    struct Broken;
    impl Storage for Broken {
        fn scan(&self, _: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
            Ok(Vec::new())
        }
        fn write(&self, _: &[Op]) -> Result<(), String> {
            Err("disk on fire".into())
        }
    }
    let r = Registry::open(Arc::new(Broken), SchemaRegistryConfig::default()).unwrap();
    let e = r.register("t", "s", parse(&s1())).unwrap_err();
    assert_eq!(e.code(), 50001);
    assert!(r.snapshot().subjects(true).is_empty());
}

// ------------------------------------------------------------------ REST

mod http {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    pub(super) fn call(app: &axum::Router, method: Method, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let req = Request::builder().method(method).uri(path).header("content-type", rest::CONTENT_TYPE).body(Body::from(body)).expect("request");
            let resp = app.clone().oneshot(req).await.expect("infallible");
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
            (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
        })
    }

    pub(super) fn app() -> axum::Router {
        rest::router(Arc::new(Registry::in_memory())).into_parts().0
    }

    #[test]
    fn confluent_flow() {
        let app = app();
        let body = |s: &str| serde_json::json!({ "schema": s }).to_string().into_bytes();
        let (st, v) = call(&app, Method::POST, "/subjects/orders-value/versions", body(&s1()));
        assert_eq!((st, v["id"].as_u64()), (200, Some(1)));
        let (st, v) = call(&app, Method::POST, "/subjects/orders-value/versions", body(&s3()));
        assert_eq!((st, v["error_code"].as_u64()), (409, Some(409)), "{v}");
        let (st, v) = call(&app, Method::POST, "/compatibility/subjects/orders-value/versions/latest?verbose=true", body(&s3()));
        assert_eq!((st, v["is_compatible"].as_bool()), (200, Some(false)));
        assert!(!v["messages"].as_array().unwrap().is_empty());
        let (st, v) = call(&app, Method::GET, "/subjects/orders-value/versions/latest", vec![]);
        assert_eq!((st, v["version"].as_u64(), v["id"].as_u64()), (200, Some(1), Some(1)));
        assert!(v.get("schemaType").is_none(), "AVRO is implied");
        let (_, v) = call(&app, Method::GET, "/schemas/ids/1/versions", vec![]);
        assert_eq!(v, serde_json::json!([{"subject": "orders-value", "version": 1}]));
        let (st, v) = call(&app, Method::GET, "/schemas/ids/7", vec![]);
        assert_eq!((st, v["error_code"].as_u64()), (404, Some(40403)));
        let (st, v) = call(&app, Method::GET, "/subjects/nope/versions", vec![]);
        assert_eq!((st, v["error_code"].as_u64()), (404, Some(40401)));
        let (st, v) = call(&app, Method::GET, "/subjects/orders-value/versions/7", vec![]);
        assert_eq!((st, v["error_code"].as_u64()), (404, Some(40402)));
        let (st, v) = call(&app, Method::GET, "/subjects/orders-value/versions/abc", vec![]);
        assert_eq!((st, v["error_code"].as_u64()), (422, Some(42202)));
        let (st, v) = call(&app, Method::PUT, "/config/orders-value", br#"{"compatibility":"SIDEWAYS"}"#.to_vec());
        assert_eq!((st, v["error_code"].as_u64()), (422, Some(42203)));
        let (st, v) = call(&app, Method::POST, "/subjects/x/versions", br#"{"schema":"{\"type\":\"recor\"}"}"#.to_vec());
        assert_eq!((st, v["error_code"].as_u64()), (422, Some(42201)));
        let (st, v) = call(&app, Method::POST, "/subjects/j/versions", br#"{"schema":"{\"type\":\"object\"}","schemaType":"JSON"}"#.to_vec());
        assert_eq!((st, v["id"].as_u64()), (200, Some(2)));
        let (_, v) = call(&app, Method::GET, "/schemas/ids/2", vec![]);
        assert_eq!(v["schemaType"], "JSON");
        let (_, v) = call(&app, Method::GET, "/schemas/types", vec![]);
        assert_eq!(v, serde_json::json!(["JSON", "AVRO"]));
        let (st, v) = call(&app, Method::POST, "/subjects/orders-value", body(&s1()));
        assert_eq!((st, v["version"].as_u64()), (200, Some(1)));
        let (st, v) = call(&app, Method::POST, "/subjects/orders-value", body(&s2()));
        assert_eq!((st, v["error_code"].as_u64()), (404, Some(40403)));
        let (st, v) = call(&app, Method::GET, "/config/orders-value", vec![]);
        assert_eq!((st, v["error_code"].as_u64()), (404, Some(40408)));
        let (_, v) = call(&app, Method::GET, "/config/orders-value?defaultToGlobal=true", vec![]);
        assert_eq!(v["compatibilityLevel"], "BACKWARD");
        let (st, v) = call(&app, Method::POST, "/vigil/schemas/orders-value/versions/1/deprecate", vec![]);
        assert_eq!((st, v["state"].as_str()), (200, Some("deprecated")));
        let (_, v) = call(&app, Method::GET, "/vigil/schemas/audit", vec![]);
        assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");
    }

    #[test]
    fn huge_bodies_get_413() {
        let app = app();
        let huge = vec![b' '; (1 << 20) + 10];
        let (st, v) = call(&app, Method::POST, "/subjects/s/versions", huge);
        assert_eq!(st, 413, "{v}");
        assert!(v["message"].is_string());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        /// Malformed bodies and odd paths get a JSON 4xx, never a panic or a 5xx.
        #[test]
        fn malformed_requests_get_clear_4xx(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            json_body in "\\{(\"schema\":(\"[a-z{}\\\\\":,]{0,30}\"|[0-9]{1,3}|null|\\[\\]),?)?(\"schemaType\":\"[A-Z]{0,8}\")?\\}",
            seg in "[a-zA-Z0-9%._~-]{0,12}",
            method in 0..4u8,
        ) {
            let app = app();
            let m = [Method::GET, Method::POST, Method::PUT, Method::DELETE][method as usize].clone();
            for path in [format!("/subjects/{seg}/versions"), format!("/subjects/{seg}/versions/{seg}"), format!("/schemas/ids/{seg}"),
                format!("/compatibility/subjects/{seg}/versions/{seg}"), format!("/config/{seg}"), format!("/subjects/{seg}"), format!("/{seg}/{seg}")] {
                for b in [body.clone(), json_body.clone().into_bytes()] {
                    let (st, v) = call(&app, m.clone(), &path, b);
                    proptest::prop_assert!(st < 500, "{m} {path}: {st} {v}");
                    if st >= 400 {
                        proptest::prop_assert!(v["message"].is_string() || v.is_null(), "{m} {path}: {st} {v}");
                    }
                }
            }
        }
    }
}
