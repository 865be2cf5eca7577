//! Transition reports: every external call a provider made, with its start
//! (offset from the start of the transition), duration and outcome.
//!
//! The report also derives the *critical path*: the longest chain of calls
//! where each call started only after the previous one had finished. Calls
//! made in parallel overlap in time and so never sit in one chain. This gives
//! the number of serial calls actually made, measured from the timestamps,
//! and a modelled failover time under a stated per-call latency model.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::CloudError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Promote,
    Demote,
    Reconcile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "detail")]
pub enum CallOutcome {
    Ok,
    /// Failed, and will be retried (the error code or message).
    Retried(String),
    /// Failed for good; the caller may still treat it as done (e.g. NotFound on delete).
    Failed(String),
}

/// One external call (one attempt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// `ec2:CreateSubnet`, `netlink:AddAddress`, `garp:Announce`, ...
    pub call: String,
    /// The resource or argument that identifies the call.
    pub target: String,
    /// True for calls that change state (they cost more in the latency model).
    pub mutating: bool,
    pub attempt: u32,
    pub start_us: u64,
    pub duration_us: u64,
    pub outcome: CallOutcome,
}

impl CallRecord {
    pub fn end_us(&self) -> u64 {
        self.start_us + self.duration_us
    }
}

/// Collects call records during one transition. Cheap to clone; clones share the log.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    action: Action,
    provider: &'static str,
    started: Instant,
    started_wall: SystemTime,
    calls: Mutex<Vec<CallRecord>>,
}

impl Recorder {
    pub fn new(action: Action, provider: &'static str) -> Self {
        Self {
            inner: Arc::new(Inner {
                action,
                provider,
                started: Instant::now(),
                started_wall: SystemTime::now(),
                calls: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Offset of `t` from the start of the transition.
    pub fn offset(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.inner.started)
    }

    pub fn record(&self, rec: CallRecord) {
        tracing::debug!(
            call = %rec.call, target = %rec.target, attempt = rec.attempt,
            duration_us = rec.duration_us, outcome = ?rec.outcome, "cloud call"
        );
        self.inner
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rec);
    }

    /// Records a call that started at `start` and ended now.
    pub fn record_span(
        &self,
        call: impl Into<String>,
        target: impl Into<String>,
        mutating: bool,
        attempt: u32,
        start: Instant,
        outcome: CallOutcome,
    ) {
        let start_us = self.offset(start).as_micros() as u64;
        let duration_us = start.elapsed().as_micros() as u64;
        self.record(CallRecord {
            call: call.into(),
            target: target.into(),
            mutating,
            attempt,
            start_us,
            duration_us,
            outcome,
        });
    }

    pub fn finish(&self, result: Result<(), CloudError>) -> TransitionReport {
        let mut calls = self
            .inner
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        calls.sort_by_key(|c| (c.start_us, c.end_us()));
        let started_unix_ms = self
            .inner
            .started_wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (ok, error) = match result {
            Ok(()) => (true, None),
            Err(e) => (false, Some(e.to_string())),
        };
        TransitionReport {
            action: self.inner.action,
            provider: self.inner.provider.to_string(),
            started_unix_ms,
            duration_us: self.inner.started.elapsed().as_micros() as u64,
            ok,
            error,
            calls,
        }
    }
}

/// The result of one promote/demote/reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionReport {
    pub action: Action,
    pub provider: String,
    pub started_unix_ms: u64,
    pub duration_us: u64,
    /// True when the provider reached the asked state.
    pub ok: bool,
    /// What failed and why, when `!ok`.
    pub error: Option<String>,
    /// Every call attempt, by start time.
    pub calls: Vec<CallRecord>,
}

/// A chain of serial calls and its cost under the latency model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticalPath {
    /// Calls in the chain (in order).
    pub calls: Vec<String>,
    pub mutating: usize,
    pub describes: usize,
    /// Modelled seconds: `mutating * mutating_s + describes * describe_s`.
    pub modelled_s: f64,
}

impl TransitionReport {
    /// Number of attempts that failed and were retried.
    pub fn retries(&self) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c.outcome, CallOutcome::Retried(_)))
            .count()
    }

    /// Calls named `name` (e.g. `ec2:AssociateAddress`).
    pub fn count(&self, name: &str) -> usize {
        self.calls.iter().filter(|c| c.call == name).count()
    }

    /// The critical path of the whole transition, or of the part that ends with
    /// the last call named `until` (e.g. the last `ec2:AssociateAddress`: the
    /// moment the EIP serves the new master). Only calls whose name starts with
    /// `prefix` (e.g. `ec2:`) count. Latency model: `mutating_s` per mutating
    /// call, `describe_s` per read.
    pub fn critical_path(
        &self,
        prefix: &str,
        until: Option<&str>,
        mutating_s: f64,
        describe_s: f64,
    ) -> CriticalPath {
        let calls: Vec<&CallRecord> = self
            .calls
            .iter()
            .filter(|c| c.call.starts_with(prefix))
            .collect();
        let cost = |c: &CallRecord| if c.mutating { mutating_s } else { describe_s };
        // Longest weighted chain ending at each call (calls are sorted by start).
        let n = calls.len();
        let mut best = vec![0.0f64; n];
        let mut prev = vec![usize::MAX; n];
        for i in 0..n {
            best[i] = cost(calls[i]);
            for j in 0..i {
                if calls[j].end_us() <= calls[i].start_us && best[j] + cost(calls[i]) > best[i] {
                    best[i] = best[j] + cost(calls[i]);
                    prev[i] = j;
                }
            }
        }
        let end = match until {
            Some(name) => (0..n).rev().find(|&i| calls[i].call == name),
            None => (0..n).max_by(|&a, &b| best[a].total_cmp(&best[b])),
        };
        let mut chain = Vec::new();
        let mut cur = end;
        while let Some(i) = cur {
            chain.push(i);
            cur = (prev[i] != usize::MAX).then_some(prev[i]);
        }
        chain.reverse();
        let mutating = chain.iter().filter(|&&i| calls[i].mutating).count();
        CriticalPath {
            calls: chain.iter().map(|&i| calls[i].call.clone()).collect(),
            mutating,
            describes: chain.len() - mutating,
            modelled_s: end.map(|i| best[i]).unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(call: &str, mutating: bool, start_us: u64, duration_us: u64) -> CallRecord {
        CallRecord {
            call: call.into(),
            target: String::new(),
            mutating,
            attempt: 1,
            start_us,
            duration_us,
            outcome: CallOutcome::Ok,
        }
    }

    fn report(calls: Vec<CallRecord>) -> TransitionReport {
        TransitionReport {
            action: Action::Promote,
            provider: "test".into(),
            started_unix_ms: 0,
            duration_us: 0,
            ok: true,
            error: None,
            calls,
        }
    }

    #[test]
    fn parallel_calls_are_one_step() {
        // describe, then three overlapping mutating calls: a chain of 2.
        let r = report(vec![
            rec("ec2:DescribeX", false, 0, 10),
            rec("ec2:A", true, 11, 10),
            rec("ec2:B", true, 12, 10),
            rec("ec2:AssociateAddress", true, 12, 10),
        ]);
        let p = r.critical_path("ec2:", Some("ec2:AssociateAddress"), 1.0, 0.2);
        assert_eq!(p.calls, vec!["ec2:DescribeX", "ec2:AssociateAddress"]);
        assert_eq!((p.mutating, p.describes), (1, 1));
        assert!((p.modelled_s - 1.2).abs() < 1e-9);
    }

    #[test]
    fn serial_calls_chain_and_filter_by_prefix() {
        let r = report(vec![
            rec("ec2:A", true, 0, 10),
            rec("netlink:X", true, 10, 5),
            rec("ec2:B", true, 20, 10),
            rec("ec2:C", true, 30, 10),
            rec("ec2:AssociateAddress", true, 25, 2),
        ]);
        let whole = r.critical_path("ec2:", None, 1.0, 0.2);
        assert_eq!(whole.calls, vec!["ec2:A", "ec2:B", "ec2:C"]);
        let eip = r.critical_path("ec2:", Some("ec2:AssociateAddress"), 1.0, 0.2);
        assert_eq!(eip.calls, vec!["ec2:A", "ec2:AssociateAddress"]);
    }

    #[test]
    fn recorder_keeps_calls_and_error() {
        let r = Recorder::new(Action::Demote, "test");
        r.record_span(
            "ec2:A",
            "x",
            true,
            1,
            Instant::now(),
            CallOutcome::Retried("Throttling".into()),
        );
        let rep = r.finish(Err(CloudError::invalid("f", "v", "bad")));
        assert!(!rep.ok);
        assert_eq!(rep.retries(), 1);
        assert_eq!(rep.error.as_deref(), Some("invalid f = v: bad"));
    }
}
