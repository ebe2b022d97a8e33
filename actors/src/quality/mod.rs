//! Data quality: the pure logic that watches the health of the data. So far the anomaly
//! detectors ([`anomaly`]), the duplicate-id detector ([`dedup`]) and the quantile sketch
//! for freshness and latency ([`sketch`]); the Quality and Alerting actors that feed and act
//! on them arrive with the rest of the data-quality work.
pub mod anomaly;
pub mod dedup;
pub mod sketch;
