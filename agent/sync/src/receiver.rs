//! The BACKUP side: accepts connections from the peer, authenticates them
//! and installs what they carry into the local datapath.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::io::{Half, SessionError, kind_name};
use crate::packet::Message;
use crate::stats::SyncStats;
use crate::{FlowTable, Shared, SyncEvent, TICK};

/// Most connections served at once; more are closed at once (a legitimate
/// peer has one, plus a half-dead one while it reconnects).
const MAX_CONNECTIONS: usize = 8;

/// The newest authenticated session: a new one closes the one before (a
/// peer that died with its link down leaves a half-open connection behind),
/// and only the newest one's end reports the peer's stream as closed.
#[derive(Default)]
pub(crate) struct Current(Mutex<(u64, Option<TcpStream>)>);

pub(crate) fn listen<T: FlowTable>(
    shared: &Arc<Shared>,
    listener: TcpListener,
    table: Arc<Mutex<T>>,
) {
    let serving = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let current = Arc::new(Current::default());
    while !shared.stopping() {
        let (stream, from) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(TICK);
                continue;
            }
            Err(error) => {
                if let Some(suppressed) = shared.warn.check() {
                    tracing::warn!(%error, suppressed, "sync accept failed");
                }
                std::thread::sleep(TICK);
                continue;
            }
        };
        if serving.load(std::sync::atomic::Ordering::Relaxed) >= MAX_CONNECTIONS {
            drop(stream);
            continue;
        }
        let (shared, table, serving, current) = (
            shared.clone(),
            table.clone(),
            serving.clone(),
            current.clone(),
        );
        serving.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("sync-conn".into())
            .spawn(move || {
                match serve(&shared, stream, &table, &current) {
                    Ok(()) => {}
                    Err(error) => {
                        if let Some(suppressed) = shared.warn.check() {
                            let refused = shared.stats.snapshot().frames_refused;
                            tracing::warn!(%from, %error, refused, suppressed, "sync connection closed");
                        }
                    }
                }
                serving.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start a sync connection thread");
        }
    }
}

/// Serves one connection until it closes or sends something refused.
fn serve<T: FlowTable>(
    shared: &Shared,
    mut stream: TcpStream,
    table: &Mutex<T>,
    current: &Current,
) -> Result<(), SessionError> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(std::time::Duration::from_secs(5)))?;
    shared.track(&stream);
    let stats: &SyncStats = &shared.stats;
    let nonce: u64 = rand::random();
    let key = shared.cfg.key.clone();
    // Our Hello, MAC'd under nonce 0, carries the session nonce.
    let mut hello = Half::new(key.clone(), 0);
    hello.send(
        &mut stream,
        &Message::Hello {
            node: shared.cfg.node,
            nonce,
        },
        stats,
    )?;
    let mut out = Half::new(key.clone(), nonce);
    out.seq = 1;
    let mut inp = Half::new(key, nonce);
    let first = inp.recv(&mut stream, stats)?;
    match first.msg {
        Message::Hello { nonce: n, .. } if n == nonce => {}
        Message::Hello { .. } => {
            SyncStats::add(&stats.frames_refused, 1);
            return Err(SessionError::StaleNonce);
        }
        other => {
            SyncStats::add(&stats.frames_refused, 1);
            return Err(SessionError::NotHello(kind_name(&other)));
        }
    }
    SyncStats::add(&stats.connections, 1);
    tracing::info!(peer = %stream.peer_addr()?, "sync stream from the peer authenticated");
    let generation = {
        let mut g = current.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = g.1.take() {
            let _ = old.shutdown(std::net::Shutdown::Both);
        }
        g.0 += 1;
        g.1 = stream.try_clone().ok();
        g.0
    };
    (shared.notify)(SyncEvent::PeerStreaming(true));
    let res = session(shared, &mut stream, table, &mut inp, &mut out);
    let newest = {
        let mut g = current.0.lock().unwrap_or_else(|p| p.into_inner());
        let newest = g.0 == generation;
        if newest {
            g.1 = None;
        }
        newest
    };
    if newest {
        (shared.notify)(SyncEvent::PeerStreaming(false));
    }
    res
}

fn session<T: FlowTable>(
    shared: &Shared,
    stream: &mut TcpStream,
    table: &Mutex<T>,
    inp: &mut Half,
    out: &mut Half,
) -> Result<(), SessionError> {
    let stats: &SyncStats = &shared.stats;
    loop {
        let frame = match inp.recv(stream, stats) {
            Ok(f) => f,
            Err(SessionError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match frame.msg {
            Message::Upsert(recs) => {
                let r = table
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .upsert(&recs);
                applied(
                    shared,
                    r,
                    &stats.records_installed,
                    recs.len(),
                    "installing",
                );
            }
            Message::Delete(keys) => {
                let r = table
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .delete(&keys);
                applied(shared, r, &stats.deletes_received, keys.len(), "deleting");
            }
            Message::ResyncStart { id } => tracing::debug!(id, "bulk resync from the peer"),
            Message::ResyncEnd { id, count } => {
                SyncStats::add(&stats.resyncs_received, 1);
                out.send(stream, &Message::ResyncAck { id, count }, stats)?;
                tracing::info!(id, count, "bulk resync from the peer installed");
                (shared.notify)(SyncEvent::ResyncReceived { count });
            }
            other @ (Message::Hello { .. } | Message::ResyncAck { .. }) => {
                SyncStats::add(&stats.frames_refused, 1);
                return Err(SessionError::Unexpected(kind_name(&other)));
            }
        }
    }
}

/// Counts the outcome of applying `n` records to the local table: `done`
/// on success, an install error (logged, rate-limited) otherwise.
fn applied<E: std::fmt::Display>(
    shared: &Shared,
    r: Result<(), E>,
    done: &std::sync::atomic::AtomicU64,
    n: usize,
    what: &str,
) {
    match r {
        Ok(()) => SyncStats::add(done, n as u64),
        Err(e) => {
            SyncStats::add(&shared.stats.install_errors, 1);
            if let Some(suppressed) = shared.warn.check() {
                tracing::warn!(error = %e, suppressed, "{what} synced flows failed");
            }
        }
    }
}
