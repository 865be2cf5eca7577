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
//! Transient send errors (ENOBUFS on a busy or just-attached interface) do
//! not fail a promotion: a frame that could not be sent is sent again after
//! 10 ms, doubling, until the next round is due (after the last round, for
//! one more interval, at least [`LAST_ROUND_RETRY`]); each failed attempt is
//! in the report as `retried`. The promotion fails only when an address
//! could not be added or no announcement for some VIP went out at all.
//!
//! Frames go out through an AF_PACKET socket (pnet_datalink); the socket
//! work is blocking, so it runs on the blocking thread pool.

pub mod packet;

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
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
    /// Test hook: injected send failures. `None` in production.
    pub fail_sends: Option<FailSends>,
}

/// Test hook: while the count is above zero, each frame send fails with
/// ENOBUFS (as on a congested interface) and decrements it.
#[derive(Debug, Clone, Default)]
pub struct FailSends(pub Arc<AtomicU32>);

impl FailSends {
    pub fn new(n: u32) -> Self {
        FailSends(Arc::new(AtomicU32::new(n)))
    }

    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
    }
}

impl PartialEq for FailSends {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for FailSends {}

/// First retry delay of a frame whose send failed.
const RETRY_FIRST: Duration = Duration::from_millis(10);
/// How long the frames of the last round are retried, at least.
pub const LAST_ROUND_RETRY: Duration = Duration::from_millis(500);

impl GarpOptions {
    pub fn new(iface: impl Into<String>) -> Self {
        Self {
            iface: iface.into(),
            count: 3,
            span: Duration::from_secs(1),
            fail_sends: None,
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

    /// Sends one attempt of a round (one frame per VIP in `vips`);
    /// returns, per VIP, whether its frame went out.
    async fn announce(
        &self,
        rec: &Recorder,
        mac: [u8; 6],
        vips: &[IpAddr],
        round: u32,
        attempt: u32,
        last_chance: bool,
    ) -> Result<Vec<bool>, CloudError> {
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
        let fail = self.opts.fail_sends.clone();
        let on = iface.clone();
        let sent = tokio::task::spawn_blocking(move || send_frames(&on, &frames, fail))
            .await
            .map_err(|e| CloudError::Io {
                op: "gARP sender task".into(),
                source: std::io::Error::other(e.to_string()),
            })??;
        Ok(sent
            .into_iter()
            .map(|(label, res)| {
                let outcome = match res {
                    Ok(()) => CallOutcome::Ok,
                    Err(e) if last_chance => CallOutcome::Failed(format!("send on {iface}: {e}")),
                    Err(e) => CallOutcome::Retried(format!("send on {iface}: {e}")),
                };
                let ok = outcome == CallOutcome::Ok;
                rec.record_span(
                    "garp:Announce",
                    format!("{label} round {round}"),
                    true,
                    attempt,
                    start,
                    outcome,
                );
                ok
            })
            .collect())
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
        // Per VIP: whether any announcement for it went out.
        let mut announced = vec![false; vips.len()];
        for round in 0..self.opts.count {
            let due = first + interval * round;
            tokio::time::sleep_until(due).await;
            let retry_until = if round + 1 < self.opts.count {
                due + interval
            } else {
                due + interval.max(LAST_ROUND_RETRY)
            };
            let mut todo: Vec<usize> = (0..vips.len()).collect();
            let mut delay = RETRY_FIRST;
            let mut attempt = 1;
            while !todo.is_empty() {
                let last_chance = tokio::time::Instant::now() + delay >= retry_until;
                let batch: Vec<IpAddr> = todo.iter().map(|&i| vips[i]).collect();
                let sent = self
                    .announce(rec, mac, &batch, round + 1, attempt, last_chance)
                    .await?;
                todo = todo
                    .into_iter()
                    .zip(sent)
                    .filter_map(|(i, ok)| {
                        if ok {
                            announced[i] = true;
                            None
                        } else {
                            Some(i)
                        }
                    })
                    .collect();
                if todo.is_empty() || last_chance {
                    break;
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
        let silent: Vec<String> = vips
            .iter()
            .zip(&announced)
            .filter(|(_, a)| !**a)
            .map(|(v, _)| v.to_string())
            .collect();
        if !silent.is_empty() {
            return Err(CloudError::Io {
                op: format!(
                    "announce {} on {}: no announcement went out in {} rounds",
                    silent.join(", "),
                    self.opts.iface,
                    self.opts.count
                ),
                source: std::io::Error::other("every send failed"),
            });
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

/// One frame's label and send result.
type Sent = (String, Result<(), std::io::Error>);

/// Sends every frame on `iface`; returns each frame's label and result.
/// Opening the socket is the only error that ends the attempt.
fn send_frames(
    iface: &str,
    frames: &[(String, Vec<u8>)],
    fail: Option<FailSends>,
) -> Result<Vec<Sent>, CloudError> {
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
    let injected = || fail.as_ref().is_some_and(FailSends::take);
    let mut out = Vec::with_capacity(frames.len());
    for (label, f) in frames {
        let res = if injected() {
            Err(std::io::Error::from_raw_os_error(105)) // ENOBUFS
        } else {
            match tx.send_to(f, None) {
                Some(r) => r,
                None => Err(std::io::Error::other("no send buffer")),
            }
        };
        out.push((label.clone(), res));
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
