//! A VPC simulator: makes packets follow the EC2 API state in moto.
//!
//! moto keeps the API state of a VPC (who the Elastic IP is associated with,
//! which instance an ENI is attached to) but moves no packets. The simulator
//! closes that gap for the demo: it polls the Elastic IP's association
//! (bounded, every [`VpcSim::POLL`]), resolves the ENI it points at to the
//! instance the ENI is attached to, and routes the VIP in a router namespace
//! to that node (`ip route replace VIP/32 via NODE`), or blackholes it while
//! nobody owns the address. Every change it sees and makes is recorded with
//! its time, so a failover timeline can show when the data path followed.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aws_sdk_ec2::Client;
use tokio::task::JoinHandle;

use crate::netns::run_checked;

/// A node the simulator can route to: its instance id and next-hop address.
#[derive(Debug, Clone)]
pub struct SimNode {
    pub name: String,
    pub instance_id: String,
    pub addr: Ipv4Addr,
}

/// What the Elastic IP points at, as last read from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    pub eni: Option<String>,
    pub private_ip: Option<String>,
    /// Index into the simulator's nodes of the instance the ENI is attached to.
    pub owner: Option<usize>,
}

/// One change the simulator saw and applied.
#[derive(Debug, Clone)]
pub struct SimEvent {
    /// When the poll that saw the change returned.
    pub seen: Instant,
    /// When the router's route had been changed accordingly.
    pub routed: Instant,
    pub assoc: Association,
}

#[derive(Debug, Default)]
struct Shared {
    events: Vec<SimEvent>,
    polls: u64,
    poll_errors: u64,
    last_error: Option<String>,
}

/// The running simulator; stops when dropped.
pub struct VpcSim {
    shared: Arc<Mutex<Shared>>,
    nodes: Vec<SimNode>,
    task: JoinHandle<()>,
}

impl VpcSim {
    /// Poll interval of the Elastic IP's association.
    pub const POLL: Duration = Duration::from_millis(10);

    /// Starts watching `eip_alloc` and routing `vip` in the namespace `router`.
    /// The VIP is blackholed until the Elastic IP points at one of `nodes`.
    pub fn start(
        ec2: Client,
        eip_alloc: String,
        router: String,
        vip: Ipv4Addr,
        nodes: Vec<SimNode>,
    ) -> Result<Self> {
        set_route(&router, vip, None)?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = {
            let shared = shared.clone();
            let nodes = nodes.clone();
            tokio::spawn(async move {
                let mut current: Option<Association> = None;
                let mut tick = tokio::time::interval(Self::POLL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let res = read_association(&ec2, &eip_alloc, &nodes).await;
                    let seen = Instant::now();
                    let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
                    sh.polls += 1;
                    let assoc = match res {
                        Ok(a) => a,
                        Err(e) => {
                            sh.poll_errors += 1;
                            sh.last_error = Some(format!("{e:#}"));
                            continue;
                        }
                    };
                    if current.as_ref() == Some(&assoc) {
                        continue;
                    }
                    let hop = assoc.owner.map(|i| nodes[i].addr);
                    if let Err(e) = set_route(&router, vip, hop) {
                        sh.poll_errors += 1;
                        sh.last_error = Some(format!("{e:#}"));
                        continue;
                    }
                    sh.events.push(SimEvent {
                        seen,
                        routed: Instant::now(),
                        assoc: assoc.clone(),
                    });
                    current = Some(assoc);
                }
            })
        };
        Ok(Self {
            shared,
            nodes,
            task,
        })
    }

    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// Every change applied so far.
    pub fn events(&self) -> Vec<SimEvent> {
        self.lock().events.clone()
    }

    /// The node the VIP is routed to now.
    pub fn owner(&self) -> Option<usize> {
        self.lock().events.last().and_then(|e| e.assoc.owner)
    }

    /// (polls, failed polls, last error).
    pub fn poll_stats(&self) -> (u64, u64, Option<String>) {
        let sh = self.lock();
        (sh.polls, sh.poll_errors, sh.last_error.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (bounded) until the VIP is routed to `node`; returns the event.
    pub async fn wait_owner(&self, node: usize, timeout: Duration) -> Result<SimEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.lock().events.last()
                && e.assoc.owner == Some(node)
            {
                return Ok(e.clone());
            }
            if Instant::now() > deadline {
                let (polls, errors, last) = self.poll_stats();
                anyhow::bail!(
                    "the Elastic IP did not point at {} within {timeout:?} ({polls} polls, {errors} failed, last error: {})",
                    self.nodes[node].name,
                    last.as_deref().unwrap_or("none")
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for VpcSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the Elastic IP's association and resolves its ENI to a node.
pub async fn read_association(
    ec2: &Client,
    eip_alloc: &str,
    nodes: &[SimNode],
) -> Result<Association> {
    let out = ec2
        .describe_addresses()
        .allocation_ids(eip_alloc)
        .send()
        .await
        .context("DescribeAddresses")?;
    let addr = out.addresses().first().context("the Elastic IP is gone")?;
    let eni = addr.network_interface_id().map(str::to_string);
    let private_ip = addr.private_ip_address().map(str::to_string);
    let mut owner = None;
    if let Some(id) = &eni {
        // moto keeps an association to a deleted ENI; such an ENI serves nobody.
        let out = match ec2
            .describe_network_interfaces()
            .network_interface_ids(id)
            .send()
            .await
        {
            Ok(out) => Some(out),
            Err(e)
                if e.as_service_error().and_then(|s| s.meta().code())
                    == Some("InvalidNetworkInterfaceID.NotFound") =>
            {
                None
            }
            Err(e) => return Err(e).context("DescribeNetworkInterfaces"),
        };
        let instance = out
            .as_ref()
            .and_then(|o| o.network_interfaces().first())
            .and_then(|n| n.attachment())
            .and_then(|a| a.instance_id());
        owner = nodes
            .iter()
            .position(|n| Some(n.instance_id.as_str()) == instance);
    }
    Ok(Association {
        eni,
        private_ip,
        owner,
    })
}

/// `ip -n ROUTER route replace VIP/32 via HOP`, or a blackhole without a hop.
fn set_route(router: &str, vip: Ipv4Addr, hop: Option<Ipv4Addr>) -> Result<()> {
    let dst = format!("{vip}/32");
    match hop {
        Some(h) => run_checked(
            "ip",
            &[
                "-n",
                router,
                "route",
                "replace",
                &dst,
                "via",
                &h.to_string(),
            ],
        )?,
        None => run_checked("ip", &["-n", router, "route", "replace", "blackhole", &dst])?,
    };
    Ok(())
}
