//! Real-time analytics: named aggregations over event-time windows. So far the pure core —
//! window kinds, allowed lateness with revisions, session merges ([`engine`]) and the metrics
//! with their sketches ([`metrics`]) — checked against a reference model; wiring into the
//! pipeline, configuration and incremental checkpoints follow.
pub mod engine;
pub mod metrics;
