//! The HA orchestrator: carries out what the pure [`HaMachine`] decides.
//!
//! It owns the machine, a handle to the BFD thread ([`BfdThread`]) and a
//! handle to the cloud worker, and it runs *inside* the daemon's owner
//! task: the daemon's `select!` loop awaits [`Orchestrator::next`] (BFD
//! state changes, HA timers, finished cloud jobs) next to its own
//! messages, hands the event to [`Orchestrator::handle`], and applies the
//! datapath commands it returns. Nothing is shared or locked; the datapath
//! stays the daemon's.
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
//! [`TransitionReport`]. Records go to the log (structured `tracing`), to
//! stdout as one JSON line per event (`"event":"ha_transition"`,
//! `"ha_cloud"`, `"bfd_state"`) and to the state file (written atomically
//! by a thread of its own, only when something changed) when one is
//! configured; see [`super::state_file`].

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use floatlb_cloud::{CloudProvider, FloatingSet, TransitionReport};
use serde::Serialize;
use tokio::{sync::mpsc, task::JoinHandle};

pub use super::cloud_worker::{CloudDone, CloudJob, lease_ttl, verdict_from_ownership};
use super::machine::{Action, CloudVerdict, HaConfig, HaConfigError, HaMachine, Input, Role};
use super::{
    cloud_worker,
    fault_backoff::FaultBackoff,
    state_file::{StateFile, StateWriter},
};
use crate::bfd::{
    manager::{BfdError, ManagerConfig, StateChange},
    packet::State as BfdState,
    session::SessionConfig,
    thread::BfdThread,
};

/// Most transitions kept in memory and in the state file.
const MAX_RECORDS: usize = 200;

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
    /// The BFD session to the peer (`--ka`, `--ka-mult`).
    pub session: SessionConfig,
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
    pub fn new(machine: HaConfig, session: SessionConfig) -> Self {
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

/// One event for [`Orchestrator::handle`].
#[derive(Debug)]
pub enum HaEvent {
    Bfd(Vec<StateChange>),
    Tick,
    Cloud(CloudDone),
}

/// One recorded transition.
#[derive(Debug, Clone, Serialize)]
pub struct TransitionRecord {
    pub seq: u64,
    pub at_unix_us: u64,
    pub old: Role,
    pub new: Role,
    pub reason: String,
    pub cloud: Option<CloudVerdict>,
    /// The cloud promote/demote this transition caused, once done.
    pub report: Option<TransitionReport>,
    /// Failed attempts in `report` that were retried and did not fail it
    /// (a gARP send that hit ENOBUFS, a throttled EC2 call).
    pub transient_errors: usize,
}

/// Last BFD state of the peer session.
#[derive(Debug, Clone, Serialize)]
pub struct BfdRecord {
    pub peer: IpAddr,
    pub old: BfdState,
    pub new: BfdState,
    pub remote_state: BfdState,
    pub diag: crate::bfd::packet::Diag,
    pub at_unix_us: u64,
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Wall-clock time of a monotonic instant in the recent past.
fn wall_of(at: Instant) -> SystemTime {
    let now = Instant::now();
    SystemTime::now() - now.saturating_duration_since(at)
}

/// The HA orchestrator (see the module docs).
pub struct Orchestrator {
    opts: HaOptions,
    machine: HaMachine,
    bfd: BfdThread,
    peer: IpAddr,
    /// Whether the provider can answer queries (AWS); others get `unknown`.
    provider_knows: bool,
    jobs: mpsc::UnboundedSender<CloudJob>,
    done: mpsc::UnboundedReceiver<CloudDone>,
    worker: JoinHandle<()>,
    outstanding: usize,
    records: Vec<TransitionRecord>,
    next_seq: u64,
    history_seen: usize,
    bfd_last: Option<BfdRecord>,
    fault_retry_at: Option<Instant>,
    fault_backoff: FaultBackoff,
    /// Writes `--ha-state-file` off the owner task.
    state_writer: Option<StateWriter>,
    /// The state file's content changed since it was last published.
    state_dirty: bool,
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

impl Orchestrator {
    /// Starts the BFD thread with the peer session (bind errors surface
    /// here) and the cloud worker. Must run inside a tokio runtime.
    pub fn new(
        opts: HaOptions,
        provider: Arc<dyn CloudProvider>,
        set: FloatingSet,
    ) -> Result<Self, OrchestrateError> {
        let machine = HaMachine::new(opts.machine.clone())?;
        let fault_backoff = FaultBackoff::new(opts.fault_retry);
        let bfd = BfdThread::spawn(opts.bfd.clone(), vec![opts.session.clone()])?;
        let peer = opts.session.peer;
        let provider_knows = provider.name().starts_with("aws");
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (done_tx, done) = mpsc::unbounded_channel();
        let ttl = lease_ttl(opts.machine.verify_interval);
        let state_writer = match &opts.state_file {
            None => None,
            Some(path) => Some(StateWriter::spawn(path.clone()).map_err(|source| {
                OrchestrateError::StateWriter {
                    path: path.clone(),
                    source,
                }
            })?),
        };
        let worker = tokio::spawn(cloud_worker::run(
            provider,
            Arc::new(set),
            ttl,
            jobs_rx,
            done_tx,
        ));
        Ok(Orchestrator {
            opts,
            machine,
            bfd,
            peer,
            provider_knows,
            jobs,
            done,
            worker,
            outstanding: 0,
            records: Vec::new(),
            next_seq: 1,
            history_seen: 0,
            bfd_last: None,
            fault_retry_at: None,
            fault_backoff,
            state_writer,
            state_dirty: true,
        })
    }

    pub fn role(&self) -> Role {
        self.machine.role()
    }

    pub fn records(&self) -> &[TransitionRecord] {
        &self.records
    }

    /// Startup: withdraw leftovers (reconcile, demote), enter BACKUP, let
    /// the BFD session run.
    pub fn start(&mut self) -> Vec<DatapathCmd> {
        self.submit(CloudJob::Reconcile);
        self.submit(CloudJob::Demote { seq: 0 });
        let mut cmds = vec![DatapathCmd::SetActive(false)];
        self.feed(Input::Start, Instant::now(), &mut cmds);
        self.publish_state();
        self.bfd.start();
        cmds
    }

    /// Waits for the next event (cancel-safe: the channel receives and the
    /// sleep are).
    pub async fn next(&mut self) -> HaEvent {
        let deadline = [self.machine.next_deadline(), self.fault_retry_at]
            .into_iter()
            .flatten()
            .min();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(changes) = self.bfd.recv() => HaEvent::Bfd(changes),
            Some(done) = self.done.recv() => HaEvent::Cloud(done),
            () = sleep => HaEvent::Tick,
        }
    }

    /// Handles one event; returns what the datapath must do, in order.
    pub fn handle(&mut self, ev: HaEvent) -> Vec<DatapathCmd> {
        let mut cmds = Vec::new();
        match ev {
            HaEvent::Bfd(changes) => self.on_bfd(changes, &mut cmds),
            HaEvent::Tick => {
                let now = Instant::now();
                if self.fault_retry_at.is_some_and(|t| t <= now) {
                    self.fault_retry_at = None;
                    self.feed(Input::FaultCleared, now, &mut cmds);
                }
                let actions = self.machine.on_tick(now);
                self.run_actions(actions, now, &mut cmds);
            }
            HaEvent::Cloud(done) => self.on_cloud(done, &mut cmds),
        }
        self.publish_state();
        cmds
    }

    /// Graceful stop: AdminDown to the peer, drain, passive, demote (bounded).
    pub async fn shutdown(&mut self) -> Vec<DatapathCmd> {
        let was_master = self.machine.role() == Role::Master;
        let now = Instant::now();
        let actions = self.machine.handle(Input::Shutdown, now);
        let mut cmds = Vec::new();
        for a in actions {
            match a {
                Action::SendAdminDown => {
                    // The drain below assumes the peer has been told:
                    // wait until the BFD thread has sent the AdminDown.
                    match self.bfd.admin_down_acked(self.peer, ADMIN_DOWN_ACK).await {
                        Some(changes) => {
                            self.note_bfd(&changes);
                            tracing::info!(peer = %self.peer, "bfd AdminDown sent (handover)");
                        }
                        None => tracing::warn!(peer = %self.peer,
                            "the BFD thread did not confirm the AdminDown; draining anyway"),
                    }
                }
                Action::Demote => {
                    if was_master && !self.opts.shutdown_drain.is_zero() {
                        tokio::time::sleep(self.opts.shutdown_drain).await;
                    }
                    cmds.push(DatapathCmd::SetActive(false));
                    let seq = self.record_new_transitions(now);
                    self.submit(CloudJob::Demote { seq });
                }
                _ => {}
            }
        }
        self.record_new_transitions(now);
        self.publish_state();
        let deadline = tokio::time::Instant::now() + self.opts.shutdown_timeout;
        while self.outstanding > 0 {
            match tokio::time::timeout_at(deadline, self.done.recv()).await {
                Ok(Some(done)) => {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    self.attach_report(&done);
                }
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
        self.publish_state();
        if let Some(w) = self.state_writer.as_mut() {
            w.finish();
        }
        cmds
    }

    fn submit(&mut self, job: CloudJob) {
        if self.jobs.send(job).is_ok() {
            self.outstanding += 1;
        }
    }

    /// Changes we caused (AdminDown / AdminUp on the machine's request)
    /// arrive here too; `Input::from_bfd` maps them to no input, so they
    /// are only recorded, as when they were returned at once.
    fn on_bfd(&mut self, changes: Vec<StateChange>, cmds: &mut Vec<DatapathCmd>) {
        self.note_bfd(&changes);
        for sc in changes {
            if sc.peer != self.peer {
                continue;
            }
            let Some(input) = Input::from_bfd(&sc) else {
                continue;
            };
            if input == Input::PeerAdminDown && self.machine.role() == Role::Master {
                tracing::info!(
                    "peer handed over while we are MASTER: re-asserting the floating addresses"
                );
                let seq = self.records.last().map(|r| r.seq).unwrap_or(0);
                self.submit(CloudJob::Promote { seq });
            }
            self.feed(input, sc.at_mono, cmds);
        }
    }

    fn note_bfd(&mut self, changes: &[StateChange]) {
        for sc in changes {
            let rec = BfdRecord {
                peer: sc.peer,
                old: sc.old,
                new: sc.new,
                remote_state: sc.remote_state,
                diag: sc.diag,
                at_unix_us: unix_us(sc.at),
            };
            tracing::info!(peer = %sc.peer, old = ?sc.old, new = ?sc.new, remote = ?sc.remote_state,
                diag = ?sc.diag, "bfd state change");
            self.emit("bfd_state", &rec);
            self.bfd_last = Some(rec);
            self.state_dirty = true;
        }
    }

    fn on_cloud(&mut self, done: CloudDone, cmds: &mut Vec<DatapathCmd>) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.attach_report(&done);
        let now = Instant::now();
        match done.job {
            CloudJob::Query => {
                let v = done.verdict.unwrap_or_else(CloudVerdict::unknown);
                self.feed(Input::Cloud(v), now, cmds);
            }
            CloudJob::Promote { .. } if done.superseded => {
                tracing::info!("cloud promote stopped: a demote queued behind it supersedes it");
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
                        self.feed(Input::ActionFailed(why), now, cmds);
                    } else {
                        tracing::warn!(error = %why, "startup demote failed");
                    }
                }
            }
            CloudJob::Reconcile | CloudJob::RenewLease => {}
        }
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
        #[derive(Serialize)]
        struct Line<'a> {
            seq: u64,
            job: CloudJob,
            transient_errors: usize,
            report: &'a TransitionReport,
        }
        self.emit(
            "ha_cloud",
            &Line {
                seq,
                job: done.job,
                transient_errors: report.retries(),
                report,
            },
        );
        if seq != 0
            && let Some(r) = self.records.iter_mut().rev().find(|r| r.seq == seq)
            && r.report.is_none()
        {
            r.report = Some(report.clone());
            r.transient_errors = report.retries();
            self.state_dirty = true;
        }
    }

    /// Feeds one input and carries out the resulting actions, including
    /// inputs those actions produce at once (unknown cloud verdicts).
    fn feed(&mut self, input: Input, now: Instant, cmds: &mut Vec<DatapathCmd>) {
        let actions = self.machine.handle(input, now);
        self.run_actions(actions, now, cmds);
    }

    fn run_actions(&mut self, actions: Vec<Action>, now: Instant, cmds: &mut Vec<DatapathCmd>) {
        let seq = self.record_new_transitions(now);
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
                // The changes these cause come back as `HaEvent::Bfd`.
                Action::SendAdminDown => self.bfd.admin_down(self.peer),
                Action::ResumeBfd => self.bfd.admin_up(self.peer),
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
        if self.machine.role() == Role::Fault && self.fault_retry_at.is_none() {
            self.fault_retry_at = Some(now + self.fault_backoff.on_fault(now));
        }
    }

    /// Turns the machine's new history entries into records; returns the
    /// sequence number of the latest record.
    fn record_new_transitions(&mut self, _now: Instant) -> u64 {
        let history = self.machine.history();
        let new: Vec<_> = history[self.history_seen..].to_vec();
        self.history_seen = history.len();
        for t in new {
            let rec = TransitionRecord {
                seq: self.next_seq,
                at_unix_us: unix_us(wall_of(t.at)),
                old: t.old,
                new: t.new,
                reason: t.reason,
                cloud: t.cloud,
                report: None,
                transient_errors: 0,
            };
            self.next_seq += 1;
            self.emit("ha_transition", &rec);
            self.records.push(rec);
            self.state_dirty = true;
            if self.records.len() > MAX_RECORDS {
                self.records.remove(0);
            }
        }
        self.records.last().map(|r| r.seq).unwrap_or(0)
    }

    fn emit<T: Serialize>(&self, event: &str, body: &T) {
        if !self.opts.print_events {
            return;
        }
        let mut v = serde_json::to_value(body).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("event".into(), event.into());
            m.insert("pid".into(), std::process::id().into());
        }
        println!("{v}");
    }

    /// Hands the state to the writer thread when it changed since the
    /// last time (never on a mere BFD packet: see [`super::state_file`]).
    fn publish_state(&mut self) {
        if !self.state_dirty {
            return;
        }
        let Some(writer) = &self.state_writer else {
            return;
        };
        self.state_dirty = false;
        let state = StateFile {
            pid: std::process::id(),
            self_id: self.opts.machine.self_id,
            role: self.machine.role(),
            updated_unix_us: unix_us(SystemTime::now()),
            bfd: self.bfd_last.as_ref(),
            transitions: &self.records,
        };
        match serde_json::to_vec(&state) {
            Ok(body) => writer.publish(body),
            Err(error) => tracing::warn!(%error, "cannot encode the HA state"),
        }
    }
}
