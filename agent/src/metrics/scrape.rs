//! Readings taken at scrape time, and their encoding.
//!
//! [`Sources::refresh`] reads the datapath (on a blocking thread: a few
//! hundred thousand map lookups at 10,000 services) and the BFD thread
//! (one message to it), keeps the result for the encode that follows, and
//! [`Sources::clear`] drops it. [`ScrapeCollector`] writes those readings
//! and the role clock as metric families.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use floatlb_dataplane::DatapathStats;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::{Labels, Slot, ha::RoleClock};
use crate::bfd::thread::{Snapshot, Snapshotter};

/// Reads the datapath's figures (made from [`crate::daemon::Datapath::stats_reader`]).
pub type StatsFn =
    Box<dyn FnMut() -> Result<DatapathStats, Box<dyn std::error::Error + Send + Sync>> + Send>;

/// One scrape's readings.
#[derive(Debug, Default)]
pub struct Reading {
    pub datapath: Option<DatapathStats>,
    /// How long the datapath read took.
    pub datapath_seconds: f64,
    pub bfd: Option<Snapshot>,
}

/// Where scrape-time readings come from.
#[derive(Clone, Default)]
pub struct Sources {
    datapath: Slot<Option<StatsFn>>,
    sync: Slot<Option<Arc<floatlb_sync::SyncStats>>>,
    bfd: Slot<Option<Snapshotter>>,
    reading: Slot<Reading>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sources {
    pub fn set_datapath(&self, f: StatsFn) {
        *lock(&self.datapath) = Some(f);
    }

    pub fn set_bfd(&self, s: Snapshotter) {
        *lock(&self.bfd) = Some(s);
    }

    /// The connection-sync counters (read at each scrape).
    pub fn set_sync(&self, s: Arc<floatlb_sync::SyncStats>) {
        *lock(&self.sync) = Some(s);
    }

    /// Takes this scrape's readings.
    pub async fn refresh(&self) {
        let bfd = lock(&self.bfd).clone();
        let bfd = match bfd {
            Some(s) => s.snapshot().await,
            None => None,
        };
        let reader = lock(&self.datapath).take();
        let (datapath, seconds, reader) = match reader {
            None => (None, 0.0, None),
            Some(mut f) => {
                let res = tokio::task::spawn_blocking(move || {
                    let t = Instant::now();
                    let r = f();
                    (r, t.elapsed().as_secs_f64(), f)
                })
                .await;
                match res {
                    Ok((Ok(stats), s, f)) => (Some(stats), s, Some(f)),
                    Ok((Err(error), s, f)) => {
                        tracing::warn!(%error, "metrics: cannot read the datapath counters");
                        (None, s, Some(f))
                    }
                    Err(_) => (None, 0.0, None),
                }
            }
        };
        if let Some(f) = reader {
            *lock(&self.datapath) = Some(f);
        }
        *lock(&self.reading) = Reading {
            datapath,
            datapath_seconds: seconds,
            bfd,
        };
    }

    pub fn clear(&self) {
        *lock(&self.reading) = Reading::default();
    }
}

/// Encodes the readings (see the module docs).
#[derive(Debug)]
pub struct ScrapeCollector {
    sources: Sources,
    clock: Slot<RoleClock>,
}

impl ScrapeCollector {
    pub fn new(sources: Sources, clock: Slot<RoleClock>) -> Self {
        Self { sources, clock }
    }
}

type Fmt = Result<(), std::fmt::Error>;

/// A label-free or labelled family of values of one type.
fn family<V: Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: impl IntoIterator<Item = (Labels, V)>,
    mut put: impl FnMut(&mut prometheus_client::encoding::MetricEncoder, V) -> Fmt,
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            put(&mut m, v)?;
        } else {
            let mut fam = m.encode_family(&labels)?;
            put(&mut fam, v)?;
        }
    }
    Ok(())
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> Fmt {
    family(enc, name, help, MetricType::Counter, rows, |m, v| {
        m.encode_counter::<NoLabelSet, u64, u64>(&v, None)
    })
}

fn gauges<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, V)>,
) -> Fmt {
    family(enc, name, help, MetricType::Gauge, rows, |m, v| {
        m.encode_gauge(&v)
    })
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        p => p.to_string(),
    }
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Fmt {
        let now = Instant::now();
        let clock = lock(&self.clock).clone();
        let roles = clock.seconds(now);
        gauges(
            &mut enc,
            "floatlb_ha_role",
            "1 for this node's current HA role (a node without HA is master)",
            roles.iter().map(|(r, _)| {
                let on = i64::from(*r == super::ha::role_label(clock.role));
                (vec![("role", r.to_string())], on)
            }),
        )?;
        family(
            &mut enc,
            "floatlb_ha_role_seconds",
            "Time this agent has spent in each HA role",
            MetricType::Counter,
            roles
                .iter()
                .map(|(r, s)| (vec![("role", r.to_string())], *s)),
            |m, v| m.encode_counter::<NoLabelSet, f64, f64>(&v, None),
        )?;
        if let Some(until) = clock.lease_until {
            let left = until.saturating_duration_since(now).as_secs_f64();
            gauges(
                &mut enc,
                "floatlb_cloud_lease_remaining_seconds",
                "Time left on the lease this node last renewed (0: expired)",
                [(Labels::new(), left)],
            )?;
        }
        let sync = lock(&self.sources.sync)
            .as_ref()
            .map(|s| s.snapshot())
            .unwrap_or_default();
        encode_sync(&mut enc, &sync)?;
        let reading = lock(&self.sources.reading);
        if let Some(b) = &reading.bfd {
            encode_bfd(&mut enc, b)?;
        }
        if let Some(d) = &reading.datapath {
            encode_datapath(&mut enc, d)?;
            gauges(
                &mut enc,
                "floatlb_metrics_datapath_read_seconds",
                "How long this scrape took to read the datapath counters",
                [(Labels::new(), reading.datapath_seconds)],
            )?;
        }
        Ok(())
    }
}

/// Connection-sync counters (all zero with sync off).
fn encode_sync(enc: &mut DescriptorEncoder, s: &floatlb_sync::SyncSnapshot) -> Fmt {
    let counter =
        |enc: &mut DescriptorEncoder, name: &str, help: &str, rows: Vec<(Labels, u64)>| {
            family(enc, name, help, MetricType::Counter, rows, |m, v| {
                m.encode_counter::<NoLabelSet, u64, f64>(&v, None)
            })
        };
    counter(
        enc,
        "floatlb_sync_frames",
        "Connection sync frames, by direction (refused: failed decoding or authentication; the connection is closed)",
        vec![
            (vec![("direction", "sent".into())], s.frames_sent),
            (vec![("direction", "received".into())], s.frames_received),
            (vec![("direction", "refused".into())], s.frames_refused),
        ],
    )?;
    counter(
        enc,
        "floatlb_sync_frames_bad_mac",
        "Connection sync frames refused for a wrong HMAC (wrong key or altered bytes)",
        vec![(Labels::new(), s.refused_bad_mac)],
    )?;
    counter(
        enc,
        "floatlb_sync_records",
        "Flow records sent to the peer and installed from it",
        vec![
            (vec![("direction", "sent".into())], s.records_sent),
            (vec![("direction", "installed".into())], s.records_installed),
        ],
    )?;
    counter(
        enc,
        "floatlb_sync_deletes",
        "Removed flows (the MASTER's expiry sweep) sent to the peer and applied from it",
        vec![
            (vec![("direction", "sent".into())], s.deletes_sent),
            (vec![("direction", "applied".into())], s.deletes_received),
        ],
    )?;
    counter(
        enc,
        "floatlb_sync_resyncs",
        "Bulk resyncs sent, confirmed by the peer, and received",
        vec![
            (vec![("direction", "sent".into())], s.resyncs_sent),
            (vec![("direction", "acked".into())], s.resyncs_acked),
            (vec![("direction", "received".into())], s.resyncs_received),
        ],
    )?;
    counter(
        enc,
        "floatlb_sync_fallbacks",
        "Resyncs forced by a loss, by cause (queue overflow, datapath reports lost, install errors)",
        vec![
            (vec![("cause", "queue_overflow".into())], s.queue_overflows),
            (vec![("cause", "reports_lost".into())], s.reports_lost),
            (vec![("cause", "install_error".into())], s.install_errors),
        ],
    )?;
    gauges(
        enc,
        "floatlb_sync_queue_depth",
        "Connection sync: flow changes waiting to be sent",
        [(Labels::new(), s.queue_depth as i64)],
    )?;
    gauges(
        enc,
        "floatlb_sync_connections",
        "Authenticated sync connections up",
        [(Labels::new(), s.connections as i64)],
    )
}

fn encode_bfd(enc: &mut DescriptorEncoder, b: &Snapshot) -> Fmt {
    use crate::bfd::packet::State;
    let states = [State::AdminDown, State::Down, State::Init, State::Up];
    let mut rows = Vec::new();
    for s in &b.sessions {
        for st in states {
            let name = format!("{st:?}").to_lowercase();
            rows.push((
                vec![("peer", s.peer.to_string()), ("state", name)],
                i64::from(s.state == st),
            ));
        }
    }
    gauges(
        enc,
        "floatlb_bfd_session_state",
        "1 for the BFD session's current state",
        rows,
    )?;
    gauges(
        enc,
        "floatlb_bfd_detection_time_seconds",
        "The BFD session's detection time",
        b.sessions.iter().map(|s| {
            (
                vec![("peer", s.peer.to_string())],
                s.detection_time_us as f64 / 1e6,
            )
        }),
    )?;
    gauges(
        enc,
        "floatlb_bfd_tx_interval_seconds",
        "The BFD session's negotiated transmit interval",
        b.sessions.iter().map(|s| {
            (
                vec![("peer", s.peer.to_string())],
                s.tx_interval_us.unwrap_or(0) as f64 / 1e6,
            )
        }),
    )?;
    let c = &b.counters;
    let one = |v: u64| [(Labels::new(), v)];
    counters(
        enc,
        "floatlb_bfd_packets_received",
        "BFD packets received and accepted",
        one(c.rx_ok),
    )?;
    counters(
        enc,
        "floatlb_bfd_packets_sent",
        "BFD packets sent",
        one(c.tx_ok),
    )?;
    counters(
        enc,
        "floatlb_bfd_send_errors",
        "BFD packets that could not be sent",
        one(c.tx_errors),
    )?;
    counters(
        enc,
        "floatlb_bfd_late_transmissions",
        "Periodic BFD packets sent a whole interval or more late (the agent stalled)",
        one(c.tx_late),
    )?;
    gauges(
        enc,
        "floatlb_bfd_max_late_seconds",
        "The largest BFD transmission delay seen",
        [(Labels::new(), c.tx_max_late_us as f64 / 1e6)],
    )?;
    counters(
        enc,
        "floatlb_bfd_decode_errors",
        "Received BFD packets refused by the decoder, by kind",
        c.decode_errors
            .iter()
            .map(|(k, v)| (vec![("kind", k.to_string())], *v)),
    )?;
    counters(
        enc,
        "floatlb_bfd_receive_errors",
        "Received BFD packets refused by a session, by kind",
        c.rx_errors
            .iter()
            .map(|(k, v)| (vec![("kind", k.to_string())], *v)),
    )
}

fn encode_datapath(enc: &mut DescriptorEncoder, d: &DatapathStats) -> Fmt {
    let svc_label = |s: &floatlb_dataplane::ServiceStats| {
        format!("{}:{}/{}", s.key.vip, s.key.port, proto_name(s.key.proto))
    };
    let names: Vec<String> = d.services.iter().map(svc_label).collect();
    let per_service = |f: fn(&floatlb_dataplane::EndpointStats) -> u64| {
        d.services.iter().zip(&names).map(move |(s, n)| {
            (
                vec![("service", n.clone())],
                s.endpoints.iter().map(f).sum(),
            )
        })
    };
    counters(
        enc,
        "floatlb_service_packets",
        "Packets of a service's flows (both directions), summed over its current endpoints",
        per_service(|e| e.traffic.packets),
    )?;
    counters(
        enc,
        "floatlb_service_bytes",
        "Bytes (L2 frames) of a service's flows, summed over its current endpoints",
        per_service(|e| e.traffic.bytes),
    )?;
    gauges(
        enc,
        "floatlb_service_active_flows",
        "Tracked flows of a service at the last conntrack sweep",
        per_service(|e| e.flows),
    )?;
    let per_endpoint = |f: fn(&floatlb_dataplane::EndpointStats) -> u64| {
        d.services.iter().zip(&names).flat_map(move |(s, n)| {
            s.endpoints.iter().map(move |e| {
                (
                    vec![
                        ("service", n.clone()),
                        ("endpoint", format!("{}:{}", e.ip, e.port)),
                    ],
                    f(e),
                )
            })
        })
    };
    counters(
        enc,
        "floatlb_endpoint_packets",
        "Packets of the flows to an endpoint (both directions)",
        per_endpoint(|e| e.traffic.packets),
    )?;
    counters(
        enc,
        "floatlb_endpoint_bytes",
        "Bytes (L2 frames) of the flows to an endpoint",
        per_endpoint(|e| e.traffic.bytes),
    )?;
    gauges(
        enc,
        "floatlb_endpoint_active_flows",
        "Tracked flows to an endpoint at the last conntrack sweep",
        per_endpoint(|e| e.flows),
    )?;
    if let Some(n) = d.ct_entries {
        gauges(
            enc,
            "floatlb_conntrack_entries",
            "Conntrack entries at the last sweep (two per flow)",
            [(Labels::new(), n)],
        )?;
    }
    gauges(
        enc,
        "floatlb_conntrack_capacity",
        "Capacity of the conntrack table, in entries",
        [(Labels::new(), d.ct_capacity)],
    )?;
    counters(
        enc,
        "floatlb_datapath_drops",
        "Packets the datapath dropped, by reason",
        d.drops
            .by_reason()
            .into_iter()
            .map(|(r, n)| (vec![("reason", r.to_string())], n)),
    )
}

/// For tests and benchmarks: the readings to encode without a live source.
pub fn set_reading(sources: &Sources, datapath: Option<DatapathStats>, bfd: Option<Snapshot>) {
    *lock(&sources.reading) = Reading {
        datapath,
        datapath_seconds: 0.0,
        bfd,
    };
}

/// An `Arc` of the metrics, for handlers.
pub type Shared = Arc<super::Metrics>;
