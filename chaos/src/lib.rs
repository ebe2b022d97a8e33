//! vigil-chaos: fault injection and drills. A drill ([`runner`]) runs a [`scenario`] against
//! real processes ([`procs`]) with a fault proxy between node and broker ([`proxy`]) and
//! failpoints in the node, reconciles every record against an independent [`model`], and
//! writes a [`report`]. [`inject_panic`] is the one-shot fault `vigil chaos panic` uses.
#![warn(missing_docs, unreachable_pub)]

pub mod model;
pub mod procs;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schedule;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    vigil_runtime::now_ms()
}

/// `YYYYmmddTHHMMSS` of `ms` (UTC), for directory names.
pub fn stamp(ms: i64) -> String {
    vigil_runtime::rfc3339_ms(ms).chars().filter(|c| c.is_ascii_digit() || *c == 'T').take(15).collect()
}

/// Actors a panic can be injected into.
pub use vigil_actors::pipeline::ACTORS;

/// Errors of fault injection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The actor name is not one of [`ACTORS`] or not running on that node.
    #[error("node at {admin} has no running actor `{stage}` (one of: {})", ACTORS.join(", "))]
    UnknownStage {
        /// Admin address.
        admin: String,
        /// Stage asked for.
        stage: String,
    },
    /// The admin API could not be reached.
    #[error("cannot reach the admin API at {admin}: {reason}")]
    Unreachable {
        /// Admin address.
        admin: String,
        /// Why.
        reason: String,
    },
    /// A process of the drill could not be started or did not come up.
    #[error("drill process `{name}`: {what}")]
    Process {
        /// Its name (broker, node, gen, ...).
        name: String,
        /// What went wrong.
        what: String,
    },
    /// A file or socket of the drill.
    #[error("drill: {0}")]
    Io(String),
    /// Kafka, while reading outputs back or closing windows.
    #[error("drill: kafka: {0}")]
    Kafka(String),
    /// A wrong argument.
    #[error("{0}")]
    Usage(String),
}

/// Make `stage` of the node whose admin API is at `admin` (`http(s)://host:port`) panic,
/// calling with `agent` (its TLS settings) and `auth` as the `Authorization` header. Its
/// supervisor restarts it according to the tree's strategy.
///
/// # Errors
/// [`Error::UnknownStage`] or [`Error::Unreachable`] (which includes a refused call).
pub fn inject_panic(agent: &ureq::Agent, admin: &str, auth: Option<&str>, stage: &str) -> Result<(), Error> {
    let url = format!("{admin}/chaos/panic/{stage}");
    let mut req = agent.post(&url);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    match req.send_empty() {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) if r.status().as_u16() == 404 => Err(Error::UnknownStage { admin: admin.into(), stage: stage.into() }),
        Ok(r) => Err(Error::Unreachable { admin: admin.into(), reason: format!("HTTP {} (credentials? see `vigil whoami`)", r.status()) }),
        Err(e) => Err(Error::Unreachable { admin: admin.into(), reason: e.to_string() }),
    }
}
