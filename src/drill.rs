//! `vigil drill`: run chaos drills (built-in or own scenario files) against real processes
//! and print their verdicts; `list` shows the built-in scenarios, `history` past drills.
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vigil_chaos::scenario::{Scenario, BUILTIN};

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
        DrillCmd::Run { scenarios, all, fast, seed, out, sabotage, json } => {
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
