//! Conntrack access from userspace: dump, insert (for connection sync),
//! delete and expiry. Every flow has two entries, keyed by the client's
//! tuple (forward) and by the endpoint's reply tuple; each holds the rewrite
//! for its own direction.
//!
//! **Removed UDP endpoints.** When an endpoint leaves a UDP service (or the
//! service goes), the next sweep deletes the flows to it, so the next
//! datagram of such a flow is balanced afresh instead of following a
//! mapping to an endpoint that is gone: UDP has no reset that would tell
//! the client. TCP flows to a removed endpoint are kept until they close or
//! idle out, so a still-running endpoint finishes its connections (and a
//! dead one answers nothing; the client's retransmissions time out as they
//! would without a load balancer), the policy of kube-proxy's netfilter
//! mode. The sweep runs every `conntrack_expiry_interval` in the agent.
//!
//! The program serves established flows from a per-CPU flow cache
//! (`FLB_FLOWS`) and writes their counters and last-seen time back to these
//! entries at least every `FLOW_CACHE_SYNC_JIFFIES`, so a dump lags the
//! traffic by at most that much. Every change made here bumps the cache
//! generation, so no CPU keeps using a rewrite that was deleted or replaced.

use std::{
    collections::HashMap as StdHashMap,
    sync::{Arc, Mutex},
};

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray};
use floatlb_common::{
    CT_EST, CT_FIN, CT_SYN, CtValue, DIR_FORWARD, DIR_REPLY, FLOW_CACHE_SLOTS, FlowCacheEntry,
    FlowKeyRaw, ServiceKey, ServiceValue,
};

use crate::{
    CtTimeouts, Dataplane, DataplaneError, M_CONFIG, M_CT, M_FLOWS, M_SERVICES, PROTO_UDP,
    bump_gen, modify_config_map, monotonic_ns,
    spec::{self, CtRecord, FlowKey, TcpState},
};

/// A UDP endpoint removed from service `svc_id`, whose flows the next sweep
/// deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RetiredEndpoint {
    svc_id: u32,
    /// Address, as stored in the maps.
    ip: u32,
    /// Port, network byte order.
    port: u16,
}

impl RetiredEndpoint {
    pub(crate) fn new(svc_id: u32, ep: &spec::EndpointSpec) -> Self {
        Self {
            svc_id,
            ip: spec::ip_raw(ep.ip),
            port: ep.port.to_be(),
        }
    }

    /// The endpoint a forward entry `v` sends to.
    fn of_flow(v: &CtValue) -> Option<Self> {
        (v.dir == DIR_FORWARD).then_some(Self {
            svc_id: v.svc_id,
            ip: v.nat_dst,
            port: v.nat_dport,
        })
    }
}

/// A hash map for the whole-table passes (a million flows are two million
/// entries): foldhash, seeded per map, several times faster than SipHash
/// here; the keys are flow tuples, which clients choose, so never a fixed
/// seed.
type FastMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

/// The queue of retired endpoints shared by the datapath and its sweepers.
pub(crate) type Retired = Arc<Mutex<Vec<RetiredEndpoint>>>;

fn take_retired(r: &Retired) -> Vec<RetiredEndpoint> {
    std::mem::take(&mut *r.lock().unwrap_or_else(|p| p.into_inner()))
}

impl Dataplane {
    fn ct_all(&self) -> Result<Vec<(FlowKeyRaw, CtValue)>, DataplaneError> {
        entries(self.map_ref(M_CT)?)
    }

    /// The slots of every CPU's flow cache that serve packets (current
    /// generation) or hold packets not yet written back (any generation: the
    /// program writes those back when it reuses the slot).
    fn flow_cache_slots(&self) -> Result<Vec<FlowCacheEntry>, DataplaneError> {
        cache_slots(self.map_ref(M_FLOWS)?)
    }

    /// How many flow directions the per-CPU flow caches serve right now
    /// (counted once per CPU that caches them).
    pub fn flow_cache_len(&self) -> Result<usize, DataplaneError> {
        let gen_now = self.config()?.ct_gen;
        Ok(self
            .flow_cache_slots()?
            .iter()
            .filter(|e| e.ct_gen == gen_now)
            .count())
    }

    /// Every tracked flow, one record per flow (counters summed over both
    /// directions, including packets the flow caches have not written back
    /// yet; `last_seen_ns` the later of the two directions' times, which lag
    /// the traffic by at most `FLOW_CACHE_SYNC_JIFFIES`).
    pub fn conntrack_dump(&self) -> Result<Vec<CtRecord>, DataplaneError> {
        let mut all = self.ct_all()?;
        let mut pending: StdHashMap<FlowKeyRaw, (u64, u64)> = StdHashMap::new();
        for e in self.flow_cache_slots()? {
            let p = pending.entry(e.key).or_default();
            p.0 += e.packets;
            p.1 += e.bytes;
        }
        for (k, v) in &mut all {
            if let Some((packets, bytes)) = pending.get(k) {
                v.packets += packets;
                v.bytes += bytes;
            }
        }
        Ok(pair_up(&all))
    }

    /// Insert (or overwrite) both directions of a flow, e.g. one synced from
    /// the peer node. The flow is attributed to the local service matching
    /// its destination, if any.
    pub fn conntrack_insert(&mut self, rec: &CtRecord) -> Result<(), DataplaneError> {
        let svc = service_of(self.map_ref(M_SERVICES)?, rec)?;
        insert_pair(self.map_mut(M_CT)?, rec, svc)?;
        // The flow may have been cached with an older rewrite.
        self.bump_flow_cache_gen()
    }

    /// Delete a flow (both directions) given either of its tuples. Deleting
    /// an unknown flow is not an error.
    pub fn conntrack_delete(&mut self, key: &FlowKey) -> Result<(), DataplaneError> {
        if delete_pair(self.map_mut(M_CT)?, key)? {
            self.bump_flow_cache_gen()?;
        }
        Ok(())
    }

    /// Remove flows idle longer than their state's timeout (using the later
    /// last-seen time of the two directions). Returns the number of flows
    /// removed (a lone entry whose other direction is gone counts as one).
    /// On a large table this walks every entry; the agent runs it on a
    /// thread of its own through [`Dataplane::conntrack_sweeper`].
    pub fn expire_conntrack(&mut self) -> Result<usize, DataplaneError> {
        let timeouts = self.opts.timeouts;
        let retired = take_retired(&self.retired);
        let census = self.census.clone();
        let flows = expire_idle(self.map_mut(M_CT)?, timeouts, &retired, &census)?;
        if !flows.is_empty() {
            self.bump_flow_cache_gen()?;
        }
        Ok(flows.len())
    }

    /// A handle that expires conntrack entries like
    /// [`Dataplane::expire_conntrack`] through its own descriptors of the
    /// pinned maps, so it can run on another thread while this one keeps
    /// serving (a walk over a million entries takes seconds).
    pub fn conntrack_sweeper(&self) -> Result<ConntrackSweeper, DataplaneError> {
        let open = |name: &'static str| {
            MapData::from_pin(self.opts.pin_dir.join("maps").join(name))
                .and_then(Map::from_map_data)
                .map_err(DataplaneError::map(name))
        };
        Ok(ConntrackSweeper {
            ct: open(M_CT)?,
            config: open(M_CONFIG)?,
            config_lock: self.config_lock.clone(),
            retired: self.retired.clone(),
            census: self.census.clone(),
            timeouts: self.opts.timeouts,
        })
    }

    /// Queue the flows to these endpoints for the next sweep.
    pub(crate) fn retire_endpoints(&mut self, eps: Vec<RetiredEndpoint>) {
        if !eps.is_empty() {
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(eps);
        }
    }
}

/// Expires idle conntrack entries from another thread; made by
/// [`Dataplane::conntrack_sweeper`].
pub struct ConntrackSweeper {
    ct: Map,
    config: Map,
    config_lock: Arc<Mutex<()>>,
    retired: Retired,
    census: crate::stats::Census,
    timeouts: CtTimeouts,
}

impl std::fmt::Debug for ConntrackSweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConntrackSweeper")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl ConntrackSweeper {
    /// Remove idle flows, as [`Dataplane::expire_conntrack`] does; returns
    /// the client tuple of each flow removed (for connection sync, which
    /// streams the removals to the peer).
    pub fn expire(&mut self) -> Result<Vec<FlowKey>, DataplaneError> {
        let retired = take_retired(&self.retired);
        let flows = expire_idle(&mut self.ct, self.timeouts, &retired, &self.census)?;
        if !flows.is_empty() {
            modify_config_map(&self.config_lock, &mut self.config, bump_gen)?;
        }
        Ok(flows)
    }
}

/// The slots of every CPU's flow cache `flows` that serve packets or hold
/// packets not yet written back (see `Dataplane::flow_cache_slots`).
fn cache_slots(flows: &Map) -> Result<Vec<FlowCacheEntry>, DataplaneError> {
    let m: PerCpuArray<&MapData, FlowCacheEntry> =
        PerCpuArray::try_from(flows).map_err(DataplaneError::map(M_FLOWS))?;
    let mut out = Vec::new();
    for i in 0..FLOW_CACHE_SLOTS {
        let per_cpu = m.get(&i, 0).map_err(DataplaneError::map(M_FLOWS))?;
        out.extend(
            per_cpu
                .iter()
                .filter(|e| e.ct_gen != 0 || e.packets != 0)
                .copied(),
        );
    }
    Ok(out)
}

/// Packets and bytes the flow caches `flows` served and have not yet added
/// to the per-endpoint counters, by endpoint counter slot
/// (`service id * 64 + endpoint index`): the program adds a slot's counts
/// when it writes the slot back, so readers of the counters add these.
pub(crate) fn pending_endpoint_counts(
    flows: &Map,
) -> Result<StdHashMap<u32, (u64, u64)>, DataplaneError> {
    let mut out: StdHashMap<u32, (u64, u64)> = StdHashMap::new();
    for e in cache_slots(flows)? {
        if e.packets == 0 || e.svc_id == u32::MAX {
            continue;
        }
        let slot = e
            .svc_id
            .wrapping_mul(floatlb_common::MAX_ENDPOINTS as u32)
            .wrapping_add(u32::from(e.ep_idx));
        let p = out.entry(slot).or_default();
        p.0 += e.packets;
        p.1 += e.bytes;
    }
    Ok(out)
}

/// Every entry of the conntrack map `m`: in batches where the kernel offers
/// them (`batch::lookup_all`), else element by element.
fn entries(m: &Map) -> Result<Vec<(FlowKeyRaw, CtValue)>, DataplaneError> {
    match crate::batch::lookup_all(m) {
        Ok(all) => return Ok(all),
        Err(crate::batch::BatchError::Failed(e)) => return Err(e),
        Err(crate::batch::BatchError::Unsupported) => {}
    }
    let m: HashMap<&MapData, FlowKeyRaw, CtValue> =
        HashMap::try_from(m).map_err(DataplaneError::map(M_CT))?;
    let mut out = Vec::new();
    for kv in m.iter() {
        match kv {
            Ok(kv) => out.push(kv),
            // An LRU entry evicted between get_next_key and lookup.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => {
                return Err(DataplaneError::Map {
                    map: M_CT,
                    source: e,
                });
            }
        }
    }
    Ok(out)
}

/// Removes the idle flows of the conntrack map `ct`, and the flows to the
/// `retired` endpoints; returns their client tuples. Counts what stays into `census`
/// (flows per endpoint, entries) for metrics. The
/// caller bumps the flow-cache generation when any went: an expired flow is
/// idle, so its cached copies are stale (each is re-validated after
/// FLOW_CACHE_SYNC_JIFFIES anyway); bumping makes that independent of
/// timeouts and HZ.
fn expire_idle(
    ct: &mut Map,
    t: CtTimeouts,
    retired: &[RetiredEndpoint],
    census: &crate::stats::Census,
) -> Result<Vec<FlowKey>, DataplaneError> {
    let now = monotonic_ns();
    let mut kept = crate::stats::CtCensus {
        at_ns: now.max(1),
        ..Default::default()
    };
    let retired: std::collections::HashSet<RetiredEndpoint> = retired.iter().copied().collect();
    let all = entries(ct)?;
    // Last-seen time of every entry, to pair the directions.
    let mut seen: FastMap<FlowKeyRaw, u64> =
        FastMap::with_capacity_and_hasher(all.len(), Default::default());
    seen.extend(all.iter().map(|(k, v)| (*k, v.last_seen_ns)));
    let mut doomed = Vec::new();
    let mut flows = Vec::new();
    for (k, v) in &all {
        let peer_k = v.peer_key(k.proto);
        let peer = seen.get(&peer_k).copied();
        // Visit each pair once: from the forward entry, or from a lone entry.
        if v.dir == DIR_REPLY && peer.is_some() {
            continue;
        }
        let secs = match (k.proto, v.tcp_state) {
            (p, _) if p == PROTO_UDP => {
                if v.idle_timeout_s != 0 {
                    v.idle_timeout_s
                } else {
                    t.udp_secs
                }
            }
            (_, CT_SYN) => t.syn_secs,
            (_, CT_EST) => {
                if v.idle_timeout_s != 0 {
                    v.idle_timeout_s
                } else {
                    t.established_secs
                }
            }
            (_, CT_FIN) => t.fin_secs,
            _ => t.closed_secs,
        };
        let last = v.last_seen_ns.max(peer.unwrap_or(0));
        let idle = now.saturating_sub(last) > u64::from(secs) * 1_000_000_000;
        let to_retired = RetiredEndpoint::of_flow(v).is_some_and(|e| retired.contains(&e));
        if idle || to_retired {
            doomed.push(*k);
            if peer.is_some() {
                doomed.push(peer_k);
            }
            // The client's tuple: the forward key, or what a lone reply
            // entry rewrites to (the client as destination).
            flows.push(if v.dir == DIR_FORWARD {
                FlowKey::from_raw(k)
            } else {
                FlowKey::from_raw(&peer_k)
            });
        } else if let Some(ep) = RetiredEndpoint::of_flow(v) {
            *kept
                .flows
                .entry((ep.svc_id, spec::ip_from_raw(ep.ip), u16::from_be(ep.port)))
                .or_default() += 1;
        }
    }
    kept.entries = (all.len() - doomed.len()) as u64;
    *census.lock().unwrap_or_else(|p| p.into_inner()) = kept;
    let mut m: HashMap<&mut MapData, FlowKeyRaw, CtValue> =
        HashMap::try_from(ct).map_err(DataplaneError::map(M_CT))?;
    for k in &doomed {
        let _ = m.remove(k);
    }
    if !flows.is_empty() {
        tracing::debug!(flows = flows.len(), "conntrack entries expired");
    }
    Ok(flows)
}

/// The local service a flow's destination names, if any (a flow from the
/// peer is attributed to it). Checks the record first.
pub(crate) fn service_of(
    services: &Map,
    rec: &CtRecord,
) -> Result<Option<ServiceValue>, DataplaneError> {
    check_record(rec)?;
    lookup_service(services, rec)
}

/// Refuses a record the datapath cannot hold, naming the field.
pub(crate) fn check_record(rec: &CtRecord) -> Result<(), DataplaneError> {
    let c = &rec.client;
    if c.proto != spec::PROTO_TCP && c.proto != PROTO_UDP {
        return Err(DataplaneError::invalid(
            "conntrack client.proto",
            c.proto,
            "must be 6 or 17",
        ));
    }
    if rec.nat_src.1 == 0 || rec.nat_dst.1 == 0 {
        return Err(DataplaneError::invalid(
            "conntrack nat port",
            format!(
                "{}:{} -> {}:{}",
                rec.nat_src.0, rec.nat_src.1, rec.nat_dst.0, rec.nat_dst.1
            ),
            "ports must be non-zero",
        ));
    }
    Ok(())
}

/// The local service named by the record's destination, if any.
pub(crate) fn lookup_service(
    services: &Map,
    rec: &CtRecord,
) -> Result<Option<ServiceValue>, DataplaneError> {
    let c = &rec.client;
    let skey = ServiceKey {
        vip: spec::ip_raw(c.dst),
        port: c.dport.to_be(),
        proto: c.proto,
        pad: 0,
    };
    let m: HashMap<&MapData, ServiceKey, ServiceValue> =
        HashMap::try_from(services).map_err(DataplaneError::map(M_SERVICES))?;
    Ok(m.get(&skey, 0).ok())
}

/// Both directions' entries of `rec`, reply first (the order to write
/// them in: once the forward entry exists, replies must match).
pub(crate) fn pair_entries(
    rec: &CtRecord,
    svc: Option<ServiceValue>,
) -> [(FlowKeyRaw, CtValue); 2] {
    let fkey = rec.client.raw();
    let fwd = CtValue {
        nat_src: spec::ip_raw(rec.nat_src.0),
        nat_dst: spec::ip_raw(rec.nat_dst.0),
        nat_sport: rec.nat_src.1.to_be(),
        nat_dport: rec.nat_dst.1.to_be(),
        svc_id: svc.map_or(u32::MAX, |s| s.id),
        idle_timeout_s: svc.map_or(0, |s| s.idle_timeout_s),
        dir: DIR_FORWARD,
        tcp_state: rec.tcp_state.raw(),
        last_seen_ns: rec.last_seen_ns,
        packets: rec.packets,
        bytes: rec.bytes,
        ..CtValue::default()
    };
    let rev = CtValue {
        nat_src: fkey.dst,
        nat_dst: fkey.src,
        nat_sport: fkey.dport,
        nat_dport: fkey.sport,
        dir: DIR_REPLY,
        packets: 0,
        bytes: 0,
        ..fwd
    };
    [(fwd.peer_key(fkey.proto), rev), (fkey, fwd)]
}

/// Writes both directions of `rec` into the conntrack map `ct` (see
/// [`pair_entries`]). The caller bumps the flow-cache generation.
pub(crate) fn insert_pair(
    ct: &mut Map,
    rec: &CtRecord,
    svc: Option<ServiceValue>,
) -> Result<(), DataplaneError> {
    let [(rkey, rev), (fkey, fwd)] = pair_entries(rec, svc);
    let mut m: HashMap<&mut MapData, FlowKeyRaw, CtValue> =
        HashMap::try_from(ct).map_err(DataplaneError::map(M_CT))?;
    m.insert(rkey, rev, 0).map_err(DataplaneError::map(M_CT))?;
    if let Err(e) = m.insert(fkey, fwd, 0) {
        let _ = m.remove(&rkey);
        return Err(DataplaneError::Map {
            map: M_CT,
            source: e,
        });
    }
    Ok(())
}

/// Deletes a flow (both directions) from `ct` given either of its tuples;
/// true when it existed.
pub(crate) fn delete_pair(ct: &mut Map, key: &FlowKey) -> Result<bool, DataplaneError> {
    let raw = key.raw();
    let mut m: HashMap<&mut MapData, FlowKeyRaw, CtValue> =
        HashMap::try_from(ct).map_err(DataplaneError::map(M_CT))?;
    let v = match m.get(&raw, 0) {
        Ok(v) => v,
        Err(MapError::KeyNotFound) => return Ok(false),
        Err(e) => {
            return Err(DataplaneError::Map {
                map: M_CT,
                source: e,
            });
        }
    };
    let _ = m.remove(&v.peer_key(raw.proto));
    let _ = m.remove(&raw);
    Ok(true)
}

/// One record per flow of the conntrack map `ct` (no flow-cache counters).
pub(crate) fn records(ct: &Map) -> Result<Vec<CtRecord>, DataplaneError> {
    Ok(pair_up(&entries(ct)?))
}

/// One record per flow from both directions' entries: the forward entry's
/// tuple and translation, counters summed over both, `last_seen_ns` the
/// later of the two.
fn pair_up(all: &[(FlowKeyRaw, CtValue)]) -> Vec<CtRecord> {
    // The reply entries' counters and last-seen times, by key.
    let mut replies: FastMap<FlowKeyRaw, (u64, u64, u64)> =
        FastMap::with_capacity_and_hasher(all.len() / 2 + 1, Default::default());
    replies.extend(
        all.iter()
            .filter(|(_, v)| v.dir == DIR_REPLY)
            .map(|(k, v)| (*k, (v.packets, v.bytes, v.last_seen_ns))),
    );
    let mut out = Vec::with_capacity(all.len() / 2 + 1);
    for (k, v) in all {
        if v.dir != DIR_FORWARD {
            continue;
        }
        let (packets, bytes, last_seen_ns) = replies
            .get(&v.peer_key(k.proto))
            .copied()
            .unwrap_or_default();
        out.push(CtRecord {
            client: FlowKey::from_raw(k),
            nat_src: (spec::ip_from_raw(v.nat_src), u16::from_be(v.nat_sport)),
            nat_dst: (spec::ip_from_raw(v.nat_dst), u16::from_be(v.nat_dport)),
            tcp_state: TcpState::from_raw(v.tcp_state),
            packets: v.packets + packets,
            bytes: v.bytes + bytes,
            last_seen_ns: v.last_seen_ns.max(last_seen_ns),
        });
    }
    out
}
