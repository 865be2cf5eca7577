//! Load-balancer configuration in loxilb's list format.
//!
//! The file read by `floatlb --config FILE` has the shape that loxilb's
//! `GET /netlox/v1/config/loadbalancer/all` returns, so a dump from a loxilb
//! node (or from our own API) can be fed back in unchanged:
//!
//! ```json
//! {"lbAttr":[{"serviceArguments":{"externalIP":"203.0.113.10","privateIP":"10.10.0.10",
//!             "port":80,"protocol":"tcp","sel":1,"mode":2},
//!             "endpoints":[{"endpointIP":"10.0.1.5","targetPort":8080,"weight":1}]}]}
//! ```
//!
//! Parsing is two-stage. [`WireList`] mirrors the JSON exactly (unknown fields
//! are ignored, because kube-loxilb sends many we do not use). [`LbConfig::from_wire`]
//! then validates every entry into typed [`Service`]s. Validation is all or
//! nothing: the first bad field aborts the whole load with a [`ConfigError`]
//! naming the field path (`lbAttr[2].endpoints[0].weight`) and the value, so a
//! caller never applies half a file.

use std::{collections::HashSet, fmt, net::Ipv4Addr, path::Path};

use serde::{Deserialize, Serialize};

/// Most endpoints one service may have (the datapath's fixed per-service slot count).
pub const MAX_ENDPOINTS: usize = 64;

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
}

impl ConfigError {
    fn invalid(
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
}

/// The wire form: `{"lbAttr":[...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WireList {
    #[serde(rename = "lbAttr", default)]
    pub lb_attr: Vec<WireEntry>,
}

/// One `LoadbalanceEntry` as loxilb's API defines it (the fields floatlb uses).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WireEntry {
    #[serde(rename = "serviceArguments")]
    pub service_arguments: WireServiceArgs,
    #[serde(default)]
    pub endpoints: Vec<WireEndpoint>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WireServiceArgs {
    #[serde(rename = "externalIP")]
    pub external_ip: String,
    #[serde(rename = "privateIP", default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    pub port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_max: Option<i64>,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default)]
    pub sel: i64,
    #[serde(default)]
    pub mode: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        rename = "inactiveTimeOut",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inactive_timeout: Option<i64>,
}

fn default_protocol() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WireEndpoint {
    #[serde(rename = "endpointIP")]
    pub endpoint_ip: String,
    pub target_port: i64,
    #[serde(default = "default_weight")]
    pub weight: i64,
}

fn default_weight() -> i64 {
    1
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

/// One backend of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub weight: u8,
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
}

/// A validated configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbConfig {
    pub services: Vec<Service>,
}

impl LbConfig {
    /// Reads and validates a file. `.yaml`/`.yml` files are YAML of the same shape;
    /// anything else is JSON.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        Self::parse(&text, yaml, &display)
    }

    /// Parses and validates text; `origin` names the source in errors.
    pub fn parse(text: &str, yaml: bool, origin: &str) -> Result<Self, ConfigError> {
        let wire: WireList = if yaml {
            serde_norway::from_str(text).map_err(|e| ConfigError::Syntax {
                path: origin.into(),
                format: "YAML",
                message: e.to_string(),
            })?
        } else {
            serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
                path: origin.into(),
                format: "JSON",
                message: e.to_string(),
            })?
        };
        Self::from_wire(&wire)
    }

    /// Validates the wire form. Fails on the first bad field.
    pub fn from_wire(wire: &WireList) -> Result<Self, ConfigError> {
        let mut services = Vec::with_capacity(wire.lb_attr.len());
        let mut keys = HashSet::new();
        for (i, entry) in wire.lb_attr.iter().enumerate() {
            let svc = validate_entry(&format!("lbAttr[{i}]"), entry)?;
            if !keys.insert((svc.vip(), svc.port, svc.protocol)) {
                return Err(ConfigError::invalid(
                    format!("lbAttr[{i}].serviceArguments"),
                    format!("{}:{}/{}", svc.vip(), svc.port, svc.protocol.as_str()),
                    "duplicate service (VIP, port, protocol)",
                ));
            }
            services.push(svc);
        }
        Ok(Self { services })
    }

    /// The wire form of this configuration (what `loadbalancer/all` returns).
    pub fn to_wire(&self) -> WireList {
        WireList {
            lb_attr: self.services.iter().map(service_to_wire).collect(),
        }
    }
}

/// Validates one `LoadbalanceEntry`; `at` is its path for error messages.
pub fn validate_entry(at: &str, entry: &WireEntry) -> Result<Service, ConfigError> {
    let args = &entry.service_arguments;
    let sa = format!("{at}.serviceArguments");
    let external_ip = parse_ipv4(&format!("{sa}.externalIP"), &args.external_ip)?;
    let private_ip = args
        .private_ip
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| parse_ipv4(&format!("{sa}.privateIP"), s))
        .transpose()?;
    let port = parse_port(&format!("{sa}.port"), args.port)?;
    if let Some(max) = args.port_max
        && max != 0
        && max != args.port
    {
        return Err(ConfigError::invalid(
            format!("{sa}.portMax"),
            max,
            "port ranges are not supported; omit portMax or set it equal to port",
        ));
    }
    let protocol = match args.protocol.as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return Err(ConfigError::invalid(
                format!("{sa}.protocol"),
                format!("{other:?}"),
                "supported protocols are \"tcp\" and \"udp\"",
            ));
        }
    };
    let sel = match args.sel {
        0 => Selection::RoundRobin,
        1 => Selection::Maglev,
        2 => Selection::Priority,
        3 => Selection::Persist,
        other => {
            return Err(ConfigError::invalid(
                format!("{sa}.sel"),
                other,
                "supported: 0 (round-robin), 1 (hash/Maglev), 2 (priority), 3 (persist)",
            ));
        }
    };
    let mode = match args.mode {
        1 => NatMode::OneArm,
        2 => NatMode::FullNat,
        other => {
            return Err(ConfigError::invalid(
                format!("{sa}.mode"),
                other,
                "supported: 1 (one-arm) and 2 (fullnat); 0 (DNAT, loxilb's default) and DSR are not",
            ));
        }
    };
    let inactive_timeout = args
        .inactive_timeout
        .filter(|&t| t != 0)
        .map(|t| {
            u32::try_from(t)
                .ok()
                .filter(|&t| t <= 86_400 * 7)
                .ok_or_else(|| {
                    ConfigError::invalid(
                        format!("{sa}.inactiveTimeOut"),
                        t,
                        "must be between 1 and 604800 seconds",
                    )
                })
        })
        .transpose()?;
    if entry.endpoints.is_empty() {
        return Err(ConfigError::invalid(
            format!("{at}.endpoints"),
            "[]",
            "a service needs at least one endpoint",
        ));
    }
    if entry.endpoints.len() > MAX_ENDPOINTS {
        return Err(ConfigError::invalid(
            format!("{at}.endpoints"),
            format!("{} entries", entry.endpoints.len()),
            format!("at most {MAX_ENDPOINTS} endpoints per service"),
        ));
    }
    let mut endpoints = Vec::with_capacity(entry.endpoints.len());
    let mut seen = HashSet::new();
    for (j, ep) in entry.endpoints.iter().enumerate() {
        let ea = format!("{at}.endpoints[{j}]");
        let ip = parse_ipv4(&format!("{ea}.endpointIP"), &ep.endpoint_ip)?;
        let port = parse_port(&format!("{ea}.targetPort"), ep.target_port)?;
        let weight = u8::try_from(ep.weight)
            .ok()
            .filter(|&w| w >= 1)
            .ok_or_else(|| {
                ConfigError::invalid(format!("{ea}.weight"), ep.weight, "must be 1..=255")
            })?;
        if !seen.insert((ip, port)) {
            return Err(ConfigError::invalid(
                ea,
                format!("{ip}:{port}"),
                "duplicate endpoint in this service",
            ));
        }
        endpoints.push(Endpoint { ip, port, weight });
    }
    Ok(Service {
        name: args.name.clone().filter(|n| !n.is_empty()),
        external_ip,
        private_ip,
        port,
        protocol,
        sel,
        mode,
        inactive_timeout,
        endpoints,
    })
}

fn parse_ipv4(field: &str, value: &str) -> Result<Ipv4Addr, ConfigError> {
    let ip: Ipv4Addr = value
        .parse()
        .map_err(|_| ConfigError::invalid(field, format!("{value:?}"), "not an IPv4 address"))?;
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(ConfigError::invalid(
            field,
            format!("{value:?}"),
            "must be a unicast address",
        ));
    }
    Ok(ip)
}

fn parse_port(field: &str, value: i64) -> Result<u16, ConfigError> {
    u16::try_from(value)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| ConfigError::invalid(field, value, "must be 1..=65535"))
}

fn service_to_wire(s: &Service) -> WireEntry {
    WireEntry {
        service_arguments: WireServiceArgs {
            external_ip: s.external_ip.to_string(),
            private_ip: s.private_ip.map(|ip| ip.to_string()),
            port: s.port.into(),
            port_max: None,
            protocol: s.protocol.as_str().into(),
            sel: s.sel.sel().into(),
            mode: s.mode.mode().into(),
            name: s.name.clone(),
            inactive_timeout: s.inactive_timeout.map(i64::from),
        },
        endpoints: s
            .endpoints
            .iter()
            .map(|e| WireEndpoint {
                endpoint_ip: e.ip.to_string(),
                target_port: e.port.into(),
                weight: e.weight.into(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"lbAttr":[{"serviceArguments":{"externalIP":"203.0.113.10",
        "privateIP":"10.10.0.10","port":80,"protocol":"tcp","sel":1,"mode":2,"bgp":false},
        "endpoints":[{"endpointIP":"10.0.1.5","targetPort":8080,"weight":2},
                     {"endpointIP":"10.0.1.6","targetPort":8080,"weight":1,"state":"active"}]}]}"#;

    fn err(text: &str) -> String {
        LbConfig::parse(text, false, "t.json")
            .unwrap_err()
            .to_string()
    }

    fn with(args: &str, eps: &str) -> String {
        format!(r#"{{"lbAttr":[{{"serviceArguments":{{{args}}},"endpoints":[{eps}]}}]}}"#)
    }

    const ARGS: &str = r#""externalIP":"203.0.113.10","port":80,"protocol":"tcp","sel":0,"mode":2"#;
    const EP: &str = r#"{"endpointIP":"10.0.1.5","targetPort":8080,"weight":1}"#;

    #[test]
    fn parses_loxilb_list_and_ignores_unknown_fields() {
        let cfg = LbConfig::parse(GOOD, false, "t.json").unwrap();
        let s = &cfg.services[0];
        assert_eq!(s.external_ip, Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(s.snat_ip(), Ipv4Addr::new(10, 10, 0, 10));
        assert_eq!(s.sel, Selection::Maglev);
        assert_eq!(s.mode, NatMode::FullNat);
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(s.endpoints[0].weight, 2);
    }

    #[test]
    fn round_trips_through_wire_form() {
        let cfg = LbConfig::parse(GOOD, false, "t.json").unwrap();
        let json = serde_json::to_string(&cfg.to_wire()).unwrap();
        assert_eq!(LbConfig::parse(&json, false, "t.json").unwrap(), cfg);
    }

    #[test]
    fn yaml_of_the_same_shape_is_accepted() {
        let yaml = "lbAttr:\n- serviceArguments: {externalIP: 192.0.2.1, port: 53, protocol: udp, sel: 3, mode: 1}\n  endpoints:\n  - {endpointIP: 10.0.0.9, targetPort: 5353, weight: 1}\n";
        let cfg = LbConfig::parse(yaml, true, "t.yaml").unwrap();
        assert_eq!(cfg.services[0].protocol, Protocol::Udp);
        assert_eq!(cfg.services[0].snat_ip(), Ipv4Addr::new(192, 0, 2, 1));
    }

    #[test]
    fn every_bad_field_is_named_with_its_value() {
        let cases: &[(String, &str)] = &[
            (
                with(&ARGS.replace("203.0.113.10", "nope"), EP),
                "lbAttr[0].serviceArguments.externalIP = \"nope\"",
            ),
            (
                with(&format!("{ARGS},\"privateIP\":\"10.1\""), EP),
                "serviceArguments.privateIP = \"10.1\"",
            ),
            (
                with(&ARGS.replace("\"port\":80", "\"port\":70000"), EP),
                "serviceArguments.port = 70000",
            ),
            (
                with(&format!("{ARGS},\"portMax\":90"), EP),
                "serviceArguments.portMax = 90",
            ),
            (
                with(&ARGS.replace("\"tcp\"", "\"sctp\""), EP),
                "serviceArguments.protocol = \"sctp\"",
            ),
            (
                with(&ARGS.replace("\"sel\":0", "\"sel\":5"), EP),
                "serviceArguments.sel = 5",
            ),
            (
                with(&ARGS.replace("\"mode\":2", "\"mode\":3"), EP),
                "serviceArguments.mode = 3",
            ),
            (
                with(&format!("{ARGS},\"inactiveTimeOut\":-4"), EP),
                "serviceArguments.inactiveTimeOut = -4",
            ),
            (with(ARGS, ""), "lbAttr[0].endpoints = []"),
            (
                with(ARGS, &EP.replace("10.0.1.5", "10.0.1.256")),
                "endpoints[0].endpointIP = \"10.0.1.256\"",
            ),
            (
                with(ARGS, &EP.replace("8080", "0")),
                "endpoints[0].targetPort = 0",
            ),
            (
                with(ARGS, &EP.replace("\"weight\":1", "\"weight\":0")),
                "endpoints[0].weight = 0",
            ),
            (
                with(ARGS, &format!("{EP},{EP}")),
                "endpoints[1] = 10.0.1.5:8080",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "error {got:?} should contain {want:?}");
        }
    }

    #[test]
    fn too_many_endpoints_is_rejected() {
        let eps: Vec<String> = (0..65)
            .map(|i| {
                format!(
                    r#"{{"endpointIP":"10.0.{}.{}","targetPort":80,"weight":1}}"#,
                    i / 200,
                    i % 200 + 1
                )
            })
            .collect();
        assert!(err(&with(ARGS, &eps.join(","))).contains("65 entries"));
    }

    #[test]
    fn duplicate_service_is_rejected() {
        let one = format!(r#"{{"serviceArguments":{{{ARGS}}},"endpoints":[{EP}]}}"#);
        let text = format!(r#"{{"lbAttr":[{one},{one}]}}"#);
        assert!(err(&text).contains("lbAttr[1].serviceArguments = 203.0.113.10:80/tcp"));
    }

    #[test]
    fn syntax_errors_name_the_file() {
        assert!(err("{").starts_with("t.json: not valid JSON"));
        let e = LbConfig::load(Path::new("/nonexistent/floatlb.json")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/floatlb.json"));
    }
}
