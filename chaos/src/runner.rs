//! The drill runner: starts a broker behind the fault proxy, a node and the generator as
//! real processes, runs a scenario's schedule against them while watching the node's
//! status, alerts and incidents, undoes every fault (also on failure, panic or Ctrl-C: the
//! undo lives in `Drop`), then reconciles every generated record against the outputs and
//! the DLQ and judges the expectations.
use crate::model::{self, Fate, Reconciliation, Stream};
use crate::procs::{Proc, Spec};
use crate::proxy::{FaultProxy, NetFaults};
use crate::report::{AlertSeen, FaultRun, IncidentSeen, Report, Timeline};
use crate::scenario::{Expect, Fault, FaultKind, Probe, Scenario, WireFormat};
use crate::Error;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_actors::generator::Wire;

/// How to run a drill.
pub struct Options {
    /// The `vigil` binary to start (normally the running one).
    pub bin: PathBuf,
    /// Seed of the workload and the schedule's jitter.
    pub seed: u64,
    /// Where drill directories (config, data, logs, reports) go.
    pub out_dir: PathBuf,
    /// Self-test: switch on a failpoint that plants a real bug (`ack-before-flush`).
    pub sabotage: Option<String>,
    /// Set from a signal handler: stop, undo everything, report as interrupted.
    pub interrupted: Arc<AtomicBool>,
    /// Progress lines for a person.
    pub progress: Box<dyn Fn(&str) + Send + Sync>,
    /// A game day against a running node instead of the drill's own processes.
    pub live: Option<Live>,
}

/// A running node to hold a game day against (`vigil drill run --live --target`).
#[derive(Clone)]
pub struct Live {
    /// Its admin API, `http(s)://host:port`.
    pub admin: String,
    /// An agent that trusts its certificate (and presents the caller's, for mTLS).
    pub agent: ureq::Agent,
    /// Bearer token: `chaos.inject` for failpoints and panics, `tokens.write` for
    /// `bad-credentials`.
    pub token: Option<String>,
    /// Its Kafka, for bad-data and forged records (none: such faults are refused).
    pub bootstrap: Option<String>,
    /// The source topic those records go to.
    pub topic: String,
    /// Its DLQ and security quarantine topics, where those records must end up.
    pub dlq: String,
    /// See `dlq`.
    pub quarantine: String,
}

/// Why `scenario` cannot be held as a game day: the faults that need the drill's own
/// processes or workload, or Kafka access that was not given.
pub fn live_refusal(scenario: &Scenario, has_bootstrap: bool) -> Option<String> {
    let own: Vec<String> =
        scenario.faults.iter().filter(|f| f.kind.needs_process_control() || f.kind == FaultKind::Duplicates).map(|f| f.kind.name()).collect();
    if !own.is_empty() {
        return Some(format!("`{}` has faults that need the drill's own processes or workload ({}): run it without --live", scenario.name, own.join(", ")));
    }
    let streams: Vec<String> = scenario.faults.iter().filter(|f| f.kind.is_stream()).map(|f| f.kind.name()).collect();
    (!streams.is_empty() && !has_bootstrap)
        .then(|| format!("`{}` writes records ({}): give the node's Kafka with --bootstrap", scenario.name, streams.join(", ")))
}

/// Sabotages `--sabotage` accepts: name → failpoint switched on in the node.
pub const SABOTAGES: [(&str, &str); 2] =
    [("skip-offset-commit", vigil_runtime::failpoints::BUG_SKIP_OFFSET_COMMIT), ("ack-before-flush", vigil_runtime::failpoints::BUG_ACK_BEFORE_FLUSH)];

const QUARANTINE: &str = "vigil-quarantine";
const TOPICS: [&str; 4] = ["events", "out", "dlq", QUARANTINE];
const WINDOW_MS: i64 = 1_000;
const START_MS: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 5;
const SENTINEL_MS: i64 = 1_900_000_000_000;
const TICK: Duration = Duration::from_millis(50);
/// The producer name the workload signs as (`workload.signed`).
const PRODUCER: &str = "drill-gen";
/// How long outputs may stay short of the model, unchanged, before the drill stops waiting.
const SETTLE: Duration = Duration::from_secs(20);

/// The processes and faults of a running drill. Dropping it undoes every fault that is
/// still in force and stops every process, whatever ended the drill.
struct Rig {
    /// The broker, node and proxy the drill started (none in `--live` game days).
    owned: Option<Owned>,
    /// The node's admin API, `http(s)://host:port`.
    admin: Option<String>,
    metrics: Option<String>,
    gens: Vec<Proc>,
    frozen: bool,
    agent: ureq::Agent,
    /// Failpoints switched on in the node (cleared on undo).
    failpoints: Vec<String>,
    /// The drill's admin token when the node requires credentials.
    token: Option<String>,
}

/// What a drill that owns its processes controls.
struct Owned {
    proxy: FaultProxy,
    broker: Proc,
    node: Proc,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.undo_all();
        for g in &mut self.gens {
            g.kill9();
        }
        if let Some(o) = &mut self.owned {
            o.node.terminate(Duration::from_secs(5));
            o.broker.kill9();
        }
    }
}

impl Rig {
    fn undo_all(&mut self) {
        if let Some(o) = &mut self.owned {
            o.proxy.set(NetFaults::default());
            if self.frozen {
                o.node.thaw();
                self.frozen = false;
            }
        }
        for fp in std::mem::take(&mut self.failpoints) {
            self.delete_failpoint(&fp);
        }
    }

    /// Switch failpoint `name` off in the node (a node that is gone has none on).
    fn delete_failpoint(&self, name: &str) {
        if let Some(a) = &self.admin {
            let _ = self.req(self.agent.delete(&format!("{a}/chaos/failpoints/{name}"))).call();
        }
    }

    /// A request to the node's admin API with the drill's credentials.
    fn req<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        let a = self.admin.as_ref()?;
        self.req(self.agent.get(&format!("{a}{path}"))).call().ok()?.body_mut().read_json().ok()
    }

    fn failpoint(&mut self, name: &str, actions: &str) -> Result<(), String> {
        let a = self.admin.clone().ok_or("node admin address unknown")?;
        let r = self.req(self.agent.put(&format!("{a}/chaos/failpoints/{name}"))).send_json(serde_json::json!({ "actions": actions }));
        match r {
            Ok(resp) if resp.status().is_success() => {
                self.failpoints.push(name.to_string());
                Ok(())
            }
            Ok(mut resp) => Err(format!("HTTP {}: {}", resp.status(), resp.body_mut().read_to_string().unwrap_or_default())),
            Err(e) => Err(e.to_string()),
        }
    }

    fn clear_failpoint(&mut self, name: &str) {
        self.failpoints.retain(|f| f != name);
        self.delete_failpoint(name);
    }

    /// The drill's own processes (faults that need them are refused in `--live` game days).
    fn owned(&mut self) -> Result<&mut Owned, String> {
        self.owned.as_mut().ok_or_else(|| "this fault needs control of the node's process (not in --live game days)".to_string())
    }

    /// The node's pid (0 for a node the drill does not own).
    fn pid(&self) -> u32 {
        self.owned.as_ref().map_or(0, |o| o.node.pid())
    }

    /// Wait for the node's `started` line; remember its admin address.
    fn node_started(&mut self) -> Result<(), Error> {
        let Some(o) = &mut self.owned else { return Ok(()) };
        let line = o.node.wait_line("started event", Duration::from_secs(60), |l| l.contains("\"event\":\"started\""))?;
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| Error::Process { name: "node".into(), what: format!("started line: {e}") })?;
        self.admin = v["admin"].as_str().map(str::to_string);
        self.metrics = v["metrics"].as_str().map(|s| s.trim_start_matches("http://").trim_end_matches("/metrics").to_string());
        Ok(())
    }
}

fn node_config(dir: &std::path::Path, bootstrap: &str, s: &Scenario) -> String {
    format!(
        r#"# Written by `vigil drill run {name}`.
[node]
id = "drill-node"
data_dir = "{data}"

[kafka]
bootstrap = "{bootstrap}"
group_id = "drill-{name}"
poll_timeout = "20ms"

[pipeline]
sink_topic = "out"
dlq_topic = "dlq"
batch_max_records = 200
shards = {shards}

[[pipeline.sources]]
topic = "events"
format = "{format}"
{signing}

[pipeline.event_time]
out_of_orderness = "0s"
idle_timeout = "30s"

[[pipeline.aggregations]]
name = "{agg}"
group_by = ["user"]
window = {{ kind = "tumbling", size = "{window}ms" }}
metrics = ["count", "sum(amount)", "min(amount)", "max(amount)"]

[checkpoint]
interval = "{cp}ms"

[supervision]
backoff_initial = "10ms"
backoff_max = "200ms"

[observability]
metrics_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
status_interval = "1s"

# Short enough that a drill of seconds sees its stalls (production: 60s).
[quality]
interval = "1s"
window = "10s"
stall_after = "3s"

[generator]
enabled = false

[security]
auth = {auth}

{extra}
"#,
        format = s.workload.format.name(),
        auth = s.node.auth,
        signing = if s.workload.signed {
            format!("[pipeline.sources.signing]\nkeys = {{ \"{PRODUCER}\" = {{ file = \"{}\" }} }}\n", dir.join("drill-gen.key").display())
        } else {
            String::new()
        },
        name = s.name,
        data = dir.join("data").display(),
        shards = s.node.shards,
        agg = model::AGG,
        window = WINDOW_MS,
        cp = s.node.checkpoint.as_millis(),
        extra = s.node.config,
    )
}

/// Run `scenario`; the report is also written (JSON and Markdown) to its directory.
///
/// # Errors
/// [`Error`] when the drill could not be set up (a process would not start); a drill that
/// ran and failed its expectations is an `Ok` report with `passed == false`.
pub fn run(scenario: &Scenario, opts: &Options) -> Result<Report, Error> {
    if let Some(live) = &opts.live {
        return run_live(scenario, opts, live);
    }
    let started = crate::now_ms();
    let dir = opts.out_dir.join(format!("{}-{}-seed{}", scenario.name, crate::stamp(started), opts.seed));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io(format!("create {}: {e}", dir.display())))?;
    let say = |m: &str| (opts.progress)(&format!("[{}] {m}", scenario.name));
    let mut launch = Launcher { bin: opts.bin.clone(), dir: dir.clone(), bootstrap: String::new(), topic: "events".into() };
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let proxy = FaultProxy::bind(loopback, opts.seed).map_err(|e| Error::Io(format!("fault proxy: {e}")))?;
    let paddr = proxy.addr().to_string();
    launch.bootstrap = paddr.clone();
    let mut broker = Proc::start(launch.spec(
        "broker",
        vec![
            "broker".into(),
            "--partitions".into(),
            scenario.workload.partitions.to_string(),
            "--topic".into(),
            TOPICS.join(","),
            "--advertise".into(),
            paddr.clone(),
        ],
        vec![],
    ))?;
    let line = broker.wait_line("bootstrap line", Duration::from_secs(30), |l| l.starts_with("bootstrap: "))?;
    let upstream: std::net::SocketAddr = line
        .trim_start_matches("bootstrap: ")
        .trim()
        .parse()
        .map_err(|e| Error::Process { name: "broker".into(), what: format!("bootstrap `{line}`: {e}") })?;
    proxy.set_upstream(upstream);
    say(&format!("broker at {upstream} (pid {}), node and generator through the fault proxy at {paddr}; logs in {}", broker.pid(), dir.display()));

    let cfg = dir.join("node.toml");
    std::fs::write(&cfg, node_config(&dir, &paddr, scenario)).map_err(|e| Error::Io(format!("write {}: {e}", cfg.display())))?;
    let secret = |what: &str| vigil_runtime::security::tokens::generate().map_err(|e| Error::Io(format!("{what}: {e}")));
    if scenario.workload.signed {
        let key = dir.join("drill-gen.key");
        std::fs::write(&key, secret("signing key")?).map_err(|e| Error::Io(format!("write {}: {e}", key.display())))?;
    }
    let token = if scenario.node.auth {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| Error::Io(format!("create {}: {e}", data.display())))?;
        Some(vigil_runtime::security::tokens::create_in_file(&data.join("tokens.json"), "drill", "admin").map_err(|e| Error::Io(format!("drill token: {e}")))?)
    } else {
        None
    };
    let mut node_env = Vec::new();
    if let Some(s) = &opts.sabotage {
        let fp = SABOTAGES
            .iter()
            .find(|(n, _)| n == s)
            .map(|(_, fp)| *fp)
            .ok_or_else(|| Error::Usage(format!("unknown sabotage `{s}`: one of {}", SABOTAGES.map(|(n, _)| n).join(", "))))?;
        node_env.push(("FAILPOINTS".to_string(), format!("{fp}=return")));
        say(&format!("SABOTAGE: the node runs with the `{s}` bug planted; this drill must fail"));
    }
    let node = Proc::start(launch.spec("node", vec!["run".into(), "--config".into(), cfg.display().to_string(), "--json".into()], node_env))?;
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(1))).http_status_as_error(false).build().into();
    let owned = Owned { proxy, broker, node };
    let mut rig = Rig { owned: Some(owned), admin: None, metrics: None, gens: Vec::new(), frozen: false, agent, failpoints: Vec::new(), token };
    rig.node_started()?;

    let mut report = Report::new(scenario, opts.seed, started, &dir);
    let t0 = Instant::now();
    let at = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();

    // Steady state before anything happens.
    let probes = scenario.probes();
    let before = wait_probes(&rig, &probes, Duration::from_secs(20));
    report.steady_before = before.clone();
    if let Err(why) = &before {
        say(&format!("steady state not reached before the faults: {why}"));
    }

    let w = &scenario.workload;
    let mut streams = vec![Stream::new(opts.seed, w.records, w.users, w.bad_ratio, START_MS, STEP_MS)];
    let schedule = scenario.schedule(opts.seed);
    let mut main_args = launch.workload_args(scenario, rig.admin.as_deref());
    // A flood is the workload itself going faster: the generator is told when, from the schedule.
    for (i, start, end) in &schedule {
        let f = &scenario.faults[*i];
        if f.kind == FaultKind::Flood {
            main_args.extend(["--surge".to_string(), format!("{}ms:{}ms:{}", start.as_millis(), (*end - *start).as_millis(), w.rate.saturating_mul(f.factor))]);
        }
    }
    let workload_start = Instant::now();
    rig.gens.push(Proc::start(launch.generator("gen", &streams[0], w.rate, main_args))?);
    say(&format!("node pid {}, generator pid {}; workload: {} records at {}/s (seed {})", rig.pid(), rig.gens[0].pid(), w.records, w.rate, opts.seed));

    let mut runs: Vec<FaultRun> = schedule
        .iter()
        .map(|(i, s, e)| FaultRun::planned(*i, &scenario.faults[*i], s.as_secs_f64() + at(workload_start), e.as_secs_f64() + at(workload_start)))
        .collect();
    let interrupted = drive(&mut rig, scenario, opts, &launch, &mut streams, &mut runs, &mut report, t0)?;
    rig.undo_all();
    if interrupted {
        return end_interrupted(rig, runs, report, at(Instant::now()));
    }
    for g in &mut rig.gens {
        if let Some(s) = g.exited().filter(|s| !s.success()) {
            report.lessons.push(format!("generator `{}` failed ({s}); see {}", g.name(), g.log().display()));
        }
    }
    report.steady_after = wait_probes(&rig, &probes, Duration::from_secs(30));

    // Close every window, then read the outputs back until they match the model or stop changing.
    say("closing windows and reconciling every record");
    let sign_key = if w.signed { std::fs::read(dir.join("drill-gen.key")).ok() } else { None };
    send_sentinels(&paddr, w.partitions, &sentinel_wire(&rig, w.format)?, sign_key.as_deref())?;
    // The pipeline's guarantee starts at the input topic: a record a producer wrote twice
    // (a retry across the fault) is two records there, and each must be taken once.
    let (input, observed) = input_ids(&paddr, w.partitions)?;
    let extra = model::extra_copies(&streams, &observed);
    let want = model::expected_with_copies(&streams, WINDOW_MS, &extra);
    let mut recon = reconcile(&paddr, w.partitions, &want, &opts.interrupted);
    recon.generated = streams.iter().map(|s| s.count).sum();
    recon.input = input;
    let copies: u64 = extra.values().sum();
    if copies > 0 {
        report.lessons.push(format!(
            "the producers wrote {copies} records twice (retries whose first attempt the broker had stored when the connection broke: \
             the generator's idempotence did not hold across the fault); each copy in the input topic is expected once"
        ));
    }
    if recon.input < recon.generated + copies {
        report.lessons.push(format!(
            "the input topic holds {} of the {} generated records: the producer lost some (see gen.log); they count as lost",
            recon.input, recon.generated
        ));
    }
    report.timeline.push(Timeline::at(
        at(Instant::now()),
        "reconcile",
        format!("lost {}, duplicated {}, re-emitted {}", recon.lost, recon.duplicated, recon.reemitted),
    ));
    conclude(rig, t0, scenario, report, runs, streams, Some(recon))
}

/// Close a drill that ran: the last alerts and incidents with their post-mortems and the
/// proxy's figures, then every process stopped (by dropping `rig`), the report judged and
/// written.
fn conclude(
    rig: Rig,
    t0: Instant,
    scenario: &Scenario,
    mut report: Report,
    runs: Vec<FaultRun>,
    streams: Vec<Stream>,
    recon: Option<Reconciliation>,
) -> Result<Report, Error> {
    poll_signals(&rig, t0, &mut report);
    fetch_postmortems(&rig, &mut report);
    report.proxy = rig.owned.as_ref().map(|o| o.proxy.stats()).unwrap_or_default();
    report.faults = runs;
    report.streams = streams;
    drop(rig);
    report.finish(crate::now_ms(), recon);
    report.judge(&scenario.expectations());
    report.write()?;
    Ok(report)
}

/// The report of a drill stopped by Ctrl-C: every fault still in force was undone (by
/// [`Rig::undo_all`], and the processes stop when `rig` is dropped).
fn end_interrupted(rig: Rig, mut runs: Vec<FaultRun>, mut report: Report, now: f64) -> Result<Report, Error> {
    for r in runs.iter_mut().filter(|r| r.started && !r.ended) {
        (r.ended, r.undone, r.end_s) = (true, true, now);
        report.timeline.push(Timeline::at(now, "fault", format!("{} undone (interrupted)", r.label)));
    }
    report.interrupted = true;
    report.faults = runs;
    drop(rig);
    report.finish(crate::now_ms(), None);
    report.write()?;
    Ok(report)
}

/// A game day: the scenario's faults injected into the running node at `live.admin`, whose
/// own traffic is the workload. Every fault is undone whatever ends it; the records the
/// drill writes are traced (by their ids) to the DLQ or the quarantine.
fn run_live(scenario: &Scenario, opts: &Options, live: &Live) -> Result<Report, Error> {
    if let Some(why) = live_refusal(scenario, live.bootstrap.is_some()) {
        return Err(Error::Usage(why));
    }
    let started = crate::now_ms();
    let dir = opts.out_dir.join(format!("{}-live-{}-seed{}", scenario.name, crate::stamp(started), opts.seed));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io(format!("create {}: {e}", dir.display())))?;
    let say = |m: &str| (opts.progress)(&format!("[{} LIVE] {m}", scenario.name));
    let launch = Launcher { bin: opts.bin.clone(), dir: dir.clone(), bootstrap: live.bootstrap.clone().unwrap_or_default(), topic: live.topic.clone() };
    let mut rig = Rig {
        owned: None,
        admin: Some(live.admin.clone()),
        metrics: None,
        gens: Vec::new(),
        frozen: false,
        agent: live.agent.clone(),
        failpoints: Vec::new(),
        token: live.token.clone(),
    };
    let status = rig
        .get("/status")
        .ok_or_else(|| Error::Unreachable { admin: live.admin.clone(), reason: "no JSON answer to /status (address, scheme, --token?)".into() })?;
    say(&format!("target {} (node {}); logs in {}", live.admin, status["node"].as_str().unwrap_or("?"), dir.display()));
    let mut report = Report::new(scenario, opts.seed, started, &dir);
    report.target = Some(live.admin.clone());
    let t0 = Instant::now();
    let probes = scenario.probes();
    report.steady_before = wait_probes(&rig, &probes, Duration::from_secs(20));
    if let Err(why) = &report.steady_before {
        say(&format!("steady state not reached before the faults: {why}; nothing injected"));
        report.finish(crate::now_ms(), None);
        report.judge(&scenario.expectations());
        report.write()?;
        return Ok(report);
    }
    // No workload of the drill's own: a stream of no records stands for it, at the node's
    // present (its traffic's event times are now; a skewed producer's are then behind).
    let mut streams = vec![Stream::new(opts.seed, 0, scenario.workload.users, 0.0, crate::now_ms(), STEP_MS)];
    let mut runs: Vec<FaultRun> =
        scenario.schedule(opts.seed).iter().map(|(i, s, e)| FaultRun::planned(*i, &scenario.faults[*i], s.as_secs_f64(), e.as_secs_f64())).collect();
    let interrupted = drive(&mut rig, scenario, opts, &launch, &mut streams, &mut runs, &mut report, t0)?;
    rig.undo_all();
    let at = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
    if interrupted {
        return end_interrupted(rig, runs, report, at(Instant::now()));
    }
    report.steady_after = wait_probes(&rig, &probes, Duration::from_secs(30));
    let injected: Vec<Stream> = streams.into_iter().filter(|s| s.count > 0).collect();
    let recon = if injected.is_empty() {
        None
    } else {
        say("tracing every record the drill wrote to the DLQ or the quarantine");
        Some(reconcile_live(live, &injected, &opts.interrupted))
    };
    if let Some(r) = &recon {
        report.timeline.push(Timeline::at(at(Instant::now()), "reconcile", format!("lost {}, duplicated {}", r.lost, r.duplicated)));
    }
    conclude(rig, t0, scenario, report, runs, injected, recon)
}

/// Where the records a game day wrote ended up: each must be in the DLQ or the quarantine
/// once, found by its id (`e-<seed>-<n>`, the DLQ record's key).
fn reconcile_live(live: &Live, streams: &[Stream], interrupted: &AtomicBool) -> Reconciliation {
    let Some(bootstrap) = &live.bootstrap else { return Reconciliation::default() };
    let want = model::expected(streams, WINDOW_MS);
    let prefixes: Vec<String> = streams.iter().map(|s| format!("e-{}-", s.seed)).collect();
    let ours = |k: &[u8]| prefixes.iter().any(|p| k.starts_with(p.as_bytes()));
    let mut last = Reconciliation::default();
    let mut changed = Instant::now();
    loop {
        let (dlq, q) = (read_rejected(bootstrap, &live.dlq, 0, &ours), read_rejected(bootstrap, &live.quarantine, 0, &ours));
        let r = match (dlq, q) {
            (Ok(d), Ok(q)) => Reconciliation::compare(&want, &BTreeMap::new(), 0, d, q),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "reading the DLQ and quarantine back");
                last.clone()
            }
        };
        let moved = (r.dlq, r.quarantined) != (last.dlq, last.quarantined);
        if moved {
            changed = Instant::now();
        }
        last = r;
        if last.exact() || interrupted.load(Ordering::SeqCst) || changed.elapsed() > SETTLE {
            last.generated = streams.iter().map(|s| s.count).sum();
            return last;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Run the schedule: inject and undo each fault on time while watching recovery, alerts and
/// incidents, until the generators are done, every fault has recovered (or a minute has
/// passed) and every awaited alert or incident had its time. Whether it was interrupted.
#[allow(clippy::too_many_arguments)]
fn drive(
    rig: &mut Rig,
    scenario: &Scenario,
    opts: &Options,
    launch: &Launcher,
    streams: &mut Vec<Stream>,
    runs: &mut [FaultRun],
    report: &mut Report,
    t0: Instant,
) -> Result<bool, Error> {
    let say = |m: &str| (opts.progress)(&format!("[{}] {m}", scenario.name));
    let at = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
    let mut watch = Watch::default();
    // Expectations about alerts and incidents, with how long after the first fault they may take.
    let signals: Vec<(Expect, f64)> = scenario
        .expectations()
        .into_iter()
        .filter_map(|(_, e)| {
            let within = match &e {
                Expect::AlertFires { within, .. } | Expect::IncidentOpens { within, .. } => within.unwrap_or(Duration::from_secs(60)),
                Expect::DetectWithin(d) => *d,
                _ => return None,
            };
            Some((e, within.as_secs_f64()))
        })
        .collect();
    let mut last_alert_poll = Instant::now() - Duration::from_secs(1);
    let mut interrupted = false;
    loop {
        if opts.interrupted.load(Ordering::SeqCst) {
            say("interrupted: undoing every fault");
            interrupted = true;
            break;
        }
        let now = at(Instant::now());
        for (k, run) in runs.iter_mut().enumerate() {
            let fault = &scenario.faults[run.fault];
            if !run.started && now >= run.start_s {
                run.started = true;
                run.start_s = now;
                let r = inject(rig, fault, streams, launch, scenario, opts.seed + 1 + k as u64);
                say(&format!(
                    "t={now:.1}s inject {} (node pid {}){}",
                    run.label,
                    rig.pid(),
                    r.as_ref().err().map(|e| format!(": FAILED: {e}")).unwrap_or_default()
                ));
                report.timeline.push(Timeline::at(now, "fault", format!("{} injected", run.label)));
                run.error = r.err();
                if !fault.kind.lasts() {
                    // Recovery of a one-shot fault counts from the blow (SIGKILL → processing
                    // again includes the restart).
                    run.end_s = now;
                    run.ended = true;
                    run.undone = true;
                    watch.progress_mark = None;
                }
            }
            if run.started && !run.ended && now >= run.end_s {
                undo(rig, fault);
                run.ended = true;
                run.undone = true;
                run.end_s = now;
                say(&format!("t={now:.1}s undo {}", run.label));
                report.timeline.push(Timeline::at(now, "fault", format!("{} undone", run.label)));
                watch.progress_mark = None;
            }
        }
        // A node that died on its own is a finding; it is restarted like a killed one.
        if let Some(status) = rig.owned.as_mut().and_then(|o| o.node.exited()) {
            report.timeline.push(Timeline::at(now, "process", format!("node exited by itself ({status}); restarted")));
            report.lessons.push(format!("the node exited by itself at t={now:.1}s ({status}); see node.log"));
            if let Some(o) = &mut rig.owned {
                o.node.restart()?;
            }
            rig.node_started()?;
        }
        watch.observe(rig, now, runs, report);
        if last_alert_poll.elapsed() >= Duration::from_millis(500) {
            last_alert_poll = Instant::now();
            poll_signals(rig, t0, report);
        }
        let gens_done = rig.gens.iter_mut().all(|g| g.exited().is_some());
        let faults_done = runs.iter().all(|r| r.ended);
        let recovered = runs.iter().all(|r| r.recovered_s.is_some() || r.error.is_some()) || now - runs.iter().map(|r| r.end_s).fold(0.0, f64::max) > 60.0;
        // Alerts and incidents the scenario waits for get their full `within` to show up.
        let first = runs.iter().filter(|r| r.started).map(|r| r.start_s).fold(f64::INFINITY, f64::min);
        report.faults = runs.to_vec();
        let waiting = signals.iter().any(|(e, within)| now < first + within && !judge(e, report).0);
        if gens_done && faults_done && recovered && !waiting {
            break;
        }
        std::thread::sleep(TICK);
    }
    Ok(interrupted)
}

/// How the drill starts its processes.
struct Launcher {
    bin: PathBuf,
    dir: PathBuf,
    /// The fault proxy's address, which clients use as bootstrap.
    bootstrap: String,
    /// The source topic.
    topic: String,
}

impl Launcher {
    /// `vigil <args>` named `name`, logging to `<dir>/<name>.log`.
    fn spec(&self, name: &str, args: Vec<String>, env: Vec<(String, String)>) -> Spec {
        // VIGIL_DRILL_LOG sets the log filter of the drill's processes (default warn).
        let log = ("VIGIL_LOG".to_string(), std::env::var("VIGIL_DRILL_LOG").unwrap_or_else(|_| "warn".into()));
        Spec { name: name.into(), program: self.bin.clone(), args, env: [vec![log], env].concat(), log: self.dir.join(format!("{name}.log")) }
    }

    /// Arguments of the workload's generator: its format (registered in the node's registry
    /// at `admin`) and signature.
    fn workload_args(&self, s: &Scenario, admin: Option<&str>) -> Vec<String> {
        [format_args(s.workload.format, admin), self.sign_args(s)].concat()
    }

    /// The workload's signature, if it signs.
    fn sign_args(&self, s: &Scenario) -> Vec<String> {
        if !s.workload.signed {
            return Vec::new();
        }
        vec!["--sign-key-file".into(), self.dir.join("drill-gen.key").display().to_string(), "--producer".into(), PRODUCER.into()]
    }

    /// `vigil gen` producing `s` at `rate` through the proxy, with `extra` arguments.
    fn generator(&self, name: &str, s: &Stream, rate: u32, extra: Vec<String>) -> Spec {
        let args = [
            ("--bootstrap", self.bootstrap.clone()),
            ("--topic", self.topic.clone()),
            ("--count", s.count.to_string()),
            ("--rate", rate.to_string()),
            ("--seed", s.seed.to_string()),
            ("--users", s.users.to_string()),
            ("--bad-ratio", s.bad_ratio.to_string()),
            ("--start-ms", s.start_ms.to_string()),
            ("--step-ms", s.step_ms.to_string()),
            // Outlast any outage a scenario plans: a record the broker never acknowledged
            // is the generator's loss, not the pipeline's.
            ("--timeout", "300s".into()),
        ];
        let mut v = vec!["gen".to_string()];
        for (k, val) in args {
            v.push(k.into());
            v.push(val);
        }
        v.extend(extra);
        self.spec(name, v, Vec::new())
    }
}

/// Progress seen in `/status`, to time recoveries.
#[derive(Default)]
struct Watch {
    /// Ingested count when the latest fault ended (None: take the next sample).
    progress_mark: Option<(u32, u64)>,
    /// The last look got no answer.
    silent: bool,
}

impl Watch {
    fn observe(&mut self, rig: &Rig, now: f64, runs: &mut [FaultRun], report: &mut Report) {
        let pid = rig.pid();
        // As a Prometheus scrape would: a node that does not answer within the agent's
        // timeout is detected from outside (a frozen or wedged process cannot alert itself).
        let Some(st) = rig.get("/status") else {
            if rig.admin.is_some() && !self.silent {
                self.silent = true;
                report.probe_failures.push(now);
                report.timeline.push(Timeline::at(now, "probe", "the admin API did not answer /status within 1s".into()));
            }
            return;
        };
        self.silent = false;
        let ingested = st["ingested"].as_u64().unwrap_or(0);
        let lag = st["lag"].as_i64().unwrap_or(i64::MAX);
        let ready = st["ready"].as_bool().unwrap_or(false);
        let mark = *self.progress_mark.get_or_insert((pid, ingested));
        // Processing again: the counter moved since the fault ended (a new process counts
        // from zero), or there is nothing left to read.
        let moved = (pid != mark.0 && ingested > 0) || (pid == mark.0 && ingested > mark.1);
        let caught_up = ready && lag == 0 && ingested > 0;
        if ready && (moved || caught_up) {
            for r in runs.iter_mut().filter(|r| r.ended && r.recovered_s.is_none() && r.error.is_none()) {
                r.recovered_s = Some((now - r.end_s).max(0.0));
            }
        }
    }
}

/// Inject one occurrence of `f` of scenario `s` (a record stream drawn from `seed`).
fn inject(rig: &mut Rig, f: &Fault, streams: &mut Vec<Stream>, launch: &Launcher, s: &Scenario, seed: u64) -> Result<(), String> {
    let target = f.target.clone().unwrap_or_default();
    if f.kind.is_stream() {
        let (stream, args) = bad_stream(rig, f, streams[0], launch, s, seed)?;
        streams.push(stream);
        let name = format!("{}-{}", f.kind.name(), streams.len());
        let rate = ((f.count as f64 / f.duration.as_secs_f64().max(0.001)).ceil() as u32).max(1);
        rig.gens.push(Proc::start(launch.generator(&name, &stream, rate, args)).map_err(|e| e.to_string())?);
        return Ok(());
    }
    match f.kind {
        FaultKind::StagePanic => {
            let a = rig.admin.clone().ok_or("node admin address unknown")?;
            // A stage that is still restarting from the last blow is not registered yet:
            // wait for it (bounded) rather than skip the blow.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match rig.req(rig.agent.post(&format!("{a}/chaos/panic/{target}"))).send_empty() {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) if r.status().as_u16() == 404 && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    Ok(r) => return Err(format!("HTTP {}", r.status())),
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        FaultKind::StageStall => rig.failpoint(&format!("stage.{target}"), &format!("1*sleep({})", f.duration.as_millis())),
        FaultKind::StageSlow => rig.failpoint(&format!("stage.{target}"), &format!("delay({})", f.delay.as_millis())),
        FaultKind::DiskFailure => rig.failpoint(vigil_runtime::failpoints::STORE_COMMIT, "return(injected: No space left on device)"),
        FaultKind::SlowDisk => rig.failpoint(vigil_runtime::failpoints::STORE_COMMIT, &format!("sleep({})", f.delay.as_millis())),
        FaultKind::NodeKill | FaultKind::NodeRestart => {
            let node = &mut rig.owned()?.node;
            if f.kind == FaultKind::NodeKill {
                node.kill9();
            } else {
                node.terminate(Duration::from_secs(30));
            }
            node.restart().map_err(|e| e.to_string())?;
            rig.admin = None;
            rig.node_started().map_err(|e| e.to_string())
        }
        FaultKind::NodeFreeze => {
            rig.owned()?.node.freeze();
            rig.frozen = true;
            Ok(())
        }
        FaultKind::BrokerOutage => {
            rig.owned()?.proxy.set(NetFaults { down: true, ..NetFaults::default() });
            Ok(())
        }
        FaultKind::NetworkPartition => {
            rig.owned()?.proxy.set(NetFaults { partitioned: true, ..NetFaults::default() });
            Ok(())
        }
        FaultKind::SlowNetwork => {
            rig.owned()?.proxy.set(NetFaults { latency: f.latency, jitter: f.jitter, bandwidth: f.bandwidth, ..NetFaults::default() });
            Ok(())
        }
        FaultKind::ConnectionReset => {
            rig.owned()?.proxy.reset_all();
            Ok(())
        }
        // The workload's generator runs the flood itself (`--surge`, from the schedule).
        FaultKind::Flood => Ok(()),
        FaultKind::BadCredentials => bad_credentials(rig, f.count, seed),
        _ => Err(format!("{:?} is not injected here", f.kind)),
    }
}

/// The record stream of a bad-data or breach fault and its generator's arguments. `main`
/// is the workload's stream.
fn bad_stream(rig: &Rig, f: &Fault, main: Stream, launch: &Launcher, s: &Scenario, seed: u64) -> Result<(Stream, Vec<String>), String> {
    let mut stream = Stream::new(seed, f.count, main.users, main.bad_ratio, main.start_ms, STEP_MS);
    let admin = rig.admin.as_deref();
    let mut args = launch.workload_args(s, admin);
    match f.kind {
        FaultKind::Poison => stream.bad_ratio = 1.0,
        FaultKind::Corrupt => {
            stream.fate = Fate::Dlq;
            args.push("--corrupt".into());
        }
        FaultKind::SchemaBreak => {
            // Another format registered under another subject: the registry never compared it
            // with the source's schema, and Validate refuses its ids for this source.
            stream.fate = Fate::Dlq;
            let other = if s.workload.format == WireFormat::Avro { WireFormat::JsonSchema } else { WireFormat::Avro };
            args = [format_args(other, admin), vec!["--subject".into(), "events-breaking-value".into()], launch.sign_args(s)].concat();
        }
        FaultKind::Duplicates => {
            // The workload's first records again: their windows closed long ago.
            stream = Stream { count: f.count, fate: Fate::Dlq, ..main };
        }
        FaultKind::ClockSkew => {
            stream.start_ms -= f.skew.as_millis() as i64;
            stream.fate = Fate::Dlq;
        }
        FaultKind::ForgedRecords => {
            stream.fate = Fate::Quarantine;
            let producer = f.producer.clone().unwrap_or_else(|| PRODUCER.into());
            let key = vigil_runtime::security::tokens::generate().map_err(|e| e.to_string())?;
            args = [format_args(s.workload.format, admin), vec!["--sign-key".into(), key, "--producer".into(), producer]].concat();
        }
        k => return Err(format!("{k:?} is not a record stream")),
    }
    Ok((stream, args))
}

/// `vigil gen` arguments of `format`, registered in the node's registry at `admin`.
fn format_args(format: WireFormat, admin: Option<&str>) -> Vec<String> {
    if format == WireFormat::Json {
        return Vec::new();
    }
    vec!["--format".into(), format.name().into(), "--registry".into(), admin.unwrap_or_default().to_string()]
}

/// A token leaks and is revoked (through the admin API, with the drill's admin token); then
/// `count` admin calls with it, with a made-up token and with none must all be refused
/// (401). The leaked token must work before the revocation.
fn bad_credentials(rig: &Rig, count: u64, seed: u64) -> Result<(), String> {
    let a = rig.admin.clone().ok_or("node admin address unknown")?;
    let call = |token: Option<&str>| -> Result<u16, String> {
        let mut r = rig.agent.get(&format!("{a}/incidents"));
        if let Some(t) = token {
            r = r.header("Authorization", &format!("Bearer {t}"));
        }
        r.call().map(|r| r.status().as_u16()).map_err(|e| e.to_string())
    };
    let name = format!("drill-leaked-{seed}-{}", crate::now_ms());
    let created = rig.req(rig.agent.post(&format!("{a}/security/tokens"))).send_json(serde_json::json!({ "name": name, "role": "viewer" }));
    let leaked = match created {
        Ok(mut r) if r.status().is_success() => r.body_mut().read_json::<serde_json::Value>().ok().and_then(|v| v["token"].as_str().map(str::to_string)),
        Ok(r) => return Err(format!("cannot create the token to leak: HTTP {} (the drill's token needs tokens.write)", r.status())),
        Err(e) => return Err(e.to_string()),
    }
    .ok_or("the token API answered without a token")?;
    let works = call(Some(&leaked))?;
    let revoked = rig.req(rig.agent.delete(&format!("{a}/security/tokens/{name}"))).call().map(|r| r.status().as_u16()).map_err(|e| e.to_string());
    if works != 200 {
        return Err(format!("the token to be leaked did not work before its revocation (HTTP {works})"));
    }
    if revoked != Ok(200) {
        return Err(format!("cannot revoke the leaked token `{name}`: {revoked:?}"));
    }
    let made_up = format!("vigil_{}", "0".repeat(43));
    let mut accepted = Vec::new();
    for i in 0..count {
        let (what, token) = match i % 3 {
            0 => ("revoked", Some(leaked.as_str())),
            1 => ("made-up", Some(made_up.as_str())),
            _ => ("no", None),
        };
        let status = call(token)?;
        if status < 400 {
            accepted.push(format!("{what} token: HTTP {status}"));
        }
    }
    if accepted.is_empty() {
        Ok(())
    } else {
        Err(format!("BREACH: {} of {count} calls with bad credentials were accepted ({})", accepted.len(), accepted.join(", ")))
    }
}

fn undo(rig: &mut Rig, f: &Fault) {
    match f.kind {
        FaultKind::StageStall | FaultKind::StageSlow => rig.clear_failpoint(&format!("stage.{}", f.target.as_deref().unwrap_or_default())),
        FaultKind::DiskFailure | FaultKind::SlowDisk => rig.clear_failpoint(vigil_runtime::failpoints::STORE_COMMIT),
        FaultKind::NodeFreeze => {
            if let Some(o) = &mut rig.owned {
                o.node.thaw();
            }
            rig.frozen = false;
        }
        FaultKind::BrokerOutage | FaultKind::NetworkPartition | FaultKind::SlowNetwork => {
            if let Some(o) = &mut rig.owned {
                o.proxy.set(NetFaults::default());
            }
        }
        // Record streams and floods end by themselves; one-shot faults have nothing to undo.
        FaultKind::Poison
        | FaultKind::Corrupt
        | FaultKind::SchemaBreak
        | FaultKind::Duplicates
        | FaultKind::ClockSkew
        | FaultKind::Flood
        | FaultKind::ForgedRecords
        | FaultKind::BadCredentials
        | FaultKind::StagePanic
        | FaultKind::NodeKill
        | FaultKind::NodeRestart
        | FaultKind::ConnectionReset => {}
    }
}

fn probe_holds(rig: &Rig, p: &Probe) -> Result<(), String> {
    match p {
        Probe::Ready => match rig.get("/status") {
            Some(s) if s["ready"].as_bool() == Some(true) => Ok(()),
            Some(_) => Err("not ready".into()),
            None => Err("admin API does not answer".into()),
        },
        Probe::Status { field, op, value } => {
            let s = rig.get("/status").ok_or("admin API does not answer")?;
            let v = field.split('.').fold(&s, |v, k| &v[k]).as_f64().ok_or_else(|| format!("status has no number `{field}`"))?;
            op.holds(v, *value).then_some(()).ok_or_else(|| format!("status.{field} is {v}"))
        }
        Probe::Metric { series, op, value } => {
            let m = rig.metrics.as_ref().filter(|_| !rig.frozen).ok_or("metrics address unknown")?;
            let text = rig
                .agent
                .get(&format!("http://{m}/metrics"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .ok_or("/metrics does not answer")?;
            let v = text
                .lines()
                .find_map(|l| l.strip_prefix(series.as_str()).filter(|r| r.starts_with(' ')).and_then(|r| r.trim().parse::<f64>().ok()))
                .ok_or_else(|| format!("no sample {series}"))?;
            op.holds(v, *value).then_some(()).ok_or_else(|| format!("{series} is {v}"))
        }
    }
}

fn wait_probes(rig: &Rig, probes: &[Probe], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = probes.iter().try_for_each(|p| probe_holds(rig, p));
        if r.is_ok() || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn poll_signals(rig: &Rig, t0: Instant, report: &mut Report) {
    // Node times are wall-clock ms; the report's are seconds since the drill's start.
    let t0_ms = crate::now_ms() - t0.elapsed().as_millis() as i64;
    let rel_t0 = |ms: i64| (ms - t0_ms) as f64 / 1000.0;
    if let Some(alerts) = rig.get("/alerts").and_then(|v| v.as_array().cloned()) {
        for a in alerts {
            let (Some(rule), Some(fired)) = (a["rule"].as_str(), a["fired_at_ms"].as_i64()) else { continue };
            if fired < t0_ms - 1000 || report.alerts.iter().any(|x| x.rule == rule && x.fired_ms == fired) {
                continue;
            }
            let severity = a["labels"]["severity"].as_str().unwrap_or("").to_string();
            report.timeline.push(Timeline::at(rel_t0(fired), "alert", format!("{rule} ({severity}) firing")));
            report.alerts.push(AlertSeen { rule: rule.to_string(), severity, fired_ms: fired, fired_s: rel_t0(fired) });
        }
    }
    if let Some(list) = rig.get("/incidents?all=true").and_then(|v| v.as_array().cloned()) {
        for i in list {
            let inc = if i["incident"].is_object() { &i["incident"] } else { &i };
            let (Some(id), Some(opened)) = (inc["id"].as_u64(), inc["opened_at_ms"].as_i64()) else { continue };
            let severity = inc["severity"].as_str().unwrap_or("").to_string();
            if let Some(seen) = report.incidents.iter_mut().find(|x| x.id == id && x.opened_ms == opened) {
                // Raised: a more severe alert joined it.
                let worst = seen.raised.last().map_or(&seen.severity, |r| &r.0);
                if severity_rank(&severity) < severity_rank(worst) {
                    let now = t0.elapsed().as_secs_f64();
                    report.timeline.push(Timeline::at(now, "incident", format!("#{id} raised to {severity}")));
                    seen.raised.push((severity, now));
                }
                continue;
            }
            if opened < t0_ms - 1000 {
                continue;
            }
            let title = inc["title"].as_str().unwrap_or("").to_string();
            report.timeline.push(Timeline::at(rel_t0(opened), "incident", format!("#{id} {severity} opened: {title}")));
            report.incidents.push(IncidentSeen { id, severity, raised: Vec::new(), title, opened_ms: opened, opened_s: rel_t0(opened), postmortem: None });
        }
    }
}

/// 1 for P1 (most severe) … 4; 9 for anything else.
fn severity_rank(s: &str) -> u8 {
    s.trim_start_matches('P').parse().unwrap_or(9)
}

fn fetch_postmortems(rig: &Rig, report: &mut Report) {
    let Some(a) = rig.admin.clone() else { return };
    for i in &mut report.incidents {
        if let Ok(mut r) = rig.req(rig.agent.get(&format!("{a}/incidents/{}/postmortem", i.id))).call() {
            if r.status().is_success() {
                i.postmortem = r.body_mut().read_to_string().ok();
            }
        }
    }
}

fn producer(bootstrap: &str) -> Result<rdkafka::producer::BaseProducer, Error> {
    rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().map_err(|e| Error::Kafka(e.to_string()))
}

/// How the workload's records are encoded, for the sentinels: a registry format takes the
/// id the workload registered under `events-value`.
fn sentinel_wire(rig: &Rig, format: WireFormat) -> Result<Wire, Error> {
    if format == WireFormat::Json {
        return Ok(Wire::Json);
    }
    let id = rig
        .get("/subjects/events-value/versions/latest")
        .and_then(|v| v["id"].as_u64())
        .ok_or_else(|| Error::Process { name: "node".into(), what: "the registry has no schema under events-value".into() })? as u32;
    Ok(match format {
        WireFormat::Avro => Wire::avro(id).map_err(Error::Io)?,
        _ => Wire::JsonSchema { id },
    })
}

/// One record per partition far ahead in event time, which closes every window, encoded as
/// `wire` and signed as the workload's producer with `sign_key` when the source checks
/// signatures.
fn send_sentinels(bootstrap: &str, partitions: u32, wire: &Wire, sign_key: Option<&[u8]>) -> Result<(), Error> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, Producer};
    use vigil_actors::generator::{Event, GenRecord};
    let p = producer(bootstrap)?;
    const KEY: &str = "~sentinel";
    for part in 0..partitions as i32 {
        let id = format!("{KEY}-{part}");
        let event =
            Event { event_id: id.clone(), kind: "page_view", user: KEY.into(), amount: 0.0, currency: None, page: Some("/"), country: "DE", ts: SENTINEL_MS };
        let payload = event.json().to_string().into_bytes();
        let value = wire.encode(&GenRecord { id: id.clone(), key: KEY.into(), payload, bad: false, flaw: 0, event, ts: SENTINEL_MS });
        let mut headers = OwnedHeaders::new().insert(Header { key: vigil_runtime::envelope::HEADER_RECORD_ID, value: Some(&id) });
        if let Some(k) = sign_key {
            let sig = vigil_actors::signing::sign(PRODUCER, k, id.as_bytes(), KEY.as_bytes(), &value, crate::now_ms());
            headers = headers.insert(Header { key: vigil_actors::signing::HEADER, value: Some(&sig) });
        }
        p.send(BaseRecord::to("events").partition(part).key(KEY).payload(&value).headers(headers)).map_err(|(e, _)| Error::Kafka(e.to_string()))?;
    }
    p.flush(Duration::from_secs(30)).map_err(|e| Error::Kafka(format!("sentinels: {e}")))
}

/// Read `topic` from the start up to its current end: key → (last value), messages read.
fn read_all(bootstrap: &str, topic: &str, partitions: u32) -> Result<(BTreeMap<String, String>, u64), Error> {
    use rdkafka::Message;
    let mut out = BTreeMap::new();
    let n = scan(bootstrap, topic, partitions, |m| {
        let k = m.key().map(|k| String::from_utf8_lossy(k).to_string()).unwrap_or_default();
        out.insert(k, m.payload().map(|v| String::from_utf8_lossy(v).to_string()).unwrap_or_default());
    })?;
    Ok((out, n))
}

/// Distinct records rejected into `topic` (DLQ or quarantine) whose key `ours` accepts, by
/// their source position (`vigil.source`): a reject sent again after a restart counts once.
fn read_rejected(bootstrap: &str, topic: &str, partitions: u32, ours: &dyn Fn(&[u8]) -> bool) -> Result<u64, Error> {
    use rdkafka::message::Headers;
    use rdkafka::Message;
    let mut seen = std::collections::HashSet::new();
    scan(bootstrap, topic, partitions, |m| {
        if !ours(m.key().unwrap_or_default()) {
            return;
        }
        let source = m.headers().and_then(|h| h.iter().find(|h| h.key == "vigil.source").and_then(|h| h.value.map(<[u8]>::to_vec)));
        seen.insert(source.unwrap_or_else(|| format!("offset {}/{}", m.partition(), m.offset()).into_bytes()));
    })?;
    Ok(seen.len() as u64)
}

/// Every message of `topic` (of `partitions`; 0: as many as the broker says) from the start
/// up to its current end, to `each`; how many.
fn scan(bootstrap: &str, topic: &str, partitions: u32, mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>)) -> Result<u64, Error> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("drill-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| Error::Kafka(e.to_string()))?;
    let partitions = if partitions > 0 {
        partitions
    } else {
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|e| Error::Kafka(format!("{topic}: {e}")))?;
        md.topics().first().map_or(0, |t| t.partitions().len() as u32)
    };
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions as i32 {
        let (_, hi) = c.fetch_watermarks(topic, p, Duration::from_secs(10)).map_err(|e| Error::Kafka(format!("{topic}/{p}: {e}")))?;
        if hi > 0 {
            ends.insert(p, hi);
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).map_err(|e| Error::Kafka(e.to_string()))?;
        }
    }
    let mut n = 0;
    if ends.is_empty() {
        return Ok(0);
    }
    c.assign(&tpl).map_err(|e| Error::Kafka(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done: BTreeMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    while done.values().any(|d| !d) && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            n += 1;
            each(&m);
            if m.offset() + 1 >= ends.get(&m.partition()).copied().unwrap_or(0) {
                done.insert(m.partition(), true);
            }
        }
    }
    Ok(n)
}

/// Records in `events` besides the sentinels, and how many copies of each record id it holds.
fn input_ids(bootstrap: &str, partitions: u32) -> Result<(u64, BTreeMap<String, u64>), Error> {
    use rdkafka::message::Headers;
    use rdkafka::Message;
    let mut ids: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0;
    scan(bootstrap, "events", partitions, |m| {
        let id = m.headers().and_then(|h| h.iter().find(|h| h.key == vigil_runtime::envelope::HEADER_RECORD_ID).and_then(|h| h.value));
        let id = id.map(|v| String::from_utf8_lossy(v).to_string()).unwrap_or_default();
        if !id.starts_with("~sentinel") {
            n += 1;
            *ids.entry(id).or_default() += 1;
        }
    })?;
    Ok((n, ids))
}

fn reconcile(bootstrap: &str, partitions: u32, want: &model::Expected, interrupted: &AtomicBool) -> Reconciliation {
    let mut last: Option<Reconciliation> = None;
    let mut changed = Instant::now();
    loop {
        let read = (
            read_all(bootstrap, "out", partitions),
            read_rejected(bootstrap, "dlq", partitions, &|_| true),
            read_rejected(bootstrap, QUARANTINE, partitions, &|_| true),
        );
        let r = match read {
            (Ok((out, n)), Ok(dlq), Ok(q)) => Reconciliation::compare(want, &out, n, dlq, q),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                tracing::warn!(error = %e, "reading outputs back");
                last.clone().unwrap_or_default()
            }
        };
        if r.exact() || interrupted.load(Ordering::SeqCst) {
            return r;
        }
        if last.as_ref().map(|l| (l.output_records, l.dlq, l.quarantined)) != Some((r.output_records, r.dlq, r.quarantined)) {
            changed = Instant::now();
        }
        last = Some(r);
        if changed.elapsed() > SETTLE {
            return last.unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Judge one expectation against a finished report: (passed, detail).
pub(crate) fn judge(e: &Expect, r: &Report) -> (bool, String) {
    let fault_start = r.faults.iter().map(|f| f.start_s).fold(f64::INFINITY, f64::min);
    match e {
        Expect::Records { measure, op, value } => {
            let Some(rec) = &r.records else { return (false, "no reconciliation (interrupted?)".into()) };
            let v = match measure.as_str() {
                "lost" => rec.lost + rec.wrong_values,
                "duplicated" => rec.duplicated,
                _ => rec.dlq,
            } as f64;
            (op.holds(v, *value), format!("records.{measure} = {v}"))
        }
        Expect::RecoveryWithin(d) => match r.mttr_s {
            Some(m) => (
                r.faults.iter().filter(|f| f.error.is_none()).all(|f| f.recovered_s.is_some_and(|x| x <= d.as_secs_f64())),
                format!("slowest recovery {m:.2}s"),
            ),
            None => (false, "no recovery observed".into()),
        },
        Expect::DetectWithin(d) => match r.mttd_s {
            Some(m) => (m <= d.as_secs_f64(), format!("detected after {m:.2}s")),
            None => (false, "not detected".into()),
        },
        Expect::AlertFires { rule, within } => match r.alerts.iter().filter(|a| &a.rule == rule).map(|a| a.fired_s - fault_start).find(|d| *d >= -1.0) {
            Some(d) => (within.is_none_or(|w| d <= w.as_secs_f64()), format!("{rule} fired {d:.2}s after the first fault")),
            None => (false, format!("{rule} did not fire")),
        },
        Expect::AlertSilent(rule) => {
            let fired = r.alerts.iter().any(|a| &a.rule == rule);
            (!fired, if fired { format!("{rule} fired") } else { format!("{rule} stayed silent") })
        }
        Expect::IncidentOpens { at_most, within } => {
            // An incident counts from when it opened at that severity, or was raised to it.
            let ok = |s: &str| at_most.is_none_or(|m| severity_rank(s) <= m);
            let found = r
                .incidents
                .iter()
                .filter_map(|i| {
                    let at = if ok(&i.severity) {
                        Some((i.severity.as_str(), i.opened_s))
                    } else {
                        i.raised.iter().find(|(s, _)| ok(s)).map(|(s, t)| (s.as_str(), *t))
                    };
                    at.map(|(s, t)| (i.id, s, t - fault_start))
                })
                .filter(|(_, _, d)| *d >= -1.0)
                .min_by(|a, b| a.2.total_cmp(&b.2));
            match found {
                Some((id, s, d)) => (within.is_none_or(|w| d <= w.as_secs_f64()), format!("#{id} {s} after {d:.2}s from the first fault")),
                None => (false, "no matching incident opened".into()),
            }
        }
    }
}
