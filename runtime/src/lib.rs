//! vigil-runtime: what every pipeline stage stands on — the record envelope, Kafka I/O in
//! batches, the embedded mock cluster, the RocksDB store with atomic checkpoints, metrics,
//! and the admin HTTP server with its security (TLS, access control, audit log).
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod embedded;
pub mod envelope;
mod error;
pub mod failpoints;
mod fetch_queue;
pub mod kafka;
pub mod metrics;
pub mod rate;
pub mod security;
pub mod stats;
pub mod store;

pub use error::{Error, Result};

/// Wall-clock time in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// RFC 3339 UTC time with milliseconds of `ms` since the Unix epoch (the epoch for negatives).
pub fn rfc3339_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
}
