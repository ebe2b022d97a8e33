//! The Incidents actor: opens, joins and reopens incidents from the Alerting actor's
//! firing alerts, runs escalation timers (checked every second), pages through the alert
//! receivers, takes operator actions, and answers with timelines, post-mortems and reports.
//! The book of incidents is written to RocksDB (column family `incidents`) after every
//! change, before any page goes out: a restarted node pages each level at most once.
use super::analysis::{analyse, postmortem_markdown, report, timeline_from, timeline_to, Analysis, Report};
use super::model::{ActionError, Book, Page};
use crate::alerting::engine::{Alert, AlertState};
use crate::alerting::notify::Notification;
use crate::alerting::receivers::Receivers;
use crate::pipeline::NodeCtx;
use crate::stages::R;
use ractor::{Actor, ActorRef, RpcReplyPort};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use vigil_config::Severity;

/// An operator action.
#[derive(Debug, Clone)]
pub enum Action {
    /// Acknowledge.
    Ack,
    /// Assign `role` to `who`.
    Assign {
        /// Role.
        role: String,
        /// Person.
        who: String,
    },
    /// Note.
    Note(String),
    /// Mitigate.
    Mitigate,
    /// Resolve.
    Resolve,
}

/// Messages into the Incidents actor.
pub enum IncidentMsg {
    /// An alert changed state (from the Alerting actor).
    Alert(Box<Alert>),
    /// Check escalation timers.
    Tick,
    /// Incidents, newest first (all, or only those not resolved).
    List {
        /// Include resolved incidents.
        all: bool,
        /// Reply.
        reply: RpcReplyPort<Vec<Analysis>>,
    },
    /// One incident with its timeline.
    Show(u64, RpcReplyPort<Result<Analysis, ActionError>>),
    /// Open by hand: title, severity, source, by.
    Open {
        /// Title.
        title: String,
        /// Severity.
        severity: Severity,
        /// Source topic concerned, if any.
        source: Option<String>,
        /// Operator.
        by: String,
        /// Reply: the number.
        reply: RpcReplyPort<Result<u64, ActionError>>,
    },
    /// An operator action on an incident.
    Act {
        /// Incident.
        id: u64,
        /// Action.
        action: Action,
        /// Operator.
        by: String,
        /// Reply.
        reply: RpcReplyPort<Result<(), ActionError>>,
    },
    /// The post-mortem as Markdown.
    Postmortem(u64, RpcReplyPort<Result<(String, Analysis), ActionError>>),
    /// The review report of incidents opened since `since_ms`.
    Report(i64, RpcReplyPort<Report>),
    /// Fail on purpose (drills).
    Panic(String),
}

const CF: &str = "incidents";
const KEY: &[u8] = b"book";

/// The Incidents actor.
#[derive(Clone, Copy)]
pub struct Incidents;

/// Its state.
pub struct IncidentsState {
    ctx: Arc<NodeCtx>,
    book: Book,
    receivers: Receivers,
    /// The alerting configuration the receivers were built from (a reload replaces it).
    receivers_from: Arc<vigil_config::AlertsConfig>,
    ticker: Option<ractor::concurrency::JoinHandle<()>>,
}

impl IncidentsState {
    fn persist(&self) {
        match serde_json::to_vec(&self.book) {
            Ok(bytes) => {
                if let Err(e) = self.ctx.store.write_ops(CF, &[(KEY.to_vec(), Some(bytes))]) {
                    tracing::error!(error = %e, "incidents not persisted");
                }
            }
            Err(e) => tracing::error!(error = %e, "incidents not serializable"),
        }
    }

    /// Page one escalation level through the alert receivers.
    fn page(&self, p: &Page) {
        let Some(inc) = self.book.incidents.get(&p.incident) else { return };
        let mut labels = inc.labels.clone();
        labels.insert("alertname".into(), "VigilIncident".into());
        labels.insert("incident".into(), format!("#{}", inc.id));
        labels.insert("escalation_level".into(), (p.level + 1).to_string());
        if !p.target.roles.is_empty() {
            labels.insert("oncall".into(), p.target.roles.join(","));
        }
        let annotations = BTreeMap::from([
            ("summary".to_string(), format!("Incident #{} ({}): {}", inc.id, inc.severity, inc.title)),
            ("description".to_string(), format!("Level {} of policy `{}`; acknowledge with `vigil incident ack {}`.", p.level + 1, p.policy, inc.id)),
            ("incident_url".to_string(), format!("{}/incidents/{}", self.ctx.external_url(), inc.id)),
        ]);
        let alert = Alert {
            fingerprint: crate::alerting::engine::fingerprint(&labels),
            rule: "VigilIncident".into(),
            labels,
            annotations,
            state: AlertState::Firing,
            active_at_ms: inc.opened_at_ms,
            fired_at_ms: Some(inc.opened_at_ms),
            resolved_at_ms: None,
            last_true_ms: vigil_runtime::now_ms(),
            value: (p.level + 1) as f64,
        };
        for r in &p.target.receivers {
            self.receivers.enqueue(Notification {
                receiver: r.clone(),
                group_key: format!("incident-{}", inc.id),
                group_labels: BTreeMap::new(),
                alerts: vec![alert.clone()],
            });
        }
        metrics::counter!("vigil_incident_pages_total", "level" => (p.level + 1).to_string()).increment(1);
    }

    fn analysis(&self, id: u64, now: i64) -> Result<Analysis, ActionError> {
        let inc = self.book.incidents.get(&id).ok_or(ActionError::Unknown(id))?;
        let cfg = &self.ctx.config;
        let lookback = cfg.incidents.timeline_lookback.as_millis() as i64;
        let (from, to) = (timeline_from(inc, lookback), timeline_to(inc, now));
        let events = self.ctx.journal.range_with_schemas(from, to).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "journal unreadable; timeline without it");
            Vec::new()
        });
        let history = crate::quality::actor::read_history(&self.ctx.store, cfg.quality.interval, from, to).unwrap_or_default();
        Ok(analyse(inc, events, &history, lookback, now))
    }

    fn on_alert(&mut self, a: &Alert) {
        let cfg = &self.ctx.config.incidents;
        let now = vigil_runtime::now_ms();
        let changed = match a.state {
            AlertState::Firing => match self.book.on_firing(cfg, a, now) {
                Some((id, page)) => {
                    if let Some(p) = page {
                        let inc = &self.book.incidents[&id];
                        tracing::warn!(incident = id, severity = %inc.severity, title = %inc.title, "incident opened");
                        metrics::counter!("vigil_incidents_opened_total", "severity" => inc.severity.to_string()).increment(1);
                        self.persist();
                        self.page(&p);
                    }
                    true
                }
                None => false,
            },
            AlertState::Resolved => self.book.on_resolved(cfg, &a.fingerprint, now).is_some(),
            AlertState::Pending => false,
        };
        if changed {
            self.persist();
            self.export();
        }
    }

    fn tick(&mut self) {
        // Alert rules were reloaded: page through the receivers now in force.
        if let Ok(cfg) = self.ctx.alerts_config.read().map(|g| g.clone()) {
            if !Arc::ptr_eq(&cfg, &self.receivers_from) && cfg.receivers != self.receivers_from.receivers {
                self.receivers = Receivers::start(&cfg, self.ctx.producer.clone(), self.ctx.external_url());
            }
            self.receivers_from = cfg;
        }
        let now = vigil_runtime::now_ms();
        let pages = self.book.due(&self.ctx.config.incidents, now);
        if !pages.is_empty() {
            // Persist the advanced levels first: a crash now loses a page, never doubles one.
            self.persist();
            for p in &pages {
                tracing::warn!(incident = p.incident, level = p.level + 1, "incident escalated");
                self.page(p);
            }
        }
        self.export();
    }

    fn export(&self) {
        for st in ["open", "acknowledged", "mitigated"] {
            let n = self.book.incidents.values().filter(|i| i.state.as_str() == st).count();
            metrics::gauge!("vigil_incidents", "state" => st).set(n as f64);
        }
    }
}

impl Actor for Incidents {
    type Msg = IncidentMsg;
    type State = IncidentsState;
    type Arguments = Arc<NodeCtx>;

    #[tracing::instrument(name = "actor", skip_all, fields(actor = "incidents"))]
    async fn pre_start(&self, myself: ActorRef<IncidentMsg>, ctx: Arc<NodeCtx>) -> R<IncidentsState> {
        let book: Book = match ctx.store.get(CF, KEY)? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_else(|e| {
                tracing::error!(error = %e, "stored incidents unreadable; starting without them");
                Book::default()
            }),
            None => Book::default(),
        };
        let open = book.incidents.values().filter(|i| super::analysis::is_active(i)).count();
        if open > 0 {
            tracing::info!(open, "restored incidents");
        }
        let cfg = ctx.alerts_config.read().map(|g| g.clone()).unwrap_or_else(|_| Arc::new(ctx.config.alerts.clone()));
        let receivers = Receivers::start(&cfg, ctx.producer.clone(), ctx.external_url());
        let ticker = myself.send_interval(Duration::from_secs(1), || IncidentMsg::Tick);
        ctx.slots.incidents.set(myself);
        Ok(IncidentsState { ctx, book, receivers, receivers_from: cfg, ticker: Some(ticker) })
    }

    #[tracing::instrument(name = "actor", skip_all, fields(actor = "incidents"))]
    async fn handle(&self, _myself: ActorRef<IncidentMsg>, msg: IncidentMsg, st: &mut IncidentsState) -> R<()> {
        let now = vigil_runtime::now_ms();
        match msg {
            IncidentMsg::Alert(a) => st.on_alert(&a),
            IncidentMsg::Tick => st.tick(),
            IncidentMsg::List { all, reply } => {
                let ids: Vec<u64> = st.book.incidents.values().rev().filter(|i| all || super::analysis::is_active(i)).map(|i| i.id).collect();
                let list = ids.into_iter().filter_map(|id| st.analysis(id, now).ok()).collect();
                let _ = reply.send(list);
            }
            IncidentMsg::Show(id, reply) => {
                let _ = reply.send(st.analysis(id, now));
            }
            IncidentMsg::Open { title, severity, source, by, reply } => {
                let res = st.book.open_manual(&st.ctx.config.incidents, &title, severity, source.as_deref(), &by, now);
                if let Ok((id, page)) = &res {
                    st.persist();
                    if let Some(p) = page {
                        st.page(p);
                    }
                    tracing::warn!(incident = id, %by, "incident opened by hand");
                }
                st.export();
                let _ = reply.send(res.map(|(id, _)| id));
            }
            IncidentMsg::Act { id, action, by, reply } => {
                let b = &mut st.book;
                let res = match &action {
                    Action::Ack => b.ack(id, &by, now),
                    Action::Assign { role, who } => b.assign(id, role, who, &by, now),
                    Action::Note(text) => b.note(id, &by, text, now),
                    Action::Mitigate => b.mitigate(id, &by, now),
                    Action::Resolve => b.resolve(id, &by, now),
                };
                if res.is_ok() {
                    tracing::info!(incident = id, %by, ?action, "incident updated");
                    st.persist();
                    st.export();
                }
                let _ = reply.send(res);
            }
            IncidentMsg::Postmortem(id, reply) => {
                let _ = reply.send(st.analysis(id, now).map(|a| (postmortem_markdown(&a), a)));
            }
            IncidentMsg::Report(since, reply) => {
                let ids: Vec<u64> = st.book.incidents.keys().copied().collect();
                let all: Vec<Analysis> = ids.into_iter().filter_map(|id| st.analysis(id, now).ok()).collect();
                let _ = reply.send(report(&all, since, now + 1));
            }
            IncidentMsg::Panic(m) => panic!("injected panic in incidents: {m}"),
        }
        Ok(())
    }

    #[tracing::instrument(name = "actor", skip_all, fields(actor = "incidents"))]
    async fn post_stop(&self, _myself: ActorRef<IncidentMsg>, st: &mut IncidentsState) -> R<()> {
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        st.persist();
        Ok(())
    }
}
