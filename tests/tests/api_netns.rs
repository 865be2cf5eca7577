//! The REST API end to end, as kube-loxilb drives it: services created,
//! updated and deleted with kube-loxilb's exact bodies, each step checked
//! by traffic through the XDP datapath; state that survives a SIGKILL.
//!
//! Topology (`floatlb_tests::topology`): client, LB (XDP, `ip_forward=0`),
//! three endpoints answering with their id. The agent starts with no
//! `--config`: everything comes through the API.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use floatlb_tests::{
    agent::{READY_LINE, floatlb_binary},
    apiclient::{ApiClient, kube_loxilb_body},
    netns::{BpfMount, NsProcess, TempDir, require_root, require_tools},
    servers::{EchoServer, payload, tcp_exchange, udp_exchange},
    topology::{LB_CLIENT_IF, LB_ENDPOINT_IF, Topology, VIP, endpoint_ip},
};
use nix::sys::signal::Signal;

const PORT: u16 = 80;
const EP_PORT: u16 = 8080;
/// The Elastic IP kube-loxilb would send as `externalIP`; traffic arrives
/// on the private VIP (`privateIP`), which is also the fullnat source.
const EIP: &str = "203.0.113.10";

struct Lab {
    agent: Option<NsProcess>,
    _servers: Vec<EchoServer>,
    bpf: BpfMount,
    dir: TempDir,
    topo: Topology,
    starts: u32,
}

impl Lab {
    fn new(prefix: &str) -> Result<Self> {
        require_root()?;
        require_tools(&["ip", "ethtool", "sysctl", "mount"])?;
        let topo = Topology::new(prefix, 3)?;
        let dir = TempDir::new(&format!("{prefix}-files"))?;
        let bpf = BpfMount::new(dir.join("bpf"))?;
        let mut servers = Vec::new();
        for (i, ns) in topo.endpoints.iter().enumerate() {
            let addr = SocketAddrV4::new(endpoint_ip(i), EP_PORT);
            servers.push(EchoServer::start(ns, addr, u8::try_from(i)?)?);
        }
        Ok(Self {
            agent: None,
            _servers: servers,
            bpf,
            dir,
            topo,
            starts: 0,
        })
    }

    /// Starts the agent with only the flags a user gives (no `--config`).
    fn start(&mut self, extra: &[&str]) -> Result<()> {
        let bin = floatlb_binary()?.to_string_lossy().into_owned();
        let pin = self
            .bpf
            .path()
            .join("floatlb")
            .to_string_lossy()
            .into_owned();
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
            "--keep-pinned",
        ];
        args.extend_from_slice(extra);
        self.starts += 1;
        let log = self.dir.join(&format!("agent{}.log", self.starts));
        let mut p = self.topo.lb.spawn(&bin, &args, &log)?;
        p.wait_for_log(READY_LINE, Duration::from_secs(30))?;
        self.agent = Some(p);
        Ok(())
    }

    fn api(&self) -> ApiClient {
        ApiClient::local(&self.topo.lb)
    }

    fn kill(&mut self) -> Result<()> {
        if let Some(mut p) = self.agent.take() {
            p.stop(Signal::SIGKILL, Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Which endpoints answer `n` new TCP connections and `n` UDP flows.
    fn answering(&self, n: u64) -> Result<(BTreeSet<u8>, BTreeSet<u8>)> {
        let vip = SocketAddr::from((VIP, PORT));
        self.topo.client.enter(move || -> Result<_> {
            let mut tcp = BTreeSet::new();
            let mut udp = BTreeSet::new();
            for i in 0..n {
                tcp.insert(tcp_exchange(vip, &payload(i, 64), Duration::from_secs(2))?);
                let sock = UdpSocket::bind("0.0.0.0:0")?;
                sock.set_read_timeout(Some(Duration::from_secs(2)))?;
                udp.insert(udp_exchange(&sock, vip, &payload(i, 64))?);
            }
            Ok((tcp, udp))
        })?
    }

    /// True when a TCP connection to the VIP can no longer be made.
    fn vip_dead(&self) -> Result<bool> {
        let vip = SocketAddr::from((VIP, PORT));
        self.topo
            .client
            .enter(move || TcpStream::connect_timeout(&vip, Duration::from_millis(500)).is_err())
    }
}

fn body(protocol: &str, eps: &[usize]) -> String {
    let eps: Vec<(Ipv4Addr, u16)> = eps.iter().map(|&i| (endpoint_ip(i), EP_PORT)).collect();
    kube_loxilb_body(EIP, &VIP.to_string(), PORT, protocol, "default_web", &eps)
}

fn ids(v: &[u8]) -> BTreeSet<u8> {
    v.iter().copied().collect()
}

#[test]
fn kube_loxilb_bodies_create_update_and_delete_services_checked_by_traffic() -> Result<()> {
    let mut lab = Lab::new("fapi")?;
    lab.start(&[])?;
    let api = lab.api();
    let up = api.wait_up(Duration::from_secs(10))?;
    println!("API up {} ms after the ready line", up.as_millis());

    // Create TCP and UDP with kube-loxilb's exact bodies.
    for proto in ["tcp", "udp"] {
        let a = api.post("/config/loadbalancer", &body(proto, &[0, 1]))?;
        ensure!(a.is_success(), "create {proto}: {a:?}");
        // An identical re-POST: 200, or 409 "exists" (both success to kube-loxilb).
        let again = api.post("/config/loadbalancer", &body(proto, &[0, 1]))?;
        ensure!(
            again.is_success() || (again.status == 409 && again.body.contains("exist")),
            "re-POST {proto}: {again:?}"
        );
    }
    let (tcp, udp) = lab.answering(24)?;
    println!("created: tcp endpoints {tcp:?}, udp endpoints {udp:?}");
    ensure!(
        tcp == ids(&[0, 1]) && udp == ids(&[0, 1]),
        "both endpoints serve"
    );

    // The fullnat source is the private VIP (conntrack shows the SNAT).
    let ct = api.get("/config/conntrack/all")?;
    ensure!(
        ct.content_type.as_deref() == Some("application/json"),
        "{ct:?}"
    );
    let flows = ct.json()?["ctAttr"].as_array().cloned().unwrap_or_default();
    ensure!(!flows.is_empty(), "no flows listed: {}", ct.body);
    for f in &flows {
        let ident = f["ident"].as_str().unwrap_or("");
        ensure!(
            ident.starts_with(&format!("{VIP}:")),
            "flow not source-NATed to privateIP {VIP}: {f}"
        );
    }

    // Update in place: add endpoint 2.
    for proto in ["tcp", "udp"] {
        ensure!(
            api.post("/config/loadbalancer", &body(proto, &[0, 1, 2]))?
                .is_success()
        );
    }
    let (tcp, udp) = lab.answering(36)?;
    println!("endpoint added: tcp {tcp:?}, udp {udp:?}");
    ensure!(
        tcp == ids(&[0, 1, 2]) && udp == ids(&[0, 1, 2]),
        "endpoint 2 serves"
    );

    // Update in place: remove endpoint 0; new flows never reach it.
    for proto in ["tcp", "udp"] {
        ensure!(
            api.post("/config/loadbalancer", &body(proto, &[1, 2]))?
                .is_success()
        );
    }
    let (tcp, udp) = lab.answering(30)?;
    println!("endpoint removed: tcp {tcp:?}, udp {udp:?}");
    ensure!(
        tcp == ids(&[1, 2]),
        "tcp still reaches a removed endpoint: {tcp:?}"
    );
    ensure!(
        udp == ids(&[1, 2]),
        "udp still reaches a removed endpoint: {udp:?}"
    );

    // GET all is a valid config file: the same services, in lbAttr form.
    let all = api.get("/config/loadbalancer/all")?.json()?;
    let list = all["lbAttr"].as_array().context("lbAttr")?;
    ensure!(list.len() == 2, "{all}");
    let file = lab.dir.join("dump.json");
    std::fs::write(&file, all.to_string())?;

    // Delete as kube-loxilb does: its path, its query, the create body.
    for proto in ["tcp", "udp"] {
        let path = format!(
            "/config/loadbalancer/externalipaddress/{EIP}/port/{PORT}/protocol/{proto}?bgp=false&block=0"
        );
        let a = api.call("DELETE", &path, Some(&body(proto, &[1, 2])))?;
        ensure!(a.is_success(), "delete {proto}: {a:?}");
        let again = api.call("DELETE", &path, Some(&body(proto, &[1, 2])))?;
        ensure!(
            again.status == 404 && again.body.contains("not-exists"),
            "{again:?}"
        );
    }
    ensure!(lab.vip_dead()?, "the VIP still answers after the delete");
    let all = api.get("/config/loadbalancer/all")?.json()?;
    ensure!(
        all["lbAttr"].as_array().is_some_and(|l| l.is_empty()),
        "{all}"
    );

    // The dump, fed back as --config, brings the services back.
    lab.kill()?;
    lab.start(&["--config", &file.to_string_lossy()])?;
    let (tcp, _) = lab.answering(12)?;
    ensure!(tcp == ids(&[1, 2]), "dump round trip: {tcp:?}");
    lab.kill()?;
    Ok(())
}

#[test]
fn a_sigkill_loses_nothing_that_was_acknowledged() -> Result<()> {
    let mut lab = Lab::new("fapk")?;
    lab.start(&[])?;
    let api = lab.api();
    api.wait_up(Duration::from_secs(10))?;
    ensure!(
        api.post("/config/loadbalancer", &body("tcp", &[0, 2]))?
            .is_success()
    );
    ensure!(
        api.post("/config/loadbalancer", &body("udp", &[1]))?
            .is_success()
    );
    // 1000 more services (other ports), acknowledged one by one.
    let t0 = Instant::now();
    for i in 0..1000u16 {
        let eps = [(endpoint_ip(usize::from(i % 3)), EP_PORT)];
        let b = kube_loxilb_body(EIP, &VIP.to_string(), 1000 + i, "tcp", "bulk", &eps);
        let a = api.post("/config/loadbalancer", &b)?;
        ensure!(a.is_success(), "service {i}: {a:?}");
    }
    println!(
        "1000 services acknowledged in {} ms",
        t0.elapsed().as_millis()
    );
    let before = api.get("/config/loadbalancer/all")?.json()?;
    // No grace: whatever was acknowledged must be on disk now.
    lab.kill()?;
    let t1 = Instant::now();
    lab.start(&[])?;
    api.wait_up(Duration::from_secs(20))?;
    println!(
        "restarted with 1002 services in {} ms",
        t1.elapsed().as_millis()
    );
    let after = api.get("/config/loadbalancer/all")?.json()?;
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v["lbAttr"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|e| e["serviceArguments"].to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    ensure!(
        keys(&before).len() == 1002,
        "before: {}",
        keys(&before).len()
    );
    ensure!(
        keys(&before) == keys(&after),
        "services differ after the restart"
    );
    let (tcp, udp) = lab.answering(16)?;
    ensure!(
        tcp == ids(&[0, 2]) && udp == ids(&[1]),
        "tcp {tcp:?} udp {udp:?}"
    );
    lab.kill()?;
    Ok(())
}
