//! floatctl's command line (clap derive).
//!
//! The verbs follow loxicmd: `get <what>`, `create lb`, `delete lb`,
//! `set bfd`, `apply -f`, `save -f`, plus `completion <shell>`. Connection
//! and output options are global, so they may stand before or after the verb.
//! Values that can be checked without the agent (addresses, ports, endpoint
//! lists, which of the delete forms) are checked here, and a bad one is a
//! usage error naming the flag and the value; everything else is the agent's
//! to validate (its 400 names the field).

use std::{net::Ipv4Addr, path::PathBuf, str::FromStr};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::Ipv4Net;

/// The API address when neither `--api` nor `FLOATCTL_API` is given.
pub const DEFAULT_API: &str = "http://127.0.0.1:11111";

/// Command-line client of a floatlb agent's loxilb-compatible REST API.
#[derive(Debug, Parser)]
#[command(
    name = "floatctl",
    version,
    about = "floatlb's loxicmd: show and change a floatlb agent through its loxilb-compatible REST API",
    propagate_version = true
)]
pub struct Cli {
    /// The agent's API: http://HOST:PORT or https://HOST:PORT.
    #[arg(long, global = true, help_heading = "Global options", env = "FLOATCTL_API", default_value = DEFAULT_API)]
    pub api: String,
    /// API token, sent raw in the Authorization header (as kube-loxilb does).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FLOATCTL_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// File holding the API token (the agent's --api-token-file).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FLOATCTL_TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the agent's certificate; https only.
    /// Without it the public web PKI roots are used.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE"
    )]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs --key.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs --cert.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
    /// Seconds before a request is abandoned.
    #[arg(long, global = true, help_heading = "Global options", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Output: a table, a wider table, or the API's JSON.
    #[arg(short, long, global = true, help_heading = "Global options", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub verb: Verb,
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// loxicmd's table.
    Table,
    /// The table with more columns.
    Wide,
    /// The API's answer as indented JSON.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Show state: ha, bfd, lb, ct, ep, status, transitions.
    Get {
        #[command(subcommand)]
        what: GetWhat,
    },
    /// Create or update a load-balancer rule.
    Create {
        #[command(subcommand)]
        what: CreateWhat,
    },
    /// Delete load-balancer rules.
    Delete {
        #[command(subcommand)]
        what: DeleteWhat,
    },
    /// Change settings.
    Set {
        #[command(subcommand)]
        what: SetWhat,
    },
    /// POST every rule of an lbAttr file (JSON or YAML), in order; stops at
    /// the first failure.
    Apply {
        /// The file: `{"lbAttr":[...]}` (what `save` and `floatlb --config`
        /// use) or one rule; `.yaml`/`.yml` is YAML, anything else JSON.
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Write every rule (GET loadbalancer/all) as JSON that `apply -f` and
    /// `floatlb --config` read back.
    Save {
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum GetWhat {
    /// HA instance and role (GET /config/cistate/all).
    #[command(visible_alias = "hastate")]
    Ha,
    /// BFD sessions (GET /config/bfd/all).
    Bfd,
    /// Load-balancer rules (GET /config/loadbalancer/all).
    #[command(visible_alias = "loadbalancer")]
    Lb,
    /// Tracked flows (GET /config/conntrack/all).
    #[command(visible_alias = "conntrack")]
    Ct,
    /// Endpoint states (GET /config/endpoint/all).
    #[command(visible_alias = "endpoint")]
    Ep,
    /// Role, peer, BFD, floating addresses (GET /status).
    Status,
    /// HA transitions with their cloud reports (GET /ha/transitions).
    Transitions,
}

#[derive(Debug, Subcommand)]
pub enum CreateWhat {
    /// POST /config/loadbalancer with the rule kube-loxilb would send.
    #[command(visible_alias = "loadbalancer")]
    Lb(CreateLb),
}

#[derive(Debug, Subcommand)]
pub enum DeleteWhat {
    /// Delete by --external-ip/--port/--protocol, by --name, or --all.
    #[command(visible_alias = "loadbalancer")]
    Lb(DeleteLb),
}

#[derive(Debug, Subcommand)]
pub enum SetWhat {
    /// POST /config/bfd: the BFD interval and multiplier.
    Bfd(SetBfd),
}

/// `create lb`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CreateLb {
    /// The address clients use (on AWS the Elastic IP's public address).
    #[arg(long)]
    pub external_ip: Ipv4Addr,
    /// The private VIP the external address maps to (kube-loxilb's --privateCIDR).
    #[arg(long)]
    pub private_ip: Option<Ipv4Addr>,
    /// Service port.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Service protocol.
    #[arg(long, value_enum, default_value_t = Proto::Tcp)]
    pub protocol: Proto,
    /// Endpoint selection.
    #[arg(long, value_enum, default_value_t = Sel::Rr)]
    pub sel: Sel,
    /// NAT mode.
    #[arg(long, value_enum, default_value_t = Mode::Fullnat)]
    pub mode: Mode,
    /// Backends: IP:PORT[:WEIGHT],... (weight 1..=255, default 1).
    #[arg(
        long,
        required = true,
        value_delimiter = ',',
        value_name = "IP:PORT[:WEIGHT]"
    )]
    pub endpoints: Vec<EndpointArg>,
    /// Rule name (kube-loxilb uses `<namespace>_<service>:llb-inst0`).
    #[arg(long)]
    pub name: Option<String>,
    /// Idle timeout of the rule's flows, seconds (kube-loxilb sends 1800).
    #[arg(long, default_value_t = 1800)]
    pub inactive_timeout: u32,
    /// Source prefixes allowed to reach the service (default: everyone).
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
    pub allowed_sources: Vec<Ipv4Net>,
}

/// `delete lb`: exactly one of the three forms.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["external_ip", "name", "all"])))]
pub struct DeleteLb {
    /// External IP of the rule; with --port and --protocol.
    #[arg(long, requires = "port")]
    pub external_ip: Option<Ipv4Addr>,
    /// Port of the rule (with --external-ip).
    #[arg(long, requires = "external_ip", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Protocol of the rule (with --external-ip).
    #[arg(long, value_enum, default_value_t = Proto::Tcp)]
    pub protocol: Proto,
    /// The rule's name.
    #[arg(long, conflicts_with = "port")]
    pub name: Option<String>,
    /// Every rule.
    #[arg(long, conflicts_with_all = ["port", "name", "external_ip"])]
    pub all: bool,
}

/// `set bfd`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SetBfd {
    /// Transmit interval, microseconds.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub interval_us: u32,
    /// Detect multiplier.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..))]
    pub multiplier: u8,
    /// The peer of the session to change (default: the only session).
    #[arg(long)]
    pub remote_ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// loxilb's `sel` values floatlb implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sel {
    /// 0: round robin.
    Rr,
    /// 1: hash (Maglev).
    Hash,
    /// 2: priority (highest weight).
    Priority,
    /// 3: persist (source-IP affinity).
    Persist,
}

impl Sel {
    pub fn code(self) -> i64 {
        match self {
            Self::Rr => 0,
            Self::Hash => 1,
            Self::Priority => 2,
            Self::Persist => 3,
        }
    }
}

/// loxilb's `mode` values floatlb implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// 1: one-arm.
    Onearm,
    /// 2: fullnat.
    Fullnat,
}

impl Mode {
    pub fn code(self) -> i64 {
        match self {
            Self::Onearm => 1,
            Self::Fullnat => 2,
        }
    }
}

/// One `--endpoints` item: `IP:PORT[:WEIGHT]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointArg {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub weight: u8,
}

impl FromStr for EndpointArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{s:?}: {why} (expected IP:PORT[:WEIGHT])");
        let mut parts = s.trim().split(':');
        let ip = parts.next().unwrap_or_default();
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| bad(&format!("{ip:?} is not an IPv4 address")))?;
        let port = parts.next().ok_or_else(|| bad("no port"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad(&format!("port {port:?} is not 1..=65535")))?;
        let weight = match parts.next() {
            None => 1,
            Some(w) => w
                .parse::<u8>()
                .ok()
                .filter(|&w| w != 0)
                .ok_or_else(|| bad(&format!("weight {w:?} is not 1..=255")))?,
        };
        if parts.next().is_some() {
            return Err(bad("too many ':' parts"));
        }
        Ok(Self { ip, port, weight })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("floatctl").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_and_global_options_after_the_verb() {
        let cli = parse(&["get", "lb", "-o", "wide", "--api", "https://lb:8091"]).unwrap();
        assert_eq!(cli.api, "https://lb:8091");
        assert_eq!(cli.output, Output::Wide);
        assert_eq!(cli.timeout, 15);
        assert!(matches!(cli.verb, Verb::Get { what: GetWhat::Lb }));
        let cli = parse(&["get", "loadbalancer"]).unwrap();
        assert_eq!(cli.output, Output::Table);
        assert!(matches!(cli.verb, Verb::Get { what: GetWhat::Lb }));
    }

    #[test]
    fn create_lb_parses_endpoints_and_names() {
        let cli = parse(&[
            "create",
            "lb",
            "--external-ip=13.208.10.20",
            "--private-ip=192.168.248.254",
            "--port=55002",
            "--protocol=udp",
            "--sel=hash",
            "--mode=onearm",
            "--endpoints=10.0.0.1:32403,10.0.0.2:32403:7",
            "--name=default_nginx:llb-inst0",
            "--allowed-sources=10.0.0.0/8,192.0.2.1/32",
        ])
        .unwrap();
        let Verb::Create {
            what: CreateWhat::Lb(c),
        } = cli.verb
        else {
            panic!("not create lb");
        };
        assert_eq!(c.protocol, Proto::Udp);
        assert_eq!((c.sel.code(), c.mode.code()), (1, 1));
        assert_eq!(
            c.endpoints,
            vec![
                EndpointArg {
                    ip: "10.0.0.1".parse().unwrap(),
                    port: 32403,
                    weight: 1
                },
                EndpointArg {
                    ip: "10.0.0.2".parse().unwrap(),
                    port: 32403,
                    weight: 7
                }
            ]
        );
        assert_eq!(c.inactive_timeout, 1800);
        assert_eq!(c.allowed_sources.len(), 2);
    }

    #[test]
    fn bad_values_are_usage_errors_naming_flag_and_value() {
        for (args, want) in [
            (
                vec!["--endpoints=10.0.0.1:0"],
                "port \"0\" is not 1..=65535",
            ),
            (
                vec!["--endpoints=10.0.0.1:80:300"],
                "weight \"300\" is not 1..=255",
            ),
            (
                vec!["--endpoints=10.0.0:80"],
                "\"10.0.0\" is not an IPv4 address",
            ),
            (vec!["--endpoints=10.0.0.1"], "no port"),
            (vec!["--endpoints=10.0.0.1:80:1:2"], "too many ':' parts"),
        ] {
            let mut all = vec!["create", "lb", "--external-ip=1.2.3.4", "--port=80"];
            all.extend(args);
            let err = parse(&all).unwrap_err().to_string();
            assert!(err.contains("--endpoints"), "{err}");
            assert!(err.contains(want), "{err}");
        }
        let err = parse(&[
            "create",
            "lb",
            "--external-ip=1.2.3",
            "--port=80",
            "--endpoints=1.1.1.1:1",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--external-ip") && err.contains("1.2.3"),
            "{err}"
        );
        let err = parse(&[
            "create",
            "lb",
            "--external-ip=1.2.3.4",
            "--port=0",
            "--endpoints=1.1.1.1:1",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--port") && err.contains('0'), "{err}");
        let err = parse(&[
            "create",
            "lb",
            "--external-ip=1.2.3.4",
            "--port=80",
            "--mode=dsr",
            "--endpoints=1.1.1.1:1",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--mode") && err.contains("dsr"), "{err}");
    }

    #[test]
    fn delete_lb_takes_exactly_one_form() {
        let cli = parse(&["delete", "lb", "--external-ip=1.2.3.4", "--port=80"]).unwrap();
        let Verb::Delete {
            what: DeleteWhat::Lb(d),
        } = cli.verb
        else {
            panic!("not delete lb");
        };
        assert_eq!((d.port, d.protocol, d.all), (Some(80), Proto::Tcp, false));
        assert!(parse(&["delete", "lb", "--name=x"]).is_ok());
        assert!(parse(&["delete", "lb", "--all"]).is_ok());
        for bad in [
            vec!["delete", "lb"],
            vec!["delete", "lb", "--all", "--name=x"],
            vec!["delete", "lb", "--external-ip=1.2.3.4"],
            vec!["delete", "lb", "--port=80", "--all"],
            vec![
                "delete",
                "lb",
                "--external-ip=1.2.3.4",
                "--port=80",
                "--all",
            ],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn set_bfd_and_tls_options() {
        let cli = parse(&["set", "bfd", "--interval-us", "200000", "--multiplier", "3"]).unwrap();
        let Verb::Set {
            what: SetWhat::Bfd(b),
        } = cli.verb
        else {
            panic!("not set bfd");
        };
        assert_eq!(
            (b.interval_us, b.multiplier, b.remote_ip),
            (200_000, 3, None)
        );
        assert!(parse(&["set", "bfd", "--interval-us", "0", "--multiplier", "3"]).is_err());
        assert!(parse(&["set", "bfd", "--interval-us", "1", "--multiplier", "0"]).is_err());
        assert!(
            parse(&["get", "ha", "--cert", "c.pem"]).is_err(),
            "--cert without --key"
        );
        assert!(parse(&["get", "ha", "--token", "t", "--token-file", "f"]).is_err());
        assert!(parse(&["get", "ha", "-o", "yaml"]).is_err());
    }

    #[test]
    fn the_command_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
