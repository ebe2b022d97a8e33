//! Ingest: reads source partitions in batches, spends credits, injects checkpoint barriers.
use super::R;
use crate::pipeline::{partition_shard, Barrier, Credit, IngestMsg, NodeCtx, ValidateMsg};
use crate::quality::tracker::BatchQuality;
use crate::rate::RateLimit;
use crate::Error;
use ractor::{Actor, ActorRef};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use vigil_runtime::envelope::TopicPartition;
use vigil_runtime::failpoints::StagePoint;
use vigil_runtime::kafka::BatchConsumer;
use vigil_runtime::stats::{Progress, Stage};
/// How often Ingest reads the resident size against `node.memory_limit`.
const MEMORY_CHECK: Duration = Duration::from_millis(100);

/// How often Ingest, out of credits, looks whether a checkpoint is due.
const STARVED_TICK: Duration = Duration::from_millis(50);

/// How often Ingest looks again while it waits for a checkpoint to take the windows changed
/// (`checkpoint.changes_max`).
const CHANGES_RECHECK: Duration = Duration::from_millis(10);

/// How often Ingest looks for partitions running ahead in event time.
const ALIGN_EVERY: Duration = Duration::from_millis(200);

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
    /// Sink holds more outputs than `checkpoint.held_outputs_max`: the next checkpoint is
    /// injected as soon as none is in flight.
    early: bool,
    /// Reading waits for a checkpoint: windows changed past `checkpoint.changes_max`.
    held_for_changes: bool,
    done: watch::Receiver<u64>,
    /// Counts stalls (credits exhausted), so a late stall check is ignored.
    stalls: u64,
    starved: bool,
    /// `pipeline.max_records_per_sec`, if set.
    rate: Option<RateLimit>,
    /// Bytes of the batches in flight.
    in_flight_bytes: usize,
    /// Windows Sink had written at the last look, and when that count last moved.
    sink_seen: (u64, Instant),
    /// When Ingest last polled while over the memory limit.
    memory_poll: Instant,
    /// When partitions were last checked for running ahead in event time.
    aligned_at: Instant,
    /// When this Ingest started reading (a partition not yet seen holds the others back
    /// for up to `pipeline.event_time.idle_timeout` from then).
    started: Instant,
    /// `node.memory_limit`, and when the resident size was last read.
    memory: crate::memory::MemoryGovernor,
    /// Whether the node is over `pipeline.event_time.align_above_memory_percent` of its
    /// memory limit, when watermark alignment holds partitions back.
    align_gate: crate::memory::MemoryGovernor,
    memory_checked: Instant,
    /// End-to-end latencies per source since the last quality report, ms.
    latency: BTreeMap<String, Vec<f64>>,
    last_report: Instant,
    /// Fault injection (`stage.ingest`), evaluated once per poll.
    fault: StagePoint,
}

impl IngestState {
    /// Publish partition progress and batch latencies, at most once a second.
    fn report(&mut self) {
        if self.last_report.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_report = Instant::now();
        metrics::gauge!("vigil_memory_bytes", "component" => "in_flight").set(self.in_flight_bytes as f64);
        self.ctx.stats.set_progress(Progress { partitions: self.consumer.progress(), brokers_up: self.consumer.brokers_up() });
        for (source, latency_ms) in std::mem::take(&mut self.latency) {
            self.ctx.report_quality(BatchQuality { source, latency_ms, ..BatchQuality::default() });
        }
    }

    /// Whether the node is over its memory limit. The resident size is read at most every
    /// [`MEMORY_CHECK`], and exported as `vigil_memory_bytes{component="process"}`.
    fn over_memory(&mut self) -> bool {
        if self.memory_checked.elapsed() >= MEMORY_CHECK {
            self.memory_checked = Instant::now();
            let rss = vigil_runtime::metrics::resident_bytes().unwrap_or(0);
            metrics::gauge!("vigil_memory_bytes", "component" => "process").set(rss as f64);
            if let Some(aligning) = self.align_gate.observe(rss) {
                metrics::gauge!("vigil_ingest_aligning").set(if aligning { 1.0 } else { 0.0 });
            }
            if let Some(throttled) = self.memory.observe(rss) {
                self.ctx.memory_throttled.store(throttled, Ordering::SeqCst);
                metrics::gauge!("vigil_memory_throttled").set(if throttled { 1.0 } else { 0.0 });
                if throttled {
                    metrics::counter!("vigil_memory_throttle_total").increment(1);
                    tracing::warn!(resident = rss, limit = %self.ctx.config.node.memory_limit, "over {} % of node.memory_limit: ingest slows to one batch per 100 ms", crate::memory::HIGH_PERCENT);
                    crate::memory::release_free_memory();
                } else {
                    tracing::info!(resident = rss, "back under {} % of node.memory_limit: ingest resumes", crate::memory::LOW_PERCENT);
                }
            }
        }
        self.memory.throttled()
    }

    /// Watermark alignment, at most every [`ALIGN_EVERY`]: hold back the partitions running
    /// more than `pipeline.event_time.max_drift` ahead of the slowest one with records left,
    /// and every partition with an event time while one with records left has none yet;
    /// only above `pipeline.event_time.align_above_memory_percent` of the memory limit.
    fn align(&mut self) -> crate::Result<()> {
        let drift = self.ctx.config.pipeline.event_time.max_drift;
        if drift.is_zero() || self.aligned_at.elapsed() < ALIGN_EVERY {
            return Ok(());
        }
        self.aligned_at = Instant::now();
        // Holding partitions back costs throughput (about 45 % on `vigil bench`, whose
        // partitions drift a fetch's worth apart: the few left unheld cannot feed the node,
        // and a short run spends much of itself waiting for the last partitions' first
        // records), and what it saves is memory: by default it applies above half the
        // memory limit.
        let held = if !self.align_gate.throttled() {
            BTreeSet::new()
        } else {
            let pending = self.consumer.pending();
            // As long as the watermark would wait for a partition not yet seen.
            let wait_for_unseen = self.started.elapsed() < self.ctx.config.pipeline.event_time.idle_timeout;
            match self.ctx.event_time.lock() {
                Ok(board) => crate::analytics::watermark::ahead(&board, &pending, drift.as_millis() as i64, wait_for_unseen),
                Err(_) => return Ok(()),
            }
        };
        if held != *self.consumer.held() {
            tracing::debug!(held = held.len(), "watermark alignment: partitions ahead held back");
            metrics::gauge!("vigil_ingest_held_partitions").set(held.len() as f64);
            self.consumer.set_held(held)?;
        }
        Ok(())
    }

    fn inject_barrier(&mut self) -> crate::Result<u64> {
        let id = self.ctx.allocate_checkpoint();
        let offsets = self.consumer.positions();
        let barrier =
            Barrier { id, injected: Instant::now(), offsets: offsets.clone(), states: BTreeMap::new(), window_ops: Vec::new(), lineage: Default::default() };
        // Every Validate shard gets it after its last batch of the epoch.
        for i in 0..self.ctx.slots.validate.len() {
            self.ctx.slots.validate.get(i).send("validate", ValidateMsg::Barrier(barrier.clone()))?;
        }
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
            } else {
                // A barrier behind a slow sink (`max_outputs_per_sec`) is late, not stuck:
                // stuck is no window written for as long either.
                let sunk = self.ctx.stats.count(Stage::Sink);
                if sunk != self.sink_seen.0 {
                    self.sink_seen = (sunk, Instant::now());
                }
                let idle = at.elapsed().min(self.sink_seen.1.elapsed());
                if idle > cfg.flush_timeout * 2 + cfg.interval {
                    return Err(Error::CheckpointStuck { id: *id, waited: at.elapsed() });
                }
            }
        }
        if self.inflight.is_none() && (self.early || self.last_checkpoint.elapsed() >= cfg.interval) {
            self.early = false;
            self.inject_barrier()?;
        }
        Ok(())
    }
}

impl Actor for Ingest {
    type Msg = IngestMsg;
    type State = IngestState;
    type Arguments = Arc<NodeCtx>;

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "ingest"))]
    async fn pre_start(&self, myself: ActorRef<IngestMsg>, ctx: Arc<NodeCtx>) -> R<IngestState> {
        ctx.slots.ingest.set(myself.clone());
        let epoch = ctx.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let (bootstrap, kafka) = (ctx.bootstrap.clone(), ctx.config.kafka.clone());
        let topics: Vec<String> = ctx.config.pipeline.sources.iter().map(|s| s.topic.clone()).collect();
        let mut consumer = tokio::task::spawn_blocking(move || BatchConsumer::new(&bootstrap, &kafka, &topics, Duration::from_secs(30))).await??;
        let offsets = ctx.store.offsets()?;
        consumer.assign_from(&offsets)?;
        // Zero series for every partition, so "no loss" is a 0, not an absent series.
        for tp in consumer.assignment() {
            ctx.stats.add_lost(&tp.topic, tp.partition, 0);
        }
        tracing::info!(epoch, partitions = consumer.assignment().len(), restored = offsets.len(), "ingest assigned");
        ctx.stats.set_position(consumer.position_sum());
        for i in 0..ctx.slots.validate.len() {
            ctx.slots.validate.get(i).send("validate", ValidateMsg::Assign(consumer.assignment().to_vec()))?;
        }
        myself.send_message(IngestMsg::Poll)?;
        let memory = crate::memory::MemoryGovernor::new(ctx.config.node.memory_limit.0);
        let pct = u64::from(ctx.config.pipeline.event_time.align_above_memory_percent);
        let align_gate = crate::memory::MemoryGovernor::with_bands(ctx.config.node.memory_limit.0, pct, pct.saturating_sub(10));
        // Event times of a previous incarnation are ahead of what the replay brings.
        if let Ok(mut board) = ctx.event_time.lock() {
            board.clear();
        }
        metrics::gauge!("vigil_ingest_held_partitions").set(0.0);
        let credits = ctx.config.pipeline.inflight_batches_max;
        metrics::gauge!("vigil_ingest_credits").set(credits as f64);
        metrics::gauge!("vigil_memory_limit_bytes").set(ctx.config.node.memory_limit.0 as f64);
        metrics::gauge!("vigil_memory_throttled").set(0.0);
        metrics::gauge!("vigil_ingest_aligning").set(if align_gate.throttled() { 1.0 } else { 0.0 });
        metrics::counter!("vigil_memory_throttle_total").increment(0);
        metrics::gauge!("vigil_ingest_paused").set(0.0);
        ctx.stats.set_ready(true);
        let done = ctx.checkpoint_done.subscribe();
        let p = &ctx.config.pipeline;
        let rate = (p.max_records_per_sec > 0).then(|| RateLimit::new(p.max_records_per_sec, p.batch_max_records as u32, Instant::now()));
        Ok(IngestState {
            fault: StagePoint::new("ingest", "ingest"),
            ctx,
            consumer,
            epoch,
            credits,
            inflight: None,
            last_checkpoint: Instant::now(),
            early: false,
            held_for_changes: false,
            done,
            stalls: 0,
            starved: false,
            rate,
            in_flight_bytes: 0,
            memory,
            align_gate,
            aligned_at: Instant::now(),
            started: Instant::now(),
            memory_poll: Instant::now(),
            sink_seen: (0, Instant::now()),
            memory_checked: Instant::now(),
            latency: BTreeMap::new(),
            last_report: Instant::now(),
        })
    }

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "ingest"))]
    async fn handle(&self, myself: ActorRef<IngestMsg>, msg: IngestMsg, st: &mut IngestState) -> R<()> {
        match msg {
            IngestMsg::Poll => {
                st.fault.eval();
                st.maybe_checkpoint()?;
                // Over the memory limit: one batch per MEMORY_CHECK, not none. Progress lets
                // the watermark advance and windows close, which is what frees memory; a full
                // stop could wait forever on memory only progress releases.
                if st.over_memory() {
                    let since = st.memory_poll.elapsed();
                    if since < MEMORY_CHECK {
                        myself.send_after(MEMORY_CHECK - since, || IngestMsg::Poll);
                        return Ok(());
                    }
                    st.memory_poll = Instant::now();
                }
                // Windows changed since the last checkpoint: past half the bound the next
                // is taken early; past the bound, reading waits for it, so what a
                // checkpoint encodes and writes at once stays bounded.
                let changes = st.ctx.window_changes();
                let max = st.ctx.config.changes_max();
                metrics::gauge!("vigil_checkpoint_pending_changes").set(changes as f64);
                if changes >= max / 2 && !st.early && st.inflight.is_none() {
                    st.early = true;
                    st.maybe_checkpoint()?;
                }
                if changes >= max {
                    if !st.held_for_changes {
                        st.held_for_changes = true;
                        metrics::counter!("vigil_ingest_change_holds_total").increment(1);
                        tracing::debug!(changes, max, "windows changed past checkpoint.changes_max: reading waits for the next checkpoint");
                    }
                    myself.send_after(CHANGES_RECHECK, || IngestMsg::Poll);
                    return Ok(());
                }
                st.held_for_changes = false;
                if st.credits == 0 {
                    // Stop polling now; pause partitions only if the stall lasts.
                    st.starved = true;
                    st.stalls += 1;
                    let stall = st.stalls;
                    myself.send_after(st.ctx.config.pipeline.pause_after, move || IngestMsg::CheckStall { stall });
                    myself.send_after(STARVED_TICK, move || IngestMsg::StarvedTick { stall });
                    return Ok(());
                }
                // Out of a stall (credits back, or memory back under the limit).
                st.starved = false;
                if st.consumer.is_paused() {
                    st.consumer.resume()?;
                    metrics::gauge!("vigil_ingest_paused").set(0.0);
                }
                st.align()?;
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
                    let text = format!("{} records lost to retention (expected offset {}, log resumed at {})", g.lost(), g.expected, g.resumed_at);
                    let e = crate::journal::Event::now(crate::journal::EventKind::RetentionLoss, "ingest", text);
                    st.ctx.journal.record(e.stage("ingest").topic(&g.source.topic).partition(g.source.partition));
                }
                if !batches.is_empty() {
                    let n: usize = batches.iter().map(|b| b.len()).sum();
                    if let Some(rate) = &mut st.rate {
                        rate.take(n as u64);
                    }
                    st.ctx.stats.add(Stage::Ingest, n as u64);
                    st.credits -= 1;
                    let bytes = batches.iter().map(|b| b.memory_bytes()).sum();
                    st.in_flight_bytes += bytes;
                    let mut topics = Vec::new();
                    if st.ctx.config.quality.enabled {
                        topics = batches.iter().map(|b| b.source.topic.clone()).collect();
                        topics.dedup();
                    }
                    metrics::gauge!("vigil_ingest_credits").set(st.credits as f64);
                    let credit = Credit::new(myself.clone(), st.epoch, bytes, topics);
                    let shards = st.ctx.slots.validate.len();
                    if shards == 1 {
                        st.ctx.slots.validate.get(0).send("validate", ValidateMsg::Batch { credit, batches })?;
                    } else {
                        let mut split: Vec<Vec<_>> = (0..shards).map(|_| Vec::new()).collect();
                        for b in batches {
                            split[partition_shard(&b.source, shards)].push(b);
                        }
                        for (i, batches) in split.into_iter().enumerate().filter(|(_, b)| !b.is_empty()) {
                            st.ctx.slots.validate.get(i).send("validate", ValidateMsg::Batch { credit: credit.clone(), batches })?;
                        }
                    }
                }
                st.ctx.stats.set_lag(st.consumer.total_lag());
                st.ctx.stats.set_position(st.consumer.position_sum());
                st.report();
                myself.send_message(IngestMsg::Poll)?;
            }
            IngestMsg::CheckpointFailed { id } => {
                if st.inflight.as_ref().is_some_and(|(i, _, _)| *i == id) {
                    st.inflight = None;
                    st.last_checkpoint = Instant::now();
                }
            }
            IngestMsg::CheckpointSoon => {
                st.early = true;
                st.maybe_checkpoint()?;
            }
            IngestMsg::StarvedTick { stall } => {
                // Without credits Ingest does not poll, but barriers must still come: the
                // interval's, and the early one a Sink holding credits asked for.
                if st.starved && stall == st.stalls {
                    st.maybe_checkpoint()?;
                    myself.send_after(STARVED_TICK, move || IngestMsg::StarvedTick { stall });
                }
            }
            IngestMsg::CheckStall { stall } => {
                if st.starved && stall == st.stalls {
                    st.consumer.pause()?;
                    metrics::gauge!("vigil_ingest_paused").set(1.0);
                    tracing::debug!("no credits for {:?}: partitions paused", st.ctx.config.pipeline.pause_after);
                }
            }
            IngestMsg::Credit { epoch, polled, bytes, topics } => {
                if epoch == st.epoch {
                    st.credits += 1;
                    st.in_flight_bytes = st.in_flight_bytes.saturating_sub(bytes);
                    let ms = polled.elapsed().as_secs_f64() * 1000.0;
                    for t in topics {
                        st.latency.entry(t).or_default().push(ms);
                    }
                    metrics::gauge!("vigil_ingest_credits").set(st.credits as f64);
                    if st.starved {
                        st.starved = false;
                        myself.send_message(IngestMsg::Poll)?;
                    }
                }
            }
            IngestMsg::Panic(m) => panic!("injected panic in ingest: {m}"),
        }
        Ok(())
    }

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "ingest"))]
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
