//! The demo's network: a router namespace standing in for the VPC (one L2
//! segment for the instances and endpoints, a link to the client and one to
//! the cloud namespace where moto runs), and the node namespaces wired to it.
//! See `tests/src/bin/demo.rs` for the picture and docs/DEMO.md for why each
//! choice was made.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use floatlb_dataplane::{XdpPass, attach_xdp_pass};

use crate::{
    ec2world::VIP,
    moto::Moto,
    netns::{Netns, veth},
};

pub const CLOUD_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const CLOUD_GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const CLIENT_GW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const IMDS_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const ENDPOINTS: usize = 2;

/// Address of endpoint `i` (0-based), in the endpoints' subnet 10.0.3.0/24.
pub fn endpoint_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 3, 10 + u8::try_from(i).expect("endpoint index"))
}

/// The SDK settings every `floatlb` process in a node namespace gets, as
/// `env` arguments: moto as the EC2 endpoint, the node's IMDS, test
/// credentials, and `empty` (an empty file) for the SDK's config files.
pub fn aws_env(moto: &Moto, empty: &std::path::Path) -> Vec<String> {
    vec![
        format!("AWS_ENDPOINT_URL={}", moto.endpoint()),
        format!("AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{IMDS_IP}:80"),
        "AWS_ACCESS_KEY_ID=AKIATESTFLOATLB00001".into(),
        "AWS_SECRET_ACCESS_KEY=secret".into(),
        format!("AWS_CONFIG_FILE={}", empty.display()),
        format!("AWS_SHARED_CREDENTIALS_FILE={}", empty.display()),
    ]
}

/// Builds the namespaces and links (see the module diagram).
pub fn build_network(tag: &str, cloud: &Netns) -> Result<(Netns, Netns, [Netns; 2], Vec<Netns>)> {
    let router = Netns::new(format!("{tag}-vpc"))?;
    let client = Netns::new(format!("{tag}-client"))?;
    let nodes = [
        Netns::new(format!("{tag}-a"))?,
        Netns::new(format!("{tag}-b"))?,
    ];
    let mut endpoints = Vec::new();
    for i in 0..ENDPOINTS {
        endpoints.push(Netns::new(format!("{tag}-ep{i}"))?);
    }
    for key in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.default.send_redirects=0",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ] {
        let (k, v) = key.split_once('=').expect("key=value");
        router.sysctl(k, v)?;
    }
    veth(&router, "cl", cloud, "eth0")?;
    router.addr_add("cl", &format!("{CLOUD_GW}/24"))?;
    cloud.addr_add("eth0", &format!("{CLOUD_IP}/24"))?;
    cloud.route_add(&["default", "via", &CLOUD_GW.to_string()])?;
    veth(&router, "cli", &client, "eth0")?;
    router.addr_add("cli", &format!("{CLIENT_GW}/24"))?;
    client.addr_add("eth0", &format!("{CLIENT_IP}/24"))?;
    client.route_add(&["default", "via", &CLIENT_GW.to_string()])?;
    router.add_bridge("vpc")?;
    for gw in ["10.0.1.1/24", "10.0.2.1/24", "10.0.3.1/24"] {
        router.addr_add("vpc", gw)?;
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let port = format!("pe{i}");
        veth(&router, &port, ep, "eth0")?;
        router.set_master(&port, "vpc")?;
        ep.addr_add("eth0", &format!("{}/24", endpoint_ip(i)))?;
        ep.route_add(&["default", "via", "10.0.3.1"])?;
        ep.sysctl("net.ipv4.conf.all.accept_redirects", "0")?;
    }
    Ok((router, client, nodes, endpoints))
}

/// Wires node `i` with its instance's private address (from moto). The
/// returned program must stay alive while the node runs.
pub fn wire_node(router: &Netns, node: &Netns, i: usize, private_ip: &str) -> Result<XdpPass> {
    let port = format!("p{}", ["a", "b"][i]);
    veth(router, &port, node, "eth0")?;
    router.set_master(&port, "vpc")?;
    // Like a VPC, the switch never floods unicast to an instance: frames
    // for a vanished MAC must not reach the other node.
    router.run("bridge", &["link", "set", "dev", &port, "flood", "off"])?;
    // XDP_TX on a veth only delivers when the peer runs NAPI: give the
    // router's end an XDP program that passes everything (docs/DATAPATH.md).
    router.enable_gro(&port)?;
    let dev = port.clone();
    let xdp_pass = router
        .enter(move || attach_xdp_pass(&dev))?
        .with_context(|| format!("XDP_PASS program on {port}"))?;
    node.addr_add("eth0", &format!("{private_ip}/24"))?;
    node.route_add(&["default", "via", &format!("10.0.{}.1", i + 1)])?;
    // The other AZ's subnet is on-link: the VPC delivers between instances
    // without a routed hop, so BFD keeps its single-hop TTL of 255.
    node.route_add(&[&format!("10.0.{}.0/24", 2 - i), "dev", "eth0"])?;
    node.addr_add("lo", &format!("{VIP}/32"))?;
    node.addr_add("lo", &format!("{IMDS_IP}/32"))?;
    // Only XDP forwards; FIB lookups use lo (see tests/src/topology.rs).
    node.sysctl("net.ipv4.ip_forward", "0")?;
    node.sysctl("net.ipv4.conf.lo.forwarding", "1")?;
    node.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
    node.sysctl("net.ipv4.conf.eth0.rp_filter", "0")?;
    Ok(xdp_pass)
}
