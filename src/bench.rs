//! `vigil bench`: throughput measured in one process against the in-process mock cluster,
//! reported as ratios of runs made side by side (these machines are shared and noisy).
//!
//! `vigil bench quality|lineage`: the same input through the full pipeline with one feature
//! (data-quality measurement and alerting, or record-level lineage) off and on, alternating
//! rounds; reports the median throughput of each, their ratio, and raw librdkafka consume
//! throughput for scale. The lineage bench also reports the lineage stored per input byte.
//!
//! `vigil bench` (no subcommand): one dataset, then each mode on it — `raw` (a plain
//! librdkafka consumer, the ceiling), `pipeline` (the node with only its final checkpoint),
//! `pipeline_checkpoint` (every second), `pipeline_lineage`, `pipeline_quality` — with
//! records/s, the ratio to `raw`, peak RSS and CPU seconds per million records.
//!
//! `vigil bench --workload nexmark`: Nexmark people, auctions and bids, with modes `q1`,
//! `q5` and `q11` running those queries as written in examples/nexmark/node.toml.
//!
//! `vigil bench state`: what an incremental checkpoint writes after a fraction of the open
//! windows changed, against the full state, and how long a restore of that state takes.
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vigil_actors::generator::{EventGen, GenSpec};
use vigil_actors::nexmark::NexmarkGen;
use vigil_actors::node::Node;
use vigil_config::{Config, PipelineConfig, SourceFormat};
use vigil_runtime::embedded::EmbeddedBroker;
use vigil_runtime::kafka::{BatchConsumer, TrackedProducer};

/// `vigil bench` without a subcommand: every mode on one dataset.
#[derive(Args)]
pub(crate) struct ModesArgs {
    /// Records produced once and read by every mode.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Partitions of the bench topic. Default: 16, or as many more as the dataset needs (the
    /// mock keeps ~5 MiB per partition; the bench refuses a dataset that would not fit).
    #[arg(long)]
    partitions: Option<u32>,
    /// Modes, comma-separated. Default workload: raw, pipeline, pipeline_checkpoint,
    /// pipeline_lineage, pipeline_quality (default: the first three). Nexmark: raw, q1, q5,
    /// q11 (default: all).
    #[arg(long, value_delimiter = ',')]
    modes: Option<Vec<String>>,
    /// The records: the embedded default's payments and page views with its three
    /// aggregations, or Nexmark people, auctions and bids with queries q1, q5 and q11 as
    /// aggregations (examples/nexmark/node.toml).
    #[arg(long, value_enum, default_value = "default")]
    workload: Workload,
    /// CI-sized run: 200,000 records over 16 partitions (under a minute).
    #[arg(long)]
    quick: bool,
    /// Print exactly one JSON object.
    #[arg(long)]
    json: bool,
    /// Fail (exit 1) if `pipeline` reaches less than this fraction of `raw`'s records/s: a
    /// guard against large regressions (the test command uses it).
    #[arg(long)]
    min_ratio: Option<f64>,
    /// Pad each generated record's JSON value to about this many bytes (default: as
    /// generated, ~110 bytes of value).
    #[arg(long)]
    record_bytes: Option<usize>,
    /// Validate and Process shards of the pipeline modes (`pipeline.shards`; 0 = one per core).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Rate of the paced latency phase, as a fraction of the mode's measured records/s.
    /// Its producer runs in this process, on the same cores as the node.
    #[arg(long, default_value_t = 0.5, value_parser = paced_fraction)]
    paced_fraction: f64,
    /// Measure every mode's throughput this many times, the modes in turn each round, and
    /// report medians (ratios: of each round's own pair). This machine's load moves one
    /// run's figures by up to a third; the latency phase runs once, after the rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Add the mode `pipeline_variant`: `pipeline` with this setting (a configuration path
    /// and a TOML value, e.g. `pipeline.batch_max_records=500`; repeatable). It runs in
    /// turn with the other modes each round, on the same data: an A/B in one process,
    /// which this machine's noise would swamp across separate runs.
    #[arg(long = "variant", value_name = "PATH=VALUE")]
    variants: Vec<String>,
}

/// The mode `pipeline` with the `--variant` settings.
const VARIANT: &str = "pipeline_variant";

/// `--variant PATH=VALUE` arguments as (path, value) pairs, checked against the default
/// configuration so that a mistyped path fails before anything runs.
fn variant_settings(args: &[String]) -> Result<Vec<(String, String)>> {
    let pairs: Vec<(String, String)> = args
        .iter()
        .map(|a| match a.split_once('=') {
            Some((path, value)) if !path.trim().is_empty() => Ok((path.trim().to_string(), value.trim().to_string())),
            _ => Err(anyhow::anyhow!("--variant `{a}`: expected PATH=VALUE, e.g. pipeline.batch_max_records=500")),
        })
        .collect::<Result<_>>()?;
    apply_variant(&Config::default(), &pairs)?;
    Ok(pairs)
}

/// `cfg` with the `--variant` settings applied.
fn apply_variant(cfg: &Config, variant: &[(String, String)]) -> Result<Config> {
    cfg.with_settings(variant.iter().map(|(p, v)| (p.as_str(), v.as_str()))).map_err(|e| anyhow::anyhow!("--variant: {e}"))
}

/// Configure `mode` (see [`configure_mode`]); `pipeline_variant` then takes `variant`.
fn configure_mode_variant(cfg: &mut Config, mode: &str, shards: usize, nexmark: Option<&PipelineConfig>, variant: &[(String, String)]) -> Result<()> {
    configure_mode(cfg, mode, shards, nexmark);
    if mode == VARIANT {
        *cfg = apply_variant(cfg, variant)?;
    }
    Ok(())
}

/// What the bench's records are (`--workload`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(crate) enum Workload {
    /// Payments and page views (2 % malformed), the three default aggregations.
    Default,
    /// Nexmark people, auctions and bids; queries q1, q5, q11 (examples/nexmark/node.toml).
    Nexmark,
}

impl Workload {
    /// Modes this workload runs, the default ones first (`defaults` of them).
    fn modes(self) -> (&'static [&'static str], usize) {
        match self {
            Workload::Default => (&["raw", "pipeline", "pipeline_checkpoint", "pipeline_lineage", "pipeline_quality", VARIANT], 3),
            Workload::Nexmark => (&["raw", "q1", "q5", "q11"], 4),
        }
    }
}

/// The Nexmark queries as Vigil aggregations: the example configuration, measured as it
/// ships (the mode `qN` keeps the aggregations named `qN_...`).
const NEXMARK_CONFIG: &str = include_str!("../examples/nexmark/node.toml");

/// A generated record stream of either workload.
enum Records {
    Events(EventGen),
    Nexmark(NexmarkGen),
}

impl Records {
    /// The stream of `seed`, event times from `start_ms` on, 1 ms per `per_ms` records.
    fn new(workload: Workload, seed: u64, start_ms: i64, per_ms: u64) -> Self {
        match workload {
            Workload::Default => Records::Events(EventGen::new(GenSpec { seed, users: 500, bad_ratio: 0.02, start_ms, step_ms: 1 }).records_per_step(per_ms)),
            Workload::Nexmark => Records::Nexmark(NexmarkGen::new(seed, start_ms, 1).records_per_step(per_ms)),
        }
    }

    /// The next record: id, key and value (padded to about `record_bytes`).
    fn next(&mut self, record_bytes: Option<usize>) -> (String, String, Vec<u8>) {
        let (id, key, mut payload) = match self {
            Records::Events(g) => {
                let r = g.next_record();
                (r.id, r.key, r.payload)
            }
            Records::Nexmark(g) => {
                let r = g.next_record();
                (r.id, r.key, r.payload)
            }
        };
        pad(&mut payload, record_bytes);
        (id, key, payload)
    }
}

/// `--paced-fraction`: above 0, at most 1.
fn paced_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("`{s}` is not a fraction above 0 and at most 1 (e.g. 0.5)")),
    }
}

#[derive(Subcommand)]
pub(crate) enum BenchCmd {
    /// Cost of data-quality measurement and alerting: pipeline throughput with them off and on.
    Quality(BenchArgs),
    /// Cost of record-level lineage: throughput with it off and on, and its size per input byte.
    Lineage(BenchArgs),
    /// Cost of producer-signature checks: the same signed records with verification off and on.
    Signing(BenchArgs),
    /// Incremental checkpoints: bytes a checkpoint writes after a fraction of the open windows
    /// changed, against the full state's, and the time to restore that state.
    State(StateArgs),
}

#[derive(Args)]
pub(crate) struct StateArgs {
    /// Open windows.
    #[arg(long, default_value_t = 1_000_000)]
    windows: u64,
    /// Fraction of them changed between the two checkpoints.
    #[arg(long, default_value_t = 0.01)]
    changed: f64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn state_bench(a: &StateArgs) -> Result<ExitCode> {
    if a.windows == 0 || !(a.changed > 0.0 && a.changed <= 1.0) {
        bail!("--windows must be at least 1 and --changed in (0, 1]");
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-state-{}", std::process::id()));
    eprintln!("bench: {} open windows in {} ...", a.windows, dir.display());
    let result = vigil_actors::analytics::cost::measure(&dir, a.windows, a.changed);
    let _ = std::fs::remove_dir_all(&dir);
    let c = result?;
    if a.json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        println!("open windows             {:>12}", c.windows);
        println!("full checkpoint          {:>12} bytes in {:.2}s", c.full_bytes, c.full_checkpoint_secs);
        println!("after {:>6} changed      {:>12} bytes in {:.3}s  ({:.2}% of full)", c.changed, c.delta_bytes, c.delta_checkpoint_secs, c.ratio * 100.0);
        println!(
            "restore                  {:>12} windows in {:.2}s ({:.0} windows/s)",
            c.restored,
            c.restore_secs,
            c.restored as f64 / c.restore_secs.max(1e-9)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What a bench switches off and on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Feature {
    Quality,
    Lineage,
    Signing,
}

/// The bench's producer key (`vigil bench signing`).
const BENCH_SIGN: (&str, &[u8]) = ("bench", b"bench-signing-key");

impl Feature {
    fn name(self) -> &'static str {
        match self {
            Feature::Quality => "quality",
            Feature::Lineage => "lineage",
            Feature::Signing => "signing",
        }
    }
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Records per run.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Rounds; each runs the pipeline once with the feature off and once on.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Partitions of the source topic. Default: 16, or as many more as the dataset needs (the
    /// mock keeps ~5 MiB per partition; the bench refuses a dataset that would not fit).
    #[arg(long)]
    partitions: Option<u32>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

const TOPIC: &str = "bench-events";

/// Paced phase of the feature benches: this fraction of the feature-off median rate (below
/// the knee where the in-process producer and the node fill both cores, see
/// docs/performance.md).
const FEATURE_PACED_FRACTION: f64 = 0.3;

/// Average bytes a generated record takes in the log, from a sample: its value (padded to
/// `record_bytes`), the signature header when signed, and ~60 bytes of key, other headers
/// and framing.
fn sample_bytes(workload: Workload, record_bytes: Option<usize>, sign: Option<(&str, &[u8])>) -> u64 {
    let mut sample = Records::new(workload, 7, 0, 1);
    let total: u64 = (0..1000)
        .map(|_| {
            let (id, key, payload) = sample.next(record_bytes);
            let sig = sign.map_or(0, |(p, k)| vigil_actors::signing::sign(p, k, id.as_bytes(), key.as_bytes(), &payload, 0).len() + 16);
            (payload.len() + sig) as u64 + 60
        })
        .sum();
    total / 1000
}

/// Partitions for `records` of ~`avg` bytes: `requested`, or multiples of 8 (at least 16) of
/// up to ~2 MiB each. The mock cluster keeps ~5 MiB per partition: refuse a dataset it
/// would cut, rather than measure a consumer stalled short of the end.
fn dataset_partitions(records: u64, avg: u64, requested: Option<u32>) -> Result<u32> {
    let partitions = requested.unwrap_or_else(|| (records * avg).div_ceil(PARTITION_BYTES * 8).max(2) as u32 * 8);
    if partitions == 0 {
        bail!("--partitions must be at least 1");
    }
    let per_partition = records * avg / u64::from(partitions);
    if per_partition > 3 * 1024 * 1024 {
        bail!(
            "{records} records of ~{avg} bytes over {partitions} partitions is ~{} MiB per partition; the mock cluster keeps ~5 MiB: use more --partitions",
            per_partition / (1024 * 1024)
        );
    }
    Ok(partitions)
}

/// Keys dealt to partitions in turn as they first appear: records stay keyed (one user's
/// records in one partition, as Kafka producers write them), and partitions get as many
/// keys as they can evenly. With the producer's hash instead, 500 users over 168
/// partitions put up to 9 in one (3× the average), past the ~5 MiB the mock cluster keeps.
struct KeyedSpread {
    partitions: u32,
    of_key: HashMap<String, i32>,
}

impl KeyedSpread {
    fn new(partitions: u32) -> Self {
        Self { partitions: partitions.max(1), of_key: HashMap::new() }
    }

    /// The partition of `key`.
    fn partition(&mut self, key: &str) -> i32 {
        if let Some(p) = self.of_key.get(key) {
            return *p;
        }
        let p = (self.of_key.len() as u64 % u64::from(self.partitions)) as i32;
        self.of_key.insert(key.to_string(), p);
        p
    }
}

/// Records generated ahead of a paced phase, so that its producing side only produces:
/// generating them (formatting ids and JSON) cost as much CPU as producing them, on the
/// cores the node under test needs.
struct Generated {
    /// Every record's id, key and value, one after the other.
    bytes: Vec<u8>,
    /// Where each record's id, key and value end in `bytes`, and its partition.
    ends: Vec<([usize; 3], i32)>,
}

impl Generated {
    /// `n` records of `workload` (seed 11) to produce at `rate` per second: event times
    /// from now on, keeping pace with the wall clock (as a live source's do, so windows
    /// close as often as they would); values padded to about `record_bytes`, keys spread
    /// over `partitions` as [`KeyedSpread`] does.
    fn new(workload: Workload, record_bytes: Option<usize>, partitions: u32, (n, rate): (u64, f64)) -> Self {
        let mut g = Records::new(workload, 11, vigil_runtime::now_ms(), (rate / 1000.0).round() as u64);
        let mut spread = KeyedSpread::new(partitions);
        let mut set = Self { bytes: Vec::new(), ends: Vec::with_capacity(usize::try_from(n).unwrap_or(0)) };
        for _ in 0..n {
            let (id, key, payload) = g.next(record_bytes);
            let partition = spread.partition(&key);
            let mut ends = [0; 3];
            for (end, part) in ends.iter_mut().zip([id.as_bytes(), key.as_bytes(), &payload]) {
                set.bytes.extend_from_slice(part);
                *end = set.bytes.len();
            }
            set.ends.push((ends, partition));
        }
        set
    }

    /// Record `i`: id, key, value and partition.
    fn get(&self, i: usize) -> (&str, &str, &[u8], i32) {
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p].0[2]);
        let ([id, key, value], partition) = self.ends[i];
        let text = |a, b| std::str::from_utf8(&self.bytes[a..b]).unwrap_or_default();
        (text(start, id), text(id, key), &self.bytes[key..value], partition)
    }
}

/// Produce `n` generated JSON records of `workload` to the bench topic's `partitions` (a
/// [`KeyedSpread`]), each signed as `sign = (producer, key)` if given, then check that every
/// record is there; returns the bytes produced (keys, values and headers).
async fn fill(bootstrap: &str, (workload, partitions): (Workload, u32), n: u64, record_bytes: Option<usize>, sign: Option<(&str, &[u8])>) -> Result<u64> {
    // Large batches: the mock cluster finds a fetch's start by scanning a partition's batches,
    // so many small ones would make every mode pay for how the data was written.
    let mut kafka = vigil_config::KafkaConfig::default();
    kafka.properties.extend([("linger.ms", "200"), ("batch.num.messages", "10000"), ("batch.size", "262144")].map(|(k, v)| (k.to_string(), v.to_string())));
    let producer = TrackedProducer::new(bootstrap, &kafka)?;
    let mut g = Records::new(workload, 7, vigil_runtime::now_ms() - n as i64, 1);
    let mut bytes = 0u64;
    let mut spread = KeyedSpread::new(partitions);
    for _ in 0..n {
        let (id, key, payload) = g.next(record_bytes);
        let partition = Some(spread.partition(&key));
        bytes += vigil_actors::stages::produce_record(&producer, (TOPIC, partition), (&id, &key, &payload), Duration::from_secs(30), sign).await? as u64;
    }
    producer.flush_checked(Duration::from_secs(60), 0).await.context("not every bench record was acknowledged")?;
    tokio::task::block_in_place(|| check_kept(bootstrap, TOPIC, partitions, n))?;
    Ok(bytes)
}

/// Fail unless `topic`'s `partitions` hold exactly `n` records from offset 0: the mock
/// cluster moves a partition's log start past what it does not keep, without an error.
fn check_kept(bootstrap: &str, topic: &str, partitions: u32, n: u64) -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::config::ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let mut kept = 0;
    for p in 0..partitions as i32 {
        let (low, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10)).with_context(|| format!("offsets of {topic}/{p}"))?;
        if low > 0 {
            bail!("the mock cluster dropped the first {low} records of {topic}/{p} (it keeps ~5 MiB per partition): use more --partitions or fewer --records");
        }
        kept += high;
    }
    if u64::try_from(kept).ok() != Some(n) {
        bail!("{topic} holds {kept} records, not the {n} produced");
    }
    Ok(())
}

/// Pad a JSON object to about `to` bytes with a `"pad"` field (values that are not objects,
/// the malformed ones, are left alone).
fn pad(payload: &mut Vec<u8>, to: Option<usize>) {
    let Some(to) = to else { return };
    if payload.last() != Some(&b'}') || payload.len() + 10 > to {
        return;
    }
    payload.pop();
    payload.extend_from_slice(b",\"pad\":\"");
    payload.resize(to - 2, b'x');
    payload.extend_from_slice(b"\"}");
}

/// Raw consume: records per second librdkafka alone delivers from the topic.
async fn raw_consume(bootstrap: &str, n: u64) -> Result<f64> {
    let kafka = vigil_config::KafkaConfig { group_id: format!("bench-raw-{}", std::process::id()), ..vigil_config::KafkaConfig::default() };
    let (b, k) = (bootstrap.to_string(), kafka.clone());
    let mut c = tokio::task::spawn_blocking(move || BatchConsumer::new(&b, &k, &[TOPIC.to_string()], Duration::from_secs(30))).await??;
    c.assign_from(&Default::default())?;
    let (mut got, mut first) = (0u64, None);
    let deadline = Instant::now() + Duration::from_secs(300);
    while got < n {
        if Instant::now() > deadline {
            bail!("raw consume read {got} of {n} records in 300 s");
        }
        let (batches, _) = c.poll(10_000, Duration::from_millis(100)).await?;
        let k: usize = batches.iter().map(|b| b.len()).sum();
        if k > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        got += k as u64;
    }
    Ok(n as f64 / first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(1.0).max(1e-6))
}

/// One pipeline run over the topic with `feature` on or off: records per second from the
/// first record ingested to the last one processed or dead-lettered, and the bytes of
/// lineage stored once the node has stopped (as written, and on disk after compression).
async fn pipeline_run(bootstrap: &str, n: u64, feature: Feature, on: bool, round: u32) -> Result<Run> {
    let tag = format!("{}-{round}-{}-{on}", std::process::id(), feature.name());
    measure_pipeline(bootstrap, n, &tag, |cfg| {
        configure_feature(cfg, feature, on);
        Ok(())
    })
    .await
}

/// Switch `feature` on or off in a bench node's configuration.
fn configure_feature(cfg: &mut Config, feature: Feature, on: bool) {
    match feature {
        Feature::Quality => cfg.quality.enabled = on,
        Feature::Lineage => cfg.lineage.enabled = on,
        Feature::Signing => {
            if on {
                let keys = [(BENCH_SIGN.0.to_string(), vigil_config::Secret::Inline(String::from_utf8_lossy(BENCH_SIGN.1).into_owned()))].into();
                cfg.pipeline.sources[0].signing = Some(vigil_config::SigningConfig {
                    keys,
                    max_skew: Duration::from_secs(3600),
                    replay_window: Duration::from_secs(3600),
                    replay_capacity: 10_000_000,
                });
            }
        }
    }
}

/// One run of mode `mode` (see [`configure_mode`]).
async fn pipeline_mode(
    bootstrap: &str,
    n: u64,
    (mode, round): (&str, u32),
    shards: usize,
    nexmark: Option<&PipelineConfig>,
    variant: &[(String, String)],
) -> Result<Run> {
    // A directory and group of its own per round: no run shares state with another (a node
    // resumes from its store's offsets, and each starts with an empty store).
    let tag = format!("{}-{mode}-{round}", std::process::id());
    measure_pipeline(bootstrap, n, &tag, |cfg| configure_mode_variant(cfg, mode, shards, nexmark, variant)).await
}

/// What one node run over the bench topic measured.
struct Run {
    /// Records per second from the first record ingested.
    rate: f64,
    /// Records dead-lettered (invalid, or late for every window).
    dead_lettered: u64,
    /// Lineage bytes stored: as written, and on disk.
    lineage: (u64, u64),
}

/// Run a node over the bench topic, configured by `configure`, until every record is
/// processed or dead-lettered.
async fn measure_pipeline(bootstrap: &str, n: u64, tag: &str, configure: impl FnOnce(&mut Config) -> Result<()>) -> Result<Run> {
    let (cfg, dir) = bench_config(bootstrap, tag, TOPIC, configure)?;
    let node = Node::start(cfg).await.context("bench node failed to start")?;
    // Not the whole context: a stopping node waits until it alone holds that.
    let (stats, store) = (node.ctx.stats.clone(), node.ctx.store.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(node.run_until(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = None;
    let (rate, dead_lettered) = loop {
        let s = stats.snapshot();
        if first.is_none() && s.ingested > 0 {
            first = Some((Instant::now(), s.ingested));
        }
        if s.processed + s.dlq >= n {
            let (t0, _) = first.unwrap_or((Instant::now(), 0));
            break (n as f64 / t0.elapsed().as_secs_f64().max(1e-6), s.dlq);
        }
        if Instant::now() > deadline {
            let _ = stop.send(());
            bail!("pipeline processed {} of {n} records in 600 s", s.processed + s.dlq);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let _ = stop.send(());
    let _ = running.await;
    let (_, logical, _, _) = vigil_actors::lineage::retention::totals(&store).context("lineage retained")?;
    let disk = store.disk_bytes("lineage").context("size of the lineage store")?;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Run { rate, dead_lettered, lineage: (logical, disk) })
}

/// A node configuration reading `topic` (plain JSON) with its data in a fresh temporary
/// directory (returned, to be removed afterwards), adjusted by `configure`.
fn bench_config(bootstrap: &str, tag: &str, topic: &str, configure: impl FnOnce(&mut Config) -> Result<()>) -> Result<(Config, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = Config::default();
    cfg.node.data_dir = PathBuf::from(&dir);
    cfg.kafka.bootstrap = bootstrap.to_string();
    cfg.kafka.group_id = format!("bench-{tag}");
    cfg.generator.enabled = Some(false);
    cfg.observability.metrics_addr = "127.0.0.1:0".into();
    cfg.observability.admin_addr = "127.0.0.1:0".into();
    // The process also holds the mock cluster and its dataset, which the node's resident
    // size would count against its own limit.
    cfg.node.memory_limit = vigil_config::ByteSize(64 << 30);
    vigil_runtime::embedded::tune_for_mock(&mut cfg.kafka);
    configure(&mut cfg)?;
    if let Some(s) = cfg.pipeline.sources.first_mut() {
        s.topic = topic.into();
        s.format = SourceFormat::Json;
    }
    let problems = cfg.validate();
    if !problems.is_empty() {
        bail!("bench configuration: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
    }
    Ok((cfg, dir))
}

/// The start of the paced phase left out of its latency figures.
const PACED_WARM_UP: Duration = Duration::from_secs(1);

/// What a paced phase measures after its warm-up, at least: a mode's paced topic gets the
/// partitions this takes (as a dataset of that many records would).
const PACED_MEASURED: Duration = Duration::from_secs(2);

/// Bytes the bench puts in a partition of any of its topics (the mock cluster keeps ~5 MiB).
const PARTITION_BYTES: u64 = 2 * 1024 * 1024;

/// Most partitions of a paced topic.
const PACED_PARTITIONS_MAX: u32 = 512;

/// Topic the paced (latency) phase of `mode` reads.
fn paced_topic(mode: &str) -> String {
    format!("bench-paced-{mode}")
}

/// The records of a paced phase: the workload, the padding of each value, the producer key
/// signing them (if any), and the partitions of the paced topic they are spread over.
type PacedRecords<'a> = (Workload, Option<usize>, Option<(&'a str, &'a [u8])>, u32);

/// The latency phase of `mode`: a node configured by `configure` reads a fresh topic while
/// `records` generated records are written to it at `rate` per second (event time =
/// wall-clock time); returns the p50 and p99 of produce → processed latency in ms.
async fn paced_latency(
    bootstrap: &str,
    mode: &str,
    configure: impl FnOnce(&mut Config) -> Result<()>,
    (workload, record_bytes, sign, partitions): PacedRecords<'_>,
    rate: f64,
    records: u64,
) -> Result<(i64, i64)> {
    let tag = format!("{}-{mode}-paced", std::process::id());
    let topic = paced_topic(mode);
    let (cfg, dir) = bench_config(bootstrap, &tag, &topic, configure)?;
    let node = Node::start(cfg).await.context("bench node failed to start")?;
    let stats = node.ctx.stats.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(node.run_until(async move {
        let _ = stopped.await;
    }));
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stats.is_ready() {
            if Instant::now() > deadline {
                bail!("the {mode} node was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stats.latency.reset();
        let producer = TrackedProducer::new(bootstrap, &vigil_config::KafkaConfig::default())?;
        let set = tokio::task::block_in_place(|| Generated::new(workload, record_bytes, partitions, (records, rate)));
        let started = Instant::now();
        let mut sent = 0u64;
        let mut warm = false;
        while sent < records {
            // The first second is warm-up: the consumer's first fetches after start-up (up to
            // ~0.5 s, even at 5 % of the rate) are start-up latency, not steady-state latency.
            if !warm && started.elapsed() >= PACED_WARM_UP {
                stats.latency.reset();
                warm = true;
            }
            let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(records);
            while sent < due {
                let (id, key, payload, partition) = set.get(sent as usize);
                vigil_actors::stages::produce_record(&producer, (&topic, Some(partition)), (id, key, payload), Duration::from_secs(30), sign).await?;
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        producer.flush_checked(Duration::from_secs(60), 0).await.context("not every paced record was acknowledged")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = stats.snapshot();
            if s.processed + s.dlq >= records {
                break;
            }
            if Instant::now() > deadline {
                bail!("the {mode} node processed {} of {records} paced records in 120 s", s.processed + s.dlq);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let q = |q: f64| stats.latency.quantile(q).unwrap_or(0);
        Ok((q(0.5), q(0.99)))
    }
    .await;
    let _ = stop.send(());
    let _ = running.await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// One mode's throughput runs (`--rounds`).
#[derive(Default)]
struct Runs {
    rates: Vec<f64>,
    /// Of each round's run to that round's `raw` (when `raw` ran before it).
    ratios: Vec<f64>,
    /// CPU seconds of each run.
    cpu_s: Vec<f64>,
    /// Peak resident size of the first round's run (later rounds' start from what the
    /// allocator kept of earlier ones, ~150 MiB more).
    peak: u64,
    dead_lettered: Option<u64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Configure a pipeline mode: what each switches on over the bare pipeline (quality,
/// lineage, alerts and incidents off; checkpoints every hour, i.e. only the final one).
/// With `nexmark` (the parsed [`NEXMARK_CONFIG`]), mode `qN` runs its fields, event time
/// and the aggregations named `qN_...`.
fn configure_mode(cfg: &mut Config, mode: &str, shards: usize, nexmark: Option<&PipelineConfig>) {
    if let Some(nx) = nexmark {
        cfg.pipeline.fields = nx.fields.clone();
        cfg.pipeline.event_time = nx.event_time.clone();
        let prefix = format!("{mode}_");
        cfg.pipeline.aggregations = nx.aggregations.iter().filter(|a| a.name.starts_with(&prefix)).cloned().collect();
    }
    cfg.pipeline.shards = shards;
    cfg.quality.enabled = mode == "pipeline_quality";
    cfg.alerts.enabled = false;
    cfg.incidents.enabled = false;
    cfg.lineage.enabled = mode == "pipeline_lineage";
    cfg.checkpoint.interval = if mode == "pipeline" || mode == VARIANT { Duration::from_secs(3600) } else { Duration::from_secs(1) };
}

/// Resource use of this process: CPU seconds (user + system) so far and peak RSS bytes.
fn usage() -> (f64, u64) {
    let cpu = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0);
    (cpu, vigil_runtime::metrics::peak_resident_bytes().unwrap_or(0))
}

/// Reset the peak RSS to the current RSS (Linux `clear_refs` 5), so each mode reports its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Raw librdkafka consume of the whole topic (a plain consumer, payloads only touched): the
/// ceiling. Records per second from the first record to the last.
fn raw_librdkafka(bootstrap: &str, n: u64, partitions: u32) -> Result<f64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let c: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-raw-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // The node's re-fetch delay for a full queue. librdkafka's default (1 s) stalls even
        // a plain loop: with it, this consumer read 0.65M or 2M records/s from run to run.
        .set("fetch.queue.backoff.ms", vigil_runtime::kafka::FETCH_QUEUE_BACKOFF_MS.to_string())
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(TOPIC, p, rdkafka::Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let (mut got, mut bytes, mut first) = (0u64, 0usize, None);
    let mut last = Instant::now();
    while got < n {
        if last.elapsed() > Duration::from_secs(30) {
            bail!("raw consume read {got} of {n} records, then nothing for 30 s (did the mock cluster drop records?)");
        }
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m?;
            last = Instant::now();
            bytes += m.payload().map_or(0, <[u8]>::len);
            first.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    std::hint::black_box(bytes);
    Ok(n as f64 / first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(1.0).max(1e-6))
}

/// Every mode on one dataset, side by side.
async fn modes(a: ModesArgs) -> Result<ExitCode> {
    let records = if a.quick { 200_000 } else { a.records };
    let (known, defaults) = a.workload.modes();
    let mut modes: Vec<String> = a.modes.clone().unwrap_or_else(|| known[..defaults].iter().map(|m| m.to_string()).collect());
    for m in &modes {
        if !known.contains(&m.as_str()) {
            bail!("unknown mode `{m}` for the {:?} workload; modes: {}", a.workload, known.join(", "));
        }
    }
    let variant = variant_settings(&a.variants)?;
    let has_variant = modes.iter().any(|m| m == VARIANT);
    match (variant.is_empty(), has_variant) {
        (true, true) => bail!("mode `{VARIANT}` is `pipeline` with the --variant settings: give at least one --variant PATH=VALUE"),
        (false, _) if a.workload != Workload::Default => bail!("--variant applies to the default workload's `{VARIANT}` mode"),
        (false, false) => modes.push(VARIANT.to_string()),
        _ => {}
    }
    if records == 0 {
        bail!("--records must be at least 1");
    }
    let nexmark = match a.workload {
        Workload::Nexmark => Some(Config::from_toml_str(NEXMARK_CONFIG, std::iter::empty()).context("examples/nexmark/node.toml")?.pipeline),
        Workload::Default => None,
    };
    let avg = sample_bytes(a.workload, a.record_bytes, None);
    let partitions = dataset_partitions(records, avg, a.partitions.or(a.quick.then_some(16)))?;
    let topics: Vec<String> = [TOPIC, "vigil-output", "vigil-dlq"].iter().map(|s| s.to_string()).collect();
    let broker = EmbeddedBroker::start(partitions, &topics, None).context("cannot start the mock cluster")?;
    let bootstrap = broker.bootstrap().to_string();
    eprintln!("bench: producing {records} records (~{avg} bytes) to {TOPIC} ({partitions} partitions)...");
    fill(&bootstrap, (a.workload, partitions), records, a.record_bytes, None).await?;
    // Throughput, the modes in turn, `rounds` times.
    let mut runs: Vec<Runs> = modes.iter().map(|_| Runs::default()).collect();
    for round in 1..=a.rounds {
        let of = if a.rounds > 1 { format!("round {round}/{}: ", a.rounds) } else { String::new() };
        let mut raw_rate = None;
        for (mode, runs) in modes.iter().zip(&mut runs) {
            eprintln!("bench: {of}{mode} ...");
            reset_peak_rss();
            let (cpu0, _) = usage();
            let (rate, dead_lettered) = if mode == "raw" {
                let b = bootstrap.clone();
                let r = tokio::task::spawn_blocking(move || raw_librdkafka(&b, records, partitions)).await??;
                raw_rate = Some(r);
                (r, None)
            } else {
                let run = pipeline_mode(&bootstrap, records, (mode, round), a.shards, nexmark.as_ref(), &variant).await?;
                // Nexmark events are all valid and in order: a dead letter means the query's
                // configuration rejects them, and the figure would measure the DLQ instead.
                if nexmark.is_some() && run.dead_lettered > 0 {
                    bail!("{mode}: {} of {records} Nexmark events were dead-lettered (see examples/nexmark/node.toml)", run.dead_lettered);
                }
                (run.rate, Some(run.dead_lettered))
            };
            let (cpu1, peak) = usage();
            // The next run's peak resident size starts from what is live, not from what the
            // allocator kept of this one.
            vigil_actors::memory::release_free_memory();
            let ratio = raw_rate.map(|r| rate / r.max(1e-9));
            eprintln!("bench: {of}{mode}: {rate:.0} records/s{}", ratio.map(|r| format!(" ({r:.2} of raw)")).unwrap_or_default());
            runs.rates.push(rate);
            runs.ratios.extend(ratio);
            runs.cpu_s.push(cpu1 - cpu0);
            if round == 1 {
                runs.peak = peak;
            }
            runs.dead_lettered = dead_lettered;
        }
    }
    let mut results = Vec::new();
    for (mode, runs) in modes.iter().zip(runs) {
        let rate = median(runs.rates.clone());
        let ratio = (!runs.ratios.is_empty()).then(|| median(runs.ratios));
        let cpu = median(runs.cpu_s);
        // Latency at half the measured rate, on a cluster of its own (the dataset's keeps
        // only the dataset), with enough partitions (≤ 2 MiB each) for the warm-up and at
        // least PACED_MEASURED after it.
        let latency = if mode == "raw" {
            None
        } else {
            let paced_rate = (rate * a.paced_fraction).max(1.0);
            // 4 s (--quick) or 10 s of records, no more than the dataset unless that is under
            // the warm-up and PACED_MEASURED.
            let span = (paced_rate * (PACED_WARM_UP + PACED_MEASURED).as_secs_f64()) as u64;
            let planned = ((paced_rate * if a.quick { 4.0 } else { 10.0 }) as u64).min(records.max(span)).max(1);
            // A live topic: as many partitions as the phase's first seconds need, not the
            // dataset's (which only the mock cluster's retention sets); fewer partitions
            // make larger batches, for the producer as for the node.
            let paced_partitions = dataset_partitions(span, avg, None)?.min(PACED_PARTITIONS_MAX);
            let paced = planned.min(PARTITION_BYTES * u64::from(paced_partitions) / avg);
            let cluster = EmbeddedBroker::start(paced_partitions, &[paced_topic(mode), "vigil-output".into(), "vigil-dlq".into()], None)
                .context("cannot start the paced phase's mock cluster")?;
            eprintln!("bench: {mode}: latency at {paced_rate:.0} records/s ({paced} records, {paced_partitions} partitions) ...");
            let configure = |cfg: &mut Config| configure_mode_variant(cfg, mode, a.shards, nexmark.as_ref(), &variant);
            let (p50, p99) =
                paced_latency(cluster.bootstrap(), mode, configure, (a.workload, a.record_bytes, None, paced_partitions), paced_rate, paced).await?;
            drop(cluster);
            // The next mode's peak resident size starts from here: without what the phase's
            // cluster held, which the allocator would otherwise keep.
            vigil_actors::memory::release_free_memory();
            eprintln!("bench: {mode}: produce → processed p50 {p50} ms, p99 {p99} ms");
            Some((p50, p99))
        };
        let (peak, dead_lettered, rates) = (runs.peak, runs.dead_lettered, runs.rates);
        results.push(serde_json::json!({
            "mode": mode, "records_per_sec": rate, "ratio_to_raw": ratio,
            "p50_ms": latency.map(|l| l.0), "p99_ms": latency.map(|l| l.1),
            "peak_rss_bytes": peak, "cpu_s_per_million": cpu / records as f64 * 1e6,
            "records_per_cpu_sec": records as f64 / cpu.max(1e-9), "dead_lettered": dead_lettered,
            "records_per_sec_runs": rates,
        }));
    }
    let shards = vigil_config::PipelineConfig { shards: a.shards, ..Default::default() }.shard_count();
    let record_bytes = avg - 60;
    let machine = serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "os": std::env::consts::OS, "arch": std::env::consts::ARCH, "shards": shards, "allocator": crate::ALLOCATOR,
    });
    let variant_json: serde_json::Map<String, serde_json::Value> = variant.iter().map(|(p, v)| (p.clone(), serde_json::Value::String(v.clone()))).collect();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"results": results, "workload": format!("{:?}", a.workload).to_lowercase(), "records": records, "record_bytes": record_bytes, "partitions": partitions, "paced_fraction": a.paced_fraction, "rounds": a.rounds, "machine": machine, "variant": variant_json})
        );
    } else {
        println!(
            "{records} {} records of ~{record_bytes} bytes over {partitions} partitions, {} cores, {shards} shards, {}; latency at {} of each mode's rate{}",
            if a.workload == Workload::Nexmark { "Nexmark" } else { "generated" },
            machine["cores"],
            crate::ALLOCATOR,
            a.paced_fraction,
            if a.rounds > 1 { format!("; medians of {} rounds", a.rounds) } else { String::new() }
        );
        println!(
            "{:<22} {:>12} {:>9} {:>8} {:>8} {:>10} {:>12} {:>12}",
            "MODE", "RECORDS/S", "OF RAW", "P50 MS", "P99 MS", "PEAK RSS", "CPU S / 1M", "REC/CPU-S"
        );
        for r in &results {
            let ms = |k: &str| r[k].as_i64().map(|x| x.to_string()).unwrap_or_else(|| "-".into());
            println!(
                "{:<22} {:>12.0} {:>9} {:>8} {:>8} {:>6} MiB {:>12.2} {:>12.0}",
                r["mode"].as_str().unwrap_or(""),
                r["records_per_sec"].as_f64().unwrap_or(0.0),
                r["ratio_to_raw"].as_f64().map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
                ms("p50_ms"),
                ms("p99_ms"),
                r["peak_rss_bytes"].as_u64().unwrap_or(0) / (1024 * 1024),
                r["cpu_s_per_million"].as_f64().unwrap_or(0.0),
                r["records_per_cpu_sec"].as_f64().unwrap_or(0.0),
            );
        }
        if !variant.is_empty() {
            let set: Vec<String> = variant.iter().map(|(p, v)| format!("{p}={v}")).collect();
            println!("{VARIANT}: pipeline with {}", set.join(", "));
        }
    }
    drop(broker);
    if let Some(min) = a.min_ratio {
        let ratio = results.iter().find(|r| r["mode"] == "pipeline").and_then(|r| r["ratio_to_raw"].as_f64());
        match ratio {
            Some(r) if r >= min => eprintln!("bench: pipeline / raw = {r:.3} ≥ {min}"),
            Some(r) => {
                eprintln!("bench: pipeline / raw = {r:.3} is below the guard {min}: a large throughput regression");
                return Ok(ExitCode::FAILURE);
            }
            None => bail!("--min-ratio needs the raw and pipeline modes"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `vigil bench` (every mode) or `vigil bench <subcommand>`.
pub(crate) async fn run_bench(cmd: Option<BenchCmd>, args: ModesArgs) -> Result<ExitCode> {
    match cmd {
        Some(c) => run(c).await,
        None => modes(args).await,
    }
}

/// `vigil bench ...`
pub(crate) async fn run(cmd: BenchCmd) -> Result<ExitCode> {
    let (feature, a) = match cmd {
        BenchCmd::Quality(a) => (Feature::Quality, a),
        BenchCmd::Lineage(a) => (Feature::Lineage, a),
        BenchCmd::Signing(a) => (Feature::Signing, a),
        BenchCmd::State(a) => return tokio::task::block_in_place(|| state_bench(&a)),
    };
    if a.records == 0 || a.rounds == 0 {
        bail!("--records and --rounds must be at least 1");
    }
    let name = feature.name();
    let sign = (feature == Feature::Signing).then_some(BENCH_SIGN);
    let partitions = dataset_partitions(a.records, sample_bytes(Workload::Default, None, sign), a.partitions)?;
    let paced_modes = [format!("{name}-off"), format!("{name}-on")];
    let mut topics: Vec<String> = [TOPIC, "vigil-output", "vigil-dlq"].iter().map(|s| s.to_string()).collect();
    topics.extend(paced_modes.iter().map(|m| paced_topic(m)));
    let broker = EmbeddedBroker::start(partitions, &topics, None).context("cannot start the mock cluster")?;
    let bootstrap = broker.bootstrap().to_string();
    eprintln!("bench: producing {} records to {TOPIC} ({partitions} partitions)...", a.records);
    let input_bytes = fill(&bootstrap, (Workload::Default, partitions), a.records, None, sign).await?;
    let raw = raw_consume(&bootstrap, a.records).await?;
    eprintln!("bench: raw librdkafka consume {raw:.0} records/s");
    let (mut off, mut on, mut stored, mut disk) = (Vec::new(), Vec::new(), 0u64, 0u64);
    // CPU µs per record of each run (the whole process: the mock cluster serves both alike).
    let (mut cpu_off, mut cpu_on) = (Vec::new(), Vec::new());
    let mut rejected = None;
    for round in 0..a.rounds {
        // Alternate which goes first, so drift in machine load hits both alike.
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for enabled in order {
            let (cpu0, _) = usage();
            let Run { rate: r, lineage: (lineage_bytes, lineage_disk), dead_lettered } = pipeline_run(&bootstrap, a.records, feature, enabled, round).await?;
            // Every run reads the same records: only the malformed ones are set aside, by
            // either node. With signing, more would be valid signed records quarantined.
            match rejected {
                None => rejected = Some(dead_lettered),
                Some(before) if before != dead_lettered => bail!(
                    "round {} with {name} {}: {dead_lettered} records set aside, {before} in an earlier run of the same records",
                    round + 1,
                    if enabled { "on" } else { "off" }
                ),
                Some(_) => {}
            }
            let cpu = (usage().0 - cpu0) * 1e6 / a.records as f64;
            eprintln!("bench: round {} {name} {}: {r:.0} records/s, {cpu:.2} CPU µs/record", round + 1, if enabled { "on " } else { "off" });
            if enabled {
                on.push(r);
                cpu_on.push(cpu);
                stored = stored.max(lineage_bytes);
                disk = disk.max(lineage_disk);
            } else {
                off.push(r);
                cpu_off.push(cpu);
            }
        }
    }
    let (m_off, m_on) = (median(off.clone()), median(on.clone()));
    let (c_off, c_on) = (median(cpu_off), median(cpu_on));
    // Below saturation: the same records at FEATURE_PACED_FRACTION of the feature-off
    // rate, to either node. A feature that keeps up passes every record at the input's
    // rate, and latency shows the rest of its cost.
    let paced_rate = (m_off * FEATURE_PACED_FRACTION).max(1.0);
    let fits = PARTITION_BYTES * u64::from(partitions) / sample_bytes(Workload::Default, None, sign).max(1);
    let paced = ((paced_rate * 6.0) as u64).clamp(1, fits);
    let mut latency = Vec::new();
    for (enabled, mode) in [false, true].into_iter().zip(&paced_modes) {
        eprintln!("bench: {name} {}: latency at {paced_rate:.0} records/s ({paced} records) ...", if enabled { "on " } else { "off" });
        let configure = |cfg: &mut Config| {
            configure_feature(cfg, feature, enabled);
            Ok(())
        };
        let (p50, p99) = paced_latency(&bootstrap, mode, configure, (Workload::Default, None, sign, partitions), paced_rate, paced).await?;
        latency.push((p50, p99));
    }
    let [(p50_off, p99_off), (p50_on, p99_on)] = [latency[0], latency[1]];
    let ratio = if m_off > 0.0 { m_on / m_off } else { 0.0 };
    let per_input = stored as f64 / input_bytes.max(1) as f64;
    let disk_per_input = disk as f64 / input_bytes.max(1) as f64;
    if a.json {
        let mut v = serde_json::json!({"bench": name, "records": a.records, "rounds": a.rounds, "partitions": partitions,
            "raw_consume_per_sec": raw, "off_per_sec": off, "on_per_sec": on,
            "median_off_per_sec": m_off, "median_on_per_sec": m_on, "on_over_off": ratio, "overhead": 1.0 - ratio,
            "off_over_raw": m_off / raw.max(1e-9), "on_over_raw": m_on / raw.max(1e-9),
            "median_off_cpu_us_per_record": c_off, "median_on_cpu_us_per_record": c_on,
            "paced_per_sec": paced_rate, "paced_records": paced, "paced_off_p50_ms": p50_off, "paced_off_p99_ms": p99_off,
            "paced_on_p50_ms": p50_on, "paced_on_p99_ms": p99_on, "set_aside_per_run": rejected});
        if feature == Feature::Lineage {
            v["input_bytes"] = input_bytes.into();
            v["lineage_bytes"] = stored.into();
            v["lineage_over_input"] = per_input.into();
            v["lineage_disk_bytes"] = disk.into();
            v["lineage_disk_over_input"] = disk_per_input.into();
        }
        println!("{v}");
    } else {
        println!("records per run      {}", a.records);
        println!("raw consume          {raw:>10.0} records/s");
        println!("{name:<7} off (median) {m_off:>10.0} records/s  ({:.2} of raw)", m_off / raw.max(1e-9));
        println!("{name:<7} on  (median) {m_on:>10.0} records/s  ({:.2} of raw)", m_on / raw.max(1e-9));
        println!("on / off             {ratio:>10.3}  ({name} costs {:.1}% of throughput)", (1.0 - ratio) * 100.0);
        println!("CPU per record       {c_off:>10.2} µs off, {c_on:.2} µs on (medians; {:+.2} µs)", c_on - c_off);
        println!("set aside            {:>10} records in every run, on and off (the malformed ones)", rejected.unwrap_or(0));
        println!(
            "paced {paced_rate:>10.0} records/s: every record processed; p50/p99 {p50_off}/{p99_off} ms off, {p50_on}/{p99_on} ms on ({:.0} % of the off rate, {paced} records)",
            FEATURE_PACED_FRACTION * 100.0
        );
        if feature == Feature::Lineage {
            println!("lineage written      {stored:>10} bytes for {input_bytes} input bytes ({:.2}%)", per_input * 100.0);
            println!("lineage on disk      {disk:>10} bytes, LZ4-compressed ({:.2}% of input)", disk_per_input * 100.0);
        }
    }
    drop(broker);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_nexmark_mode_runs_its_query_from_the_example() {
        let nx = match Config::from_toml_str(NEXMARK_CONFIG, std::iter::empty()) {
            Ok(c) => c.pipeline,
            Err(e) => panic!("examples/nexmark/node.toml: {e}"),
        };
        let (modes, _) = Workload::Nexmark.modes();
        for (mode, query) in modes.iter().skip(1).zip(["q1_bids", "q5_hot_items", "q11_user_sessions"]) {
            let mut cfg = Config::default();
            configure_mode(&mut cfg, mode, 0, Some(&nx));
            let names: Vec<&str> = cfg.pipeline.aggregations.iter().map(|a| a.name.as_str()).collect();
            assert_eq!(names, [query], "mode {mode}");
            assert_eq!(cfg.pipeline.event_time.field, "ts");
            assert!(cfg.validate().is_empty(), "mode {mode}: {:?}", cfg.validate());
        }
        // Every kind of generated event passes the example's field rules (the bench also
        // refuses a run with dead letters).
        let mut cfg = Config::default();
        configure_mode(&mut cfg, "q5", 0, Some(&nx));
        let (rules, an) = match vigil_actors::validate::Rules::compile(&cfg.pipeline.fields) {
            Ok(r) => (r, vigil_actors::analytics::spec::Analytics::compile(&cfg.pipeline)),
            Err(e) => panic!("rules: {e:?}"),
        };
        let mut g = Records::new(Workload::Nexmark, 1, 1_700_000_000_000, 1);
        let payloads: Vec<Vec<u8>> = (0..100).map(|_| g.next(None).2).collect();
        let mut table = vigil_actors::analytics::spec::FieldTable::new(an.fields.len());
        for (i, payload) in payloads.iter().enumerate() {
            let fields = vigil_actors::validate::JsonFields::parse(payload).unwrap_or_else(|e| panic!("event {i}: {e:?}"));
            if let Err(r) = rules.apply_into(&vigil_actors::validate::Decoded::Fields(fields), &an, &mut table) {
                panic!("event {i} ({}) rejected: {r:?}", String::from_utf8_lossy(payload));
            }
        }
    }

    #[test]
    fn datasets_get_partitions_that_hold_them_or_are_refused() {
        // Default: at least 16, more in multiples of 8 as the data grows (~2 MiB each).
        assert_eq!(dataset_partitions(200_000, 170, None).ok(), Some(24));
        assert_eq!(dataset_partitions(1_000, 170, None).ok(), Some(16));
        // Signed records are larger: the same count needs more partitions.
        let (plain, signed) = (sample_bytes(Workload::Default, None, None), sample_bytes(Workload::Default, None, Some(BENCH_SIGN)));
        assert!(signed > plain + 60, "{signed} vs {plain}");
        assert!(dataset_partitions(500_000, signed, None).is_ok_and(|p| 500_000 * signed / u64::from(p) <= 3 << 20));
        // Asked for too few: refused with the figures, not a consumer stalled short of the end.
        let e = dataset_partitions(500_000, signed, Some(8)).map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(e.contains("over 8 partitions") && e.contains("use more --partitions"), "{e}");
    }
}
