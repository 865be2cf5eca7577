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
    Cloud(CloudCommand),
}

#[derive(Debug, Args)]
pub struct CloudCommand {
    #[arg(value_enum)]
    pub action: CloudAction,
    /// Load-balancer list (loxilb format) naming the floating addresses.
    #[arg(long)]
    pub config: PathBuf,
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudAction {
    Promote,
    Demote,
    Reconcile,
    Status,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudKind {
    None,
    Aws,
    Garp,
}

/// High-availability arguments.
#[derive(Debug, Clone, Args)]
pub struct HaArgs {
    /// Cluster peer address(es).
    #[arg(long)]
    pub cluster: Option<String>,
    /// This node's instance number in the pair (0 or 1).
    #[arg(long = "self", default_value_t = 0)]
    pub self_id: u8,
}
