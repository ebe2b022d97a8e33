//! The runtime's error type.
use std::time::Duration;

/// Errors of the runtime layer. Each variant names what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kafka client operation failed.
    #[error("kafka: {op}: {source}")]
    Kafka {
        /// What was being done (e.g. `create consumer`, `assign events/0`).
        op: String,
        /// The librdkafka error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Outputs were not acknowledged by Kafka.
    #[error("kafka: {failed} output record(s) failed delivery, last error: {last_error}")]
    Delivery {
        /// Failed deliveries since the last checkpoint.
        failed: u64,
        /// Last delivery error.
        last_error: String,
    },
    /// Waiting for Kafka took too long.
    #[error("kafka: {op} timed out after {timeout:?}")]
    KafkaTimeout {
        /// What was being waited for.
        op: String,
        /// How long.
        timeout: Duration,
    },
    /// A source topic does not exist or has no partitions.
    #[error("kafka: topic `{topic}` not found (create it first; Vigil does not auto-create source topics)")]
    TopicNotFound {
        /// Topic name.
        topic: String,
    },
    /// A fault injected by a failpoint (tests and drills).
    #[error("store: {op}: injected fault ({reason})")]
    Injected {
        /// What was being done.
        op: String,
        /// The failpoint's argument, if any.
        reason: String,
    },
    /// RocksDB failed.
    #[error("store at {path}: {op}: {source}")]
    Store {
        /// Data directory.
        path: String,
        /// What was being done.
        op: String,
        /// RocksDB error.
        #[source]
        source: rocksdb::Error,
    },
    /// Stored bytes could not be decoded.
    #[error("store: corrupt {what}: {reason}")]
    Corrupt {
        /// What was being decoded.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// Binding or serving an HTTP listener failed.
    #[error("{what} on {addr}: {source}")]
    Listen {
        /// Which listener.
        what: String,
        /// Address.
        addr: String,
        /// IO error.
        #[source]
        source: std::io::Error,
    },
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// TLS material could not be loaded (certificate, key or CA file).
    #[error("tls: {path}: {reason}")]
    Tls {
        /// The file (or setting) at fault.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token file or the audit log could not be read or written.
    #[error("security: {0}")]
    Security(String),
    /// The embedded broker could not be started.
    #[error("embedded broker: {0}")]
    Embedded(String),
}

/// Result of runtime operations.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wrap a Kafka error with what was being done.
    pub fn kafka(op: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka { op: op.into(), source }
    }
}
