//! Long-lived TCP connections and UDP flows through the VIP of an HA
//! [`crate::hapair::Pair`], for the connection-sync tests.
//!
//! Each TCP connection sends a 32-byte message every 20 ms and checks that
//! the echo is byte for byte what it sent; a reset, a corrupted or missing
//! byte, or a read timeout is counted against it. Each UDP flow (one
//! client socket) sends a datagram every 20 ms to a [`PortEcho`] server,
//! which answers with its id and the source port it saw: the flow must
//! keep both for its whole life. [`Load::progress`] lets a test wait until
//! every connection and flow has exchanged messages after an event.

use std::{
    collections::HashMap,
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{netns::Netns, servers::payload};

/// Messages are this long.
const MSG: usize = 32;
/// One message per connection or flow this often.
pub const PERIOD: Duration = Duration::from_millis(20);

/// UDP echo server answering `[id, port_hi, port_lo] + data`, where port is
/// the source port it saw (the SNAT port). Stopped on drop.
pub struct PortEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PortEcho {
    pub fn start(ns: &Netns, addr: SocketAddrV4, id: u8) -> Result<Self> {
        let sock = ns.enter(move || UdpSocket::bind(addr))??;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf[3..]) {
                    buf[0] = id;
                    buf[1..3].copy_from_slice(&peer.port().to_be_bytes());
                    let _ = sock.send_to(&buf[..n + 3], peer);
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PortEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What went wrong on the connections and flows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// TCP connections reset (or closed by the peer).
    pub resets: u64,
    /// TCP echoes that differed from what was sent.
    pub corrupted: u64,
    /// TCP echoes that did not come back within the read timeout.
    pub missing: u64,
    /// UDP flows whose endpoint or SNAT port (as the endpoint saw it) changed.
    pub udp_moved: u64,
}

impl Faults {
    pub fn total(&self) -> u64 {
        self.resets + self.corrupted + self.missing + self.udp_moved
    }
}

struct Shared {
    stop: AtomicBool,
    /// Messages exchanged, per connection then per UDP flow.
    done: Vec<AtomicU64>,
    resets: AtomicU64,
    corrupted: AtomicU64,
    missing: AtomicU64,
    udp_moved: AtomicU64,
    /// Connections and flows that stopped for good.
    dead: AtomicU64,
}

/// The running load (see the module docs). Stops on drop.
pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Client ports, TCP then UDP, and when each flow started.
    pub flows: Vec<(u8, u16, Instant)>,
}

fn tcp_conn(ns: &Netns, vip: SocketAddr, timeout: Duration) -> Result<(TcpStream, Instant, u16)> {
    let t0 = Instant::now();
    let mut s = ns.enter(move || TcpStream::connect_timeout(&vip, timeout))??;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let mut id = [0u8; 1];
    s.read_exact(&mut id).context("read the endpoint id")?;
    let port = s.local_addr()?.port();
    Ok((s, t0, port))
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

impl Load {
    /// Opens `tcp` connections to `tcp_vip` and `udp` flows to `udp_vip`
    /// from the client namespace and starts exchanging.
    pub fn start(
        client: &Netns,
        tcp_vip: SocketAddr,
        tcp: usize,
        udp_vip: SocketAddr,
        udp: usize,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            done: (0..tcp + udp).map(|_| AtomicU64::new(0)).collect(),
            resets: AtomicU64::new(0),
            corrupted: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            udp_moved: AtomicU64::new(0),
            dead: AtomicU64::new(0),
        });
        let mut threads = Vec::new();
        let mut flows = Vec::new();
        let timeout = Duration::from_secs(20);
        for i in 0..tcp {
            let (s, t0, port) = tcp_conn(client, tcp_vip, timeout)
                .with_context(|| format!("TCP connection {i}"))?;
            flows.push((6, port, t0));
            let sh = shared.clone();
            threads.push(std::thread::spawn(move || tcp_loop(s, i, &sh)));
        }
        let mut socks = Vec::new();
        for _ in 0..udp {
            let s = client.enter(|| UdpSocket::bind("0.0.0.0:0"))??;
            socks.push(s);
        }
        for (j, s) in socks.into_iter().enumerate() {
            let t0 = Instant::now();
            flows.push((17, s.local_addr()?.port(), t0));
            let sh = shared.clone();
            threads.push(std::thread::spawn(move || {
                udp_loop(s, udp_vip, tcp + j, &sh)
            }));
        }
        Ok(Self {
            shared,
            threads,
            flows,
        })
    }

    /// Messages exchanged so far by each connection and flow.
    pub fn progress(&self) -> Vec<u64> {
        self.shared
            .done
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// The connections and flows (indexes into [`Load::flows`]) that have
    /// not exchanged `n` more messages than at `since`.
    pub fn behind(&self, since: &[u64], n: u64) -> Vec<usize> {
        self.progress()
            .iter()
            .zip(since)
            .enumerate()
            .filter(|(_, (a, b))| **a < **b + n)
            .map(|(i, _)| i)
            .collect()
    }

    pub fn faults(&self) -> Faults {
        Faults {
            resets: self.shared.resets.load(Ordering::Relaxed),
            corrupted: self.shared.corrupted.load(Ordering::Relaxed),
            missing: self.shared.missing.load(Ordering::Relaxed),
            udp_moved: self.shared.udp_moved.load(Ordering::Relaxed),
        }
    }

    /// Waits until every connection and flow has exchanged `n` more
    /// messages than at `since`; the time it took. Fails when one stopped
    /// for good or `timeout` passed.
    pub fn wait_all_progress(&self, since: &[u64], n: u64, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            let now = self.progress();
            let behind = now.iter().zip(since).filter(|(a, b)| **a < **b + n).count();
            if behind == 0 {
                return Ok(t0.elapsed());
            }
            let dead = self.shared.dead.load(Ordering::Relaxed);
            if t0.elapsed() > timeout {
                bail!(
                    "{behind} of {} connections/flows made no progress in {timeout:?} \
                     ({dead} stopped for good; faults {:?})",
                    now.len(),
                    self.faults()
                );
            }
            std::thread::sleep(PERIOD);
        }
    }

    /// Stops every connection and flow; returns the faults.
    pub fn stop(mut self) -> Faults {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.faults()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_loop(mut s: TcpStream, i: usize, sh: &Shared) {
    let mut n: u64 = 0;
    let mut back = [0u8; MSG];
    while !sh.stop.load(Ordering::Relaxed) {
        let msg = payload((i as u64) << 32 | n, MSG);
        let res = s.write_all(&msg).and_then(|()| s.read_exact(&mut back));
        match res {
            Ok(()) if back[..] == msg[..] => {
                n += 1;
                sh.done[i].fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {
                sh.corrupted.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Err(e) if is_reset(&e) => {
                sh.resets.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Err(_) => {
                sh.missing.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        std::thread::sleep(PERIOD);
    }
    if !sh.stop.load(Ordering::Relaxed) {
        sh.dead.fetch_add(1, Ordering::Relaxed);
    }
}

fn udp_loop(s: UdpSocket, vip: SocketAddr, slot: usize, sh: &Shared) {
    let mut seen: Option<(u8, u16)> = None;
    let mut buf = [0u8; 64];
    let mut n: u64 = 0;
    while !sh.stop.load(Ordering::Relaxed) {
        let msg = payload((slot as u64) << 32 | n, MSG);
        n += 1;
        if s.send_to(&msg, vip).is_err() {
            std::thread::sleep(PERIOD);
            continue;
        }
        // Read until this message's echo or the period ends. A late echo
        // of an earlier message is skipped (but its endpoint and port still
        // checked), so one slow reply never shifts every later read.
        let until = Instant::now() + PERIOD;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
                break;
            }
            let Ok((len, _)) = s.recv_from(&mut buf) else {
                break;
            };
            if len != MSG + 3 {
                continue;
            }
            let now = (buf[0], u16::from_be_bytes([buf[1], buf[2]]));
            match seen {
                None => seen = Some(now),
                Some(first) if first != now => {
                    sh.udp_moved.fetch_add(1, Ordering::Relaxed);
                    seen = Some(now);
                }
                Some(_) => {}
            }
            if buf[3..len] == msg[..] {
                sh.done[slot].fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
                break;
            }
        }
    }
}

/// Polls the conntrack table a node's datapath pins under `pin_dir` and
/// records when each client port first appears there.
pub struct CtWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<(u8, u16), Instant>>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl CtWatch {
    pub fn start(pin_dir: PathBuf, client: Ipv4Addr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<HashMap<(u8, u16), Instant>>> = Arc::default();
        let (s, m) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            while !s.load(Ordering::Relaxed) {
                let recs = floatlb_dataplane::pinned_conntrack_dump(&pin_dir)?;
                let now = Instant::now();
                let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
                for r in recs.iter().filter(|r| r.client.src == client) {
                    g.entry((r.client.proto, r.client.sport)).or_insert(now);
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        });
        Self {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// When each flow was first seen, by (protocol, client port).
    pub fn seen(&self) -> HashMap<(u8, u16), Instant> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn stop(mut self) -> Result<HashMap<(u8, u16), Instant>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("conntrack watch panicked"))??;
        }
        Ok(self.seen())
    }
}

impl Drop for CtWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
