//! A failover timeline: events from several clocks (the driver's monotonic
//! clock, a provider's wall-clock [`TransitionReport`]) placed on one axis,
//! in milliseconds from a reference moment (the failure), and rendered one
//! event per line in time order.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use floatlb_cloud::{CallOutcome, TransitionReport};

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Microseconds from the reference moment (negative: before it).
    pub offset_us: i64,
    pub text: String,
}

/// Events on one axis whose zero is a reference moment.
#[derive(Debug, Clone)]
pub struct Timeline {
    zero: Instant,
    zero_unix_us: i64,
    entries: Vec<Entry>,
}

fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn signed_us(a: Instant, b: Instant) -> i64 {
    match a.checked_duration_since(b) {
        Some(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        None => -i64::try_from(b.duration_since(a).as_micros()).unwrap_or(i64::MAX),
    }
}

impl Timeline {
    /// Zero is `zero` on the monotonic clock and `zero_wall` on the wall
    /// clock (read at the same moment).
    pub fn new(zero: Instant, zero_wall: SystemTime) -> Self {
        Self {
            zero,
            zero_unix_us: unix_us(zero_wall),
            entries: Vec::new(),
        }
    }

    pub fn at(&mut self, t: Instant, text: String) {
        self.entries.push(Entry {
            offset_us: signed_us(t, self.zero),
            text,
        });
    }

    pub fn after(&mut self, d: Duration, text: String) {
        self.entries.push(Entry {
            offset_us: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            text,
        });
    }

    /// An event at a wall-clock time given in microseconds since the epoch.
    pub fn at_unix_us(&mut self, unix_us: i64, text: String) {
        self.entries.push(Entry {
            offset_us: unix_us - self.zero_unix_us,
            text,
        });
    }

    /// The transition's start, each call with its duration and outcome, and
    /// its end. The report's start has millisecond resolution, so its events
    /// are placed within 1 ms; durations are exact.
    pub fn report(&mut self, who: &str, r: &TransitionReport) {
        let base = i64::try_from(r.started_unix_ms).unwrap_or(0) * 1000;
        self.at_unix_us(
            base,
            format!("{who}: {:?} via {} starts", r.action, r.provider),
        );
        for c in &r.calls {
            let outcome = match &c.outcome {
                CallOutcome::Ok => "ok".to_string(),
                CallOutcome::Retried(e) => format!("retried: {e}"),
                CallOutcome::Failed(e) => format!("failed: {e}"),
            };
            self.at_unix_us(
                base + i64::try_from(c.start_us).unwrap_or(0),
                format!(
                    "{who}: {:<28} {:>8.1} ms  {} ({outcome})",
                    c.call,
                    c.duration_us as f64 / 1e3,
                    c.target
                ),
            );
        }
        self.at_unix_us(
            base + i64::try_from(r.duration_us).unwrap_or(0),
            format!(
                "{who}: {:?} {} after {:.1} ms ({} calls)",
                r.action,
                if r.ok { "done" } else { "FAILED" },
                r.duration_us as f64 / 1e3,
                r.calls.len()
            ),
        );
    }

    /// Entries in time order (stable for equal offsets).
    pub fn entries(&self) -> Vec<Entry> {
        let mut e = self.entries.clone();
        e.sort_by_key(|e| e.offset_us);
        e
    }

    /// One line per entry: `+   12.3 ms  text`.
    pub fn render(&self) -> String {
        self.entries()
            .iter()
            .map(|e| format!("  {:>+10.1} ms  {}\n", e.offset_us as f64 / 1e3, e.text))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floatlb_cloud::{Action, CallRecord};

    #[test]
    fn events_from_both_clocks_land_in_order_on_one_axis() {
        let zero = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_millis(1_000_000);
        let mut tl = Timeline::new(zero, wall);
        tl.at(zero + Duration::from_millis(50), "late".into());
        tl.at(zero, "kill".into());
        let report = TransitionReport {
            action: Action::Promote,
            provider: "aws-eni".into(),
            started_unix_ms: 1_000_010,
            duration_us: 7_000,
            ok: true,
            error: None,
            calls: vec![CallRecord {
                call: "ec2:AssociateAddress".into(),
                target: "eipalloc-1".into(),
                mutating: true,
                attempt: 1,
                start_us: 2_500,
                duration_us: 4_000,
                outcome: CallOutcome::Ok,
            }],
        };
        tl.report("node B", &report);
        let e = tl.entries();
        let offsets: Vec<i64> = e.iter().map(|e| e.offset_us).collect();
        assert_eq!(offsets, [0, 10_000, 12_500, 17_000, 50_000]);
        assert!(e[2].text.contains("ec2:AssociateAddress") && e[2].text.contains("4.0 ms"));
        let out = tl.render();
        assert!(
            out.lines().next().unwrap().contains("+0.0 ms  kill"),
            "{out}"
        );
        assert!(out.contains("+12.5 ms"), "{out}");
    }
}
