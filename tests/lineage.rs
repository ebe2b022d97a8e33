//! Lineage, so far: the data-flow event log of the embedded default shows the node start,
//! checkpoints and an injected stage restart in order, from the admin API and read-only
//! from the stopped node's data directory; outputs and dead letters carry the node, the
//! checkpoint epoch they are committed in, the configuration hash and the code version.
mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

fn kinds(events: &[Value]) -> Vec<String> {
    events.iter().filter_map(|e| e["kind"].as_str().map(str::to_string)).collect()
}

#[test]
fn event_log_shows_start_checkpoints_and_restart_in_order_and_outputs_carry_their_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env =
        [("VIGIL_OBSERVABILITY__METRICS_ADDR", "127.0.0.1:0"), ("VIGIL_OBSERVABILITY__ADMIN_ADDR", "127.0.0.1:0"), ("VIGIL_CHECKPOINT__INTERVAL", "500ms")];
    let mut p = Proc::spawn_in("embedded", Some(dir.path()), &["run", "--json"], &env);
    let line = p.wait_line("started event", Duration::from_secs(60), |l| l.contains("\"event\":\"started\""));
    let v: Value = serde_json::from_str(&line).expect("json");
    let admin = v["admin"].as_str().expect("admin").trim_start_matches("http://").to_string();
    let bootstrap = v["bootstrap"].as_str().expect("bootstrap").to_string();
    let events = |args: &[&str]| -> Vec<Value> {
        let mut a = vec!["lineage", "events", "--since", "10m", "--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&vigil_ok(&a)).expect("events json")
    };
    wait_for("two checkpoints", Duration::from_secs(30), || (events(&["--admin", &admin, "--kind", "checkpoint"]).len() >= 2).then_some(()));
    vigil_ok(&["chaos", "panic", "validate", "--admin", &admin]);
    wait_for("a checkpoint after the restart", Duration::from_secs(30), || {
        let k = kinds(&events(&["--admin", &admin]));
        let restarted = k.iter().position(|k| k == "restart")?;
        k[restarted..].iter().any(|k| k == "checkpoint").then_some(())
    });
    let all = events(&["--admin", &admin]);
    let k = kinds(&all);
    assert_eq!(k.first().map(String::as_str), Some("node_start"), "{k:?}");
    let first_cp = k.iter().position(|k| k == "checkpoint").expect("checkpoint");
    let chaos = k.iter().position(|k| k == "chaos").expect("chaos");
    let restart = k.iter().position(|k| k == "restart").expect("restart");
    assert!(first_cp < chaos && chaos <= restart + 1, "start, checkpoints, then the injected failure and restart: {k:?}");
    assert!(all.windows(2).all(|w| w[0]["at_ms"].as_i64() <= w[1]["at_ms"].as_i64()), "in time order");
    assert!(all.iter().any(|e| e["kind"] == "restart" && e["stage"] == "validate" && e["text"].as_str().unwrap_or("").contains("failed")));
    let config_hash = all[0]["text"].as_str().and_then(|t| t.split("config ").nth(1)).and_then(|t| t.split_whitespace().next()).expect("hash").to_string();
    assert!(vigil_ok(&["lineage", "events", "--since", "10m", "--admin", &admin]).contains("node_start"));

    // Outputs and dead letters say where they come from.
    let epoch_of = |topic: &str| {
        let got = read_topic_with(
            &bootstrap,
            topic,
            4,
            Duration::from_secs(30),
            |m| !m.is_empty(),
            |m| {
                format!(
                    "{}|{}|{}|{}",
                    header(m, "vigil.node").unwrap_or_default(),
                    header(m, "vigil.epoch").unwrap_or_default(),
                    header(m, "vigil.config").unwrap_or_default(),
                    header(m, "vigil.version").unwrap_or_default()
                )
            },
        );
        got.into_values().next().expect("a record")
    };
    for topic in ["vigil-output", "vigil-dlq"] {
        let h = epoch_of(topic);
        let parts: Vec<&str> = h.split('|').collect();
        assert_eq!(parts[0], "vigil-1", "{topic}: {h}");
        assert!(parts[1].parse::<u64>().is_ok_and(|e| e >= 1), "{topic}: epoch {h}");
        assert_eq!(parts[2], config_hash, "{topic}: {h}");
        assert_eq!(parts[3], env!("CARGO_PKG_VERSION"), "{topic}: {h}");
    }

    // Read-only from the stopped node's data directory, ending with the stop.
    assert!(p.terminate(Duration::from_secs(60)).success());
    let data = dir.path().join("vigil-data");
    let stopped: Vec<Value> =
        serde_json::from_str(&vigil_ok(&["lineage", "events", "--since", "10m", "--json", "--data-dir", data.to_str().unwrap()])).expect("json");
    assert_eq!(kinds(&stopped).last().map(String::as_str), Some("node_stop"));
    assert_eq!(kinds(&stopped).first().map(String::as_str), Some("node_start"));
}
