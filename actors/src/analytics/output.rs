//! Output records of aggregations: key `<aggregation>/<group key>@<window start>`, a JSON
//! object or a Confluent-framed Avro record of [`OUTPUT_AVRO_SCHEMA`], and a tombstone for
//! a retracted (merged-away) session. Pure.
use super::engine::Emit;
use super::spec::AggSpec;
use apache_avro::types::Value as Avro;
use serde_json::Value;
use std::collections::BTreeMap;

/// One emission of one aggregation, on its way to the Sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Index of the aggregation in `pipeline.aggregations`.
    pub agg: usize,
    /// What it emitted.
    pub emit: Emit,
}

/// An output held until the checkpoint that produced it commits (published then, and again
/// after a restart that finds it still in the store): the Kafka record as it will be
/// written. Sink encodes it from borrowed parts and reads it back in place, so neither way
/// copies the record's parts.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeldOutput<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key.
    #[serde(serialize_with = "bytes")]
    pub key: &'a [u8],
    /// Value; `None` is a tombstone (a retracted session).
    #[serde(serialize_with = "optional_bytes")]
    pub payload: Option<&'a [u8]>,
    /// Headers, in order.
    #[serde(borrow, serialize_with = "header_bytes")]
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// Input records it represents when it is a window's first emission (else 0).
    pub records: u64,
}

/// Bytes written as one byte string: serde writes a `[u8]` element by element, which
/// bincode encodes the same way (length, then the bytes) but a byte at a time.
struct Raw<'a>(&'a [u8]);

impl serde::Serialize for Raw<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

fn bytes<S: serde::Serializer>(b: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(b)
}

fn optional_bytes<S: serde::Serializer>(b: &Option<&[u8]>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&b.map(Raw), s)
}

fn header_bytes<S: serde::Serializer>(h: &[(&str, &[u8])], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(h.iter().map(|(k, v)| (k, Raw(v))))
}

impl HeldOutput<'_> {
    /// Store key of the `i`th output held by checkpoint `id`: in publishing order.
    pub fn store_key(id: u64, i: u32) -> Vec<u8> {
        let mut k = id.to_be_bytes().to_vec();
        k.extend_from_slice(&i.to_be_bytes());
        k
    }
}

/// Column family of held outputs.
pub const HELD_CF: &str = "outputs";

/// Avro schema of results (`format = "avro"`), registered under `<topic>-value`; one schema
/// serves every aggregation writing to a topic.
pub const OUTPUT_AVRO_SCHEMA: &str = r#"{"type":"record","name":"AggregationResult","namespace":"vigil","doc":"One window of one group of one aggregation","fields":[
{"name":"aggregation","type":"string","doc":"Aggregation name"},
{"name":"key","type":"string","doc":"Group key: group-by values joined by |"},
{"name":"group","type":{"type":"map","values":"string"},"doc":"Group-by field -> value"},
{"name":"window_start","type":"long","doc":"Start, ms since epoch (inclusive)"},
{"name":"window_end","type":"long","doc":"End, ms since epoch (exclusive)"},
{"name":"revision","type":"int","doc":"0 when the window fired, +1 per update by allowed-late records"},
{"name":"records","type":"long","doc":"Records in the window"},
{"name":"metrics","type":{"type":"map","values":["null","double","string"]},"doc":"Metric name -> value"}]}"#;

/// Output key: `<aggregation>/<group key>@<window start>`, so replays and revisions overwrite.
pub fn output_key(agg: &str, key: &str, start: i64) -> String {
    format!("{agg}/{key}@{start}")
}

/// Lineage key of a window: the output key without `@<start>`.
pub fn lineage_key(agg: &str, key: &str) -> String {
    let mut out = String::with_capacity(agg.len() + key.len() + 1);
    lineage_key_into(agg, key, &mut out);
    out
}

/// [`lineage_key`] into a reused buffer (cleared first).
pub fn lineage_key_into(agg: &str, key: &str, out: &mut String) {
    out.clear();
    out.push_str(agg);
    out.push('/');
    out.push_str(key);
}

/// The aggregation of a lineage key (`<aggregation>/<group key>`).
pub fn aggregation_of(lineage_key: &str) -> &str {
    lineage_key.split_once('/').map_or(lineage_key, |(a, _)| a)
}

/// An emission's JSON object from borrowed parts, its fields in name order (as a JSON map
/// keeps them).
#[derive(serde::Serialize)]
struct JsonOutput<'a> {
    aggregation: &'a str,
    group: BTreeMap<&'a str, &'a str>,
    key: &'a str,
    metrics: Metrics<'a>,
    records: u64,
    revision: u32,
    window_end: i64,
    window_start: i64,
}

/// An emission's metric values as a JSON object: name → value, by name.
struct Metrics<'a> {
    order: &'a [(String, usize)],
    values: &'a [Value],
}

impl<'a> Metrics<'a> {
    fn iter(&self) -> impl Iterator<Item = (&'a str, &'a Value)> + use<'a> {
        let values = self.values;
        self.order.iter().filter_map(move |(name, i)| Some((name.as_str(), values.get(*i)?)))
    }
}

impl serde::Serialize for Metrics<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'a> JsonOutput<'a> {
    /// `None` for a retraction.
    fn of(spec: &'a AggSpec, e: &'a Emit) -> Option<Self> {
        Some(Self {
            aggregation: &spec.name,
            group: spec.group_parts(&e.key).unwrap_or_default(),
            key: &e.key,
            metrics: Metrics { order: &spec.metric_order, values: e.values.as_deref()? },
            records: e.count,
            revision: e.revision,
            window_end: e.end,
            window_start: e.start,
        })
    }
}

/// The JSON text of an emission, written straight from its parts; `None` for a retraction
/// (a tombstone).
///
/// # Errors
/// A metric value JSON cannot hold.
pub fn json_bytes(spec: &AggSpec, e: &Emit) -> Result<Option<Vec<u8>>, serde_json::Error> {
    JsonOutput::of(spec, e).map(|o| serde_json::to_vec(&o)).transpose()
}

/// The Avro record of an emission, `None` for a retraction.
pub fn to_avro(spec: &AggSpec, e: &Emit) -> Option<Avro> {
    let metrics = Metrics { order: &spec.metric_order, values: e.values.as_deref()? };
    let group = spec.group_parts(&e.key).unwrap_or_default();
    let group = group.into_iter().map(|(k, v)| (k.to_string(), Avro::String(v.to_string()))).collect();
    let metrics = metrics
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Number(n) => Avro::Union(1, Box::new(Avro::Double(n.as_f64().unwrap_or(f64::NAN)))),
                Value::String(s) => Avro::Union(2, Box::new(Avro::String(s.clone()))),
                _ => Avro::Union(0, Box::new(Avro::Null)),
            };
            (k.to_string(), v)
        })
        .collect();
    Some(Avro::Record(vec![
        ("aggregation".into(), Avro::String(spec.name.to_string())),
        ("key".into(), Avro::String(e.key.clone())),
        ("group".into(), Avro::Map(group)),
        ("window_start".into(), Avro::Long(e.start)),
        ("window_end".into(), Avro::Long(e.end)),
        ("revision".into(), Avro::Int(e.revision as i32)),
        ("records".into(), Avro::Long(e.count as i64)),
        ("metrics".into(), Avro::Map(metrics)),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::spec::Analytics;
    use serde_json::json;

    /// The owned layout outputs were held in before Sink wrote them from borrowed parts.
    #[derive(serde::Serialize)]
    struct OwnedHeldOutput {
        topic: String,
        key: Vec<u8>,
        payload: Option<Vec<u8>>,
        headers: Vec<(String, Vec<u8>)>,
        records: u64,
    }

    #[test]
    fn a_held_output_reads_back_in_place_and_encodes_as_the_owned_layout_did() {
        let held = HeldOutput {
            topic: "out",
            key: b"w/alice@0",
            payload: Some(br#"{"count":3}"#),
            headers: vec![("vigil.node", b"n1"), ("vigil.revision", b"")],
            records: 300,
        };
        let bytes = vigil_runtime::store::encode("held output", &held).unwrap();
        let r: HeldOutput<'_> = vigil_runtime::store::decode_borrowed("held output", &bytes).unwrap();
        assert_eq!(r, held);
        let owned = |payload: Option<Vec<u8>>| OwnedHeldOutput {
            topic: "out".into(),
            key: b"w/alice@0".to_vec(),
            payload,
            headers: vec![("vigil.node".into(), b"n1".to_vec()), ("vigil.revision".into(), Vec::new())],
            records: 300,
        };
        // Outputs held by an older node (still in its store after a crash) read back.
        assert_eq!(bytes, vigil_runtime::store::encode("held output", &owned(Some(br#"{"count":3}"#.to_vec()))).unwrap());
        let tombstone = vigil_runtime::store::encode("held output", &HeldOutput { payload: None, ..held }).unwrap();
        assert_eq!(tombstone, vigil_runtime::store::encode("held output", &owned(None)).unwrap());
        let r: HeldOutput<'_> = vigil_runtime::store::decode_borrowed("held output", &tombstone).unwrap();
        assert_eq!(r.payload, None);
        assert!(vigil_runtime::store::decode_borrowed::<HeldOutput<'_>>("held output", &bytes[..bytes.len() - 3]).is_err(), "truncated");
    }

    #[test]
    fn json_text_is_the_json_value_written_out() {
        let mut p = vigil_config::PipelineConfig::default();
        p.aggregations[0].group_by = vec!["user".into(), "country".into()];
        let an = Analytics::compile(&p);
        let spec = &an.aggs[0];
        // count, sum(amount), avg(amount), max(amount)
        let values = vec![json!(3), json!(2.5), Value::Null, json!("a \"quoted\" \u{e9}")];
        let by_name: serde_json::Map<String, Value> =
            [("count", json!(3)), ("sum_amount", json!(2.5)), ("avg_amount", Value::Null), ("max_amount", json!("a \"quoted\" \u{e9}"))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        for key in ["user-1|fr", "a|b|c", ""] {
            let e = Emit { key: key.into(), start: -10_000, end: 20_000, revision: 7, values: Some(values.clone()), count: 3 };
            let text = json_bytes(spec, &e).unwrap().unwrap();
            // As the JSON value was built before the text was written directly.
            let parts: Vec<&str> = key.split('|').collect();
            let group: serde_json::Map<String, Value> = if parts.len() == 2 {
                [("user", parts[0]), ("country", parts[1])].iter().map(|(n, v)| (n.to_string(), json!(v))).collect()
            } else {
                Default::default()
            };
            let built = json!({"aggregation": "spend_per_user", "key": key, "group": group, "window_start": -10_000, "window_end": 20_000, "revision": 7, "records": 3, "metrics": by_name});
            assert_eq!(text, serde_json::to_vec(&built).unwrap(), "key {key:?}");
            let v: Value = serde_json::from_slice(&text).unwrap();
            let fields: Vec<&String> = v.as_object().unwrap().keys().collect();
            assert_eq!(fields, ["aggregation", "group", "key", "metrics", "records", "revision", "window_end", "window_start"]);
        }
        let e = Emit { key: "user-1|fr".into(), start: 0, end: 1, revision: 0, values: Some(values), count: 1 };
        let v: Value = serde_json::from_slice(&json_bytes(spec, &e).unwrap().unwrap()).unwrap();
        assert_eq!(v["group"], json!({"country": "fr", "user": "user-1"}));
        assert_eq!(json_bytes(spec, &Emit { values: None, ..e }).unwrap(), None, "a retraction is a tombstone");
    }

    #[test]
    fn metrics_sharing_a_name_keep_the_last_as_a_json_object_does() {
        let mut p = vigil_config::PipelineConfig::default();
        p.aggregations[0].metrics = vec![vigil_config::Metric::Count, vigil_config::Metric::Max { field: "amount".into() }, vigil_config::Metric::Count];
        let an = Analytics::compile(&p);
        let e = Emit { key: "u".into(), start: 0, end: 1, revision: 0, values: Some(vec![json!(1), json!(9.5), json!(2)]), count: 2 };
        let v: Value = serde_json::from_slice(&json_bytes(&an.aggs[0], &e).unwrap().unwrap()).unwrap();
        assert_eq!(v["metrics"], json!({"count": 2, "max_amount": 9.5}));
    }

    #[test]
    fn json_and_avro_carry_window_revision_name_and_metrics() {
        let p = vigil_config::PipelineConfig::default();
        let an = Analytics::compile(&p);
        let spec = &an.aggs[0];
        let values = vec![json!(3), json!(30.5), Value::Null, json!(12)];
        let e = Emit { key: "user-1".into(), start: 10_000, end: 20_000, revision: 2, values: Some(values), count: 3 };
        let j: Value = serde_json::from_slice(&json_bytes(spec, &e).unwrap().unwrap()).unwrap();
        assert_eq!(j["aggregation"], "spend_per_user");
        assert_eq!(j["group"]["user"], "user-1");
        assert_eq!((j["window_start"].as_i64(), j["window_end"].as_i64(), j["revision"].as_u64()), (Some(10_000), Some(20_000), Some(2)));
        assert_eq!(j["metrics"]["count"], 3);
        let schema = apache_avro::Schema::parse_str(OUTPUT_AVRO_SCHEMA).unwrap();
        let datum = apache_avro::to_avro_datum(&schema, to_avro(spec, &e).unwrap()).unwrap();
        let back = apache_avro::from_avro_datum(&schema, &mut datum.as_slice(), None).unwrap();
        let Avro::Record(fields) = back else { panic!("not a record: {back:?}") };
        let metrics = fields.iter().find(|(n, _)| n == "metrics").map(|(_, v)| v);
        let Some(Avro::Map(metrics)) = metrics else { panic!("no metrics map: {metrics:?}") };
        assert_eq!(metrics.get("count"), Some(&Avro::Union(1, Box::new(Avro::Double(3.0)))));
        assert_eq!(metrics.get("max_amount"), Some(&Avro::Union(1, Box::new(Avro::Double(12.0)))));
        assert_eq!(metrics.get("avg_amount"), Some(&Avro::Union(0, Box::new(Avro::Null))));
        assert_eq!(output_key("a", "k|x", 5), "a/k|x@5");
        assert_eq!(aggregation_of(&lineage_key("a", "k/x")), "a");
        assert_eq!(json_bytes(spec, &Emit { values: None, ..e }).unwrap(), None, "a retraction is a tombstone");
    }
}
