//! Rule evaluation, silences and inhibition with Prometheus' and Alertmanager's semantics,
//! pure (time is passed in) and serializable, so alert state survives restarts.
//!
//! A rule is evaluated on each series it selects: while its condition holds the alert is
//! *pending*, after `for` it is *firing*; when the condition stops holding (or the series
//! disappears) it stays firing for `keep_firing_for`, then is *resolved* and listed for
//! `resolved_retention`. An alert is identified by its label set (series labels, rule
//! labels, `alertname`, `severity`) through a stable fingerprint. Silences and inhibition
//! do not change an alert's state; they mark it *suppressed* so it is not notified.
use crate::quality::anomaly::SeasonalDetector;
use serde::{Deserialize, Serialize};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use vigil_config::{AlertRule, AnomalyConfig, Condition, InhibitRule, Matcher};

/// One value of one series (a quality measure or a node measure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Series name (`vigil_config::METRICS`).
    pub metric: String,
    /// Labels (`source`, `reason`, `field`, ...).
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Labels of an alert.
pub type Labels = BTreeMap<String, String>;

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Condition holds, `for` not yet elapsed.
    Pending,
    /// Firing.
    Firing,
    /// Was firing, no longer.
    Resolved,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id of the label set.
    pub fingerprint: String,
    /// Rule name.
    pub rule: String,
    /// Labels.
    pub labels: Labels,
    /// Annotations with `{{ $value }}` and `{{ $labels.x }}` filled in.
    pub annotations: BTreeMap<String, String>,
    /// State.
    pub state: AlertState,
    /// When the condition started to hold, ms.
    pub active_at_ms: i64,
    /// When it started firing (Alertmanager's `startsAt`), ms.
    pub fired_at_ms: Option<i64>,
    /// When it was resolved (`endsAt`), ms.
    pub resolved_at_ms: Option<i64>,
    /// Last time the condition held, ms.
    pub last_true_ms: i64,
    /// Value at the last evaluation it held (the anomaly z-score for `anomaly` rules).
    pub value: f64,
}

/// A silence: alerts matching every matcher are not notified between its start and end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Id.
    pub id: String,
    /// Matchers (all must match).
    pub matchers: Vec<Matcher>,
    /// Start, ms.
    pub starts_at_ms: i64,
    /// End, ms.
    pub ends_at_ms: i64,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// When it was created or last changed, ms.
    pub updated_at_ms: i64,
}

/// Where a silence is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SilenceState {
    /// Starts in the future.
    Pending,
    /// In force.
    Active,
    /// Over.
    Expired,
}

impl Silence {
    /// State at `now_ms`.
    pub fn state(&self, now_ms: i64) -> SilenceState {
        if now_ms >= self.ends_at_ms {
            SilenceState::Expired
        } else if now_ms < self.starts_at_ms {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    fn mutes(&self, labels: &Labels, now_ms: i64) -> bool {
        self.state(now_ms) == SilenceState::Active && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// Why an alert is not notified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    /// Ids of the active silences that match it.
    pub silenced_by: Vec<String>,
    /// Fingerprints of the firing alerts that inhibit it.
    pub inhibited_by: Vec<String>,
}

impl Suppression {
    /// Whether it is suppressed at all.
    pub fn any(&self) -> bool {
        !self.silenced_by.is_empty() || !self.inhibited_by.is_empty()
    }
}

/// What happened to alerts in one evaluation (for logs and counters).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Alert fingerprint.
    pub fingerprint: String,
    /// Rule.
    pub rule: String,
    /// Previous state (`None`: new).
    pub from: Option<AlertState>,
    /// New state (`None`: dropped).
    pub to: Option<AlertState>,
}

/// The persisted part of the engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// Alerts by fingerprint.
    pub alerts: BTreeMap<String, Alert>,
    /// Silences by id.
    pub silences: BTreeMap<String, Silence>,
    /// Anomaly detectors by rule and series.
    pub detectors: BTreeMap<String, SeasonalDetector>,
    /// Next silence number.
    pub next_silence: u64,
}

/// Rules, inhibition and the alert state they act on.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: Vec<AlertRule>,
    inhibit: Vec<InhibitRule>,
    anomaly: AnomalyConfig,
    /// Alerts, silences, detectors.
    pub state: EngineState,
}

/// 64-bit FNV-1a: stable across builds and platforms (unlike `DefaultHasher`).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Stable fingerprint of a label set, as 16 hex digits.
pub fn fingerprint(labels: &Labels) -> String {
    let h = fnv1a(labels.iter().flat_map(|(k, v)| k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe])));
    format!("{h:016x}")
}

/// Fill `{{ $value }}` and `{{ $labels.name }}` (spaces inside braces optional).
pub fn render(template: &str, labels: &Labels, value: f64) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let inner = rest[i + 2..i + j].trim();
        if inner == "$value" {
            out.push_str(&format_value(value));
        } else if let Some(name) = inner.strip_prefix("$labels.") {
            out.push_str(labels.get(name).map(String::as_str).unwrap_or(""));
        } else {
            out.push_str(&rest[i..i + j + 2]);
        }
        rest = &rest[i + j + 2..];
    }
    out.push_str(rest);
    out
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

impl Engine {
    /// An engine with `rules` and `inhibit` over restored `state`.
    pub fn new(rules: Vec<AlertRule>, inhibit: Vec<InhibitRule>, anomaly: AnomalyConfig, state: EngineState) -> Self {
        Self { rules, inhibit, anomaly, state }
    }

    /// The rules in force.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Replace rules and inhibition (reload). Alerts of rules that are gone resolve at the
    /// next evaluation.
    pub fn set_rules(&mut self, rules: Vec<AlertRule>, inhibit: Vec<InhibitRule>, anomaly: AnomalyConfig) {
        let names: BTreeSet<&String> = rules.iter().map(|r| &r.name).collect();
        self.state.detectors.retain(|k, _| names.iter().any(|n| k.starts_with(&format!("{n}|"))));
        self.rules = rules;
        self.inhibit = inhibit;
        self.anomaly = anomaly;
    }

    /// Evaluate every rule on `samples` at `now_ms`; returns the state changes.
    pub fn evaluate(&mut self, now_ms: i64, samples: &[Sample], resolved_retention_ms: i64) -> Vec<Transition> {
        let mut changes = Vec::new();
        let mut holding: BTreeSet<String> = BTreeSet::new();
        for rule in &self.rules {
            let for_ms = rule.for_.as_millis() as i64;
            for s in samples.iter().filter(|s| s.metric == rule.expr.metric && rule.expr.matchers.iter().all(|m| m.matches(&s.labels))) {
                let (holds, value) = match &rule.expr.condition {
                    Condition::Threshold { cmp, threshold } => (cmp.holds(s.value, *threshold), s.value),
                    Condition::Anomaly => {
                        let key = format!("{}|{}", rule.name, fingerprint(&s.labels));
                        let d = self.state.detectors.entry(key).or_insert_with(|| SeasonalDetector::new(&self.anomaly));
                        let v = d.observe(now_ms, s.value);
                        (v.anomaly.is_some(), v.z)
                    }
                };
                if !holds {
                    continue;
                }
                let mut labels = s.labels.clone();
                labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                labels.insert("alertname".into(), rule.name.clone());
                labels.insert("severity".into(), rule.severity.to_string());
                let fp = fingerprint(&labels);
                let annotations = rule.annotations.iter().map(|(k, t)| (k.clone(), render(t, &labels, value))).collect();
                let from = self.state.alerts.get(&fp).map(|a| a.state);
                let fresh = |labels: Labels| Alert {
                    fingerprint: fp.clone(),
                    rule: rule.name.clone(),
                    labels,
                    annotations: BTreeMap::new(),
                    state: AlertState::Pending,
                    active_at_ms: now_ms,
                    fired_at_ms: None,
                    resolved_at_ms: None,
                    last_true_ms: now_ms,
                    value,
                };
                let alert = match self.state.alerts.entry(fp.clone()) {
                    Entry::Occupied(o) if o.get().state != AlertState::Resolved => o.into_mut(),
                    Entry::Occupied(o) => {
                        let a = o.into_mut();
                        *a = fresh(labels);
                        a
                    }
                    Entry::Vacant(v) => v.insert(fresh(labels)),
                };
                alert.last_true_ms = now_ms;
                alert.value = value;
                alert.annotations = annotations;
                if alert.state == AlertState::Pending && now_ms - alert.active_at_ms >= for_ms {
                    alert.state = AlertState::Firing;
                    alert.fired_at_ms = Some(now_ms);
                }
                if from != Some(alert.state) {
                    changes.push(Transition {
                        fingerprint: fp.clone(),
                        rule: rule.name.clone(),
                        from: from.filter(|s| *s != AlertState::Resolved),
                        to: Some(alert.state),
                    });
                }
                holding.insert(fp);
            }
        }
        let keep: BTreeMap<&str, i64> = self.rules.iter().map(|r| (r.name.as_str(), r.keep_firing_for.as_millis() as i64)).collect();
        let mut dropped = Vec::new();
        for (fp, a) in self.state.alerts.iter_mut() {
            if holding.contains(fp) {
                continue;
            }
            match a.state {
                AlertState::Pending => dropped.push(fp.clone()),
                AlertState::Firing => {
                    let keep_ms = keep.get(a.rule.as_str()).copied();
                    if keep_ms.is_none_or(|k| now_ms - a.last_true_ms >= k) {
                        a.state = AlertState::Resolved;
                        a.resolved_at_ms = Some(now_ms);
                        changes.push(Transition {
                            fingerprint: fp.clone(),
                            rule: a.rule.clone(),
                            from: Some(AlertState::Firing),
                            to: Some(AlertState::Resolved),
                        });
                    }
                }
                AlertState::Resolved => {
                    if a.resolved_at_ms.is_some_and(|t| now_ms - t >= resolved_retention_ms) {
                        dropped.push(fp.clone());
                    }
                }
            }
        }
        for fp in dropped {
            if let Some(a) = self.state.alerts.remove(&fp) {
                changes.push(Transition { fingerprint: fp, rule: a.rule, from: Some(a.state), to: None });
            }
        }
        changes
    }

    /// Why `alert` is not notified at `now_ms` (empty when it is).
    pub fn suppression(&self, alert: &Alert, now_ms: i64) -> Suppression {
        let silenced_by = self.state.silences.values().filter(|s| s.mutes(&alert.labels, now_ms)).map(|s| s.id.clone()).collect();
        let mut inhibited_by = Vec::new();
        for rule in &self.inhibit {
            if !rule.target_matchers.iter().all(|m| m.matches(&alert.labels)) {
                continue;
            }
            for src in self.state.alerts.values() {
                if src.fingerprint == alert.fingerprint || src.state != AlertState::Firing {
                    continue;
                }
                let equal = rule.equal.iter().all(|l| src.labels.get(l) == alert.labels.get(l));
                if equal && rule.source_matchers.iter().all(|m| m.matches(&src.labels)) && !inhibited_by.contains(&src.fingerprint) {
                    inhibited_by.push(src.fingerprint.clone());
                }
            }
        }
        Suppression { silenced_by, inhibited_by }
    }

    /// Add a silence; returns its id.
    ///
    /// # Errors
    /// No matchers, or an end not after the start.
    pub fn add_silence(&mut self, mut s: Silence, now_ms: i64) -> Result<String, String> {
        if s.matchers.is_empty() {
            return Err("a silence needs at least one matcher".into());
        }
        if s.ends_at_ms <= s.starts_at_ms.max(now_ms) {
            return Err("the silence must end in the future and after it starts".into());
        }
        self.state.next_silence += 1;
        s.id = format!("s{:04}-{:x}", self.state.next_silence, now_ms & 0xff_ffff);
        s.updated_at_ms = now_ms;
        let id = s.id.clone();
        self.state.silences.insert(id.clone(), s);
        Ok(id)
    }

    /// Expire a silence now.
    ///
    /// # Errors
    /// Unknown id, or already expired.
    pub fn expire_silence(&mut self, id: &str, now_ms: i64) -> Result<(), String> {
        let s = self.state.silences.get_mut(id).ok_or_else(|| format!("no silence `{id}`"))?;
        if s.state(now_ms) == SilenceState::Expired {
            return Err(format!("silence `{id}` has already expired"));
        }
        s.ends_at_ms = now_ms;
        s.starts_at_ms = s.starts_at_ms.min(now_ms);
        s.updated_at_ms = now_ms;
        Ok(())
    }

    /// Forget silences expired for longer than `retention_ms`.
    pub fn gc_silences(&mut self, now_ms: i64, retention_ms: i64) {
        self.state.silences.retain(|_, s| now_ms - s.ends_at_ms < retention_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;
    use vigil_config::{parse_matchers, Severity};

    fn rule(name: &str, expr: &str, for_s: u64, keep_s: u64) -> AlertRule {
        AlertRule {
            name: name.into(),
            expr: expr.parse().unwrap(),
            for_: Duration::from_secs(for_s),
            keep_firing_for: Duration::from_secs(keep_s),
            severity: Severity::P2,
            labels: BTreeMap::from([("team".into(), "data".into())]),
            annotations: BTreeMap::from([("description".into(), "{{ $labels.source }} at {{ $value }}".into())]),
        }
    }

    fn sample(metric: &str, source: &str, v: f64) -> Sample {
        Sample { metric: metric.into(), labels: BTreeMap::from([("source".into(), source.into())]), value: v }
    }

    fn engine(rules: Vec<AlertRule>, inhibit: &[(&str, &str, &[&str])]) -> Engine {
        let inhibit = inhibit
            .iter()
            .map(|(s, t, eq)| InhibitRule {
                source_matchers: parse_matchers(s).unwrap(),
                target_matchers: parse_matchers(t).unwrap(),
                equal: eq.iter().map(|x| x.to_string()).collect(),
            })
            .collect();
        Engine::new(rules, inhibit, AnomalyConfig::default(), EngineState::default())
    }

    fn states(e: &Engine) -> Vec<(String, AlertState)> {
        e.state.alerts.values().map(|a| (a.labels["source"].clone(), a.state)).collect()
    }

    #[test]
    fn pending_firing_keep_firing_resolved() {
        let mut e = engine(vec![rule("Low", "validity_ratio < 0.95", 30, 20)], &[]);
        let ret = 60_000;
        e.evaluate(0, &[sample("validity_ratio", "a", 0.8), sample("validity_ratio", "b", 0.99)], ret);
        assert_eq!(states(&e), vec![("a".into(), AlertState::Pending)]);
        e.evaluate(29_000, &[sample("validity_ratio", "a", 0.8)], ret);
        assert_eq!(states(&e)[0].1, AlertState::Pending, "for not yet elapsed");
        e.evaluate(30_000, &[sample("validity_ratio", "a", 0.7)], ret);
        let a = e.state.alerts.values().next().unwrap().clone();
        assert_eq!((a.state, a.fired_at_ms, a.active_at_ms), (AlertState::Firing, Some(30_000), 0));
        assert_eq!(a.annotations["description"], "a at 0.7");
        assert_eq!(a.labels["team"], "data");
        assert_eq!(a.labels["alertname"], "Low");
        e.evaluate(40_000, &[sample("validity_ratio", "a", 0.99)], ret);
        assert_eq!(states(&e)[0].1, AlertState::Firing, "keep_firing_for holds it");
        e.evaluate(50_000, &[], ret);
        assert_eq!(states(&e)[0].1, AlertState::Resolved);
        e.evaluate(50_000 + ret, &[], ret);
        assert!(e.state.alerts.is_empty(), "resolved alerts are forgotten after the retention");
    }

    #[test]
    fn pending_that_clears_never_fires_and_refire_is_new() {
        let mut e = engine(vec![rule("Low", "validity_ratio < 0.95", 10, 0)], &[]);
        e.evaluate(0, &[sample("validity_ratio", "a", 0.5)], 1_000_000);
        e.evaluate(5_000, &[sample("validity_ratio", "a", 1.0)], 1_000_000);
        assert!(e.state.alerts.is_empty());
        e.evaluate(6_000, &[sample("validity_ratio", "a", 0.5)], 1_000_000);
        e.evaluate(16_000, &[sample("validity_ratio", "a", 0.5)], 1_000_000);
        e.evaluate(17_000, &[], 1_000_000);
        e.evaluate(20_000, &[sample("validity_ratio", "a", 0.5)], 1_000_000);
        let a = e.state.alerts.values().next().unwrap();
        assert_eq!((a.state, a.active_at_ms), (AlertState::Pending, 20_000), "a new activation after resolve");
    }

    #[test]
    fn silences_and_inhibition() {
        let mut e = engine(vec![rule("Down", "brokers_up < 1", 0, 0), rule("Lag", "lag > 10", 0, 0)], &[(r#"alertname="Down""#, r#"alertname="Lag""#, &[])]);
        let node = Sample { metric: "brokers_up".into(), labels: BTreeMap::new(), value: 0.0 };
        e.evaluate(0, &[node.clone(), sample("lag", "a", 50.0)], 1000);
        let lag = e.state.alerts.values().find(|a| a.rule == "Lag").unwrap().clone();
        let down = e.state.alerts.values().find(|a| a.rule == "Down").unwrap().clone();
        assert_eq!(e.suppression(&lag, 0).inhibited_by, vec![down.fingerprint.clone()]);
        assert!(!e.suppression(&down, 0).any(), "the source is not inhibited");
        // Without the source firing, the target is notified.
        e.evaluate(1, &[sample("lag", "a", 50.0)], 1000);
        assert!(!e.suppression(&lag, 1).any());

        let s = Silence {
            id: String::new(),
            matchers: parse_matchers(r#"alertname="Lag", source=~"a|b""#).unwrap(),
            starts_at_ms: 0,
            ends_at_ms: 100,
            created_by: "ops".into(),
            comment: "maintenance".into(),
            updated_at_ms: 0,
        };
        let id = e.add_silence(s.clone(), 1).unwrap();
        assert_eq!(e.suppression(&lag, 50).silenced_by, vec![id.clone()]);
        assert!(!e.suppression(&lag, 100).any(), "ended");
        e.expire_silence(&id, 10).unwrap();
        assert!(!e.suppression(&lag, 11).any(), "expired early");
        assert!(e.expire_silence(&id, 12).is_err());
        assert!(e.add_silence(Silence { matchers: vec![], ..s.clone() }, 1).is_err());
        assert!(e.add_silence(Silence { ends_at_ms: 0, ..s }, 1).is_err());
    }

    #[test]
    fn rendering() {
        let l = BTreeMap::from([("source".to_string(), "events".to_string())]);
        assert_eq!(render("{{$labels.source}} {{ $value }} {{ $labels.none }}|{{ other }}", &l, 0.123456), "events 0.1235 |{{ other }}");
        assert_eq!(render("unclosed {{ $value", &l, 1.0), "unclosed {{ $value");
    }

    proptest! {
        /// Whatever the sequence of values, an alert fires only after its condition held
        /// continuously for `for`, and every firing alert's condition held at its last
        /// evaluation or within `keep_firing_for` of it.
        #[test]
        fn fires_only_after_for(values in proptest::collection::vec(0.0f64..1.0, 1..80), for_s in 0u64..20, keep_s in 0u64..10) {
            let mut e = engine(vec![rule("Low", "validity_ratio < 0.5", for_s, keep_s)], &[]);
            let mut since: Option<i64> = None;
            let mut last_true = i64::MIN / 2;
            for (i, v) in values.iter().enumerate() {
                let now = i as i64 * 1000;
                e.evaluate(now, &[sample("validity_ratio", "a", *v)], 1_000_000);
                if *v < 0.5 { since.get_or_insert(now); last_true = now; } else { since = None; }
                if let Some(a) = e.state.alerts.values().next() {
                    if a.state == AlertState::Firing {
                        prop_assert!(now - last_true < keep_s as i64 * 1000 || last_true == now);
                        prop_assert!(a.fired_at_ms.unwrap() - a.active_at_ms >= for_s as i64 * 1000);
                    }
                    if a.state == AlertState::Pending {
                        prop_assert!(since.is_some());
                    }
                }
            }
        }

        #[test]
        fn fingerprints_are_stable_and_distinct(a in "[a-z]{1,8}", b in "[a-z]{1,8}") {
            let l1 = BTreeMap::from([("x".to_string(), a.clone())]);
            let l2 = BTreeMap::from([("x".to_string(), b.clone())]);
            prop_assert_eq!(fingerprint(&l1), fingerprint(&l1.clone()));
            prop_assert_eq!(fingerprint(&l1) == fingerprint(&l2), a == b);
        }
    }
}
