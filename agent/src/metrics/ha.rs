//! HA and cloud metrics, fed by the HA record log.
//!
//! [`HaMetricsSink`] subscribes to the [`RecordLog`] like the stdout lines
//! do: each transition moves the role clock and counts the transition by
//! (from, to, reason); each finished cloud job observes every call it made
//! (action, outcome, duration) and counts its retries; a successful lease
//! renewal sets the lease's expiry. The sink runs in the owner task, so it
//! only updates atomics and one small mutex.
//!
//! **Bounded reasons.** A transition's reason is free text (`action failed:
//! <the cloud's error>`); the label keeps the part before the first `:`,
//! which comes from a fixed set of literals in the HA machines.

use std::time::{Duration, Instant};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use super::{Labels, Slot};
use crate::ha::{
    cloud_worker::CloudJob,
    machine::Role,
    records::{Record, RecordLog, RecordSink},
};

/// Time spent in each role, and the lease as this node last renewed it.
#[derive(Debug, Clone)]
pub struct RoleClock {
    pub role: Role,
    pub since: Instant,
    /// Completed time per role, indexed by [`role_index`].
    pub done: [Duration; 4],
    /// When this node's lease runs out (its last renewal + the lease length).
    pub lease_until: Option<Instant>,
}

impl RoleClock {
    pub fn new(role: Role) -> Self {
        Self {
            role,
            since: Instant::now(),
            done: [Duration::ZERO; 4],
            lease_until: None,
        }
    }

    /// Seconds in each role up to `now`, with the role names.
    pub fn seconds(&self, now: Instant) -> [(&'static str, f64); 4] {
        let mut d = self.done;
        d[role_index(self.role)] += now.saturating_duration_since(self.since);
        ROLES.map(|r| (role_label(r), d[role_index(r)].as_secs_f64()))
    }

    fn enter(&mut self, role: Role, at: Instant) {
        self.done[role_index(self.role)] += at.saturating_duration_since(self.since);
        self.role = role;
        self.since = at;
    }
}

/// Every role, in label order.
pub const ROLES: [Role; 4] = [Role::Init, Role::Backup, Role::Master, Role::Fault];

pub fn role_index(r: Role) -> usize {
    match r {
        Role::Init => 0,
        Role::Backup => 1,
        Role::Master => 2,
        Role::Fault => 3,
    }
}

pub fn role_label(r: Role) -> &'static str {
    match r {
        Role::Init => "init",
        Role::Backup => "backup",
        Role::Master => "master",
        Role::Fault => "fault",
    }
}

/// The bounded label of a transition reason (see the module docs).
pub fn reason_label(reason: &str) -> String {
    let head = reason.split(':').next().unwrap_or(reason).trim();
    let head: String = head.chars().take(48).collect();
    if head.is_empty() {
        "unknown".into()
    } else {
        head
    }
}

/// The HA and cloud metric families.
#[derive(Debug, Clone)]
pub struct HaFigures {
    pub transitions: Family<Labels, Counter>,
    pub cloud_calls: Family<Labels, Histogram, fn() -> Histogram>,
    pub cloud_retries: Family<Labels, Counter>,
    pub cloud_jobs: Family<Labels, Counter>,
    pub clock: Slot<RoleClock>,
}

impl HaFigures {
    pub fn new(buckets: fn() -> Histogram) -> Self {
        Self {
            transitions: Family::default(),
            cloud_calls: Family::new_with_constructor(buckets),
            cloud_retries: Family::default(),
            cloud_jobs: Family::default(),
            clock: std::sync::Arc::new(std::sync::Mutex::new(RoleClock::new(Role::Master))),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "floatlb_ha_transitions",
            "HA role transitions by old role, new role and reason",
            self.transitions.clone(),
        );
        r.register(
            "floatlb_cloud_call_duration_seconds",
            "Duration of each cloud call attempt (EC2, netlink, gARP) by action and outcome",
            self.cloud_calls.clone(),
        );
        r.register(
            "floatlb_cloud_call_retries",
            "Cloud call attempts that failed and were retried, by action",
            self.cloud_retries.clone(),
        );
        r.register(
            "floatlb_cloud_jobs",
            "Finished cloud jobs (promote, demote, query, lease renewal) by job and result",
            self.cloud_jobs.clone(),
        );
    }

    /// A sink for the HA record log. `lease_ttl` is the length of a lease
    /// this node writes; `initial` the role before the first transition.
    pub fn sink(&self, lease_ttl: Duration, initial: Role) -> HaMetricsSink {
        *self.clock.lock().unwrap_or_else(|p| p.into_inner()) = RoleClock::new(initial);
        HaMetricsSink {
            figures: self.clone(),
            lease_ttl,
        }
    }
}

/// Feeds [`HaFigures`] from the record log.
#[derive(Debug)]
pub struct HaMetricsSink {
    figures: HaFigures,
    lease_ttl: Duration,
}

fn job_label(job: &CloudJob) -> &'static str {
    match job {
        CloudJob::Reconcile => "reconcile",
        CloudJob::Promote { .. } => "promote",
        CloudJob::Demote { .. } => "demote",
        CloudJob::Query => "query",
        CloudJob::RenewLease => "renew_lease",
        CloudJob::Release => "release",
    }
}

/// The bounded label of a cloud call name (`ec2:AssociateAddress`).
fn action_label(call: &str) -> String {
    call.chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ':' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl RecordSink for HaMetricsSink {
    fn record(&mut self, rec: Record<'_>, _log: &RecordLog) {
        let f = &self.figures;
        match rec {
            Record::Transition(t) => {
                f.transitions
                    .get_or_create(&vec![
                        ("from", role_label(t.old).to_string()),
                        ("to", role_label(t.new).to_string()),
                        ("reason", reason_label(&t.reason)),
                    ])
                    .inc();
                f.clock
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .enter(t.new, Instant::now());
            }
            Record::Cloud(c) => {
                let job = job_label(&c.job);
                let result = if c.report.ok { "ok" } else { "failed" };
                f.cloud_jobs
                    .get_or_create(&vec![("job", job.to_string()), ("result", result.into())])
                    .inc();
                for call in &c.report.calls {
                    use floatlb_cloud::CallOutcome;
                    let outcome = match &call.outcome {
                        CallOutcome::Ok => "ok",
                        CallOutcome::Retried(_) => "retried",
                        CallOutcome::Failed(_) => "failed",
                    };
                    let action = action_label(&call.call);
                    f.cloud_calls
                        .get_or_create(&vec![
                            ("action", action.clone()),
                            ("outcome", outcome.into()),
                        ])
                        .observe(call.duration_us as f64 / 1e6);
                    if matches!(call.outcome, CallOutcome::Retried(_)) {
                        f.cloud_retries
                            .get_or_create(&vec![("action", action)])
                            .inc();
                    }
                }
                if matches!(c.job, CloudJob::RenewLease) && c.report.ok {
                    f.clock
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .lease_until = Some(Instant::now() + self.lease_ttl);
                }
            }
            Record::Bfd(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_keep_their_fixed_head_only() {
        assert_eq!(
            reason_label("action failed: cloud Promote failed: throttled"),
            "action failed"
        );
        assert_eq!(reason_label("claim (PeerLost)"), "claim (PeerLost)");
        assert_eq!(reason_label(""), "unknown");
    }

    #[test]
    fn the_role_clock_adds_time_to_the_role_it_leaves() {
        let t0 = Instant::now();
        let mut c = RoleClock {
            role: Role::Backup,
            since: t0,
            done: [Duration::ZERO; 4],
            lease_until: None,
        };
        c.enter(Role::Master, t0 + Duration::from_secs(3));
        let s = c.seconds(t0 + Duration::from_secs(5));
        assert_eq!(s[1], ("backup", 3.0));
        assert_eq!(s[2], ("master", 2.0));
    }
}
