//! The MASTER side: the reports thread fills the change queue from the
//! datapath's ring buffer; the sender thread connects to the peer, sends a
//! bulk resync, then streams the queued changes.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::io::{Half, SessionError};
use crate::packet::{MAX_BATCH, Message};
use crate::queue::{Change, ChangeQueue};
use crate::stats::SyncStats;
use crate::{FlowReports, FlowTable, Shared, SyncEvent, TICK};

/// Drains the datapath's reports into the queue (MASTER only); lost
/// reports ask for a resync.
pub(crate) fn reports<P: FlowReports>(shared: &Shared, mut reports: P, queue: &ChangeQueue) {
    let mut lost_seen = reports.lost();
    while !shared.stopping() {
        let recs = reports.wait(TICK);
        let now = Instant::now();
        let lost = reports.lost();
        if lost > lost_seen {
            SyncStats::add(&shared.stats.reports_lost, lost - lost_seen);
            lost_seen = lost;
            queue.request_resync();
        }
        if shared.active.load(Ordering::Relaxed) && !recs.is_empty() {
            queue.push(
                recs.into_iter().map(|rec| Change {
                    rec,
                    reported: now,
                    delete: false,
                }),
                &shared.stats,
            );
        }
    }
}

/// Why the current connection ends.
enum End {
    Stop,
    Passive,
    Broken(SessionError),
}

pub(crate) fn run<T: FlowTable>(shared: &Arc<Shared>, mut table: T, queue: &ChangeQueue) {
    let mut resync_id = 0u32;
    while !shared.stopping() {
        if !shared.active.load(Ordering::Relaxed) {
            std::thread::sleep(TICK);
            continue;
        }
        match connect(shared) {
            Ok((stream, half)) => {
                (shared.notify)(SyncEvent::Connected(true));
                let end = stream_to(shared, stream, half, &mut table, queue, &mut resync_id);
                (shared.notify)(SyncEvent::Connected(false));
                match end {
                    End::Stop | End::Passive => {}
                    End::Broken(error) => {
                        if let Some(suppressed) = shared.warn.check() {
                            tracing::warn!(%error, suppressed, "sync stream to the peer broke; reconnecting");
                        }
                    }
                }
            }
            Err(error) => {
                if let Some(suppressed) = shared.warn.check() {
                    let refused = shared.stats.snapshot().frames_refused;
                    tracing::warn!(peer = %shared.cfg.peer, %error, refused, suppressed, "cannot reach the sync peer");
                }
                sleep_unless_stopped(shared, Duration::from_millis(250));
            }
        }
    }
}

fn sleep_unless_stopped(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while !shared.stopping() && Instant::now() < until {
        std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
    }
}

/// Connects and completes the Hello exchange.
fn connect(shared: &Shared) -> Result<(TcpStream, Half), SessionError> {
    let stats: &SyncStats = &shared.stats;
    let mut stream = TcpStream::connect_timeout(&shared.cfg.peer, Duration::from_secs(1))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    shared.track(&stream);
    let mut hello = Half::new(shared.cfg.key.clone(), 0);
    let nonce = match hello.recv(&mut stream, stats)?.msg {
        Message::Hello { nonce, .. } => nonce,
        other => {
            SyncStats::add(&stats.frames_refused, 1);
            return Err(SessionError::NotHello(crate::io::kind_name(&other)));
        }
    };
    let mut out = Half::new(shared.cfg.key.clone(), nonce);
    out.send(
        &mut stream,
        &Message::Hello {
            node: shared.cfg.node,
            nonce,
        },
        stats,
    )?;
    stream.set_read_timeout(None)?;
    SyncStats::add(&stats.connections, 1);
    Ok((stream, out))
}

/// Reads the peer's ResyncAcks on its own thread; sets `dead` when the
/// connection ends.
fn ack_reader(shared: Arc<Shared>, mut stream: TcpStream, nonce: u64, dead: Arc<AtomicBool>) {
    let mut inp = Half::new(shared.cfg.key.clone(), nonce);
    inp.seq = 1;
    while let Ok(f) = inp.recv(&mut stream, &shared.stats) {
        if let Message::ResyncAck { id, count } = f.msg {
            SyncStats::add(&shared.stats.resyncs_acked, 1);
            tracing::info!(id, count, "the peer installed our bulk resync");
            (shared.notify)(SyncEvent::PeerResynced { id, count });
        } else {
            SyncStats::add(&shared.stats.frames_refused, 1);
            break;
        }
    }
    dead.store(true, Ordering::Relaxed);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn stream_to<T: FlowTable>(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    mut out: Half,
    table: &mut T,
    queue: &ChangeQueue,
    resync_id: &mut u32,
) -> End {
    let dead = Arc::new(AtomicBool::new(false));
    match stream.try_clone() {
        Ok(rd) => {
            let (s, d, nonce) = (shared.clone(), dead.clone(), out.nonce);
            if let Err(e) = std::thread::Builder::new()
                .name("sync-acks".into())
                .spawn(move || ack_reader(s, rd, nonce, d))
            {
                return End::Broken(e.into());
            }
        }
        Err(e) => return End::Broken(e.into()),
    }
    let stats: &SyncStats = &shared.stats;
    let end = (|| {
        let mut next_refresh = Instant::now();
        loop {
            if shared.stopping() {
                return End::Stop;
            }
            if !shared.active.load(Ordering::Relaxed) {
                return End::Passive;
            }
            if dead.load(Ordering::Relaxed) {
                return End::Broken(SessionError::Io(std::io::ErrorKind::ConnectionReset.into()));
            }
            if Instant::now() >= next_refresh {
                *resync_id = resync_id.wrapping_add(1);
                if let Err(e) = resync(shared, &mut stream, &mut out, table, queue, *resync_id) {
                    return End::Broken(e);
                }
                next_refresh = Instant::now() + shared.cfg.refresh;
                continue;
            }
            let (changes, want_resync) = queue.take(MAX_BATCH, TICK, stats);
            if want_resync {
                next_refresh = Instant::now();
                continue;
            }
            if changes.is_empty() {
                continue;
            }
            // In order: each run of creations/changes is one Upsert, each
            // run of removals one Delete.
            for run in changes.chunk_by(|a, b| a.delete == b.delete) {
                let msg = if run[0].delete {
                    Message::Delete(run.iter().map(|c| c.rec.key).collect())
                } else {
                    Message::Upsert(run.iter().map(|c| c.rec).collect())
                };
                if let Err(e) = out.send(&mut stream, &msg, stats) {
                    return End::Broken(e.into());
                }
                let sent = if run[0].delete {
                    &stats.deletes_sent
                } else {
                    &stats.records_sent
                };
                SyncStats::add(sent, run.len() as u64);
            }
            let oldest = changes.iter().map(|c| c.reported).min();
            if let Some(t) = oldest {
                stats.lag(t.elapsed().as_micros() as u64);
            }
        }
    })();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    end
}

/// Sends the whole table. Queued changes are dropped first: the dump
/// covers them, and changes after it are queued anew and follow it.
fn resync<T: FlowTable>(
    shared: &Shared,
    stream: &mut TcpStream,
    out: &mut Half,
    table: &mut T,
    queue: &ChangeQueue,
    id: u32,
) -> Result<(), SessionError> {
    let stats: &SyncStats = &shared.stats;
    queue.reset(stats);
    let started = Instant::now();
    let all = table
        .dump()
        .map_err(|e| SessionError::Install(format!("dump: {e}")))?;
    out.send(stream, &Message::ResyncStart { id }, stats)?;
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, &mut *stream);
    for chunk in all.chunks(MAX_BATCH) {
        out.send(&mut w, &Message::Upsert(chunk.to_vec()), stats)?;
    }
    out.send(
        &mut w,
        &Message::ResyncEnd {
            id,
            count: all.len() as u32,
        },
        stats,
    )?;
    std::io::Write::flush(&mut w)?;
    SyncStats::add(&stats.records_sent, all.len() as u64);
    SyncStats::add(&stats.resyncs_sent, 1);
    tracing::debug!(id, records = all.len(), took = ?started.elapsed(), "bulk resync sent");
    Ok(())
}
