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

/// Make `stage` of the node whose admin API listens on `admin` panic. Its supervisor
/// restarts it according to the tree's strategy.
///
/// # Errors
/// [`Error::UnknownStage`] or [`Error::Unreachable`].
pub fn inject_panic(admin: &str, stage: &str) -> Result<(), Error> {
    let url = format!("http://{admin}/chaos/panic/{stage}");
    match ureq::post(&url).send_empty() {
        Ok(_) => Ok(()),
        Err(ureq::Error::StatusCode(404)) => Err(Error::UnknownStage { admin: admin.into(), stage: stage.into() }),
        Err(e) => Err(Error::Unreachable { admin: admin.into(), reason: e.to_string() }),
    }
}
