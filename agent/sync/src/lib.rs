//! Connection-state sync between the two nodes of a floatlb pair, so that
//! established TCP and UDP flows survive a failover and a failback.
//!
//! ```text
//!  MASTER                                         BACKUP
//!  XDP ── ring buffer ──▶ reports thread          listener thread (:22222)
//!                           │ push (bounded)        │ accept, one thread per connection
//!                           ▼                       ▼
//!                      ChangeQueue ──▶ sender ══ TCP ══▶ connection thread ──▶ FlowTable::upsert
//!                      (overflow =>    thread  ◀═ ResyncAck ═╛        (own datapath, while passive)
//!                       resync)          │
//!           owner task ◀── SyncEvent ────┴──────────────────── SyncEvent ──▶ owner task
//! ```
//!
//! * **Channel.** The MASTER's sender connects to the peer's listener
//!   (`--cluster`, TCP 22222). The listener speaks first: a Hello with a
//!   random session nonce. The sender answers with a Hello echoing it,
//!   then a bulk resync (ResyncStart, the whole table as Upserts,
//!   ResyncEnd), then every change the datapath reports, batched. The
//!   BACKUP answers each ResyncEnd with a ResyncAck once installed. Every
//!   frame is MAC'd with HMAC-SHA256 under the pre-shared key and the
//!   session nonce and numbered ([`packet`]); any refused frame is counted
//!   and closes the connection, and nothing from it is installed.
//! * **Threads.** Everything here runs on threads of its own (blocking
//!   sockets), never on the agent's owner task, which only receives
//!   [`SyncEvent`]s and flips [`SyncService::set_active`].
//! * **Bounded memory.** Changes wait in a [`queue::ChangeQueue`] of fixed
//!   capacity; an overflow (a slow or absent peer) clears it and asks for
//!   a bulk resync, counted. Reports the datapath could not deliver (its
//!   ring buffer full) are counted and answered the same way.
//! * **Resync.** On every (re)connection, on overflow, and every
//!   `refresh` interval (so that synced entries age like local ones: each
//!   record carries how long ago the MASTER last saw the flow).
//! * **Failback gating.** The sender reports [`SyncEvent::PeerResynced`]
//!   when the peer acknowledged a full resync: the HA machine hands the role
//!   back to a returning preferred node only after that.
//!
//! docs/SYNC.md has the full design, the SNAT port split and the limits.

pub mod io;
pub mod packet;
pub mod queue;
mod receiver;
mod sender;
pub mod stats;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use packet::{FlowKey, FlowRecord, SyncKey, TcpState};
pub use stats::{SyncSnapshot, SyncStats};

/// The flows of the local datapath, as the sync threads see them.
pub trait FlowTable: Send + 'static {
    type Error: std::fmt::Display;
    /// Every flow (for a bulk resync).
    fn dump(&mut self) -> Result<Vec<FlowRecord>, Self::Error>;
    /// Install or replace flows.
    fn upsert(&mut self, recs: &[FlowRecord]) -> Result<(), Self::Error>;
    /// Remove flows (unknown ones are not an error).
    fn delete(&mut self, keys: &[FlowKey]) -> Result<(), Self::Error>;
}

/// The datapath's prompt reports of new flows and state changes.
pub trait FlowReports: Send + 'static {
    /// Waits up to `timeout` for reports and returns them.
    fn wait(&mut self, timeout: Duration) -> Vec<FlowRecord>;
    /// Reports the datapath could not deliver, since it started.
    fn lost(&mut self) -> u64;
}

/// What the sync threads tell the owner task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncEvent {
    /// Sender: the peer confirmed that bulk resync `id` (`count` records)
    /// is installed.
    PeerResynced { id: u32, count: u32 },
    /// Receiver: a full table from the peer is installed.
    ResyncReceived { count: u32 },
    /// Receiver: an authenticated stream from the peer opened (true) or
    /// closed (false): the peer is MASTER and syncing to us.
    PeerStreaming(bool),
    /// Sender: our authenticated session to the peer is up (true) or
    /// ended (false).
    Connected(bool),
}

/// Settings of [`SyncService`].
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// `--self`: sent in the Hello.
    pub node: u8,
    /// Where the listener binds (`--sync-listen`).
    pub listen: SocketAddr,
    /// The peer's listener (`--cluster`, port from `--sync-peer-port`).
    pub peer: SocketAddr,
    pub key: SyncKey,
    /// Changes queued before an overflow turns into a resync.
    pub queue_capacity: usize,
    /// How often a MASTER re-sends its whole table (aging of the copies).
    pub refresh: Duration,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--sync-listen {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("sync thread: {0}")]
    Thread(std::io::Error),
}

/// Callback receiving [`SyncEvent`]s (must not block).
pub type Notify = Arc<dyn Fn(SyncEvent) + Send + Sync>;

/// Shared by the service's threads.
pub(crate) struct Shared {
    pub cfg: SyncConfig,
    pub stats: Arc<SyncStats>,
    pub active: AtomicBool,
    pub stop: AtomicBool,
    pub notify: Notify,
    /// Open sockets, shut down by [`SyncService::stop`] to unblock readers.
    pub open: Mutex<Vec<TcpStream>>,
    /// Rate limit of the refusal and connection warnings.
    pub warn: LogLimit,
}

impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn track(&self, s: &TcpStream) {
        if let Ok(c) = s.try_clone() {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.retain(|s| s.peer_addr().is_ok());
            open.push(c);
        }
    }
}

/// The running sync threads (see the module docs).
pub struct SyncService {
    shared: Arc<Shared>,
    queue: Arc<queue::ChangeQueue>,
    threads: Vec<JoinHandle<()>>,
}

/// Where the expiry sweep reports the flows it removed, so a MASTER
/// streams their removal to the peer as it happens (made by
/// [`SyncService::deletions`]; cheap to clone, usable from any thread).
#[derive(Clone)]
pub struct Deletions {
    shared: Arc<Shared>,
    queue: Arc<queue::ChangeQueue>,
}

impl std::fmt::Debug for Deletions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deletions").finish_non_exhaustive()
    }
}

impl Deletions {
    /// Queues the removal of these flows (by client tuple) for the peer;
    /// ignored while BACKUP (a BACKUP's own sweep ages its copies). Goes
    /// through the same bounded queue as the datapath's reports, in order
    /// with them.
    pub fn removed(&self, keys: impl IntoIterator<Item = FlowKey>) {
        if !self.shared.active.load(Ordering::Relaxed) {
            return;
        }
        let now = std::time::Instant::now();
        let changes = keys.into_iter().map(|key| queue::Change {
            rec: FlowRecord {
                key,
                state: TcpState::Closed,
                snat: std::net::Ipv4Addr::UNSPECIFIED,
                endpoint: std::net::Ipv4Addr::UNSPECIFIED,
                snat_port: 0,
                endpoint_port: 0,
                idle_ms: 0,
            },
            reported: now,
            delete: true,
        });
        self.queue.push(changes, &self.shared.stats);
    }
}

impl std::fmt::Debug for SyncService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncService")
            .field("listen", &self.shared.cfg.listen)
            .field("peer", &self.shared.cfg.peer)
            .finish_non_exhaustive()
    }
}

impl SyncService {
    /// Binds the listener and starts the listener, reports and sender
    /// threads. `send_table` serves the sender's dumps, `recv_table` the
    /// receiver's installs.
    pub fn start<S: FlowTable, R: FlowTable, P: FlowReports>(
        cfg: SyncConfig,
        send_table: S,
        recv_table: R,
        reports: P,
        notify: Notify,
    ) -> Result<SyncService, StartError> {
        let listener = TcpListener::bind(cfg.listen).map_err(|source| StartError::Listen {
            addr: cfg.listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| StartError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let queue = Arc::new(queue::ChangeQueue::new(cfg.queue_capacity));
        let shared = Arc::new(Shared {
            cfg,
            stats: Arc::default(),
            active: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            notify,
            open: Mutex::default(),
            warn: LogLimit::default(),
        });
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(StartError::Thread)
        };
        let table = Arc::new(Mutex::new(recv_table));
        let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
        let (q1, q2) = (queue.clone(), queue.clone());
        let threads = vec![
            spawn(
                "sync-listen",
                Box::new(move || receiver::listen(&s1, listener, table)),
            )?,
            spawn(
                "sync-reports",
                Box::new(move || sender::reports(&s2, reports, &q1)),
            )?,
            spawn(
                "sync-send",
                Box::new(move || sender::run(&s3, send_table, &q2)),
            )?,
        ];
        Ok(SyncService {
            shared,
            queue,
            threads,
        })
    }

    /// MASTER (true): stream to the peer. BACKUP (false): only receive.
    pub fn set_active(&self, active: bool) {
        self.shared.active.store(active, Ordering::Relaxed);
    }

    /// The handle the expiry sweep reports removed flows to.
    pub fn deletions(&self) -> Deletions {
        Deletions {
            shared: self.shared.clone(),
            queue: self.queue.clone(),
        }
    }

    /// The counters, live.
    pub fn stats(&self) -> Arc<SyncStats> {
        self.shared.stats.clone()
    }

    /// The address the listener bound.
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.cfg.listen
    }

    /// Stops every thread and closes every connection.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for s in self
            .shared
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a sync thread panicked");
            }
        }
    }
}

/// Polling interval of the threads' stop checks.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// One log line per interval for what the network can trigger (refused
/// frames, unreachable peer), with the count held back.
#[derive(Debug, Default)]
pub(crate) struct LogLimit(Mutex<(Option<std::time::Instant>, u64)>);

impl LogLimit {
    /// `Some(suppressed)` when a line may be logged now.
    pub(crate) fn check(&self) -> Option<u64> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match g.0 {
            Some(t) if now.duration_since(t) < Duration::from_secs(10) => {
                g.1 += 1;
                None
            }
            _ => {
                g.0 = Some(now);
                Some(std::mem::take(&mut g.1))
            }
        }
    }
}
