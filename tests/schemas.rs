//! End-to-end: Avro through the node's own schema registry. Real `vigil broker`, `vigil run`,
//! `vigil gen --format avro` and `vigil schema` processes; every kind of bad record lands in
//! the DLQ with its reason, none is lost, no stage restarts, and the windows of the good
//! records are exact.
mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;
use vigil_actors::generator::{EventGen, GenRecord, GenSpec, Wire, AVRO_SCHEMA};
use vigil_actors::registry::resolver::RegistryClient;

const PARTITIONS: i32 = 4;
const START_MS: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 7;
const WINDOW_MS: i64 = 1_000;

const RULES: &str = r#"
[[pipeline.fields]]
name = "user"
type = "string"
pattern = "^user-[0-9]+$"

[[pipeline.fields]]
name = "amount"
type = "number"
min = 0.0

[[pipeline.fields]]
name = "ts"
type = "integer"

[[pipeline.fields]]
name = "kind"
type = "string"
one_of = ["payment", "page_view"]

[[pipeline.fields]]
name = "event_id"
type = "string"
max_length = 40
"#;

fn post(registry: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    RegistryClient::new(registry, Duration::from_secs(30)).send("POST", path, Some(&body)).expect("registry reachable")
}

fn crafted(id: &str, user: &str, kind: &'static str, ts: i64) -> GenRecord {
    let mut r = EventGen::new(GenSpec { seed: 1, users: 1, bad_ratio: 0.0, start_ms: ts, step_ms: 1 }).next_record();
    r.id = id.into();
    r.key = user.into();
    r.event.event_id = id.into();
    r.event.user = user.into();
    r.event.kind = kind;
    r
}

#[test]
fn avro_records_are_validated_and_every_failure_reaches_the_dlq_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(PARTITIONS as u32, &["events", "out", "dlq"]);
    let data = dir.path().join("data");
    let cfg = write_config(dir.path(), &NodeCfg { format: "avro", extra: RULES, ..NodeCfg::new(&bootstrap, &data, "avro") });
    let node = start_node(&cfg);
    let registry = node.registry();

    // 1. The generator registers its schema through the Confluent API and writes framed Avro.
    let (count, seed, bad_ratio) = (2_000u64, 21u64, 0.1);
    gen_format(&bootstrap, "events", count, seed, bad_ratio, START_MS, STEP_MS, "avro", Some(&registry));
    let subjects: Vec<String> = serde_json::from_str(&http_get(&node.admin, "/subjects").expect("subjects")).expect("json");
    assert_eq!(subjects, vec!["events-value"]);
    let v1: serde_json::Value = serde_json::from_str(&http_get(&node.admin, "/subjects/events-value/versions/latest").expect("v1")).expect("json");
    let v1_id = v1["id"].as_u64().expect("id") as u32;
    let wire = Wire::avro(v1_id).expect("wire");

    // 2. A schema id of another subject.
    let (st, other) = post(&registry, "/subjects/other-value/versions", serde_json::json!({"schema": AVRO_SCHEMA.replace("\"Event\"", "\"Other\"")}));
    assert_eq!(st, 200, "{other}");
    let other_wire = Wire::avro(other["id"].as_u64().expect("id") as u32).expect("wire");
    // 3. A compatible v2, archived with the CLI before anything is written with it.
    let v2_schema =
        AVRO_SCHEMA.replace(r#"{"name":"country""#, r#"{"name":"channel","type":"string","default":"web","doc":"Sales channel"},{"name":"country""#);
    let (st, v2) = post(&registry, "/subjects/events-value/versions", serde_json::json!({"schema": v2_schema}));
    assert_eq!((st, v2["version"].as_u64()), (200, Some(2)), "{v2}");
    let out = std::process::Command::new(BIN).args(["schema", "archive", "events-value", "2", "--admin", &node.admin]).output().expect("vigil schema");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v2_avro = apache_avro::Schema::parse_str(&v2_schema).expect("v2");
    let v2_wire = Wire::Avro { id: v2["id"].as_u64().expect("id") as u32, schema: Box::new(v2_avro) };
    // 4. An incompatible registration is refused with Confluent's 409.
    let (st, err) =
        post(&registry, "/subjects/events-value/versions", serde_json::json!({"schema": AVRO_SCHEMA.replace(r#""type":"double""#, r#""type":"string""#)}));
    assert_eq!((st, err["error_code"].as_u64()), (409, Some(409)), "{err}");

    let t = START_MS + 60_000;
    let mut raw: Vec<(String, Vec<u8>)> = Vec::new();
    let mut want_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |reason: &str, r: &GenRecord, w: &Wire| {
        raw.push((r.key.clone(), w.encode(r)));
        *want_reasons.entry(reason.to_string()).or_default() += 1;
    };
    for i in 0..3 {
        add("wrong_subject", &crafted(&format!("ws-{i}"), "user-001", "payment", t), &other_wire);
        add("archived_schema", &crafted(&format!("ar-{i}"), "user-001", "payment", t), &v2_wire);
    }
    for i in 0..2 {
        add("rule:kind.one_of", &crafted(&format!("k-{i}"), "user-001", "refund", t), &wire);
        add("rule:user.pattern", &crafted(&format!("u-{i}"), "bob", "payment", t), &wire);
        add("rule:event_id.max_length", &crafted(&"x".repeat(41 + i), "user-001", "payment", t), &wire);
    }
    produce_raw(&bootstrap, "events", &raw);
    let crafted_count = raw.len() as u64;
    let sentinel = wire.encode(&crafted("sentinel", "user-999", "payment", 1_900_000_000_000));
    send_sentinel_values(&bootstrap, "events", PARTITIONS, &sentinel);

    // The independent model: the generator's good records, windowed.
    let mut want: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut good = 0u64;
    for r in EventGen::new(GenSpec { seed, users: 20, bad_ratio, start_ms: START_MS, step_ms: STEP_MS }).take(count as usize) {
        match wire.expected_reason(&r) {
            Some(reason) => *want_reasons.entry(reason.to_string()).or_default() += 1,
            None => {
                good += 1;
                let start = r.ts.div_euclid(WINDOW_MS) * WINDOW_MS;
                let e = want.entry(out_key(&r.event.user, start)).or_default();
                e.0 += 1;
                e.1 += r.event.amount;
            }
        }
    }
    let bad: u64 = want_reasons.values().sum();
    assert_eq!(want_reasons.len(), 9, "every reason is exercised: {want_reasons:?}");

    let got = read_topic(&bootstrap, "out", PARTITIONS, Duration::from_secs(120), |m| m.len() >= want.len());
    assert_eq!(got.len(), want.len(), "number of windows");
    for (k, (n, sum)) in &want {
        let w: serde_json::Value = serde_json::from_str(got.get(k).unwrap_or_else(|| panic!("missing window {k}"))).expect("window json");
        assert_eq!(w["metrics"]["count"].as_u64(), Some(*n), "count of {k}");
        assert!((w["metrics"]["sum_amount"].as_f64().expect("sum") - sum).abs() < 1e-6, "sum of {k}");
    }
    let dlq = read_topic_with(
        &bootstrap,
        "dlq",
        PARTITIONS,
        Duration::from_secs(60),
        |m| m.len() as u64 >= bad,
        |m| format!("{}|{}", header(m, "vigil.dlq.reason").unwrap_or_default(), header(m, "vigil.schema.version").unwrap_or_default()),
    );
    let mut got_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for v in dlq.values() {
        let (reason, version) = v.split_once('|').expect("sep");
        *got_reasons.entry(reason.to_string()).or_default() += 1;
        if reason == "archived_schema" {
            assert_eq!(version, "2", "the DLQ names the archived version");
        }
    }
    assert_eq!(got_reasons, want_reasons, "every bad record is in the DLQ once, with its reason");

    // Counters agree; nothing restarted.
    let total = count + crafted_count + PARTITIONS as u64;
    let s = wait_for("status to settle", Duration::from_secs(30), || status(&node.admin).filter(|s| s["dlq"].as_u64() == Some(bad)));
    assert_eq!(s["ingested"].as_u64(), Some(total));
    assert_eq!(s["validated"].as_u64(), Some(good + PARTITIONS as u64));
    let m = http_get(&node.metrics, "/metrics").expect("metrics");
    assert_eq!(metric(&m, r#"vigil_validation_failures_total{reason="wrong_subject"}"#), Some(3.0), "{m}");
    assert_eq!(metric(&m, r#"vigil_schema_records_total{subject="events-value",version="1"}"#), Some((good + PARTITIONS as u64) as f64), "{m}");
    assert_eq!(metric(&m, r#"vigil_schema_registrations_total{outcome="incompatible"}"#), Some(1.0), "{m}");
    let tree: serde_json::Value = serde_json::from_str(&http_get(&node.admin, "/tree").expect("tree")).expect("json");
    for stage in tree["children"][0]["children"].as_array().expect("stages") {
        assert_eq!(stage["restarts"], 0, "no stage restarts on bad input: {stage}");
    }
    // Usage is tracked per version and the audit log has every change.
    let list = std::process::Command::new(BIN).args(["schema", "list", "--json", "--admin", &node.admin]).output().expect("vigil schema list");
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let v1_row = list.as_array().expect("rows").iter().find(|r| r["subject"] == "events-value" && r["version"] == 1).expect("v1 row");
    assert_eq!(v1_row["records"].as_u64(), Some(good + PARTITIONS as u64));
    let audit = std::process::Command::new(BIN).args(["schema", "audit", "--json", "--admin", &node.admin]).output().expect("vigil schema audit");
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).expect("json");
    let actions: Vec<&str> = audit.as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, vec!["register", "register", "register", "archive"], "{audit}");
}

/// A node pointed at another node's registry (`schema_registry.url`) validates through it.
#[test]
fn a_node_can_use_an_external_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(2, &["events", "out", "dlq"]);
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let a = start_node(&write_config(dir.path(), &NodeCfg { format: "avro", source: "events", ..NodeCfg::new(&bootstrap, &a_data, "registry-a") }));
    let (count, seed, bad_ratio) = (500u64, 4u64, 0.1);
    gen_format(&bootstrap, "events", count, seed, bad_ratio, START_MS, STEP_MS, "avro", Some(&a.registry()));
    let extra = format!("[schema_registry]\nurl = \"{}\"\n", a.registry());
    let b = start_node(&write_config(dir.path(), &NodeCfg { format: "avro", extra: &extra, ..NodeCfg::new(&bootstrap, &b_data, "registry-b") }));
    let wire = Wire::avro(1).expect("wire");
    let bad = EventGen::new(GenSpec { seed, users: 20, bad_ratio, start_ms: START_MS, step_ms: STEP_MS })
        .take(count as usize)
        .filter(|r| wire.expected_reason(r).is_some())
        .count() as u64;
    let s = wait_for("node b validated everything through a's registry", Duration::from_secs(60), || {
        status(&b.admin).filter(|s| s["ingested"].as_u64() == Some(count) && s["dlq"].as_u64() == Some(bad))
    });
    assert_eq!(s["validated"].as_u64(), Some(count - bad), "{s}");
    // `vigil gen --schema-id` frames with an id already registered, without asking the registry.
    let status_ok = std::process::Command::new(BIN)
        .args(["gen", "--bootstrap", &bootstrap, "--topic", "events", "--count", "100", "--format", "avro", "--schema-id", "1", "--seed", "9", "--json"])
        .env("VIGIL_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("vigil gen")
        .success();
    assert!(status_ok);
    wait_for("the framed records validated", Duration::from_secs(60), || {
        status(&b.admin).filter(|s| s["validated"].as_u64() == Some(count - bad + 100) && s["ingested"].as_u64() == Some(count + 100))
    });
    // B serves no registry of its own.
    assert!(http_get(&b.admin, "/subjects").map(|t| !t.contains("events-value")).unwrap_or(true));
    drop(a);
}

fn vigil(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(BIN).args(args).env("VIGIL_LOG", "warn").output().expect("run vigil");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `vigil schema` over the node's registry, with the shipped example schemas and config.
#[test]
fn schema_cli_registers_checks_and_governs() {
    let example = |f: &str| format!("{}/examples/schemas/{f}", env!("CARGO_MANIFEST_DIR"));
    let (ok, out) = vigil(&["config", "check", &example("node.toml")]);
    assert!(ok, "the example config is valid: {out}");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(1, &["payments", "out", "dlq"]);
    let data = dir.path().join("data");
    let node = start_node(&write_config(dir.path(), &NodeCfg { source: "payments", format: "avro", ..NodeCfg::new(&bootstrap, &data, "cli") }));
    let a = node.admin.as_str();
    let (ok, out) = vigil(&["schema", "register", "payments-value", &example("payment-v1.avsc"), "--admin", a, "--json"]);
    assert!(ok, "{out}");
    let v1: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v1["version"], 1);
    let (ok, out) = vigil(&["schema", "check", "payments-value", &example("payment-v2.avsc"), "--admin", a]);
    assert!(ok && out.contains("compatible"), "{out}");
    let (ok, out) = vigil(&["schema", "check", "payments-value", &example("payment-bad.avsc"), "--admin", a]);
    assert!(!ok && out.contains("INCOMPATIBLE") && out.contains("TYPE_MISMATCH"), "{out}");
    let (ok, out) = vigil(&["schema", "register", "payments-value", &example("payment-bad.avsc"), "--admin", a]);
    assert!(!ok && out.contains("HTTP 409"), "{out}");
    let (ok, out) = vigil(&["schema", "register", "payments-value", &example("payment-v2.avsc"), "--admin", a]);
    assert!(ok && out.contains("version 2"), "{out}");
    let (ok, out) = vigil(&["schema", "get", "payments-value", "--version", "1", "--admin", a, "--json"]);
    assert!(ok, "{out}");
    let got: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(got["id"], v1["id"]);
    let (ok, out) = vigil(&["schema", "get", "--id", &v1["id"].to_string(), "--admin", a]);
    assert!(ok && out.contains("\"Payment\""), "{out}");
    let (ok, out) = vigil(&["schema", "deprecate", "payments-value", "1", "--admin", a]);
    assert!(ok && out.contains("deprecated"), "{out}");
    let (ok, out) = vigil(&["schema", "config", "payments-value", "--set", "full", "--admin", a]);
    assert!(ok && out.contains("FULL"), "{out}");
    let (ok, out) = vigil(&["schema", "list", "--admin", a]);
    assert!(ok && out.contains("deprecated") && out.contains("payments-value"), "{out}");
    let (ok, out) = vigil(&["schema", "delete", "payments-value", "--version", "1", "--permanent", "--admin", a]);
    assert!(!ok && out.contains("40407"), "a permanent delete needs a soft delete first: {out}");
    let (ok, out) = vigil(&["schema", "delete", "payments-value", "--version", "1", "--admin", a]);
    assert!(ok, "{out}");
    let (ok, out) = vigil(&["schema", "delete", "payments-value", "--version", "1", "--permanent", "--admin", a]);
    assert!(ok, "{out}");
    let (ok, out) = vigil(&["schema", "usage", "--admin", a, "--json"]);
    assert!(ok, "{out}");
    let (ok, out) = vigil(&["schema", "audit", "--admin", a, "--json"]);
    assert!(ok, "{out}");
    let audit: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let actions: Vec<&str> = audit.as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, vec!["register", "register", "deprecate", "config", "delete_version", "delete_version_permanent"]);
    let (ok, out) = vigil(&["schema", "list", "--admin", "127.0.0.1:1"]);
    assert!(!ok && out.contains("cannot reach the registry"), "{out}");
}
