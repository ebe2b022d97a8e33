//! The Lineage actor: applies lineage retention off the data path and keeps the size gauge.
//! (Lineage itself is written by Sink inside each checkpoint's atomic batch.)
use super::retention;
use crate::pipeline::NodeCtx;
use crate::stages::R;
use ractor::{Actor, ActorRef};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Messages into the Lineage actor.
pub enum LineageMsg {
    /// Apply retention now.
    Tick,
    /// Fail on purpose (drills).
    Panic(String),
}

/// The Lineage actor.
#[derive(Clone, Copy)]
pub struct Lineage;

/// Its state.
pub struct LineageState {
    ctx: Arc<NodeCtx>,
    ticker: ractor::concurrency::JoinHandle<()>,
}

/// How often retention runs: a tenth of `lineage.retention`, between 1 s and 1 min.
pub fn retention_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

impl Actor for Lineage {
    type Msg = LineageMsg;
    type State = LineageState;
    type Arguments = Arc<NodeCtx>;

    async fn pre_start(&self, myself: ActorRef<LineageMsg>, ctx: Arc<NodeCtx>) -> R<LineageState> {
        ctx.slots.lineage.set(myself.clone());
        let ticker = myself.send_interval(retention_interval(ctx.config.lineage.retention), || LineageMsg::Tick);
        myself.send_message(LineageMsg::Tick)?;
        Ok(LineageState { ctx, ticker })
    }

    async fn handle(&self, _myself: ActorRef<LineageMsg>, msg: LineageMsg, st: &mut LineageState) -> R<()> {
        match msg {
            LineageMsg::Tick => {
                let ctx = st.ctx.clone();
                let total = ctx.lineage.bytes.load(Ordering::Relaxed);
                let (store, cfg) = (ctx.store.clone(), ctx.config.lineage.clone());
                let (epochs, bytes) = tokio::task::spawn_blocking(move || retention::expire(&store, &cfg, vigil_runtime::now_ms(), total, 10_000)).await??;
                if epochs > 0 {
                    let left = ctx.lineage.bytes.fetch_sub(bytes.min(total), Ordering::Relaxed).saturating_sub(bytes);
                    metrics::gauge!("vigil_lineage_bytes").set(left as f64);
                    metrics::counter!("vigil_lineage_expired_bytes_total").increment(bytes);
                    tracing::info!(checkpoints = epochs, bytes, retained = left, "lineage retention removed the oldest checkpoints' lineage");
                }
            }
            LineageMsg::Panic(m) => panic!("injected panic in lineage: {m}"),
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<LineageMsg>, st: &mut LineageState) -> R<()> {
        st.ticker.abort();
        Ok(())
    }
}
