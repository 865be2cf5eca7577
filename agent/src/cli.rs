//! Command-line interface of `floatlb`. Flag names follow loxilb where loxilb
//! has the flag (`--cloud`, `--cloudcidrblock`, `--cluster`, `--self`, `--ka`).
//!
//! The daemon's flags are grouped by subsystem so each subsystem owns its own
//! argument struct; `floatlb cloud …` is the one-shot runbook command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "floatlb",
    version,
    about = "Floating-IP failover load balancer"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the cloud provider once for this node and print its report.
    /// Exit status 0 only when the cloud state is what was asked: promote ->
    /// this node holds every floating address; demote -> it holds none;
    /// reconcile -> done; status -> this node is MASTER; dry-run -> every
    /// EC2 write of a failover is authorised; preflight -> no check failed
    /// (1 otherwise).
    Cloud(CloudCommand),
}

#[derive(Debug, Args)]
pub struct CloudCommand {
    #[arg(value_enum)]
    pub action: CloudAction,
    /// Load-balancer list (loxilb format) naming the floating addresses
    /// (optional for preflight, which then cannot probe a failover's writes).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// preflight: the peer instance's address (loxilb's --cluster), whose
    /// sync and BFD ports are probed.
    #[arg(long)]
    pub cluster: Option<std::net::IpAddr>,
    /// preflight: the peer's connection-sync port.
    #[arg(long, default_value_t = 22222)]
    pub sync_port: u16,
    /// preflight: the peer's BFD port (RFC 5881 single hop).
    #[arg(long, default_value_t = 3784)]
    pub bfd_port: u16,
    /// preflight: interfaces the datapath attaches to (default: the one
    /// holding this instance's private address).
    #[arg(long)]
    pub iface: Vec<String>,
    /// preflight: the largest tolerated offset from EC2's clock.
    #[arg(long, default_value_t = 1000)]
    pub max_clock_skew_ms: u64,
    /// preflight: how long each network probe waits.
    #[arg(long, default_value_t = 2000)]
    pub probe_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudAction {
    Promote,
    Demote,
    Reconcile,
    Status,
    /// Send every EC2 write a failover makes with DryRun=true (aws only):
    /// proves the instance role's permissions without changing anything.
    DryRun,
    /// Check what a failover depends on (IMDSv2, region/AZ, permissions,
    /// source/dest check, clock, the peer's ports, native XDP); changes
    /// nothing.
    Preflight,
}

/// Daemon arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Load-balancer list (loxilb `loadbalancer/all` format, JSON or YAML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub datapath: DatapathArgs,
    #[command(flatten)]
    pub cloud: CloudArgs,
    #[command(flatten)]
    pub ha: HaArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub sync: crate::sync::SyncArgs,
    /// Endpoint probes and the per-service health check (issue 12).
    #[command(flatten)]
    pub health: crate::health::HealthArgs,
}

/// The REST API (loxilb's, what kube-loxilb drives) and the state it
/// makes durable.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address the REST API listens on (loxilb's port). `off` disables it.
    #[arg(long, default_value = "0.0.0.0:11111", value_parser = parse_listen)]
    pub api_listen: Listen,
    /// File holding the API token: every request but `GET /netlox/v1`
    /// must carry it (`Authorization: <token>` or `Bearer <token>`).
    #[arg(long)]
    pub api_token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) for the API; needs --api-tls-key.
    #[arg(long, requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the API; needs --api-tls-cert.
    #[arg(long, requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
    /// CA (PEM) that API clients' certificates must chain to (mTLS).
    #[arg(long, requires = "api_tls_cert")]
    pub api_client_ca: Option<PathBuf>,
    /// Where accepted API changes (services, cistate, BFD timers) are
    /// kept, durably, before they are acknowledged; restored at start.
    #[arg(long, default_value = "/var/lib/floatlb")]
    pub state_dir: PathBuf,
}

/// `--api-listen`: an address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    At(std::net::SocketAddr),
}

fn parse_listen(value: &str) -> Result<Listen, String> {
    if value == "off" {
        return Ok(Listen::Off);
    }
    value.parse().map(Listen::At).map_err(|_| {
        format!("--api-listen {value:?}: expected ADDRESS:PORT (e.g. 0.0.0.0:11111) or off")
    })
}

/// XDP datapath arguments.
#[derive(Debug, Clone, Args)]
pub struct DatapathArgs {
    /// Interface to attach the XDP datapath to (repeatable).
    #[arg(long = "iface")]
    pub ifaces: Vec<String>,
    /// bpffs directory holding the pinned program, links and maps. A restarted
    /// agent re-opens what it finds there. Mounted as bpffs if it is not one.
    #[arg(long, default_value = "/sys/fs/bpf/floatlb")]
    pub pin_dir: PathBuf,
    /// On SIGTERM/SIGINT leave the datapath attached and pinned, so traffic
    /// keeps flowing and the next agent takes over the same maps.
    #[arg(long)]
    pub keep_pinned: bool,
    /// XDP attach mode: native with generic fallback, or forced.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: crate::daemon::XdpModeArg,
    /// Service map capacity (set at load time).
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_services: u32,
    /// Conntrack map capacity (set at load time).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_conntrack: u32,
    /// Device used as the input of the datapath's FIB lookups instead of the
    /// ingress interface. The kernel refuses lookups on a device with
    /// forwarding disabled: a node that keeps `ip_forward=0` (so that only
    /// XDP forwards) enables `net.ipv4.conf.lo.forwarding` and passes `lo`.
    #[arg(long)]
    pub fib_lookup_iface: Option<String>,
    /// Seconds between the datapath drop reports (a `datapath drops` log
    /// line with every reason's count, only when something was dropped
    /// since the last one); 0 turns them off.
    #[arg(long, default_value_t = 10)]
    pub drop_report_secs: u64,
    /// Seconds between conntrack expiry passes.
    #[arg(long, default_value_t = 2)]
    pub ct_expiry_secs: u64,
    /// Seconds between re-resolutions of the endpoints' next hops.
    #[arg(long, default_value_t = 15)]
    pub neigh_refresh_secs: u64,
}

/// Which provider moves the floating addresses, and how.
#[derive(Debug, Clone, Args)]
pub struct CloudArgs {
    /// Floating-address provider.
    #[arg(long, value_enum, default_value = "none")]
    pub cloud: CloudKind,
    /// Block the VIP subnet is carved from (AWS ENI mode).
    #[arg(long)]
    pub cloudcidrblock: Option<String>,
    /// AWS mode: `eni` (VIP subnet + loxi-eni follow the MASTER across AZs)
    /// or `route` (VPC route tables point VIP/32 at the MASTER).
    #[arg(long, value_enum, default_value = "eni")]
    pub cloud_mode: CloudMode,
    /// Route mode: route tables that get the VIP/32 routes (comma-separated rtb ids).
    #[arg(long, value_delimiter = ',')]
    pub cloud_route_tables: Vec<String>,
    /// Value of the `floatlb:cluster` tag on every AWS resource this cluster
    /// owns; two clusters in one VPC need different names.
    #[arg(long, default_value = "floatlb")]
    pub cloud_cluster_name: String,
    /// Skip host configuration (interface up, VIPs, routes): API-only runs.
    #[arg(long)]
    pub no_os_config: bool,
    /// gARP mode: the client-facing interface that carries the VIPs
    /// (default for the daemon: the only `--iface`, when exactly one is given).
    #[arg(long)]
    pub garp_iface: Option<String>,
    /// gARP mode: announcements per VIP on promotion.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub garp_count: u32,
    /// gARP mode: time from the first to the last announcement, in ms.
    #[arg(long, default_value_t = 1000)]
    pub garp_span_ms: u64,
}

impl CloudArgs {
    /// `--garp-iface` defaults to the only `--iface` when exactly one is
    /// given; with several, the VIP interface is ambiguous and stays unset.
    pub fn default_garp_iface(&mut self, ifaces: &[String]) {
        if self.garp_iface.is_none()
            && let [only] = ifaces
        {
            self.garp_iface = Some(only.clone());
        }
    }
}

/// How the AWS provider moves the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudMode {
    Eni,
    Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudKind {
    None,
    Aws,
    Garp,
}

/// High-availability arguments.
///
/// Priority: `--self N` is this node's number in the pair (0 or 1, as in
/// loxilb). Node 0 is the preferred MASTER: at a cold start with BFD Up only
/// node 0 claims, and when node 0 returns after a failure node 1 hands the
/// role back after `--preempt-hold-ms` (unless `--no-preempt`). See
/// `floatlb_agent::ha` for the full policy.
#[derive(Debug, Clone, Args)]
pub struct HaArgs {
    /// Cluster peer address(es).
    #[arg(long)]
    pub cluster: Option<String>,
    /// This node's instance number in the pair (0 or 1); 0 is preferred.
    #[arg(long = "self", default_value_t = 0)]
    pub self_id: u8,
    /// BFD keepalive to the peer: `PEER:SRC[:INTERVAL_US]` (loxilb format,
    /// interval in microseconds as loxicmd takes it; default 100000). IPv6
    /// addresses go in brackets: `[fd00::2]:[fd00::1]:10000`.
    #[arg(long = "ka", value_parser = parse_keepalive)]
    pub ka: Option<Keepalive>,
    /// BFD detect multiplier.
    #[arg(long = "ka-mult", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..))]
    pub ka_mult: u8,
    /// Claim MASTER when BFD has not come Up within this many ms of start.
    #[arg(long, default_value_t = 3000)]
    pub claim_hold_ms: u64,
    /// BFD must be Up this long before a returning preferred node gets the
    /// role back (stand-in for "state synced").
    #[arg(long, default_value_t = 5000)]
    pub preempt_hold_ms: u64,
    /// Never hand the MASTER role back to a returning preferred node.
    #[arg(long)]
    pub no_preempt: bool,
    /// Flap damping: half-life of the BFD flap penalty, and the hold-down
    /// (minimum BFD outage before a claim, minimum time since the last role
    /// change) while the peer session counts as flapping. 0 turns it off.
    #[arg(long, default_value_t = 5000)]
    pub flap_hold_down_ms: u64,
    /// How often a MASTER re-checks EIP ownership and renews its lease.
    #[arg(long, default_value_t = 2000)]
    pub verify_interval_ms: u64,
    /// Lease heartbeat (AWS): on BFD loss a BACKUP watches the peer's lease
    /// this long for a renewal before it claims (a renewal means a
    /// partition: it stays BACKUP); a MASTER renews at once and then every
    /// third of it. A few EC2 round trips. 0: claims wait out the lease.
    #[arg(long, default_value_t = 600)]
    pub lease_watch_ms: u64,
    /// HA state file (JSON: role, last BFD change, every transition with its
    /// cloud report), rewritten atomically on every change.
    #[arg(long)]
    pub ha_state_file: Option<PathBuf>,
    /// How long a MASTER keeps forwarding after sending its shutdown
    /// AdminDown, before it goes passive and demotes.
    #[arg(long, default_value_t = 200)]
    pub shutdown_drain_ms: u64,
}

/// A parsed `--ka` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub peer: std::net::IpAddr,
    pub source: std::net::IpAddr,
    pub interval_us: u32,
}

/// Errors in a `--ka` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeepaliveError {
    #[error("--ka {0:?}: expected PEER:SRC[:INTERVAL_US]")]
    Shape(String),
    #[error("--ka {value:?}: {field} {got:?} is not an IP address")]
    Address {
        value: String,
        field: &'static str,
        got: String,
    },
    #[error("--ka {value:?}: interval {got:?} is not a number of microseconds in 1..=4294967295")]
    Interval { value: String, got: String },
    #[error("--ka {0:?}: peer and source are of different address families")]
    Family(String),
}

/// Default BFD interval when `--ka` has none (loxilb's default, 100 ms).
pub const DEFAULT_KA_INTERVAL_US: u32 = 100_000;

/// Splits `a:b:c` where parts may be `[ipv6]`.
fn split_ka(value: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            parts.push(&inner[..end]);
            rest = &inner[end + 1..];
        } else {
            let end = rest.find(':').unwrap_or(rest.len());
            parts.push(&rest[..end]);
            rest = &rest[end..];
        }
        match rest.strip_prefix(':') {
            Some(r) if !r.is_empty() => rest = r,
            Some(_) => return None,
            None if rest.is_empty() => {}
            None => return None,
        }
    }
    Some(parts)
}

pub fn parse_keepalive(value: &str) -> Result<Keepalive, KeepaliveError> {
    let parts = split_ka(value).ok_or_else(|| KeepaliveError::Shape(value.to_string()))?;
    let (peer, source, interval) = match parts.as_slice() {
        [p, s] => (*p, *s, None),
        [p, s, i] => (*p, *s, Some(*i)),
        _ => return Err(KeepaliveError::Shape(value.to_string())),
    };
    let addr = |field, got: &str| {
        got.parse().map_err(|_| KeepaliveError::Address {
            value: value.to_string(),
            field,
            got: got.to_string(),
        })
    };
    let peer: std::net::IpAddr = addr("peer", peer)?;
    let source: std::net::IpAddr = addr("source", source)?;
    if peer.is_ipv4() != source.is_ipv4() {
        return Err(KeepaliveError::Family(value.to_string()));
    }
    let interval_us = match interval {
        None => DEFAULT_KA_INTERVAL_US,
        Some(i) => match i.parse::<u32>() {
            Ok(v) if v > 0 => v,
            _ => {
                return Err(KeepaliveError::Interval {
                    value: value.to_string(),
                    got: i.to_string(),
                });
            }
        },
    };
    Ok(Keepalive {
        peer,
        source,
        interval_us,
    })
}

impl HaArgs {
    /// The election settings these flags describe.
    pub fn ha_config(
        &self,
    ) -> Result<crate::ha::machine::HaConfig, crate::ha::machine::HaConfigError> {
        use std::time::Duration;
        let c = crate::ha::machine::HaConfig {
            self_id: self.self_id,
            claim_hold: Duration::from_millis(self.claim_hold_ms),
            preempt: !self.no_preempt,
            preempt_hold: Duration::from_millis(self.preempt_hold_ms),
            flap_hold_down: Duration::from_millis(self.flap_hold_down_ms),
            verify_interval: Duration::from_millis(self.verify_interval_ms),
            handover_pause: Duration::from_secs(1),
            lease_watch: Duration::from_millis(self.lease_watch_ms),
            sync_gate: false,
        };
        c.validate()?;
        Ok(c)
    }

    /// The BFD session `--ka`/`--ka-mult` describe, if any.
    pub fn bfd_session(&self) -> Option<crate::bfd::session::SessionConfig> {
        let ka = self.ka?;
        let interval = std::time::Duration::from_micros(u64::from(ka.interval_us));
        Some(crate::bfd::session::SessionConfig {
            peer: ka.peer,
            local: ka.source,
            peer_port: crate::bfd::session::CONTROL_PORT,
            desired_min_tx: interval,
            required_min_rx: interval,
            detect_mult: self.ka_mult,
            auth: None,
        })
    }
}

#[cfg(test)]
mod ha_args_tests {
    use super::*;

    #[test]
    fn ka_accepts_loxilb_format_with_and_without_interval() {
        let k = parse_keepalive("10.0.0.2:10.0.0.1").unwrap();
        assert_eq!(k.interval_us, DEFAULT_KA_INTERVAL_US);
        assert_eq!(k.peer.to_string(), "10.0.0.2");
        let k = parse_keepalive("10.0.0.2:10.0.0.1:10000").unwrap();
        assert_eq!(
            (k.source.to_string(), k.interval_us),
            ("10.0.0.1".into(), 10_000)
        );
        let k = parse_keepalive("[fd00::2]:[fd00::1]:20000").unwrap();
        assert_eq!(
            (k.peer.to_string(), k.interval_us),
            ("fd00::2".into(), 20_000)
        );
    }

    #[test]
    fn ka_rejects_bad_values_naming_the_part() {
        assert!(matches!(
            parse_keepalive("10.0.0.2"),
            Err(KeepaliveError::Shape(_))
        ));
        assert!(matches!(
            parse_keepalive("a:10.0.0.1"),
            Err(KeepaliveError::Address { field: "peer", .. })
        ));
        assert!(matches!(
            parse_keepalive("10.0.0.2:10.0.0.1:0"),
            Err(KeepaliveError::Interval { .. })
        ));
        assert!(matches!(
            parse_keepalive("10.0.0.2:10.0.0.1:"),
            Err(KeepaliveError::Shape(_))
        ));
        assert!(matches!(
            parse_keepalive("10.0.0.2:[fd00::1]"),
            Err(KeepaliveError::Family(_))
        ));
    }

    #[test]
    fn ha_flags_parse_into_session_and_election_config() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "floatlb",
            "--self",
            "1",
            "--ka",
            "10.0.0.2:10.0.0.1:10000",
            "--ka-mult",
            "5",
            "--no-preempt",
        ])
        .unwrap();
        let s = cli.run.ha.bfd_session().unwrap();
        assert_eq!((s.desired_min_tx.as_millis(), s.detect_mult), (10, 5));
        let h = cli.run.ha.ha_config().unwrap();
        assert!(!h.preempt && !h.preferred());
        assert!(Cli::try_parse_from(["floatlb", "--ka-mult", "0"]).is_err());
        let bad = Cli::try_parse_from(["floatlb", "--self", "2"]).unwrap();
        assert!(bad.run.ha.ha_config().is_err());
    }

    #[test]
    fn garp_iface_defaults_to_the_only_iface() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut cli = Cli::try_parse_from(args).unwrap();
            cli.run
                .cloud
                .default_garp_iface(&cli.run.datapath.ifaces.clone());
            cli.run.cloud.garp_iface
        };
        assert_eq!(
            parse(&["floatlb", "--cloud", "garp", "--iface", "eth0"]),
            Some("eth0".into())
        );
        assert_eq!(
            parse(&["floatlb", "--iface", "eth0", "--iface", "eth1"]),
            None
        );
        assert_eq!(
            parse(&["floatlb", "--iface", "eth0", "--garp-iface", "eth1"]),
            Some("eth1".into())
        );
    }
}
