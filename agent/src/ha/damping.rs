//! Flap damping of the peer's BFD session: tells an isolated BFD outage
//! from a flapping link.
//!
//! RFC 5882 section 3.1 ("Session State Hysteresis") leaves it to the
//! implementation whether and how to hide rapid Up/Down/Up transitions of
//! a BFD session from its clients. The HA machine is such a client, and it
//! must not hide the first Down: that Down is the failure it exists to act
//! on, within tens of milliseconds. So nothing is hidden until the session
//! has shown that it flaps:
//!
//! * every Down that is not an AdminDown adds [`DOWN_PENALTY`] to a
//!   penalty that halves every half-life (`--flap-hold-down-ms`) and is
//!   capped at [`CEILING`];
//! * the link counts as *flapping* from the Down that brings the penalty to
//!   [`SUPPRESS`] until the penalty has decayed below [`REUSE`].
//!
//! Two Downs never reach [`SUPPRESS`] (the first has decayed a little by
//! the second), so a single flap followed by a real failure is acted on at
//! once. A third Down while the two before it together still weigh a full
//! Down marks the link as flapping; a session that goes Down more often
//! than once per half-life reaches it after a few Downs. Once the link stops flapping, at most two
//! half-lives pass (from the ceiling down to [`REUSE`]) before a Down is
//! acted on at once again.
//!
//! A session the peer takes to AdminDown is no flap: RFC 5882 section 3.2,
//! "The AdminDown mechanism in BFD is intended to signal that the BFD
//! session is being taken down for administrative purposes, and the
//! session state is not indicative of the liveness of the data path."
//! The machine feeds only [`crate::ha::machine::Input::BfdDown`] here,
//! never the peer's AdminDown.

use std::time::{Duration, Instant};

/// Penalty added by one Down.
pub const DOWN_PENALTY: f64 = 1.0;
/// Penalty from which the link counts as flapping.
pub const SUPPRESS: f64 = 2.0;
/// Penalty below which a flapping link counts as stable again.
pub const REUSE: f64 = 1.0;
/// Highest penalty, so a link that stops flapping is released in bounded time.
pub const CEILING: f64 = 4.0;

/// The decaying flap penalty of one session (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct FlapDamping {
    half_life: Duration,
    /// Penalty at `at`.
    penalty: f64,
    at: Option<Instant>,
    /// Set when the penalty reached [`SUPPRESS`]; holds until it decays
    /// below [`REUSE`].
    suppressed: bool,
}

impl FlapDamping {
    /// A zero half-life turns damping off: the penalty is gone at once.
    pub fn new(half_life: Duration) -> FlapDamping {
        FlapDamping {
            half_life,
            penalty: 0.0,
            at: None,
            suppressed: false,
        }
    }

    /// The penalty at `now`, decayed since the last Down.
    pub fn penalty(&self, now: Instant) -> f64 {
        let Some(at) = self.at else {
            return 0.0;
        };
        if self.half_life.is_zero() {
            return 0.0;
        }
        let halvings =
            now.saturating_duration_since(at).as_secs_f64() / self.half_life.as_secs_f64();
        self.penalty * 0.5f64.powf(halvings)
    }

    /// Records a Down at `now`; returns whether the link now counts as
    /// flapping.
    pub fn on_down(&mut self, now: Instant) -> bool {
        let before = self.penalty(now);
        if before < REUSE {
            self.suppressed = false;
        }
        self.penalty = (before + DOWN_PENALTY).min(CEILING);
        self.at = Some(now);
        if self.penalty >= SUPPRESS && !self.half_life.is_zero() {
            self.suppressed = true;
        }
        self.suppressed
    }

    /// Whether the link counts as flapping at `now`.
    pub fn flapping(&self, now: Instant) -> bool {
        self.suppressed && self.penalty(now) >= REUSE
    }

    /// When a flapping link will count as stable again if it stays quiet
    /// (`None` when it is not flapping).
    pub fn stable_at(&self, now: Instant) -> Option<Instant> {
        if !self.flapping(now) {
            return None;
        }
        let at = self.at?;
        // penalty * 2^(-t / half_life) = REUSE  =>  t = half_life * log2(penalty / REUSE)
        let t = self.half_life.as_secs_f64() * (self.penalty / REUSE).log2();
        Some(at + Duration::from_secs_f64(t.max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(2);

    /// Downs at these offsets (ms) -> whether each one left the link flapping.
    fn downs(offsets_ms: &[u64]) -> (FlapDamping, Instant, Vec<bool>) {
        let t0 = Instant::now();
        let mut d = FlapDamping::new(H);
        let flags = offsets_ms
            .iter()
            .map(|&ms| d.on_down(t0 + Duration::from_millis(ms)))
            .collect();
        (d, t0, flags)
    }

    #[test]
    fn two_downs_never_count_as_flapping() {
        for gap in [1, 40, 250, 1000, 5000] {
            let (_, _, f) = downs(&[0, gap]);
            assert_eq!(f, vec![false, false], "gap {gap} ms");
        }
    }

    #[test]
    fn a_third_down_within_the_half_life_counts_as_flapping() {
        let (_, _, f) = downs(&[0, 250, 500]);
        assert_eq!(f, vec![false, false, true]);
        // Spread over 3 half-lives the third Down is not enough.
        let (_, _, f) = downs(&[0, 3000, 6000]);
        assert_eq!(f, vec![false, false, false]);
    }

    #[test]
    fn a_session_that_goes_down_more_than_once_per_half_life_ends_up_flapping() {
        let offsets: Vec<u64> = (0..8).map(|i| i * 1500).collect();
        let (_, _, f) = downs(&offsets);
        assert!(f.iter().any(|&x| x), "{f:?}");
        assert!(f.last().copied().unwrap_or(false), "still flapping: {f:?}");
        // Once per 2.5 half-lives: never.
        let offsets: Vec<u64> = (0..8).map(|i| i * 5000).collect();
        let (_, _, f) = downs(&offsets);
        assert!(f.iter().all(|&x| !x), "{f:?}");
    }

    #[test]
    fn flapping_ends_when_the_penalty_decays_below_reuse_and_not_before() {
        let offsets: Vec<u64> = (0..20).map(|i| i * 250).collect();
        let (d, t0, _) = downs(&offsets);
        let last = t0 + Duration::from_millis(19 * 250);
        assert_eq!(d.penalty(last), CEILING);
        let stable = d.stable_at(last).unwrap();
        assert_eq!(stable - last, 2 * H, "ceiling 4 -> reuse 1 is two halvings");
        assert!(d.flapping(stable - Duration::from_millis(1)));
        assert!(!d.flapping(stable + Duration::from_millis(1)));
        // A Down after that is a first Down again.
        let mut d = d;
        assert!(!d.on_down(stable + Duration::from_millis(1)));
    }

    #[test]
    fn a_zero_half_life_never_damps() {
        let t0 = Instant::now();
        let mut d = FlapDamping::new(Duration::ZERO);
        for i in 0..10 {
            assert!(!d.on_down(t0 + Duration::from_millis(i)));
        }
        assert_eq!(d.stable_at(t0), None);
    }
}
