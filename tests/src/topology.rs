//! The standard load-balancer test topology.
//!
//! ```text
//!  client ns            lb ns                     switch ns             endpoint ns (x N)
//!  ┌──────────┐        ┌──────────────────────┐  ┌───────────────┐      ┌────────────┐
//!  │ eth0     │◄──────►│ lbc        lbe       │◄►│ swlb   br0    │◄────►│ eth0       │
//!  │ 10.0.0.2 │  veth  │ 10.0.0.1   10.1.0.1  │  │  swe<i> ports │ veth │ 10.1.0.1x  │
//!  └──────────┘        │ VIP 10.100.0.1 on lo │  └───────────────┘      └────────────┘
//!                      └──────────────────────┘
//! ```
//!
//! The client reaches the VIP through the LB (`10.100.0.0/24 via 10.0.0.1`),
//! the endpoints route everything back through the LB (`default via
//! 10.1.0.1`). The LB runs with `ip_forward=0`, so only XDP can move a packet
//! between its two interfaces (forwarding is on for `lo` alone, the device
//! the agent's FIB lookups use: see [`Topology::set_lb_forwarding`]). The VIP is a local address of the LB, as on a
//! real node. TX checksum offload is off on every veth; GRO is on on the
//! peers of the LB's interfaces (`eth0` in the client, `swlb` in the switch)
//! so they run NAPI and accept XDP_REDIRECTed frames.

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::netns::{Netns, unique_name, veth};

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const LB_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const LB_ENDPOINT_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
/// The LB's interface towards the client.
pub const LB_CLIENT_IF: &str = "lbc";
/// The LB's interface towards the endpoints.
pub const LB_ENDPOINT_IF: &str = "lbe";

/// The client's address in the one-arm topology (on the endpoints' segment).
pub const ONE_ARM_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

/// Address of endpoint `i` (0-based).
pub fn endpoint_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 11 + u8::try_from(i).expect("endpoint index"))
}

/// A built topology. Dropping it deletes every namespace and link; drop
/// processes running in it first (declare them after the topology).
#[derive(Debug)]
pub struct Topology {
    pub tag: String,
    pub client: Netns,
    pub lb: Netns,
    pub switch: Netns,
    pub endpoints: Vec<Netns>,
}

impl Topology {
    /// The namespaces of either variant, not yet wired (removed on drop).
    fn namespaces(prefix: &str, n: usize) -> Result<Self> {
        let tag = unique_name(prefix);
        let client = Netns::new(format!("{tag}-c"))?;
        let lb = Netns::new(format!("{tag}-lb"))?;
        let switch = Netns::new(format!("{tag}-sw"))?;
        let mut endpoints = Vec::with_capacity(n);
        for i in 0..n {
            endpoints.push(Netns::new(format!("{tag}-e{i}"))?);
        }
        Ok(Self {
            tag,
            client,
            lb,
            switch,
            endpoints,
        })
    }

    /// Builds the topology with `n` endpoints; namespace names start with
    /// `prefix` followed by the pid and a counter.
    pub fn new(prefix: &str, n: usize) -> Result<Self> {
        let topo = Self::namespaces(prefix, n)?;
        topo.wire()?;
        Ok(topo)
    }

    /// The one-arm (AWS) variant: the client sits on the endpoints' segment
    /// and the LB has a single interface, `lbe`, so every forwarded packet
    /// leaves where it came in (XDP_TX). The client reaches the VIP via the
    /// LB (`10.100.0.0/24 via 10.1.0.1`).
    pub fn new_one_arm(prefix: &str, n: usize) -> Result<Self> {
        let topo = Self::namespaces(prefix, n)?;
        topo.wire_endpoint_side()?;
        let (c, sw) = (&topo.client, &topo.switch);
        veth(c, "eth0", sw, "swc")?;
        sw.set_master("swc", "br0")?;
        sw.enable_gro("swc")?;
        c.addr_add("eth0", &format!("{ONE_ARM_CLIENT_IP}/24"))?;
        c.route_add(&["10.100.0.0/24", "via", &LB_ENDPOINT_IP.to_string()])?;
        Ok(topo)
    }

    fn wire(&self) -> Result<()> {
        let (c, lb) = (&self.client, &self.lb);
        veth(c, "eth0", lb, LB_CLIENT_IF)?;
        c.addr_add("eth0", &format!("{CLIENT_IP}/24"))?;
        c.route_add(&["10.100.0.0/24", "via", &LB_CLIENT_IP.to_string()])?;
        c.route_add(&["10.1.0.0/24", "via", &LB_CLIENT_IP.to_string()])?;
        c.enable_gro("eth0")?;
        lb.addr_add(LB_CLIENT_IF, &format!("{LB_CLIENT_IP}/24"))?;
        self.wire_endpoint_side()
    }

    /// LB (`lbe`), switch bridge and endpoints.
    fn wire_endpoint_side(&self) -> Result<()> {
        let (lb, sw) = (&self.lb, &self.switch);
        self.set_lb_forwarding(false)?;
        lb.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        lb.addr_add("lo", &format!("{VIP}/32"))?;
        sw.add_bridge("br0")?;
        veth(lb, LB_ENDPOINT_IF, sw, "swlb")?;
        lb.addr_add(LB_ENDPOINT_IF, &format!("{LB_ENDPOINT_IP}/24"))?;
        sw.set_master("swlb", "br0")?;
        sw.enable_gro("swlb")?;
        for (i, ep) in self.endpoints.iter().enumerate() {
            let port = format!("swe{i}");
            veth(ep, "eth0", sw, &port)?;
            sw.set_master(&port, "br0")?;
            ep.addr_add("eth0", &format!("{}/24", endpoint_ip(i)))?;
            ep.route_add(&["default", "via", &LB_ENDPOINT_IP.to_string()])?;
        }
        Ok(())
    }

    /// Lets the LB's kernel route between its interfaces (for the non-XDP
    /// baselines of the benchmark). Tests keep it off.
    ///
    /// Off means `ip_forward=0` with forwarding enabled on `lo` only: the
    /// kernel refuses `bpf_fib_lookup` on a device with forwarding disabled,
    /// so the agent runs with `--fib-lookup-iface lo`, and packets arriving
    /// on the real interfaces are still never forwarded by the kernel.
    pub fn set_lb_forwarding(&self, on: bool) -> Result<()> {
        self.lb
            .sysctl("net.ipv4.ip_forward", if on { "1" } else { "0" })?;
        if !on {
            self.lb.sysctl("net.ipv4.conf.lo.forwarding", "1")?;
        }
        Ok(())
    }
}
