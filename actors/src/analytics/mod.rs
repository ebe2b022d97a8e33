//! Real-time analytics: named aggregations over event-time windows — window kinds, allowed
//! lateness with revisions, session merges and incremental checkpoints ([`engine`]), the
//! metrics with their sketches ([`metrics`]), filters and group keys ([`spec`]), per-partition
//! watermarks ([`watermark`]) and the output records ([`output`]).
pub mod cost;
pub mod engine;
pub mod metrics;
pub mod output;
pub mod spec;
pub mod state;
pub mod watermark;
