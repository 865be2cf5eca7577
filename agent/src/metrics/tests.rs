//! Encoding tests: every family's name and labels, promtool when it is
//! installed, and the encode cost of 10,000 services x 8 endpoints.

use std::{net::Ipv4Addr, time::Instant};

use floatlb_dataplane::{
    DatapathStats, DropCounters, EndpointStats, PacketCount, ServiceKeySpec, ServiceStats,
};

use super::{Metrics, scrape::set_reading};
use crate::bfd::{
    manager::{Counters, SessionInfo},
    packet::{Diag, State},
    thread::Snapshot,
};

fn stats(services: u32, endpoints: u8) -> DatapathStats {
    let services = (0..services)
        .map(|i| ServiceStats {
            key: ServiceKeySpec {
                vip: Ipv4Addr::from(0x0a64_0000 + i),
                port: 80,
                proto: 6,
            },
            endpoints: (0..endpoints)
                .map(|e| EndpointStats {
                    ip: Ipv4Addr::new(10, 1, (i >> 8) as u8, e),
                    port: 8080,
                    traffic: PacketCount {
                        packets: u64::from(e) * 10,
                        bytes: u64::from(e) * 1000,
                    },
                    flows: u64::from(e),
                })
                .collect(),
        })
        .collect();
    DatapathStats {
        services,
        drops: DropCounters {
            no_endpoint: 3,
            ..Default::default()
        },
        ct_entries: Some(12),
        ct_capacity: 1 << 20,
    }
}

fn bfd() -> Snapshot {
    let mut counters = Counters {
        rx_ok: 5,
        tx_ok: 7,
        tx_late: 1,
        ..Default::default()
    };
    counters.decode_errors.insert("bad_version", 2);
    Snapshot {
        sessions: vec![SessionInfo {
            peer: "192.0.2.2".parse().unwrap(),
            state: State::Up,
            remote_state: State::Up,
            diag: Diag::None,
            local_discr: 1,
            remote_discr: 2,
            tx_interval_us: Some(100_000),
            detection_time_us: 300_000,
            poll_pending: false,
        }],
        counters,
    }
}

fn encode(m: &Metrics) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
    out
}

#[test]
fn every_family_is_named_by_convention_with_its_labels() {
    let m = Metrics::new();
    m.api_request("/netlox/v1/config/loadbalancer", 200);
    set_reading(&m.sources, Some(stats(2, 2)), Some(bfd()));
    let text = encode(&m);
    for line in [
        "floatlb_api_requests_total{route=\"/netlox/v1/config/loadbalancer\",code=\"200\"} 1",
        "floatlb_ha_role{role=\"master\"} 1",
        "floatlb_bfd_session_state{peer=\"192.0.2.2\",state=\"up\"} 1",
        "floatlb_bfd_packets_sent_total 7",
        "floatlb_bfd_late_transmissions_total 1",
        "floatlb_bfd_decode_errors_total{kind=\"bad_version\"} 2",
        "floatlb_endpoint_packets_total{service=\"10.100.0.1:80/tcp\",endpoint=\"10.1.0.1:8080\"} 10",
        "floatlb_service_bytes_total{service=\"10.100.0.0:80/tcp\"} 1000",
        "floatlb_endpoint_active_flows{service=\"10.100.0.0:80/tcp\",endpoint=\"10.1.0.1:8080\"} 1",
        "floatlb_conntrack_entries 12",
        "floatlb_conntrack_capacity 1048576",
        "floatlb_datapath_drops_total{reason=\"no_endpoint\"} 3",
        "# TYPE floatlb_sync_lag_seconds histogram",
        "# TYPE floatlb_sync_queue_depth gauge",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(l.starts_with("floatlb_"), "{l}");
    }
}

#[test]
fn promtool_accepts_the_exposition() {
    let m = Metrics::new();
    set_reading(&m.sources, Some(stats(3, 2)), Some(bfd()));
    let text = super::classic(&encode(&m));
    let Some((ok, msg)) = run_promtool(&text) else {
        eprintln!(
            "promtool not installed (scripts/setup.sh installs it): skipped here; the netns test requires it"
        );
        return;
    };
    assert!(ok, "promtool check metrics failed:\n{msg}\n{text}");
}

/// Runs `promtool check metrics` on `text`: (passed, its output), or
/// None when promtool is not installed.
fn run_promtool(text: &str) -> Option<(bool, String)> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), msg))
}

#[test]
fn encoding_ten_thousand_services_of_eight_endpoints_is_fast() {
    let m = Metrics::new();
    set_reading(&m.sources, Some(stats(10_000, 8)), Some(bfd()));
    let t = Instant::now();
    let text = super::classic(&encode(&m));
    let took = t.elapsed();
    println!(
        "encode 10,000 services x 8 endpoints: {} ms, {} bytes, {} lines",
        took.as_millis(),
        text.len(),
        text.lines().count()
    );
    // Debug build on a shared machine; the release figure is in
    // docs/BENCHMARKS.md.
    assert!(took.as_secs_f64() < 5.0, "{took:?}");
}
