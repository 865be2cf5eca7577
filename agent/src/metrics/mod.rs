//! Prometheus metrics (`GET /metrics`), with prometheus-client.
//!
//! Two kinds of figure, one registry:
//! - **Event counters** that the code producing the event updates itself
//!   (prometheus-client's atomics; no lock on agent state): HA transitions
//!   and cloud calls from the HA record log ([`ha::HaMetricsSink`], a
//!   [`crate::ha::records::RecordSink`] like the stdout lines), API requests
//!   from the router's observer hook, probe results from the prober, and
//!   the connection-sync figures from the sync work ([`SyncMetrics`]).
//! - **Scrape-time readings** ([`scrape::ScrapeCollector`]): the datapath's
//!   per-service and per-endpoint counters, read through a
//!   [`floatlb_dataplane::StatsReader`] with its own map descriptors on a
//!   blocking thread, and the BFD thread's session and counters, asked of
//!   the BFD thread directly. Neither goes through the owner task, so a
//!   scrape never delays an HA decision.
//!
//! Names follow Prometheus conventions: `floatlb_` prefix, base units
//! (`_seconds`, `_bytes`), counters end in `_total`. Every label's values
//! are bounded; docs/METRICS.md lists them.

pub mod ha;
pub mod scrape;
pub mod stream;

use std::sync::{Arc, Mutex};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of a metric: (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Buckets for cloud call durations, 5 ms .. ~40 s.
fn call_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 14,
    ))
}

/// Buckets for probe round trips, 100 us .. ~3 s.
fn probe_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 15,
    ))
}

/// Connection-sync figures (agent/sync). The lag histogram is fed by the
/// sync sender ([`floatlb_sync::SyncStats::observe_lag`]); the counters and
/// the queue depth are read from its [`floatlb_sync::SyncStats`] at scrape
/// time ([`scrape::Sources::set_sync`]). Registered from the start so the
/// names are stable with sync off.
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    /// Time from the datapath's report of a flow change on the MASTER to
    /// its frame leaving for the peer.
    pub lag_seconds: Histogram,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        Self {
            lag_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
            ),
        }
    }
}

/// Endpoint probe figures (filled by the prober).
#[derive(Debug, Clone)]
pub struct ProbeMetrics {
    /// 1 when the endpoint is up, by service and endpoint.
    pub up: Family<Labels, Gauge>,
    /// Probe round trips, by probe type and result.
    pub duration_seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

/// Every metric of the agent (see the module docs).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// API requests by route template and status code.
    pub api_requests: Family<Labels, Counter>,
    /// HA figures fed by the record log.
    pub ha: ha::HaFigures,
    pub probes: ProbeMetrics,
    pub sync: SyncMetrics,
    /// Readings taken at scrape time.
    pub sources: scrape::Sources,
    /// One scrape at a time (the readers are not shared).
    scraping: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let api_requests = Family::<Labels, Counter>::default();
        registry.register(
            "floatlb_api_requests",
            "REST API requests by route template and HTTP status code",
            api_requests.clone(),
        );
        let ha = ha::HaFigures::new(call_buckets);
        ha.register(&mut registry);
        let probes = ProbeMetrics {
            up: Family::default(),
            duration_seconds: Family::new_with_constructor(probe_buckets),
        };
        registry.register(
            "floatlb_endpoint_up",
            "1 when the endpoint's probes pass (or it is not probed), 0 when down",
            probes.up.clone(),
        );
        registry.register(
            "floatlb_probe_duration_seconds",
            "Endpoint probe round trips by probe type and result",
            probes.duration_seconds.clone(),
        );
        let sync = SyncMetrics::default();
        registry.register(
            "floatlb_sync_lag_seconds",
            "Connection sync: time from the datapath's report of a flow change to its frame leaving for the peer",
            sync.lag_seconds.clone(),
        );
        let sources = scrape::Sources::default();
        registry.register_collector(Box::new(scrape::ScrapeCollector::new(
            sources.clone(),
            ha.clock.clone(),
        )));
        Self {
            registry,
            api_requests,
            ha,
            probes,
            sync,
            sources,
            scraping: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts one API request.
    pub fn api_request(&self, route: &str, code: u16) {
        self.api_requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
    }
}

/// The content type of an OpenMetrics scrape.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of a Prometheus text format scrape.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text to the Prometheus text format (0.0.4), which
/// `promtool check metrics`, older scrapers and people with curl read
/// (see [`stream::Classic`]). Prometheus itself asks for OpenMetrics (its
/// Accept header), and gets it unchanged.
pub fn classic(om: &str) -> String {
    let mut c = stream::Classic::default();
    let mut out = String::with_capacity(om.len() + 1024);
    for l in om.lines() {
        c.line(l, &mut out);
    }
    c.release(&mut out);
    out
}

/// The API's request observer: counts each request in [`Metrics`].
#[derive(Debug, Clone)]
pub struct ApiCounter(pub Arc<Metrics>);

impl floatlb_api::router::RequestObserver for ApiCounter {
    fn observe(&self, route: &str, code: u16) {
        self.0.api_request(route, code);
    }
}

/// A routed `GET /metrics` for the API listener: OpenMetrics when the
/// scraper's Accept header asks for it (Prometheus does), else the
/// Prometheus text format.
pub fn routes<S: Clone + Send + Sync + 'static>(metrics: Arc<Metrics>) -> axum::Router<S> {
    use axum::{
        extract::State,
        http::{HeaderMap, header},
        response::IntoResponse,
        routing::get,
    };
    async fn get_metrics(State(m): State<Arc<Metrics>>, headers: HeaderMap) -> impl IntoResponse {
        let om = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/openmetrics-text"));
        let rx = stream::start(m, !om);
        let chunks = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
        });
        let ct = if om { OPENMETRICS } else { CLASSIC };
        (
            [(header::CONTENT_TYPE, ct)],
            axum::body::Body::from_stream(chunks),
        )
    }
    axum::Router::new()
        .route("/metrics", get(get_metrics))
        .with_state(metrics)
}

/// Shared, lockable slot (what the scrape sources hold).
pub(crate) type Slot<T> = Arc<Mutex<T>>;

#[cfg(test)]
mod tests;
