//! High availability: the MASTER/BACKUP election of one floatlb pair, as a
//! pure state machine ([`machine::HaMachine`]). The daemon's owner task
//! feeds it inputs (BFD state changes, cloud answers, shutdown, timer ticks)
//! and carries out the [`machine::Action`]s it returns (cloud promote and
//! demote, datapath VIP ownership, BFD AdminDown, cloud queries).
//!
//! # Priority (`--self`)
//! `--self N` is the node's instance number in the pair, as in loxilb (0 or
//! 1). The node with the lower number is *preferred*: at a cold start with
//! the BFD session Up, only the preferred node claims MASTER; the other
//! stays BACKUP. Both nodes derive the peer's number as the other one, so
//! no election traffic is needed to break the tie.
//!
//! # Policy and what it guarantees
//! * **Cold start.** Both nodes start BACKUP. A node claims only (a) when
//!   its BFD session has been Up for `preempt_hold` and it is the preferred
//!   node, or (b) when `claim_hold` passes without BFD ever being Up (the
//!   peer is absent). The non-preferred node never claims while BFD is Up.
//! * **Split-brain guard.** Every claim except a graceful handover first
//!   asks the cloud ([`machine::Action::QueryCloud`]) who owns the floating
//!   address, whether the peer instance runs, and who holds the lease tag
//!   and until when. The claim is dropped when the peer owns the address
//!   and runs, and postponed while the peer holds an unexpired lease. A
//!   MASTER re-verifies every `verify_interval` and renews its lease; if the
//!   cloud shows the peer as owner it demotes instead of taking the address
//!   back, so a partitioned pair cannot ping-pong the EIP: the address only
//!   moves to a node whose peer is stopped, whose lease expired, or who
//!   handed over gracefully.
//! * **Lease heartbeat** (AWS). On BFD Down a MASTER renews its lease at
//!   once and then every `lease_watch / 3` for `2 x lease_watch`; a BACKUP
//!   that finds the peer running with an unexpired lease re-reads it for
//!   `lease_watch`. A new lease version (a renewal after our Down) means a
//!   partition: stay BACKUP and wait the lease out. None means the peer is
//!   dead or cut off from EC2: claim now (`LeaseNotRenewed`) instead of
//!   after the expiry. Together with the MASTER's demote-on-peer-owner rule
//!   a wrong call costs one EIP move at most. Details, failure cases and the
//!   EC2 request budget: docs/HA.md.
//! * **Returning node.** A node that comes back does not preempt. If it is
//!   preferred and preemption is on, the *current* MASTER hands over after
//!   the BFD session has been Up for `preempt_hold` (or at once when the
//!   orchestrator reports [`machine::Input::PeerSyncDone`]): it sends BFD
//!   AdminDown and demotes, and the returning node promotes on the
//!   AdminDown. The hold stands in for "conntrack state synced".
//! * **Graceful handover.** On shutdown a MASTER sends BFD AdminDown before
//!   it demotes; the BACKUP promotes at once without consulting the cloud.
//! * **Outage, not failure.** A node that promoted because the peer
//!   vanished hands the role back at once (AdminDown, then demote) if BFD
//!   returns with the peer's *unchanged* BFD discriminator: a restarted peer
//!   process picks a new random one, so an unchanged one proves the peer
//!   lived through the outage and may still be MASTER. Without cloud
//!   information (gARP) this bounds a dual MASTER to the BFD outage itself.
//!   After the handover pause BFD is re-enabled; if it has not come Up
//!   `claim_hold` later (the peer died in the pause, or both handed back at
//!   once) the node claims as at a cold start.
//! * **Flapping.** Flap damping ([`damping`]) tells an isolated BFD
//!   outage from a flapping link: each Down (not AdminDown) adds 1 to a
//!   penalty that halves every `flap_hold_down`; from 2 until it decays
//!   below 1 the link counts as flapping. Only then is anything held back:
//!   a BACKUP claims only after BFD has stayed Down for `flap_hold_down`,
//!   and no claim runs within `flap_hold_down` of the last role change.
//!   Two outages never damp, so a flap shortly before a real failure does
//!   not delay the takeover. Claims caused by a flapping link stay bounded:
//!   outages more than a half-life apart are each acted on (at most one
//!   claim per half-life); closer ones damp the link after a few (at the
//!   third when each follows the one before within 0.69 half-lives), and
//!   while it is damped only an outage that lasts the hold-down is claimed.
//!
//! What the policy does not guarantee: with a provider that reports
//! nothing ([`machine::CloudVerdict::unknown`], e.g. gARP) every BFD outage
//! on a healthy pair that damping does not hold back (at least the first
//! two) still promotes the BACKUP for the length of the outage; and with `--no-preempt` and no cloud information a returning
//! preferred node claims after `preempt_hold + handover_pause`.

pub mod assigned;
pub mod cloud_worker;
pub mod damping;
pub mod fault_backoff;
pub mod machine;
pub mod orchestrate;
pub mod records;
pub mod state_file;
