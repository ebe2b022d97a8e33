//! Process: runs every configured aggregation over the validated records with per-partition
//! watermarks, routes records too late for an aggregation to the late output, and adds the
//! windows changed since the last barrier to it (incremental checkpoints).
use super::R;
use crate::analytics::engine::{Aggregation, Touched};
use crate::analytics::metrics::Val;
use crate::analytics::output::{lineage_key, lineage_key_into, Output};
use crate::analytics::spec::FieldVal;
use crate::analytics::state;
use crate::analytics::watermark::Watermarks;
use crate::lineage::record::{Collector, DeadLetter};
use crate::pipeline::{Aligned, Aligner, Barrier, Credit, NodeCtx, ProcessMsg, Rejection, Route, SinkMsg, Valid};
use crate::Error;
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_runtime::failpoints::StagePoint;
use vigil_runtime::stats::Stage;
use vigil_runtime::store;

/// Process: the aggregations; restores their windows from the last checkpoint.
#[derive(Clone, Copy)]
pub struct Process;

/// Per-aggregation record counts since the last report.
#[derive(Default, Clone, Copy)]
struct Counts {
    counted: u64,
    filtered: u64,
    late: u64,
}

/// A batch waiting in the aligner: its credit, records and route.
type Work = (Credit, Arc<Valid>, Route);

/// Records of a batch with the aggregations a shard runs each through (`None`: all).
type Rows<'a> = Box<dyn Iterator<Item = (usize, Option<&'a [(u32, u32)]>)> + Send + 'a>;

/// Process's state.
pub struct ProcessState {
    ctx: Arc<NodeCtx>,
    /// This shard's index and its name as a label.
    shard: usize,
    shard_label: String,
    /// Barriers aligned over the Validate shards.
    aligner: Aligner<Work, Barrier>,
    aggs: Vec<Aggregation>,
    watermarks: Watermarks,
    ticker: Option<ractor::concurrency::JoinHandle<()>>,
    /// Checkpoint the records passing now are committed in.
    epoch: u64,
    /// Lineage since the last barrier (when `lineage.enabled`).
    lineage: Option<Collector>,
    /// Deletes of windows of aggregations no longer configured, for the next checkpoint.
    stale: Vec<store::Op>,
    /// Fault injection (`stage.process`, `stage.process-<i>`), once per batch.
    fault: StagePoint,
}

impl ProcessState {
    /// Advance every aggregation to the current watermark; returns what they emit.
    fn close(&mut self) -> Vec<Output> {
        let now = Instant::now();
        let wm = self.watermarks.current(now, self.ctx.config.pipeline.event_time.idle_timeout);
        let mut out = Vec::new();
        let an = &self.ctx.analytics;
        for (i, (agg, spec)) in self.aggs.iter_mut().zip(&an.aggs).enumerate() {
            if let Some(wm) = wm {
                for emit in agg.advance(wm) {
                    if let (Some(c), Some(_)) = (&mut self.lineage, &emit.values) {
                        c.closed(&lineage_key(&spec.name, &emit.key), emit.start, emit.count);
                    }
                    out.push(Output { agg: i, emit });
                }
            }
            metrics::gauge!("vigil_open_windows", "aggregation" => spec.name.to_string(), "shard" => self.shard_label.clone()).set(agg.open_windows() as f64);
        }
        if let Some(wm) = wm {
            metrics::gauge!("vigil_watermark_seconds").set(wm as f64 / 1000.0);
            metrics::gauge!("vigil_watermark_lag_seconds").set((vigil_runtime::now_ms() - wm) as f64 / 1000.0);
        }
        out
    }

    /// Run this shard's part of a batch through the aggregations; late records go to the
    /// late output. Returns the records counted as processed here.
    async fn process(&mut self, valid: &Valid, route: &Route) -> crate::Result<u64> {
        let ctx = self.ctx.clone();
        let an = &ctx.analytics;
        let now = Instant::now();
        let mut counts = vec![Counts::default(); an.aggs.len()];
        let (mut key, mut lkey) = (String::new(), String::new());
        let mut fields: Vec<FieldVal<'_>> = Vec::with_capacity(an.fields.len());
        let mut vals: Vec<Val<'_>> = Vec::new();
        let mut late_in: Vec<usize> = Vec::new();
        let mut late_by_source: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        let mut accepted = 0u64;
        // (record, the aggregations this shard runs it through: None = all)
        let rows: Rows<'_> = match route {
            Route::All => Box::new((0..valid.records.len()).map(|r| (r, None))),
            Route::Pairs(p) => Box::new(p.chunk_by(|a, b| a.0 == b.0).map(|c| (c[0].0 as usize, Some(c)))),
        };
        for (row, sel) in rows {
            let Some(r) = valid.records.get(row) else { continue };
            let Some(batch) = valid.batches.get(r.batch as usize) else { continue };
            // Counted where its aggregation 0 runs (every shard when there is one).
            let primary = sel.is_none_or(|s| s[0].1 == 0);
            let source = &batch.source;
            // Only lineage needs the offset: read it from the batch when it is asked for.
            let offset = || batch.get(r.index as usize).map_or(-1, |e| e.offset());
            valid.fields.row_into(row, &mut fields);
            late_in.clear();
            let mut late_wm = i64::MIN;
            for (i, (agg, spec)) in self.aggs.iter_mut().zip(&an.aggs).enumerate() {
                if sel.is_some_and(|s| !s.iter().any(|(_, a)| *a as usize == i)) {
                    continue;
                }
                if !spec.accepts(&fields) {
                    counts[i].filtered += 1;
                    continue;
                }
                spec.key_into(&fields, &mut key);
                spec.values_into(&fields, &mut vals);
                let lineage = &mut self.lineage;
                if lineage.is_some() {
                    lineage_key_into(&spec.name, &key, &mut lkey);
                }
                let added = agg.add(&key, r.ts, &vals, |t| match (lineage.as_mut(), t) {
                    (Some(c), Touched::Window { start, opened }) => c.add(&lkey, start, opened, source, offset(), r.schema.as_ref()),
                    (Some(c), Touched::Merged { from, into }) => c.merged(&lkey, from, into),
                    (None, _) => {}
                });
                match added {
                    Ok(()) => counts[i].counted += 1,
                    Err(late) => {
                        counts[i].late += 1;
                        late_wm = late_wm.max(late.watermark);
                        late_in.push(i);
                    }
                }
            }
            if late_in.is_empty() {
                accepted += u64::from(primary);
                continue;
            }
            let names: Vec<&str> = late_in.iter().map(|i| &*an.aggs[*i].name).collect();
            let names = names.join(",");
            let detail = format!("event time {} is later than allowed for aggregation(s) {names}: their windows closed at watermark {late_wm}", r.ts);
            let extra: [(&str, &[u8]); 1] = [("vigil.late.aggregations", names.as_bytes())];
            let why = Rejection {
                stage: "process",
                code: "late",
                detail: &detail,
                schema: None,
                epoch: self.epoch,
                to: ctx.config.pipeline.late_topic.as_deref(),
                extra: &extra,
            };
            let Some(envelope) = valid.envelope(r) else { continue };
            ctx.send_to_dlq(envelope, why).await?;
            if let Some(c) = &mut self.lineage {
                c.reject(DeadLetter::new(source, envelope.offset(), &envelope.id(), "process", "late", &detail, ctx.config.lineage.detail_max));
            }
            *late_by_source.entry(source.topic.clone()).or_default() += 1;
        }
        // Event-time maxima per partition batch, observed once per batch, by every shard;
        // shard 0 tells Ingest (watermark alignment).
        for (tp, max) in &valid.maxima {
            self.watermarks.observe(tp, *max, now);
        }
        if self.shard == 0 && !valid.maxima.is_empty() {
            if let Ok(mut board) = self.ctx.event_time.lock() {
                for (tp, max) in &valid.maxima {
                    let e = board.entry(tp.clone()).or_insert(*max);
                    *e = (*e).max(*max);
                }
            }
        }
        for (spec, c) in an.aggs.iter().zip(&counts) {
            let name = spec.name.to_string();
            for (outcome, n) in [("counted", c.counted), ("filtered", c.filtered), ("late", c.late)] {
                if n > 0 {
                    metrics::counter!("vigil_aggregation_records_total", "aggregation" => name.clone(), "outcome" => outcome).increment(n);
                }
            }
            if c.late > 0 {
                metrics::counter!("vigil_late_records_total", "aggregation" => name).increment(c.late);
            }
        }
        for (source, n) in late_by_source {
            let dlq = std::collections::BTreeMap::from([("late".to_string(), n)]);
            ctx.report_quality(crate::quality::tracker::BatchQuality { source, late: n, dlq, ..Default::default() });
        }
        Ok(accepted)
    }

    /// Handle what the aligner lets through, in order.
    async fn drain(&mut self) -> crate::Result<()> {
        while let Some(next) = self.aligner.pop() {
            match next {
                Aligned::Data((credit, valid, route)) => {
                    let started = Instant::now();
                    let accepted = self.process(&valid, &route).await?;
                    self.ctx.stats.add(Stage::Process, accepted);
                    let windows = self.close();
                    self.count_changes();
                    metrics::histogram!("vigil_stage_batch_seconds", "stage" => "process").record(started.elapsed().as_secs_f64());
                    self.ctx.slots.sink.send("sink", SinkMsg::Windows { from: self.shard, credit: Some(credit), windows })?;
                    // The last shard done with the batch measures its latency.
                    if let Some(valid) = Arc::into_inner(valid) {
                        record_latency(&self.ctx, &valid);
                    }
                }
                Aligned::Barrier(parts) => {
                    let Some(mut b) = Barrier::merge(parts, &format!("process-{}", self.shard))? else { continue };
                    self.epoch = b.id + 1;
                    self.snapshot(&mut b)?;
                    if let Some(c) = &mut self.lineage {
                        let mut l = c.take();
                        b.lineage.windows = l.windows;
                        b.lineage.rejects.append(&mut l.rejects);
                    }
                    self.ctx.slots.sink.send("sink", SinkMsg::Barrier { from: self.shard, barrier: b })?;
                }
            }
        }
        metrics::gauge!("vigil_aligner_held_messages", "stage" => "process", "shard" => self.shard_label.clone()).set(self.aligner.held() as f64);
        Ok(())
    }

    /// Add the windows changed since the last barrier, and the meta record, to `b`.
    fn snapshot(&mut self, b: &mut crate::pipeline::Barrier) -> crate::Result<()> {
        let mut ops = std::mem::take(&mut self.stale);
        let meta = state::snapshot(&self.ctx.analytics, &mut self.aggs, &self.watermarks, &mut ops)?;
        b.states.insert("process".into(), meta);
        b.window_ops = ops;
        self.count_changes();
        Ok(())
    }

    /// Tell Ingest how many windows this shard changed since the last checkpoint.
    fn count_changes(&self) {
        let n = self.aggs.iter().map(Aggregation::pending_changes).sum();
        if let Some(slot) = self.ctx.window_changes.get(self.shard) {
            slot.store(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Produce → processed latency of every record of the batch (from its Kafka timestamp),
/// and of its oldest record as `vigil_record_latency_seconds`.
fn record_latency(ctx: &NodeCtx, valid: &Valid) {
    let now = vigil_runtime::now_ms();
    let mut oldest: Option<i64> = None;
    let stamps = valid.batches.iter().flat_map(|b| b.iter().filter_map(|e| e.timestamp_ms()));
    ctx.stats.latency.record_all(stamps.map(|t| {
        oldest = Some(oldest.map_or(t, |o| o.min(t)));
        now - t
    }));
    if let Some(oldest) = oldest {
        metrics::histogram!("vigil_record_latency_seconds").record((now - oldest).max(0) as f64 / 1000.0);
    }
}

impl Actor for Process {
    type Msg = ProcessMsg;
    type State = ProcessState;
    type Arguments = (Arc<NodeCtx>, usize);

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "process", shard))]
    async fn pre_start(&self, myself: ActorRef<ProcessMsg>, (ctx, shard): (Arc<NodeCtx>, usize)) -> R<ProcessState> {
        let et = &ctx.config.pipeline.event_time;
        let started = Instant::now();
        let mut reported = 0;
        let shards = ctx.slots.process.len();
        let restored = state::restore(&ctx.store, &ctx.analytics, et.out_of_orderness, (shard, shards), |n| {
            metrics::counter!("vigil_restore_keys_total").increment(n - reported);
            reported = n;
            tracing::info!(windows = n, secs = started.elapsed().as_secs_f64(), "restoring window state");
        })?;
        let restored = restored.map_err(|reason| Box::new(Error::IncompatibleState { stage: "process", reason }))?;
        let took = started.elapsed();
        metrics::gauge!("vigil_restore_duration_seconds").set(took.as_secs_f64());
        metrics::counter!("vigil_restore_keys_total").increment(restored.windows - reported);
        let watermarks: Vec<Option<i64>> = restored.aggs.iter().map(Aggregation::watermark).collect();
        tracing::debug!(?watermarks, partitions = ?restored.watermarks.current(Instant::now(), et.idle_timeout), "restored watermarks");
        if restored.windows > 0 {
            tracing::info!(windows = restored.windows, bytes = restored.bytes, ms = took.as_millis() as u64, "process restored window state");
        }
        let tick = (et.idle_timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let ticker = myself.send_interval(tick, || ProcessMsg::Tick);
        ctx.slots.process.get(shard).set(myself);
        // A restored shard has changed nothing since its checkpoint.
        if let Some(slot) = ctx.window_changes.get(shard) {
            slot.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        let epoch = ctx.current_epoch();
        let lineage = ctx.config.lineage.enabled.then(Collector::default);
        let aligner = Aligner::new(ctx.slots.validate.len());
        let fault = StagePoint::new("process", &crate::pipeline::shard_name("process", shard, ctx.slots.process.len()));
        Ok(ProcessState {
            fault,
            shard_label: shard.to_string(),
            shard,
            aligner,
            ctx,
            aggs: restored.aggs,
            watermarks: restored.watermarks,
            ticker: Some(ticker),
            epoch,
            lineage,
            stale: restored.stale,
        })
    }

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "process", shard = st.shard))]
    async fn handle(&self, _myself: ActorRef<ProcessMsg>, msg: ProcessMsg, st: &mut ProcessState) -> R<()> {
        match msg {
            ProcessMsg::Assign(tps) => st.watermarks.assign(&tps, Instant::now()),
            ProcessMsg::Records { from, credit, valid, route } => {
                st.fault.eval();
                st.aligner.data(from, (credit, valid, route));
                st.drain().await?;
            }
            ProcessMsg::Tick => {
                let windows = st.close();
                if !windows.is_empty() {
                    st.ctx.slots.sink.send("sink", SinkMsg::Windows { from: st.shard, credit: None, windows })?;
                }
            }
            ProcessMsg::Barrier { from, barrier } => {
                st.aligner.barrier(from, barrier);
                st.drain().await?;
            }
            ProcessMsg::Panic(m) => panic!("injected panic in process: {m}"),
        }
        Ok(())
    }

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "process"))]
    async fn post_stop(&self, _myself: ActorRef<ProcessMsg>, st: &mut ProcessState) -> R<()> {
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        Ok(())
    }
}
