//! End-to-end benchmark: one namespace topology, one run, four paths.
//!
//! Paths from the client to nginx endpoints:
//! - direct: the LB namespace only routes (kernel forwarding, no balancing)
//!   and the client talks to endpoint 0 itself;
//! - floatlb: the XDP fullnat datapath (round-robin over three endpoints),
//!   LB forwarding off;
//! - IPVS: NAT mode plus MASQUERADE, if the kernel has IPVS; otherwise the
//!   row says so and an iptables DNAT + MASQUERADE row (the same netfilter
//!   conntrack NAT that IPVS NAT relies on) is measured instead, labelled as such;
//! - HAProxy in TCP mode on the LB.
//!
//! Measures: wrk requests/s on keep-alive connections, wrk connections/s
//! (`Connection: close`, one request per connection), and one iperf3 stream
//! to endpoint 0 (every path has a service for port 5201 that only has
//! endpoint 0). Every measurement is bounded (`--secs`, default 3).
//!
//! Run as root: `cargo run --release -p floatlb-tests --bin bench_e2e`
//! (or `make bench`). Prints a markdown table with the ratios.
//! `BENCH_SECS` sets the duration of each measurement; `BENCH_PATHS`
//! (comma-separated: direct,floatlb,ipvs,haproxy) runs a subset.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use floatlb_tests::{
    agent::{Agent, TestEndpoint, TestService, write_config},
    netns::{BpfMount, Netns, NsProcess, TempDir, poll_until, require_root, require_tools},
    topology::{LB_CLIENT_IF, LB_ENDPOINT_IF, Topology, VIP, endpoint_ip},
};

const HTTP_PORT: u16 = 80;
const IPERF_PORT: u16 = 5201;
const ENDPOINTS: usize = 3;

#[derive(Debug, Default, Clone)]
struct Row {
    path: String,
    req_s: Option<f64>,
    conn_s: Option<f64>,
    gbit_s: Option<f64>,
    note: String,
}

struct Bench {
    secs: u64,
    conns: u32,
    threads: u32,
}

fn main() -> Result<()> {
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let bench = Bench {
        secs,
        conns: 64,
        threads: 2,
    };
    require_root()?;
    require_tools(&[
        "ip", "ethtool", "sysctl", "mount", "nginx", "wrk", "iperf3", "haproxy", "iptables",
        "ipvsadm",
    ])?;
    let topo = Topology::new("flbbench", ENDPOINTS)?;
    let dir = TempDir::new("flbbench-files")?;
    topo.client
        .sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
    topo.client.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    let mut servers = Vec::new();
    for (i, ns) in topo.endpoints.iter().enumerate() {
        servers.push(start_nginx(ns, &dir, i)?);
    }
    let _iperf = topo.endpoints[0].spawn(
        "iperf3",
        &["-s", "-B", &endpoint_ip(0).to_string(), "-p", "5201"],
        &dir.join("iperf3.log"),
    )?;
    for (i, ns) in topo.endpoints.iter().enumerate() {
        wait_port(ns, endpoint_ip(i), HTTP_PORT)?;
    }
    wait_port(&topo.endpoints[0], endpoint_ip(0), IPERF_PORT)?;

    let mut rows = Vec::new();
    let paths =
        std::env::var("BENCH_PATHS").unwrap_or_else(|_| "direct,floatlb,ipvs,haproxy".into());
    let want = |p: &str| paths.split(',').any(|x| x.trim() == p);

    // direct
    if want("direct") {
        topo.set_lb_forwarding(true)?;
        rows.push(bench.measure(&topo, "direct (no LB)", endpoint_ip(0), "")?);
        topo.set_lb_forwarding(false)?;
    }

    // floatlb
    if want("floatlb") {
        let bpf = BpfMount::new(dir.join("bpf"))?;
        let cfg = dir.join("lb.json");
        let eps = |port, n: usize| -> Vec<TestEndpoint> {
            (0..n)
                .map(|i| TestEndpoint {
                    ip: endpoint_ip(i),
                    port,
                    weight: 1,
                })
                .collect()
        };
        write_config(
            &cfg,
            &[
                TestService {
                    vip: VIP,
                    port: HTTP_PORT,
                    protocol: "tcp",
                    sel: 0,
                    endpoints: eps(HTTP_PORT, ENDPOINTS),
                },
                TestService {
                    vip: VIP,
                    port: IPERF_PORT,
                    protocol: "tcp",
                    sel: 0,
                    endpoints: eps(IPERF_PORT, 1),
                },
            ],
        )?;
        let (agent, _) = Agent::start(
            &topo.lb,
            &cfg,
            &[LB_CLIENT_IF, LB_ENDPOINT_IF],
            &bpf.path().join("floatlb"),
            &[],
            &dir.join("agent.log"),
        )?;
        let mode =
            if agent.process.log().contains("Native") || agent.process.log().contains("native") {
                "XDP native on veth"
            } else {
                "see agent log for XDP mode"
            };
        rows.push(bench.measure(&topo, "floatlb (XDP fullnat)", VIP, mode)?);
        agent.stop()?;
    }

    // IPVS, or the netfilter NAT stand-in when the kernel has no IPVS.
    let ipvs = topo.lb.run("ipvsadm", &["-Ln"]);
    if want("ipvs") {
        match ipvs {
            Ok(_) => {
                topo.set_lb_forwarding(true)?;
                setup_ipvs(&topo.lb)?;
                rows.push(bench.measure(&topo, "IPVS (NAT + MASQUERADE)", VIP, "")?);
                topo.lb.run("ipvsadm", &["-C"])?;
                topo.lb.run("iptables", &["-t", "nat", "-F"])?;
                topo.set_lb_forwarding(false)?;
            }
            Err(e) => {
                let why = format!("{e:#}");
                let why = why.lines().last().unwrap_or("").trim().to_string();
                eprintln!("IPVS unavailable: {why}");
                rows.push(Row {
                    path: "IPVS (NAT + MASQUERADE)".into(),
                    note: format!("not measured: this kernel has no IPVS ({why})"),
                    ..Row::default()
                });
                topo.set_lb_forwarding(true)?;
                setup_netfilter_nat(&topo.lb)?;
                rows.push(bench.measure(
                    &topo,
                    "iptables DNAT + MASQUERADE (stand-in for IPVS NAT)",
                    VIP,
                    "kernel conntrack NAT, the mechanism IPVS NAT + MASQUERADE uses",
                )?);
                topo.lb.run("iptables", &["-t", "nat", "-F"])?;
                topo.set_lb_forwarding(false)?;
            }
        }
    }

    // HAProxy
    if want("haproxy") {
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, haproxy_config())?;
        let _hap = topo.lb.spawn(
            "haproxy",
            &["-db", "-f", &cfg.to_string_lossy()],
            &dir.join("haproxy.log"),
        )?;
        wait_port(&topo.lb, VIP, HTTP_PORT)
            .with_context(|| format!("haproxy did not start:\n{}", _hap.log()))?;
        rows.push(bench.measure(&topo, "HAProxy (TCP mode)", VIP, "")?);
    }
    drop(servers);
    print_table(&rows, &bench);
    Ok(())
}

impl Bench {
    fn measure(&self, topo: &Topology, path: &str, target: Ipv4Addr, note: &str) -> Result<Row> {
        eprintln!("measuring {path} ...");
        let url = format!("http://{target}:{HTTP_PORT}/");
        let req_s = self.wrk(&topo.client, &url, false)?;
        let conn_s = self.wrk(&topo.client, &url, true)?;
        let gbit_s = self.iperf(&topo.client, target)?;
        eprintln!("  {req_s:.0} req/s, {conn_s:.0} conn/s, {gbit_s:.2} Gbit/s");
        Ok(Row {
            path: path.into(),
            req_s: Some(req_s),
            conn_s: Some(conn_s),
            gbit_s: Some(gbit_s),
            note: note.into(),
        })
    }

    fn wrk(&self, client: &Netns, url: &str, close: bool) -> Result<f64> {
        let d = format!("{}s", self.secs);
        let t = self.threads.to_string();
        let c = self.conns.to_string();
        let mut args = vec!["-t", &t, "-c", &c, "-d", &d, "--timeout", "2s"];
        if close {
            args.extend_from_slice(&["-H", "Connection: close"]);
        }
        args.push(url);
        let out = client.run("wrk", &args)?;
        let rate = out
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .with_context(|| format!("no Requests/sec in wrk output:\n{out}"))?;
        if let Some(errs) = out
            .lines()
            .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        {
            eprintln!(
                "  wrk ({}): {}",
                if close { "close" } else { "keep-alive" },
                errs.trim()
            );
        }
        Ok(rate)
    }

    fn iperf(&self, client: &Netns, target: Ipv4Addr) -> Result<f64> {
        let t = self.secs.to_string();
        let out = client.run(
            "iperf3",
            &["-c", &target.to_string(), "-p", "5201", "-t", &t, "-J"],
        )?;
        // "sum_received": { ... "bits_per_second": N ... }
        let recv = out
            .split("\"sum_received\"")
            .nth(1)
            .context("no sum_received in iperf3 output")?;
        let bps = recv
            .split("\"bits_per_second\":")
            .nth(1)
            .and_then(|s| s.split([',', '\n', '}']).next())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .with_context(|| format!("no bits_per_second in iperf3 output:\n{out}"))?;
        Ok(bps / 1e9)
    }
}

fn start_nginx(ns: &Netns, dir: &TempDir, i: usize) -> Result<NsProcess> {
    let d = dir.join(&format!("nginx{i}"));
    std::fs::create_dir_all(&d)?;
    let d = d.to_string_lossy().into_owned();
    let conf = format!(
        "worker_processes 1;\nuser root;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n access_log off;\n keepalive_requests 1000000;\n\
         client_body_temp_path {d}/cb; proxy_temp_path {d}/px; fastcgi_temp_path {d}/fc;\n\
         uwsgi_temp_path {d}/uw; scgi_temp_path {d}/sc;\n\
         server {{ listen {}:{HTTP_PORT} backlog=4096; location / {{ return 200 \"ok {i}\\n\"; }} }}\n}}\n",
        endpoint_ip(i)
    );
    let path = dir.join(&format!("nginx{i}.conf"));
    std::fs::write(&path, conf)?;
    ns.spawn(
        "nginx",
        &["-c", &path.to_string_lossy()],
        &dir.join(&format!("nginx{i}.log")),
    )
}

/// Waits until something listens on addr:port in `ns`.
fn wait_port(ns: &Netns, addr: Ipv4Addr, port: u16) -> Result<()> {
    let want = format!("{addr}:{port}");
    poll_until(
        &format!("listener on {want}"),
        Duration::from_secs(10),
        || {
            ns.run("ss", &["-Htln"])
                .ok()
                .filter(|s| s.contains(&want))
                .map(drop)
        },
    )
}

fn setup_ipvs(lb: &Netns) -> Result<()> {
    let vip = VIP.to_string();
    for (port, n) in [(HTTP_PORT, ENDPOINTS), (IPERF_PORT, 1)] {
        let svc = format!("{vip}:{port}");
        lb.run("ipvsadm", &["-A", "-t", &svc, "-s", "rr"])?;
        for i in 0..n {
            let real = format!("{}:{port}", endpoint_ip(i));
            lb.run("ipvsadm", &["-a", "-t", &svc, "-r", &real, "-m"])?;
        }
    }
    lb.sysctl("net.ipv4.vs.conntrack", "1")?;
    lb.run(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            LB_ENDPOINT_IF,
            "-j",
            "MASQUERADE",
        ],
    )?;
    Ok(())
}

fn setup_netfilter_nat(lb: &Netns) -> Result<()> {
    let vip = VIP.to_string();
    let http = HTTP_PORT.to_string();
    // Round-robin with the nth matcher: 1st of every 3 -> ep0, 1st of the
    // remaining 2 -> ep1, the rest -> ep2.
    for i in 0..ENDPOINTS {
        let to = format!("{}:{HTTP_PORT}", endpoint_ip(i));
        let every = (ENDPOINTS - i).to_string();
        let mut args = vec![
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            &vip,
            "-p",
            "tcp",
            "--dport",
            &http,
        ];
        if i + 1 < ENDPOINTS {
            args.extend_from_slice(&[
                "-m",
                "statistic",
                "--mode",
                "nth",
                "--every",
                &every,
                "--packet",
                "0",
            ]);
        }
        args.extend_from_slice(&["-j", "DNAT", "--to-destination", &to]);
        lb.run("iptables", &args)?;
    }
    let to = format!("{}:{IPERF_PORT}", endpoint_ip(0));
    lb.run(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            &vip,
            "-p",
            "tcp",
            "--dport",
            "5201",
            "-j",
            "DNAT",
            "--to-destination",
            &to,
        ],
    )?;
    lb.run(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            LB_ENDPOINT_IF,
            "-j",
            "MASQUERADE",
        ],
    )?;
    Ok(())
}

fn haproxy_config() -> String {
    let mut s = String::from(
        "global\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n",
    );
    s += &format!(
        "frontend web\n  bind {VIP}:{HTTP_PORT}\n  default_backend eps\n\nbackend eps\n  balance roundrobin\n"
    );
    for i in 0..ENDPOINTS {
        s += &format!("  server e{i} {}:{HTTP_PORT}\n", endpoint_ip(i));
    }
    s += &format!(
        "\nfrontend perf\n  bind {VIP}:{IPERF_PORT}\n  default_backend perf\n\nbackend perf\n  server e0 {}:{IPERF_PORT}\n",
        endpoint_ip(0)
    );
    s
}

fn fmt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.prec$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

fn print_table(rows: &[Row], bench: &Bench) {
    let find = |p: &str| rows.iter().find(|r| r.path.starts_with(p));
    let direct = find("direct");
    let flb = find("floatlb");
    println!(
        "\nwrk -t{} -c{} -d{}s (keep-alive for req/s; `Connection: close` for conn/s), iperf3 -t {} (one stream)\n",
        bench.threads, bench.conns, bench.secs, bench.secs
    );
    println!(
        "| path | req/s | conn/s | iperf3 Gbit/s | floatlb req/s ratio | floatlb conn/s ratio | note |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let (rr, cr) = match flb {
            Some(f) if !r.path.starts_with("floatlb") => {
                (ratio(f.req_s, r.req_s), ratio(f.conn_s, r.conn_s))
            }
            _ => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.path,
            fmt(r.req_s, 0),
            fmt(r.conn_s, 0),
            fmt(r.gbit_s, 2),
            rr,
            cr,
            r.note
        );
    }
    let target = |name: &str, got: String, goal: &str| println!("- {name}: {got} (target {goal})");
    println!();
    if let (Some(d), Some(f)) = (direct, flb) {
        target(
            "floatlb req/s / direct req/s",
            ratio(f.req_s, d.req_s),
            ">= 0.90x",
        );
        target(
            "floatlb iperf3 / direct iperf3",
            ratio(f.gbit_s, d.gbit_s),
            "none",
        );
    }
    if let Some(f) = flb {
        let ipvs = find("IPVS").filter(|r| r.conn_s.is_some());
        match ipvs {
            Some(i) => target(
                "floatlb conn/s / IPVS conn/s",
                ratio(f.conn_s, i.conn_s),
                ">= 2x",
            ),
            None => println!(
                "- floatlb conn/s / IPVS conn/s: n/a, IPVS not available on this kernel (target >= 2x)"
            ),
        }
        if let Some(n) = find("iptables") {
            target(
                "floatlb conn/s / netfilter NAT conn/s",
                ratio(f.conn_s, n.conn_s),
                "stand-in for the IPVS target, >= 2x",
            );
        }
        if let Some(h) = find("HAProxy") {
            target(
                "floatlb conn/s / HAProxy conn/s",
                ratio(f.conn_s, h.conn_s),
                "none",
            );
        }
    }
    if flb.is_none() {
        eprintln!("floatlb row missing");
    }
}
