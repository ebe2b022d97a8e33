//! `vigil lineage ...`: the data-flow event log (and, as lineage grows, traces), from a
//! running node's admin API or read-only from a stopped node's data directory.
use crate::admin;
use crate::AdminTarget;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vigil_actors::journal::{Event, Journal};
use vigil_actors::lineage::rest::{parse_kinds, select};
use vigil_runtime::rfc3339_ms as rfc3339;

#[derive(Subcommand)]
pub(crate) enum LineageCmd {
    /// Data-flow events in time order: node start/stop, checkpoints, failures and restarts,
    /// retention loss, DLQ bursts, schema changes, reloads, chaos.
    Events {
        /// How far back, e.g. 10m.
        #[arg(long, default_value = "1h")]
        since: String,
        /// Only these kinds, comma-separated (e.g. `checkpoint,restart`).
        #[arg(long)]
        kind: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
        /// Read a stopped node's data directory instead of asking a running node.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        target: AdminTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `vigil lineage ...`
pub(crate) fn run(cmd: LineageCmd) -> Result<ExitCode> {
    let LineageCmd::Events { since, kind, limit, data_dir, target, json } = cmd;
    let kinds = parse_kinds(kind.as_deref().unwrap_or("")).map_err(anyhow::Error::msg)?;
    let events: Vec<Event> = match data_dir {
        Some(dir) => {
            let d = humantime::parse_duration(&since).with_context(|| format!("--since `{since}`"))?;
            let store = vigil_runtime::store::Store::open_read_only(&dir).with_context(|| format!("no readable Vigil store at {}", dir.display()))?;
            let now = vigil_runtime::now_ms();
            select(Journal::new(Arc::new(store)).range(now - d.as_millis() as i64, now + 1)?, &kinds, limit)
        }
        None => {
            let kind = kind.unwrap_or_default();
            admin::get(&target.addr()?, &format!("/lineage/events?since={since}&kind={kind}&limit={limit}"))?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&events)?);
    } else if events.is_empty() {
        println!("no events in the last {since}");
    } else {
        for e in &events {
            let kind = vigil_actors::variant_name(&e.kind);
            println!("{}  {:<21} {:<18} {}", rfc3339(e.at_ms), kind, e.subject(), e.text);
        }
    }
    Ok(ExitCode::SUCCESS)
}
