//! vigil-config: the typed configuration of a Vigil node, loaded from TOML plus `VIGIL_*`
//! environment overrides, and validated with field paths.
//!
//! Every field has a documented default (see [`Config::default_toml`], which is what
//! `vigil config default` prints). Loading never stops at the first problem: syntax errors,
//! unknown keys, type errors and semantic checks are all collected into one
//! [`ConfigErrors`], each naming the field path it is about, e.g.
//! `pipeline.sources[0].topic: must not be empty`.
//!
//! Environment overrides use `VIGIL_<SECTION>__<KEY>` (double underscore between path
//! segments), e.g. `VIGIL_OBSERVABILITY__METRICS_ADDR=0.0.0.0:9898`. Values are parsed as
//! TOML literals when they can be (`5`, `true`, `"x"`), otherwise taken as strings.
#![warn(missing_docs, unreachable_pub)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One problem found in a configuration, with the field path it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `pipeline.sources[0].topic`; `<file>` for syntax errors.
    pub path: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found while loading or validating a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The problems, in the order found.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.errors.len())?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Result of loading a configuration.
pub type Result<T> = std::result::Result<T, ConfigErrors>;

/// The whole configuration of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    /// Identity and local storage of this node.
    pub node: NodeConfig,
    /// Kafka connection; an empty `bootstrap` runs the embedded mock cluster.
    pub kafka: KafkaConfig,
    /// Sources, validation rules, windows and output topics.
    pub pipeline: PipelineConfig,
    /// Checkpoint cadence and retention.
    pub checkpoint: CheckpointConfig,
    /// Restart intensity, backoff and shutdown timeouts of the supervision tree.
    pub supervision: SupervisionConfig,
    /// Metrics, admin API and logging.
    pub observability: ObservabilityConfig,
    /// The synthetic event generator run by the embedded default.
    pub generator: GeneratorConfig,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Node id, used in logs, lineage and output headers. Default `vigil-1`.
    pub id: String,
    /// Directory of the node's RocksDB instance. Default `./vigil-data`.
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { id: "vigil-1".into(), data_dir: PathBuf::from("./vigil-data") }
    }
}

/// `[kafka]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port,...`). Empty (default) starts an in-process mock cluster.
    pub bootstrap: String,
    /// Consumer group id; offsets are committed there after each checkpoint so lag is
    /// visible to Kafka tooling. Default `vigil`.
    pub group_id: String,
    /// Extra librdkafka properties passed through unchanged to every client, e.g.
    /// `"security.protocol" = "SASL_SSL"`, `"sasl.mechanism" = "PLAIN"`, `"ssl.ca.location"`.
    /// Default empty.
    pub properties: BTreeMap<String, String>,
    /// Partitions of each topic the embedded mock cluster creates. Default 4.
    pub embedded_partitions: u32,
    /// How long one poll waits for the first record before returning an empty batch.
    /// Default `100ms`; lower reacts faster to control messages, higher wastes fewer wakeups.
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// Most data librdkafka prefetches per consumer (`queued.max.messages.kbytes`), KiB.
    /// Default 8192 (8 MiB); bounds memory while Ingest waits for credits.
    pub prefetch_kbytes_max: u32,
    /// Most data waiting in a producer for Kafka's acknowledgement
    /// (`queue.buffering.max.kbytes`), KiB. Default 65536 (64 MiB); when full, stages
    /// wait (bounded by `checkpoint.flush_timeout`) instead of growing memory.
    pub produce_queue_kbytes_max: u32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap: String::new(),
            group_id: "vigil".into(),
            properties: BTreeMap::new(),
            embedded_partitions: 4,
            poll_timeout: Duration::from_millis(100),
            prefetch_kbytes_max: 8192,
            produce_queue_kbytes_max: 65536,
        }
    }
}

/// Wire format of a source topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// One JSON object per record value.
    Json,
}

/// `[[pipeline.sources]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Topic to consume.
    pub topic: String,
    /// Record format. Default `json`.
    #[serde(default = "default_format")]
    pub format: SourceFormat,
}

fn default_format() -> SourceFormat {
    SourceFormat::Json
}

/// JSON type a validated field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// A JSON string.
    String,
    /// Any JSON number.
    Number,
    /// A JSON number without a fractional part.
    Integer,
    /// `true` or `false`.
    Boolean,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::String => "string",
            FieldType::Number => "number",
            FieldType::Integer => "integer",
            FieldType::Boolean => "boolean",
        })
    }
}

/// `[[pipeline.fields]]`: one validation rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// Top-level JSON field name.
    pub name: String,
    /// Required JSON type.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Whether a record without the field is invalid. Default true.
    #[serde(default = "default_true")]
    pub required: bool,
}

fn default_true() -> bool {
    true
}

/// `[pipeline.window]`: per-key tumbling event-time windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WindowConfig {
    /// Window length. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub size: Duration,
    /// Field whose value keys the windows. Default `user`.
    pub key_field: String,
    /// Numeric field aggregated as count/sum/min/max. Default `amount`.
    pub value_field: String,
    /// Event-time field, epoch milliseconds. Default `ts`.
    pub time_field: String,
    /// How far event time may run backwards within a partition before a record is late.
    /// Windows close this much later; late records go to the DLQ. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// A partition that delivers nothing for this long stops holding back the watermark.
    /// Default `10s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            size: Duration::from_secs(10),
            key_field: "user".into(),
            value_field: "amount".into(),
            time_field: "ts".into(),
            allowed_lateness: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// `[pipeline]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineConfig {
    /// Source topics. Default one: `events` (json).
    pub sources: Vec<SourceConfig>,
    /// Validation rules applied to every record. Default: `user` string, `amount` number,
    /// `ts` integer, all required.
    pub fields: Vec<FieldRule>,
    /// Window settings.
    pub window: WindowConfig,
    /// Topic closed windows are written to. Default `vigil-output`.
    pub sink_topic: String,
    /// Dead-letter topic for invalid and late records. Default `vigil-dlq`.
    pub dlq_topic: String,
    /// Most records one poll hands downstream. Default 500; larger batches amortise
    /// per-message overhead, smaller ones lower latency.
    pub batch_max_records: usize,
    /// Batches allowed in flight between Ingest and Sink (credits). Ingest pauses its
    /// partitions when they run out, which bounds memory under any backlog. Default 8.
    pub inflight_batches_max: usize,
    /// How long Ingest waits without credits before pausing its partitions. Pausing makes
    /// librdkafka drop its prefetched data (a refetch on resume), so short stalls only stop
    /// polling. Default `250ms`.
    #[serde(with = "humantime_serde")]
    pub pause_after: Duration,
    /// Most records per second Ingest reads (0 = unlimited, the default). Protects
    /// downstream systems during backfills and replays.
    pub max_records_per_sec: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            sources: vec![SourceConfig { topic: "events".into(), format: SourceFormat::Json }],
            fields: vec![
                FieldRule { name: "user".into(), kind: FieldType::String, required: true },
                FieldRule { name: "amount".into(), kind: FieldType::Number, required: true },
                FieldRule { name: "ts".into(), kind: FieldType::Integer, required: true },
            ],
            window: WindowConfig::default(),
            sink_topic: "vigil-output".into(),
            dlq_topic: "vigil-dlq".into(),
            batch_max_records: 500,
            inflight_batches_max: 8,
            pause_after: Duration::from_millis(250),
            max_records_per_sec: 0,
        }
    }
}

/// `[checkpoint]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointConfig {
    /// Time between checkpoints. Default `2s`; shorter means less replay after a crash,
    /// longer means fewer producer flushes and RocksDB writes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Completed checkpoints kept for `vigil checkpoint list`. Default 10.
    pub retained: usize,
    /// Longest wait for outputs to be acknowledged by Kafka before a checkpoint fails.
    /// Default `30s`.
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(2), retained: 10, flush_timeout: Duration::from_secs(30) }
    }
}

/// `[supervision]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SupervisionConfig {
    /// Restarts allowed within `restart_window` before a supervisor gives up and escalates
    /// to its parent. Default 5.
    pub max_restarts: u32,
    /// Window for `max_restarts`. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// First restart delay; doubles per consecutive restart, with ±25 % jitter. Default `100ms`.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Cap of the restart delay. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// How long each child gets to stop gracefully before it is killed. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            restart_window: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[observability]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObservabilityConfig {
    /// Prometheus `/metrics` listener. Default `127.0.0.1:9898`.
    pub metrics_addr: String,
    /// Admin JSON API listener (`/tree`, `/status`, `/healthz`). Default `127.0.0.1:9899`.
    pub admin_addr: String,
    /// How often `vigil run` prints a status line. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            metrics_addr: "127.0.0.1:9898".into(),
            admin_addr: "127.0.0.1:9899".into(),
            status_interval: Duration::from_secs(5),
            log_format: LogFormat::Text,
        }
    }
}

/// `[generator]`: the synthetic producer the embedded default runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeneratorConfig {
    /// Run the generator inside the node. Default: true only when `kafka.bootstrap` is
    /// empty (the embedded default); set explicitly to override.
    pub enabled: Option<bool>,
    /// Records per second. Default 200, well inside what the pipeline sustains and what
    /// the mock cluster retains (about 5 MiB per partition).
    pub rate: u32,
    /// Fraction of deliberately malformed records, 0.0..=1.0. Default 0.02.
    pub bad_ratio: f64,
    /// Seed of the deterministic event stream. Default 42.
    pub seed: u64,
    /// Distinct users (window keys). Default 50.
    pub users: u32,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self { enabled: None, rate: 200, bad_ratio: 0.02, seed: 42, users: 50 }
    }
}

impl Config {
    /// Load from an optional TOML file, then apply `VIGIL_*` overrides from `env`, then
    /// validate. All problems are reported together.
    ///
    /// # Errors
    /// [`ConfigErrors`] listing every syntax, unknown-key, type and semantic problem.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| single(&p.display().to_string(), format!("cannot read: {e}")))?,
            None => String::new(),
        };
        Self::from_toml_str(&text, env)
    }

    /// Parse TOML text, apply environment overrides and validate.
    ///
    /// # Errors
    /// [`ConfigErrors`] listing every problem found.
    pub fn from_toml_str(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut value: toml::Value = match text.parse::<toml::Table>() {
            Ok(t) => toml::Value::Table(t),
            Err(e) => return Err(single("<file>", e.to_string().trim().replace('\n', " "))),
        };
        let mut errors = Vec::new();
        apply_env(&mut value, env, &mut errors);
        let (config, mut de_errors) = deserialize_collecting(value);
        errors.append(&mut de_errors);
        errors.extend(config.validate());
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors { errors })
        }
    }

    /// Check relations between fields; returns every problem found.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut err = |path: &str, msg: &str| errs.push(FieldError { path: path.into(), message: msg.into() });
        if self.node.id.trim().is_empty() {
            err("node.id", "must not be empty");
        }
        if self.node.data_dir.as_os_str().is_empty() {
            err("node.data_dir", "must not be empty");
        }
        if self.kafka.group_id.trim().is_empty() {
            err("kafka.group_id", "must not be empty");
        }
        if !(1..=1024).contains(&self.kafka.embedded_partitions) {
            err("kafka.embedded_partitions", "must be between 1 and 1024");
        }
        if !(1..=2_097_151).contains(&self.kafka.prefetch_kbytes_max) {
            err("kafka.prefetch_kbytes_max", "must be between 1 and 2097151");
        }
        if !(1..=2_147_483_647).contains(&self.kafka.produce_queue_kbytes_max) {
            err("kafka.produce_queue_kbytes_max", "must be between 1 and 2147483647");
        }
        if self.kafka.poll_timeout.is_zero() {
            err("kafka.poll_timeout", "must be greater than 0");
        }
        for key in self.kafka.properties.keys() {
            if key == "bootstrap.servers" || key == "group.id" {
                err(&format!("kafka.properties.\"{key}\""), "set kafka.bootstrap / kafka.group_id instead");
            }
        }
        let p = &self.pipeline;
        if p.sources.is_empty() {
            err("pipeline.sources", "at least one source is required");
        }
        for (i, s) in p.sources.iter().enumerate() {
            check_topic(&mut err, &format!("pipeline.sources[{i}].topic"), &s.topic);
            if s.topic == p.sink_topic || s.topic == p.dlq_topic {
                err(&format!("pipeline.sources[{i}].topic"), "must differ from pipeline.sink_topic and pipeline.dlq_topic");
            }
        }
        check_topic(&mut err, "pipeline.sink_topic", &p.sink_topic);
        check_topic(&mut err, "pipeline.dlq_topic", &p.dlq_topic);
        if p.sink_topic == p.dlq_topic && !p.sink_topic.is_empty() {
            err("pipeline.dlq_topic", "must differ from pipeline.sink_topic");
        }
        for (i, f) in p.fields.iter().enumerate() {
            if f.name.trim().is_empty() {
                err(&format!("pipeline.fields[{i}].name"), "must not be empty");
            }
        }
        let w = &p.window;
        if w.size.is_zero() {
            err("pipeline.window.size", "must be greater than 0");
        }
        for (path, name) in
            [("pipeline.window.key_field", &w.key_field), ("pipeline.window.value_field", &w.value_field), ("pipeline.window.time_field", &w.time_field)]
        {
            if name.trim().is_empty() {
                err(path, "must not be empty");
            }
        }
        if w.idle_timeout.is_zero() {
            err("pipeline.window.idle_timeout", "must be greater than 0");
        }
        if p.batch_max_records == 0 || p.batch_max_records > 100_000 {
            err("pipeline.batch_max_records", "must be between 1 and 100000");
        }
        if p.inflight_batches_max == 0 || p.inflight_batches_max > 1024 {
            err("pipeline.inflight_batches_max", "must be between 1 and 1024");
        }
        if self.checkpoint.interval < Duration::from_millis(10) {
            err("checkpoint.interval", "must be at least 10ms");
        }
        if self.checkpoint.retained == 0 {
            err("checkpoint.retained", "must be at least 1");
        }
        if self.checkpoint.flush_timeout.is_zero() {
            err("checkpoint.flush_timeout", "must be greater than 0");
        }
        let s = &self.supervision;
        if s.restart_window.is_zero() {
            err("supervision.restart_window", "must be greater than 0");
        }
        if s.backoff_initial > s.backoff_max {
            err("supervision.backoff_initial", "must not exceed supervision.backoff_max");
        }
        if s.shutdown_timeout.is_zero() {
            err("supervision.shutdown_timeout", "must be greater than 0");
        }
        let o = &self.observability;
        for (path, addr) in [("observability.metrics_addr", &o.metrics_addr), ("observability.admin_addr", &o.admin_addr)] {
            if addr.parse::<SocketAddr>().is_err() {
                err(path, &format!("`{addr}` is not an address like 127.0.0.1:9898"));
            }
        }
        if o.metrics_addr == o.admin_addr && o.metrics_addr.parse::<SocketAddr>().map(|a| a.port() != 0).unwrap_or(false) {
            err("observability.admin_addr", "must differ from observability.metrics_addr");
        }
        if o.status_interval.is_zero() {
            err("observability.status_interval", "must be greater than 0");
        }
        let g = &self.generator;
        if !(0.0..=1.0).contains(&g.bad_ratio) {
            err("generator.bad_ratio", "must be between 0.0 and 1.0");
        }
        if g.users == 0 {
            err("generator.users", "must be at least 1");
        }
        errs
    }

    /// Whether this node runs the in-process mock cluster.
    pub fn embedded_kafka(&self) -> bool {
        self.kafka.bootstrap.trim().is_empty()
    }

    /// Whether this node runs the synthetic generator.
    pub fn generator_enabled(&self) -> bool {
        self.generator.enabled.unwrap_or_else(|| self.embedded_kafka())
    }

    /// A complete, commented default configuration file (`vigil config default`).
    pub fn default_toml() -> &'static str {
        include_str!("default.toml")
    }
}

fn check_topic(err: &mut impl FnMut(&str, &str), path: &str, topic: &str) {
    if topic.trim().is_empty() {
        err(path, "must not be empty");
    } else if topic.len() > 249 || !topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        err(path, &format!("`{topic}` is not a valid Kafka topic name (ASCII letters, digits, '.', '_', '-'; at most 249)"));
    }
}

fn single(path: &str, message: String) -> ConfigErrors {
    ConfigErrors { errors: vec![FieldError { path: path.into(), message }] }
}

/// Bound on how many type errors are collected before giving up (each costs one re-parse).
const TYPE_ERRORS_MAX: usize = 32;

/// Deserialize, collecting unknown keys and type errors. A field with a type error is
/// removed and parsing retried, so every bad field is reported, not only the first.
fn deserialize_collecting(mut value: toml::Value) -> (Config, Vec<FieldError>) {
    let mut errors = Vec::new();
    for _ in 0..TYPE_ERRORS_MAX {
        let mut unknown: Vec<String> = Vec::new();
        let mut on_unknown = |p: serde_ignored::Path<'_>| unknown.push(p.to_string());
        let de = serde_ignored::Deserializer::new(value.clone(), &mut on_unknown);
        match serde_path_to_error::deserialize::<_, Config>(de) {
            Ok(cfg) => {
                errors.extend(unknown.into_iter().map(|p| FieldError { path: p, message: "unknown key".into() }));
                return (cfg, errors);
            }
            Err(e) => {
                let path = e.path().to_string();
                // toml's messages span lines (`...\nin `path``); `config check` prints one per line.
                let msg = e.inner().to_string().split_whitespace().collect::<Vec<_>>().join(" ");
                // serde's deny_unknown_fields reports unknown keys in nested tables as errors.
                let (path, msg) = match msg.strip_prefix("unknown field `") {
                    Some(rest) => {
                        let key = rest.split('`').next().unwrap_or_default().to_string();
                        let full = if path.ends_with(&key) {
                            path.clone()
                        } else if path == "." {
                            key.clone()
                        } else {
                            format!("{path}.{key}")
                        };
                        if !remove_path(&mut value, &full) {
                            errors.push(FieldError { path: full, message: "unknown key".into() });
                            break;
                        }
                        (full, "unknown key".to_string())
                    }
                    None => {
                        if !remove_path(&mut value, &path) {
                            errors.push(FieldError { path, message: msg });
                            break;
                        }
                        (path, msg)
                    }
                };
                errors.push(FieldError { path, message: msg });
            }
        }
    }
    // Could not recover a config; report with defaults so validation still runs.
    (Config::default(), errors)
}

/// Remove the value at a serde_path_to_error style path (`a.b[2].c`). Returns false if
/// nothing was removed.
fn remove_path(value: &mut toml::Value, path: &str) -> bool {
    let mut segs: Vec<Seg> = Vec::new();
    for part in path.split('.') {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            segs.push(Seg::Key(name.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            match idx.trim_end_matches(']').parse() {
                Ok(i) => segs.push(Seg::Index(i)),
                Err(_) => return false,
            }
        }
    }
    let Some((last, parents)) = segs.split_last() else { return false };
    let mut cur = value;
    for s in parents {
        cur = match (s, cur) {
            (Seg::Key(k), toml::Value::Table(t)) => match t.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), toml::Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Seg::Key(k), toml::Value::Table(t)) => t.remove(k).is_some(),
        // An array element with a bad field: drop the whole element's bad key is not
        // addressable, so drop the element itself.
        (Seg::Index(i), toml::Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

enum Seg {
    Key(String),
    Index(usize),
}

/// Apply `VIGIL_A__B=value` overrides onto the parsed TOML tree.
fn apply_env(value: &mut toml::Value, env: impl IntoIterator<Item = (String, String)>, errors: &mut Vec<FieldError>) {
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("VIGIL_") else { continue };
        // VIGIL_LOG and friends configure the binary, not the node config.
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|s| s.is_empty()) {
            errors.push(FieldError { path: format!("env {k}"), message: "empty path segment".into() });
            continue;
        }
        let parsed = format!("x = {v}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("x")).unwrap_or_else(|| toml::Value::String(v.clone()));
        let mut cur = &mut *value;
        let mut ok = true;
        for seg in &path[..path.len() - 1] {
            let toml::Value::Table(t) = cur else {
                ok = false;
                break;
            };
            cur = t.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        }
        match (ok, cur) {
            (true, toml::Value::Table(t)) => {
                t.insert(path[path.len() - 1].clone(), parsed);
            }
            _ => errors.push(FieldError { path: format!("env {k}"), message: "does not name a configuration table".into() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn empty_file_is_the_valid_default() {
        let c = Config::from_toml_str("", no_env()).unwrap();
        assert_eq!(c, Config::default());
        assert!(c.embedded_kafka());
        assert!(c.generator_enabled());
    }

    #[test]
    fn default_toml_parses_to_default() {
        let c = Config::from_toml_str(Config::default_toml(), no_env()).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn three_mistakes_are_all_reported_with_paths() {
        let text = r#"
            [[pipeline.sources]]
            topic = ""
            [checkpoint]
            interval = "soon"
            [observability]
            metrics_adr = "127.0.0.1:1"
        "#;
        let e = Config::from_toml_str(text, no_env()).unwrap_err();
        let paths: Vec<_> = e.errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"pipeline.sources[0].topic"), "{e}");
        assert!(paths.contains(&"checkpoint.interval"), "{e}");
        assert!(paths.contains(&"observability.metrics_adr"), "{e}");
        assert_eq!(e.errors.len(), 3, "{e}");
        assert!(e.errors.iter().all(|fe| !fe.message.contains('\n')), "{e}");
    }

    #[test]
    fn unknown_key_in_array_table_is_reported() {
        let text = "[[pipeline.sources]]\ntopic = \"a\"\ntopik = \"b\"\n";
        let e = Config::from_toml_str(text, no_env()).unwrap_err();
        assert_eq!(e.errors[0].path, "pipeline.sources[0].topik", "{e}");
    }

    #[test]
    fn syntax_error_is_reported() {
        let e = Config::from_toml_str("[node\nid=1", no_env()).unwrap_err();
        assert_eq!(e.errors[0].path, "<file>");
    }

    #[test]
    fn env_overrides_apply_and_are_validated() {
        let env = vec![
            ("VIGIL_OBSERVABILITY__METRICS_ADDR".to_string(), "127.0.0.1:1234".to_string()),
            ("VIGIL_PIPELINE__BATCH_MAX_RECORDS".to_string(), "64".to_string()),
            ("VIGIL_LOG".to_string(), "debug".to_string()),
        ];
        let c = Config::from_toml_str("", env).unwrap();
        assert_eq!(c.observability.metrics_addr, "127.0.0.1:1234");
        assert_eq!(c.pipeline.batch_max_records, 64);
        let bad = vec![("VIGIL_PIPELINE__BATCH_MAX_RECORDS".to_string(), "0".to_string())];
        let e = Config::from_toml_str("", bad).unwrap_err();
        assert_eq!(e.errors[0].path, "pipeline.batch_max_records");
    }

    proptest::proptest! {
        /// Whatever the input, loading never panics and every problem names a path.
        #[test]
        fn arbitrary_input_yields_config_or_located_errors(text in "(\\[[a-z.]{1,12}\\]\n|[a-z_]{1,12} = (\"[a-z0-9:.]{0,10}\"|[0-9]{1,4}|true)\n){0,12}") {
            if let Err(e) = Config::from_toml_str(&text, Vec::new()) {
                proptest::prop_assert!(!e.errors.is_empty());
                for fe in &e.errors {
                    proptest::prop_assert!(!fe.path.is_empty() && !fe.message.is_empty(), "{fe:?}");
                }
            }
        }
    }

    #[test]
    fn semantic_relations_are_checked() {
        let text = "[supervision]\nbackoff_initial = \"10s\"\nbackoff_max = \"1s\"\n[pipeline]\nsink_topic = \"x\"\ndlq_topic = \"x\"\n";
        let e = Config::from_toml_str(text, no_env()).unwrap_err();
        let paths: Vec<_> = e.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["pipeline.dlq_topic", "supervision.backoff_initial"], "{e}");
    }
}
