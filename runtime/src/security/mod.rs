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

/// A listener [`serve`] started. Dropping it stops the listener: it accepts no more, its
/// thread and runtime end, and open connections and the routes' state (a node's context,
/// its store and Kafka clients) are let go.
pub struct Listening {
    /// The bound address.
    pub addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Bind `addr` (port 0 picks one) and serve `routes` behind `guard` on it, on a thread and
/// runtime of its own, so that a data path keeping every worker busy never delays
/// `/status`, `/metrics` or a drill; until the returned [`Listening`] is dropped.
///
/// # Errors
/// [`Error::Listen`] naming `what` if the address cannot be bound.
pub fn serve(what: &str, addr: &str, routes: Routes, guard: impl FnOnce(access::RouteTable) -> Guard, opts: ListenerOpts) -> Result<Listening> {
    let (router, table) = routes.into_parts();
    let app = guard(table).layer(router);
    let listen_err = |source| Error::Listen { what: what.into(), addr: addr.into(), source };
    let listener = std::net::TcpListener::bind(addr).map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    let local = listener.local_addr().map_err(listen_err)?;
    let what = what.to_string();
    let name = format!("vigil-{}", what.replace(' ', "-"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().thread_name(name.clone()).build().map_err(listen_err)?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(&what, l, app, opts, stopped).await,
                    Err(e) => tracing::error!(error = %e, "{what} stopped"),
                }
            })
            // The runtime drops here, and with it the connections' tasks.
        })
        .map_err(listen_err)?;
    Ok(Listening { addr: local, _stop: stop })
}

/// Accept connections until `stop` fires or its sender is dropped.
async fn accept_loop(what: &str, listener: tokio::net::TcpListener, app: axum::Router, opts: ListenerOpts, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = &mut stop => return,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            c = listener.accept() => c,
            _ = &mut stop => return,
        };
        let (tcp, peer) = match accepted {
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

#[cfg(test)]
mod tests {
    use super::access::Security;
    use super::tokens::TokenStore;
    use super::*;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_dropped_listener_stops_and_lets_its_routes_state_go() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Arc::new(TokenStore::new(vec![], dir.path().join("tokens.json")).unwrap());
        let sec = Arc::new(Security::new(&vigil_config::SecurityConfig::default(), tokens, None));
        // Stands for a node's context, which the admin routes hold.
        let state = Arc::new(());
        let held = state.clone();
        let routes: Routes = Routes::new().get("/healthz", "health.read", move || {
            let _held = held.clone();
            async { "ok\n" }
        });
        let opts = ListenerOpts { tls: None, max_headers: 8192, header_timeout: Duration::from_secs(5), max_connections: 4 };
        let l = serve("test listener", "127.0.0.1:0", routes, |t| Guard::metrics(sec, t), opts).unwrap();
        let addr = l.addr;
        assert!(get(addr, "/healthz").unwrap().ends_with("ok\n"));
        assert!(Arc::strong_count(&state) > 1);
        drop(l);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&state) > 1 || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            assert!(Instant::now() < deadline, "the listener still holds its routes or accepts connections 10 s after it was dropped");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
