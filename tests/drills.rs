//! Chaos drills end to end: `vigil drill run` starts real broker, node and generator
//! processes, injects faults and reconciles every record. The quick subset must pass, a
//! planted bug must make the node-kill drill fail, and SIGINT mid-fault must undo
//! everything and leave no process behind.
mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

fn drill(args: &[&str], out: &std::path::Path) -> (bool, Vec<Value>, String) {
    let o = Command::new(BIN).args(["drill", "run", "--json", "--out", out.to_str().unwrap()]).args(args).output().expect("run vigil drill");
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let reports: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("drill json: {e}\n{stderr}"));
    (o.status.success(), reports, stderr)
}

#[test]
fn the_fast_drills_pass_with_every_record_reconciled_and_measured_detection_and_recovery() {
    let out = tempfile::tempdir().unwrap();
    let (ok, reports, log) = drill(&["--fast", "--seed", "3"], out.path());
    assert!(reports.len() >= 4, "{log}");
    for r in &reports {
        let name = r["scenario"].as_str().unwrap();
        let rec = &r["records"];
        assert_eq!((rec["lost"].as_u64(), rec["duplicated"].as_u64()), (Some(0), Some(0)), "{name}: {rec}\n{log}");
        assert!(rec["expected_records"].as_u64().unwrap() > 10_000, "{name}: a real workload");
        assert!(r["mttr_s"].as_f64().is_some(), "{name}: recovery measured");
        assert!(r["faults"].as_array().unwrap().iter().all(|f| f["undone"] == true), "{name}: every fault undone");
        let dir = std::path::PathBuf::from(r["dir"].as_str().unwrap());
        assert!(dir.join("report.md").exists() && dir.join("report.json").exists(), "{name}: reports written");
    }
    let kill = reports.iter().find(|r| r["scenario"] == "node-kill").expect("node-kill ran");
    // SIGKILL → processing again in under 2 s; detected by the restarted node's alert within its `for` (0 s) + 10 s.
    assert!(kill["mttr_s"].as_f64().unwrap() < 2.0, "{kill}");
    assert!(kill["mttd_s"].as_f64().unwrap() <= 10.0 && kill["detected_by"] == "alert NodeCrashRecovered", "{kill}");
    assert!(kill["incidents"].as_array().unwrap().iter().any(|i| i["postmortem"].as_str().is_some_and(|p| p.contains("Post-mortem"))), "{kill}");
    // History lists them from their reports.
    let h: Vec<Value> = serde_json::from_str(&vigil_ok(&["drill", "history", "--json", "--out", out.path().to_str().unwrap()])).unwrap();
    let names: Vec<&str> = h.iter().filter_map(|r| r["scenario"].as_str()).collect();
    assert_eq!(names.len(), reports.len(), "{names:?}");
    assert!(names.contains(&"node-kill") && names.contains(&"disk-failure"), "{names:?}");
    // The breach drill: every forged record quarantined, both security alerts.
    let breach = reports.iter().find(|r| r["scenario"] == "breach").expect("breach ran");
    assert_eq!((breach["records"]["quarantined"].as_u64(), breach["records"]["expected_quarantine"].as_u64()), (Some(1000), Some(1000)), "{breach}");
    let fired: Vec<&str> = breach["alerts"].as_array().unwrap().iter().filter_map(|a| a["rule"].as_str()).collect();
    assert!(fired.contains(&"SecurityQuarantine") && fired.contains(&"AccessDenied"), "{fired:?}");
    // A schedule: what was just drilled is not due, what never was is, and `due` says so by its exit code.
    let o = out.path().to_str().unwrap();
    vigil_ok(&["drill", "schedule", "add", "node-kill", "--every", "weekly", "--out", o]);
    vigil_ok(&["drill", "schedule", "add", "poison-pill", "--every", "1d", "--note", "data on-call", "--out", o]);
    let due = Command::new(BIN).args(["drill", "schedule", "due", "--json", "--out", o]).output().unwrap();
    assert_eq!(due.status.code(), Some(1), "something is due");
    let due: Vec<Value> = serde_json::from_slice(&due.stdout).unwrap();
    let due: Vec<&str> = due.iter().filter_map(|p| p["plan"]["scenario"].as_str()).collect();
    assert_eq!(due, ["poison-pill"]);
    let list: Vec<Value> = serde_json::from_str(&vigil_ok(&["drill", "schedule", "list", "--json", "--out", o])).unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[0]["last_passed"] == true && list[0]["due"] == false, "{list:?}");
    assert!(ok, "every fast drill passes:\n{log}");
}

#[test]
fn a_network_partition_is_detected_when_nothing_is_waiting() {
    // Everything was read and committed before the partition: lag 0 all along, so only the
    // broker's silence can show the stall.
    let out = tempfile::tempdir().unwrap();
    let (ok, reports, log) = drill(&[concat!(env!("CARGO_MANIFEST_DIR"), "/examples/chaos/quiet-partition.toml")], out.path());
    let r = &reports[0];
    assert_eq!((r["records"]["lost"].as_u64(), r["records"]["duplicated"].as_u64()), (Some(0), Some(0)), "{r}\n{log}");
    assert!(r["mttd_s"].as_f64().is_some_and(|s| s <= 10.0), "{r}\n{log}");
    assert!(ok, "{log}");
}

#[test]
fn a_planted_bug_fails_the_node_kill_drill() {
    let out = tempfile::tempdir().unwrap();
    let (ok, reports, log) = drill(&["node-kill", "--sabotage", "skip-offset-commit"], out.path());
    assert!(!ok, "the drill must catch the planted bug:\n{log}");
    let rec = &reports[0]["records"];
    assert!(rec["lost"].as_u64().unwrap() + rec["duplicated"].as_u64().unwrap() > 0, "{rec}");
    assert!(reports[0]["expectations"].as_array().unwrap().iter().any(|e| e["passed"] == false && e["expect"].as_str().unwrap().starts_with("records.")));
}

fn alive(pid: i32) -> bool {
    // A reaped process is gone; a zombie (exited, not reaped) would still be listed.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn sigint_mid_fault_undoes_everything_and_leaves_no_process() {
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["drill", "run", "network-partition", "--out", out.path().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut pids = Vec::new();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let l = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or_else(|_| panic!("no fault injected:\n{}", seen.join("\n")));
        for w in l.split(|c: char| !c.is_ascii_alphanumeric()).collect::<Vec<_>>().windows(2) {
            if w[0] == "pid" {
                pids.extend(w[1].parse::<i32>().ok());
            }
        }
        seen.push(l.clone());
        if l.contains("inject network-partition") {
            break;
        }
    }
    assert!(pids.len() >= 3, "broker, node and generator pids: {pids:?}\n{}", seen.join("\n"));
    assert!(pids.iter().all(|p| alive(*p)), "all running mid-fault");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_for("the drill to exit after SIGINT", Duration::from_secs(60), || child.try_wait().ok().flatten());
    assert_eq!(status.code(), Some(130), "interrupted drills exit 130");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("interrupted: undoing every fault")), "{rest:?}");
    for p in &pids {
        assert!(!alive(*p), "process {p} outlived the drill");
    }
    // The report says what was injected and that it was undone.
    let report = std::fs::read_dir(out.path()).unwrap().flatten().next().unwrap().path().join("report.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    assert_eq!(r["interrupted"], true);
    assert!(r["faults"].as_array().unwrap().iter().filter(|f| f["started"] == true).all(|f| f["undone"] == true), "{r}");
}

#[test]
fn a_game_day_injects_into_a_running_node_refuses_what_it_cannot_undo_and_leaves_nothing_behind() {
    let (_broker, bootstrap) = start_broker(2, &["events", "out", "dlq", "vigil-quarantine"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = start_node(&write_config(dir.path(), &NodeCfg::new(&bootstrap, &data, "gameday")));
    // The node's own traffic, in the present: a producer an hour behind is late against it.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    gen(&bootstrap, "events", 2000, 1, 0.0, now, 1);
    wait_for("the node's own traffic", Duration::from_secs(30), || status(&node.admin).filter(|s| s["ingested"].as_u64() >= Some(2000)));
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/chaos/gameday-bad-data.toml");
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let refused = |args: &[&str], why: &str| {
        let r = Command::new(BIN).args(["drill", "run", "--out", o]).args(args).stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains(why), "{args:?} must be refused with `{why}`:\n{err}");
    };
    refused(&[scenario, "--target", &node.admin], "--live");
    refused(&[scenario, "--live", "--target", &node.admin, "--bootstrap", &bootstrap], "confirmation");
    refused(&["node-kill", "--live", "--target", &node.admin, "--yes"], "own processes");
    refused(&[scenario, "--live", "--target", &node.admin, "--yes"], "--bootstrap");
    assert!(std::fs::read_dir(out.path()).unwrap().next().is_none(), "nothing ran");

    let args = ["drill", "run", "--json", "--out", o, scenario, "--live", "--target", &node.admin, "--bootstrap", &bootstrap, "--yes", "--seed", "5"];
    let r = Command::new(BIN).args(args).output().unwrap();
    let log = String::from_utf8_lossy(&r.stderr);
    let reports: Vec<Value> = serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("{e}\n{log}"));
    let rep = &reports[0];
    assert_eq!(rep["target"].as_str(), Some(format!("http://{}", node.admin).as_str()), "{rep}");
    let rec = &rep["records"];
    assert_eq!((rec["lost"].as_u64(), rec["duplicated"].as_u64(), rec["generated"].as_u64()), (Some(0), Some(0), Some(800)), "{rec}\n{log}");
    assert_eq!(rec["dlq"].as_u64(), Some(800), "every record the drill wrote, in the DLQ once: {rec}");
    assert!(rep["faults"].as_array().unwrap().iter().all(|f| f["undone"] == true && f["error"].is_null()), "{rep}");
    assert!(r.status.success() && rep["passed"] == true, "{log}");
    // Nothing left behind: no failpoint on, and the node still serves.
    let fps: Value = serde_json::from_str(&http_get(&node.admin, "/chaos/failpoints").unwrap()).unwrap();
    assert_eq!(fps["failpoints"].as_array().map(Vec::len), Some(0), "{fps}");
    assert_eq!(status(&node.admin).unwrap()["ready"], true);
}
