//! End-to-end with Confluent's own Python client (`confluent-kafka` with its schema registry,
//! Avro and JSON Schema extras): SchemaRegistryClient, AvroSerializer, JSONSerializer and
//! AvroDeserializer against a running node and `vigil broker`. `./scripts/test` installs the
//! client into a virtual environment under the build cache and sets `VIGIL_TEST_PYTHON`.
mod common;

use common::*;
use std::time::Duration;

const EXTRA: &str = r#"
[[pipeline.sources]]
topic = "clicks"
format = "json_schema"
"#;

#[test]
fn confluent_python_client_registers_produces_and_reads_vigil_outputs() {
    let python = std::env::var("VIGIL_TEST_PYTHON")
        .expect("VIGIL_TEST_PYTHON is not set: run the suite with ./scripts/test, which installs confluent-kafka into a virtual environment");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(2, &["payments", "clicks", "out", "dlq"]);
    let data = dir.path().join("data");
    let cfg = write_config(
        dir.path(),
        &NodeCfg { source: "payments", format: "avro", sink_format: "avro", extra: EXTRA, window_ms: 1_000, ..NodeCfg::new(&bootstrap, &data, "confluent") },
    );
    let node = start_node(&cfg);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/confluent_roundtrip.py");
    let out = std::process::Command::new(&python).args([script, &bootstrap, &node.registry()]).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary json");
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["incompatible"]["http_status_code"], 409, "{summary}");
    // 400 + 400 Avro, 300 JSON Schema, 4 sentinels: every record validated, none in the DLQ.
    let s = wait_for("all records validated", Duration::from_secs(30), || status(&node.admin).filter(|s| s["validated"].as_u64() == Some(1_104)));
    assert_eq!(s["dlq"].as_u64(), Some(0), "{s}");
    let m = http_get(&node.metrics, "/metrics").expect("metrics");
    assert_eq!(metric(&m, r#"vigil_schema_records_total{subject="payments-value",version="1"}"#), Some(400.0), "{m}");
    assert_eq!(metric(&m, r#"vigil_schema_records_total{subject="payments-value",version="2"}"#), Some(402.0), "{m}");
    assert_eq!(metric(&m, r#"vigil_schema_records_total{subject="clicks-value",version="1"}"#), Some(302.0), "{m}");
}
