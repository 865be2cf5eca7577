//! The lease heartbeat, both sides (see the `ha` module docs, "Lease
//! heartbeat", and docs/HA.md): a MASTER that loses BFD renews its lease
//! at once and then every `lease_watch / 3` for `2 x lease_watch`; a BACKUP
//! that loses BFD and finds the peer running with an unexpired lease reads
//! the lease every `lease_watch / 4` for `lease_watch` and claims when no
//! renewal (no new lease version) came. Part of the pure machine: no I/O,
//! every call carries `now`.

use std::time::{Duration, Instant};

use super::{Action, ClaimReason, CloudVerdict, HaMachine, Pending, Role};

/// A BACKUP's watch of the peer's lease after a BFD Down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LeaseWatch {
    /// The lease version of the first read.
    pub(super) baseline: Option<u64>,
    /// Claim on the first read issued at or after this, if nothing changed.
    pub(super) until: Instant,
    /// When the read in flight was issued.
    pub(super) issued: Instant,
}

/// A MASTER's lease heartbeat after a BFD Down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Heartbeat {
    pub(super) next: Instant,
    pub(super) until: Instant,
}

impl HaMachine {
    /// MASTER, on BFD Down: the first heartbeat renewal, and the schedule
    /// of the next ones.
    pub(super) fn start_heartbeat(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.cfg.lease_watch.is_zero() {
            return;
        }
        out.push(Action::RenewLease);
        self.heartbeat = Some(Heartbeat {
            next: now + self.heartbeat_every(),
            until: now + self.cfg.lease_watch * 2,
        });
    }

    /// The heartbeat's and the watch's timers due at `now`.
    pub(super) fn lease_timers(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.watch_poll_at.is_some_and(|t| t <= now) {
            self.watch_poll_at = None;
            if self.role() == Role::Backup && !self.bfd_up && self.pending == Pending::None {
                if let Some(w) = self.watch.as_mut() {
                    w.issued = now;
                }
                self.pending = Pending::Claim(ClaimReason::PeerLost);
                out.push(Action::QueryCloud);
            }
        }
        if let Some(h) = self.heartbeat
            && h.next <= now
        {
            if self.role() == Role::Master && !self.bfd_up && now < h.until {
                out.push(Action::RenewLease);
                self.heartbeat = Some(Heartbeat {
                    next: h.next + self.heartbeat_every(),
                    until: h.until,
                });
            } else {
                self.heartbeat = None;
            }
        }
    }

    /// Spacing of a MASTER's heartbeat renewals: three per watch window,
    /// so at least one lands inside any BACKUP's window.
    pub(super) fn heartbeat_every(&self) -> Duration {
        (self.cfg.lease_watch / 3).max(Duration::from_millis(1))
    }

    /// Spacing of a BACKUP's lease reads while it watches.
    fn watch_poll_every(&self) -> Duration {
        (self.cfg.lease_watch / 4).max(Duration::from_millis(1))
    }

    /// The lease heartbeat, BACKUP side: `v` shows the peer running and
    /// holding an unexpired lease. Right after a BFD Down, watch the lease
    /// for `lease_watch`: a renewal (a new version) means the peer lives
    /// and reaches EC2 (a partition), so the claim falls back to waiting out
    /// the lease; no renewal means it is dead or cut off from EC2, so claim
    /// now. Returns whether it handled the verdict.
    pub(super) fn on_lease_watch_verdict(
        &mut self,
        reason: ClaimReason,
        v: &CloudVerdict,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> bool {
        if reason != ClaimReason::PeerLost || self.cfg.lease_watch.is_zero() {
            return false;
        }
        let Some(down) = self.bfd_down_at else {
            return false;
        };
        let until = down + self.cfg.lease_watch;
        match self.watch {
            None => {
                // Only right after the Down: the peer's heartbeat lasts
                // 2 x lease_watch from its own Down. A later first read
                // (slow EC2, a damped claim) cannot tell; wait the lease out.
                if now >= until {
                    return false;
                }
                tracing::info!(
                    watch_ms = self.cfg.lease_watch.as_millis() as u64,
                    "peer holds the lease: watching it for a renewal after our BFD Down"
                );
                self.watch = Some(LeaseWatch {
                    baseline: v.lease_version,
                    until,
                    issued: now,
                });
            }
            Some(w) if v.lease_version != w.baseline => {
                tracing::info!(
                    "the peer renewed its lease after our BFD Down: it lives and reaches \
                     EC2 (a partition); staying BACKUP until the lease expires"
                );
                self.watch = None;
                return false;
            }
            Some(w) if w.issued >= w.until => {
                self.watch = None;
                self.claim_promote(ClaimReason::LeaseNotRenewed, v.clone(), now, out);
                return true;
            }
            Some(_) => {}
        }
        self.watch_poll_at = Some((now + self.watch_poll_every()).min(until));
        true
    }
}
