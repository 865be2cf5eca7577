//! [`BfdThread`]: the [`BfdManager`] on a dedicated OS thread with a
//! current-thread tokio runtime of its own.
//!
//! Why: RFC 5880 6.8.4: "In Asynchronous mode, the Detection Time
//! calculated in the local system is equal to the value of Detect Mult
//! received from the remote system, multiplied by the agreed transmit
//! interval of the remote system". At 10 ms x 3 the peer declares us Down
//! when no packet of ours arrives for 30 ms; with the jitter of 6.8.7 a
//! transmission that goes out ~20 ms late is already a failover. Any
//! task sharing a runtime (or an OS thread) with BFD can cause that by
//! blocking: a reload that syncs many services, a netlink dump, a slow
//! datapath call. On a thread of its own, with its receive tasks, sockets
//! and timers in its own runtime, BFD only competes with other threads
//! for the CPU.
//!
//! Shape: the owner holds a [`BfdThread`]. [`Command`]s go in over an
//! unbounded channel (never blocks the sender); state changes come out,
//! in the order the manager produced them, over a tokio mpsc channel the
//! owner awaits with [`BfdThread::recv`] (cancel-safe). Admin state changes
//! made on request arrive the same way, after the command that caused
//! them, unless the caller asked for them back directly
//! ([`BfdThread::admin_down_acked`], used where the order of the packet
//! and the caller's next step matters: the shutdown handover).
//!
//! The sessions run only from [`BfdThread::start`] on: the daemon binds
//! early (so bind errors stop it before the datapath is opened) but must
//! not let the peer see it Up, nor collect state changes, while it is
//! still loading the datapath and cannot act on them yet. Until then the
//! receive tasks queue what arrives (bounded), as they did before.
//!
//! Sockets are bound on the BFD thread, inside its runtime (a tokio socket
//! belongs to the runtime it was registered with); the outcome of binding
//! and adding the sessions is handed back before [`BfdThread::spawn`]
//! returns, so configuration and bind errors surface to the caller.
//! Dropping the handle stops the thread and joins it; the manager, its
//! receive tasks and its sockets are dropped on the thread.

use std::net::IpAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::manager::{BfdError, BfdManager, Counters, ManagerConfig, SessionInfo, StateChange};
use super::session::SessionConfig;

/// A request to the BFD thread.
#[derive(Debug)]
pub enum Command {
    /// Start running the sessions (see [`BfdThread::start`]).
    Start,
    /// Set the session to `peer` AdminDown and tell the peer at once. The
    /// resulting changes go to `ack` when given, else out as an event.
    AdminDown {
        peer: IpAddr,
        ack: Option<oneshot::Sender<Vec<StateChange>>>,
    },
    /// Re-enable an AdminDown session.
    AdminUp(IpAddr),
    /// New timers for the session to `peer` (a Poll Sequence, RFC 5880
    /// 6.8.3); the outcome goes to `ack`.
    SetTimers {
        peer: IpAddr,
        interval: Duration,
        detect_mult: u8,
        ack: oneshot::Sender<Result<(), BfdError>>,
    },
    /// A snapshot of the sessions and counters.
    Snapshot(oneshot::Sender<Snapshot>),
    /// Stop the thread (dropping the handle does the same).
    Shutdown,
}

/// Sessions and counters at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub sessions: Vec<SessionInfo>,
    pub counters: Counters,
}

/// Asks the BFD thread for [`Snapshot`]s; made by [`BfdThread::snapshotter`].
#[derive(Debug, Clone)]
pub struct Snapshotter {
    cmds: mpsc::UnboundedSender<Command>,
}

impl Snapshotter {
    /// Sessions and counters now; `None` once the thread has stopped.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Command::Snapshot(tx)).ok()?;
        rx.await.ok()
    }
}

/// Handle of the BFD thread (see the module docs).
pub struct BfdThread {
    cmds: mpsc::UnboundedSender<Command>,
    /// The changes, when no sink was given ([`BfdThread::spawn`]).
    events: Option<mpsc::UnboundedReceiver<Vec<StateChange>>>,
    thread: Option<JoinHandle<()>>,
}

/// Where the thread hands its state changes, in order, from the thread
/// itself: it must not block (an unbounded channel send, for instance).
pub type EventSink = Box<dyn Fn(Vec<StateChange>) + Send + 'static>;

impl BfdThread {
    /// Starts the thread, binds the receive sockets on it and adds
    /// `sessions`; returns once that is done, with its error if it failed.
    /// Blocks the caller for as long as binding takes (no I/O beyond
    /// `bind`).
    pub fn spawn(cfg: ManagerConfig, sessions: Vec<SessionConfig>) -> Result<Self, BfdError> {
        let (event_tx, events) = mpsc::unbounded_channel();
        let sink: EventSink = Box::new(move |changes| {
            // No receiver means the owner is shutting down; keep serving
            // the sessions until told to stop.
            let _ = event_tx.send(changes);
        });
        let mut handle = Self::spawn_with_sink(cfg, sessions, sink)?;
        handle.events = Some(events);
        Ok(handle)
    }

    /// As [`Self::spawn`], but state changes go to `sink` instead of
    /// [`Self::recv`] (the agent hands them straight to its owner task's
    /// event queue).
    pub fn spawn_with_sink(
        cfg: ManagerConfig,
        sessions: Vec<SessionConfig>,
        sink: EventSink,
    ) -> Result<Self, BfdError> {
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let io = |what: &str, source| BfdError::Io {
            what: what.into(),
            source,
        };
        let thread = std::thread::Builder::new()
            .name("bfd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(io("start the BFD runtime", e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mgr = match setup(&cfg, sessions) {
                        Ok(m) => m,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    if ready_tx.send(Ok(())).is_ok() {
                        run(mgr, cmd_rx, sink).await;
                    }
                });
            })
            .map_err(|e| io("spawn the BFD thread", e))?;
        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err(io(
                "start the BFD thread",
                std::io::Error::other("the thread ended before it was ready"),
            ))
        });
        let mut handle = BfdThread {
            cmds,
            events: None,
            thread: Some(thread),
        };
        match ready {
            Ok(()) => Ok(handle),
            Err(e) => {
                handle.stop();
                Err(e)
            }
        }
    }

    /// Lets the sessions run: transmissions, timers and received packets
    /// are processed from now on.
    pub fn start(&self) {
        let _ = self.cmds.send(Command::Start);
    }

    /// The next batch of state changes (cancel-safe). `None` once the
    /// thread has stopped, or at once when the changes go to a sink.
    pub async fn recv(&mut self) -> Option<Vec<StateChange>> {
        self.events.as_mut()?.recv().await
    }

    /// AdminDown to `peer`; the changes arrive through [`Self::recv`].
    pub fn admin_down(&self, peer: IpAddr) {
        let _ = self.cmds.send(Command::AdminDown { peer, ack: None });
    }

    /// AdminDown to `peer`, waiting (at most `limit`) until the thread has
    /// sent it; returns the changes, or `None` if the thread did not answer.
    pub async fn admin_down_acked(
        &self,
        peer: IpAddr,
        limit: Duration,
    ) -> Option<Vec<StateChange>> {
        let (ack, done) = oneshot::channel();
        let ack = Some(ack);
        self.cmds.send(Command::AdminDown { peer, ack }).ok()?;
        tokio::time::timeout(limit, done).await.ok()?.ok()
    }

    /// Re-enables `peer`; the changes arrive through [`Self::recv`].
    pub fn admin_up(&self, peer: IpAddr) {
        let _ = self.cmds.send(Command::AdminUp(peer));
    }

    /// New transmit/receive interval and detect multiplier for `peer`;
    /// `None` if the thread did not answer.
    pub async fn set_timers(
        &self,
        peer: IpAddr,
        interval: Duration,
        detect_mult: u8,
    ) -> Option<Result<(), BfdError>> {
        let (ack, done) = oneshot::channel();
        self.cmds
            .send(Command::SetTimers {
                peer,
                interval,
                detect_mult,
                ack,
            })
            .ok()?;
        done.await.ok()
    }

    /// A cloneable handle that asks this thread for snapshots (metrics
    /// read the counters without going through the agent's owner task).
    pub fn snapshotter(&self) -> Snapshotter {
        Snapshotter {
            cmds: self.cmds.clone(),
        }
    }

    /// Sessions and counters as the thread sees them now.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Command::Snapshot(tx)).ok()?;
        rx.await.ok()
    }

    /// Stops the thread and waits for it (sockets closed on return).
    pub fn stop(&mut self) {
        let _ = self.cmds.send(Command::Shutdown);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the BFD thread panicked");
        }
    }
}

impl Drop for BfdThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn setup(cfg: &ManagerConfig, sessions: Vec<SessionConfig>) -> Result<BfdManager, BfdError> {
    let mut mgr = BfdManager::bind(cfg)?;
    for s in sessions {
        mgr.add_session(s)?;
    }
    Ok(mgr)
}

/// The thread's loop: commands first, then datagrams and timers; the
/// sessions wait for [`Command::Start`].
async fn run(mut mgr: BfdManager, mut cmds: mpsc::UnboundedReceiver<Command>, events: EventSink) {
    let mut started = false;
    loop {
        let cmd = if started {
            tokio::select! {
                biased;
                cmd = cmds.recv() => cmd,
                changes = mgr.step() => {
                    emit(&events, changes);
                    continue;
                }
            }
        } else {
            cmds.recv().await
        };
        match cmd {
            None | Some(Command::Shutdown) => break,
            Some(Command::Start) => started = true,
            Some(Command::AdminDown { peer, ack }) => {
                let changes = mgr.admin_down(peer);
                match ack {
                    Some(ack) => {
                        let _ = ack.send(changes);
                    }
                    None => emit(&events, changes),
                }
            }
            Some(Command::AdminUp(peer)) => emit(&events, mgr.admin_up(peer)),
            Some(Command::SetTimers {
                peer,
                interval,
                detect_mult,
                ack,
            }) => {
                let _ = ack.send(mgr.set_timers(peer, interval, interval, detect_mult));
            }
            Some(Command::Snapshot(reply)) => {
                let _ = reply.send(snapshot(&mgr));
            }
        }
    }
    tracing::debug!("bfd thread stopping");
}

fn emit(events: &EventSink, changes: Vec<StateChange>) {
    if !changes.is_empty() {
        events(changes);
    }
}

fn snapshot(mgr: &BfdManager) -> Snapshot {
    let mut sessions: Vec<SessionInfo> = mgr
        .peers()
        .into_iter()
        .filter_map(|p| mgr.session(p))
        .collect();
    sessions.sort_by_key(|s| s.peer);
    Snapshot {
        sessions,
        counters: mgr.counters().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::tests::cfg;
    use crate::packet::{Diag, State};
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Instant;

    fn listen(port: u16) -> ManagerConfig {
        ManagerConfig {
            port,
            ipv4: Some(Ipv4Addr::UNSPECIFIED),
            ipv6: None,
        }
    }

    /// Ports from the pid (parallel test binaries) plus `slot` x 2.
    fn base(slot: u16) -> u16 {
        45000 + (std::process::id() % 10000) as u16 + 2 * slot
    }

    /// Waits (5 s at most) for a change to `state`; returns it.
    async fn wait_for(t: &mut BfdThread, state: State) -> StateChange {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let batch = tokio::time::timeout_at(deadline, t.recv())
                .await
                .unwrap_or_else(|_| panic!("no change to {state:?} within 5 s"))
                .expect("thread stopped");
            if let Some(sc) = batch.into_iter().find(|c| c.new == state) {
                return sc;
            }
        }
    }

    #[tokio::test]
    async fn two_threads_come_up_and_an_acked_admin_down_reaches_the_peer() {
        let p = base(0);
        let mut a =
            BfdThread::spawn(listen(p), vec![cfg("127.0.0.1", "127.0.0.5", p + 1)]).unwrap();
        let mut b =
            BfdThread::spawn(listen(p + 1), vec![cfg("127.0.0.5", "127.0.0.1", p)]).unwrap();
        // Not started: nothing is sent, so the peer cannot come Up.
        let idle = tokio::time::timeout(Duration::from_millis(50), a.recv()).await;
        assert!(idle.is_err(), "a change before start: {idle:?}");
        assert_eq!(a.snapshot().await.unwrap().counters.tx_ok, 0);
        a.start();
        b.start();
        wait_for(&mut a, State::Up).await;
        wait_for(&mut b, State::Up).await;
        let snap = a.snapshot().await.unwrap();
        assert_eq!(snap.sessions.len(), 1);
        assert_eq!(snap.sessions[0].state, State::Up);
        assert!(snap.counters.rx_ok > 0 && snap.counters.tx_ok > 0);

        let peer_a: IpAddr = "127.0.0.5".parse().unwrap();
        let acked = a
            .admin_down_acked(peer_a, Duration::from_secs(1))
            .await
            .expect("ack");
        let first = &acked[0];
        assert_eq!((first.old, first.new), (State::Up, State::AdminDown));
        let seen = wait_for(&mut b, State::Down).await;
        assert_eq!(
            (seen.diag, seen.remote_state),
            (Diag::NeighborDown, State::AdminDown)
        );

        // AdminUp: the change comes out as an event, then the session
        // returns Up.
        a.admin_up(peer_a);
        let resumed = wait_for(&mut a, State::Down).await;
        assert_eq!(resumed.old, State::AdminDown);
        wait_for(&mut a, State::Up).await;
    }

    #[tokio::test]
    async fn a_bad_session_fails_spawn_with_its_error() {
        let mut bad = cfg("127.0.0.1", "127.0.0.6", base(1) + 1);
        bad.detect_mult = 0;
        let err = BfdThread::spawn(listen(base(1)), vec![bad.clone(), bad])
            .err()
            .expect("spawn must fail");
        assert!(
            matches!(err, BfdError::Config { ref peer, .. } if *peer == "127.0.0.6".parse::<IpAddr>().unwrap()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn dropping_the_handle_joins_the_thread_and_closes_its_socket() {
        let p = base(2);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p));
        let t = BfdThread::spawn(listen(p), vec![]).unwrap();
        t.start();
        // The receive socket holds the port (a bind without SO_REUSEADDR fails).
        assert!(std::net::UdpSocket::bind(addr).is_err());
        let t0 = Instant::now();
        drop(t);
        println!(
            "bfd thread stopped and joined in {} us",
            t0.elapsed().as_micros()
        );
        std::net::UdpSocket::bind(addr).expect("port free after drop");
    }
}
