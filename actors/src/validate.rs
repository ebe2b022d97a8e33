//! Record validation: JSON parsing, required fields and types from `[[pipeline.fields]]`,
//! and extraction of the window key, value and event time. Pure logic.
use serde_json::Value;
use vigil_config::{FieldRule, FieldType, WindowConfig};

/// A record that passed validation, reduced to what windows need.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Window key.
    pub key: String,
    /// Aggregated value.
    pub value: f64,
    /// Event time, ms since epoch.
    pub ts: i64,
}

/// Why a record was rejected; `code()` is the machine-readable DLQ reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Not valid JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON but not an object.
    #[error("record is not a JSON object")]
    NotAnObject,
    /// A required field is absent (or null).
    #[error("missing required field `{0}`")]
    MissingField(String),
    /// A field has the wrong JSON type.
    #[error("field `{field}`: expected {expected}, got {got}")]
    WrongType {
        /// Field.
        field: String,
        /// Expected type.
        expected: String,
        /// Actual JSON type.
        got: String,
    },
}

impl Reject {
    /// Stable reason code written to the `vigil.dlq.reason` header.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::InvalidJson(_) => "invalid_json",
            Reject::NotAnObject => "not_an_object",
            Reject::MissingField(_) => "missing_field",
            Reject::WrongType { .. } => "wrong_type",
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn matches(kind: FieldType, v: &Value) -> bool {
    match kind {
        FieldType::String => v.is_string(),
        FieldType::Number => v.is_number(),
        FieldType::Integer => v.is_i64() || v.is_u64(),
        FieldType::Boolean => v.is_boolean(),
    }
}

fn wrong(field: &str, expected: &str, v: &Value) -> Reject {
    Reject::WrongType { field: field.into(), expected: expected.into(), got: type_name(v).into() }
}

/// Validate one record value.
///
/// # Errors
/// The first [`Reject`] found, checking rules in order, then the window fields.
pub fn validate(payload: &[u8], rules: &[FieldRule], window: &WindowConfig) -> Result<Parsed, Reject> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| Reject::InvalidJson(e.to_string()))?;
    let Value::Object(obj) = v else { return Err(Reject::NotAnObject) };
    for r in rules {
        match obj.get(&r.name) {
            None | Some(Value::Null) if r.required => return Err(Reject::MissingField(r.name.clone())),
            None | Some(Value::Null) => {}
            Some(v) if !matches(r.kind, v) => return Err(wrong(&r.name, &r.kind.to_string(), v)),
            Some(_) => {}
        }
    }
    let get = |f: &str| obj.get(f).filter(|v| !v.is_null()).ok_or_else(|| Reject::MissingField(f.to_string()));
    let key = match get(&window.key_field)? {
        Value::String(s) => s.clone(),
        v @ (Value::Number(_) | Value::Bool(_)) => v.to_string(),
        v => return Err(wrong(&window.key_field, "string", v)),
    };
    let value = get(&window.value_field)?;
    let value = value.as_f64().ok_or_else(|| wrong(&window.value_field, "number", value))?;
    let ts = get(&window.time_field)?;
    let ts = ts.as_i64().ok_or_else(|| wrong(&window.time_field, "integer", ts))?;
    Ok(Parsed { key, value, ts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_config::PipelineConfig;

    fn check(s: &str) -> Result<Parsed, Reject> {
        let p = PipelineConfig::default();
        validate(s.as_bytes(), &p.fields, &p.window)
    }

    #[test]
    fn accepts_a_good_record() {
        assert_eq!(check(r#"{"user":"u1","amount":2.5,"ts":1000}"#), Ok(Parsed { key: "u1".into(), value: 2.5, ts: 1000 }));
    }

    #[test]
    fn rejects_with_reasons() {
        assert_eq!(check("{nope").unwrap_err().code(), "invalid_json");
        assert_eq!(check("[1]"), Err(Reject::NotAnObject));
        assert_eq!(check(r#"{"user":"u1","ts":1}"#), Err(Reject::MissingField("amount".into())));
        assert_eq!(
            check(r#"{"user":"u1","amount":"3","ts":1}"#),
            Err(Reject::WrongType { field: "amount".into(), expected: "number".into(), got: "string".into() })
        );
        assert_eq!(check(r#"{"user":"u1","amount":3,"ts":1.5}"#).unwrap_err().code(), "wrong_type");
    }
}
