//! `floatlb`: the agent daemon and its one-shot commands.

use std::{io::IsTerminal, sync::Arc, time::Duration};

use clap::Parser;
use floatlb_agent::{
    cli::{Cli, CloudKind, Command, LogFormat, RunArgs},
    daemon::{self, Daemon, DaemonOptions},
    ha::orchestrate::{HaOptions, Orchestrator},
    neigh::Resolver,
    xdp::XdpDatapath,
};

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The AWS SDK warns about missing optional sources (profile files,
        // instance roles); floatlb reports what is missing itself.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,aws_config=error,aws_runtime=error,aws_smithy_runtime=error",
            )
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
async fn run_daemon(mut run: RunArgs) -> anyhow::Result<()> {
    run.cloud.default_garp_iface(&run.datapath.ifaces);
    let dp_args = run.datapath;
    let limits = floatlb_agent::config::Limits {
        max_endpoints: floatlb_agent::config::MAX_ENDPOINTS,
        max_services: dp_args.max_services as usize,
    };
    let peer = match (&run.ha.ka, &run.ha.cluster) {
        (Some(ka), _) => Some(ka.peer),
        (None, Some(c)) => c.split(',').next().and_then(|p| p.trim().parse().ok()),
        (None, None) => None,
    };
    let opts = DaemonOptions {
        config_path: run.config.clone(),
        peer,
        limits,
        ifaces: dp_args.ifaces,
        xdp_mode: dp_args.xdp_mode,
        fib_lookup_iface: dp_args.fib_lookup_iface,
        keep_pinned: dp_args.keep_pinned,
        // With HA (BFD or assigned roles) the orchestrator decides;
        // without, the node is always active.
        initially_active: run.ha.ka.is_none() && run.cloud.cloud == CloudKind::None,
        conntrack_expiry_interval: Duration::from_secs(dp_args.ct_expiry_secs.max(1)),
        neighbour_refresh_interval: Duration::from_secs(dp_args.neigh_refresh_secs.max(1)),
        // A new MASTER learns its clients' next hops from these reports, so
        // with HA they are drained often (a cheap map read).
        zones: floatlb_agent::health::Zones::from_args(&run.health),
        event_poll_interval: Duration::from_millis(
            if run.ha.ka.is_some() || run.cloud.cloud != CloudKind::None {
                20
            } else {
                200
            },
        ),
    };
    // From here on a SIGTERM is handled, not fatal: one arriving while the
    // datapath is being set up stops the daemon once it runs, which detaches
    // and unpins as on any other stop.
    let signals = daemon::Signals::install()?;
    let (events, queue) = floatlb_agent::events::channel();
    // Validate everything before touching the datapath.
    let mut cfg = daemon::load_config(&opts)?;
    floatlb_agent::preflight::check_forwarding(
        &opts.ifaces,
        opts.fib_lookup_iface.as_deref(),
        std::path::Path::new(floatlb_agent::preflight::IPV4_CONF),
    )?;
    // The durable state first (what the API acknowledged), then --config
    // on top: a file's service replaces the stored one with the same rule.
    let (store, stored) = floatlb_agent::store::Store::open(&run.api.state_dir, events.clone())?;
    let restored = floatlb_agent::store::restore(&stored, &limits)?;
    let from_file = std::mem::take(&mut cfg.services);
    let file_keys: Vec<_> = from_file.iter().map(|s| s.key()).collect();
    cfg.services = restored.services;
    let to_persist = daemon::overlay(&mut cfg.services, &from_file);
    // The merged list is validated as a whole (duplicates, --max-services).
    let cfg = floatlb_agent::config::LbConfig::from_wire(&cfg.to_wire(), &limits)?;
    tracing::info!(state_dir = %run.api.state_dir.display(), restored = stored.services.len(),
        from_config = to_persist.len(), services = cfg.services.len(), "state restored");
    let api = floatlb_agent::api::bind(&run.api).await?;
    let health_listener = floatlb_agent::health::bind(run.health.health_listen).await?;
    // Everything that can fail without side effects comes before the
    // datapath is opened, so a failure leaves nothing behind.
    let resolver = Resolver::new()?;
    // --ka: BFD elects. No --ka but a cloud provider: kube-loxilb assigns
    // the roles (POST /config/cistate) and the node starts BACKUP. Neither:
    // a standalone node, always active.
    // With connection sync on, the failback waits for the peer's resync.
    let mut ha_config = run.ha.ha_config()?;
    ha_config.sync_gate = run.sync.on();
    let ha = if run.ha.ka.is_some() || run.cloud.cloud != CloudKind::None {
        let provider = floatlb_agent::cloudctl::build_provider(&run.cloud).await?;
        let set = floatlb_agent::cloudctl::floating_set(&cfg.services);
        let mut o = match run.ha.bfd_session() {
            Some(session) => HaOptions::new(ha_config.clone(), session),
            None => HaOptions::assigned(ha_config.clone()),
        };
        o.state_file = run.ha.ha_state_file.clone();
        o.shutdown_drain = Duration::from_millis(run.ha.shutdown_drain_ms);
        Some(Orchestrator::new(
            o,
            Arc::from(provider),
            set,
            events.clone(),
        )?)
    } else {
        None
    };
    let pin_dir = dp_args.pin_dir.clone();
    let drop_report_secs = dp_args.drop_report_secs;
    let dp = XdpDatapath::open(&floatlb_dataplane::DataplaneOptions {
        pin_dir: dp_args.pin_dir,
        max_services: dp_args.max_services,
        max_conntrack: dp_args.max_conntrack,
        ..Default::default()
    })?;
    let mut dp = dp;
    let sync = match floatlb_agent::sync::start(
        &run.sync,
        run.ha.self_id,
        peer,
        dp.dataplane(),
        events.clone(),
    ) {
        Ok(s) => s,
        Err(e) => {
            if let Err(error) = daemon::Datapath::shutdown(dp, opts.keep_pinned) {
                tracing::error!(%error, "datapath cleanup after failed sync start also failed");
            }
            return Err(e.into());
        }
    };
    let mut daemon = Daemon::start(opts, dp, cfg, Some(resolver), (events, queue))?;
    daemon.set_sync(sync);
    // Metrics (GET /metrics): the HA record log and the BFD thread feed
    // them; the datapath's counters are read with handles of their own.
    let metrics = Arc::new(floatlb_agent::metrics::Metrics::new());
    if let Some(reader) = daemon.stats_reader() {
        metrics.sources.set_datapath(reader);
    }
    // Endpoint probes (services with Monitor set), off the owner task.
    let prober = floatlb_agent::probe::Prober::spawn(
        floatlb_agent::probe::Defaults::from_args(&run.health),
        daemon.handle().events(),
        Some(metrics.clone()),
    );
    daemon.set_prober(prober, Some(metrics.clone()));
    if let Some(stats) = daemon.sync_stats() {
        let lag = metrics.sync.lag_seconds.clone();
        stats.observe_lag(Box::new(move |us| lag.observe(us as f64 / 1e6)));
        metrics.sources.set_sync(stats);
    }
    if let Some(mut ha) = ha {
        let sink = metrics
            .ha
            .sink(ha.lease_ttl(), floatlb_agent::ha::machine::Role::Init);
        ha.subscribe(Box::new(sink));
        if let Some(s) = ha.bfd_snapshotter() {
            metrics.sources.set_bfd(s);
        }
        daemon.set_ha(ha);
    }
    daemon.set_store(store, restored.rest);
    daemon.persist_services(&to_persist);
    daemon.set_file_services(file_keys);
    // The API opens only now, with the restored state in place.
    let (api_tx, api_rx) = tokio::sync::mpsc::channel(floatlb_agent::api::QUEUE);
    let (health_tx, health_rx) = tokio::sync::mpsc::channel(floatlb_agent::api::QUEUE);
    if api.is_some() || health_listener.is_some() {
        daemon.set_api(api_rx);
        daemon.set_health_queue(health_rx);
    }
    // --health-listen: the health checks alone, no token, same queue.
    let health = health_listener.map(|l| {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let mut state =
            floatlb_api::ApiState::new(api_tx.clone(), None, limits, env!("CARGO_PKG_VERSION"));
        state.health_tx = Some(health_tx.clone());
        (stop, floatlb_agent::health::serve(l, state, stopped))
    });
    let api = api.map(|a| a.serve(api_tx, limits, metrics.clone(), health_tx));
    if let Err(e) = daemon.spawn_feeders(signals) {
        daemon.abort()?;
        return Err(e.into());
    }
    if drop_report_secs > 0
        && let Err(error) =
            floatlb_agent::drop_report::spawn(pin_dir, Duration::from_secs(drop_report_secs))
    {
        tracing::warn!(%error, "cannot start the drop counter report");
    }
    daemon.run().await?;
    if let Some(api) = api {
        api.stop().await;
    }
    if let Some((stop, task)) = health {
        let _ = stop.send(());
        let _ = task.await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Some(Command::Cloud(cmd)) => match floatlb_agent::cloudctl::run(&cmd).await {
            Ok(run) => {
                if cmd.json {
                    println!("{}", serde_json::to_string_pretty(&run)?);
                } else {
                    print!("{}", floatlb_agent::cloudctl::render(&run));
                }
                std::process::exit(if run.as_asked { 0 } else { 1 });
            }
            Err(e) => {
                eprintln!("floatlb cloud: {e}");
                std::process::exit(2);
            }
        },
        None => {
            let res = run_daemon(cli.run).await;
            if let Err(error) = &res {
                tracing::error!(error = %format!("{error:#}"), "floatlb stopped");
            }
            res
        }
    }
}
