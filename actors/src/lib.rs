//! vigil-actors: the pipeline stages — Ingest, Validate, Process (windows), Sink — the
//! Quality and Alerting actors that watch them, and the
//! synthetic generator, each an actor shell over pure logic, assembled into a supervised
//! node by [`node`].
#![warn(missing_docs, unreachable_pub)]

pub mod alerting;
pub mod analytics;
pub mod generator;
pub mod incidents;
pub mod journal;
pub mod lineage;
pub mod memory;
pub mod nexmark;
pub mod node;
pub mod outbox;
pub mod pipeline;
pub mod quality;
pub use vigil_runtime::rate;
pub mod registry;
pub mod signing;
pub mod stages;
pub mod validate;

/// The serialized (snake_case) name of a unit enum variant, e.g. `dlq_burst` — what the
/// API, the CLI tables and metric labels show.
pub fn variant_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Errors of the pipeline stages. Each names the stage or checkpoint concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A runtime operation (Kafka, store, listener) failed.
    #[error(transparent)]
    Runtime(#[from] vigil_runtime::Error),
    /// The supervision tree failed.
    #[error(transparent)]
    Supervision(#[from] vigil_supervision::Error),
    /// A downstream stage is not running (it is restarting; the supervisor restarts this
    /// stage with it).
    #[error("stage `{stage}` is not running")]
    StageUnavailable {
        /// Stage name.
        stage: &'static str,
    },
    /// A checkpoint barrier did not come back.
    #[error("checkpoint {id} did not complete within {waited:?}")]
    CheckpointStuck {
        /// Checkpoint id.
        id: u64,
        /// Time waited.
        waited: std::time::Duration,
    },
    /// Restored state does not fit the current configuration.
    #[error("stage `{stage}`: incompatible checkpointed state: {reason}")]
    IncompatibleState {
        /// Stage.
        stage: &'static str,
        /// Why.
        reason: String,
    },
    /// An output could not be encoded.
    #[error("encode output: {0}")]
    Encode(String),
    /// A secret the configuration names cannot be read (the message names the field).
    #[error("{0}")]
    Secret(String),
    /// The schema registry could not be asked or written (not a record's fault).
    #[error("schema registry: {0}")]
    Registry(String),
    /// Checkpoint barriers arrived out of step across shards (a bug: the stage restarts and
    /// the pipeline rewinds to the last checkpoint).
    #[error("stage `{stage}`: barriers out of step: checkpoint {first} aligned with {other}")]
    BarrierMismatch {
        /// Stage and shard.
        stage: String,
        /// Barrier of the first input.
        first: u64,
        /// Barrier of another input.
        other: u64,
    },
    /// The checkpoint does not belong to the cluster or topics the node would resume on.
    #[error("cannot resume from the checkpoint: {0}")]
    Resume(String),
    /// The configuration cannot be used as written.
    #[error("{path}: {message}")]
    Config {
        /// Field path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Result of stage operations.
pub type Result<T> = std::result::Result<T, Error>;
