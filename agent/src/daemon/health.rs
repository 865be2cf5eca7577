//! The owner's side of endpoint health: each endpoint's probe state, the
//! per-service health check (`GET /health/lb/...`), and the endpoint list.
//!
//! An endpoint is up until probes say otherwise: a service without
//! `Monitor` is never probed, and its endpoints always count as up.

use std::{collections::HashMap, net::Ipv4Addr};

use floatlb_api::{
    CommandError, Reply, Service, ServiceKey,
    health::{HealthAnswer, HealthQuery, HealthTarget},
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

/// Every probed endpoint's status (absent: up, never probed).
pub type EpStates = HashMap<EpKey, EpStatus>;

/// The name a service answers to in health checks and endpoint lists.
pub fn service_label(s: &Service) -> String {
    s.name
        .clone()
        .unwrap_or_else(|| super::key_string(&s.key()))
}

impl<D: Datapath> Daemon<D> {
    /// Whether this endpoint of `key` takes new flows.
    pub(crate) fn endpoint_up(&self, key: &ServiceKey, ip: Ipv4Addr, port: u16) -> bool {
        self.ep_states.get(&(*key, ip, port)).is_none_or(|s| s.up)
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
