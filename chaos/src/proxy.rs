//! The drill's fault proxy: a loopback TCP proxy between a node and its broker whose faults
//! (added latency and jitter, a bandwidth limit, connection resets, a full partition, a
//! broker outage) are switched while connections stay open. It runs on its own thread and
//! runtime, so the drill's own pace never delays the traffic it forwards.
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// What the proxy does to traffic now. [`NetFaults::default`] forwards untouched.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct NetFaults {
    /// Added one-way delay per chunk.
    pub latency: Duration,
    /// Up to this much more delay, uniformly random (seeded).
    pub jitter: Duration,
    /// Bytes per second per direction and connection; 0: unlimited.
    pub bandwidth: u64,
    /// Nothing passes either way and new connections hang (packets dropped, as a network
    /// partition looks to both ends); open connections resume when it heals.
    pub partitioned: bool,
    /// The broker is down: open connections are reset and new ones refused at once.
    pub down: bool,
}

/// Counters of what the proxy did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections reset by a fault.
    pub resets: u64,
    /// Bytes forwarded (both directions).
    pub bytes: u64,
}

/// A running fault proxy; stops (closing every connection) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    faults: watch::Sender<NetFaults>,
    reset: watch::Sender<u64>,
    stats: Arc<Mutex<ProxyStats>>,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on `listen` (port 0 picks one) and forward each connection to `upstream`;
    /// jitter draws from `seed`.
    ///
    /// # Errors
    /// The listener cannot be bound or the runtime not started.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, seed: u64) -> std::io::Result<Self> {
        let p = Self::bind(listen, seed)?;
        p.set_upstream(upstream);
        Ok(p)
    }

    /// Listen on `listen` before the upstream is known (a broker that must advertise the
    /// proxy's address starts after it); connections are refused until
    /// [`FaultProxy::set_upstream`].
    ///
    /// # Errors
    /// The listener cannot be bound or the runtime not started.
    pub fn bind(listen: SocketAddr, seed: u64) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let (faults, faults_rx) = watch::channel(NetFaults::default());
        let (reset, reset_rx) = watch::channel(0u64);
        let stats = Arc::new(Mutex::new(ProxyStats::default()));
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let st = stats.clone();
        let upstream: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let up = upstream.clone();
        let thread = std::thread::Builder::new().name("vigil-fault-proxy".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else { return };
                let rng = Arc::new(Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed)));
                let accept = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else { continue };
                        let f = faults_rx.borrow().clone();
                        let to = up.lock().ok().and_then(|u| *u);
                        let Some(to) = to.filter(|_| !f.down) else {
                            let _ = client.set_zero_linger();
                            drop(client);
                            continue;
                        };
                        if let Ok(mut s) = st.lock() {
                            s.connections += 1;
                        }
                        tokio::spawn(connection(client, to, faults_rx.clone(), reset_rx.clone(), st.clone(), rng.clone()));
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stop_rx => {}
                }
            });
        })?;
        Ok(Self { addr, faults, reset, stats, upstream, stop: Some(stop), thread: Some(thread) })
    }

    /// Forward new connections to `upstream`.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        if let Ok(mut u) = self.upstream.lock() {
            *u = Some(upstream);
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switch the faults; open connections follow at once.
    pub fn set(&self, f: NetFaults) {
        let down = f.down;
        self.faults.send_replace(f);
        if down {
            self.reset_all();
        }
    }

    /// The faults in force.
    pub fn faults(&self) -> NetFaults {
        self.faults.borrow().clone()
    }

    /// Reset (RST) every open connection now; clients reconnect.
    pub fn reset_all(&self) {
        self.reset.send_modify(|g| *g += 1);
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> ProxyStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn connection(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    mut faults: watch::Receiver<NetFaults>,
    mut reset: watch::Receiver<u64>,
    stats: Arc<Mutex<ProxyStats>>,
    rng: Arc<Mutex<rand_chacha::ChaCha8Rng>>,
) {
    reset.mark_unchanged();
    // A partition holds new connections too: wait until it heals.
    let healed = tokio::select! {
        r = faults.wait_for(|f| !f.partitioned) => r.map(|f| !f.down).unwrap_or(false),
        _ = reset.changed() => false,
    };
    let Some(mut server) = (if healed { tokio::net::TcpStream::connect(upstream).await.ok() } else { None }) else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let was_reset = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let up = pump(cr, sw, faults.clone(), stats.clone(), rng.clone());
        let down = pump(sr, cw, faults.clone(), stats.clone(), rng);
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            _ = reset.changed() => true,
        }
    };
    if was_reset {
        if let Ok(mut s) = stats.lock() {
            s.resets += 1;
        }
        // Linger 0: closing sends RST, as a dropped connection or a dead broker does.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Copy one direction, applying the faults to each chunk.
async fn pump<R, W>(mut from: R, mut to: W, mut faults: watch::Receiver<NetFaults>, stats: Arc<Mutex<ProxyStats>>, rng: Arc<Mutex<rand_chacha::ChaCha8Rng>>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    // Chunks are stamped when read and written when due, so added latency delays the
    // stream without limiting its throughput (as a long link does).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if tx.send((tokio::time::Instant::now(), buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((read_at, chunk)) = rx.recv().await {
            if faults.wait_for(|f| !f.partitioned).await.is_err() {
                break;
            }
            let f = faults.borrow().clone();
            let jitter = if f.jitter.is_zero() { Duration::ZERO } else { rng.lock().map(|mut r| f.jitter.mul_f64(r.random::<f64>())).unwrap_or_default() };
            tokio::time::sleep_until(read_at + f.latency + jitter).await;
            if f.bandwidth > 0 {
                tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / f.bandwidth as f64)).await;
            }
            if to.write_all(&chunk).await.is_err() {
                break;
            }
            if let Ok(mut s) = stats.lock() {
                s.bytes += chunk.len() as u64;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    fn echo_server() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut c = c;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn roundtrip(c: &mut std::net::TcpStream) -> std::io::Result<Duration> {
        let t = Instant::now();
        c.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf)?;
        assert_eq!(&buf, b"ping");
        Ok(t.elapsed())
    }

    #[test]
    fn latency_partition_reset_and_outage_apply_to_open_and_new_connections() {
        let p = FaultProxy::start("127.0.0.1:0".parse().unwrap(), echo_server(), 1).unwrap();
        let mut c = std::net::TcpStream::connect(p.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(roundtrip(&mut c).unwrap() < Duration::from_millis(150));

        p.set(NetFaults { latency: Duration::from_millis(100), ..NetFaults::default() });
        let rtt = roundtrip(&mut c).unwrap();
        assert!(rtt >= Duration::from_millis(200), "two one-way delays: {rtt:?}");

        p.set(NetFaults { partitioned: true, ..NetFaults::default() });
        c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(roundtrip(&mut c).is_err(), "nothing passes a partition");
        p.set(NetFaults::default());
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut held = [0u8; 4];
        c.read_exact(&mut held).unwrap();
        assert_eq!(&held, b"ping", "held bytes arrive when the partition heals");

        p.reset_all();
        let mut buf = [0u8; 4];
        let r = c.write_all(b"ping").and_then(|()| c.read(&mut buf));
        assert!(matches!(r, Ok(0) | Err(_)), "the connection was reset: {r:?}");

        p.set(NetFaults { down: true, ..NetFaults::default() });
        let mut d = std::net::TcpStream::connect(p.addr()).unwrap();
        d.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let r = d.write_all(b"ping").and_then(|()| d.read(&mut buf));
        assert!(matches!(r, Ok(0) | Err(_)), "a down broker accepts nothing: {r:?}");
        p.set(NetFaults::default());
        let mut e = std::net::TcpStream::connect(p.addr()).unwrap();
        e.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(roundtrip(&mut e).is_ok());
        assert!(p.stats().resets >= 1 && p.stats().connections >= 2, "{:?}", p.stats());
    }
}
