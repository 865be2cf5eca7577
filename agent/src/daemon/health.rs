//! The owner's side of endpoint health: each endpoint's probe state, the
//! per-service health check (`GET /health/lb/...`), and the endpoint list.
//!
//! An endpoint is up until probes say otherwise: a service without
//! `Monitor` is never probed, and its endpoints always count as up.
//!
//! **Hysteresis.** An endpoint changes state after `retries` consecutive
//! probe results that disagree with it (`probeRetries`, else
//! `--probe-retries`), so one lost probe does not flap it.
//!
//! **The datapath's view.** A down endpoint leaves the service's endpoint
//! set (an in-place update, as any endpoint removal): its established TCP
//! flows keep their conntrack entries and finish, its UDP flows are
//! flushed by the next sweep and move, and Maglev keeps every surviving
//! endpoint's slots, so only the down endpoint's share moves. When it
//! comes back, the full set is programmed again (Maglev's table for the
//! full set is the one it had before). When *every* endpoint of a service
//! is down, the service keeps them all ("fail open"): dropping all its
//! traffic on the probes' word would turn a probe problem into an outage,
//! and the health check already answers `no healthy upstreams` so a GSLB
//! steers away.

use std::{collections::HashMap, net::Ipv4Addr};

use floatlb_api::{
    CommandError, Reply, Service, ServiceKey,
    health::{HealthAnswer, HealthQuery, HealthTarget},
    wire::{EndpointList, EndpointState},
};

use super::{Daemon, Datapath};

/// An endpoint of a service.
pub type EpKey = (ServiceKey, Ipv4Addr, u16);

/// What probes found about one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpStatus {
    /// Whether it takes new flows.
    pub up: bool,
    /// The last probe's outcome: `ok`, or why it failed.
    pub last: String,
    /// When the last probe ended, ms since the Unix epoch (0: never).
    pub last_unix_ms: u64,
    /// The last successful probe's round trip.
    pub rtt_us: Option<u64>,
    /// Consecutive results that disagree with `up` (the hysteresis count).
    pub against: u32,
    /// Probe round trips seen: (min, sum, count, max), microseconds.
    pub rtt_stats: (u64, u64, u64, u64),
}

impl Default for EpStatus {
    fn default() -> Self {
        Self {
            up: true,
            last: String::new(),
            last_unix_ms: 0,
            rtt_us: None,
            against: 0,
            rtt_stats: (u64::MAX, 0, 0, 0),
        }
    }
}

/// Every probed endpoint's status by service (absent: up, never probed).
pub type EpStates = HashMap<ServiceKey, HashMap<(Ipv4Addr, u16), EpStatus>>;

/// The name a service answers to in health checks and endpoint lists.
pub fn service_label(s: &Service) -> String {
    s.name
        .clone()
        .unwrap_or_else(|| super::key_string(&s.key()))
}

impl<D: Datapath> Daemon<D> {
    /// Whether this endpoint of `key` takes new flows.
    pub(crate) fn endpoint_up(&self, key: &ServiceKey, ip: Ipv4Addr, port: u16) -> bool {
        self.ep_states
            .get(key)
            .and_then(|m| m.get(&(ip, port)))
            .is_none_or(|s| s.up)
    }

    /// Whether this node serves traffic now (MASTER, or no HA at all).
    fn is_master(&self) -> bool {
        match &self.ha {
            Some(h) => h.role() == crate::ha::machine::Role::Master,
            None => true,
        }
    }

    /// `GET /health/lb/...` (see `floatlb_api::health`).
    pub(crate) fn health(&self, q: HealthQuery) -> Result<Reply, CommandError> {
        let svc = match &q.target {
            HealthTarget::Name(n) => self
                .services
                .iter()
                .find(|s| s.name.as_deref() == Some(n.as_str())),
            HealthTarget::Key(k) => self.services.iter().find(|s| s.key() == *k),
        };
        let Some(svc) = svc else {
            let what = match &q.target {
                HealthTarget::Name(n) => format!("lbrule {n}"),
                HealthTarget::Key(k) => format!("lbrule {}", super::key_string(k)),
            };
            return Err(CommandError::NotFound(what));
        };
        let key = svc.key();
        let counted: Vec<_> = svc
            .endpoints
            .iter()
            .filter(|e| !q.local || self.opts.zones.is_local(e.ip))
            .collect();
        let healthy = counted
            .iter()
            .filter(|e| self.endpoint_up(&key, e.ip, e.port))
            .count();
        let master = self.is_master();
        let result = HealthAnswer::verdict(master, healthy, q.min_healthy).unwrap_or("ok");
        Ok(Reply::Health(HealthAnswer {
            result: result.into(),
            role: self.role_name().into(),
            endpoints: counted.len(),
            healthy,
            min_healthy: q.min_healthy,
        }))
    }
}

impl<D: Datapath> Daemon<D> {
    /// `GET /config/endpoint/all`: every endpoint with its probe state.
    pub(crate) fn endpoint_list(&self) -> EndpointList {
        let mut attr = Vec::new();
        let interval = self
            .prober
            .as_ref()
            .map_or(0, |p| p.defaults.interval.as_secs() as i64);
        for s in &self.services {
            let name = service_label(s);
            let key = s.key();
            let states = self.ep_states.get(&key);
            for e in &s.endpoints {
                let st = states.and_then(|m| m.get(&(e.ip, e.port)));
                let probe_type = match st {
                    Some(_) => s
                        .probe
                        .probe_type
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "tcp".into()),
                    None => "none".into(),
                };
                let delay = |us: u64| {
                    if us == 0 || us == u64::MAX {
                        String::new()
                    } else {
                        format!("{:.3}ms", us as f64 / 1000.0)
                    }
                };
                let (mn, sum, n, mx) = st.map_or((0, 0, 0, 0), |x| x.rtt_stats);
                attr.push(EndpointState {
                    host_name: e.ip.to_string(),
                    name: format!("{name}/{}:{}", e.ip, e.port),
                    inactive_retries: st.map_or(0, |x| i64::from(x.against)),
                    probe_type,
                    probe_req: s.probe.request.clone(),
                    probe_resp: s.probe.response.clone(),
                    probe_duration: if st.is_some() { interval } else { 0 },
                    probe_port: s.probe.port,
                    min_delay: delay(mn),
                    avg_delay: delay(sum.checked_div(n).unwrap_or(0)),
                    max_delay: delay(mx),
                    // loxilb's words: ok (serving) or nok (down).
                    curr_state: if self.endpoint_up(&key, e.ip, e.port) {
                        "ok".into()
                    } else {
                        "nok".into()
                    },
                    last_probe: st.map(|x| x.last.clone()).unwrap_or_default(),
                    last_probe_time: st.map_or(0, |x| x.last_unix_ms),
                });
            }
        }
        EndpointList { attr }
    }

    /// What the datapath gets for `s`: its endpoints that are up (all of
    /// them when none is; see the module docs).
    pub(crate) fn dp_view(&self, s: &Service) -> Service {
        let Some(states) = self.ep_states.get(&s.key()) else {
            return s.clone();
        };
        let up: Vec<_> = s
            .endpoints
            .iter()
            .filter(|e| states.get(&(e.ip, e.port)).is_none_or(|st| st.up))
            .copied()
            .collect();
        if up.is_empty() || up.len() == s.endpoints.len() {
            return s.clone();
        }
        Service {
            endpoints: up,
            ..s.clone()
        }
    }

    /// Starts probing with `prober` (and exports endpoint states to
    /// `metrics`).
    pub fn set_prober(
        &mut self,
        prober: crate::probe::Prober,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) {
        self.prober = Some(prober);
        self.metrics = metrics;
        self.probe_resync();
    }

    /// One service's probe targets changed (`svc` None: it went).
    pub(crate) fn probe_service(&mut self, key: ServiceKey, svc: Option<&Service>) {
        let Some(p) = &self.prober else {
            return;
        };
        let targets = svc
            .map(|s| crate::probe::targets(s, &p.defaults))
            .unwrap_or_default();
        let keep: std::collections::HashSet<_> = targets.iter().map(|t| (t.ip, t.port)).collect();
        if targets.is_empty() {
            if let Some(old) = self.ep_states.remove(&key) {
                for (ip, port) in old.keys() {
                    self.export_up(&key, *ip, *port, None);
                }
            }
        } else {
            let states = self.ep_states.entry(key).or_default();
            let gone: Vec<_> = states
                .keys()
                .filter(|k| !keep.contains(k))
                .copied()
                .collect();
            for k in &gone {
                states.remove(k);
            }
            for k in &keep {
                states.entry(*k).or_default();
            }
            for (ip, port) in gone {
                self.export_up(&key, ip, port, None);
            }
        }
        p.change(crate::probe::PlanChange::Set(key, targets));
    }

    /// Re-sends the whole plan (start, reload, undo, delete all).
    pub(crate) fn probe_resync(&mut self) {
        let Some(p) = &self.prober else {
            return;
        };
        let plan: Vec<_> = self
            .services
            .iter()
            .map(|s| (s.key(), crate::probe::targets(s, &p.defaults)))
            .collect();
        let mut states = std::mem::take(&mut self.ep_states);
        for (key, targets) in &plan {
            if targets.is_empty() {
                continue;
            }
            let old = states.remove(key).unwrap_or_default();
            let mut fresh = HashMap::new();
            for t in targets {
                let st = old.get(&(t.ip, t.port)).cloned().unwrap_or_default();
                fresh.insert((t.ip, t.port), st);
            }
            self.ep_states.insert(*key, fresh);
        }
        p.change(crate::probe::PlanChange::Replace(plan));
    }

    fn export_up(&self, key: &ServiceKey, ip: Ipv4Addr, port: u16, up: Option<bool>) {
        let Some(m) = &self.metrics else {
            return;
        };
        let labels = vec![
            ("service", super::key_string(key)),
            ("endpoint", format!("{ip}:{port}")),
        ];
        match up {
            Some(up) => {
                m.probes.up.get_or_create(&labels).set(i64::from(up));
            }
            None => {
                m.probes.up.remove(&labels);
            }
        }
    }

    /// A batch of probe outcomes (see the module docs).
    pub(crate) fn on_probes(&mut self, outcomes: Vec<crate::probe::Outcome>) {
        let mut flipped: Vec<(ServiceKey, Ipv4Addr, u16, bool, String)> = Vec::new();
        for o in outcomes {
            let Some(st) = self
                .ep_states
                .get_mut(&o.service)
                .and_then(|m| m.get_mut(&(o.ip, o.port)))
            else {
                continue; // the endpoint left since the probe started
            };
            let ok = o.result.is_ok();
            st.last = match &o.result {
                Ok(()) => "ok".into(),
                Err(why) => why.clone(),
            };
            st.last_unix_ms = o.at_unix_ms;
            if ok {
                let us = o.rtt.as_micros() as u64;
                st.rtt_us = Some(us);
                let (mn, sum, n, mx) = st.rtt_stats;
                st.rtt_stats = (mn.min(us), sum.saturating_add(us), n + 1, mx.max(us));
            }
            if ok == st.up {
                st.against = 0;
                continue;
            }
            st.against += 1;
            if st.against >= o.retries.max(1) {
                st.up = ok;
                st.against = 0;
                flipped.push((o.service, o.ip, o.port, ok, st.last.clone()));
            }
        }
        let mut services: Vec<ServiceKey> = Vec::new();
        for (key, ip, port, up, why) in flipped {
            tracing::info!(service = %super::key_string(&key), endpoint = %format!("{ip}:{port}"),
                up, last = %why, "endpoint state changed");
            self.export_up(&key, ip, port, Some(up));
            if !services.contains(&key) {
                services.push(key);
            }
        }
        for key in services {
            let Some(svc) = self.services.iter().find(|s| s.key() == key) else {
                continue;
            };
            let view = self.dp_view(svc);
            if let Err(error) = self.dp.upsert_service(&view) {
                tracing::error!(%error, service = %super::key_string(&key),
                    "cannot apply an endpoint state change to the datapath");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{Recorder, opts, tempdir};
    use super::*;
    use crate::{daemon::load_config, events, probe};

    fn outcome(svc: ServiceKey, last: u8, ok: bool) -> probe::Outcome {
        probe::Outcome {
            service: svc,
            ip: Ipv4Addr::new(10, 0, 0, last),
            port: 8080,
            result: if ok { Ok(()) } else { Err("refused".into()) },
            rtt: Duration::from_millis(1),
            at_unix_ms: 1,
            retries: 2,
        }
    }

    #[tokio::test]
    async fn an_endpoint_changes_state_only_after_retries_and_never_empties_a_service() {
        let dir = tempdir("probes");
        let o = opts(&dir, false);
        let mut cfg = load_config(&o).unwrap();
        cfg.services[0].probe.monitor = true;
        let key = cfg.services[0].key();
        let rec = Recorder::default();
        let mut d = Daemon::start(o, rec.clone(), cfg, None, events::channel()).unwrap();
        let defaults = probe::Defaults {
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(1),
            retries: 2,
            concurrency: 1,
        };
        d.set_prober(
            probe::Prober::spawn(defaults, d.handle().events(), None),
            None,
        );
        let upserts = || {
            rec.calls()
                .into_iter()
                .filter(|c| c.starts_with("upsert"))
                .collect::<Vec<_>>()
        };
        // One failed probe: no flap.
        d.on_probes(vec![outcome(key, 5, false)]);
        assert!(d.endpoint_up(&key, Ipv4Addr::new(10, 0, 0, 5), 8080));
        assert!(upserts().is_empty());
        // A success in between resets the count.
        d.on_probes(vec![outcome(key, 5, true), outcome(key, 5, false)]);
        assert!(upserts().is_empty());
        // Two in a row: down, and the datapath gets the other endpoint only.
        d.on_probes(vec![outcome(key, 5, false)]);
        assert!(!d.endpoint_up(&key, Ipv4Addr::new(10, 0, 0, 5), 8080));
        assert_eq!(upserts(), ["upsert 192.0.2.1:80x1"]);
        // The other one dies too: the service keeps both (fail open).
        d.on_probes(vec![outcome(key, 6, false), outcome(key, 6, false)]);
        assert_eq!(upserts().last().unwrap(), "upsert 192.0.2.1:80x2");
        // Back after two good probes.
        d.on_probes(vec![outcome(key, 6, true)]);
        d.on_probes(vec![outcome(key, 6, true)]);
        assert!(d.endpoint_up(&key, Ipv4Addr::new(10, 0, 0, 6), 8080));
        assert_eq!(upserts().last().unwrap(), "upsert 192.0.2.1:80x1");
        // A stale outcome (an endpoint not in the plan) changes nothing.
        let n = upserts().len();
        d.on_probes(vec![outcome(key, 99, false), outcome(key, 99, false)]);
        assert_eq!(upserts().len(), n);
    }
}
