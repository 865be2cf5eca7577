//! A lab for the REST API end to end: the client / LB / endpoints topology
//! of [`crate::topology`], an echo server on each endpoint, and the real
//! agent started in the LB namespace with only the flags a user gives (no
//! `--config`: everything comes through the API, as kube-loxilb drives it).

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Result, bail};
use nix::sys::signal::Signal;

use crate::{
    agent::{READY_LINE, floatlb_binary},
    apiclient::{ApiClient, kube_loxilb_body},
    netns::{BpfMount, NsProcess, TempDir, require_root, require_tools},
    servers::{EchoServer, payload, tcp_exchange, udp_exchange},
    topology::{LB_CLIENT_IF, LB_ENDPOINT_IF, Topology, VIP, endpoint_ip},
};

/// The service port on the VIP.
pub const PORT: u16 = 80;
/// The port every endpoint's echo server listens on.
pub const EP_PORT: u16 = 8080;
/// The Elastic IP kube-loxilb would send as `externalIP`; traffic arrives
/// on the private VIP (`privateIP`), which is also the fullnat source.
pub const EIP: &str = "203.0.113.10";

/// The topology, the echo servers and (while started) the agent.
pub struct ApiLab {
    agent: Option<NsProcess>,
    _servers: Vec<EchoServer>,
    bpf: BpfMount,
    pub dir: TempDir,
    pub topo: Topology,
    starts: u32,
}

impl ApiLab {
    /// `n` endpoints, each answering TCP and UDP on [`EP_PORT`] with its index.
    pub fn new(prefix: &str, n: usize) -> Result<Self> {
        require_root()?;
        require_tools(&["ip", "ethtool", "sysctl", "mount"])?;
        let topo = Topology::new(prefix, n)?;
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

    /// Starts the agent with only the flags a user gives (no `--config`),
    /// plus `extra`; returns once it printed its ready line.
    pub fn start(&mut self, extra: &[&str]) -> Result<()> {
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
        p.wait_for_log(READY_LINE, Duration::from_secs(60))?;
        self.agent = Some(p);
        Ok(())
    }

    /// After [`Self::kill`]: removes the state directory and the pinned
    /// datapath, so the next start is a first start.
    pub fn wipe(&self) -> Result<()> {
        for dir in [self.dir.join("state"), self.bpf.path().join("floatlb")] {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    bail!("cannot remove {}: {e}", dir.display())
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The running agent's pid.
    pub fn pid(&self) -> Option<u32> {
        self.agent.as_ref().and_then(NsProcess::pid)
    }

    /// The running agent's log so far.
    pub fn log(&self) -> String {
        self.agent.as_ref().map(NsProcess::log).unwrap_or_default()
    }

    /// The API on loopback in the LB namespace.
    pub fn api(&self) -> ApiClient {
        ApiClient::local(&self.topo.lb)
    }

    /// SIGKILLs the agent (no grace).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut p) = self.agent.take() {
            p.stop(Signal::SIGKILL, Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Which endpoints answer `n` new TCP connections and `n` UDP flows to
    /// the VIP on `port`.
    pub fn answering_on(&self, port: u16, n: u64) -> Result<(BTreeSet<u8>, BTreeSet<u8>)> {
        let vip = SocketAddr::from((VIP, port));
        self.topo.client.enter(move || -> Result<_> {
            let mut tcp = BTreeSet::new();
            let mut udp = BTreeSet::new();
            for i in 0..n {
                tcp.insert(tcp_exchange(vip, &payload(i, 64), Duration::from_secs(2))?);
                let sock = UdpSocket::bind(("0.0.0.0", fresh_udp_port()))?;
                sock.set_read_timeout(Some(Duration::from_secs(2)))?;
                udp.insert(udp_exchange(&sock, vip, &payload(i, 64))?);
            }
            Ok((tcp, udp))
        })?
    }

    /// [`Self::answering_on`] the service port [`PORT`].
    pub fn answering(&self, n: u64) -> Result<(BTreeSet<u8>, BTreeSet<u8>)> {
        self.answering_on(PORT, n)
    }

    /// True when a TCP connection to the VIP can no longer be made.
    pub fn vip_dead(&self) -> Result<bool> {
        let vip = SocketAddr::from((VIP, PORT));
        self.topo
            .client
            .enter(move || TcpStream::connect_timeout(&vip, Duration::from_millis(500)).is_err())
    }
}

/// A client port for a UDP probe: below the ephemeral range and not
/// reused within the process for 12,000 probes, so every probe is a new
/// flow. An ephemeral port can repeat one of an earlier probe (about one
/// run in five here), and a repeated tuple follows that earlier flow's
/// mapping until the conntrack sweep flushes it, even to an endpoint that
/// has left the service since.
fn fresh_udp_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    20_000 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 12_000
}

/// kube-loxilb's create body for the lab's service on [`PORT`], with the
/// endpoints of the given indexes.
pub fn lab_body(protocol: &str, eps: &[usize]) -> String {
    let eps: Vec<(Ipv4Addr, u16)> = eps.iter().map(|&i| (endpoint_ip(i), EP_PORT)).collect();
    kube_loxilb_body(EIP, &VIP.to_string(), PORT, protocol, "default_web", &eps)
}

/// The built `floatctl` binary: `$FLOATCTL_BIN`, else the one beside the
/// `floatlb` binary the tests run.
pub fn floatctl_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FLOATCTL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let agent = floatlb_binary()?;
    let bin = agent
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("floatctl");
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --bins` (`make test` does), or set FLOATCTL_BIN",
            bin.display()
        );
    }
    Ok(bin)
}
