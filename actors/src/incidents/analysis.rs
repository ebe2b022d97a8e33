//! What an incident is made of once looked at, pure: its timeline (journal events from
//! `timeline_lookback` before the first signal to the end, merged with its own entries),
//! the likely trigger, the durations (detect, acknowledge, mitigate, resolve), the impact
//! from the data-quality history, the blameless post-mortem (Markdown or JSON) and the
//! review report over many incidents.
use super::model::{Incident, IncidentState};
use crate::journal::{Event, EventKind};
use crate::quality::actor::HistoryPoint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Stages every source topic passes through: an event on one of them concerns all topics.
const PIPELINE: [&str; 5] = ["ingest", "validate", "process", "sink", "pipeline"];

/// Times from the first signal, ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Durations {
    /// First signal → first alert firing.
    pub detect_ms: Option<i64>,
    /// Opened → acknowledged.
    pub acknowledge_ms: Option<i64>,
    /// Opened → mitigated.
    pub mitigate_ms: Option<i64>,
    /// Opened → resolved.
    pub resolve_ms: Option<i64>,
}

/// What the incident cost, from the data-quality history over its span.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    /// Span measured: first signal → resolved (or now), ms.
    pub from_ms: i64,
    /// End of the span, ms.
    pub to_ms: i64,
    /// Records read from the affected sources.
    pub records_read: u64,
    /// Records sent to the DLQ, by reason.
    pub dlq_by_reason: BTreeMap<String, u64>,
    /// Late records.
    pub late: u64,
    /// Duplicate records.
    pub duplicates: u64,
    /// Records lost to retention (journal).
    pub lost_to_retention: u64,
    /// Lowest validity ratio of a slot.
    pub worst_validity: Option<f64>,
    /// Highest consumer lag seen (records delayed).
    pub max_lag: i64,
    /// Supervised restarts (journal).
    pub restarts: u64,
    /// Event-time span of the records read during the span, ms: the data whose results
    /// the incident may have affected.
    pub event_time: Option<(i64, i64)>,
}

/// An incident with everything derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// The incident.
    pub incident: Incident,
    /// Timeline, time order.
    pub timeline: Vec<Event>,
    /// The likely trigger.
    pub trigger: Option<Event>,
    /// Durations.
    pub durations: Durations,
    /// Impact.
    pub impact: Impact,
}

/// Source topics the incident concerns.
fn topics(inc: &Incident) -> Vec<String> {
    let mut t: Vec<String> = inc.alerts.values().filter_map(|a| a.labels.get("source").cloned()).chain(inc.labels.get("source").cloned()).collect();
    t.sort();
    t.dedup();
    t
}

/// Whether an event concerns the incident: its topic, or a pipeline stage (all topics pass
/// there), or the node as a whole.
fn related(e: &Event, topics: &[String]) -> bool {
    match (&e.topic, &e.stage) {
        (Some(t), _) => topics.is_empty() || topics.contains(t),
        // Shards are `validate-1`, `process-0`, ...
        (None, Some(s)) => {
            let stage = s.rsplit_once('-').filter(|(_, i)| i.parse::<usize>().is_ok()).map_or(s.as_str(), |(stage, _)| stage);
            PIPELINE.contains(&stage) || s == "generator"
        }
        (None, None) => true,
    }
}

/// Start of the timeline.
pub fn timeline_from(inc: &Incident, lookback_ms: i64) -> i64 {
    inc.first_signal_ms.min(inc.opened_at_ms) - lookback_ms
}

/// End of the timeline.
pub fn timeline_to(inc: &Incident, now_ms: i64) -> i64 {
    inc.resolved_at_ms.unwrap_or(now_ms) + 1
}

/// Build the analysis from journal `events` (already limited to the timeline span) and the
/// quality `history` over it.
pub fn analyse(inc: &Incident, events: Vec<Event>, history: &[HistoryPoint], lookback_ms: i64, now_ms: i64) -> Analysis {
    let tps = topics(inc);
    let (from, to) = (timeline_from(inc, lookback_ms), timeline_to(inc, now_ms));
    // Committed checkpoints are the data-flow log's business; failures stay.
    let mut timeline: Vec<Event> =
        events.into_iter().filter(|e| e.kind != EventKind::Checkpoint && e.at_ms >= from && e.at_ms < to && related(e, &tps)).collect();
    timeline.extend(inc.entries.iter().cloned());
    timeline.sort_by_key(|e| e.at_ms);
    // The first signal: the earliest alert condition, or an earlier DLQ burst on its topics.
    let burst = timeline.iter().filter(|e| e.kind == EventKind::DlqBurst && e.at_ms >= from).map(|e| e.at_ms).min();
    let first_signal = burst.map_or(inc.first_signal_ms, |b| b.min(inc.first_signal_ms));
    // The node registering its own writer schemas at start is bookkeeping, not a change.
    let candidate = |e: &&Event| e.kind.operational() && !(e.kind == EventKind::Schema && e.source == "node");
    // The most specific first: an event on the incident's topics, then on a stage, then
    // node-wide (a node start); within that, the earliest.
    let rank = |e: &Event| match (&e.topic, &e.stage) {
        (Some(t), _) if tps.contains(t) => 0,
        (_, Some(_)) => 1,
        _ => 2,
    };
    let trigger = timeline
        .iter()
        .filter(candidate)
        .filter(|e| e.at_ms <= first_signal && e.at_ms >= first_signal - lookback_ms)
        .min_by_key(|e| (rank(e), e.at_ms))
        .cloned();
    let durations = Durations {
        detect_ms: inc.first_firing_ms.map(|f| (f - first_signal).max(0)),
        acknowledge_ms: inc.acknowledged_at_ms.map(|t| t - inc.opened_at_ms),
        mitigate_ms: inc.mitigated_at_ms.map(|t| t - inc.opened_at_ms),
        resolve_ms: inc.resolved_at_ms.map(|t| t - inc.opened_at_ms),
    };
    let mut impact = Impact { from_ms: first_signal, to_ms: inc.resolved_at_ms.unwrap_or(now_ms), ..Impact::default() };
    for p in history.iter().filter(|p| p.at_ms + (p.seconds * 1000.0) as i64 > impact.from_ms && p.at_ms < impact.to_ms) {
        for s in p.sources.iter().filter(|s| tps.is_empty() || tps.contains(&s.source)) {
            let n = |rate: f64| (rate * p.seconds).round() as u64;
            impact.records_read += n(s.records_per_sec);
            for (r, v) in &s.dlq_per_sec {
                *impact.dlq_by_reason.entry(r.clone()).or_default() += n(*v);
            }
            impact.late += s.late;
            impact.duplicates += n(s.duplicates_per_sec);
            impact.max_lag = impact.max_lag.max(s.lag);
            impact.event_time = crate::quality::tracker::span(impact.event_time, s.event_time);
            if s.records_per_sec > 0.0 {
                impact.worst_validity = Some(impact.worst_validity.map_or(s.validity_ratio, |w: f64| w.min(s.validity_ratio)));
            }
        }
    }
    for e in timeline.iter().filter(|e| e.at_ms >= impact.from_ms) {
        match e.kind {
            EventKind::RetentionLoss => impact.lost_to_retention += e.text.split_whitespace().find_map(|w| w.parse::<u64>().ok()).unwrap_or(0),
            EventKind::Restart if e.text.contains("restarted") => impact.restarts += 1,
            _ => {}
        }
    }
    Analysis { incident: inc.clone(), timeline, trigger, durations, impact }
}

/// `1h 02m 03s`-style duration.
pub fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let frac = (ms.max(0) % 1000) / 100;
    if h > 0 {
        format!("{h}h {m:02}m {sec:02}s")
    } else if m > 0 {
        format!("{m}m {sec:02}s")
    } else {
        format!("{sec}.{frac}s")
    }
}

fn time(ms: i64) -> String {
    vigil_runtime::rfc3339_ms(ms)
}

fn opt_human(v: Option<i64>) -> String {
    v.map(human).unwrap_or_else(|| "—".into())
}

/// The blameless post-mortem in Markdown.
pub fn postmortem_markdown(a: &Analysis) -> String {
    let i = &a.incident;
    let mut md = String::new();
    let _ = writeln!(md, "# Post-mortem: incident #{} — {}\n", i.id, i.title);
    let _ = writeln!(md, "*Blameless: this document is about what the system and the process allowed to happen, not about who did what.*\n");
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| Severity | {} |", i.severity);
    let _ = writeln!(md, "| State | {} |", i.state.as_str());
    let _ = writeln!(md, "| Opened | {} |", time(i.opened_at_ms));
    let _ = writeln!(md, "| Resolved | {} |", i.resolved_at_ms.map(time).unwrap_or_else(|| "not yet".into()));
    let _ = writeln!(md, "| Group | `{}` |", i.group_key);
    let alerts: Vec<String> = i.alerts.values().map(|al| format!("{} ({})", al.rule, al.labels.get("severity").map(String::as_str).unwrap_or("?"))).collect();
    let _ = writeln!(md, "| Alerts | {} |", if alerts.is_empty() { "— (opened by hand)".into() } else { alerts.join(", ") });
    let r = &i.roles;
    let who = |o: &Option<String>| o.clone().unwrap_or_else(|| "—".into());
    let _ = writeln!(md, "| Commander | {} |", who(&r.commander));
    let _ = writeln!(md, "| Communications | {} |", who(&r.communications));
    let _ = writeln!(md, "| Scribe | {} |", who(&r.scribe));
    if !r.responders.is_empty() {
        let _ = writeln!(md, "| Responders | {} |", r.responders.join(", "));
    }
    let _ = writeln!(
        md,
        "| Likely trigger | {} |",
        a.trigger.as_ref().map(|t| format!("{} — {} ({})", time(t.at_ms), t.text, t.subject())).unwrap_or_else(|| "none found in the journal".into())
    );
    let _ = writeln!(md, "\n## Response times\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| Time to detect (first signal → alert firing) | {} |", opt_human(a.durations.detect_ms));
    let _ = writeln!(md, "| Time to acknowledge (opened → acknowledged) | {} |", opt_human(a.durations.acknowledge_ms));
    let _ = writeln!(md, "| Time to mitigate (opened → mitigated) | {} |", opt_human(a.durations.mitigate_ms));
    let _ = writeln!(md, "| Time to resolve (opened → resolved) | {} |", opt_human(a.durations.resolve_ms));
    let im = &a.impact;
    let _ = writeln!(md, "\n## Impact\n");
    let _ = writeln!(md, "From {} to {} ({}):\n", time(im.from_ms), time(im.to_ms), human(im.to_ms - im.from_ms));
    let _ = writeln!(md, "- records read from the affected sources: {}", im.records_read);
    let dlq: u64 = im.dlq_by_reason.values().sum();
    let reasons: Vec<String> = im.dlq_by_reason.iter().filter(|(_, n)| **n > 0).map(|(r, n)| format!("{r} {n}")).collect();
    let _ = writeln!(md, "- sent to the DLQ: {dlq}{}", if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) });
    if let Some(v) = im.worst_validity {
        let _ = writeln!(md, "- worst validity of a history slot: {:.1} %", v * 100.0);
    }
    let _ = writeln!(md, "- late records: {}; duplicates: {}; lost to retention: {}", im.late, im.duplicates, im.lost_to_retention);
    let _ = writeln!(md, "- most records delayed (consumer lag): {}; supervised restarts: {}", im.max_lag, im.restarts);
    match im.event_time {
        Some((a, b)) => {
            let _ = writeln!(
                md,
                "- event time affected: {} to {} (windows of the affected sources in that range; per-key detail arrives with lineage)",
                time(a),
                time(b)
            );
        }
        None => {
            let _ = writeln!(md, "- event time affected: no valid record was read in the span");
        }
    }
    let _ = writeln!(md, "\n## Timeline\n");
    let _ = writeln!(md, "| time (UTC) | kind | where | what | by |\n|---|---|---|---|---|");
    for e in &a.timeline {
        let _ = writeln!(md, "| {} | {} | {} | {} | {} |", time(e.at_ms), crate::variant_name(&e.kind), e.subject(), e.text.replace('|', "\\|"), e.source);
    }
    let _ = writeln!(md, "\n## Contributing factors\n\n_To be written by the team: what made this possible, what made it worse, what made it better._\n");
    let _ = writeln!(md, "## Lessons learned\n\n_What went well, what went wrong, where we got lucky._\n");
    let _ = writeln!(md, "## Action items\n\n| action | type (prevent / detect / mitigate) | owner | due |\n|---|---|---|---|\n| _…_ | | | |");
    md
}

/// One incident in the review report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// Number.
    pub id: u64,
    /// Title.
    pub title: String,
    /// Severity.
    pub severity: String,
    /// State.
    pub state: String,
    /// Opened, ms.
    pub opened_at_ms: i64,
    /// Kind of the likely trigger (`chaos`, `restart`, `schema`, ...) or `unknown`.
    pub cause: String,
    /// Durations.
    pub durations: Durations,
}

/// Mean times over a set of incidents, ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Means {
    /// Incidents.
    pub incidents: usize,
    /// Mean time to detect.
    pub mttd_ms: Option<i64>,
    /// Mean time to acknowledge.
    pub mtta_ms: Option<i64>,
    /// Mean time to resolve.
    pub mttr_ms: Option<i64>,
}

/// The review report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Span, ms.
    pub since_ms: i64,
    /// Until, ms.
    pub until_ms: i64,
    /// All incidents.
    pub overall: Means,
    /// By severity.
    pub by_severity: BTreeMap<String, Means>,
    /// By cause.
    pub by_cause: BTreeMap<String, Means>,
    /// By week (start of the 7-day period, ms) for trends.
    pub by_week: BTreeMap<i64, Means>,
    /// The incidents.
    pub incidents: Vec<ReportRow>,
}

fn means(rows: &[&ReportRow]) -> Means {
    let avg = |f: &dyn Fn(&Durations) -> Option<i64>| {
        let v: Vec<i64> = rows.iter().filter_map(|r| f(&r.durations)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<i64>() / v.len() as i64)
    };
    Means { incidents: rows.len(), mttd_ms: avg(&|d| d.detect_ms), mtta_ms: avg(&|d| d.acknowledge_ms), mttr_ms: avg(&|d| d.resolve_ms) }
}

/// Summarise analyses opened in `[since_ms, until_ms)`.
pub fn report(analyses: &[Analysis], since_ms: i64, until_ms: i64) -> Report {
    let rows: Vec<ReportRow> = analyses
        .iter()
        .filter(|a| a.incident.opened_at_ms >= since_ms && a.incident.opened_at_ms < until_ms)
        .map(|a| ReportRow {
            id: a.incident.id,
            title: a.incident.title.clone(),
            severity: a.incident.severity.to_string(),
            state: a.incident.state.as_str().into(),
            opened_at_ms: a.incident.opened_at_ms,
            cause: a.trigger.as_ref().map(|t| crate::variant_name(&t.kind)).unwrap_or_else(|| "unknown".into()),
            durations: a.durations.clone(),
        })
        .collect();
    let group = |key: &dyn Fn(&ReportRow) -> String| {
        let mut m: BTreeMap<String, Vec<&ReportRow>> = BTreeMap::new();
        for r in &rows {
            m.entry(key(r)).or_default().push(r);
        }
        m.into_iter().map(|(k, v)| (k, means(&v))).collect::<BTreeMap<_, _>>()
    };
    let week = 7 * 86_400_000i64;
    let mut by_week: BTreeMap<i64, Vec<&ReportRow>> = BTreeMap::new();
    for r in &rows {
        by_week.entry(since_ms + (r.opened_at_ms - since_ms) / week * week).or_default().push(r);
    }
    Report {
        since_ms,
        until_ms,
        overall: means(&rows.iter().collect::<Vec<_>>()),
        by_severity: group(&|r| r.severity.clone()),
        by_cause: group(&|r| r.cause.clone()),
        by_week: by_week.into_iter().map(|(k, v)| (k, means(&v))).collect(),
        incidents: rows.clone(),
    }
}

/// Whether an incident is still being handled.
pub fn is_active(i: &Incident) -> bool {
    i.state != IncidentState::Resolved
}

#[cfg(test)]
mod tests {
    use super::super::model::Book;
    use super::*;
    use crate::quality::tracker::SourceQuality;

    #[test]
    fn timeline_trigger_durations_impact_and_postmortem() {
        let c = super::super::model::tests::cfg();
        let mut b = Book::default();
        // Chaos at 10 s, a restart at 12 s on validate, alert condition from 20 s, firing at 50 s.
        let a = super::super::model::tests::alert("DataValidityLow", "events", "P2", 20_000, 50_000);
        b.on_firing(&c, &a, 50_000).unwrap();
        b.due(&c, 110_000);
        b.ack(1, "ana", 130_000).unwrap();
        b.on_resolved(&c, &a.fingerprint, 170_000);
        b.resolve(1, "ana", 200_000).unwrap();
        let ev = |t: i64, k: EventKind, text: &str| Event { at_ms: t, ..Event::now(k, "test", text) };
        let events = vec![
            ev(1_000, EventKind::ConfigReload, "long before: outside the look-back").stage("alerting"),
            ev(5_000, EventKind::NodeStart, "node started: node-wide, less specific"),
            ev(10_000, EventKind::Chaos, "bad-data ratio 0.2").stage("generator").topic("events"),
            ev(12_000, EventKind::Restart, "validate restarted (restart 1)").stage("validate"),
            ev(15_000, EventKind::DlqBurst, "bad_framing at 10/s").topic("events"),
            ev(16_000, EventKind::Chaos, "unrelated topic").topic("clicks"),
            ev(60_000, EventKind::Restart, "validate restarted (restart 2)").stage("validate"),
            ev(300_000, EventKind::Restart, "after the end").stage("validate"),
        ];
        let hist = vec![HistoryPoint {
            at_ms: 20_000,
            seconds: 10.0,
            sources: vec![SourceQuality {
                records_per_sec: 100.0,
                validity_ratio: 0.8,
                dlq_per_sec: BTreeMap::from([("bad_framing".into(), 20.0)]),
                lag: 42,
                event_time: Some((19_000, 29_500)),
                ..SourceQuality::empty("events")
            }],
        }];
        let an = analyse(&b.incidents[&1], events, &hist, 15_000, 400_000);
        let texts: Vec<&str> = an.timeline.iter().map(|e| e.text.as_str()).collect();
        assert!(!texts.iter().any(|t| t.contains("long before") || t.contains("unrelated") || t.contains("after the end")), "{texts:?}");
        assert!(an.timeline.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert_eq!(an.trigger.as_ref().map(|t| t.text.as_str()), Some("bad-data ratio 0.2"), "the earliest operational event before the first signal");
        assert_eq!(an.durations.detect_ms, Some(35_000), "DLQ burst at 15 s → firing at 50 s");
        assert_eq!(an.durations.acknowledge_ms, Some(80_000));
        assert_eq!(an.durations.mitigate_ms, Some(120_000));
        assert_eq!(an.durations.resolve_ms, Some(150_000));
        // The restart at 12 s preceded the first signal (a trigger candidate); the one at 60 s is impact.
        assert_eq!((an.impact.records_read, an.impact.dlq_by_reason["bad_framing"], an.impact.max_lag, an.impact.restarts), (1000, 200, 42, 1));
        let md = postmortem_markdown(&an);
        assert_eq!(an.impact.event_time, Some((19_000, 29_500)));
        for want in [
            "event time affected: 1970-01-01T00:00:19.000Z to 1970-01-01T00:00:29.500Z",
            "# Post-mortem: incident #1",
            "Time to detect (first signal → alert firing) | 35.0s",
            "escalated to level 2",
            "acknowledged by ana",
            "bad_framing 200",
            "Action items",
            "validate restarted",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
        let r = report(std::slice::from_ref(&an), 0, 1_000_000);
        assert_eq!(r.overall.incidents, 1);
        assert_eq!(r.by_cause["chaos"].mttr_ms, Some(150_000));
        assert_eq!(r.by_severity["P2"].mtta_ms, Some(80_000));
        assert!(report(&[an], 500_000, 1_000_000).incidents.is_empty());
    }
}
