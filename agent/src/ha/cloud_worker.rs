//! The cloud worker: runs the orchestrator's cloud jobs one after another in
//! a task of its own (EC2 calls take seconds; the owner task must not wait)
//! and sends each result back.
//!
//! Jobs run in order, so a demote never overtakes the promote before it.
//! But a promote can be long (the gARP burst announces the VIPs for about a
//! second; on AWS a takeover is a chain of EC2 calls), and a node that is
//! demoted meanwhile (its peer came back, a flap ended in a hand-back) must
//! not go on announcing: clients would follow the announcements to a node
//! that no longer forwards. So while a promote runs, the worker keeps
//! reading the queue, and a demote that arrives stops the promote at once
//! (its future is dropped) and runs next. The stopped promote is reported as
//! `superseded`, not as a failure, so the node does not enter FAULT. Every
//! provider's promote and demote are idempotent and converge from any
//! partial state (the AWS chain is tested with an abort after each of its
//! mutating steps), which is what makes stopping one midway safe.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use floatlb_cloud::{CloudProvider, FloatingSet, Ownership, TransitionReport};
use serde::Serialize;
use tokio::sync::mpsc;

use super::machine::{CloudVerdict, Holder};

/// Work for the cloud worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudJob {
    Reconcile,
    /// Promote for the transition with this sequence number.
    Promote {
        seq: u64,
    },
    Demote {
        seq: u64,
    },
    Query,
    /// Extend this node's lease tag by the lease length
    /// ([`lease_ttl`]).
    RenewLease,
    /// Give up the job's addresses only (they left the floating set while
    /// this node is MASTER); the rest keep serving.
    Release,
}

/// A job with the floating set it acts on: the set as it was when the job
/// was submitted (the set changes as services come and go).
pub type Job = (CloudJob, Arc<FloatingSet>);

/// A finished cloud job.
#[derive(Debug)]
pub struct CloudDone {
    pub job: CloudJob,
    pub report: Option<TransitionReport>,
    pub verdict: Option<CloudVerdict>,
    /// A promote stopped because a demote was queued behind it (see the
    /// module docs); its report covers the calls made until then.
    pub superseded: bool,
}

fn holder(h: floatlb_cloud::Holder) -> Holder {
    match h {
        floatlb_cloud::Holder::Us => Holder::Us,
        floatlb_cloud::Holder::Peer => Holder::Peer,
        floatlb_cloud::Holder::Nobody => Holder::Nobody,
        floatlb_cloud::Holder::Unknown => Holder::Unknown,
    }
}

/// The machine's verdict from the provider's [`Ownership`]: owner of the
/// floating address, peer instance state and the lease tag with its time
/// left (zero once expired, which the machine treats as no lease).
pub fn verdict_from_ownership(o: &Ownership) -> CloudVerdict {
    CloudVerdict {
        owner: holder(o.owner),
        peer_running: o.peer_running,
        lease: o.lease.map(|l| (holder(l.holder), l.remaining)),
        lease_version: o.lease.map(|l| l.expires_unix_ms),
    }
}

/// Length of the lease a MASTER writes each time it re-verifies: three
/// verify intervals, so two renewals in a row may fail (a slow or
/// throttled EC2 call) before the peer may take over, and a crashed MASTER
/// is taken over at most this long after its last renewal.
pub fn lease_ttl(verify_interval: Duration) -> Duration {
    verify_interval * 3
}

/// Runs `jobs` one after another until the queue closes, sending each
/// result to `done`.
pub async fn run(
    provider: Arc<dyn CloudProvider>,
    lease_ttl: Duration,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    done: mpsc::UnboundedSender<CloudDone>,
) {
    // Jobs read from the queue while a promote ran.
    let mut ahead: VecDeque<Job> = VecDeque::new();
    loop {
        let (job, set) = match ahead.pop_front() {
            Some(j) => j,
            None => match jobs.recv().await {
                Some(j) => j,
                None => break,
            },
        };
        let mut superseded = false;
        let (report, verdict) = match job {
            CloudJob::Reconcile => (Some(provider.reconcile(&set).await), None),
            CloudJob::Promote { .. } => {
                let (report, stopped) =
                    promote_unless_demoted(&*provider, &set, &mut jobs, &mut ahead).await;
                superseded = stopped;
                (Some(report), None)
            }
            CloudJob::Demote { .. } => (Some(provider.demote(&set).await), None),
            CloudJob::Release => (Some(provider.release(&set).await), None),
            CloudJob::Query => {
                let v = match provider.ownership(&set).await {
                    Ok(o) => verdict_from_ownership(&o),
                    Err(error) => {
                        tracing::warn!(%error, "cloud ownership query failed; answering unknown");
                        CloudVerdict::unknown()
                    }
                };
                (None, Some(v))
            }
            CloudJob::RenewLease => {
                match provider.renew_lease(&set, lease_ttl).await {
                    Ok(()) => {
                        tracing::debug!(ttl_ms = lease_ttl.as_millis() as u64, "lease renewed")
                    }
                    Err(error) => tracing::warn!(%error, "lease renewal failed"),
                }
                (None, None)
            }
        };
        let msg = CloudDone {
            job,
            report,
            verdict,
            superseded,
        };
        if done.send(msg).is_err() {
            break;
        }
    }
}

/// Runs a promote while watching the queue: jobs that arrive go to `ahead`,
/// and a demote among them stops the promote. Returns the report and
/// whether the promote was stopped.
async fn promote_unless_demoted(
    provider: &dyn CloudProvider,
    set: &FloatingSet,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    ahead: &mut VecDeque<Job>,
) -> (TransitionReport, bool) {
    let promote = provider.promote(set);
    tokio::pin!(promote);
    let mut queue_open = true;
    loop {
        tokio::select! {
            report = &mut promote => return (report, false),
            next = jobs.recv(), if queue_open => match next {
                Some(j) => {
                    let demote = matches!(j.0, CloudJob::Demote { .. });
                    ahead.push_back(j);
                    if demote {
                        return (stopped_report(provider), true);
                    }
                }
                None => queue_open = false,
            },
        }
    }
}

/// The report of a promote stopped by a demote: not ok (the asked state was
/// not reached), with the reason.
fn stopped_report(provider: &dyn CloudProvider) -> TransitionReport {
    let mut r = floatlb_cloud::Recorder::new(floatlb_cloud::Action::Promote, provider.name())
        .finish(Ok(()));
    r.ok = false;
    r.error = Some("stopped: a demote queued behind it supersedes it".into());
    r
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use floatlb_cloud::{Action, CloudError, CloudStatus, NodeIdentity, NoneProvider, Recorder};

    use super::*;

    /// A provider whose promote announces for `promote_for` (like the gARP
    /// burst) and records when each call starts and ends.
    struct Slow {
        promote_for: Duration,
        log: Mutex<Vec<&'static str>>,
    }

    #[async_trait::async_trait]
    impl CloudProvider for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        async fn discover(&self) -> Result<NodeIdentity, CloudError> {
            NoneProvider.discover().await
        }
        async fn promote(&self, _set: &FloatingSet) -> TransitionReport {
            self.log.lock().unwrap().push("promote start");
            tokio::time::sleep(self.promote_for).await;
            self.log.lock().unwrap().push("promote end");
            Recorder::new(Action::Promote, "slow").finish(Ok(()))
        }
        async fn demote(&self, _set: &FloatingSet) -> TransitionReport {
            self.log.lock().unwrap().push("demote");
            Recorder::new(Action::Demote, "slow").finish(Ok(()))
        }
        async fn reconcile(&self, set: &FloatingSet) -> TransitionReport {
            NoneProvider.reconcile(set).await
        }
        async fn status(&self, set: &FloatingSet) -> Result<CloudStatus, CloudError> {
            NoneProvider.status(set).await
        }
    }

    fn start(promote_for: Duration) -> (Arc<Slow>, Jobs, mpsc::UnboundedReceiver<CloudDone>) {
        let p = Arc::new(Slow {
            promote_for,
            log: Mutex::new(Vec::new()),
        });
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (done_tx, done) = mpsc::unbounded_channel();
        tokio::spawn(run(p.clone(), Duration::from_secs(6), jobs_rx, done_tx));
        (p, Jobs(jobs), done)
    }

    /// The job queue, each job on the empty set.
    struct Jobs(mpsc::UnboundedSender<Job>);

    impl Jobs {
        fn send(&self, job: CloudJob) -> Result<(), ()> {
            let set = Arc::new(FloatingSet::new([]));
            self.0.send((job, set)).map_err(|_| ())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_demote_queued_behind_a_promote_stops_it_at_once() {
        let (p, jobs, mut done) = start(Duration::from_secs(1));
        let t0 = tokio::time::Instant::now();
        jobs.send(CloudJob::Promote { seq: 1 }).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        jobs.send(CloudJob::Demote { seq: 2 }).unwrap();
        let first = done.recv().await.unwrap();
        assert_eq!(first.job, CloudJob::Promote { seq: 1 });
        assert!(first.superseded);
        let r = first.report.unwrap();
        assert!(!r.ok && r.error.unwrap().contains("demote"));
        let second = done.recv().await.unwrap();
        assert_eq!(second.job, CloudJob::Demote { seq: 2 });
        assert!(!second.superseded && second.report.unwrap().ok);
        assert!(
            t0.elapsed() < Duration::from_millis(200),
            "the demote waited for the promote: {:?}",
            t0.elapsed()
        );
        assert_eq!(*p.log.lock().unwrap(), ["promote start", "demote"]);
    }

    #[tokio::test(start_paused = true)]
    async fn other_jobs_wait_for_the_promote_and_keep_their_order() {
        let (p, jobs, mut done) = start(Duration::from_secs(1));
        jobs.send(CloudJob::Promote { seq: 1 }).unwrap();
        jobs.send(CloudJob::RenewLease).unwrap();
        jobs.send(CloudJob::Query).unwrap();
        let got: Vec<(CloudJob, bool)> = [
            done.recv().await.unwrap(),
            done.recv().await.unwrap(),
            done.recv().await.unwrap(),
        ]
        .into_iter()
        .map(|d| (d.job, d.superseded))
        .collect();
        assert_eq!(
            got,
            [
                (CloudJob::Promote { seq: 1 }, false),
                (CloudJob::RenewLease, false),
                (CloudJob::Query, false)
            ]
        );
        assert_eq!(*p.log.lock().unwrap(), ["promote start", "promote end"]);
    }
}

#[cfg(test)]
mod verdict_tests {
    use std::time::Instant;

    use super::*;
    use crate::ha::machine::{Action, HaConfig, HaMachine, Input, Role};
    use floatlb_cloud::{Holder as CH, Lease};

    fn lease(holder: CH, remaining_ms: u64) -> Option<Lease> {
        Some(Lease {
            holder,
            expires_unix_ms: 1_800_000_000_000,
            remaining: Duration::from_millis(remaining_ms),
        })
    }

    /// Ownership as the provider reports it -> the verdict the machine
    /// decides on, one case per owner and lease shape.
    #[test]
    fn ownership_maps_to_the_full_verdict() {
        type Case = (Ownership, CloudVerdict);
        let ms = Duration::from_millis;
        let cases: Vec<Case> = vec![
            (Ownership::unknown(), CloudVerdict::unknown()),
            (
                Ownership {
                    owner: CH::Peer,
                    peer_running: Some(true),
                    lease: lease(CH::Peer, 4_000),
                },
                CloudVerdict {
                    owner: Holder::Peer,
                    peer_running: Some(true),
                    lease: Some((Holder::Peer, ms(4_000))),
                    lease_version: Some(1_800_000_000_000),
                },
            ),
            (
                Ownership {
                    owner: CH::Us,
                    peer_running: Some(false),
                    lease: lease(CH::Us, 0),
                },
                CloudVerdict {
                    owner: Holder::Us,
                    peer_running: Some(false),
                    lease: Some((Holder::Us, Duration::ZERO)),
                    lease_version: Some(1_800_000_000_000),
                },
            ),
            (
                Ownership {
                    owner: CH::Nobody,
                    peer_running: None,
                    lease: None,
                },
                CloudVerdict {
                    owner: Holder::Nobody,
                    peer_running: None,
                    lease: None,
                    lease_version: None,
                },
            ),
        ];
        for (o, want) in cases {
            assert_eq!(verdict_from_ownership(&o), want, "{o:?}");
        }
        // The machine postpones a claim on the mapped peer lease.
        let mut m = HaMachine::new(HaConfig {
            self_id: 1,
            ..HaConfig::default()
        })
        .unwrap();
        let t0 = Instant::now();
        m.handle(Input::Start, t0);
        assert_eq!(
            m.on_tick(t0 + Duration::from_secs(3)),
            vec![Action::QueryCloud]
        );
        let v = verdict_from_ownership(&Ownership {
            owner: CH::Peer,
            peer_running: Some(true),
            lease: lease(CH::Peer, 4_000),
        });
        let acts = m.handle(Input::Cloud(v), t0 + Duration::from_secs(3));
        assert_eq!((acts, m.role()), (vec![], Role::Backup));
        assert_eq!(m.next_deadline(), Some(t0 + Duration::from_secs(7)));
    }

    #[test]
    fn lease_outlives_two_missed_renewals() {
        assert_eq!(lease_ttl(Duration::from_secs(2)), Duration::from_secs(6));
    }
}
