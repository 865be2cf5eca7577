//! Roles assigned from outside: kube-loxilb's `POST /config/cistate`.
//!
//! Without `--ka` but with a cloud provider, the pair does not elect
//! itself: kube-loxilb (`--setRoles`) tells each node MASTER or BACKUP.
//! This pure machine turns those assignments into the same [`Action`]s the
//! BFD election produces, so the orchestrator, the cloud worker and the
//! records are shared.
//!
//! Policy:
//! * A node starts BACKUP and holds nothing until it is told MASTER (or
//!   until a persisted MASTER assignment is restored at start).
//! * **Told MASTER**, it asks the cloud first ([`Action::QueryCloud`]),
//!   as every non-graceful claim in the BFD election does. It claims at
//!   once when the cloud shows no live claim of the peer: the peer's
//!   instance is stopped, or the peer holds no unexpired lease, or the
//!   floating address is no longer the peer's. While the peer still owns
//!   the address *and* holds an unexpired lease, the claim waits and asks
//!   again every `verify_interval`: kube-loxilb tells the old MASTER
//!   BACKUP in the same round, it demotes and stops renewing, so the wait
//!   is bounded by the lease length (3 x `verify_interval`).
//! * **Told BACKUP**, a MASTER demotes at once; a pending claim is dropped.
//! * **As MASTER** it re-verifies every `verify_interval` and renews its
//!   lease. If the cloud shows the peer as the owner with a live lease
//!   (kube-loxilb and the lease disagree: two nodes were told MASTER, e.g.
//!   by two kube-loxilb replicas with different views), the node does not
//!   fight: it demotes and claims again only once that lease has expired.
//!   The address therefore moves at most once per lease length, never
//!   back and forth on every verify.
//! * A failed promote or demote is FAULT; when the fault clears the node
//!   is BACKUP and claims again if it is still assigned MASTER.

use std::time::{Duration, Instant};

use super::machine::{Action, CloudVerdict, Holder, Role, RoleLog, Transition};

/// Inputs of the assigned-roles machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignInput {
    Start,
    /// A cistate POST (or the persisted assignment at start).
    Assign(Role),
    Cloud(CloudVerdict),
    ActionFailed(String),
    FaultCleared,
    Shutdown,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AssignedMachine {
    verify_interval: Duration,
    roles: RoleLog,
    /// What kube-loxilb last asked for.
    wanted: Role,
    /// A cloud query is out; its answer decides a claim or a verify.
    querying: bool,
    /// When to query again (pending claim, or a MASTER's next verify).
    query_at: Option<Instant>,
}

impl AssignedMachine {
    pub fn new(verify_interval: Duration) -> Self {
        Self {
            verify_interval,
            roles: RoleLog::default(),
            wanted: Role::Backup,
            querying: false,
            query_at: None,
        }
    }

    pub fn role(&self) -> Role {
        self.roles.role()
    }

    /// The role last assigned.
    pub fn wanted(&self) -> Role {
        self.wanted
    }

    pub fn history(&self) -> &[Transition] {
        self.roles.history()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.query_at
    }

    /// Every role change goes through [`RoleLog::change_state`].
    fn change_state(&mut self, new: Role, reason: &str, cloud: Option<CloudVerdict>, now: Instant) {
        if self.roles.change_state(new, reason, cloud, now) {
            self.query_at = None;
            self.querying = false;
        }
    }

    fn query(&mut self) -> Vec<Action> {
        self.querying = true;
        self.query_at = None;
        vec![Action::QueryCloud]
    }

    /// Whether the verdict shows the peer holding the address with a live
    /// lease (see the module docs).
    fn peer_holds(v: &CloudVerdict) -> bool {
        let lease_live = matches!(v.lease, Some((Holder::Peer, left)) if !left.is_zero());
        v.peer_running != Some(false) && v.owner == Holder::Peer && lease_live
    }

    pub fn handle(&mut self, input: AssignInput, now: Instant) -> Vec<Action> {
        match (self.role(), input) {
            (_, AssignInput::Start) => {
                self.change_state(Role::Backup, "start", None, now);
                Vec::new()
            }
            (Role::Backup, AssignInput::Assign(Role::Master)) => {
                self.wanted = Role::Master;
                if self.querying {
                    Vec::new()
                } else {
                    self.query()
                }
            }
            (Role::Master, AssignInput::Assign(Role::Backup)) => {
                self.wanted = Role::Backup;
                self.change_state(Role::Backup, "assigned BACKUP (cistate)", None, now);
                vec![Action::Demote]
            }
            (_, AssignInput::Assign(role)) => {
                // MASTER while MASTER, BACKUP while BACKUP (drops a pending
                // claim), anything while FAULT (acted on when it clears).
                self.wanted = if role == Role::Master {
                    Role::Master
                } else {
                    Role::Backup
                };
                if self.wanted != Role::Master && self.role() == Role::Backup {
                    self.query_at = None;
                }
                Vec::new()
            }
            (Role::Backup, AssignInput::Cloud(v)) => {
                self.querying = false;
                if self.wanted != Role::Master {
                    return Vec::new();
                }
                if Self::peer_holds(&v) {
                    tracing::info!(verdict = ?v,
                        "assigned MASTER, but the peer still holds the address with a live lease; waiting");
                    self.query_at = Some(now + self.verify_interval);
                    return Vec::new();
                }
                self.change_state(Role::Master, "assigned MASTER (cistate)", Some(v), now);
                self.query_at = Some(now + self.verify_interval);
                vec![Action::Promote, Action::RenewLease]
            }
            (Role::Master, AssignInput::Cloud(v)) => {
                self.querying = false;
                if Self::peer_holds(&v) {
                    self.change_state(
                        Role::Backup,
                        "cloud shows the peer as owner with a live lease",
                        Some(v),
                        now,
                    );
                    self.query_at = Some(now + self.verify_interval);
                    return vec![Action::Demote];
                }
                self.query_at = Some(now + self.verify_interval);
                vec![Action::RenewLease]
            }
            (_, AssignInput::Cloud(_)) => {
                self.querying = false;
                Vec::new()
            }
            (Role::Master | Role::Backup, AssignInput::ActionFailed(why)) => {
                let was_master = self.role() == Role::Master;
                self.change_state(Role::Fault, &why, None, now);
                if was_master {
                    vec![Action::Demote]
                } else {
                    Vec::new()
                }
            }
            (_, AssignInput::ActionFailed(_)) => Vec::new(),
            (Role::Fault, AssignInput::FaultCleared) => {
                self.change_state(Role::Backup, "fault cleared", None, now);
                if self.wanted == Role::Master {
                    self.query()
                } else {
                    Vec::new()
                }
            }
            (_, AssignInput::FaultCleared) => Vec::new(),
            (Role::Master, AssignInput::Shutdown) => {
                self.change_state(Role::Backup, "shutdown", None, now);
                vec![Action::Demote]
            }
            (_, AssignInput::Shutdown) => Vec::new(),
        }
    }

    /// A deadline passed: query again (pending claim, or a MASTER's verify).
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        match self.query_at {
            Some(t) if t <= now && !self.querying => self.query(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFY: Duration = Duration::from_secs(2);

    fn verdict(owner: Holder, lease: Option<(Holder, u64)>) -> CloudVerdict {
        CloudVerdict {
            owner,
            peer_running: Some(true),
            lease: lease.map(|(h, s)| (h, Duration::from_secs(s))),
            lease_version: lease.map(|(_, s)| s),
        }
    }

    fn started() -> (AssignedMachine, Instant) {
        let mut m = AssignedMachine::new(VERIFY);
        let t0 = Instant::now();
        assert!(m.handle(AssignInput::Start, t0).is_empty());
        assert_eq!(m.role(), Role::Backup);
        (m, t0)
    }

    #[test]
    fn told_master_asks_the_cloud_then_claims_and_verifies() {
        let (mut m, t0) = started();
        assert_eq!(
            m.handle(AssignInput::Assign(Role::Master), t0),
            [Action::QueryCloud]
        );
        // A second POST while the query is out does not query twice.
        assert!(m.handle(AssignInput::Assign(Role::Master), t0).is_empty());
        let a = m.handle(AssignInput::Cloud(verdict(Holder::Nobody, None)), t0);
        assert_eq!(a, [Action::Promote, Action::RenewLease]);
        assert_eq!(m.role(), Role::Master);
        assert_eq!(m.next_deadline(), Some(t0 + VERIFY));
        assert_eq!(m.on_tick(t0 + VERIFY), [Action::QueryCloud]);
        let a = m.handle(AssignInput::Cloud(verdict(Holder::Us, None)), t0 + VERIFY);
        assert_eq!(a, [Action::RenewLease]);
    }

    #[test]
    fn a_live_peer_lease_on_a_peer_owned_address_delays_the_claim_until_it_lapses() {
        let (mut m, t0) = started();
        m.handle(AssignInput::Assign(Role::Master), t0);
        let held = verdict(Holder::Peer, Some((Holder::Peer, 5)));
        assert!(m.handle(AssignInput::Cloud(held.clone()), t0).is_empty());
        assert_eq!(m.role(), Role::Backup);
        assert_eq!(m.on_tick(t0 + VERIFY), [Action::QueryCloud]);
        // The peer was told BACKUP and released the address: claim.
        let a = m.handle(
            AssignInput::Cloud(verdict(Holder::Nobody, Some((Holder::Peer, 3)))),
            t0 + VERIFY,
        );
        assert_eq!(a, [Action::Promote, Action::RenewLease]);
        // An expired lease or a stopped peer never blocks a claim.
        let (mut m, t0) = started();
        m.handle(AssignInput::Assign(Role::Master), t0);
        let mut stopped = held;
        stopped.peer_running = Some(false);
        assert_eq!(
            m.handle(AssignInput::Cloud(stopped), t0),
            [Action::Promote, Action::RenewLease]
        );
    }

    #[test]
    fn told_backup_demotes_a_master_and_drops_a_pending_claim() {
        let (mut m, t0) = started();
        m.handle(AssignInput::Assign(Role::Master), t0);
        m.handle(AssignInput::Cloud(verdict(Holder::Nobody, None)), t0);
        assert_eq!(
            m.handle(AssignInput::Assign(Role::Backup), t0),
            [Action::Demote]
        );
        assert_eq!((m.role(), m.next_deadline()), (Role::Backup, None));
        // Pending claim dropped: the late answer does not promote.
        m.handle(AssignInput::Assign(Role::Master), t0);
        m.handle(AssignInput::Assign(Role::Backup), t0);
        assert!(
            m.handle(AssignInput::Cloud(verdict(Holder::Nobody, None)), t0)
                .is_empty()
        );
        assert_eq!(m.role(), Role::Backup);
    }

    #[test]
    fn a_master_that_sees_the_peer_holding_a_live_lease_steps_back_once() {
        let (mut m, t0) = started();
        m.handle(AssignInput::Assign(Role::Master), t0);
        m.handle(AssignInput::Cloud(verdict(Holder::Nobody, None)), t0);
        m.on_tick(t0 + VERIFY);
        let theirs = verdict(Holder::Peer, Some((Holder::Peer, 6)));
        assert_eq!(
            m.handle(AssignInput::Cloud(theirs.clone()), t0 + VERIFY),
            [Action::Demote]
        );
        assert_eq!(m.role(), Role::Backup);
        // Still assigned MASTER: it waits for the lease, it does not fight.
        m.on_tick(t0 + VERIFY * 2);
        assert!(
            m.handle(AssignInput::Cloud(theirs), t0 + VERIFY * 2)
                .is_empty()
        );
        assert_eq!(m.role(), Role::Backup);
    }

    #[test]
    fn a_failed_promote_faults_and_the_claim_resumes_when_it_clears() {
        let (mut m, t0) = started();
        m.handle(AssignInput::Assign(Role::Master), t0);
        m.handle(AssignInput::Cloud(verdict(Holder::Nobody, None)), t0);
        assert_eq!(
            m.handle(AssignInput::ActionFailed("eip".into()), t0),
            [Action::Demote]
        );
        assert_eq!(m.role(), Role::Fault);
        assert_eq!(
            m.handle(AssignInput::FaultCleared, t0),
            [Action::QueryCloud]
        );
        assert_eq!(m.role(), Role::Backup);
        assert_eq!(m.handle(AssignInput::Shutdown, t0), []);
    }
}
