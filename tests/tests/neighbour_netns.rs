//! Neighbour pre-resolution against a real kernel: the agent's resolver
//! must leave a usable ARP entry for each endpoint's next hop (the endpoint
//! itself when directly connected, the gateway otherwise), before any
//! traffic is sent to it.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::Result;
use floatlb_agent::neigh::{NextHop, Outcome, Resolver};
use floatlb_tests::{
    netns::{Netns, poll_until, require_root, require_tools},
    topology::{LB_CLIENT_IP, Topology, VIP, endpoint_ip},
};

/// Runs the resolver inside `ns` for `dsts`.
fn resolve_in(ns: &Netns, dsts: Vec<Ipv4Addr>) -> Result<Vec<Outcome>> {
    ns.enter(move || -> Result<Vec<Outcome>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let r = Resolver::new()?;
            let mut out = Vec::new();
            for d in dsts {
                out.push(r.resolve(d).await?);
            }
            Ok(out)
        })
    })?
}

fn neighbour_state(ns: &Netns, ip: Ipv4Addr) -> String {
    ns.ip(&["neigh", "show", &ip.to_string()])
        .unwrap_or_default()
}

#[test]
fn endpoint_next_hops_are_resolved_before_traffic() -> Result<()> {
    require_root()?;
    require_tools(&["ip", "ethtool", "sysctl"])?;
    let topo = Topology::new("flbn", 3)?;
    let eps: Vec<Ipv4Addr> = (0..3).map(endpoint_ip).collect();
    for ep in &eps {
        assert!(
            !neighbour_state(&topo.lb, *ep).contains("lladdr"),
            "no ARP entry may exist before resolution"
        );
    }
    let start = std::time::Instant::now();
    let outcomes = resolve_in(&topo.lb, eps.clone())?;
    for (ep, o) in eps.iter().zip(&outcomes) {
        assert!(
            matches!(o, Outcome::Triggered(NextHop { addr, .. }) if addr == ep),
            "directly connected endpoint {ep} is its own next hop: {o:?}"
        );
    }
    for ep in &eps {
        poll_until("endpoint ARP entry", Duration::from_secs(3), || {
            let s = neighbour_state(&topo.lb, *ep);
            (s.contains("lladdr") && s.contains("REACHABLE")).then_some(())
        })?;
    }
    println!(
        "neighbour pre-resolution: {} endpoints REACHABLE {:?} after the request",
        eps.len(),
        start.elapsed()
    );

    // Behind a gateway: the client reaches the VIP via the LB, so the entry
    // to resolve is the LB's address, not the VIP's.
    let outcomes = resolve_in(&topo.client, vec![VIP])?;
    assert!(
        matches!(outcomes[0], Outcome::Triggered(NextHop { addr, .. }) if addr == LB_CLIENT_IP),
        "{outcomes:?}"
    );
    poll_until("gateway ARP entry", Duration::from_secs(3), || {
        neighbour_state(&topo.client, LB_CLIENT_IP)
            .contains("REACHABLE")
            .then_some(())
    })?;
    assert!(!neighbour_state(&topo.client, VIP).contains("lladdr"));

    // A local address needs no neighbour.
    assert_eq!(resolve_in(&topo.lb, vec![VIP])?, [Outcome::Local]);
    Ok(())
}
