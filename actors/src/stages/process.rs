//! Process: per-key tumbling windows, snapshotted at each barrier.
use super::R;
use crate::lineage::record::{Collector, DeadLetter};
use crate::pipeline::{NodeCtx, ProcessMsg, Rejection, SinkMsg};
use crate::window::WindowState;
use crate::Error;
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_runtime::stats::Stage;
use vigil_runtime::store;
/// Process: per-key tumbling windows; restores its state from the last checkpoint.
#[derive(Clone, Copy)]
pub struct Process;

/// Process's state.
pub struct ProcessState {
    ctx: Arc<NodeCtx>,
    windows: WindowState,
    ticker: Option<ractor::concurrency::JoinHandle<()>>,
    /// Checkpoint the records passing now are committed in.
    epoch: u64,
    /// Lineage since the last barrier (when `lineage.enabled`).
    lineage: Option<Collector>,
}

impl ProcessState {
    fn close(&mut self) -> Vec<crate::window::WindowResult> {
        let out = self.windows.advance(Instant::now(), self.ctx.config.pipeline.window.idle_timeout);
        if let Some(c) = &mut self.lineage {
            for w in &out {
                c.closed(&w.key, w.window_start, w.count);
            }
        }
        metrics::gauge!("vigil_open_windows").set(self.windows.open_windows() as f64);
        if self.windows.closed_until() > i64::MIN {
            metrics::gauge!("vigil_watermark_seconds").set(self.windows.closed_until() as f64 / 1000.0);
            metrics::gauge!("vigil_watermark_lag_seconds").set((vigil_runtime::now_ms() - self.windows.closed_until()) as f64 / 1000.0);
        }
        out
    }
}

impl Actor for Process {
    type Msg = ProcessMsg;
    type State = ProcessState;
    type Arguments = Arc<NodeCtx>;

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "process"))]
    async fn pre_start(&self, myself: ActorRef<ProcessMsg>, ctx: Arc<NodeCtx>) -> R<ProcessState> {
        let w = &ctx.config.pipeline.window;
        let fresh = WindowState::new(w.size, w.allowed_lateness);
        let restore_started = Instant::now();
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
                let took = restore_started.elapsed();
                metrics::gauge!("vigil_restore_duration_seconds").set(took.as_secs_f64());
                metrics::counter!("vigil_restore_keys_total").increment(restored.open_windows() as u64);
                tracing::info!(open_windows = restored.open_windows(), bytes = bytes.len(), ms = took.as_millis() as u64, "process restored window state");
                restored
            }
            None => fresh,
        };
        let tick = (w.idle_timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let ticker = myself.send_interval(tick, || ProcessMsg::Tick);
        ctx.slots.process.set(myself);
        let epoch = ctx.current_epoch();
        let lineage = ctx.config.lineage.enabled.then(Collector::default);
        Ok(ProcessState { ctx, windows, ticker: Some(ticker), epoch, lineage })
    }

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "process"))]
    async fn handle(&self, _myself: ActorRef<ProcessMsg>, msg: ProcessMsg, st: &mut ProcessState) -> R<()> {
        match msg {
            ProcessMsg::Assign(tps) => st.windows.assign(&tps, Instant::now()),
            ProcessMsg::Records { epoch, records } => {
                let started = Instant::now();
                let now = Instant::now();
                let mut accepted = 0u64;
                let mut late_by_source: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
                for r in records {
                    match st.windows.add(&r.source, r.ts, &r.key, r.value, now) {
                        Ok(opened) => {
                            accepted += 1;
                            if let Some(c) = &mut st.lineage {
                                c.add(&r.key, st.windows.window_start(r.ts), opened, &r.source, r.envelope.offset, r.schema.as_ref());
                            }
                        }
                        Err(late) => {
                            let detail =
                                format!("event time {} falls in window starting {} which closed at watermark {}", r.ts, late.window_start, late.watermark);
                            let why = Rejection { stage: "process", code: "late", detail: &detail, schema: None, epoch: st.epoch };
                            st.ctx.send_to_dlq(&r.source, &r.envelope, why).await?;
                            if let Some(c) = &mut st.lineage {
                                c.reject(DeadLetter::new(
                                    &r.source,
                                    r.envelope.offset,
                                    &r.envelope.id,
                                    "process",
                                    "late",
                                    &detail,
                                    st.ctx.config.lineage.detail_max,
                                ));
                            }
                            *late_by_source.entry(r.source.topic.clone()).or_default() += 1;
                        }
                    }
                }
                st.ctx.stats.add(Stage::Process, accepted);
                for (source, n) in late_by_source {
                    let dlq = std::collections::BTreeMap::from([("late".to_string(), n)]);
                    st.ctx.report_quality(crate::quality::tracker::BatchQuality { source, late: n, dlq, ..Default::default() });
                }
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
                st.epoch = b.id + 1;
                b.states.insert("process".into(), store::encode("process window state", &st.windows)?);
                if let Some(c) = &mut st.lineage {
                    let mut l = c.take();
                    b.lineage.windows = l.windows;
                    b.lineage.rejects.append(&mut l.rejects);
                }
                st.ctx.slots.sink.send("sink", SinkMsg::Barrier(b))?;
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
