//! The typed load-balancer model and its one validation.
//!
//! [`crate::wire`] mirrors the JSON; this module turns it into typed
//! [`Service`]s. The same code validates a `--config` file
//! ([`LbConfig::load`]/[`LbConfig::parse`]) and an API body
//! ([`validate_entry`]), so both accept exactly the same rules.
//!
//! - Validation is all or nothing: the first bad field aborts with a
//!   [`ConfigError`] naming the field path and the value
//!   (`lbAttr[0].endpoints[1].weight = 0: must be 1..=255`; for an API body
//!   the path starts at `serviceArguments`), so nothing is half-applied.
//! - What floatlb does not do is refused with [`ConfigError::Unsupported`],
//!   never accepted and ignored: `mode` other than 1/2, `sel` above 3,
//!   `secondaryIPs`, `bgp`, `sctp`/`icmp`, port ranges, `security`, `host`,
//!   `proxyprotocolv2`, `egress`, `snat`, `block`, IPv6.
//! - Limits come from the caller ([`Limits`]); the agent takes
//!   `max_endpoints` from the datapath's `MAX_ENDPOINTS`.
//! - The checks themselves are in [`crate::validate`].
//! - [`LbConfig::to_wire`] of validated services validates back to the same
//!   services (probe fields and `allowedSources` included).

use std::{collections::HashSet, fmt, net::Ipv4Addr, path::Path};

use ipnet::Ipv4Net;

pub use crate::validate::{parse_ipv4, parse_port, validate_endpoints, validate_entry};
use crate::wire::{
    AllowedSource, DecodeError, Format, LbEndpoint, LbEntry, LbList, LbServiceArgs, decode,
};

/// Capacity limits, set by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most endpoints one service may have (the datapath's slot count).
    pub max_endpoints: usize,
    /// Most services (`--max-services`).
    pub max_services: usize,
}

/// Errors from reading or validating a load-balancer configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid {format}: {message}")]
    Syntax {
        path: String,
        format: &'static str,
        message: String,
    },
    #[error("invalid {field} = {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("not supported: {field} = {value}: {reason}")]
    Unsupported {
        field: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(
        field: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::Unsupported {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// A decoder error for the input named `origin`.
    pub fn from_decode(origin: &str, e: DecodeError) -> Self {
        match e {
            DecodeError::Syntax { format, message } => Self::Syntax {
                path: origin.into(),
                format,
                message,
            },
            DecodeError::Field {
                field,
                value,
                reason,
            } => Self::Invalid {
                field,
                value,
                reason,
            },
        }
    }
}

/// L4 protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// IANA protocol number, as carried in the IPv4 header.
    pub fn ip_proto(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }

    /// Parses loxilb's protocol name (any case); `field` names it in errors.
    pub fn parse(field: &str, value: &str) -> Result<Self, ConfigError> {
        match value.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "sctp" | "icmp" => Err(ConfigError::unsupported(
                field,
                format!("{value:?}"),
                "floatlb balances \"tcp\" and \"udp\" only",
            )),
            _ => Err(ConfigError::invalid(
                field,
                format!("{value:?}"),
                "supported protocols are \"tcp\" and \"udp\"",
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Endpoint selection, numbered as loxilb's `sel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// 0: round-robin.
    RoundRobin,
    /// 1: weighted Maglev consistent hashing on the 5-tuple.
    Maglev,
    /// 2: highest weight wins; the rest are standbys.
    Priority,
    /// 3: source-IP affinity.
    Persist,
}

impl Selection {
    pub fn sel(self) -> u8 {
        match self {
            Self::RoundRobin => 0,
            Self::Maglev => 1,
            Self::Priority => 2,
            Self::Persist => 3,
        }
    }
}

/// NAT mode, numbered as loxilb's `mode`. Only the two the XDP datapath does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatMode {
    /// 1: one-arm (traffic leaves on the interface it came in on).
    OneArm,
    /// 2: fullnat.
    FullNat,
}

impl NatMode {
    pub fn mode(self) -> u8 {
        match self {
            Self::OneArm => 1,
            Self::FullNat => 2,
        }
    }
}

/// Kind of endpoint health probe (`probetype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeType {
    Tcp,
    Udp,
    Sctp,
    Http,
    Https,
    Ping,
    /// `"none"` spelled out (distinct from an empty `probetype`).
    None,
}

impl ProbeType {
    pub(crate) const ALL: [(Self, &'static str); 7] = [
        (Self::Tcp, "tcp"),
        (Self::Udp, "udp"),
        (Self::Sctp, "sctp"),
        (Self::Http, "http"),
        (Self::Https, "https"),
        (Self::Ping, "ping"),
        (Self::None, "none"),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("", |(_, s)| s)
    }
}

/// The `Monitor` and probe fields, stored and returned unchanged. With
/// `Monitor` set the agent probes the endpoints (see the agent's `probe`
/// module); an sctp probe is refused at validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeSpec {
    pub monitor: bool,
    /// `None` when `probetype` is empty.
    pub probe_type: Option<ProbeType>,
    pub port: u16,
    pub request: String,
    pub response: String,
    pub retries: u32,
    /// Seconds.
    pub timeout: u32,
}

/// One backend of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub weight: u8,
}

/// What identifies a rule for kube-loxilb: it deletes by external IP, port
/// and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub external_ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.external_ip, self.port, self.protocol)
    }
}

/// A validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: Option<String>,
    /// The address clients use (on AWS: the Elastic IP's public address).
    pub external_ip: Ipv4Addr,
    /// The private VIP (on AWS: carried by `loxi-eni`, the EIP maps to it).
    pub private_ip: Option<Ipv4Addr>,
    pub port: u16,
    pub protocol: Protocol,
    pub sel: Selection,
    pub mode: NatMode,
    /// Idle timeout override for this service's flows, in seconds.
    pub inactive_timeout: Option<u32>,
    /// Sources allowed to reach the service; empty means all.
    pub allowed_sources: Vec<Ipv4Net>,
    /// Health probe settings (stored, no effect yet).
    pub probe: ProbeSpec,
    /// kube-loxilb's `managed` flag, echoed back.
    pub managed: Option<bool>,
    pub endpoints: Vec<Endpoint>,
}

impl Service {
    /// The fullnat source address: `privateIP` if set, else `externalIP`.
    /// It floats with mastership, so connections can survive a failover.
    pub fn snat_ip(&self) -> Ipv4Addr {
        self.private_ip.unwrap_or(self.external_ip)
    }

    /// The address packets arrive on at the load balancer. On AWS the EIP is
    /// translated by the VPC to the private VIP before it reaches the instance.
    pub fn vip(&self) -> Ipv4Addr {
        self.snat_ip()
    }

    /// The rule's identity as kube-loxilb sees it.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            external_ip: self.external_ip,
            port: self.port,
            protocol: self.protocol,
        }
    }

    /// The wire form of this service.
    pub fn to_wire(&self) -> LbEntry {
        service_to_wire(self)
    }
}

/// What a POST asks for (`serviceArguments.oper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oper {
    /// 0: create, or update in place.
    Upsert,
    /// 1: add the listed endpoints.
    Attach,
    /// 2: remove the listed endpoints.
    Detach,
}

/// A validated configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbConfig {
    pub services: Vec<Service>,
}

impl LbConfig {
    /// Reads and validates a file. `.yaml`/`.yml` files are YAML of the same shape;
    /// anything else is JSON.
    pub fn load(path: &Path, limits: &Limits) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        Self::parse(&text, yaml, &display, limits)
    }

    /// Parses and validates text; `origin` names the source in errors.
    pub fn parse(
        text: &str,
        yaml: bool,
        origin: &str,
        limits: &Limits,
    ) -> Result<Self, ConfigError> {
        let format = if yaml { Format::Yaml } else { Format::Json };
        let wire: LbList =
            decode(text.as_bytes(), format, "").map_err(|e| ConfigError::from_decode(origin, e))?;
        Self::from_wire(&wire, limits)
    }

    /// Validates the wire form. Fails on the first bad field.
    pub fn from_wire(wire: &LbList, limits: &Limits) -> Result<Self, ConfigError> {
        if wire.lb_attr.len() > limits.max_services {
            return Err(ConfigError::invalid(
                "lbAttr",
                format!("{} entries", wire.lb_attr.len()),
                format!("at most {} services (--max-services)", limits.max_services),
            ));
        }
        let mut services = Vec::with_capacity(wire.lb_attr.len());
        let mut vips = HashSet::new();
        let mut keys = HashSet::new();
        for (i, entry) in wire.lb_attr.iter().enumerate() {
            let at = format!("lbAttr[{i}]");
            let (svc, oper) = validate_entry(&at, entry, limits)?;
            if oper != Oper::Upsert {
                return Err(ConfigError::invalid(
                    format!("{at}.serviceArguments.oper"),
                    entry.service_arguments.oper,
                    "a configuration lists whole services (oper 0); attach and detach are API requests",
                ));
            }
            let dup = !keys.insert(svc.key());
            if dup || !vips.insert((svc.vip(), svc.port, svc.protocol)) {
                return Err(ConfigError::invalid(
                    format!("{at}.serviceArguments"),
                    format!("{}:{}/{}", svc.vip(), svc.port, svc.protocol),
                    if dup {
                        "duplicate service (externalIP, port, protocol)"
                    } else {
                        "duplicate service (VIP, port, protocol)"
                    },
                ));
            }
            services.push(svc);
        }
        Ok(Self { services })
    }

    /// The wire form of this configuration (what `loadbalancer/all` returns).
    pub fn to_wire(&self) -> LbList {
        LbList {
            lb_attr: self.services.iter().map(service_to_wire).collect(),
        }
    }
}

fn service_to_wire(s: &Service) -> LbEntry {
    LbEntry {
        service_arguments: LbServiceArgs {
            external_ip: s.external_ip.to_string(),
            private_ip: s.private_ip.map(|ip| ip.to_string()),
            port: s.port.into(),
            protocol: s.protocol.as_str().into(),
            sel: s.sel.sel().into(),
            mode: s.mode.mode().into(),
            name: s.name.clone(),
            inactive_timeout: s.inactive_timeout.map(i64::from),
            monitor: s.probe.monitor,
            probetype: s.probe.probe_type.map_or("", ProbeType::as_str).into(),
            probeport: s.probe.port.into(),
            probereq: s.probe.request.clone(),
            proberesp: s.probe.response.clone(),
            probe_retries: s.probe.retries.into(),
            probe_timeout: s.probe.timeout.into(),
            managed: s.managed,
            ..LbServiceArgs::default()
        },
        secondary_ips: Vec::new(),
        allowed_sources: s
            .allowed_sources
            .iter()
            .map(|n| AllowedSource {
                prefix: n.to_string(),
            })
            .collect(),
        endpoints: s
            .endpoints
            .iter()
            .map(|e| LbEndpoint {
                endpoint_ip: e.ip.to_string(),
                target_port: e.port.into(),
                weight: e.weight.into(),
                state: None,
                counter: None,
            })
            .collect(),
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
