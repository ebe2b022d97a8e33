//! `vigil incident ...`: incidents of a running node over its admin API — list, show, open,
//! acknowledge, assign roles, note, mitigate, resolve, post-mortem, review report.
use crate::admin;
use crate::AdminTarget;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use vigil_actors::incidents::analysis::{human, Analysis, Means, Report};
use vigil_runtime::rfc3339_ms as rfc3339;

#[derive(Args)]
pub(crate) struct Who {
    /// Who acts (default: $USER).
    #[arg(long)]
    by: Option<String>,
    #[command(flatten)]
    target: AdminTarget,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Who {
    fn name(&self) -> String {
        self.by.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "vigil-cli".into())
    }
}

#[derive(Subcommand)]
pub(crate) enum IncidentCmd {
    /// Incidents not yet resolved (--all: every one), newest first.
    List {
        /// Include resolved incidents.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: AdminTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One incident: state, roles, times, likely trigger, impact and timeline.
    Show {
        /// Incident number.
        id: u64,
        #[command(flatten)]
        target: AdminTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Open an incident by hand.
    Open {
        /// Title.
        #[arg(long)]
        title: String,
        /// Severity P1..P4.
        #[arg(long, default_value = "P2")]
        severity: String,
        /// Source topic concerned.
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// Acknowledge: you own it; escalation stops.
    Ack {
        /// Incident number.
        id: u64,
        #[command(flatten)]
        who: Who,
    },
    /// Give someone a role: commander, communications, scribe or responder.
    Assign {
        /// Incident number.
        id: u64,
        /// Role.
        #[arg(long)]
        role: String,
        /// Person.
        #[arg(long)]
        who: String,
        #[command(flatten)]
        by: Who,
    },
    /// Add a note to the timeline.
    Note {
        /// Incident number.
        id: u64,
        /// Text.
        text: String,
        #[command(flatten)]
        who: Who,
    },
    /// The impact has stopped.
    Mitigate {
        /// Incident number.
        id: u64,
        #[command(flatten)]
        who: Who,
    },
    /// The incident is over.
    Resolve {
        /// Incident number.
        id: u64,
        #[command(flatten)]
        who: Who,
    },
    /// Write the blameless post-mortem (Markdown, or --format json).
    Postmortem {
        /// Incident number.
        id: u64,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// md or json.
        #[arg(long, default_value = "md")]
        format: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Review: incidents by severity and cause with MTTD/MTTA/MTTR, and weekly trends.
    Report {
        /// How far back, e.g. 90d.
        #[arg(long, default_value = "90d")]
        since: String,
        #[command(flatten)]
        target: AdminTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn opt(v: Option<i64>) -> String {
    v.map(human).unwrap_or_else(|| "—".into())
}

fn print_means(label: &str, m: &Means) {
    println!("{label:<24} {:>9} {:>12} {:>12} {:>12}", m.incidents, opt(m.mttd_ms), opt(m.mtta_ms), opt(m.mttr_ms));
}

fn act(who: &Who, id: u64, verb: &str, extra: Value) -> Result<ExitCode> {
    let mut body = json!({ "by": who.name() });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let v: Value = admin::post(&who.target.conn()?, &format!("/incidents/{id}/{verb}"), &body)?;
    if who.json {
        println!("{v}");
    } else {
        println!("incident #{id}: {verb} done");
    }
    Ok(ExitCode::SUCCESS)
}

/// `vigil incident ...`
pub(crate) fn run(cmd: IncidentCmd) -> Result<ExitCode> {
    match cmd {
        IncidentCmd::List { all, target, json } => {
            let list: Vec<Analysis> = admin::get(&target.conn()?, &format!("/incidents?all={all}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no {}incidents", if all { "" } else { "open " });
            } else {
                println!("{:>4} {:<4} {:<13} {:<24} {:>6} {:>10}  TITLE", "ID", "SEV", "STATE", "OPENED (UTC)", "ALERTS", "ESCALATION");
                for a in &list {
                    let i = &a.incident;
                    let esc =
                        i.escalation.as_ref().map(|e| format!("level {}{}", e.level + 1, if e.stopped { " ■" } else { "" })).unwrap_or_else(|| "—".into());
                    println!(
                        "{:>4} {:<4} {:<13} {:<24} {:>6} {:>10}  {}",
                        i.id,
                        i.severity,
                        i.state.as_str(),
                        rfc3339(i.opened_at_ms),
                        i.alerts.len(),
                        esc,
                        i.title
                    );
                }
            }
        }
        IncidentCmd::Show { id, target, json } => {
            let a: Analysis = admin::get(&target.conn()?, &format!("/incidents/{id}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
                return Ok(ExitCode::SUCCESS);
            }
            let i = &a.incident;
            println!("incident #{} {} — {} ({})", i.id, i.severity, i.title, i.state.as_str());
            println!("  opened {}   group {}", rfc3339(i.opened_at_ms), i.group_key);
            let r = &i.roles;
            let w = |o: &Option<String>| o.clone().unwrap_or_else(|| "—".into());
            println!(
                "  commander {}  communications {}  scribe {}  responders {}",
                w(&r.commander),
                w(&r.communications),
                w(&r.scribe),
                if r.responders.is_empty() { "—".into() } else { r.responders.join(", ") }
            );
            let d = &a.durations;
            println!("  detect {}  acknowledge {}  mitigate {}  resolve {}", opt(d.detect_ms), opt(d.acknowledge_ms), opt(d.mitigate_ms), opt(d.resolve_ms));
            if let Some(t) = &a.trigger {
                println!("  likely trigger: {} {} ({})", rfc3339(t.at_ms), t.text, t.subject());
            }
            let dlq: u64 = a.impact.dlq_by_reason.values().sum();
            println!(
                "  impact: {} records read, {dlq} to the DLQ, {} lost to retention, {} restarts",
                a.impact.records_read, a.impact.lost_to_retention, a.impact.restarts
            );
            println!("timeline:");
            for e in &a.timeline {
                let kind = vigil_actors::variant_name(&e.kind);
                println!("  {}  {:<20} {:<18} {}", rfc3339(e.at_ms), kind, e.subject(), e.text);
            }
        }
        IncidentCmd::Open { title, severity, source, who } => {
            let v: Value = admin::post(&who.target.conn()?, "/incidents", &json!({"title": title, "severity": severity, "source": source, "by": who.name()}))?;
            if who.json {
                println!("{v}");
            } else {
                println!("opened incident #{}", v["id"]);
            }
        }
        IncidentCmd::Ack { id, who } => return act(&who, id, "ack", json!({})),
        IncidentCmd::Assign { id, role, who, by } => return act(&by, id, "assign", json!({"role": role, "who": who})),
        IncidentCmd::Note { id, text, who } => return act(&who, id, "note", json!({"text": text})),
        IncidentCmd::Mitigate { id, who } => return act(&who, id, "mitigate", json!({})),
        IncidentCmd::Resolve { id, who } => return act(&who, id, "resolve", json!({})),
        IncidentCmd::Postmortem { id, out, format, target } => {
            let text = match format.as_str() {
                "md" | "markdown" => {
                    let v: Value = admin::get(&target.conn()?, &format!("/incidents/{id}/postmortem?format=json"))?;
                    v["markdown"].as_str().unwrap_or_default().to_string()
                }
                "json" => {
                    let v: Value = admin::get(&target.conn()?, &format!("/incidents/{id}/postmortem?format=json"))?;
                    serde_json::to_string_pretty(&v["analysis"])?
                }
                other => bail!("--format `{other}`: md or json"),
            };
            match out {
                Some(path) => {
                    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
                    println!("wrote the post-mortem of incident #{id} to {}", path.display());
                }
                None => print!("{text}"),
            }
        }
        IncidentCmd::Report { since, target, json } => {
            let r: Report = admin::get(&target.conn()?, &format!("/incidents/report?since={since}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("incidents opened since {} ({since})", rfc3339(r.since_ms));
            println!("{:<24} {:>9} {:>12} {:>12} {:>12}", "", "INCIDENTS", "MTTD", "MTTA", "MTTR");
            print_means("all", &r.overall);
            for (sev, m) in &r.by_severity {
                print_means(&format!("severity {sev}"), m);
            }
            for (cause, m) in &r.by_cause {
                print_means(&format!("cause {cause}"), m);
            }
            for (week, m) in &r.by_week {
                print_means(&format!("week of {}", &rfc3339(*week)[..10]), m);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
