//! The Alerting actor: evaluates rules on each quality report, keeps alert state and
//! silences in RocksDB (column family `alerts`), plans notifications every second and hands
//! them to the receivers. Supervised apart from the data path: its failure never stops it.
use super::engine::{Alert, AlertState, Engine, EngineState, Sample, Silence, SilenceState, Suppression};
use super::notify::{route, Planner};
use super::receivers::Receivers;
use crate::incidents::actor::IncidentMsg;
use crate::journal::{Event, EventKind};
use crate::pipeline::NodeCtx;
use crate::stages::R;
use ractor::{Actor, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use vigil_config::{AlertRule, AlertsConfig, Matcher};
use vigil_runtime::store::Store;

/// Messages into the Alerting actor.
pub enum AlertMsg {
    /// Evaluate the rules on a quality report's series.
    Evaluate {
        /// When the series were computed, ms.
        now_ms: i64,
        /// Series.
        samples: Vec<Sample>,
    },
    /// Plan and send notifications.
    Tick,
    /// Current alerts.
    List(RpcReplyPort<Vec<AlertView>>),
    /// Rules in force.
    Rules(RpcReplyPort<Vec<RuleView>>),
    /// Silences (all, including expired ones still retained).
    Silences(RpcReplyPort<Vec<SilenceView>>),
    /// Add a silence; replies with its id.
    AddSilence(Box<Silence>, RpcReplyPort<Result<String, String>>),
    /// Expire a silence.
    ExpireSilence(String, RpcReplyPort<Result<(), String>>),
    /// Replace rules, inhibition, receivers and routes; replies with the rule count.
    Reload(Box<AlertsConfig>, RpcReplyPort<usize>),
    /// Fail on purpose (drills).
    Panic(String),
}

/// An alert as the API and CLI show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    /// The alert.
    #[serde(flatten)]
    pub alert: Alert,
    /// Why it is not notified, if it is not.
    #[serde(flatten)]
    pub suppression: Suppression,
    /// Receivers it routes to.
    pub receivers: Vec<String>,
}

/// A rule with how many alerts it has per state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    /// The rule as configured.
    #[serde(flatten)]
    pub rule: AlertRule,
    /// Pending alerts.
    pub pending: usize,
    /// Firing alerts.
    pub firing: usize,
}

/// A silence with its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceView {
    /// The silence.
    #[serde(flatten)]
    pub silence: Silence,
    /// State now.
    pub state: SilenceState,
}

/// What is persisted (JSON in column family `alerts`, key `engine`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    engine: EngineState,
    planner: Planner,
}

const KEY: &[u8] = b"engine";
const CF: &str = "alerts";

fn load(store: &Store) -> Persisted {
    match store.get(CF, KEY) {
        Ok(Some(v)) => serde_json::from_slice(&v).unwrap_or_else(|e| {
            tracing::error!(error = %e, "stored alert state unreadable; starting without it");
            Persisted::default()
        }),
        Ok(None) => Persisted::default(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read stored alert state; starting without it");
            Persisted::default()
        }
    }
}

/// The Alerting actor.
#[derive(Clone, Copy)]
pub struct Alerting;

/// Its state.
pub struct AlertingState {
    ctx: Arc<NodeCtx>,
    cfg: Arc<AlertsConfig>,
    engine: Engine,
    planner: Planner,
    receivers: Receivers,
    dirty: bool,
    ticker: Option<ractor::concurrency::JoinHandle<()>>,
}

impl AlertingState {
    fn now() -> i64 {
        vigil_runtime::now_ms()
    }

    fn persist(&mut self) {
        if !self.dirty {
            return;
        }
        let p = Persisted { engine: self.engine.state.clone(), planner: self.planner.clone() };
        match serde_json::to_vec(&p) {
            Ok(bytes) => match self.ctx.store.write_ops(CF, &[(KEY.to_vec(), Some(bytes))]) {
                Ok(()) => self.dirty = false,
                Err(e) => tracing::warn!(error = %e, "alert state not persisted; will retry"),
            },
            Err(e) => tracing::error!(error = %e, "alert state not serializable"),
        }
    }

    fn views(&self, now: i64) -> Vec<AlertView> {
        let mut v: Vec<AlertView> = self
            .engine
            .state
            .alerts
            .values()
            .map(|a| AlertView { suppression: self.engine.suppression(a, now), receivers: route(&self.cfg, &a.labels), alert: a.clone() })
            .collect();
        v.sort_by(|a, b| (a.alert.labels.get("severity"), &a.alert.rule).cmp(&(b.alert.labels.get("severity"), &b.alert.rule)));
        v
    }

    /// Set `vigil_alerts`; `suppressed` holds the fingerprints silenced or inhibited now.
    fn export(&self, suppressed: &std::collections::BTreeSet<String>) {
        let mut counts: BTreeMap<(&str, String), usize> = BTreeMap::new();
        for sev in ["P1", "P2", "P3", "P4"] {
            for st in ["pending", "firing", "resolved", "suppressed"] {
                counts.insert((st, sev.to_string()), 0);
            }
        }
        for a in self.engine.state.alerts.values() {
            let sev = a.labels.get("severity").cloned().unwrap_or_default();
            let st = match a.state {
                AlertState::Firing if suppressed.contains(&a.fingerprint) => "suppressed",
                AlertState::Pending => "pending",
                AlertState::Firing => "firing",
                AlertState::Resolved => "resolved",
            };
            *counts.entry((st, sev)).or_default() += 1;
        }
        for ((st, sev), n) in counts {
            metrics::gauge!("vigil_alerts", "state" => st, "severity" => sev).set(n as f64);
        }
    }

    fn tick(&mut self) {
        let now = Self::now();
        let engine = &self.engine;
        let suppressed: std::collections::BTreeSet<String> =
            engine.state.alerts.values().filter(|a| engine.suppression(a, now).any()).map(|a| a.fingerprint.clone()).collect();
        let notifiable: Vec<&Alert> = engine.state.alerts.values().filter(|a| a.state != AlertState::Pending && !suppressed.contains(&a.fingerprint)).collect();
        let before = self.planner.clone();
        let due = self.planner.plan(&self.cfg, now, &notifiable);
        for n in due {
            self.receivers.enqueue(n);
        }
        if self.planner != before {
            self.dirty = true;
        }
        let silences = self.engine.state.silences.len();
        self.engine.gc_silences(now, self.cfg.resolved_retention.as_millis() as i64);
        self.dirty |= silences != self.engine.state.silences.len();
        self.export(&suppressed);
        self.persist();
    }

    fn evaluate(&mut self, now_ms: i64, mut samples: Vec<Sample>) {
        for (receiver, up) in self.receivers.health() {
            samples.push(Sample { metric: "receiver_up".into(), labels: BTreeMap::from([("receiver".into(), receiver)]), value: if up { 1.0 } else { 0.0 } });
        }
        let changes = self.engine.evaluate(now_ms, &samples, self.cfg.resolved_retention.as_millis() as i64);
        for c in &changes {
            if let Some(a) = self.engine.state.alerts.get(&c.fingerprint) {
                let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                tracing::info!(alertname = %c.rule, from = ?c.from, to = ?c.to, value = a.value, labels = %labels.join(","), "alert state changed");
                let state = |s: Option<AlertState>| s.map(|s| crate::variant_name(&s)).unwrap_or_else(|| "inactive".into());
                let mut e = Event::now(EventKind::Alert, "alerting", format!("alert {} {} → {} (value {:.4})", c.rule, state(c.from), state(c.to), a.value))
                    .link("/alerts");
                e.topic = a.labels.get("source").cloned();
                self.ctx.journal.record(e);
                if matches!(c.to, Some(AlertState::Firing) | Some(AlertState::Resolved)) && self.ctx.incidents_enabled() {
                    // Incidents may be restarting; it re-reads nothing, so log the miss.
                    if self.ctx.slots.incidents.send("incidents", IncidentMsg::Alert(Box::new(a.clone()))).is_err() {
                        tracing::warn!(alertname = %c.rule, "incidents actor not running: alert change not seen by incidents");
                    }
                }
            }
        }
        metrics::counter!("vigil_alert_evaluations_total").increment(1);
        // Anomaly detectors learn on every evaluation, so the state is always worth saving.
        self.dirty = true;
        self.tick();
    }

    fn reload(&mut self, cfg: AlertsConfig) -> usize {
        let anomaly = self.ctx.config.quality.anomaly.clone();
        self.engine.set_rules(cfg.rules.clone(), cfg.inhibit_rules.clone(), anomaly);
        if cfg.receivers != self.cfg.receivers || cfg.queue_max != self.cfg.queue_max || cfg.request_timeout != self.cfg.request_timeout {
            self.receivers = Receivers::start(&cfg, self.ctx.producer.clone(), self.ctx.external_url());
        }
        let n = cfg.rules.len();
        let cfg = Arc::new(cfg);
        if let Ok(mut g) = self.ctx.alerts_config.write() {
            *g = cfg.clone();
        }
        self.cfg = cfg;
        tracing::info!(rules = n, "alert rules reloaded");
        self.ctx.journal.record(Event::now(EventKind::ConfigReload, "alerting", format!("alert rules reloaded: {n} rules")).stage("alerting"));
        n
    }
}

impl Actor for Alerting {
    type Msg = AlertMsg;
    type State = AlertingState;
    type Arguments = Arc<NodeCtx>;

    #[tracing::instrument(name = "actor", skip_all, fields(actor = "alerting"))]
    async fn pre_start(&self, myself: ActorRef<AlertMsg>, ctx: Arc<NodeCtx>) -> R<AlertingState> {
        let cfg = ctx.alerts_config.read().map(|g| g.clone()).unwrap_or_else(|_| Arc::new(ctx.config.alerts.clone()));
        let p = load(&ctx.store);
        let restored = p.engine.alerts.values().filter(|a| a.state == AlertState::Firing).count();
        if restored > 0 {
            tracing::info!(firing = restored, "restored alert state");
        }
        let engine = Engine::new(cfg.rules.clone(), cfg.inhibit_rules.clone(), ctx.config.quality.anomaly.clone(), p.engine);
        let receivers = Receivers::start(&cfg, ctx.producer.clone(), ctx.external_url());
        let ticker = myself.send_interval(Duration::from_secs(1), || AlertMsg::Tick);
        ctx.slots.alerting.set(myself);
        Ok(AlertingState { ctx, cfg, engine, planner: p.planner, receivers, dirty: false, ticker: Some(ticker) })
    }

    #[tracing::instrument(name = "actor", skip_all, fields(actor = "alerting"))]
    async fn handle(&self, _myself: ActorRef<AlertMsg>, msg: AlertMsg, st: &mut AlertingState) -> R<()> {
        let now = AlertingState::now();
        match msg {
            AlertMsg::Evaluate { now_ms, samples } => st.evaluate(now_ms, samples),
            AlertMsg::Tick => st.tick(),
            AlertMsg::List(reply) => {
                let _ = reply.send(st.views(now));
            }
            AlertMsg::Rules(reply) => {
                let rules = st
                    .engine
                    .rules()
                    .iter()
                    .map(|r| {
                        let of = |s: AlertState| st.engine.state.alerts.values().filter(|a| a.rule == r.name && a.state == s).count();
                        RuleView { rule: r.clone(), pending: of(AlertState::Pending), firing: of(AlertState::Firing) }
                    })
                    .collect();
                let _ = reply.send(rules);
            }
            AlertMsg::Silences(reply) => {
                let list = st.engine.state.silences.values().map(|s| SilenceView { silence: s.clone(), state: s.state(now) }).collect();
                let _ = reply.send(list);
            }
            AlertMsg::AddSilence(s, reply) => {
                let res = st.engine.add_silence(*s, now);
                if let Ok(id) = &res {
                    tracing::info!(silence = %id, "silence added");
                    st.dirty = true;
                    st.persist();
                }
                let _ = reply.send(res);
            }
            AlertMsg::ExpireSilence(id, reply) => {
                let res = st.engine.expire_silence(&id, now);
                if res.is_ok() {
                    tracing::info!(silence = %id, "silence expired");
                    st.dirty = true;
                    st.persist();
                }
                let _ = reply.send(res);
            }
            AlertMsg::Reload(cfg, reply) => {
                let n = st.reload(*cfg);
                let _ = reply.send(n);
            }
            AlertMsg::Panic(m) => panic!("injected panic in alerting: {m}"),
        }
        Ok(())
    }

    #[tracing::instrument(name = "actor", skip_all, fields(actor = "alerting"))]
    async fn post_stop(&self, _myself: ActorRef<AlertMsg>, st: &mut AlertingState) -> R<()> {
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        st.persist();
        Ok(())
    }
}

/// Parse a silence request's matchers (`a="x"` strings).
///
/// # Errors
/// The first matcher that does not parse.
pub fn parse_silence_matchers(list: &[String]) -> Result<Vec<Matcher>, String> {
    list.iter().map(|m| m.parse::<Matcher>()).collect()
}
