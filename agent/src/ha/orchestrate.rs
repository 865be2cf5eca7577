//! The HA orchestrator: carries out what the pure [`HaMachine`] decides.
//!
//! It owns the machine, a handle to the BFD thread ([`BfdThread`]) and a
//! handle to the cloud worker, and it runs *inside* the daemon's owner
//! task: the BFD thread and the cloud worker send their results to the
//! owner's one event queue ([`crate::events`]), the owner hands them to
//! [`Orchestrator::on_bfd`] / [`Orchestrator::on_cloud`], wakes it at
//! [`Orchestrator::next_deadline`] with [`Orchestrator::on_timer`], and
//! applies the datapath commands they return. Nothing is shared or
//! locked; the datapath stays the daemon's.
//!
//! BFD itself (sockets, timers, transmissions) runs on a thread of its own
//! with its own runtime, so a slow reload or datapath call in the owner
//! task cannot delay a packet and make the peer declare us Down. The owner
//! task only sees the state changes, in order, and sends AdminDown /
//! AdminUp as commands; the changes those cause come back as events too.
//!
//! Cloud work (promote, demote, queries, lease renewal) can take seconds on
//! AWS, so it never runs in the owner task: jobs go, in order, to one
//! worker task, which runs them one after another (a demote can never
//! overtake the promote before it) and sends each result back as an event.
//!
//! Actions:
//! * `Promote`: the datapath becomes active at once, then the cloud
//!   promote runs (the datapath must already forward when the first gARP or
//!   the EIP move brings traffic).
//! * `Demote`: the datapath becomes passive, then the cloud demote runs.
//! * `SendAdminDown` / `ResumeBfd`: BFD AdminDown / AdminUp to the peer.
//! * `QueryCloud`: a provider that cannot tell (gARP, none) is answered at
//!   once with [`CloudVerdict::unknown`]; AWS is asked by the worker, through
//!   [`CloudProvider::ownership`] (EIP owner, peer instance state, lease tag),
//!   mapped by [`verdict_from_ownership`].
//! * `RenewLease`: AWS only, in the worker: [`CloudProvider::renew_lease`]
//!   for [`lease_ttl`] (3 x `verify_interval`). A failed renewal is logged;
//!   the next verify retries it.
//!
//! Policies added here, around the machine:
//! * **Startup.** A starting node is BACKUP, and a BACKUP holds nothing:
//!   before anything else the worker runs `reconcile` and then `demote`,
//!   so floating addresses left by a killed predecessor (a VIP still on the
//!   interface, answering ARP) are withdrawn.
//! * **Re-assert.** When the peer signals AdminDown while we are already
//!   MASTER (it hands back after an outage during which both were MASTER)
//!   the promote runs again: it is idempotent and, in gARP mode, announces
//!   the VIPs again so clients that followed the peer come back.
//! * **Fault.** A failed promote or demote puts the machine in FAULT (it
//!   demotes). After a backoff (100 ms, doubling up to `fault_retry`;
//!   [`FaultBackoff`]) the orchestrator reports the fault
//!   cleared and the node re-enters BACKUP and the normal claim rules.
//! * **Graceful shutdown.** A MASTER sends AdminDown (the BACKUP promotes
//!   at once), keeps forwarding for `shutdown_drain` so packets already on
//!   their way to it are not dropped, then goes passive and demotes.
//!
//! Every transition is recorded with its wall-clock time, the reason, the
//! cloud verdict behind it and, once the worker is done, the cloud
//! [`floatlb_cloud::TransitionReport`], in the [`RecordLog`] (see [`super::records`]):
//! its readers print one JSON line per record on stdout and keep the
//! state file current (written atomically by a thread of its own).

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration, time::Instant};

use floatlb_cloud::{CloudProvider, FloatingSet};
use tokio::{sync::mpsc, task::JoinHandle};

use super::assigned::{AssignInput, AssignedMachine};
pub use super::cloud_worker::{CloudDone, CloudJob, lease_ttl, verdict_from_ownership};
use super::machine::{
    Action, CloudVerdict, HaConfig, HaConfigError, HaMachine, Input, Role, Transition,
};
pub use super::records::{BfdRecord, TransitionRecord};
use super::{
    cloud_worker,
    fault_backoff::FaultBackoff,
    records::{RecordLog, StdoutLines},
    state_file::{StateFileSink, StateWriter},
};
use crate::bfd::{
    manager::{BfdError, ManagerConfig, StateChange},
    session::SessionConfig,
    thread::BfdThread,
};
use crate::events::{Event, EventRx, EventTx};

/// Bound on waiting for the BFD thread to confirm the shutdown AdminDown.
const ADMIN_DOWN_ACK: Duration = Duration::from_secs(1);

/// Errors building the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum OrchestrateError {
    #[error("HA configuration: {0}")]
    Config(#[from] HaConfigError),
    #[error("BFD: {0}")]
    Bfd(#[from] BfdError),
    #[error("cannot start the HA state file writer for {path}: {source}")]
    StateWriter {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Settings of the orchestrator.
#[derive(Debug, Clone)]
pub struct HaOptions {
    pub machine: HaConfig,
    /// The BFD session to the peer (`--ka`, `--ka-mult`); `None`: roles
    /// are assigned through the API (kube-loxilb's cistate).
    pub session: Option<SessionConfig>,
    /// Where the BFD receive sockets listen.
    pub bfd: ManagerConfig,
    /// JSON state file, rewritten atomically on every change.
    pub state_file: Option<PathBuf>,
    /// Print one JSON line per event on stdout.
    pub print_events: bool,
    /// Longest time in FAULT before trying BACKUP again; the first retry
    /// comes after 100 ms, doubling ([`FaultBackoff`]).
    pub fault_retry: Duration,
    /// How long a MASTER keeps forwarding after its shutdown AdminDown.
    pub shutdown_drain: Duration,
    /// Bound on the cloud demote at shutdown.
    pub shutdown_timeout: Duration,
}

impl HaOptions {
    /// BFD elects (`--ka`).
    pub fn new(machine: HaConfig, session: SessionConfig) -> Self {
        Self::with_session(machine, Some(session))
    }

    /// Roles come from `POST /config/cistate` (no `--ka`).
    pub fn assigned(machine: HaConfig) -> Self {
        Self::with_session(machine, None)
    }

    fn with_session(machine: HaConfig, session: Option<SessionConfig>) -> Self {
        HaOptions {
            machine,
            session,
            bfd: ManagerConfig::default(),
            state_file: None,
            print_events: true,
            fault_retry: Duration::from_secs(5),
            shutdown_drain: Duration::from_millis(200),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// What the daemon must do to its datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatapathCmd {
    SetActive(bool),
}

/// Who decides the role: the BFD election, or kube-loxilb's assignments.
enum Election {
    Bfd {
        machine: Box<HaMachine>,
        bfd: BfdThread,
        peer: IpAddr,
    },
    Assigned(AssignedMachine),
}

impl Election {
    fn role(&self) -> Role {
        match self {
            Election::Bfd { machine, .. } => machine.role(),
            Election::Assigned(m) => m.role(),
        }
    }

    fn history(&self) -> &[Transition] {
        match self {
            Election::Bfd { machine, .. } => machine.history(),
            Election::Assigned(m) => m.history(),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match self {
            Election::Bfd { machine, .. } => machine.next_deadline(),
            Election::Assigned(m) => m.next_deadline(),
        }
    }

    fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        match self {
            Election::Bfd { machine, .. } => machine.on_tick(now),
            Election::Assigned(m) => m.on_tick(now),
        }
    }

    /// One input; BFD inputs mean nothing to assigned roles.
    fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        match self {
            Election::Bfd { machine, .. } => machine.handle(input, now),
            Election::Assigned(m) => {
                let input = match input {
                    Input::Start => AssignInput::Start,
                    Input::Cloud(v) => AssignInput::Cloud(v),
                    Input::ActionFailed(why) | Input::LocalFault(why) => {
                        AssignInput::ActionFailed(why)
                    }
                    Input::FaultCleared => AssignInput::FaultCleared,
                    Input::Shutdown => AssignInput::Shutdown,
                    Input::BfdUp { .. }
                    | Input::BfdDown
                    | Input::PeerAdminDown
                    | Input::PeerSyncDone
                    | Input::PeerStreaming(_)
                    | Input::SyncConnected(_) => return Vec::new(),
                };
                m.handle(input, now)
            }
        }
    }
}

/// Why an assignment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    #[error("roles are elected by BFD (--ka); a cistate POST cannot change them")]
    Elected,
    #[error("state {0:?} cannot be assigned; only MASTER and BACKUP can")]
    NotAssignable(Role),
    #[error("no BFD session: roles are assigned (no --ka), there is nothing to time")]
    NoBfd,
    #[error("BFD: {0}")]
    Bfd(String),
}

/// The HA orchestrator (see the module docs).
pub struct Orchestrator {
    opts: HaOptions,
    election: Election,
    /// Whether the provider can answer queries (AWS); others get `unknown`.
    provider_knows: bool,
    jobs: mpsc::UnboundedSender<cloud_worker::Job>,
    /// The addresses that follow mastership now.
    set: Arc<FloatingSet>,
    worker: JoinHandle<()>,
    forwarder: JoinHandle<()>,
    outstanding: usize,
    /// The newest cloud verdict (owner, peer, lease), for status.
    last_verdict: Option<CloudVerdict>,
    records: RecordLog,
    history_seen: usize,
    fault_retry_at: Option<Instant>,
    fault_backoff: FaultBackoff,
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        self.worker.abort();
        self.forwarder.abort();
    }
}

impl Orchestrator {
    /// Starts the BFD thread with the peer session (bind errors surface
    /// here) and the cloud worker; both deliver to `events`. Must run
    /// inside a tokio runtime.
    pub fn new(
        opts: HaOptions,
        provider: Arc<dyn CloudProvider>,
        set: FloatingSet,
        events: EventTx,
    ) -> Result<Self, OrchestrateError> {
        opts.machine.validate()?;
        let election = match &opts.session {
            Some(session) => {
                let bfd_events = events.clone();
                let bfd = BfdThread::spawn_with_sink(
                    opts.bfd.clone(),
                    vec![session.clone()],
                    Box::new(move |changes| {
                        // No receiver: the owner is stopping.
                        let _ = bfd_events.send(Event::Bfd(changes));
                    }),
                )?;
                Election::Bfd {
                    machine: Box::new(HaMachine::new(opts.machine.clone())?),
                    bfd,
                    peer: session.peer,
                }
            }
            None => Election::Assigned(AssignedMachine::new(opts.machine.verify_interval)),
        };
        let provider_knows = provider.name().starts_with("aws");
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let ttl = lease_ttl(opts.machine.verify_interval);
        let mut records = RecordLog::new(opts.machine.self_id);
        if opts.print_events {
            records.subscribe(Box::new(StdoutLines));
        }
        if let Some(path) = &opts.state_file {
            let writer = StateWriter::spawn(path.clone()).map_err(|source| {
                OrchestrateError::StateWriter {
                    path: path.clone(),
                    source,
                }
            })?;
            records.subscribe(Box::new(StateFileSink::new(writer)));
        }
        let worker = tokio::spawn(cloud_worker::run(provider, ttl, jobs_rx, done_tx));
        // The worker's results join the owner's one queue.
        let forwarder = tokio::spawn(async move {
            while let Some(done) = done_rx.recv().await {
                if events.send(Event::Cloud(done)).is_err() {
                    break;
                }
            }
        });
        let fault_backoff = FaultBackoff::new(opts.fault_retry);
        Ok(Orchestrator {
            opts,
            election,
            provider_knows,
            jobs,
            set: Arc::new(set),
            worker,
            forwarder,
            outstanding: 0,
            last_verdict: None,
            records,
            history_seen: 0,
            fault_retry_at: None,
            fault_backoff,
        })
    }

    pub fn role(&self) -> Role {
        self.election.role()
    }

    /// Whether roles are assigned through the API (no `--ka`).
    pub fn is_assigned(&self) -> bool {
        matches!(self.election, Election::Assigned(_))
    }

    /// The role last assigned (cistate); `None` when BFD elects.
    pub fn assigned_role(&self) -> Option<Role> {
        match &self.election {
            Election::Assigned(m) => Some(m.wanted()),
            Election::Bfd { .. } => None,
        }
    }

    /// kube-loxilb's `POST /config/cistate`: MASTER or BACKUP. Refused
    /// when BFD elects, so an assignment can never make a second MASTER.
    pub fn assign(&mut self, role: Role) -> Result<Vec<DatapathCmd>, AssignError> {
        let Election::Assigned(m) = &mut self.election else {
            return Err(AssignError::Elected);
        };
        if !matches!(role, Role::Master | Role::Backup) {
            return Err(AssignError::NotAssignable(role));
        }
        let now = Instant::now();
        let actions = m.handle(AssignInput::Assign(role), now);
        let mut cmds = Vec::new();
        self.run_actions(actions, now, &mut cmds);
        Ok(cmds)
    }

    /// The record log (transitions, last BFD change).
    pub fn records(&self) -> &RecordLog {
        &self.records
    }

    /// Startup: withdraw leftovers (reconcile, demote), enter BACKUP, let
    /// the BFD session run.
    pub fn start(&mut self) -> Vec<DatapathCmd> {
        self.submit(CloudJob::Reconcile);
        self.submit(CloudJob::Demote { seq: 0 });
        let mut cmds = vec![DatapathCmd::SetActive(false)];
        self.feed(Input::Start, Instant::now(), &mut cmds);
        if let Election::Bfd { bfd, .. } = &self.election {
            bfd.start();
        }
        cmds
    }

    /// When [`Self::on_timer`] must run next (the machine's timers, the
    /// fault retry); `None`: no timer is armed.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.election.next_deadline(), self.fault_retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// A deadline passed.
    pub fn on_timer(&mut self) -> Vec<DatapathCmd> {
        let mut cmds = Vec::new();
        let now = Instant::now();
        if self.fault_retry_at.is_some_and(|t| t <= now) {
            self.fault_retry_at = None;
            self.feed(Input::FaultCleared, now, &mut cmds);
        }
        let actions = self.election.on_tick(now);
        self.run_actions(actions, now, &mut cmds);
        cmds
    }

    /// Graceful stop: AdminDown to the peer, drain, passive, demote
    /// (bounded). The cloud results still arrive through the owner's
    /// queue, `events`; other events are left unhandled (the agent stops).
    pub async fn shutdown(&mut self, events: &mut EventRx) -> Vec<DatapathCmd> {
        let was_master = self.election.role() == Role::Master;
        let now = Instant::now();
        let actions = self.election.handle(Input::Shutdown, now);
        let mut cmds = Vec::new();
        for a in actions {
            match a {
                Action::SendAdminDown => {
                    let Election::Bfd { bfd, peer, .. } = &self.election else {
                        continue;
                    };
                    // The drain below assumes the peer has been told:
                    // wait until the BFD thread has sent the AdminDown.
                    match bfd.admin_down_acked(*peer, ADMIN_DOWN_ACK).await {
                        Some(changes) => {
                            tracing::info!(peer = %peer, "bfd AdminDown sent (handover)");
                            self.records.push_bfd(&changes);
                        }
                        None => tracing::warn!(peer = %peer,
                            "the BFD thread did not confirm the AdminDown; draining anyway"),
                    }
                }
                Action::Demote => {
                    if was_master && !self.opts.shutdown_drain.is_zero() {
                        tokio::time::sleep(self.opts.shutdown_drain).await;
                    }
                    cmds.push(DatapathCmd::SetActive(false));
                    let seq = self.record_new_transitions();
                    self.submit(CloudJob::Demote { seq });
                }
                _ => {}
            }
        }
        self.record_new_transitions();
        let deadline = tokio::time::Instant::now() + self.opts.shutdown_timeout;
        while self.outstanding > 0 {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::Cloud(done))) => {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    self.attach_report(&done);
                }
                Ok(Some(other)) => tracing::debug!(event = ?other, "ignored while stopping"),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        outstanding = self.outstanding,
                        "cloud jobs still running at shutdown; giving up on them"
                    );
                    break;
                }
            }
        }
        self.records.finish();
        cmds
    }

    fn submit(&mut self, job: CloudJob) {
        self.submit_on(job, self.set.clone());
    }

    fn submit_on(&mut self, job: CloudJob, set: Arc<FloatingSet>) {
        if self.jobs.send((job, set)).is_ok() {
            self.outstanding += 1;
        }
    }

    /// The floating addresses now in use (services came or went). A
    /// MASTER takes the new ones and releases the ones that left, in the
    /// background: cloud work never runs inside an API request. Every
    /// later job acts on the new set.
    pub fn set_floating(&mut self, set: FloatingSet) {
        if set == *self.set {
            return;
        }
        let added = FloatingSet::new(
            set.entries()
                .iter()
                .filter(|e| !self.set.entries().contains(e))
                .copied(),
        );
        let removed = FloatingSet::new(
            self.set
                .entries()
                .iter()
                .filter(|e| !set.entries().contains(e))
                .copied(),
        );
        tracing::info!(added = ?added.entries(), removed = ?removed.entries(), "floating set changed");
        self.set = Arc::new(set);
        if self.election.role() != Role::Master {
            return;
        }
        if !removed.is_empty() {
            self.submit_on(CloudJob::Release, Arc::new(removed));
        }
        if !added.is_empty() {
            // The whole set: promote is idempotent, and a provider that
            // keeps per-set state (one VIP interface) must see all of it.
            self.submit(CloudJob::Promote { seq: 0 });
        }
    }

    /// The floating addresses now in use.
    pub fn floating(&self) -> &FloatingSet {
        &self.set
    }

    /// The newest answer of the cloud (AWS), if any was asked.
    pub fn last_verdict(&self) -> Option<&CloudVerdict> {
        self.last_verdict.as_ref()
    }

    /// A handle for reading the BFD thread's counters (metrics), with `--ka`.
    pub fn bfd_snapshotter(&self) -> Option<crate::bfd::thread::Snapshotter> {
        match &self.election {
            Election::Bfd { bfd, .. } => Some(bfd.snapshotter()),
            Election::Assigned(_) => None,
        }
    }

    /// Adds a reader of the record log (metrics).
    pub fn subscribe(&mut self, sink: Box<dyn super::records::RecordSink>) {
        self.records.subscribe(sink);
    }

    /// The length of a lease this node writes.
    pub fn lease_ttl(&self) -> Duration {
        lease_ttl(self.opts.machine.verify_interval)
    }

    /// The BFD session to the peer, with its current timers (`--ka`).
    pub fn bfd_session(&self) -> Option<&SessionConfig> {
        self.opts.session.as_ref()
    }

    /// `POST /config/bfd`: new interval and multiplier for the peer
    /// session (a Poll Sequence, so the peer agrees before they apply).
    pub async fn set_bfd_timers(
        &mut self,
        interval: Duration,
        detect_mult: u8,
    ) -> Result<(), AssignError> {
        let Election::Bfd { bfd, peer, .. } = &self.election else {
            return Err(AssignError::NoBfd);
        };
        match bfd.set_timers(*peer, interval, detect_mult).await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(AssignError::Bfd(e.to_string())),
            None => return Err(AssignError::Bfd("the BFD thread has stopped".into())),
        }
        if let Some(s) = self.opts.session.as_mut() {
            s.desired_min_tx = interval;
            s.required_min_rx = interval;
            s.detect_mult = detect_mult;
        }
        Ok(())
    }

    /// BFD state changes. Changes we caused (AdminDown / AdminUp on the
    /// machine's request) arrive here too; `Input::from_bfd` maps them to
    /// no input, so they are only recorded, as when they were returned at
    /// once.
    pub fn on_bfd(&mut self, changes: Vec<StateChange>) -> Vec<DatapathCmd> {
        let mut cmds = Vec::new();
        self.records.push_bfd(&changes);
        let Election::Bfd { peer, .. } = &self.election else {
            return cmds;
        };
        let peer = *peer;
        for sc in changes {
            if sc.peer != peer {
                continue;
            }
            let Some(input) = Input::from_bfd(&sc) else {
                continue;
            };
            if input == Input::PeerAdminDown && self.election.role() == Role::Master {
                tracing::info!(
                    "peer handed over while we are MASTER: re-asserting the floating addresses"
                );
                let seq = self.records.last_seq();
                self.submit(CloudJob::Promote { seq });
            }
            self.feed(input, sc.at_mono, &mut cmds);
        }
        cmds
    }

    /// A finished cloud job.
    pub fn on_cloud(&mut self, done: CloudDone) -> Vec<DatapathCmd> {
        let mut cmds = Vec::new();
        self.outstanding = self.outstanding.saturating_sub(1);
        self.attach_report(&done);
        let now = Instant::now();
        match done.job {
            CloudJob::Query => {
                let v = done.verdict.unwrap_or_else(CloudVerdict::unknown);
                self.last_verdict = Some(v.clone());
                self.feed(Input::Cloud(v), now, &mut cmds);
            }
            CloudJob::Promote { .. } if done.superseded => {
                tracing::info!("cloud promote stopped: a demote queued behind it supersedes it");
            }
            // Set changes (seq 0): a failure is recorded and logged; it does
            // not fault the node, whose other addresses still serve.
            CloudJob::Promote { seq: 0 } | CloudJob::Release => {
                if let Some(r) = done.report.as_ref().filter(|r| !r.ok) {
                    tracing::warn!(job = ?done.job, error = ?r.error,
                        "cloud work for a changed floating set failed; the next verify or promote retries it");
                }
            }
            CloudJob::Promote { .. } | CloudJob::Demote { .. } => {
                if let Some(r) = &done.report
                    && !r.ok
                {
                    let why = format!(
                        "cloud {:?} failed: {}",
                        r.action,
                        r.error.as_deref().unwrap_or("unknown error")
                    );
                    // A failed startup demote changes nothing about the role.
                    if !matches!(done.job, CloudJob::Demote { seq: 0 }) {
                        self.feed(Input::ActionFailed(why), now, &mut cmds);
                    } else {
                        tracing::warn!(error = %why, "startup demote failed");
                    }
                }
            }
            CloudJob::Reconcile | CloudJob::RenewLease => {}
        }
        cmds
    }

    fn attach_report(&mut self, done: &CloudDone) {
        let Some(report) = &done.report else {
            return;
        };
        let seq = match done.job {
            CloudJob::Promote { seq } | CloudJob::Demote { seq } => seq,
            _ => 0,
        };
        tracing::info!(job = ?done.job, ok = report.ok, duration_us = report.duration_us,
            calls = report.calls.len(), transient_errors = report.retries(),
            error = ?report.error, "cloud job done");
        self.records.push_cloud(seq, done.job, report);
    }

    /// Feeds one input and carries out the resulting actions, including
    /// inputs those actions produce at once (unknown cloud verdicts).
    /// An input from connection sync (`PeerSyncDone`, `PeerStreaming`).
    pub fn on_sync(&mut self, input: Input) -> Vec<DatapathCmd> {
        let mut cmds = Vec::new();
        self.feed(input, Instant::now(), &mut cmds);
        cmds
    }

    fn feed(&mut self, input: Input, now: Instant, cmds: &mut Vec<DatapathCmd>) {
        let actions = self.election.handle(input, now);
        self.run_actions(actions, now, cmds);
    }

    fn run_actions(&mut self, actions: Vec<Action>, now: Instant, cmds: &mut Vec<DatapathCmd>) {
        let seq = self.record_new_transitions();
        for a in actions {
            tracing::debug!(action = ?a, "ha action");
            match a {
                Action::Promote => {
                    cmds.push(DatapathCmd::SetActive(true));
                    self.submit(CloudJob::Promote { seq });
                }
                Action::Demote => {
                    cmds.push(DatapathCmd::SetActive(false));
                    self.submit(CloudJob::Demote { seq });
                }
                // The changes these cause come back as `Event::Bfd`.
                Action::SendAdminDown => {
                    if let Election::Bfd { bfd, peer, .. } = &self.election {
                        bfd.admin_down(*peer);
                    }
                }
                Action::ResumeBfd => {
                    if let Election::Bfd { bfd, peer, .. } = &self.election {
                        bfd.admin_up(*peer);
                    }
                }
                Action::QueryCloud => {
                    if self.provider_knows {
                        self.submit(CloudJob::Query);
                    } else {
                        self.feed(Input::Cloud(CloudVerdict::unknown()), now, cmds);
                    }
                }
                Action::RenewLease => {
                    if self.provider_knows {
                        self.submit(CloudJob::RenewLease);
                    }
                }
            }
        }
        if self.election.role() == Role::Fault && self.fault_retry_at.is_none() {
            self.fault_retry_at = Some(now + self.fault_backoff.on_fault(now));
        }
    }

    /// Turns the machine's new history entries into records; returns the
    /// sequence number of the latest record.
    fn record_new_transitions(&mut self) -> u64 {
        let history = self.election.history();
        let new: Vec<_> = history[self.history_seen..].to_vec();
        self.history_seen = history.len();
        for t in new {
            self.records.push_transition(t);
        }
        self.records.last_seq()
    }
}
