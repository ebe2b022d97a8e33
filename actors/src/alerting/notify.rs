//! Routing and notification planning, pure: which receivers an alert goes to (routes),
//! which alerts are notified together (groups, with Alertmanager's `group_wait`,
//! `group_interval` and `repeat_interval`), when `alertmanager` receivers get the firing
//! set again (`resend_interval`), and the payloads: Alertmanager's v4 webhook, its
//! `/api/v2/alerts` body, and the Kafka record.
use super::engine::{Alert, AlertState, Labels};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use vigil_config::{AlertsConfig, ReceiverKind};
use vigil_runtime::rfc3339_ms;

/// Receivers an alert is routed to: routes in order, the first match wins unless it says
/// `continue`; none matched → the default receiver.
pub fn route(cfg: &AlertsConfig, labels: &Labels) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in &cfg.routes {
        if r.matchers.iter().all(|m| m.matches(labels)) {
            if !out.contains(&r.receiver) {
                out.push(r.receiver.clone());
            }
            if !r.continue_ {
                return out;
            }
        }
    }
    if out.is_empty() {
        out.push(cfg.default_receiver.clone());
    }
    out
}

/// Kind of a receiver by name (`log` when undeclared).
pub fn kind_of(cfg: &AlertsConfig, receiver: &str) -> ReceiverKind {
    cfg.receivers.iter().find(|r| r.name == receiver).map(|r| r.kind).unwrap_or(ReceiverKind::Log)
}

/// One notification to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Receiver name.
    pub receiver: String,
    /// Group key (`receiver` + group labels).
    pub group_key: String,
    /// Group labels.
    pub group_labels: Labels,
    /// Alerts (firing and resolved).
    pub alerts: Vec<Alert>,
}

impl Notification {
    /// `firing` if any alert fires, else `resolved`.
    pub fn status(&self) -> &'static str {
        if self.alerts.iter().any(|a| a.state == AlertState::Firing) {
            "firing"
        } else {
            "resolved"
        }
    }
}

/// What a group last told its receiver.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// When the group appeared, ms.
    pub created_ms: i64,
    /// Last notification, ms.
    pub last_ms: Option<i64>,
    /// Fingerprints notified as firing.
    pub notified: Vec<String>,
}

/// Notification bookkeeping, persisted with the alerts so a restart does not re-page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Planner {
    /// Grouped receivers' groups by key.
    pub groups: BTreeMap<String, GroupState>,
    /// `alertmanager` receivers: last push, ms, and the (fingerprint, state) set pushed.
    pub pushed: BTreeMap<String, (i64, Vec<(String, AlertState)>)>,
}

fn ms(d: std::time::Duration) -> i64 {
    d.as_millis() as i64
}

impl Planner {
    /// Notifications due at `now_ms` for `alerts` (firing or resolved, not suppressed).
    pub fn plan(&mut self, cfg: &AlertsConfig, now_ms: i64, alerts: &[&Alert]) -> Vec<Notification> {
        let mut grouped: BTreeMap<String, (String, Labels, Vec<Alert>)> = BTreeMap::new();
        let mut pushes: BTreeMap<String, Vec<Alert>> = BTreeMap::new();
        for a in alerts.iter().filter(|a| a.state != AlertState::Pending) {
            for receiver in route(cfg, &a.labels) {
                if kind_of(cfg, &receiver) == ReceiverKind::Alertmanager {
                    pushes.entry(receiver).or_default().push((*a).clone());
                    continue;
                }
                let group_labels: Labels = cfg.group_by.iter().filter_map(|l| a.labels.get(l).map(|v| (l.clone(), v.clone()))).collect();
                let key = format!("{receiver}:{}", group_labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(","));
                grouped.entry(key).or_insert_with(|| (receiver, group_labels, Vec::new())).2.push((*a).clone());
            }
        }
        let mut out = Vec::new();
        let seen: Vec<String> = grouped.keys().cloned().collect();
        for (key, (receiver, group_labels, members)) in grouped {
            let g = self.groups.entry(key.clone()).or_insert_with(|| GroupState { created_ms: now_ms, ..GroupState::default() });
            let firing: Vec<String> = members.iter().filter(|a| a.state == AlertState::Firing).map(|a| a.fingerprint.clone()).collect();
            // Resolved alerts matter only if the receiver heard they were firing.
            let send: Vec<Alert> = members.into_iter().filter(|a| a.state == AlertState::Firing || g.notified.contains(&a.fingerprint)).collect();
            if send.is_empty() {
                continue;
            }
            let changed = {
                let mut now_set = firing.clone();
                now_set.sort();
                let mut was = g.notified.clone();
                was.sort();
                now_set != was
            };
            let due = match g.last_ms {
                None => now_ms - g.created_ms >= ms(cfg.group_wait),
                Some(t) => (changed && now_ms - t >= ms(cfg.group_interval)) || (!firing.is_empty() && now_ms - t >= ms(cfg.repeat_interval)),
            };
            if due {
                g.last_ms = Some(now_ms);
                g.notified = firing;
                out.push(Notification { receiver, group_key: key, group_labels, alerts: send });
            }
        }
        // Groups whose alerts are all gone are forgotten, as are receivers with nothing to push.
        self.groups.retain(|k, _| seen.contains(k));
        self.pushed.retain(|r, _| pushes.contains_key(r));
        for (receiver, members) in pushes {
            let mut set: Vec<(String, AlertState)> = members.iter().map(|a| (a.fingerprint.clone(), a.state)).collect();
            set.sort_by(|a, b| a.0.cmp(&b.0));
            let due = match self.pushed.get(&receiver) {
                None => true,
                Some((t, was)) => *was != set || now_ms - t >= ms(cfg.resend_interval),
            };
            if due {
                self.pushed.insert(receiver.clone(), (now_ms, set));
                out.push(Notification { group_key: receiver.clone(), receiver, group_labels: Labels::new(), alerts: members });
            }
        }
        out
    }
}

fn alert_json(a: &Alert, generator_url: &str, ends_at: Option<i64>) -> Value {
    json!({
        "status": if a.state == AlertState::Firing { "firing" } else { "resolved" },
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": rfc3339_ms(a.fired_at_ms.unwrap_or(a.active_at_ms)),
        "endsAt": ends_at.map(rfc3339_ms).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "generatorURL": generator_url,
        "fingerprint": a.fingerprint,
    })
}

fn common<'a>(maps: impl Iterator<Item = &'a BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let mut it = maps;
    let Some(first) = it.next() else { return BTreeMap::new() };
    let mut c = first.clone();
    for m in it {
        c.retain(|k, v| m.get(k) == Some(v));
    }
    c
}

/// Alertmanager's webhook payload, version 4.
pub fn webhook_payload(n: &Notification, external_url: &str) -> Value {
    let gen = format!("{external_url}/alerts");
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": n.status(),
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": common(n.alerts.iter().map(|a| &a.labels)),
        "commonAnnotations": common(n.alerts.iter().map(|a| &a.annotations)),
        "externalURL": external_url,
        "alerts": n.alerts.iter().map(|a| alert_json(a, &gen, a.resolved_at_ms)).collect::<Vec<_>>(),
    })
}

/// The body of `POST /api/v2/alerts`: firing alerts end `4 × resend_interval` ahead (so
/// Alertmanager resolves them if the node goes away), resolved ones at their resolve time.
pub fn alertmanager_payload(n: &Notification, external_url: &str, now_ms: i64, resend_ms: i64) -> Value {
    let gen = format!("{external_url}/alerts");
    let list: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            let ends = match a.state {
                AlertState::Firing => now_ms + 4 * resend_ms,
                _ => a.resolved_at_ms.unwrap_or(now_ms),
            };
            json!({"labels": a.labels, "annotations": a.annotations, "startsAt": rfc3339_ms(a.fired_at_ms.unwrap_or(a.active_at_ms)),
                   "endsAt": rfc3339_ms(ends), "generatorURL": gen})
        })
        .collect();
    Value::Array(list)
}

/// One Kafka record per alert: key the fingerprint, value the webhook alert object plus the
/// receiver and group key.
pub fn kafka_records(n: &Notification, external_url: &str) -> Vec<(String, Value)> {
    let gen = format!("{external_url}/alerts");
    n.alerts
        .iter()
        .map(|a| {
            let mut v = alert_json(a, &gen, a.resolved_at_ms);
            if let Some(o) = v.as_object_mut() {
                o.insert("receiver".into(), n.receiver.clone().into());
                o.insert("groupKey".into(), n.group_key.clone().into());
            }
            (a.fingerprint.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vigil_config::{parse_matchers, ReceiverConfig, RouteConfig};

    fn alert(name: &str, source: &str, state: AlertState) -> Alert {
        let labels: Labels = [("alertname", name), ("source", source), ("severity", "P2")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Alert {
            fingerprint: super::super::engine::fingerprint(&labels),
            rule: name.into(),
            labels,
            annotations: BTreeMap::from([("summary".to_string(), format!("{name} on {source}"))]),
            state,
            active_at_ms: 0,
            fired_at_ms: Some(0),
            resolved_at_ms: (state == AlertState::Resolved).then_some(5),
            last_true_ms: 0,
            value: 1.0,
        }
    }

    fn cfg() -> AlertsConfig {
        AlertsConfig {
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            repeat_interval: Duration::from_secs(3600),
            group_by: vec!["alertname".into()],
            receivers: vec![
                ReceiverConfig { name: "hook".into(), kind: ReceiverKind::Webhook, url: "http://x".into(), topic: String::new() },
                ReceiverConfig { name: "am".into(), kind: ReceiverKind::Alertmanager, url: "http://y".into(), topic: String::new() },
            ],
            routes: vec![
                RouteConfig { matchers: parse_matchers(r#"severity="P2""#).unwrap(), receiver: "am".into(), continue_: true },
                RouteConfig { matchers: parse_matchers(r#"alertname="Low""#).unwrap(), receiver: "hook".into(), continue_: false },
            ],
            ..AlertsConfig::default()
        }
    }

    #[test]
    fn routes_in_order_with_continue() {
        let c = cfg();
        assert_eq!(route(&c, &alert("Low", "a", AlertState::Firing).labels), vec!["am", "hook"]);
        assert_eq!(route(&c, &alert("Other", "a", AlertState::Firing).labels), vec!["am"], "a match, even with continue, means no default");
        let p4 =
            alert("Other", "a", AlertState::Firing).labels.into_iter().map(|(k, v)| if k == "severity" { (k, "P4".to_string()) } else { (k, v) }).collect();
        assert_eq!(route(&c, &p4), vec!["log"], "nothing matched: the default receiver");
    }

    #[test]
    fn groups_wait_then_notify_changes_and_resolution() {
        let c = AlertsConfig { routes: Vec::new(), default_receiver: "hook".into(), ..cfg() };
        let mut p = Planner::default();
        let (a, b) = (alert("Low", "a", AlertState::Firing), alert("Low", "b", AlertState::Firing));
        assert!(p.plan(&c, 0, &[&a]).is_empty(), "group_wait");
        let n = p.plan(&c, 10_000, &[&a, &b]);
        assert_eq!(n.len(), 1, "one notification for the group");
        assert_eq!(n[0].alerts.len(), 2);
        assert!(p.plan(&c, 20_000, &[&a, &b]).is_empty(), "nothing changed");
        let b_res = alert("Low", "b", AlertState::Resolved);
        assert!(p.plan(&c, 30_000, &[&a, &b_res]).is_empty(), "group_interval not over");
        let n = p.plan(&c, 70_000, &[&a, &b_res]);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].status(), "firing");
        let payload = webhook_payload(&n[0], "http://node");
        assert_eq!(payload["version"], "4");
        assert_eq!(payload["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(payload["commonLabels"]["alertname"], "Low");
        assert!(payload["commonLabels"].get("source").is_none());
        assert!(p.plan(&c, 80_000, &[&a]).is_empty());
        let n = p.plan(&c, 3_700_000, &[&a]);
        assert_eq!(n.len(), 1, "repeat_interval");
        // A resolved alert the receiver never heard about is not sent.
        let mut q = Planner::default();
        assert!(q.plan(&c, 0, &[&alert("Low", "z", AlertState::Resolved)]).is_empty());
        assert!(q.plan(&c, 20_000, &[&alert("Low", "z", AlertState::Resolved)]).is_empty());
    }

    #[test]
    fn alertmanager_receivers_get_the_set_on_change_and_every_resend() {
        let c = AlertsConfig { resend_interval: Duration::from_secs(30), ..cfg() };
        let mut p = Planner::default();
        let a = alert("X", "a", AlertState::Firing);
        let first = p.plan(&c, 0, &[&a]);
        assert!(first.iter().any(|n| n.receiver == "am"), "pushed at once");
        assert!(p.plan(&c, 10_000, &[&a]).iter().all(|n| n.receiver != "am"));
        assert!(p.plan(&c, 30_000, &[&a]).iter().any(|n| n.receiver == "am"), "re-sent");
        let r = alert("X", "a", AlertState::Resolved);
        let n = p.plan(&c, 31_000, &[&r]);
        let am = n.iter().find(|n| n.receiver == "am").unwrap();
        let body = alertmanager_payload(am, "http://node", 31_000, 30_000);
        assert_eq!(body[0]["endsAt"], rfc3339_ms(5), "resolved: endsAt is the resolve time");
        let body = alertmanager_payload(&first[0], "http://node", 0, 30_000);
        assert_eq!(body[0]["endsAt"], rfc3339_ms(120_000), "firing: 4 x resend ahead");
    }
}
