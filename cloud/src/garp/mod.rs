//! gARP provider (`--cloud=garp`): bare metal, any L2 segment.
//!
//! Promotion adds every VIP to the client-facing interface over netlink
//! (IPv4 as /32, IPv6 as /128 without DAD), then announces each one
//! `count` times spread evenly over `span`: an RFC 5227 ARP announcement
//! for IPv4 and an RFC 4861 unsolicited neighbour advertisement (Override
//! set) for IPv6. The first announcement leaves right after the addresses
//! are in place; repeats cover a lost first frame and slow switches.
//! `promote` returns after the last one, so every frame is in the report.
//! Demotion removes the VIPs.
//!
//! Frames go out through an AF_PACKET socket (pnet_datalink); the socket
//! work is blocking, so it runs on the blocking thread pool.

pub mod packet;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use crate::{
    Action, CloudError, CloudProvider, CloudStatus, FloatingSet, NodeIdentity, Recorder,
    TransitionReport, netconf, report::CallOutcome,
};

/// Options of the gARP provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GarpOptions {
    /// Interface that carries the VIPs.
    pub iface: String,
    /// Announcements per VIP (at least 1).
    pub count: u32,
    /// Time from the first announcement to the last.
    pub span: Duration,
}

impl GarpOptions {
    pub fn new(iface: impl Into<String>) -> Self {
        Self {
            iface: iface.into(),
            count: 3,
            span: Duration::from_secs(1),
        }
    }

    fn interval(&self) -> Duration {
        if self.count <= 1 {
            Duration::ZERO
        } else {
            self.span / (self.count - 1)
        }
    }
}

#[derive(Debug)]
pub struct GarpProvider {
    opts: GarpOptions,
}

impl GarpProvider {
    pub fn new(opts: GarpOptions) -> Self {
        Self { opts }
    }

    async fn add_vips(
        &self,
        rec: &Recorder,
        set: &FloatingSet,
    ) -> Result<netconf::Link, CloudError> {
        let handle = netconf::connect().await?;
        let link = netconf::link_by_name(&handle, &self.opts.iface).await?;
        for vip in set.vips() {
            let prefix = if vip.is_ipv4() { 32 } else { 128 };
            netconf::add_address(&handle, rec, &link, vip, prefix).await?;
        }
        Ok(link)
    }

    /// Sends one round of announcements (one frame per VIP).
    async fn announce(
        &self,
        rec: &Recorder,
        mac: [u8; 6],
        vips: &[IpAddr],
        round: u32,
    ) -> Result<(), CloudError> {
        let iface = self.opts.iface.clone();
        let frames: Vec<(String, Vec<u8>)> = vips
            .iter()
            .map(|v| match v {
                IpAddr::V4(a) => (
                    format!("{a} (ARP announcement)"),
                    packet::arp_announcement(mac, *a).to_vec(),
                ),
                IpAddr::V6(a) => (
                    format!("{a} (unsolicited NA)"),
                    packet::unsolicited_na(mac, *a).to_vec(),
                ),
            })
            .collect();
        let start = Instant::now();
        let sent = tokio::task::spawn_blocking(move || send_frames(&iface, &frames))
            .await
            .map_err(|e| CloudError::Io {
                op: "gARP sender task".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        match sent {
            Ok(targets) => {
                for t in targets {
                    rec.record_span(
                        "garp:Announce",
                        format!("{t} round {round}"),
                        true,
                        1,
                        start,
                        CallOutcome::Ok,
                    );
                }
                Ok(())
            }
            Err(e) => {
                rec.record_span(
                    "garp:Announce",
                    format!("round {round}"),
                    true,
                    1,
                    start,
                    CallOutcome::Failed(e.to_string()),
                );
                Err(e)
            }
        }
    }

    async fn do_promote(&self, rec: &Recorder, set: &FloatingSet) -> Result<(), CloudError> {
        let link = self.add_vips(rec, set).await?;
        let mac = link.mac.ok_or_else(|| {
            CloudError::invalid(
                "--garp-iface",
                &self.opts.iface,
                "the interface has no Ethernet address",
            )
        })?;
        let vips = set.vips();
        let interval = self.opts.interval();
        let first = tokio::time::Instant::now();
        for round in 0..self.opts.count {
            tokio::time::sleep_until(first + interval * round).await;
            self.announce(rec, mac, &vips, round + 1).await?;
        }
        Ok(())
    }

    async fn do_demote(&self, rec: &Recorder, set: &FloatingSet) -> Result<(), CloudError> {
        let handle = netconf::connect().await?;
        let link = netconf::link_by_name(&handle, &self.opts.iface).await?;
        for vip in set.vips() {
            netconf::del_address(&handle, rec, &link, vip).await?;
        }
        Ok(())
    }
}

/// Sends every frame on `iface`; returns the frames' labels.
fn send_frames(iface: &str, frames: &[(String, Vec<u8>)]) -> Result<Vec<String>, CloudError> {
    let io = |op: String, source: std::io::Error| CloudError::Io { op, source };
    let intf = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == iface)
        .ok_or_else(|| CloudError::invalid("--garp-iface", iface, "no such network interface"))?;
    let config = pnet_datalink::Config {
        read_timeout: Some(Duration::from_millis(1)),
        ..Default::default()
    };
    let mut tx = match pnet_datalink::channel(&intf, config) {
        Ok(pnet_datalink::Channel::Ethernet(tx, _rx)) => tx,
        Ok(_) => {
            return Err(CloudError::invalid(
                "--garp-iface",
                iface,
                "not an Ethernet interface",
            ));
        }
        Err(e) => {
            return Err(io(
                format!("open a packet socket on {iface} (needs CAP_NET_RAW)"),
                e,
            ));
        }
    };
    let mut out = Vec::with_capacity(frames.len());
    for (label, f) in frames {
        match tx.send_to(f, None) {
            Some(Ok(())) => out.push(label.clone()),
            Some(Err(e)) => return Err(io(format!("send {label} on {iface}"), e)),
            None => {
                return Err(io(
                    format!("send {label} on {iface}"),
                    std::io::Error::other("no send buffer"),
                ));
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl CloudProvider for GarpProvider {
    fn name(&self) -> &'static str {
        "garp"
    }

    async fn discover(&self) -> Result<NodeIdentity, CloudError> {
        let handle = netconf::connect().await?;
        let link = netconf::link_by_name(&handle, &self.opts.iface).await?;
        Ok(NodeIdentity {
            mac: link.mac.map(|m| netconf::fmt_mac(&m)).unwrap_or_default(),
            ..NodeIdentity::default()
        })
    }

    async fn promote(&self, set: &FloatingSet) -> TransitionReport {
        let rec = Recorder::new(Action::Promote, "garp");
        let r = self.do_promote(&rec, set).await;
        rec.finish(r)
    }

    async fn demote(&self, set: &FloatingSet) -> TransitionReport {
        let rec = Recorder::new(Action::Demote, "garp");
        let r = self.do_demote(&rec, set).await;
        rec.finish(r)
    }

    /// Nothing to adopt: the addresses on the interface are the state.
    async fn reconcile(&self, _set: &FloatingSet) -> TransitionReport {
        Recorder::new(Action::Reconcile, "garp").finish(Ok(()))
    }

    async fn status(&self, set: &FloatingSet) -> Result<CloudStatus, CloudError> {
        let handle = netconf::connect().await?;
        let link = netconf::link_by_name(&handle, &self.opts.iface).await?;
        let have = netconf::addresses(&handle, &link).await?;
        let mut facts = Vec::new();
        let mut missing = Vec::new();
        for v in set.vips() {
            if have.contains(&v) {
                facts.push(format!("{v} on {}", link.name));
            } else {
                missing.push(format!("{v} is not on {}", link.name));
            }
        }
        Ok(CloudStatus {
            provider: "garp".into(),
            is_master: missing.is_empty(),
            holds_any: !facts.is_empty(),
            facts,
            missing,
        })
    }
}
