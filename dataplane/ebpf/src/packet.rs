//! Wire formats, constants and bounds-checked packet access.
//!
//! IPv4 header (RFC 791, section 3.1); only IHL = 5 (no options) is handled,
//! anything else is passed to the stack:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------+-------+---------------+-------------------------------+
//! |Version|  IHL  |Type of Service|          Total Length         |
//! +-------+-------+---------------+-----+-------------------------+
//! |         Identification        |Flags|      Fragment Offset    |
//! +---------------+---------------+-----+-------------------------+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +---------------+---------------+-------------------------------+
//! |                       Source Address                          |
//! +---------------------------------------------------------------+
//! |                    Destination Address                        |
//! +---------------------------------------------------------------+
//! ```
//!
//! TTL and Protocol share one 16-bit checksum word, which is how the TTL
//! decrement is folded into the incremental checksum update.

use super::*;

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const IP_HLEN: usize = 20;
pub(crate) const L4_OFF: usize = ETH_HLEN + IP_HLEN;
/// 0x0800 as read natively from the wire on a little-endian target.
pub(crate) const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;
/// Fragment offset mask and more-fragments flag, wire order.
pub(crate) const IP_FRAG_MASK_BE: u16 = 0x3fffu16.to_be();
pub(crate) const AF_INET: u8 = 2;
pub(crate) const FIB_RET_SUCCESS: i64 = 0;
pub(crate) const FIB_RET_NO_NEIGH: i64 = 7;
/// At most one ring-buffer report per next hop per this many nanoseconds.
pub(crate) const NEIGH_REPORT_INTERVAL_NS: u64 = 100_000_000;
pub(crate) const SNAT_RANGE: u32 = (SNAT_PORT_MAX - SNAT_PORT_MIN) as u32 + 1;

#[repr(C)]
pub(crate) struct EthHdr {
    pub(crate) dst: [u8; 6],
    pub(crate) src: [u8; 6],
    pub(crate) proto: u16,
}

#[repr(C)]
pub(crate) struct IpHdr {
    pub(crate) vihl: u8,
    pub(crate) tos: u8,
    pub(crate) tot_len: u16,
    pub(crate) id: u16,
    pub(crate) frag_off: u16,
    pub(crate) ttl: u8,
    pub(crate) proto: u8,
    pub(crate) check: u16,
    pub(crate) src: u32,
    pub(crate) dst: u32,
}

/// The first 8 bytes of TCP and UDP: ports, then (UDP) length and checksum.
#[repr(C)]
pub(crate) struct L4Head {
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) w2: u16,
    pub(crate) w3: u16,
}

#[repr(C)]
pub(crate) struct TcpHdr {
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) doff: u8,
    pub(crate) flags: u8,
    pub(crate) win: u16,
    pub(crate) check: u16,
    pub(crate) urg: u16,
}

#[repr(C)]
pub(crate) struct IcmpHdr {
    pub(crate) ty: u8,
    pub(crate) code: u8,
    pub(crate) check: u16,
    pub(crate) rest: u32,
}

pub(crate) struct Nexthop {
    pub(crate) ifindex: u32,
    pub(crate) smac: [u8; 6],
    pub(crate) dmac: [u8; 6],
}

/// Pointer to a `T` at `off` bytes into the packet, if it fits.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + off) as *mut T)
}

#[inline(always)]
pub(crate) fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

#[inline(always)]
pub(crate) fn flow_hash(k: &FlowKeyRaw) -> u32 {
    mix(k.src ^ mix(k.dst ^ mix(((k.sport as u32) << 16 | k.dport as u32) ^ k.proto as u32)))
}

/// Slot of a tuple in the per-CPU flow cache: one multiplicative hash (the
/// top bits of a golden-ratio product), cheap enough for every packet. The
/// destination is rotated so a flow's two directions land apart.
#[inline(always)]
pub(crate) fn cache_slot_of(src: u32, dst: u32, sport: u16, dport: u16) -> u32 {
    let x = src ^ dst.rotate_left(16) ^ ((sport as u32) << 16 | dport as u32);
    x.wrapping_mul(0x9e37_79b1) >> (32 - FLOW_CACHE_SLOTS.trailing_zeros())
}
