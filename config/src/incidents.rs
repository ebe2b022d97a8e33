//! `[incidents]`: which alerts open incidents, how they group and reopen, the timeline's
//! look-back, the operational journal, and escalation policies.
use crate::alerts::{Matcher, Severity};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[[incidents.policies.levels]]`: who is notified at one escalation level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationLevel {
    /// Not acknowledged this long after this level was notified → the next level.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Receivers (of `[[alerts.receivers]]`, or `log`) notified at this level.
    pub receivers: Vec<String>,
    /// On-call role names named in the notification (e.g. `primary-oncall`).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `[[incidents.policies]]`: an escalation policy for incidents matching `matchers` (on the
/// incident's labels: `severity`, `alertname`, `source`, ...). The first match applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicy {
    /// Name, shown in the timeline.
    pub name: String,
    /// Matchers (all must match; empty matches every incident).
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    /// Times the whole policy is run again after its last level timed out. Default 0.
    #[serde(default)]
    pub repeat: u32,
    /// Levels, notified in order until the incident is acknowledged.
    pub levels: Vec<EscalationLevel>,
}

/// `[incidents]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentsConfig {
    /// Open incidents from alerts and escalate them. Default true (needs alerting).
    pub enabled: bool,
    /// Firing alerts at or above this severity open an incident. Default P2 (P1 and P2).
    pub open_at: Severity,
    /// Alerts with equal values of these labels join the same open incident. Default
    /// `["source"]`: everything wrong with one source is one incident.
    pub group_by: Vec<String>,
    /// An alert of a group whose incident was resolved less than this ago reopens it
    /// instead of opening a new one. Default `30m`.
    #[serde(with = "humantime_serde")]
    pub reopen_within: Duration,
    /// The timeline starts this long before the first signal. Default `15m`.
    #[serde(with = "humantime_serde")]
    pub timeline_lookback: Duration,
    /// When every alert of an incident has resolved, mark it mitigated. Default true.
    pub auto_mitigate: bool,
    /// A DLQ reason whose rate rises above this (records/s) and above `dlq_burst_share` of
    /// the records read is journaled as a burst. Default 1.0.
    pub dlq_burst_per_sec: f64,
    /// Share of the records read one DLQ reason must reach to count as a burst, so a steady
    /// trickle of bad records is not news. Default 0.02.
    pub dlq_burst_share: f64,
    /// Operational events are journaled in RocksDB for this long. Default `7d`.
    #[serde(with = "humantime_serde")]
    pub journal_retention: Duration,
    /// Escalation policies, first match wins. Default: one policy, `log` at once, again
    /// after 15 minutes unacknowledged.
    pub policies: Vec<EscalationPolicy>,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            open_at: Severity::P2,
            group_by: vec!["source".into()],
            reopen_within: Duration::from_secs(30 * 60),
            timeline_lookback: Duration::from_secs(15 * 60),
            auto_mitigate: true,
            dlq_burst_per_sec: 1.0,
            dlq_burst_share: 0.02,
            journal_retention: Duration::from_secs(7 * 86_400),
            policies: vec![EscalationPolicy {
                name: "default".into(),
                matchers: Vec::new(),
                repeat: 0,
                levels: vec![
                    EscalationLevel { timeout: Duration::from_secs(15 * 60), receivers: vec!["log".into()], roles: vec!["primary-oncall".into()] },
                    EscalationLevel { timeout: Duration::from_secs(30 * 60), receivers: vec!["log".into()], roles: vec!["secondary-oncall".into()] },
                ],
            }],
        }
    }
}

impl IncidentsConfig {
    pub(crate) fn validate(&self, alerts: &crate::AlertsConfig, err: &mut impl FnMut(&str, &str)) {
        for (i, p) in self.policies.iter().enumerate() {
            if p.levels.is_empty() {
                err(&format!("incidents.policies[{i}].levels"), "needs at least one level");
            }
            for (j, l) in p.levels.iter().enumerate() {
                let path = format!("incidents.policies[{i}].levels[{j}]");
                if l.timeout.is_zero() {
                    err(&format!("{path}.timeout"), "must be greater than 0");
                }
                if l.receivers.is_empty() {
                    err(&format!("{path}.receivers"), "needs at least one receiver");
                }
                for r in &l.receivers {
                    if !alerts.has_receiver(r) {
                        err(&format!("{path}.receivers"), &format!("`{r}` is not in alerts.receivers"));
                    }
                }
            }
        }
        if self.dlq_burst_per_sec.is_nan() || self.dlq_burst_per_sec <= 0.0 {
            err("incidents.dlq_burst_per_sec", "must be greater than 0");
        }
        if !(0.0..=1.0).contains(&self.dlq_burst_share) {
            err("incidents.dlq_burst_share", "must be between 0.0 and 1.0");
        }
        if self.journal_retention.is_zero() {
            err("incidents.journal_retention", "must be greater than 0");
        }
    }
}
