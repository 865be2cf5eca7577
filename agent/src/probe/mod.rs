//! Endpoint probes, off the owner task.
//!
//! The owner keeps the probe plan current ([`PlanChange`]: one service's
//! targets set or removed) as services come and go; the prober task owns
//! its copy of the plan and, every `--probe-interval`, probes every target
//! with at most `--probe-concurrency` probes in flight. A round never
//! overlaps the next: with many silent endpoints a round can take longer
//! than the interval, and the next starts when it ends. Outcomes go to the
//! owner in batches as [`Event::Probes`]: the owner alone decides an
//! endpoint's state (with the retries' hysteresis) and changes the
//! datapath (see `daemon::health`).
//!
//! **What is probed.** Services with `Monitor` set. `probetype` picks the
//! kind (see [`kinds`]); `none` turns probing off; empty means `tcp` to the
//! endpoint's own port. `probeport` 0 means the endpoint's port.
//! `probeTimeout` (seconds) and `probeRetries` (consecutive results to
//! change state) fall back to `--probe-timeout` and `--probe-retries`.

pub mod kinds;

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use floatlb_api::{ProbeType, Service, ServiceKey};
use futures::StreamExt;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::events::{Event, EventTx};
pub use kinds::Kind;

/// Probe defaults (`--probe-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub concurrency: usize,
}

impl Defaults {
    pub fn from_args(a: &crate::health::HealthArgs) -> Self {
        Self {
            interval: a.probe_interval.max(Duration::from_millis(10)),
            timeout: a.probe_timeout.max(Duration::from_millis(10)),
            retries: a.probe_retries.max(1),
            concurrency: a.probe_concurrency.max(1) as usize,
        }
    }
}

/// One endpoint to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: ServiceKey,
    pub ip: Ipv4Addr,
    /// The endpoint's own port (its identity in the service).
    pub port: u16,
    pub kind: Kind,
    /// The port probed.
    pub probe_port: u16,
    pub request: String,
    pub response: String,
    pub timeout: Duration,
    /// Consecutive disagreeing results that change the endpoint's state.
    pub retries: u32,
}

/// The probe targets of `svc` (none unless it has `Monitor` set).
pub fn targets(svc: &Service, d: &Defaults) -> Vec<Target> {
    let p = &svc.probe;
    if !p.monitor {
        return Vec::new();
    }
    let kind = match p.probe_type {
        None | Some(ProbeType::Tcp) => Kind::Tcp,
        Some(ProbeType::Udp) => Kind::Udp,
        Some(ProbeType::Http) => Kind::Http,
        Some(ProbeType::Https) => Kind::Https,
        Some(ProbeType::Ping) => Kind::Ping,
        Some(ProbeType::None) | Some(ProbeType::Sctp) => return Vec::new(),
    };
    let timeout = if p.timeout > 0 {
        Duration::from_secs(u64::from(p.timeout))
    } else {
        d.timeout
    };
    let retries = if p.retries > 0 { p.retries } else { d.retries };
    svc.endpoints
        .iter()
        .map(|e| Target {
            service: svc.key(),
            ip: e.ip,
            port: e.port,
            kind: kind.clone(),
            probe_port: if p.port == 0 { e.port } else { p.port },
            request: p.request.clone(),
            response: p.response.clone(),
            timeout,
            retries,
        })
        .collect()
}

/// A change to the prober's plan.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanChange {
    /// The targets of one service (empty: not probed).
    Set(ServiceKey, Vec<Target>),
    /// Every service's targets, replacing the whole plan.
    Replace(Vec<(ServiceKey, Vec<Target>)>),
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub service: ServiceKey,
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `Ok`, or why the probe failed.
    pub result: Result<(), String>,
    pub rtt: Duration,
    pub at_unix_ms: u64,
    pub retries: u32,
}

/// Outcomes sent to the owner in one event, at most.
pub const BATCH: usize = 512;

/// The running prober.
#[derive(Debug)]
pub struct Prober {
    tx: mpsc::UnboundedSender<PlanChange>,
    task: JoinHandle<()>,
    pub defaults: Defaults,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Prober {
    /// Starts the prober; outcomes go to `events`.
    pub fn spawn(
        defaults: Defaults,
        events: EventTx,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(defaults, rx, events, metrics));
        Self { tx, task, defaults }
    }

    pub fn change(&self, c: PlanChange) {
        let _ = self.tx.send(c);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type Plan = HashMap<ServiceKey, Vec<Arc<Target>>>;

fn apply(plan: &mut Plan, c: PlanChange) {
    match c {
        PlanChange::Set(k, t) if t.is_empty() => {
            plan.remove(&k);
        }
        PlanChange::Set(k, t) => {
            plan.insert(k, t.into_iter().map(Arc::new).collect());
        }
        PlanChange::Replace(all) => {
            plan.clear();
            for (k, t) in all {
                if !t.is_empty() {
                    plan.insert(k, t.into_iter().map(Arc::new).collect());
                }
            }
        }
    }
}

async fn probe_one(t: Arc<Target>) -> Outcome {
    let start = Instant::now();
    let result = kinds::probe(
        &t.kind,
        t.ip,
        t.probe_port,
        &t.request,
        &t.response,
        t.timeout,
    )
    .await;
    Outcome {
        service: t.service,
        ip: t.ip,
        port: t.port,
        result,
        rtt: start.elapsed(),
        at_unix_ms: unix_ms(),
        retries: t.retries,
    }
}

async fn run(
    d: Defaults,
    mut rx: mpsc::UnboundedReceiver<PlanChange>,
    events: EventTx,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) {
    let mut plan = Plan::new();
    let mut tick = tokio::time::interval(d.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            c = rx.recv() => match c {
                Some(c) => apply(&mut plan, c),
                None => return,
            },
            _ = tick.tick() => {}
        }
        // Every change queued so far, then one round.
        while let Ok(c) = rx.try_recv() {
            apply(&mut plan, c);
        }
        if plan.is_empty() {
            continue;
        }
        let round: Vec<Arc<Target>> = plan.values().flatten().cloned().collect();
        let mut outcomes = futures::stream::iter(round)
            .map(probe_one)
            .buffer_unordered(d.concurrency);
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(o) = outcomes.next().await {
            if let Some(m) = &metrics {
                let kind = plan
                    .get(&o.service)
                    .and_then(|t| t.first())
                    .map_or("tcp", |t| t.kind.as_str());
                let result = if o.result.is_ok() { "ok" } else { "failed" };
                m.probes
                    .duration_seconds
                    .get_or_create(&vec![("type", kind.to_string()), ("result", result.into())])
                    .observe(o.rtt.as_secs_f64());
            }
            batch.push(o);
            if batch.len() >= BATCH
                && events
                    .send(Event::Probes(std::mem::take(&mut batch)))
                    .is_err()
            {
                return;
            }
        }
        if !batch.is_empty() && events.send(Event::Probes(batch)).is_err() {
            return;
        }
    }
}
