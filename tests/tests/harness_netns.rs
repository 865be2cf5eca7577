//! Checks the namespace harness itself: the topology carries traffic when
//! the LB's kernel forwards, carries none when it does not, and leaves
//! nothing behind, even when the test body panics.

use std::{
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use anyhow::Result;
use floatlb_tests::{
    netns::{require_root, require_tools},
    servers::{EchoServer, payload, tcp_exchange, udp_exchange},
    topology::{Topology, endpoint_ip},
};

fn namespaces() -> String {
    std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn topology_routes_only_when_forwarding_and_cleans_up() -> Result<()> {
    require_root()?;
    require_tools(&["ip", "ethtool", "sysctl"])?;
    let tag;
    {
        let topo = Topology::new("flbh", 1)?;
        tag = topo.tag.clone();
        let addr = SocketAddrV4::new(endpoint_ip(0), 7000);
        let _server = EchoServer::start(&topo.endpoints[0], addr, 7)?;

        // ip_forward=0: the LB drops what XDP does not handle.
        let blocked = topo
            .client
            .enter(move || tcp_exchange(SocketAddr::V4(addr), b"x", Duration::from_millis(300)))?;
        assert!(blocked.is_err(), "LB with ip_forward=0 must not route");

        topo.set_lb_forwarding(true)?;
        let data = payload(1, 100_000);
        let id = topo
            .client
            .enter(move || tcp_exchange(SocketAddr::V4(addr), &data, Duration::from_secs(3)))??;
        assert_eq!(id, 7);
        let id = topo.client.enter(move || -> Result<u8> {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            udp_exchange(&sock, SocketAddr::V4(addr), b"hello")
        })??;
        assert_eq!(id, 7);
        assert!(namespaces().contains(&tag));
    }
    assert!(!namespaces().contains(&tag), "namespaces left behind");

    // Cleanup also happens when the body panics.
    let panicked = std::panic::catch_unwind(|| {
        let topo = Topology::new("flbp", 1).unwrap();
        let tag = topo.tag.clone();
        std::panic::panic_any(tag);
    });
    let tag = *panicked.unwrap_err().downcast::<String>().unwrap();
    assert!(
        !namespaces().contains(&tag),
        "namespaces left behind after panic"
    );
    Ok(())
}
