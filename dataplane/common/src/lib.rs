//! Map keys and values shared by the floatlb XDP program and its loader.
//!
//! Every type is `#[repr(C)]` with explicit padding fields, so its layout is
//! the same in the BPF object and in userspace and the kernel never copies
//! uninitialised bytes: each struct's size is checked by a `const` assertion
//! below, which fails the build if the compiler ever had to insert padding.
//!
//! Byte order: IPv4 addresses and L4 ports are stored exactly as they appear
//! on the wire (network byte order), read with a native load. The datapath
//! then compares and rewrites them without conversion; userspace converts with
//! `u32::from_ne_bytes(ip.octets())` and `port.to_be()`.
//!
//! With the `user` feature each type implements `aya::Pod`.
#![no_std]

/// Largest number of endpoints a service may have.
pub const MAX_ENDPOINTS: usize = 64;
/// Capacity of a Maglev lookup table: at least the smallest prime
/// >= 100 x [`MAX_ENDPOINTS`] (6421), rounded up to a multiple of 8.
pub const MAGLEV_CAPACITY: usize = 6424;

/// Length of every service's Maglev table: the smallest prime >= 100 x
/// [`MAX_ENDPOINTS`]. Fixed, so it never changes when endpoints come and go
/// (which keeps Maglev's minimal disruption) and the datapath can reduce a
/// hash modulo a constant.
pub const MAGLEV_LEN: u32 = 6421;

/// Endpoint selection algorithms, numbered as loxilb's `sel`.
pub const SEL_RR: u8 = 0;
/// Weighted Maglev consistent hashing over the 5-tuple.
pub const SEL_MAGLEV: u8 = 1;
/// Weighted random choice (priority by weight).
pub const SEL_PRIORITY: u8 = 2;
/// Source-IP affinity (Maglev over the client address only).
pub const SEL_PERSIST: u8 = 3;

/// TCP connection states kept in a conntrack entry.
pub const CT_SYN: u8 = 0;
/// Established (also used for UDP flows).
pub const CT_EST: u8 = 1;
/// A FIN was seen in either direction.
pub const CT_FIN: u8 = 2;
/// Reset or fully closed.
pub const CT_CLOSED: u8 = 3;

/// Conntrack entry direction: key is the client's tuple.
pub const DIR_FORWARD: u8 = 0;
/// Conntrack entry direction: key is the endpoint's reply tuple.
pub const DIR_REPLY: u8 = 1;

/// Index of each drop reason in the per-CPU drop counter array.
pub const DROP_NO_NEIGH: u32 = 0;
/// The FIB lookup failed (no route, blackhole, unreachable...).
pub const DROP_FIB: u32 = 1;
/// The service has no endpoint with a non-zero weight.
pub const DROP_NO_ENDPOINT: u32 = 2;
/// No free SNAT source port was found within the probe budget.
pub const DROP_PORT_EXHAUSTED: u32 = 3;
/// A conntrack entry could not be written.
pub const DROP_CT_INSERT: u32 = 4;
/// IPv4 fragment addressed to a service (cannot be load-balanced).
pub const DROP_FRAGMENT: u32 = 5;
/// TTL would reach zero.
pub const DROP_TTL: u32 = 6;
/// Redirect to the egress device failed.
pub const DROP_REDIRECT: u32 = 7;
/// Number of drop reasons (size of the drop counter array).
pub const DROP_REASONS: u32 = 8;

/// Lowest and highest SNAT source port. The range stays below Linux's default
/// ephemeral range (32768-60999) so it never collides with connections that
/// the host itself opens from the SNAT address.
pub const SNAT_PORT_MIN: u16 = 1024;
/// See [`SNAT_PORT_MIN`].
pub const SNAT_PORT_MAX: u16 = 32767;
/// Ports in each node's half of the SNAT range when the pair syncs
/// connections (`Config::snat_part` 1 and 2): node 0 takes
/// `SNAT_PORT_MIN..SNAT_PORT_MIN + SNAT_PART_LEN`, node 1 the rest, so a
/// flow created on one node never claims a port a synced flow of the other
/// holds (docs/SYNC.md).
pub const SNAT_PART_LEN: u16 = (SNAT_PORT_MAX - SNAT_PORT_MIN).div_ceil(2);
/// How many candidate SNAT ports a new flow probes before giving up.
pub const SNAT_PROBES: u32 = 16;

/// Lookup key of the service map: (VIP, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// VIP, network byte order.
    pub vip: u32,
    /// Service port, network byte order.
    pub port: u16,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
    /// Explicit padding, always zero.
    pub pad: u8,
}

/// Per-service value. The endpoint set lives in a separate array slot
/// `id * 2 + generation`; userspace fills the inactive slot, then flips
/// `generation` with one update of this (non-preallocated, RCU-replaced)
/// element, so a packet sees either the whole old set or the whole new one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Slot of the service in the per-service arrays (stats, endpoint sets).
    pub id: u32,
    /// Which of the two endpoint-set slots is live (0 or 1).
    pub generation: u32,
    /// Source address for SNAT, network byte order.
    pub snat_ip: u32,
    /// Idle timeout for established flows, seconds (0 = global default).
    pub idle_timeout_s: u32,
    /// Selection algorithm (`SEL_*`).
    pub sel: u8,
    /// Explicit padding, always zero.
    pub pad: [u8; 3],
}

/// One endpoint of a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Endpoint address, network byte order.
    pub ip: u32,
    /// Endpoint port, network byte order.
    pub port: u16,
    /// Weight; 0 means drained (never selected for new flows).
    pub weight: u8,
    /// Explicit padding, always zero.
    pub pad: u8,
}

/// A complete endpoint set with its Maglev table length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointSet {
    /// Number of valid entries in `endpoints`.
    pub count: u32,
    /// `MAGLEV_LEN` when this slot has a Maglev table, else 0.
    pub maglev_len: u32,
    /// Endpoints; entries past `count` are zero.
    pub endpoints: [Endpoint; MAX_ENDPOINTS],
}

impl Default for EndpointSet {
    fn default() -> Self {
        Self {
            count: 0,
            maglev_len: 0,
            endpoints: [Endpoint::default(); MAX_ENDPOINTS],
        }
    }
}

/// Maglev lookup table: each entry is an index into the endpoint set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    /// Endpoint index per table slot; only the first `maglev_len` are used.
    pub entries: [u8; MAGLEV_CAPACITY],
}

impl Default for MaglevTable {
    fn default() -> Self {
        Self {
            entries: [0; MAGLEV_CAPACITY],
        }
    }
}

/// Conntrack key: a 5-tuple as seen on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyRaw {
    /// Source address, network byte order.
    pub src: u32,
    /// Destination address, network byte order.
    pub dst: u32,
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Explicit padding, always zero.
    pub pad0: u8,
    /// Explicit padding, always zero.
    pub pad1: u16,
}

/// Conntrack value: how to rewrite a packet whose tuple equals the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// New source address, network byte order.
    pub nat_src: u32,
    /// New destination address, network byte order.
    pub nat_dst: u32,
    /// New source port, network byte order.
    pub nat_sport: u16,
    /// New destination port, network byte order.
    pub nat_dport: u16,
    /// Service slot (`u32::MAX` when unknown, e.g. synced from a peer).
    pub svc_id: u32,
    /// Idle timeout for the established state in seconds (0 = default).
    pub idle_timeout_s: u32,
    /// `DIR_FORWARD` or `DIR_REPLY`.
    pub dir: u8,
    /// `CT_*` state.
    pub tcp_state: u8,
    /// Index of the endpoint in the service's set at creation time.
    pub ep_idx: u8,
    /// Explicit padding, always zero.
    pub pad: u8,
    /// Cached next hop: egress interface (0 = not cached).
    pub nh_ifindex: u32,
    /// Cached next hop: source MAC.
    pub nh_smac: [u8; 6],
    /// Cached next hop: destination MAC.
    pub nh_dmac: [u8; 6],
    /// When the cached next hop was resolved (`bpf_ktime_get_ns`).
    pub nh_ns: u64,
    /// Last packet seen (`bpf_ktime_get_ns`, CLOCK_MONOTONIC).
    pub last_seen_ns: u64,
    /// Packets seen in this direction.
    pub packets: u64,
    /// Bytes seen in this direction (L2 frame length).
    pub bytes: u64,
}

impl CtValue {
    /// The key of the flow's other direction: this entry's rewrite
    /// reversed (the forward entry's rewrite is the endpoint's tuple, the
    /// reply entry's is the client's), with the same protocol.
    #[inline(always)]
    pub fn peer_key(&self, proto: u8) -> FlowKeyRaw {
        FlowKeyRaw {
            src: self.nat_dst,
            dst: self.nat_src,
            sport: self.nat_dport,
            dport: self.nat_sport,
            proto,
            pad0: 0,
            pad1: 0,
        }
    }
}

/// Packet and byte counter (per CPU in the maps).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (L2 frame length).
    pub bytes: u64,
}

/// Runtime configuration, element 0 of the config array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Non-zero when this node is MASTER and must load-balance.
    pub active: u32,
    /// Interface index used as the input device of `bpf_fib_lookup`
    /// (0 = the packet's ingress interface). The kernel refuses FIB lookups
    /// on an input device with forwarding disabled, so a host that keeps
    /// `ip_forward=0` points this at `lo` with `net.ipv4.conf.lo.forwarding=1`.
    pub fib_ifindex: u32,
    /// Maximum age of a cached next hop in nanoseconds.
    pub nh_max_age_ns: u64,
    /// Flow-cache generation: a cache entry is used only while its `gen`
    /// equals this. Userspace bumps it whenever it deletes or overwrites a
    /// conntrack entry, which invalidates every CPU's cache at once. Never 0
    /// once the loader has opened the datapath, so an all-zero slot is never
    /// valid.
    pub ct_gen: u32,
    /// Non-zero: report new flows and TCP state changes to `FLB_FLOW_RB`
    /// (connection sync is on).
    pub report_flows: u8,
    /// Which SNAT ports new flows take: 0 the whole range, 1 the lower
    /// [`SNAT_PART_LEN`] ports (node 0 of a syncing pair), 2 the upper ones
    /// (node 1).
    pub snat_part: u8,
    /// Explicit padding, always zero.
    pub pad: u16,
}

/// A flow reported to the sync thread through `FLB_FLOW_RB`: its client
/// tuple and forward rewrite, and its TCP state, when the flow is created
/// and whenever its state changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowReport {
    /// The client's tuple (the forward entry's key).
    pub key: FlowKeyRaw,
    /// SNAT address, network byte order.
    pub nat_src: u32,
    /// Endpoint address, network byte order.
    pub nat_dst: u32,
    /// SNAT port, network byte order.
    pub nat_sport: u16,
    /// Endpoint port, network byte order.
    pub nat_dport: u16,
    /// `CT_*` state.
    pub tcp_state: u8,
    /// Explicit padding, always zero.
    pub pad: [u8; 3],
}

/// Slots of the per-CPU flow cache (a power of two).
pub const FLOW_CACHE_SLOTS: u32 = 4096;

/// How long a flow-cache entry may serve packets before the next packet
/// takes the conntrack path again, in jiffies (64 ms at HZ=1000, 256 ms at
/// HZ=250, 640 ms at HZ=100). That packet writes the counters and last-seen
/// time back to the conntrack entry and refreshes the cached rewrite, so
/// conntrack lags the traffic by at most this much.
pub const FLOW_CACHE_SYNC_JIFFIES: u64 = 64;

/// One slot of the per-CPU flow cache: the rewrite and next hop of one
/// established flow direction, copied from its conntrack entry, so that the
/// flow's packets need no hash lookup at all (see docs/DATAPATH.md).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCacheEntry {
    /// The tuple this slot serves.
    pub key: FlowKeyRaw,
    /// `Config::ct_gen` when the slot was filled.
    pub ct_gen: u32,
    /// Service slot (`u32::MAX`: no per-service counters).
    pub svc_id: u32,
    /// New source address, network byte order.
    pub nat_src: u32,
    /// New destination address, network byte order.
    pub nat_dst: u32,
    /// New source port, network byte order.
    pub nat_sport: u16,
    /// New destination port, network byte order.
    pub nat_dport: u16,
    /// Egress interface.
    pub nh_ifindex: u32,
    /// Next hop source MAC.
    pub nh_smac: [u8; 6],
    /// Next hop destination MAC.
    pub nh_dmac: [u8; 6],
    /// Endpoint index (per-endpoint counters).
    pub ep_idx: u8,
    /// Explicit padding, always zero.
    pub pad0: u8,
    /// RFC 1624 `~m + m'` sum, folded to 16 bits, of this rewrite's changes
    /// to the IPv4 header (addresses, and the TTL going down by one), which
    /// is the same for every packet of the flow direction.
    pub ip_csum_delta: u16,
    /// The same for the TCP/UDP checksum (pseudo-header addresses, ports).
    pub l4_csum_delta: u16,
    /// Explicit padding, always zero.
    pub pad1: [u8; 6],
    /// `bpf_jiffies64()` when the slot was filled or last written back.
    pub synced_jiffies: u64,
    /// Packets served since then, not yet in the conntrack entry.
    pub packets: u64,
    /// Bytes served since then, not yet in the conntrack entry.
    pub bytes: u64,
}

/// Slots of the ingress-MAC array, indexed by `ifindex % IFMAC_SLOTS`.
pub const IFMAC_SLOTS: u32 = 1 << 16;

/// Next hop cached per destination address, so that new flows to an
/// endpoint resolved recently skip `bpf_fib_lookup`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NhEntry {
    /// Egress interface index.
    pub ifindex: u32,
    /// Source MAC.
    pub smac: [u8; 6],
    /// Destination MAC.
    pub dmac: [u8; 6],
    /// When it was resolved (`bpf_ktime_get_coarse_ns`).
    pub resolved_ns: u64,
}

/// Event pushed to the ring buffer when a next hop has no neighbour entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighEvent {
    /// Next-hop address, network byte order.
    pub nexthop: u32,
    /// Egress interface index.
    pub ifindex: u32,
}

/// MAC address of an interface the program is attached to, the value of the
/// ingress-MAC map (keyed by ifindex). Filled by the loader at attach time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceMac {
    /// The interface this slot describes (0: empty slot). The array is
    /// indexed by `ifindex % IFMAC_SLOTS`, so a slot holding another
    /// interface means "not recorded".
    pub ifindex: u32,
    /// The interface's own (unicast) MAC address.
    pub mac: [u8; 6],
    /// Explicit padding, always zero.
    pub pad: [u8; 2],
}

// No implicit padding anywhere: each size is the plain sum of the fields.
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 8);
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 20);
const _: () = assert!(core::mem::size_of::<Endpoint>() == 8);
const _: () = assert!(core::mem::size_of::<EndpointSet>() == 8 + 8 * MAX_ENDPOINTS);
const _: () = assert!(core::mem::size_of::<MaglevTable>() == MAGLEV_CAPACITY);
const _: () = assert!(core::mem::size_of::<FlowKeyRaw>() == 16);
const _: () =
    assert!(core::mem::size_of::<CtValue>() == 4 + 4 + 2 + 2 + 4 + 4 + 4 + 4 + 12 + 8 * 4);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(core::mem::size_of::<FlowReport>() == 32);
const _: () = assert!(core::mem::size_of::<Config>() == 24);
const _: () =
    assert!(core::mem::size_of::<FlowCacheEntry>() == 16 + 4 * 4 + 2 * 2 + 4 + 12 + 12 + 3 * 8);
const _: () = assert!(FLOW_CACHE_SLOTS.is_power_of_two() && IFMAC_SLOTS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<NeighEvent>() == 8);
const _: () = assert!(core::mem::size_of::<NhEntry>() == 4 + 6 + 6 + 8);
const _: () = assert!(core::mem::size_of::<IfaceMac>() == 12);
const _: () = assert!(MAGLEV_CAPACITY >= MAGLEV_LEN as usize && MAGLEV_CAPACITY.is_multiple_of(8));

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type below is #[repr(C)], made only of integers and
    // integer arrays, and has no implicit padding (checked by the size
    // assertions above), so any bit pattern is valid and all bytes are
    // initialised.
    unsafe impl aya::Pod for ServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ServiceValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for EndpointSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for MaglevTable {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowKeyRaw {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CtValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Counter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NeighEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NhEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IfaceMac {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowCacheEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowReport {}
}
