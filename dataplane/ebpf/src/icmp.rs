//! ICMP: echo replies for VIPs and translation of errors about tracked flows.

use super::*;

/// ICMP: answer echo requests to a VIP; translate errors about tracked flows.
pub(crate) unsafe fn icmp(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *mut IpHdr,
    cfg: &Config,
) -> Result<u32, ()> {
    let icmp = ptr_at::<IcmpHdr>(ctx, L4_OFF)?;
    let ty = unsafe { (*icmp).ty };
    if ty == 8 {
        let dst = unsafe { (*ip).dst };
        if unsafe { VIPS.get(&dst) }.is_none() {
            return Ok(xdp_action::XDP_PASS);
        }
        unsafe {
            // Echo reply: swap addresses (IP checksum unchanged), type 8 -> 0.
            let src = (*ip).src;
            (*ip).src = dst;
            (*ip).dst = src;
            let word = icmp as *mut u16;
            let old = *word;
            (*icmp).ty = 0;
            (*icmp).check = Delta::new().u16(old, *word).apply((*icmp).check);
            let mac = (*eth).dst;
            (*eth).dst = (*eth).src;
            (*eth).src = mac;
        }
        return Ok(xdp_action::XDP_TX);
    }
    if ty != 3 && ty != 11 {
        return Ok(xdp_action::XDP_PASS);
    }
    // Quoted packet: IPv4 header (no options) and the first 8 L4 bytes.
    const INNER_IP: usize = L4_OFF + 8;
    const INNER_L4: usize = INNER_IP + IP_HLEN;
    let inner = ptr_at::<IpHdr>(ctx, INNER_IP)?;
    let ihead = ptr_at::<L4Head>(ctx, INNER_L4)?;
    let iproto = unsafe { (*inner).proto };
    if unsafe { (*inner).vihl } != 0x45 || (iproto != PROTO_TCP && iproto != PROTO_UDP) {
        return Ok(xdp_action::XDP_PASS);
    }
    // The quoted packet is one we emitted; the entry for its reverse tuple
    // maps that reverse tuple back to the reverse of the original packet.
    let rkey = FlowKeyRaw {
        src: unsafe { (*inner).dst },
        dst: unsafe { (*inner).src },
        sport: unsafe { (*ihead).dport },
        dport: unsafe { (*ihead).sport },
        proto: iproto,
        pad0: 0,
        pad1: 0,
    };
    let Some(ct) = CT.get_ptr(&rkey) else {
        return Ok(xdp_action::XDP_PASS);
    };
    let v = unsafe { *ct };
    if unsafe { (*ip).ttl } <= 1 {
        return Ok(drop_with(DROP_TTL));
    }
    // Original packet: src = nat_dst:nat_dport, dst = nat_src:nat_sport.
    unsafe {
        let mut icmp_delta = Delta::new();
        let inner_addrs = Delta::new()
            .u32((*inner).src, v.nat_dst)
            .u32((*inner).dst, v.nat_src);
        let old_icheck = (*inner).check;
        let new_icheck = inner_addrs.apply(old_icheck);
        icmp_delta = icmp_delta
            .u32((*inner).src, v.nat_dst)
            .u32((*inner).dst, v.nat_src)
            .u16(old_icheck, new_icheck)
            .u16((*ihead).sport, v.nat_dport)
            .u16((*ihead).dport, v.nat_sport);
        // The quoted L4 checksum, when present, covers the pseudo header.
        let l4_delta = inner_addrs
            .u16((*ihead).sport, v.nat_dport)
            .u16((*ihead).dport, v.nat_sport);
        let qcsum: Option<*mut u16> = if iproto == PROTO_UDP {
            Some(core::ptr::addr_of_mut!((*ihead).w3))
        } else {
            ptr_at::<TcpHdr>(ctx, INNER_L4)
                .ok()
                .map(|t| core::ptr::addr_of_mut!((*t).check))
        };
        if let Some(q) = qcsum {
            let old = *q;
            if !(iproto == PROTO_UDP && old == 0) {
                let mut c = l4_delta.apply(old);
                if iproto == PROTO_UDP && c == 0 {
                    c = 0xffff;
                }
                icmp_delta = icmp_delta.u16(old, c);
                *q = c;
            }
        }
        (*inner).src = v.nat_dst;
        (*inner).dst = v.nat_src;
        (*inner).check = new_icheck;
        (*ihead).sport = v.nat_dport;
        (*ihead).dport = v.nat_sport;
        (*icmp).check = icmp_delta.apply((*icmp).check);

        // Outer header: from the VIP (or SNAT address) to the original sender.
        let outer = Delta::new()
            .u32((*ip).src, v.nat_src)
            .u32((*ip).dst, v.nat_dst);
        let ttl_word = (ip as *mut u8).add(8) as *mut u16;
        let old_w = *ttl_word;
        (*ip).ttl -= 1;
        (*ip).check = outer.u16(old_w, *ttl_word).apply((*ip).check);
        (*ip).src = v.nat_src;
        (*ip).dst = v.nat_dst;
    }
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    match unsafe { fib(ctx, cfg, ip, now) } {
        Ok(nh) => Ok(unsafe { emit(ctx, eth, &nh) }),
        Err(action) => Ok(action),
    }
}
