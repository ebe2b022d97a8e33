//! Security of the node's HTTP listeners: TLS with optional client certificates
//! ([`tls`]), API tokens ([`tokens`]), roles and the route table ([`access`]), the
//! hash-chained audit log ([`audit`]), and the listener loop that puts them together.
pub mod access;
pub mod audit;
pub mod rest;
pub mod tls;
pub mod tokens;

use crate::{Error, Result};
use access::{Guard, Routes};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use tls::{PeerCert, Reloadable};

/// How one listener serves: TLS (if any) and connection limits.
#[derive(Clone)]
pub struct ListenerOpts {
    /// TLS config holder; `None` serves plaintext.
    pub tls: Option<Arc<Reloadable>>,
    /// Largest request head (hyper's read buffer, at least 8 KiB).
    pub max_headers: usize,
    /// Bound on reading a request head (slow clients).
    pub header_timeout: std::time::Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Whether `a` and `b` are equal, in time independent of where they differ (secrets, MACs).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bind `addr` (port 0 picks one) and serve `routes` behind `guard` on it, on a thread and
/// runtime of its own, so that a data path keeping every worker busy never delays
/// `/status`, `/metrics` or a drill. Returns the bound address.
///
/// # Errors
/// [`Error::Listen`] naming `what` if the address cannot be bound.
pub fn serve(what: &str, addr: &str, routes: Routes, guard: impl FnOnce(access::RouteTable) -> Guard, opts: ListenerOpts) -> Result<SocketAddr> {
    let (router, table) = routes.into_parts();
    let app = guard(table).layer(router);
    let listen_err = |source| Error::Listen { what: what.into(), addr: addr.into(), source };
    let listener = std::net::TcpListener::bind(addr).map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    let local = listener.local_addr().map_err(listen_err)?;
    let what = what.to_string();
    let name = format!("vigil-{}", what.replace(' ', "-"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().thread_name(name.clone()).build().map_err(listen_err)?;
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(&what, l, app, opts).await,
                    Err(e) => tracing::error!(error = %e, "{what} stopped"),
                }
            })
        })
        .map_err(listen_err)?;
    Ok(local)
}

async fn accept_loop(what: &str, listener: tokio::net::TcpListener, app: axum::Router, opts: ListenerOpts) {
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "{what}: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (app, opts, what) = (app.clone(), opts.clone(), what.to_string());
        tokio::spawn(async move {
            let _permit = permit;
            match &opts.tls {
                None => serve_connection(TokioIo::new(tcp), app, peer, None, &opts).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    match tokio::time::timeout(tls.handshake_timeout(), acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| PeerCert::from_der(c.as_ref()));
                            serve_connection(TokioIo::new(stream), app, peer, cert, &opts).await
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("vigil_tls_handshake_failures_total").increment(1);
                            tracing::debug!(%peer, error = %e, "{what}: TLS handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("vigil_tls_handshake_failures_total").increment(1);
                            tracing::debug!(%peer, "{what}: TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(io: TokioIo<I>, app: axum::Router, peer: SocketAddr, cert: Option<PeerCert>, opts: &ListenerOpts)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        if let Some(c) = &cert {
            req.extensions_mut().insert(c.clone());
        }
        tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(opts.header_timeout).max_buf_size(opts.max_headers.max(8192));
    if let Err(e) = http.serve_connection(io, svc).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
