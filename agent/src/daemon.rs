//! The `floatlb` daemon: one owner task that holds the datapath.
//!
//! Design: every change to agent state is made by a single task,
//! [`Daemon::run`], which owns the [`Datapath`], the services and the HA
//! orchestrator, and reacts to one [`Event`] type (see [`crate::events`] for
//! every event and the task/thread diagram). Signals and timers are small
//! tasks that only send events; the BFD thread and the cloud worker send
//! theirs to the same queue; others get a cloneable [`DaemonHandle`]. No lock
//! is ever taken on agent state and the order of changes is the order of
//! events.
//!
//! Startup is all or nothing: the configuration is validated before the
//! datapath is touched (a bad file exits non-zero with the field and the value,
//! having changed nothing), then services are synced, interfaces attached and
//! the datapath set active. Until HA exists the node is always active; HA
//! starts the daemon with `initially_active = false` and toggles it through
//! [`DaemonHandle::set_active`].
//!
//! Shutdown (SIGTERM/SIGINT): detach and remove every pin, unless
//! `keep_pinned`, in which case the program stays attached and pinned so that
//! a restarted agent re-opens it and established flows keep flowing.
//!
//! SIGHUP re-reads the configuration; a bad file is logged and the running
//! services are kept unchanged.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
    path::PathBuf,
    time::Duration,
};

mod control;
pub mod health;
mod sweeper;

use floatlb_dataplane::FlowKey;
use sweeper::SweeperThread;

pub use control::key_string;

use crate::{
    config::{ConfigError, LbConfig, Limits, Service},
    events::{Event, EventRx, EventTx},
    ha::orchestrate::{DatapathCmd, Orchestrator},
    neigh::{NeighError, NextHop, Resolver},
    ratelimit::RateLimit,
};

/// How to attach the XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) mode, falling back to generic (skb) mode.
    Auto,
    Native,
    Generic,
}

/// What the owner task needs from a datapath. Implemented for the XDP
/// dataplane in [`crate::xdp`]; the trait keeps the owner loop testable.
pub trait Datapath {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Makes the live service set exactly `services`.
    fn sync_services(&mut self, services: &[Service]) -> Result<(), Self::Error>;
    /// Adds or updates one service (an atomic endpoint-set swap).
    fn upsert_service(&mut self, service: &Service) -> Result<(), Self::Error>;
    /// Removes one service.
    fn remove_service(&mut self, service: &Service) -> Result<(), Self::Error>;
    /// Every tracked flow.
    fn conntrack_dump(&self) -> Result<Vec<floatlb_dataplane::CtRecord>, Self::Error>;
    /// Input device for the program's FIB lookups (None: the ingress interface).
    fn set_fib_lookup_iface(&mut self, iface: Option<&str>) -> Result<(), Self::Error>;
    /// Attaches to `iface` (idempotent); returns the mode actually used.
    fn attach(&mut self, iface: &str, mode: XdpModeArg) -> Result<String, Self::Error>;
    fn set_active(&mut self, active: bool) -> Result<(), Self::Error>;
    /// A function that removes idle conntrack entries and returns the
    /// client tuple of each flow removed. It walks the whole table, so the
    /// daemon runs it on a thread of its own, never in the owner task
    /// (which runs the HA orchestration).
    #[allow(clippy::type_complexity)]
    fn conntrack_sweeper(
        &self,
    ) -> Result<Box<dyn FnMut() -> Result<Vec<FlowKey>, Self::Error> + Send>, Self::Error>;
    /// A reader of the datapath's counters for metrics, to run on another
    /// thread with its own map handles (None: no counters to offer).
    fn stats_reader(&self) -> Option<crate::metrics::scrape::StatsFn> {
        None
    }
    /// Drops the program's cached next hops (after a route change).
    fn invalidate_nexthops(&mut self) -> Result<(), Self::Error>;
    /// Next hops the program found unresolved since the last call.
    fn take_unresolved_neighbours(&mut self) -> Vec<Ipv4Addr>;
    /// Stops: detach and unpin everything, or (`keep_pinned`) leave it all
    /// attached and pinned for the next agent.
    fn shutdown(self, keep_pinned: bool) -> Result<(), Self::Error>;
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("no interface given (--iface IF)")]
    NoInterface,
    #[error("datapath: {op}: {source}")]
    Datapath {
        op: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("neighbour resolver: {0}")]
    Neighbour(#[from] NeighError),
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
}

fn dp_err<E: std::error::Error + Send + Sync + 'static>(
    op: impl Into<String>,
) -> impl FnOnce(E) -> DaemonError {
    let op = op.into();
    move |e| DaemonError::Datapath {
        op,
        source: Box::new(e),
    }
}

/// Daemon settings (from the command line).
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// `--config`: services applied at start and on SIGHUP (optional: a
    /// node can start empty and be programmed through the API).
    pub config_path: Option<PathBuf>,
    /// `--cluster`: the peer, for status.
    pub peer: Option<std::net::IpAddr>,
    /// Service and endpoint limits (one home: the datapath's capacity).
    pub limits: Limits,
    pub ifaces: Vec<String>,
    pub xdp_mode: XdpModeArg,
    /// Input device of the datapath's FIB lookups (see the CLI flag).
    pub fib_lookup_iface: Option<String>,
    pub keep_pinned: bool,
    /// Active (MASTER) from the start. True until HA decides otherwise.
    pub initially_active: bool,
    pub conntrack_expiry_interval: Duration,
    pub neighbour_refresh_interval: Duration,
    /// How often the datapath's unresolved-neighbour reports are drained.
    pub event_poll_interval: Duration,
    /// Which endpoints are in this node's zone (health checks, `?local=1`).
    pub zones: crate::health::Zones,
}

/// A cloneable way to talk to the running daemon.
#[derive(Debug, Clone)]
pub struct DaemonHandle {
    tx: EventTx,
}

impl DaemonHandle {
    /// Switches the datapath between active (forwarding VIP traffic) and
    /// passive. Returns false if the daemon has stopped.
    pub fn set_active(&self, active: bool) -> bool {
        self.tx.send(Event::SetActive(active)).is_ok()
    }

    pub fn send(&self, ev: Event) -> bool {
        self.tx.send(ev).is_ok()
    }

    /// The queue internal producers (the HA orchestrator) send to.
    pub fn events(&self) -> EventTx {
        self.tx.clone()
    }

    /// Waits until every event sent before this call has been handled.
    /// Returns false if the daemon has stopped.
    pub async fn flush(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Event::Flush(tx)).is_ok() && rx.await.is_ok()
    }
}

/// The owner task's state.
pub struct Daemon<D: Datapath> {
    opts: DaemonOptions,
    dp: D,
    services: Vec<Service>,
    active: bool,
    rx: EventRx,
    tx: EventTx,
    resolver: Option<Resolver>,
    neigh_warn: RateLimit,
    /// Last known next hop of each endpoint.
    next_hops: HashMap<Ipv4Addr, NextHop>,
    /// The HA orchestrator, when `--ka` configures a pair.
    ha: Option<Orchestrator>,
    /// The conntrack expiry thread, once started.
    sweeper: Option<SweeperThread>,
    /// Connection sync threads (`--sync on`), flipped with the datapath.
    sync: Option<floatlb_sync::SyncService>,
    /// API requests (bounded: backpressure on a flood of requests).
    api_rx: Option<tokio::sync::mpsc::Receiver<floatlb_api::Request>>,
    /// Health checks, on a queue of their own (see [`Daemon::set_health_queue`]).
    health_rx: Option<tokio::sync::mpsc::Receiver<floatlb_api::Request>>,
    /// The state store and the replies waiting for it.
    durability: control::Durability,
    limits: Limits,
    /// Endpoints whose next hop is to be resolved after this event.
    neigh_queue: Vec<Ipv4Addr>,
    /// Assignment and BFD timers restored from the state store, applied
    /// once HA has started.
    restored: Restored,
    /// The rules the `--config` file holds (its last read): a reload
    /// removes only those the file dropped, never the API's.
    file_keys: std::collections::HashSet<crate::config::ServiceKey>,
    /// Endpoint probe results (see [`health`]).
    ep_states: health::EpStates,
    /// The endpoint prober, when started ([`Daemon::set_prober`]).
    prober: Option<crate::probe::Prober>,
    /// Where endpoint states are exported.
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

/// What the state store brought back besides the services.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The cistate role kube-loxilb assigned.
    pub role: Option<crate::ha::machine::Role>,
    pub bfd: Option<crate::store::BfdTimers>,
}

/// Puts `file`'s services over `services`: a service replaces the one with
/// the same rule, a new one is added. Returns those that changed anything
/// (what must be applied and made durable).
pub fn overlay(services: &mut Vec<Service>, file: &[Service]) -> Vec<Service> {
    let mut changed = Vec::new();
    for s in file {
        match services.iter_mut().find(|x| x.key() == s.key()) {
            Some(x) if x == s => {}
            Some(x) => {
                *x = s.clone();
                changed.push(s.clone());
            }
            None => {
                services.push(s.clone());
                changed.push(s.clone());
            }
        }
    }
    changed
}

/// The next API request, or never without an API.
async fn next_request(
    rx: &mut Option<tokio::sync::mpsc::Receiver<floatlb_api::Request>>,
) -> Option<floatlb_api::Request> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Endpoint addresses of all services, deduplicated.
pub fn endpoint_addrs(services: &[Service]) -> Vec<Ipv4Addr> {
    services
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| e.ip))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Validates the configuration file named in `opts` (if any), before any
/// datapath work.
pub fn load_config(opts: &DaemonOptions) -> Result<LbConfig, DaemonError> {
    if opts.ifaces.is_empty() {
        return Err(DaemonError::NoInterface);
    }
    let Some(path) = &opts.config_path else {
        return Ok(LbConfig::default());
    };
    let cfg = LbConfig::load(path, &opts.limits)?;
    tracing::info!(path = %path.display(), services = cfg.services.len(), "configuration valid");
    Ok(cfg)
}

/// SIGTERM, SIGINT and SIGHUP, caught from the moment `install` returns:
/// installed before the datapath is opened, so a stop request during
/// start-up is handled (the datapath is cleaned up) instead of killing the
/// process with its pins left behind.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Catch the three signals (needs a Tokio runtime).
    pub fn install() -> Result<Self, DaemonError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(DaemonError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?,
            hup: signal(SignalKind::hangup()).map_err(DaemonError::Signal)?,
        })
    }
}

impl<D: Datapath> Daemon<D> {
    /// Applies `cfg` to the freshly opened datapath `dp`: services, interfaces,
    /// active state. On failure the datapath is shut down again (keeping pins
    /// only with `keep_pinned`, since they may belong to a running setup).
    /// `queue` is the owner's event queue ([`events::channel`]), made by the
    /// caller so that producers built earlier (the HA orchestrator) can hold
    /// its sender.
    pub fn start(
        opts: DaemonOptions,
        mut dp: D,
        cfg: LbConfig,
        resolver: Option<Resolver>,
        queue: (EventTx, EventRx),
    ) -> Result<Self, DaemonError> {
        if let Err(e) = Self::apply_initial(&opts, &mut dp, &cfg) {
            if let Err(error) = dp.shutdown(opts.keep_pinned) {
                tracing::error!(%error, "datapath cleanup after failed start also failed");
            }
            return Err(e);
        }
        let (tx, rx) = queue;
        let limits = opts.limits;
        Ok(Self {
            active: opts.initially_active,
            opts,
            dp,
            services: cfg.services,
            rx,
            tx,
            resolver,
            neigh_warn: RateLimit::new(Duration::from_secs(10)),
            next_hops: HashMap::new(),
            ha: None,
            sweeper: None,
            sync: None,
            api_rx: None,
            health_rx: None,
            durability: control::Durability::new(None),
            limits,
            neigh_queue: Vec::new(),
            restored: Restored::default(),
            file_keys: Default::default(),
            ep_states: Default::default(),
            prober: None,
            metrics: None,
        })
    }

    /// Serves API requests from `rx` (see [`floatlb_api::router`]).
    pub fn set_api(&mut self, rx: tokio::sync::mpsc::Receiver<floatlb_api::Request>) {
        self.api_rx = Some(rx);
    }

    /// Serves health checks from `rx`, beside the API queue: the owner
    /// picks among ready queues at random, so a GSLB's check waits for a
    /// few events, not behind every queued change.
    pub fn set_health_queue(&mut self, rx: tokio::sync::mpsc::Receiver<floatlb_api::Request>) {
        self.health_rx = Some(rx);
    }

    /// Makes accepted changes durable in `store` before they are
    /// answered; `restored` is what it held besides the services.
    pub fn set_store(&mut self, store: crate::store::Store, restored: Restored) {
        self.durability = control::Durability::new(Some(store));
        self.restored = restored;
    }

    /// The rules the `--config` file held at start (see `file_keys`).
    pub fn set_file_services(&mut self, keys: impl IntoIterator<Item = crate::config::ServiceKey>) {
        self.file_keys = keys.into_iter().collect();
    }

    /// Records services that came from `--config` (not from the store) so
    /// that a later API change to them is durable too.
    pub fn persist_services(&mut self, services: &[Service]) {
        for s in services {
            let (reply, _) = tokio::sync::oneshot::channel();
            let change = crate::store::Change::put_service(key_string(&s.key()), &s.to_wire());
            self.durability
                .record(Some(change), reply, control::Undo::Nothing);
        }
    }

    fn apply_initial(opts: &DaemonOptions, dp: &mut D, cfg: &LbConfig) -> Result<(), DaemonError> {
        dp.sync_services(&cfg.services)
            .map_err(dp_err("sync services"))?;
        tracing::info!(services = cfg.services.len(), "services synced");
        dp.set_fib_lookup_iface(opts.fib_lookup_iface.as_deref())
            .map_err(dp_err("set FIB lookup interface"))?;
        for iface in &opts.ifaces {
            let mode = dp
                .attach(iface, opts.xdp_mode)
                .map_err(dp_err(format!("attach to {iface}")))?;
            tracing::info!(iface = %iface, mode = %mode, "XDP attached");
        }
        dp.set_active(opts.initially_active)
            .map_err(dp_err("set active"))?;
        tracing::info!(active = opts.initially_active, "datapath state set");
        Ok(())
    }

    /// Hands the HA orchestrator to the owner task: it then decides when
    /// the datapath is active (start the daemon with `initially_active =
    /// false`).
    pub fn set_ha(&mut self, ha: Orchestrator) {
        self.ha = Some(ha);
    }

    /// Hands the connection sync threads to the owner task, which makes
    /// them MASTER or BACKUP with the datapath and stops them at shutdown.
    pub fn set_sync(&mut self, sync: Option<floatlb_sync::SyncService>) {
        if let Some(s) = &sync {
            s.set_active(self.active);
        }
        self.sync = sync;
    }

    /// The connection sync counters (`--sync on`), for status and metrics.
    pub fn sync_stats(&self) -> Option<std::sync::Arc<floatlb_sync::SyncStats>> {
        self.sync.as_ref().map(floatlb_sync::SyncService::stats)
    }

    fn apply_ha(&mut self, cmds: Vec<DatapathCmd>) {
        for c in cmds {
            match c {
                DatapathCmd::SetActive(a) if a != self.active => self.set_active(a),
                DatapathCmd::SetActive(_) => {}
            }
        }
    }

    pub fn handle(&self) -> DaemonHandle {
        DaemonHandle {
            tx: self.tx.clone(),
        }
    }

    /// Starts the signal and timer tasks that feed the owner loop, and the
    /// conntrack expiry thread. A signal caught by `signals` before this
    /// call is delivered now.
    pub fn spawn_feeders(&mut self, signals: Signals) -> Result<(), DaemonError> {
        let mut sweep = self
            .dp
            .conntrack_sweeper()
            .map_err(dp_err("conntrack sweeper"))?;
        // With sync on, a MASTER streams the flows its sweep removed to the
        // peer (docs/SYNC.md); the handle drops them while BACKUP.
        let deletions = self.sync.as_ref().map(floatlb_sync::SyncService::deletions);
        let sweep: Box<dyn FnMut() -> Result<usize, D::Error> + Send> = Box::new(move || {
            let gone = sweep()?;
            if let Some(d) = &deletions {
                d.removed(gone.iter().map(crate::sync::key_to_wire));
            }
            Ok(gone.len())
        });
        self.sweeper = Some(
            SweeperThread::spawn(self.opts.conntrack_expiry_interval, sweep)
                .map_err(DaemonError::Thread)?,
        );
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = signals;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = term.recv() => Event::Shutdown { signal: "SIGTERM" },
                    _ = int.recv() => Event::Shutdown { signal: "SIGINT" },
                    _ = hup.recv() => Event::Reload,
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        let timers: [(Duration, fn() -> Event); 2] = [
            (self.opts.neighbour_refresh_interval, || {
                Event::RefreshNeighbours
            }),
            (self.opts.event_poll_interval, || Event::PollDatapathEvents),
        ];
        for (every, ev) in timers {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if tx.send(ev()).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(())
    }

    /// Runs until a shutdown event, then shuts the datapath down.
    pub async fn run(mut self) -> Result<(), DaemonError> {
        let endpoints = endpoint_addrs(&self.services);
        self.refresh_neighbours(&endpoints).await;
        if let Some(h) = self.ha.as_mut() {
            let mut cmds = h.start();
            if let Some(role) = self.restored.role
                && h.is_assigned()
            {
                tracing::info!(?role, "restoring the role kube-loxilb assigned");
                cmds.extend(h.assign(role).unwrap_or_default());
            }
            if let Some(t) = self.restored.bfd
                && h.bfd_session().is_some()
            {
                let interval = Duration::from_micros(u64::from(t.interval_us));
                if let Err(error) = h.set_bfd_timers(interval, t.multiplier).await {
                    tracing::warn!(%error, "cannot restore the BFD timers");
                }
            }
            self.apply_ha(cmds);
        }
        tracing::info!(
            active = self.active,
            ha = self.ha.is_some(),
            "floatlb running"
        );
        loop {
            let deadline = self.ha.as_ref().and_then(Orchestrator::next_deadline);
            let ev = tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ev) => ev,
                    None => break,
                },
                Some(req) = next_request(&mut self.api_rx) => Event::Api(req),
                Some(req) = next_request(&mut self.health_rx) => Event::Api(req),
                () = sleep_until(deadline) => Event::HaTimer,
            };
            if let Event::Shutdown { signal } = ev {
                tracing::info!(signal, keep_pinned = self.opts.keep_pinned, "shutting down");
                if let Some(mut h) = self.ha.take() {
                    let cmds = h.shutdown(&mut self.rx).await;
                    self.apply_ha(cmds);
                }
                break;
            }
            self.handle_event(ev).await;
        }
        self.durability.finish();
        if let Some(s) = self.sweeper.take() {
            s.stop();
        }
        if let Some(s) = self.sync.take() {
            s.stop();
        }
        let keep = self.opts.keep_pinned;
        self.dp.shutdown(keep).map_err(dp_err("shutdown"))?;
        if keep {
            tracing::info!("datapath left attached and pinned for the next agent");
        } else {
            tracing::info!("datapath detached and unpinned");
        }
        Ok(())
    }

    /// Stops without running: shuts the datapath down as a shutdown would
    /// (for a failure between [`Daemon::start`] and [`Daemon::run`]).
    pub fn abort(mut self) -> Result<(), DaemonError> {
        if let Some(s) = self.sweeper.take() {
            s.stop();
        }
        if let Some(s) = self.sync.take() {
            s.stop();
        }
        self.dp
            .shutdown(self.opts.keep_pinned)
            .map_err(dp_err("shutdown"))
    }

    /// Handles one event. Errors are logged; the daemon keeps running.
    pub async fn handle_event(&mut self, ev: Event) {
        match ev {
            Event::Shutdown { .. } => {}
            Event::Flush(done) => {
                let _ = done.send(());
            }
            Event::Reload => self.reload().await,
            Event::SetActive(active) => self.set_active(active),
            Event::RefreshNeighbours => {
                let endpoints = endpoint_addrs(&self.services);
                self.refresh_neighbours(&endpoints).await
            }
            Event::PollDatapathEvents => {
                let mut hops = self.dp.take_unresolved_neighbours();
                hops.sort_unstable();
                hops.dedup();
                if !hops.is_empty() {
                    self.refresh_neighbours(&hops).await;
                }
            }
            Event::HaTimer => {
                if let Some(h) = self.ha.as_mut() {
                    let cmds = h.on_timer();
                    self.apply_ha(cmds);
                }
            }
            Event::Bfd(changes) => {
                if let Some(h) = self.ha.as_mut() {
                    let cmds = h.on_bfd(changes);
                    self.apply_ha(cmds);
                }
            }
            Event::Cloud(done) => {
                if let Some(h) = self.ha.as_mut() {
                    let cmds = h.on_cloud(done);
                    self.apply_ha(cmds);
                }
            }
            Event::Api(req) => self.on_api(req).await,
            Event::Probes(outcomes) => self.on_probes(outcomes),
            Event::Persisted(p) => self.on_persisted(p).await,
            Event::Sync(e) => {
                if let (Some(h), Some(input)) = (self.ha.as_mut(), crate::sync::ha_input(e)) {
                    let cmds = h.on_sync(input);
                    self.apply_ha(cmds);
                }
            }
        }
        if !self.neigh_queue.is_empty() {
            let mut addrs = std::mem::take(&mut self.neigh_queue);
            addrs.sort_unstable();
            addrs.dedup();
            self.refresh_neighbours(&addrs).await;
        }
    }

    fn set_active(&mut self, active: bool) {
        match self.dp.set_active(active) {
            Ok(()) => {
                self.active = active;
                if let Some(s) = &self.sync {
                    s.set_active(active);
                }
                tracing::info!(active, "datapath state changed");
            }
            Err(error) => tracing::error!(active, %error, "cannot change datapath state"),
        }
    }

    async fn refresh_neighbours(&mut self, addrs: &[Ipv4Addr]) {
        let Some(resolver) = &self.resolver else {
            return;
        };
        let pass = resolver.resolve_all(addrs).await;
        let failed = pass.failures;
        tracing::debug!(
            addresses = addrs.len(),
            failed = failed.len(),
            "neighbour pre-resolution pass"
        );
        if self.note_next_hops(&pass.hops) {
            match self.dp.invalidate_nexthops() {
                Ok(()) => tracing::info!(
                    "an endpoint's next hop changed, datapath next-hop cache flushed"
                ),
                Err(error) => tracing::warn!(%error, "cannot flush the datapath next-hop cache"),
            }
        }
        // Traffic can trigger this (unresolved next hops reported by the
        // datapath), so the warning is rate-limited.
        if let Some(first) = failed.first()
            && let Some(suppressed) = self.neigh_warn.check()
        {
            tracing::warn!(
                failed = failed.len(),
                suppressed,
                error = %first,
                "neighbour pre-resolution failed"
            );
        }
    }

    /// Records where each endpoint's traffic goes next; true if any
    /// endpoint seen before now has a different next hop (route change).
    fn note_next_hops(&mut self, hops: &[(Ipv4Addr, NextHop)]) -> bool {
        let mut changed = false;
        for &(dst, hop) in hops {
            if let Some(prev) = self.next_hops.insert(dst, hop) {
                changed |= prev != hop;
            }
        }
        changed
    }

    /// SIGHUP: the file's rules replace the same rules, and rules the file
    /// held at its last read but no longer does are removed; rules created
    /// through the API are left alone (`systemctl reload` must not wipe
    /// what kube-loxilb programmed). All or nothing: a bad file changes
    /// nothing.
    async fn reload(&mut self) {
        let Some(path) = self.opts.config_path.clone() else {
            tracing::info!("SIGHUP: no --config file to re-read");
            return;
        };
        let cfg = match LbConfig::load(&path, &self.limits) {
            Ok(cfg) => cfg,
            Err(error) => {
                tracing::error!(%error, "reload rejected, running configuration kept");
                return;
            }
        };
        let new_keys: std::collections::HashSet<_> =
            cfg.services.iter().map(Service::key).collect();
        let mut merged: Vec<Service> = self
            .services
            .iter()
            .filter(|s| !self.file_keys.contains(&s.key()) || new_keys.contains(&s.key()))
            .cloned()
            .collect();
        let changed = overlay(&mut merged, &cfg.services);
        let gone: Vec<_> = self
            .services
            .iter()
            .map(Service::key)
            .filter(|k| !merged.iter().any(|m| m.key() == *k))
            .collect();
        // The merged list is checked as a whole (a file rule may now clash
        // with an API rule on the same VIP, port and protocol).
        let merged = match LbConfig::from_wire(
            &LbConfig { services: merged }.to_wire(),
            &self.limits,
        ) {
            Ok(c) => c.services,
            Err(error) => {
                tracing::error!(%error, "reload rejected against the running rules, nothing changed");
                return;
            }
        };
        let view: Vec<Service> = merged.iter().map(|s| self.dp_view(s)).collect();
        match self.dp.sync_services(&view) {
            Ok(()) => {
                tracing::info!(
                    services = merged.len(),
                    from_file = cfg.services.len(),
                    removed = gone.len(),
                    updated = changed.len(),
                    "configuration reloaded"
                );
                self.services = merged;
                self.file_keys = new_keys;
                self.floating_changed();
                self.probe_resync();
                for key in gone {
                    let (reply, _) = tokio::sync::oneshot::channel();
                    let change = crate::store::Change::DeleteService {
                        key: key_string(&key),
                    };
                    self.durability
                        .record(Some(change), reply, control::Undo::Nothing);
                }
                self.persist_services(&changed);
                let endpoints = endpoint_addrs(&self.services);
                self.refresh_neighbours(&endpoints).await;
            }
            Err(error) => tracing::error!(%error, "reload: cannot sync services"),
        }
    }

    /// Hands the floating addresses the services now use to HA, which
    /// moves the changed ones in the background when MASTER.
    fn floating_changed(&mut self) {
        if let Some(h) = self.ha.as_mut() {
            h.set_floating(crate::cloudctl::floating_set(&self.services));
        }
    }

    /// The services currently applied.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The datapath's counter reader, for metrics.
    pub fn stats_reader(&self) -> Option<crate::metrics::scrape::StatsFn> {
        self.dp.stats_reader()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::events;

    /// Records every datapath call, so the owner loop's decisions can be checked.
    #[derive(Clone, Default)]
    pub(crate) struct Recorder {
        calls: Arc<Mutex<Vec<String>>>,
        fail_attach: Option<&'static str>,
        unresolved: Vec<Ipv4Addr>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("refused by test")]
    pub(crate) struct Refused;

    impl Recorder {
        fn push(&self, s: String) {
            self.calls.lock().unwrap().push(s);
        }
        pub(crate) fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Datapath for Recorder {
        type Error = Refused;
        fn sync_services(&mut self, services: &[Service]) -> Result<(), Refused> {
            let keys: Vec<String> = services
                .iter()
                .map(|s| format!("{}:{}x{}", s.vip(), s.port, s.endpoints.len()))
                .collect();
            self.push(format!("sync {}", keys.join(",")));
            Ok(())
        }
        fn upsert_service(&mut self, s: &Service) -> Result<(), Refused> {
            self.push(format!(
                "upsert {}:{}x{}",
                s.vip(),
                s.port,
                s.endpoints.len()
            ));
            Ok(())
        }
        fn remove_service(&mut self, s: &Service) -> Result<(), Refused> {
            self.push(format!("remove {}:{}", s.vip(), s.port));
            Ok(())
        }
        fn conntrack_dump(&self) -> Result<Vec<floatlb_dataplane::CtRecord>, Refused> {
            Ok(Vec::new())
        }
        fn set_fib_lookup_iface(&mut self, iface: Option<&str>) -> Result<(), Refused> {
            self.push(format!("fib {iface:?}"));
            Ok(())
        }
        fn attach(&mut self, iface: &str, mode: XdpModeArg) -> Result<String, Refused> {
            self.push(format!("attach {iface} {mode:?}"));
            if self.fail_attach == Some(iface) {
                return Err(Refused);
            }
            Ok("native".into())
        }
        fn set_active(&mut self, active: bool) -> Result<(), Refused> {
            self.push(format!("active {active}"));
            Ok(())
        }
        fn conntrack_sweeper(
            &self,
        ) -> Result<Box<dyn FnMut() -> Result<Vec<FlowKey>, Refused> + Send>, Refused> {
            let me = self.clone();
            Ok(Box::new(move || {
                me.push("expire".into());
                Ok(Vec::new())
            }))
        }
        fn invalidate_nexthops(&mut self) -> Result<(), Refused> {
            self.push("invalidate_nexthops".into());
            Ok(())
        }
        fn take_unresolved_neighbours(&mut self) -> Vec<Ipv4Addr> {
            self.push("take_unresolved".into());
            std::mem::take(&mut self.unresolved)
        }
        fn shutdown(self, keep_pinned: bool) -> Result<(), Refused> {
            self.push(format!("shutdown keep_pinned={keep_pinned}"));
            Ok(())
        }
    }

    const CFG: &str = r#"{"lbAttr":[{"serviceArguments":{"externalIP":"192.0.2.1","port":80,"protocol":"tcp","sel":1,"mode":2},
        "endpoints":[{"endpointIP":"10.0.0.5","targetPort":8080,"weight":1},{"endpointIP":"10.0.0.6","targetPort":8080,"weight":2}]}]}"#;

    pub(crate) fn opts(dir: &std::path::Path, keep_pinned: bool) -> DaemonOptions {
        let path = dir.join("lb.json");
        std::fs::write(&path, CFG).unwrap();
        DaemonOptions {
            config_path: Some(path),
            peer: None,
            limits: crate::config::file_limits(),
            ifaces: vec!["eth0".into(), "eth1".into()],
            xdp_mode: XdpModeArg::Auto,
            fib_lookup_iface: Some("lo".into()),
            keep_pinned,
            initially_active: true,
            conntrack_expiry_interval: Duration::from_secs(2),
            neighbour_refresh_interval: Duration::from_secs(15),
            event_poll_interval: Duration::from_millis(250),
            zones: Default::default(),
        }
    }

    /// A scratch directory removed on drop.
    pub(crate) struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn tempdir(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("floatlb-daemon-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    #[test]
    fn start_syncs_services_then_attaches_every_interface_then_activates() {
        let dir = tempdir("start");
        let o = opts(&dir, false);
        let cfg = load_config(&o).unwrap();
        let rec = Recorder::default();
        let d = Daemon::start(o, rec.clone(), cfg, None, events::channel()).unwrap();
        assert!(d.is_active());
        assert_eq!(
            rec.calls(),
            [
                "sync 192.0.2.1:80x2",
                "fib Some(\"lo\")",
                "attach eth0 Auto",
                "attach eth1 Auto",
                "active true"
            ]
        );
    }

    #[test]
    fn failed_attach_shuts_the_datapath_down_and_names_the_interface() {
        let dir = tempdir("attachfail");
        let o = opts(&dir, false);
        let cfg = load_config(&o).unwrap();
        let rec = Recorder {
            fail_attach: Some("eth1"),
            ..Recorder::default()
        };
        let err = Daemon::start(o, rec.clone(), cfg, None, events::channel())
            .err()
            .unwrap();
        assert!(err.to_string().contains("attach to eth1"), "{err}");
        assert_eq!(
            rec.calls().last().map(String::as_str),
            Some("shutdown keep_pinned=false")
        );
    }

    #[test]
    fn bad_config_is_rejected_with_field_and_value_before_any_datapath_work() {
        let dir = tempdir("badcfg");
        let o = opts(&dir, false);
        std::fs::write(
            o.config_path.as_ref().unwrap(),
            CFG.replace("\"weight\":2", "\"weight\":300"),
        )
        .unwrap();
        let err = load_config(&o).unwrap_err().to_string();
        assert!(err.contains("lbAttr[0].endpoints[1].weight = 300"), "{err}");
        let no_iface = DaemonOptions {
            ifaces: vec![],
            ..opts(&dir, false)
        };
        assert!(matches!(
            load_config(&no_iface),
            Err(DaemonError::NoInterface)
        ));
    }

    #[tokio::test]
    async fn messages_drive_the_datapath_and_shutdown_honours_keep_pinned() {
        for keep in [false, true] {
            let dir = tempdir(&format!("run{keep}"));
            let o = opts(&dir, keep);
            let cfg = load_config(&o).unwrap();
            let rec = Recorder {
                unresolved: vec![Ipv4Addr::new(10, 0, 0, 5)],
                ..Recorder::default()
            };
            let d = Daemon::start(o.clone(), rec.clone(), cfg, None, events::channel()).unwrap();
            let h = d.handle();
            let task = tokio::spawn(d.run());
            assert!(h.set_active(false));
            assert!(h.send(Event::PollDatapathEvents));
            // A reload with a bad file changes nothing; a good one re-syncs.
            std::fs::write(o.config_path.as_ref().unwrap(), "{").unwrap();
            assert!(h.send(Event::Reload));
            assert!(h.flush().await);
            assert!(h.send(Event::SetActive(true)));
            let two = CFG.replace(
                r#",{"endpointIP":"10.0.0.6","targetPort":8080,"weight":2}"#,
                "",
            );
            std::fs::write(o.config_path.as_ref().unwrap(), two).unwrap();
            assert!(h.send(Event::Reload));
            assert!(h.flush().await);
            assert!(d_services_len(&rec) == 1);
            assert!(h.send(Event::Shutdown { signal: "test" }));
            task.await.unwrap().unwrap();
            assert_eq!(
                rec.calls()[5..],
                [
                    "active false".to_string(),
                    "take_unresolved".into(),
                    "active true".into(),
                    "sync 192.0.2.1:80x1".into(),
                    format!("shutdown keep_pinned={keep}"),
                ]
            );
            assert!(!h.send(Event::PollDatapathEvents), "daemon must be gone");
        }
    }

    #[tokio::test]
    async fn conntrack_expiry_runs_off_the_owner_task_and_stops_with_it() {
        let dir = tempdir("sweeper");
        let mut o = opts(&dir, false);
        o.conntrack_expiry_interval = Duration::from_millis(5);
        let cfg = load_config(&o).unwrap();
        let rec = Recorder::default();
        let mut d = Daemon::start(o, rec.clone(), cfg, None, events::channel()).unwrap();
        d.spawn_feeders(Signals::install().unwrap()).unwrap();
        let h = d.handle();
        let task = tokio::spawn(d.run());
        let expiries = || rec.calls().iter().filter(|c| *c == "expire").count();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while expiries() < 3 {
            assert!(std::time::Instant::now() < deadline, "no periodic expiry");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(h.send(Event::Shutdown { signal: "test" }));
        task.await.unwrap().unwrap();
        let calls = rec.calls();
        let last = calls.last().cloned();
        assert_eq!(last.as_deref(), Some("shutdown keep_pinned=false"));
        let n = expiries();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            expiries(),
            n,
            "the expiry thread must be stopped before the datapath is"
        );
    }

    #[tokio::test]
    async fn a_reload_keeps_api_rules_and_removes_only_what_the_file_dropped() {
        use floatlb_api::{Command, Reply, Request};
        let dir = tempdir("reloadapi");
        let o = opts(&dir, false);
        let cfg = load_config(&o).unwrap();
        let rec = Recorder::default();
        let mut d =
            Daemon::start(o.clone(), rec.clone(), cfg.clone(), None, events::channel()).unwrap();
        d.set_file_services(cfg.services.iter().map(Service::key));
        let h = d.handle();
        let task = tokio::spawn(d.run());
        // kube-loxilb adds a rule of its own.
        let mut api = cfg.services[0].clone();
        api.port = 443;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let cmd = Command::UpsertService(Box::new(api));
        assert!(h.send(Event::Api(Request { cmd, reply })));
        assert_eq!(answer.await.unwrap(), Ok(Reply::Done));
        // The file drops its one rule: only that rule goes.
        std::fs::write(o.config_path.as_ref().unwrap(), r#"{"lbAttr":[]}"#).unwrap();
        assert!(h.send(Event::Reload));
        assert!(h.flush().await);
        assert_eq!(
            rec.calls()
                .iter()
                .rev()
                .find(|c| c.starts_with("sync"))
                .map(String::as_str),
            Some("sync 192.0.2.1:443x2")
        );
        assert!(h.send(Event::Shutdown { signal: "test" }));
        task.await.unwrap().unwrap();
    }

    fn d_services_len(rec: &Recorder) -> usize {
        rec.calls()
            .iter()
            .rev()
            .find_map(|c| c.strip_prefix("sync 192.0.2.1:80x"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn only_a_changed_next_hop_counts_as_a_route_change() {
        let dir = tempdir("nexthops");
        let o = opts(&dir, false);
        let cfg = load_config(&o).unwrap();
        let mut d = Daemon::start(o, Recorder::default(), cfg, None, events::channel()).unwrap();
        let ep = Ipv4Addr::new(10, 0, 0, 5);
        let hop = |a: u8, ifindex| NextHop {
            addr: Ipv4Addr::new(10, 0, 0, a),
            ifindex,
        };
        assert!(!d.note_next_hops(&[(ep, hop(1, 2))]), "first sighting");
        assert!(!d.note_next_hops(&[(ep, hop(1, 2))]), "unchanged");
        assert!(d.note_next_hops(&[(ep, hop(9, 2))]), "new gateway");
        assert!(d.note_next_hops(&[(ep, hop(9, 3))]), "new interface");
    }

    #[test]
    fn endpoint_addresses_are_deduplicated_across_services() {
        let mut cfg = LbConfig::parse(CFG, false, "t", &crate::config::file_limits()).unwrap();
        let mut other = cfg.services[0].clone();
        other.port = 443;
        cfg.services.push(other);
        assert_eq!(
            endpoint_addrs(&cfg.services),
            [Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)]
        );
    }
}
