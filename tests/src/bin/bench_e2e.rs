//! End-to-end benchmark: one namespace topology, one run, four paths.
//!
//! Paths from the client to nginx endpoints:
//! - direct: the LB namespace only routes (kernel forwarding, no balancing)
//!   and the client talks to the endpoints themselves;
//! - floatlb: the XDP fullnat datapath (round-robin over three endpoints),
//!   LB forwarding off;
//! - IPVS: NAT mode plus MASQUERADE, if the kernel has IPVS; otherwise the
//!   row says so and an iptables DNAT + MASQUERADE row (the same netfilter
//!   conntrack NAT that IPVS NAT relies on) is measured instead, labelled as such;
//! - HAProxy in TCP mode on the LB.
//!
//! Measures: wrk requests/s on keep-alive connections, wrk connections/s
//! (`Connection: close`, one request per connection), both from three
//! concurrent wrk processes (for direct, one per endpoint, so every path
//! spreads the load over the same three nginx servers), and one iperf3 stream
//! to endpoint 0 (every path has a service for port 5201 that only has
//! endpoint 0). Every measurement is bounded (`--secs`, default 3).
//!
//! Run as root: `cargo run --release -p floatlb-tests --bin bench_e2e`
//! (or `make bench`). Prints a markdown table with the ratios.
//! `BENCH_SECS` (default 2) sets the duration of each measurement and
//! `BENCH_ROUNDS` (default 5) the number of interleaved rounds; `BENCH_PATHS`
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
/// HAProxy's own source address towards the endpoints. The netfilter NAT
/// baseline masquerades to the LB's address on that segment and keeps the
/// client's port; had HAProxy used that address too, its connections' TIME_WAIT
/// state on the endpoints (the server closes first) would meet the next
/// round's masqueraded SYNs with the same 4-tuple, stalling them for a
/// retransmission: measured, the baseline fell from ~16k to 1-4k conn/s after
/// the first round. Every path now leaves with a source address of its own
/// (floatlb SNATs to the VIP).
const HAPROXY_SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);

/// The paths compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    FloatlbNative,
    FloatlbGeneric,
    Ipvs,
    NetfilterNat,
    Haproxy,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct (no LB)",
            Self::FloatlbNative => "floatlb XDP fullnat (native)",
            Self::FloatlbGeneric => "floatlb XDP fullnat (generic)",
            Self::Ipvs => "IPVS (NAT + MASQUERADE)",
            Self::NetfilterNat => "iptables DNAT + MASQUERADE (IPVS stand-in)",
            Self::Haproxy => "HAProxy (TCP mode)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::FloatlbNative | Self::FloatlbGeneric => "floatlb",
            Self::Ipvs => "ipvs",
            Self::NetfilterNat => "ipvs",
            Self::Haproxy => "haproxy",
        }
    }

    /// One URL per endpoint: the endpoints themselves for the direct path,
    /// the VIP otherwise.
    fn urls(self) -> Vec<String> {
        (0..ENDPOINTS)
            .map(|i| {
                let host = if self == Self::Direct {
                    endpoint_ip(i)
                } else {
                    VIP
                };
                format!("http://{host}:{HTTP_PORT}/")
            })
            .collect()
    }

    /// Where the iperf3 stream goes (it always ends at endpoint 0).
    fn target(self) -> Ipv4Addr {
        if self == Self::Direct {
            endpoint_ip(0)
        } else {
            VIP
        }
    }
}

/// Samples of one path across rounds.
#[derive(Debug, Default, Clone)]
struct Samples {
    req_s: Vec<f64>,
    conn_s: Vec<f64>,
    gbit_s: Vec<f64>,
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    (!v.is_empty()).then(|| v[v.len() / 2])
}

struct Bench {
    secs: u64,
    conns: u32,
    threads: u32,
    rounds: usize,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Everything the paths share: topology, servers, files.
struct Lab {
    bench: Bench,
    topo: Topology,
    dir: TempDir,
    bpf: BpfMount,
}

fn main() -> Result<()> {
    let bench = Bench {
        secs: env_num("BENCH_SECS", 2),
        conns: 63,
        threads: 3,
        rounds: env_num("BENCH_ROUNDS", 5),
    };
    require_root()?;
    require_tools(&[
        "ip", "ethtool", "sysctl", "mount", "nginx", "wrk", "iperf3", "haproxy", "iptables",
        "ipvsadm", "ss",
    ])?;
    let topo = Topology::new("flbbench", ENDPOINTS)?;
    let dir = TempDir::new("flbbench-files")?;
    let bpf = BpfMount::new(dir.join("bpf"))?;
    topo.client
        .sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
    topo.client.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    let lab = Lab {
        bench,
        topo,
        dir,
        bpf,
    };
    let topo = &lab.topo;
    let dir = &lab.dir;
    let mut servers = Vec::new();
    for (i, ns) in topo.endpoints.iter().enumerate() {
        servers.push(start_nginx(ns, dir, i)?);
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
    write_floatlb_config(&dir.join("lb.json"))?;

    // HAProxy listens on the VIP throughout; XDP, IPVS and DNAT all take
    // VIP packets before they reach its sockets, so it only serves its own row.
    let hap_cfg = dir.join("haproxy.cfg");
    std::fs::write(&hap_cfg, haproxy_config())?;
    topo.lb
        .addr_add(LB_ENDPOINT_IF, &format!("{HAPROXY_SRC}/24"))?;
    let hap = topo.lb.spawn(
        "haproxy",
        &["-db", "-f", &hap_cfg.to_string_lossy()],
        &dir.join("haproxy.log"),
    )?;
    wait_port(&topo.lb, VIP, HTTP_PORT)
        .with_context(|| format!("haproxy did not start:\n{}", hap.log()))?;

    let ipvs_missing = topo.lb.run("ipvsadm", &["-Ln"]).err().map(|e| {
        format!("{e:#}")
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string()
    });
    if let Some(why) = &ipvs_missing {
        eprintln!("IPVS unavailable ({why}); measuring iptables DNAT + MASQUERADE instead");
    }
    let wanted =
        std::env::var("BENCH_PATHS").unwrap_or_else(|_| "direct,floatlb,ipvs,haproxy".into());
    let want = |p: Path| wanted.split(',').any(|x| x.trim() == p.key());
    let mut paths: Vec<Path> = vec![Path::Direct, Path::FloatlbNative, Path::FloatlbGeneric];
    paths.push(if ipvs_missing.is_some() {
        Path::NetfilterNat
    } else {
        Path::Ipvs
    });
    paths.push(Path::Haproxy);
    paths.retain(|&p| want(p));

    // Interleaved rounds: every path is measured once per round, so a burst
    // of load from elsewhere on the machine hits all paths alike; the
    // report uses each path's median.
    let mut samples: Vec<Samples> = vec![Samples::default(); paths.len()];
    for round in 0..lab.bench.rounds {
        for (k, &path) in paths.iter().enumerate() {
            eprintln!("round {}/{}: {}", round + 1, lab.bench.rounds, path.label());
            let guard = lab.enter(path)?;
            let s = &mut samples[k];
            let urls = path.urls();
            s.req_s.push(lab.bench.wrk(&topo.client, &urls, false)?);
            s.conn_s.push(lab.bench.wrk(&topo.client, &urls, true)?);
            s.gbit_s.push(lab.bench.iperf(&topo.client, path.target())?);
            lab.leave(path, guard)?;
            eprintln!(
                "  {:.0} req/s, {:.0} conn/s, {:.2} Gbit/s",
                s.req_s.last().unwrap_or(&0.0),
                s.conn_s.last().unwrap_or(&0.0),
                s.gbit_s.last().unwrap_or(&0.0)
            );
        }
    }
    drop(hap);
    drop(servers);
    print_table(&lab.bench, &paths, &samples, ipvs_missing.as_deref());
    Ok(())
}

fn write_floatlb_config(cfg: &std::path::Path) -> Result<()> {
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
        cfg,
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
    )
}

impl Lab {
    /// Sets the LB up for `path`; the returned agent (floatlb paths) must be
    /// passed to [`Lab::leave`].
    fn enter(&self, path: Path) -> Result<Option<Agent>> {
        let lb = &self.topo.lb;
        match path {
            Path::Direct => self.topo.set_lb_forwarding(true)?,
            Path::FloatlbNative | Path::FloatlbGeneric => {
                let mode = if path == Path::FloatlbNative {
                    "native"
                } else {
                    "generic"
                };
                let (agent, _) = Agent::start(
                    lb,
                    &self.dir.join("lb.json"),
                    &[LB_CLIENT_IF, LB_ENDPOINT_IF],
                    &self.bpf.path().join("floatlb"),
                    &["--xdp-mode", mode],
                    &self.dir.join("agent.log"),
                )?;
                return Ok(Some(agent));
            }
            Path::Ipvs => {
                self.topo.set_lb_forwarding(true)?;
                setup_ipvs(lb)?;
            }
            Path::NetfilterNat => {
                self.topo.set_lb_forwarding(true)?;
                setup_netfilter_nat(lb)?;
            }
            Path::Haproxy => {}
        }
        Ok(None)
    }

    fn leave(&self, path: Path, agent: Option<Agent>) -> Result<()> {
        let lb = &self.topo.lb;
        if let Some(agent) = agent {
            agent.stop()?;
        }
        match path {
            Path::Ipvs => {
                lb.run("ipvsadm", &["-C"])?;
                lb.run("iptables", &["-t", "nat", "-F"])?;
            }
            Path::NetfilterNat => {
                lb.run("iptables", &["-t", "nat", "-F"])?;
            }
            _ => {}
        }
        self.topo.set_lb_forwarding(false)
    }
}

impl Bench {
    /// Runs one wrk per target URL at the same time (`threads` threads and
    /// `conns` connections in total, split evenly) and sums their rates.
    /// The direct path gives each endpoint its own URL, the LB paths give the
    /// VIP three times, so the client side is the same for every path.
    fn wrk(&self, client: &Netns, urls: &[String], close: bool) -> Result<f64> {
        let n = u32::try_from(urls.len())?;
        let d = format!("{}s", self.secs);
        let t = (self.threads / n).max(1).to_string();
        let c = (self.conns / n).max(1).to_string();
        let children = urls
            .iter()
            .map(|url| {
                let mut cmd = client.command("wrk");
                cmd.args(["-t", &t, "-c", &c, "-d", &d, "--timeout", "2s"]);
                if close {
                    cmd.args(["-H", "Connection: close"]);
                }
                cmd.arg(url)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .context("spawn wrk")
            })
            .collect::<Result<Vec<_>>>()?;
        let mut total = 0.0;
        for child in children {
            let out = child.wait_with_output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let rate = text
                .lines()
                .find_map(|l| l.strip_prefix("Requests/sec:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .with_context(|| {
                    format!(
                        "no Requests/sec in wrk output:\n{text}{}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
            if let Some(errs) = text
                .lines()
                .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
            {
                eprintln!(
                    "  wrk ({}): {}",
                    if close { "close" } else { "keep-alive" },
                    errs.trim()
                );
            }
            total += rate;
        }
        Ok(total)
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

/// One nginx process per endpoint. `master_process off`: the process that
/// serves is the one the harness kills, so no worker outlives the run (a
/// master killed with SIGKILL leaves its workers behind).
fn start_nginx(ns: &Netns, dir: &TempDir, i: usize) -> Result<NsProcess> {
    let d = dir.join(&format!("nginx{i}"));
    std::fs::create_dir_all(&d)?;
    let d = d.to_string_lossy().into_owned();
    let conf = format!(
        "master_process off;\nuser root;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
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
    masquerade_to_endpoints(lb)
}

/// Source NAT of everything leaving towards the endpoints (the MASQUERADE
/// half of both kernel NAT baselines).
fn masquerade_to_endpoints(lb: &Netns) -> Result<()> {
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
    masquerade_to_endpoints(lb)
}

fn haproxy_config() -> String {
    let mut s = String::from(
        "global\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n",
    );
    s += &format!(
        "frontend web\n  bind {VIP}:{HTTP_PORT}\n  default_backend eps\n\nbackend eps\n  balance roundrobin\n  source {HAPROXY_SRC}\n"
    );
    for i in 0..ENDPOINTS {
        s += &format!("  server e{i} {}:{HTTP_PORT}\n", endpoint_ip(i));
    }
    s += &format!(
        "\nfrontend perf\n  bind {VIP}:{IPERF_PORT}\n  default_backend perf\n\nbackend perf\n  source {HAPROXY_SRC}\n  server e0 {}:{IPERF_PORT}\n",
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

fn spread(v: &[f64], prec: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "n/a".into()
    } else {
        format!("{lo:.prec$}-{hi:.prec$}")
    }
}

fn print_table(bench: &Bench, paths: &[Path], samples: &[Samples], ipvs_missing: Option<&str>) {
    let med = |p: Path, f: fn(&Samples) -> &Vec<f64>| {
        paths
            .iter()
            .position(|&q| q == p)
            .and_then(|k| median(f(&samples[k])))
    };
    let req = |p| med(p, |s| &s.req_s);
    let conn = |p| med(p, |s| &s.conn_s);
    let gbit = |p| med(p, |s| &s.gbit_s);
    println!(
        "\nmedian of {} interleaved rounds; {ENDPOINTS} concurrent `wrk -t{} -c{} -d{}s` (one per endpoint for direct, all to the VIP otherwise; keep-alive for req/s, `Connection: close` for conn/s); iperf3 -t {} one stream to endpoint 0\n",
        bench.rounds,
        bench.threads / ENDPOINTS as u32,
        bench.conns / ENDPOINTS as u32,
        bench.secs,
        bench.secs
    );
    println!("| path | req/s | conn/s | iperf3 Gbit/s | req/s range | conn/s range |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (k, &p) in paths.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            p.label(),
            fmt(req(p), 0),
            fmt(conn(p), 0),
            fmt(gbit(p), 2),
            spread(&samples[k].req_s, 0),
            spread(&samples[k].conn_s, 0),
        );
    }
    if let Some(why) = ipvs_missing {
        println!("| IPVS (NAT + MASQUERADE) | n/a | n/a | n/a | | | not measured: {why} |");
    }
    println!();
    let line = |name: &str, r: String, goal: &str| println!("- {name}: {r} ({goal})");
    for f in [Path::FloatlbNative, Path::FloatlbGeneric] {
        if !paths.contains(&f) {
            continue;
        }
        let l = f.label();
        line(
            &format!("{l} req/s vs direct"),
            ratio(req(f), req(Path::Direct)),
            "target >= 0.90x",
        );
        line(
            &format!("{l} conn/s vs direct"),
            ratio(conn(f), conn(Path::Direct)),
            "no target",
        );
        let base = if ipvs_missing.is_some() {
            Path::NetfilterNat
        } else {
            Path::Ipvs
        };
        line(
            &format!("{l} conn/s vs {}", base.label()),
            ratio(conn(f), conn(base)),
            "target >= 2x vs IPVS",
        );
        line(
            &format!("{l} req/s vs {}", base.label()),
            ratio(req(f), req(base)),
            "no target",
        );
        line(
            &format!("{l} conn/s vs HAProxy"),
            ratio(conn(f), conn(Path::Haproxy)),
            "no target",
        );
        line(
            &format!("{l} req/s vs HAProxy"),
            ratio(req(f), req(Path::Haproxy)),
            "no target",
        );
        line(
            &format!("{l} iperf3 vs direct"),
            ratio(gbit(f), gbit(Path::Direct)),
            "no target",
        );
    }
}
