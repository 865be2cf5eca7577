//! Per-interface state the program needs besides the maps of services and
//! flows: the ingress interface's own MAC (`FLB_IFMAC`), and a pass-all XDP
//! program for veth peers.
//!
//! **Destination-MAC check.** A switch floods unknown unicast over a shared
//! L2 segment, so an interface also sees frames addressed to other hosts'
//! MACs; two load balancers on one segment would both forward such a frame.
//! `attach` records the interface's MAC in `FLB_IFMAC[ifindex % IFMAC_SLOTS]`
//! (an array, so the per-packet lookup costs a few inlined instructions; the
//! slot also holds the ifindex, and two attached interfaces whose indexes
//! share a slot are refused with an error); the program then acts only on
//! frames unicast to that MAC and passes everything else untouched (the
//! stack drops foreign unicast as PACKET_OTHERHOST). An interface without an
//! entry is not checked, which keeps BPF_PROG_TEST_RUN
//! without `attach` and interfaces attached by an older agent working as
//! before. The MAC is read when attaching (through getifaddrs, i.e. netlink,
//! in the calling thread's network namespace); after changing an interface's
//! MAC, attach again.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{Xdp, xdp::XdpMode},
};
use floatlb_common::{IFMAC_SLOTS, IfaceMac};

use crate::{
    DataplaneError, M_IFMAC, M_NEIGH_RB, MAP_NAMES, PROG_PASS, XDP_OBJECT, attach_err, load_err,
};

/// The unicast Ethernet MAC of `iface` in the calling thread's network
/// namespace; None for an interface without one (loopback, tunnels).
pub(crate) fn read_mac(iface: &str) -> Result<Option<[u8; 6]>, DataplaneError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| attach_err(iface, e))?;
    let mac = addrs
        .filter(|a| a.interface_name == iface)
        .filter_map(|a| a.address?.as_link_addr()?.addr())
        .next();
    // All-zero (loopback) or multicast-bit addresses are no unicast MAC.
    Ok(mac.filter(|m| *m != [0; 6] && m[0] & 1 == 0))
}

impl crate::Dataplane {
    /// Record (Some) or forget (None) the MAC of the interface `ifindex`:
    /// with an entry, the program acts only on frames unicast to `mac` on
    /// that interface. `attach`/`detach` call this; tests call it directly
    /// to exercise the check with BPF_PROG_TEST_RUN.
    pub fn set_interface_mac(
        &mut self,
        ifindex: u32,
        mac: Option<[u8; 6]>,
    ) -> Result<(), DataplaneError> {
        let slot = ifindex % IFMAC_SLOTS;
        let mut m: Array<&mut MapData, IfaceMac> =
            Array::try_from(self.map_mut(M_IFMAC)?).map_err(DataplaneError::map(M_IFMAC))?;
        let cur = m.get(&slot, 0).map_err(DataplaneError::map(M_IFMAC))?;
        let value = match mac {
            Some(mac) => {
                if cur.ifindex != 0 && cur.ifindex != ifindex {
                    return Err(DataplaneError::invalid(
                        "interface ifindex",
                        format!(
                            "{ifindex} (MAC-check slot {slot} holds ifindex {})",
                            cur.ifindex
                        ),
                        "shares its MAC-check slot with an attached interface; detach that one first",
                    ));
                }
                IfaceMac {
                    ifindex,
                    mac,
                    pad: [0; 2],
                }
            }
            None if cur.ifindex == ifindex => IfaceMac::default(),
            None => return Ok(()),
        };
        m.set(slot, value, 0).map_err(DataplaneError::map(M_IFMAC))
    }

    /// The MAC recorded for `ifindex`, if any.
    pub fn interface_mac(&self, ifindex: u32) -> Result<Option<[u8; 6]>, DataplaneError> {
        let m: Array<&MapData, IfaceMac> =
            Array::try_from(self.map_ref(M_IFMAC)?).map_err(DataplaneError::map(M_IFMAC))?;
        let v = m
            .get(&(ifindex % IFMAC_SLOTS), 0)
            .map_err(DataplaneError::map(M_IFMAC))?;
        Ok((v.ifindex == ifindex && v.ifindex != 0).then_some(v.mac))
    }

    /// Reads `iface`'s MAC and records it for `ifindex` (no entry, so no
    /// check, when it has no unicast Ethernet MAC).
    pub(crate) fn record_interface_mac(
        &mut self,
        iface: &str,
        ifindex: u32,
    ) -> Result<(), DataplaneError> {
        let mac = read_mac(iface)?;
        if mac.is_none() {
            tracing::info!(
                iface,
                "no unicast MAC, destination-MAC check off on this interface"
            );
        }
        self.set_interface_mac(ifindex, mac)
    }
}

/// A pass-all XDP program attached in native mode to one interface; detached
/// when dropped (or when the interface goes away).
pub struct XdpPass {
    _ebpf: Ebpf,
}

impl std::fmt::Debug for XdpPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPass").finish_non_exhaustive()
    }
}

/// Attach the program that returns XDP_PASS to `iface` (in the calling
/// thread's network namespace) in native mode. A veth only delivers frames
/// its peer sends with XDP_TX/XDP_REDIRECT when it runs NAPI, which an XDP
/// program turns on: attach this to the peer of a veth the load balancer
/// runs on. Its maps are created at the smallest size and never pinned.
pub fn attach_xdp_pass(iface: &str) -> Result<XdpPass, DataplaneError> {
    let mut loader = EbpfLoader::new();
    for name in MAP_NAMES {
        if name != M_NEIGH_RB {
            loader.map_max_entries(name, 1);
        }
    }
    let mut ebpf = loader.load(XDP_OBJECT).map_err(load_err)?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_PASS)
        .ok_or_else(|| load_err(format!("program {PROG_PASS} missing from the object")))?
        .try_into()
        .map_err(load_err)?;
    prog.load()
        .map_err(|e| load_err(format!("{PROG_PASS}: {e}")))?;
    prog.attach(iface, XdpMode::Driver)
        .map_err(|e| attach_err(iface, format!("native XDP_PASS program: {e}")))?;
    tracing::debug!(iface, "XDP_PASS program attached");
    Ok(XdpPass { _ebpf: ebpf })
}
