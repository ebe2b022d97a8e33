//! `vigil drill`: run chaos drills (built-in or own scenario files) against real processes
//! and print their verdicts; `list` shows the built-in scenarios, `history` past drills,
//! `schedule` the recurring plan and what is overdue.
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vigil_chaos::scenario::{Scenario, BUILTIN};

// Parsed once per process: the size of `Run` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum DrillCmd {
    /// Run drills: a built-in scenario by name, a scenario file, or --all / --fast.
    Run {
        /// Scenario names or `.toml` files.
        scenarios: Vec<String>,
        /// Every built-in scenario.
        #[arg(long, conflicts_with = "fast")]
        all: bool,
        /// The quick built-in subset (CI).
        #[arg(long)]
        fast: bool,
        /// Seed of the workload and the schedule's jitter (a drill is reproducible from it).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Directory for each drill's config, data, logs and reports.
        #[arg(long, default_value = "vigil-drills")]
        out: PathBuf,
        /// Self-test: plant a real bug in the node (`skip-offset-commit` or
        /// `ack-before-flush`); the drill must then fail.
        #[arg(long)]
        sabotage: Option<String>,
        /// Print the reports as JSON (one array).
        #[arg(long)]
        json: bool,
        /// Game day: inject the scenario's faults into the running node at --target (only
        /// faults that need no process control: failpoints, panics, bad data, breach).
        #[arg(long, requires = "target", conflicts_with_all = ["all", "fast", "sabotage"])]
        live: bool,
        /// The running node's admin API (`host:port` or a URL) for --live.
        #[arg(long)]
        target: Option<String>,
        /// The node's Kafka, for bad-data and forged records in a game day.
        #[arg(long)]
        bootstrap: Option<String>,
        /// Source topic those records go to.
        #[arg(long, default_value = "events")]
        topic: String,
        /// The node's DLQ topic (`pipeline.dlq_topic`).
        #[arg(long, default_value = "dlq")]
        dlq_topic: String,
        /// The node's quarantine topic (`pipeline.quarantine_topic`).
        #[arg(long, default_value = "vigil-quarantine")]
        quarantine_topic: String,
        /// Do not ask before a game day (scripts; the plan is still printed).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        creds: crate::admin::Creds,
    },
    /// The built-in scenarios.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Past drills (their reports under --out), oldest first, with MTTD/MTTR trends per scenario.
    History {
        /// Directory the drills wrote to.
        #[arg(long, default_value = "vigil-drills")]
        out: PathBuf,
        /// Only this scenario.
        #[arg(long)]
        scenario: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recurring drills: add or remove a plan, list them, report what is due.
    #[command(subcommand)]
    Schedule(ScheduleCmd),
}

#[derive(Subcommand)]
pub(crate) enum ScheduleCmd {
    /// Plan a scenario (name or file) to be drilled every so often; replaces its earlier plan.
    Add {
        /// Built-in scenario name or `.toml` file.
        scenario: String,
        /// daily, weekly, monthly, quarterly or a duration (`14d`).
        #[arg(long, value_parser = vigil_chaos::schedule::parse_every)]
        every: std::time::Duration,
        /// Who runs it, why, with whom on call.
        #[arg(long, default_value = "")]
        note: String,
        /// Directory of the drills' reports (the schedule is kept there).
        #[arg(long, default_value = "vigil-drills")]
        out: PathBuf,
    },
    /// Remove a scenario's plan.
    Remove {
        /// Scenario name.
        scenario: String,
        /// Directory of the drills' reports.
        #[arg(long, default_value = "vigil-drills")]
        out: PathBuf,
    },
    /// Every plan with its last drill and when the next is due.
    List {
        /// Directory of the drills' reports.
        #[arg(long, default_value = "vigil-drills")]
        out: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// The plans that are due or overdue; exits 1 when there is one (for cron or CI to page).
    Due {
        /// Directory of the drills' reports.
        #[arg(long, default_value = "vigil-drills")]
        out: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The reports under `out`, oldest first.
fn history(out: &std::path::Path, scenario: Option<&str>) -> Result<Vec<serde_json::Value>> {
    let mut reports = Vec::new();
    let dir = std::fs::read_dir(out).with_context(|| format!("cannot read {} (where `vigil drill run --out` wrote)", out.display()))?;
    for e in dir.flatten() {
        let p = e.path().join("report.json");
        let Ok(text) = std::fs::read_to_string(&p) else { continue };
        let r: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not a drill report", p.display()))?;
        if scenario.is_none_or(|s| r["scenario"] == s) {
            reports.push(r);
        }
    }
    reports.sort_by_key(|r| r["started_ms"].as_i64().unwrap_or(0));
    Ok(reports)
}

/// Each scenario's last finished drill under `out` (none yet: empty).
fn last_runs(out: &std::path::Path) -> Result<std::collections::BTreeMap<String, vigil_chaos::schedule::LastRun>> {
    let mut last = std::collections::BTreeMap::new();
    if !out.exists() {
        return Ok(last);
    }
    for r in history(out, None)?.iter().filter(|r| r["interrupted"] != true) {
        if let (Some(s), Some(at)) = (r["scenario"].as_str(), r["started_ms"].as_i64()) {
            last.insert(s.to_string(), (at, r["passed"] == true));
        }
    }
    Ok(last)
}

fn schedule(cmd: ScheduleCmd) -> Result<ExitCode> {
    use vigil_chaos::schedule::{Plan, Schedule};
    match cmd {
        ScheduleCmd::Add { scenario, every, note, out } => {
            let s = load(&scenario)?;
            let mut sched = Schedule::load(&out)?;
            let replaced = sched.add(Plan { scenario: s.name.clone(), source: scenario, every, note, added_ms: vigil_runtime::now_ms() });
            sched.save(&out)?;
            println!(
                "{} `{}` every {} in {}",
                if replaced { "replanned" } else { "planned" },
                s.name,
                humantime::format_duration(every),
                out.join(vigil_chaos::schedule::FILE).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCmd::Remove { scenario, out } => {
            let mut sched = Schedule::load(&out)?;
            if !sched.remove(&scenario) {
                bail!("no plan for `{scenario}` in {}", out.join(vigil_chaos::schedule::FILE).display());
            }
            sched.save(&out)?;
            println!("removed the plan for `{scenario}`");
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCmd::List { out, json } => plans(&out, json, false),
        ScheduleCmd::Due { out, json } => plans(&out, json, true),
    }
}

/// The plans (only those due with `only_due`, then exit 1 if there are any).
fn plans(out: &std::path::Path, json: bool, only_due: bool) -> Result<ExitCode> {
    use vigil_chaos::schedule::Schedule;
    let day = |ms: i64| vigil_runtime::rfc3339_ms(ms).chars().take(16).collect::<String>().replace('T', " ");
    let sched = Schedule::load(out)?;
    let now = vigil_runtime::now_ms();
    let all = sched.status(&last_runs(out)?, now);
    let shown: Vec<_> = all.iter().filter(|s| !only_due || s.due).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else if sched.plans.is_empty() {
        println!("no drills planned in {} (add one: vigil drill schedule add breach --every monthly)", out.display());
    } else if shown.is_empty() {
        println!("nothing due: {} plan(s), all drilled within their interval", all.len());
    } else {
        println!("{:<20} {:<10} {:<22} {:<22} NOTE", "SCENARIO", "EVERY", "LAST DRILL", "DUE");
        for s in &shown {
            let last = match (s.last_ms, s.last_passed) {
                (Some(at), Some(p)) => format!("{} {}", day(at), if p { "pass" } else { "FAIL" }),
                _ => "never".into(),
            };
            let due = match (s.due, s.last_ms) {
                (true, None) => "now (never drilled)".to_string(),
                (true, Some(_)) => format!("OVERDUE since {}", day(s.due_ms)),
                (false, _) => day(s.due_ms),
            };
            println!("{:<20} {:<10} {:<22} {:<22} {}", s.plan.scenario, humantime::format_duration(s.plan.every).to_string(), last, due, s.plan.note);
        }
    }
    Ok(if only_due && !shown.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn print_history(reports: &[serde_json::Value]) {
    let secs = |v: &serde_json::Value| v.as_f64().map(|s| format!("{s:.2}s")).unwrap_or_else(|| "-".into());
    println!("{:<24} {:<20} {:<11} {:>8} {:>8} {:>6} {:>10}", "started", "scenario", "verdict", "MTTD", "MTTR", "lost", "duplicated");
    for r in reports {
        let verdict = if r["interrupted"] == true {
            "interrupted"
        } else if r["passed"] == true {
            "pass"
        } else {
            "FAIL"
        };
        println!(
            "{:<24} {:<20} {:<11} {:>8} {:>8} {:>6} {:>10}",
            r["started"].as_str().unwrap_or(""),
            r["scenario"].as_str().unwrap_or(""),
            verdict,
            secs(&r["mttd_s"]),
            secs(&r["mttr_s"]),
            r["records"]["lost"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            r["records"]["duplicated"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
        );
    }
    // Trends: per scenario, the mean of the older half against the newer half.
    let mut by: std::collections::BTreeMap<&str, Vec<&serde_json::Value>> = std::collections::BTreeMap::new();
    for r in reports {
        by.entry(r["scenario"].as_str().unwrap_or("")).or_default().push(r);
    }
    println!("\ntrend (older half → newer half):");
    for (name, rs) in by {
        let mean = |rs: &[&serde_json::Value], k: &str| {
            let v: Vec<f64> = rs.iter().filter_map(|r| r[k].as_f64()).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let (old, new) = rs.split_at(rs.len() / 2);
        let show = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{a:.2}s → {b:.2}s"),
            (None, Some(b)) => format!("{b:.2}s"),
            _ => "-".into(),
        };
        println!(
            "  {name:<20} {} drills  MTTD {}  MTTR {}",
            rs.len(),
            show(mean(old, "mttd_s"), mean(new, "mttd_s")),
            show(mean(old, "mttr_s"), mean(new, "mttr_s"))
        );
    }
}

/// Show what a game day will do (with the drill's `seed`) to the node at `admin` and have a person confirm it (type
/// `yes`); `--yes` skips the question, not the plan.
fn confirm_game_day(s: &Scenario, admin: &str, yes: bool, seed: u64) -> Result<()> {
    eprintln!("GAME DAY: `{}` injects into the running node at {admin}:", s.name);
    for (i, start, end) in s.schedule(seed) {
        let f = &s.faults[i];
        let what = [f.target.clone(), f.producer.as_ref().map(|p| format!("as {p}")), (f.count > 0).then(|| format!("{} records/calls", f.count))]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!("  t={:>5.1}s..{:>5.1}s  {} {what}", start.as_secs_f64(), end.as_secs_f64(), f.kind.name());
    }
    eprintln!("Every fault is undone when it ends, when the drill fails and on Ctrl-C.");
    if yes {
        return Ok(());
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("a game day needs a person's confirmation: run it from a terminal, or add --yes");
    }
    eprint!("Type `yes` to go on: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).context("reading the confirmation")?;
    if answer.trim() != "yes" {
        bail!("not confirmed; nothing was injected");
    }
    Ok(())
}

fn load(name: &str) -> Result<Scenario> {
    if name.ends_with(".toml") {
        let text = std::fs::read_to_string(name).with_context(|| format!("cannot read scenario file {name}"))?;
        return Scenario::parse(name, &text).map_err(anyhow::Error::msg);
    }
    match Scenario::builtin(name) {
        Some(s) => s.map_err(anyhow::Error::msg),
        None => bail!("no scenario `{name}`: one of {} or a .toml file", BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")),
    }
}

pub(crate) async fn run(cmd: DrillCmd) -> Result<ExitCode> {
    match cmd {
        DrillCmd::Schedule(c) => schedule(c),
        DrillCmd::History { out, scenario, json } => {
            let reports = history(&out, scenario.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else if reports.is_empty() {
                println!("no drill reports under {}", out.display());
            } else {
                print_history(&reports);
            }
            Ok(ExitCode::SUCCESS)
        }
        DrillCmd::List { json } => {
            let all: Vec<Scenario> = BUILTIN.iter().map(|(n, _)| load(n)).collect::<Result<_>>()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                for s in all {
                    let first = s.description.split_whitespace().collect::<Vec<_>>().join(" ");
                    println!("{:<20} {:<5} {first}", s.name, if s.fast { "fast" } else { "" });
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DrillCmd::Run { scenarios, all, fast, seed, out, sabotage, json, live, target, bootstrap, topic, dlq_topic, quarantine_topic, yes, creds } => {
            let names: Vec<String> = if all || fast {
                BUILTIN.iter().map(|(n, _)| n.to_string()).collect()
            } else if scenarios.is_empty() {
                bail!("name a scenario (see `vigil drill list`), a .toml file, --fast or --all");
            } else {
                scenarios
            };
            let mut chosen = Vec::new();
            for n in &names {
                let s = load(n)?;
                if !fast || s.fast {
                    chosen.push(s);
                }
            }
            if target.is_some() && !live {
                bail!("--target injects faults into a running node: add --live to confirm that this is a game day");
            }
            let live = match (live, target) {
                (true, Some(t)) => {
                    let [s] = chosen.as_slice() else { bail!("a game day runs one scenario at a time") };
                    if let Some(why) = vigil_chaos::runner::live_refusal(s, bootstrap.is_some()) {
                        bail!("{why}");
                    }
                    let admin = crate::admin::base_url(&t, false, &creds);
                    confirm_game_day(s, &admin, yes, seed)?;
                    Some(vigil_chaos::runner::Live {
                        admin,
                        agent: creds.agent(std::time::Duration::from_secs(2))?,
                        token: creds.bearer()?,
                        bootstrap,
                        topic,
                        dlq: dlq_topic,
                        quarantine: quarantine_topic,
                    })
                }
                _ => None,
            };
            let interrupted = Arc::new(AtomicBool::new(false));
            let flag = interrupted.clone();
            tokio::spawn(async move {
                crate::shutdown_signal().await;
                flag.store(true, Ordering::SeqCst);
            });
            let bin = std::env::current_exe().context("cannot find the vigil binary to start")?;
            let reports = tokio::task::spawn_blocking(move || -> Result<Vec<vigil_chaos::report::Report>> {
                let mut reports = Vec::new();
                for s in &chosen {
                    if interrupted.load(Ordering::SeqCst) {
                        break;
                    }
                    let opts = vigil_chaos::runner::Options {
                        bin: bin.clone(),
                        seed,
                        out_dir: out.clone(),
                        sabotage: sabotage.clone(),
                        interrupted: interrupted.clone(),
                        progress: Box::new(|m| eprintln!("{m}")),
                        live: live.clone(),
                    };
                    let r = vigil_chaos::runner::run(s, &opts).with_context(|| format!("drill {}", s.name))?;
                    eprintln!("{}\n  report: {}", r.summary(), r.dir.join("report.md").display());
                    reports.push(r);
                }
                Ok(reports)
            })
            .await
            .context("the drill thread failed")??;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                println!("\n{} drill(s):", reports.len());
                for r in &reports {
                    println!("{}", r.summary());
                }
            }
            Ok(if reports.iter().any(|r| r.interrupted) {
                ExitCode::from(130)
            } else if reports.iter().all(|r| r.passed) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
