//! Floating-address providers: who moves the Elastic IP and the private VIP
//! to the node that has just become MASTER.
//!
//! The HA state machine only knows the [`CloudProvider`] trait. It calls
//! [`CloudProvider::promote`] on entering MASTER and [`CloudProvider::demote`]
//! on leaving it. Each returns a [`TransitionReport`] listing every external
//! call (EC2 API call, netlink request, ARP burst) with its start offset,
//! duration and outcome, so failover timelines are measured, not guessed.
//!
//! Providers:
//! - [`aws::AwsProvider`]: EC2, in ENI mode (loxilb's `--cloud=aws
//!   --cloudcidrblock=CIDR` behaviour, the VIP lives on a dedicated `loxi-eni`
//!   in a VIP subnet that follows the MASTER across AZs) or in route mode (the
//!   VIP lies outside the VPC CIDR and VPC route tables point it at the MASTER).
//! - [`garp::GarpProvider`]: any L2 segment; the VIPs are added by netlink
//!   and announced by gratuitous ARP / unsolicited neighbour advertisements.
//! - [`NoneProvider`]: does nothing (`--cloud=none`).
//!
//! Design notes live in `docs/CLOUD.md`.

pub mod aws;
mod error;
pub mod garp;
pub mod netconf;
mod report;

use std::net::{IpAddr, Ipv4Addr};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use error::{CloudError, ErrorClass};
pub use report::{Action, CallOutcome, CallRecord, CriticalPath, Recorder, TransitionReport};

/// One floating address: the private VIP, and (on AWS) the Elastic IP whose
/// public address maps to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FloatingIp {
    /// Elastic IP public address (AWS only). `None` on bare metal.
    pub eip: Option<Ipv4Addr>,
    /// Private VIP: carried by `loxi-eni` (ENI mode), routed to the MASTER
    /// (route mode) or added to the interface (gARP mode).
    pub vip: IpAddr,
}

/// The addresses that follow mastership. Order-insensitive, duplicates removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingSet {
    entries: Vec<FloatingIp>,
}

impl FloatingSet {
    pub fn new(entries: impl IntoIterator<Item = FloatingIp>) -> Self {
        let mut entries: Vec<FloatingIp> = entries.into_iter().collect();
        entries.sort();
        entries.dedup();
        Self { entries }
    }

    pub fn entries(&self) -> &[FloatingIp] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Distinct VIPs, sorted.
    pub fn vips(&self) -> Vec<IpAddr> {
        let set: std::collections::BTreeSet<IpAddr> = self.entries.iter().map(|e| e.vip).collect();
        set.into_iter().collect()
    }

    /// Distinct (EIP, VIP) pairs that have an EIP.
    pub fn eip_pairs(&self) -> Vec<(Ipv4Addr, IpAddr)> {
        self.entries
            .iter()
            .filter_map(|e| e.eip.map(|eip| (eip, e.vip)))
            .collect()
    }
}

/// Who this node is, as the platform reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub instance_id: String,
    pub region: String,
    pub availability_zone: String,
    pub vpc_id: String,
    pub subnet_id: String,
    /// Primary network interface id and MAC address.
    pub primary_eni: String,
    pub mac: String,
    pub private_ip: Option<Ipv4Addr>,
    pub security_groups: Vec<String>,
}

/// What the provider sees now (read-only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudStatus {
    pub provider: String,
    /// True when every floating address of the set serves this node.
    pub is_master: bool,
    /// True when this node holds any floating resource (false after a clean demote).
    pub holds_any: bool,
    /// Human-readable facts (resource ids, owners), one per line.
    pub facts: Vec<String>,
    /// What differs from "this node is MASTER", empty when `is_master`.
    pub missing: Vec<String>,
}

/// Who holds something, as the cloud sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    Us,
    Peer,
    Nobody,
    /// The provider cannot tell (gARP, none, or no EIP in the set).
    Unknown,
}

/// A lease tag: who holds it and until when (wall clock of the writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: Holder,
    pub expires_unix_ms: u64,
    /// Time left, zero once expired (computed with this node's clock).
    pub remaining: std::time::Duration,
}

/// The cloud's view of the pair, for split-brain decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// Who the floating address (the first EIP of the set) points at.
    pub owner: Holder,
    /// Whether the peer instance runs (`None`: cannot tell).
    pub peer_running: Option<bool>,
    pub lease: Option<Lease>,
}

impl Ownership {
    pub fn unknown() -> Self {
        Self {
            owner: Holder::Unknown,
            peer_running: None,
            lease: None,
        }
    }
}

/// Moves the floating addresses. Every method is idempotent: calling it again
/// after a crash at any point converges to the asked state.
#[async_trait]
pub trait CloudProvider: Send + Sync {
    /// Provider name for logs and reports (`aws-eni`, `aws-route`, `garp`, `none`).
    fn name(&self) -> &'static str;

    /// This node's identity (IMDSv2 on AWS; the interface on bare metal).
    async fn discover(&self) -> Result<NodeIdentity, CloudError>;

    /// Makes every floating address serve this node.
    async fn promote(&self, set: &FloatingSet) -> TransitionReport;

    /// Gives up the floating addresses held by this node (only its own).
    async fn demote(&self, set: &FloatingSet) -> TransitionReport;

    /// Gives up only the addresses of `set` (they left the floating set
    /// while this node is MASTER), keeping every other one serving. The
    /// default is [`CloudProvider::demote`] of `set`, right for providers
    /// whose demote touches only the addresses it is given.
    async fn release(&self, set: &FloatingSet) -> TransitionReport {
        self.demote(set).await
    }

    /// At startup: adopts resources left by an earlier run of this node and
    /// removes half-built ones (never the peer's).
    async fn reconcile(&self, set: &FloatingSet) -> TransitionReport;

    /// Reads the current placement of the floating addresses.
    async fn status(&self, set: &FloatingSet) -> Result<CloudStatus, CloudError>;

    /// Who owns the floating address, whether the peer runs, who holds the
    /// lease. Providers that cannot tell answer [`Ownership::unknown`].
    async fn ownership(&self, _set: &FloatingSet) -> Result<Ownership, CloudError> {
        Ok(Ownership::unknown())
    }

    /// Writes (or extends) this node's lease for `ttl`. A no-op where the
    /// provider has nowhere to keep one.
    async fn renew_lease(
        &self,
        _set: &FloatingSet,
        _ttl: std::time::Duration,
    ) -> Result<(), CloudError> {
        Ok(())
    }
}

/// `--cloud=none`: nothing floats.
#[derive(Debug, Default)]
pub struct NoneProvider;

#[async_trait]
impl CloudProvider for NoneProvider {
    fn name(&self) -> &'static str {
        "none"
    }
    async fn discover(&self) -> Result<NodeIdentity, CloudError> {
        Ok(NodeIdentity::default())
    }
    async fn promote(&self, _set: &FloatingSet) -> TransitionReport {
        Recorder::new(Action::Promote, "none").finish(Ok(()))
    }
    async fn demote(&self, _set: &FloatingSet) -> TransitionReport {
        Recorder::new(Action::Demote, "none").finish(Ok(()))
    }
    async fn reconcile(&self, _set: &FloatingSet) -> TransitionReport {
        Recorder::new(Action::Reconcile, "none").finish(Ok(()))
    }
    async fn status(&self, _set: &FloatingSet) -> Result<CloudStatus, CloudError> {
        Ok(CloudStatus {
            provider: "none".into(),
            is_master: true,
            holds_any: false,
            facts: vec!["--cloud=none: no floating addresses are managed".into()],
            missing: vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floating_set_dedups_and_sorts() {
        let a = FloatingIp {
            eip: Some(Ipv4Addr::new(203, 0, 113, 1)),
            vip: "10.0.100.10".parse().unwrap(),
        };
        let b = FloatingIp {
            eip: None,
            vip: "10.0.100.11".parse().unwrap(),
        };
        let set = FloatingSet::new([b, a, b]);
        assert_eq!(set.entries(), &[b, a]); // None sorts first
        assert_eq!(set.vips().len(), 2);
        assert_eq!(
            set.eip_pairs(),
            vec![(Ipv4Addr::new(203, 0, 113, 1), a.vip)]
        );
    }
}
