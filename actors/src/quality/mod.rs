//! Data quality: the per-source measures ([`tracker`], with the quantile [`sketch`] and
//! the duplicate-id detector [`dedup`]), anomaly detectors ([`anomaly`]), the published
//! report and its series ([`report`]), and the Quality actor that drives them ([`actor`]).
pub mod actor;
pub mod anomaly;
pub mod dedup;
pub mod report;
pub mod sketch;
pub mod tracker;
