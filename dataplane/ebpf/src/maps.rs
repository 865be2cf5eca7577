//! The program's maps. Names (≤ 15 bytes, the kernel's limit) are the
//! contract with the loader, which pins each one under `<pin_dir>/maps/`.
//! Sizes here are defaults; the loader overrides them at load time.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use floatlb_common::{
    Config, Counter, CtValue, DROP_REASONS, EndpointSet, FLOW_CACHE_SLOTS, FlowCacheEntry,
    FlowKeyRaw, IFMAC_SLOTS, IfaceMac, MaglevTable, NhEntry, ServiceKey, ServiceValue,
};

/// Element 0: runtime configuration (active flag, FIB input device, ...).
#[map(name = "FLB_CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// (VIP, port, proto) -> service. Not preallocated, so an update replaces the
/// element under RCU and a reader never sees a half-written value.
#[map(name = "FLB_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(16 * 1024, BPF_F_NO_PREALLOC);

/// Endpoint sets, two slots per service: `id * 2 + generation`.
#[map(name = "FLB_EPSETS")]
pub static EPSETS: Array<EndpointSet> = Array::with_max_entries(2 * 16 * 1024, 0);

/// Maglev tables keyed like the endpoint sets; only Maglev/persist/priority
/// services have one, hence not preallocated.
#[map(name = "FLB_MAGLEV")]
pub static MAGLEV: HashMap<u32, MaglevTable> =
    HashMap::with_max_entries(2 * 16 * 1024, BPF_F_NO_PREALLOC);

/// Conntrack: both directions of every flow.
#[map(name = "FLB_CT")]
pub static CT: LruHashMap<FlowKeyRaw, CtValue> = LruHashMap::with_max_entries(1 << 20, 0);

/// Per-endpoint counters, indexed by `service id * 64 + endpoint index`;
/// a service's total is the sum of its 64 slots.
#[map(name = "FLB_EP_STATS")]
pub static EP_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(16 * 1024 * 64, 0);

/// Drop counters, indexed by `DROP_*` reason.
#[map(name = "FLB_DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASONS, 0);

/// Round-robin cursor per service (per CPU).
#[map(name = "FLB_RR")]
pub static RR: PerCpuArray<u32> = PerCpuArray::with_max_entries(16 * 1024, 0);

/// VIP addresses (network order) whose ICMP echo requests are answered.
#[map(name = "FLB_VIPS")]
pub static VIPS: HashMap<u32, u32> = HashMap::with_max_entries(16 * 1024, 0);

/// Next hops without a neighbour entry, for the agent to resolve.
#[map(name = "FLB_NEIGH_RB")]
pub static NEIGH_RB: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// New flows and TCP state changes for the sync thread (`FlowReport`),
/// written only while `Config::report_flows` is set.
#[map(name = "FLB_FLOW_RB")]
pub static FLOW_RB: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Element 0: flow reports that did not fit in `FLB_FLOW_RB` (per CPU).
/// The sync thread answers any increase with a bulk resync.
#[map(name = "FLB_FLOW_LOST")]
pub static FLOW_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Last report time per unresolved next hop (rate limit of the ring buffer).
#[map(name = "FLB_NEIGH_SEEN")]
pub static NEIGH_SEEN: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// Egress devices for XDP_REDIRECT, keyed by ifindex.
#[map(name = "FLB_DEVMAP")]
pub static DEVMAP: DevMapHash = DevMapHash::with_max_entries(256, 0);

/// Next hop per destination address (see `NhEntry`).
#[map(name = "FLB_NH_CACHE")]
pub static NH_CACHE: LruHashMap<u32, NhEntry> = LruHashMap::with_max_entries(16 * 1024, 0);

/// `ifindex % IFMAC_SLOTS` -> the ingress interface's own MAC, written by
/// the loader's `attach`. Frames whose destination MAC differs are not ours
/// and pass untouched; an interface without an entry is not checked. An
/// array, not a hash, so the lookup is a few inlined instructions.
#[map(name = "FLB_IFMAC")]
pub static IFMAC: Array<IfaceMac> = Array::with_max_entries(IFMAC_SLOTS, 0);

/// Per-CPU flow cache in front of `FLB_CT`, indexed by a hash of the tuple
/// (see `FlowCacheEntry` and docs/DATAPATH.md).
#[map(name = "FLB_FLOWS")]
pub static FLOWS: PerCpuArray<FlowCacheEntry> = PerCpuArray::with_max_entries(FLOW_CACHE_SLOTS, 0);
