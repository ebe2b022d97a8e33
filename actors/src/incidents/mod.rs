//! Incidents: the lifecycle and escalation of incidents opened from alerts ([`model`]),
//! their timelines, triggers, impact, post-mortems and review reports ([`analysis`]), the
//! Incidents actor ([`actor`]) and its admin API ([`rest`]).
pub mod actor;
pub mod analysis;
pub mod model;
pub mod rest;
