//! Datapath figures for metrics, read off the owner's thread.
//!
//! A [`StatsReader`] opens its own descriptors of the pinned maps (as a
//! [`crate::ConntrackSweeper`] does), so a metrics scrape reads counters on
//! whatever thread serves it while the agent's owner keeps programming
//! services. It reads only the slots of each service's live endpoints (one
//! per-CPU lookup per endpoint), not all `MAX_ENDPOINTS` slots.
//!
//! Flows per service and per endpoint, and the conntrack entry count, come
//! from a [`CtCensus`] that every conntrack sweep takes as a by-product of
//! the walk it makes anyway: counting a million-entry table on each scrape
//! would cost seconds. The census is as old as the last sweep (the agent
//! sweeps every `--ct-expiry-secs`); `at_ns` says when it was taken.

use std::{
    collections::HashMap as StdHashMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues};
use floatlb_common::{Counter, EndpointSet, MAX_ENDPOINTS, ServiceKey, ServiceValue};

use crate::{
    Dataplane, DataplaneError, M_DROPS, M_EP_STATS, M_EPSETS, M_FLOWS, M_SERVICES,
    services::drops_from,
    spec::{self, DropCounters, PacketCount, ServiceKeySpec},
};

/// Flows counted by the last conntrack sweep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CtCensus {
    /// Conntrack entries left after the sweep (two per established flow).
    pub entries: u64,
    /// When the census was taken (CLOCK_MONOTONIC ns; 0: never).
    pub at_ns: u64,
    /// Flows by (service slot, endpoint address, endpoint port).
    pub flows: StdHashMap<(u32, Ipv4Addr, u16), u64>,
}

/// The census shared by the datapath, its sweepers and its readers.
pub(crate) type Census = Arc<Mutex<CtCensus>>;

/// One endpoint's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStats {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub traffic: PacketCount,
    /// Flows to it at the last census.
    pub flows: u64,
}

/// One service's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStats {
    pub key: ServiceKeySpec,
    /// The live endpoints, in set order.
    pub endpoints: Vec<EndpointStats>,
}

/// Everything a scrape reports about the datapath.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathStats {
    pub services: Vec<ServiceStats>,
    pub drops: DropCounters,
    /// Conntrack entries at the last census (`None`: no sweep yet).
    pub ct_entries: Option<u64>,
    /// Capacity of the conntrack map, in entries.
    pub ct_capacity: u64,
}

/// Reads [`DatapathStats`] through its own map descriptors.
pub struct StatsReader {
    services: Map,
    epsets: Map,
    ep_stats: Map,
    /// The flow caches: counts served there and not yet written back.
    flows: Map,
    drops: Map,
    census: Census,
    ct_capacity: u64,
}

impl std::fmt::Debug for StatsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsReader").finish_non_exhaustive()
    }
}

impl Dataplane {
    /// A reader of the counters for another thread (see the module docs).
    pub fn stats_reader(&self) -> Result<StatsReader, DataplaneError> {
        let open = |name: &'static str| {
            MapData::from_pin(self.opts.pin_dir.join("maps").join(name))
                .and_then(Map::from_map_data)
                .map_err(DataplaneError::map(name))
        };
        Ok(StatsReader {
            services: open(M_SERVICES)?,
            epsets: open(M_EPSETS)?,
            ep_stats: open(M_EP_STATS)?,
            flows: open(M_FLOWS)?,
            drops: open(M_DROPS)?,
            census: self.census.clone(),
            ct_capacity: u64::from(self.opts.max_conntrack),
        })
    }
}

fn sum(vals: PerCpuValues<Counter>) -> PacketCount {
    vals.iter()
        .fold(PacketCount::default(), |a, c| PacketCount {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
        })
}

impl StatsReader {
    /// Reads every service's live endpoints, the drops and the census.
    pub fn read(&mut self) -> Result<DatapathStats, DataplaneError> {
        let census = self
            .census
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let svcs: HashMap<&MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(&self.services).map_err(DataplaneError::map(M_SERVICES))?;
        let sets: Array<&MapData, EndpointSet> =
            Array::try_from(&self.epsets).map_err(DataplaneError::map(M_EPSETS))?;
        let stats: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(&self.ep_stats).map_err(DataplaneError::map(M_EP_STATS))?;
        let pending = crate::conntrack::pending_endpoint_counts(&self.flows)?;
        let mut services = Vec::new();
        for kv in svcs.iter() {
            let (k, v) = match kv {
                Ok(kv) => kv,
                // Removed between get_next_key and lookup.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(DataplaneError::map(M_SERVICES)(e)),
            };
            let set = sets
                .get(&(v.id * 2 + (v.generation & 1)), 0)
                .map_err(DataplaneError::map(M_EPSETS))?;
            let mut endpoints = Vec::new();
            for (i, ep) in spec::endpoints_from_set(&set).into_iter().enumerate() {
                let slot = v.id * MAX_ENDPOINTS as u32 + i as u32;
                let (p, b) = pending.get(&slot).copied().unwrap_or_default();
                let traffic = stats
                    .get(&slot, 0)
                    .map(sum)
                    .map(|c| PacketCount {
                        packets: c.packets + p,
                        bytes: c.bytes + b,
                    })
                    .map_err(DataplaneError::map(M_EP_STATS))?;
                let flows = census
                    .flows
                    .get(&(v.id, ep.ip, ep.port))
                    .copied()
                    .unwrap_or(0);
                endpoints.push(EndpointStats {
                    ip: ep.ip,
                    port: ep.port,
                    traffic,
                    flows,
                });
            }
            services.push(ServiceStats {
                key: ServiceKeySpec::from_raw(&k),
                endpoints,
            });
        }
        services.sort_by_key(|s| s.key);
        Ok(DatapathStats {
            services,
            drops: drops_from(&self.drops)?,
            ct_entries: (census.at_ns != 0).then_some(census.entries),
            ct_capacity: self.ct_capacity,
        })
    }
}
