//! The actor shells of the pipeline stages. Each is thin: it moves batches, barriers and
//! credits, and calls the pure logic in [`crate::validate`], [`crate::window`] and
//! [`crate::generator`].
use crate::generator::{EventGen, GenSpec};
use crate::pipeline::{Barrier, GenMsg, IngestMsg, NodeCtx, ProcessMsg, Record, SinkMsg, ValidateMsg};
use crate::rate::RateLimit;
use crate::window::WindowState;
use crate::Error;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use vigil_runtime::envelope::TopicPartition;
use vigil_runtime::kafka::{BatchConsumer, OutRecord, TrackedProducer};
use vigil_runtime::stats::{CheckpointSummary, Stage};
use vigil_runtime::store::{self, Checkpoint, CheckpointMeta};

type R<T> = std::result::Result<T, ActorProcessingErr>;

// ---------------------------------------------------------------- ingest

/// Ingest: reads source partitions in batches, spends one credit per batch (pausing the
/// partitions when none are left), injects checkpoint barriers, detects retention gaps.
#[derive(Clone, Copy)]
pub struct Ingest;

/// Ingest's state.
pub struct IngestState {
    ctx: Arc<NodeCtx>,
    consumer: BatchConsumer,
    epoch: u64,
    credits: usize,
    inflight: Option<(u64, Instant, BTreeMap<TopicPartition, i64>)>,
    last_checkpoint: Instant,
    done: watch::Receiver<u64>,
    /// Counts stalls (credits exhausted), so a late stall check is ignored.
    stalls: u64,
    starved: bool,
    /// `pipeline.max_records_per_sec`, if set.
    rate: Option<RateLimit>,
}

impl IngestState {
    fn inject_barrier(&mut self) -> crate::Result<u64> {
        let id = self.ctx.allocate_checkpoint();
        let offsets = self.consumer.positions();
        let barrier = Barrier { id, injected: Instant::now(), offsets: offsets.clone(), states: BTreeMap::new() };
        self.ctx.slots.validate.send("validate", crate::pipeline::ValidateMsg::Barrier(barrier))?;
        self.inflight = Some((id, Instant::now(), offsets));
        self.last_checkpoint = Instant::now();
        Ok(id)
    }

    fn maybe_checkpoint(&mut self) -> crate::Result<()> {
        let cfg = &self.ctx.config.checkpoint;
        if let Some((id, at, offsets)) = &self.inflight {
            if *self.done.borrow() >= *id {
                self.consumer.commit_offsets(offsets);
                self.inflight = None;
            } else if at.elapsed() > cfg.flush_timeout * 2 + cfg.interval {
                return Err(Error::CheckpointStuck { id: *id, waited: at.elapsed() });
            }
        }
        if self.inflight.is_none() && self.last_checkpoint.elapsed() >= cfg.interval {
            self.inject_barrier()?;
        }
        Ok(())
    }
}

impl Actor for Ingest {
    type Msg = IngestMsg;
    type State = IngestState;
    type Arguments = Arc<NodeCtx>;

    async fn pre_start(&self, myself: ActorRef<IngestMsg>, ctx: Arc<NodeCtx>) -> R<IngestState> {
        ctx.slots.ingest.set(myself.clone());
        let epoch = ctx.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let (bootstrap, kafka) = (ctx.bootstrap.clone(), ctx.config.kafka.clone());
        let topics: Vec<String> = ctx.config.pipeline.sources.iter().map(|s| s.topic.clone()).collect();
        let mut consumer = tokio::task::spawn_blocking(move || BatchConsumer::new(&bootstrap, &kafka, &topics, Duration::from_secs(30))).await??;
        let offsets = ctx.store.offsets()?;
        consumer.assign_from(&offsets)?;
        tracing::info!(epoch, partitions = consumer.assignment().len(), restored = offsets.len(), "ingest assigned");
        ctx.stats.set_position(consumer.position_sum());
        ctx.slots.validate.send("validate", ValidateMsg::Assign(consumer.assignment().to_vec()))?;
        myself.send_message(IngestMsg::Poll)?;
        let credits = ctx.config.pipeline.inflight_batches_max;
        metrics::gauge!("vigil_ingest_credits").set(credits as f64);
        metrics::gauge!("vigil_ingest_paused").set(0.0);
        ctx.stats.set_ready(true);
        let done = ctx.checkpoint_done.subscribe();
        let p = &ctx.config.pipeline;
        let rate = (p.max_records_per_sec > 0).then(|| RateLimit::new(p.max_records_per_sec, p.batch_max_records as u32, Instant::now()));
        Ok(IngestState { ctx, consumer, epoch, credits, inflight: None, last_checkpoint: Instant::now(), done, stalls: 0, starved: false, rate })
    }

    async fn handle(&self, myself: ActorRef<IngestMsg>, msg: IngestMsg, st: &mut IngestState) -> R<()> {
        match msg {
            IngestMsg::Poll => {
                st.maybe_checkpoint()?;
                if st.credits == 0 {
                    // Stop polling now; pause partitions only if the stall lasts.
                    st.starved = true;
                    st.stalls += 1;
                    let stall = st.stalls;
                    myself.send_after(st.ctx.config.pipeline.pause_after, move || IngestMsg::CheckStall { stall });
                    return Ok(());
                }
                let p = &st.ctx.config.pipeline;
                let mut max = p.batch_max_records;
                if let Some(rate) = &mut st.rate {
                    let available = rate.available(Instant::now());
                    if available == 0 {
                        myself.send_after(rate.wait(), || IngestMsg::Poll);
                        return Ok(());
                    }
                    max = max.min(available as usize);
                }
                let (batches, gaps) = st.consumer.poll(max, st.ctx.config.kafka.poll_timeout).await?;
                for g in gaps {
                    tracing::error!(partition = %g.source, expected = g.expected, resumed_at = g.resumed_at, lost = g.lost(), "records lost to retention: the log start moved past offsets not yet read");
                    st.ctx.stats.add_lost(&g.source.topic, g.source.partition, g.lost() as u64);
                }
                if !batches.is_empty() {
                    let n: usize = batches.iter().map(|b| b.records.len()).sum();
                    if let Some(rate) = &mut st.rate {
                        rate.take(n as u64);
                    }
                    st.ctx.stats.add(Stage::Ingest, n as u64);
                    st.credits -= 1;
                    metrics::gauge!("vigil_ingest_credits").set(st.credits as f64);
                    st.ctx.slots.validate.send("validate", ValidateMsg::Batch { epoch: st.epoch, batches })?;
                }
                st.ctx.stats.set_lag(st.consumer.total_lag());
                st.ctx.stats.set_position(st.consumer.position_sum());
                myself.send_message(IngestMsg::Poll)?;
            }
            IngestMsg::CheckStall { stall } => {
                if st.starved && stall == st.stalls {
                    st.consumer.pause()?;
                    metrics::gauge!("vigil_ingest_paused").set(1.0);
                    tracing::debug!("no credits for {:?}: partitions paused", st.ctx.config.pipeline.pause_after);
                }
            }
            IngestMsg::Credit { epoch } => {
                if epoch == st.epoch {
                    st.credits += 1;
                    metrics::gauge!("vigil_ingest_credits").set(st.credits as f64);
                    if st.starved {
                        st.starved = false;
                        if st.consumer.is_paused() {
                            st.consumer.resume()?;
                            metrics::gauge!("vigil_ingest_paused").set(0.0);
                        }
                        myself.send_message(IngestMsg::Poll)?;
                    }
                }
            }
            IngestMsg::Panic(m) => panic!("injected panic in ingest: {m}"),
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<IngestMsg>, st: &mut IngestState) -> R<()> {
        st.ctx.stats.set_ready(false);
        if !st.ctx.shutting_down.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Orderly shutdown: one last checkpoint through the still-running stages.
        let id = st.inject_barrier()?;
        let timeout = st.ctx.config.checkpoint.flush_timeout;
        match tokio::time::timeout(timeout, st.done.wait_for(|d| *d >= id)).await {
            Ok(Ok(_)) => tracing::info!(checkpoint = id, "final checkpoint complete"),
            _ => tracing::error!(checkpoint = id, ?timeout, "final checkpoint did not complete; the next start replays from the previous one"),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- validate

/// Validate: parses and checks records; failures go to the DLQ with a reason.
#[derive(Clone, Copy)]
pub struct Validate;

impl Actor for Validate {
    type Msg = ValidateMsg;
    type State = Arc<NodeCtx>;
    type Arguments = Arc<NodeCtx>;

    async fn pre_start(&self, myself: ActorRef<ValidateMsg>, ctx: Arc<NodeCtx>) -> R<Arc<NodeCtx>> {
        ctx.slots.validate.set(myself);
        Ok(ctx)
    }

    async fn handle(&self, _myself: ActorRef<ValidateMsg>, msg: ValidateMsg, ctx: &mut Arc<NodeCtx>) -> R<()> {
        match msg {
            ValidateMsg::Assign(tps) => ctx.slots.process.send("process", ProcessMsg::Assign(tps))?,
            ValidateMsg::Batch { epoch, batches } => {
                let started = Instant::now();
                let p = &ctx.config.pipeline;
                let mut records = Vec::with_capacity(batches.iter().map(|b| b.records.len()).sum());
                for pb in batches {
                    for env in pb.records {
                        match crate::validate::validate(&env.payload, &p.fields, &p.window) {
                            Ok(v) => records.push(Record { source: pb.source.clone(), envelope: env, key: v.key, value: v.value, ts: v.ts }),
                            Err(r) => ctx.send_to_dlq(&pb.source, &env, "validate", r.code(), &r.to_string()).await?,
                        }
                    }
                }
                ctx.stats.add(Stage::Validate, records.len() as u64);
                metrics::histogram!("vigil_stage_batch_seconds", "stage" => "validate").record(started.elapsed().as_secs_f64());
                ctx.slots.process.send("process", ProcessMsg::Records { epoch, records })?;
            }
            ValidateMsg::Barrier(b) => ctx.slots.process.send("process", ProcessMsg::Barrier(b))?,
            ValidateMsg::Panic(m) => panic!("injected panic in validate: {m}"),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- process

/// Process: per-key tumbling windows; restores its state from the last checkpoint.
#[derive(Clone, Copy)]
pub struct Process;

/// Process's state.
pub struct ProcessState {
    ctx: Arc<NodeCtx>,
    windows: WindowState,
    ticker: Option<ractor::concurrency::JoinHandle<()>>,
}

impl ProcessState {
    fn close(&mut self) -> Vec<crate::window::WindowResult> {
        let out = self.windows.advance(Instant::now(), self.ctx.config.pipeline.window.idle_timeout);
        metrics::gauge!("vigil_open_windows").set(self.windows.open_windows() as f64);
        if self.windows.closed_until() > i64::MIN {
            metrics::gauge!("vigil_watermark_ms").set(self.windows.closed_until() as f64);
        }
        out
    }
}

impl Actor for Process {
    type Msg = ProcessMsg;
    type State = ProcessState;
    type Arguments = Arc<NodeCtx>;

    async fn pre_start(&self, myself: ActorRef<ProcessMsg>, ctx: Arc<NodeCtx>) -> R<ProcessState> {
        let w = &ctx.config.pipeline.window;
        let fresh = WindowState::new(w.size, w.allowed_lateness);
        let windows = match ctx.store.state("process")? {
            Some(bytes) => {
                let restored: WindowState = store::decode("process window state", &bytes)?;
                if !restored.same_shape(&fresh) {
                    return Err(Box::new(Error::IncompatibleState {
                        stage: "process",
                        reason:
                            "checkpointed window size or lateness differs from pipeline.window; restore the old values or start with an empty node.data_dir"
                                .into(),
                    }));
                }
                tracing::info!(open_windows = restored.open_windows(), "process restored window state");
                restored
            }
            None => fresh,
        };
        let tick = (w.idle_timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let ticker = myself.send_interval(tick, || ProcessMsg::Tick);
        ctx.slots.process.set(myself);
        Ok(ProcessState { ctx, windows, ticker: Some(ticker) })
    }

    async fn handle(&self, _myself: ActorRef<ProcessMsg>, msg: ProcessMsg, st: &mut ProcessState) -> R<()> {
        match msg {
            ProcessMsg::Assign(tps) => st.windows.assign(&tps, Instant::now()),
            ProcessMsg::Records { epoch, records } => {
                let started = Instant::now();
                let now = Instant::now();
                let mut accepted = 0u64;
                for r in records {
                    match st.windows.add(&r.source, r.ts, &r.key, r.value, now) {
                        Ok(()) => accepted += 1,
                        Err(late) => {
                            let detail =
                                format!("event time {} falls in window starting {} which closed at watermark {}", r.ts, late.window_start, late.watermark);
                            st.ctx.send_to_dlq(&r.source, &r.envelope, "process", "late", &detail).await?;
                        }
                    }
                }
                st.ctx.stats.add(Stage::Process, accepted);
                let windows = st.close();
                metrics::histogram!("vigil_stage_batch_seconds", "stage" => "process").record(started.elapsed().as_secs_f64());
                st.ctx.slots.sink.send("sink", SinkMsg::Windows { credit: Some(epoch), windows })?;
            }
            ProcessMsg::Tick => {
                let windows = st.close();
                if !windows.is_empty() {
                    st.ctx.slots.sink.send("sink", SinkMsg::Windows { credit: None, windows })?;
                }
            }
            ProcessMsg::Barrier(mut b) => {
                b.states.insert("process".into(), store::encode("process window state", &st.windows)?);
                st.ctx.slots.sink.send("sink", SinkMsg::Barrier(b))?;
            }
            ProcessMsg::Panic(m) => panic!("injected panic in process: {m}"),
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<ProcessMsg>, st: &mut ProcessState) -> R<()> {
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- sink

/// Sink: writes closed windows with deterministic keys, returns credits, and completes
/// checkpoints: flush outputs, then one atomic RocksDB commit.
#[derive(Clone, Copy)]
pub struct Sink;

/// Sink's state.
pub struct SinkState {
    ctx: Arc<NodeCtx>,
    failed_before: u64,
}

impl Actor for Sink {
    type Msg = SinkMsg;
    type State = SinkState;
    type Arguments = Arc<NodeCtx>;

    async fn pre_start(&self, myself: ActorRef<SinkMsg>, ctx: Arc<NodeCtx>) -> R<SinkState> {
        ctx.slots.sink.set(myself);
        let failed_before = ctx.producer.failed();
        Ok(SinkState { ctx, failed_before })
    }

    async fn handle(&self, _myself: ActorRef<SinkMsg>, msg: SinkMsg, st: &mut SinkState) -> R<()> {
        let ctx = st.ctx.clone();
        match msg {
            SinkMsg::Windows { credit, windows } => {
                let started = Instant::now();
                let topic = &ctx.config.pipeline.sink_topic;
                let node = ctx.config.node.id.as_bytes();
                let mut records = 0u64;
                for w in &windows {
                    let key = w.output_key();
                    let payload = serde_json::to_vec(w).map_err(|e| Error::Encode(e.to_string()))?;
                    let headers: [(&str, &[u8]); 1] = [("vigil.node", node)];
                    ctx.producer.send(&OutRecord { topic, key: key.as_bytes(), payload: &payload, headers: &headers }, ctx.send_timeout()).await?;
                    records += w.count;
                }
                ctx.stats.add(Stage::Sink, windows.len() as u64);
                ctx.stats.add_window_records(records);
                metrics::histogram!("vigil_stage_batch_seconds", "stage" => "sink").record(started.elapsed().as_secs_f64());
                if let Some(epoch) = credit {
                    // Ingest may be stopping or restarting; its successor starts with fresh credits.
                    let _ = ctx.slots.ingest.send("ingest", IngestMsg::Credit { epoch });
                }
            }
            SinkMsg::Barrier(b) => self.complete_checkpoint(st, b).await?,
            SinkMsg::Panic(m) => panic!("injected panic in sink: {m}"),
        }
        Ok(())
    }
}

impl Sink {
    async fn complete_checkpoint(&self, st: &mut SinkState, b: Barrier) -> crate::Result<()> {
        let ctx = st.ctx.clone();
        let id = b.id;
        let size = match self.commit(st, b).await {
            Ok(size) => size,
            Err(e) => {
                ctx.stats.checkpoint_failed();
                return Err(e);
            }
        };
        ctx.checkpoint_done.send_if_modified(|d| {
            let newer = id > *d;
            if newer {
                *d = id;
            }
            newer
        });
        st.failed_before = ctx.producer.failed();
        tracing::debug!(checkpoint = id, size, "checkpoint committed");
        Ok(())
    }

    /// Flush outputs, then commit offsets, states and metadata atomically. Returns the
    /// state size in bytes.
    async fn commit(&self, st: &SinkState, b: Barrier) -> crate::Result<u64> {
        let ctx = &st.ctx;
        let cfg = &ctx.config.checkpoint;
        ctx.producer.flush_checked(cfg.flush_timeout, st.failed_before).await?;
        let state_bytes: BTreeMap<String, u64> = b.states.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect();
        let meta = CheckpointMeta {
            id: b.id,
            completed_ms: vigil_runtime::now_ms(),
            node_id: ctx.config.node.id.clone(),
            offsets: b.offsets,
            state_bytes,
            duration_us: b.injected.elapsed().as_micros() as u64,
        };
        let size: u64 = meta.state_bytes.values().sum();
        let summary = CheckpointSummary { id: meta.id, completed_ms: meta.completed_ms, duration_us: meta.duration_us };
        ctx.store.commit_checkpoint(&Checkpoint { meta, states: b.states }, cfg.retained)?;
        ctx.stats.checkpointed(summary, size);
        Ok(size)
    }
}

// ---------------------------------------------------------------- generator

/// The embedded default's synthetic producer, rate-limited, continuing its deterministic
/// stream across restarts.
#[derive(Clone, Copy)]
pub struct Generator;

/// Generator's state.
pub struct GeneratorState {
    ctx: Arc<NodeCtx>,
    gen: EventGen,
    producer: TrackedProducer,
    /// `generator.rate`; None when the rate is 0 (produce nothing). Holds at most one
    /// second of backlog, so a stalled broker cannot make it explode.
    pace: Option<RateLimit>,
    ticker: Option<ractor::concurrency::JoinHandle<()>>,
}

/// Event-time step for a generator running at `rate` records per second.
pub fn step_ms_for_rate(rate: u32) -> i64 {
    if rate == 0 {
        1
    } else {
        (1000 / i64::from(rate)).max(1)
    }
}

/// Produce one generated record to `topic`.
///
/// # Errors
/// [`vigil_runtime::Error`] if Kafka does not take it within `timeout`.
pub async fn produce_generated(producer: &TrackedProducer, topic: &str, r: &crate::generator::GenRecord, timeout: Duration) -> vigil_runtime::Result<()> {
    let headers: [(&str, &[u8]); 1] = [(vigil_runtime::envelope::HEADER_RECORD_ID, r.id.as_bytes())];
    producer.send(&OutRecord { topic, key: r.key.as_bytes(), payload: &r.payload, headers: &headers }, timeout).await
}

impl Actor for Generator {
    type Msg = GenMsg;
    type State = GeneratorState;
    type Arguments = Arc<NodeCtx>;

    async fn pre_start(&self, myself: ActorRef<GenMsg>, ctx: Arc<NodeCtx>) -> R<GeneratorState> {
        let g = &ctx.config.generator;
        let mut gen = EventGen::new(GenSpec {
            seed: g.seed,
            users: g.users,
            bad_ratio: g.bad_ratio,
            start_ms: ctx.generator_start_ms,
            step_ms: step_ms_for_rate(g.rate),
        });
        gen.skip_to(ctx.generator_position.load(Ordering::SeqCst));
        let producer = TrackedProducer::new(&ctx.bootstrap, &ctx.config.kafka)?;
        let pace = (g.rate > 0).then(|| RateLimit::new(g.rate, g.rate, Instant::now()).empty());
        let ticker = myself.send_interval(Duration::from_millis(50), || GenMsg::Tick);
        ctx.slots.generator.set(myself);
        Ok(GeneratorState { ctx, gen, producer, pace, ticker: Some(ticker) })
    }

    async fn handle(&self, _myself: ActorRef<GenMsg>, msg: GenMsg, st: &mut GeneratorState) -> R<()> {
        match msg {
            GenMsg::Tick => {
                let Some(pace) = &mut st.pace else { return Ok(()) };
                let due = pace.available(Instant::now());
                pace.take(due);
                let topic = st.ctx.config.pipeline.sources.first().map(|s| s.topic.clone()).unwrap_or_default();
                for _ in 0..due {
                    let r = st.gen.next_record();
                    produce_generated(&st.producer, &topic, &r, st.ctx.send_timeout()).await?;
                    st.ctx.generator_position.store(st.gen.position(), Ordering::SeqCst);
                }
            }
            GenMsg::Panic(m) => panic!("injected panic in generator: {m}"),
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<GenMsg>, st: &mut GeneratorState) -> R<()> {
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        let _ = st.producer.flush(Duration::from_secs(5)).await;
        Ok(())
    }
}
