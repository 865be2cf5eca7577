//! Typed, validated descriptions of services, flows and counters, and their
//! conversion to and from the raw map types of `floatlb-common`.

use std::net::Ipv4Addr;

use floatlb_common::{
    CT_CLOSED, CT_EST, CT_FIN, CT_SYN, Endpoint, EndpointSet, FlowKeyRaw, MAX_ENDPOINTS,
    SEL_PERSIST, ServiceKey,
};

use crate::DataplaneError;

/// IP protocol numbers a service may use.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

/// A load-balanced service: (VIP, port, proto) and its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Virtual IP clients connect to.
    pub vip: Ipv4Addr,
    /// Service port.
    pub port: u16,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// 0 round-robin, 1 Maglev, 2 priority (weighted random), 3 persist.
    pub sel: u8,
    /// Source address of the translated packets.
    pub snat_ip: Ipv4Addr,
    /// 1..=64 endpoints.
    pub endpoints: Vec<EndpointSpec>,
    /// Idle timeout of established flows (None = the global default).
    pub idle_timeout_secs: Option<u32>,
}

/// One endpoint of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointSpec {
    /// Endpoint address.
    pub ip: Ipv4Addr,
    /// Endpoint port.
    pub port: u16,
    /// Relative weight; 0 drains the endpoint (no new flows).
    pub weight: u8,
}

/// Key of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKeySpec {
    /// VIP.
    pub vip: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
}

/// A 5-tuple as seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

/// TCP state of a tracked flow (UDP flows are `Established`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// SYN seen, no reply yet.
    Syn,
    /// Traffic seen in both directions.
    Established,
    /// A FIN was seen.
    Fin,
    /// Reset.
    Closed,
}

/// One tracked flow, both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtRecord {
    /// The tuple as the client sent it (client -> VIP).
    pub client: FlowKey,
    /// Source of the translated packet (SNAT address, port).
    pub nat_src: (Ipv4Addr, u16),
    /// Destination of the translated packet (endpoint address, port).
    pub nat_dst: (Ipv4Addr, u16),
    /// TCP state.
    pub tcp_state: TcpState,
    /// Packets in both directions.
    pub packets: u64,
    /// Bytes in both directions.
    pub bytes: u64,
    /// Last packet, CLOCK_MONOTONIC nanoseconds (what `bpf_ktime_get_ns` returns).
    pub last_seen_ns: u64,
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCount {
    /// Packets.
    pub packets: u64,
    /// Bytes (L2 frames).
    pub bytes: u64,
}

/// Counters of one service (both directions of its flows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Which service.
    pub key: ServiceKeySpec,
    /// Sum over the service.
    pub total: PacketCount,
    /// Per endpoint of the current set, in order.
    pub endpoints: Vec<(EndpointSpec, PacketCount)>,
}

/// Packets dropped by the datapath, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// No neighbour entry for the next hop (reported to the agent).
    pub no_neigh: u64,
    /// FIB lookup failed (no route, unreachable, MTU).
    pub fib: u64,
    /// The service has no usable endpoint.
    pub no_endpoint: u64,
    /// No free SNAT port for a new flow.
    pub port_exhausted: u64,
    /// Conntrack entry could not be created.
    pub ct_insert: u64,
    /// IPv4 fragments addressed to a service.
    pub fragment: u64,
    /// TTL expired.
    pub ttl: u64,
    /// Redirect to the egress interface failed.
    pub redirect: u64,
}

impl DropCounters {
    /// (reason, count) for every reason, in the datapath's order.
    pub fn by_reason(&self) -> [(&'static str, u64); 8] {
        [
            ("no_neigh", self.no_neigh),
            ("fib", self.fib),
            ("no_endpoint", self.no_endpoint),
            ("port_exhausted", self.port_exhausted),
            ("ct_insert", self.ct_insert),
            ("fragment", self.fragment),
            ("ttl", self.ttl),
            ("redirect", self.redirect),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, n)| n).sum()
    }
}

/// All datapath counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Per service, sorted by key.
    pub services: Vec<ServiceCounters>,
    /// Drops by reason.
    pub drops: DropCounters,
}

pub(crate) fn ip_raw(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub(crate) fn ip_from_raw(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

impl ServiceKeySpec {
    pub(crate) fn raw(&self) -> ServiceKey {
        ServiceKey {
            vip: ip_raw(self.vip),
            port: self.port.to_be(),
            proto: self.proto,
            pad: 0,
        }
    }

    pub(crate) fn from_raw(k: &ServiceKey) -> Self {
        Self {
            vip: ip_from_raw(k.vip),
            port: u16::from_be(k.port),
            proto: k.proto,
        }
    }
}

impl FlowKey {
    pub(crate) fn raw(&self) -> FlowKeyRaw {
        FlowKeyRaw {
            src: ip_raw(self.src),
            dst: ip_raw(self.dst),
            sport: self.sport.to_be(),
            dport: self.dport.to_be(),
            proto: self.proto,
            pad0: 0,
            pad1: 0,
        }
    }

    pub(crate) fn from_raw(k: &FlowKeyRaw) -> Self {
        Self {
            src: ip_from_raw(k.src),
            dst: ip_from_raw(k.dst),
            sport: u16::from_be(k.sport),
            dport: u16::from_be(k.dport),
            proto: k.proto,
        }
    }
}

impl TcpState {
    pub(crate) fn raw(self) -> u8 {
        match self {
            Self::Syn => CT_SYN,
            Self::Established => CT_EST,
            Self::Fin => CT_FIN,
            Self::Closed => CT_CLOSED,
        }
    }

    pub(crate) fn from_raw(v: u8) -> Self {
        match v {
            CT_SYN => Self::Syn,
            CT_EST => Self::Established,
            CT_FIN => Self::Fin,
            _ => Self::Closed,
        }
    }
}

impl ServiceSpec {
    /// The service's key.
    pub fn key(&self) -> ServiceKeySpec {
        ServiceKeySpec {
            vip: self.vip,
            port: self.port,
            proto: self.proto,
        }
    }

    /// Check every field; the error names the first bad field and its value.
    pub fn validate(&self) -> Result<(), DataplaneError> {
        let svc = format!("service {}:{}", self.vip, self.port);
        if self.proto != PROTO_TCP && self.proto != PROTO_UDP {
            return Err(DataplaneError::invalid(
                format!("{svc} proto"),
                self.proto,
                "must be 6 (tcp) or 17 (udp)",
            ));
        }
        if self.port == 0 {
            return Err(DataplaneError::invalid(
                format!("{svc} port"),
                0,
                "must be 1-65535",
            ));
        }
        if self.vip.is_unspecified() || self.vip.is_broadcast() || self.vip.is_multicast() {
            return Err(DataplaneError::invalid(
                format!("{svc} vip"),
                self.vip,
                "must be a unicast address",
            ));
        }
        if self.sel > SEL_PERSIST {
            return Err(DataplaneError::invalid(
                format!("{svc} sel"),
                self.sel,
                "must be 0 (rr), 1 (hash/maglev), 2 (priority) or 3 (persist)",
            ));
        }
        if self.snat_ip.is_unspecified()
            || self.snat_ip.is_broadcast()
            || self.snat_ip.is_multicast()
        {
            return Err(DataplaneError::invalid(
                format!("{svc} snat_ip"),
                self.snat_ip,
                "must be a unicast address",
            ));
        }
        if self.endpoints.is_empty() || self.endpoints.len() > MAX_ENDPOINTS {
            return Err(DataplaneError::invalid(
                format!("{svc} endpoints"),
                format!("{} entries", self.endpoints.len()),
                "a service needs 1 to 64 endpoints",
            ));
        }
        for (i, ep) in self.endpoints.iter().enumerate() {
            if ep.ip.is_unspecified() || ep.ip.is_broadcast() || ep.ip.is_multicast() {
                return Err(DataplaneError::invalid(
                    format!("{svc} endpoints[{i}].ip"),
                    ep.ip,
                    "must be a unicast address",
                ));
            }
            if ep.port == 0 {
                return Err(DataplaneError::invalid(
                    format!("{svc} endpoints[{i}].port"),
                    0,
                    "must be 1-65535",
                ));
            }
            if self.endpoints[..i]
                .iter()
                .any(|o| o.ip == ep.ip && o.port == ep.port)
            {
                return Err(DataplaneError::invalid(
                    format!("{svc} endpoints[{i}]"),
                    format!("{}:{}", ep.ip, ep.port),
                    "duplicate endpoint",
                ));
            }
        }
        if self.endpoints.iter().all(|e| e.weight == 0) {
            return Err(DataplaneError::invalid(
                format!("{svc} endpoints[*].weight"),
                0,
                "at least one endpoint needs a non-zero weight",
            ));
        }
        if self.idle_timeout_secs == Some(0) {
            return Err(DataplaneError::invalid(
                format!("{svc} idle_timeout_secs"),
                0,
                "must be positive",
            ));
        }
        Ok(())
    }

    pub(crate) fn endpoint_set(&self, maglev_len: u32) -> EndpointSet {
        let mut set = EndpointSet {
            count: self.endpoints.len() as u32,
            maglev_len,
            ..EndpointSet::default()
        };
        for (slot, ep) in set.endpoints.iter_mut().zip(&self.endpoints) {
            *slot = Endpoint {
                ip: ip_raw(ep.ip),
                port: ep.port.to_be(),
                weight: ep.weight,
                pad: 0,
            };
        }
        set
    }

    /// Every algorithm uses the weighted table: Maglev and persist hash into
    /// it, priority picks a random slot, round-robin falls back to it when
    /// the cursor lands on a drained endpoint.
    pub(crate) fn needs_maglev(&self) -> bool {
        true
    }
}

pub(crate) fn endpoints_from_set(set: &EndpointSet) -> Vec<EndpointSpec> {
    set.endpoints
        .iter()
        .take((set.count as usize).min(MAX_ENDPOINTS))
        .map(|e| EndpointSpec {
            ip: ip_from_raw(e.ip),
            port: u16::from_be(e.port),
            weight: e.weight,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> ServiceSpec {
        ServiceSpec {
            vip: Ipv4Addr::new(10, 0, 0, 100),
            port: 80,
            proto: PROTO_TCP,
            sel: 1,
            snat_ip: Ipv4Addr::new(10, 0, 0, 100),
            endpoints: vec![EndpointSpec {
                ip: Ipv4Addr::new(10, 1, 0, 1),
                port: 8080,
                weight: 1,
            }],
            idle_timeout_secs: None,
        }
    }

    fn err_text(s: &ServiceSpec) -> String {
        s.validate().expect_err("must be rejected").to_string()
    }

    #[test]
    fn valid_service_passes() {
        svc().validate().unwrap();
    }

    #[test]
    fn bad_fields_are_named_with_their_value() {
        let mut s = svc();
        s.sel = 7;
        assert!(err_text(&s).contains("sel=7"), "{}", err_text(&s));
        let mut s = svc();
        s.proto = 1;
        assert!(err_text(&s).contains("proto=1"));
        let mut s = svc();
        s.endpoints.clear();
        assert!(err_text(&s).contains("endpoints=0 entries"));
        let mut s = svc();
        s.endpoints = vec![s.endpoints[0]; 65];
        assert!(err_text(&s).contains("endpoints=65 entries"));
        let mut s = svc();
        s.endpoints.push(s.endpoints[0]);
        assert!(err_text(&s).contains("endpoints[1]=10.1.0.1:8080"));
        let mut s = svc();
        s.endpoints[0].weight = 0;
        assert!(err_text(&s).contains("weight"));
        let mut s = svc();
        s.endpoints[0].port = 0;
        assert!(err_text(&s).contains("endpoints[0].port=0"));
        let mut s = svc();
        s.snat_ip = Ipv4Addr::UNSPECIFIED;
        assert!(err_text(&s).contains("snat_ip=0.0.0.0"));
    }

    #[test]
    fn raw_keys_are_network_order() {
        let k = svc().key().raw();
        assert_eq!(k.vip.to_ne_bytes(), [10, 0, 0, 100]);
        assert_eq!(k.port.to_ne_bytes(), [0, 80]);
        assert_eq!(ServiceKeySpec::from_raw(&k), svc().key());
        let f = FlowKey {
            src: Ipv4Addr::new(1, 2, 3, 4),
            dst: Ipv4Addr::new(5, 6, 7, 8),
            sport: 1234,
            dport: 80,
            proto: 6,
        };
        assert_eq!(FlowKey::from_raw(&f.raw()), f);
    }
}
