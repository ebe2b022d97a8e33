//! Sink: writes closed windows (JSON or Confluent-framed Avro) and completes checkpoints.
use super::R;
use crate::lineage::record::{commit_ops, EpochLineage};
use crate::pipeline::{Barrier, IngestMsg, NodeCtx, SinkMsg};
use crate::Error;
use ractor::{Actor, ActorRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use vigil_runtime::kafka::OutRecord;
use vigil_runtime::stats::{CheckpointSummary, Stage};
use vigil_runtime::store::{Checkpoint, CheckpointMeta, Op};
/// Sink: writes closed windows with deterministic keys, returns credits, and completes
/// checkpoints: flush outputs, then one atomic RocksDB commit.
#[derive(Clone, Copy)]
pub struct Sink;

/// Sink's state.
pub struct SinkState {
    ctx: Arc<NodeCtx>,
    failed_before: u64,
    /// Checkpoint the outputs written now are committed in.
    epoch: u64,
    /// Lineage of checkpoints whose store write failed, committed with the next one.
    carry: EpochLineage,
}

/// How a checkpoint attempt failed.
enum CommitError {
    /// Outputs were not acknowledged: what they hold is in doubt, the pipeline must rewind.
    Rewind(Error),
    /// The store write failed after the outputs were safe: processing continues and the next
    /// checkpoint retries, committing this one's lineage with its own.
    Store(Error, EpochLineage),
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
        Ok(SinkState { ctx, failed_before, epoch, carry: EpochLineage::default() })
    }

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "sink"))]
    async fn handle(&self, _myself: ActorRef<SinkMsg>, msg: SinkMsg, st: &mut SinkState) -> R<()> {
        let ctx = st.ctx.clone();
        match msg {
            SinkMsg::Windows { credit, windows } => {
                let started = Instant::now();
                let topic = &ctx.config.pipeline.sink_topic;
                let node = ctx.config.node.id.as_bytes();
                let epoch = st.epoch.to_string();
                let mut records = 0u64;
                for w in &windows {
                    let key = w.output_key();
                    let payload = match &ctx.sink_schema {
                        Some((id, schema)) => {
                            let datum = apache_avro::to_avro_datum(schema, w.to_avro()).map_err(|e| Error::Encode(e.to_string()))?;
                            crate::registry::wire::frame(*id, &datum)
                        }
                        None => serde_json::to_vec(w).map_err(|e| Error::Encode(e.to_string()))?,
                    };
                    let headers: [(&str, &[u8]); 4] = [
                        ("vigil.node", node),
                        ("vigil.epoch", epoch.as_bytes()),
                        ("vigil.config", ctx.config_hash.as_bytes()),
                        ("vigil.version", env!("CARGO_PKG_VERSION").as_bytes()),
                    ];
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
            Err(CommitError::Rewind(e)) => {
                ctx.stats.checkpoint_failed();
                ctx.lineage.failed(&format!("checkpoint {id} failed: {e}"), None);
                let text = format!("checkpoint {id} failed: {e}; the pipeline rewinds to the last checkpoint");
                ctx.journal.record(crate::journal::Event::now(crate::journal::EventKind::CheckpointFailure, "sink", text).stage("sink"));
                return Err(e);
            }
            Err(CommitError::Store(e, lineage)) => {
                ctx.stats.checkpoint_failed();
                tracing::error!(checkpoint = id, error = %e, "checkpoint not committed: the store write failed; processing continues and the next checkpoint retries");
                let last_committed = *ctx.checkpoint_done.borrow();
                ctx.lineage.failed(&format!("checkpoint {id} failed: {e}"), Some(last_committed));
                let text = format!("checkpoint {id} failed: {e}; processing continues, the next checkpoint retries");
                ctx.journal.record(crate::journal::Event::now(crate::journal::EventKind::CheckpointFailure, "sink", text).stage("sink"));
                st.carry = lineage;
                st.failed_before = ctx.producer.failed();
                st.epoch = id + 1;
                // Ingest may be restarting; its successor injects barriers afresh.
                let _ = ctx.slots.ingest.send("ingest", IngestMsg::CheckpointFailed { id });
                return Ok(());
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
        st.epoch = id + 1;
        tracing::debug!(checkpoint = id, size, "checkpoint committed");
        Ok(())
    }

    /// Flush outputs, then commit offsets, states, lineage and metadata atomically. Returns
    /// the state size in bytes.
    async fn commit(&self, st: &mut SinkState, mut b: Barrier) -> Result<u64, CommitError> {
        let ctx = st.ctx.clone();
        ctx.producer.flush_checked(ctx.config.checkpoint.flush_timeout, st.failed_before).await.map_err(|e| CommitError::Rewind(e.into()))?;
        let mut lineage = std::mem::take(&mut st.carry);
        lineage.absorb(std::mem::take(&mut b.lineage));
        match Self::write(&ctx, b, &lineage) {
            Ok(size) => Ok(size),
            // The outputs are safe; this epoch's lineage goes with the next checkpoint.
            Err(e) => Err(CommitError::Store(e, lineage)),
        }
    }

    /// The store part of a checkpoint: one atomic write of offsets, states, `lineage` and
    /// metadata. Returns the state size in bytes.
    fn write(ctx: &NodeCtx, b: Barrier, lineage: &EpochLineage) -> crate::Result<u64> {
        let completed_ms = vigil_runtime::now_ms();
        let mut committed = None;
        let mut extra: Vec<(&str, Op)> = Vec::new();
        if ctx.config.lineage.enabled {
            let prev = ctx.store.offsets()?;
            let p = &ctx.config.pipeline;
            let mut l = commit_ops(b.id, completed_ms, &ctx.config.node.id, &p.sink_topic, lineage, &prev, &b.offsets)?;
            let next = ctx.lineage.next_run(b.id, l.ops.is_empty())?;
            extra.extend(l.ops.drain(..).map(|op| ("lineage", op)));
            let next = next.map(|(run, op)| {
                extra.push(("lineage", op));
                run
            });
            committed = Some((l, next));
        }
        let state_bytes: BTreeMap<String, u64> = b.states.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect();
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
        ctx.store.commit_checkpoint(&Checkpoint { meta, states: b.states }, ctx.config.checkpoint.retained, &extra)?;
        ctx.stats.checkpointed(summary, size);
        let lineage_bytes = committed.as_ref().map_or(0, |(l, _)| l.bytes);
        metrics::gauge!("vigil_checkpoint_bytes").set((size + lineage_bytes) as f64);
        if let Some((l, next)) = committed {
            ctx.lineage.committed(&l.record, l.entries, l.bytes, next);
        }
        ctx.journal.record(crate::journal::Event::now(crate::journal::EventKind::Checkpoint, "sink", text).stage("sink"));
        Ok(size)
    }
}
