//! `vigil lineage ...`: record-level traces (output → source records, source record →
//! output or DLQ entry), what the lineage store holds, and the data-flow event log — from a
//! running node's admin API or read-only from a stopped node's data directory.
use crate::admin;
use crate::AdminTarget;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vigil_actors::journal::{Event, Journal};
use vigil_actors::lineage::rest::{parse_kinds, select};
use vigil_actors::lineage::retention::{self, Status};
use vigil_actors::lineage::trace::{
    parse_output, parse_position, trace_output, trace_record, OutputStatus, OutputTrace, RecordStatus, RecordTrace, SourceRecords,
};
use vigil_actors::registry::resolver::{encode_segment, PayloadView, RegistryClient};
use vigil_config::KafkaConfig;
use vigil_runtime::envelope::TopicPartition;
use vigil_runtime::kafka::PartitionReader;
use vigil_runtime::rfc3339_ms as rfc3339;
use vigil_runtime::store::Store;

/// Where lineage is read from.
#[derive(clap::Args)]
pub(crate) struct Source {
    /// Read a stopped node's data directory instead of asking a running node.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    target: AdminTarget,
}

#[derive(Subcommand)]
pub(crate) enum LineageCmd {
    /// Trace an output back to the exact source records that made it, or a source record
    /// forward to the window it counted in or the DLQ entry it became.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["output", "record"])))]
    Trace {
        /// Output `<topic>/<aggregation>/<key>@<window_start>`, e.g. `vigil-output/spend_per_user/user-007@1700000000000`.
        #[arg(long)]
        output: Option<String>,
        /// Source record: `<topic>/<partition>/<offset>`, or its `vigil.id` (found by reading
        /// the source topics).
        #[arg(long)]
        record: Option<String>,
        /// Also read the referenced source records from Kafka and print them.
        #[arg(long)]
        fetch: bool,
        /// Kafka bootstrap servers for --fetch and id lookups (default: the running node's).
        #[arg(long)]
        bootstrap: Option<String>,
        #[command(flatten)]
        from: Source,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What the lineage store holds: checkpoints and bytes retained, what retention removed.
    Status {
        #[command(flatten)]
        from: Source,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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
        #[command(flatten)]
        from: Source,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `vigil lineage ...`
pub(crate) fn run(cmd: LineageCmd) -> Result<ExitCode> {
    match cmd {
        LineageCmd::Events { since, kind, limit, from, json } => events(since, kind, limit, from, json),
        LineageCmd::Status { from, json } => {
            let st = status(&from)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_status(&st);
            }
            Ok(ExitCode::SUCCESS)
        }
        LineageCmd::Trace { output, record, fetch, bootstrap, from, json } => trace(output, record, fetch, bootstrap, &from, json),
    }
}

fn open_store(dir: &std::path::Path) -> Result<Store> {
    Store::open_read_only(dir).with_context(|| format!("no readable Vigil store at {}", dir.display()))
}

fn status(from: &Source) -> Result<Status> {
    match &from.data_dir {
        Some(dir) => Ok(retention::status(&open_store(dir)?, true)?),
        None => admin::get(&from.target.conn()?, "/lineage/status"),
    }
}

fn print_status(st: &Status) {
    println!("lineage: {} checkpoints retained ({}..{}), {} bytes", st.checkpoints, opt(st.oldest), opt(st.newest), st.bytes);
    let e = &st.expired;
    if e.epochs > 0 {
        println!("removed by retention: {} checkpoints through {} ({} bytes), last at {}", e.epochs, e.through_epoch, e.bytes, rfc3339(e.at_ms));
        for (tp, from) in &e.retained_from {
            println!("  {tp}: lineage kept from offset {from}");
        }
    } else {
        println!("removed by retention: nothing yet");
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn trace(output: Option<String>, record: Option<String>, fetch: bool, bootstrap: Option<String>, from: &Source, json: bool) -> Result<ExitCode> {
    let bootstrap = || -> Result<String> {
        if let Some(b) = &bootstrap {
            return Ok(b.clone());
        }
        if from.data_dir.is_some() {
            anyhow::bail!("reading Kafka for a stopped node's data needs --bootstrap");
        }
        let st: serde_json::Value = admin::get(&from.target.conn()?, "/status")?;
        st["bootstrap"].as_str().map(str::to_string).context("the node did not say which Kafka it uses; pass --bootstrap")
    };
    if let Some(output) = output {
        let (topic, key, start) = parse_output(&output).map_err(anyhow::Error::msg)?;
        let t: OutputTrace = match &from.data_dir {
            Some(dir) => trace_output(&open_store(dir)?, &topic, &key, start)?,
            None => admin::get(&from.target.conn()?, &format!("/lineage/output/{}", encode_segment(&output)))?,
        };
        let fetched = if fetch { fetch_records(&bootstrap()?, &from.target.kafka()?, &t.sources, &mut view(from))? } else { Vec::new() };
        show(&t, fetch.then_some(&fetched), json, || print_output(&t))?;
        return Ok(if matches!(t.status, OutputStatus::Unknown) { ExitCode::from(3) } else { ExitCode::SUCCESS });
    }
    let record = record.context("--output or --record")?;
    let (topic, partition, offset) = match parse_position(&record) {
        Some(p) => p,
        None => {
            let sources: Vec<String> = status(from)?.sources.into_keys().collect();
            find_id(&bootstrap()?, &from.target.kafka()?, &sources, &record)?
                .with_context(|| format!("no record with vigil.id `{record}` in the source partitions {}", sources.join(", ")))?
        }
    };
    let position = format!("{topic}/{partition}/{offset}");
    let t: RecordTrace = match &from.data_dir {
        Some(dir) => trace_record(&open_store(dir)?, &topic, partition, offset)?,
        None => admin::get(&from.target.conn()?, &format!("/lineage/record/{}", encode_segment(&position)))?,
    };
    let one = SourceRecords { topic, partition, records: 1, ranges: vec![(offset, offset)] };
    let fetched = if fetch { fetch_records(&bootstrap()?, &from.target.kafka()?, &[one], &mut view(from))? } else { Vec::new() };
    show(&t, fetch.then_some(&fetched), json, || {
        println!("{}: {}", t.record, t.note);
        for w in &t.windows {
            println!("  output: {}  written in checkpoint {}", w.output, opt(w.written_in));
        }
        if let Some(d) = &t.dlq {
            println!("  dlq: reason {} (stage {}), id {}: {}", d.code, d.stage, d.id.as_deref().unwrap_or(&t.record), d.detail);
        }
    })?;
    Ok(if matches!(t.status, RecordStatus::Unknown) { ExitCode::from(3) } else { ExitCode::SUCCESS })
}

/// Renders fetched values; framed ones are decoded with the running node's registry.
fn view(from: &Source) -> PayloadView {
    let client = match (&from.data_dir, from.target.conn()) {
        (None, Ok(conn)) => {
            let (agent, auth) = conn.parts();
            Some(RegistryClient::with_agent(&conn.base, agent, auth))
        }
        _ => None,
    };
    PayloadView::new(client)
}

/// Print a trace as JSON (with the records read back under `fetched`), or for people.
fn show<T: serde::Serialize>(t: &T, fetched: Option<&Vec<Fetched>>, json: bool, human: impl FnOnce()) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(t)?;
        if let Some(f) = fetched {
            v["fetched"] = serde_json::to_value(f)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        human();
        for f in fetched.into_iter().flatten() {
            println!("  {}/{}/{} id={} {}", f.topic, f.partition, f.offset, f.id, f.value);
        }
    }
    Ok(())
}

fn print_output(t: &OutputTrace) {
    println!("{}: {} — {}", t.output, vigil_actors::variant_name(&t.status), t.note);
    if !t.epochs.is_empty() {
        println!("  records added in checkpoints {}", t.epochs.iter().map(u64::to_string).collect::<Vec<_>>().join(", "));
    }
    for s in &t.schemas {
        println!("  schema {} v{}: {} records", s.subject, s.version, s.records);
    }
    for s in &t.sources {
        let runs: Vec<String> = s.ranges.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
        println!("  {}/{}: {} records at offsets {}", s.topic, s.partition, s.records, runs.join(","));
    }
}

/// A source record read back from Kafka.
#[derive(serde::Serialize)]
struct Fetched {
    topic: String,
    partition: i32,
    offset: i64,
    /// Its record id (`vigil.id`, else the position).
    id: String,
    /// Its value (UTF-8, lossy).
    value: String,
}

/// Read each partition's offsets in `ranges` (inclusive runs) and keep those records.
fn fetch_records(bootstrap: &str, kafka: &KafkaConfig, parts: &[SourceRecords], view: &mut PayloadView) -> Result<Vec<Fetched>> {
    let r = PartitionReader::new(bootstrap, kafka)?;
    let mut out = Vec::new();
    for SourceRecords { topic, partition, ranges, .. } in parts {
        let tp = TopicPartition::new(topic.clone(), *partition);
        for (first, last) in ranges {
            r.scan(&tp, *first, Some(*last), READ_TIMEOUT, |e| {
                let value = view.render(e.payload()).chars().take(300).collect();
                out.push(Fetched { topic: topic.clone(), partition: *partition, offset: e.offset(), id: e.id().into_owned(), value });
                false
            })?;
        }
    }
    Ok(out)
}

/// Find the record whose `vigil.id` is `id` in the source partitions `sources` (`topic/partition`).
fn find_id(bootstrap: &str, kafka: &KafkaConfig, sources: &[String], id: &str) -> Result<Option<(String, i32, i64)>> {
    let r = PartitionReader::new(bootstrap, kafka)?;
    for s in sources {
        let Some((topic, partition)) = s.rsplit_once('/').and_then(|(t, p)| Some((t.to_string(), p.parse::<i32>().ok()?))) else { continue };
        let tp = TopicPartition::new(topic.clone(), partition);
        eprintln!("looking for vigil.id `{id}` in {tp} ...");
        let mut found = None;
        r.scan(&tp, 0, None, READ_TIMEOUT, |e| {
            if e.id() == id {
                found = Some(e.offset());
            }
            found.is_some()
        })?;
        if let Some(o) = found {
            return Ok(Some((topic, partition, o)));
        }
    }
    Ok(None)
}

/// Bound on reading one stretch of a partition.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

fn events(since: String, kind: Option<String>, limit: usize, from: Source, json: bool) -> Result<ExitCode> {
    let Source { data_dir, target } = from;
    let kinds = parse_kinds(kind.as_deref().unwrap_or("")).map_err(anyhow::Error::msg)?;
    let events: Vec<Event> = match data_dir {
        Some(dir) => {
            let d = humantime::parse_duration(&since).with_context(|| format!("--since `{since}`"))?;
            let store = open_store(&dir)?;
            let now = vigil_runtime::now_ms();
            select(Journal::new(Arc::new(store)).range_with_schemas(now - d.as_millis() as i64, now + 1)?, &kinds, limit)
        }
        None => {
            let kind = kind.unwrap_or_default();
            admin::get(&target.conn()?, &format!("/lineage/events?since={since}&kind={kind}&limit={limit}"))?
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
