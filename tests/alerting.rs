//! Data quality and alerting end to end, with the real tools: Debian's Prometheus scrapes a
//! running node and answers the DQ series on its query API; Vigil pushes alerts to a real
//! Alertmanager. Malformed input raised to 20% through `vigil chaos bad-data` fires the
//! validity alert within `for` + 10 s, a silence and an inhibition rule hold alerts back,
//! an unreachable receiver raises its own alert, and clean input resolves the alert in both
//! places. A second test shows alert state surviving a restart and rules reloading.
//! `./scripts/test` installs `prometheus` and `prometheus-alertmanager`.
mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A tool process (Prometheus, Alertmanager), killed on drop.
struct Tool(Child);

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_tool(name: &str, args: &[String], log: &Path) -> Tool {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(name).args(args).stdout(Stdio::from(out)).stderr(Stdio::from(err)).spawn().unwrap_or_else(|e| {
        panic!("`{name}` is not installed ({e}): run the suite with ./scripts/test, which installs prometheus and prometheus-alertmanager")
    });
    Tool(child)
}

fn get_json(url: &str) -> Option<Value> {
    let mut r = ureq::get(url).call().ok()?;
    r.body_mut().read_json().ok()
}

fn alerts(admin: &str) -> Vec<Value> {
    serde_json::from_str(&vigil_ok(&["alerts", "list", "--json", "--admin", admin])).expect("alerts json")
}

fn find<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|a| a["rule"] == name)
}

/// Alert names Alertmanager holds as active (not resolved).
fn am_alerts(am: &str) -> Vec<String> {
    get_json(&format!("http://{am}/api/v2/alerts"))
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|a| a["status"]["state"] == "active")
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .collect()
}

fn node_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[node]
data_dir = "{data}"

[observability]
metrics_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
status_interval = "1s"

[generator]
rate = 200
bad_ratio = 0.0

[quality]
interval = "1s"
window = "5s"

[alerts]
group_wait = "1s"
group_interval = "2s"
resend_interval = "2s"
retry_attempts = 2
retry_initial = "100ms"
request_timeout = "1s"

[[alerts.rules]]
name = "DataValidityLow"
expr = "validity_ratio < 0.9"
for = "5s"
severity = "P2"
annotations = {{ summary = "Invalid records on {{{{ $labels.source }}}}", description = "validity {{{{ $value }}}}", runbook_url = "https://vigil.invalid/runbooks/validity" }}

# The inhibition check needs DataValidityLow firing first. Bad input makes dlq_per_sec
# cross at once, but the 5 s validity window crosses 0.9 only ~3 s later (and later still
# on a loaded machine: it fired 10 s in once, after DlqHigh's 8 s): 15 s keeps the order.
[[alerts.rules]]
name = "DlqHigh"
expr = "dlq_per_sec > 2"
for = "15s"
severity = "P3"

[[alerts.rules]]
name = "AlertReceiverUnreachable"
expr = "receiver_up < 1"
severity = "P2"

[[alerts.inhibit_rules]]
source_matchers = ['alertname="DataValidityLow"']
target_matchers = ['alertname="DlqHigh"']
equal = ["source"]
{extra}
"#,
        data = dir.join("data").display()
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn bad_input_fires_in_alertmanager_silence_and_inhibition_hold_clean_input_resolves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (am_port, prom_port, dead_port) = (free_port(), free_port(), free_port());
    let am = format!("127.0.0.1:{am_port}");
    std::fs::write(dir.path().join("am.yml"), "route:\n  receiver: none\nreceivers:\n  - name: none\n").expect("am config");
    let _am = spawn_tool(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", dir.path().join("am.yml").display()),
            format!("--storage.path={}", dir.path().join("am-data").display()),
            format!("--web.listen-address={am}"),
            "--cluster.listen-address=".into(),
        ],
        &dir.path().join("alertmanager.log"),
    );
    wait_for("alertmanager ready", Duration::from_secs(30), || http_get(&am, "/-/ready"));

    let extra = format!(
        r#"
[[alerts.receivers]]
name = "am"
kind = "alertmanager"
url = "http://{am}"

[[alerts.receivers]]
name = "dead"
kind = "webhook"
url = "http://127.0.0.1:{dead_port}/hook"

[[alerts.routes]]
receiver = "am"
continue = true

[[alerts.routes]]
matchers = ['alertname="DataValidityLow"']
receiver = "dead"
"#
    );
    let config = node_config(dir.path(), &extra);
    let node = start_node(&config);
    let admin = node.admin.clone();

    let prom = format!("127.0.0.1:{prom_port}");
    let scrape = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: ['{}']\n",
        node.metrics
    );
    std::fs::write(dir.path().join("prometheus.yml"), scrape).expect("prometheus config");
    let _prom = spawn_tool(
        "prometheus",
        &[
            format!("--config.file={}", dir.path().join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.path().join("prom-data").display()),
            format!("--web.listen-address={prom}"),
        ],
        &dir.path().join("prometheus.log"),
    );
    let query = |q: &str| -> Option<f64> {
        let url = format!("http://{prom}/api/v1/query?query={}", q.replace('{', "%7B").replace('}', "%7D").replace('"', "%22").replace('=', "%3D"));
        let v = get_json(&url)?;
        v["data"]["result"].as_array()?.first()?["value"][1].as_str()?.parse().ok()
    };
    // Clean input: Prometheus reads the DQ series back from the node.
    let clean = wait_for("Prometheus to scrape vigil_dq_validity_ratio", Duration::from_secs(60), || {
        query(r#"vigil_dq_validity_ratio{source="events"}"#).filter(|v| *v > 0.99)
    });
    assert!(clean <= 1.0);
    assert!(alerts(&admin).is_empty(), "nothing fires on clean input");

    // 20% malformed input.
    let started = Instant::now();
    vigil_ok(&["chaos", "bad-data", "--ratio", "0.2", "--admin", &admin]);
    let firing =
        wait_for("DataValidityLow firing", Duration::from_secs(30), || find(&alerts(&admin), "DataValidityLow").filter(|a| a["state"] == "firing").cloned());
    let took = started.elapsed();
    eprintln!("DataValidityLow fired {:.1}s after bad input started (for = 5s)", took.as_secs_f64());
    assert!(took <= Duration::from_secs(15), "fired within for + 10 s: {took:?}");
    assert_eq!(firing["labels"]["source"], "events");
    assert_eq!(firing["annotations"]["runbook_url"], "https://vigil.invalid/runbooks/validity");
    assert!(firing["annotations"]["description"].as_str().unwrap_or("").starts_with("validity 0."), "{firing}");
    let low =
        wait_for("Prometheus to see validity drop", Duration::from_secs(30), || query(r#"vigil_dq_validity_ratio{source="events"}"#).filter(|v| *v < 0.9));
    assert!(low > 0.6, "about 80% valid: {low}");
    wait_for("Alertmanager to hold DataValidityLow", Duration::from_secs(20), || am_alerts(&am).contains(&"DataValidityLow".to_string()).then_some(()));

    // Inhibition: DlqHigh fires in Vigil but is held back by DataValidityLow (equal source).
    let dlq = wait_for("DlqHigh firing", Duration::from_secs(30), || {
        let l = alerts(&admin);
        find(&l, "DlqHigh").filter(|a| a["state"] == "firing").cloned()
    });
    assert_eq!(dlq["inhibited_by"][0], firing["fingerprint"], "{dlq}");
    // The unreachable webhook raised its own alert, which goes to Alertmanager.
    wait_for("receiver alert in Alertmanager", Duration::from_secs(30), || am_alerts(&am).contains(&"AlertReceiverUnreachable".to_string()).then_some(()));
    let unreachable = find(&alerts(&admin), "AlertReceiverUnreachable").cloned().expect("receiver alert");
    assert_eq!(unreachable["labels"]["receiver"], "dead");
    let m = http_get(&node.metrics, "/metrics").expect("metrics");
    assert!(metric(&m, r#"vigil_alert_notifications_total{receiver="dead",outcome="failed"}"#).unwrap_or(0.0) >= 1.0);
    assert!(metric(&m, r#"vigil_alert_notifications_total{receiver="am",outcome="sent"}"#).unwrap_or(0.0) >= 1.0);
    assert!(!am_alerts(&am).contains(&"DlqHigh".to_string()), "an inhibited alert never reaches Alertmanager");

    // A silence stops DataValidityLow being sent: Alertmanager lets it expire.
    let id = vigil_ok(&[
        "silence",
        "add",
        r#"alertname="DataValidityLow""#,
        "source=~\"ev.*\"",
        "--comment",
        "e2e",
        "--author",
        "tester",
        "--duration",
        "10m",
        "--admin",
        &admin,
    ]);
    let id = id.trim().to_string();
    let silenced = find(&alerts(&admin), "DataValidityLow").cloned().expect("alert");
    assert_eq!(silenced["silenced_by"][0], id.as_str());
    assert!(vigil_ok(&["silence", "list", "--admin", &admin]).contains(&id));
    assert!(vigil_ok(&["alerts", "list", "--admin", &admin]).contains("firing (silenced)"));
    wait_for("Alertmanager to drop the silenced alert", Duration::from_secs(30), || (!am_alerts(&am).contains(&"DataValidityLow".to_string())).then_some(()));
    vigil_ok(&["silence", "expire", &id, "--admin", &admin]);
    wait_for("DataValidityLow back in Alertmanager", Duration::from_secs(20), || am_alerts(&am).contains(&"DataValidityLow".to_string()).then_some(()));
    assert!(!am_alerts(&am).contains(&"DlqHigh".to_string()), "still inhibited");

    // Clean input resolves it in Vigil and in Alertmanager.
    vigil_ok(&["chaos", "bad-data", "--ratio", "0", "--admin", &admin]);
    wait_for("DataValidityLow resolved", Duration::from_secs(30), || find(&alerts(&admin), "DataValidityLow").filter(|a| a["state"] == "resolved").cloned());
    wait_for("Alertmanager to see it resolved", Duration::from_secs(30), || (!am_alerts(&am).contains(&"DataValidityLow".to_string())).then_some(()));
    let dq: Value = serde_json::from_str(&vigil_ok(&["dq", "--json", "--admin", &admin])).expect("dq json");
    assert_eq!(dq["sources"][0]["source"], "events");
    assert!(vigil_ok(&["dq", "--admin", &admin]).contains("field amount"));
    // The persisted history shows the bad spell and the clean input around it.
    let hist: Value = serde_json::from_str(&vigil_ok(&["dq", "--history", "10m", "--json", "--admin", &admin])).expect("history json");
    let validity: Vec<f64> = hist
        .as_array()
        .expect("slots")
        .iter()
        .flat_map(|p| p["sources"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["source"] == "events" && s["records_per_sec"].as_f64().unwrap_or(0.0) > 0.0)
        .filter_map(|s| s["validity_ratio"].as_f64())
        .collect();
    assert!(validity.iter().any(|v| *v < 0.9) && validity.iter().any(|v| *v > 0.99), "{validity:?}");
    assert!(vigil_ok(&["dq", "--history", "10m", "--admin", &admin]).contains("events"));
}

#[test]
fn alert_state_survives_restart_and_rules_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = node_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).expect("read").replace("bad_ratio = 0.0", "bad_ratio = 0.3");
    std::fs::write(&config, &text).expect("write");
    let mut node = start_node(&config);
    let fired = wait_for("DataValidityLow firing", Duration::from_secs(30), || {
        find(&alerts(&node.admin), "DataValidityLow").filter(|a| a["state"] == "firing").cloned()
    });
    let status = node.proc.terminate(Duration::from_secs(30));
    assert!(status.success(), "clean stop");

    let node = start_node(&config);
    let again = find(&alerts(&node.admin), "DataValidityLow").cloned().expect("restored at once");
    assert_eq!(again["state"], "firing");
    assert_eq!(again["fired_at_ms"], fired["fired_at_ms"], "the same alert, not a new one");
    // Reload: a changed threshold and a new rule take effect without a restart.
    let changed = text.replace("validity_ratio < 0.9", "validity_ratio < 0.5").replace(
        "[[alerts.inhibit_rules]]",
        "[[alerts.rules]]\nname = \"LatencyHigh\"\nexpr = 'latency_p99_seconds{source=\"events\"} > 60'\n\n[[alerts.inhibit_rules]]",
    );
    std::fs::write(&config, &changed).expect("write");
    assert!(vigil_ok(&["alerts", "reload", "--admin", &node.admin]).contains("reloaded 4 rules"));
    let rules = vigil_ok(&["alerts", "rules", "--admin", &node.admin]);
    assert!(rules.contains("validity_ratio < 0.5") && rules.contains("LatencyHigh"), "{rules}");
    wait_for("DataValidityLow resolved under the new threshold", Duration::from_secs(20), || {
        find(&alerts(&node.admin), "DataValidityLow").filter(|a| a["state"] == "resolved").cloned()
    });
    // A broken file is refused with its problems; the rules stay.
    std::fs::write(&config, changed.replace("expr = \"dlq_per_sec > 2\"", "expr = \"dlq_per_second > 2\"")).expect("write");
    let out = Command::new(BIN).args(["alerts", "reload", "--admin", &node.admin]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("alerts.rules[1].expr") && err.contains("dlq_per_second"), "{err}");
    assert!(vigil_ok(&["alerts", "rules", "--admin", &node.admin]).contains("LatencyHigh"));
}

/// A crashing Quality or Alerting actor is restarted; one that keeps crashing is given up on
/// (`monitor` is temporary under the root) while the pipeline runs on untouched.
#[test]
fn crashing_monitors_never_stop_the_data_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = node_config(dir.path(), "\n[supervision]\nmax_restarts = 2\nrestart_window = \"60s\"\nbackoff_initial = \"10ms\"\nbackoff_max = \"50ms\"\n");
    let node = start_node(&config);
    let admin = node.admin.clone();
    let ingested = || status(&admin).and_then(|s| s["ingested"].as_u64()).unwrap_or(0);
    wait_for("records flowing", Duration::from_secs(30), || (ingested() > 0).then_some(()));
    let tree = |a: &str| -> Value { serde_json::from_str(&vigil_ok(&["tree", "--json", "--admin", a])).expect("tree json") };
    let monitor = |t: &Value| t["children"].as_array().and_then(|c| c.iter().find(|n| n["name"] == "monitor").cloned());

    // One crash: restarted, alerts answer again, the pipeline never restarted.
    vigil_ok(&["chaos", "panic", "alerting", "--admin", &admin]);
    wait_for("alerting restarted", Duration::from_secs(20), || {
        let m = monitor(&tree(&admin))?;
        let a = m["children"].as_array()?.iter().find(|n| n["name"] == "alerting")?.clone();
        (a["restarts"].as_u64() == Some(1) && a["status"] == "running").then_some(())
    });
    wait_for("alerts API back", Duration::from_secs(20), || http_get(&admin, "/alerts").filter(|b| b.starts_with('[')));

    // Crashing beyond the intensity: monitor gives up, is not restarted, and data still flows.
    for _ in 0..6 {
        let _ = Command::new(BIN).args(["chaos", "panic", "quality", "--admin", &admin]).output();
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("monitor given up", Duration::from_secs(30), || {
        let t = tree(&admin);
        let m = monitor(&t);
        (m.is_none() || m.as_ref().is_some_and(|m| m["status"] != "running")).then_some(())
    });
    let t = tree(&admin);
    assert_eq!(t["status"], "running", "the root runs on: {t}");
    let pipeline = t["children"].as_array().and_then(|c| c.iter().find(|n| n["name"] == "pipeline").cloned()).expect("pipeline");
    assert_eq!(pipeline["restarts"], 0, "the data path was never restarted: {pipeline}");
    let before = ingested();
    wait_for("records still flowing", Duration::from_secs(20), || (ingested() > before + 200).then_some(()));
    assert_eq!(status(&admin).expect("status")["ready"], true);
}
