//! Data quality: the pure logic that watches the health of the data. So far the anomaly
//! detectors ([`anomaly`]), the duplicate-id detector ([`dedup`]), the quantile sketch for
//! freshness and latency ([`sketch`]) and the per-source measures in time slots
//! ([`tracker`]); the Quality and Alerting actors that feed and act on them arrive with the
//! rest of the data-quality work.
pub mod anomaly;
pub mod dedup;
pub mod sketch;
pub mod tracker;
