//! `vigil drill`: run chaos drills (built-in or own scenario files) against real processes
//! and print their verdicts; `list` shows the built-in scenarios.
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
