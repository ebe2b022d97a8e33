//! A node facing a 2 million record backlog with a sink slowed to 1000 windows/s: the
//! resident set stays under `node.memory_limit`, backpressure holds Ingest back, and the
//! admin API keeps answering fast.
mod common;

use common::*;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 160;
const RECORDS: u64 = 2_000_000;
const LIMIT_MIB: u64 = 320;
const OUTPUTS_PER_SEC: u64 = 1_000;

/// Resident and peak resident size of a process, bytes (`VmRSS`, `VmHWM`).
fn rss(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Add `lines` at the top of table `[section]` of the configuration file `cfg` (a table
/// [`write_config`] writes).
fn set_in(cfg: &std::path::Path, section: &str, lines: &str) {
    let header = format!("[{section}]\n");
    let text = std::fs::read_to_string(cfg).expect("config");
    assert!(text.contains(&header), "the configuration has a [{section}] table");
    std::fs::write(cfg, text.replacen(&header, &format!("{header}{lines}\n"), 1)).expect("config");
}

/// `count` valid JSON records of `users` users into `events`, 1 ms of event time apart.
fn gen_users(bootstrap: &str, count: u64, users: u32, seed: u64) {
    let generated = std::process::Command::new(BIN)
        .args(["gen", "--bootstrap", bootstrap, "--topic", "events", "--count", &count.to_string(), "--users", &users.to_string(), "--seed", &seed.to_string()])
        .args(["--bad-ratio", "0", "--start-ms", "1700000000000", "--step-ms", "1", "--format", "json", "--json"])
        .env("VIGIL_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("vigil gen");
    assert!(generated.success(), "vigil gen: {generated}");
}

#[test]
fn backlog_with_a_slow_sink_stays_under_the_memory_limit_and_status_stays_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(PARTITIONS, &["events", "out", "dlq"]);
    // 1 ms of event time per record, 1000 users (keys spread over every partition), 1 s
    // windows: hundreds of windows close per 1000 records, far more than the sink may write.
    gen_users(&bootstrap, RECORDS, 1_000, 11);
    for p in 0..PARTITIONS as i32 {
        let (low, high) = watermarks(&bootstrap, "events", p);
        assert!(low == 0 && high > 0, "partition {p} holds its records: {low}..{high}");
    }
    let data = dir.path().join("data");
    let analytics = format!("max_outputs_per_sec = {OUTPUTS_PER_SEC}\n{}", default_analytics(1_000));
    let cfg = write_config(
        dir.path(),
        &NodeCfg { batch_max_records: 500, checkpoint_ms: 1_000, analytics: &analytics, ..NodeCfg::new(&bootstrap, &data, "backlog") },
    );
    set_in(&cfg, "node", &format!("memory_limit = \"{LIMIT_MIB}MiB\""));
    let mut node = start_node(&cfg);
    let pid = node.proc.child.id();

    // Watch for 20 s: /status every 50 ms, the resident size, and the sink's pace.
    let started = Instant::now();
    let (mut slowest, mut polls, mut peak) = (Duration::ZERO, 0u32, 0u64);
    let mut credits_ran_out = false;
    let mut first_sink: Option<(Instant, f64)> = None;
    let mut last = serde_json::Value::Null;
    while started.elapsed() < Duration::from_secs(20) {
        let t = Instant::now();
        let s = status(&node.admin).expect("status answers");
        let took = t.elapsed();
        slowest = slowest.max(took);
        polls += 1;
        assert_eq!(s["memory"]["limit_bytes"].as_u64(), Some(LIMIT_MIB << 20), "{s}");
        if let Some((now, _)) = rss(pid) {
            peak = peak.max(now);
        }
        if polls % 10 == 0 {
            let m = http_get(&node.metrics, "/metrics").unwrap_or_default();
            credits_ran_out |= metric(&m, "vigil_ingest_credits") == Some(0.0);
            let sink = metric(&m, r#"vigil_records_total{stage="sink"}"#).unwrap_or(0.0);
            if first_sink.is_none() && sink > 0.0 {
                first_sink = Some((Instant::now(), sink));
            }
        }
        last = s;
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, hwm) = rss(pid).expect("the node runs");
    let m = http_get(&node.metrics, "/metrics").expect("metrics");
    let sink = metric(&m, r#"vigil_records_total{stage="sink"}"#).unwrap_or(0.0);
    let (t0, s0) = first_sink
        .unwrap_or_else(|| panic!("no window written in 20 s: {last}\n{}", m.lines().filter(|l| l.starts_with("vigil_")).collect::<Vec<_>>().join("\n")));
    let pace = (sink - s0) / t0.elapsed().as_secs_f64();
    eprintln!(
        "status: {polls} polls, slowest {slowest:?}; resident peak {} MiB (VmHWM {} MiB) of {LIMIT_MIB} MiB; sink {pace:.0} windows/s; position {}",
        peak >> 20,
        hwm >> 20,
        last["position"]
    );
    assert!(slowest < Duration::from_millis(100), "/status took {slowest:?}");
    assert!(hwm < LIMIT_MIB << 20, "peak resident {} MiB over the {LIMIT_MIB} MiB limit", hwm >> 20);
    assert!(pace <= OUTPUTS_PER_SEC as f64 * 1.15, "the sink kept its pace: {pace:.0} windows/s");
    assert!(pace >= OUTPUTS_PER_SEC as f64 * 0.5, "the sink kept writing: {pace:.0} windows/s");
    assert!(credits_ran_out, "backpressure: Ingest ran out of credits behind the slow sink");
    let position = last["position"].as_u64().unwrap_or(0);
    assert!(position > 10_000 && position < RECORDS, "still working through the backlog: {position}");
    assert!(node.proc.terminate(Duration::from_secs(60)).success(), "clean stop with a final checkpoint behind the slow sink");
}

/// Over its memory limit a node slows down instead of stopping: the resident size of any
/// node is above 90 % of 32 MiB, so Ingest trickles (one batch per 100 ms), says so in
/// `/status` and the metrics, and still gets through its input.
#[test]
fn over_the_memory_limit_ingest_trickles_and_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, bootstrap) = start_broker(4, &["events", "out", "dlq"]);
    let total = 20_000u64;
    gen(&bootstrap, "events", total, 5, 0.0, 1_700_000_000_000, 5);
    let data = dir.path().join("data");
    let cfg = write_config(dir.path(), &NodeCfg { batch_max_records: 250, ..NodeCfg::new(&bootstrap, &data, "tight") });
    set_in(&cfg, "node", "memory_limit = \"32MiB\"");
    set_in(&cfg, "kafka", "prefetch_kbytes_max = 1024\nproduce_queue_kbytes_max = 8192");
    let node = start_node(&cfg);
    let s = wait_for("ingest held back", Duration::from_secs(30), || status(&node.admin).filter(|s| s["memory"]["throttled"] == true));
    let at = s["position"].as_u64().unwrap_or(0);
    let m = http_get(&node.metrics, "/metrics").expect("metrics");
    assert_eq!(metric(&m, "vigil_memory_throttled"), Some(1.0), "{m}");
    assert!(metric(&m, "vigil_memory_throttle_total").unwrap_or(0.0) >= 1.0);
    // A trickle: 250 records per 100 ms at most, so 20,000 take seconds, not forever.
    let started = Instant::now();
    wait_for("the whole input, slowly", Duration::from_secs(60), || status(&node.admin).filter(|s| s["position"].as_u64() == Some(total)));
    let rate = (total - at) as f64 / started.elapsed().as_secs_f64();
    assert!(rate < 2_500.0 * 1.5, "held to about 10 batches a second: {rate:.0} records/s");
}

/// A node `name` in `dir` reading `total` records of `users` users (`seed`) from an
/// 8-partition broker, checkpoints an hour apart unless `checkpoint` (a line added to its
/// `[checkpoint]` table) brings them forward. The broker must outlive the node.
fn hourly_node(dir: &std::path::Path, name: &str, total: u64, users: u32, seed: u64, checkpoint: &str) -> (Proc, NodeProc) {
    let (broker, bootstrap) = start_broker(8, &["events", "out", "dlq"]);
    gen_users(&bootstrap, total, users, seed);
    let data = dir.join("data");
    let analytics = default_analytics(1_000);
    let cfg = write_config(dir, &NodeCfg { batch_max_records: 500, checkpoint_ms: 3_600_000, analytics: &analytics, ..NodeCfg::new(&bootstrap, &data, name) });
    set_in(&cfg, "checkpoint", checkpoint);
    (broker, start_node(&cfg))
}

/// `checkpoint.changes_max` bounds what one checkpoint writes at once: with checkpoints an
/// hour apart, 5,000 users and one record per window, the node checkpoints early again and
/// again, the windows changed since the last checkpoint never pass the bound by more than
/// the batches in flight and the windows they close, and the whole input still gets
/// through. Without the bound all 100,000 windows would change, and close, before the
/// only (final) checkpoint.
#[test]
fn windows_changed_past_changes_max_bring_the_next_checkpoint_forward() {
    const CHANGES_MAX: u64 = 2_000;
    const TOTAL: u64 = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, mut node) = hourly_node(dir.path(), "changes", TOTAL, 5_000, 3, &format!("changes_max = {CHANGES_MAX}"));
    // Past the bound Ingest waits, but 4 batches of 500 records may be in flight, each
    // record opening a window that may close in the same epoch (two changes), and their
    // watermark may close every window still open: near the end of the input, when the
    // last partitions catch up, ~10,000 at once. Without the bound: 200,000.
    let slack = 4 * 500 * 2 + 14_000;
    let mut most = 0.0f64;
    let s = wait_for("the whole input", Duration::from_secs(120), || {
        if let Some(m) = http_get(&node.metrics, "/metrics") {
            most = most.max(metric(&m, "vigil_checkpoint_pending_changes").unwrap_or(0.0));
        }
        status(&node.admin).filter(|s| s["position"].as_u64() == Some(TOTAL))
    });
    let checkpoints = s["last_checkpoint"]["id"].as_u64().unwrap_or(0);
    eprintln!("changes: at most {most} pending of {CHANGES_MAX}; {checkpoints} checkpoints");
    assert!(checkpoints >= 10, "checkpoints taken early for the changed windows, not an hour apart: {s}");
    assert!(most <= (CHANGES_MAX + slack) as f64, "at most {most} windows changed before a checkpoint took them");
    assert!(node.proc.terminate(Duration::from_secs(60)).success());
}

/// A Sink holding more outputs than `checkpoint.held_outputs_max` keeps the batches'
/// credits until the next checkpoint publishes them, and asks for that checkpoint early.
/// When it asks while one is still in flight, Ingest, out of credits and not polling, must
/// still inject it once the one in flight completes: with checkpoints an hour apart and a
/// tiny bound, the whole input gets through only if it does.
#[test]
fn a_sink_holding_credits_for_its_outputs_still_gets_its_checkpoint() {
    const TOTAL: u64 = 200_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, mut node) = hourly_node(dir.path(), "held", TOTAL, 1_000, 5, "held_outputs_max = \"64KiB\"");
    let s = wait_for("the whole input", Duration::from_secs(90), || status(&node.admin).filter(|s| s["position"].as_u64() == Some(TOTAL)));
    let checkpoints = s["last_checkpoint"]["id"].as_u64().unwrap_or(0);
    assert!(checkpoints >= 5, "early checkpoints for the held outputs: {s}");
    assert!(node.proc.terminate(Duration::from_secs(60)).success());
}
