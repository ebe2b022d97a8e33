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

/// `TryFrom<String>` (by `FromStr`) and `Into<String>` (by `Display`) for a type that
/// serialises as its text form (`#[serde(try_from = "String", into = "String")]`).
macro_rules! serde_via_string {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = String;

            fn try_from(s: String) -> std::result::Result<Self, String> {
                s.parse()
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    };
}
pub(crate) use serde_via_string;

mod alerts;
mod analytics;
mod incidents;
mod kafka_security;
mod lineage;
mod security;
pub use alerts::*;
pub use analytics::*;
pub use incidents::*;
pub use kafka_security::*;
pub use lineage::*;
pub use security::*;

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
    /// The built-in schema registry (or an external one), lint rules and lifecycle policy.
    pub schema_registry: SchemaRegistryConfig,
    /// Data-quality measurement and anomaly detection.
    pub quality: QualityConfig,
    /// Alert rules, silences' defaults, inhibition, receivers and routes.
    pub alerts: AlertsConfig,
    /// Incidents: opening from alerts, grouping, escalation, the operational journal.
    pub incidents: IncidentsConfig,
    /// Record-level lineage, its retention, and the OpenLineage export.
    pub lineage: LineageConfig,
    /// TLS, authentication, roles, the audit log and request limits of the HTTP listeners.
    pub security: SecurityConfig,
    /// The file this configuration was loaded from, if any (alert rules reload from it).
    #[serde(skip)]
    pub loaded_from: Option<PathBuf>,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Node id, used in logs, lineage and output headers. Default `vigil-1`.
    pub id: String,
    /// Directory of the node's RocksDB instance. Default `./vigil-data`.
    pub data_dir: PathBuf,
    /// Resident memory the node keeps under (`"512MiB"`, `"2GiB"` or bytes). Default 512 MiB.
    /// Kafka's prefetch and produce queue must fit in half of it (checked at start); above
    /// 70 % of it Ingest slows to one batch per 100 ms until the node is back under 60 %.
    pub memory_limit: ByteSize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { id: "vigil-1".into(), data_dir: PathBuf::from("./vigil-data"), memory_limit: ByteSize(512 << 20) }
    }
}

/// A size in bytes, written as a number of bytes or with a unit (`KiB`, `MiB`, `GiB`, or
/// `KB`, `MB`, `GB` as powers of ten).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parse `512MiB`, `1.5 GiB`, `100000` ...
    ///
    /// # Errors
    /// What is wrong with the text.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("`{text}` is not a size (e.g. \"512MiB\")"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            other => return Err(format!("unknown size unit `{other}` in `{text}` (use KiB, MiB, GiB, KB, MB or GB)")),
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            b if b >= 1 << 30 && b % (1 << 30) == 0 => write!(f, "{}GiB", b >> 30),
            b if b >= 1 << 20 && b % (1 << 20) == 0 => write!(f, "{}MiB", b >> 20),
            b if b >= 1 << 10 && b % (1 << 10) == 0 => write!(f, "{}KiB", b >> 10),
            b => write!(f, "{b}"),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
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
    /// How long a fetch waits at the broker when there is no data (`fetch.wait.max.ms`).
    /// Default: 100 ms with brokers (which answer as soon as data arrives), 10 ms with the
    /// embedded mock cluster (which answers an empty fetch only after the whole wait).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub fetch_wait: Option<Duration>,
    /// Most data librdkafka prefetches for the node, KiB: half as the consumer queue
    /// (`queued.max.messages.kbytes`), half for a fetch response landing on a full queue.
    /// Default 8192 (8 MiB); bounds memory while Ingest waits for credits.
    pub prefetch_kbytes_max: u32,
    /// Most data waiting in a producer for Kafka's acknowledgement
    /// (`queue.buffering.max.kbytes`), KiB. Default 65536 (64 MiB); when full, stages
    /// wait (bounded by `checkpoint.flush_timeout`) instead of growing memory.
    pub produce_queue_kbytes_max: u32,
    /// TLS and SASL of every client (consumer, producers, metadata and admin clients).
    pub security: KafkaSecurityConfig,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap: String::new(),
            group_id: "vigil".into(),
            properties: BTreeMap::new(),
            embedded_partitions: 4,
            poll_timeout: Duration::from_millis(100),
            fetch_wait: None,
            prefetch_kbytes_max: 8192,
            produce_queue_kbytes_max: 65536,
            security: KafkaSecurityConfig::default(),
        }
    }
}

/// Wire format of a source topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// One plain JSON object per record value, no schema.
    Json,
    /// Confluent wire format (magic byte 0, 4-byte schema id) with an Avro payload.
    Avro,
    /// Confluent wire format with a JSON payload checked against a JSON Schema.
    JsonSchema,
}

impl SourceFormat {
    /// Whether records carry a registry schema id (Confluent framing).
    pub fn framed(self) -> bool {
        !matches!(self, SourceFormat::Json)
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceFormat::Json => "json",
            SourceFormat::Avro => "avro",
            SourceFormat::JsonSchema => "json_schema",
        })
    }
}

/// `[[pipeline.sources]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Topic to consume.
    pub topic: String,
    /// Record format: `json` (plain, no schema), `avro` or `json_schema` (Confluent framing,
    /// checked against the schema registry). Default `avro`.
    #[serde(default = "default_format")]
    pub format: SourceFormat,
    /// Registry subject the records' schema ids must belong to. Default `<topic>-value`
    /// (Confluent's TopicNameStrategy). Ignored for `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Require HMAC-signed records from known producers; others go to
    /// `pipeline.quarantine_topic`. Default none (no check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningConfig>,
}

impl SourceConfig {
    /// A source with the default format and subject.
    pub fn new(topic: impl Into<String>, format: SourceFormat) -> Self {
        Self { topic: topic.into(), format, subject: None, signing: None }
    }

    /// The registry subject of this source's values.
    pub fn subject(&self) -> String {
        self.subject.clone().unwrap_or_else(|| format!("{}-value", self.topic))
    }
}

fn default_format() -> SourceFormat {
    SourceFormat::Avro
}

/// Format of the window results written to `pipeline.sink_topic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkFormat {
    /// A JSON object per window.
    Json,
    /// Confluent-framed Avro, schema registered under `<sink_topic>-value`.
    Avro,
}

/// Type a validated field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// A string.
    #[default]
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

/// `[[pipeline.fields]]`: one validation rule, applied to the decoded record whatever its
/// format. `required` and `type` failures have the DLQ reasons `missing_field` and
/// `wrong_type`; the value checks (`min`/`max`, `one_of`, `pattern`, `max_length`) have
/// `rule:<rule name>`, the rule name defaulting to `<field>.<check>` (e.g. `amount.range`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// Top-level field name.
    pub name: String,
    /// Required type.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Whether a record without the field (or with null) is invalid. Default true.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Name used in the DLQ reason `rule:<rule>`. Default `<field>.<check>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Smallest allowed numeric value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed numeric value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Allowed values (strings compare as text, numbers and booleans by their text form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    /// Regular expression a string value must match (Rust `regex` syntax, unanchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Longest allowed string, in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
}

impl FieldRule {
    /// A rule with only a name, type and `required = true`.
    pub fn new(name: impl Into<String>, kind: FieldType) -> Self {
        Self { name: name.into(), kind, required: true, ..Self::default() }
    }
}

fn default_true() -> bool {
    true
}

/// `[pipeline]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineConfig {
    /// Name of the pipeline: the OpenLineage job is `<node.id>/<name>`. Default `windows`.
    pub name: String,
    /// Source topics. Default one: `events` (avro, subject `events-value`).
    pub sources: Vec<SourceConfig>,
    /// Validation rules applied to every decoded record. Default: `user` string, `amount`
    /// number ≥ 0, `ts` integer, all required.
    pub fields: Vec<FieldRule>,
    /// Event time and watermarks, shared by every aggregation.
    pub event_time: EventTimeConfig,
    /// Named windowed aggregations. Default: three (tumbling, hopping, session) over the
    /// generated events.
    pub aggregations: Vec<AggregationConfig>,
    /// The old single-window form; only kept to explain its replacement.
    #[serde(default, skip_serializing)]
    pub window: Option<toml::Value>,
    /// Default output topic of aggregations. Default `vigil-output`.
    pub sink_topic: String,
    /// Dead-letter topic for invalid records (and late ones, unless `late_topic` is set).
    /// Default `vigil-dlq`.
    pub dlq_topic: String,
    /// Security quarantine: records of signing sources that are unsigned, forged, replayed
    /// or from unknown producers, with the reason and the claimed producer. Default
    /// `vigil-quarantine`.
    pub quarantine_topic: String,
    /// Topic for records later than an aggregation's allowed lateness. Default: none, they
    /// go to `dlq_topic` with reason `late`.
    pub late_topic: Option<String>,
    /// Default format of aggregation results: `json` (default) or `avro` (Confluent
    /// framing, schema registered under `<topic>-value` at start).
    pub sink_format: SinkFormat,
    /// Most records one poll hands downstream. Default 2000: with the default 8 credits that
    /// keeps enough records in flight that no stage waits for work (500 left the cores 10-15 %
    /// idle and cost ~25 % more CPU per record; see docs/performance.md). A poll takes only
    /// what is buffered, so below saturation batches stay small and latency low.
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
    /// Most windows per second Sink writes (0 = unlimited, the default). Protects a slow
    /// downstream; credits then slow Ingest down to match.
    pub max_outputs_per_sec: u32,
    /// Validate and Process shards (0, the default: one per core). Validate shard `i` reads
    /// the source partitions whose stable hash falls to it; Process shard `j` owns the group
    /// keys whose hash falls to it, with their windows. Checkpoint barriers are aligned
    /// across shards.
    pub shards: usize,
}

impl PipelineConfig {
    /// Shards in force: `shards`, or one per core when 0.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(64),
            n => n,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            name: "windows".into(),
            sources: vec![SourceConfig::new("events", SourceFormat::Avro)],
            fields: vec![
                FieldRule::new("user", FieldType::String),
                FieldRule { min: Some(0.0), ..FieldRule::new("amount", FieldType::Number) },
                FieldRule::new("ts", FieldType::Integer),
            ],
            event_time: EventTimeConfig::default(),
            aggregations: default_aggregations(),
            window: None,
            sink_topic: "vigil-output".into(),
            dlq_topic: "vigil-dlq".into(),
            quarantine_topic: "vigil-quarantine".into(),
            late_topic: None,
            sink_format: SinkFormat::Json,
            batch_max_records: 2000,
            inflight_batches_max: 8,
            pause_after: Duration::from_millis(250),
            max_records_per_sec: 0,
            max_outputs_per_sec: 0,
            shards: 0,
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
    /// Resume from a checkpoint taken against another Kafka cluster (its offsets are then
    /// applied to this one as they are). Default false: the node refuses to start.
    pub allow_cluster_change: bool,
    /// Window outputs are held until the checkpoint that produced them commits (then
    /// published, so a crash never leaves outputs of a run it does not repeat); held beyond
    /// this size, the next checkpoint is taken early and Sink keeps its credits until they
    /// are published. Unset: a sixteenth of `node.memory_limit`, at most 16 MiB (see
    /// [`Config::held_outputs_max`]).
    pub held_outputs_max: Option<ByteSize>,
    /// Windows changed (opened, updated, closed) since the last checkpoint beyond which
    /// Ingest waits for the next one; past half of it that one is taken early. A checkpoint
    /// briefly takes memory in proportion to them (about half a KiB each with lineage), so
    /// this bounds it. Unset: one per 8 KiB of `node.memory_limit` (65536 at 512 MiB; see
    /// [`Config::changes_max`]).
    pub changes_max: Option<u64>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            retained: 10,
            flush_timeout: Duration::from_secs(30),
            allow_cluster_change: false,
            held_outputs_max: None,
            changes_max: None,
        }
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

/// Compatibility level of a registry subject, with Confluent Schema Registry's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// No checks.
    None,
    /// The new schema can read data written with the latest version.
    #[default]
    Backward,
    /// The new schema can read data written with every version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema.
    Forward,
    /// Every version can read data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every version.
    FullTransitive,
}

impl Compatibility {
    /// Every level, in Confluent's order.
    pub const ALL: [Compatibility; 7] = [
        Compatibility::None,
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
    ];

    /// Confluent's spelling (`BACKWARD_TRANSITIVE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Parse Confluent's spelling, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether new schemas must read old data.
    pub fn backward(self) -> bool {
        matches!(self, Compatibility::Backward | Compatibility::BackwardTransitive | Compatibility::Full | Compatibility::FullTransitive)
    }

    /// Whether old schemas must read new data.
    pub fn forward(self) -> bool {
        matches!(self, Compatibility::Forward | Compatibility::ForwardTransitive | Compatibility::Full | Compatibility::FullTransitive)
    }

    /// Whether every version is checked, not only the latest.
    pub fn transitive(self) -> bool {
        matches!(self, Compatibility::BackwardTransitive | Compatibility::ForwardTransitive | Compatibility::FullTransitive)
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a lint rule does when a registration breaks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LintLevel {
    /// Not checked.
    Off,
    /// Registered, with a warning in the response and the audit log.
    #[default]
    Warn,
    /// Refused with HTTP 422.
    Block,
}

/// Field naming convention a lint can enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// Any names.
    #[default]
    Any,
    /// `lower_snake_case`.
    SnakeCase,
    /// `lowerCamelCase`.
    CamelCase,
}

/// Lint rules run on every registration (`[schema_registry.lint]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LintRules {
    /// Fields added by a new version need a default (Avro) when the subject's level is
    /// BACKWARD* or FULL*. Default `warn`.
    pub new_fields_need_defaults: LintLevel,
    /// Every field has a `doc` (Avro) or `description` (JSON Schema). Default `off`.
    pub field_docs: LintLevel,
    /// Field naming convention: `any` (default), `snake_case` or `camel_case`.
    pub naming: Naming,
    /// What breaking `naming` does. Default `warn`.
    pub naming_level: LintLevel,
    /// A field that was required (no default / in `required`) is not removed. Default `warn`.
    pub no_removed_required: LintLevel,
}

impl Default for LintRules {
    fn default() -> Self {
        Self {
            new_fields_need_defaults: LintLevel::Warn,
            field_docs: LintLevel::Off,
            naming: Naming::Any,
            naming_level: LintLevel::Warn,
            no_removed_required: LintLevel::Warn,
        }
    }
}

/// `[schema_registry.lint]`: rules for every subject, with per-subject replacements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LintConfig {
    /// See [`LintRules::new_fields_need_defaults`]. Default `warn`.
    pub new_fields_need_defaults: LintLevel,
    /// See [`LintRules::field_docs`]. Default `off`.
    pub field_docs: LintLevel,
    /// See [`LintRules::naming`]. Default `any`.
    pub naming: Naming,
    /// See [`LintRules::naming_level`]. Default `warn`.
    pub naming_level: LintLevel,
    /// See [`LintRules::no_removed_required`]. Default `warn`.
    pub no_removed_required: LintLevel,
    /// Per-subject rules (`[schema_registry.lint.subjects."orders-value"]`), replacing the
    /// global ones for that subject.
    pub subjects: BTreeMap<String, LintRules>,
}

impl Default for LintConfig {
    fn default() -> Self {
        let r = LintRules::default();
        Self {
            new_fields_need_defaults: r.new_fields_need_defaults,
            field_docs: r.field_docs,
            naming: r.naming,
            naming_level: r.naming_level,
            no_removed_required: r.no_removed_required,
            subjects: BTreeMap::new(),
        }
    }
}

impl LintConfig {
    /// The rules that apply to `subject`.
    pub fn for_subject(&self, subject: &str) -> LintRules {
        self.subjects.get(subject).cloned().unwrap_or(LintRules {
            new_fields_need_defaults: self.new_fields_need_defaults,
            field_docs: self.field_docs,
            naming: self.naming,
            naming_level: self.naming_level,
            no_removed_required: self.no_removed_required,
        })
    }
}

/// `[schema_registry.lifecycle]`: automatic archiving of deprecated versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LifecyclePolicy {
    /// Archive a deprecated version this long after its deprecation (e.g. `30d`). Unset
    /// (default): never automatically.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub archive_after_deprecated: Option<Duration>,
    /// Archive a deprecated version that has seen no record for this long. Unset
    /// (default): never automatically.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub archive_after_idle: Option<Duration>,
}

/// `[schema_registry]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchemaRegistryConfig {
    /// External Confluent-compatible registry (`http://host:8081`). Empty (default): the
    /// node's built-in registry, stored in its RocksDB and served on
    /// `observability.admin_addr` with Confluent's REST API.
    pub url: String,
    /// Compatibility level of subjects without their own. Default `BACKWARD`.
    pub default_compatibility: Compatibility,
    /// Reject Avro schemas whose field defaults do not match their types (a union's default
    /// must match its first branch). Default false, as Confluent's `avro.validate.defaults`.
    pub avro_validate_defaults: bool,
    /// Largest accepted REST request body, bytes. Default 1048576 (1 MiB); larger gets 413.
    pub max_request_bytes: usize,
    /// Most schemas (distinct ids) the built-in registry holds. Default 100000.
    pub max_schemas: usize,
    /// Most versions one subject may have. Default 10000.
    pub max_versions_per_subject: usize,
    /// Schemas cached from an external registry (by id). Default 10000.
    pub cache_max: usize,
    /// Timeout of one request to an external registry. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How often per-version usage (records, first/last seen) is written to the store.
    /// Default `10s`.
    #[serde(with = "humantime_serde")]
    pub usage_flush_interval: Duration,
    /// Lint rules run on registration.
    pub lint: LintConfig,
    /// Automatic archiving policy.
    pub lifecycle: LifecyclePolicy,
}

impl Default for SchemaRegistryConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            default_compatibility: Compatibility::Backward,
            avro_validate_defaults: false,
            max_request_bytes: 1 << 20,
            max_schemas: 100_000,
            max_versions_per_subject: 10_000,
            cache_max: 10_000,
            request_timeout: Duration::from_secs(10),
            usage_flush_interval: Duration::from_secs(10),
            lint: LintConfig::default(),
            lifecycle: LifecyclePolicy::default(),
        }
    }
}

impl SchemaRegistryConfig {
    /// Whether the node uses an external registry instead of its own.
    pub fn external(&self) -> bool {
        !self.url.trim().is_empty()
    }
}

/// `[quality.anomaly]`: the seasonal baseline every data-quality series is scored against.
///
/// Each series keeps, per time-of-day bucket, an exponentially weighted mean and variance
/// over past seasons; a value scores `z = (value - mean) / std` against its bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Length of the season. Default `1d` (time-of-day patterns).
    #[serde(with = "humantime_serde")]
    pub season: Duration,
    /// Buckets per season. Default 48 (30-minute buckets of a day); more buckets follow the
    /// pattern closer but need more data per bucket.
    pub buckets: u32,
    /// Weight of the newest season in a bucket's baseline, 0..1. Default 0.3: a lasting
    /// change becomes the new normal after a few seasons.
    pub alpha: f64,
    /// |z| above which a value is anomalous. Default 4.0.
    pub z_threshold: f64,
    /// Seasons a bucket must have seen before it may fire. Default 2: nothing fires in the
    /// first two days.
    pub warmup_seasons: u32,
    /// Floor of the standard deviation as a fraction of the mean, so near-constant series do
    /// not fire on tiny changes. Default 0.02.
    pub min_relative_std: f64,
    /// A drop to exactly zero fires (`drop_to_zero`) when the baseline expects at least this.
    /// Default 1.0.
    pub zero_floor: f64,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self { season: Duration::from_secs(86_400), buckets: 48, alpha: 0.3, z_threshold: 4.0, warmup_seasons: 2, min_relative_std: 0.02, zero_floor: 1.0 }
    }
}

/// `[quality]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QualityConfig {
    /// Measure data quality (and evaluate alert rules on it). Default true.
    pub enabled: bool,
    /// Resolution of the measurements: one history slot and one evaluation per interval.
    /// Default `10s`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rates, ratios and quantiles are over this trailing window. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// History kept in RocksDB for baselines and incident timelines. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub history: Duration,
    /// A partition whose position does not advance for this long while it has lag, or while
    /// its broker has been silent (no fetch answered), is stalled. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    /// Record ids the duplicate detector remembers (at least; up to twice). Default 1000000.
    pub dedup_capacity: u64,
    /// False-positive rate of each of its two Bloom filters when full (a check against both
    /// is at most about twice this). Default 0.01.
    pub dedup_fp_rate: f64,
    /// Batch reports waiting for the quality actor; beyond it reports are dropped and
    /// counted (the data path never waits for quality). Default 1024.
    pub queue_max: usize,
    /// Seasonal anomaly baseline.
    pub anomaly: AnomalyConfig,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(10),
            window: Duration::from_secs(30),
            history: Duration::from_secs(86_400),
            stall_after: Duration::from_secs(60),
            dedup_capacity: 1_000_000,
            dedup_fp_rate: 0.01,
            queue_max: 1024,
            anomaly: AnomalyConfig::default(),
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
        let mut c = Self::from_toml_str(&text, env)?;
        c.loaded_from = path.map(Path::to_path_buf);
        Ok(c)
    }

    /// Parse TOML text, apply environment overrides and validate.
    ///
    /// # Errors
    /// [`ConfigErrors`] listing every problem found.
    pub fn from_toml_str(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let value: toml::Value = match text.parse::<toml::Table>() {
            Ok(t) => toml::Value::Table(t),
            Err(e) => return Err(single("<file>", e.to_string().trim().replace('\n', " "))),
        };
        Self::from_value(value, env)
    }

    /// Apply `VIGIL_*` overrides from `env` to a parsed TOML tree, deserialize and validate.
    fn from_value(mut value: toml::Value, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
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

    /// This configuration with `settings` applied: `(path, value)` pairs such as
    /// `("pipeline.batch_max_records", "500")`, a path being the TOML keys joined by `.`
    /// and a value TOML (text that is not TOML counts as a string), as the `VIGIL_*`
    /// overrides apply them. The result is validated like a loaded file.
    ///
    /// # Errors
    /// [`ConfigErrors`] naming each unknown path, mistyped value or broken relation.
    pub fn with_settings<'a>(&self, settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let settings: Vec<(&str, &str)> = settings.into_iter().collect();
        // Every setting is in a section: the overrides take a path without one for a variable
        // of the binary's own (`VIGIL_LOG`) and skip it, which here would ignore a mistake.
        if let Some((path, _)) = settings.iter().find(|(path, _)| !path.contains('.')) {
            return Err(single(path, "not a setting: a path is SECTION.KEY, e.g. pipeline.batch_max_records".into()));
        }
        let value = toml::Value::try_from(self).map_err(|e| single("<config>", format!("cannot represent as TOML: {e}")))?;
        let env = settings.into_iter().map(|(path, v)| (format!("VIGIL_{}", path.replace('.', "__").to_ascii_uppercase()), v.to_string()));
        let mut config = Self::from_value(value, env)?;
        config.loaded_from.clone_from(&self.loaded_from);
        Ok(config)
    }

    /// Bytes of window outputs Sink holds before it asks for an early checkpoint:
    /// `checkpoint.held_outputs_max`, or a sixteenth of `node.memory_limit`, at most 16 MiB.
    pub fn held_outputs_max(&self) -> u64 {
        self.checkpoint.held_outputs_max.map_or((self.node.memory_limit.0 / 16).min(16 << 20), |b| b.0)
    }

    /// Windows changed since the last checkpoint beyond which Ingest waits for the next:
    /// `checkpoint.changes_max`, or one per 8 KiB of `node.memory_limit`.
    pub fn changes_max(&self) -> u64 {
        self.checkpoint.changes_max.unwrap_or(self.node.memory_limit.0 >> 13)
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
            if SECRET_PROPERTIES.contains(&key.as_str()) {
                err(&format!("kafka.properties.\"{key}\""), "secrets go in [kafka.security] (read from a file or environment variable, never printed)");
            }
        }
        self.kafka.security.validate(self.embedded_kafka(), &mut err);
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
        if p.sources.iter().any(|s| s.signing.is_some()) {
            check_topic(&mut err, "pipeline.quarantine_topic", &p.quarantine_topic);
            if [&p.sink_topic, &p.dlq_topic].contains(&&p.quarantine_topic) || p.sources.iter().any(|s| s.topic == p.quarantine_topic) {
                err("pipeline.quarantine_topic", "must differ from the source, sink and DLQ topics");
            }
        }
        for (i, s) in p.sources.iter().enumerate() {
            if let Some(sig) = &s.signing {
                sig.validate(&format!("pipeline.sources[{i}].signing"), &mut err);
            }
            if s.subject.as_deref().is_some_and(|x| x.trim().is_empty()) {
                err(&format!("pipeline.sources[{i}].subject"), "must not be empty (leave it out for `<topic>-value`)");
            }
        }
        for (i, f) in p.fields.iter().enumerate() {
            if f.name.trim().is_empty() {
                err(&format!("pipeline.fields[{i}].name"), "must not be empty");
            }
            if let (Some(lo), Some(hi)) = (f.min, f.max) {
                if lo > hi {
                    err(&format!("pipeline.fields[{i}].min"), "must not exceed max");
                }
            }
            if (f.min.is_some() || f.max.is_some()) && !matches!(f.kind, FieldType::Number | FieldType::Integer) {
                err(&format!("pipeline.fields[{i}].min"), "min/max need type number or integer");
            }
            if (f.pattern.is_some() || f.max_length.is_some()) && f.kind != FieldType::String {
                err(&format!("pipeline.fields[{i}].pattern"), "pattern/max_length need type string");
            }
            if f.one_of.as_ref().is_some_and(|v| v.is_empty()) {
                err(&format!("pipeline.fields[{i}].one_of"), "must list at least one value");
            }
            if f.rule.as_deref().is_some_and(|r| r.trim().is_empty() || r.contains(char::is_whitespace)) {
                err(&format!("pipeline.fields[{i}].rule"), "must be a non-empty name without spaces");
            }
        }
        p.validate_analytics(&mut err);
        if p.batch_max_records == 0 || p.batch_max_records > 100_000 {
            err("pipeline.batch_max_records", "must be between 1 and 100000");
        }
        if p.inflight_batches_max == 0 || p.inflight_batches_max > 1024 {
            err("pipeline.inflight_batches_max", "must be between 1 and 1024");
        }
        if p.shards > 64 {
            err("pipeline.shards", "must be between 0 (one per core) and 64");
        }
        let limit = self.node.memory_limit.0;
        let queues = (u64::from(self.kafka.prefetch_kbytes_max) + u64::from(self.kafka.produce_queue_kbytes_max)) << 10;
        if limit < 16 << 20 {
            err("node.memory_limit", "must be at least 16MiB");
        } else if queues > limit / 2 {
            err(
                "node.memory_limit",
                &format!(
                    "{} is too small for kafka.prefetch_kbytes_max + kafka.produce_queue_kbytes_max = {}: those queues may take at most half of it",
                    self.node.memory_limit,
                    ByteSize(queues)
                ),
            );
        }
        if self.checkpoint.interval < Duration::from_millis(10) {
            err("checkpoint.interval", "must be at least 10ms");
        }
        if let Some(ByteSize(held)) = self.checkpoint.held_outputs_max {
            if held < 64 << 10 || held > limit / 4 {
                err("checkpoint.held_outputs_max", &format!("must be between 64KiB and a quarter of node.memory_limit ({})", ByteSize(limit / 4)));
            }
        }
        if self.checkpoint.changes_max.is_some_and(|n| n < 1_000) {
            err("checkpoint.changes_max", "must be at least 1000");
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
        let r = &self.schema_registry;
        if r.external() && !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
            err("schema_registry.url", &format!("`{}` is not an http:// or https:// URL", r.url));
        }
        if !(1024..=64 << 20).contains(&r.max_request_bytes) {
            err("schema_registry.max_request_bytes", "must be between 1024 and 67108864");
        }
        for (path, v) in [
            ("schema_registry.max_schemas", r.max_schemas),
            ("schema_registry.max_versions_per_subject", r.max_versions_per_subject),
            ("schema_registry.cache_max", r.cache_max),
        ] {
            if v == 0 {
                err(path, "must be at least 1");
            }
        }
        for (path, d) in [("schema_registry.request_timeout", r.request_timeout), ("schema_registry.usage_flush_interval", r.usage_flush_interval)] {
            if d.is_zero() {
                err(path, "must be greater than 0");
            }
        }
        let a = &self.quality.anomaly;
        if a.season < Duration::from_secs(1) {
            err("quality.anomaly.season", "must be at least 1s");
        }
        if !(1..=10_000).contains(&a.buckets) {
            err("quality.anomaly.buckets", "must be between 1 and 10000");
        }
        if !(a.alpha > 0.0 && a.alpha <= 1.0) {
            err("quality.anomaly.alpha", "must be in (0, 1]");
        }
        if a.z_threshold.is_nan() || a.z_threshold <= 0.0 {
            err("quality.anomaly.z_threshold", "must be greater than 0");
        }
        if !(0.0..=1.0).contains(&a.min_relative_std) {
            err("quality.anomaly.min_relative_std", "must be between 0.0 and 1.0");
        }
        let q = &self.quality;
        for (path, d) in [("quality.stall_after", q.stall_after), ("quality.interval", q.interval), ("quality.window", q.window)] {
            if d.is_zero() {
                err(path, "must be greater than 0");
            }
        }
        if self.kafka.fetch_wait.is_some_and(|w| w >= q.stall_after) {
            err("quality.stall_after", "must be longer than kafka.fetch_wait (a broker silent that long stalls its partitions)");
        }
        if q.history < q.interval {
            err("quality.history", "must be at least quality.interval");
        } else if q.history.as_millis() / q.interval.as_millis().max(1) > 1_000_000 {
            err("quality.history", "must hold at most 1000000 intervals");
        }
        if !(q.dedup_fp_rate > 0.0 && q.dedup_fp_rate < 0.5) {
            err("quality.dedup_fp_rate", "must be in (0, 0.5)");
        }
        if q.dedup_capacity == 0 || q.queue_max == 0 {
            err(if q.queue_max == 0 { "quality.queue_max" } else { "quality.dedup_capacity" }, "must be at least 1");
        }
        self.alerts.validate(&mut err);
        self.incidents.validate(&self.alerts, &mut err);
        self.lineage.validate(&mut err);
        self.security.validate(&self.observability.admin_addr, &mut err);
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
                let mut msg = e.inner().to_string().split_whitespace().collect::<Vec<_>>().join(" ");
                // toml appends the (index-less) path, which the error already names.
                if let Some(i) = msg.rfind(" in `").filter(|_| msg.ends_with('`')) {
                    msg.truncate(i);
                }
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
    fn settings_apply_by_path_and_are_validated() {
        let base = Config::default();
        assert_eq!(base.with_settings([]).unwrap(), base, "no settings: the same configuration");
        let c = base.with_settings([("pipeline.batch_max_records", "500"), ("kafka.group_id", "ab")]).unwrap();
        assert_eq!(c.pipeline.batch_max_records, 500);
        assert_eq!(c.kafka.group_id, "ab");
        assert_eq!(Config { pipeline: base.pipeline.clone(), kafka: base.kafka.clone(), ..c.clone() }, base, "nothing else changed");
        let e = base.with_settings([("pipeline.batch_max_records", "0")]).unwrap_err();
        assert_eq!(e.errors[0].path, "pipeline.batch_max_records", "{e}");
        let e = base.with_settings([("pipeline.no_such_field", "1")]).unwrap_err();
        assert!(e.to_string().contains("no_such_field"), "{e}");
        let e = base.with_settings([("log", "debug")]).unwrap_err();
        assert_eq!(e.errors[0].path, "log", "a path without a section is no setting: {e}");
    }

    #[test]
    fn empty_file_is_the_valid_default() {
        let c = Config::from_toml_str("", no_env()).unwrap();
        assert_eq!(c, Config::default());
        assert!(c.embedded_kafka());
        assert!(c.generator_enabled());
    }

    #[test]
    fn sizes_parse_with_units_and_memory_limit_is_checked_against_the_queues() {
        assert_eq!(ByteSize::parse("512MiB"), Ok(ByteSize(512 << 20)));
        assert_eq!(ByteSize::parse("1.5 GiB"), Ok(ByteSize(3 << 29)));
        assert_eq!(ByteSize::parse("2000"), Ok(ByteSize(2000)));
        assert_eq!(ByteSize::parse("3MB"), Ok(ByteSize(3_000_000)));
        assert!(ByteSize::parse("12 parsecs").unwrap_err().contains("parsecs"));
        assert_eq!(ByteSize(512 << 20).to_string(), "512MiB");
        let c = Config::from_toml_str("[node]\nmemory_limit = 268435456\n", no_env()).unwrap();
        assert_eq!(c.node.memory_limit, ByteSize(256 << 20));
        let e = Config::from_toml_str("[node]\nmemory_limit = \"100MiB\"\n", no_env()).unwrap_err().to_string();
        assert!(e.contains("node.memory_limit") && e.contains("kafka.prefetch_kbytes_max"), "{e}");
        let e = Config::from_toml_str("[node]\nmemory_limit = \"lots\"\n", no_env()).unwrap_err().to_string();
        assert!(e.contains("lots"), "{e}");
    }

    #[test]
    fn changes_max_follows_the_memory_limit_unless_set() {
        let c = Config::from_toml_str("[node]\nmemory_limit = \"512MiB\"\n", no_env()).unwrap();
        assert_eq!(c.changes_max(), 65_536);
        let c = Config::from_toml_str("[checkpoint]\nchanges_max = 5000\n", no_env()).unwrap();
        assert_eq!(c.changes_max(), 5_000);
        let e = Config::from_toml_str("[checkpoint]\nchanges_max = 10\n", no_env()).unwrap_err().to_string();
        assert!(e.contains("checkpoint.changes_max") && e.contains("at least 1000"), "{e}");
    }

    /// Every shipped example configuration loads without a problem (`examples/chaos` holds
    /// drill scenarios; vigil-chaos checks those).
    #[test]
    fn example_configs_are_valid() {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() && p.file_name().is_some_and(|n| n == "chaos") {
                    continue;
                } else if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "toml") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        // Where the crate is now (a test binary may be reused from another checkout of the
        // same sources, whose compile-time path is gone).
        let here = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        walk(&Path::new(&here).join("../examples"), &mut files);
        assert!(files.len() >= 3, "{files:?}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            if let Err(e) = Config::from_toml_str(&text, no_env()) {
                panic!("{}: {e}", f.display());
            }
        }
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
    fn a_stall_must_outlast_a_fetch_wait() {
        let text = "[kafka]\nfetch_wait = \"5s\"\n[quality]\nstall_after = \"5s\"\n";
        let e = Config::from_toml_str(text, no_env()).unwrap_err();
        assert_eq!(e.errors[0].path, "quality.stall_after", "{e}");
        assert!(Config::from_toml_str(&text.replace("5s\"\n[q", "4s\"\n[q"), no_env()).is_ok());
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
    fn schema_sections_parse_with_per_subject_lint() {
        let text = "[[pipeline.sources]]\ntopic = \"orders\"\nformat = \"json_schema\"\nsubject = \"orders-v\"\n[schema_registry]\ndefault_compatibility = \"FULL_TRANSITIVE\"\n[schema_registry.lint]\nfield_docs = \"block\"\n[schema_registry.lint.subjects.\"orders-v\"]\nnaming = \"snake_case\"\n[schema_registry.lifecycle]\narchive_after_idle = \"7d\"\n";
        let c = Config::from_toml_str(text, no_env()).unwrap();
        assert_eq!(c.pipeline.sources[0].subject(), "orders-v");
        assert_eq!(c.schema_registry.default_compatibility, Compatibility::FullTransitive);
        assert_eq!(c.schema_registry.lint.for_subject("other").field_docs, LintLevel::Block);
        assert_eq!(c.schema_registry.lint.for_subject("orders-v").naming, Naming::SnakeCase);
        assert_eq!(c.schema_registry.lint.for_subject("orders-v").field_docs, LintLevel::Off);
        assert_eq!(c.schema_registry.lifecycle.archive_after_idle, Some(Duration::from_secs(7 * 86400)));
        let e = Config::from_toml_str("[schema_registry]\nurl = \"registry:8081\"\ndefault_compatibility = \"SIDEWAYS\"\n", no_env()).unwrap_err();
        let paths: Vec<_> = e.errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"schema_registry.default_compatibility"), "{e}");
        let e = Config::from_toml_str("[[pipeline.fields]]\nname = \"x\"\ntype = \"string\"\nmin = 1.0\n", no_env()).unwrap_err();
        assert_eq!(e.errors[0].path, "pipeline.fields[0].min", "{e}");
    }

    #[test]
    fn semantic_relations_are_checked() {
        let text = "[supervision]\nbackoff_initial = \"10s\"\nbackoff_max = \"1s\"\n[pipeline]\nsink_topic = \"x\"\ndlq_topic = \"x\"\n";
        let e = Config::from_toml_str(text, no_env()).unwrap_err();
        let paths: Vec<_> = e.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["pipeline.dlq_topic", "supervision.backoff_initial"], "{e}");
    }
}
