//! The one validation: wire entries into typed services.
//!
//! Every check names the field path and the value in its error; features
//! floatlb does not have are [`ConfigError::Unsupported`], the rest
//! [`ConfigError::Invalid`]. See [`crate::model`] for the rules.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::Ipv4Net;

use crate::{
    model::{
        ConfigError, Endpoint, Limits, NatMode, Oper, ProbeSpec, ProbeType, Protocol, Selection,
        Service,
    },
    wire::{AllowedSource, LbEndpoint, LbEntry, LbServiceArgs},
};

/// Validates one `LoadbalanceEntry`; `at` is its path for error messages
/// (`""` for an API body, so paths start at `serviceArguments`).
pub fn validate_entry(
    at: &str,
    entry: &LbEntry,
    limits: &Limits,
) -> Result<(Service, Oper), ConfigError> {
    let p = |rest: &str| {
        if at.is_empty() {
            rest.to_string()
        } else {
            format!("{at}.{rest}")
        }
    };
    let args = &entry.service_arguments;
    refuse_unsupported(&p("serviceArguments"), args)?;
    if let Some(first) = entry.secondary_ips.first() {
        return Err(ConfigError::unsupported(
            p("secondaryIPs[0].secondaryIP"),
            format!("{:?}", first.secondary_ip),
            "secondary IPs (SCTP multihoming) are not supported; send an empty list",
        ));
    }
    let sa = p("serviceArguments");
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
        return Err(ConfigError::unsupported(
            format!("{sa}.portMax"),
            max,
            "port ranges are not supported; omit portMax or set it equal to port",
        ));
    }
    let protocol = Protocol::parse(&format!("{sa}.protocol"), &args.protocol)?;
    let sel = match args.sel {
        0 => Selection::RoundRobin,
        1 => Selection::Maglev,
        2 => Selection::Priority,
        3 => Selection::Persist,
        other => {
            return Err(ConfigError::unsupported(
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
            return Err(ConfigError::unsupported(
                format!("{sa}.mode"),
                other,
                "supported: 1 (one-arm) and 2 (fullnat); 0 (DNAT, loxilb's default), 3 (DSR), 4 (full proxy) and 5 (host one-arm) are not",
            ));
        }
    };
    let oper = match args.oper {
        0 => Oper::Upsert,
        1 => Oper::Attach,
        2 => Oper::Detach,
        other => {
            return Err(ConfigError::unsupported(
                format!("{sa}.oper"),
                other,
                "supported: 0 (create/update), 1 (attach endpoints), 2 (detach endpoints)",
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
    let probe = validate_probe(&sa, args)?;
    let allowed_sources = entry
        .allowed_sources
        .iter()
        .enumerate()
        .map(|(k, src)| parse_prefix(&p(&format!("allowedSources[{k}].prefix")), src))
        .collect::<Result<Vec<_>, _>>()?;
    // Accepting source ranges without enforcing them would open a service
    // its owner meant to restrict: refused until the datapath drops other
    // sources.
    if let Some(first) = allowed_sources.first() {
        return Err(ConfigError::unsupported(
            p("allowedSources"),
            format!("[{first}, ...]"),
            "source ranges (loadBalancerSourceRanges) are not enforced by the datapath yet; \
             remove them, or restrict sources in the security group",
        ));
    }
    let endpoints = validate_endpoints(&p("endpoints"), &entry.endpoints, limits)?;
    let service = Service {
        name: args.name.clone().filter(|n| !n.is_empty()),
        external_ip,
        private_ip,
        port,
        protocol,
        sel,
        mode,
        inactive_timeout,
        allowed_sources,
        probe,
        managed: args.managed,
        endpoints,
    };
    Ok((service, oper))
}

/// The flags and fields of features floatlb does not have.
fn refuse_unsupported(sa: &str, args: &LbServiceArgs) -> Result<(), ConfigError> {
    let flags = [
        (
            "bgp",
            args.bgp,
            "floatlb does not speak BGP; addresses float through the cloud provider",
        ),
        (
            "proxyprotocolv2",
            args.proxyprotocolv2,
            "PROXY protocol v2 is not supported",
        ),
        ("egress", args.egress, "egress rules are not supported"),
        (
            "snat",
            args.snat,
            "SNAT-only rules are not supported (fullnat mode 2 already SNATs)",
        ),
    ];
    if let Some((name, _, why)) = flags.iter().find(|(_, on, _)| *on) {
        return Err(ConfigError::unsupported(format!("{sa}.{name}"), true, *why));
    }
    if args.security != 0 {
        return Err(ConfigError::unsupported(
            format!("{sa}.security"),
            args.security,
            "only 0 (plain) is supported; floatlb does not terminate TLS",
        ));
    }
    if !args.host.is_empty() {
        return Err(ConfigError::unsupported(
            format!("{sa}.host"),
            format!("{:?}", args.host),
            "host (ingress URL) rules are not supported",
        ));
    }
    if args.block != 0 {
        return Err(ConfigError::unsupported(
            format!("{sa}.block"),
            args.block,
            "rule blocks are not supported; send 0",
        ));
    }
    Ok(())
}

fn validate_probe(sa: &str, args: &LbServiceArgs) -> Result<ProbeSpec, ConfigError> {
    let probe_type = if args.probetype.is_empty() {
        None
    } else {
        let found = ProbeType::ALL
            .iter()
            .find(|(_, s)| s.eq_ignore_ascii_case(&args.probetype));
        Some(found.map(|(t, _)| *t).ok_or_else(|| {
            ConfigError::invalid(
                format!("{sa}.probetype"),
                format!("{:?}", args.probetype),
                "one of tcp, udp, sctp, http, https, ping, none (or empty)",
            )
        })?)
    };
    if args.monitor && probe_type == Some(ProbeType::Sctp) {
        return Err(ConfigError::Unsupported {
            field: format!("{sa}.probetype"),
            value: format!("{:?}", args.probetype),
            reason: "floatlb has no SCTP services and cannot probe SCTP; use tcp, udp, http, https or ping".into(),
        });
    }
    let port = u16::try_from(args.probeport).map_err(|_| {
        ConfigError::invalid(
            format!("{sa}.probeport"),
            args.probeport,
            "must be 0..=65535",
        )
    })?;
    let count = |name: &str, v: i64| {
        u32::try_from(v)
            .map_err(|_| ConfigError::invalid(format!("{sa}.{name}"), v, "must be 0..=4294967295"))
    };
    Ok(ProbeSpec {
        monitor: args.monitor,
        probe_type,
        port,
        request: args.probereq.clone(),
        response: args.proberesp.clone(),
        retries: count("probeRetries", args.probe_retries)?,
        timeout: count("probeTimeout", args.probe_timeout)?,
    })
}

/// Validates an endpoint list (non-empty, at most `max_endpoints`, no
/// duplicate address and port); `at` is the list's path.
pub fn validate_endpoints(
    at: &str,
    list: &[LbEndpoint],
    limits: &Limits,
) -> Result<Vec<Endpoint>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::invalid(
            at,
            "[]",
            "a service needs at least one endpoint",
        ));
    }
    if list.len() > limits.max_endpoints {
        return Err(ConfigError::invalid(
            at,
            format!("{} entries", list.len()),
            format!("at most {} endpoints per service", limits.max_endpoints),
        ));
    }
    let mut endpoints = Vec::with_capacity(list.len());
    let mut seen = HashSet::new();
    for (j, ep) in list.iter().enumerate() {
        let ea = format!("{at}[{j}]");
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
    Ok(endpoints)
}

/// Parses a unicast IPv4 address; `field` names it in errors.
pub fn parse_ipv4(field: &str, value: &str) -> Result<Ipv4Addr, ConfigError> {
    let ip: Ipv4Addr = value.parse().map_err(|_| {
        if value.parse::<Ipv6Addr>().is_ok() {
            ConfigError::unsupported(field, format!("{value:?}"), "IPv6 is not supported")
        } else {
            ConfigError::invalid(field, format!("{value:?}"), "not an IPv4 address")
        }
    })?;
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(ConfigError::invalid(
            field,
            format!("{value:?}"),
            "must be a unicast address",
        ));
    }
    Ok(ip)
}

/// Parses a port in 1..=65535; `field` names it in errors.
pub fn parse_port(field: &str, value: i64) -> Result<u16, ConfigError> {
    u16::try_from(value)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| ConfigError::invalid(field, value, "must be 1..=65535"))
}

/// An `allowedSources` prefix: `a.b.c.d/len`, or a bare address for `/32`.
/// Host bits are cleared, so the stored form is canonical.
fn parse_prefix(field: &str, src: &AllowedSource) -> Result<Ipv4Net, ConfigError> {
    let value = src.prefix.trim();
    let net = if value.contains('/') {
        value.parse::<Ipv4Net>().ok()
    } else {
        value.parse::<Ipv4Addr>().ok().map(Ipv4Net::from)
    };
    match net {
        Some(net) => Ok(net.trunc()),
        None if value.contains(':') => Err(ConfigError::unsupported(
            field,
            format!("{value:?}"),
            "IPv6 sources are not supported",
        )),
        None => Err(ConfigError::invalid(
            field,
            format!("{value:?}"),
            "not an IPv4 prefix (a.b.c.d/len)",
        )),
    }
}
