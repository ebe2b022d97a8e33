//! What the stages share: the node context (config, store, producer, counters), the
//! in-band messages (batches, barriers, credits), the stage registry, and the DLQ writer.
use crate::alerting::actor::AlertMsg;
use crate::generator::Wire;
use crate::incidents::actor::IncidentMsg;
use crate::journal::Journal;
use crate::quality::actor::QualityMsg;
use crate::quality::report::DqReport;
use crate::quality::tracker::BatchQuality;
use crate::registry::resolver::Resolver;
use crate::registry::Registry;
use crate::validate::{Rules, SchemaInfo};
use ractor::ActorRef;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use vigil_config::{AlertsConfig, Config};
use vigil_runtime::envelope::{EnvelopeRef, PartitionBatch, TopicPartition};
use vigil_runtime::kafka::{OutRecord, TrackedProducer};
use vigil_runtime::stats::{NodeStats, Stage};
use vigil_runtime::store::Store;

/// Names of the supervised stages, as they appear in `vigil tree`, metrics and
/// `vigil chaos panic`.
pub const STAGES: [&str; 5] = ["ingest", "validate", "process", "sink", "generator"];

/// Every actor a panic can be injected into: the stages and the monitors beside them.
pub const ACTORS: [&str; 9] = ["ingest", "validate", "process", "sink", "generator", "quality", "alerting", "incidents", "lineage"];

/// A checkpoint barrier travelling with the data (Chandy–Lamport / Flink ABS). Ingest
/// injects it with the source offsets; each stateful stage adds its snapshot as it passes;
/// Sink flushes outputs and commits everything in one atomic write.
#[derive(Debug, Clone)]
pub struct Barrier {
    /// Checkpoint id.
    pub id: u64,
    /// When Ingest injected it.
    pub injected: Instant,
    /// Next offset per source partition.
    pub offsets: BTreeMap<TopicPartition, i64>,
    /// Snapshots added by stages.
    pub states: BTreeMap<String, Vec<u8>>,
    /// Window state changed in this epoch (column family `windows`): puts and deletes.
    pub window_ops: Vec<vigil_runtime::store::Op>,
    /// Lineage of the epoch this barrier ends, added by Validate and Process.
    pub lineage: crate::lineage::record::EpochLineage,
}

impl Barrier {
    /// One barrier from the same barrier of every shard of a stage: lineage and window
    /// changes joined; of states under the same name the first part's is kept (callers merge
    /// those first).
    ///
    /// # Errors
    /// [`crate::Error::BarrierMismatch`] if the parts are of different checkpoints.
    pub fn merge(parts: Vec<Barrier>, stage: &str) -> crate::Result<Option<Barrier>> {
        let mut parts = parts.into_iter();
        let Some(mut b) = parts.next() else { return Ok(None) };
        for mut p in parts {
            if p.id != b.id {
                return Err(crate::Error::BarrierMismatch { stage: stage.to_string(), first: b.id, other: p.id });
            }
            b.injected = b.injected.min(p.injected);
            b.lineage.absorb(std::mem::take(&mut p.lineage));
            b.window_ops.append(&mut p.window_ops);
            for (k, v) in p.states {
                b.states.entry(k).or_insert(v);
            }
        }
        Ok(Some(b))
    }
}

/// A validated record on its way to Process: where it sits in its batch (the original stays
/// there for the DLQ), its event time and schema; its fields are row `i` of the batch's
/// [`Valid::fields`] for the `i`-th record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Index of its partition batch in [`Valid::batches`].
    pub batch: u32,
    /// Index within that batch.
    pub index: u32,
    /// Event time, ms.
    pub ts: i64,
    /// Schema subject and version it was read with, when registry-framed.
    pub schema: Option<(Arc<str>, u32)>,
}

/// The records of one Ingest batch that passed validation, with the batches they live in.
/// Shared (`Arc`) by the Process shards its records are routed to.
#[derive(Debug, Clone, Default)]
pub struct Valid {
    /// The partition batches as read (invalid records stay in them, unreferenced).
    pub batches: Vec<PartitionBatch>,
    /// Valid records, in batch order.
    pub records: Vec<Record>,
    /// Their fields ([`crate::analytics::spec::Analytics::fields`]), one row per record.
    pub fields: crate::analytics::spec::FieldTable,
    /// Largest event time of the valid records per partition batch: every Process shard
    /// observes them, so all see the same watermarks.
    pub maxima: Vec<(TopicPartition, i64)>,
}

/// Which records of a [`Valid`] a Process shard handles, and for which aggregations.
#[derive(Debug, Clone)]
pub enum Route {
    /// Every record, every aggregation (one shard).
    All,
    /// `(record, aggregation)` pairs owned by this shard, ordered by record then
    /// aggregation. A record counts as processed at the shard owning its aggregation 0.
    Pairs(Vec<(u32, u32)>),
}

/// Shard of a source partition (Validate): a stable hash, the same in every run.
pub fn partition_shard(tp: &TopicPartition, shards: usize) -> usize {
    let h = crate::alerting::engine::fnv1a(tp.topic.bytes().chain([0]).chain(tp.partition.to_be_bytes()));
    (h % shards.max(1) as u64) as usize
}

/// Shard owning the windows of `key` in aggregation `agg` (Process): a stable hash, so a
/// restore with the same or another shard count finds each window's owner. wyhash of the
/// key seeded by the aggregation's: taken per record and aggregation, where FNV-1a's
/// byte-at-a-time multiplies cost Validate 4 % of its time.
pub fn key_shard(agg: &str, key: &str, shards: usize) -> usize {
    let h = wyhash::wyhash(key.as_bytes(), wyhash::wyhash(agg.as_bytes(), 0x5eed_0000_0000_0003));
    (h % shards.max(1) as u64) as usize
}

/// One Ingest batch's claim on a credit: shared by every message carrying its records
/// (split over shards); when the last is dropped (after Sink wrote the windows they
/// closed), the credit returns to the Ingest that issued it.
#[derive(Clone)]
pub struct Credit(#[allow(dead_code, reason = "held, never read: dropping the last clone returns the credit")] Arc<CreditInner>);

struct CreditInner {
    ingest: ActorRef<IngestMsg>,
    epoch: u64,
    polled: Instant,
    bytes: usize,
    topics: Vec<String>,
}

impl Credit {
    /// A credit of Ingest incarnation `epoch` for a batch of `bytes` from `topics`.
    pub fn new(ingest: ActorRef<IngestMsg>, epoch: u64, bytes: usize, topics: Vec<String>) -> Self {
        Self(Arc::new(CreditInner { ingest, epoch, polled: Instant::now(), bytes, topics }))
    }
}

impl Drop for CreditInner {
    fn drop(&mut self) {
        let msg = IngestMsg::Credit { epoch: self.epoch, polled: self.polled, bytes: self.bytes, topics: std::mem::take(&mut self.topics) };
        // Ingest may be stopping or restarting; its successor starts with fresh credits.
        let _ = self.ingest.send_message(msg);
    }
}

/// What an [`Aligner`] hands on, in order.
#[derive(Debug, PartialEq)]
pub enum Aligned<M, B> {
    /// A message from one input.
    Data(M),
    /// The same barrier from every input, in input order.
    Barrier(Vec<B>),
}

/// Aligns checkpoint barriers over several ordered inputs (Flink's aligned checkpoints):
/// an input whose barrier has arrived is held back until every input's has; what it sends
/// meanwhile waits behind the barrier. Messages leave in arrival order otherwise. Pure.
pub struct Aligner<M, B> {
    queues: Vec<std::collections::VecDeque<(u64, Result<M, B>)>>,
    seq: u64,
}

impl<M, B> Aligner<M, B> {
    /// Align `inputs` inputs (at least one).
    pub fn new(inputs: usize) -> Self {
        Self { queues: (0..inputs.max(1)).map(|_| Default::default()).collect(), seq: 0 }
    }

    /// A message from input `from` (out of range counts as the last input).
    pub fn data(&mut self, from: usize, m: M) {
        self.push(from, Ok(m));
    }

    /// A barrier from input `from`.
    pub fn barrier(&mut self, from: usize, b: B) {
        self.push(from, Err(b));
    }

    fn push(&mut self, from: usize, item: Result<M, B>) {
        self.seq += 1;
        let last = self.queues.len() - 1;
        self.queues[from.min(last)].push_back((self.seq, item));
    }

    /// The next thing to handle, if any.
    pub fn pop(&mut self) -> Option<Aligned<M, B>> {
        if self.queues.iter().all(|q| matches!(q.front(), Some((_, Err(_))))) {
            let parts = self.queues.iter_mut().filter_map(|q| match q.pop_front() {
                Some((_, Err(b))) => Some(b),
                _ => None,
            });
            return Some(Aligned::Barrier(parts.collect()));
        }
        let (_, i) = self
            .queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| match q.front() {
                Some((seq, Ok(_))) => Some((*seq, i)),
                _ => None,
            })
            .min()?;
        match self.queues[i].pop_front() {
            Some((_, Ok(m))) => Some(Aligned::Data(m)),
            _ => None,
        }
    }

    /// Messages held back behind barriers.
    pub fn held(&self) -> usize {
        self.queues.iter().map(|q| q.len()).sum()
    }
}

impl Valid {
    /// The original of `r`.
    pub fn envelope(&self, r: &Record) -> Option<EnvelopeRef<'_>> {
        self.batches.get(r.batch as usize).and_then(|b| b.get(r.index as usize))
    }
}

/// Messages into Ingest.
pub enum IngestMsg {
    /// Poll the next batch.
    Poll,
    /// Pause partitions if still without credits (sent `pause_after` into a stall).
    CheckStall {
        /// Stall the check belongs to.
        stall: u64,
    },
    /// Still without credits: look after checkpoints meanwhile (a Sink holding outputs
    /// keeps credits until the next checkpoint publishes them, so that one must come).
    StarvedTick {
        /// Stall the tick belongs to.
        stall: u64,
    },
    /// Checkpoint `id` was not committed (its store write failed): inject the next one as
    /// usual; it covers this one's work.
    CheckpointFailed {
        /// Checkpoint id.
        id: u64,
    },
    /// Sink holds more outputs than `checkpoint.held_outputs_max`: checkpoint soon, so they
    /// can be published.
    CheckpointSoon,
    /// One batch of the given Ingest incarnation has left the pipeline.
    Credit {
        /// Ingest incarnation the credit belongs to.
        epoch: u64,
        /// When the batch was polled.
        polled: Instant,
        /// Its size.
        bytes: usize,
        /// Its source topics, when quality is measured.
        topics: Vec<String>,
    },
    /// Fail on purpose (drills).
    Panic(String),
}

/// Messages into Validate.
pub enum ValidateMsg {
    /// The partitions Ingest reads (sent before any batch).
    Assign(Vec<TopicPartition>),
    /// Raw records, one batch per partition (partitions of this shard).
    Batch {
        /// The Ingest batch's credit.
        credit: Credit,
        /// Records.
        batches: Vec<PartitionBatch>,
    },
    /// Checkpoint barrier.
    Barrier(Barrier),
    /// Fail on purpose (drills).
    Panic(String),
}

/// Messages into Process.
pub enum ProcessMsg {
    /// The partitions Ingest reads.
    Assign(Vec<TopicPartition>),
    /// Validated records of one batch.
    Records {
        /// Validate shard it comes from.
        from: usize,
        /// The Ingest batch's credit.
        credit: Credit,
        /// Records (shared by the Process shards).
        valid: Arc<Valid>,
        /// Which of them this shard handles.
        route: Route,
    },
    /// Re-evaluate idle partitions and the watermark.
    Tick,
    /// Checkpoint barrier from Validate shard `from`.
    Barrier {
        /// Validate shard.
        from: usize,
        /// The barrier.
        barrier: Barrier,
    },
    /// Fail on purpose (drills).
    Panic(String),
}

/// Messages into Sink.
pub enum SinkMsg {
    /// Closed windows to write; `credit` is released afterwards.
    Windows {
        /// Process shard they come from.
        from: usize,
        /// The credit of the batch that closed them, if one did.
        credit: Option<Credit>,
        /// Emissions of the aggregations.
        windows: Vec<crate::analytics::output::Output>,
    },
    /// Checkpoint barrier from Process shard `from`.
    Barrier {
        /// Process shard.
        from: usize,
        /// The barrier.
        barrier: Barrier,
    },
    /// Fail on purpose (drills).
    Panic(String),
}

/// Messages into the generator.
pub enum GenMsg {
    /// Produce the next slice.
    Tick,
    /// Fail on purpose (drills).
    Panic(String),
}

/// The current actor of one stage; re-registered by each incarnation.
pub struct Slot<M: Send + 'static>(RwLock<Option<ActorRef<M>>>);

impl<M: Send + 'static> Default for Slot<M> {
    fn default() -> Self {
        Self(RwLock::new(None))
    }
}

impl<M: Send + 'static> Slot<M> {
    /// Register the running incarnation.
    pub fn set(&self, r: ActorRef<M>) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(r);
        }
    }

    /// Send to the current incarnation.
    ///
    /// # Errors
    /// [`crate::Error::StageUnavailable`] if none is running or it is gone.
    pub fn send(&self, stage: &'static str, msg: M) -> crate::Result<()> {
        let r = self.0.read().ok().and_then(|g| g.clone()).ok_or(crate::Error::StageUnavailable { stage })?;
        r.send_message(msg).map_err(|_| crate::Error::StageUnavailable { stage })
    }

    /// Ask the current incarnation and wait up to `timeout` for the answer.
    ///
    /// # Errors
    /// [`crate::Error::StageUnavailable`] if none is running, it is gone, or it does not
    /// answer in time.
    pub async fn call<T: Send + 'static>(&self, stage: &'static str, f: impl FnOnce(ractor::RpcReplyPort<T>) -> M, timeout: Duration) -> crate::Result<T> {
        let r = self.0.read().ok().and_then(|g| g.clone()).ok_or(crate::Error::StageUnavailable { stage })?;
        match r.call(f, Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
            _ => Err(crate::Error::StageUnavailable { stage }),
        }
    }
}

/// The current actors of a sharded stage, one slot per shard.
pub struct Shards<M: Send + 'static>(Vec<Slot<M>>);

impl<M: Send + 'static> Shards<M> {
    /// `n` empty slots (at least one).
    pub fn new(n: usize) -> Self {
        Self((0..n.max(1)).map(|_| Slot::default()).collect())
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a stage has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Shard `i`'s slot (the last one when out of range).
    pub fn get(&self, i: usize) -> &Slot<M> {
        &self.0[i.min(self.0.len() - 1)]
    }
}

/// Name of shard `i` of `stage` in the tree, metrics and `vigil chaos panic`: the stage's
/// own name when it has one shard, `stage-i` otherwise.
pub fn shard_name(stage: &str, i: usize, shards: usize) -> String {
    if shards <= 1 {
        stage.to_string()
    } else {
        format!("{stage}-{i}")
    }
}

/// Registry of the running stages.
pub struct Slots {
    /// Ingest.
    pub ingest: Slot<IngestMsg>,
    /// Validate shards.
    pub validate: Shards<ValidateMsg>,
    /// Process shards.
    pub process: Shards<ProcessMsg>,
    /// Sink.
    pub sink: Slot<SinkMsg>,
    /// Generator.
    pub generator: Slot<GenMsg>,
    /// Quality.
    pub quality: Slot<QualityMsg>,
    /// Alerting.
    pub alerting: Slot<AlertMsg>,
    /// Incidents.
    pub incidents: Slot<IncidentMsg>,
    /// Lineage.
    pub lineage: Slot<crate::lineage::actor::LineageMsg>,
}

impl Slots {
    /// Slots for `shards` Validate and Process shards.
    pub fn new(shards: usize) -> Self {
        Self {
            ingest: Slot::default(),
            validate: Shards::new(shards),
            process: Shards::new(shards),
            sink: Slot::default(),
            generator: Slot::default(),
            quality: Slot::default(),
            alerting: Slot::default(),
            incidents: Slot::default(),
            lineage: Slot::default(),
        }
    }
}

/// Why and where a record is dead-lettered.
pub struct Rejection<'a> {
    /// Stage rejecting it.
    pub stage: &'a str,
    /// Machine-readable reason (`bad_framing`, `rule:amount.range`, `late`, ...).
    pub code: &'a str,
    /// What exactly was wrong.
    pub detail: &'a str,
    /// Schema facts, when it was decoded.
    pub schema: Option<&'a SchemaInfo>,
    /// Checkpoint it is committed in.
    pub epoch: u64,
    /// Topic instead of the DLQ (late records with `pipeline.late_topic`).
    pub to: Option<&'a str>,
    /// More headers.
    pub extra: &'a [(&'a str, &'a [u8])],
}

/// Everything the stages of one node share. Lives as long as the node; actors come and go.
pub struct NodeCtx {
    /// Configuration.
    pub config: Arc<Config>,
    /// Kafka bootstrap servers in use.
    pub bootstrap: String,
    /// RocksDB store.
    pub store: Arc<Store>,
    /// Producer for outputs and the DLQ.
    pub producer: TrackedProducer,
    /// Counters.
    pub stats: Arc<NodeStats>,
    /// Running stages.
    pub slots: Slots,
    /// Ingest incarnation counter (credits of old incarnations are ignored).
    pub epoch: AtomicU64,
    /// Next checkpoint id.
    pub next_checkpoint: AtomicU64,
    /// Last completed checkpoint id.
    pub checkpoint_done: watch::Sender<u64>,
    /// Set before an orderly shutdown so Ingest takes a final checkpoint.
    pub shutting_down: AtomicBool,
    /// Whether Ingest holds back because the node is over `node.memory_limit`.
    pub memory_throttled: AtomicBool,
    /// Windows changed since the last checkpoint, per Process shard (each writes its own;
    /// Ingest reads the sum against `checkpoint.changes_max`).
    pub window_changes: Box<[AtomicUsize]>,
    /// Largest event time seen per source partition (Process shard 0 writes, Ingest reads
    /// it for watermark alignment).
    pub event_time: std::sync::Mutex<BTreeMap<TopicPartition, i64>>,
    /// Generator position, so a restarted generator continues the stream.
    pub generator_position: AtomicU64,
    /// Event time origin of the embedded generator.
    pub generator_start_ms: i64,
    /// The node's own schema registry (None when `schema_registry.url` names another).
    pub registry: Option<Arc<Registry>>,
    /// Resolves schema ids for validation: the own registry or the external one.
    pub resolver: Arc<dyn Resolver>,
    /// Whether `resolver` may block on the network (external registry).
    pub resolver_blocks: bool,
    /// Compiled `[[pipeline.fields]]`.
    pub rules: Rules,
    /// How the embedded generator encodes its records (first source's format).
    pub generator_wire: Wire,
    /// Producer authentication per source (same order as `pipeline.sources`), where configured.
    pub verifiers: Vec<Option<crate::signing::Verifier>>,
    /// Schema id and Avro schema of results per output topic written as Avro.
    pub sink_schemas: BTreeMap<String, (u32, apache_avro::Schema)>,
    /// The aggregations, compiled.
    pub analytics: crate::analytics::spec::Analytics,
    /// Batch reports sent to the Quality actor and not yet taken (bounded by `quality.queue_max`).
    pub quality_queue: AtomicUsize,
    /// Batch reports dropped because the Quality actor was full or restarting.
    pub quality_dropped: AtomicU64,
    /// The latest data-quality report.
    pub dq: watch::Sender<DqReport>,
    /// The alerting configuration in force (replaced by a reload).
    pub alerts_config: RwLock<Arc<AlertsConfig>>,
    /// The operational journal (restarts, checkpoint failures, DLQ bursts, chaos, ...).
    pub journal: Arc<Journal>,
    /// Hash of the configuration in force (`vigil.config` header on outputs).
    pub config_hash: String,
    /// Lineage size and the OpenLineage run in progress.
    pub lineage: crate::lineage::LineageCtx,
    /// Malformed-record ratio of the embedded generator set at run time (drills), as f64
    /// bits; NaN: the configured `generator.bad_ratio`.
    pub bad_ratio: AtomicU64,
    /// When this node started, ms, if the previous run on this data directory ended
    /// without a clean stop (SIGKILL, OOM, power loss): the `unclean_restart` series.
    pub unclean_start_ms: Option<i64>,
    /// When actors were restarted by their supervisors and checkpoints failed, ms (the last
    /// minute's worth): the `restarts_per_min` and `checkpoint_failures_per_min` series.
    pub recent: std::sync::Mutex<BTreeMap<Recent, std::collections::VecDeque<i64>>>,
    /// The listeners' credentials, roles and refusals (the `access_denied_per_min` series).
    pub security: Arc<vigil_runtime::security::access::Security>,
}

/// Node events counted per minute for the health series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Recent {
    /// A supervisor restarted an actor.
    Restart,
    /// A checkpoint failed (flush or store write).
    CheckpointFailure,
}

impl NodeCtx {
    /// Windows changed since the last checkpoint, over every Process shard.
    pub fn window_changes(&self) -> u64 {
        self.window_changes.iter().map(|c| c.load(Ordering::Relaxed) as u64).sum()
    }

    /// Count an event of `kind` at `now_ms`.
    pub fn note(&self, kind: Recent, now_ms: i64) {
        if let Ok(mut all) = self.recent.lock() {
            let r = all.entry(kind).or_default();
            r.push_back(now_ms);
            while r.front().is_some_and(|t| *t < now_ms - 60_000) {
                r.pop_front();
            }
        }
    }

    /// Events of `kind` in the minute before `now_ms`.
    pub fn per_minute(&self, kind: Recent, now_ms: i64) -> u32 {
        self.recent.lock().map(|all| all.get(&kind).map(|r| r.iter().filter(|t| **t >= now_ms - 60_000).count() as u32).unwrap_or(0)).unwrap_or(0)
    }

    /// Whether this start followed a crash and is younger than `window` at `now_ms`.
    pub fn unclean_restart(&self, now_ms: i64, window: std::time::Duration) -> bool {
        self.unclean_start_ms.is_some_and(|t| now_ms - t < window.as_millis() as i64)
    }
    /// Hand a batch's quality to the Quality actor without ever waiting for it: beyond
    /// `quality.queue_max` outstanding reports, or while it restarts, the report is dropped
    /// and counted.
    pub fn report_quality(&self, b: BatchQuality) {
        let q = &self.config.quality;
        if !q.enabled {
            return;
        }
        let queued = self.quality_queue.fetch_add(1, Ordering::SeqCst);
        if queued >= q.queue_max || self.slots.quality.send("quality", QualityMsg::Batch(Box::new(b))).is_err() {
            self.quality_taken();
            self.quality_dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("vigil_dq_reports_dropped_total").increment(1);
        }
    }

    /// The Quality actor took one report.
    pub fn quality_taken(&self) {
        let _ = self.quality_queue.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(v.saturating_sub(1)));
    }

    /// Whether alert rules are evaluated (needs quality measurement).
    pub fn alerting_enabled(&self) -> bool {
        self.config.quality.enabled && self.config.alerts.enabled
    }

    /// Whether incidents are opened and escalated (needs alerting).
    pub fn incidents_enabled(&self) -> bool {
        self.alerting_enabled() && self.config.incidents.enabled
    }

    /// Base URL of this node's admin API, for links in notifications.
    pub fn external_url(&self) -> String {
        format!("http://{}", self.config.observability.admin_addr)
    }

    /// Set the generator's malformed-record ratio at run time.
    pub fn set_bad_ratio(&self, ratio: f64) {
        self.bad_ratio.store(ratio.to_bits(), Ordering::SeqCst);
    }

    /// The generator's malformed-record ratio in force.
    pub fn bad_ratio(&self) -> f64 {
        let r = f64::from_bits(self.bad_ratio.load(Ordering::SeqCst));
        if r.is_nan() {
            self.config.generator.bad_ratio
        } else {
            r
        }
    }

    /// Bound on waiting for Kafka to take one record.
    pub fn send_timeout(&self) -> Duration {
        self.config.checkpoint.flush_timeout
    }

    /// The checkpoint id outputs written now will be committed in (until the next barrier
    /// passes): what a stage starts with; after a barrier `b` it is `b.id + 1`.
    pub fn current_epoch(&self) -> u64 {
        self.next_checkpoint.load(Ordering::SeqCst)
    }

    /// Allocate the next checkpoint id.
    pub fn allocate_checkpoint(&self) -> u64 {
        self.next_checkpoint.fetch_add(1, Ordering::SeqCst)
    }

    /// Write a rejected record to the DLQ with its reason, source position, schema
    /// subject/version/id when known, the checkpoint `epoch` it is committed in, and the
    /// original bytes and headers, keyed by its record id so replays deduplicate.
    ///
    /// # Errors
    /// [`crate::Error::Runtime`] if Kafka does not take it.
    pub async fn send_to_dlq(&self, env: EnvelopeRef<'_>, why: Rejection<'_>) -> crate::Result<()> {
        let Rejection { stage, code, detail, schema, epoch, to, extra } = why;
        let source = env.source();
        let position = format!("{}/{}/{}", source.topic, source.partition, env.offset());
        let mut headers: Vec<(&str, &[u8])> = env.headers().collect();
        headers.push(("vigil.dlq.reason", code.as_bytes()));
        headers.push(("vigil.dlq.detail", detail.as_bytes()));
        headers.push(("vigil.dlq.stage", stage.as_bytes()));
        headers.push(("vigil.source", position.as_bytes()));
        headers.push(("vigil.node", self.config.node.id.as_bytes()));
        let epoch = epoch.to_string();
        headers.push(("vigil.epoch", epoch.as_bytes()));
        headers.push(("vigil.config", self.config_hash.as_bytes()));
        headers.push(("vigil.version", env!("CARGO_PKG_VERSION").as_bytes()));
        headers.extend_from_slice(extra);
        let (id, version) = (schema.and_then(|s| s.id).map(|i| i.to_string()), schema.and_then(|s| s.version).map(|v| v.to_string()));
        if let Some(s) = schema {
            headers.push(("vigil.schema.subject", s.subject.as_bytes()));
        }
        if let Some(id) = &id {
            headers.push(("vigil.schema.id", id.as_bytes()));
        }
        if let Some(v) = &version {
            headers.push(("vigil.schema.version", v.as_bytes()));
        }
        let id = env.id();
        let rec =
            OutRecord { topic: to.unwrap_or(&self.config.pipeline.dlq_topic), partition: None, key: id.as_bytes(), payload: env.payload(), headers: &headers };
        self.producer.send(&rec, self.send_timeout()).await?;
        if to.is_none() {
            self.stats.add(Stage::Dlq, 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Per input: its messages, with barriers (`None`) among them; the same count on each.
    fn inputs() -> impl Strategy<Value = (Vec<Vec<Option<u32>>>, Vec<usize>)> {
        (1usize..4, 0usize..4).prop_flat_map(|(n, barriers)| {
            let input = proptest::collection::vec(proptest::option::of(0u32..1), 0..12).prop_map(move |mut v| {
                v.retain(Option::is_some);
                v.extend(std::iter::repeat_n(None, barriers));
                v
            });
            let inputs = proptest::collection::vec(input.prop_shuffle(), n);
            (inputs, proptest::collection::vec(0..n, 0..200))
        })
    }

    proptest! {
        /// Every message leaves exactly once, in its input's order; each barrier leaves once
        /// every input sent it, after everything sent before it on any input and before
        /// everything sent after it.
        #[test]
        fn aligned_barriers_split_every_input_at_the_same_point((inputs, order) in inputs()) {
            let n = inputs.len();
            let mut a: Aligner<(usize, usize), (usize, u64)> = Aligner::new(n);
            let mut next = vec![0usize; n];
            let mut barrier_no = vec![0u64; n];
            let mut out = Vec::new();
            let feed = |a: &mut Aligner<_, _>, i: usize, next: &mut Vec<usize>, barrier_no: &mut Vec<u64>, out: &mut Vec<_>| {
                let Some(item) = inputs[i].get(next[i]) else { return };
                match item {
                    Some(_) => a.data(i, (i, next[i])),
                    None => {
                        barrier_no[i] += 1;
                        a.barrier(i, (i, barrier_no[i]));
                    }
                }
                next[i] += 1;
                while let Some(x) = a.pop() {
                    out.push(x);
                }
            };
            for i in order.into_iter().chain((0..n).flat_map(|i| std::iter::repeat_n(i, 20))) {
                feed(&mut a, i, &mut next, &mut barrier_no, &mut out);
            }
            prop_assert_eq!(a.held(), 0);
            // Position of each data message in the output, and the epoch it left in.
            let mut epoch = 0u64;
            let mut seen = vec![Vec::new(); n];
            for x in &out {
                match x {
                    Aligned::Data((i, k)) => seen[*i].push((*k, epoch)),
                    Aligned::Barrier(parts) => {
                        epoch += 1;
                        prop_assert_eq!(parts.iter().map(|(i, _)| *i).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>());
                        prop_assert!(parts.iter().all(|(_, b)| *b == epoch));
                    }
                }
            }
            for (i, input) in inputs.iter().enumerate() {
                let mut want = Vec::new();
                let mut e = 0u64;
                for (k, item) in input.iter().enumerate() {
                    match item {
                        Some(_) => want.push((k, e)),
                        None => e += 1,
                    }
                }
                prop_assert_eq!(&seen[i], &want, "input {}", i);
            }
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        let tp = |p| TopicPartition { topic: "events".into(), partition: p };
        assert_eq!(partition_shard(&tp(3), 1), 0);
        let spread: std::collections::BTreeSet<usize> = (0..16).map(|p| partition_shard(&tp(p), 4)).collect();
        assert_eq!(spread.len(), 4, "16 partitions reach every one of 4 shards");
        assert_eq!(key_shard("per-user", "alice", 3), key_shard("per-user", "alice", 3));
        let keys: std::collections::BTreeSet<usize> = (0..100).map(|i| key_shard("a", &format!("u{i}"), 2)).collect();
        assert_eq!(keys.len(), 2);
        assert_eq!(shard_name("process", 1, 2), "process-1");
        assert_eq!(shard_name("process", 0, 1), "process");
    }
}
