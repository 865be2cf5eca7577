//! Service programming: add, update (atomic endpoint-set swap), remove,
//! list, full sync, and counters.

use std::collections::{BTreeSet, HashSet};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use floatlb_common::{
    Counter, DROP_REASONS, EndpointSet, MAGLEV_CAPACITY, MAX_ENDPOINTS, MaglevTable, ServiceKey,
    ServiceValue,
};

use crate::{
    Dataplane, DataplaneError, M_DROPS, M_EP_STATS, M_EPSETS, M_FLOWS, M_MAGLEV, M_RR, M_SERVICES,
    M_VIPS, PROTO_UDP,
    conntrack::RetiredEndpoint,
    maglev,
    spec::{
        self, Counters, DropCounters, PacketCount, ServiceCounters, ServiceKeySpec, ServiceSpec,
    },
};

/// Maglev table length used for every service: the smallest prime >= 100 x 64.
/// It satisfies the >= 100 x endpoints bound for any endpoint count and stays
/// the same when endpoints come and go, which is what keeps Maglev's minimal
/// disruption across updates.
pub fn service_table_len() -> u32 {
    floatlb_common::MAGLEV_LEN
}

fn zero_percpu<V: aya::Pod + Default>() -> Result<PerCpuValues<V>, DataplaneError> {
    let n = nr_cpus().map_err(|(_, e)| DataplaneError::Load(format!("nr_cpus: {e}")))?;
    PerCpuValues::try_from(vec![V::default(); n]).map_err(|e| DataplaneError::Load(e.to_string()))
}

impl Dataplane {
    /// The service ids in use and the number of services per VIP, read
    /// from the (possibly pinned) service map.
    pub(crate) fn load_used_ids(
        &self,
    ) -> Result<(BTreeSet<u32>, std::collections::HashMap<u32, u32>), DataplaneError> {
        let m: HashMap<&MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.map_ref(M_SERVICES)?)
                .map_err(DataplaneError::map(M_SERVICES))?;
        let mut ids = BTreeSet::new();
        let mut vips = std::collections::HashMap::new();
        for kv in m.iter() {
            let (k, v) = kv.map_err(DataplaneError::map(M_SERVICES))?;
            ids.insert(v.id);
            *vips.entry(k.vip).or_insert(0) += 1;
        }
        Ok((ids, vips))
    }

    fn service_raw(&self, key: &ServiceKey) -> Result<Option<ServiceValue>, DataplaneError> {
        let m: HashMap<&MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.map_ref(M_SERVICES)?)
                .map_err(DataplaneError::map(M_SERVICES))?;
        match m.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DataplaneError::Map {
                map: M_SERVICES,
                source: e,
            }),
        }
    }

    /// The smallest free service id.
    fn free_id(&self) -> Result<u32, DataplaneError> {
        let max = self.opts.max_services;
        (self.free_hint..max)
            .find(|i| !self.used_ids.contains(i))
            .ok_or(DataplaneError::ServicesFull(max))
    }

    /// Add a service or replace its settings and endpoint set atomically:
    /// packets see either the whole old set or the whole new one.
    pub fn upsert_service(&mut self, svc: &ServiceSpec) -> Result<(), DataplaneError> {
        svc.validate()?;
        let key = svc.key().raw();
        let existing = self.service_raw(&key)?;
        // UDP endpoints that leave the set: their flows are flushed by the
        // next conntrack sweep (see `conntrack` docs).
        let retiring = match existing {
            Some(v) => self.leaving_udp_endpoints(&v, svc.proto, &svc.endpoints)?,
            None => Vec::new(),
        };
        let (id, generation) = match existing {
            Some(v) => (v.id, (v.generation ^ 1) & 1),
            None => (self.free_id()?, 0),
        };
        let slot = id * 2 + generation;
        let len = service_table_len();
        let set = svc.endpoint_set(if svc.needs_maglev() { len } else { 0 });
        if svc.needs_maglev() {
            // On a pure removal the survivors keep their slots (see rebuild_table).
            let table = match existing {
                Some(v) if v.sel == svc.sel => {
                    let live = spec::endpoints_from_set(&self.live_set(&v)?);
                    let old = self.live_table(&v)?;
                    maglev::rebuild_table(&live, &old, &svc.endpoints, len)
                }
                _ => maglev::build_table(&svc.endpoints, len),
            };
            let mut raw = MaglevTable::default();
            raw.entries[..table.len().min(MAGLEV_CAPACITY)].copy_from_slice(&table);
            let mut m: HashMap<&mut MapData, u32, MaglevTable> =
                HashMap::try_from(self.map_mut(M_MAGLEV)?)
                    .map_err(DataplaneError::map(M_MAGLEV))?;
            m.insert(slot, raw, 0)
                .map_err(DataplaneError::map(M_MAGLEV))?;
        }
        {
            let mut a: Array<&mut MapData, EndpointSet> =
                Array::try_from(self.map_mut(M_EPSETS)?).map_err(DataplaneError::map(M_EPSETS))?;
            a.set(slot, set, 0).map_err(DataplaneError::map(M_EPSETS))?;
        }
        if existing.is_none() {
            self.reset_stats(id)?;
        }
        let value = ServiceValue {
            id,
            generation,
            snat_ip: spec::ip_raw(svc.snat_ip),
            idle_timeout_s: svc.idle_timeout_secs.unwrap_or(0),
            sel: svc.sel,
            pad: [0; 3],
        };
        {
            let mut vips: HashMap<&mut MapData, u32, u32> =
                HashMap::try_from(self.map_mut(M_VIPS)?).map_err(DataplaneError::map(M_VIPS))?;
            vips.insert(key.vip, 1, 0)
                .map_err(DataplaneError::map(M_VIPS))?;
        }
        // The flip: one element replacement makes the new slot live.
        let mut m: HashMap<&mut MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.map_mut(M_SERVICES)?)
                .map_err(DataplaneError::map(M_SERVICES))?;
        m.insert(key, value, 0)
            .map_err(DataplaneError::map(M_SERVICES))?;
        if self.used_ids.insert(id) {
            *self.vip_refs.entry(key.vip).or_insert(0) += 1;
        }
        while self.used_ids.contains(&self.free_hint) {
            self.free_hint += 1;
        }
        self.retire_endpoints(retiring);
        if existing.is_some() && !svc.needs_maglev() {
            // A service that left Maglev: drop both of its tables.
            let mut t: HashMap<&mut MapData, u32, MaglevTable> =
                HashMap::try_from(self.map_mut(M_MAGLEV)?)
                    .map_err(DataplaneError::map(M_MAGLEV))?;
            let _ = t.remove(&(id * 2));
            let _ = t.remove(&(id * 2 + 1));
        }
        tracing::info!(vip = %svc.vip, port = svc.port, proto = svc.proto, sel = svc.sel,
            endpoints = svc.endpoints.len(), id, generation, "service programmed");
        Ok(())
    }

    fn reset_stats(&mut self, id: u32) -> Result<(), DataplaneError> {
        {
            let mut e: PerCpuArray<&mut MapData, Counter> =
                PerCpuArray::try_from(self.map_mut(M_EP_STATS)?)
                    .map_err(DataplaneError::map(M_EP_STATS))?;
            for i in 0..MAX_ENDPOINTS as u32 {
                e.set(id * MAX_ENDPOINTS as u32 + i, zero_percpu()?, 0)
                    .map_err(DataplaneError::map(M_EP_STATS))?;
            }
        }
        let mut r: PerCpuArray<&mut MapData, u32> =
            PerCpuArray::try_from(self.map_mut(M_RR)?).map_err(DataplaneError::map(M_RR))?;
        r.set(id, zero_percpu()?, 0)
            .map_err(DataplaneError::map(M_RR))
    }

    /// Remove a service. Its existing flows keep their conntrack entries until
    /// they expire; new flows to it are passed to the stack.
    pub fn remove_service(&mut self, key: ServiceKeySpec) -> Result<(), DataplaneError> {
        let raw = key.raw();
        let Some(v) = self.service_raw(&raw)? else {
            return Err(DataplaneError::ServiceNotFound {
                vip: key.vip,
                port: key.port,
                proto: key.proto,
            });
        };
        let retiring = self.leaving_udp_endpoints(&v, key.proto, &[])?;
        {
            let mut m: HashMap<&mut MapData, ServiceKey, ServiceValue> =
                HashMap::try_from(self.map_mut(M_SERVICES)?)
                    .map_err(DataplaneError::map(M_SERVICES))?;
            m.remove(&raw).map_err(DataplaneError::map(M_SERVICES))?;
        }
        self.used_ids.remove(&v.id);
        self.free_hint = self.free_hint.min(v.id);
        {
            let mut t: HashMap<&mut MapData, u32, MaglevTable> =
                HashMap::try_from(self.map_mut(M_MAGLEV)?)
                    .map_err(DataplaneError::map(M_MAGLEV))?;
            let _ = t.remove(&(v.id * 2));
            let _ = t.remove(&(v.id * 2 + 1));
        }
        let left = match self.vip_refs.get_mut(&raw.vip) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            self.vip_refs.remove(&raw.vip);
            let mut vips: HashMap<&mut MapData, u32, u32> =
                HashMap::try_from(self.map_mut(M_VIPS)?).map_err(DataplaneError::map(M_VIPS))?;
            let _ = vips.remove(&raw.vip);
        }
        self.retire_endpoints(retiring);
        tracing::info!(vip = %key.vip, port = key.port, proto = key.proto, "service removed");
        Ok(())
    }

    /// The live endpoints of service `v` that are not in `staying`, when it
    /// is a UDP service (their flows are flushed by the next sweep; see the
    /// `conntrack` docs); none for TCP.
    fn leaving_udp_endpoints(
        &self,
        v: &ServiceValue,
        proto: u8,
        staying: &[spec::EndpointSpec],
    ) -> Result<Vec<RetiredEndpoint>, DataplaneError> {
        if proto != PROTO_UDP {
            return Ok(Vec::new());
        }
        Ok(spec::endpoints_from_set(&self.live_set(v)?)
            .iter()
            .filter(|old| !staying.iter().any(|n| n.ip == old.ip && n.port == old.port))
            .map(|old| RetiredEndpoint::new(v.id, old))
            .collect())
    }

    fn live_set(&self, v: &ServiceValue) -> Result<EndpointSet, DataplaneError> {
        let a: Array<&MapData, EndpointSet> =
            Array::try_from(self.map_ref(M_EPSETS)?).map_err(DataplaneError::map(M_EPSETS))?;
        a.get(&(v.id * 2 + (v.generation & 1)), 0)
            .map_err(DataplaneError::map(M_EPSETS))
    }

    /// The live Maglev table of a service (empty if it has none).
    fn live_table(&self, v: &ServiceValue) -> Result<Vec<u8>, DataplaneError> {
        let m: HashMap<&MapData, u32, MaglevTable> =
            HashMap::try_from(self.map_ref(M_MAGLEV)?).map_err(DataplaneError::map(M_MAGLEV))?;
        match m.get(&(v.id * 2 + (v.generation & 1)), 0) {
            Ok(t) => {
                let len = (service_table_len() as usize).min(MAGLEV_CAPACITY);
                Ok(t.entries[..len].to_vec())
            }
            Err(aya::maps::MapError::KeyNotFound) => Ok(Vec::new()),
            Err(e) => Err(DataplaneError::Map {
                map: M_MAGLEV,
                source: e,
            }),
        }
    }

    /// The services as programmed in the datapath (sorted by key).
    pub fn services(&self) -> Result<Vec<ServiceSpec>, DataplaneError> {
        let m: HashMap<&MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.map_ref(M_SERVICES)?)
                .map_err(DataplaneError::map(M_SERVICES))?;
        let mut out = Vec::new();
        for kv in m.iter() {
            let (k, v) = kv.map_err(DataplaneError::map(M_SERVICES))?;
            let key = ServiceKeySpec::from_raw(&k);
            let set = self.live_set(&v)?;
            out.push(ServiceSpec {
                vip: key.vip,
                port: key.port,
                proto: key.proto,
                sel: v.sel,
                snat_ip: spec::ip_from_raw(v.snat_ip),
                endpoints: spec::endpoints_from_set(&set),
                idle_timeout_secs: (v.idle_timeout_s != 0).then_some(v.idle_timeout_s),
            });
        }
        out.sort_by_key(|s| s.key());
        Ok(out)
    }

    /// Make the live service set exactly `svcs`. Everything is validated
    /// first; on a validation error nothing is changed.
    pub fn sync_services(&mut self, svcs: &[ServiceSpec]) -> Result<(), DataplaneError> {
        let mut seen = HashSet::new();
        for s in svcs {
            s.validate()?;
            if !seen.insert(s.key()) {
                return Err(DataplaneError::invalid(
                    "service",
                    format!("{}:{}/{}", s.vip, s.port, s.proto),
                    "listed twice",
                ));
            }
        }
        let current = self.services()?;
        let by_key: std::collections::HashMap<_, &ServiceSpec> =
            current.iter().map(|c| (c.key(), c)).collect();
        let new_count = svcs
            .iter()
            .filter(|s| !by_key.contains_key(&s.key()))
            .count();
        let stale: Vec<_> = current
            .iter()
            .filter(|c| !seen.contains(&c.key()))
            .map(|c| c.key())
            .collect();
        if current.len() - stale.len() + new_count > self.opts.max_services as usize {
            return Err(DataplaneError::ServicesFull(self.opts.max_services));
        }
        for k in stale {
            self.remove_service(k)?;
        }
        for s in svcs {
            if by_key.get(&s.key()).is_some_and(|c| *c == s) {
                continue;
            }
            self.upsert_service(s)?;
        }
        Ok(())
    }

    /// Per-service, per-endpoint and drop counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let sum = |vals: PerCpuValues<Counter>| {
            vals.iter()
                .fold(PacketCount::default(), |a, c| PacketCount {
                    packets: a.packets + c.packets,
                    bytes: a.bytes + c.bytes,
                })
        };
        let ep_stats: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(self.map_ref(M_EP_STATS)?)
                .map_err(DataplaneError::map(M_EP_STATS))?;
        let m: HashMap<&MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.map_ref(M_SERVICES)?)
                .map_err(DataplaneError::map(M_SERVICES))?;
        let pending = crate::conntrack::pending_endpoint_counts(self.map_ref(M_FLOWS)?)?;
        let mut services = Vec::new();
        for kv in m.iter() {
            let (k, v) = kv.map_err(DataplaneError::map(M_SERVICES))?;
            // The datapath counts per endpoint slot only; the total also
            // holds slots of endpoints removed since the service was created.
            let slots = (0..MAX_ENDPOINTS as u32)
                .map(|i| {
                    let slot = v.id * MAX_ENDPOINTS as u32 + i;
                    let (p, b) = pending.get(&slot).copied().unwrap_or_default();
                    ep_stats
                        .get(&slot, 0)
                        .map(sum)
                        .map(|c| PacketCount {
                            packets: c.packets + p,
                            bytes: c.bytes + b,
                        })
                        .map_err(DataplaneError::map(M_EP_STATS))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let total = slots
                .iter()
                .fold(PacketCount::default(), |a, c| PacketCount {
                    packets: a.packets + c.packets,
                    bytes: a.bytes + c.bytes,
                });
            let set = self.live_set(&v)?;
            let endpoints = spec::endpoints_from_set(&set)
                .into_iter()
                .zip(slots)
                .collect();
            services.push(ServiceCounters {
                key: ServiceKeySpec::from_raw(&k),
                total,
                endpoints,
            });
        }
        services.sort_by_key(|s| s.key);
        let drops = drops_from(self.map_ref(M_DROPS)?)?;
        Ok(Counters { services, drops })
    }
}

/// Drop counters of the drops map, summed over CPUs.
pub(crate) fn drops_from(map: &aya::maps::Map) -> Result<DropCounters, DataplaneError> {
    let drops_map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(DataplaneError::map(M_DROPS))?;
    let mut d = [0u64; DROP_REASONS as usize];
    for (i, slot) in d.iter_mut().enumerate() {
        *slot = drops_map
            .get(&(i as u32), 0)
            .map_err(DataplaneError::map(M_DROPS))?
            .iter()
            .sum();
    }
    Ok(DropCounters {
        no_neigh: d[0],
        fib: d[1],
        no_endpoint: d[2],
        port_exhausted: d[3],
        ct_insert: d[4],
        fragment: d[5],
        ttl: d[6],
        redirect: d[7],
    })
}

/// Reads the drop counters of a running datapath through its pinned map
/// under `pin_dir` (for a status report off the owner's thread).
pub fn read_pinned_drops(pin_dir: &std::path::Path) -> Result<DropCounters, DataplaneError> {
    let map = MapData::from_pin(pin_dir.join("maps").join(M_DROPS))
        .and_then(aya::maps::Map::from_map_data)
        .map_err(DataplaneError::map(M_DROPS))?;
    drops_from(&map)
}
