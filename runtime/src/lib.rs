//! vigil-runtime: what every pipeline stage stands on — the record envelope, Kafka I/O in
//! batches, the embedded mock cluster, the RocksDB store with atomic checkpoints, metrics,
//! and the admin HTTP server.
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod embedded;
pub mod envelope;
mod error;
pub mod kafka;
pub mod metrics;
pub mod stats;
pub mod store;

pub use error::{Error, Result};

/// Wall-clock time in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// RFC 3339 UTC time with milliseconds of `ms` since the Unix epoch (the epoch for negatives).
pub fn rfc3339_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// Bind `addr` (port 0 picks one) and serve `app` on it in the background.
///
/// # Errors
/// [`Error::Listen`] naming `what` if the address cannot be bound.
pub(crate) async fn serve_router(what: &str, addr: &str, app: axum::Router) -> Result<std::net::SocketAddr> {
    let listen_err = |source| Error::Listen { what: what.into(), addr: addr.into(), source };
    let listener = std::net::TcpListener::bind(addr).map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    let local = listener.local_addr().map_err(listen_err)?;
    let what = what.to_string();
    // Its own thread and runtime: a data path keeping every worker busy (a large window
    // emission, a backlog) never delays `/status`, `/metrics` or a drill.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().thread_name(format!("vigil-{}", what.replace(' ', "-"))).build().map_err(listen_err)?;
    std::thread::Builder::new()
        .name(format!("vigil-{}", what.replace(' ', "-")))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!(error = %e, "{what} stopped"),
                };
                // Connection info lets handlers name the caller (audit log).
                if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await {
                    tracing::error!(error = %e, "{what} stopped");
                }
            })
        })
        .map_err(listen_err)?;
    Ok(local)
}
