//! Periodic status line of the datapath's drop counters, by reason.
//!
//! A thread of its own reads the pinned drops map (so the owner task never
//! waits on it) every `every` and logs one `datapath drops` line with every
//! reason's total and what it grew by, only when something was dropped
//! since the last line: at most one line per period, none on a quiet node.
//! A growing `fib` count is the sign of forwarding turned off on the FIB
//! lookup device (see [`crate::preflight`]); the line says so.

use std::{path::PathBuf, time::Duration};

use floatlb_dataplane::DropCounters;

/// The line for a change from `last` to `now`, if anything was dropped.
pub fn describe(last: &DropCounters, now: &DropCounters) -> Option<String> {
    if now.total() <= last.total() {
        return None;
    }
    let parts: Vec<String> = now
        .by_reason()
        .iter()
        .zip(last.by_reason())
        .filter(|((_, n), _)| *n > 0)
        .map(|((reason, n), (_, before))| format!("{reason}={n} (+{})", n.saturating_sub(before)))
        .collect();
    let mut line = parts.join(" ");
    if now.fib > last.fib {
        line.push_str(
            "; fib drops: no route from the FIB lookup device, or forwarding is off on it",
        );
    }
    Some(line)
}

/// Starts the reporter thread for the datapath pinned under `pin_dir`.
pub fn spawn(pin_dir: PathBuf, every: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("drop-report".into())
        .spawn(move || {
            let mut last = DropCounters::default();
            loop {
                std::thread::sleep(every);
                match floatlb_dataplane::read_pinned_drops(&pin_dir) {
                    Ok(now) => {
                        if let Some(line) = describe(&last, &now) {
                            tracing::warn!(total = now.total(), drops = %line, "datapath drops");
                        }
                        last = now;
                    }
                    Err(error) => tracing::debug!(%error, "cannot read the drop counters"),
                }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_only_growth_and_names_every_reason_that_dropped() {
        let zero = DropCounters::default();
        assert_eq!(describe(&zero, &zero), None);
        let a = DropCounters {
            fib: 5,
            no_neigh: 1,
            ..zero
        };
        let line = describe(&zero, &a).unwrap();
        assert!(line.starts_with("no_neigh=1 (+1) fib=5 (+5)"), "{line}");
        assert!(line.contains("forwarding is off"), "{line}");
        assert_eq!(describe(&a, &a), None);
        let b = DropCounters { ttl: 2, ..a };
        let line = describe(&a, &b).unwrap();
        assert!(
            line.contains("ttl=2 (+2)") && !line.contains("forwarding"),
            "{line}"
        );
    }
}
