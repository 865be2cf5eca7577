//! Flow reports for connection sync: a new flow, or a TCP state change,
//! goes to the `FLB_FLOW_RB` ring buffer as a `FlowReport` at once, so the
//! sync thread learns of it within microseconds instead of polling the
//! table. A full ring buffer is counted in `FLB_FLOW_LOST`, never silent:
//! the sync thread answers it with a bulk resync.

use floatlb_common::{FlowKeyRaw, FlowReport};

use crate::maps::{FLOW_LOST, FLOW_RB};

/// Reports the flow whose client tuple is `key`, with its forward rewrite
/// and TCP state.
#[inline(always)]
pub(crate) fn flow(
    key: &FlowKeyRaw,
    nat_src: u32,
    nat_dst: u32,
    nat_sport: u16,
    nat_dport: u16,
    state: u8,
) {
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
