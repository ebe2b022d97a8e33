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
    assert!(ok, "every fast drill passes:\n{log}");
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
