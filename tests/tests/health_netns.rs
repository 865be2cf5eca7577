//! Health and observability against a live agent in namespaces:
//! `GET /metrics` (checked by `promtool check metrics` and by the traffic
//! it counts), and the scrape cost at 10,000 services x 8 endpoints.
//!
//! Topology (`floatlb_tests::topology`): client, LB (XDP), three endpoints
//! answering with their id; services come through the API.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use floatlb_tests::{
    agent::{READY_LINE, TestEndpoint, TestService, floatlb_binary, write_config},
    apiclient::{ApiClient, kube_loxilb_body},
    hapair::{self, Pair},
    netns::{BpfMount, NsProcess, TempDir, poll_until, require_root, require_tools},
    servers::{EchoServer, payload, tcp_exchange},
    topology::{LB_CLIENT_IF, LB_ENDPOINT_IF, Topology, VIP, endpoint_ip},
};
use nix::sys::signal::Signal;

const PORT: u16 = 80;
const EP_PORT: u16 = 8080;
const EIP: &str = "203.0.113.10";

struct Lab {
    agent: Option<NsProcess>,
    servers: Vec<Option<EchoServer>>,
    bpf: BpfMount,
    dir: TempDir,
    topo: Topology,
}

impl Lab {
    fn new(prefix: &str, endpoints: usize) -> Result<Self> {
        require_root()?;
        require_tools(&["ip", "ethtool", "sysctl", "mount"])?;
        let topo = Topology::new(prefix, endpoints)?;
        let dir = TempDir::new(&format!("{prefix}-files"))?;
        let bpf = BpfMount::new(dir.join("bpf"))?;
        let mut servers = Vec::new();
        for (i, ns) in topo.endpoints.iter().enumerate() {
            let addr = SocketAddrV4::new(endpoint_ip(i), EP_PORT);
            servers.push(Some(EchoServer::start(ns, addr, u8::try_from(i)?)?));
        }
        Ok(Self {
            agent: None,
            servers,
            bpf,
            dir,
            topo,
        })
    }

    fn start(&mut self, extra: &[&str]) -> Result<()> {
        let bin = floatlb_binary()?.to_string_lossy().into_owned();
        let pin = self.bpf.path().join("floatlb");
        let pin = pin.to_string_lossy().into_owned();
        let state = self.dir.join("state").to_string_lossy().into_owned();
        let mut args = vec![
            "--iface",
            LB_CLIENT_IF,
            "--iface",
            LB_ENDPOINT_IF,
            "--pin-dir",
            &pin,
            "--fib-lookup-iface",
            "lo",
            "--state-dir",
            &state,
        ];
        args.extend_from_slice(extra);
        let log = self.dir.join("agent.log");
        let mut p = self.topo.lb.spawn(&bin, &args, &log)?;
        p.wait_for_log(READY_LINE, Duration::from_secs(120))?;
        self.agent = Some(p);
        Ok(())
    }

    fn api(&self) -> ApiClient {
        ApiClient::local(&self.topo.lb)
    }

    /// Stops endpoint `i`'s servers: connections are refused, datagrams
    /// answered with ICMP port unreachable.
    fn kill_endpoint(&mut self, i: usize) {
        self.servers[i] = None;
    }

    fn revive_endpoint(&mut self, i: usize) -> Result<()> {
        let addr = SocketAddrV4::new(endpoint_ip(i), EP_PORT);
        self.servers[i] = Some(EchoServer::start(
            &self.topo.endpoints[i],
            addr,
            u8::try_from(i)?,
        )?);
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.agent.take() {
            p.stop(Signal::SIGTERM, Duration::from_secs(20))?;
        }
        Ok(())
    }

    /// Endpoints answering `n` new TCP connections to `port`.
    fn tcp_answering(&self, port: u16, n: u64) -> Result<BTreeSet<u8>> {
        let vip = SocketAddr::from((VIP, port));
        self.topo.client.enter(move || -> Result<_> {
            let mut tcp = BTreeSet::new();
            for i in 0..n {
                tcp.insert(tcp_exchange(vip, &payload(i, 64), Duration::from_secs(2))?);
            }
            Ok(tcp)
        })?
    }

    fn rss_kib(&self) -> Result<u64> {
        let pid = self
            .agent
            .as_ref()
            .and_then(NsProcess::pid)
            .context("no agent")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS")
    }
}

fn body(port: u16, eps: &[usize]) -> String {
    let eps: Vec<(Ipv4Addr, u16)> = eps.iter().map(|&i| (endpoint_ip(i), EP_PORT)).collect();
    kube_loxilb_body(EIP, &VIP.to_string(), port, "tcp", "web", &eps)
}

/// The value of the sample `series` (name and labels exactly) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `promtool check metrics` on `text`.
fn promtool(text: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context(
            "promtool not found: install it with scripts/setup.sh (Debian package prometheus)",
        )?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn a_live_scrape_passes_promtool_and_counts_the_traffic_it_saw() -> Result<()> {
    let mut lab = Lab::new("fhm", 2)?;
    lab.start(&["--ct-expiry-secs", "1"])?;
    let api = lab.api();
    api.wait_up(Duration::from_secs(10))?;
    ensure!(
        api.post("/config/loadbalancer", &body(PORT, &[0, 1]))?
            .is_success()
    );
    let seen = lab.tcp_answering(PORT, 16)?;
    ensure!(seen.len() == 2, "both endpoints serve: {seen:?}");
    let service = format!("{VIP}:{PORT}/tcp");
    // Packets counted per endpoint; flows counted by the next sweep.
    let text = poll_until("a scrape with flows", Duration::from_secs(10), || {
        let m = api.get_at("/metrics").ok()?;
        let ct = sample(&m.body, "floatlb_conntrack_entries")?;
        (ct > 0.0).then_some(m)
    })?;
    ensure!(
        text.content_type.as_deref() == Some("text/plain; version=0.0.4; charset=utf-8"),
        "{:?}",
        text.content_type
    );
    let body = text.body;
    promtool(&body)?;
    let mut total = 0.0;
    for i in 0..2 {
        let ep = format!("{}:{EP_PORT}", endpoint_ip(i));
        let pk = sample(
            &body,
            &format!("floatlb_endpoint_packets_total{{service=\"{service}\",endpoint=\"{ep}\"}}"),
        )
        .with_context(|| format!("no packet counter for {ep}"))?;
        ensure!(pk > 0.0, "endpoint {ep} served but counted {pk} packets");
        total += pk;
    }
    let svc = sample(
        &body,
        &format!("floatlb_service_packets_total{{service=\"{service}\"}}"),
    )
    .context("no service counter")?;
    ensure!(svc == total, "service {svc} != sum of endpoints {total}");
    let flows = sample(
        &body,
        &format!("floatlb_service_active_flows{{service=\"{service}\"}}"),
    )
    .context("no flow gauge")?;
    ensure!(flows > 0.0, "the sweep counted no flows of {service}");
    ensure!(
        sample(
            &body,
            "floatlb_api_requests_total{route=\"/netlox/v1/config/loadbalancer\",code=\"200\"}"
        ) == Some(1.0),
        "the POST is counted by route and code"
    );
    ensure!(sample(&body, "floatlb_ha_role{role=\"master\"}") == Some(1.0));
    ensure!(sample(&body, "floatlb_conntrack_capacity").is_some_and(|c| c > 0.0));
    // Prometheus asks for OpenMetrics and gets it.
    let om = api.call_at_with(
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text")],
    )?;
    ensure!(
        om.body.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    println!(
        "live scrape: {} bytes, {} series, promtool ok",
        body.len(),
        body.lines().filter(|l| !l.starts_with('#')).count()
    );
    lab.stop()
}

/// Scrape time and RSS with 10,000 services of 8 endpoints each.
#[test]
fn scrape_of_ten_thousand_services_of_eight_endpoints() -> Result<()> {
    let mut lab = Lab::new("fhs", 1)?;
    let services: Vec<TestService> = (0..10_000u32)
        .map(|i| TestService {
            vip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + i / 100),
            port: 1000 + (i % 100) as u16,
            protocol: "tcp",
            sel: 0,
            endpoints: (0..8u8)
                .map(|e| TestEndpoint {
                    ip: Ipv4Addr::new(10, 1, 1 + e, 10 + (i % 200) as u8),
                    port: EP_PORT,
                    weight: 1,
                })
                .collect(),
        })
        .collect();
    let cfg = lab.dir.join("lb10k.json");
    write_config(&cfg, &services)?;
    let cfg = cfg.to_string_lossy().into_owned();
    let t0 = Instant::now();
    lab.start(&["--config", &cfg, "--neigh-refresh-secs", "3600"])?;
    println!(
        "agent up with 10,000 x 8 in {} ms",
        t0.elapsed().as_millis()
    );
    let api = lab.api();
    api.wait_up(Duration::from_secs(30))?;
    let rss_before = lab.rss_kib()? / 1024;
    let mut times = Vec::new();
    let mut size = 0;
    let mut read = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let m = api.get_at("/metrics")?;
        times.push(t.elapsed());
        ensure!(m.status == 200, "{}", m.status);
        size = m.body.len();
        read.extend(sample(&m.body, "floatlb_metrics_datapath_read_seconds"));
        let eps = m
            .body
            .lines()
            .filter(|l| l.starts_with("floatlb_endpoint_packets_total"))
            .count();
        ensure!(eps == 80_000, "{eps} endpoint series, want 80000");
    }
    times.sort();
    let load = std::fs::read_to_string("/proc/loadavg")?;
    println!(
        "scrape 10,000 x 8: median {} ms, max {} ms (datapath read {:.0} ms of it), {} MB; agent RSS {rss_before} MiB before the first scrape, {} MiB after five; loadavg {}",
        times[2].as_millis(),
        times[4].as_millis(),
        read.iter().sum::<f64>() * 1000.0 / read.len().max(1) as f64,
        size / 1_000_000,
        lab.rss_kib()? / 1024,
        load.trim()
    );
    lab.stop()
}

/// The API on another port of the LB namespace (the `--health-listen` one).
fn on_port(api: &ApiClient, port: u16) -> ApiClient {
    ApiClient {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        token: None,
        ..api.clone()
    }
}

#[test]
fn the_gslb_health_check_answers_by_name_and_by_address() -> Result<()> {
    let mut lab = Lab::new("fhh", 2)?;
    let token = lab.dir.join("token");
    std::fs::write(&token, "s3cret\n")?;
    let token = token.to_string_lossy().into_owned();
    let zone_a = format!("{}/32=az-a", endpoint_ip(0));
    let zone_b = format!("{}/32=az-b", endpoint_ip(1));
    lab.start(&[
        "--api-token-file",
        &token,
        "--health-listen",
        "127.0.0.1:18080",
        "--zone",
        "az-a",
        "--zone-subnet",
        &zone_a,
        "--zone-subnet",
        &zone_b,
    ])?;
    let mut api = lab.api();
    api.token = Some("s3cret".into());
    api.wait_up(Duration::from_secs(10))?;
    ensure!(
        api.post("/config/loadbalancer", &body(PORT, &[0, 1]))?
            .is_success()
    );
    let health = on_port(&api, 18080);
    let by_name = "/health/lb/web:llb-inst0";
    let by_key = format!("/health/lb/{EIP}/{PORT}/tcp");
    let check = |c: &ApiClient, path: &str, code: u16, result: &str| -> Result<serde_json::Value> {
        let a = c.get_at(path)?;
        ensure!(a.status == code, "{path}: {} {}", a.status, a.body);
        let v = a.json()?;
        ensure!(v["result"] == result, "{path}: {}", a.body);
        Ok(v)
    };
    let t = Instant::now();
    check(&health, by_name, 200, "ok")?;
    println!("health check answered in {} us", t.elapsed().as_micros());
    check(&health, &by_key, 200, "ok")?;
    check(&api, by_name, 200, "ok")?;
    check(
        &health,
        &format!("{by_name}?min_healthy=3"),
        503,
        "no healthy upstreams",
    )?;
    let local = check(&health, &format!("{by_name}?local=1"), 200, "ok")?;
    ensure!(local["endpoints"] == 1, "one endpoint is in az-a: {local}");
    check(
        &health,
        &format!("{by_name}?local=1&min_healthy=2"),
        503,
        "no healthy upstreams",
    )?;
    ensure!(health.get_at("/health/lb/nope")?.status == 404);
    ensure!(health.get_at(&format!("{by_name}?local=yes"))?.status == 400);
    // The API listener keeps its token; the health listener has none and
    // serves nothing else.
    ensure!(on_port(&api, 11111).get_at(by_name)?.status == 401);
    ensure!(health.get("/config/loadbalancer/all")?.status == 404);
    lab.stop()
}

/// kube-loxilb's body with `Monitor` on: TCP probes, 2 retries, 1 s timeout.
fn monitored_body(port: u16, eps: &[usize]) -> String {
    body(port, eps)
        .replace("\"Monitor\":false", "\"Monitor\":true")
        .replace(
            "\"probetype\":\"\"",
            "\"probetype\":\"tcp\",\"probeRetries\":2,\"probeTimeout\":1",
        )
}

/// Waits until the endpoint list shows `ip` in `state` (`ok`/`nok`);
/// returns its entry.
fn wait_ep_state(api: &ApiClient, ip: Ipv4Addr, state: &str) -> Result<serde_json::Value> {
    let host = ip.to_string();
    poll_until(
        &format!("endpoint {ip} {state}"),
        Duration::from_secs(15),
        || {
            let v = api.get("/config/endpoint/all").ok()?.json().ok()?;
            v["Attr"]
                .as_array()?
                .iter()
                .find(|e| e["hostName"] == host.as_str() && e["currState"] == state)
                .cloned()
        },
    )
}

#[test]
fn probes_take_dead_endpoints_out_and_the_health_check_follows() -> Result<()> {
    let mut lab = Lab::new("fhp", 3)?;
    lab.start(&["--probe-interval", "200ms", "--ct-expiry-secs", "1"])?;
    let api = lab.api();
    api.wait_up(Duration::from_secs(10))?;
    ensure!(
        api.post("/config/loadbalancer", &monitored_body(PORT, &[0, 1, 2]))?
            .is_success()
    );
    let health = "/health/lb/web:llb-inst0";
    let verdict = |code: u16, result: &str, healthy: u64| -> Result<()> {
        let a = api.get_at(health)?;
        let v = a.json()?;
        ensure!(
            a.status == code && v["result"] == result && v["healthy"] == healthy,
            "want {code} {result} healthy={healthy}, got {} {}",
            a.status,
            a.body
        );
        Ok(())
    };
    for i in 0..3 {
        let e = wait_ep_state(&api, endpoint_ip(i), "ok")?;
        ensure!(e["probeType"] == "tcp", "{e}");
    }
    // Probed at least once: the last result and its time are shown.
    let e = poll_until("a first probe", Duration::from_secs(5), || {
        let v = api.get("/config/endpoint/all").ok()?.json().ok()?;
        let e = v["Attr"].as_array()?.first()?.clone();
        (e["lastProbe"] == "ok" && e["lastProbeTime"].as_u64()? > 0).then_some(e)
    })?;
    println!("first endpoint: {e}");
    verdict(200, "ok", 3)?;
    ensure!(lab.tcp_answering(PORT, 24)? == BTreeSet::from([0, 1, 2]));
    // A UDP service probed with loxilb's rule, and one UDP flow to endpoint 0.
    let eps: Vec<(Ipv4Addr, u16)> = (0..3).map(|i| (endpoint_ip(i), EP_PORT)).collect();
    let udp_body = kube_loxilb_body(EIP, &VIP.to_string(), PORT, "udp", "dns", &eps)
        .replace("\"Monitor\":false", "\"Monitor\":true")
        .replace(
            "\"probetype\":\"\"",
            "\"probetype\":\"udp\",\"probeRetries\":2,\"probeTimeout\":1",
        );
    ensure!(api.post("/config/loadbalancer", &udp_body)?.is_success());
    let vip = SocketAddr::from((VIP, PORT));
    let udp_flow = lab
        .topo
        .client
        .enter(move || -> Result<std::net::UdpSocket> {
            for i in 0..200 {
                let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
                sock.set_read_timeout(Some(Duration::from_secs(2)))?;
                if floatlb_tests::servers::udp_exchange(&sock, vip, &payload(i, 32))? == 0 {
                    return Ok(sock);
                }
            }
            bail!("no UDP flow reached endpoint 0")
        })??;
    // A connection to endpoint 2 that stays open while others die.
    let vip = SocketAddr::from((VIP, PORT));
    let mut kept = lab
        .topo
        .client
        .enter(move || -> Result<(std::net::TcpStream, u8)> {
            loop {
                let mut s = std::net::TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut id = [0u8; 1];
                std::io::Read::read_exact(&mut s, &mut id)?;
                if id[0] == 2 {
                    return Ok((s, id[0]));
                }
            }
        })??;
    // Endpoints die one by one: each leaves the selection.
    for (dead, left, healthy) in [(0usize, [1u8, 2].as_slice(), 2u64), (1, &[2], 1)] {
        let t = Instant::now();
        lab.kill_endpoint(dead);
        wait_ep_state(&api, endpoint_ip(dead), "nok")?;
        println!(
            "endpoint {dead} marked down {} ms after it died",
            t.elapsed().as_millis()
        );
        if dead == 0 {
            // Its UDP flow moves (after the next conntrack sweep).
            let moved = poll_until("the UDP flow to move", Duration::from_secs(10), || {
                let sock = udp_flow.try_clone().ok()?;
                let got = lab
                    .topo
                    .client
                    .enter(move || floatlb_tests::servers::udp_exchange(&sock, vip, b"again").ok())
                    .ok()??;
                (got != 0).then_some(got)
            })?;
            println!("the UDP flow to endpoint 0 moved to endpoint {moved}");
            let v = api.get("/config/endpoint/all")?.json()?;
            let name = format!("dns:llb-inst0/{}:{EP_PORT}", endpoint_ip(0));
            let e = v["Attr"]
                .as_array()
                .and_then(|l| l.iter().find(|e| e["name"] == name.as_str()))
                .context("the UDP service's endpoint 0")?;
            ensure!(
                e["currState"] == "nok" && e["lastProbe"] == "ICMP port unreachable",
                "the UDP probe found endpoint 0 down by its port unreachable: {e}"
            );
        }
        verdict(200, "ok", healthy)?;
        let seen = lab.tcp_answering(PORT, 16)?;
        ensure!(
            seen == left.iter().copied().collect::<BTreeSet<u8>>(),
            "after endpoint {dead} died new flows reach {seen:?}, want {left:?}"
        );
    }
    // floatctl shows the same states, last probes and times.
    let floatctl = floatlb_binary()?.with_file_name("floatctl");
    let table = lab
        .topo
        .lb
        .run(&floatctl.to_string_lossy(), &["get", "ep"])?;
    let row = |i: usize| {
        table
            .lines()
            .find(|l| l.contains(&format!("web:llb-inst0/{}:{EP_PORT}", endpoint_ip(i))))
            .unwrap_or("")
            .to_string()
    };
    ensure!(
        row(0).contains("| nok ") && row(0).contains("refused") && row(2).contains("| ok "),
        "floatctl get ep:\n{table}"
    );
    // The flow to the surviving endpoint was never disturbed.
    let echo = lab.topo.client.enter(move || -> Result<Vec<u8>> {
        use std::io::{Read, Write};
        kept.0.write_all(b"still here")?;
        let mut buf = [0u8; 10];
        kept.0.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    })??;
    ensure!(echo == b"still here", "the kept flow broke");
    // The last one dies: no healthy upstreams.
    lab.kill_endpoint(2);
    wait_ep_state(&api, endpoint_ip(2), "nok")?;
    verdict(503, "no healthy upstreams", 0)?;
    ensure!(
        api.get_at(&format!("{health}?min_healthy=1"))?.status == 503,
        "503 with min_healthy=1"
    );
    // Endpoint 0 comes back: it rejoins and takes all new flows.
    lab.revive_endpoint(0)?;
    wait_ep_state(&api, endpoint_ip(0), "ok")?;
    verdict(200, "ok", 1)?;
    ensure!(lab.tcp_answering(PORT, 8)? == BTreeSet::from([0]));
    let m = api.get_at("/metrics")?.body;
    let up = |i: usize| {
        sample(
            &m,
            &format!(
                "floatlb_endpoint_up{{service=\"{EIP}:{PORT}/tcp\",endpoint=\"{}:{EP_PORT}\"}}",
                endpoint_ip(i)
            ),
        )
    };
    ensure!(
        up(0) == Some(1.0) && up(1) == Some(0.0),
        "endpoint_up: {:?} {:?}",
        up(0),
        up(1)
    );
    lab.stop()
}

#[test]
fn the_health_check_says_not_master_on_the_backup_and_follows_a_failover() -> Result<()> {
    let mut pair = Pair::new("fhf")?;
    for i in 0..2 {
        pair.spawn(i, 30_000, 3, floatlb_tests::hapair::TEST_HOLDS)?;
    }
    for i in 0..2 {
        pair.wait_running(i)?;
    }
    let m = pair.wait_one_master(Duration::from_secs(15))?;
    let b = 1 - m;
    let path = format!("/health/lb/{}/{}/udp", hapair::VIP, hapair::SERVICE_PORT);
    let apis = [0, 1].map(|i| ApiClient::local(&pair.nodes[i].ns));
    let answer = |i: usize| -> Result<(u16, String)> {
        let a = apis[i].get_at(&path)?;
        Ok((
            a.status,
            a.json()?["result"].as_str().unwrap_or("").to_string(),
        ))
    };
    ensure!(answer(m)? == (200, "ok".into()), "MASTER: {:?}", answer(m)?);
    ensure!(
        answer(b)? == (503, "not master".into()),
        "BACKUP: {:?}",
        answer(b)?
    );
    let (t, _) = hapair::kill_node(&mut pair, m)?;
    pair.wait_role(b, "Master", Duration::from_secs(10))?;
    let took = poll_until(
        "the survivor's health check to pass",
        Duration::from_secs(10),
        || (answer(b).ok()?.0 == 200).then_some(t.elapsed()),
    )?;
    println!(
        "health check 200 on the new MASTER {} ms after the old one died",
        took.as_millis()
    );
    // The survivor's metrics tell the same story, and pass promtool.
    let text = poll_until(
        "the promote's cloud calls in the metrics",
        Duration::from_secs(10),
        || {
            let body = apis[b].get_at("/metrics").ok()?.body;
            let calls = sample(
                &body,
                "floatlb_cloud_call_duration_seconds_count{action=\"garp:Announce\",outcome=\"ok\"}",
            )?;
            (calls >= 1.0).then_some(body)
        },
    )?;
    promtool(&text)?;
    ensure!(
        sample(&text, "floatlb_ha_role{role=\"master\"}") == Some(1.0),
        "role"
    );
    ensure!(
        text.lines().any(|l| l.starts_with(
            "floatlb_ha_transitions_total{from=\"backup\",to=\"master\",reason=\"claim (PeerLost)\"}"
        )),
        "the claim is counted by its reason"
    );
    ensure!(
        sample(&text, "floatlb_bfd_packets_received_total").is_some_and(|n| n > 0.0),
        "BFD packets received"
    );
    let down = format!(
        "floatlb_bfd_session_state{{peer=\"{}\",state=\"down\"}}",
        hapair::lb_ip(m)
    );
    ensure!(
        sample(&text, &down) == Some(1.0),
        "BFD down after the peer died"
    );
    // FLOATLB_SCREENSHOT=PATH keeps a screenshot of the survivor's status
    // page, failover timeline included (docs/status-page.png).
    if let Ok(path) = std::env::var("FLOATLB_SCREENSHOT") {
        require_tools(&["chromium"])?;
        let shot = pair.dir.join("shot.png");
        let flag = format!("--screenshot={}", shot.display());
        chromium(
            &pair.nodes[b].ns,
            &pair.dir,
            &[&flag],
            "http://127.0.0.1:11111/",
        )?;
        std::fs::copy(&shot, &path)?;
        println!("screenshot in {path}");
    }
    Ok(())
}

/// Headless Chromium's flags (no sandbox: we run as root in a test).
const CHROMIUM: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--virtual-time-budget=6000",
    "--window-size=1200,900",
];

/// Runs chromium in `ns` (scratch files under `dir`) with `extra` flags on `url`.
fn chromium(
    ns: &floatlb_tests::netns::Netns,
    dir: &TempDir,
    extra: &[&str],
    url: &str,
) -> Result<std::process::Output> {
    let home = dir.join("chromium-home");
    std::fs::create_dir_all(&home)?;
    let out = ns
        .command("chromium")
        .env("HOME", &home)
        .arg(format!("--user-data-dir={}", home.display()))
        .args(CHROMIUM)
        .args(extra)
        .arg(url)
        .output()
        .context(
            "chromium not found: install it with scripts/setup.sh (Debian package chromium)",
        )?;
    ensure!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

#[test]
fn the_status_page_shows_the_role_and_the_services_in_a_browser() -> Result<()> {
    require_tools(&["chromium"])?;
    let mut lab = Lab::new("fhw", 2)?;
    lab.start(&["--probe-interval", "500ms"])?;
    let api = lab.api();
    api.wait_up(Duration::from_secs(10))?;
    ensure!(
        api.post("/config/loadbalancer", &monitored_body(PORT, &[0, 1]))?
            .is_success()
    );
    lab.tcp_answering(PORT, 8)?;
    let page = api.get_at("/")?;
    ensure!(page.status == 200, "{}", page.status);
    ensure!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let url = "http://127.0.0.1:11111/";
    let t = Instant::now();
    let dom = String::from_utf8(chromium(&lab.topo.lb, &lab.dir, &["--dump-dom"], url)?.stdout)?;
    println!(
        "chromium rendered the page in {} ms",
        t.elapsed().as_millis()
    );
    ensure!(
        dom.contains("data-loaded=\"1\""),
        "the page's script did not finish: {dom}"
    );
    ensure!(
        dom.contains("id=\"role\" class=\"pill MASTER\">MASTER<"),
        "role not shown: {dom}"
    );
    ensure!(dom.contains("web:llb-inst0"), "service not shown: {dom}");
    ensure!(
        dom.contains(&format!("{}:{EP_PORT}", endpoint_ip(1))),
        "endpoints not shown"
    );
    lab.stop()
}

/// The agent's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as u64;
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

/// Probe cost: 1,000 endpoints (125 services x 8) probed over TCP every
/// second; the agent's CPU over 10 s, against the same agent idle.
#[test]
fn probe_cpu_per_thousand_endpoints_at_one_second() -> Result<()> {
    let mut lab = Lab::new("fhc", 1)?;
    // 1,000 listening ports on endpoint 0 (the kernel completes the
    // handshakes; nobody needs to accept within the test's time).
    let ip = endpoint_ip(0);
    let _listeners =
        lab.topo.endpoints[0].enter(move || -> Result<Vec<std::net::TcpListener>> {
            (0..1000u16)
                .map(|i| Ok(std::net::TcpListener::bind((ip, 20_000 + i))?))
                .collect()
        })??;
    lab.start(&["--probe-interval", "1s"])?;
    let api = lab.api();
    api.wait_up(Duration::from_secs(10))?;
    let pid = lab.agent.as_ref().and_then(NsProcess::pid).context("pid")?;
    let sample = |secs: u64| -> Result<f64> {
        let c0 = cpu_time(pid)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        Ok((cpu_time(pid)? - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0)
    };
    let idle = sample(5)?;
    for s in 0..125u16 {
        let eps: Vec<(Ipv4Addr, u16)> = (0..8).map(|e| (ip, 20_000 + s * 8 + e)).collect();
        let b = kube_loxilb_body(
            EIP,
            &VIP.to_string(),
            1000 + s,
            "tcp",
            &format!("p{s}"),
            &eps,
        )
        .replace("\"Monitor\":false", "\"Monitor\":true")
        .replace("\"probetype\":\"\"", "\"probetype\":\"tcp\"");
        ensure!(api.post("/config/loadbalancer", &b)?.is_success());
    }
    poll_until("every endpoint probed", Duration::from_secs(30), || {
        let v = api.get("/config/endpoint/all").ok()?.json().ok()?;
        let all = v["Attr"].as_array()?;
        (all.len() == 1000 && all.iter().all(|e| e["lastProbe"] == "ok")).then_some(())
    })?;
    let busy = sample(10)?;
    let load = std::fs::read_to_string("/proc/loadavg")?;
    println!(
        "probe CPU, 1,000 TCP endpoints at 1 s: {:.2}% of a core ({busy:.2}% probing, {idle:.2}% idle); loadavg {}",
        busy - idle,
        load.trim()
    );
    lab.stop()
}

/// Health-check answer time while 16 clients create services as fast as
/// they can (the API benchmark's load).
#[test]
fn health_check_answer_time_under_api_load() -> Result<()> {
    let mut lab = Lab::new("fhl", 2)?;
    lab.start(&["--health-listen", "127.0.0.1:18080"])?;
    let api = lab.api();
    api.wait_up(Duration::from_secs(10))?;
    ensure!(
        api.post("/config/loadbalancer", &body(PORT, &[0, 1]))?
            .is_success()
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let created = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut load = Vec::new();
    for w in 0..16u16 {
        let (api, stop, created) = (api.clone(), stop.clone(), created.clone());
        load.push(std::thread::spawn(move || -> Result<()> {
            let mut i = 0u16;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 600 {
                let eps = [(endpoint_ip(usize::from(i % 2)), EP_PORT)];
                let port = 2000 + w * 600 + i;
                let b = kube_loxilb_body(EIP, &VIP.to_string(), port, "tcp", "load", &eps);
                ensure!(api.post("/config/loadbalancer", &b)?.is_success());
                created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += 1;
            }
            Ok(())
        }));
    }
    let health = on_port(&api, 18080);
    let mut times = Vec::new();
    let t0 = Instant::now();
    while times.len() < 300 {
        let t = Instant::now();
        let a = health.get_at("/health/lb/web:llb-inst0")?;
        times.push(t.elapsed());
        ensure!(a.status == 200, "{} {}", a.status, a.body);
        std::thread::sleep(Duration::from_millis(10));
    }
    let during = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let n = created.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "health check under API load ({n} services created in {} ms by 16 clients): p50 {} us, p99 {} us, max {} us; loadavg {}",
        during.as_millis(),
        pct(0.5).as_micros(),
        pct(0.99).as_micros(),
        times[times.len() - 1].as_micros(),
        std::fs::read_to_string("/proc/loadavg")?.trim()
    );
    lab.stop()
}
