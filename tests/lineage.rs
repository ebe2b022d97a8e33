//! Lineage end to end:
//! - every output window of a known input traces back to exactly the source records that
//!   made it, and sampled source records (valid, invalid, late) trace forward to exactly
//!   their window or DLQ entry — checked against a reference computed from the source topic
//!   itself, across a SIGKILL in the middle of the input; the same answers read-only from
//!   the stopped node's data directory, and a record found by its `vigil.id`;
//! - the OpenLineage events exported to a file and to a Marquez-style HTTP endpoint (which
//!   fails the first request) validate against the spec's JSON Schema and openlineage-python,
//!   with a FAIL for the run the crash interrupted;
//! - the data-flow event log of the embedded default shows the node start, checkpoints and
//!   an injected stage restart in order; outputs and dead letters carry the node, the
//!   checkpoint epoch they are committed in, the configuration hash and the code version.
mod common;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;
const START_MS: i64 = 1_700_000_000_000;
const WINDOW_MS: i64 = 1_000;

/// A source record as read back from the topic: partition, offset, value, `vigil.id`.
type SourceRecord = (i32, i64, Vec<u8>, Option<String>);

/// Read every record of `topic` up to the partitions' current ends.
fn read_source(bootstrap: &str, topic: &str) -> Vec<SourceRecord> {
    let c = reader(bootstrap, "lineage-ref");
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let (_, high) = watermarks(bootstrap, topic, p);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
        c.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut next = 0;
        while next < high {
            assert!(Instant::now() < deadline, "timed out reading {topic}/{p}");
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                let id = m.headers().and_then(|h| h.iter().find(|h| h.key == "vigil.id").and_then(|h| h.value)).map(|v| String::from_utf8_lossy(v).to_string());
                out.push((p, m.offset(), m.payload().unwrap_or_default().to_vec(), id));
                next = m.offset() + 1;
            }
        }
    }
    out
}

/// What the pipeline's default rules make of a value: `(user, ts)` when valid.
fn judge(value: &[u8]) -> Option<(String, i64)> {
    let v: Value = serde_json::from_slice(value).ok()?;
    let user = v.get("user")?.as_str()?.to_string();
    let amount = v.get("amount")?.as_f64()?;
    let ts = v.get("ts")?.as_i64()?;
    (amount >= 0.0).then_some((user, ts))
}

/// A Marquez stand-in: records the body of every `POST /api/v1/lineage`; the first request
/// is answered 503 (the exporter must retry), the rest 201.
fn marquez() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let (seen, requests) = (got.clone(), Arc::new(Mutex::new(0u32)));
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let (seen, requests) = (seen.clone(), requests.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut w = conn;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let post = line.starts_with("POST /api/v1/lineage ");
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let n = {
                        let mut g = requests.lock().expect("lock");
                        *g += 1;
                        *g
                    };
                    let status = if !post {
                        "404 Not Found"
                    } else if n == 1 {
                        "503 Service Unavailable"
                    } else {
                        seen.lock().expect("lock").push(serde_json::from_slice(&body).expect("event json"));
                        "201 Created"
                    };
                    if w.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, got)
}

/// Produce `{"user": .., "amount": 1, "ts": ts}` with a `vigil.id` header to each partition.
fn produce_to_each_partition(bootstrap: &str, topic: &str, user: &str, ts: i64) {
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("producer");
    for part in 0..PARTITIONS {
        let value = format!(r#"{{"user":"{user}","amount":1,"ts":{ts}}}"#);
        let id = format!("{user}-{part}");
        let headers = OwnedHeaders::new().insert(Header { key: "vigil.id", value: Some(id.as_bytes()) });
        p.send(BaseRecord::to(topic).partition(part).key(user).payload(&value).headers(headers)).expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

fn get_json(admin: &str, path: &str) -> Value {
    serde_json::from_str(&http_get(admin, path).unwrap_or_else(|| panic!("GET {path}"))).expect("json")
}

fn offsets_of(trace: &Value) -> BTreeSet<(i32, i64)> {
    let mut out = BTreeSet::new();
    for s in trace["sources"].as_array().expect("sources") {
        let p = s["partition"].as_i64().expect("partition") as i32;
        for r in s["ranges"].as_array().expect("ranges") {
            for o in r[0].as_i64().expect("first")..=r[1].as_i64().expect("last") {
                out.insert((p, o));
            }
        }
    }
    out
}

#[test]
fn outputs_trace_back_and_records_forward_exactly_across_a_sigkill_and_runs_export_as_openlineage() {
    let python =
        std::env::var("VIGIL_TEST_PYTHON").expect("VIGIL_TEST_PYTHON is not set: run the suite with ./scripts/test, which installs openlineage-python");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(PARTITIONS as u32, &["events", "out", "dlq"]);
    let (marquez_url, posted) = marquez();
    let events_file = dir.path().join("openlineage.jsonl");
    let extra =
        format!("[lineage.openlineage]\nfile = \"{}\"\nurl = \"{marquez_url}\"\nbackoff_initial = \"20ms\"\nbackoff_max = \"100ms\"\n", events_file.display());
    let data = dir.path().join("data");
    let cfg = write_config(dir.path(), &NodeCfg { rate: 2_000, batch_max_records: 50, extra: &extra, ..NodeCfg::new(&bootstrap, &data, "lineage") });
    let count = 4_000u64;
    gen(&bootstrap, "events", count, 5, 0.05, START_MS, 5);

    // SIGKILL mid-input, then recover.
    let mut node = start_node(&cfg);
    let s = wait_for("progress before the kill", Duration::from_secs(60), || {
        status(&node.admin).filter(|s| s["position"].as_u64().unwrap_or(0) >= 1_200 && s["last_checkpoint"]["id"].as_u64().unwrap_or(0) >= 2)
    });
    node.proc.kill9();
    assert!(s["position"].as_u64().unwrap_or(0) < count, "the kill lands mid-input: {s}");
    let mut node = start_node(&cfg);
    let ends = |topic: &str| -> BTreeMap<String, i64> { (0..PARTITIONS).map(|p| (format!("{topic}/{p}"), watermarks(&bootstrap, topic, p).1)).collect() };
    let committed_to = |want: &BTreeMap<String, i64>| {
        wait_for("a checkpoint covering the input", Duration::from_secs(60), || {
            let st = get_json(&node.admin, "/lineage/status");
            let have: BTreeMap<String, i64> = serde_json::from_value(st["sources"].clone()).ok()?;
            (have == *want).then_some(())
        })
    };
    committed_to(&ends("events"));
    // Now every partition's watermark is far past START_MS: these four are late.
    produce_to_each_partition(&bootstrap, "events", "late", START_MS);
    send_sentinels(&bootstrap, "events", PARTITIONS, 1_900_000_000_000);
    committed_to(&ends("events"));

    // The reference, from the source topic itself.
    let source = read_source(&bootstrap, "events");
    let mut windows: BTreeMap<String, BTreeSet<(i32, i64)>> = BTreeMap::new();
    let (mut valid, mut invalid, mut late) = (Vec::new(), Vec::new(), Vec::new());
    for (p, o, value, id) in &source {
        match judge(value) {
            Some((user, _)) if user == "~sentinel" => {}
            Some((user, _)) if user == "late" => late.push((*p, *o, id.clone())),
            Some((user, ts)) => {
                let key = out_key(&user, ts.div_euclid(WINDOW_MS) * WINDOW_MS);
                windows.entry(key.clone()).or_default().insert((*p, *o));
                valid.push((*p, *o, key));
            }
            None => invalid.push((*p, *o)),
        }
    }
    assert_eq!((late.len(), source.len()), (4, count as usize + 8));
    assert!(invalid.len() > 50 && windows.len() > 150, "{} invalid, {} windows", invalid.len(), windows.len());

    // Back: every output window, exactly its records; written in the epoch its header says.
    let out = read_topic_with(
        &bootstrap,
        "out",
        PARTITIONS,
        Duration::from_secs(60),
        |m| m.len() >= windows.len(),
        |m| {
            let v: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
            format!("{}|{}", v["metrics"]["count"], header(m, "vigil.epoch").unwrap_or_default())
        },
    );
    assert_eq!(out.keys().cloned().collect::<BTreeSet<_>>(), windows.keys().cloned().collect::<BTreeSet<_>>(), "the outputs are the reference's windows");
    for (key, want) in &windows {
        let t = get_json(&node.admin, &format!("/lineage/output/out/{key}"));
        assert_eq!(t["status"], "written", "{key}: {t}");
        assert_eq!(&offsets_of(&t), want, "{key}: exactly the records that made it");
        assert_eq!(t["records"].as_u64(), Some(want.len() as u64), "{key}");
        assert_eq!(t["complete"], true);
        let (n, epoch) = out[key].split_once('|').expect("count|epoch");
        assert_eq!(n, want.len().to_string(), "{key}: the output's count");
        assert_eq!(t["written_in"].to_string(), epoch, "{key}: written in the checkpoint its vigil.epoch header names");
    }

    // Forward: sampled valid records to their window, every invalid and late one to the DLQ.
    for (p, o, key) in valid.iter().step_by(37) {
        let t = get_json(&node.admin, &format!("/lineage/record/events/{p}/{o}"));
        assert_eq!((t["status"].as_str(), t["window"]["output"].as_str()), (Some("window"), Some(format!("out/{key}").as_str())), "events/{p}/{o}: {t}");
    }
    for (p, o) in &invalid {
        let t = get_json(&node.admin, &format!("/lineage/record/events/{p}/{o}"));
        assert_eq!(t["status"], "dlq", "events/{p}/{o}: {t}");
        assert_eq!(t["dlq"]["stage"], "validate");
    }
    for (p, o, id) in &late {
        let t = get_json(&node.admin, &format!("/lineage/record/events/{p}/{o}"));
        assert_eq!((t["status"].as_str(), t["dlq"]["code"].as_str()), (Some("dlq"), Some("late")), "{t}");
        assert_eq!(t["dlq"]["id"].as_str(), id.as_deref());
    }
    let (p, o) = invalid[0];
    let dlq = read_topic_with(
        &bootstrap,
        "dlq",
        PARTITIONS,
        Duration::from_secs(30),
        |m| m.len() >= invalid.len() + late.len(),
        |m| header(m, "vigil.source").unwrap_or_default(),
    );
    assert!(dlq.values().any(|s| *s == format!("events/{p}/{o}")), "the traced dead letter is in the DLQ topic");
    let m = http_get(&node.metrics, "/metrics").expect("metrics");
    assert!(metric(&m, "vigil_lineage_entries_total").unwrap_or(0.0) >= windows.len() as f64, "{m}");
    assert!(metric(&m, "vigil_lineage_bytes").unwrap_or(0.0) > 0.0);
    assert!(m.contains("vigil_lineage_trace_seconds_count{kind=\"output\"}"), "trace latency is measured");

    // Stopped: the same answers read-only from the data directory; a record by its vigil.id.
    assert!(node.proc.terminate(Duration::from_secs(60)).success());
    let d = data.to_str().expect("utf-8");
    let (key, want) = windows.iter().next().expect("a window");
    let t: Value = serde_json::from_str(&vigil_ok(&["lineage", "trace", "--output", &format!("out/{key}"), "--data-dir", d, "--json"])).expect("json");
    assert_eq!(&offsets_of(&t), want);
    let (lp, lo, lid) = &late[1];
    let by_id = vigil_ok(&["lineage", "trace", "--record", lid.as_deref().expect("id"), "--data-dir", d, "--bootstrap", &bootstrap, "--fetch", "--json"]);
    let t: Value = serde_json::from_str(&by_id).expect("json");
    assert_eq!((t["record"].as_str(), t["dlq"]["code"].as_str()), (Some(format!("events/{lp}/{lo}").as_str()), Some("late")), "{t}");
    assert!(t["fetched"][0]["value"].as_str().unwrap_or("").contains("\"user\":\"late\""), "{t}");

    // OpenLineage: valid per the spec and the client; the crash shows as a FAIL.
    let check = std::process::Command::new(&python)
        .args([concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openlineage_check.py"), events_file.to_str().expect("utf-8"), &bootstrap])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "exported events are not valid OpenLineage:\n{stdout}\n{}", String::from_utf8_lossy(&check.stderr));
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary");
    assert!(summary["types"]["COMPLETE"].as_u64().unwrap_or(0) >= 3, "{summary}");
    assert_eq!(summary["types"]["FAIL"].as_u64(), Some(1), "the run the SIGKILL interrupted fails: {summary}");
    assert_eq!(summary["types"]["ABORT"].as_u64(), Some(1), "the run open at the clean stop is aborted: {summary}");
    let lines: Vec<Value> = std::fs::read_to_string(&events_file).expect("events").lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    let fail = lines.iter().find(|e| e["eventType"] == "FAIL").expect("FAIL");
    assert!(fail["run"]["facets"]["errorMessage"]["message"].as_str().unwrap_or("").contains("without committing"), "{fail}");
    // The export queue lives in memory: an event the killed node had written to the file but
    // not yet posted is lost to HTTP (at most its last run's COMPLETE and START). From the
    // restart on (the FAIL), HTTP gets every event the file does, the first after a retry.
    let id = |e: &Value| format!("{}/{}", e["run"]["runId"], e["eventType"]);
    let http: BTreeSet<String> = posted.lock().expect("lock").iter().map(id).collect();
    let file: BTreeSet<String> = lines.iter().map(id).collect();
    assert!(http.is_subset(&file), "HTTP got only events the file has: {:?}", http.difference(&file).collect::<Vec<_>>());
    let restart = lines.iter().position(|e| e["eventType"] == "FAIL").expect("FAIL line");
    let missing: Vec<&String> = file.difference(&http).collect();
    assert!(lines[restart..].iter().all(|e| http.contains(&id(e))), "after the restart HTTP got every event; missing {missing:?}");
    assert!(missing.len() <= 2, "only the killed node's last events may be missing from HTTP: {missing:?}");
}

fn kinds(events: &[Value]) -> Vec<String> {
    events.iter().filter_map(|e| e["kind"].as_str().map(str::to_string)).collect()
}

#[test]
fn event_log_shows_start_checkpoints_and_restart_in_order_and_outputs_carry_their_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("VIGIL_OBSERVABILITY__METRICS_ADDR", "127.0.0.1:0"),
        ("VIGIL_OBSERVABILITY__ADMIN_ADDR", "127.0.0.1:0"),
        ("VIGIL_CHECKPOINT__INTERVAL", "500ms"),
        ("VIGIL_PIPELINE__SHARDS", "2"),
    ];
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
    assert!(all.iter().any(|e| e["kind"] == "restart" && e["stage"] == "validate-0" && e["text"].as_str().unwrap_or("").contains("failed")));
    assert!(
        all.iter().any(|e| e["kind"] == "schema" && e["text"].as_str().unwrap_or("").contains("events-value version 1")),
        "the registry's registration of the source schema is a data-flow event: {k:?}"
    );
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
