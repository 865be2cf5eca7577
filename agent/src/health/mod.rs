//! Endpoint health and the per-service health check: flags, zones, and
//! the separate `--health-listen` server.
//!
//! **Zones (`?local=1`).** A GSLB asking "can this site serve the service
//! locally?" wants only the endpoints in this node's zone counted. The
//! zone of an endpoint is an attribute of ours, taken from its address:
//! `--zone-subnet CIDR=ZONE` says every endpoint in CIDR is in ZONE (in
//! AWS a subnet lives in exactly one Availability Zone, so the VPC's
//! subnet plan is the zone map), and `--zone` names this node's zone. An
//! endpoint in no listed subnet has no known zone and counts as local only
//! when no `--zone-subnet` is given at all (then `local=1` counts every
//! endpoint: the node knows of no other zone). Learning the subnets' zones
//! from the cloud (`DescribeSubnets`) would need an EC2 call on the check's
//! path or a cache of one; the flags keep the check free of cloud calls.

use std::{net::SocketAddr, time::Duration};

use ipnet::Ipv4Net;

/// Probe defaults and the health check's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Also serve `GET /health/lb/...` on this address, without the API
    /// token (for Route 53 health checkers, which send no credentials).
    #[arg(long, value_name = "ADDR:PORT")]
    pub health_listen: Option<SocketAddr>,
    /// This node's zone (e.g. its AWS Availability Zone), for `?local=1`.
    #[arg(long)]
    pub zone: Option<String>,
    /// `CIDR=ZONE`: endpoints in CIDR are in ZONE (repeatable).
    #[arg(long = "zone-subnet", value_name = "CIDR=ZONE", value_parser = parse_zone_subnet)]
    pub zone_subnets: Vec<(Ipv4Net, String)>,
    /// Default time between probes of an endpoint whose service has
    /// `Monitor` set.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,
    /// Default probe timeout, when the service gives no `probeTimeout`.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
    /// Default consecutive results needed to change an endpoint's state,
    /// when the service gives no `probeRetries`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub probe_retries: u32,
    /// Most probes in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub probe_concurrency: u32,
}

fn parse_zone_subnet(v: &str) -> Result<(Ipv4Net, String), String> {
    let (cidr, zone) = v
        .split_once('=')
        .ok_or_else(|| format!("--zone-subnet {v:?}: expected CIDR=ZONE"))?;
    let net: Ipv4Net = cidr
        .parse()
        .map_err(|_| format!("--zone-subnet {v:?}: {cidr:?} is not an IPv4 CIDR"))?;
    if zone.is_empty() {
        return Err(format!("--zone-subnet {v:?}: empty zone"));
    }
    Ok((net, zone.to_string()))
}

/// Which endpoints are in this node's zone (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zones {
    pub node: Option<String>,
    pub subnets: Vec<(Ipv4Net, String)>,
}

impl Zones {
    pub fn from_args(a: &HealthArgs) -> Self {
        Self {
            node: a.zone.clone(),
            subnets: a.zone_subnets.clone(),
        }
    }

    /// The zone of an endpoint address (the longest matching subnet).
    pub fn zone_of(&self, ip: std::net::Ipv4Addr) -> Option<&str> {
        self.subnets
            .iter()
            .filter(|(n, _)| n.contains(&ip))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, z)| z.as_str())
    }

    /// Whether `ip` counts for `?local=1`.
    pub fn is_local(&self, ip: std::net::Ipv4Addr) -> bool {
        if self.subnets.is_empty() {
            return true;
        }
        match (self.zone_of(ip), &self.node) {
            (Some(z), Some(n)) => z == n,
            _ => false,
        }
    }
}

/// Errors starting the health listener.
#[derive(Debug, thiserror::Error)]
pub enum HealthSetupError {
    #[error("--health-listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds `--health-listen` (before the datapath is touched, like the API).
pub async fn bind(
    addr: Option<SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>, HealthSetupError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    tokio::net::TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| HealthSetupError::Bind { addr, source })
}

/// Serves the health routes alone on `listener`, no token, until `stop`.
pub fn serve(
    listener: tokio::net::TcpListener,
    state: floatlb_api::ApiState,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let router = floatlb_api::health::health_router(state);
    tracing::info!(addr = ?listener.local_addr().ok(), "health checks serving (no token)");
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.await;
        };
        if let Err(error) = floatlb_api::serve(listener, router, None, shutdown).await {
            tracing::error!(%error, "the health listener stopped");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_local_when_its_subnet_is_in_this_nodes_zone() {
        let z = Zones {
            node: Some("a".into()),
            subnets: vec![
                ("10.1.0.0/16".parse().unwrap(), "b".into()),
                ("10.1.1.0/24".parse().unwrap(), "a".into()),
            ],
        };
        assert!(
            z.is_local("10.1.1.5".parse().unwrap()),
            "longest prefix wins"
        );
        assert!(!z.is_local("10.1.2.5".parse().unwrap()));
        assert!(!z.is_local("192.0.2.1".parse().unwrap()), "unknown zone");
        assert!(Zones::default().is_local("192.0.2.1".parse().unwrap()));
        assert!(parse_zone_subnet("10.0.0.0/8").is_err());
        assert!(parse_zone_subnet("10.0.0.0/33=a").is_err());
    }
}
