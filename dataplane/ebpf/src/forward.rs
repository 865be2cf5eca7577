//! Next-hop resolution (per-destination cache, `bpf_fib_lookup`), neighbour
//! reports to the agent, and sending the frame out (XDP_TX / XDP_REDIRECT).

use super::*;

/// Zero `*p` with volatile u64 stores, in place: the compiler can neither
/// turn them into a call to `memset` (a byte loop on BPF) nor copy a known-
/// zero value around with one. Returns `p` as a reference.
///
/// # Safety
/// `p` must be valid for writes; `T` plain old data, size a multiple of 8,
/// 8-byte aligned.
#[inline(always)]
pub(crate) unsafe fn zero_in_place<'a, T>(p: *mut T) -> &'a mut T {
    let w = p as *mut u64;
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        // SAFETY: within `*p` per the function's contract.
        unsafe { w.add(i).write_volatile(0) };
        i += 1;
    }
    // SAFETY: every byte is initialised; all-zero is valid for plain old data.
    unsafe { &mut *p }
}

/// Next hop for the (already rewritten) packet: from the per-destination
/// cache when fresher than `cfg.nh_max_age_ns`, else from the FIB.
#[inline(always)]
pub(crate) unsafe fn fib(
    ctx: &XdpContext,
    cfg: &Config,
    ip: *const IpHdr,
    now: u64,
) -> Result<Nexthop, u32> {
    let dst = unsafe { (*ip).dst };
    if let Some(e) = NH_CACHE.get_ptr(&dst) {
        let e = unsafe { &*e };
        if e.ifindex != 0 && now.wrapping_sub(e.resolved_ns) < cfg.nh_max_age_ns {
            return Ok(Nexthop {
                ifindex: e.ifindex,
                smac: e.smac,
                dmac: e.dmac,
            });
        }
    }
    let nh = unsafe { fib_lookup(ctx, cfg, ip, now) }?;
    let entry = NhEntry {
        ifindex: nh.ifindex,
        smac: nh.smac,
        dmac: nh.dmac,
        resolved_ns: now,
    };
    let _ = NH_CACHE.insert(&dst, &entry, BPF_ANY as u64);
    Ok(nh)
}

/// FIB lookup for the (already rewritten) packet.
#[inline(always)]
pub(crate) unsafe fn fib_lookup(
    ctx: &XdpContext,
    cfg: &Config,
    ip: *const IpHdr,
    now: u64,
) -> Result<Nexthop, u32> {
    let mut buf = core::mem::MaybeUninit::<FibParams>::uninit();
    let p = unsafe { zero_in_place(buf.as_mut_ptr()) };
    p.family = AF_INET;
    unsafe {
        p.l4_protocol = (*ip).proto;
        p.__bindgen_anon_1.tot_len = u16::from_be((*ip).tot_len);
        p.__bindgen_anon_2.tos = (*ip).tos;
        p.__bindgen_anon_3.ipv4_src = (*ip).src;
        p.__bindgen_anon_4.ipv4_dst = (*ip).dst;
    }
    p.ifindex = if cfg.fib_ifindex != 0 {
        cfg.fib_ifindex
    } else {
        ctx.ingress_ifindex() as u32
    };
    let ret = unsafe { bpf_fib_lookup(ctx.as_ptr(), p, size_of::<FibParams>() as i32, 0) };
    if ret == FIB_RET_SUCCESS {
        return Ok(Nexthop {
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
        });
    }
    if ret == FIB_RET_NO_NEIGH {
        // SAFETY: the kernel wrote the next-hop address into ipv4_dst.
        let nexthop = unsafe { p.__bindgen_anon_4.ipv4_dst };
        report_neigh(nexthop, p.ifindex, now);
        return Err(drop_with(DROP_NO_NEIGH));
    }
    Err(drop_with(DROP_FIB))
}

/// Tell the agent about an unresolved next hop, at most once per interval.
#[inline(always)]
pub(crate) fn report_neigh(nexthop: u32, ifindex: u32, now: u64) {
    if let Some(t) = NEIGH_SEEN.get_ptr_mut(&nexthop) {
        // SAFETY: value pointer from a successful lookup.
        unsafe {
            if now.wrapping_sub(*t) < NEIGH_REPORT_INTERVAL_NS {
                return;
            }
            *t = now;
        }
    } else {
        let _ = NEIGH_SEEN.insert(&nexthop, &now, BPF_ANY as u64);
    }
    let _ = NEIGH_RB.output::<NeighEvent>(NeighEvent { nexthop, ifindex }, 0);
}

/// Copy a MAC address into the frame as three 16-bit stores. Left to
/// itself the compiler may emit a call to a byte-by-byte `memmove`, since
/// it cannot prove the two do not overlap.
///
/// # Safety
/// `dst` must be valid for writes and 2-byte aligned (as the fields of
/// `EthHdr` are); `src` is 2-byte aligned in every caller (a field of
/// `Nexthop` or a map value at an even offset).
#[inline(always)]
pub(crate) unsafe fn put_mac(dst: *mut [u8; 6], src: &[u8; 6]) {
    let d = dst as *mut u16;
    let s = src.as_ptr() as *const u16;
    // SAFETY: per the function's contract, both are 6 bytes, 2-byte aligned.
    unsafe {
        d.write_volatile(s.read());
        d.add(1).write_volatile(s.add(1).read());
        d.add(2).write_volatile(s.add(2).read());
    }
}

/// Set the MACs and send the frame out: XDP_TX on the ingress interface,
/// XDP_REDIRECT through the devmap (or directly) otherwise.
#[inline(always)]
pub(crate) unsafe fn emit(ctx: &XdpContext, eth: *mut EthHdr, nh: &Nexthop) -> u32 {
    unsafe {
        put_mac(core::ptr::addr_of_mut!((*eth).src), &nh.smac);
        put_mac(core::ptr::addr_of_mut!((*eth).dst), &nh.dmac);
    }
    if nh.ifindex == ctx.ingress_ifindex() as u32 {
        return xdp_action::XDP_TX;
    }
    match DEVMAP.redirect(nh.ifindex, 0) {
        Ok(action) => action,
        Err(_) => {
            let r = unsafe { bpf_redirect(nh.ifindex, 0) } as u32;
            if r == xdp_action::XDP_REDIRECT {
                r
            } else {
                drop_with(DROP_REDIRECT)
            }
        }
    }
}
