//! The operational journal: what happened to a node and its data, as it happened —
//! restarts, supervisor escalations, checkpoint failures and restores, retention loss, DLQ
//! bursts, alert state changes, config reloads, chaos faults — each tagged with the stage,
//! topic and partition it concerns. Kept in RocksDB (column family `journal`, key = time +
//! sequence) for `incidents.journal_retention`; incident timelines are read from it.
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vigil_runtime::store::Store;

/// What kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An alert changed state.
    Alert,
    /// A DLQ reason's rate rose above `incidents.dlq_burst_per_sec` (or fell back).
    DlqBurst,
    /// A supervised actor failed and was restarted.
    Restart,
    /// A supervisor gave up and escalated to its parent.
    SupervisorEscalation,
    /// A checkpoint failed.
    CheckpointFailure,
    /// The node restored from a checkpoint at start.
    Restore,
    /// Records were lost to retention before they were read.
    RetentionLoss,
    /// A schema was registered, deprecated, archived or deleted.
    Schema,
    /// Configuration (alert rules) was reloaded.
    ConfigReload,
    /// A fault was injected on purpose (drills).
    Chaos,
    /// An incident was opened, joined, reopened, escalated or changed state.
    Incident,
    /// An operator acted or wrote a note.
    Operator,
    /// A checkpoint was committed (the data-flow log; left out of incident timelines).
    Checkpoint,
    /// The node started (with its configuration hash and version).
    NodeStart,
    /// The node stopped.
    NodeStop,
}

impl EventKind {
    /// Whether this is something that happened to the system (a candidate trigger), as
    /// opposed to a symptom or a response.
    pub fn operational(self) -> bool {
        matches!(
            self,
            EventKind::Restart
                | EventKind::SupervisorEscalation
                | EventKind::CheckpointFailure
                | EventKind::Restore
                | EventKind::RetentionLoss
                | EventKind::Schema
                | EventKind::ConfigReload
                | EventKind::Chaos
                | EventKind::NodeStart
        )
    }

    /// Whether this is a data-quality signal (a symptom).
    pub fn quality_signal(self) -> bool {
        matches!(self, EventKind::Alert | EventKind::DlqBurst)
    }
}

/// One journaled event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When, ms since epoch.
    pub at_ms: i64,
    /// Kind.
    pub kind: EventKind,
    /// Who recorded it (`supervision`, `sink`, `ingest`, `quality`, `alerting`, `registry`,
    /// `chaos`, `incidents`, or an operator's name).
    pub source: String,
    /// Stage concerned, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Topic concerned, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Partition concerned, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// What happened.
    pub text: String,
    /// Where to look (admin API path or URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl Event {
    /// An event now, with no subject.
    pub fn now(kind: EventKind, source: &str, text: impl Into<String>) -> Self {
        Self { at_ms: vigil_runtime::now_ms(), kind, source: source.into(), stage: None, topic: None, partition: None, text: text.into(), link: None }
    }

    /// Tag with a stage.
    pub fn stage(mut self, stage: &str) -> Self {
        self.stage = Some(stage.into());
        self
    }

    /// Tag with a topic.
    pub fn topic(mut self, topic: &str) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Tag with a partition.
    pub fn partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }

    /// Attach a link.
    pub fn link(mut self, link: impl Into<String>) -> Self {
        self.link = Some(link.into());
        self
    }

    /// Where it happened, e.g. `validate`, `events/3`, `sink events`.
    pub fn subject(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.stage {
            parts.push(s.clone());
        }
        match (&self.topic, self.partition) {
            (Some(t), Some(p)) => parts.push(format!("{t}/{p}")),
            (Some(t), None) => parts.push(t.clone()),
            _ => {}
        }
        parts.join(" ")
    }
}

const CF: &str = "journal";

fn key(at_ms: i64, seq: u64) -> Vec<u8> {
    let mut k = at_ms.max(0).to_be_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The journal of one node.
pub struct Journal {
    store: Arc<Store>,
    seq: AtomicU64,
}

impl Journal {
    /// The journal in `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store, seq: AtomicU64::new(0) }
    }

    /// Record an event (a write failure is logged, never raised: the journal must not stop
    /// what it observes).
    pub fn record(&self, e: Event) {
        tracing::debug!(kind = ?e.kind, subject = %e.subject(), "journal: {}", e.text);
        metrics::counter!("vigil_journal_events_total", "kind" => crate::variant_name(&e.kind)).increment(1);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        match serde_json::to_vec(&e) {
            Ok(v) => {
                if let Err(err) = self.store.write_ops(CF, &[(key(e.at_ms, seq), Some(v))]) {
                    tracing::warn!(error = %err, "journal event not persisted");
                }
            }
            Err(err) => tracing::warn!(error = %err, "journal event not serializable"),
        }
    }

    /// Events with `from_ms <= at < to_ms`, in time order.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn range(&self, from_ms: i64, to_ms: i64) -> vigil_runtime::Result<Vec<Event>> {
        Ok(self.store.scan_range(CF, &key(from_ms, 0), &key(to_ms, 0))?.into_iter().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect())
    }

    /// Like [`Journal::range`], with the schema registry's changes (registrations, lifecycle
    /// changes, config and deletions, from its audit log in the same store) merged in.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn range_with_schemas(&self, from_ms: i64, to_ms: i64) -> vigil_runtime::Result<Vec<Event>> {
        let mut events = self.range(from_ms, to_ms)?;
        for (_, v) in self.store.scan("schemas", crate::registry::state::AUDIT_PREFIX)? {
            let Ok(a) = vigil_runtime::store::decode::<crate::registry::state::AuditEntry>("audit entry", &v) else { continue };
            if a.time_ms < from_ms || a.time_ms >= to_ms {
                continue;
            }
            let what = match (&a.subject, a.version) {
                (Some(s), Some(v)) => format!("schema {} {s} version {v}", a.action),
                (Some(s), None) => format!("schema {} {s}", a.action),
                _ => format!("schema registry {}", a.action),
            };
            let mut e = Event { at_ms: a.time_ms, ..Event::now(EventKind::Schema, &a.actor, what) }.link("/vigil/schemas/audit");
            e.topic = a.subject.as_deref().and_then(|s| s.strip_suffix("-value").or(s.strip_suffix("-key"))).map(str::to_string);
            events.push(e);
        }
        events.sort_by_key(|e| e.at_ms);
        Ok(events)
    }

    /// Forget events older than `before_ms`.
    pub fn prune(&self, before_ms: i64) {
        match self.store.scan_range(CF, &key(0, 0), &key(before_ms, 0)) {
            Ok(old) if !old.is_empty() => {
                let ops: Vec<_> = old.into_iter().map(|(k, _)| (k, None)).collect();
                if let Err(e) = self.store.write_ops(CF, &ops) {
                    tracing::warn!(error = %e, "journal not pruned");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "journal not pruned"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_ranges_and_prunes_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let j = Journal::new(store);
        for (t, text) in [(3000, "c"), (1000, "a"), (2000, "b"), (2000, "b2")] {
            j.record(Event { at_ms: t, ..Event::now(EventKind::Restart, "supervision", text).stage("validate") });
        }
        let all: Vec<String> = j.range(0, 10_000).unwrap().into_iter().map(|e| e.text).collect();
        assert_eq!(all, ["a", "b", "b2", "c"]);
        assert_eq!(j.range(2000, 3000).unwrap().len(), 2, "to is exclusive");
        j.prune(2500);
        assert_eq!(j.range(0, 10_000).unwrap().len(), 1);
        assert_eq!(Event::now(EventKind::RetentionLoss, "ingest", "x").topic("events").partition(3).stage("ingest").subject(), "ingest events/3");
    }
}
