//! Sink: encodes closed windows (JSON or Confluent-framed Avro), completes checkpoints and
//! publishes each checkpoint's outputs once it has committed.
use super::R;
use crate::analytics::output::{json_bytes, output_key, to_avro, HeldOutput, Output, HELD_CF};
use crate::lineage::record::{commit_ops, EpochLineage};
use crate::pipeline::{Aligned, Aligner, Barrier, Credit, IngestMsg, NodeCtx, SinkMsg};
use crate::Error;
use ractor::{Actor, ActorRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use vigil_config::SinkFormat;
use vigil_runtime::failpoints::StagePoint;
use vigil_runtime::kafka::OutRecord;
use vigil_runtime::stats::{CheckpointSummary, Stage};
use vigil_runtime::store::{Checkpoint, CheckpointMeta, Op};
/// Sink: holds closed windows with deterministic keys, returns credits, and completes
/// checkpoints: flush what other stages wrote (dead letters), one atomic RocksDB commit that
/// includes the held outputs, then publish them; the checkpoint is complete once Kafka has
/// acknowledged them.
///
/// Outputs wait for their checkpoint because a run restored from an earlier one need not
/// repeat them: which sessions merge, and which records are late, depend on how partitions
/// interleave. Published only once committed, every output belongs to the run that goes on.
#[derive(Clone, Copy)]
pub struct Sink;

/// Sink's state.
pub struct SinkState {
    ctx: Arc<NodeCtx>,
    /// Barriers aligned over the Process shards.
    aligner: Aligner<(Option<Credit>, Vec<Output>), Barrier>,
    /// `pipeline.max_outputs_per_sec`, if set.
    rate: Option<crate::rate::RateLimit>,
    failed_before: u64,
    /// Checkpoint the outputs written now are committed in.
    epoch: u64,
    /// Lineage of checkpoints whose store write failed, committed with the next one.
    carry: EpochLineage,
    /// Window changes of checkpoints whose store write failed, written before the next
    /// one's (later writes of a key win within a batch).
    carry_ops: Vec<Op>,
    /// Fault injection (`stage.sink`), once per batch of windows.
    fault: StagePoint,
    /// Outputs since the last checkpoint, published once the next one commits.
    /// Each is an encoded [`HeldOutput`]: what the store keeps, one allocation, its size
    /// exact.
    held: Vec<Vec<u8>>,
    held_bytes: usize,
    /// An early checkpoint was asked for (`checkpoint.held_outputs_max`) since the last one.
    asked_early: bool,
    /// Credits of batches whose outputs arrived beyond `checkpoint.held_outputs_max`,
    /// returned once they are published: a slow sink holds Ingest back.
    held_credits: Vec<Credit>,
    /// Store keys of held outputs already published, deleted by the next checkpoint.
    published: Vec<Vec<u8>>,
    /// Last checkpoint committed (its outputs may still await acknowledgement, after which
    /// `checkpoint_done` says so).
    committed: u64,
}

/// How a checkpoint attempt failed.
enum CommitError {
    /// Outputs were not acknowledged: what they hold is in doubt, the pipeline must rewind.
    Rewind(Error),
    /// The store write failed after the outputs were safe: processing continues and the next
    /// checkpoint retries, committing this one's lineage and window changes with its own.
    Store(Error, EpochLineage, Vec<Op>, Vec<Vec<u8>>),
}

impl Actor for Sink {
    type Msg = SinkMsg;
    type State = SinkState;
    type Arguments = Arc<NodeCtx>;

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "sink"))]
    async fn pre_start(&self, myself: ActorRef<SinkMsg>, ctx: Arc<NodeCtx>) -> R<SinkState> {
        ctx.slots.sink.set(myself);
        let failed_before = ctx.producer.failed();
        let epoch = ctx.current_epoch();
        ctx.lineage.begin(&ctx.store, ctx.checkpoint_done.borrow().to_owned())?;
        let aligner = Aligner::new(ctx.slots.process.len());
        let per_sec = ctx.config.pipeline.max_outputs_per_sec;
        let mut rate = (per_sec > 0).then(|| crate::rate::RateLimit::new(per_sec, (per_sec / 10).max(1), Instant::now()));
        // Outputs the last checkpoint committed may not all have been published before the
        // node stopped: publish them (again) before anything new.
        let (mut held, mut published) = (Vec::new(), Vec::new());
        ctx.store.for_each(HELD_CF, &[], |k, v| {
            published.push(k.to_vec());
            held.push(v.to_vec());
            Ok(())
        })?;
        if !held.is_empty() {
            tracing::info!(outputs = held.len(), "publishing the outputs of the last checkpoint");
            let all = Self::publish(&ctx, &mut rate, &held).await?;
            ctx.producer.flush_checked(ctx.config.checkpoint.flush_timeout, failed_before).await?;
            // Stopped by a shutdown: none of them is forgotten by the next checkpoint.
            if !all {
                published.clear();
            }
        }
        let committed = *ctx.checkpoint_done.borrow();
        Ok(SinkState {
            ctx,
            aligner,
            rate,
            failed_before,
            epoch,
            carry: EpochLineage::default(),
            carry_ops: Vec::new(),
            fault: StagePoint::new("sink", "sink"),
            held: Vec::new(),
            held_bytes: 0,
            asked_early: false,
            held_credits: Vec::new(),
            published,
            committed,
        })
    }

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "sink"))]
    async fn handle(&self, _myself: ActorRef<SinkMsg>, msg: SinkMsg, st: &mut SinkState) -> R<()> {
        match msg {
            SinkMsg::Windows { from, credit, windows } => {
                st.fault.eval();
                st.aligner.data(from, (credit, windows))
            }
            SinkMsg::Barrier { from, barrier } => st.aligner.barrier(from, barrier),
            SinkMsg::Panic(m) => panic!("injected panic in sink: {m}"),
        }
        while let Some(next) = st.aligner.pop() {
            match next {
                // The credit is released once its windows are held, or beyond the bound of
                // held outputs, once they are published.
                Aligned::Data((credit, windows)) => {
                    Self::write_windows(st, &windows).await?;
                    if Self::over_bound(st) {
                        st.held_credits.extend(credit);
                    }
                }
                Aligned::Barrier(parts) => {
                    let Some(b) = merge_shards(parts)? else { continue };
                    self.complete_checkpoint(st, b).await?
                }
            }
        }
        metrics::gauge!("vigil_aligner_held_messages", "stage" => "sink", "shard" => "0").set(st.aligner.held() as f64);
        Ok(())
    }
}

/// Checkpoint `id` is complete (committed, its outputs acknowledged): status and Ingest
/// hear of it.
fn complete(ctx: &NodeCtx, id: u64, summary: CheckpointSummary, size: u64) {
    ctx.stats.checkpointed(summary, size);
    ctx.checkpoint_done.send_if_modified(|d| {
        let newer = id > *d;
        if newer {
            *d = id;
        }
        newer
    });
    tracing::debug!(checkpoint = id, size, "checkpoint complete");
}

/// The barrier parts of every Process shard as one: their meta records merged.
fn merge_shards(mut parts: Vec<Barrier>) -> crate::Result<Option<Barrier>> {
    let metas: Vec<Vec<u8>> = parts.iter_mut().filter_map(|p| p.states.remove(crate::analytics::state::META)).collect();
    let Some(mut b) = Barrier::merge(parts, "sink")? else { return Ok(None) };
    b.states.extend(crate::analytics::state::merge_metas(metas)?);
    Ok(Some(b))
}

impl Sink {
    /// Encode closed windows with their deterministic keys and hold them for the next
    /// checkpoint; ask for it early when they grow past `checkpoint.held_outputs_max`.
    async fn write_windows(st: &mut SinkState, windows: &[Output]) -> crate::Result<()> {
        let ctx = st.ctx.clone();
        let started = Instant::now();
        let epoch = st.epoch.to_string();
        for Output { agg, emit } in windows {
            let Some(spec) = ctx.analytics.aggs.get(*agg) else { continue };
            let key = output_key(&spec.name, &emit.key, emit.start);
            let topic = spec.topic.as_str();
            // A retraction (no values) is a tombstone, whatever the format.
            let payload = match ctx.sink_schemas.get(topic).filter(|_| spec.format == SinkFormat::Avro) {
                Some((id, schema)) => match to_avro(spec, emit) {
                    Some(datum) => {
                        let datum = apache_avro::to_avro_datum(schema, datum).map_err(|e| Error::Encode(e.to_string()))?;
                        Some(crate::registry::wire::frame(*id, &datum))
                    }
                    None => None,
                },
                None => json_bytes(spec, emit).map_err(|e| Error::Encode(e.to_string()))?,
            };
            let revision = emit.revision.to_string();
            let headers = vec![
                ("vigil.node", ctx.config.node.id.as_bytes()),
                ("vigil.epoch", epoch.as_bytes()),
                ("vigil.config", ctx.config_hash.as_bytes()),
                ("vigil.version", env!("CARGO_PKG_VERSION").as_bytes()),
                ("vigil.aggregation", spec.name.as_bytes()),
                ("vigil.revision", revision.as_bytes()),
            ];
            let records = if payload.is_some() && emit.revision == 0 { emit.count } else { 0 };
            let out = HeldOutput { topic, key: key.as_bytes(), payload: payload.as_deref(), headers, records };
            let out = vigil_runtime::store::encode("held output", &out)?;
            st.held_bytes += out.len();
            st.held.push(out);
        }
        metrics::gauge!("vigil_sink_held_outputs").set(st.held.len() as f64);
        if !st.asked_early && Self::over_bound(st) {
            st.asked_early = true;
            let _ = ctx.slots.ingest.send("ingest", IngestMsg::CheckpointSoon);
        }
        metrics::histogram!("vigil_stage_batch_seconds", "stage" => "sink").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Whether Sink holds more outputs than it should before they are published: over
    /// `checkpoint.held_outputs_max` bytes, or (with `pipeline.max_outputs_per_sec`) more
    /// than it may write in one `checkpoint.interval`.
    fn over_bound(st: &SinkState) -> bool {
        let c = &st.ctx.config;
        let per_interval = c.pipeline.max_outputs_per_sec as f64 * c.checkpoint.interval.as_secs_f64();
        st.held_bytes as u64 > c.held_outputs_max() || (c.pipeline.max_outputs_per_sec > 0 && st.held.len() as f64 > per_interval)
    }

    /// Send held outputs in order (at most `pipeline.max_outputs_per_sec`); the caller
    /// flushes. Returns whether all were sent: a node shutting down stops where the rate
    /// limit would make it wait, and leaves the rest (still in the store) to its next start.
    async fn publish(ctx: &NodeCtx, rate: &mut Option<crate::rate::RateLimit>, held: &[Vec<u8>]) -> crate::Result<bool> {
        let mut records = 0u64;
        let mut all = true;
        for h in held {
            let h: HeldOutput<'_> = vigil_runtime::store::decode_borrowed("held output", h)?;
            if let Some(rate) = rate {
                while rate.available(Instant::now()) == 0 {
                    if ctx.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                        all = false;
                        break;
                    }
                    tokio::time::sleep(rate.wait()).await;
                }
                if !all {
                    break;
                }
                rate.take(1);
            }
            let out = OutRecord { topic: h.topic, partition: None, key: h.key, payload: h.payload.unwrap_or_default(), headers: &h.headers };
            match h.payload {
                Some(_) => ctx.producer.send(&out, ctx.send_timeout()).await?,
                None => ctx.producer.send_tombstone(&out, ctx.send_timeout()).await?,
            }
            // Per window: a large emission written slowly shows its progress.
            ctx.stats.add(Stage::Sink, 1);
            records += h.records;
        }
        ctx.stats.add_window_records(records);
        Ok(all)
    }

    async fn complete_checkpoint(&self, st: &mut SinkState, b: Barrier) -> crate::Result<()> {
        let ctx = st.ctx.clone();
        let id = b.id;
        // The drills' self-test switches this bug on: commit without waiting for the outputs,
        // and count held outputs as published once committed, without keeping them.
        let bug = vigil_runtime::failpoints::eval(vigil_runtime::failpoints::BUG_ACK_BEFORE_FLUSH).is_some();
        let (size, summary, held) = match self.commit(st, b, bug).await {
            Ok(done) => done,
            Err(CommitError::Rewind(e)) => {
                ctx.stats.checkpoint_failed();
                ctx.note(crate::pipeline::Recent::CheckpointFailure, vigil_runtime::now_ms());
                ctx.lineage.failed(&format!("checkpoint {id} failed: {e}"), None);
                let text = format!("checkpoint {id} failed: {e}; the pipeline rewinds to the last checkpoint");
                ctx.journal.record(crate::journal::Event::now(crate::journal::EventKind::CheckpointFailure, "sink", text).stage("sink"));
                return Err(e);
            }
            Err(CommitError::Store(e, lineage, ops, held)) => {
                ctx.stats.checkpoint_failed();
                ctx.note(crate::pipeline::Recent::CheckpointFailure, vigil_runtime::now_ms());
                tracing::error!(checkpoint = id, error = %e, "checkpoint not committed: the store write failed; processing continues and the next checkpoint retries");
                ctx.lineage.failed(&format!("checkpoint {id} failed: {e}"), Some(st.committed));
                let text = format!("checkpoint {id} failed: {e}; processing continues, the next checkpoint retries");
                ctx.journal.record(crate::journal::Event::now(crate::journal::EventKind::CheckpointFailure, "sink", text).stage("sink"));
                // Its held outputs stay held, for the next checkpoint.
                st.held = held;
                st.carry = lineage;
                st.carry_ops = ops;
                st.epoch = id + 1;
                // Ingest may be restarting; its successor injects barriers afresh.
                let _ = ctx.slots.ingest.send("ingest", IngestMsg::CheckpointFailed { id });
                return Ok(());
            }
        };
        crate::memory::after_checkpoint(ctx.config.node.memory_limit.0);
        // Committed: publish what it held. Until they are acknowledged they stay in the
        // store, and a restart publishes them again.
        st.committed = id;
        st.held_bytes = 0;
        st.asked_early = false;
        metrics::gauge!("vigil_sink_held_outputs").set(0.0);
        if !held.is_empty() && vigil_runtime::failpoints::eval(vigil_runtime::failpoints::SINK_PUBLISH).is_some() {
            tracing::error!(checkpoint = id, outputs = held.len(), "failpoint {}: aborting before publishing", vigil_runtime::failpoints::SINK_PUBLISH);
            std::process::abort();
        }
        let all = match Self::publish(&ctx, &mut st.rate, &held).await {
            Ok(all) => all,
            Err(e) => {
                let text = format!("checkpoint {id} committed, but its outputs could not be sent: {e}; the pipeline restarts and publishes them again");
                tracing::error!(checkpoint = id, error = %e, "{text}");
                ctx.journal.record(crate::journal::Event::now(crate::journal::EventKind::CheckpointFailure, "sink", text).stage("sink"));
                return Err(e);
            }
        };
        st.held_credits.clear();
        st.epoch = id + 1;
        // Outputs left unpublished by a shutdown stay in the store for the next start.
        st.published = if all && !bug { (0..held.len() as u32).map(|i| HeldOutput::store_key(id, i)).collect() } else { Vec::new() };
        if !all {
            tracing::warn!(checkpoint = id, outputs = held.len(), "shutting down: the rest of this checkpoint's outputs are published by the next start");
        }
        if held.is_empty() || bug || !all {
            complete(&ctx, id, summary, size);
            return Ok(());
        }
        // Complete once Kafka has acknowledged its outputs: a task waits for that while Sink
        // goes on. A delivery that failed also fails the next checkpoint's flush, which
        // rewinds the pipeline; the outputs are still in the store until that one commits.
        let failed_before = st.failed_before;
        tokio::spawn(async move {
            match ctx.producer.flush_checked(ctx.config.checkpoint.flush_timeout, failed_before).await {
                Ok(()) => complete(&ctx, id, summary, size),
                Err(e) => tracing::warn!(checkpoint = id, error = %e, "outputs not acknowledged; the next checkpoint's flush decides"),
            }
        });
        Ok(())
    }

    /// Flush what other stages wrote (dead letters, late records), then commit offsets,
    /// states, lineage, held outputs and metadata atomically. Returns the state size in
    /// bytes, the checkpoint's summary and the outputs it held, to publish. With the
    /// self-test `bug`, neither waits nor keeps the outputs.
    async fn commit(&self, st: &mut SinkState, mut b: Barrier, bug: bool) -> Result<(u64, CheckpointSummary, Vec<Vec<u8>>), CommitError> {
        let ctx = st.ctx.clone();
        if !bug {
            ctx.producer.flush_checked(ctx.config.checkpoint.flush_timeout, st.failed_before).await.map_err(|e| CommitError::Rewind(e.into()))?;
        }
        // Deliveries that fail from here on fail the next checkpoint.
        st.failed_before = ctx.producer.failed();
        // Held outputs move into the write and back out of it (no copy of them).
        let deletes = st.published.len();
        let mut held_ops: Vec<Op> = st.published.iter().map(|k| (k.clone(), None)).collect();
        let mut held = std::mem::take(&mut st.held);
        if !bug {
            held_ops.extend(held.drain(..).enumerate().map(|(i, h)| (HeldOutput::store_key(b.id, i as u32), Some(h))));
        }
        let take_back = move |ops: Vec<Op>| {
            held.extend(ops.into_iter().skip(deletes).filter_map(|(_, v)| v));
            held
        };
        let mut lineage = std::mem::take(&mut st.carry);
        lineage.absorb(std::mem::take(&mut b.lineage));
        let mut ops = std::mem::take(&mut st.carry_ops);
        ops.append(&mut b.window_ops);
        // A synced write of every held output and changed window takes tens of ms: off the
        // worker, so the other stages go on meanwhile.
        match tokio::task::block_in_place(|| Self::write(&ctx, b, &lineage, &ops, &held_ops)) {
            Ok((size, summary)) => Ok((size, summary, take_back(held_ops))),
            // The outputs are safe; this epoch's lineage and window changes go with the next checkpoint.
            Err(e) => Err(CommitError::Store(e, lineage, ops, take_back(held_ops))),
        }
    }

    /// The store part of a checkpoint: one atomic write of offsets, states, `lineage`, held
    /// outputs and metadata. Returns the state size in bytes and the checkpoint's summary.
    fn write(ctx: &NodeCtx, b: Barrier, lineage: &EpochLineage, window_ops: &[Op], held_ops: &[Op]) -> crate::Result<(u64, CheckpointSummary)> {
        let completed_ms = vigil_runtime::now_ms();
        let mut committed = None;
        let mut lineage_ops: Vec<Op> = Vec::new();
        if ctx.config.lineage.enabled {
            let prev = ctx.store.offsets()?;
            let p = &ctx.config.pipeline;
            let outputs: Vec<(String, String)> =
                ctx.analytics.aggs.iter().filter(|a| a.topic != p.sink_topic).map(|a| (a.name.to_string(), a.topic.clone())).collect();
            let mut l = commit_ops(b.id, completed_ms, &ctx.config.node.id, &p.sink_topic, &outputs, lineage, &prev, &b.offsets)?;
            let next = ctx.lineage.next_run(b.id, l.ops.is_empty())?;
            lineage_ops.append(&mut l.ops);
            let next = next.map(|(run, op)| {
                lineage_ops.push(op);
                run
            });
            committed = Some((l, next));
        }
        let mut state_bytes: BTreeMap<String, u64> = b.states.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect();
        let windows_written: u64 = window_ops.iter().map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64).sum();
        state_bytes.insert("windows".into(), windows_written);
        state_bytes.insert("outputs".into(), held_ops.iter().map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64).sum());
        let (puts, deletes) = window_ops.iter().fold((0u64, 0u64), |(p, d), (_, v)| if v.is_some() { (p + 1, d) } else { (p, d + 1) });
        let meta = CheckpointMeta {
            id: b.id,
            completed_ms,
            node_id: ctx.config.node.id.clone(),
            offsets: b.offsets,
            state_bytes,
            duration_us: b.injected.elapsed().as_micros() as u64,
        };
        let size: u64 = meta.state_bytes.values().sum();
        let summary = CheckpointSummary { id: meta.id, completed_ms: meta.completed_ms, duration_us: meta.duration_us };
        let text =
            format!("checkpoint {} committed ({:.1} ms, {} partitions, {size} state bytes)", meta.id, meta.duration_us as f64 / 1000.0, meta.offsets.len());
        let extra: [(&str, &[Op]); 3] = [(crate::analytics::state::CF, window_ops), ("lineage", &lineage_ops), (HELD_CF, held_ops)];
        ctx.store.commit_checkpoint(&Checkpoint { meta, states: b.states }, ctx.config.checkpoint.retained, &extra)?;
        metrics::counter!("vigil_checkpoint_window_writes_total", "op" => "put").increment(puts);
        metrics::counter!("vigil_checkpoint_window_writes_total", "op" => "delete").increment(deletes);
        let lineage_bytes = committed.as_ref().map_or(0, |(l, _)| l.bytes);
        metrics::gauge!("vigil_checkpoint_bytes").set((size + lineage_bytes) as f64);
        if let Some((l, next)) = committed {
            ctx.lineage.committed(&l.record, l.entries, l.bytes, next);
        }
        ctx.journal.record(crate::journal::Event::now(crate::journal::EventKind::Checkpoint, "sink", text).stage("sink"));
        Ok((size, summary))
    }
}
