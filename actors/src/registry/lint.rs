//! Lint rules run on registration: new fields need defaults, fields have docs, a naming
//! convention, no removed required fields. Each rule warns or blocks per configuration.
use super::schema::ParsedSchema;
use apache_avro::schema::Schema;
use serde_json::Value;
use vigil_config::{Compatibility, LintLevel, LintRules, Naming};

/// One broken lint rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Rule name as in `[schema_registry.lint]`.
    pub rule: &'static str,
    /// Warn or block.
    pub level: LintLevel,
    /// What is wrong, naming the field.
    pub message: String,
}

/// A field of a schema, flattened with its dotted path.
#[derive(Debug, Clone)]
struct Field {
    path: String,
    name: String,
    has_default: bool,
    documented: bool,
    required: bool,
}

fn avro_fields(s: &Schema, prefix: &str, out: &mut Vec<Field>, depth: usize) {
    if depth > 16 {
        return;
    }
    match s {
        Schema::Record(r) => {
            for f in &r.fields {
                let path = if prefix.is_empty() { f.name.clone() } else { format!("{prefix}.{}", f.name) };
                out.push(Field {
                    path: path.clone(),
                    name: f.name.clone(),
                    has_default: f.default.is_some(),
                    documented: f.doc.as_deref().is_some_and(|d| !d.trim().is_empty()),
                    required: f.default.is_none(),
                });
                avro_fields(&f.schema, &path, out, depth + 1);
            }
        }
        Schema::Union(u) => {
            for v in u.variants() {
                avro_fields(v, prefix, out, depth + 1);
            }
        }
        Schema::Array(a) => avro_fields(&a.items, prefix, out, depth + 1),
        Schema::Map(m) => avro_fields(&m.types, prefix, out, depth + 1),
        _ => {}
    }
}

fn json_fields(s: &Value, prefix: &str, out: &mut Vec<Field>, depth: usize) {
    if depth > 16 {
        return;
    }
    let required: Vec<&str> = s.get("required").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (name, p) in props {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            out.push(Field {
                path: path.clone(),
                name: name.clone(),
                has_default: p.get("default").is_some(),
                documented: p.get("description").and_then(Value::as_str).is_some_and(|d| !d.trim().is_empty()),
                required: required.contains(&name.as_str()),
            });
            json_fields(p, &path, out, depth + 1);
        }
    }
    if let Some(items) = s.get("items") {
        json_fields(items, prefix, out, depth + 1);
    }
}

fn fields(s: &ParsedSchema) -> Vec<Field> {
    let mut out = Vec::new();
    match s.avro() {
        Some(a) => avro_fields(a, "", &mut out, 0),
        None => json_fields(s.json(), "", &mut out, 0),
    }
    out
}

fn is_snake(n: &str) -> bool {
    n.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') && !n.contains("__")
}

fn is_camel(n: &str) -> bool {
    n.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && n.chars().all(|c| c.is_ascii_alphanumeric())
}

/// A naming convention's check and its name.
type NameCheck = (fn(&str) -> bool, &'static str);

/// Run `rules` on `new`, given the subject's compatibility level and latest version.
pub fn lint(rules: &LintRules, level: Compatibility, new: &ParsedSchema, latest: Option<&ParsedSchema>) -> Vec<Finding> {
    let mut out = Vec::new();
    let new_fields = fields(new);
    let old_fields = latest.map(fields).unwrap_or_default();
    let mut push = |rule: &'static str, lvl: LintLevel, message: String| {
        if lvl != LintLevel::Off {
            out.push(Finding { rule, level: lvl, message });
        }
    };
    if latest.is_some() && level.backward() && new.avro().is_some() {
        for f in new_fields.iter().filter(|f| !f.has_default && !old_fields.iter().any(|o| o.path == f.path)) {
            push("new_fields_need_defaults", rules.new_fields_need_defaults, format!("new field `{}` has no default", f.path));
        }
    }
    for f in new_fields.iter().filter(|f| !f.documented) {
        push("field_docs", rules.field_docs, format!("field `{}` has no {}", f.path, if new.avro().is_some() { "doc" } else { "description" }));
    }
    let ok_name: Option<NameCheck> = match rules.naming {
        Naming::Any => None,
        Naming::SnakeCase => Some((is_snake, "snake_case")),
        Naming::CamelCase => Some((is_camel, "camelCase")),
    };
    if let Some((ok, style)) = ok_name {
        for f in new_fields.iter().filter(|f| !ok(&f.name)) {
            push("naming", rules.naming_level, format!("field `{}` is not {style}", f.path));
        }
    }
    for f in old_fields.iter().filter(|o| o.required && !new_fields.iter().any(|n| n.path == o.path)) {
        push("no_removed_required", rules.no_removed_required, format!("required field `{}` was removed", f.path));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::schema::SchemaType;

    fn avro(t: &str) -> ParsedSchema {
        ParsedSchema::parse(SchemaType::Avro, t).unwrap()
    }

    #[test]
    fn each_rule_fires() {
        let rules = LintRules { field_docs: LintLevel::Block, naming: Naming::SnakeCase, ..LintRules::default() };
        let v1 = avro(r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int","doc":"x"},{"name":"b","type":"int","doc":"y"}]}"#);
        let v2 = avro(r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int","doc":"x"},{"name":"newField","type":"int"}]}"#);
        let f = lint(&rules, Compatibility::Backward, &v2, Some(&v1));
        let rules_hit: Vec<&str> = f.iter().map(|f| f.rule).collect();
        assert_eq!(rules_hit, vec!["new_fields_need_defaults", "field_docs", "naming", "no_removed_required"], "{f:?}");
        assert_eq!(f[1].level, LintLevel::Block);
        assert!(lint(&LintRules::default(), Compatibility::Backward, &v1, None).is_empty());
        let json = ParsedSchema::parse(SchemaType::Json, r#"{"type":"object","properties":{"userId":{"type":"string"}},"required":["userId"]}"#).unwrap();
        let json2 = ParsedSchema::parse(SchemaType::Json, r#"{"type":"object","properties":{}}"#).unwrap();
        let f = lint(&LintRules { naming: Naming::CamelCase, ..LintRules::default() }, Compatibility::Backward, &json2, Some(&json));
        assert_eq!(f.iter().map(|f| f.rule).collect::<Vec<_>>(), vec!["no_removed_required"]);
    }
}
