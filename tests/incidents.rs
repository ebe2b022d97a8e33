//! Incidents end to end on a running node: a burst of malformed records and a stage crash
//! loop open a P2 incident within the alert's `for` + 10 s; unacknowledged, it escalates to
//! level 2 on time; an operator acknowledges, notes and resolves it through the CLI; the
//! post-mortem holds the DLQ burst, the restarts, the escalation and the ack, with
//! durations computed from their times. A second test SIGKILLs the node in the middle of an
//! open incident: state, timeline and the escalation timer survive, and the escalation
//! fires once, at the right time.
mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn incidents(admin: &str) -> Vec<Value> {
    serde_json::from_str(&vigil_ok(&["incident", "list", "--all", "--json", "--admin", admin])).expect("incidents json")
}

fn incident(admin: &str, id: u64) -> Value {
    serde_json::from_str(&vigil_ok(&["incident", "show", &id.to_string(), "--json", "--admin", admin])).expect("incident json")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn config(dir: &Path, bad_ratio: f64, level1_timeout: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[node]
data_dir = "{data}"

[observability]
metrics_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"

[supervision]
max_restarts = 20
restart_window = "60s"
backoff_initial = "10ms"
backoff_max = "100ms"

# Two shards whatever the machine: the crash loop is of shard `validate-0`.
[pipeline]
shards = 2

[generator]
rate = 200
bad_ratio = {bad_ratio}

[quality]
interval = "1s"
window = "5s"

[alerts]
group_wait = "1s"

[[alerts.rules]]
name = "DataValidityLow"
expr = "validity_ratio < 0.9"
for = "5s"
severity = "P2"
[alerts.rules.annotations]
summary = "Invalid records on {{{{ $labels.source }}}}"

[incidents]
timeline_lookback = "2m"

[[incidents.policies]]
name = "data-oncall"

[[incidents.policies.levels]]
timeout = "{level1_timeout}"
receivers = ["log"]
roles = ["primary-oncall"]

[[incidents.policies.levels]]
timeout = "1h"
receivers = ["log"]
roles = ["secondary-oncall"]
"#,
        data = dir.join("data").display()
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn entries_with<'a>(inc: &'a Value, text: &str) -> Vec<&'a Value> {
    inc["timeline"].as_array().map(|t| t.iter().filter(|e| e["text"].as_str().is_some_and(|s| s.contains(text))).collect()).unwrap_or_default()
}

#[test]
fn bad_data_and_a_crash_loop_open_escalate_and_postmortem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(&config(dir.path(), 0.0, "4s"));
    let admin = node.admin.clone();
    wait_for("records flowing", Duration::from_secs(30), || status(&admin).and_then(|s| s["validated"].as_u64()).filter(|n| *n > 200));

    // A burst of malformed records, and a crash loop of validate.
    let started = Instant::now();
    let started_ms = now_ms();
    vigil_ok(&["chaos", "bad-data", "--ratio", "0.3", "--admin", &admin]);
    for k in 1..=3u64 {
        vigil_ok(&["chaos", "panic", "validate", "--admin", &admin]);
        wait_for("the pipeline restarted", Duration::from_secs(20), || {
            let t: Value = serde_json::from_str(&vigil_ok(&["tree", "--json", "--admin", &admin])).ok()?;
            let p = t["children"].as_array()?.iter().find(|n| n["name"] == "pipeline")?.clone();
            (p["children"].as_array()?.iter().all(|c| c["status"] == "running") && p["children"][2]["restarts"].as_u64() == Some(k)).then_some(())
        });
    }
    let opened = wait_for("a P2 incident", Duration::from_secs(30), || incidents(&admin).into_iter().find(|i| i["incident"]["severity"] == "P2"));
    let took = started.elapsed();
    let id = opened["incident"]["id"].as_u64().expect("id");
    eprintln!("incident #{id} opened {:.1}s after the bad input started (for = 5s)", took.as_secs_f64());
    assert!(took <= Duration::from_secs(15), "opened within for + 10 s: {took:?}");
    assert_eq!(opened["incident"]["state"], "open");
    let opened_ms = opened["incident"]["opened_at_ms"].as_i64().expect("opened");

    // Nobody acknowledges: level 2 after level 1's 4 s.
    let escalated = wait_for("escalation to level 2", Duration::from_secs(20), || {
        let inc = incident(&admin, id);
        (inc["incident"]["escalation"]["level"] == 1).then_some(inc)
    });
    let at = escalated["incident"]["escalation"]["notified_at_ms"].as_i64().expect("notified_at");
    assert!((opened_ms + 4_000..=opened_ms + 6_500).contains(&at), "escalated {} ms after opening", at - opened_ms);

    // The operator takes it, notes, cleans the input, resolves.
    vigil_ok(&["incident", "ack", &id.to_string(), "--by", "ana", "--admin", &admin]);
    vigil_ok(&["incident", "assign", &id.to_string(), "--role", "scribe", "--who", "cy", "--by", "ana", "--admin", &admin]);
    vigil_ok(&["incident", "note", &id.to_string(), "rolled back the producer", "--by", "ana", "--admin", &admin]);
    let out = Command::new(BIN).args(["incident", "ack", &id.to_string(), "--by", "bo", "--admin", &admin]).output().expect("run");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("acknowledged"), "a second ack is refused");
    vigil_ok(&["chaos", "bad-data", "--ratio", "0", "--admin", &admin]);
    wait_for("mitigated when the alert resolves", Duration::from_secs(30), || (incident(&admin, id)["incident"]["state"] == "mitigated").then_some(()));
    vigil_ok(&["incident", "resolve", &id.to_string(), "--by", "ana", "--admin", &admin]);

    // The post-mortem, from the same analysis.
    let pm: Value = serde_json::from_str(&vigil_ok(&["incident", "postmortem", &id.to_string(), "--format", "json", "--admin", &admin])).expect("json");
    let inc = &pm["incident"];
    let (opened_ms, acked, resolved) =
        (inc["opened_at_ms"].as_i64().unwrap(), inc["acknowledged_at_ms"].as_i64().unwrap(), inc["resolved_at_ms"].as_i64().unwrap());
    assert_eq!(pm["durations"]["acknowledge_ms"].as_i64(), Some(acked - opened_ms));
    assert_eq!(pm["durations"]["resolve_ms"].as_i64(), Some(resolved - opened_ms));
    let bursts = entries_with(&pm, "DLQ burst:");
    assert!(!bursts.is_empty(), "the DLQ burst is in the timeline");
    let first_burst = bursts.iter().filter_map(|e| e["at_ms"].as_i64()).min().unwrap();
    assert!(first_burst >= started_ms, "no burst before the bad input");
    let first_signal = first_burst.min(inc["first_signal_ms"].as_i64().unwrap());
    let firing = inc["first_firing_ms"].as_i64().unwrap();
    assert_eq!(pm["durations"]["detect_ms"].as_i64(), Some(firing - first_signal), "detect = first signal → firing");
    assert!(entries_with(&pm, "validate-0 restarted").len() >= 3, "the restarts are in the timeline");
    assert_eq!(entries_with(&pm, "escalated to level 2").len(), 1);
    assert_eq!(entries_with(&pm, "acknowledged by ana").len(), 1);
    assert!(pm["trigger"]["text"].as_str().unwrap_or("").contains("malformed"), "the bad-data injection is the likely trigger: {}", pm["trigger"]);

    let file = dir.path().join("postmortem.md");
    vigil_ok(&["incident", "postmortem", &id.to_string(), "--out", file.to_str().unwrap(), "--admin", &admin]);
    let md = std::fs::read_to_string(&file).expect("post-mortem");
    let human = |ms: i64| vigil_actors::incidents::analysis::human(ms);
    for want in [
        format!("# Post-mortem: incident #{id}"),
        "DLQ burst:".into(),
        "validate-0 restarted".into(),
        "escalated to level 2".into(),
        "acknowledged by ana".into(),
        format!("Time to acknowledge (opened → acknowledged) | {} |", human(acked - opened_ms)),
        format!("Time to detect (first signal → alert firing) | {} |", human(firing - first_signal)),
        "## Action items".into(),
    ] {
        assert!(md.contains(&want), "post-mortem lacks {want:?}:\n{md}");
    }
    let report: Value = serde_json::from_str(&vigil_ok(&["incident", "report", "--since", "1d", "--json", "--admin", &admin])).expect("report");
    assert_eq!(report["overall"]["incidents"], 1);
    assert_eq!(report["by_severity"]["P2"]["mtta_ms"].as_i64(), Some(acked - opened_ms));
    let text = vigil_ok(&["incident", "report", "--admin", &admin]);
    assert!(text.contains("cause chaos"), "{text}");
    // For docs/incidents.md: the outputs as produced.
    if let Ok(out) = std::env::var("VIGIL_POSTMORTEM_OUT") {
        let _ = std::fs::write(&out, &md);
        let _ = std::fs::write(format!("{out}.report"), &text);
    }
}

#[test]
fn incident_state_and_escalation_timer_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 0.3, "8s");
    let mut node = start_node(&cfg);
    let opened = wait_for("an incident", Duration::from_secs(40), || incidents(&node.admin).into_iter().next());
    let id = opened["incident"]["id"].as_u64().expect("id");
    let opened_ms = opened["incident"]["opened_at_ms"].as_i64().expect("opened");
    assert_eq!(opened["incident"]["escalation"]["level"], 0);
    wait_for("2 s into the incident", Duration::from_secs(10), || (now_ms() >= opened_ms + 2_000).then_some(()));
    node.proc.kill9();

    let node = start_node(&cfg);
    let again = incident(&node.admin, id);
    assert_eq!(again["incident"]["opened_at_ms"].as_i64(), Some(opened_ms), "the same incident after SIGKILL");
    assert_eq!(again["incident"]["escalation"]["level"], 0, "not escalated early");
    let escalated = wait_for("escalation after restart", Duration::from_secs(30), || {
        let inc = incident(&node.admin, id);
        (inc["incident"]["escalation"]["level"] == 1).then_some(inc)
    });
    let at = escalated["incident"]["escalation"]["notified_at_ms"].as_i64().expect("notified_at");
    assert!((opened_ms + 8_000..=opened_ms + 11_000).contains(&at), "escalated {} ms after opening (timeout 8 s)", at - opened_ms);
    assert_eq!(entries_with(&escalated, "escalated to level 2").len(), 1, "once");
    assert_eq!(incidents(&node.admin).len(), 1, "no second incident for the same group");
    assert!(entries_with(&escalated, "opened P2").len() == 1);
}
