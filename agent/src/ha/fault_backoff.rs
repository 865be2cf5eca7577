//! How long a node stays in FAULT before it tries BACKUP again.
//!
//! A fault is often transient (a congested interface, one throttled EC2
//! call), so the first retry comes fast ([`FaultBackoff::FIRST`]); each
//! fault that follows within [`FaultBackoff::QUIET`] of the one before
//! doubles the wait, up to the configured maximum (`fault_retry`, 5 s by
//! default), so a fault that persists costs little. A node that has been
//! free of faults for `QUIET` starts again from `FIRST`.

use std::time::{Duration, Instant};

/// The FAULT retry delays (see the module docs).
#[derive(Debug, Clone)]
pub struct FaultBackoff {
    max: Duration,
    next: Duration,
    last_fault: Option<Instant>,
}

impl FaultBackoff {
    /// First wait after a fault.
    pub const FIRST: Duration = Duration::from_millis(100);
    /// Fault-free time after which the wait starts from `FIRST` again.
    pub const QUIET: Duration = Duration::from_secs(30);

    pub fn new(max: Duration) -> Self {
        FaultBackoff {
            max,
            next: Self::FIRST.min(max),
            last_fault: None,
        }
    }

    /// A fault at `now`: returns how long to wait before leaving FAULT.
    pub fn on_fault(&mut self, now: Instant) -> Duration {
        if self
            .last_fault
            .is_some_and(|t| now.saturating_duration_since(t) > Self::QUIET)
        {
            self.next = Self::FIRST.min(self.max);
        }
        self.last_fault = Some(now);
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_100_ms_to_the_max_and_restarts_after_a_quiet_spell() {
        let t0 = Instant::now();
        let mut b = FaultBackoff::new(Duration::from_secs(5));
        let waits: Vec<u64> = (0..8)
            .map(|i| {
                b.on_fault(t0 + Duration::from_secs(i))
                    .as_millis()
                    .try_into()
                    .unwrap()
            })
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let later = t0 + Duration::from_secs(8) + FaultBackoff::QUIET;
        assert_eq!(b.on_fault(later), Duration::from_millis(100));
    }

    #[test]
    fn a_max_below_the_first_step_caps_it() {
        let mut b = FaultBackoff::new(Duration::from_millis(50));
        assert_eq!(b.on_fault(Instant::now()), Duration::from_millis(50));
    }
}
