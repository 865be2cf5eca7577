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
    /// reconcile -> done; status -> this node is MASTER (1 otherwise).
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
    /// gARP mode: the client-facing interface that carries the VIPs.
    #[arg(long)]
    pub garp_iface: Option<String>,
    /// gARP mode: announcements per VIP on promotion.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub garp_count: u32,
    /// gARP mode: time from the first to the last announcement, in ms.
    #[arg(long, default_value_t = 1000)]
    pub garp_span_ms: u64,
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
#[derive(Debug, Clone, Args)]
pub struct HaArgs {
    /// Cluster peer address(es).
    #[arg(long)]
    pub cluster: Option<String>,
    /// This node's instance number in the pair (0 or 1).
    #[arg(long = "self", default_value_t = 0)]
    pub self_id: u8,
}
