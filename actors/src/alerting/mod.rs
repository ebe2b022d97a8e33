//! Alerting: rules over the data-quality series evaluated with Prometheus' semantics
//! ([`engine`]), notifications routed and grouped with Alertmanager's ([`notify`]),
//! delivered with retries by per-receiver workers ([`receivers`]), driven by the Alerting
//! actor ([`actor`]) and served on the admin API ([`rest`]).
pub mod actor;
pub mod engine;
pub mod notify;
pub mod receivers;
pub mod rest;
