//! End-to-end: real `vigil broker`, `vigil gen` and `vigil run` processes on loopback.
mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const PARTITIONS: i32 = 4;
const WINDOW_MS: i64 = 1_000;
const START_MS: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 7;
const FAR_FUTURE_MS: i64 = 1_900_000_000_000;

fn assert_windows_equal(got: &BTreeMap<String, String>, want: &BTreeMap<String, (u64, f64, f64, f64)>) {
    assert_eq!(got.len(), want.len(), "number of windows");
    for (k, w) in want {
        let g = parse_window(got.get(k).unwrap_or_else(|| panic!("missing window {k}")));
        assert_eq!(g.0, w.0, "count of {k}");
        assert!((g.1 - w.1).abs() < 1e-6, "sum of {k}: {} vs {}", g.1, w.1);
        assert_eq!((g.2, g.3), (w.2, w.3), "min/max of {k}");
    }
}

#[test]
fn pipeline_outputs_exact_windows_dlq_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(PARTITIONS as u32, &["events", "out", "dlq"]);
    let (count, seed, bad_ratio) = (3_000u64, 7u64, 0.05);
    gen(&bootstrap, "events", count, seed, bad_ratio, START_MS, STEP_MS);
    send_sentinels(&bootstrap, "events", PARTITIONS, FAR_FUTURE_MS);
    let (want, bad) = expected_windows(seed, count, bad_ratio, START_MS, STEP_MS, WINDOW_MS);
    assert!(bad > 50, "test data should contain malformed records, has {bad}");

    let data = dir.path().join("data");
    let cfg = write_config(dir.path(), &NodeCfg { batch_max_records: 200, checkpoint_ms: 200, ..NodeCfg::new(&bootstrap, &data, "exact") });
    let mut node = start_node(&cfg);

    let got = read_topic(&bootstrap, "out", PARTITIONS, Duration::from_secs(120), |m| m.len() >= want.len());
    assert_windows_equal(&got, &want);
    let dlq = read_topic_with(
        &bootstrap,
        "dlq",
        PARTITIONS,
        Duration::from_secs(60),
        |m| m.len() as u64 >= bad,
        |m| header(m, "vigil.dlq.reason").unwrap_or_default(),
    );
    assert_eq!(dlq.len() as u64, bad, "exact DLQ count");
    // Every DLQ record says why, with a machine-readable reason; the generator makes all four kinds.
    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    for r in dlq.values() {
        *reasons.entry(r.as_str()).or_default() += 1;
    }
    assert_eq!(reasons.keys().copied().collect::<Vec<_>>(), ["invalid_json", "missing_field", "not_an_object", "wrong_type"], "{reasons:?}");

    // The node's own counters agree, in /status and in /metrics.
    let total = count + PARTITIONS as u64;
    let s = wait_for("status to settle", Duration::from_secs(30), || {
        status(&node.admin).filter(|s| s["windows_out"].as_u64() == Some(want.len() as u64) && s["dlq"].as_u64() == Some(bad))
    });
    assert_eq!(s["ingested"].as_u64(), Some(total));
    assert_eq!(s["validated"].as_u64(), Some(total - bad));
    let m = wait_for("metrics", Duration::from_secs(10), || http_get(&node.metrics, "/metrics"));
    assert_eq!(metric(&m, r#"vigil_records_total{stage="ingest"}"#), Some(total as f64), "{m}");
    assert_eq!(metric(&m, r#"vigil_records_total{stage="validate"}"#), Some((total - bad) as f64));
    assert_eq!(metric(&m, r#"vigil_records_total{stage="process"}"#), Some((total - bad) as f64));
    assert_eq!(metric(&m, r#"vigil_records_total{stage="sink"}"#), Some(want.len() as f64));
    assert_eq!(metric(&m, r#"vigil_records_total{stage="dlq"}"#), Some(bad as f64));
    // Nothing dropped: every valid record is in an emitted window or (sentinels) still open.
    let in_windows: u64 = want.values().map(|w| w.0).sum();
    assert_eq!(metric(&m, "vigil_window_records_emitted_total"), Some(in_windows as f64));
    assert_eq!(in_windows + bad + PARTITIONS as u64, total);

    // Checkpoints are listable while the node runs (read-only open).
    let list = std::process::Command::new(BIN).args(["checkpoint", "list", "--json", "--data-dir", data.to_str().expect("path")]).output().expect("run");
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert!(!list.as_array().expect("array").is_empty());
    let inspect: serde_json::Value =
        serde_json::from_str(&vigil_ok(&["checkpoint", "inspect", "--json", "--data-dir", data.to_str().expect("path")])).expect("json");
    assert!(inspect["open_windows"][AGG]["windows"].as_u64().unwrap_or(0) >= 1, "the sentinels' window is open: {inspect}");
    let exit = node.proc.terminate(Duration::from_secs(60));
    assert!(exit.success(), "graceful stop exits 0, got {exit}");
    node.proc.wait_line("clean stop message", Duration::from_secs(5), |l| l.contains("stopped cleanly"));

    // The final checkpoint covered everything: a restart resumes at the end and reads nothing again.
    let again = start_node(&cfg);
    let s = wait_for("restored position", Duration::from_secs(30), || {
        status(&again.admin).filter(|s| s["ready"] == true && s["position"].as_i64() == Some(total as i64))
    });
    assert_eq!(s["ingested"].as_u64(), Some(0), "nothing replayed after a clean stop: {s}");
}

/// The mock cluster keeps ~5 MiB per partition and silently moves the log start past older
/// data. A node that was behind must count what it lost, never skip it silently.
#[test]
fn records_lost_to_retention_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(1, &["events", "out", "dlq"]);
    gen(&bootstrap, "events", 200, 5, 0.0, START_MS, STEP_MS);
    let data = dir.path().join("data");
    let cfg = write_config(dir.path(), &NodeCfg::new(&bootstrap, &data, "retention"));
    let mut node = start_node(&cfg);
    wait_for("first 200 read", Duration::from_secs(60), || status(&node.admin).filter(|s| s["position"].as_i64() == Some(200)));
    assert!(node.proc.terminate(Duration::from_secs(60)).success());

    // While the node is down, ~7 MiB more arrive: the mock drops the oldest data.
    gen(&bootstrap, "events", 45_000, 6, 0.0, START_MS + 10_000, STEP_MS);
    let (low, high) = watermarks(&bootstrap, "events", 0);
    assert!(low > 200, "the mock should have moved its log start past offset 200 (low {low}, high {high})");

    let node = start_node(&cfg);
    let lost = low - 200;
    let m = wait_for("loss to be counted", Duration::from_secs(60), || {
        // The series exists at 0 from the start; wait until the loss is counted.
        http_get(&node.metrics, "/metrics").filter(|m| metric(m, r#"vigil_records_lost_to_retention_total{topic="events",partition="0"}"#).unwrap_or(0.0) > 0.0)
    });
    assert_eq!(metric(&m, r#"vigil_records_lost_to_retention_total{topic="events",partition="0"}"#), Some(lost as f64), "{m}");
    let s = wait_for("caught up", Duration::from_secs(60), || status(&node.admin).filter(|s| s["position"].as_i64() == Some(high)));
    assert_eq!(s["lost_to_retention"].as_i64(), Some(lost));
    assert_eq!(s["ingested"].as_i64(), Some(high - low), "everything still retained was read");
}

/// Kill the node with SIGKILL mid-run (twice), restart it, and compare the final windows
/// with an uninterrupted run over the same input.
#[test]
fn sigkill_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(PARTITIONS as u32, &["events", "out-ref", "dlq-ref", "out-crash", "dlq-crash"]);
    let (count, seed, bad_ratio) = (20_000u64, 11u64, 0.02);
    gen(&bootstrap, "events", count, seed, bad_ratio, START_MS, STEP_MS);
    send_sentinels(&bootstrap, "events", PARTITIONS, FAR_FUTURE_MS);
    let (want, bad) = expected_windows(seed, count, bad_ratio, START_MS, STEP_MS, WINDOW_MS);

    // Uninterrupted reference run.
    let ref_data = dir.path().join("ref");
    let ref_cfg = write_config(
        dir.path(),
        &NodeCfg { sink: "out-ref", dlq: "dlq-ref", batch_max_records: 20, checkpoint_ms: 50, ..NodeCfg::new(&bootstrap, &ref_data, "ref") },
    );
    let reference = start_node(&ref_cfg);
    let ref_out = read_topic(&bootstrap, "out-ref", PARTITIONS, Duration::from_secs(180), |m| m.len() >= want.len());
    drop(reference);
    assert_windows_equal(&ref_out, &want);

    // Crashing run, rate-limited so the kills land mid-run: SIGKILL at ~30 % and ~70 %.
    let data = dir.path().join("crash");
    let cfg = write_config(
        dir.path(),
        &NodeCfg { sink: "out-crash", dlq: "dlq-crash", batch_max_records: 20, checkpoint_ms: 50, rate: 5_000, ..NodeCfg::new(&bootstrap, &data, "crash") },
    );
    let total = (count + PARTITIONS as u64) as i64;
    for fraction in [0.3, 0.7] {
        let mut node = start_node(&cfg);
        let target = (total as f64 * fraction) as i64;
        let s =
            wait_for("progress before the kill", Duration::from_secs(120), || status(&node.admin).filter(|s| s["position"].as_i64().unwrap_or(0) >= target));
        node.proc.kill9();
        let position = s["position"].as_i64().unwrap_or(0);
        eprintln!("killed at position {position}/{total} (last checkpoint {})", s["last_checkpoint"]["id"]);
        assert!(position < total, "the kill must land mid-run (position {position} of {total})");
    }
    let node = start_node(&cfg);
    let out = read_topic(&bootstrap, "out-crash", PARTITIONS, Duration::from_secs(180), |m| m.len() >= want.len());
    assert_eq!(out, ref_out, "windows after two SIGKILLs equal the uninterrupted run");
    let m = http_get(&node.metrics, "/metrics").expect("metrics");
    assert!(metric(&m, "vigil_restore_keys_total").unwrap_or(0.0) > 0.0, "the restart restored open windows: {m}");
    assert!(metric(&m, "vigil_restore_duration_seconds").is_some());
    let dlq = read_topic(&bootstrap, "dlq-crash", PARTITIONS, Duration::from_secs(60), |m| m.len() as u64 >= bad);
    assert_eq!(dlq.len() as u64, bad, "every malformed record is in the DLQ exactly once by key");
    drop(node);
}

/// A node that dies right after a checkpoint commits, before any of the window outputs it
/// holds is published, publishes them when it starts again: none lost, none changed.
#[test]
fn outputs_of_a_checkpoint_committed_just_before_a_crash_are_published_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(PARTITIONS as u32, &["events", "out", "dlq"]);
    let (count, seed) = (5_000u64, 12u64);
    gen(&bootstrap, "events", count, seed, 0.0, START_MS, STEP_MS);
    send_sentinels(&bootstrap, "events", PARTITIONS, FAR_FUTURE_MS);
    let (want, _) = expected_windows(seed, count, 0.0, START_MS, STEP_MS, WINDOW_MS);
    let data = dir.path().join("data");
    let cfg = write_config(dir.path(), &NodeCfg { batch_max_records: 50, checkpoint_ms: 50, ..NodeCfg::new(&bootstrap, &data, "held") });
    let mut node = start_node_with_env(&cfg, &[("FAILPOINTS", "sink-publish=return")]);
    let exit = wait_for("the node to abort at its first checkpoint with outputs", Duration::from_secs(120), || node.proc.child.try_wait().ok().flatten());
    assert!(!exit.success(), "{exit:?}");
    let published: i64 = (0..PARTITIONS).map(|p| watermarks(&bootstrap, "out", p).1).sum();
    assert_eq!(published, 0, "the crash came before any output was published");
    let node = start_node(&cfg);
    let out = read_topic(&bootstrap, "out", PARTITIONS, Duration::from_secs(120), |m| m.len() >= want.len());
    assert_windows_equal(&out, &want);
    // Every record in exactly one published window (those the crash held, published at
    // start, and the rest).
    wait_for("every record in a published window", Duration::from_secs(30), || {
        http_get(&node.metrics, "/metrics").filter(|m| metric(m, "vigil_window_records_emitted_total") == Some(count as f64))
    });
}

#[test]
fn panicking_stage_is_restarted_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(2, &["events", "out", "dlq"]);
    gen(&bootstrap, "events", 500, 3, 0.0, START_MS, STEP_MS);
    let data = dir.path().join("data");
    let cfg = write_config(dir.path(), &NodeCfg::new(&bootstrap, &data, "panic"));
    let node = start_node(&cfg);
    wait_for("ingest", Duration::from_secs(60), || status(&node.admin).filter(|s| s["ingested"].as_u64() == Some(500)));

    let tree = || -> serde_json::Value { serde_json::from_str(&http_get(&node.admin, "/tree").expect("tree")).expect("json") };
    let restarts = |t: &serde_json::Value, name: &str| -> u64 {
        t["children"][0]["children"].as_array().expect("stages").iter().find(|c| c["name"] == name).expect("stage")["restarts"].as_u64().expect("restarts")
    };
    assert_eq!(restarts(&tree(), "validate-1"), 0);

    // Shard 1 of validate (the test config runs two).
    let out = std::process::Command::new(BIN).args(["chaos", "panic", "validate-1", "--admin", &node.admin]).output().expect("vigil chaos");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The pipeline supervisor is one_for_all: every stage restarts, and the counter rises.
    wait_for("restart", Duration::from_secs(30), || {
        Some(tree()).filter(|t| {
            let ingest = t["children"][0]["children"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "ingest").cloned()).unwrap_or_default();
            restarts(t, "validate-1") == 1 && restarts(t, "process-0") == 1 && restarts(t, "ingest") == 1 && ingest["status"] == "running"
        })
    });
    let m = http_get(&node.metrics, "/metrics").expect("metrics");
    assert_eq!(metric(&m, r#"vigil_actor_restarts_total{actor="validate-1"}"#), Some(1.0), "{m}");

    let text = std::process::Command::new(BIN).args(["tree", "--admin", &node.admin]).output().expect("vigil tree");
    let text = String::from_utf8_lossy(&text.stdout);
    for line in ["root [supervisor one_for_one]", "pipeline [supervisor one_for_all, permanent]", "validate-1 [worker, permanent] running restarts=1"] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    // After the restart the node resumes from its checkpoint and keeps working.
    gen(&bootstrap, "events", 100, 4, 0.0, START_MS + 10_000, STEP_MS);
    wait_for("ingest after restart", Duration::from_secs(60), || status(&node.admin).filter(|s| s["ingested"].as_u64().unwrap_or(0) >= 600));
}

#[test]
fn config_check_reports_every_mistake_with_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "[[pipeline.sources]]\ntopic = \"\"\n[checkpoint]\ninterval = \"often\"\n[observability]\nmetrics_adr = \"x\"\n").expect("write");
    let out = std::process::Command::new(BIN).args(["config", "check", f.to_str().expect("path")]).output().expect("run");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for p in ["pipeline.sources[0].topic: must not be empty", "checkpoint.interval:", "observability.metrics_adr: unknown key"] {
        assert!(text.contains(p), "missing `{p}` in:\n{text}");
    }
    // Aggregations: each mistake with its path; the replaced [pipeline.window] with its migration.
    let f = dir.path().join("bad-analytics.toml");
    std::fs::write(
        &f,
        "[[pipeline.aggregations]]\nname = \"a\"\nfilter = \"amount >\"\nwindow = { kind = \"hopping\", size = \"10s\", slide = \"3s\" }\nmetrics = [\"count\", \"median(x)\"]\n[pipeline.window]\nsize = \"1s\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(BIN).args(["config", "check", f.to_str().expect("path")]).output().expect("run");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for p in [
        "pipeline.aggregations[0].filter: expected a literal",
        "pipeline.aggregations[0].metrics[1]: `median(x)`: unknown metric `median`",
        "pipeline.aggregations[0].window.slide: must divide size",
        "pipeline.window: replaced by [pipeline.event_time]",
        "docs/analytics.md#migrating-from-pipelinewindow",
    ] {
        assert!(text.contains(p), "missing `{p}` in:\n{text}");
    }
    let def = std::process::Command::new(BIN).args(["config", "default"]).output().expect("run");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &def.stdout).expect("write");
    let out = std::process::Command::new(BIN).args(["config", "check", good.to_str().expect("path")]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// `vigil run` with no config: embedded broker, generator and full pipeline; every stage
/// counter rises, the generator's malformed records reach the DLQ, data lands in ./vigil-data.
#[test]
fn embedded_default_runs_every_stage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("VIGIL_OBSERVABILITY__METRICS_ADDR", "127.0.0.1:0"), ("VIGIL_OBSERVABILITY__ADMIN_ADDR", "127.0.0.1:0")];
    let mut p = Proc::spawn_in("embedded", Some(dir.path()), &["run", "--json"], &env);
    let line = p.wait_line("started event", Duration::from_secs(60), |l| l.contains("\"event\":\"started\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(v["embedded"], true);
    let metrics = v["metrics"].as_str().expect("metrics").trim_start_matches("http://").trim_end_matches("/metrics").to_string();
    let stages = ["ingest", "validate", "process", "sink", "dlq"];
    let first = wait_for("every stage counting (windows close after 10 s + 2 s lateness)", Duration::from_secs(60), || {
        let m = http_get(&metrics, "/metrics")?;
        let vals: Vec<f64> = stages.iter().map(|s| metric(&m, &format!("vigil_records_total{{stage=\"{s}\"}}")).unwrap_or(0.0)).collect();
        vals.iter().all(|v| *v > 0.0).then_some(vals)
    });
    let rising = wait_for("counters rising", Duration::from_secs(30), || {
        let m = http_get(&metrics, "/metrics")?;
        let ingest = metric(&m, r#"vigil_records_total{stage="ingest"}"#)?;
        (ingest > first[0]).then_some(ingest)
    });
    assert!(rising > first[0]);
    // The generator writes Avro through the node's own registry.
    let admin = v["admin"].as_str().expect("admin").trim_start_matches("http://").to_string();
    assert_eq!(v["registry"].as_str(), Some(format!("http://{admin}").as_str()));
    let subjects: Vec<String> = serde_json::from_str(&http_get(&admin, "/subjects").expect("subjects")).expect("json");
    assert_eq!(subjects, vec!["events-value"]);
    let m = http_get(&metrics, "/metrics").expect("metrics");
    assert!(metric(&m, r#"vigil_schema_records_total{subject="events-value",version="1"}"#).unwrap_or(0.0) > 0.0, "{m}");
    assert!(p.terminate(Duration::from_secs(60)).success());
    assert!(dir.path().join("vigil-data").is_dir(), "data under ./vigil-data");
}

/// A checkpoint whose RocksDB write fails (the `store-commit-checkpoint` failpoint, twice) is
/// counted and journaled with its cause; processing continues without a restart, the next
/// checkpoint commits, and the outputs and their lineage are still exact.
#[test]
fn failed_store_write_fails_the_checkpoint_and_the_next_one_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(PARTITIONS as u32, &["events", "out", "dlq"]);
    let (count, seed, bad_ratio) = (6_000u64, 21u64, 0.02);
    gen(&bootstrap, "events", count, seed, bad_ratio, START_MS, STEP_MS);
    send_sentinels(&bootstrap, "events", PARTITIONS, FAR_FUTURE_MS);
    let (want, _) = expected_windows(seed, count, bad_ratio, START_MS, STEP_MS, WINDOW_MS);
    let data = dir.path().join("data");
    let cfg = write_config(dir.path(), &NodeCfg { rate: 3_000, checkpoint_ms: 100, ..NodeCfg::new(&bootstrap, &data, "faults") });
    // Checkpoints 1-4 commit, 5 and 6 fail their store write, the rest commit.
    let node = start_node_with_env(&cfg, &[("FAILPOINTS", "store-commit-checkpoint=4*off->2*return(disk full)->off")]);
    let out = read_topic(&bootstrap, "out", PARTITIONS, Duration::from_secs(120), |m| m.len() >= want.len());
    assert_windows_equal(&out, &want);

    let m = wait_for("checkpoints after the failures", Duration::from_secs(60), || {
        let m = http_get(&node.metrics, "/metrics")?;
        (metric(&m, r#"vigil_checkpoints_total{outcome="ok"}"#)? >= 6.0).then_some(m)
    });
    assert_eq!(metric(&m, r#"vigil_checkpoints_total{outcome="failed"}"#), Some(2.0), "{m}");
    assert_eq!(metric(&m, r#"vigil_actor_restarts_total{actor="pipeline"}"#), Some(0.0), "processing continued without a restart");
    assert_eq!(metric(&m, r#"vigil_actor_restarts_total{actor="sink"}"#), Some(0.0));
    assert!(metric(&m, "vigil_checkpoint_last_success_timestamp_seconds").unwrap_or(0.0) > 1.7e9);
    let failures: Vec<serde_json::Value> =
        serde_json::from_str(&vigil_ok(&["lineage", "events", "--since", "10m", "--kind", "checkpoint_failure", "--json", "--admin", &node.admin]))
            .expect("json");
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures.iter().all(|e| e["text"].as_str().unwrap_or("").contains("injected fault (disk full)")), "{failures:?}");
    let ids: Vec<u64> = (5..=6).collect();
    assert!(failures.iter().zip(&ids).all(|(e, id)| e["text"].as_str().unwrap_or("").starts_with(&format!("checkpoint {id} failed"))), "{failures:?}");

    // The failed checkpoints' lineage was committed with the next one: every window still
    // traces back to exactly its count of records.
    let ends: BTreeMap<String, i64> = (0..PARTITIONS).map(|p| (format!("events/{p}"), watermarks(&bootstrap, "events", p).1)).collect();
    wait_for("a checkpoint covering the input", Duration::from_secs(60), || {
        let st: serde_json::Value = serde_json::from_str(&http_get(&node.admin, "/lineage/status")?).ok()?;
        (serde_json::from_value::<BTreeMap<String, i64>>(st["sources"].clone()).ok()? == ends).then_some(())
    });
    for (key, (n, ..)) in &want {
        let t: serde_json::Value = serde_json::from_str(&http_get(&node.admin, &format!("/lineage/output/out/{key}")).expect("trace")).expect("json");
        assert_eq!((t["status"].as_str(), t["records"].as_u64()), (Some("written"), Some(*n)), "{key}: {t}");
    }
}

/// A node refuses to resume from a checkpoint taken against another cluster — naming the
/// mismatch and what to do — and resumes when `checkpoint.allow_cluster_change` says so.
#[test]
fn resume_refuses_a_checkpoint_of_another_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    {
        let (_a, bootstrap_a) = start_broker(2, &["events", "out", "dlq"]);
        gen(&bootstrap_a, "events", 200, 1, 0.0, START_MS, STEP_MS);
        let cfg = write_config(dir.path(), &NodeCfg::new(&bootstrap_a, &data, "cluster-a"));
        let mut node = start_node(&cfg);
        wait_for("a checkpoint of everything", Duration::from_secs(60), || {
            status(&node.admin).filter(|s| s["ingested"].as_u64() == Some(200) && s["last_checkpoint"]["id"].as_u64().unwrap_or(0) >= 1)
        });
        assert!(node.proc.terminate(Duration::from_secs(60)).success());
    }
    let (_b, bootstrap_b) = start_broker(1, &["events", "out", "dlq"]);
    let cfg = write_config(dir.path(), &NodeCfg::new(&bootstrap_b, &data, "cluster-b"));
    let mut child = std::process::Command::new(BIN)
        .args(["run", "--config", cfg.to_str().expect("utf-8")])
        .env("VIGIL_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let exited = wait_for("the node to refuse", Duration::from_secs(60), || child.try_wait().ok().flatten());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert!(!exited.success(), "{err}");
    assert!(err.contains("cannot resume from the checkpoint"), "{err}");
    assert!(err.contains("it was taken against Kafka cluster mockCluster"), "names both clusters: {err}");
    assert!(err.contains("partition events/1 of the checkpoint does not exist"), "{err}");
    assert!(err.contains("allow_cluster_change"), "says how to override: {err}");

    let mut p = Proc::spawn("node", &["run", "--config", cfg.to_str().expect("utf-8"), "--json"], &[("VIGIL_CHECKPOINT__ALLOW_CLUSTER_CHANGE", "true")]);
    p.wait_line("started event", Duration::from_secs(60), |l| l.contains("\"event\":\"started\""));
}

/// `vigil gen --count 0` without a rate stops on SIGTERM, having every record acknowledged,
/// and says how many it wrote (it used to look for a signal only while pacing).
#[test]
fn unpaced_endless_gen_stops_on_a_signal() {
    let (_broker, bootstrap) = start_broker(2, &["events"]);
    let mut g = Proc::spawn("gen", &["gen", "--bootstrap", &bootstrap, "--count", "0", "--json"], &[]);
    wait_for("records in the topic", Duration::from_secs(30), || (watermarks(&bootstrap, "events", 0).1 > 1000).then_some(()));
    let status = g.terminate(Duration::from_secs(30));
    assert!(status.success(), "gen exited with {status}");
    let summary = g.wait_line("the summary", Duration::from_secs(5), |l| l.contains("\"produced\""));
    let v: serde_json::Value = serde_json::from_str(&summary).expect("summary is JSON");
    let produced = v["produced"].as_u64().expect("produced");
    let stored = watermarks(&bootstrap, "events", 0).1 + watermarks(&bootstrap, "events", 1).1;
    assert_eq!(produced, stored as u64, "every record it counted is in the topic");
}
