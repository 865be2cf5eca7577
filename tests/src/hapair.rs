//! An HA pair on one L2 segment, for failover tests and the HA benchmark.
//!
//! ```text
//!                         switch ns: bridge br0
//!     ┌───────────┬──────────────┬──────────────┬──────────────┐
//!  client ns    lb0 ns         lb1 ns         endpoint ns
//!  eth0         lbe            lbe            eth0
//!  10.1.0.2     10.1.0.10      10.1.0.11      10.1.0.21 (UDP echo :8080)
//!               VIP 10.1.0.100 on the MASTER's lbe (gARP provider)
//! ```
//!
//! Both agents run `--cloud=garp --garp-iface lbe` with XDP on `lbe`
//! (one-arm, XDP_TX; native mode unless `FLOATLB_HA_XDP_MODE` says
//! otherwise, with an `xdp_pass` program on the switch's end of each LB
//! link) and a BFD session to each other. The VIP lies in the
//! segment's subnet, so the client and the endpoint reach it by ARP and
//! follow the MASTER through its gratuitous ARPs. The service is
//! `VIP:80/udp -> 10.1.0.21:8080`, fullnat with the VIP as source.
//!
//! The [`Probe`] sends one UDP datagram to the VIP every millisecond and
//! records when each echo comes back, so the largest gap in the echoes is
//! the client-visible outage.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::{
    agent::{TestEndpoint, TestService, floatlb_binary, write_config},
    netns::{BpfMount, Netns, NsProcess, TempDir, require_root, require_tools, unique_name, veth},
    servers::EchoServer,
};

/// The HA hold timers of the pair tests: BFD must be Up 1.5 s before the
/// preferred node claims at a cold start (plus the 1 s handover pause) and
/// before a returning node 0 gets the role back; a BACKUP claims after 6 s
/// without a MASTER; a flapping link is held down for 2 s.
pub const TEST_HOLDS: &[&str] = &[
    "--claim-hold-ms",
    "6000",
    "--preempt-hold-ms",
    "1500",
    "--flap-hold-down-ms",
    "2000",
];

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
pub const ENDPOINT_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 21);
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 100);
pub const SERVICE_PORT: u16 = 80;
pub const ENDPOINT_PORT: u16 = 8080;
/// The LB's interface on the segment.
pub const LB_IF: &str = "lbe";

pub fn lb_ip(node: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 10 + u8::try_from(node).expect("node index"))
}

/// The pair's `--xdp-mode`: `FLOATLB_HA_XDP_MODE`, else `native` (the
/// production mode on ENA). Native XDP_TX into a veth needs an XDP program
/// on the peer: [`Pair::new`] attaches `xdp_pass` to the switch's ends.
pub fn xdp_mode() -> String {
    std::env::var("FLOATLB_HA_XDP_MODE").unwrap_or_else(|_| "native".into())
}

pub fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One LB node: its namespace, bpffs, files and (when running) agent.
pub struct Node {
    pub index: usize,
    pub agent: Option<NsProcess>,
    pub bpf: BpfMount,
    pub ns: Netns,
    starts: usize,
}

/// The pair, the client, the endpoint and the switch. Field order is drop
/// order: processes, then servers, then namespaces, then files.
pub struct Pair {
    pub nodes: [Node; 2],
    /// XDP_PASS programs on the switch's ends of the LB links (native mode).
    _xdp_pass: Vec<floatlb_dataplane::XdpPass>,
    _server: EchoServer,
    pub client: Netns,
    pub endpoint: Netns,
    pub switch: Netns,
    pub dir: TempDir,
}

/// A role sample of both nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(pub [String; 2]);

impl Pair {
    pub fn new(prefix: &str) -> Result<Self> {
        require_root()?;
        require_tools(&["ip", "ethtool", "sysctl", "mount", "tc"])?;
        floatlb_binary()?;
        let tag = unique_name(prefix);
        let dir = TempDir::new(&format!("{tag}-files"))?;
        let switch = Netns::new(format!("{tag}-sw"))?;
        switch.add_bridge("br0")?;
        let client = Netns::new(format!("{tag}-c"))?;
        let endpoint = Netns::new(format!("{tag}-e"))?;
        let mut nodes = Vec::new();
        let mut xdp_pass = Vec::new();
        for i in 0..2 {
            let ns = Netns::new(format!("{tag}-lb{i}"))?;
            let port = format!("swl{i}");
            veth(&ns, LB_IF, &switch, &port)?;
            switch.set_master(&port, "br0")?;
            // XDP_TX on lbe lands on this peer: it needs NAPI (GRO on).
            switch.enable_gro(&port)?;
            if xdp_mode() == "native" {
                // Native XDP_TX (and redirect) into a veth is queued on the
                // peer's XDP ring, which only an XDP program on the peer
                // consumes reliably (docs/DATAPATH.md).
                let dev = port.clone();
                xdp_pass.push(
                    switch
                        .enter(move || floatlb_dataplane::attach_xdp_pass(&dev))?
                        .with_context(|| format!("XDP_PASS program on {port}"))?,
                );
            }
            ns.addr_add(LB_IF, &format!("{}/24", lb_ip(i)))?;
            ns.sysctl("net.ipv4.ip_forward", "0")?;
            ns.sysctl("net.ipv4.conf.lo.forwarding", "1")?;
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            let bpf = BpfMount::new(dir.join(&format!("bpf{i}")))?;
            nodes.push(Node {
                index: i,
                agent: None,
                bpf,
                ns,
                starts: 0,
            });
        }
        for (ns, port, ip) in [(&client, "swc", CLIENT_IP), (&endpoint, "swe", ENDPOINT_IP)] {
            veth(ns, "eth0", &switch, port)?;
            switch.set_master(port, "br0")?;
            switch.enable_gro(port)?;
            ns.addr_add("eth0", &format!("{ip}/24"))?;
        }
        let server =
            EchoServer::start(&endpoint, SocketAddrV4::new(ENDPOINT_IP, ENDPOINT_PORT), 7)?;
        write_config(
            &dir.join("lb.json"),
            &[TestService {
                vip: VIP,
                port: SERVICE_PORT,
                protocol: "udp",
                sel: 0,
                endpoints: vec![TestEndpoint {
                    ip: ENDPOINT_IP,
                    port: ENDPOINT_PORT,
                    weight: 1,
                }],
            }],
        )?;
        let nodes: [Node; 2] = nodes.try_into().map_err(|_| anyhow::anyhow!("two nodes"))?;
        Ok(Self {
            nodes,
            _xdp_pass: xdp_pass,
            _server: server,
            client,
            endpoint,
            switch,
            dir,
        })
    }

    pub fn state_file(&self, node: usize) -> PathBuf {
        self.dir.join(&format!("state{node}.json"))
    }

    pub fn log_path(&self, node: usize) -> PathBuf {
        self.dir
            .join(&format!("agent{node}-{}.log", self.nodes[node].starts))
    }

    /// Spawns node `i`'s agent (does not wait). `ka_us`/`mult`: BFD timers;
    /// `extra`: further flags (hold timers).
    pub fn spawn(&mut self, i: usize, ka_us: u32, mult: u8, extra: &[&str]) -> Result<()> {
        let bin = floatlb_binary()?.to_string_lossy().into_owned();
        let config = self.dir.join("lb.json").to_string_lossy().into_owned();
        let state = self.state_file(i).to_string_lossy().into_owned();
        let _ = std::fs::remove_file(&state);
        // Each node keeps its own API state, across its restarts.
        let state_dir = self
            .dir
            .join(&format!("state{i}"))
            .to_string_lossy()
            .into_owned();
        let pin = self.nodes[i]
            .bpf
            .path()
            .join("floatlb")
            .to_string_lossy()
            .into_owned();
        let ka = format!("{}:{}:{ka_us}", lb_ip(1 - i), lb_ip(i));
        let self_id = i.to_string();
        let mult = mult.to_string();
        let xdp_mode = xdp_mode();
        let mut args: Vec<&str> = vec![
            "--config",
            &config,
            "--pin-dir",
            &pin,
            "--fib-lookup-iface",
            "lo",
            "--iface",
            LB_IF,
            // Native by default (`FLOATLB_HA_XDP_MODE=generic` for the
            // generic path). Without the XDP_PASS programs on the switch's
            // ends, native XDP_TX into the veth stalls after the first
            // frames (GRO/NAPI on the peer is not enough): measured, the
            // probe then gets 1 echo in 5 s.
            "--xdp-mode",
            &xdp_mode,
            "--cloud",
            "garp",
            "--garp-iface",
            LB_IF,
            "--garp-count",
            "3",
            "--garp-span-ms",
            "100",
            "--self",
            &self_id,
            "--ka",
            &ka,
            "--ka-mult",
            &mult,
            "--ha-state-file",
            &state,
            "--state-dir",
            &state_dir,
        ];
        args.extend_from_slice(extra);
        self.nodes[i].starts += 1;
        let log = self.log_path(i);
        let p = self.nodes[i].ns.spawn(&bin, &args, &log)?;
        self.nodes[i].agent = Some(p);
        Ok(())
    }

    /// Waits until node `i` logs that it runs.
    pub fn wait_running(&mut self, i: usize) -> Result<()> {
        let a = self.nodes[i].agent.as_mut().context("agent not started")?;
        a.wait_for_log(crate::agent::READY_LINE, Duration::from_secs(20))?;
        Ok(())
    }

    /// Current role of node `i` from its state file ("Init" when absent).
    pub fn role(&self, i: usize) -> String {
        read_state(&self.state_file(i))
            .and_then(|v| v["role"].as_str().map(str::to_string))
            .unwrap_or_else(|| "Init".into())
    }

    pub fn roles(&self) -> Roles {
        Roles([self.role(0), self.role(1)])
    }

    /// Polls (every 10 ms) until node `i` has `role`; fails with both logs.
    pub fn wait_role(&self, i: usize, role: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.role(i) == role {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "node {i} not {role} within {timeout:?} (roles {:?}); {}",
                    self.roles(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls (every 10 ms) until node `i`'s BFD session to the peer is Up
    /// and has not changed for `stable` (from its state file).
    pub fn wait_bfd_settled(&self, i: usize, stable: Duration, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let stable_us = stable.as_micros() as u64;
        loop {
            let bfd = read_state(&self.state_file(i)).map(|v| v["bfd"].clone());
            let settled = bfd.as_ref().is_some_and(|b| {
                b["new"] == "Up"
                    && b["at_unix_us"]
                        .as_u64()
                        .is_some_and(|at| now_unix_us().saturating_sub(at) >= stable_us)
            });
            if settled {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "node {i}: BFD not Up and unchanged for {stable:?} within {timeout:?} (last: {bfd:?}){}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls until node `i` logged a finished cloud promote.
    pub fn wait_promoted(&self, i: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self
                .events(i, "ha_cloud")
                .iter()
                .any(|v| v["job"].get("promote").is_some())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "node {i} finished no promote within {timeout:?}{}",
            self.logs()
        )
    }

    /// Polls until exactly one node is MASTER; returns it.
    pub fn wait_one_master(&self, timeout: Duration) -> Result<usize> {
        let start = Instant::now();
        loop {
            let r = self.roles();
            let m: Vec<usize> = (0..2).filter(|&i| r.0[i] == "Master").collect();
            if m.len() == 1 {
                return Ok(m[0]);
            }
            if start.elapsed() > timeout {
                bail!("no single MASTER within {timeout:?}: {r:?}{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Samples both roles every 10 ms for `dur`; returns the samples.
    pub fn sample_roles(&self, dur: Duration) -> Vec<Roles> {
        let start = Instant::now();
        let mut out = Vec::new();
        while start.elapsed() < dur {
            out.push(self.roles());
            std::thread::sleep(Duration::from_millis(10));
        }
        out
    }

    /// Both agents' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            if let Some(a) = &n.agent {
                s.push_str(&format!(
                    "\n--- node {} log ---\n{}",
                    n.index,
                    tail(&a.log(), 60)
                ));
            }
        }
        s
    }

    /// JSON event lines of node `i`'s current agent with this `event`.
    pub fn events(&self, i: usize, event: &str) -> Vec<serde_json::Value> {
        let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        log.lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == event)
            .collect()
    }

    /// Role transitions of node `i` (from its event lines).
    pub fn transitions(&self, i: usize) -> Vec<(u64, String, String)> {
        self.events(i, "ha_transition")
            .iter()
            .map(|v| {
                (
                    v["at_unix_us"].as_u64().unwrap_or(0),
                    v["old"].as_str().unwrap_or("").to_string(),
                    v["new"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// First BFD Down of node `i` at or after `since_us` (unix us).
    pub fn bfd_down_after(&self, i: usize, since_us: u64) -> Option<u64> {
        self.events(i, "bfd_state")
            .iter()
            .filter(|v| v["new"] == "Down" && v["old"] == "Up")
            .filter_map(|v| v["at_unix_us"].as_u64())
            .find(|&t| t >= since_us)
    }

    /// Number of BFD Up -> Down changes node `i` logged before `before_us`.
    pub fn bfd_downs_before(&self, i: usize, before_us: u64) -> usize {
        self.events(i, "bfd_state")
            .iter()
            .filter(|v| v["new"] == "Down" && v["old"] == "Up")
            .filter_map(|v| v["at_unix_us"].as_u64())
            .filter(|&t| t < before_us)
            .count()
    }

    /// Sends `sig` to node `i`'s agent and waits for it to exit.
    pub fn stop(&mut self, i: usize, sig: Signal) -> Result<std::process::ExitStatus> {
        let mut a = self.nodes[i].agent.take().context("agent not running")?;
        let st = a.stop(sig, Duration::from_secs(15))?;
        // Keep the log readable: the process is reaped, the file stays.
        Ok(st)
    }

    /// `ip link set lbe up|down` in node `i`.
    pub fn set_link(&self, i: usize, up: bool) -> Result<()> {
        self.nodes[i]
            .ns
            .ip(&["link", "set", LB_IF, if up { "up" } else { "down" }])
            .map(drop)
    }

    /// Packet loss on node `i`: netem on `lbe`'s egress when the kernel
    /// has `sch_netem`, else random drops by iptables on the node's INPUT
    /// and OUTPUT (BFD and everything else the node's stack sends or
    /// receives, but not ARP; frames the XDP
    /// program forwards bypass netfilter). `None` removes it. Returns the
    /// mechanism used.
    pub fn loss(&self, i: usize, percent: Option<u32>) -> Result<&'static str> {
        let ns = &self.nodes[i].ns;
        let netem = match percent {
            Some(p) => ns.run(
                "tc",
                &[
                    "qdisc",
                    "replace",
                    "dev",
                    LB_IF,
                    "root",
                    "netem",
                    "loss",
                    &format!("{p}%"),
                ],
            ),
            None => ns.run("tc", &["qdisc", "del", "dev", LB_IF, "root"]),
        };
        match netem {
            Ok(_) => return Ok("netem"),
            Err(e) if !e.to_string().contains("unknown") && percent.is_some() => return Err(e),
            Err(_) => {}
        }
        require_tools(&["iptables"])?;
        for chain in ["INPUT", "OUTPUT"] {
            ns.run("iptables", &["-F", chain])?;
            // Partial loss on OUTPUT only, so each direction loses `p` %
            // (the peer drops on its own OUTPUT); total loss both ways.
            let on = percent.is_some_and(|p| chain == "OUTPUT" || p >= 100);
            if let Some(p) = percent.filter(|_| on) {
                let prob = format!("{:.2}", f64::from(p) / 100.0);
                let mut args = vec!["-A", chain];
                if p < 100 {
                    args.extend_from_slice(&[
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &prob,
                    ]);
                }
                args.extend_from_slice(&["-j", "DROP"]);
                ns.run("iptables", &args)?;
            }
        }
        Ok("iptables (kernel without sch_netem)")
    }

    /// Starts the 1 ms UDP probe from the client to the VIP.
    pub fn probe(&self) -> Result<Probe> {
        let sock = self.client.enter(|| UdpSocket::bind((CLIENT_IP, 0)))??;
        Probe::start(sock, SocketAddr::V4(SocketAddrV4::new(VIP, SERVICE_PORT)))
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn read_state(path: &std::path::Path) -> Option<serde_json::Value> {
    let body = std::fs::read(path).ok()?;
    serde_json::from_slice(&body).ok()
}

/// A 1 ms UDP probe: sends a numbered datagram every millisecond and
/// records the arrival time of every echo.
pub struct Probe {
    stop: Arc<AtomicBool>,
    replies: Arc<Mutex<Vec<Instant>>>,
    sent: Arc<Mutex<u64>>,
    threads: Vec<JoinHandle<()>>,
}

impl Probe {
    fn start(sock: UdpSocket, dst: SocketAddr) -> Result<Self> {
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let rx = sock.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(0u64));
        let mut threads = Vec::new();
        {
            let stop = stop.clone();
            let sent = sent.clone();
            threads.push(std::thread::spawn(move || {
                let start = Instant::now();
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _ = sock.send_to(&n.to_be_bytes(), dst);
                    n += 1;
                    *sent.lock().unwrap_or_else(|p| p.into_inner()) = n;
                    let next = start + Duration::from_millis(n);
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                }
            }));
        }
        {
            let stop = stop.clone();
            let replies = replies.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = rx.recv(&mut buf)
                        && n == 9
                    {
                        replies
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Instant::now());
                    }
                }
            }));
        }
        Ok(Self {
            stop,
            replies,
            sent,
            threads,
        })
    }

    pub fn replies(&self) -> usize {
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until echoes flow (one within 10 ms of another, `n` times).
    pub fn wait_flowing(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let base = self.replies();
        while start.elapsed() < timeout {
            if self.replies() >= base + 50 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "the probe got {} echoes from the VIP in {timeout:?}",
            self.replies() - base
        )
    }

    /// Largest interval between consecutive echoes that ends after `since`
    /// (the outage around an event at `since`), and the number of echoes
    /// after `since`.
    pub fn largest_gap_since(&self, since: Instant) -> (Duration, usize) {
        let r = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        let mut gap = Duration::ZERO;
        let mut prev: Option<Instant> = r.iter().rev().find(|t| **t <= since).copied();
        let mut after = 0;
        for t in r.iter().filter(|t| **t > since) {
            after += 1;
            if let Some(p) = prev {
                gap = gap.max(t.duration_since(p));
            }
            prev = Some(*t);
        }
        // Still silent at the end: count the open interval too.
        if let Some(p) = prev {
            gap = gap.max(
                Instant::now()
                    .duration_since(p)
                    .min(Duration::from_secs(3600)),
            );
        }
        (gap, after)
    }

    pub fn sent(&self) -> u64 {
        *self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Takes the node's link down and SIGKILLs its agent at once: a dead node is
/// silent on the segment (its pinned XDP program and VIP would otherwise
/// keep answering, as they do after a mere process crash).
pub fn kill_node(pair: &mut Pair, i: usize) -> Result<(Instant, u64)> {
    let t = Instant::now();
    let us = now_unix_us();
    pair.set_link(i, false)?;
    pair.stop(i, Signal::SIGKILL)?;
    Ok((t, us))
}
