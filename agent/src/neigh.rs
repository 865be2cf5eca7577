//! Neighbour pre-resolution for the endpoints' next hops.
//!
//! The XDP program forwards with `bpf_fib_lookup`, which can only use a
//! neighbour (ARP) entry that already exists: it cannot make the kernel
//! resolve one. So the agent does it ahead of traffic. For every endpoint it
//! asks the kernel for the route (`RTM_GETROUTE`, the same lookup as
//! `ip route get`), takes the next hop (the gateway if the route has one,
//! otherwise the endpoint itself) and sends `RTM_NEWNEIGH` with the `NTF_USE`
//! flag on that address and output interface. `NTF_USE` is the kernel's
//! "pretend a packet used this entry" request: it creates the entry if needed
//! and starts resolution (or re-confirmation of a stale entry) exactly as a
//! real packet would, without us sending any packet and without pinning a
//! link-layer address by hand. Repeating it periodically keeps the entries
//! from ageing out; the datapath also reports next hops it found unresolved,
//! and those are resolved at once.
//!
//! All I/O is here; the daemon calls [`Resolver::resolve_all`].

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::{
        neighbour::{NeighbourFlags, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteType},
    },
};

/// Errors from neighbour resolution.
#[derive(Debug, thiserror::Error)]
pub enum NeighError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("no route to endpoint {dst}: {source}")]
    Route {
        dst: Ipv4Addr,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("route to endpoint {dst} has no output interface")]
    NoInterface { dst: Ipv4Addr },
    #[error("cannot trigger resolution of neighbour {next_hop} (ifindex {ifindex}): {source}")]
    Neighbour {
        next_hop: Ipv4Addr,
        ifindex: u32,
        #[source]
        source: rtnetlink::Error,
    },
}

/// Where packets to a destination go next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// The address whose link-layer address is needed.
    pub addr: Ipv4Addr,
    pub ifindex: u32,
}

/// What happened to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Resolution was triggered (or refreshed) for this next hop.
    Triggered(NextHop),
    /// The destination is a local address: no neighbour needed.
    Local,
}

/// The result of [`Resolver::resolve_all`].
#[derive(Debug, Default)]
pub struct ResolvePass {
    /// Destination and the next hop resolution was triggered for.
    pub hops: Vec<(Ipv4Addr, NextHop)>,
    pub failures: Vec<NeighError>,
}

/// A netlink connection used to resolve neighbours. Needs a tokio runtime.
pub struct Resolver {
    handle: Handle,
}

impl Resolver {
    /// Opens the netlink connection (in the caller's network namespace).
    pub fn new() -> Result<Self, NeighError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NeighError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The kernel's next hop towards `dst` (`ip route get dst`).
    pub async fn next_hop(&self, dst: Ipv4Addr) -> Result<Option<NextHop>, NeighError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .build();
        let mut routes = self.handle.route().get(query).execute();
        let route = routes
            .try_next()
            .await
            .map_err(|source| NeighError::Route { dst, source })?
            .ok_or(NeighError::NoInterface { dst })?;
        if route.header.kind == RouteType::Local {
            return Ok(None);
        }
        let mut gateway = None;
        let mut ifindex = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Gateway(RouteAddress::Inet(gw)) => gateway = Some(*gw),
                RouteAttribute::Oif(idx) => ifindex = Some(*idx),
                _ => {}
            }
        }
        let ifindex = ifindex.ok_or(NeighError::NoInterface { dst })?;
        Ok(Some(NextHop {
            addr: gateway.unwrap_or(dst),
            ifindex,
        }))
    }

    /// Makes the kernel resolve (or re-confirm) the neighbour for `dst`'s next hop.
    pub async fn resolve(&self, dst: Ipv4Addr) -> Result<Outcome, NeighError> {
        let Some(hop) = self.next_hop(dst).await? else {
            return Ok(Outcome::Local);
        };
        // NUD_NONE + NTF_USE: the kernel treats this as a use of the entry
        // (neigh_event_send) instead of setting a state, so an existing
        // REACHABLE entry is left alone and a missing or stale one is probed.
        self.handle
            .neighbours()
            .add(hop.ifindex, IpAddr::V4(hop.addr))
            .state(NeighbourState::None)
            .flags(NeighbourFlags::Use)
            .replace()
            .execute()
            .await
            .map_err(|source| NeighError::Neighbour {
                next_hop: hop.addr,
                ifindex: hop.ifindex,
                source,
            })?;
        Ok(Outcome::Triggered(hop))
    }

    /// Resolves every destination; one unroutable endpoint does not stop the
    /// others. Returns each destination's next hop and the failures (the
    /// caller logs them, rate-limited).
    pub async fn resolve_all(&self, dsts: &[Ipv4Addr]) -> ResolvePass {
        let mut pass = ResolvePass::default();
        for &dst in dsts {
            match self.resolve(dst).await {
                Ok(Outcome::Triggered(hop)) => {
                    tracing::debug!(%dst, next_hop = %hop.addr, ifindex = hop.ifindex, "neighbour resolution triggered");
                    pass.hops.push((dst, hop));
                }
                Ok(Outcome::Local) => {
                    tracing::debug!(%dst, "endpoint is local, no neighbour needed");
                }
                Err(error) => pass.failures.push(error),
            }
        }
        pass
    }
}
