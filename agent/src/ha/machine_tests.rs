//! Recorded cases for one machine, then a simulated pair (two machines, a
//! BFD link and a cloud) sampled every 10 ms.

use std::time::{Duration, Instant};

use super::*;
use Action::*;

fn cfg(self_id: u8) -> HaConfig {
    HaConfig {
        self_id,
        claim_hold: Duration::from_secs(3),
        preempt: true,
        preempt_hold: Duration::from_secs(5),
        flap_hold_down: Duration::from_secs(5),
        verify_interval: Duration::from_secs(2),
        handover_pause: Duration::from_secs(1),
        lease_watch: WATCH,
        sync_gate: false,
    }
}

/// `lease_watch` of [`cfg`].
const WATCH: Duration = Duration::from_millis(600);

enum Step {
    In(Input),
    Tick,
}

/// Replays (ms, step, expected actions, expected role after) and checks each.
fn replay(m: &mut HaMachine, t0: Instant, steps: Vec<(u64, Step, Vec<Action>, Role)>) {
    for (i, (ms, step, want, role)) in steps.into_iter().enumerate() {
        let now = t0 + Duration::from_millis(ms);
        let got = match step {
            Step::In(input) => m.handle(input, now),
            Step::Tick => m.on_tick(now),
        };
        assert_eq!(got, want, "step {i} at {ms} ms");
        assert_eq!(m.role(), role, "role after step {i} at {ms} ms");
    }
}

fn aws(owner: Holder, peer_running: bool, lease: Option<(Holder, u64)>) -> Input {
    aws_v(owner, peer_running, lease, 1)
}

/// A verdict whose lease write has the identity `version`.
fn aws_v(owner: Holder, peer_running: bool, lease: Option<(Holder, u64)>, version: u64) -> Input {
    Input::Cloud(CloudVerdict {
        owner,
        peer_running: Some(peer_running),
        lease: lease.map(|(h, ms)| (h, Duration::from_millis(ms))),
        lease_version: lease.map(|_| version),
    })
}

use Step::{In, Tick};

#[test]
fn lone_node_claims_only_after_claim_hold_and_cloud_check() {
    let t0 = Instant::now();
    let mut m = HaMachine::new(cfg(1)).unwrap();
    replay(
        &mut m,
        t0,
        vec![
            (0, In(Input::Start), vec![], Role::Backup),
            (2999, Tick, vec![], Role::Backup),
            (3000, Tick, vec![QueryCloud], Role::Backup),
            (
                3050,
                In(aws(Holder::Nobody, false, None)),
                vec![Promote],
                Role::Master,
            ),
            (5050, Tick, vec![QueryCloud], Role::Master),
            (
                5060,
                In(aws(Holder::Us, false, Some((Holder::Us, 500)))),
                vec![RenewLease],
                Role::Master,
            ),
        ],
    );
    let h = m.history();
    assert_eq!((h[1].old, h[1].new), (Role::Backup, Role::Master));
    assert!(h[1].reason.contains("ClaimHoldExpired"));
    assert_eq!(h[1].cloud.as_ref().unwrap().owner, Holder::Nobody);
    assert_eq!(m.counts().get(&(Role::Backup, Role::Master)), Some(&1));
}

#[test]
fn cold_start_with_bfd_up_only_the_preferred_node_claims() {
    let t0 = Instant::now();
    let mut preferred = HaMachine::new(cfg(0)).unwrap();
    let mut other = HaMachine::new(cfg(1)).unwrap();
    for m in [&mut preferred, &mut other] {
        m.handle(Input::Start, t0);
        m.handle(
            Input::BfdUp { peer_discr: 7 },
            t0 + Duration::from_millis(1200),
        );
    }
    replay(
        &mut other,
        t0,
        vec![
            (3000, Tick, vec![], Role::Backup),
            (60_000, Tick, vec![], Role::Backup),
        ],
    );
    // Preferred: preempt_hold + handover_pause after BFD Up.
    replay(
        &mut preferred,
        t0,
        vec![
            (3000, Tick, vec![], Role::Backup),
            (7199, Tick, vec![], Role::Backup),
            (7200, Tick, vec![QueryCloud], Role::Backup),
            (
                7210,
                In(Input::Cloud(CloudVerdict::unknown())),
                vec![Promote],
                Role::Master,
            ),
        ],
    );
}

#[test]
fn returning_preferred_node_waits_for_the_masters_handover() {
    let t0 = Instant::now();
    // The non-preferred MASTER sees the preferred peer return.
    let mut master = HaMachine::new(cfg(1)).unwrap();
    master.handle(Input::Start, t0);
    master.on_tick(t0 + Duration::from_secs(3));
    master.handle(
        aws(Holder::Nobody, false, None),
        t0 + Duration::from_secs(3),
    );
    assert_eq!(master.role(), Role::Master);
    replay(
        &mut master,
        t0,
        vec![
            (
                10_000,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Master,
            ),
            (14_999, Tick, vec![QueryCloud], Role::Master), // periodic verify
            (
                14_999,
                In(aws(Holder::Us, true, Some((Holder::Us, 100)))),
                vec![RenewLease],
                Role::Master,
            ),
            (15_000, Tick, vec![SendAdminDown, Demote], Role::Backup),
            (16_000, Tick, vec![ResumeBfd], Role::Backup),
        ],
    );
    // The returning node: BFD Up at 10 s, AdminDown at 15 s promotes at once.
    let mut back = HaMachine::new(cfg(0)).unwrap();
    replay(
        &mut back,
        t0,
        vec![
            (9_000, In(Input::Start), vec![], Role::Backup),
            (
                10_000,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Backup,
            ),
            (14_999, Tick, vec![], Role::Backup),
            (
                15_000,
                In(Input::PeerAdminDown),
                vec![Promote],
                Role::Master,
            ),
        ],
    );
}

/// With connection sync on, the non-preferred MASTER keeps the role past
/// the preempt hold until the returning peer has confirmed its resync, and
/// the returning node does not claim while the MASTER streams to it.
#[test]
fn with_sync_the_failback_waits_for_the_peers_resync() {
    let t0 = Instant::now();
    let gated = |id| HaConfig {
        sync_gate: true,
        verify_interval: Duration::from_secs(600),
        ..cfg(id)
    };
    let mut master = HaMachine::new(gated(1)).unwrap();
    master.handle(Input::Start, t0);
    master.on_tick(t0 + Duration::from_secs(3));
    master.handle(
        aws(Holder::Nobody, false, None),
        t0 + Duration::from_secs(3),
    );
    assert_eq!(master.role(), Role::Master);
    replay(
        &mut master,
        t0,
        vec![
            (
                10_000,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Master,
            ),
            (10_050, In(Input::SyncConnected(true)), vec![], Role::Master),
            // The hold elapses, but the peer has not confirmed its resync.
            (15_000, Tick, vec![], Role::Master),
            (40_000, Tick, vec![], Role::Master),
            (
                41_000,
                In(Input::PeerSyncDone),
                vec![SendAdminDown, Demote],
                Role::Backup,
            ),
        ],
    );
    let mut back = HaMachine::new(gated(0)).unwrap();
    replay(
        &mut back,
        t0,
        vec![
            (9_000, In(Input::Start), vec![], Role::Backup),
            (
                10_000,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Backup,
            ),
            (10_100, In(Input::PeerStreaming(true)), vec![], Role::Backup),
            // Past preempt_hold + handover_pause: no claim while streamed to.
            (16_000, Tick, vec![], Role::Backup),
            (
                41_000,
                In(Input::PeerAdminDown),
                vec![Promote],
                Role::Master,
            ),
        ],
    );
    // Without a sync session (port blocked, keys differ) the MASTER hands
    // over at the hold as without sync: the returning node, never streamed
    // to, would claim at its own hold, and two MASTERs must not result.
    let mut alone = HaMachine::new(gated(1)).unwrap();
    alone.handle(Input::Start, t0);
    alone.handle(Input::PeerAdminDown, t0);
    alone.handle(Input::BfdUp { peer_discr: 8 }, t0 + Duration::from_secs(1));
    assert_eq!(
        alone.on_tick(t0 + Duration::from_secs(6)),
        vec![SendAdminDown, Demote]
    );
    // A session that drops before the resync is confirmed: another hold,
    // then the handover without it.
    let mut dropped = HaMachine::new(gated(1)).unwrap();
    dropped.handle(Input::Start, t0);
    dropped.handle(Input::PeerAdminDown, t0);
    dropped.handle(Input::SyncConnected(true), t0);
    dropped.handle(Input::BfdUp { peer_discr: 8 }, t0 + Duration::from_secs(1));
    assert!(dropped.on_tick(t0 + Duration::from_secs(6)).is_empty());
    dropped.handle(Input::SyncConnected(false), t0 + Duration::from_secs(20));
    assert!(dropped.on_tick(t0 + Duration::from_secs(24)).is_empty());
    assert_eq!(
        dropped.on_tick(t0 + Duration::from_secs(25)),
        vec![SendAdminDown, Demote]
    );
    // The returning node whose stream ends before the handover claims
    // after a fresh hold.
    let mut orphan = HaMachine::new(gated(0)).unwrap();
    orphan.handle(Input::Start, t0);
    orphan.handle(Input::BfdUp { peer_discr: 7 }, t0);
    orphan.handle(Input::PeerStreaming(true), t0);
    assert!(orphan.on_tick(t0 + Duration::from_secs(7)).is_empty());
    orphan.handle(Input::PeerStreaming(false), t0 + Duration::from_secs(30));
    // preempt_hold + handover_pause (6 s) after the stream ended.
    assert!(
        orphan
            .on_tick(t0 + Duration::from_millis(35_900))
            .is_empty()
    );
    assert_eq!(orphan.role(), Role::Backup);
    assert!(
        !orphan.on_tick(t0 + Duration::from_secs(36)).is_empty(),
        "claims"
    );
    // A resync confirmed before BFD came Up still counts.
    let mut early = HaMachine::new(gated(1)).unwrap();
    early.handle(Input::Start, t0);
    early.handle(Input::PeerAdminDown, t0);
    assert_eq!(early.role(), Role::Master);
    early.handle(Input::SyncConnected(true), t0 + Duration::from_secs(1));
    early.handle(Input::PeerSyncDone, t0 + Duration::from_secs(1));
    early.handle(Input::BfdUp { peer_discr: 9 }, t0 + Duration::from_secs(2));
    assert_eq!(
        early.on_tick(t0 + Duration::from_secs(7)),
        vec![SendAdminDown, Demote]
    );
}

#[test]
fn returning_node_asks_cloud_and_stays_backup_when_peer_owns() {
    let t0 = Instant::now();
    let mut cfg0 = cfg(0);
    cfg0.preempt = false;
    let mut back = HaMachine::new(cfg0).unwrap();
    replay(
        &mut back,
        t0,
        vec![
            (0, In(Input::Start), vec![], Role::Backup),
            (
                100,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Backup,
            ),
            (6100, Tick, vec![QueryCloud], Role::Backup),
            (
                6150,
                In(aws(Holder::Peer, true, Some((Holder::Peer, 4000)))),
                vec![],
                Role::Backup,
            ),
            (60_000, Tick, vec![], Role::Backup),
        ],
    );
}

#[test]
fn graceful_shutdown_sends_admin_down_before_demoting() {
    let t0 = Instant::now();
    let mut m = HaMachine::new(cfg(0)).unwrap();
    m.handle(Input::Start, t0);
    m.handle(Input::PeerAdminDown, t0);
    assert_eq!(m.role(), Role::Master);
    assert_eq!(m.handle(Input::Shutdown, t0), vec![SendAdminDown, Demote]);
    assert_eq!(m.role(), Role::Init);
}

#[test]
fn split_brain_guard_postpones_claim_while_peer_holds_the_lease() {
    let t0 = Instant::now();
    // Without the lease heartbeat (`lease_watch` 0): the lease is waited out.
    let mut m = HaMachine::new(HaConfig {
        lease_watch: Duration::ZERO,
        ..cfg(1)
    })
    .unwrap();
    replay(
        &mut m,
        t0,
        vec![
            (0, In(Input::Start), vec![], Role::Backup),
            (
                500,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Backup,
            ),
            (20_000, In(Input::BfdDown), vec![QueryCloud], Role::Backup),
            // Peer instance runs and its lease has 1.5 s left: wait for it.
            (
                20_100,
                In(aws(Holder::Peer, true, Some((Holder::Peer, 1500)))),
                vec![],
                Role::Backup,
            ),
            (21_599, Tick, vec![], Role::Backup),
            (21_600, Tick, vec![QueryCloud], Role::Backup),
            // The lease was not renewed: the peer is really gone.
            (
                21_650,
                In(aws(Holder::Peer, true, Some((Holder::Peer, 0)))),
                vec![Promote],
                Role::Master,
            ),
        ],
    );
}

#[test]
fn peer_instance_stopped_promotes_despite_lease() {
    let t0 = Instant::now();
    let mut m = HaMachine::new(cfg(1)).unwrap();
    m.handle(Input::Start, t0);
    m.handle(Input::BfdUp { peer_discr: 7 }, t0);
    let ms = |v| t0 + Duration::from_millis(v);
    assert_eq!(m.handle(Input::BfdDown, ms(10_000)), vec![QueryCloud]);
    let out = m.handle(
        aws(Holder::Peer, false, Some((Holder::Peer, 3000))),
        ms(10_050),
    );
    assert_eq!(out, vec![Promote]);
}

#[test]
fn master_that_lost_the_eip_demotes_instead_of_taking_it_back() {
    let t0 = Instant::now();
    let mut m = HaMachine::new(cfg(0)).unwrap();
    m.handle(Input::Start, t0);
    m.handle(Input::PeerAdminDown, t0);
    let ms = |v| t0 + Duration::from_millis(v);
    assert_eq!(m.on_tick(ms(2000)), vec![QueryCloud]);
    let out = m.handle(
        aws(Holder::Peer, true, Some((Holder::Peer, 2000))),
        ms(2010),
    );
    assert_eq!(out, vec![Demote]);
    assert_eq!(m.role(), Role::Backup);
    assert!(m.history().last().unwrap().reason.contains("peer as owner"));
}

#[test]
fn failed_promote_goes_to_fault_and_recovers_to_backup() {
    let t0 = Instant::now();
    let mut m = HaMachine::new(cfg(0)).unwrap();
    m.handle(Input::Start, t0);
    m.handle(Input::PeerAdminDown, t0);
    assert_eq!(
        m.handle(Input::ActionFailed("AssociateAddress 503".into()), t0),
        vec![Demote]
    );
    assert_eq!(m.role(), Role::Fault);
    assert_eq!(m.handle(Input::FaultCleared, t0), vec![]);
    assert_eq!(m.role(), Role::Backup);
}

#[test]
fn bad_self_id_is_rejected() {
    let c = HaConfig {
        self_id: 2,
        ..cfg(0)
    };
    assert_eq!(HaMachine::new(c).unwrap_err(), HaConfigError::BadSelfId(2));
}

/// Two machines, a BFD link that can drop or flap, and a cloud that records
/// the EIP owner and lease. The cloud answers queries at once.
struct Pair {
    t0: Instant,
    now: Instant,
    m: [HaMachine; 2],
    started: [bool; 2],
    instance_running: [bool; 2],
    bfd_up: bool,
    owner: Option<usize>,
    lease: Option<(usize, Instant)>,
    aws: bool,
    eip_moves: u32,
    promotions: [u32; 2],
    /// BFD discriminator of each node's current process.
    discr: [u32; 2],
    /// 10 ms samples that saw two MASTERs.
    dual_samples: u32,
    /// Cloud queries and lease renewals each node asked for.
    queries: [u32; 2],
    renewals: [u32; 2],
}

const LEASE: Duration = Duration::from_secs(3);

impl Pair {
    fn new(aws: bool) -> Pair {
        let t0 = Instant::now();
        Pair {
            t0,
            now: t0,
            m: [
                HaMachine::new(cfg(0)).unwrap(),
                HaMachine::new(cfg(1)).unwrap(),
            ],
            started: [false; 2],
            instance_running: [true; 2],
            bfd_up: false,
            owner: None,
            lease: None,
            aws,
            eip_moves: 0,
            promotions: [0; 2],
            discr: [100, 200],
            dual_samples: 0,
            queries: [0; 2],
            renewals: [0; 2],
        }
    }

    fn verdict(&self, me: usize) -> CloudVerdict {
        if !self.aws {
            return CloudVerdict::unknown();
        }
        let h = |n: usize| if n == me { Holder::Us } else { Holder::Peer };
        CloudVerdict {
            owner: self.owner.map_or(Holder::Nobody, h),
            peer_running: Some(self.instance_running[1 - me]),
            lease: self
                .lease
                .map(|(n, exp)| (h(n), exp.saturating_duration_since(self.now))),
            lease_version: self
                .lease
                .map(|(_, exp)| (exp - self.t0).as_millis() as u64),
        }
    }

    fn feed(&mut self, me: usize, input: Input) {
        let acts = self.m[me].handle(input, self.now);
        self.act(me, acts);
    }

    fn act(&mut self, me: usize, acts: Vec<Action>) {
        for a in acts {
            match a {
                Promote => {
                    self.promotions[me] += 1;
                    if self.owner != Some(me) {
                        self.eip_moves += 1;
                    }
                    self.owner = Some(me);
                    self.lease = Some((me, self.now + LEASE));
                }
                RenewLease => {
                    self.renewals[me] += 1;
                    self.lease = Some((me, self.now + LEASE));
                }
                Demote => {
                    if self.lease.is_some_and(|l| l.0 == me) {
                        self.lease = None;
                    }
                }
                QueryCloud => {
                    self.queries[me] += 1;
                    let v = self.verdict(me);
                    self.feed(me, Input::Cloud(v));
                }
                SendAdminDown => {
                    if self.bfd_up && self.started[1 - me] {
                        self.bfd_up = false;
                        self.feed(1 - me, Input::PeerAdminDown);
                    }
                }
                ResumeBfd => self.set_bfd(true),
            }
        }
    }

    fn start(&mut self, me: usize) {
        self.started[me] = true;
        self.feed(me, Input::Start);
    }

    fn set_bfd(&mut self, up: bool) {
        let up = up && self.started[0] && self.started[1];
        if up != self.bfd_up {
            self.bfd_up = up;
            for me in 0..2 {
                if self.started[me] {
                    let input = if up {
                        Input::BfdUp {
                            peer_discr: self.discr[1 - me],
                        }
                    } else {
                        Input::BfdDown
                    };
                    self.feed(me, input);
                }
            }
        }
    }

    fn masters(&self) -> usize {
        self.m.iter().filter(|m| m.role() == Role::Master).count()
    }

    /// Advances in 10 ms steps, running timers; returns the max number of
    /// simultaneous MASTERs seen at the samples.
    fn run_ms(&mut self, ms: u64, mut link: impl FnMut(u64) -> bool) -> usize {
        let mut worst = 0;
        for _ in 0..ms / 10 {
            self.now += Duration::from_millis(10);
            let t = (self.now - self.t0).as_millis() as u64;
            self.set_bfd(link(t));
            for me in 0..2 {
                if self.started[me] {
                    let acts = self.m[me].on_tick(self.now);
                    self.act(me, acts);
                }
            }
            worst = worst.max(self.masters());
            self.dual_samples += u32::from(self.masters() == 2);
        }
        worst
    }
}

#[test]
fn pair_cold_start_never_has_two_masters_for_any_start_offset() {
    for aws in [false, true] {
        for offset_ms in [0u64, 10, 700, 1200, 2990, 3010, 9000] {
            let mut p = Pair::new(aws);
            p.start(1);
            p.run_ms(offset_ms, |_| true);
            p.start(0);
            // BFD takes about a second to come Up at the slow rate.
            let up_at = offset_ms + 1000;
            let worst = p.run_ms(30_000, |t| t >= up_at);
            assert_eq!(
                worst, 1,
                "aws={aws} offset={offset_ms}: two MASTERs sampled"
            );
            assert_eq!(p.m[0].role(), Role::Master, "aws={aws} offset={offset_ms}");
            assert_eq!(p.m[1].role(), Role::Backup, "aws={aws} offset={offset_ms}");
        }
    }
}

#[test]
fn pair_graceful_shutdown_promotes_backup_in_the_same_instant() {
    let mut p = Pair::new(false);
    p.start(0);
    p.start(1);
    p.run_ms(10_000, |_| true);
    assert_eq!(p.m[0].role(), Role::Master);
    p.started[0] = false;
    let acts = p.m[0].handle(Input::Shutdown, p.now);
    p.act(0, acts);
    assert_eq!(p.m[1].role(), Role::Master);
    let leave = p.m[0].history().last().unwrap().at;
    let take = p.m[1].history().last().unwrap().at;
    println!(
        "graceful handover gap (simulated clock): {:?}",
        take - leave
    );
    assert_eq!(take, leave);
}

#[test]
fn pair_lossy_link_with_cloud_guard_never_moves_the_eip() {
    let mut p = Pair::new(true);
    p.start(0);
    p.start(1);
    p.run_ms(10_000, |_| true);
    assert_eq!(p.eip_moves, 1);
    // 60 s of flapping: Down 40 ms out of every 250 ms.
    let worst = p.run_ms(60_000, |t| t % 250 >= 40);
    assert_eq!(worst, 1);
    assert_eq!(p.eip_moves, 1, "no EIP ping-pong");
    assert_eq!(p.m[0].role(), Role::Master);
}

#[test]
fn pair_lossy_link_without_cloud_info_gives_the_role_back_at_once() {
    let mut p = Pair::new(false);
    p.start(0);
    p.start(1);
    p.run_ms(10_000, |_| true);
    let before = p.promotions;
    // 60 s of flapping: Down 40 ms out of every 250 ms.
    p.run_ms(60_000, |t| t % 250 >= 40);
    let promotions_b = p.promotions[1] - before[1];
    println!(
        "lossy link without cloud info: backup promotions in 60 s = {promotions_b}, \
         10 ms samples with two MASTERs = {}",
        p.dual_samples
    );
    // Nothing tells B that A is alive on an outage. One or two outages may
    // be an isolated flap followed by a real failure, which must be acted on
    // at once, so B promotes on each of the first two; each time BFD returns
    // with A's unchanged discriminator and B hands back at once. The third
    // outage marks the link as flapping and B stays BACKUP from then on.
    assert!(promotions_b <= 2, "B promoted {promotions_b} times");
    // Two MASTERs only while those two 40 ms outages lasted (4 samples each).
    assert!(
        p.dual_samples <= 8,
        "two MASTERs for {} samples",
        p.dual_samples
    );
    assert_eq!(p.m[0].role(), Role::Master);
    assert_eq!(p.m[1].role(), Role::Backup);
}

#[test]
fn master_promoted_on_peer_loss_hands_back_only_if_the_same_peer_returns() {
    let t0 = Instant::now();
    for (returning_discr, want) in [(7, vec![SendAdminDown, Demote]), (8, vec![])] {
        let mut m = HaMachine::new(cfg(1)).unwrap();
        replay(
            &mut m,
            t0,
            vec![
                (0, In(Input::Start), vec![], Role::Backup),
                (
                    100,
                    In(Input::BfdUp { peer_discr: 7 }),
                    vec![],
                    Role::Backup,
                ),
                (9_000, In(Input::BfdDown), vec![QueryCloud], Role::Backup),
                (
                    9_001,
                    In(Input::Cloud(CloudVerdict::unknown())),
                    vec![Promote],
                    Role::Master,
                ),
            ],
        );
        let role = if want.is_empty() {
            Role::Master
        } else {
            Role::Backup
        };
        replay(
            &mut m,
            t0,
            vec![(
                9_100,
                In(Input::BfdUp {
                    peer_discr: returning_discr,
                }),
                want,
                role,
            )],
        );
    }
}

#[test]
fn pair_master_crash_is_taken_over_and_returning_node_waits() {
    let mut p = Pair::new(true);
    p.start(0);
    p.start(1);
    p.run_ms(10_000, |_| true);
    // Kill node 0 (it stops renewing; the instance keeps running).
    let crash = p.now;
    p.m[0] = HaMachine::new(cfg(0)).unwrap();
    p.discr[0] = 101;
    p.started[0] = false;
    p.set_bfd(false);
    p.run_ms(5_000, |_| false);
    let took = p.m[1].history().last().unwrap();
    assert_eq!(took.new, Role::Master);
    assert!(took.reason.contains("LeaseNotRenewed"), "{}", took.reason);
    let waited = took.at - crash;
    println!(
        "takeover after agent crash (simulated clock, lease {LEASE:?}, watch {WATCH:?}): {waited:?}"
    );
    // The lease heartbeat: the watch window (plus the 10 ms steps), not
    // the lease.
    assert!(
        waited >= WATCH && waited <= WATCH + Duration::from_millis(20),
        "waited {waited:?}: the lease watch is {WATCH:?}"
    );
    // Node 0 returns; it must stay BACKUP for the preempt hold.
    p.start(0);
    let back = p.now;
    let worst = p.run_ms(30_000, |_| true);
    assert_eq!(worst, 1);
    let regained = p.m[0]
        .history()
        .iter()
        .find(|t| t.new == Role::Master && t.at > back)
        .unwrap();
    assert!(
        regained.at - back >= Duration::from_secs(5),
        "returned node preempted early"
    );
    assert_eq!(p.m[1].role(), Role::Backup);
}

/// A node that handed the role back after a BFD outage must not wait for a
/// BFD Up that never comes: if the peer dies during (or after) the handover
/// pause, the session goes AdminDown -> Down and reports nothing more, so
/// the node claims once `claim_hold` passes after the resume without BFD Up.
#[test]
fn handover_then_peer_dies_in_the_pause_is_claimed_after_claim_hold() {
    let t0 = Instant::now();
    let mut m = HaMachine::new(cfg(1)).unwrap();
    replay(
        &mut m,
        t0,
        vec![
            (0, In(Input::Start), vec![], Role::Backup),
            (
                100,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Backup,
            ),
            (9_000, In(Input::BfdDown), vec![QueryCloud], Role::Backup),
            (
                9_001,
                In(Input::Cloud(CloudVerdict::unknown())),
                vec![Promote],
                Role::Master,
            ),
            // The same peer returns: hand back, pause, resume.
            (
                9_100,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![SendAdminDown, Demote],
                Role::Backup,
            ),
            (10_100, Tick, vec![ResumeBfd], Role::Backup),
            // The peer was killed in the pause: BFD never comes Up again.
            // One outage is no flapping, so the claim runs claim_hold after
            // the resume (13.1 s), with no hold-down on top.
            (13_099, Tick, vec![], Role::Backup),
            (13_100, Tick, vec![QueryCloud], Role::Backup),
            (
                13_101,
                In(Input::Cloud(CloudVerdict::unknown())),
                vec![Promote],
                Role::Master,
            ),
        ],
    );
    // With the peer alive BFD comes back Up and no claim happens.
    let mut m = HaMachine::new(cfg(1)).unwrap();
    replay(
        &mut m,
        t0,
        vec![
            (0, In(Input::Start), vec![], Role::Backup),
            (
                100,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Backup,
            ),
            (9_000, In(Input::BfdDown), vec![QueryCloud], Role::Backup),
            (
                9_001,
                In(Input::Cloud(CloudVerdict::unknown())),
                vec![Promote],
                Role::Master,
            ),
            (
                9_100,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![SendAdminDown, Demote],
                Role::Backup,
            ),
            (10_100, Tick, vec![ResumeBfd], Role::Backup),
            (
                11_000,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Backup,
            ),
            (60_000, Tick, vec![], Role::Backup),
        ],
    );
}

/// Both nodes promoted on a start-up BFD flap and both hand back at the
/// same moment (their AdminDowns cross and are discarded): both are BACKUP
/// with BFD AdminDown. The preferred node must still end up MASTER, whether
/// BFD comes back (then it alone claims) or not (then both claim after
/// `claim_hold`, as at a cold start without BFD).
#[test]
fn pair_simultaneous_handover_still_elects_the_preferred_node() {
    for bfd_returns in [true, false] {
        let t0 = Instant::now();
        let mut m = [
            HaMachine::new(cfg(0)).unwrap(),
            HaMachine::new(cfg(1)).unwrap(),
        ];
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for (i, n) in m.iter_mut().enumerate() {
            let peer = [200, 100][i];
            n.handle(Input::Start, at(0));
            n.handle(Input::BfdUp { peer_discr: peer }, at(1000));
            assert_eq!(n.handle(Input::BfdDown, at(1500)), vec![QueryCloud]);
            assert_eq!(
                n.handle(Input::Cloud(CloudVerdict::unknown()), at(1501)),
                vec![Promote]
            );
            assert_eq!(
                n.handle(Input::BfdUp { peer_discr: peer }, at(1600)),
                vec![SendAdminDown, Demote]
            );
        }
        let mut resumed = [false; 2];
        for t in (1610..40_000).step_by(10) {
            for (i, n) in m.iter_mut().enumerate() {
                let mut acts = n.on_tick(at(t));
                if acts.contains(&ResumeBfd) {
                    resumed[i] = true;
                }
                if bfd_returns && resumed == [true, true] && t == 3000 {
                    acts.extend(n.handle(
                        Input::BfdUp {
                            peer_discr: [200, 100][i],
                        },
                        at(t),
                    ));
                }
                if acts.contains(&QueryCloud) {
                    n.handle(Input::Cloud(CloudVerdict::unknown()), at(t));
                }
            }
            if m[0].role() == Role::Master {
                break;
            }
        }
        assert_eq!(m[0].role(), Role::Master, "bfd_returns={bfd_returns}");
        if bfd_returns {
            assert_eq!(m[1].role(), Role::Backup);
        }
    }
}

/// Our own resume (AdminDown -> Down) is never read as the peer's handover,
/// even when the peer's last packet was AdminDown too; the peer's AdminDown
/// taking an Up session Down is.
#[test]
fn own_resume_is_not_a_peer_admin_down() {
    use crate::bfd::packet::{Diag, State as S};
    let sc = |old, new, remote_state| StateChange {
        peer: "10.0.0.2".parse().unwrap(),
        old,
        new,
        diag: Diag::None,
        remote_state,
        remote_discr: 7,
        at: std::time::SystemTime::now(),
        at_mono: Instant::now(),
    };
    assert_eq!(
        Input::from_bfd(&sc(S::AdminDown, S::Down, S::AdminDown)),
        None
    );
    assert_eq!(Input::from_bfd(&sc(S::AdminDown, S::Down, S::Down)), None);
    assert_eq!(
        Input::from_bfd(&sc(S::Up, S::Down, S::AdminDown)),
        Some(Input::PeerAdminDown)
    );
    assert_eq!(
        Input::from_bfd(&sc(S::Up, S::Down, S::Up)),
        Some(Input::BfdDown)
    );
}

/// The bench's failure case: node 1 (BACKUP, gARP, so the cloud knows
/// nothing) sees one BFD outage, claims on it and hands back when node 0
/// reappears unchanged; 1.5 s later node 0 really dies. One earlier flap
/// must not delay that takeover.
#[test]
fn isolated_flap_then_real_failure_is_claimed_at_once() {
    let t0 = Instant::now();
    let mut m = HaMachine::new(cfg(1)).unwrap();
    replay(
        &mut m,
        t0,
        vec![
            (0, In(Input::Start), vec![], Role::Backup),
            (
                100,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Backup,
            ),
            // The isolated flap.
            (20_000, In(Input::BfdDown), vec![QueryCloud], Role::Backup),
            (
                20_001,
                In(Input::Cloud(CloudVerdict::unknown())),
                vec![Promote],
                Role::Master,
            ),
            (
                20_040,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![SendAdminDown, Demote],
                Role::Backup,
            ),
            (21_040, Tick, vec![ResumeBfd], Role::Backup),
            (
                22_000,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Backup,
            ),
            // The real failure, well inside the 5 s hold-down of the flap
            // and of the role changes it caused: claimed at once.
            (23_500, In(Input::BfdDown), vec![QueryCloud], Role::Backup),
            (
                23_501,
                In(Input::Cloud(CloudVerdict::unknown())),
                vec![Promote],
                Role::Master,
            ),
        ],
    );
    assert!(!m.flapping(t0 + Duration::from_millis(23_500)));
}

/// Node 1 (gARP) on a link that keeps dropping BFD: the first two outages
/// are acted on (each could be followed by a real failure), the third marks
/// the link as flapping. Returns the machine at 13.54 s, BACKUP, flapping,
/// after four outages; the last one at 13.5 s.
fn backup_on_a_flapping_link(t0: Instant) -> HaMachine {
    let mut m = HaMachine::new(cfg(1)).unwrap();
    let unknown = || In(Input::Cloud(CloudVerdict::unknown()));
    let up = || In(Input::BfdUp { peer_discr: 7 });
    replay(
        &mut m,
        t0,
        vec![
            (0, In(Input::Start), vec![], Role::Backup),
            (100, up(), vec![], Role::Backup),
            // Outage 1: claim, hand back, resume.
            (10_000, In(Input::BfdDown), vec![QueryCloud], Role::Backup),
            (10_001, unknown(), vec![Promote], Role::Master),
            (10_040, up(), vec![SendAdminDown, Demote], Role::Backup),
            (11_040, Tick, vec![ResumeBfd], Role::Backup),
            (11_500, up(), vec![], Role::Backup),
            // Outage 2, 1.75 s later: still acted on at once.
            (11_750, In(Input::BfdDown), vec![QueryCloud], Role::Backup),
            (11_751, unknown(), vec![Promote], Role::Master),
            (11_790, up(), vec![SendAdminDown, Demote], Role::Backup),
            (12_790, Tick, vec![ResumeBfd], Role::Backup),
            (13_000, up(), vec![], Role::Backup),
            // Outage 3: the link is flapping; no claim, the hold-down runs.
            (13_250, In(Input::BfdDown), vec![], Role::Backup),
            (13_290, up(), vec![], Role::Backup),
            // Outage 4: still flapping.
            (13_500, In(Input::BfdDown), vec![], Role::Backup),
            (13_540, up(), vec![], Role::Backup),
        ],
    );
    assert!(m.flapping(t0 + Duration::from_millis(13_540)));
    m
}

/// Repeated flaps: no claim on a short outage, and when BFD stays Down
/// (the peer died while the link flapped) the claim comes once the outage
/// has lasted the hold-down (5 s).
#[test]
fn repeated_flaps_hold_the_claim_down_for_the_hold_down() {
    let t0 = Instant::now();
    let mut m = backup_on_a_flapping_link(t0);
    replay(
        &mut m,
        t0,
        vec![
            // The hold-down of outages 3 and 4 ended with BFD back Up.
            (18_250, Tick, vec![], Role::Backup),
            (18_500, Tick, vec![], Role::Backup),
            // Outage 5 lasts.
            (20_000, In(Input::BfdDown), vec![], Role::Backup),
            (24_999, Tick, vec![], Role::Backup),
            (25_000, Tick, vec![QueryCloud], Role::Backup),
            (
                25_001,
                In(Input::Cloud(CloudVerdict::unknown())),
                vec![Promote],
                Role::Master,
            ),
        ],
    );
}

/// The penalty decays: once the link has been quiet long enough, an outage
/// is claimed at once again.
#[test]
fn damping_ends_when_the_penalty_decays_and_claims_are_prompt_again() {
    let t0 = Instant::now();
    let mut m = backup_on_a_flapping_link(t0);
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    // Penalty about 3.4 at 13.5 s, half-life 5 s: below 1 about 8.8 s later.
    assert!(m.flapping(at(22_000)));
    assert!(!m.flapping(at(22_500)));
    replay(
        &mut m,
        t0,
        vec![
            (22_500, In(Input::BfdDown), vec![QueryCloud], Role::Backup),
            (
                22_501,
                In(Input::Cloud(CloudVerdict::unknown())),
                vec![Promote],
                Role::Master,
            ),
        ],
    );
}

/// BACKUP side of the lease heartbeat, instance hang: the peer's instance
/// runs and holds an unexpired lease, but nothing renews it after our BFD
/// Down. The BACKUP reads it every quarter of the watch and claims on the
/// first read issued once the watch has passed, long before the expiry.
#[test]
fn lease_not_renewed_within_the_watch_is_claimed_without_waiting_for_expiry() {
    let t0 = Instant::now();
    let mut m = HaMachine::new(cfg(1)).unwrap();
    let lease = Some((Holder::Peer, 5_000));
    replay(
        &mut m,
        t0,
        vec![
            (0, In(Input::Start), vec![], Role::Backup),
            (
                500,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Backup,
            ),
            (20_000, In(Input::BfdDown), vec![QueryCloud], Role::Backup),
            (
                20_010,
                In(aws_v(Holder::Peer, true, lease, 1)),
                vec![],
                Role::Backup,
            ),
            (20_159, Tick, vec![], Role::Backup),
            (20_160, Tick, vec![QueryCloud], Role::Backup),
            (
                20_170,
                In(aws_v(Holder::Peer, true, lease, 1)),
                vec![],
                Role::Backup,
            ),
            (20_320, Tick, vec![QueryCloud], Role::Backup),
            (
                20_330,
                In(aws_v(Holder::Peer, true, lease, 1)),
                vec![],
                Role::Backup,
            ),
            (20_480, Tick, vec![QueryCloud], Role::Backup),
            (
                20_490,
                In(aws_v(Holder::Peer, true, lease, 1)),
                vec![],
                Role::Backup,
            ),
            // The last read is issued when the watch ends (600 ms after the Down).
            (20_599, Tick, vec![], Role::Backup),
            (20_600, Tick, vec![QueryCloud], Role::Backup),
            (
                20_610,
                In(aws_v(Holder::Peer, true, lease, 1)),
                vec![Promote],
                Role::Master,
            ),
        ],
    );
    let last = m.history().last().unwrap();
    assert!(last.reason.contains("LeaseNotRenewed"), "{}", last.reason);
}

/// BACKUP side, partition: a renewal (a new lease version) seen during the
/// watch means the peer lives and reaches EC2. No claim; the BACKUP falls
/// back to waiting out the lease, which the live MASTER keeps renewing.
#[test]
fn a_renewal_after_the_bfd_down_keeps_the_backup_backup() {
    let t0 = Instant::now();
    let mut m = HaMachine::new(cfg(1)).unwrap();
    let lease = Some((Holder::Peer, 5_000));
    let renewed = Some((Holder::Peer, 5_900));
    replay(
        &mut m,
        t0,
        vec![
            (0, In(Input::Start), vec![], Role::Backup),
            (
                500,
                In(Input::BfdUp { peer_discr: 7 }),
                vec![],
                Role::Backup,
            ),
            (20_000, In(Input::BfdDown), vec![QueryCloud], Role::Backup),
            (
                20_010,
                In(aws_v(Holder::Peer, true, lease, 1)),
                vec![],
                Role::Backup,
            ),
            (20_160, Tick, vec![QueryCloud], Role::Backup),
            (
                20_170,
                In(aws_v(Holder::Peer, true, renewed, 2)),
                vec![],
                Role::Backup,
            ),
            (20_600, Tick, vec![], Role::Backup),
        ],
    );
    // Next: the lease's expiry as read (5.9 s after the renewal was seen).
    assert_eq!(
        m.next_deadline(),
        Some(t0 + Duration::from_millis(20_170 + 5_900))
    );
}

/// A first read that comes back after the watch window (slow EC2, or a
/// claim delayed by flap damping) cannot tell a partition from a hang: the
/// claim waits out the lease, as without the heartbeat.
#[test]
fn a_first_read_after_the_watch_waits_out_the_lease() {
    let t0 = Instant::now();
    let mut m = HaMachine::new(cfg(1)).unwrap();
    m.handle(Input::Start, t0);
    m.handle(Input::BfdUp { peer_discr: 7 }, t0);
    let ms = |v| t0 + Duration::from_millis(v);
    assert_eq!(m.handle(Input::BfdDown, ms(10_000)), vec![QueryCloud]);
    let out = m.handle(
        aws_v(Holder::Peer, true, Some((Holder::Peer, 4_000)), 1),
        ms(10_700),
    );
    assert_eq!((out, m.role()), (vec![], Role::Backup));
    assert_eq!(m.next_deadline(), Some(ms(14_700)));
}

/// MASTER side: on BFD loss it renews at once (the heartbeat), then every
/// third of the watch for twice the watch, so a renewal lands inside the
/// BACKUP's window even when the two Downs are a BFD interval apart.
#[test]
fn master_renews_the_lease_at_once_on_bfd_loss_then_every_third_of_the_watch() {
    let t0 = Instant::now();
    let mut m = HaMachine::new(HaConfig {
        verify_interval: Duration::from_secs(60),
        ..cfg(0)
    })
    .unwrap();
    m.handle(Input::Start, t0);
    m.handle(Input::PeerAdminDown, t0);
    assert_eq!(m.role(), Role::Master);
    m.handle(Input::BfdUp { peer_discr: 7 }, t0 + Duration::from_secs(1));
    let mut renewals = vec![];
    let down = t0 + Duration::from_secs(10);
    if m.handle(Input::BfdDown, down) == vec![RenewLease] {
        renewals.push(0);
    }
    for step in 1..=200u64 {
        let now = down + Duration::from_millis(step * 10);
        if m.on_tick(now) == vec![RenewLease] {
            renewals.push(step * 10);
        }
    }
    assert_eq!(renewals, [0, 200, 400, 600, 800, 1000]);
    assert_eq!(m.role(), Role::Master);
    // BFD Up ends the heartbeat.
    let mut m2 = m.clone();
    m2.handle(
        Input::BfdUp { peer_discr: 7 },
        down + Duration::from_secs(5),
    );
    assert_eq!(
        m2.handle(Input::BfdDown, down + Duration::from_secs(6)),
        vec![RenewLease]
    );
    m2.handle(
        Input::BfdUp { peer_discr: 7 },
        down + Duration::from_millis(6_100),
    );
    assert_eq!(m2.on_tick(down + Duration::from_millis(6_200)), vec![]);
}

/// A partition with EC2 reachable: BFD down for 30 s, both nodes alive and
/// renewing/reading through the cloud. The EIP never moves and there is
/// never a second MASTER; then the link heals. Also counts the cloud calls
/// each node asks for (the EC2 request budget in docs/HA.md: a query is
/// DescribeAddresses + DescribeInstances, a renewal one CreateTags).
#[test]
fn pair_partition_with_the_cloud_reachable_never_moves_the_eip() {
    let mut p = Pair::new(true);
    p.start(0);
    p.start(1);
    p.run_ms(10_000, |_| true);
    assert_eq!((p.eip_moves, p.m[0].role()), (1, Role::Master));
    // Steady state: one minute.
    let (q0, r0) = (p.queries, p.renewals);
    p.run_ms(60_000, |_| true);
    let steady = (
        [p.queries[0] - q0[0], p.queries[1] - q0[1]],
        [p.renewals[0] - r0[0], p.renewals[1] - r0[1]],
    );
    // Partition: BFD down for 30 s.
    let (q0, r0) = (p.queries, p.renewals);
    let worst = p.run_ms(30_000, |_| false);
    let part = (
        [p.queries[0] - q0[0], p.queries[1] - q0[1]],
        [p.renewals[0] - r0[0], p.renewals[1] - r0[1]],
    );
    println!(
        "cloud requests per minute, steady state: queries (MASTER, BACKUP) {:?}, renewals {:?}; \
         in a 30 s partition: queries {:?}, renewals {:?}",
        steady.0, steady.1, part.0, part.1
    );
    assert_eq!(worst, 1, "two MASTERs during the partition");
    assert_eq!(p.eip_moves, 1, "the EIP moved during the partition");
    // Budget: the MASTER verifies and renews once per verify interval (2 s);
    // the BACKUP asks nothing.
    assert_eq!(steady, ([30, 0], [30, 0]));
    // Partition: the MASTER adds its heartbeat (1 + 5 renewals); the BACKUP
    // reads during its watch, then once per lease expiry as read.
    assert_eq!(part.1[0], 15 + 6, "MASTER renewals {:?}", part.1);
    assert_eq!(part.0[0], 15, "MASTER queries {:?}", part.0);
    // BACKUP: 1 + 4 reads in the watch, then one per lease expiry (the
    // simulated lease is 3 s and is renewed every 2 s).
    assert!(part.0[1] <= 5 + 15, "BACKUP queries {:?}", part.0);
    assert_eq!(part.1[1], 0);
    p.run_ms(10_000, |_| true);
    assert_eq!(p.masters(), 1);
    assert_eq!(p.eip_moves, 1);
}
