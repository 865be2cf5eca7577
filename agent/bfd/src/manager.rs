//! [`BfdManager`]: the session table, driven by one task (in the daemon,
//! the loop of [`super::thread::BfdThread`], on a thread of its own).
//!
//! The owner calls [`BfdManager::step`] in its `select!` loop; `step` waits
//! for the next datagram (from the per-socket receive tasks, over an mpsc
//! channel) or the next session timer, runs the pure handlers of
//! [`super::events`], performs the sends and returns the state changes.
//! `step` is cancel-safe: its only await points are a channel receive and
//! a sleep, and all processing after them is synchronous. State changes are
//! also published to every [`BfdManager::subscribe`] receiver.
//!
//! Demultiplexing follows RFC 5880 6.8.6: "If the Your Discriminator field
//! is nonzero, it MUST be used to select the session with which this BFD
//! packet is associated. If no session is found, the packet MUST be
//! discarded." With a zero Your Discriminator the source address selects
//! the session (single hop, RFC 5881 section 3).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::events::{self, Jitter, Output, RandomJitter};
use super::packet::{Diag, State};
use super::session::{CONTROL_PORT, ConfigError, RxError, Session, SessionConfig};
use super::tasks::{self, RxDatagram};

/// Errors of the manager API.
#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error("invalid session config for {peer}: {source}")]
    Config { peer: IpAddr, source: ConfigError },
    #[error("a session to {0} already exists")]
    DuplicatePeer(IpAddr),
    #[error("no session to {0}")]
    UnknownPeer(IpAddr),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Where the receive sockets listen.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Control port, 3784 except in tests that run two managers on one host.
    pub port: u16,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            port: CONTROL_PORT,
            ipv4: Some(Ipv4Addr::UNSPECIFIED),
            ipv6: Some(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// One session state change, as published to the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub peer: IpAddr,
    pub old: State,
    pub new: State,
    /// Our local diagnostic after the change (3 = the neighbor signaled down).
    pub diag: Diag,
    /// The state the peer last reported: `AdminDown` marks a graceful handover.
    pub remote_state: State,
    /// The peer's discriminator: unchanged across an outage means the peer
    /// process never restarted.
    pub remote_discr: u32,
    pub at: SystemTime,
    pub at_mono: Instant,
}

/// A snapshot of one session for status output and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub peer: IpAddr,
    pub state: State,
    pub remote_state: State,
    pub diag: Diag,
    pub local_discr: u32,
    pub remote_discr: u32,
    pub tx_interval_us: Option<u64>,
    pub detection_time_us: u64,
    pub poll_pending: bool,
}

/// Packet counters; error counters are keyed by the error kind.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counters {
    pub rx_ok: u64,
    pub tx_ok: u64,
    pub tx_errors: u64,
    /// Periodic packets of an Up session sent a whole transmit interval or
    /// more after their time: the owner task was blocked or not scheduled,
    /// and the peer's detection timer ran down meanwhile. A peer that
    /// declares us Down right after such a delay saw our stall, not a
    /// network fault.
    pub tx_late: u64,
    /// The largest such delay, in microseconds.
    pub tx_max_late_us: u64,
    pub decode_errors: BTreeMap<&'static str, u64>,
    pub rx_errors: BTreeMap<&'static str, u64>,
}

/// Logs a remote-triggerable event at most once per second per kind,
/// reporting how many were suppressed in between.
#[derive(Debug, Default)]
struct RateLimitedLog {
    last: HashMap<&'static str, (Instant, u64)>,
}

impl RateLimitedLog {
    fn allow(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        let entry = self
            .last
            .entry(kind)
            .or_insert((now - Duration::from_secs(2), 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            let suppressed = entry.1;
            *entry = (now, 0);
            Some(suppressed)
        } else {
            entry.1 += 1;
            None
        }
    }
}

struct Entry {
    session: Session,
    tx_sock: std::net::UdpSocket,
}

/// The BFD session table (see the module docs).
pub struct BfdManager {
    sessions: HashMap<IpAddr, Entry>,
    by_discr: HashMap<u32, IpAddr>,
    rx: mpsc::Receiver<RxDatagram>,
    rx_tasks: Vec<JoinHandle<()>>,
    /// The receive sockets, also read directly before timers run.
    rx_socks: Vec<Arc<tokio::net::UdpSocket>>,
    jitter: Box<dyn Jitter + Send>,
    counters: Counters,
    log_limit: RateLimitedLog,
    subscribers: Vec<mpsc::UnboundedSender<StateChange>>,
}

impl Drop for BfdManager {
    fn drop(&mut self) {
        for t in &self.rx_tasks {
            t.abort();
        }
    }
}

impl BfdManager {
    /// Binds the receive sockets and starts one receive task per socket.
    /// Must run inside a tokio runtime.
    pub fn bind(cfg: &ManagerConfig) -> Result<BfdManager, BfdError> {
        let (tx, rx) = mpsc::channel(1024);
        let mut rx_tasks = Vec::new();
        let mut rx_socks = Vec::new();
        let addrs = [cfg.ipv4.map(IpAddr::V4), cfg.ipv6.map(IpAddr::V6)];
        for ip in addrs.into_iter().flatten() {
            let addr = SocketAddr::new(ip, cfg.port);
            let sock = tasks::bind_rx(addr).map_err(|source| BfdError::Io {
                what: format!("bind BFD receive socket {addr}"),
                source,
            })?;
            let sock = Arc::new(sock);
            rx_socks.push(sock.clone());
            rx_tasks.push(tokio::spawn(tasks::rx_task(sock, tx.clone())));
        }
        Ok(BfdManager {
            sessions: HashMap::new(),
            by_discr: HashMap::new(),
            rx,
            rx_tasks,
            rx_socks,
            jitter: Box::new(RandomJitter),
            counters: Counters::default(),
            log_limit: RateLimitedLog::default(),
            subscribers: Vec::new(),
        })
    }

    /// A receiver of every future state change.
    pub fn subscribe(&mut self) -> mpsc::UnboundedReceiver<StateChange> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.push(tx);
        rx
    }

    /// Adds a session; it starts Down and transmits at the slow rate.
    pub fn add_session(&mut self, cfg: SessionConfig) -> Result<(), BfdError> {
        let peer = cfg.peer;
        if self.sessions.contains_key(&peer) {
            return Err(BfdError::DuplicatePeer(peer));
        }
        cfg.validate()
            .map_err(|source| BfdError::Config { peer, source })?;
        let tx_sock = tasks::bind_tx(cfg.local).map_err(|source| BfdError::Io {
            what: format!("bind BFD transmit socket on {}", cfg.local),
            source,
        })?;
        let discr = loop {
            let d: u32 = rand::random();
            if d != 0 && !self.by_discr.contains_key(&d) {
                break d;
            }
        };
        let session = Session::new(cfg, discr, Instant::now())
            .map_err(|source| BfdError::Config { peer, source })?;
        tracing::info!(%peer, local_discr = discr, "bfd session added");
        self.by_discr.insert(discr, peer);
        self.sessions.insert(peer, Entry { session, tx_sock });
        Ok(())
    }

    /// Removes a session without notice to the peer (use [`Self::admin_down`] first
    /// for a graceful stop).
    pub fn remove_session(&mut self, peer: IpAddr) -> bool {
        match self.sessions.remove(&peer) {
            Some(e) => {
                self.by_discr.remove(&e.session.local_discr);
                true
            }
            None => false,
        }
    }

    /// Sets the session AdminDown and tells the peer at once (graceful handover).
    pub fn admin_down(&mut self, peer: IpAddr) -> Vec<StateChange> {
        let now = Instant::now();
        let Some(e) = self.sessions.get_mut(&peer) else {
            return Vec::new();
        };
        let outs = events::on_admin_down(&mut e.session, Diag::AdminDown, now, &mut *self.jitter);
        self.perform(peer, outs, now)
    }

    /// Sends AdminDown on every session (shutdown).
    pub fn admin_down_all(&mut self) -> Vec<StateChange> {
        let peers: Vec<IpAddr> = self.sessions.keys().copied().collect();
        peers.into_iter().flat_map(|p| self.admin_down(p)).collect()
    }

    /// Re-enables an AdminDown session.
    pub fn admin_up(&mut self, peer: IpAddr) -> Vec<StateChange> {
        let now = Instant::now();
        let Some(e) = self.sessions.get_mut(&peer) else {
            return Vec::new();
        };
        let outs = events::on_admin_up(&mut e.session, now, &mut *self.jitter);
        self.perform(peer, outs, now)
    }

    /// Changes a session's timers; a Poll Sequence carries the change (RFC 5880 6.8.3).
    pub fn set_timers(
        &mut self,
        peer: IpAddr,
        desired_min_tx: Duration,
        required_min_rx: Duration,
        detect_mult: u8,
    ) -> Result<(), BfdError> {
        let now = Instant::now();
        let e = self
            .sessions
            .get_mut(&peer)
            .ok_or(BfdError::UnknownPeer(peer))?;
        let mut probe = e.session.cfg.clone();
        probe.desired_min_tx = desired_min_tx;
        probe.required_min_rx = required_min_rx;
        probe.detect_mult = detect_mult;
        let (tx, rx) = probe
            .validate()
            .map_err(|source| BfdError::Config { peer, source })?;
        e.session.cfg = probe;
        let outs =
            events::on_set_timers(&mut e.session, tx, rx, detect_mult, now, &mut *self.jitter);
        self.perform(peer, outs, now);
        Ok(())
    }

    pub fn session(&self, peer: IpAddr) -> Option<SessionInfo> {
        self.sessions.get(&peer).map(|e| {
            let s = &e.session;
            SessionInfo {
                peer,
                state: s.state,
                remote_state: s.remote_state,
                diag: s.local_diag,
                local_discr: s.local_discr,
                remote_discr: s.remote_discr,
                tx_interval_us: s.tx_interval().map(|d| d.as_micros() as u64),
                detection_time_us: s.detection_time().as_micros() as u64,
                poll_pending: s.poll_pending,
            }
        })
    }

    /// The peers of all sessions.
    pub fn peers(&self) -> Vec<IpAddr> {
        self.sessions.keys().copied().collect()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Earliest pending session timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|e| events::next_deadline(&e.session))
            .min()
    }

    /// Waits for the next datagram or timer and processes it (cancel-safe:
    /// the only await points are the channel receive and the sleep; all
    /// work after them is synchronous).
    ///
    /// Received datagrams always go first: before any timer runs, the queue
    /// from the receive tasks is emptied, and before a detection timer runs
    /// the sockets themselves are read too,
    /// so a process that was starved of CPU does not declare a peer Down
    /// whose packets are already waiting for it.
    pub async fn step(&mut self) -> Vec<StateChange> {
        let deadline = self.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            dg = self.rx.recv() => match dg {
                Some(dg) => {
                    let mut changes = self.handle_datagram(dg, Instant::now());
                    changes.extend(self.drain_queue());
                    changes
                }
                None => std::future::pending().await,
            },
            () = sleep => {
                let mut changes = self.drain_queue();
                let now = Instant::now();
                if self.sessions.values().any(|e| e.session.detect_deadline.is_some_and(|d| d <= now)) {
                    changes.extend(self.drain_sockets());
                }
                changes.extend(self.handle_timers(Instant::now()));
                changes
            }
        }
    }

    fn drain_queue(&mut self) -> Vec<StateChange> {
        let mut changes = Vec::new();
        while let Ok(dg) = self.rx.try_recv() {
            changes.extend(self.handle_datagram(dg, Instant::now()));
        }
        changes
    }

    fn drain_sockets(&mut self) -> Vec<StateChange> {
        let mut changes = Vec::new();
        for i in 0..self.rx_socks.len() {
            // Bounded: a flood cannot keep the timers from running.
            for _ in 0..256 {
                match tasks::try_recv(&self.rx_socks[i]) {
                    Ok(Some(dg)) => changes.extend(self.handle_datagram(dg, Instant::now())),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "bfd receive failed");
                        break;
                    }
                }
            }
        }
        changes
    }

    /// Runs every due session timer.
    pub fn handle_timers(&mut self, now: Instant) -> Vec<StateChange> {
        let due: Vec<IpAddr> = self
            .sessions
            .iter()
            .filter(|(_, e)| events::next_deadline(&e.session).is_some_and(|d| d <= now))
            .map(|(p, _)| *p)
            .collect();
        let mut changes = Vec::new();
        for peer in due {
            if let Some(e) = self.sessions.get_mut(&peer) {
                if e.session.state == State::Up
                    && let (Some(t), Some(iv)) = (e.session.next_tx, e.session.tx_interval())
                    && now.saturating_duration_since(t) >= iv
                {
                    let late_us = now.saturating_duration_since(t).as_micros() as u64;
                    self.counters.tx_late += 1;
                    self.counters.tx_max_late_us = self.counters.tx_max_late_us.max(late_us);
                    if let Some(suppressed) = self.log_limit.allow("tx_late", now) {
                        tracing::warn!(%peer, late_us, interval_us = iv.as_micros() as u64,
                            suppressed, "bfd transmit late: the owner task was blocked or not scheduled");
                    }
                }
                let outs = events::on_timers(&mut e.session, now, self.jitter.as_mut());
                changes.extend(self.perform(peer, outs, now));
            }
        }
        changes
    }

    fn count_rx_error(&mut self, err: RxError, src: SocketAddr, now: Instant) {
        *self.counters.rx_errors.entry(err.kind()).or_default() += 1;
        if let Some(suppressed) = self.log_limit.allow(err.kind(), now) {
            tracing::warn!(%src, kind = err.kind(), suppressed, error = %err, "bfd packet discarded");
        }
    }

    /// Processes one datagram from a receive task.
    pub fn handle_datagram(&mut self, dg: RxDatagram, now: Instant) -> Vec<StateChange> {
        let pkt = match dg.decoded {
            Ok(p) => p,
            Err(err) => {
                *self.counters.decode_errors.entry(err.kind()).or_default() += 1;
                if let Some(suppressed) = self.log_limit.allow(err.kind(), now) {
                    tracing::warn!(src = %dg.src, kind = err.kind(), suppressed, error = %err,
                        "malformed bfd packet");
                }
                return Vec::new();
            }
        };
        if let Some(ttl) = dg.ttl
            && ttl != 255
        {
            self.count_rx_error(RxError::BadTtl(ttl), dg.src, now);
            return Vec::new();
        }
        let peer = if pkt.your_discr != 0 {
            self.by_discr
                .get(&pkt.your_discr)
                .copied()
                .filter(|p| *p == dg.src.ip())
        } else {
            self.sessions
                .contains_key(&dg.src.ip())
                .then(|| dg.src.ip())
        };
        let Some(peer) = peer else {
            let err = RxError::NoSession {
                src: dg.src.ip(),
                your_discr: pkt.your_discr,
            };
            self.count_rx_error(err, dg.src, now);
            return Vec::new();
        };
        let Some(e) = self.sessions.get_mut(&peer) else {
            return Vec::new();
        };
        match events::on_packet(&mut e.session, &dg.bytes, &pkt, now, &mut *self.jitter) {
            Ok(outs) => {
                self.counters.rx_ok += 1;
                self.perform(peer, outs, now)
            }
            Err(err) => {
                self.count_rx_error(err, dg.src, now);
                Vec::new()
            }
        }
    }

    fn perform(&mut self, peer: IpAddr, outs: Vec<Output>, now: Instant) -> Vec<StateChange> {
        let mut changes = Vec::new();
        let Some(e) = self.sessions.get(&peer) else {
            return changes;
        };
        let dst = SocketAddr::new(peer, e.session.cfg.peer_port);
        for o in outs {
            match o {
                Output::Transmit(bytes) => match tasks::send(&e.tx_sock, &bytes, dst) {
                    Ok(()) => self.counters.tx_ok += 1,
                    Err(err) => {
                        self.counters.tx_errors += 1;
                        if self.log_limit.allow("tx_error", now).is_some() {
                            tracing::warn!(%peer, error = %err, "bfd send failed");
                        }
                    }
                },
                Output::StateChanged {
                    old,
                    new,
                    diag,
                    remote_state,
                    remote_discr,
                } => {
                    tracing::info!(%peer, %old, %new, ?diag, %remote_state, "bfd session state change");
                    let sc = StateChange {
                        peer,
                        old,
                        new,
                        diag,
                        remote_state,
                        remote_discr,
                        at: SystemTime::now(),
                        at_mono: now,
                    };
                    self.subscribers.retain(|s| s.send(sc.clone()).is_ok());
                    changes.push(sc);
                }
            }
        }
        changes
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 10 ms x 3 session from `local` to `peer` (listening on
    /// `peer_port`), for tests with real sockets on loopback.
    pub(crate) fn cfg(local: &str, peer: &str, peer_port: u16) -> SessionConfig {
        SessionConfig {
            peer: peer.parse().unwrap(),
            local: local.parse().unwrap(),
            peer_port,
            desired_min_tx: Duration::from_millis(10),
            required_min_rx: Duration::from_millis(10),
            detect_mult: 3,
            auth: None,
        }
    }

    /// Two managers on ports derived from the pid (so parallel test
    /// binaries do not collide) plus `slot` x 2 (so tests of one binary do
    /// not either).
    async fn pair(a_ip: &str, b_ip: &str, v6: bool, slot: u16) -> (BfdManager, BfdManager) {
        let mk = |port| ManagerConfig {
            port,
            ipv4: (!v6).then_some(Ipv4Addr::UNSPECIFIED),
            ipv6: v6.then_some(Ipv6Addr::UNSPECIFIED),
        };
        let base = 20000 + (std::process::id() % 20000) as u16 + 2 * slot;
        let mut a = BfdManager::bind(&mk(base)).unwrap();
        let mut b = BfdManager::bind(&mk(base + 1)).unwrap();
        a.add_session(cfg(a_ip, b_ip, base + 1)).unwrap();
        b.add_session(cfg(b_ip, a_ip, base)).unwrap();
        (a, b)
    }

    /// Drives both managers until `done` holds or 5 s pass.
    async fn drive(
        a: &mut BfdManager,
        b: &mut BfdManager,
        mut done: impl FnMut(&BfdManager, &BfdManager) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(a, b) {
            assert!(Instant::now() < deadline, "timed out");
            tokio::select! {
                _ = a.step() => {}
                _ = b.step() => {}
            }
        }
    }

    #[tokio::test]
    async fn two_managers_on_loopback_come_up_and_see_admin_down() {
        let (mut a, mut b) = pair("127.0.0.1", "127.0.0.2", false, 0).await;
        let mut a_events = a.subscribe();
        let (pa, pb): (IpAddr, IpAddr) =
            ("127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap());
        let up = |m: &BfdManager, p| {
            m.session(p)
                .is_some_and(|s| s.state == State::Up && !s.poll_pending)
        };
        drive(&mut a, &mut b, |a, b| up(a, pa) && up(b, pb)).await;
        assert_eq!(a.counters().decode_errors.len(), 0);
        assert_eq!(a.session(pa).unwrap().tx_interval_us, Some(10_000));
        b.admin_down(pb);
        drive(&mut a, &mut b, |a, _| {
            a.session(pa).unwrap().state == State::Down
        })
        .await;
        let mut last = None;
        while let Ok(sc) = a_events.try_recv() {
            last = Some(sc);
        }
        let last = last.unwrap();
        assert_eq!(
            (last.old, last.new, last.diag, last.remote_state),
            (State::Up, State::Down, Diag::NeighborDown, State::AdminDown)
        );
    }

    /// A transmission that goes out a whole interval late is counted (the
    /// owner was stalled); one on time is not.
    #[tokio::test]
    async fn a_transmission_an_interval_late_is_counted() {
        let (mut a, mut b) = pair("127.0.0.3", "127.0.0.4", false, 2).await;
        let pa: IpAddr = "127.0.0.4".parse().unwrap();
        let pb: IpAddr = "127.0.0.3".parse().unwrap();
        drive(&mut a, &mut b, |a, b| {
            a.session(pa)
                .is_some_and(|s| s.state == State::Up && !s.poll_pending)
                && b.session(pb).is_some_and(|s| s.state == State::Up)
        })
        .await;
        let due = a.sessions[&pa].session.next_tx.unwrap();
        a.handle_timers(due);
        assert_eq!(a.counters().tx_late, 0, "on time");
        let due = a.sessions[&pa].session.next_tx.unwrap();
        a.handle_timers(due + Duration::from_millis(25));
        assert_eq!(a.counters().tx_late, 1);
        assert!(a.counters().tx_max_late_us >= 25_000);
    }

    #[tokio::test]
    async fn ipv6_loopback_session_comes_up() {
        let (mut a, mut b) = pair("::1", "::1", true, 1).await;
        let p: IpAddr = "::1".parse().unwrap();
        drive(&mut a, &mut b, |a, b| {
            a.session(p).unwrap().state == State::Up && b.session(p).unwrap().state == State::Up
        })
        .await;
    }

    #[tokio::test]
    async fn received_ttl_is_read_from_the_socket_and_must_be_255() {
        let port = 41000 + (std::process::id() % 20000) as u16;
        let mut m = BfdManager::bind(&ManagerConfig {
            port,
            ipv4: Some(Ipv4Addr::LOCALHOST),
            ipv6: Some(Ipv6Addr::LOCALHOST),
        })
        .unwrap();
        // A valid Down packet for which no session exists, sent with TTL 64,
        // hop limit 7, and TTL 255: only the last passes the TTL check.
        let pkt = super::super::packet::Packet {
            diag: Diag::None,
            state: State::Down,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_discr: 99,
            your_discr: 0,
            desired_min_tx: 1_000_000,
            required_min_rx: 1_000_000,
            required_min_echo_rx: 0,
            auth: None,
        }
        .encode();
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        v4.set_ttl(64).unwrap();
        v4.send_to(&pkt, ("127.0.0.1", port)).unwrap();
        let v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
        v6.set_unicast_hops_v6(7).unwrap();
        let to: SocketAddr = (Ipv6Addr::LOCALHOST, port).into();
        v6.send_to(&pkt, &to.into()).unwrap();
        let ok = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        ok.set_ttl(255).unwrap();
        ok.send_to(&pkt, ("127.0.0.1", port)).unwrap();
        let done = |c: &Counters| {
            c.rx_errors.get("bad_ttl") == Some(&2) && c.rx_errors.get("no_session") == Some(&1)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(m.counters()) {
            assert!(Instant::now() < deadline, "counters: {:?}", m.counters());
            let _ = tokio::time::timeout(Duration::from_millis(50), m.step()).await;
        }
    }

    #[tokio::test]
    async fn malformed_and_unknown_packets_are_counted_by_kind() {
        let mut m = BfdManager::bind(&ManagerConfig {
            port: 40000 + (std::process::id() % 20000) as u16,
            ipv4: Some(Ipv4Addr::LOCALHOST),
            ipv6: None,
        })
        .unwrap();
        let src: SocketAddr = "127.0.0.9:50000".parse().unwrap();
        let now = Instant::now();
        let mk = |bytes: Vec<u8>, ttl| RxDatagram {
            src,
            ttl,
            decoded: super::super::packet::Packet::decode(&bytes),
            bytes,
        };
        m.handle_datagram(mk(vec![0x20; 5], Some(255)), now);
        m.handle_datagram(mk(vec![0x20; 5], Some(255)), now);
        let good = super::super::packet::Packet {
            diag: Diag::None,
            state: State::Down,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_discr: 1,
            your_discr: 0,
            desired_min_tx: 1_000_000,
            required_min_rx: 1_000_000,
            required_min_echo_rx: 0,
            auth: None,
        }
        .encode();
        m.handle_datagram(mk(good.clone(), Some(64)), now);
        m.handle_datagram(mk(good, Some(255)), now);
        let c = m.counters();
        assert_eq!(c.decode_errors.get("too_short"), Some(&2));
        assert_eq!(c.rx_errors.get("bad_ttl"), Some(&1));
        assert_eq!(c.rx_errors.get("no_session"), Some(&1));
        assert_eq!(c.rx_ok, 0);
    }
}
