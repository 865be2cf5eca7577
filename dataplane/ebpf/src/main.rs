//! floatlb XDP datapath: IPv4 TCP/UDP full NAT load balancing.
//!
//! Per packet (see docs/DATAPATH.md for the full design):
//! 1. Anything that is not IPv4 without options, arrives while this node is
//!    not active (BACKUP), or is not unicast to the ingress interface's own
//!    MAC (when the loader recorded that MAC), is passed to the stack
//!    untouched.
//! 2. TCP/UDP: a per-CPU flow cache (an array slot chosen by a hash of the
//!    5-tuple) serves established flows: the rewrite, checksum deltas and
//!    next hop are copied there from conntrack, so such a packet costs no
//!    hash lookup and no clock read. SYN/FIN/RST, a stale slot (older than
//!    `FLOW_CACHE_SYNC_JIFFIES`, which writes counters back) or a bumped
//!    generation (userspace changed conntrack) take the conntrack path.
//!    Otherwise the 5-tuple is looked up in the conntrack LRU map. A hit carries
//!    the full rewrite (addresses and ports) for its direction, so client
//!    packets and endpoint replies take the same path. A miss whose
//!    (dst, dport, proto) is a service creates the two conntrack entries
//!    (forward and reply), choosing the endpoint with the service's `sel`
//!    algorithm and a SNAT port that no other flow to that endpoint uses.
//!    Anything else passes to the stack (SSH, BFD, the agent's own traffic).
//! 3. ICMP: echo requests to a VIP are answered here; destination-unreachable
//!    and time-exceeded errors quoting a tracked flow are translated back to
//!    the host that sent the quoted packet.
//! 4. The next hop comes from `bpf_fib_lookup` (cached per flow for
//!    `Config::nh_max_age_ns`): XDP_TX when it leaves by the ingress interface,
//!    XDP_REDIRECT otherwise. No neighbour entry: the packet is dropped and
//!    counted and the next hop is pushed to a ring buffer for the agent.
#![no_std]
// Map values are passed to the helpers by reference on purpose: passing them
// by value (what this lint suggests) copies them onto the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]
// Header fields are swapped by explicit byte copies through raw packet
// pointers; `mem::swap` on packet memory gives the verifier nothing better.
#![allow(clippy::manual_swap)]
#![no_main]

mod csum;
mod forward;
mod icmp;
mod maps;
mod packet;
mod report;

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_ANY, BPF_NOEXIST, bpf_fib_lookup as FibParams, xdp_action},
    helpers::{
        bpf_fib_lookup, bpf_get_prandom_u32, bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_redirect,
    },
    macros::xdp,
    programs::XdpContext,
};
use csum::Delta;
use floatlb_common::{
    CT_CLOSED, CT_EST, CT_FIN, CT_SYN, Config, CtValue, DIR_FORWARD, DIR_REPLY, DROP_CT_INSERT,
    DROP_FIB, DROP_FRAGMENT, DROP_NO_ENDPOINT, DROP_NO_NEIGH, DROP_PORT_EXHAUSTED, DROP_REDIRECT,
    DROP_TTL, Endpoint, FLOW_CACHE_SLOTS, FLOW_CACHE_SYNC_JIFFIES, FlowCacheEntry, FlowKeyRaw,
    IFMAC_SLOTS, MAGLEV_LEN, MAX_ENDPOINTS, NeighEvent, NhEntry, SEL_MAGLEV, SEL_PERSIST,
    SEL_PRIORITY, SEL_RR, SNAT_PART_LEN, SNAT_PORT_MAX, SNAT_PORT_MIN, SNAT_PROBES, ServiceKey,
    ServiceValue,
};
use maps::{
    CONFIG, CT, DEVMAP, DROPS, EP_STATS, EPSETS, FLOWS, IFMAC, MAGLEV, NEIGH_RB, NEIGH_SEEN,
    NH_CACHE, RR, SERVICES, VIPS,
};

use forward::{emit, fib, put_mac, zero_in_place};
use icmp::icmp;
use packet::*;

#[xdp]
pub fn floatlb_xdp(ctx: XdpContext) -> u32 {
    // SAFETY: every packet access below is bounds-checked against data_end by
    // `ptr_at` before it is dereferenced; map pointers come from successful
    // lookups and are valid for the duration of the program.
    match unsafe { process(&ctx) } {
        Ok(action) => action,
        Err(()) => xdp_action::XDP_PASS,
    }
}

/// Passes every frame. Attached to the peer of a veth so that the peer runs
/// NAPI and receives frames sent with XDP_TX/XDP_REDIRECT (docs/DATAPATH.md).
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Baseline for the per-packet benchmark: swap the MAC addresses and bounce
/// the frame (the cheapest useful XDP_TX program).
#[xdp]
pub fn xdp_macswap_baseline(ctx: XdpContext) -> u32 {
    match ptr_at::<EthHdr>(&ctx, 0) {
        Ok(eth) => {
            // SAFETY: `eth` was bounds-checked by `ptr_at`.
            unsafe {
                let d = (*eth).dst;
                (*eth).dst = (*eth).src;
                (*eth).src = d;
            }
            xdp_action::XDP_TX
        }
        Err(()) => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn drop_with(reason: u32) -> u32 {
    if let Some(c) = DROPS.get_ptr_mut(reason) {
        // SAFETY: per-CPU array slot returned by a successful lookup.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

/// Count `packets` packets (`bytes` bytes) of service `svc_id` sent to its
/// endpoint `ep_idx`. Only per-endpoint counters are kept; a service's
/// total is the sum of its 64 slots (the loader zeroes them when it creates
/// the service). Flow-cache hits are counted in their slot and added here
/// when the slot writes back (`cache_fill`); the loader adds what slots
/// still hold when it reads the counters.
#[inline(always)]
unsafe fn bump_stats(svc_id: u32, ep_idx: u8, packets: u64, bytes: u64) {
    let ep_slot = svc_id
        .wrapping_mul(MAX_ENDPOINTS as u32)
        .wrapping_add(ep_idx as u32);
    if let Some(c) = EP_STATS.get_ptr_mut(ep_slot) {
        unsafe {
            (*c).packets += packets;
            (*c).bytes += bytes;
        }
    }
}

unsafe fn process(ctx: &XdpContext) -> Result<u32, ()> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    if unsafe { (*eth).proto } != ETH_P_IP_BE {
        return Ok(xdp_action::XDP_PASS);
    }
    let ip = ptr_at::<IpHdr>(ctx, ETH_HLEN)?;
    if unsafe { (*ip).vihl } != 0x45 {
        return Ok(xdp_action::XDP_PASS);
    }
    let cfg = match CONFIG.get(0) {
        Some(c) if c.active != 0 => c,
        Some(c) if c.report_flows != 0 => return report::passive(ctx, ip),
        _ => return Ok(xdp_action::XDP_PASS),
    };
    // On a shared L2 segment a switch floods unknown unicast, so frames for
    // another host's MAC reach us too: only a frame unicast to the ingress
    // interface's own MAC is ours (broadcast and multicast never match).
    // No entry (test runs, an interface attached by an older agent): no check.
    let ifindex = ctx.ingress_ifindex() as u32;
    if let Some(own) = IFMAC.get(ifindex & (IFMAC_SLOTS - 1))
        && own.ifindex == ifindex
        && !unsafe { mac_eq(core::ptr::addr_of!((*eth).dst), &own.mac) }
    {
        core::hint::cold_path();
        return Ok(xdp_action::XDP_PASS);
    }
    match unsafe { (*ip).proto } {
        PROTO_TCP | PROTO_UDP => unsafe { l4(ctx, eth, ip, cfg) },
        PROTO_ICMP => unsafe { icmp(ctx, eth, ip, cfg) },
        _ => Ok(xdp_action::XDP_PASS),
    }
}

unsafe fn l4(ctx: &XdpContext, eth: *mut EthHdr, ip: *mut IpHdr, cfg: &Config) -> Result<u32, ()> {
    let head = ptr_at::<L4Head>(ctx, L4_OFF)?;
    // The flow cache first, from the tuple alone: the fast path reads what
    // else it checks from the packet itself, so little stays live across
    // the lookup (BPF calls clobber r1-r5).
    let slot = unsafe { cache_slot_of((*ip).src, (*ip).dst, (*head).sport, (*head).dport) };
    let cached = FLOWS.get_ptr_mut(slot);
    if let Some(e) = cached
        && let Some(action) = unsafe { fast_path(ctx, eth, ip, head, &mut *e, cfg) }
    {
        return Ok(action);
    }
    // Everything below is the slow path: keep it out of the fast path's
    // straight line.
    core::hint::cold_path();
    let proto = unsafe { (*ip).proto };
    // Non-first fragments carry no ports: never ours to recognise.
    let frag = unsafe { (*ip).frag_off } & IP_FRAG_MASK_BE;
    let (csum, tcp_flags) = if proto == PROTO_TCP {
        let tcp = ptr_at::<TcpHdr>(ctx, L4_OFF)?;
        (unsafe { core::ptr::addr_of_mut!((*tcp).check) }, unsafe {
            (*tcp).flags
        })
    } else {
        (unsafe { core::ptr::addr_of_mut!((*head).w3) }, 0)
    };
    let key = FlowKeyRaw {
        src: unsafe { (*ip).src },
        dst: unsafe { (*ip).dst },
        sport: unsafe { (*head).sport },
        dport: unsafe { (*head).dport },
        proto,
        pad0: 0,
        pad1: 0,
    };
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let jiffies = unsafe { bpf_jiffies64() };
    if let Some(ct) = CT.get_ptr_mut(&key) {
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        if frag != 0 {
            return Ok(drop_with(DROP_FRAGMENT));
        }
        let v = unsafe { &mut *ct };
        v.packets += 1;
        v.bytes += bytes;
        v.last_seen_ns = now;
        if proto == PROTO_TCP {
            unsafe { track_tcp(&key, v, tcp_flags, cfg.report_flows != 0) };
        }
        if v.svc_id != u32::MAX {
            unsafe { bump_stats(v.svc_id, v.ep_idx, 1, bytes) };
        }
        if unsafe { (*ip).ttl } <= 1 {
            return Ok(drop_with(DROP_TTL));
        }
        unsafe {
            rewrite(
                ip,
                head,
                csum,
                proto,
                v.nat_src,
                v.nat_dst,
                v.nat_sport,
                v.nat_dport,
            );
        }
        let nh = if v.nh_ifindex != 0 && now.wrapping_sub(v.nh_ns) < cfg.nh_max_age_ns {
            Nexthop {
                ifindex: v.nh_ifindex,
                smac: v.nh_smac,
                dmac: v.nh_dmac,
            }
        } else {
            match unsafe { fib(ctx, cfg, ip, now) } {
                Ok(nh) => {
                    v.nh_ifindex = nh.ifindex;
                    v.nh_smac = nh.smac;
                    v.nh_dmac = nh.dmac;
                    v.nh_ns = now;
                    nh
                }
                Err(action) => return Ok(action),
            }
        };
        if let Some(e) = cached {
            unsafe { cache_fill(&mut *e, &key, v, cfg, jiffies) };
        }
        return Ok(unsafe { emit(ctx, eth, &nh) });
    }

    let skey = ServiceKey {
        vip: key.dst,
        port: key.dport,
        proto,
        pad: 0,
    };
    let svc = match unsafe { SERVICES.get(&skey) } {
        Some(s) => *s,
        None => return Ok(xdp_action::XDP_PASS),
    };
    if frag != 0 {
        return Ok(drop_with(DROP_FRAGMENT));
    }
    if unsafe { (*ip).ttl } <= 1 {
        return Ok(drop_with(DROP_TTL));
    }
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    unsafe {
        new_flow(
            ctx, eth, ip, head, csum, cfg, &key, &svc, tcp_flags, bytes, now,
        )
    }
}

/// Whether the frame's destination MAC `dst` equals `own`: three 16-bit
/// compares (an array comparison becomes six byte loads and shifts).
///
/// # Safety
/// `dst` must be valid for reads and 2-byte aligned (a field of `EthHdr`).
#[inline(always)]
unsafe fn mac_eq(dst: *const [u8; 6], own: &[u8; 6]) -> bool {
    let a = dst as *const u16;
    let b = own.as_ptr() as *const u16;
    // SAFETY: both are 6 bytes and 2-byte aligned (`IfaceMac::mac` sits at
    // offset 4 of a 4-aligned struct).
    unsafe {
        (a.read() ^ b.read())
            | (a.add(1).read() ^ b.add(1).read())
            | (a.add(2).read() ^ b.add(2).read())
            == 0
    }
}

/// Advance the TCP state of a flow on this packet's flags; mirror any change
/// into the entry of the opposite direction.
#[inline(always)]
unsafe fn track_tcp(key: &FlowKeyRaw, v: &mut CtValue, flags: u8, report: bool) {
    let st = v.tcp_state;
    let next = if flags & TCP_RST != 0 {
        CT_CLOSED
    } else if flags & TCP_FIN != 0 {
        if st < CT_FIN { CT_FIN } else { st }
    } else if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 && v.dir == DIR_FORWARD && st >= CT_FIN {
        // The client reuses the tuple for a new connection.
        CT_SYN
    } else if st == CT_SYN && v.dir == DIR_REPLY {
        CT_EST
    } else {
        st
    };
    if next != st {
        v.tcp_state = next;
        let peer = v.peer_key(key.proto);
        if let Some(p) = CT.get_ptr_mut(&peer) {
            unsafe { (*p).tcp_state = next };
        }
        if report {
            report::entry(key, v);
        }
    }
}

/// The flow-cache fast path: when slot `e` holds this packet's tuple, is of
/// the current generation and was synced less than `FLOW_CACHE_SYNC_JIFFIES`
/// ago, and the packet carries no SYN, FIN or RST (conntrack tracks those),
/// rewrite it with the cached translation and checksum deltas and send it to
/// the cached next hop: no hash lookup and no clock read. None: take the
/// conntrack path.
#[inline(always)]
unsafe fn fast_path(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *mut IpHdr,
    head: *mut L4Head,
    e: &mut FlowCacheEntry,
    cfg: &Config,
) -> Option<u32> {
    // The tuple is compared as two words (the layout of `FlowKeyRaw`,
    // little-endian, padding zero); the slot is 8-byte aligned.
    let w = e as *const FlowCacheEntry as *const u64;
    // SAFETY: `ip` and `head` were bounds-checked by the caller; `w` points
    // at the first 16 bytes of the slot (its key).
    let (k0, k1, w0, w1) = unsafe {
        let proto = (*ip).proto;
        (
            (*ip).src as u64 | ((*ip).dst as u64) << 32,
            (*head).sport as u64 | ((*head).dport as u64) << 16 | (proto as u64) << 32,
            *w,
            *w.add(1),
        )
    };
    // Non-first fragments carry no ports: never ours to recognise.
    if w0 != k0
        || w1 != k1
        || e.ct_gen != cfg.ct_gen
        || unsafe { (*ip).frag_off } & IP_FRAG_MASK_BE != 0
        || unsafe { (*ip).ttl } <= 1
    {
        return None;
    }
    let proto = unsafe { (*ip).proto };
    let csum = if proto == PROTO_TCP {
        let tcp = ptr_at::<TcpHdr>(ctx, L4_OFF).ok()?;
        if unsafe { (*tcp).flags } & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
            return None;
        }
        unsafe { core::ptr::addr_of_mut!((*tcp).check) }
    } else {
        unsafe { core::ptr::addr_of_mut!((*head).w3) }
    };
    if unsafe { bpf_jiffies64() }.wrapping_sub(e.synced_jiffies) >= FLOW_CACHE_SYNC_JIFFIES {
        return None;
    }
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    // Counted in the slot only: the endpoint's counters get them at
    // write-back (`cache_fill`), one map update per slot instead of one
    // per packet.
    e.packets += 1;
    e.bytes += bytes;
    // SAFETY: `ip` and `head` were bounds-checked by the caller, `csum`
    // (in the TCP header, or `head`) above.
    unsafe {
        (*ip).ttl -= 1;
        (*ip).check = Delta::from_folded(e.ip_csum_delta).apply((*ip).check);
        (*ip).src = e.nat_src;
        (*ip).dst = e.nat_dst;
        let old = *csum;
        if !(proto == PROTO_UDP && old == 0) {
            let mut c = Delta::from_folded(e.l4_csum_delta).apply(old);
            if proto == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            *csum = c;
        }
        (*head).sport = e.nat_sport;
        (*head).dport = e.nat_dport;
    }
    let nh = Nexthop {
        ifindex: e.nh_ifindex,
        smac: e.nh_smac,
        dmac: e.nh_dmac,
    };
    Some(unsafe { emit(ctx, eth, &nh) })
}

/// After a packet took the conntrack path: write the counters the flow's
/// cache slot accumulated back into its conntrack entry `v`, then cache `v`
/// in the slot if the flow is established (TCP in `CT_EST`, or UDP), so its
/// next packets take the fast path. A slot held by another flow is taken
/// over after writing that flow's pending counters back to its own entry.
#[inline(always)]
unsafe fn cache_fill(
    e: &mut FlowCacheEntry,
    key: &FlowKeyRaw,
    v: &mut CtValue,
    cfg: &Config,
    jiffies: u64,
) {
    let ours = e.key == *key;
    let eligible = key.proto != PROTO_TCP || v.tcp_state == CT_EST;
    if !ours && !eligible {
        // Keep the slot for the flow that holds it.
        return;
    }
    if e.packets != 0 {
        if e.svc_id != u32::MAX {
            unsafe { bump_stats(e.svc_id, e.ep_idx, e.packets, e.bytes) };
        }
        if ours {
            v.packets += e.packets;
            v.bytes += e.bytes;
        } else if let Some(other) = CT.get_ptr_mut(&e.key) {
            // SAFETY: value pointer from a successful lookup.
            unsafe {
                (*other).packets += e.packets;
                (*other).bytes += e.bytes;
            }
        }
        // SAFETY: both fields are valid, aligned u64s of `e`.
        unsafe { zero_counts(e) };
    }
    if !eligible {
        // The flow left the established state: its packets go through
        // conntrack from now on.
        e.ct_gen = 0;
        return;
    }
    e.key = *key;
    e.ct_gen = cfg.ct_gen;
    e.svc_id = v.svc_id;
    e.nat_src = v.nat_src;
    e.nat_dst = v.nat_dst;
    e.nat_sport = v.nat_sport;
    e.nat_dport = v.nat_dport;
    e.nh_ifindex = v.nh_ifindex;
    // SAFETY: MAC fields at even offsets of both structs.
    unsafe {
        put_mac(&mut e.nh_smac, &v.nh_smac);
        put_mac(&mut e.nh_dmac, &v.nh_dmac);
    }
    e.ep_idx = v.ep_idx;
    // The TTL word (TTL, protocol) read natively drops by exactly one.
    e.ip_csum_delta = Delta::new()
        .u32(key.src, v.nat_src)
        .u32(key.dst, v.nat_dst)
        .u16(1, 0)
        .folded();
    e.l4_csum_delta = Delta::new()
        .u32(key.src, v.nat_src)
        .u32(key.dst, v.nat_dst)
        .u16(key.sport, v.nat_sport)
        .u16(key.dport, v.nat_dport)
        .folded();
    e.synced_jiffies = jiffies;
    // SAFETY: both fields are valid, aligned u64s of `e`.
    unsafe { zero_counts(e) };
}

/// Zero a slot's pending counters. Volatile: a plain pair of zero stores
/// becomes a call to a byte-wise `memset` on BPF.
#[inline(always)]
unsafe fn zero_counts(e: &mut FlowCacheEntry) {
    // SAFETY: both are valid, aligned u64 fields of `e`.
    unsafe {
        core::ptr::addr_of_mut!(e.packets).write_volatile(0);
        core::ptr::addr_of_mut!(e.bytes).write_volatile(0);
    }
}

/// Rewrite addresses and ports, decrement the TTL and patch both checksums.
/// A zero UDP checksum (none computed) stays zero.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rewrite(
    ip: *mut IpHdr,
    head: *mut L4Head,
    csum: *mut u16,
    proto: u8,
    nsrc: u32,
    ndst: u32,
    nsport: u16,
    ndport: u16,
) {
    unsafe {
        let addrs = Delta::new().u32((*ip).src, nsrc).u32((*ip).dst, ndst);
        let ttl_word = (ip as *mut u8).add(8) as *mut u16;
        let old_w = *ttl_word;
        (*ip).ttl -= 1;
        let new_w = *ttl_word;
        (*ip).check = addrs.u16(old_w, new_w).apply((*ip).check);
        (*ip).src = nsrc;
        (*ip).dst = ndst;

        let old = *csum;
        if !(proto == PROTO_UDP && old == 0) {
            let mut c = addrs
                .u16((*head).sport, nsport)
                .u16((*head).dport, ndport)
                .apply(old);
            if proto == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            *csum = c;
        }
        (*head).sport = nsport;
        (*head).dport = ndport;
    }
}

/// Pick an endpoint index for a new flow, or `None` when none is usable.
#[inline(always)]
unsafe fn select(
    svc: &ServiceValue,
    slot: u32,
    count: u32,
    maglev_len: u32,
    key: &FlowKeyRaw,
) -> Option<u32> {
    if count == 0 {
        return None;
    }
    let set = EPSETS.get_ptr(slot)?;
    let eps = unsafe { (*set).endpoints.as_ptr() };
    if svc.sel == SEL_RR {
        let ctr = RR.get_ptr_mut(svc.id)?;
        // The cursor stays below `count`, so no division is needed.
        let idx = unsafe {
            let mut c = *ctr;
            if c >= count {
                c = 0;
            }
            *ctr = c + 1;
            c
        };
        if idx < MAX_ENDPOINTS as u32 && unsafe { (*eps.add(idx as usize)).weight } != 0 {
            return Some(idx);
        }
        // A drained endpoint's turn: fall through to the weighted table,
        // which never holds drained endpoints (no loop for the verifier).
    }
    let h = match svc.sel {
        SEL_MAGLEV | SEL_RR => flow_hash(key),
        SEL_PERSIST => mix(key.src),
        SEL_PRIORITY => unsafe { bpf_get_prandom_u32() },
        _ => return None,
    };
    if maglev_len != MAGLEV_LEN {
        return None;
    }
    let pos = h % MAGLEV_LEN;
    // The verifier cannot bound a modulo lowered to multiplications: re-check
    // through a volatile read that the compiler cannot fold away.
    // SAFETY: reading a local.
    let pos = unsafe { core::ptr::read_volatile(&pos) };
    if pos >= MAGLEV_LEN {
        return None;
    }
    let table = MAGLEV.get_ptr(slot)?;
    let idx = unsafe { *(*table).entries.as_ptr().add(pos as usize) } as u32;
    if idx >= count || idx >= MAX_ENDPOINTS as u32 {
        return None;
    }
    Some(idx)
}

#[allow(clippy::too_many_arguments)]
unsafe fn new_flow(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *mut IpHdr,
    head: *mut L4Head,
    csum: *mut u16,
    cfg: &Config,
    key: &FlowKeyRaw,
    svc: &ServiceValue,
    tcp_flags: u8,
    bytes: u64,
    now: u64,
) -> Result<u32, ()> {
    let slot = svc.id.wrapping_mul(2).wrapping_add(svc.generation & 1);
    let Some(set) = EPSETS.get_ptr(slot) else {
        return Ok(drop_with(DROP_NO_ENDPOINT));
    };
    let (count, maglev_len) = unsafe { ((*set).count, (*set).maglev_len) };
    if count == 0 || count > MAX_ENDPOINTS as u32 {
        return Ok(drop_with(DROP_NO_ENDPOINT));
    }
    let Some(idx) = (unsafe { select(svc, slot, count, maglev_len, key) }) else {
        return Ok(drop_with(DROP_NO_ENDPOINT));
    };
    let ep: Endpoint = unsafe { *(*set).endpoints.as_ptr().add((idx & 63) as usize) };

    let state = if key.proto == PROTO_TCP && tcp_flags & TCP_SYN != 0 {
        CT_SYN
    } else {
        CT_EST
    };
    let mut reply_buf = core::mem::MaybeUninit::<CtValue>::uninit();
    let reply = unsafe { zero_in_place(reply_buf.as_mut_ptr()) };
    reply.nat_src = key.dst;
    reply.nat_dst = key.src;
    reply.nat_sport = key.dport;
    reply.nat_dport = key.sport;
    reply.svc_id = svc.id;
    reply.idle_timeout_s = svc.idle_timeout_s;
    reply.dir = DIR_REPLY;
    reply.tcp_state = state;
    reply.ep_idx = idx as u8;
    reply.last_seen_ns = now;
    // Claim a SNAT port: the reply tuple (endpoint -> snat_ip:port) must be
    // unique, so the first candidate whose reply entry can be created with
    // BPF_NOEXIST wins. The first candidate is a pure function of the client
    // tuple, so a flow re-created after eviction or failover gets the same port.
    let base = mix(flow_hash(key) ^ 0x5bd1_e995);
    let mut rkey = FlowKeyRaw {
        src: ep.ip,
        dst: svc.snat_ip,
        sport: ep.port,
        dport: 0,
        proto: key.proto,
        pad0: 0,
        pad1: 0,
    };
    let mut claimed = false;
    for i in 0..SNAT_PROBES {
        // Candidate 0 is a pure function of the flow; later ones rehash.
        let h = if i == 0 {
            base
        } else {
            mix(base.wrapping_add(i))
        };
        // A syncing pair splits the range (Config::snat_part); the
        // divisors stay constants.
        let port = match cfg.snat_part {
            1 => SNAT_PORT_MIN as u32 + h % SNAT_PART_LEN as u32,
            2 => {
                SNAT_PORT_MIN as u32
                    + SNAT_PART_LEN as u32
                    + h % (SNAT_RANGE - SNAT_PART_LEN as u32)
            }
            _ => SNAT_PORT_MIN as u32 + h % SNAT_RANGE,
        };
        rkey.dport = (port as u16).to_be();
        if CT.insert(&rkey, &*reply, BPF_NOEXIST as u64).is_ok() {
            claimed = true;
            break;
        }
    }
    if !claimed {
        return Ok(drop_with(DROP_PORT_EXHAUSTED));
    }
    let mut fwd_buf = core::mem::MaybeUninit::<CtValue>::uninit();
    let fwd = unsafe { zero_in_place(fwd_buf.as_mut_ptr()) };
    fwd.svc_id = svc.id;
    fwd.idle_timeout_s = svc.idle_timeout_s;
    fwd.tcp_state = state;
    fwd.ep_idx = idx as u8;
    fwd.last_seen_ns = now;
    fwd.nat_src = svc.snat_ip;
    fwd.nat_dst = ep.ip;
    fwd.nat_sport = rkey.dport;
    fwd.nat_dport = ep.port;
    fwd.dir = DIR_FORWARD;
    fwd.packets = 1;
    fwd.bytes = bytes;
    unsafe { bump_stats(svc.id, idx as u8, 1, bytes) };
    unsafe {
        rewrite(
            ip,
            head,
            csum,
            key.proto,
            fwd.nat_src,
            fwd.nat_dst,
            fwd.nat_sport,
            fwd.nat_dport,
        )
    };
    let nh = unsafe { fib(ctx, cfg, ip, now) };
    if let Ok(nh) = &nh {
        fwd.nh_ifindex = nh.ifindex;
        fwd.nh_smac = nh.smac;
        fwd.nh_dmac = nh.dmac;
        fwd.nh_ns = now;
    }
    if CT.insert(key, &*fwd, BPF_NOEXIST as u64).is_err() {
        // Another CPU created this flow concurrently: give our port back.
        let _ = CT.remove(&rkey);
        return Ok(drop_with(DROP_CT_INSERT));
    }
    if cfg.report_flows != 0 {
        report::entry(key, fwd);
    }
    match nh {
        Ok(nh) => Ok(unsafe { emit(ctx, eth, &nh) }),
        Err(action) => Ok(action),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
