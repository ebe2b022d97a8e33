//! Output records of aggregations: key `<aggregation>/<group key>@<window start>`, a JSON
//! object or a Confluent-framed Avro record of [`OUTPUT_AVRO_SCHEMA`], and a tombstone for
//! a retracted (merged-away) session. Pure.
use super::engine::Emit;
use super::spec::AggSpec;
use apache_avro::types::Value as Avro;
use serde_json::{json, Value};

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
/// written.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeldOutput {
    /// Topic.
    pub topic: String,
    /// Key.
    pub key: Vec<u8>,
    /// Value; `None` is a tombstone (a retracted session).
    pub payload: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Input records it represents when it is a window's first emission (else 0).
    pub records: u64,
}

/// A [`HeldOutput`] read in place from its encoding: what Sink sends, without copying the
/// record's parts out of the store's bytes.
#[derive(Debug, PartialEq, serde::Deserialize)]
pub struct HeldOutputRef<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key.
    pub key: &'a [u8],
    /// Value; `None` is a tombstone.
    pub payload: Option<&'a [u8]>,
    /// Headers, in order.
    #[serde(borrow)]
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// Input records it represents.
    pub records: u64,
}

impl HeldOutput {
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

/// The JSON value of an emission; `None` for a retraction (a tombstone).
pub fn to_json(spec: &AggSpec, e: &Emit) -> Option<Value> {
    let metrics = e.values.as_ref()?;
    Some(json!({
        "aggregation": &*spec.name,
        "key": e.key,
        "group": spec.group_json(&e.key).unwrap_or_default(),
        "window_start": e.start,
        "window_end": e.end,
        "revision": e.revision,
        "records": e.count,
        "metrics": metrics,
    }))
}

/// The Avro record of an emission, `None` for a retraction.
pub fn to_avro(spec: &AggSpec, e: &Emit) -> Option<Avro> {
    let metrics = e.values.as_ref()?;
    let group = spec.group_json(&e.key).unwrap_or_default();
    let group = group.into_iter().map(|(k, v)| (k, Avro::String(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))).collect();
    let metrics = metrics
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Number(n) => Avro::Union(1, Box::new(Avro::Double(n.as_f64().unwrap_or(f64::NAN)))),
                Value::String(s) => Avro::Union(2, Box::new(Avro::String(s.clone()))),
                _ => Avro::Union(0, Box::new(Avro::Null)),
            };
            (k.clone(), v)
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

    #[test]
    fn a_held_output_reads_back_in_place() {
        let held = HeldOutput {
            topic: "out".into(),
            key: b"w/alice@0".to_vec(),
            payload: Some(br#"{"count":3}"#.to_vec()),
            headers: vec![("vigil.node".into(), b"n1".to_vec()), ("vigil.revision".into(), Vec::new())],
            records: 3,
        };
        let bytes = vigil_runtime::store::encode("held output", &held).unwrap();
        let r: HeldOutputRef<'_> = vigil_runtime::store::decode_borrowed("held output", &bytes).unwrap();
        assert_eq!(
            r,
            HeldOutputRef {
                topic: "out",
                key: b"w/alice@0",
                payload: Some(br#"{"count":3}"#),
                headers: vec![("vigil.node", b"n1"), ("vigil.revision", b"")],
                records: 3
            }
        );
        let tombstone = vigil_runtime::store::encode("held output", &HeldOutput { payload: None, ..held }).unwrap();
        let r: HeldOutputRef<'_> = vigil_runtime::store::decode_borrowed("held output", &tombstone).unwrap();
        assert_eq!(r.payload, None);
        assert!(vigil_runtime::store::decode_borrowed::<HeldOutputRef<'_>>("held output", &bytes[..bytes.len() - 3]).is_err(), "truncated");
    }

    #[test]
    fn json_and_avro_carry_window_revision_name_and_metrics() {
        let p = vigil_config::PipelineConfig::default();
        let an = Analytics::compile(&p);
        let spec = &an.aggs[0];
        let mut values = serde_json::Map::new();
        values.insert("count".into(), json!(3));
        values.insert("avg_amount".into(), Value::Null);
        let e = Emit { key: "user-1".into(), start: 10_000, end: 20_000, revision: 2, values: Some(values), count: 3 };
        let j = to_json(spec, &e).unwrap();
        assert_eq!(j["aggregation"], "spend_per_user");
        assert_eq!(j["group"]["user"], "user-1");
        assert_eq!((j["window_start"].as_i64(), j["window_end"].as_i64(), j["revision"].as_u64()), (Some(10_000), Some(20_000), Some(2)));
        assert_eq!(j["metrics"]["count"], 3);
        let schema = apache_avro::Schema::parse_str(OUTPUT_AVRO_SCHEMA).unwrap();
        let datum = apache_avro::to_avro_datum(&schema, to_avro(spec, &e).unwrap()).unwrap();
        let back = apache_avro::from_avro_datum(&schema, &mut datum.as_slice(), None).unwrap();
        assert!(matches!(back, Avro::Record(_)));
        assert_eq!(output_key("a", "k|x", 5), "a/k|x@5");
        assert_eq!(aggregation_of(&lineage_key("a", "k/x")), "a");
        assert!(to_json(spec, &Emit { values: None, ..e }).is_none(), "a retraction is a tombstone");
    }
}
