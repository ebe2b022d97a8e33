//! Incidents and their lifecycle, pure (time is passed in): open from a firing alert or by
//! hand, join the open incident of the same group, reopen within `reopen_within`, states
//! open → acknowledged → mitigated → resolved, roles, notes, and escalation timers — all in
//! one serializable [`Book`] so a restarted node carries on where it stopped.
use crate::alerting::engine::{Alert, AlertState, Labels};
use crate::journal::{Event, EventKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vigil_config::{EscalationLevel, IncidentsConfig, Severity};

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Opened, nobody has acknowledged it.
    Open,
    /// Someone owns it.
    Acknowledged,
    /// The impact has stopped (all alerts resolved, or an operator says so).
    Mitigated,
    /// Over.
    Resolved,
}

impl IncidentState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Mitigated => "mitigated",
            IncidentState::Resolved => "resolved",
        }
    }
}

/// Incident roles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Roles {
    /// Incident commander.
    pub commander: Option<String>,
    /// Communications lead.
    pub communications: Option<String>,
    /// Scribe.
    pub scribe: Option<String>,
    /// Other responders.
    pub responders: Vec<String>,
}

/// An alert as the incident remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentAlert {
    /// Rule.
    pub rule: String,
    /// Labels.
    pub labels: Labels,
    /// Condition first held, ms.
    pub active_at_ms: i64,
    /// Started firing, ms.
    pub fired_at_ms: Option<i64>,
    /// Resolved, ms.
    pub resolved_at_ms: Option<i64>,
    /// Summary annotation.
    pub summary: String,
}

/// Escalation progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// Policy name.
    pub policy: String,
    /// Index of the level last notified.
    pub level: usize,
    /// When that level was notified, ms.
    pub notified_at_ms: i64,
    /// Completed passes through the policy.
    pub round: u32,
    /// Stopped (acknowledged or exhausted).
    pub stopped: bool,
}

/// One incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Number, per node, from 1.
    pub id: u64,
    /// Title.
    pub title: String,
    /// Severity (the highest of its alerts).
    pub severity: Severity,
    /// State.
    pub state: IncidentState,
    /// Group key (`incidents.group_by` label values).
    pub group_key: String,
    /// Group labels and severity, what escalation policies match on.
    pub labels: Labels,
    /// Opened, ms.
    pub opened_at_ms: i64,
    /// Earliest sign of trouble among its alerts (condition first held), ms.
    pub first_signal_ms: i64,
    /// First alert firing, ms.
    pub first_firing_ms: Option<i64>,
    /// Acknowledged, ms.
    pub acknowledged_at_ms: Option<i64>,
    /// Mitigated, ms.
    pub mitigated_at_ms: Option<i64>,
    /// Resolved, ms.
    pub resolved_at_ms: Option<i64>,
    /// Alerts by fingerprint.
    pub alerts: BTreeMap<String, IncidentAlert>,
    /// Roles.
    pub roles: Roles,
    /// Escalation, if a policy applies.
    pub escalation: Option<Escalation>,
    /// The incident's own timeline entries (opening, alerts joining, escalations, operator
    /// actions and notes).
    pub entries: Vec<Event>,
    /// Times reopened.
    pub reopened: u32,
    /// Opened by hand (`vigil incident open`).
    pub manual: bool,
}

/// A level to notify, returned when an incident opens or escalates.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Incident.
    pub incident: u64,
    /// Policy.
    pub policy: String,
    /// Level index (0 = first).
    pub level: usize,
    /// Who.
    pub target: EscalationLevel,
}

/// All incidents of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// Incidents by number.
    pub incidents: BTreeMap<u64, Incident>,
    /// Last number given.
    pub last_id: u64,
}

impl Incident {
    /// Add a timeline entry about this incident.
    fn log(&mut self, at_ms: i64, kind: EventKind, by: &str, text: String) {
        let mut e = Event { at_ms, ..Event::now(kind, by, text) };
        e.topic = self.labels.get("source").cloned();
        e.link = Some(format!("/incidents/{}", self.id));
        self.entries.push(e);
    }
}

fn group_of(cfg: &IncidentsConfig, labels: &Labels) -> (String, Labels) {
    let g: Labels = cfg.group_by.iter().filter_map(|l| labels.get(l).map(|v| (l.clone(), v.clone()))).collect();
    let key = g.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    (key, g)
}

fn severity_of(labels: &Labels) -> Option<Severity> {
    serde_json::from_value(serde_json::Value::String(labels.get("severity")?.clone())).ok()
}

/// Errors of operator actions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    /// No such incident.
    #[error("no incident #{0}")]
    Unknown(u64),
    /// The action does not apply in the current state.
    #[error("incident #{id} is {state}: cannot {action}")]
    WrongState {
        /// Incident.
        id: u64,
        /// Its state.
        state: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
}

impl Book {
    fn start_escalation(cfg: &IncidentsConfig, inc: &mut Incident, now_ms: i64) -> Option<Page> {
        let policy = cfg.policies.iter().find(|p| p.matchers.iter().all(|m| m.matches(&inc.labels)))?;
        let first = policy.levels.first()?.clone();
        inc.escalation = Some(Escalation { policy: policy.name.clone(), level: 0, notified_at_ms: now_ms, round: 0, stopped: false });
        inc.log(now_ms, EventKind::Incident, "incidents", format!("paged level 1 of policy `{}`: {}", policy.name, describe(&first)));
        Some(Page { incident: inc.id, policy: policy.name.clone(), level: 0, target: first })
    }

    /// A firing alert: opens an incident (at or above `open_at`), joins the open incident of
    /// its group, or reopens one resolved less than `reopen_within` ago. Returns the
    /// incident and the level to page when it (re)opened.
    pub fn on_firing(&mut self, cfg: &IncidentsConfig, a: &Alert, now_ms: i64) -> Option<(u64, Option<Page>)> {
        let sev = severity_of(&a.labels)?;
        if a.state != AlertState::Firing || sev > cfg.open_at {
            return None;
        }
        let (key, group) = group_of(cfg, &a.labels);
        let summary = a.annotations.get("summary").cloned().unwrap_or_else(|| a.rule.clone());
        let ia = IncidentAlert {
            rule: a.rule.clone(),
            labels: a.labels.clone(),
            active_at_ms: a.active_at_ms,
            fired_at_ms: a.fired_at_ms,
            resolved_at_ms: None,
            summary: summary.clone(),
        };
        let reopen_ms = cfg.reopen_within.as_millis() as i64;
        let existing = self
            .incidents
            .values_mut()
            .rev()
            .find(|i| i.group_key == key && (i.state != IncidentState::Resolved || i.resolved_at_ms.is_some_and(|t| now_ms - t < reopen_ms)));
        if let Some(inc) = existing {
            let known = inc.alerts.contains_key(&a.fingerprint) && inc.alerts[&a.fingerprint].resolved_at_ms.is_none();
            inc.first_signal_ms = inc.first_signal_ms.min(a.active_at_ms);
            inc.first_firing_ms = Some(inc.first_firing_ms.map_or(a.fired_at_ms.unwrap_or(now_ms), |t| t.min(a.fired_at_ms.unwrap_or(now_ms))));
            if sev < inc.severity {
                inc.severity = sev;
                inc.labels.insert("severity".into(), sev.to_string());
            }
            inc.alerts.insert(a.fingerprint.clone(), ia);
            let mut page = None;
            if inc.state == IncidentState::Resolved {
                inc.state = IncidentState::Open;
                inc.reopened += 1;
                inc.resolved_at_ms = None;
                inc.mitigated_at_ms = None;
                inc.acknowledged_at_ms = None;
                inc.log(now_ms, EventKind::Incident, "incidents", format!("reopened by {} ({summary})", a.rule));
                page = Self::start_escalation(cfg, inc, now_ms);
            } else if inc.state == IncidentState::Mitigated {
                inc.state = if inc.acknowledged_at_ms.is_some() { IncidentState::Acknowledged } else { IncidentState::Open };
                inc.mitigated_at_ms = None;
                inc.log(now_ms, EventKind::Incident, "incidents", format!("back from mitigated: {} fires again", a.rule));
            } else if !known {
                inc.log(now_ms, EventKind::Incident, "incidents", format!("alert {} joined ({summary})", a.rule));
            }
            return Some((inc.id, page));
        }
        self.last_id += 1;
        let id = self.last_id;
        let mut labels = group;
        labels.insert("severity".into(), sev.to_string());
        labels.insert("alertname".into(), a.rule.clone());
        let mut inc = Incident {
            id,
            title: summary.clone(),
            severity: sev,
            state: IncidentState::Open,
            group_key: key,
            labels,
            opened_at_ms: now_ms,
            first_signal_ms: a.active_at_ms.min(now_ms),
            first_firing_ms: Some(a.fired_at_ms.unwrap_or(now_ms)),
            acknowledged_at_ms: None,
            mitigated_at_ms: None,
            resolved_at_ms: None,
            alerts: BTreeMap::from([(a.fingerprint.clone(), ia)]),
            roles: Roles::default(),
            escalation: None,
            entries: Vec::new(),
            reopened: 0,
            manual: false,
        };
        inc.log(now_ms, EventKind::Incident, "incidents", format!("opened {sev} by alert {} ({summary})", a.rule));
        let page = Self::start_escalation(cfg, &mut inc, now_ms);
        self.incidents.insert(id, inc);
        Some((id, page))
    }

    /// A resolved alert: recorded on its incident; when it was the last firing one and
    /// `auto_mitigate` is set, the incident is mitigated. Returns the incident touched.
    pub fn on_resolved(&mut self, cfg: &IncidentsConfig, fingerprint: &str, now_ms: i64) -> Option<u64> {
        let inc = self
            .incidents
            .values_mut()
            .rev()
            .find(|i| i.state != IncidentState::Resolved && i.alerts.get(fingerprint).is_some_and(|a| a.resolved_at_ms.is_none()))?;
        let rule = inc.alerts.get(fingerprint).map(|a| a.rule.clone()).unwrap_or_default();
        if let Some(a) = inc.alerts.get_mut(fingerprint) {
            a.resolved_at_ms = Some(now_ms);
        }
        inc.log(now_ms, EventKind::Incident, "incidents", format!("alert {rule} resolved"));
        if cfg.auto_mitigate && inc.alerts.values().all(|a| a.resolved_at_ms.is_some()) && inc.state < IncidentState::Mitigated {
            inc.state = IncidentState::Mitigated;
            inc.mitigated_at_ms = Some(now_ms);
            if let Some(e) = &mut inc.escalation {
                e.stopped = true;
            }
            inc.log(now_ms, EventKind::Incident, "incidents", "mitigated: every alert has resolved".into());
        }
        Some(inc.id)
    }

    /// Open an incident by hand.
    ///
    /// # Errors
    /// An empty title.
    pub fn open_manual(
        &mut self,
        cfg: &IncidentsConfig,
        title: &str,
        severity: Severity,
        source: Option<&str>,
        by: &str,
        now_ms: i64,
    ) -> Result<(u64, Option<Page>), ActionError> {
        if title.trim().is_empty() {
            return Err(ActionError::Invalid("an incident needs a title".into()));
        }
        self.last_id += 1;
        let id = self.last_id;
        let mut labels = Labels::from([("severity".to_string(), severity.to_string())]);
        if let Some(s) = source {
            labels.insert("source".into(), s.into());
        }
        let mut inc = Incident {
            id,
            title: title.into(),
            severity,
            state: IncidentState::Open,
            group_key: format!("manual-{id}"),
            labels,
            opened_at_ms: now_ms,
            first_signal_ms: now_ms,
            first_firing_ms: None,
            acknowledged_at_ms: None,
            mitigated_at_ms: None,
            resolved_at_ms: None,
            alerts: BTreeMap::new(),
            roles: Roles::default(),
            escalation: None,
            entries: Vec::new(),
            reopened: 0,
            manual: true,
        };
        inc.log(now_ms, EventKind::Operator, by, format!("opened {severity} by hand: {title}"));
        let page = Self::start_escalation(cfg, &mut inc, now_ms);
        self.incidents.insert(id, inc);
        Ok((id, page))
    }

    fn get(&mut self, id: u64) -> Result<&mut Incident, ActionError> {
        self.incidents.get_mut(&id).ok_or(ActionError::Unknown(id))
    }

    /// Acknowledge: stops escalation.
    ///
    /// # Errors
    /// Unknown incident, or not open.
    pub fn ack(&mut self, id: u64, by: &str, now_ms: i64) -> Result<(), ActionError> {
        let inc = self.get(id)?;
        if inc.state != IncidentState::Open {
            return Err(ActionError::WrongState { id, state: inc.state.as_str(), action: "acknowledge" });
        }
        inc.state = IncidentState::Acknowledged;
        inc.acknowledged_at_ms = Some(now_ms);
        if let Some(e) = &mut inc.escalation {
            e.stopped = true;
        }
        if inc.roles.commander.is_none() {
            inc.roles.commander = Some(by.into());
        }
        inc.log(now_ms, EventKind::Operator, by, format!("acknowledged by {by}"));
        Ok(())
    }

    /// Assign a role (`commander`, `communications`, `scribe`, `responder`).
    ///
    /// # Errors
    /// Unknown incident or role.
    pub fn assign(&mut self, id: u64, role: &str, who: &str, by: &str, now_ms: i64) -> Result<(), ActionError> {
        let inc = self.get(id)?;
        match role {
            "commander" => inc.roles.commander = Some(who.into()),
            "communications" => inc.roles.communications = Some(who.into()),
            "scribe" => inc.roles.scribe = Some(who.into()),
            "responder" => {
                if !inc.roles.responders.iter().any(|r| r == who) {
                    inc.roles.responders.push(who.into());
                }
            }
            other => return Err(ActionError::Invalid(format!("unknown role `{other}`: commander, communications, scribe or responder"))),
        }
        inc.log(now_ms, EventKind::Operator, by, format!("{who} is {role}"));
        Ok(())
    }

    /// A note in the timeline.
    ///
    /// # Errors
    /// Unknown incident or empty note.
    pub fn note(&mut self, id: u64, by: &str, text: &str, now_ms: i64) -> Result<(), ActionError> {
        if text.trim().is_empty() {
            return Err(ActionError::Invalid("empty note".into()));
        }
        let inc = self.get(id)?;
        inc.log(now_ms, EventKind::Operator, by, format!("note: {text}"));
        Ok(())
    }

    /// Mitigate (the impact has stopped).
    ///
    /// # Errors
    /// Unknown incident, or already mitigated or resolved.
    pub fn mitigate(&mut self, id: u64, by: &str, now_ms: i64) -> Result<(), ActionError> {
        let inc = self.get(id)?;
        if inc.state >= IncidentState::Mitigated {
            return Err(ActionError::WrongState { id, state: inc.state.as_str(), action: "mitigate" });
        }
        inc.state = IncidentState::Mitigated;
        inc.mitigated_at_ms = Some(now_ms);
        if let Some(e) = &mut inc.escalation {
            e.stopped = true;
        }
        inc.log(now_ms, EventKind::Operator, by, format!("mitigated by {by}"));
        Ok(())
    }

    /// Resolve.
    ///
    /// # Errors
    /// Unknown incident, or already resolved.
    pub fn resolve(&mut self, id: u64, by: &str, now_ms: i64) -> Result<(), ActionError> {
        let inc = self.get(id)?;
        if inc.state == IncidentState::Resolved {
            return Err(ActionError::WrongState { id, state: inc.state.as_str(), action: "resolve" });
        }
        inc.mitigated_at_ms = inc.mitigated_at_ms.or(Some(now_ms));
        inc.state = IncidentState::Resolved;
        inc.resolved_at_ms = Some(now_ms);
        if let Some(e) = &mut inc.escalation {
            e.stopped = true;
        }
        inc.log(now_ms, EventKind::Operator, by, format!("resolved by {by}"));
        Ok(())
    }

    /// Escalations due at `now_ms`: an open incident whose level was notified longer than
    /// its timeout ago moves to the next level (or, after the last, starts the policy again
    /// while `repeat` allows). The state advances here, so persisting the book before paging
    /// means a level is paged at most once, even across a crash.
    pub fn due(&mut self, cfg: &IncidentsConfig, now_ms: i64) -> Vec<Page> {
        let mut pages = Vec::new();
        for inc in self.incidents.values_mut() {
            if inc.state != IncidentState::Open {
                continue;
            }
            let Some(esc) = inc.escalation.clone() else { continue };
            if esc.stopped {
                continue;
            }
            let Some(policy) = cfg.policies.iter().find(|p| p.name == esc.policy) else { continue };
            let Some(level) = policy.levels.get(esc.level) else { continue };
            if now_ms - esc.notified_at_ms < level.timeout.as_millis() as i64 {
                continue;
            }
            let (next, round) = if esc.level + 1 < policy.levels.len() {
                (esc.level + 1, esc.round)
            } else if esc.round < policy.repeat {
                (0, esc.round + 1)
            } else {
                inc.escalation = Some(Escalation { stopped: true, ..esc });
                let text = format!("escalation exhausted: policy `{}` has no further level and nobody acknowledged", policy.name);
                inc.log(now_ms, EventKind::Incident, "incidents", text);
                continue;
            };
            let target = policy.levels[next].clone();
            inc.escalation = Some(Escalation { policy: esc.policy.clone(), level: next, notified_at_ms: now_ms, round, stopped: false });
            let waited = (now_ms - esc.notified_at_ms) / 1000;
            let text = format!("escalated to level {} (not acknowledged {waited}s after level {}): {}", next + 1, esc.level + 1, describe(&target));
            inc.log(now_ms, EventKind::Incident, "incidents", text);
            pages.push(Page { incident: inc.id, policy: policy.name.clone(), level: next, target });
        }
        pages
    }
}

/// `receivers a, b; roles x, y`.
pub fn describe(l: &EscalationLevel) -> String {
    let roles = if l.roles.is_empty() { String::new() } else { format!("; roles {}", l.roles.join(", ")) };
    format!("receivers {}{roles}", l.receivers.join(", "))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;
    use vigil_config::EscalationPolicy;

    pub(crate) fn alert(rule: &str, source: &str, sev: &str, active: i64, fired: i64) -> Alert {
        let labels: Labels = [("alertname", rule), ("source", source), ("severity", sev)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Alert {
            fingerprint: crate::alerting::engine::fingerprint(&labels),
            rule: rule.into(),
            labels,
            annotations: BTreeMap::from([("summary".to_string(), format!("{rule} on {source}"))]),
            state: AlertState::Firing,
            active_at_ms: active,
            fired_at_ms: Some(fired),
            resolved_at_ms: None,
            last_true_ms: fired,
            value: 0.5,
        }
    }

    pub(crate) fn cfg() -> IncidentsConfig {
        IncidentsConfig {
            policies: vec![EscalationPolicy {
                name: "test".into(),
                matchers: vec![],
                repeat: 1,
                levels: vec![
                    EscalationLevel { timeout: Duration::from_secs(60), receivers: vec!["log".into()], roles: vec!["primary".into()] },
                    EscalationLevel { timeout: Duration::from_secs(120), receivers: vec!["log".into()], roles: vec!["secondary".into()] },
                ],
            }],
            ..IncidentsConfig::default()
        }
    }

    #[test]
    fn opens_joins_mitigates_and_reopens() {
        let c = cfg();
        let mut b = Book::default();
        assert!(b.on_firing(&c, &alert("Low", "events", "P3", 0, 10), 10).is_none(), "P3 is below open_at");
        let (id, page) = b.on_firing(&c, &alert("Validity", "events", "P2", 0, 30_000), 30_000).unwrap();
        assert_eq!((id, page.map(|p| p.level)), (1, Some(0)));
        let (same, page) = b.on_firing(&c, &alert("Dlq", "events", "P1", 5_000, 40_000), 40_000).unwrap();
        assert_eq!(same, 1, "same source: joins");
        assert!(page.is_none());
        assert_eq!(b.incidents[&1].severity, Severity::P1, "raised to the worst alert");
        assert_eq!(b.incidents[&1].first_signal_ms, 0);
        let (other, _) = b.on_firing(&c, &alert("Validity", "clicks", "P2", 0, 50_000), 50_000).unwrap();
        assert_eq!(other, 2, "another source: another incident");
        for a in [alert("Validity", "events", "P2", 0, 0), alert("Dlq", "events", "P1", 0, 0)] {
            b.on_resolved(&c, &a.fingerprint, 90_000);
        }
        assert_eq!(b.incidents[&1].state, IncidentState::Mitigated);
        b.resolve(1, "ana", 100_000).unwrap();
        let (again, page) = b.on_firing(&c, &alert("Validity", "events", "P2", 200_000, 210_000), 210_000).unwrap();
        assert_eq!((again, b.incidents[&1].reopened), (1, 1), "reopened within reopen_within");
        assert!(page.is_some(), "a reopened incident is paged again");
        b.resolve(1, "ana", 220_000).unwrap();
        let late = 220_000 + c.reopen_within.as_millis() as i64 + 1;
        let (new, _) = b.on_firing(&c, &alert("Validity", "events", "P2", late, late), late).unwrap();
        assert_eq!(new, 3, "after reopen_within: a new incident");
    }

    #[test]
    fn escalates_on_time_once_and_stops_on_ack() {
        let c = cfg();
        let mut b = Book::default();
        b.on_firing(&c, &alert("Validity", "events", "P2", 0, 1_000), 1_000).unwrap();
        assert!(b.due(&c, 60_999).is_empty(), "level 1 timeout is 60 s");
        let p = b.due(&c, 61_000);
        assert_eq!(p.iter().map(|p| p.level).collect::<Vec<_>>(), vec![1]);
        assert!(b.due(&c, 61_000).is_empty(), "not twice");
        let p = b.due(&c, 181_000);
        assert_eq!(p.iter().map(|p| (p.level, p.target.roles[0].as_str())).collect::<Vec<_>>(), vec![(0, "primary")], "repeat: level 1 again");
        b.ack(1, "bo", 200_000).unwrap();
        assert!(b.due(&c, 10_000_000).is_empty(), "acknowledged: no more escalation");
        assert_eq!(b.incidents[&1].roles.commander.as_deref(), Some("bo"));
        assert!(b.ack(1, "bo", 200_001).is_err());
        // Round 2 exhausted without ack.
        let mut b = Book::default();
        b.on_firing(&c, &alert("Validity", "events", "P2", 0, 0), 0).unwrap();
        let mut t = 0;
        let mut pages = 0;
        for _ in 0..20 {
            t += 60_000;
            pages += b.due(&c, t).len();
        }
        assert_eq!(pages, 3, "levels 2, 1, 2 after the first page; then exhausted");
        assert!(b.incidents[&1].entries.iter().any(|e| e.text.contains("exhausted")));
    }

    #[test]
    fn operator_actions_are_checked_and_recorded() {
        let c = cfg();
        let mut b = Book::default();
        let (id, _) = b.open_manual(&c, "payments double-charged", Severity::P1, Some("payments"), "ana", 5).unwrap();
        b.assign(id, "scribe", "cy", "ana", 6).unwrap();
        b.assign(id, "responder", "dee", "ana", 7).unwrap();
        assert!(b.assign(id, "chef", "x", "ana", 7).is_err());
        b.note(id, "cy", "rolled back producer v2", 8).unwrap();
        b.mitigate(id, "ana", 9).unwrap();
        assert!(b.mitigate(id, "ana", 9).is_err());
        b.resolve(id, "ana", 10).unwrap();
        assert!(b.resolve(id, "ana", 11).is_err());
        assert!(b.ack(99, "x", 1).is_err());
        let texts: Vec<&str> = b.incidents[&id].entries.iter().map(|e| e.text.as_str()).collect();
        assert!(texts.iter().any(|t| t.contains("cy is scribe")) && texts.iter().any(|t| t.contains("rolled back")), "{texts:?}");
    }
}
