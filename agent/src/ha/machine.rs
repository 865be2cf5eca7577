//! The pure HA state machine: inputs in, actions out, no I/O and no clock
//! reads (every input carries `now`). See the module docs of [`super`] for
//! the policy; every transition goes through [`HaMachine::change_state`],
//! which logs it, counts it and keeps it in the history with its reason and
//! the cloud answer that justified it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::damping::FlapDamping;
use crate::bfd::manager::StateChange;
use crate::bfd::packet::State as BfdState;
use crate::ratelimit::RateLimit;

/// HA role of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Role {
    Init,
    Backup,
    Master,
    Fault,
}

/// Timing and priority of the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// `--self`: 0 or 1; the lower number is preferred.
    pub self_id: u8,
    /// Claim when BFD has not been Up for this long since entering BACKUP.
    pub claim_hold: Duration,
    /// Whether a returning preferred node gets the MASTER role back.
    pub preempt: bool,
    /// BFD must be Up this long before a preferred BACKUP claims or a
    /// non-preferred MASTER hands over (stand-in for "peer synced").
    pub preempt_hold: Duration,
    /// Half-life of the flap penalty, and the hold-down applied while the
    /// peer session counts as flapping (see [`super::damping`]).
    pub flap_hold_down: Duration,
    /// How often a MASTER re-verifies ownership and renews its lease.
    pub verify_interval: Duration,
    /// Pause between a preemption handover and re-enabling BFD.
    pub handover_pause: Duration,
    /// Lease heartbeat on BFD loss (AWS; see [`super`], "Lease heartbeat").
    /// A BACKUP that loses BFD watches the peer's lease this long for a
    /// renewal written after its own Down before it claims; a MASTER that
    /// loses BFD renews at once and then every third of it, for twice it.
    /// Zero turns the heartbeat off: a claim then waits out the lease.
    pub lease_watch: Duration,
    /// Connection sync is on (`--sync on`): a non-preferred MASTER whose
    /// sync session to the peer is up ([`Input::SyncConnected`]) hands the
    /// role back only once the peer confirmed a full resync
    /// ([`Input::PeerSyncDone`]), and a preferred BACKUP the peer streams to
    /// ([`Input::PeerStreaming`]) waits for that handover instead of
    /// claiming when `preempt_hold` elapses. Without a session (the port is
    /// blocked, the keys differ) neither waits: the handover goes as
    /// without sync, so the two sides never disagree into two MASTERs.
    pub sync_gate: bool,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            self_id: 0,
            claim_hold: Duration::from_secs(3),
            preempt: true,
            preempt_hold: Duration::from_secs(5),
            flap_hold_down: Duration::from_secs(5),
            verify_interval: Duration::from_secs(2),
            handover_pause: Duration::from_secs(1),
            lease_watch: Duration::from_millis(600),
            sync_gate: false,
        }
    }
}

/// Errors in the HA configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HaConfigError {
    #[error("--self must be 0 or 1 (the node's number in the pair), got {0}")]
    BadSelfId(u8),
    #[error("{field} must be non-zero")]
    ZeroDuration { field: &'static str },
}

impl HaConfig {
    pub fn validate(&self) -> Result<(), HaConfigError> {
        if self.self_id > 1 {
            return Err(HaConfigError::BadSelfId(self.self_id));
        }
        for (field, d) in [
            ("claim_hold", self.claim_hold),
            ("preempt_hold", self.preempt_hold),
            ("verify_interval", self.verify_interval),
        ] {
            if d.is_zero() {
                return Err(HaConfigError::ZeroDuration { field });
            }
        }
        Ok(())
    }

    pub fn preferred(&self) -> bool {
        self.self_id == 0
    }
}

/// Who the cloud says holds something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Holder {
    Us,
    Peer,
    Nobody,
    Unknown,
}

/// The cloud's answer to [`Action::QueryCloud`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CloudVerdict {
    /// Current owner of the floating EIP / route.
    pub owner: Holder,
    /// Whether the peer's instance is running (`None`: the provider cannot tell).
    pub peer_running: Option<bool>,
    /// Lease tag holder and the time left on it.
    pub lease: Option<(Holder, Duration)>,
    /// Identity of the last lease write (its expiry, unix ms, as written):
    /// it changes with every renewal, whatever the two nodes' clocks say.
    pub lease_version: Option<u64>,
}

impl CloudVerdict {
    /// What a provider that knows nothing (e.g. gARP) answers.
    pub fn unknown() -> CloudVerdict {
        CloudVerdict {
            owner: Holder::Unknown,
            peer_running: None,
            lease: None,
            lease_version: None,
        }
    }
}

/// Inputs to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The daemon started.
    Start,
    /// BFD session to the peer came Up; `peer_discr` is the peer's BFD
    /// discriminator, which a restarted peer process picks anew.
    BfdUp {
        peer_discr: u32,
    },
    /// BFD session went Down without the peer saying so (timeout, link).
    BfdDown,
    /// The peer set its session AdminDown: graceful handover.
    PeerAdminDown,
    /// Answer to the last [`Action::QueryCloud`].
    Cloud(CloudVerdict),
    /// A promote or demote carried out by the orchestrator failed.
    ActionFailed(String),
    /// Local datapath/cloud health.
    LocalFault(String),
    FaultCleared,
    /// The peer confirmed it installed a full resync of our flows.
    PeerSyncDone,
    /// The peer, as MASTER, streams its flows to us (true) or stopped.
    PeerStreaming(bool),
    /// Our sync session to the peer (as MASTER) is up (true) or down.
    SyncConnected(bool),
    /// SIGTERM: hand over and stop.
    Shutdown,
}

impl Input {
    /// Maps a BFD state change of the peer session to an HA input.
    pub fn from_bfd(sc: &StateChange) -> Option<Input> {
        match sc.new {
            BfdState::Up => Some(Input::BfdUp {
                peer_discr: sc.remote_discr,
            }),
            // Our own AdminDown -> Down (resume) is not the peer's handover,
            // even when the peer's last packet was AdminDown too.
            BfdState::Down if sc.old == BfdState::AdminDown => None,
            BfdState::Down if sc.remote_state == BfdState::AdminDown => Some(Input::PeerAdminDown),
            BfdState::Down if sc.old == BfdState::Up || sc.old == BfdState::Init => {
                Some(Input::BfdDown)
            }
            _ => None,
        }
    }
}

/// Why a claim is being considered (and recorded as the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ClaimReason {
    ClaimHoldExpired,
    PreferredPeerUp,
    PeerLost,
    LeaseExpired,
    /// The peer held a lease but did not renew it within `lease_watch`
    /// of our BFD Down: it is dead or cut off from EC2.
    LeaseNotRenewed,
}

/// What the orchestrator must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Take the floating addresses (cloud promote, datapath owns VIPs, lease).
    Promote,
    /// Release them.
    Demote,
    /// Send BFD AdminDown to the peer (graceful handover).
    SendAdminDown,
    /// Re-enable the BFD session after a handover.
    ResumeBfd,
    /// Ask the cloud for a [`CloudVerdict`] and feed it back as [`Input::Cloud`].
    QueryCloud,
    /// Renew our lease tag (MASTER, after a verdict that confirms us).
    RenewLease,
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub at: Instant,
    pub old: Role,
    pub new: Role,
    pub reason: String,
    pub cloud: Option<CloudVerdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Claim(ClaimReason),
    Verify,
}

/// A role and how it got there: the one place a role changes, for the
/// BFD election ([`HaMachine`]) and for assigned roles
/// ([`super::assigned::AssignedMachine`]) alike.
#[derive(Debug, Clone)]
pub struct RoleLog {
    role: Role,
    history: Vec<Transition>,
    counts: BTreeMap<(Role, Role), u64>,
}

impl Default for RoleLog {
    fn default() -> Self {
        Self {
            role: Role::Init,
            history: Vec::new(),
            counts: BTreeMap::new(),
        }
    }
}

impl RoleLog {
    pub fn role(&self) -> Role {
        self.role
    }

    pub fn history(&self) -> &[Transition] {
        &self.history
    }

    pub fn counts(&self) -> &BTreeMap<(Role, Role), u64> {
        &self.counts
    }

    /// Logs, counts and records `old -> new` with its reason and the cloud
    /// verdict behind it; false (nothing done) when `new` is the role now.
    pub fn change_state(
        &mut self,
        new: Role,
        reason: &str,
        cloud: Option<CloudVerdict>,
        now: Instant,
    ) -> bool {
        let old = self.role;
        if old == new {
            return false;
        }
        tracing::info!(?old, ?new, reason, ?cloud, "ha state change");
        *self.counts.entry((old, new)).or_default() += 1;
        self.history.push(Transition {
            at: now,
            old,
            new,
            reason: reason.to_string(),
            cloud,
        });
        self.role = new;
        true
    }
}

/// The election state machine of one node.
#[derive(Debug, Clone)]
pub struct HaMachine {
    cfg: HaConfig,
    roles: RoleLog,
    bfd_up: bool,
    /// Flap penalty of the peer session.
    damping: FlapDamping,
    /// A flapping link can trigger the damping log line often.
    damping_log: RateLimit,
    /// Discriminator of the peer's last BFD Up.
    peer_discr: Option<u32>,
    /// Set when we promoted because the peer with this discriminator
    /// vanished: if it reappears unchanged it never died.
    promoted_on_loss_of: Option<u32>,
    pending: Pending,
    last_role_change: Option<Instant>,
    claim_at: Option<(Instant, ClaimReason)>,
    preempt_at: Option<Instant>,
    verify_at: Option<Instant>,
    resume_bfd_at: Option<Instant>,
    /// When BFD last went Down (not AdminDown).
    bfd_down_at: Option<Instant>,
    watch: Option<LeaseWatch>,
    watch_poll_at: Option<Instant>,
    heartbeat: Option<Heartbeat>,
    /// Sync gate (see [`HaConfig::sync_gate`]): the peer confirmed a full
    /// resync since BFD last went Down.
    peer_synced: bool,
    /// The preempt hold elapsed on a MASTER whose peer is not synced yet.
    await_sync: bool,
    /// The peer streams its flows to us (it is MASTER).
    peer_streaming: bool,
    /// Our sync session to the peer is up (we are MASTER).
    sync_connected: bool,
    /// The preempt hold elapsed on a preferred BACKUP the peer streams to.
    await_handover: bool,
}

impl HaMachine {
    pub fn new(cfg: HaConfig) -> Result<HaMachine, HaConfigError> {
        cfg.validate()?;
        Ok(HaMachine {
            damping: FlapDamping::new(cfg.flap_hold_down),
            cfg,
            roles: RoleLog::default(),
            bfd_up: false,
            damping_log: RateLimit::new(Duration::from_secs(10)),
            peer_discr: None,
            promoted_on_loss_of: None,
            pending: Pending::None,
            last_role_change: None,
            claim_at: None,
            preempt_at: None,
            verify_at: None,
            resume_bfd_at: None,
            bfd_down_at: None,
            peer_synced: false,
            await_sync: false,
            peer_streaming: false,
            sync_connected: false,
            await_handover: false,
            watch: None,
            watch_poll_at: None,
            heartbeat: None,
        })
    }

    pub fn role(&self) -> Role {
        self.roles.role()
    }

    pub fn history(&self) -> &[Transition] {
        self.roles.history()
    }

    /// Transition counters keyed by (old, new).
    pub fn counts(&self) -> &BTreeMap<(Role, Role), u64> {
        self.roles.counts()
    }

    /// The single place where the role changes: logs, counts, records.
    pub fn change_state(
        &mut self,
        new: Role,
        reason: &str,
        cloud: Option<CloudVerdict>,
        now: Instant,
    ) {
        let old = self.roles.role();
        if !self.roles.change_state(new, reason, cloud, now) {
            return;
        }
        if matches!((old, new), (Role::Master, _) | (_, Role::Master)) {
            self.last_role_change = Some(now);
        }
        self.preempt_at = None;
        self.await_sync = false;
        self.await_handover = false;
        self.claim_at = None;
        self.verify_at = None;
        self.pending = Pending::None;
        self.promoted_on_loss_of = None;
        self.watch = None;
        self.watch_poll_at = None;
        self.heartbeat = None;
    }

    /// Earliest instant at which [`Self::on_tick`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.claim_at.map(|c| c.0),
            self.preempt_at,
            self.verify_at,
            self.resume_bfd_at,
            self.watch_poll_at,
            self.heartbeat.map(|h| h.next),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn enter_backup(&mut self, reason: &str, now: Instant) {
        self.change_state(Role::Backup, reason, None, now);
        if self.bfd_up {
            self.arm_preempt(now);
        } else {
            self.claim_at = Some((now + self.cfg.claim_hold, ClaimReason::ClaimHoldExpired));
        }
    }

    /// Arms the BFD-Up timer: a non-preferred MASTER hands over after
    /// `preempt_hold`; a preferred BACKUP claims after `preempt_hold +
    /// handover_pause`, so that when a MASTER exists its handover arrives
    /// first and the claim never races it.
    fn arm_preempt(&mut self, now: Instant) {
        let hold = match self.role() {
            Role::Backup if self.cfg.preferred() => self.cfg.preempt_hold + self.cfg.handover_pause,
            Role::Master if !self.cfg.preferred() && self.cfg.preempt => self.cfg.preempt_hold,
            _ => return,
        };
        if self.preempt_at.is_none() {
            self.preempt_at = Some(now + hold);
        }
    }

    /// Whether the peer session counts as flapping at `now`.
    pub fn flapping(&self, now: Instant) -> bool {
        self.damping.flapping(now)
    }

    /// Starts a claim now or, while the link flaps, once the hold-down
    /// since the last role change has passed.
    fn claim(&mut self, reason: ClaimReason, now: Instant, out: &mut Vec<Action>) {
        if self.role() != Role::Backup || self.pending != Pending::None {
            return;
        }
        if self.damping.flapping(now)
            && let Some(last) = self.last_role_change
        {
            let until = last + self.cfg.flap_hold_down;
            if now < until {
                if let Some(suppressed) = self.damping_log.check_at(now) {
                    tracing::info!(
                        ?reason,
                        suppressed,
                        "claim deferred: bfd flapping, role changed recently"
                    );
                }
                self.claim_at = Some((until, reason));
                return;
            }
        }
        self.pending = Pending::Claim(reason);
        out.push(Action::QueryCloud);
    }

    fn promote(
        &mut self,
        reason: &str,
        cloud: Option<CloudVerdict>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.change_state(Role::Master, reason, cloud, now);
        out.push(Action::Promote);
        self.verify_at = Some(now + self.cfg.verify_interval);
        if self.bfd_up {
            self.arm_preempt(now);
        }
    }

    fn demote(
        &mut self,
        new: Role,
        reason: &str,
        cloud: Option<CloudVerdict>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let was_master = self.role() == Role::Master;
        self.change_state(new, reason, cloud, now);
        if was_master {
            out.push(Action::Demote);
        }
    }

    /// Feeds one input; returns the actions to carry out, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if self.role() == Role::Init {
                    self.enter_backup("start", now);
                }
            }
            Input::BfdUp { peer_discr } => {
                self.bfd_up = true;
                self.watch = None;
                self.watch_poll_at = None;
                self.heartbeat = None;
                let same_peer = self.peer_discr == Some(peer_discr);
                self.peer_discr = Some(peer_discr);
                if self.role() == Role::Master
                    && same_peer
                    && self.promoted_on_loss_of == Some(peer_discr)
                {
                    // We promoted because this peer vanished, yet it is back
                    // without a restart: it was alive (a BFD outage, not a
                    // failure) and may still be MASTER. Give the role back at
                    // once; the AdminDown makes the peer promote if it is not.
                    self.hand_over("peer was alive through the BFD outage", now, &mut out);
                    return out;
                }
                if self.role() == Role::Backup {
                    self.claim_at = None;
                    if matches!(self.pending, Pending::Claim(ClaimReason::PeerLost)) {
                        self.pending = Pending::None;
                    }
                }
                self.arm_preempt(now);
            }
            Input::BfdDown => {
                self.bfd_up = false;
                self.bfd_down_at = Some(now);
                (self.peer_synced, self.await_sync, self.await_handover) = (false, false, false);
                // Decision point: an isolated Down is acted on at once; see
                // `super::damping` for when the link counts as flapping.
                let flapping = self.damping.on_down(now);
                // Heartbeat: prove to the BACKUP, through EC2, that we live
                // (see `Self::on_lease_watch_verdict`). Not while the link
                // flaps: the BACKUP's claim then waits for the hold-down and
                // the lease, and a renewal per flap would spend the EC2
                // request budget.
                if self.role() == Role::Master && !flapping {
                    self.start_heartbeat(now, &mut out);
                }
                if self.role() == Role::Backup {
                    self.preempt_at = None;
                    if flapping {
                        // Only a Down that lasts the hold-down counts as
                        // losing the peer.
                        if let Some(suppressed) = self.damping_log.check_at(now) {
                            tracing::info!(
                                penalty = self.damping.penalty(now),
                                suppressed,
                                "bfd flapping: claim waits for the hold-down"
                            );
                        }
                        self.claim_at =
                            Some((now + self.cfg.flap_hold_down, ClaimReason::PeerLost));
                    } else {
                        self.claim(ClaimReason::PeerLost, now, &mut out);
                    }
                }
            }
            Input::PeerAdminDown => {
                self.bfd_up = false;
                self.preempt_at = None;
                (self.peer_synced, self.await_sync, self.await_handover) = (false, false, false);
                if self.role() == Role::Backup {
                    self.promote("peer handed over (BFD AdminDown)", None, now, &mut out);
                }
            }
            Input::Cloud(v) => self.on_verdict(v, now, &mut out),
            Input::ActionFailed(why) => {
                self.demote(
                    Role::Fault,
                    &format!("action failed: {why}"),
                    None,
                    now,
                    &mut out,
                );
            }
            Input::LocalFault(why) => {
                self.demote(
                    Role::Fault,
                    &format!("local fault: {why}"),
                    None,
                    now,
                    &mut out,
                );
            }
            Input::FaultCleared => {
                if self.role() == Role::Fault {
                    self.enter_backup("fault cleared", now);
                }
            }
            Input::PeerSyncDone => {
                self.peer_synced = true;
                if self.role() == Role::Master && (self.preempt_at.is_some() || self.await_sync) {
                    self.hand_over("peer synced", now, &mut out);
                }
            }
            Input::PeerStreaming(on) => {
                self.peer_streaming = on;
                // The stream ended before the handover: time the claim anew.
                if !on && std::mem::take(&mut self.await_handover) && self.bfd_up {
                    self.arm_preempt(now);
                }
            }
            Input::SyncConnected(on) => {
                self.sync_connected = on;
                // The session dropped before the resync was confirmed: hand
                // over after another hold unless it comes back and resyncs.
                if !on && std::mem::take(&mut self.await_sync) && self.bfd_up {
                    self.arm_preempt(now);
                }
            }
            Input::Shutdown => {
                if self.role() == Role::Master {
                    out.push(Action::SendAdminDown);
                    self.demote(Role::Init, "shutdown", None, now, &mut out);
                } else {
                    out.push(Action::SendAdminDown);
                    self.change_state(Role::Init, "shutdown", None, now);
                }
                self.resume_bfd_at = None;
            }
        }
        out
    }

    fn hand_over(&mut self, reason: &str, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::SendAdminDown);
        self.demote(
            Role::Backup,
            &format!("handover to preferred peer: {reason}"),
            None,
            now,
            out,
        );
        self.bfd_up = false;
        let resume = now + self.cfg.handover_pause;
        self.resume_bfd_at = Some(resume);
        // The session is AdminDown now and goes AdminDown -> Down on resume,
        // which reports nothing: if the peer died meanwhile, no BfdDown will
        // ever come. Treat it as a fresh start: claim when BFD has not come
        // Up `claim_hold` after the resume (a BfdUp clears this).
        self.claim_at = Some((resume + self.cfg.claim_hold, ClaimReason::ClaimHoldExpired));
    }

    fn on_verdict(&mut self, v: CloudVerdict, now: Instant, out: &mut Vec<Action>) {
        let pending = std::mem::replace(&mut self.pending, Pending::None);
        match pending {
            Pending::None => {}
            Pending::Verify if self.role() == Role::Master => {
                let peer_lease = matches!(v.lease, Some((Holder::Peer, left)) if !left.is_zero());
                if v.owner == Holder::Peer || peer_lease {
                    self.demote(
                        Role::Backup,
                        "cloud shows the peer as owner",
                        Some(v),
                        now,
                        out,
                    );
                    if !self.bfd_up {
                        self.claim_at =
                            Some((now + self.cfg.claim_hold, ClaimReason::ClaimHoldExpired));
                    }
                } else {
                    out.push(Action::RenewLease);
                    self.verify_at = Some(now + self.cfg.verify_interval);
                }
            }
            Pending::Verify => {}
            Pending::Claim(reason) if self.role() == Role::Backup => {
                if reason == ClaimReason::PeerLost && self.bfd_up {
                    return; // the peer came back while we asked
                }
                let peer_runs = v.peer_running != Some(false);
                if v.owner == Holder::Us || v.peer_running == Some(false) {
                    self.claim_promote(reason, v, now, out);
                } else if let Some((Holder::Peer, left)) = v.lease
                    && !left.is_zero()
                    && peer_runs
                {
                    if self.on_lease_watch_verdict(reason, &v, now, out) {
                        return;
                    }
                    tracing::info!(?left, "claim postponed: the peer holds the lease");
                    self.claim_at = Some((now + left, ClaimReason::LeaseExpired));
                } else if v.owner == Holder::Peer && v.peer_running == Some(true) && self.bfd_up {
                    tracing::info!("claim dropped: the peer is MASTER and reachable");
                } else {
                    self.claim_promote(reason, v, now, out);
                }
            }
            Pending::Claim(_) => {}
        }
    }

    fn claim_promote(
        &mut self,
        reason: ClaimReason,
        v: CloudVerdict,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.promote(&format!("claim ({reason:?})"), Some(v), now, out);
        // Not after `LeaseNotRenewed`: the cloud showed the peer silent, so
        // the EIP is ours by the lease rule and a returning peer demotes
        // on its next verify instead of being handed the role back.
        if matches!(reason, ClaimReason::PeerLost | ClaimReason::LeaseExpired) {
            self.promoted_on_loss_of = self.peer_discr;
        }
    }

    /// Runs the timers due at `now`.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.resume_bfd_at.is_some_and(|t| t <= now) {
            self.resume_bfd_at = None;
            out.push(Action::ResumeBfd);
        }
        if let Some((t, reason)) = self.claim_at
            && t <= now
        {
            self.claim_at = None;
            let still_wanted = match reason {
                ClaimReason::ClaimHoldExpired => !self.bfd_up,
                ClaimReason::PeerLost
                | ClaimReason::LeaseExpired
                | ClaimReason::LeaseNotRenewed => !self.bfd_up,
                ClaimReason::PreferredPeerUp => self.bfd_up,
            };
            if still_wanted {
                self.claim(reason, now, &mut out);
            }
        }
        if self.preempt_at.is_some_and(|t| t <= now) {
            self.preempt_at = None;
            if self.bfd_up {
                let gate = self.cfg.sync_gate;
                match self.role() {
                    // The streaming MASTER hands over once we are synced.
                    Role::Backup if gate && self.peer_streaming => self.await_handover = true,
                    Role::Backup => self.claim(ClaimReason::PreferredPeerUp, now, &mut out),
                    Role::Master if gate && self.sync_connected && !self.peer_synced => {
                        self.await_sync = true;
                    }
                    Role::Master => self.hand_over("preempt hold elapsed", now, &mut out),
                    _ => {}
                }
            }
        }
        self.lease_timers(now, &mut out);
        if self.verify_at.is_some_and(|t| t <= now) {
            self.verify_at = None;
            if self.role() == Role::Master && self.pending == Pending::None {
                self.pending = Pending::Verify;
                out.push(Action::QueryCloud);
            }
        }
        out
    }
}

#[path = "lease_watch.rs"]
mod lease_watch;
use lease_watch::{Heartbeat, LeaseWatch};

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
