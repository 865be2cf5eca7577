//! The bounded change queue between the datapath's reports and the sender.
//!
//! Memory stays bounded when the peer is slow or gone: past `capacity`
//! queued changes the queue drops them all at once and raises
//! `resync`, counted in [`SyncStats::queue_overflows`]; the sender then
//! sends a bulk resync, which carries every flow the dropped changes
//! described. Nothing is lost silently.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::packet::FlowRecord;
use crate::stats::SyncStats;

/// One change, with when it was reported: a flow created or changed (the
/// datapath's report), or removed (`delete`: the expiry sweep; only
/// `rec.key` is meaningful then).
#[derive(Debug, Clone, Copy)]
pub struct Change {
    pub rec: FlowRecord,
    pub reported: Instant,
    pub delete: bool,
}

#[derive(Default)]
struct Inner {
    q: VecDeque<Change>,
    resync: bool,
}

/// See the module docs.
pub struct ChangeQueue {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
}

impl ChangeQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues changes; on overflow drops the queue and asks for a resync.
    pub fn push(&self, changes: impl IntoIterator<Item = Change>, stats: &SyncStats) {
        let mut g = self.lock();
        for c in changes {
            if g.q.len() >= self.capacity {
                g.q.clear();
                if !g.resync {
                    SyncStats::add(&stats.queue_overflows, 1);
                }
                g.resync = true;
                continue;
            }
            if !g.resync {
                g.q.push_back(c);
            }
        }
        stats
            .queue_depth
            .store(g.q.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.ready.notify_one();
    }

    /// Asks for a bulk resync (reports were lost upstream).
    pub fn request_resync(&self) {
        let mut g = self.lock();
        g.q.clear();
        g.resync = true;
        self.ready.notify_one();
    }

    /// Drops everything queued and any pending resync request: called when
    /// a resync starts, which covers them.
    pub fn reset(&self, stats: &SyncStats) {
        let mut g = self.lock();
        g.q.clear();
        g.resync = false;
        stats
            .queue_depth
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits up to `timeout` for changes; returns up to `max` of them, and
    /// whether a resync is wanted (then no changes).
    pub fn take(&self, max: usize, timeout: Duration, stats: &SyncStats) -> (Vec<Change>, bool) {
        let mut g = self.lock();
        if g.q.is_empty() && !g.resync {
            g = self
                .ready
                .wait_timeout(g, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if g.resync {
            return (Vec::new(), true);
        }
        let n = g.q.len().min(max);
        let out: Vec<Change> = g.q.drain(..n).collect();
        stats
            .queue_depth
            .store(g.q.len() as u64, std::sync::atomic::Ordering::Relaxed);
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{FlowKey, TcpState};
    use std::net::Ipv4Addr;

    fn change(port: u16) -> Change {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        Change {
            rec: FlowRecord {
                key: FlowKey {
                    proto: 17,
                    client: a,
                    vip: a,
                    client_port: port,
                    vip_port: 53,
                },
                state: TcpState::Established,
                snat: a,
                endpoint: a,
                snat_port: port,
                endpoint_port: 53,
                idle_ms: 0,
            },
            reported: Instant::now(),
            delete: false,
        }
    }

    #[test]
    fn an_overflow_asks_for_one_counted_resync_and_keeps_memory_bounded() {
        let stats = SyncStats::default();
        let q = ChangeQueue::new(4);
        q.push((1..=3).map(change), &stats);
        assert_eq!(stats.snapshot().queue_depth, 3);
        q.push((4..=10).map(change), &stats);
        let s = stats.snapshot();
        assert_eq!((s.queue_overflows, s.queue_depth), (1, 0));
        let (got, resync) = q.take(100, Duration::ZERO, &stats);
        assert!(
            got.is_empty() && resync,
            "an overflow must ask for a resync"
        );
        q.reset(&stats);
        q.push([change(11)], &stats);
        let (got, resync) = q.take(100, Duration::ZERO, &stats);
        assert_eq!((got.len(), resync), (1, false));
        assert_eq!(stats.snapshot().queue_overflows, 1);
    }

    #[test]
    fn take_returns_changes_in_order_in_batches() {
        let stats = SyncStats::default();
        let q = ChangeQueue::new(100);
        q.push((1..=5).map(change), &stats);
        let (a, _) = q.take(3, Duration::ZERO, &stats);
        let (b, _) = q.take(3, Duration::ZERO, &stats);
        let ports: Vec<u16> = a.iter().chain(&b).map(|c| c.rec.key.client_port).collect();
        assert_eq!(ports, vec![1, 2, 3, 4, 5]);
    }
}
