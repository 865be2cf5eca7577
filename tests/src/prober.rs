//! A client that probes a UDP service at a fixed interval and measures the
//! traffic gap of a failover.
//!
//! Each probe carries its sequence number; the echo servers of
//! [`crate::servers`] answer with their one-byte id followed by the probe.
//! Replies are kept with their receive time, so the longest silence between
//! two consecutive replies (the gap a client sees) and the probes that never
//! came back can be read off afterwards.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::netns::Netns;

/// One reply.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub seq: u64,
    pub received: Instant,
    /// Id of the endpoint that answered.
    pub endpoint: u8,
}

/// The longest silence between two consecutive replies.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    /// The last reply before the silence and the first one after it.
    pub before: Reply,
    pub after: Reply,
}

impl Gap {
    pub fn length(&self) -> Duration {
        self.after.received.duration_since(self.before.received)
    }
    /// Probes sent in between whose replies never came.
    pub fn lost(&self) -> u64 {
        self.after.seq.saturating_sub(self.before.seq + 1)
    }
}

/// A running prober; stopped when dropped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    replies: Arc<Mutex<Vec<Reply>>>,
    sent: Arc<AtomicU64>,
}

impl Prober {
    /// Starts probing `target` from inside `ns`, one probe every `every`.
    pub fn start(ns: &Netns, target: SocketAddr, every: Duration) -> Result<Self> {
        let sock = ns.enter(move || -> Result<UdpSocket> {
            let s = UdpSocket::bind("0.0.0.0:0").context("bind prober socket")?;
            s.connect(target).context("connect prober socket")?;
            Ok(s)
        })??;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let rx = sock.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(Mutex::new(Vec::with_capacity(1 << 16)));
        let sent = Arc::new(AtomicU64::new(0));
        let sender = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Errors (no route, ICMP unreachable reported on the
                    // connected socket) only mean this probe is lost.
                    let _ = sock.send(&seq.to_le_bytes());
                    seq += 1;
                    sent.store(seq, Ordering::Relaxed);
                    let next = start + every * u32::try_from(seq).unwrap_or(u32::MAX);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        };
        let receiver = {
            let (stop, replies) = (stop.clone(), replies.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = rx.recv(&mut buf)
                        && n == 9
                    {
                        let received = Instant::now();
                        let mut seq = [0u8; 8];
                        seq.copy_from_slice(&buf[1..9]);
                        replies
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Reply {
                                seq: u64::from_le_bytes(seq),
                                received,
                                endpoint: buf[0],
                            });
                    }
                }
            })
        };
        Ok(Self {
            stop,
            threads: vec![sender, receiver],
            replies,
            sent,
        })
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn replies(&self) -> Vec<Reply> {
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Number of replies received after `t`.
    pub fn replies_after(&self, t: Instant) -> usize {
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| r.received > t)
            .count()
    }

    /// Waits (bounded) until `n` replies arrived after `t`.
    pub async fn wait_replies_after(&self, t: Instant, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.replies_after(t) < n {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "the client got {} of {n} replies within {timeout:?} ({} probes sent)",
                    self.replies_after(t),
                    self.sent()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Stops the threads (idempotent).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The longest gap between consecutive replies among those received after
/// `from` (plus the last one before it), or `None` with fewer than two.
pub fn longest_gap(replies: &[Reply], from: Instant) -> Option<Gap> {
    let mut rs: Vec<Reply> = replies.to_vec();
    rs.sort_by_key(|r| r.received);
    let first = rs.iter().rposition(|r| r.received <= from).unwrap_or(0);
    rs[first..]
        .windows(2)
        .map(|w| Gap {
            before: w[0],
            after: w[1],
        })
        .max_by_key(Gap::length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_gap_spans_the_silence_and_counts_lost_probes() {
        let t0 = Instant::now();
        let r = |seq, ms| Reply {
            seq,
            received: t0 + Duration::from_millis(ms),
            endpoint: 0,
        };
        let replies = [r(0, 0), r(1, 1), r(2, 2), r(40, 41), r(41, 42), r(9, 100)];
        let g = longest_gap(&replies, t0 + Duration::from_millis(1)).unwrap();
        assert_eq!(g.before.seq, 41);
        assert_eq!(g.length(), Duration::from_millis(58));
        let g = longest_gap(&replies[..5], t0 + Duration::from_millis(1)).unwrap();
        assert_eq!((g.before.seq, g.after.seq, g.lost()), (2, 40, 37));
        assert_eq!(g.length(), Duration::from_millis(39));
        assert!(longest_gap(&replies[..1], t0).is_none());
    }
}
