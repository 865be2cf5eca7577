//! Counters of the sync channel, shared between its threads and whoever
//! reports them (logs now, the metrics endpoint later): plain atomics, read
//! with [`SyncStats::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Called with each report-to-send lag, in microseconds (the agent's
/// metrics histogram).
pub type LagObserver = Box<dyn Fn(u64) + Send + Sync>;

/// Live counters (see the field docs of [`SyncSnapshot`]).
#[derive(Default)]
pub struct SyncStats {
    /// Set once by whoever exports the lag as a histogram.
    lag_observer: std::sync::OnceLock<LagObserver>,
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub frames_refused: AtomicU64,
    pub refused_bad_mac: AtomicU64,
    pub records_sent: AtomicU64,
    pub records_installed: AtomicU64,
    pub deletes_sent: AtomicU64,
    pub deletes_received: AtomicU64,
    pub install_errors: AtomicU64,
    pub resyncs_sent: AtomicU64,
    pub resyncs_acked: AtomicU64,
    pub resyncs_received: AtomicU64,
    pub queue_overflows: AtomicU64,
    pub reports_lost: AtomicU64,
    pub queue_depth: AtomicU64,
    pub report_lag_us_last: AtomicU64,
    pub report_lag_us_max: AtomicU64,
    pub connections: AtomicU64,
}

/// A copy of [`SyncStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncSnapshot {
    /// Frames written to the peer (both roles).
    pub frames_sent: u64,
    /// Authenticated frames read from the peer.
    pub frames_received: u64,
    /// Frames refused (any decode error, a wrong nonce or sequence); the
    /// connection is closed after each and nothing from it is installed.
    pub frames_refused: u64,
    /// Of those, refused for a wrong HMAC (wrong key or altered bytes).
    pub refused_bad_mac: u64,
    /// Flow records sent (changes and resyncs).
    pub records_sent: u64,
    /// Flow records installed into the local datapath.
    pub records_installed: u64,
    /// Removed flows (the MASTER's expiry sweep) sent to the peer.
    pub deletes_sent: u64,
    /// Removals received from the peer and applied to the local datapath.
    pub deletes_received: u64,
    /// Batches the local datapath refused to install.
    pub install_errors: u64,
    /// Bulk resyncs sent to the peer.
    pub resyncs_sent: u64,
    /// Bulk resyncs the peer confirmed installed.
    pub resyncs_acked: u64,
    /// Bulk resyncs received and installed.
    pub resyncs_received: u64,
    /// Change-queue overflows, each answered by a bulk resync.
    pub queue_overflows: u64,
    /// Flow reports the datapath could not deliver (ring buffer full),
    /// each burst answered by a bulk resync.
    pub reports_lost: u64,
    /// Changes waiting to be sent now.
    pub queue_depth: u64,
    /// From a flow's report by the datapath to its frame on the wire, in
    /// microseconds: the last one and the largest.
    pub report_lag_us_last: u64,
    pub report_lag_us_max: u64,
    /// Sync connections established (both roles).
    pub connections: u64,
}

impl SyncStats {
    pub fn snapshot(&self) -> SyncSnapshot {
        SyncSnapshot {
            frames_sent: self.frames_sent.load(Relaxed),
            frames_received: self.frames_received.load(Relaxed),
            frames_refused: self.frames_refused.load(Relaxed),
            refused_bad_mac: self.refused_bad_mac.load(Relaxed),
            records_sent: self.records_sent.load(Relaxed),
            records_installed: self.records_installed.load(Relaxed),
            deletes_sent: self.deletes_sent.load(Relaxed),
            deletes_received: self.deletes_received.load(Relaxed),
            install_errors: self.install_errors.load(Relaxed),
            resyncs_sent: self.resyncs_sent.load(Relaxed),
            resyncs_acked: self.resyncs_acked.load(Relaxed),
            resyncs_received: self.resyncs_received.load(Relaxed),
            queue_overflows: self.queue_overflows.load(Relaxed),
            reports_lost: self.reports_lost.load(Relaxed),
            queue_depth: self.queue_depth.load(Relaxed),
            report_lag_us_last: self.report_lag_us_last.load(Relaxed),
            report_lag_us_max: self.report_lag_us_max.load(Relaxed),
            connections: self.connections.load(Relaxed),
        }
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn lag(&self, us: u64) {
        self.report_lag_us_last.store(us, Relaxed);
        self.report_lag_us_max.fetch_max(us, Relaxed);
        if let Some(f) = self.lag_observer.get() {
            f(us);
        }
    }

    /// Hands every later lag sample to `f` too; only the first call counts.
    pub fn observe_lag(&self, f: LagObserver) {
        let _ = self.lag_observer.set(f);
    }
}

impl std::fmt::Debug for SyncStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncStats")
            .field("now", &self.snapshot())
            .finish_non_exhaustive()
    }
}
