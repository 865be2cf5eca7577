//! gARP provider in network namespaces (needs root): the VIPs appear on the
//! interface, and a peer namespace captures the announcements (count, sender
//! IP, MAC, spacing). Demotion removes the VIPs.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use floatlb_cloud::{
    CloudProvider, FloatingIp, FloatingSet,
    garp::{GarpOptions, GarpProvider, packet},
};
use floatlb_tests::{agent::floatlb_binary, netns};

const MAC: &str = "02:00:5e:00:53:0a";
const MAC_BYTES: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x0a];
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Pair {
    node: String,
    peer: String,
    node_if: String,
    peer_if: String,
}

impl Pair {
    fn new() -> Result<Self> {
        // Unique per test in this process too (tests may run in parallel).
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "{}{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let p = Self {
            node: format!("flgn{id}"),
            peer: format!("flgp{id}"),
            node_if: format!("gn{id}"),
            peer_if: format!("gp{id}"),
        };
        sh(&["ip", "netns", "add", &p.node])?;
        sh(&["ip", "netns", "add", &p.peer])?;
        sh(&[
            "ip", "link", "add", &p.node_if, "netns", &p.node, "type", "veth", "peer", "name",
            &p.peer_if, "netns", &p.peer,
        ])?;
        sh(&[
            "ip", "-n", &p.node, "link", "set", &p.node_if, "address", MAC,
        ])?;
        for (ns, ifc) in [(&p.node, &p.node_if), (&p.peer, &p.peer_if)] {
            // No IPv6 noise (DAD, router solicitations) from the test links themselves.
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{ifc}.accept_ra=0"),
            ])?;
            sh(&["ip", "-n", ns, "link", "set", ifc, "up"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(p)
    }

    fn addrs(&self) -> Result<String> {
        sh(&[
            "ip",
            "-n",
            &self.node,
            "-o",
            "addr",
            "show",
            "dev",
            &self.node_if,
        ])
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.node])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.peer])
            .status();
    }
}

/// tcpdump in the peer namespace writing a pcap; killed on drop.
struct Capture {
    child: Child,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(pair: &Pair, count: usize) -> Result<Self> {
        let file = std::env::temp_dir().join(format!("floatlb-garp-{}.pcap", pair.node));
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &pair.peer,
                "tcpdump",
                "-i",
                &pair.peer_if,
                "-U",
                "-n",
                "-c",
                &count.to_string(),
                "-w",
            ])
            .arg(&file)
            .arg("arp or (icmp6 and ip6[40] == 136)")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning tcpdump")?;
        // Bounded wait for "listening on ...".
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .context("tcpdump did not start listening within 10 s")?;
        Ok(Self { child, file })
    }

    /// Waits (bounded) for tcpdump to have its packets and exit, then reads the pcap.
    fn finish(mut self, limit: Duration) -> Result<Vec<(Duration, Vec<u8>)>> {
        let start = Instant::now();
        while self.child.try_wait()?.is_none() {
            if start.elapsed() > limit {
                bail!("tcpdump did not capture the expected frames within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        read_pcap(&std::fs::read(&self.file)?)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Frames of a little-endian microsecond pcap file, with timestamps.
fn read_pcap(b: &[u8]) -> Result<Vec<(Duration, Vec<u8>)>> {
    ensure!(
        b.len() >= 24 && b[0..4] == [0xd4, 0xc3, 0xb2, 0xa1],
        "not a little-endian pcap"
    );
    let u32le = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= b.len() {
        let ts = Duration::from_secs(u32le(i).into()) + Duration::from_micros(u32le(i + 4).into());
        let len = u32le(i + 8) as usize;
        ensure!(i + 16 + len <= b.len(), "truncated pcap");
        out.push((ts, b[i + 16..i + 16 + len].to_vec()));
        i += 16 + len;
    }
    Ok(out)
}

#[test]
fn cloud_garp_announces_vips_from_a_namespace() -> Result<()> {
    netns::require_root()?;
    netns::require_tools(&["ip", "tcpdump"])?;
    let pair = Pair::new()?;
    let capture = Capture::start(&pair, 6)?;

    // Run the provider inside the node namespace (this thread only).
    let ns_path = format!("/run/netns/{}", pair.node);
    let iface = pair.node_if.clone();
    let report = std::thread::spawn(move || -> Result<floatlb_cloud::TransitionReport> {
        let ns = std::fs::File::open(&ns_path)?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let p = GarpProvider::new(GarpOptions::new(iface));
            let set = FloatingSet::new([
                FloatingIp {
                    eip: None,
                    vip: IpAddr::V4(VIP4),
                },
                FloatingIp {
                    eip: None,
                    vip: IpAddr::V6(VIP6),
                },
            ]);
            let r = p.promote(&set).await;
            let st = p.status(&set).await?;
            ensure!(st.is_master, "status after promote: {st:?}");
            Ok(r)
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("provider thread panicked"))??;
    ensure!(report.ok, "promote failed: {:?}", report.error);
    let addrs = pair.addrs()?;
    ensure!(
        addrs.contains("192.0.2.10/32") && addrs.contains("2001:db8::10/128"),
        "VIPs missing: {addrs}"
    );

    let frames = capture.finish(Duration::from_secs(10))?;
    let mut arp_times = Vec::new();
    let mut na = 0;
    for (ts, f) in &frames {
        match u16::from_be_bytes([f[12], f[13]]) {
            packet::ETH_ARP => {
                let a = packet::parse_arp(f)?;
                ensure!(a.is_announcement(), "not an ARP announcement: {a:?}");
                ensure!(
                    a.sender_ip == VIP4 && a.sender_mac == MAC_BYTES && a.eth_src == MAC_BYTES,
                    "{a:?}"
                );
                arp_times.push(*ts);
            }
            packet::ETH_IPV6 => {
                ensure!(f.len() >= packet::NA_FRAME_LEN && f[54] == 136, "not an NA");
                ensure!(
                    f[22..38] == VIP6.octets() && f[62..78] == VIP6.octets(),
                    "NA for the wrong address"
                );
                ensure!(
                    f[80..86] == MAC_BYTES && f[6..12] == MAC_BYTES,
                    "NA with the wrong MAC"
                );
                ensure!(
                    f[58] & 0x40 == 0 && f[58] & 0x20 != 0,
                    "NA flags: want S=0 O=1"
                );
                na += 1;
            }
            other => bail!("unexpected ethertype {other:#06x}"),
        }
    }
    ensure!(
        arp_times.len() == 3 && na == 3,
        "captured {} ARP announcements and {na} NAs, want 3 and 3",
        arp_times.len()
    );
    let spread = arp_times[2].saturating_sub(arp_times[0]);
    println!(
        "gARP: captured 3 ARP announcements (sender {VIP4}, {MAC}) and 3 unsolicited NAs ({VIP6}); first to last {:.0} ms (configured 1000 ms); promote took {:.1} ms, first announcement at +{:.1} ms",
        spread.as_secs_f64() * 1000.0,
        report.duration_us as f64 / 1000.0,
        report
            .calls
            .iter()
            .find(|c| c.call == "garp:Announce")
            .map(|c| c.end_us() as f64 / 1000.0)
            .unwrap_or(-1.0)
    );
    ensure!(
        spread >= Duration::from_millis(900),
        "announcements not spread over ~1 s: {spread:?}"
    );

    // The one-shot command in the namespace: status says MASTER, demote removes the VIPs.
    let dir = std::env::temp_dir().join(format!("floatlb-garp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("lb.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"lbAttr":[{{"serviceArguments":{{"externalIP":"{VIP4}","port":80,"mode":2}},"endpoints":[{{"endpointIP":"198.51.100.5","targetPort":80,"weight":1}}]}}]}}"#
        ),
    )?;
    let bin = floatlb_binary()?;
    let run = |action: &str| -> Result<std::process::Output> {
        Ok(Command::new("ip")
            .args(["netns", "exec", &pair.node])
            .arg(&bin)
            .args([
                "cloud",
                action,
                "--cloud",
                "garp",
                "--garp-iface",
                &pair.node_if,
                "--config",
            ])
            .arg(&config)
            .output()?)
    };
    let out = run("status")?;
    ensure!(
        out.status.code() == Some(0),
        "status: {:?} {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("demote")?;
    ensure!(
        out.status.code() == Some(0),
        "demote: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let addrs = pair.addrs()?;
    ensure!(
        !addrs.contains("192.0.2.10/32"),
        "VIP still there after demote: {addrs}"
    );
    let out = run("status")?;
    ensure!(
        out.status.code() == Some(1),
        "status after demote must exit 1"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Runs `f` with a gARP provider on the node side of `pair`, in a thread
/// that joined the node namespace.
fn in_node<T: Send + 'static>(
    pair: &Pair,
    opts: GarpOptions,
    f: impl FnOnce(GarpProvider, FloatingSet) -> T + Send + 'static,
) -> Result<T> {
    let ns_path = format!("/run/netns/{}", pair.node);
    std::thread::spawn(move || -> Result<T> {
        let ns = std::fs::File::open(&ns_path)?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let set = FloatingSet::new([
            FloatingIp {
                eip: None,
                vip: IpAddr::V4(VIP4),
            },
            FloatingIp {
                eip: None,
                vip: IpAddr::V6(VIP6),
            },
        ]);
        Ok(f(GarpProvider::new(opts), set))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("provider thread panicked"))?
}

/// A transient send failure (ENOBUFS, injected through the provider's test
/// hook) on the first round does not fail the promotion: the failed frames
/// are sent again within the announce schedule, every VIP is announced
/// `count` times, and the report counts the failed attempts as retried.
/// When every send fails, the promotion fails and names the VIPs.
#[test]
fn cloud_garp_retries_a_failed_round_and_fails_only_when_nothing_went_out() -> Result<()> {
    use floatlb_cloud::garp::FailSends;
    netns::require_root()?;
    netns::require_tools(&["ip", "tcpdump"])?;
    let pair = Pair::new()?;
    let capture = Capture::start(&pair, 6)?;
    let mut opts = GarpOptions::new(pair.node_if.clone());
    // Both frames of the first attempt of round 1 fail.
    opts.fail_sends = Some(FailSends::new(2));
    let report = in_node(&pair, opts, |p, set| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(p.promote(&set))
    })?;
    let retried = report.retries();
    println!(
        "gARP with 2 injected ENOBUFS in round 1: ok={}, {retried} retried sends, promote took {:.1} ms",
        report.ok,
        report.duration_us as f64 / 1e3
    );
    ensure!(report.ok, "promote failed: {:?}", report.error);
    ensure!(retried == 2, "want 2 retried sends, report: {report:?}");
    let frames = capture.finish(Duration::from_secs(10))?;
    ensure!(
        frames.len() == 6,
        "captured {} frames, want 6",
        frames.len()
    );

    // Every send fails: the promotion fails, naming both VIPs.
    let mut opts = GarpOptions::new(pair.node_if.clone());
    opts.count = 2;
    opts.span = Duration::from_millis(100);
    opts.fail_sends = Some(FailSends::new(u32::MAX));
    let report = in_node(&pair, opts, |p, set| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(p.promote(&set))
    })?;
    let err = report.error.clone().unwrap_or_default();
    println!(
        "gARP with every send failing: ok={}, error: {err}",
        report.ok
    );
    ensure!(!report.ok, "a promotion without any announcement must fail");
    ensure!(
        err.contains("192.0.2.10")
            && err.contains("2001:db8::10")
            && err.contains("no announcement"),
        "{err}"
    );
    Ok(())
}
