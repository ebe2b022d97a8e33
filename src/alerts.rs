//! `vigil alerts ...`, `vigil silence ...` and `vigil dq`: alerting and data quality of a
//! running node, over its admin API.
use crate::admin;
use crate::AdminTarget;
use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};
use std::process::ExitCode;
use vigil_actors::alerting::actor::{AlertView, RuleView, SilenceView};
use vigil_actors::quality::actor::HistoryPoint;
use vigil_actors::quality::report::DqReport;
use vigil_runtime::rfc3339_ms as rfc3339;

#[derive(Subcommand)]
pub(crate) enum AlertsCmd {
    /// Current alerts: pending, firing and recently resolved, with silences and inhibitions.
    List {
        #[command(flatten)]
        target: AdminTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The rules in force, with their pending and firing counts.
    Rules {
        #[command(flatten)]
        target: AdminTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-read `[alerts]` from the node's configuration file (also on SIGHUP).
    Reload {
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Subcommand)]
pub(crate) enum SilenceCmd {
    /// Silence alerts matching every matcher, e.g. `alertname="DataValidityLow" source=~"ev.*"`.
    Add {
        /// Matchers (Alertmanager syntax: = != =~ !~).
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long, e.g. `2h`.
        #[arg(long, default_value = "1h")]
        duration: String,
        /// Who is silencing (default: $USER).
        #[arg(long)]
        author: Option<String>,
        /// Why.
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Silences with their state.
    List {
        /// Include expired silences.
        #[arg(long)]
        expired: bool,
        #[command(flatten)]
        target: AdminTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Expire {
        /// Silence id.
        id: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

fn state_of(v: &AlertView) -> String {
    let s = vigil_actors::variant_name(&v.alert.state);
    if !v.suppression.silenced_by.is_empty() {
        format!("{s} (silenced)")
    } else if !v.suppression.inhibited_by.is_empty() {
        format!("{s} (inhibited)")
    } else {
        s
    }
}

fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels.iter().filter(|(k, _)| *k != "alertname" && *k != "severity").map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `vigil alerts ...`
pub(crate) fn alerts(cmd: AlertsCmd) -> Result<ExitCode> {
    match cmd {
        AlertsCmd::List { target, json } => {
            let list: Vec<AlertView> = admin::get(&target.conn()?, "/alerts")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no alerts");
            } else {
                println!("{:<4} {:<26} {:<22} {:<24} {:>10}  {:<24}  SUMMARY", "SEV", "ALERT", "STATE", "LABELS", "VALUE", "SINCE (UTC)");
                for v in &list {
                    let a = &v.alert;
                    let since = a.resolved_at_ms.or(a.fired_at_ms).unwrap_or(a.active_at_ms);
                    println!(
                        "{:<4} {:<26} {:<22} {:<24} {:>10.4}  {:<24}  {}",
                        a.labels.get("severity").map(String::as_str).unwrap_or("-"),
                        a.rule,
                        state_of(v),
                        labels_text(&a.labels),
                        a.value,
                        rfc3339(since),
                        a.annotations.get("summary").map(String::as_str).unwrap_or("")
                    );
                }
            }
        }
        AlertsCmd::Rules { target, json } => {
            let list: Vec<RuleView> = admin::get(&target.conn()?, "/alerts/rules")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<26} {:<4} {:>6} {:>6} {:>7} {:>7}  EXPR", "RULE", "SEV", "FOR", "KEEP", "PENDING", "FIRING");
                for r in &list {
                    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
                    println!(
                        "{:<26} {:<4} {:>6} {:>6} {:>7} {:>7}  {}",
                        r.rule.name,
                        r.rule.severity,
                        d(r.rule.for_),
                        d(r.rule.keep_firing_for),
                        r.pending,
                        r.firing,
                        r.rule.expr
                    );
                }
            }
        }
        AlertsCmd::Reload { target } => {
            let v: Value = admin::post(&target.conn()?, "/alerts/reload", &json!({}))?;
            println!("reloaded {} rules from {}", v["rules"], v["reloaded"].as_str().unwrap_or("?"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `vigil silence ...`
pub(crate) fn silence(cmd: SilenceCmd) -> Result<ExitCode> {
    match cmd {
        SilenceCmd::Add { matchers, duration, author, comment, target } => {
            let author = author.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "vigil-cli".into());
            let body = json!({"matchers": matchers, "duration": duration, "created_by": author, "comment": comment});
            let v: Value = admin::post(&target.conn()?, "/silences", &body)?;
            println!("{}", v["silenceID"].as_str().unwrap_or_default());
        }
        SilenceCmd::List { expired, target, json } => {
            let list: Vec<SilenceView> = admin::get(&target.conn()?, "/silences")?;
            let list: Vec<&SilenceView> = list.iter().filter(|s| expired || s.state != vigil_actors::alerting::engine::SilenceState::Expired).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no silences");
            } else {
                println!("{:<16} {:<8} {:<24} {:<12} {:<40} COMMENT", "ID", "STATE", "ENDS (UTC)", "AUTHOR", "MATCHERS");
                for s in list {
                    let state = vigil_actors::variant_name(&s.state);
                    let m: Vec<String> = s.silence.matchers.iter().map(ToString::to_string).collect();
                    println!(
                        "{:<16} {:<8} {:<24} {:<12} {:<40} {}",
                        s.silence.id,
                        state,
                        rfc3339(s.silence.ends_at_ms),
                        s.silence.created_by,
                        m.join(" "),
                        s.silence.comment
                    );
                }
            }
        }
        SilenceCmd::Expire { id, target } => {
            let _: Value = admin::delete(&target.conn()?, &format!("/silences/{id}"))?;
            println!("expired {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into())
}

/// `vigil dq --history D`: one line per source and slot from the persisted history.
fn dq_history(target: &AdminTarget, since: &str, json: bool) -> Result<ExitCode> {
    let h: Vec<HistoryPoint> = admin::get(&target.conn()?, &format!("/dq/history?since={since}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&h)?);
        return Ok(ExitCode::SUCCESS);
    }
    if h.is_empty() {
        println!("no history in the last {since} (a slot is kept once its quality.interval is over)");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<20} {:>9} {:>8} {:>8} {:>12} {:>7}", "SLOT START (UTC)", "SOURCE", "REC/S", "VALID", "DLQ/S", "FRESH p99 s", "DUP/S");
    for p in &h {
        for s in &p.sources {
            let dlq: f64 = s.dlq_per_sec.values().sum();
            println!(
                "{:<24} {:<20} {:>9.1} {:>7.2}% {:>8.2} {:>12} {:>7.2}",
                rfc3339(p.at_ms),
                s.source,
                s.records_per_sec,
                s.validity_ratio * 100.0,
                dlq,
                opt(s.freshness_p99_seconds),
                s.duplicates_per_sec
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `vigil dq`: the current quality table per source and field, or with `history` the
/// persisted slots of that long.
pub(crate) fn dq(target: &AdminTarget, history: Option<&str>, json: bool) -> Result<ExitCode> {
    if let Some(since) = history {
        return dq_history(target, since, json);
    }
    let r: DqReport = admin::get(&target.conn()?, "/dq")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    if r.at_ms == 0 {
        println!("no quality report yet (the first comes one quality.interval after start)");
        return Ok(ExitCode::SUCCESS);
    }
    println!("data quality over the last {:.0}s at {}", r.window_seconds, rfc3339(r.at_ms));
    println!(
        "{:<20} {:>9} {:>8} {:>8} {:>17} {:>17} {:>8} {:>7} {:>7} {:>7}",
        "SOURCE", "REC/S", "VALID", "DLQ/S", "FRESH p50/p99 s", "LATENCY p50/p99 s", "LAG", "DUP/S", "LATE/S", "STALLED"
    );
    for s in &r.sources {
        let dlq: f64 = s.dlq_per_sec.values().sum();
        println!(
            "{:<20} {:>9.1} {:>7.2}% {:>8.2} {:>17} {:>17} {:>8} {:>7.2} {:>7.2} {:>7}",
            s.source,
            s.records_per_sec,
            s.validity_ratio * 100.0,
            dlq,
            format!("{}/{}", opt(s.freshness_p50_seconds), opt(s.freshness_p99_seconds)),
            format!("{}/{}", opt(s.latency_p50_seconds), opt(s.latency_p99_seconds)),
            s.lag,
            s.duplicates_per_sec,
            s.late_per_sec,
            s.stalled_partitions
        );
        for (reason, v) in &s.dlq_per_sec {
            println!("    dlq {reason:<28} {v:>8.2}/s");
        }
        for (field, c) in &s.completeness {
            println!("    field {field:<26} {:>7.2}% complete", c * 100.0);
        }
        for (schema, share) in &s.version_mix {
            println!("    schema {schema:<25} {:>7.2}% of valid records", share * 100.0);
        }
    }
    match r.brokers_up {
        Some(n) => println!("kafka brokers up: {n}"),
        None => println!("kafka brokers up: not reported yet"),
    }
    if r.dropped_reports > 0 {
        println!("note: {} batch reports were dropped (quality actor full or restarting)", r.dropped_reports);
    }
    Ok(ExitCode::SUCCESS)
}
