//! vigil-chaos: fault injection against running nodes. This first version has one verb,
//! [`inject_panic`]; later issues add scenarios, drills, invariants and reports.
#![warn(missing_docs, unreachable_pub)]

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
