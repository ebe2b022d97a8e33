//! The Quality actor: folds the stages' per-batch reports into the tracker, and each
//! `quality.interval` publishes the report (`vigil dq`, `vigil_dq_*`), persists finished
//! slots to RocksDB (column family `quality`, kept for `quality.history`) and hands the
//! series to the Alerting actor. Supervised apart from the data path.
use super::report::{DqReport, Stalls};
use super::tracker::{BatchQuality, Slot, SourceQuality, Tracker};
use crate::alerting::actor::AlertMsg;
use crate::journal::{Event, EventKind};
use crate::pipeline::NodeCtx;
use crate::stages::R;
use ractor::{Actor, ActorRef};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use vigil_runtime::store::{self, Store};

/// Messages into the Quality actor.
pub enum QualityMsg {
    /// What one batch of one source showed.
    Batch(Box<BatchQuality>),
    /// Publish the report and evaluate alerts.
    Tick,
    /// Fail on purpose (drills).
    Panic(String),
}

const CF: &str = "quality";

fn restore(store: &Store, tracker: &mut Tracker, oldest_ms: i64) -> i64 {
    let rows = match store.scan(CF, &[]) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "quality history unreadable; starting without it");
            return i64::MIN;
        }
    };
    let mut stale = Vec::new();
    let mut slots = Vec::new();
    for (k, v) in rows {
        let start = <[u8; 8]>::try_from(k.as_slice()).map(i64::from_be_bytes).unwrap_or(i64::MIN);
        if start < oldest_ms {
            stale.push((k, None));
            continue;
        }
        match store::decode::<Slot>("quality slot", &v) {
            Ok(s) => slots.push(s),
            Err(_) => stale.push((k, None)),
        }
    }
    if let Err(e) = store.write_ops(CF, &stale) {
        tracing::warn!(error = %e, "old quality history not pruned");
    }
    let last = slots.iter().map(|s| s.start_ms).max().unwrap_or(i64::MIN);
    if !slots.is_empty() {
        tracing::info!(slots = slots.len(), "restored quality history");
    }
    tracker.restore(slots);
    last
}

/// One slot of the persisted history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryPoint {
    /// Slot start, ms since epoch.
    pub at_ms: i64,
    /// Slot length, seconds.
    pub seconds: f64,
    /// Quality per source in that slot.
    pub sources: Vec<SourceQuality>,
}

/// The persisted history between `from_ms` and `to_ms` (slot starts), oldest first, read
/// from RocksDB (works while the node runs; what incident timelines are built from).
///
/// # Errors
/// The store cannot be read.
pub fn read_history(store: &Store, slot: std::time::Duration, from_ms: i64, to_ms: i64) -> vigil_runtime::Result<Vec<HistoryPoint>> {
    let slot_ms = (slot.as_millis() as i64).max(1);
    let mut slots = Vec::new();
    // Keys are slot starts as big-endian i64: positive times sort by time.
    let (from, to) = (from_ms.max(0).to_be_bytes(), to_ms.max(0).saturating_add(1).to_be_bytes());
    for (_, v) in store.scan_range(CF, &from, &to)? {
        slots.push(store::decode::<Slot>("quality slot", &v)?);
    }
    let mut t = Tracker::new(slot_ms, slots.len().max(1));
    t.restore(slots);
    Ok(t.per_slot().into_iter().map(|(at_ms, sources)| HistoryPoint { at_ms, seconds: slot_ms as f64 / 1000.0, sources }).collect())
}

/// The Quality actor.
#[derive(Clone, Copy)]
pub struct Quality;

/// Its state.
pub struct QualityState {
    ctx: Arc<NodeCtx>,
    tracker: Tracker,
    stalls: Stalls,
    persisted_until: i64,
    history_slots: i64,
    /// (source, reason) whose DLQ rate is above `incidents.dlq_burst_per_sec`.
    bursting: std::collections::BTreeSet<(String, String)>,
    ticker: Option<ractor::concurrency::JoinHandle<()>>,
}

impl QualityState {
    fn tick(&mut self) {
        let q = &self.ctx.config.quality;
        let now = vigil_runtime::now_ms();
        let mut report = DqReport {
            at_ms: now,
            window_seconds: q.window.as_secs_f64(),
            sources: self.tracker.snapshot(now, q.window.as_millis() as i64),
            brokers_up: None,
            dropped_reports: self.ctx.quality_dropped.load(Ordering::Relaxed),
            restarts_per_min: self.ctx.per_minute(crate::pipeline::Recent::Restart, now),
            checkpoint_failures_per_min: self.ctx.per_minute(crate::pipeline::Recent::CheckpointFailure, now),
            access_denied_per_min: self.ctx.security.denied_last_minute(now),
            unclean_restart: self.ctx.unclean_restart(now, q.window),
        };
        // Every configured source is reported, read or not: a silent source is news.
        for s in &self.ctx.config.pipeline.sources {
            if !report.sources.iter().any(|x| x.source == s.topic) {
                report.sources.push(SourceQuality::empty(&s.topic));
            }
        }
        report.sources.sort_by(|a, b| a.source.cmp(&b.source));
        let progress = self.ctx.stats.progress();
        let stalled = self.stalls.observe(now, &progress);
        report.add_progress(&progress, &stalled);
        // The history keeps the highest lag of each slot (records delayed, for incidents).
        for s in &report.sources {
            self.tracker.observe(now, &BatchQuality { source: s.source.clone(), max_lag: s.lag, ..BatchQuality::default() });
        }
        let samples = report.samples();
        DqReport::export(&samples);
        self.journal_bursts(&report);
        self.ctx.dq.send_replace(report);
        if self.ctx.alerting_enabled() {
            // Alerting may be restarting; the next interval evaluates again.
            let _ = self.ctx.slots.alerting.send("alerting", AlertMsg::Evaluate { now_ms: now, samples });
        }
        self.persist(now);
    }

    /// Journal a DLQ reason rising above `incidents.dlq_burst_per_sec` and
    /// `dlq_burst_share` of the records read, and its end (below half of that), per source.
    fn journal_bursts(&mut self, report: &DqReport) {
        let (threshold, share) = (self.ctx.config.incidents.dlq_burst_per_sec, self.ctx.config.incidents.dlq_burst_share);
        for s in &report.sources {
            let burst_rate = threshold.max(share * s.records_per_sec);
            for (reason, rate) in &s.dlq_per_sec {
                let key = (s.source.clone(), reason.clone());
                let stage = if reason == "late" { "process" } else { "validate" };
                if *rate >= burst_rate && !self.bursting.contains(&key) {
                    let text = format!("DLQ burst: {reason} at {rate:.1} records/s (validity {:.1} %)", s.validity_ratio * 100.0);
                    self.ctx.journal.record(Event::now(EventKind::DlqBurst, "quality", text).stage(stage).topic(&s.source).link("/dq"));
                    self.bursting.insert(key);
                } else if *rate < burst_rate / 2.0 && self.bursting.remove(&key) {
                    let text = format!("DLQ burst over: {reason} down to {rate:.1} records/s");
                    self.ctx.journal.record(Event::now(EventKind::DlqBurst, "quality", text).stage(stage).topic(&s.source).link("/dq"));
                }
            }
        }
        // A reason gone from the window entirely is over too.
        let gone: Vec<(String, String)> = self
            .bursting
            .iter()
            .filter(|(src, reason)| !report.sources.iter().any(|s| &s.source == src && s.dlq_per_sec.contains_key(reason)))
            .cloned()
            .collect();
        for (src, reason) in gone {
            self.bursting.remove(&(src.clone(), reason.clone()));
            self.ctx.journal.record(Event::now(EventKind::DlqBurst, "quality", format!("DLQ burst over: no more {reason}")).topic(&src).link("/dq"));
        }
    }

    fn persist(&mut self, now: i64) {
        let slot_ms = self.tracker.slot_ms();
        let mut ops = Vec::new();
        let mut newest = self.persisted_until;
        for s in self.tracker.finished_since(self.persisted_until, now) {
            match store::encode("quality slot", s) {
                Ok(bytes) => ops.push((s.start_ms.to_be_bytes().to_vec(), Some(bytes))),
                Err(e) => tracing::warn!(error = %e, "quality slot not encodable"),
            }
            // Drop the slot that just left the history.
            ops.push(((s.start_ms - self.history_slots * slot_ms).to_be_bytes().to_vec(), None));
            newest = newest.max(s.start_ms);
        }
        if ops.is_empty() {
            return;
        }
        match self.ctx.store.write_ops(CF, &ops) {
            Ok(()) => self.persisted_until = newest,
            Err(e) => tracing::warn!(error = %e, "quality history not persisted; will retry"),
        }
    }
}

impl Actor for Quality {
    type Msg = QualityMsg;
    type State = QualityState;
    type Arguments = Arc<NodeCtx>;

    #[tracing::instrument(name = "actor", skip_all, fields(actor = "quality"))]
    async fn pre_start(&self, myself: ActorRef<QualityMsg>, ctx: Arc<NodeCtx>) -> R<QualityState> {
        let q = &ctx.config.quality;
        let slot_ms = (q.interval.as_millis() as i64).max(1);
        let history_slots = (q.history.as_millis() as i64 / slot_ms).max(1);
        let mut tracker = Tracker::new(slot_ms, history_slots as usize);
        let persisted_until = restore(&ctx.store, &mut tracker, vigil_runtime::now_ms() - history_slots * slot_ms);
        let ticker = myself.send_interval(q.interval, || QualityMsg::Tick);
        // Reports queued for a previous incarnation died with its mailbox.
        ctx.quality_queue.store(0, Ordering::SeqCst);
        let stalls = Stalls::new(q.stall_after);
        ctx.slots.quality.set(myself);
        Ok(QualityState { ctx, tracker, stalls, persisted_until, history_slots, bursting: Default::default(), ticker: Some(ticker) })
    }

    #[tracing::instrument(name = "actor", skip_all, fields(actor = "quality"))]
    async fn handle(&self, _myself: ActorRef<QualityMsg>, msg: QualityMsg, st: &mut QualityState) -> R<()> {
        match msg {
            QualityMsg::Batch(b) => {
                st.ctx.quality_taken();
                st.tracker.observe(vigil_runtime::now_ms(), &b);
            }
            QualityMsg::Tick => st.tick(),
            QualityMsg::Panic(m) => panic!("injected panic in quality: {m}"),
        }
        Ok(())
    }

    #[tracing::instrument(name = "actor", skip_all, fields(actor = "quality"))]
    async fn post_stop(&self, _myself: ActorRef<QualityMsg>, st: &mut QualityState) -> R<()> {
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        Ok(())
    }
}
