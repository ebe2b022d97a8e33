//! Record validation in two layers, pure logic:
//! 1. **Decode** ([`SourceDecoder`]): plain JSON, or Confluent-framed Avro / JSON Schema —
//!    framing, a known schema id of the source's subject, a version that is not archived,
//!    a payload that decodes against the writer schema and resolves to the reader (latest
//!    active) schema. A record is decoded once; Avro stays in its decoded form.
//! 2. **Rules** ([`Rules`]): `[[pipeline.fields]]` — required, type, range, allowed values,
//!    pattern, max length — on the decoded record, then the event time and the fields the
//!    aggregations read are extracted whatever the format.
//!
//! Every failure is a [`Reject`] with a machine-readable reason for the DLQ.
use crate::analytics::spec::{Analytics, FieldVal};
use crate::registry::resolver::{ResolveError, Resolver};
use crate::registry::state::{Lifecycle, Resolution, Unresolved};
use crate::registry::wire;
use apache_avro::types::Value as Avro;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use vigil_config::{FieldRule, FieldType, SourceConfig, SourceFormat};

/// A record that passed validation, reduced to what the aggregations need.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Event time, ms since epoch.
    pub ts: i64,
    /// Values of [`Analytics::fields`], in order.
    pub fields: Vec<FieldVal>,
}

/// Why a record was rejected; [`Reject::code`] is the machine-readable DLQ reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    /// Not valid JSON (plain `json` sources).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Decoded, but not an object / record.
    #[error("record is not a JSON object or Avro record")]
    NotAnObject,
    /// A required field is absent (or null).
    #[error("missing required field `{0}`")]
    MissingField(String),
    /// A field has the wrong type.
    #[error("field `{field}`: expected {expected}, got {got}")]
    WrongType {
        /// Field.
        field: String,
        /// Expected type.
        expected: String,
        /// Actual type.
        got: String,
    },
    /// A value check of a field rule failed.
    #[error("rule `{rule}`: {detail}")]
    Rule {
        /// Rule name (`amount.range` or the configured `rule`).
        rule: String,
        /// What failed.
        detail: String,
    },
    /// Not Confluent-framed.
    #[error("bad framing: {0}")]
    BadFraming(String),
    /// No schema has this id.
    #[error("unknown schema id {0}")]
    UnknownSchema(u32),
    /// The id exists, but not in the source's subject.
    #[error("schema id {id} is not a version of subject `{subject}`")]
    WrongSubject {
        /// Id.
        id: u32,
        /// Expected subject.
        subject: String,
    },
    /// The writer's version is archived.
    #[error("schema {subject} version {version} is archived")]
    Archived {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// The payload does not decode against (or validate under) the writer schema.
    #[error("payload does not decode with {subject} version {version}: {reason}")]
    Undecodable {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
        /// Why.
        reason: String,
    },
    /// Decoded, but cannot be resolved to the reader schema.
    #[error("{subject} version {version} data cannot be read with the latest version: {reason}")]
    Unresolvable {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
        /// Why.
        reason: String,
    },
}

impl Reject {
    /// Stable reason code written to the `vigil.dlq.reason` header.
    pub fn code(&self) -> String {
        match self {
            Reject::InvalidJson(_) => "invalid_json".into(),
            Reject::NotAnObject => "not_an_object".into(),
            Reject::MissingField(_) => "missing_field".into(),
            Reject::WrongType { .. } => "wrong_type".into(),
            Reject::Rule { rule, .. } => format!("rule:{rule}"),
            Reject::BadFraming(_) => "bad_framing".into(),
            Reject::UnknownSchema(_) => "unknown_schema".into(),
            Reject::WrongSubject { .. } => "wrong_subject".into(),
            Reject::Archived { .. } => "archived_schema".into(),
            Reject::Undecodable { .. } => "undecodable".into(),
            Reject::Unresolvable { .. } => "unresolvable".into(),
        }
    }
}

/// The registry facts of a decoded record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaInfo {
    /// Subject (shared with the decoder: no copy per record).
    pub subject: Arc<str>,
    /// Schema id.
    pub id: Option<u32>,
    /// Version, when known.
    pub version: Option<u32>,
    /// Whether that version is deprecated.
    pub deprecated: bool,
}

/// A decoded record: a JSON object or an Avro record's fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// JSON object.
    Json(Map<String, Value>),
    /// Avro record fields, in schema order.
    Avro(Vec<(String, Avro)>),
}

/// A field value as rules see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// Null.
    Null,
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Floating point.
    Float(f64),
    /// Text.
    Str(&'a str),
    /// Anything else, by type name.
    Other(&'static str),
}

impl Scalar<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "boolean",
            Scalar::Int(_) => "integer",
            Scalar::Float(_) => "number",
            Scalar::Str(_) => "string",
            Scalar::Other(t) => t,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(f) => Some(*f),
            _ => None,
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Scalar::Str(s) => Some((*s).to_string()),
            Scalar::Int(i) => Some(i.to_string()),
            Scalar::Float(f) => Some(serde_json::Number::from_f64(*f).map(|n| n.to_string()).unwrap_or_else(|| f.to_string())),
            Scalar::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

fn json_scalar(v: &Value) -> Scalar<'_> {
    match v {
        Value::Null => Scalar::Null,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Scalar::Int(i),
            None => n.as_f64().map(Scalar::Float).unwrap_or(Scalar::Other("number")),
        },
        Value::String(s) => Scalar::Str(s),
        Value::Array(_) => Scalar::Other("array"),
        Value::Object(_) => Scalar::Other("object"),
    }
}

fn avro_scalar(v: &Avro) -> Scalar<'_> {
    match v {
        Avro::Union(_, b) => avro_scalar(b),
        Avro::Null => Scalar::Null,
        Avro::Boolean(b) => Scalar::Bool(*b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => Scalar::Int(i64::from(*i)),
        Avro::Long(i)
        | Avro::TimeMicros(i)
        | Avro::TimestampMillis(i)
        | Avro::TimestampMicros(i)
        | Avro::TimestampNanos(i)
        | Avro::LocalTimestampMillis(i)
        | Avro::LocalTimestampMicros(i)
        | Avro::LocalTimestampNanos(i) => Scalar::Int(*i),
        Avro::Float(f) => Scalar::Float(f64::from(*f)),
        Avro::Double(f) => Scalar::Float(*f),
        Avro::String(s) | Avro::Enum(_, s) => Scalar::Str(s),
        Avro::Bytes(_) | Avro::Fixed(..) => Scalar::Other("bytes"),
        Avro::Array(_) => Scalar::Other("array"),
        Avro::Map(_) | Avro::Record(_) => Scalar::Other("object"),
        _ => Scalar::Other("other"),
    }
}

impl Decoded {
    /// A top-level field; `None` when absent.
    pub fn get(&self, field: &str) -> Option<Scalar<'_>> {
        match self {
            Decoded::Json(m) => m.get(field).map(json_scalar),
            Decoded::Avro(fields) => fields.iter().find(|(k, _)| k == field).map(|(_, v)| avro_scalar(v)),
        }
    }
}

/// Field rules compiled once (patterns as regexes).
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<(FieldRule, Option<regex::Regex>)>,
}

impl Rules {
    /// Compile `[[pipeline.fields]]`.
    ///
    /// # Errors
    /// `(field path, message)` for a pattern that is not a valid regex.
    pub fn compile(rules: &[FieldRule]) -> Result<Rules, (String, String)> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let re = match &r.pattern {
                Some(p) => Some(regex::Regex::new(p).map_err(|e| (format!("pipeline.fields[{i}].pattern"), e.to_string()))?),
                None => None,
            };
            out.push((r.clone(), re));
        }
        Ok(Rules { rules: out })
    }

    /// Apply the rules, then extract the event time and the aggregations' fields.
    ///
    /// # Errors
    /// The first [`Reject`] found, checking rules in order, then the event time (required,
    /// an integer). Aggregation fields may be absent; arrays and objects count as absent.
    pub fn apply(&self, rec: &Decoded, an: &Analytics) -> Result<Parsed, Reject> {
        for (r, re) in &self.rules {
            let v = match rec.get(&r.name) {
                None | Some(Scalar::Null) if r.required => return Err(Reject::MissingField(r.name.clone())),
                None | Some(Scalar::Null) => continue,
                Some(v) => v,
            };
            if !type_matches(r.kind, &v) {
                return Err(wrong(&r.name, &r.kind.to_string(), &v));
            }
            check_values(r, re.as_ref(), &v)?;
        }
        let ts = match rec.get(&an.time_field) {
            None | Some(Scalar::Null) => return Err(Reject::MissingField(an.time_field.clone())),
            Some(Scalar::Int(i)) => i,
            Some(other) => return Err(wrong(&an.time_field, "integer", &other)),
        };
        let fields = an
            .fields
            .iter()
            .map(|f| match rec.get(f) {
                Some(Scalar::Str(s)) => FieldVal::Str(s.to_string()),
                Some(Scalar::Int(i)) => FieldVal::Num(i as f64),
                Some(Scalar::Float(x)) => FieldVal::Num(x),
                Some(Scalar::Bool(b)) => FieldVal::Bool(b),
                None | Some(Scalar::Null | Scalar::Other(_)) => FieldVal::Missing,
            })
            .collect();
        Ok(Parsed { ts, fields })
    }
}

fn type_matches(kind: FieldType, v: &Scalar<'_>) -> bool {
    match kind {
        FieldType::String => matches!(v, Scalar::Str(_)),
        FieldType::Number => matches!(v, Scalar::Int(_) | Scalar::Float(_)),
        FieldType::Integer => matches!(v, Scalar::Int(_)),
        FieldType::Boolean => matches!(v, Scalar::Bool(_)),
    }
}

fn wrong(field: &str, expected: &str, v: &Scalar<'_>) -> Reject {
    Reject::WrongType { field: field.into(), expected: expected.into(), got: v.type_name().into() }
}

fn check_values(r: &FieldRule, re: Option<&regex::Regex>, v: &Scalar<'_>) -> Result<(), Reject> {
    let name = |check: &str| r.rule.clone().unwrap_or_else(|| format!("{}.{check}", r.name));
    if let Some(x) = v.as_f64() {
        if r.min.is_some_and(|m| x < m) || r.max.is_some_and(|m| x > m) {
            let bounds = format!("[{}, {}]", r.min.map(|m| m.to_string()).unwrap_or("-inf".into()), r.max.map(|m| m.to_string()).unwrap_or("+inf".into()));
            return Err(Reject::Rule { rule: name("range"), detail: format!("`{}` = {x} is outside {bounds}", r.name) });
        }
    }
    if let Some(allowed) = &r.one_of {
        let text = v.text().unwrap_or_default();
        if !allowed.contains(&text) {
            return Err(Reject::Rule { rule: name("one_of"), detail: format!("`{}` = {text:?} is not one of {allowed:?}", r.name) });
        }
    }
    if let Scalar::Str(s) = v {
        if let Some(max) = r.max_length {
            let n = s.chars().count();
            if n > max {
                return Err(Reject::Rule { rule: name("max_length"), detail: format!("`{}` has {n} characters, more than {max}", r.name) });
            }
        }
        if let Some(re) = re {
            if !re.is_match(s) {
                return Err(Reject::Rule { rule: name("pattern"), detail: format!("`{}` = {s:?} does not match /{}/", r.name, re.as_str()) });
            }
        }
    }
    Ok(())
}

/// Outcome of decoding one record.
pub type DecodeResult = Result<(Decoded, Option<SchemaInfo>), (Reject, Option<SchemaInfo>)>;

/// Decodes the records of one source, caching schema resolutions by id.
pub struct SourceDecoder {
    format: SourceFormat,
    subject: Arc<str>,
    generation: u64,
    cache: HashMap<u32, Result<Arc<Resolution>, Unresolved>>,
}

/// Bound on cached resolutions per source (ids seen); cleared when full.
const DECODER_CACHE_MAX: usize = 4096;

impl SourceDecoder {
    /// Decoder for `source`.
    pub fn new(source: &SourceConfig) -> Self {
        Self { format: source.format, subject: source.subject().into(), generation: 0, cache: HashMap::new() }
    }

    /// The subject records must belong to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    fn resolution(&mut self, resolver: &dyn Resolver, id: u32) -> Result<Result<Arc<Resolution>, Unresolved>, String> {
        let g = resolver.generation();
        if g != self.generation || self.cache.len() >= DECODER_CACHE_MAX {
            self.cache.clear();
            self.generation = g;
        }
        if let Some(r) = self.cache.get(&id) {
            return Ok(r.clone());
        }
        let r = match resolver.resolve(&self.subject, id) {
            Ok(r) => Ok(r),
            Err(ResolveError::Record(u)) => Err(u),
            Err(ResolveError::Unavailable(e)) => return Err(e),
        };
        self.cache.insert(id, r.clone());
        Ok(r)
    }

    /// Decode one record value.
    ///
    /// # Errors
    /// The outer `Err` means the registry could not be asked (not the record's fault: the
    /// stage should fail and retry); the inner result is the record's verdict.
    pub fn decode(&mut self, payload: &[u8], resolver: &dyn Resolver) -> Result<DecodeResult, String> {
        if self.format == SourceFormat::Json {
            return Ok(decode_plain_json(payload).map(|d| (d, None)).map_err(|r| (r, None)));
        }
        let subject = self.subject.clone();
        let (id, body) = match wire::unframe(payload) {
            Ok(x) => x,
            Err(e) => return Ok(Err((Reject::BadFraming(e.to_string()), Some(SchemaInfo { subject, ..SchemaInfo::default() })))),
        };
        let res = match self.resolution(resolver, id)? {
            Ok(r) => r,
            Err(Unresolved::UnknownId) => return Ok(Err((Reject::UnknownSchema(id), Some(SchemaInfo { subject, id: Some(id), ..SchemaInfo::default() })))),
            Err(Unresolved::WrongSubject) => {
                return Ok(Err((
                    Reject::WrongSubject { id, subject: subject.to_string() },
                    Some(SchemaInfo { subject, id: Some(id), ..SchemaInfo::default() }),
                )))
            }
        };
        let info = SchemaInfo { subject: subject.clone(), id: Some(id), version: Some(res.version), deprecated: res.state == Lifecycle::Deprecated };
        if res.state == Lifecycle::Archived {
            return Ok(Err((Reject::Archived { subject: subject.to_string(), version: res.version }, Some(info))));
        }
        let undecodable = |reason: String| Reject::Undecodable { subject: subject.to_string(), version: res.version, reason };
        let verdict = match (self.format, res.writer.avro(), res.writer.json_validator()) {
            (SourceFormat::Avro, Some(writer), _) => decode_avro(writer, res.reader.as_ref().and_then(|r| r.avro()), body).map_err(|e| match e {
                AvroFailure::Decode(r) => undecodable(r),
                AvroFailure::Resolve(reason) => Reject::Unresolvable { subject: subject.to_string(), version: res.version, reason },
                AvroFailure::NotRecord => Reject::NotAnObject,
            }),
            (SourceFormat::JsonSchema, _, Some(validator)) => match serde_json::from_slice::<Value>(body) {
                Err(e) => Err(undecodable(format!("not JSON: {e}"))),
                Ok(v) => match validator.validate(&v) {
                    Err(e) => Err(undecodable(format!("{e} at {}", e.instance_path()))),
                    Ok(()) => json_object(v),
                },
            },
            (f, _, _) => Err(undecodable(format!("source format is {f} but schema {id} is {}", res.writer.kind()))),
        };
        Ok(match verdict {
            Ok(d) => Ok((d, Some(info))),
            Err(r) => Err((r, Some(info))),
        })
    }
}

enum AvroFailure {
    Decode(String),
    Resolve(String),
    NotRecord,
}

/// Decode an Avro datum with the writer schema, resolve it to the reader schema, and
/// require that every byte was used.
fn decode_avro(writer: &apache_avro::Schema, reader: Option<&apache_avro::Schema>, body: &[u8]) -> Result<Decoded, AvroFailure> {
    let mut rest = body;
    let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apache_avro::from_avro_datum(writer, &mut rest, None)))
        .map_err(|_| AvroFailure::Decode("the Avro decoder failed on this input".into()))?
        .map_err(|e| AvroFailure::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(AvroFailure::Decode(format!("{} trailing bytes after the datum", rest.len())));
    }
    let value = match reader {
        Some(r) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| value.resolve(r)))
            .map_err(|_| AvroFailure::Resolve("schema resolution failed on this input".into()))?
            .map_err(|e| AvroFailure::Resolve(e.to_string()))?,
        None => value,
    };
    match value {
        Avro::Record(fields) => Ok(Decoded::Avro(fields)),
        _ => Err(AvroFailure::NotRecord),
    }
}

fn json_object(v: Value) -> Result<Decoded, Reject> {
    match v {
        Value::Object(m) => Ok(Decoded::Json(m)),
        _ => Err(Reject::NotAnObject),
    }
}

/// Decode a plain JSON record (format `json`).
fn decode_plain_json(payload: &[u8]) -> Result<Decoded, Reject> {
    json_object(serde_json::from_slice(payload).map_err(|e| Reject::InvalidJson(e.to_string()))?)
}

/// Validate a plain JSON record (format `json`) with the given rules.
///
/// # Errors
/// The first [`Reject`].
pub fn validate_json(payload: &[u8], rules: &Rules, an: &Analytics) -> Result<Parsed, Reject> {
    rules.apply(&decode_plain_json(payload)?, an)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use vigil_config::PipelineConfig;

    fn check(s: &str) -> Result<Parsed, Reject> {
        let p = PipelineConfig::default();
        validate_json(s.as_bytes(), &Rules::compile(&p.fields).unwrap(), &Analytics::compile(&p))
    }

    /// (user, amount, ts) of a parsed record of the default pipeline.
    fn uat(p: Parsed) -> (String, f64, i64) {
        let an = Analytics::compile(&PipelineConfig::default());
        let get = |f: &str| an.fields.iter().position(|x| x == f).map(|i| p.fields[i].clone());
        match (get("user"), get("amount")) {
            (Some(FieldVal::Str(u)), Some(FieldVal::Num(a))) => (u, a, p.ts),
            other => panic!("unexpected fields {other:?}"),
        }
    }

    #[test]
    fn accepts_a_good_record() {
        assert_eq!(check(r#"{"user":"u1","amount":2.5,"ts":1000}"#).map(uat), Ok(("u1".into(), 2.5, 1000)));
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
        assert_eq!(check(r#"{"user":"u1","amount":-3,"ts":1}"#).unwrap_err().code(), "rule:amount.range");
    }

    #[test]
    fn every_rule_kind_has_its_reason() {
        let rules = vec![
            FieldRule { one_of: Some(vec!["EUR".into(), "USD".into()]), ..FieldRule::new("currency", FieldType::String) },
            FieldRule { pattern: Some("^user-[0-9]+$".into()), max_length: Some(12), ..FieldRule::new("user", FieldType::String) },
            FieldRule { max: Some(100.0), rule: Some("amount_cap".into()), ..FieldRule::new("amount", FieldType::Number) },
        ];
        let rules = Rules::compile(&rules).unwrap();
        let w = Analytics::compile(&PipelineConfig::default());
        let run = |s: &str| validate_json(s.as_bytes(), &rules, &w).map_err(|r| r.code());
        assert_eq!(run(r#"{"currency":"EUR","user":"user-1","amount":5,"ts":1}"#).map(|p| uat(p).0), Ok("user-1".into()));
        assert_eq!(run(r#"{"currency":"GBP","user":"user-1","amount":5,"ts":1}"#), Err("rule:currency.one_of".into()));
        assert_eq!(run(r#"{"currency":"EUR","user":"bob","amount":5,"ts":1}"#), Err("rule:user.pattern".into()));
        assert_eq!(run(r#"{"currency":"EUR","user":"user-123456789","amount":5,"ts":1}"#), Err("rule:user.max_length".into()));
        assert_eq!(run(r#"{"currency":"EUR","user":"user-1","amount":500,"ts":1}"#), Err("rule:amount_cap".into()));
        assert!(Rules::compile(&[FieldRule { pattern: Some("(".into()), ..FieldRule::new("x", FieldType::String) }]).is_err());
    }

    const AVRO_V1: &str =
        r#"{"type":"record","name":"E","fields":[{"name":"user","type":"string"},{"name":"amount","type":"double"},{"name":"ts","type":"long"}]}"#;
    const AVRO_V2: &str = r#"{"type":"record","name":"E","fields":[{"name":"user","type":"string"},{"name":"amount","type":"double"},{"name":"ts","type":"long"},{"name":"country","type":"string","default":"DE"}]}"#;

    fn avro_record(schema: &apache_avro::Schema, user: &str, amount: f64, ts: i64, extra: Option<&str>) -> Vec<u8> {
        let mut fields =
            vec![("user".to_string(), Avro::String(user.into())), ("amount".to_string(), Avro::Double(amount)), ("ts".to_string(), Avro::Long(ts))];
        if let Some(c) = extra {
            fields.push(("country".into(), Avro::String(c.into())));
        }
        apache_avro::to_avro_datum(schema, Avro::Record(fields)).unwrap()
    }

    #[test]
    fn avro_records_decode_resolve_and_reject_with_reasons() {
        let reg = Registry::in_memory();
        let v1 = reg.register("t", "events-value", Registry::parse(None, AVRO_V1).unwrap()).unwrap().id;
        let other = reg.register("t", "other-value", Registry::parse(None, r#""string""#).unwrap()).unwrap().id;
        let s1 = apache_avro::Schema::parse_str(AVRO_V1).unwrap();
        let source = SourceConfig::new("events", SourceFormat::Avro);
        let mut d = SourceDecoder::new(&source);
        let rules = Rules::compile(&vigil_config::PipelineConfig::default().fields).unwrap();
        let w = Analytics::compile(&PipelineConfig::default());
        let mut run = |bytes: &[u8]| -> Result<Parsed, String> {
            match d.decode(bytes, &reg).unwrap() {
                Ok((rec, info)) => {
                    assert_eq!(info.as_ref().map(|i| &*i.subject), Some("events-value"));
                    rules.apply(&rec, &w).map_err(|r| r.code())
                }
                Err((r, _)) => Err(r.code()),
            }
        };
        let good = wire::frame(v1, &avro_record(&s1, "u1", 2.5, 1000, None));
        assert_eq!(run(&good).map(uat), Ok(("u1".into(), 2.5, 1000)));
        assert_eq!(run(br#"{"user":"u1"}"#), Err("bad_framing".into()));
        assert_eq!(run(&wire::frame(4242, b"x")), Err("unknown_schema".into()));
        assert_eq!(run(&wire::frame(other, b"\x02a")), Err("wrong_subject".into()));
        assert_eq!(run(&good[..good.len() - 2]), Err("undecodable".into()));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(run(&trailing), Err("undecodable".into()));
        assert_eq!(run(&wire::frame(v1, &avro_record(&s1, "u1", -1.0, 1000, None))), Err("rule:amount.range".into()));
        // Evolve: v1 data is resolved to v2 (default filled in); v2 data reads directly.
        let v2 = reg.register("t", "events-value", Registry::parse(None, AVRO_V2).unwrap()).unwrap().id;
        let s2 = apache_avro::Schema::parse_str(AVRO_V2).unwrap();
        assert_eq!(run(&good).map(|p| uat(p).1), Ok(2.5));
        assert_eq!(run(&wire::frame(v2, &avro_record(&s2, "u2", 1.0, 5, Some("FR")))).map(|p| uat(p).0), Ok("u2".into()));
        reg.set_lifecycle("t", "events-value", crate::registry::state::VersionSel::Number(1), Lifecycle::Deprecated).unwrap();
        assert_eq!(run(&good).map(|p| uat(p).0), Ok("u1".into()), "deprecated versions are still accepted");
        let info = d2(&reg, &good);
        assert!(info.deprecated && info.version == Some(1), "{info:?}");
        reg.set_lifecycle("t", "events-value", crate::registry::state::VersionSel::Number(1), Lifecycle::Archived).unwrap();
        assert_eq!(run(&good), Err("archived_schema".into()));
    }

    /// The schema facts a fresh decoder reports for a good record.
    fn d2(reg: &Registry, bytes: &[u8]) -> SchemaInfo {
        let mut d = SourceDecoder::new(&SourceConfig::new("events", SourceFormat::Avro));
        d.decode(bytes, reg).unwrap().unwrap().1.unwrap()
    }

    #[test]
    fn json_schema_records_are_validated() {
        let reg = Registry::in_memory();
        let schema =
            r#"{"type":"object","properties":{"user":{"type":"string"},"amount":{"type":"number"},"ts":{"type":"integer"}},"required":["user","amount","ts"]}"#;
        let id = reg.register("t", "events-value", Registry::parse(Some("JSON"), schema).unwrap()).unwrap().id;
        let mut d = SourceDecoder::new(&SourceConfig::new("events", SourceFormat::JsonSchema));
        let ok = wire::frame(id, br#"{"user":"u","amount":1,"ts":2}"#);
        assert!(d.decode(&ok, &reg).unwrap().is_ok());
        let bad = wire::frame(id, br#"{"user":"u","amount":"1","ts":2}"#);
        assert_eq!(d.decode(&bad, &reg).unwrap().unwrap_err().0.code(), "undecodable");
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the decoder, whatever the format.
        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let reg = Registry::in_memory();
            let id = reg.register("t", "events-value", Registry::parse(None, AVRO_V1).unwrap()).unwrap().id;
            let mut framed = wire::frame(id, &bytes);
            for format in [SourceFormat::Json, SourceFormat::Avro, SourceFormat::JsonSchema] {
                let mut d = SourceDecoder::new(&SourceConfig::new("events", format));
                let _ = d.decode(&bytes, &reg);
                let _ = d.decode(&framed, &reg);
            }
            framed.truncate(5);
        }
    }
}
