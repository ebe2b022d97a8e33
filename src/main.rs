//! `vigil`: the command line. Thin: parses arguments, loads config, and calls the crates.
//! Command groups with many verbs live in their own module (`schema`, `alerts`,
//! `security`...); `admin` talks to a running node.
mod admin;
mod alerts;
mod bench;
mod drill;
mod incident;
mod lineage;
mod schema;
mod security;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vigil_actors::generator::{EventGen, GenSpec};
use vigil_actors::node::Node;
use vigil_actors::rate::RateLimit;
use vigil_config::Config;
use vigil_runtime::embedded::EmbeddedBroker;
use vigil_runtime::kafka::TrackedProducer;
use vigil_runtime::stats::StatusSnapshot;
use vigil_supervision::TreeNode;

/// jemalloc serves every allocation of the process, librdkafka's and RocksDB's included
/// (its `malloc` replaces glibc's): librdkafka allocates each fetched message and op on its
/// broker threads and the node frees them on its own, which glibc's arenas handle slowly.
/// See docs/performance.md.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (its `malloc_conf`, read at start): freed pages go back to the
/// system after about a second (default 10 s), so the resident size `node.memory_limit`
/// is checked against follows what is in use; a background thread does it off the data path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[export_name = "malloc_conf"]
static MALLOC_CONF: &u8 = &b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

/// The process's allocator, as `vigil bench` reports it (its ratios depend on it: a bare
/// librdkafka consumer reads much faster on jemalloc than on glibc's allocator).
pub(crate) const ALLOCATOR: &str = if cfg!(all(target_os = "linux", target_env = "gnu")) { "jemalloc" } else { "system" };

/// Hand jemalloc's free pages back to the system now (every arena).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_jemalloc() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge" takes and returns nothing.
    // SAFETY: a NUL-terminated name and null pointers for a void control.
    unsafe {
        tikv_jemalloc_sys::mallctl(c"arena.4096.purge".as_ptr(), std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), 0);
    }
}

#[derive(Parser)]
#[command(name = "vigil", version, about = "Fault-tolerant actor runtime for real-time data pipelines on Kafka")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node. Without --config: the embedded default (in-process Kafka, generator, full pipeline).
    Run {
        /// Node configuration (TOML). VIGIL_<SECTION>__<KEY> environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Status lines as JSON objects.
        #[arg(long)]
        json: bool,
    },
    /// Run the librdkafka mock cluster as its own process until stopped.
    Broker {
        /// Partitions of each pre-created topic.
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        /// Port to listen on (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Topics to create (comma-separated or repeated). Others are auto-created with 4 partitions.
        #[arg(long = "topic", value_delimiter = ',', default_values_t = ["events".to_string(), "vigil-output".to_string(), "vigil-dlq".to_string()])]
        topics: Vec<String>,
        /// Serve Kafka over TLS with this PEM certificate (clients: security.protocol = ssl).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require client certificates chaining to this PEM CA (mTLS).
        #[arg(long, requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// Advertise the broker at this address (a proxy in front of --port, such as a
        /// drill's fault proxy) instead of its own.
        #[arg(long)]
        advertise: Option<SocketAddr>,
    },
    /// Produce deterministic synthetic events (payments and page views).
    Gen(GenArgs),
    /// Check or print configuration.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Print the live supervision tree of a running node.
    Tree {
        #[command(flatten)]
        target: AdminTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the status counters of a running node.
    Status {
        #[command(flatten)]
        target: AdminTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List or inspect retained checkpoints (works while the node runs).
    Checkpoint {
        #[command(subcommand)]
        cmd: CheckpointCmd,
    },
    /// Inject failures into a running node (drills).
    Chaos {
        #[command(subcommand)]
        cmd: ChaosCmd,
    },
    /// Chaos drills: real faults in real processes, every record reconciled, a report.
    Drill {
        #[command(subcommand)]
        cmd: drill::DrillCmd,
    },
    /// The schema registry: register, check, list, deprecate, archive, delete, usage, audit.
    Schema {
        #[command(subcommand)]
        cmd: schema::SchemaCmd,
    },
    /// Alerts of a running node: list, rules, reload.
    Alerts {
        #[command(subcommand)]
        cmd: alerts::AlertsCmd,
    },
    /// Silences: add, list, expire.
    Silence {
        #[command(subcommand)]
        cmd: alerts::SilenceCmd,
    },
    /// Incidents: list, show, open, ack, assign, note, mitigate, resolve, postmortem, report.
    Incident {
        #[command(subcommand)]
        cmd: incident::IncidentCmd,
    },
    /// Data lineage: the data-flow event log (`vigil lineage events --since 10m`).
    Lineage {
        #[command(subcommand)]
        cmd: lineage::LineageCmd,
    },
    /// Throughput measurements as same-run ratios: `vigil bench` runs every mode (raw
    /// librdkafka, pipeline, with checkpoints...) on one dataset; subcommands measure one feature.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        cmd: Option<bench::BenchCmd>,
        #[command(flatten)]
        args: bench::ModesArgs,
    },
    /// Development certificates: `vigil certs dev` makes a CA, node and client certificates.
    Certs {
        #[command(subcommand)]
        cmd: security::CertsCmd,
    },
    /// API tokens in the token file: create (printed once), list, revoke.
    Token {
        #[command(subcommand)]
        cmd: security::TokenCmd,
    },
    /// The security audit log: list entries, verify the hash chain.
    Audit {
        #[command(subcommand)]
        cmd: security::AuditCmd,
    },
    /// Who the node takes you for, and what your role allows.
    Whoami {
        #[command(flatten)]
        target: AdminTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The current data-quality table per source and field (or its history).
    Dq {
        #[command(flatten)]
        target: AdminTarget,
        /// Instead: the persisted history of this long, one line per slot and source (e.g. `15m`).
        #[arg(long)]
        history: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Report every problem in a configuration file, with field paths; exit 1 if any.
    Check {
        /// File to check.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a complete, commented default configuration.
    Default,
}

#[derive(Subcommand)]
enum CheckpointCmd {
    /// Retained checkpoints, oldest first.
    List {
        #[command(flatten)]
        store: StoreTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Offsets and state sizes of one checkpoint (default: the latest).
    Inspect {
        /// Checkpoint id.
        id: Option<u64>,
        #[command(flatten)]
        store: StoreTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct StoreTarget {
    /// Data directory of the node (default: from --config, else ./vigil-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Read the data directory from this node configuration.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl StoreTarget {
    fn open(&self) -> Result<vigil_runtime::store::Store> {
        let dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => load_config(self.config.as_deref())?.node.data_dir,
        };
        open_store(&dir)
    }
}

/// A node's store, read-only (works while the node runs).
fn open_store(dir: &std::path::Path) -> Result<vigil_runtime::store::Store> {
    vigil_runtime::store::Store::open_read_only(dir).with_context(|| format!("no readable Vigil store at {}", dir.display()))
}

/// JSON view of a checkpoint (offsets as a list: JSON map keys must be strings).
fn checkpoint_json(c: &vigil_runtime::store::CheckpointMeta) -> serde_json::Value {
    let offsets: Vec<_> = c.offsets.iter().map(|(tp, o)| serde_json::json!({"topic": tp.topic, "partition": tp.partition, "offset": o})).collect();
    serde_json::json!({"id": c.id, "completed_ms": c.completed_ms, "completed": vigil_runtime::rfc3339_ms(c.completed_ms), "node_id": c.node_id,
        "duration_us": c.duration_us, "offsets": offsets, "state_bytes": c.state_bytes})
}

#[derive(Subcommand)]
enum ChaosCmd {
    /// Make an actor panic: ingest, validate, process, sink, generator, quality, alerting or incidents.
    Panic {
        /// Stage name.
        stage: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Set the embedded generator's fraction of malformed records (0 restores clean input).
    BadData {
        /// Fraction of malformed records, 0.0 to 1.0.
        #[arg(long, default_value_t = 0.2)]
        ratio: f64,
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Args)]
pub(crate) struct AdminTarget {
    /// Admin address of the node (default: from --config, else 127.0.0.1:9899).
    #[arg(long)]
    admin: Option<String>,
    /// Read the admin address from this node configuration.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(flatten)]
    creds: admin::Creds,
}

impl AdminTarget {
    /// The node's admin API: `--admin` (an address or URL), else the configuration's
    /// address, https when the configuration turns TLS on.
    pub(crate) fn conn(&self) -> Result<admin::Conn> {
        if let Some(a) = &self.admin {
            return admin::Conn::new(a, false, &self.creds);
        }
        let cfg = load_config(self.config.as_deref())?;
        admin::Conn::new(&cfg.observability.admin_addr, cfg.security.tls.enabled(), &self.creds)
    }

    /// Kafka client settings (TLS, SASL) of the configuration, if one was given.
    pub(crate) fn kafka(&self) -> Result<vigil_config::KafkaConfig> {
        kafka_of(self.config.as_deref())
    }
}

/// `[kafka]` of the configuration at `path` (its TLS and SASL settings), else the defaults.
fn kafka_of(path: Option<&std::path::Path>) -> Result<vigil_config::KafkaConfig> {
    Ok(match path {
        Some(p) => load_config(Some(p))?.kafka,
        None => vigil_config::KafkaConfig::default(),
    })
}

#[derive(Args)]
struct GenArgs {
    /// Kafka bootstrap servers.
    #[arg(long)]
    bootstrap: String,
    /// Take Kafka TLS and SASL settings (`[kafka.security]`) from this node configuration.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Sign each record (`vigil.sig`, HMAC-SHA256) with this producer key.
    #[arg(long, env = "VIGIL_SIGN_KEY", hide_env_values = true, conflicts_with = "sign_key_file")]
    sign_key: Option<String>,
    /// Read the signing key from this file.
    #[arg(long)]
    sign_key_file: Option<PathBuf>,
    /// Producer name the signature claims.
    #[arg(long, default_value = "vigil-gen")]
    producer: String,
    /// Topic to write.
    #[arg(long, default_value = "events")]
    topic: String,
    /// Records to produce (0 = until stopped).
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Records per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Fraction of deliberately malformed records.
    #[arg(long, default_value_t = 0.0)]
    bad_ratio: f64,
    /// Seed of the deterministic stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Distinct users (keys).
    #[arg(long, default_value_t = 50)]
    users: u32,
    /// Event time of the first record, ms since epoch (default: now).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Event-time step between records, ms (default: 1000/rate, or 1).
    #[arg(long)]
    step_ms: Option<i64>,
    /// Value format: json (plain), avro or json_schema (Confluent framing; needs --registry).
    #[arg(long, default_value = "json")]
    format: String,
    /// Schema registry to register the generator's schema in (e.g. http://127.0.0.1:9899).
    #[arg(long)]
    registry: Option<String>,
    /// Registry subject (default `<topic>-value`).
    #[arg(long)]
    subject: Option<String>,
    /// Frame records with this schema id instead of registering the generator's schema
    /// (it must be the generator's schema for the format).
    #[arg(long, conflicts_with = "registry")]
    schema_id: Option<u32>,
    /// Damage every record's bytes so none decodes (cut short, a byte that is not UTF-8, or
    /// a bogus Confluent header): the drills' corruption fault. JSON format only.
    #[arg(long)]
    corrupt: bool,
    /// A flood: `AT:FOR:RATE`, e.g. `5s:10s:20000` runs at RATE records/s from AT after the
    /// start for FOR, at --rate before and after (needs --rate).
    #[arg(long, value_parser = parse_surge)]
    surge: Option<Surge>,
    /// How long to wait for the broker to take a record and, at the end, to acknowledge
    /// every record (a broker outage longer than this fails the run).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `vigil gen --surge`: a higher rate for a while.
#[derive(Debug, Clone, Copy)]
struct Surge {
    at: Duration,
    span: Duration,
    rate: u32,
}

fn parse_surge(s: &str) -> std::result::Result<Surge, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [at, span, rate] = parts.as_slice() else { return Err(format!("`{s}`: expected AT:FOR:RATE, e.g. 5s:10s:20000")) };
    let d = |x: &str| humantime::parse_duration(x).map_err(|e| format!("`{x}`: {e}"));
    let rate: u32 = rate.parse().ok().filter(|r| *r > 0).ok_or_else(|| format!("`{rate}`: the surge rate must be a positive number of records/s"))?;
    Ok(Surge { at: d(at)?, span: d(span)?, rate })
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config> {
    Config::load(path, std::env::vars()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn init_logging(json: bool) {
    // ractor wraps every actor in an `Actor{id=..}` span; stages name themselves
    // (`stage{stage="process"}`) instead, so its spans are off unless VIGIL_LOG names ractor.
    let directives = std::env::var("VIGIL_LOG").unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".into());
    let directives = if directives.contains("ractor") { directives } else { format!("{directives},ractor=warn") };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ractor=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        b.json().init();
    } else {
        b.init();
    }
    // Actor panics are caught by ractor and handled by the supervisors; log them as one
    // line (backtrace only at debug level) instead of the default multi-line dump.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!(%thread, "panic: {info}");
        tracing::debug!("backtrace:\n{}", std::backtrace::Backtrace::force_capture());
    }));
}

/// Configure fault injection from `FAILPOINTS` (`name=actions;...`, e.g.
/// `store-commit-checkpoint=3*off->1*return->off`), as the `fail` crate defines it.
fn setup_failpoints() -> Result<(), String> {
    let Ok(spec) = std::env::var("FAILPOINTS") else { return Ok(()) };
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, actions) = part.split_once('=').ok_or_else(|| format!("FAILPOINTS: `{part}` is not name=actions"))?;
        fail::cfg(name.trim(), actions.trim()).map_err(|e| format!("FAILPOINTS: {name}: {e}"))?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    vigil_actors::memory::set_release(release_jemalloc);
    // Output piped into `head` or `less` that closes early ends a command quietly, as for
    // any Unix tool, instead of a panic on the broken pipe. Not for the commands that serve
    // or drive sockets: there a peer that hangs up would kill the process (librdkafka's
    // mock broker writes without MSG_NOSIGNAL), so SIGPIPE stays ignored and a closed
    // connection is an EPIPE error like any other.
    #[cfg(unix)]
    if !matches!(cli.cmd, Cmd::Run { .. } | Cmd::Broker { .. } | Cmd::Bench { .. } | Cmd::Gen(_) | Cmd::Drill { .. }) {
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
        }
    }
    if let Err(e) = setup_failpoints() {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cli.cmd {
        Cmd::Run { config, json } => run(config, json).await,
        Cmd::Broker { partitions, port, topics, tls_cert, tls_key, tls_client_ca, advertise } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(vigil_config::TlsConfig {
                    cert: Some(cert),
                    key: Some(key),
                    require_client_cert: tls_client_ca.is_some(),
                    client_ca: tls_client_ca,
                    ..Default::default()
                }),
                _ => None,
            };
            broker(partitions, port, topics, tls, advertise).await
        }
        Cmd::Gen(args) => gen(args).await,
        Cmd::Config { cmd: ConfigCmd::Default } => {
            print!("{}", Config::default_toml());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config { cmd: ConfigCmd::Check { file, json } } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let res = Config::from_toml_str(&text, std::env::vars());
            let errors = res.as_ref().err().map(|e| e.errors.clone()).unwrap_or_default();
            if json {
                let list: Vec<_> = errors.iter().map(|e| serde_json::json!({"path": e.path, "message": e.message})).collect();
                println!("{}", serde_json::json!({"file": file.display().to_string(), "ok": errors.is_empty(), "errors": list}));
            } else if errors.is_empty() {
                println!("{}: ok", file.display());
            } else {
                println!("{}: {} problem(s)", file.display(), errors.len());
                for e in &errors {
                    println!("  {e}");
                }
            }
            Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Tree { target, json } => {
            let tree: TreeNode = admin::get(&target.conn()?, "/tree")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tree)?);
            } else {
                print!("{}", tree.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { target, json } => {
            let v: serde_json::Value = admin::get(&target.conn()?, "/status")?;
            if json {
                println!("{v}");
            } else {
                let s: StatusSnapshot = serde_json::from_value(v)?;
                println!("{}", status_line(&s, None));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Checkpoint { cmd: CheckpointCmd::List { store, json } } => {
            let list = store.open()?.list_checkpoints()?;
            if json {
                let list: Vec<_> = list.iter().map(checkpoint_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no checkpoints yet");
            } else {
                println!("{:>8}  {:<24}  {:>9}  {:>10}  {:>11}", "ID", "COMPLETED (UTC)", "DURATION", "PARTITIONS", "STATE BYTES");
                for c in &list {
                    let bytes: u64 = c.state_bytes.values().sum();
                    println!(
                        "{:>8}  {:<24}  {:>6.1} ms  {:>10}  {:>11}",
                        c.id,
                        vigil_runtime::rfc3339_ms(c.completed_ms),
                        c.duration_us as f64 / 1000.0,
                        c.offsets.len(),
                        bytes
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Checkpoint { cmd: CheckpointCmd::Inspect { id, store, json } } => {
            let s = store.open()?;
            let cp = match id {
                Some(id) => s.checkpoint(id)?.with_context(|| format!("checkpoint {id} is not retained (see `vigil checkpoint list`)"))?,
                None => s.latest_checkpoint()?.context("no checkpoints yet")?,
            };
            // The open windows as of the latest checkpoint, per aggregation: (windows, bytes).
            let mut windows: std::collections::BTreeMap<String, (u64, u64)> = std::collections::BTreeMap::new();
            s.for_each(vigil_actors::analytics::state::CF, b"", |k, v| {
                let agg = vigil_actors::analytics::state::window_key_aggregation(k).unwrap_or_default();
                let e = windows.entry(agg.to_string()).or_default();
                e.0 += 1;
                e.1 += (k.len() + v.len()) as u64;
                Ok(())
            })?;
            if json {
                let mut v = checkpoint_json(&cp);
                v["open_windows"] = windows.iter().map(|(a, (n, b))| (a.clone(), serde_json::json!({"windows": n, "bytes": b}))).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "checkpoint {} by node {} at {} ({:.1} ms)",
                    cp.id,
                    cp.node_id,
                    vigil_runtime::rfc3339_ms(cp.completed_ms),
                    cp.duration_us as f64 / 1000.0
                );
                println!("source offsets (next to read):");
                for (tp, off) in &cp.offsets {
                    println!("  {:<32} {off}", tp.to_string());
                }
                println!("written by this checkpoint:");
                for (stage, bytes) in &cp.state_bytes {
                    let what = if stage == "windows" { "windows (changes since the previous checkpoint)" } else { stage.as_str() };
                    println!("  {what:<48} {bytes} bytes");
                }
                println!("open windows (latest checkpoint):");
                if windows.is_empty() {
                    println!("  none");
                }
                for (agg, (n, bytes)) in &windows {
                    println!("  {agg:<32} {n} windows, {bytes} bytes");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Schema { cmd } => schema::run(cmd),
        Cmd::Alerts { cmd } => alerts::alerts(cmd),
        Cmd::Silence { cmd } => alerts::silence(cmd),
        Cmd::Dq { target, history, json } => alerts::dq(&target, history.as_deref(), json),
        Cmd::Incident { cmd } => incident::run(cmd),
        Cmd::Lineage { cmd } => lineage::run(cmd),
        Cmd::Certs { cmd } => security::certs(cmd),
        Cmd::Token { cmd } => security::token(cmd),
        Cmd::Audit { cmd } => security::audit_cmd(cmd),
        Cmd::Whoami { target, json } => security::whoami(&target, json),
        Cmd::Bench { cmd, args } => {
            init_logging(false);
            bench::run_bench(cmd, args).await
        }
        Cmd::Chaos { cmd: ChaosCmd::BadData { ratio, target } } => {
            let conn = target.conn()?;
            let _: serde_json::Value = admin::post(&conn, "/chaos/bad-data", &serde_json::json!({ "ratio": ratio }))?;
            println!("generator on {} now writes {:.0}% malformed records (watch: vigil dq; vigil alerts list)", conn.base, ratio * 100.0);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Drill { cmd } => {
            init_logging(false);
            drill::run(cmd).await
        }
        Cmd::Chaos { cmd: ChaosCmd::Panic { stage, target } } => {
            let conn = target.conn()?;
            let (agent, auth) = conn.parts();
            vigil_chaos::inject_panic(&agent, &conn.base, auth.as_deref(), &stage)?;
            println!("injected panic into `{stage}` on {}", conn.base);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn status_line(s: &StatusSnapshot, rate: Option<f64>) -> String {
    let cp = match &s.last_checkpoint {
        Some(c) => {
            let now = vigil_runtime::now_ms();
            format!("checkpoint #{} ({:.1} ms, {:.1}s ago)", c.id, c.duration_us as f64 / 1000.0, (now - c.completed_ms).max(0) as f64 / 1000.0)
        }
        None => "no checkpoint yet".to_string(),
    };
    let rate = rate.map(|r| format!(" ({r:.0}/s)")).unwrap_or_default();
    let lost = if s.lost_to_retention > 0 { format!("  LOST-TO-RETENTION {}", s.lost_to_retention) } else { String::new() };
    format!("in {}{rate}  valid {}  windowed {}  out {} windows  dlq {}  lag {}  {cp}{lost}", s.ingested, s.validated, s.processed, s.windows_out, s.dlq, s.lag)
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not
/// when it is first awaited: a signal that arrives in between (say, right after a node has
/// reported itself started) is kept, not fatal.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        match handlers {
            (Some(mut term), Some(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(config: Option<PathBuf>, json: bool) -> Result<std::process::ExitCode> {
    let cfg = load_config(config.as_deref())?;
    init_logging(cfg.observability.log_format == vigil_config::LogFormat::Json);
    let shutdown = shutdown_signal();
    let node = Node::start(cfg.clone()).await.context("node failed to start")?;
    let o = &cfg;
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "started", "node": o.node.id, "bootstrap": node.bootstrap(), "embedded": node.is_embedded(),
                "metrics": format!("{}://{}/metrics", node.metrics_scheme(), node.metrics_addr), "admin": format!("{}://{}", node.scheme(), node.admin_addr),
                "auth": o.security.auth, "tls": node.tls.is_some(),
                "data_dir": o.node.data_dir.display().to_string(),
                "registry": if o.schema_registry.external() { o.schema_registry.url.clone() } else { format!("{}://{}", node.scheme(), node.admin_addr) }})
        );
    } else {
        println!("vigil {} — node {}", env!("CARGO_PKG_VERSION"), o.node.id);
        if node.is_embedded() {
            println!("  kafka      embedded mock cluster at {} (in process; gone when the node stops)", node.bootstrap());
        } else {
            println!("  kafka      {}", node.bootstrap());
        }
        let topics: Vec<String> = o
            .pipeline
            .sources
            .iter()
            .map(|s| if s.format.framed() { format!("{} ({}, {})", s.topic, s.format, s.subject()) } else { format!("{} (json)", s.topic) })
            .collect();
        println!(
            "  pipeline   {} -> validate -> {} aggregations -> {} (dlq: {})",
            topics.join(","),
            o.pipeline.aggregations.len(),
            o.pipeline.sink_topic,
            o.pipeline.dlq_topic
        );
        for a in &o.pipeline.aggregations {
            let window = match a.window {
                vigil_config::WindowSpec::Tumbling { size } => format!("tumbling {}", humantime::format_duration(size)),
                vigil_config::WindowSpec::Hopping { size, slide } => {
                    format!("hopping {} every {}", humantime::format_duration(size), humantime::format_duration(slide))
                }
                vigil_config::WindowSpec::Session { gap } => format!("sessions, gap {}", humantime::format_duration(gap)),
            };
            let metrics: Vec<String> = a.metrics.iter().map(ToString::to_string).collect();
            let group = if a.group_by.is_empty() { "everything".to_string() } else { a.group_by.join(", ") };
            println!("    {:<20} {window} by {group}: {}", a.name, metrics.join(", "));
        }
        println!("  data       {}", o.node.data_dir.display());
        if o.schema_registry.external() {
            println!("  registry   {} (external)", o.schema_registry.url);
        } else {
            println!("  registry   {}://{}  (Confluent API: curl {}/subjects; vigil schema list)", node.scheme(), node.admin_addr, node.admin_addr);
        }
        println!("  metrics    {}://{}/metrics", node.metrics_scheme(), node.metrics_addr);
        println!("  admin      {}://{}/status   (vigil tree --admin {})", node.scheme(), node.admin_addr, node.admin_addr);
        println!("  security   {}", security_line(&o.security));
        if o.quality.enabled {
            let alerting =
                if o.quality.enabled && o.alerts.enabled { format!(", {} alert rules (vigil alerts list)", o.alerts.rules.len()) } else { String::new() };
            println!(
                "  quality    every {} over {} (vigil dq){alerting}",
                humantime::format_duration(o.quality.interval),
                humantime::format_duration(o.quality.window)
            );
            if o.alerts.enabled && o.incidents.enabled {
                println!("  incidents  {} and above open incidents (vigil incident list)", o.incidents.open_at);
            }
        }
        if o.generator_enabled() {
            println!("  generator  {} records/s, {:.0}% malformed, seed {}", o.generator.rate, o.generator.bad_ratio * 100.0, o.generator.seed);
        }
        println!("Ctrl-C stops the node with a final checkpoint.");
    }
    let _ = std::io::stdout().flush();
    let stats = node.ctx.stats.clone();
    let interval = o.observability.status_interval;
    let printer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        let mut last = (Instant::now(), 0u64);
        loop {
            tick.tick().await;
            let s = stats.snapshot();
            let rate = (s.ingested.saturating_sub(last.1)) as f64 / last.0.elapsed().as_secs_f64().max(0.001);
            last = (Instant::now(), s.ingested);
            if json {
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    m.insert("event".into(), "status".into());
                }
                println!("{v}");
            } else {
                println!("{}", status_line(&s, Some(rate)));
            }
            let _ = std::io::stdout().flush();
        }
    });
    let reloader = tokio::spawn(reload_on_sighup(node.reloader()));
    let res = node.run_until(shutdown).await;
    printer.abort();
    reloader.abort();
    match res {
        Ok(()) => {
            println!("stopped cleanly");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: node failed: {e}");
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

/// One line on how the listeners are protected.
fn security_line(s: &vigil_config::SecurityConfig) -> String {
    let tls = match (&s.tls.cert, &s.tls.client_ca) {
        (None, _) => "plaintext".to_string(),
        (Some(_), None) => format!("TLS {}+", if s.tls.min_version == vigil_config::TlsVersion::V1_3 { "1.3" } else { "1.2" }),
        (Some(_), Some(_)) if s.tls.require_client_cert => "TLS with client certificates required (mTLS)".to_string(),
        (Some(_), Some(_)) => "TLS, client certificates optional".to_string(),
    };
    if s.auth {
        format!("{tls}; tokens and roles required (deny by default), audit log kept; SIGHUP reloads certificates")
    } else {
        format!("{tls}; no authentication: the admin API is open on loopback only (turn on [security] auth; docs/security.md)")
    }
}

/// SIGHUP re-reads the listeners' TLS certificates and `[alerts]` from the configuration
/// file (the rules in use stay when the file is not valid; certificates likewise).
async fn reload_on_sighup(reloader: vigil_actors::node::Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            for outcome in reloader.reload().await {
                match outcome {
                    Ok(done) => tracing::info!("SIGHUP: {done}"),
                    Err(e) => tracing::error!("SIGHUP: {e}"),
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = reloader;
}

async fn broker(
    partitions: u32,
    port: u16,
    topics: Vec<String>,
    tls: Option<vigil_config::TlsConfig>,
    advertise: Option<SocketAddr>,
) -> Result<std::process::ExitCode> {
    init_logging(false);
    if partitions == 0 {
        bail!("--partitions must be at least 1");
    }
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let shutdown = shutdown_signal();
    let server_tls = match &tls {
        Some(t) => Some(std::sync::Arc::new(vigil_runtime::security::tls::server_config(t).context("cannot load the broker's TLS certificate")?)),
        None => None,
    };
    let b = EmbeddedBroker::start_with_tls(partitions, &topics, Some(listen), server_tls, advertise).context("cannot start the mock cluster")?;
    println!("bootstrap: {}", b.bootstrap());
    if let Some(t) = &tls {
        let mtls = if t.client_ca.is_some() { ", client certificates required" } else { "" };
        println!("tls: on{mtls} (clients: [kafka.security] protocol = \"ssl\", ca = <the CA of --tls-cert>)");
    }
    println!("topics: {} ({} partitions each); the mock keeps ~5 MiB per partition", topics.join(","), partitions);
    let _ = std::io::stdout().flush();
    shutdown.await;
    drop(b);
    Ok(std::process::ExitCode::SUCCESS)
}

async fn gen(a: GenArgs) -> Result<std::process::ExitCode> {
    init_logging(false);
    if !(0.0..=1.0).contains(&a.bad_ratio) {
        bail!("--bad-ratio must be between 0.0 and 1.0");
    }
    if a.corrupt && a.format != "json" {
        bail!("--corrupt damages JSON records only (--format json)");
    }
    if a.surge.is_some() && a.rate == 0 {
        bail!("--surge needs --rate (the rate before and after the surge)");
    }
    let wire = gen_wire(&a).await?;
    let sign = match (&a.sign_key, &a.sign_key_file) {
        (Some(k), _) => Some((a.producer.clone(), k.clone())),
        (None, Some(f)) => {
            Some((a.producer.clone(), std::fs::read_to_string(f).with_context(|| format!("cannot read --sign-key-file {}", f.display()))?.trim().to_string()))
        }
        (None, None) => None,
    };
    let kafka = kafka_of(a.config.as_deref())?;
    let producer = TrackedProducer::new(&a.bootstrap, &kafka)?;
    let start_ms = a.start_ms.unwrap_or_else(vigil_runtime::now_ms);
    let step_ms = a.step_ms.unwrap_or_else(|| vigil_actors::stages::step_ms_for_rate(a.rate));
    let mut g = EventGen::new(GenSpec { seed: a.seed, users: a.users, bad_ratio: a.bad_ratio, start_ms, step_ms });
    let started = Instant::now();
    let (mut produced, mut bad) = (0u64, 0u64);
    let mut last_report = Instant::now();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let timeout = a.timeout;
    // Paced by the same token bucket as Ingest; at most one second of backlog is caught up.
    let mut pace = (a.rate > 0).then(|| RateLimit::new(a.rate, a.rate, Instant::now()).empty());
    let mut rate = a.rate;
    while a.count == 0 || produced < a.count {
        if let Some(s) = a.surge {
            let t = started.elapsed();
            let want = if t >= s.at && t < s.at + s.span { s.rate } else { a.rate };
            if want != rate {
                rate = want;
                pace = Some(RateLimit::new(rate, rate, Instant::now()).empty());
                eprintln!("gen: {rate} records/s from now");
            }
        }
        if let Some(p) = &mut pace {
            if p.available(Instant::now()) == 0 {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(p.wait()) => continue,
                }
            }
            p.take(1);
        }
        // Unpaced (or paced faster than it ever waits), nothing above looks for a stop
        // signal: look every 1024 records.
        if produced % 1024 == 0 {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = std::future::ready(()) => {}
            }
        }
        let mut r = g.next_record();
        if a.corrupt {
            r.payload = vigil_actors::generator::corrupt(&r.payload, produced);
            r.bad = true;
        }
        vigil_actors::stages::produce_generated(&producer, &a.topic, &r, &wire, timeout, sign.as_ref().map(|(p, k)| (p.as_str(), k.as_bytes()))).await?;
        produced += 1;
        bad += u64::from(r.bad);
        if !a.json && last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!("gen: {produced} records ({bad} malformed) to {}", a.topic);
            last_report = Instant::now();
        }
    }
    producer.flush_checked(timeout, 0).await.context("not every record was acknowledged")?;
    let format = a.format.clone();
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"topic": a.topic, "format": format, "produced": produced, "bad": bad, "seed": a.seed, "start_ms": start_ms, "step_ms": step_ms, "seconds": secs})
        );
    } else {
        println!(
            "produced {produced} {format} records ({bad} malformed) to {} in {secs:.1}s (seed {}, start_ms {start_ms}, step_ms {step_ms})",
            a.topic, a.seed
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// How `vigil gen` encodes: registers the generator's schema when the format needs one.
async fn gen_wire(a: &GenArgs) -> Result<vigil_actors::generator::Wire> {
    use vigil_actors::generator::{Wire, AVRO_SCHEMA, JSON_SCHEMA};
    use vigil_actors::registry::schema::SchemaType;
    let (kind, schema) = match a.format.as_str() {
        "json" => return Ok(Wire::Json),
        "avro" => (SchemaType::Avro, AVRO_SCHEMA),
        "json_schema" => (SchemaType::Json, JSON_SCHEMA),
        other => bail!("--format `{other}`: use json, avro or json_schema"),
    };
    if let Some(id) = a.schema_id {
        return Ok(match kind {
            SchemaType::Avro => Wire::avro(id).map_err(anyhow::Error::msg)?,
            SchemaType::Json => Wire::JsonSchema { id },
        });
    }
    let Some(url) = a.registry.clone() else {
        bail!("--format {} needs --registry URL (e.g. http://127.0.0.1:9899, a node's admin address) or --schema-id ID", a.format)
    };
    let subject = a.subject.clone().unwrap_or_else(|| format!("{}-value", a.topic));
    let id = tokio::task::spawn_blocking(move || {
        vigil_actors::registry::resolver::RegistryClient::new(&url, Duration::from_secs(30)).register(&subject, kind, schema)
    })
    .await?
    .map_err(anyhow::Error::msg)
    .context("registering the generator's schema")?;
    Ok(match kind {
        SchemaType::Avro => Wire::avro(id).map_err(anyhow::Error::msg)?,
        SchemaType::Json => Wire::JsonSchema { id },
    })
}
