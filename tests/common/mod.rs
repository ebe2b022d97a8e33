//! Helpers for end-to-end tests: start real `vigil` processes on loopback ports chosen at
//! run time, wait on conditions with deadlines, read topics back.
#![allow(dead_code)]

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vigil");

/// A child process whose stdout lines are collected on a channel; killed on drop.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        Self::spawn_in(name, None, args, envs)
    }

    /// Like [`Proc::spawn`], in working directory `cwd`.
    pub fn spawn_in(name: &str, cwd: Option<&Path>, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
        cmd.env("VIGIL_LOG", std::env::var("VIGIL_LOG").unwrap_or_else(|_| "warn".into()));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if std::env::var("VIGIL_TEST_ECHO").is_ok() {
                    eprintln!("[{tag}] {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines: rx, seen: Vec::new(), name: name.into() }
    }

    /// Wait for a stdout line matching `pred`; returns it.
    pub fn wait_line(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!("{}: timed out waiting for {what} (exit status: {status:?}); stdout so far:\n{}", self.name, self.seen.join("\n"));
                }
            }
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send SIGTERM and wait for the exit status within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {timeout:?} after SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vigil broker` on a free loopback port; returns it and its bootstrap address.
pub fn start_broker(partitions: u32, topics: &[&str]) -> (Proc, String) {
    let p = partitions.to_string();
    let t = topics.join(",");
    let mut b = Proc::spawn("broker", &["broker", "--port", "0", "--partitions", &p, "--topic", &t], &[]);
    let line = b.wait_line("bootstrap line", Duration::from_secs(30), |l| l.starts_with("bootstrap: "));
    let bootstrap = line.trim_start_matches("bootstrap: ").trim().to_string();
    (b, bootstrap)
}

/// Test node configuration.
pub struct NodeCfg<'a> {
    pub bootstrap: &'a str,
    pub data_dir: &'a Path,
    pub source: &'a str,
    pub sink: &'a str,
    pub dlq: &'a str,
    pub group: &'a str,
    pub window_ms: u64,
    pub batch_max_records: usize,
    pub checkpoint_ms: u64,
    /// Ingest rate limit (0 = unlimited).
    pub rate: u32,
    /// Source format: `json`, `avro` or `json_schema`.
    pub format: &'a str,
    /// Sink format: `json` or `avro`.
    pub sink_format: &'a str,
    /// Extra TOML appended to the file (more sources, rules).
    pub extra: &'a str,
    /// Validate and Process shards (`pipeline.shards`); 2 unless a test says otherwise, so
    /// every test runs the aligned, sharded path whatever the machine.
    pub shards: usize,
    /// `[pipeline]` keys and tables replacing the default event time and aggregation
    /// (one tumbling `w` of `window_ms` by user); may start with keys such as `late_topic`.
    pub analytics: &'a str,
}

/// Event time without out-of-orderness and one tumbling aggregation [`AGG`] of `window_ms`
/// by user with count, sum, min and max of `amount`.
pub fn default_analytics(window_ms: u64) -> String {
    format!(
        r#"
[pipeline.event_time]
out_of_orderness = "0s"
idle_timeout = "30s"

[[pipeline.aggregations]]
name = "{AGG}"
group_by = ["user"]
window = {{ kind = "tumbling", size = "{window_ms}ms" }}
metrics = ["count", "sum(amount)", "min(amount)", "max(amount)"]
"#
    )
}

impl<'a> NodeCfg<'a> {
    /// Source `events`, sink `out`, DLQ `dlq`, 1 s windows, batches of 100, checkpoints
    /// every 100 ms, no rate limit; override fields with struct update syntax.
    pub fn new(bootstrap: &'a str, data_dir: &'a Path, group: &'a str) -> Self {
        NodeCfg {
            bootstrap,
            data_dir,
            source: "events",
            sink: "out",
            dlq: "dlq",
            group,
            window_ms: 1_000,
            batch_max_records: 100,
            checkpoint_ms: 100,
            rate: 0,
            format: "json",
            sink_format: "json",
            extra: "",
            shards: 2,
            analytics: "",
        }
    }
}

pub fn write_config(dir: &Path, c: &NodeCfg<'_>) -> PathBuf {
    let text = format!(
        r#"
[node]
id = "test-node"
data_dir = "{data}"

[kafka]
bootstrap = "{bootstrap}"
group_id = "{group}"
poll_timeout = "20ms"

[pipeline]
sink_topic = "{sink}"
dlq_topic = "{dlq}"
batch_max_records = {batch}
inflight_batches_max = 4
max_records_per_sec = {rate}
sink_format = "{sink_format}"
shards = {shards}
{analytics}
[[pipeline.sources]]
topic = "{source}"
format = "{format}"

[checkpoint]
interval = "{cp}ms"

[supervision]
backoff_initial = "10ms"
backoff_max = "200ms"

[observability]
metrics_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
status_interval = "1s"

[generator]
enabled = false

{extra}
"#,
        data = c.data_dir.display(),
        bootstrap = c.bootstrap,
        group = c.group,
        sink = c.sink,
        dlq = c.dlq,
        batch = c.batch_max_records,
        source = c.source,
        analytics = if c.analytics.is_empty() { default_analytics(c.window_ms) } else { c.analytics.to_string() },
        cp = c.checkpoint_ms,
        rate = c.rate,
        format = c.format,
        sink_format = c.sink_format,
        extra = c.extra,
        shards = c.shards,
    );
    let path = dir.join(format!("{}.toml", c.group));
    std::fs::write(&path, text).expect("write config");
    path
}

/// A running `vigil run` with the addresses it reported.
pub struct NodeProc {
    pub proc: Proc,
    pub metrics: String,
    pub admin: String,
}

impl NodeProc {
    /// The node's schema registry URL (its admin address).
    pub fn registry(&self) -> String {
        format!("http://{}", self.admin)
    }
}

pub fn start_node(config: &Path) -> NodeProc {
    start_node_with_env(config, &[])
}

/// [`start_node`] with extra environment variables (e.g. `FAILPOINTS`).
pub fn start_node_with_env(config: &Path, envs: &[(&str, &str)]) -> NodeProc {
    let cfg = config.to_str().expect("utf-8 path");
    let mut proc = Proc::spawn("node", &["run", "--config", cfg, "--json"], envs);
    let line = proc.wait_line("started event", Duration::from_secs(60), |l| l.contains("\"event\":\"started\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("started json");
    let bare = |url: &str| url.trim_start_matches("https://").trim_start_matches("http://").to_string();
    let metrics = bare(v["metrics"].as_str().expect("metrics").trim_end_matches("/metrics"));
    let admin = bare(v["admin"].as_str().expect("admin"));
    NodeProc { proc, metrics, admin }
}

pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut r = ureq::get(&format!("http://{addr}{path}")).call().ok()?;
    r.body_mut().read_to_string().ok()
}

pub fn status(admin: &str) -> Option<serde_json::Value> {
    http_get(admin, "/status").and_then(|s| serde_json::from_str(&s).ok())
}

/// Poll `f` until it returns Some, or panic after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Value of a Prometheus sample line `name{labels} value`.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
}

/// Run `vigil gen` to completion (plain JSON).
pub fn gen(bootstrap: &str, topic: &str, count: u64, seed: u64, bad_ratio: f64, start_ms: i64, step_ms: i64) {
    gen_format(bootstrap, topic, count, seed, bad_ratio, start_ms, step_ms, "json", None);
}

/// Run `vigil gen` to completion in `format`, registering its schema at `registry`.
#[allow(clippy::too_many_arguments)]
pub fn gen_format(bootstrap: &str, topic: &str, count: u64, seed: u64, bad_ratio: f64, start_ms: i64, step_ms: i64, format: &str, registry: Option<&str>) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["gen", "--bootstrap", bootstrap, "--topic", topic, "--count", &count.to_string(), "--seed", &seed.to_string()])
        .args(["--bad-ratio", &bad_ratio.to_string(), "--start-ms", &start_ms.to_string(), "--step-ms", &step_ms.to_string(), "--users", "20", "--json"])
        .args(["--format", format]);
    if let Some(r) = registry {
        cmd.args(["--registry", r]);
    }
    let status = cmd.env("VIGIL_LOG", "warn").stdout(Stdio::null()).status().expect("run vigil gen");
    assert!(status.success(), "vigil gen failed: {status}");
}

/// Produce raw values (with keys) to a topic and wait for every acknowledgement.
pub fn produce_raw(bootstrap: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("producer");
    for (k, v) in records {
        loop {
            match p.send(BaseRecord::to(topic).key(k).payload(v)) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(matches!(e, rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)), "produce: {e}");
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// One record per partition with event time far in the future, so every window of the
/// test data closes (event-time semantics: windows close when the watermark passes).
pub fn send_sentinels(bootstrap: &str, topic: &str, partitions: i32, ts: i64) {
    send_sentinel_values(bootstrap, topic, partitions, format!(r#"{{"user":"~sentinel","amount":0,"ts":{ts}}}"#).as_bytes());
}

/// One copy of `value` to every partition (sentinels in any format).
pub fn send_sentinel_values(bootstrap: &str, topic: &str, partitions: i32, value: &[u8]) {
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("producer");
    for part in 0..partitions {
        p.send(BaseRecord::to(topic).partition(part).key("~sentinel").payload(value)).expect("send sentinel");
    }
    p.flush(Duration::from_secs(30)).expect("flush sentinels");
}

/// Read `topic` from the beginning until `done(map)` holds; returns key → last value
/// (deduplicated by key, as a compacted topic would).
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    read_topic_with(bootstrap, topic, partitions, timeout, done, |m| m.payload().map(|v| String::from_utf8_lossy(v).to_string()).unwrap_or_default())
}

/// A consumer of its own group that commits nothing (for reading topics back).
pub fn reader(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{group}-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

/// Like [`read_topic`], keeping `extract(message)` per key instead of the value.
pub fn read_topic_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
    extract: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> String,
) -> BTreeMap<String, String> {
    let c = reader(bootstrap, &format!("reader-{topic}"));
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    while !done(&out) {
        assert!(Instant::now() < deadline, "timed out reading {topic}: have {} keys", out.len());
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let k = m.key().map(|k| String::from_utf8_lossy(k).to_string()).unwrap_or_default();
            out.insert(k, extract(&m));
        }
    }
    out
}

/// Value of header `name` of a message.
pub fn header(m: &rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    m.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).to_string())
}

/// Log start and end offsets of a partition.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("consumer");
    c.fetch_watermarks(topic, partition, Duration::from_secs(10)).expect("watermarks")
}

#[allow(unused_imports)]
pub use vigil_chaos::model::{expected_windows, out_key, ExpectedWindows, AGG};

/// (count, sum, min, max) of an output of [`AGG`].
pub fn parse_window(v: &str) -> (u64, f64, f64, f64) {
    let j: serde_json::Value = serde_json::from_str(v).unwrap_or_else(|e| panic!("window json {v:?}: {e}"));
    assert_eq!(j["records"], j["metrics"]["count"], "{v}");
    vigil_chaos::model::parse_window(v).unwrap_or_else(|| panic!("not a window: {v}"))
}

/// `vigil <args>`: its stdout, asserting it succeeded.
pub fn vigil_ok(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("run vigil");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "vigil {args:?} failed:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// Secrets the tests put in configurations (`tests/common/secrets.txt`); `scripts/test`
/// fails when any of them shows up in the suite's output.
pub fn test_secrets() -> Vec<String> {
    include_str!("secrets.txt").lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}
