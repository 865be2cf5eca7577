//! Flow reports for connection sync: a new flow, or a TCP state change,
//! goes to the `FLB_FLOW_RB` ring buffer as a `FlowReport` at once, so the
//! sync thread learns of it within microseconds instead of polling the
//! table. A full ring buffer is counted in `FLB_FLOW_LOST`, never silent:
//! the sync thread answers it with a bulk resync.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use floatlb_common::{CtValue, DIR_FORWARD, FlowKeyRaw, FlowReport};

use crate::maps::{CT, FLOW_LOST, FLOW_RB};
use crate::packet::{IpHdr, L4_OFF, L4Head, PROTO_TCP, PROTO_UDP, ptr_at};

/// A passive node of a syncing pair (BACKUP, `Config::report_flows` set)
/// drops the packets of flows its conntrack holds instead of passing them
/// to its stack: they belong to the MASTER (a client whose ARP cache still
/// points here during a handover, an endpoint's reply), and the stack,
/// which may still hold the VIP for a moment, would answer them with a TCP
/// reset. The client retransmits to the new MASTER. Everything else passes.
#[inline(always)]
pub(crate) fn passive(ctx: &XdpContext, ip: *const IpHdr) -> Result<u32, ()> {
    // SAFETY: `ip` was bounds-checked by the caller.
    let (proto, src, dst) = unsafe { ((*ip).proto, (*ip).src, (*ip).dst) };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Ok(xdp_action::XDP_PASS);
    }
    let head = ptr_at::<L4Head>(ctx, L4_OFF)?;
    // SAFETY: `head` was bounds-checked by `ptr_at`.
    let key = FlowKeyRaw {
        src,
        dst,
        sport: unsafe { (*head).sport },
        dport: unsafe { (*head).dport },
        proto,
        pad0: 0,
        pad1: 0,
    };
    // SAFETY: a lookup; the value is not used.
    if unsafe { CT.get(&key) }.is_some() {
        return Ok(xdp_action::XDP_DROP);
    }
    Ok(xdp_action::XDP_PASS)
}

/// Reports the flow of conntrack entry (`key`, `v`), either direction:
/// the client's tuple, the forward rewrite and the state.
#[inline(always)]
pub(crate) fn entry(key: &FlowKeyRaw, v: &CtValue) {
    if v.dir == DIR_FORWARD {
        flow(
            key,
            v.nat_src,
            v.nat_dst,
            v.nat_sport,
            v.nat_dport,
            v.tcp_state,
        );
    } else {
        // A reply entry's key is the endpoint's tuple: the client's tuple is
        // its rewrite, and the forward rewrite is its key reversed.
        let client = v.peer_key(key.proto);
        flow(&client, key.dst, key.src, key.dport, key.sport, v.tcp_state);
    }
}

/// Reports the flow whose client tuple is `key`, with its forward rewrite
/// and TCP state.
#[inline(always)]
fn flow(key: &FlowKeyRaw, nat_src: u32, nat_dst: u32, nat_sport: u16, nat_dport: u16, state: u8) {
    let ev = FlowReport {
        key: *key,
        nat_src,
        nat_dst,
        nat_sport,
        nat_dport,
        tcp_state: state,
        pad: [0; 3],
    };
    if FLOW_RB.output::<FlowReport>(&ev, 0).is_err()
        && let Some(c) = FLOW_LOST.get_ptr_mut(0)
    {
        // SAFETY: per-CPU array slot returned by a successful lookup.
        unsafe { *c += 1 };
    }
}
