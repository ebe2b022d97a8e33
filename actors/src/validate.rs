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
use crate::analytics::spec::{Analytics, FieldTable, FieldVal};
use crate::registry::resolver::{ResolveError, Resolver};
use crate::registry::state::{Lifecycle, Resolution, Unresolved};
use crate::registry::wire;
use apache_avro::types::Value as Avro;
use serde::de::{Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use vigil_config::{FieldRule, FieldType, SourceConfig, SourceFormat};

/// A record that passed validation, reduced to what the aggregations need (tests and tools;
/// the pipeline appends to one [`FieldTable`] per batch with [`Rules::apply_into`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Event time, ms since epoch.
    pub ts: i64,
    /// Values of [`Analytics::fields`], in order: row 0.
    pub fields: FieldTable,
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
    /// The record fails its source's producer authentication (quarantined, not DLQ'd).
    #[error("{detail}")]
    Security {
        /// [`crate::signing::SigReject::code`].
        code: &'static str,
        /// What exactly failed.
        detail: String,
        /// The producer the record claims, if it names one.
        producer: Option<String>,
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
            Reject::Security { code, .. } => format!("security.{code}"),
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
pub enum Decoded<'a> {
    /// JSON object (JSON Schema sources: the validator needs the whole value).
    Json(Map<String, Value>),
    /// Avro record fields, in schema order.
    Avro(Vec<(String, Avro)>),
    /// A plain JSON object's top-level fields, borrowed from the payload where they have no
    /// escapes; nested values are only checked, not kept.
    Fields(JsonFields<'a>),
}

/// Top-level fields of a plain JSON object, in document order.
///
/// A heap vector rather than an inline array: a record's decode result moves through several
/// stack frames, and ~700 inline bytes made each move a copy (7 % of the pipeline's CPU).
/// Stages reuse one vector's allocation across records ([`JsonFields::parse_reusing`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JsonFields<'a>(FieldBuffer<'a>);

/// The storage of [`JsonFields`], kept between records to reuse its allocation.
pub type FieldBuffer<'a> = Vec<(Cow<'a, str>, JsonScalar<'a>)>;

/// A top-level JSON value as rules see it.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonScalar<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number that fits an `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string (owned only when it had escapes).
    Str(Cow<'a, str>),
    /// An array or object, by type name.
    Other(&'static str),
}

impl<'de> Deserialize<'de> for JsonScalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = JsonScalar<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(JsonScalar::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(JsonScalar::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Self::Value, E> {
        Ok(JsonScalar::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(u).map_or(JsonScalar::Float(u as f64), JsonScalar::Int))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Self::Value, E> {
        Ok(JsonScalar::Float(x))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(JsonScalar::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(JsonScalar::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(JsonScalar::Other("array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(JsonScalar::Other("object"))
    }
}

/// A JSON object key, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads the top level of a plain JSON record into a reused buffer: `None` when it is not an
/// object (the buffer is then dropped, which only costs an allocation on the next record).
struct TopSeed<'a>(FieldBuffer<'a>);

impl<'de> DeserializeSeed<'de> for TopSeed<'de> {
    type Value = Option<JsonFields<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<'a>(FieldBuffer<'a>);
        impl<'de> Visitor<'de> for V<'de> {
            type Value = Option<JsonFields<'de>>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = self.0;
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v = map.next_value::<JsonScalar<'de>>()?;
                    out.push((k, v));
                }
                Ok(Some(JsonFields(out)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(None)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(None)
            }
        }
        d.deserialize_any(V(self.0))
    }
}

impl<'a> JsonFields<'a> {
    /// Parse a plain JSON record; the whole payload must be valid JSON.
    ///
    /// # Errors
    /// [`Reject::InvalidJson`] or [`Reject::NotAnObject`].
    pub fn parse(payload: &'a [u8]) -> Result<Self, Reject> {
        Self::parse_reusing(payload, &mut Vec::new())
    }

    /// [`JsonFields::parse`] into `buf`'s allocation (taken, cleared); hand it back with
    /// [`JsonFields::into_buffer`] once the record is judged.
    ///
    /// # Errors
    /// As [`JsonFields::parse`] (the allocation is then dropped: a new one for the next).
    pub fn parse_reusing(payload: &'a [u8], buf: &mut FieldBuffer<'a>) -> Result<Self, Reject> {
        buf.clear();
        let mut de = sonic_rs::Deserializer::from_slice(payload);
        let top = TopSeed(std::mem::take(buf)).deserialize(&mut de).and_then(|t| de.end().map(|()| t));
        // sonic-rs follows the position with an excerpt of the payload: a reason names
        // where the record is broken, it does not copy its data into DLQ headers and logs.
        let reason = |e: sonic_rs::Error| Reject::InvalidJson(e.to_string().split("\n\n").next().unwrap_or_default().to_string());
        top.map_err(reason)?.ok_or(Reject::NotAnObject)
    }

    /// The storage, emptied, for the next [`JsonFields::parse_reusing`].
    #[must_use]
    pub fn into_buffer(mut self) -> FieldBuffer<'a> {
        self.0.clear();
        self.0
    }

    /// A field; with duplicate keys the last wins (as in `serde_json`).
    fn get(&self, field: &str) -> Option<Scalar<'_>> {
        self.0.iter().rev().find(|(k, _)| k == field).map(|(_, v)| match v {
            JsonScalar::Null => Scalar::Null,
            JsonScalar::Bool(b) => Scalar::Bool(*b),
            JsonScalar::Int(i) => Scalar::Int(*i),
            JsonScalar::Float(x) => Scalar::Float(*x),
            JsonScalar::Str(s) => Scalar::Str(s),
            JsonScalar::Other(t) => Scalar::Other(t),
        })
    }
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

impl Decoded<'_> {
    /// A top-level field; `None` when absent.
    pub fn get(&self, field: &str) -> Option<Scalar<'_>> {
        match self {
            Decoded::Json(m) => m.get(field).map(json_scalar),
            Decoded::Avro(fields) => fields.iter().find(|(k, _)| k == field).map(|(_, v)| avro_scalar(v)),
            Decoded::Fields(f) => f.get(field),
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

    /// [`Self::apply_into`] a table of its own.
    ///
    /// # Errors
    /// As [`Self::apply_into`].
    pub fn apply(&self, rec: &Decoded<'_>, an: &Analytics) -> Result<Parsed, Reject> {
        let mut fields = FieldTable::new(an.fields.len());
        let ts = self.apply_into(rec, an, &mut fields)?;
        Ok(Parsed { ts, fields })
    }

    /// Apply the rules, then append the aggregations' fields to `table` (only when the record
    /// passes) and return the event time.
    ///
    /// # Errors
    /// The first [`Reject`] found, checking rules in order, then the event time (required,
    /// an integer). Aggregation fields may be absent; arrays and objects count as absent.
    pub fn apply_into(&self, rec: &Decoded<'_>, an: &Analytics, table: &mut FieldTable) -> Result<i64, Reject> {
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
        table.push_row(an.fields.iter().map(|f| match rec.get(f) {
            Some(Scalar::Str(s)) => FieldVal::Str(s),
            Some(Scalar::Int(i)) => FieldVal::Num(i as f64),
            Some(Scalar::Float(x)) => FieldVal::Num(x),
            Some(Scalar::Bool(b)) => FieldVal::Bool(b),
            None | Some(Scalar::Null | Scalar::Other(_)) => FieldVal::Missing,
        }));
        Ok(ts)
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
pub type DecodeResult<'a> = Result<(Decoded<'a>, Option<SchemaInfo>), (Reject, Option<SchemaInfo>)>;

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
        limit_avro_allocation();
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
    pub fn decode<'a>(&mut self, payload: &'a [u8], resolver: &dyn Resolver) -> Result<DecodeResult<'a>, String> {
        self.decode_reusing(payload, resolver, &mut Vec::new())
    }

    /// [`SourceDecoder::decode`], reading plain JSON into `buf`'s allocation (see
    /// [`JsonFields::parse_reusing`]).
    ///
    /// # Errors
    /// As [`SourceDecoder::decode`].
    pub fn decode_reusing<'a>(&mut self, payload: &'a [u8], resolver: &dyn Resolver, buf: &mut FieldBuffer<'a>) -> Result<DecodeResult<'a>, String> {
        if self.format == SourceFormat::Json {
            return Ok(JsonFields::parse_reusing(payload, buf).map(|d| (Decoded::Fields(d), None)).map_err(|r| (r, None)));
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

/// Largest length the Avro decoder accepts for one string, bytes value, array block or map
/// block, in bytes or items. apache-avro reserves an array's items before reading them, so
/// without this a 23-byte record claiming 500 million items made it ask for 30 GB and abort
/// the process (found by `cargo fuzz run record_decoder`). An item of a Kafka record takes at
/// least a byte unless it is `null`, so this is far above any record a broker passes; a
/// longer value is rejected (`undecodable`, to the DLQ) rather than crashing the node.
pub const AVRO_MAX_LENGTH: usize = 1 << 20;

/// Set the Avro decoder's allocation limit (process-wide, first call wins).
fn limit_avro_allocation() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let limit = apache_avro::util::max_allocation_bytes(AVRO_MAX_LENGTH);
        if limit != AVRO_MAX_LENGTH {
            tracing::warn!(limit, "the Avro allocation limit was set elsewhere first");
        }
    });
}

enum AvroFailure {
    Decode(String),
    Resolve(String),
    NotRecord,
}

/// Decode an Avro datum with the writer schema, resolve it to the reader schema, and
/// require that every byte was used.
fn decode_avro<'a>(writer: &apache_avro::Schema, reader: Option<&apache_avro::Schema>, body: &[u8]) -> Result<Decoded<'a>, AvroFailure> {
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

fn json_object<'a>(v: Value) -> Result<Decoded<'a>, Reject> {
    match v {
        Value::Object(m) => Ok(Decoded::Json(m)),
        _ => Err(Reject::NotAnObject),
    }
}

/// Validate a plain JSON record (format `json`) with the given rules.
///
/// # Errors
/// The first [`Reject`].
pub fn validate_json(payload: &[u8], rules: &Rules, an: &Analytics) -> Result<Parsed, Reject> {
    rules.apply(&Decoded::Fields(JsonFields::parse(payload)?), an)
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
        let row = p.fields.row(0);
        let get = |f: &str| an.fields.iter().position(|x| x == f).map(|i| row[i]);
        match (get("user"), get("amount")) {
            (Some(FieldVal::Str(u)), Some(FieldVal::Num(a))) => (u.to_string(), a, p.ts),
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

    /// `cargo fuzz run record_decoder` found this: a record claiming half a billion array
    /// items made the decoder reserve 30 GB and abort the process. It is now a reject.
    #[test]
    fn an_avro_record_claiming_a_huge_array_is_rejected_not_allocated() {
        let schema = r#"{"type":"record","name":"Event","fields":[{"name":"user","type":"string"},{"name":"amount","type":"double"},{"name":"ts","type":"long"},{"name":"tags","type":{"type":"array","items":"string"}}]}"#;
        let reg = Registry::in_memory();
        let id = reg.register("t", "events-value", Registry::parse(None, schema).unwrap()).unwrap().id;
        let mut d = SourceDecoder::new(&SourceConfig::new("events", SourceFormat::Avro));
        let crash = [4, 117, 49, 0, 0, 255, 251, 255, 255, 255, 37, 4, 255, 255, 255, 255, 3, 147, 255, 255, 255, 37, 0];
        let framed = wire::frame(id, &crash);
        let got = d.decode(&framed, &reg).unwrap();
        assert_eq!(got.map(|_| ()).map_err(|(r, _)| r.code()), Err("undecodable".to_string()));
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

    /// A JSON text built from parts that exercise escapes, nesting, numbers and duplicates.
    fn json_object_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec!["a", "b", "ts", "user", "a\\u0062", "k\\n"]);
        let value = prop::sample::select(vec![
            "null",
            "true",
            "false",
            "0",
            "-3",
            "18446744073709551615",
            "2.5",
            "1e3",
            "\"x\"",
            "\"e\\u00e9\\\"q\"",
            "[1,[2,{}]]",
            "{\"n\":{\"m\":[]}}",
            "\"\"",
        ]);
        prop::collection::vec((key, value), 0..6).prop_map(|kv| {
            let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", body.join(","))
        })
    }

    #[test]
    fn invalid_json_reasons_name_the_position_without_copying_the_record() {
        for (text, at) in [(r#"{"user":"secret-42","ts":"#, "column 25"), (r#"{"a":}"#, "column 6"), (r#"{"a":1}x"#, "column 8"), ("", "column 1")] {
            match JsonFields::parse(text.as_bytes()) {
                Err(Reject::InvalidJson(why)) => {
                    assert!(why.contains(at) && !why.contains('\n') && !why.contains("secret"), "{text:?}: {why:?}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn numbers_are_read_correctly_rounded() {
        // serde_json without `float_roundtrip` reads 12e50 one ulp off; the record reader
        // (sonic-rs) gives what Rust's own parser gives.
        for text in ["12e50", "1.7e61", "0.1", "2.2250738585072011e-308", "5e-324", "1e400"] {
            let record = format!(r#"{{"x":{text}}}"#);
            let f = JsonFields::parse(record.as_bytes());
            let want: f64 = text.parse().unwrap_or(f64::INFINITY);
            match f.as_ref().map(|f| f.get("x")) {
                Ok(Some(Scalar::Float(x))) => assert_eq!(x.to_bits(), want.to_bits(), "{text}"),
                other if want.is_infinite() => assert!(other.is_err(), "{text}: out of range is invalid JSON, as in serde_json"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    proptest::proptest! {
        /// The borrowing JSON reader (sonic-rs) sees exactly what `serde_json::Value` sees,
        /// field by field, and accepts and rejects the same texts (these numbers are exact in
        /// both: see `numbers_are_read_correctly_rounded`).
        #[test]
        fn borrowed_json_fields_match_serde_json(text in json_object_strategy(), cut in 0usize..40) {
            for t in [text.clone(), text[..cut.min(text.len())].to_string(), format!("{text} x"), format!("[{text}]")] {
                let ours = JsonFields::parse(t.as_bytes());
                let theirs = serde_json::from_slice::<Value>(t.as_bytes());
                match (&ours, theirs) {
                    (Ok(f), Ok(Value::Object(m))) => {
                        let d = Decoded::Fields(f.clone());
                        let j = Decoded::Json(m);
                        for k in ["a", "b", "ab", "ts", "user", "k\n", "missing"] {
                            proptest::prop_assert_eq!(d.get(k), j.get(k), "field {} of {}", k, t);
                        }
                    }
                    (Err(Reject::NotAnObject), Ok(v)) => proptest::prop_assert!(!v.is_object()),
                    (Err(Reject::InvalidJson(_)), Err(_)) => {}
                    (o, t2) => proptest::prop_assert!(false, "{:?} vs {:?} for {}", o, t2, t),
                }
            }
        }

        /// Records broken at random (bytes replaced, inserted, removed) are accepted or
        /// rejected as `serde_json` does, with the same fields (numbers within serde_json's
        /// last-bit rounding).
        #[test]
        fn mutated_records_are_judged_as_serde_json_judges_them(
            edits in proptest::collection::vec((0usize..200, 0u8..3, proptest::sample::select(b"{}[]\":,0123456789.eE-+ \\u\x00\xff\xc3a".to_vec())), 1..4),
        ) {
            let mut r = br#"{"event_id":"e-7-1","kind":"payment","user":"user-001","amount":12.50,"page":"/a\"b","ts":1700000000000}"#.to_vec();
            for (at, op, byte) in edits {
                let i = at % (r.len() + 1);
                match op {
                    0 if i < r.len() => r[i] = byte,
                    1 if i < r.len() => { r.remove(i); }
                    _ => r.insert(i, byte),
                }
            }
            let ours = JsonFields::parse(&r);
            let theirs = serde_json::from_slice::<Value>(&r);
            match (&ours, theirs) {
                (Ok(f), Ok(Value::Object(m))) => {
                    let j = Decoded::Json(m.clone());
                    proptest::prop_assert!(f.0.iter().all(|(k, _)| m.contains_key(k.as_ref())), "the same keys");
                    for k in m.keys() {
                        match (f.get(k), j.get(k)) {
                            (Some(Scalar::Float(a)), Some(Scalar::Float(b))) => proptest::prop_assert!((a - b).abs() <= a.abs() * 1e-15, "{} {} {}", k, a, b),
                            (a, b) => proptest::prop_assert_eq!(a, b, "field {}", k),
                        }
                    }
                }
                (Err(Reject::NotAnObject), Ok(v)) => proptest::prop_assert!(!v.is_object()),
                (Err(Reject::InvalidJson(_)), Err(_)) => {}
                (o, t) => proptest::prop_assert!(false, "{:?} vs {:?} for {:?}", o, t, String::from_utf8_lossy(&r)),
            }
        }

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
