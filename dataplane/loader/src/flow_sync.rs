//! The datapath side of connection sync (docs/SYNC.md): turning flow
//! reports on, splitting the SNAT range between the two nodes, reading the
//! reports from the `FLB_FLOW_RB` ring buffer, and dumping and installing
//! flows from another thread through map handles of its own.
//!
//! The XDP program writes a `FlowReport` when it creates a flow and when a
//! flow's TCP state changes, so the sync thread learns of it at once (no
//! table poll). A report that does not fit is counted in `FLB_FLOW_LOST`;
//! [`FlowReportReader::lost`] sums it so the sync thread can resync.

use std::os::fd::AsFd;
use std::time::Duration;

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use floatlb_common::{CT_CLOSED, Config, FlowReport};

use crate::conntrack::{
    check_record, delete_pair, insert_pair, lookup_service, pair_entries, records,
};
use crate::spec::{self, CtRecord, FlowKey, TcpState};
use crate::{
    Dataplane, DataplaneError, M_CONFIG, M_CT, M_FLOW_LOST, M_FLOW_RB, M_SERVICES, bump_gen,
    modify_config_map,
};

fn open_pinned(pin_dir: &std::path::Path, name: &'static str) -> Result<Map, DataplaneError> {
    MapData::from_pin(pin_dir.join("maps").join(name))
        .and_then(Map::from_map_data)
        .map_err(DataplaneError::map(name))
}

impl Dataplane {
    /// Turns flow reports on or off and picks this node's SNAT ports:
    /// `snat_part` 0 the whole range, 1 the lower half (node 0 of a syncing
    /// pair), 2 the upper half (node 1).
    pub fn set_flow_sync(&mut self, report: bool, snat_part: u8) -> Result<(), DataplaneError> {
        if snat_part > 2 {
            return Err(DataplaneError::invalid(
                "snat_part",
                snat_part,
                "must be 0 (whole range), 1 or 2",
            ));
        }
        self.modify_config(|c: &mut Config| {
            c.report_flows = u8::from(report);
            c.snat_part = snat_part;
        })
    }

    /// A handle that dumps and installs flows from another thread.
    pub fn flow_sync_table(&self) -> Result<FlowSyncTable, DataplaneError> {
        let dir = &self.opts.pin_dir;
        Ok(FlowSyncTable {
            ct: open_pinned(dir, M_CT)?,
            services: open_pinned(dir, M_SERVICES)?,
            config: open_pinned(dir, M_CONFIG)?,
            config_lock: self.config_lock.clone(),
        })
    }

    /// The reader of the flow reports (one per datapath: a ring buffer
    /// has one consumer).
    pub fn flow_reports(&self) -> Result<FlowReportReader, DataplaneError> {
        let dir = &self.opts.pin_dir;
        let rb = RingBuf::try_from(open_pinned(dir, M_FLOW_RB)?)
            .map_err(DataplaneError::map(M_FLOW_RB))?;
        Ok(FlowReportReader {
            rb,
            lost: open_pinned(dir, M_FLOW_LOST)?,
        })
    }
}

/// Dumps and installs flows through its own descriptors of the pinned maps
/// (made by [`Dataplane::flow_sync_table`]).
pub struct FlowSyncTable {
    ct: Map,
    services: Map,
    config: Map,
    config_lock: std::sync::Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for FlowSyncTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowSyncTable").finish_non_exhaustive()
    }
}

impl FlowSyncTable {
    /// Every flow, one record each.
    pub fn dump(&self) -> Result<Vec<CtRecord>, DataplaneError> {
        records(&self.ct)
    }

    /// Installs (or replaces) flows, then bumps the flow-cache generation
    /// once so no CPU keeps serving an older rewrite. Each record is
    /// checked first; a bad one fails the call before anything is written.
    pub fn insert(&mut self, recs: &[CtRecord]) -> Result<(), DataplaneError> {
        // One service lookup per (VIP, port, protocol) of the batch: a
        // resync is mostly a few services' flows.
        let mut by_service = std::collections::HashMap::new();
        let svcs = recs
            .iter()
            .map(|r| {
                check_record(r)?;
                let c = &r.client;
                match by_service.get(&(c.dst, c.dport, c.proto)) {
                    Some(v) => Ok(*v),
                    None => {
                        let v = lookup_service(&self.services, r)?;
                        by_service.insert((c.dst, c.dport, c.proto), v);
                        Ok(v)
                    }
                }
            })
            .collect::<Result<Vec<_>, DataplaneError>>()?;
        // Both entries of every flow in one batch write (reply entries
        // first within each pair); element by element where the kernel
        // has no batch command.
        let entries: Vec<_> = recs
            .iter()
            .zip(&svcs)
            .flat_map(|(r, svc)| pair_entries(r, *svc))
            .collect();
        match crate::batch::update(&self.ct, &entries) {
            Ok(()) => {}
            Err(crate::batch::BatchError::Failed(e)) => return Err(e),
            Err(crate::batch::BatchError::Unsupported) => {
                for (r, svc) in recs.iter().zip(svcs) {
                    insert_pair(&mut self.ct, r, svc)?;
                }
            }
        }
        if !recs.is_empty() {
            modify_config_map(&self.config_lock, &mut self.config, bump_gen)?;
        }
        Ok(())
    }

    /// Deletes flows given their client tuples.
    pub fn delete(&mut self, keys: &[FlowKey]) -> Result<(), DataplaneError> {
        let mut any = false;
        for k in keys {
            any |= delete_pair(&mut self.ct, k)?;
        }
        if any {
            modify_config_map(&self.config_lock, &mut self.config, bump_gen)?;
        }
        Ok(())
    }
}

/// Reads `FLB_FLOW_RB` (made by [`Dataplane::flow_reports`]).
pub struct FlowReportReader {
    rb: RingBuf<MapData>,
    lost: Map,
}

impl std::fmt::Debug for FlowReportReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowReportReader").finish_non_exhaustive()
    }
}

/// One report as a record: the flow's client tuple, rewrite and state
/// (counters zero, `last_seen_ns` the time it was read).
fn to_record(r: &FlowReport, now_ns: u64) -> CtRecord {
    CtRecord {
        client: FlowKey::from_raw(&r.key),
        nat_src: (spec::ip_from_raw(r.nat_src), u16::from_be(r.nat_sport)),
        nat_dst: (spec::ip_from_raw(r.nat_dst), u16::from_be(r.nat_dport)),
        tcp_state: TcpState::from_raw(r.tcp_state.min(CT_CLOSED)),
        packets: 0,
        bytes: 0,
        last_seen_ns: now_ns,
    }
}

impl FlowReportReader {
    /// Waits up to `timeout` for reports and returns every one queued.
    pub fn wait(&mut self, timeout: Duration) -> Vec<CtRecord> {
        let mut out = self.drain();
        if out.is_empty() {
            let fd = self.rb.as_fd();
            let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
            out = self.drain();
        }
        out
    }

    fn drain(&mut self) -> Vec<CtRecord> {
        let now = crate::monotonic_ns();
        let mut out = Vec::new();
        while let Some(item) = self.rb.next() {
            if item.len() >= std::mem::size_of::<FlowReport>() {
                // SAFETY: the item holds at least a FlowReport's bytes,
                // written by the program as a FlowReport (Pod, any bit
                // pattern valid); read unaligned.
                let r: FlowReport =
                    unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowReport>()) };
                out.push(to_record(&r, now));
            }
        }
        out
    }

    /// Reports that did not fit in the ring buffer, since it was created.
    pub fn lost(&self) -> u64 {
        PerCpuArray::<&MapData, u64>::try_from(&self.lost)
            .and_then(|a| a.get(&0, 0))
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

/// Every flow of the datapath pinned under `pin_dir`, read through the
/// pinned conntrack map (tools and tests, e.g. to see what a BACKUP holds).
pub fn pinned_conntrack_dump(pin_dir: &std::path::Path) -> Result<Vec<CtRecord>, DataplaneError> {
    records(&open_pinned(pin_dir, M_CT)?)
}
