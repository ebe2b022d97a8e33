//! The embedded Kafka: librdkafka's mock cluster, in process for `vigil run` without
//! brokers and as its own process for `vigil broker`.
//!
//! Limits to know: the mock cluster keeps about 5 MiB (and at most 100,000 message sets)
//! per partition and silently moves the log start past older data; it has no CreateTopics
//! API, so topics are created here up front (others are auto-created with 4 partitions);
//! it supports consumer groups, idempotent producers and transactions.
//!
//! When a listen address is given, a small TCP forwarder accepts clients there and the mock
//! broker advertises that address, so clients see one stable `host:port` (the mock itself
//! listens on an ephemeral port). With a TLS config the forwarder terminates TLS, so that
//! clients' Kafka TLS path (`security.protocol=ssl`) is exercised end to end.
use crate::{Error, Result};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};
use std::ffi::CString;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// How long consumers of the mock cluster let a fetch wait (`kafka.fetch_wait`). A broker
/// answers a waiting fetch as soon as data arrives; the mock answers one that found no data
/// only after the whole wait (`rd_kafka_mock_handle_Fetch`), so at low rates the wait for
/// brokers (100 ms) became every record's latency: p50 80 ms at 10 % of the bench's rate,
/// 12 ms with this.
pub const MOCK_FETCH_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// Tune `kafka` for the mock cluster: [`MOCK_FETCH_WAIT`] unless `kafka.fetch_wait` is set.
pub fn tune_for_mock(kafka: &mut vigil_config::KafkaConfig) {
    kafka.fetch_wait.get_or_insert(MOCK_FETCH_WAIT);
}

/// A running mock cluster with one broker.
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Start the mock cluster, create `topics` with `partitions` each, and optionally
    /// front it with a forwarder on `listen` (port 0 picks a free one).
    ///
    /// # Errors
    /// [`Error::Embedded`] if the cluster or the listener cannot be set up.
    pub fn start(partitions: u32, topics: &[String], listen: Option<SocketAddr>) -> Result<Self> {
        Self::start_with_tls(partitions, topics, listen, None, None)
    }

    /// [`EmbeddedBroker::start`], the forwarder on `listen` serving TLS with `tls`, and the
    /// broker advertised to clients at `advertise` instead of the forwarder's address (a
    /// proxy in front of it, such as a drill's fault proxy, which forwards to the forwarder).
    ///
    /// # Errors
    /// [`Error::Embedded`] if the cluster or the listener cannot be set up.
    pub fn start_with_tls(
        partitions: u32,
        topics: &[String],
        listen: Option<SocketAddr>,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
        advertise: Option<SocketAddr>,
    ) -> Result<Self> {
        let listener = match listen {
            Some(addr) => Some(TcpListener::bind(addr).map_err(|e| Error::Embedded(format!("bind {addr}: {e}")))?),
            None => None,
        };
        let advertised = match &listener {
            Some(l) => Some(l.local_addr().map_err(|e| Error::Embedded(e.to_string()))?),
            None => None,
        };
        let topics = topics.to_vec();
        let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<String, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vigil-mock-kafka".into())
            .spawn(move || {
                let client: BaseProducer = match ClientConfig::new().set("test.mock.num.brokers", "1").create() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("create mock cluster: {e}")));
                        return;
                    }
                };
                let res = setup(&client, partitions, &topics, advertise.or(advertised));
                let ok = res.is_ok();
                let _ = ready_tx.send(res);
                if ok {
                    // Keep the cluster alive until told to stop (or the owner is gone).
                    let _ = stop_rx.recv();
                }
                drop(client);
            })
            .map_err(|e| Error::Embedded(format!("spawn thread: {e}")))?;
        let upstream = ready_rx.recv().map_err(|_| Error::Embedded("mock cluster thread exited".into()))?.map_err(Error::Embedded)?;
        let bootstrap = match (listener, advertised) {
            (Some(l), Some(addr)) => {
                let upstream = upstream.split(',').next().unwrap_or_default().to_string();
                std::thread::Builder::new()
                    .name("vigil-mock-proxy".into())
                    .spawn(move || match tls {
                        Some(tls) => forward_tls_loop(l, upstream, tls),
                        None => forward_loop(l, upstream),
                    })
                    .map_err(|e| Error::Embedded(format!("spawn proxy: {e}")))?;
                addr.to_string()
            }
            _ => upstream,
        };
        Ok(Self { bootstrap, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// Bootstrap servers clients should use.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn setup(client: &BaseProducer, partitions: u32, topics: &[String], advertised: Option<SocketAddr>) -> std::result::Result<String, String> {
    let mock = client.client().mock_cluster().ok_or("client has no mock cluster")?;
    for t in topics {
        mock.create_topic(t, partitions as i32, 1).map_err(|e| format!("create topic {t}: {e}"))?;
    }
    if let Some(addr) = advertised {
        let host = CString::new(addr.ip().to_string()).map_err(|e| e.to_string())?;
        // SAFETY: the handle belongs to `client`, which outlives this call; broker 1 is the
        // only broker of a one-broker mock cluster; `host` is a valid C string for the call.
        unsafe {
            let mc = rdkafka::bindings::rd_kafka_handle_mock_cluster(client.client().native_ptr());
            if mc.is_null() {
                return Err("mock cluster handle is null".into());
            }
            rdkafka::bindings::rd_kafka_mock_broker_set_host_port(mc, 1, host.as_ptr(), i32::from(addr.port()));
        }
    }
    Ok(mock.bootstrap_servers())
}

fn forward_loop(listener: TcpListener, upstream: String) {
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        let upstream = upstream.clone();
        let _ = std::thread::Builder::new().name("vigil-mock-conn".into()).spawn(move || {
            if let Err(e) = forward(client, &upstream) {
                tracing::debug!(error = %e, "mock proxy connection ended");
            }
        });
    }
}

/// Terminate TLS on each connection and forward the plaintext to the mock.
fn forward_tls_loop(listener: TcpListener, upstream: String, tls: std::sync::Arc<rustls::ServerConfig>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return tracing::error!(error = %e, "mock TLS proxy stopped"),
    };
    runtime.block_on(async move {
        let listener = match listener.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(listener)) {
            Ok(l) => l,
            Err(e) => return tracing::error!(error = %e, "mock TLS proxy stopped"),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let Ok((tcp, peer)) = listener.accept().await else { continue };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let mut client = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "mock TLS proxy: handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "mock TLS proxy: handshake timed out"),
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
}

fn forward(client: TcpStream, upstream: &str) -> io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let _ = io::copy(&mut s_read, &mut c_write);
    let _ = c_write.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
    Ok(())
}
