//! The shipped monitoring checked with the real tools: Prometheus's `promtool` accepts a live
//! node's `/metrics`, the alerting rules and their unit tests; `amtool` accepts the
//! Alertmanager config; every metric the Grafana dashboard queries is one a node exports.
//! `./scripts/test` installs Debian's `prometheus` and `prometheus-alertmanager`.
mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

fn tool(name: &str, args: &[&str], cwd: &Path) -> String {
    let out = std::process::Command::new(name).args(args).current_dir(cwd).output().unwrap_or_else(|e| {
        panic!("`{name}` is not installed ({e}): run the suite with ./scripts/test, which installs prometheus and prometheus-alertmanager")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} {args:?} failed:\n{text}");
    text
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn shipped_rules_and_alertmanager_config_pass_the_tools() {
    let prom = examples().join("prometheus");
    assert!(tool("promtool", &["check", "rules", "vigil-rules.yml"], &prom).contains("SUCCESS"));
    assert!(tool("promtool", &["test", "rules", "vigil-rules.test.yml"], &prom).contains("SUCCESS"));
    tool("promtool", &["check", "config", "prometheus.yml"], &prom);
    tool("amtool", &["check-config", "alertmanager.yml"], &examples().join("alertmanager"));
}

/// Metric names in a PromQL expression that start with `vigil_` (histogram series suffixes
/// folded to their family).
fn vigil_metrics(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("vigil_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        out.insert(name.trim_end_matches("_bucket").trim_end_matches("_count").trim_end_matches("_sum").to_string());
        i = end;
    }
    out
}

#[test]
fn live_metrics_pass_promtool_and_cover_the_dashboard_and_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("VIGIL_OBSERVABILITY__METRICS_ADDR", "127.0.0.1:0"), ("VIGIL_OBSERVABILITY__ADMIN_ADDR", "127.0.0.1:0"), ("VIGIL_QUALITY__INTERVAL", "1s")];
    let mut p = Proc::spawn_in("embedded", Some(dir.path()), &["run", "--json"], &env);
    let line = p.wait_line("started event", Duration::from_secs(60), |l| l.contains("\"event\":\"started\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    let metrics = v["metrics"].as_str().expect("metrics").trim_start_matches("http://").trim_end_matches("/metrics").to_string();
    // Wait until every stage, the DLQ, a checkpoint, a quality report and an alert
    // evaluation have produced their series.
    let text = wait_for("series of every kind", Duration::from_secs(60), || {
        let m = http_get(&metrics, "/metrics")?;
        (m.contains(r#"vigil_records_total{stage="sink"}"#)
            && m.contains("vigil_validation_failures_total")
            && m.contains("vigil_checkpoint_duration_seconds_bucket")
            && m.contains("vigil_dq_freshness_p99_seconds")
            && m.contains("vigil_dq_latency_p99_seconds")
            && m.contains("vigil_alert_evaluations_total")
            && m.contains("vigil_incidents{"))
        .then_some(m)
    });
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).expect("write");
    let out = std::process::Command::new("sh").arg("-c").arg(format!("promtool check metrics < {}", file.display())).output().expect("run promtool");
    assert!(out.status.success(), "promtool check metrics:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "lint findings:\n{}", String::from_utf8_lossy(&out.stderr));

    // Every vigil_ metric the dashboard and the rules use is described by the node.
    let described: BTreeSet<String> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(examples().join("grafana/vigil-dashboard.json")).expect("dashboard")).expect("json");
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            used.extend(vigil_metrics(t["expr"].as_str().expect("expr")));
        }
    }
    used.extend(vigil_metrics(&std::fs::read_to_string(examples().join("prometheus/vigil-rules.yml")).expect("rules")));
    // Series that exist only once there is data of their kind.
    let data_dependent = ["vigil_deprecated_schema_records_total"];
    let missing: Vec<&String> = used.iter().filter(|m| !described.contains(*m) && !data_dependent.contains(&m.as_str())).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}\nexported: {described:?}");
    assert!(used.len() >= 12, "the dashboard and rules cover the node's metrics: {used:?}");
    assert!(p.terminate(Duration::from_secs(60)).success());
}
