//! Data lineage. So far: the data-flow event log — `GET /lineage/events` serves the node's
//! journal ([`crate::journal`]): node start and stop, checkpoints committed and failed,
//! stage failures and restarts, retention loss, DLQ bursts, schema changes, reloads, chaos
//! — filtered by time and kind ([`rest`]); and the compact per-partition offset sets
//! record-level lineage will store per window ([`offsets`]). Record-level tracing arrives
//! with the rest of the lineage work.
pub mod offsets;
pub mod rest;
