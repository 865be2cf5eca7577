//! API benchmark (root): N services × 8 endpoints (default 10,000) created
//! through the REST API at concurrency 16, against applying the same
//! services from a `--config` file (SIGHUP) in the same run: the
//! datapath's own floor. Also the agent's RSS after the load, and the
//! latency of kube-loxilb's liveness probe (`GET /netlox/v1`) while the
//! load runs.
//!
//! Each round starts a fresh agent twice (state directory and pinned maps
//! wiped): once given the services in a file, once through the API, in
//! alternating order from round to round. Every POST is acknowledged only
//! once it is durable (the journal's group commit), as in production.
//!
//! `BENCH_API_SERVICES` (default 10000), `BENCH_API_ROUNDS` (default 3),
//! `BENCH_API_CONCURRENCY` (default 16). The agent is `FLOATLB_BIN`, else
//! the `floatlb` next to this binary.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use floatlb_tests::{
    apiclient::{API_PORT, kube_loxilb_body},
    apilab::{ApiLab, EIP},
    topology::{VIP, endpoint_ip},
};
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const ENDPOINTS: usize = 8;

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
        Err(_) => Ok(default),
    }
}

/// Service `i`: kube-loxilb's body, its own port, 8 endpoints on a
/// NodePort of its own.
fn body(i: usize) -> String {
    let port = u16::try_from(1000 + i).expect("service port");
    let node_port = u16::try_from(30000 + i % 2700).expect("node port");
    let eps: Vec<(Ipv4Addr, u16)> = (0..ENDPOINTS)
        .map(|e| (endpoint_ip(e), node_port))
        .collect();
    kube_loxilb_body(
        EIP,
        &VIP.to_string(),
        port,
        "tcp",
        &format!("bench_svc{i}"),
        &eps,
    )
}

/// One keep-alive HTTP/1.1 connection inside the LB namespace.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open() -> Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], API_PORT));
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Sends one request and reads the whole answer: (status, body).
    fn call(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        let req = format!(
            "{method} /netlox/v1{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse()?;
            }
        }
        let mut buf = vec![0; len];
        self.reader.read_exact(&mut buf)?;
        Ok((status, String::from_utf8_lossy(&buf).into_owned()))
    }
}

/// Runs `f` on a thread that joined the namespace `ns`.
fn in_ns<R: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<R> + Send + 'static,
) -> std::thread::JoinHandle<Result<R>> {
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        f()
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn count_services(ns: &str) -> Result<usize> {
    in_ns(ns, || {
        let mut c = Conn::open()?;
        let (status, body) = c.call("GET", "/config/loadbalancer/all", "")?;
        ensure!(status == 200, "GET all: {status}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["lbAttr"].as_array().map_or(0, Vec::len))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread panicked"))?
}

/// The file path: a fresh agent with an empty `--config`, the N services
/// written to it, SIGHUP, until the agent logs the reload.
fn file_apply(lab: &mut ApiLab, n: usize, rules: &[String]) -> Result<(Duration, u64)> {
    let cfg = lab.dir.join("services.json");
    std::fs::write(&cfg, r#"{"lbAttr":[]}"#)?;
    let cfg_s = cfg.to_string_lossy().into_owned();
    lab.start(&["--config", &cfg_s, "--max-services", "65536"])?;
    std::fs::write(&cfg, format!(r#"{{"lbAttr":[{}]}}"#, rules.join(",")))?;
    let pid = lab.pid().context("agent pid")?;
    let before = lab.log().matches("configuration reloaded").count();
    let t0 = Instant::now();
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGHUP)?;
    loop {
        let log = lab.log();
        if log.matches("configuration reloaded").count() > before {
            break;
        }
        if log.contains("reload rejected") || log.contains("cannot sync") {
            bail!("reload failed:\n{log}");
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("no reload within 600 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = t0.elapsed();
    let got = count_services(lab.topo.lb.name())?;
    ensure!(got == n, "file apply: {got} services listed, {n} expected");
    let (rss, _) = rss_kib(pid)?;
    if std::env::var_os("BENCH_API_SMAPS").is_some() {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
        let mut big: Vec<(u64, String)> = Vec::new();
        let mut cur = String::new();
        for l in smaps.lines() {
            if l.contains('-') && !l.starts_with(|c: char| c.is_ascii_uppercase()) {
                cur = l.to_string();
            } else if let Some(v) = l.strip_prefix("Rss:") {
                let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                big.push((kib, cur.clone()));
            }
        }
        big.sort();
        for (kib, m) in big.iter().rev().take(8) {
            println!("  {kib} kB {m}");
        }
    }
    Ok((took, rss))
}

struct ApiRun {
    took: Duration,
    probe_ms: Vec<f64>,
    rss_kib: u64,
    hwm_kib: u64,
}

/// The API path: a fresh agent, `conc` keep-alive connections each POSTing
/// its share of the services, and one more probing `GET /netlox/v1` every
/// 10 ms until they are done.
fn api_apply(lab: &mut ApiLab, n: usize, conc: usize, rules: &Arc<Vec<String>>) -> Result<ApiRun> {
    lab.start(&["--max-services", "65536"])?;
    lab.api().wait_up(Duration::from_secs(10))?;
    let ns = lab.topo.lb.name().to_string();
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let done = done.clone();
        in_ns(&ns, move || {
            let mut c = Conn::open()?;
            let mut lat = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (status, _) = c.call("GET", "", "")?;
                ensure!(status == 200, "liveness probe answered {status}");
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(lat)
        })
    };
    let barrier = Arc::new(std::sync::Barrier::new(conc + 1));
    let workers: Vec<_> = (0..conc)
        .map(|w| {
            let rules = rules.clone();
            let barrier = barrier.clone();
            in_ns(&ns, move || {
                let mut c = Conn::open()?;
                barrier.wait();
                for i in (w..rules.len()).step_by(conc) {
                    let (status, body) = c.call("POST", "/config/loadbalancer", &rules[i])?;
                    ensure!(status == 200, "service {i}: {status} {body}");
                }
                Ok(())
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    let took = t0.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut probe_ms = prober
        .join()
        .map_err(|_| anyhow::anyhow!("prober panicked"))??;
    probe_ms.sort_by(f64::total_cmp);
    let got = count_services(&ns)?;
    ensure!(got == n, "API: {got} services listed, {n} expected");
    let (rss_kib, hwm_kib) = rss_kib(lab.pid().context("agent pid")?)?;
    Ok(ApiRun {
        took,
        probe_ms,
        rss_kib,
        hwm_kib,
    })
}

fn main() -> Result<()> {
    let n = env_usize("BENCH_API_SERVICES", 10_000)?;
    let rounds = env_usize("BENCH_API_ROUNDS", 3)?;
    let conc = env_usize("BENCH_API_CONCURRENCY", 16)?;
    ensure!(
        n <= 60_000,
        "BENCH_API_SERVICES {n}: at most 60000 (one port each)"
    );
    let rules: Arc<Vec<String>> = Arc::new((0..n).map(body).collect());
    let mut lab = ApiLab::new("bapi", ENDPOINTS)?;
    println!(
        "bench_api: {n} services x {ENDPOINTS} endpoints, API at concurrency {conc}, {rounds} rounds, load average {}",
        std::fs::read_to_string("/proc/loadavg")?.trim()
    );
    println!(
        "{:>5} | {:>10} | {:>10} | {:>9} | {:>13} | {:>13} | {:>8} | {:>8} | {:>13}",
        "round",
        "file ms",
        "API ms",
        "API/file",
        "probe p50 ms",
        "probe p99 ms",
        "RSS MiB",
        "peak MiB",
        "file RSS MiB"
    );
    let mut ratios = Vec::new();
    let mut rss = Vec::new();
    let mut p99s = Vec::new();
    for round in 0..rounds {
        // Alternate the order so neither path always runs on a warmer machine.
        let ((file, file_rss), api) = if round % 2 == 0 {
            let f = file_apply(&mut lab, n, &rules)?;
            lab.kill()?;
            lab.wipe()?;
            let a = api_apply(&mut lab, n, conc, &rules)?;
            (f, a)
        } else {
            let a = api_apply(&mut lab, n, conc, &rules)?;
            lab.kill()?;
            lab.wipe()?;
            let f = file_apply(&mut lab, n, &rules)?;
            (f, a)
        };
        lab.kill()?;
        lab.wipe()?;
        let ratio = api.took.as_secs_f64() / file.as_secs_f64();
        let p99 = percentile(&api.probe_ms, 99.0);
        println!(
            "{:>5} | {:>10.0} | {:>10.0} | {:>8.2}x | {:>13.2} | {:>13.2} | {:>8.1} | {:>8.1} | {:>13.1}",
            round + 1,
            file.as_secs_f64() * 1e3,
            api.took.as_secs_f64() * 1e3,
            ratio,
            percentile(&api.probe_ms, 50.0),
            p99,
            api.rss_kib as f64 / 1024.0,
            api.hwm_kib as f64 / 1024.0,
            file_rss as f64 / 1024.0,
        );
        ratios.push(ratio);
        rss.push(api.rss_kib as f64 / 1024.0);
        p99s.push(p99);
    }
    ratios.sort_by(f64::total_cmp);
    rss.sort_by(f64::total_cmp);
    p99s.sort_by(f64::total_cmp);
    println!(
        "median API/file {:.2}x (target <= 1.5x), median RSS {:.1} MiB (target <= 64 MiB), median probe p99 {:.2} ms; load average after {}",
        percentile(&ratios, 50.0),
        percentile(&rss, 50.0),
        percentile(&p99s, 50.0),
        std::fs::read_to_string("/proc/loadavg")?.trim()
    );
    Ok(())
}
