//! Rate limiting for log lines that traffic or a peer can trigger.
//!
//! A [`RateLimit`] lets one event through per interval and counts the ones it
//! holds back, so the next line that does get through can say how many were
//! suppressed.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if a line may be logged now (`n` lines were suppressed since
    /// the last one), `None` if this one must be dropped.
    pub fn check(&mut self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    pub fn check_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_are_counted() {
        let t0 = Instant::now();
        let mut rl = RateLimit::new(Duration::from_secs(10));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(rl.check_at(at(0)), Some(0));
        assert_eq!(rl.check_at(at(1)), None);
        assert_eq!(rl.check_at(at(9)), None);
        assert_eq!(rl.check_at(at(10)), Some(2));
        assert_eq!(rl.check_at(at(25)), Some(0));
    }
}
