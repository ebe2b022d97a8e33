//! vigil-runtime: what every pipeline stage stands on — the record envelope, Kafka I/O in
//! batches, the embedded mock cluster, the RocksDB store with atomic checkpoints, metrics,
//! and the admin HTTP server.
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod embedded;
pub mod envelope;
mod error;
pub mod kafka;
pub mod metrics;
pub mod stats;
pub mod store;

pub use error::{Error, Result};
