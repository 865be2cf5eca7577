//! `floatlb cloud preflight`: run on an instance before its first failover,
//! it checks what a failover depends on and prints one row per check, then
//! exits non-zero when any check failed.
//!
//! | check | passes when | fails when |
//! |---|---|---|
//! | IMDSv2 | a session token and the identity reads answer | no token or no answer (hop limit, `http_tokens`) |
//! | region / AZ | IMDS names them | (reported with IMDS) |
//! | EC2 client | credentials are found | no credential source |
//! | permission `ec2:X` | `DryRun` answers `DryRunOperation` | `UnauthorizedOperation`: the action is named |
//! | source/dest check | off on the primary interface | on: the VPC drops packets sent from a floating address |
//! | clock | within `--max-clock-skew-ms` of EC2's `Date` header | further off: the lease compares wall clocks |
//! | peer sync port | TCP connects, or is refused (the path is open, nothing listens yet) | silence: a security group drops it (loxilb #813) |
//! | peer BFD port | ICMP port unreachable (open path, no listener yet) | an ICMP error other than port unreachable |
//! | native XDP | attached natively, or the driver supports it | (a warning: the agent falls back to generic mode) |
//!
//! The BFD probe is one zero-length UDP datagram: a live BFD session on the
//! peer drops it as undecodable, where a real control packet with state
//! Down could take the pair's session down. Silence on that port is
//! therefore a warning, not a failure: it is what a running peer answers.
//!
//! Writes are never made: permissions are proven with `DryRun` (see
//! `floatlb cloud dry-run`), and the XDP check reads the interface, it
//! never attaches a program.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    process::Command,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use floatlb_cloud::{
    FloatingSet,
    aws::{dryrun::Verdict, imds},
};
use serde::Serialize;

use crate::cli::{CloudArgs, CloudKind};

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub detail: String,
}

/// Every check, in the order run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Preflight {
    pub checks: Vec<Check>,
    /// True when no check failed (the exit status).
    pub ok: bool,
}

impl Preflight {
    fn push(&mut self, check: impl Into<String>, status: Status, detail: impl Into<String>) {
        self.checks.push(Check {
            check: check.into(),
            status,
            detail: detail.into(),
        });
    }
}

/// What to check besides the cloud flags.
#[derive(Debug, Clone)]
pub struct PreflightOptions {
    /// The peer (`--cluster`).
    pub peer: Option<IpAddr>,
    pub sync_port: u16,
    pub bfd_port: u16,
    /// Interfaces the datapath attaches to; empty: the one holding this
    /// instance's private address (from IMDS).
    pub ifaces: Vec<String>,
    pub max_clock_skew: Duration,
    /// How long a network probe waits.
    pub timeout: Duration,
}

/// Runs every check; never fails as a whole (a broken check is a row).
pub async fn run(cloud: &CloudArgs, set: &FloatingSet, o: &PreflightOptions) -> Preflight {
    let mut pf = Preflight::default();
    let mut local_ip = None;
    if cloud.cloud == CloudKind::Aws {
        local_ip = aws_checks(&mut pf, cloud, set, o).await;
    } else {
        pf.push(
            "AWS checks",
            Status::Skip,
            format!("--cloud={}", format!("{:?}", cloud.cloud).to_lowercase()),
        );
    }
    peer_checks(&mut pf, o).await;
    let mut ifaces = o.ifaces.clone();
    if ifaces.is_empty() {
        match local_ip.and_then(|ip| iface_with(ip).ok().flatten()) {
            Some(i) => ifaces.push(i),
            None => pf.push(
                "native XDP",
                Status::Skip,
                "no --iface given and none found holding this instance's private address",
            ),
        }
    }
    for i in ifaces {
        let (status, detail) = xdp_support(&i);
        pf.push(format!("native XDP {i}"), status, detail);
    }
    pf.ok = pf.checks.iter().all(|c| c.status != Status::Fail);
    pf
}

/// The AWS rows; returns this instance's private address when IMDS gave it.
async fn aws_checks(
    pf: &mut Preflight,
    cloud: &CloudArgs,
    set: &FloatingSet,
    o: &PreflightOptions,
) -> Option<IpAddr> {
    let t0 = Instant::now();
    let id = match imds::discover(None).await {
        Ok(id) => {
            pf.push(
                "IMDSv2",
                Status::Pass,
                format!(
                    "token and identity in {} ms: {}",
                    t0.elapsed().as_millis(),
                    id.instance_id
                ),
            );
            pf.push(
                "region / AZ",
                Status::Pass,
                format!(
                    "{} / {} (VPC {}, subnet {})",
                    id.region, id.availability_zone, id.vpc_id, id.subnet_id
                ),
            );
            id
        }
        Err(e) => {
            pf.push("IMDSv2", Status::Fail, format!("{e} (instance metadata must allow IMDSv2 tokens with a hop limit that reaches this process)"));
            pf.push("region / AZ", Status::Skip, "needs IMDS");
            return None;
        }
    };
    let local_ip = id.private_ip.map(IpAddr::V4);
    let aws = match crate::cloudctl::build_aws(cloud).await {
        Ok(a) => {
            pf.push("EC2 client", Status::Pass, "credentials found");
            a
        }
        Err(e) => {
            pf.push("EC2 client", Status::Fail, e.to_string());
            return local_ip;
        }
    };
    if set.entries().is_empty() {
        pf.push(
            "EC2 permissions",
            Status::Warn,
            "no services (--config): a failover's writes need the floating addresses to be probed",
        );
    } else {
        match aws.dry_run(set).await {
            Ok(r) => {
                for c in &r.checks {
                    let (status, detail) = match c.verdict {
                        Verdict::Allowed => (Status::Pass, format!("allowed on {}", c.target)),
                        Verdict::Denied => (
                            Status::Fail,
                            format!(
                                "DENIED on {}: grant {} to this node's role (iam/policy.json)",
                                c.target, c.action
                            ),
                        ),
                        Verdict::Skipped => (Status::Skip, c.detail.clone()),
                        Verdict::Inconclusive => (Status::Warn, c.detail.clone()),
                    };
                    pf.push(format!("permission {}", c.action), status, detail);
                }
            }
            Err(e) => pf.push("EC2 permissions", Status::Fail, e.to_string()),
        }
    }
    match aws.primary_source_dest_check().await {
        Ok(Some(false)) => pf.push(
            "source/dest check",
            Status::Pass,
            format!("off on {}", id.primary_eni),
        ),
        Ok(Some(true)) => pf.push(
            "source/dest check",
            Status::Fail,
            format!(
                "ON on {}: the VPC drops what this node sends from a floating address \
                 (aws ec2 modify-instance-attribute --no-source-dest-check; terraform: source_dest_check = false)",
                id.primary_eni
            ),
        ),
        Ok(None) => pf.push(
            "source/dest check",
            Status::Warn,
            format!("EC2 does not list {}", id.primary_eni),
        ),
        Err(e) => pf.push("source/dest check", Status::Fail, e.to_string()),
    }
    let url = ec2_endpoint(&id.region);
    let skew = tokio::task::spawn_blocking({
        let url = url.clone();
        let timeout = o.timeout;
        move || clock_skew(&url, timeout)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let (status, detail) = judge_skew(skew, o.max_clock_skew, &url);
    pf.push("clock", status, detail);
    local_ip
}

/// The EC2 endpoint the SDK calls: `AWS_ENDPOINT_URL_EC2`, then
/// `AWS_ENDPOINT_URL`, else the region's public endpoint.
fn ec2_endpoint(region: &str) -> String {
    std::env::var("AWS_ENDPOINT_URL_EC2")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|_| format!("https://ec2.{region}.amazonaws.com/"))
}

/// Local clock minus the server's `Date` (seconds), taken at the middle
/// of the request. `Date` has a resolution of one second (it is the
/// server's time truncated), so the true offset lies in `[x - 1, x]`.
fn clock_skew(url: &str, timeout: Duration) -> Result<f64, String> {
    let tls = ureq::tls::TlsConfig::builder()
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    let agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let sent = SystemTime::now();
    let t0 = Instant::now();
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mid = sent + t0.elapsed() / 2;
    let date = resp
        .headers()
        .get("date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("GET {url}: no Date header"))?;
    let server = httpdate::parse_http_date(date).map_err(|e| format!("Date {date:?}: {e}"))?;
    Ok(match mid.duration_since(server) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    })
}

/// Pass when the offset interval `[x - 1, x]` reaches within `max` of 0.
fn judge_skew(skew: Result<f64, String>, max: Duration, url: &str) -> (Status, String) {
    match skew {
        Ok(x) => {
            let max = max.as_secs_f64();
            let low = x - 1.0;
            let off_by = if x < 0.0 {
                -x
            } else if low > 0.0 {
                low
            } else {
                0.0
            };
            let detail = format!(
                "local clock - Date of {url}: {x:+.2} s (1 s resolution; limit {max:.1} s)"
            );
            if off_by <= max {
                (Status::Pass, detail)
            } else {
                (
                    Status::Fail,
                    format!(
                        "{detail}: the lease compares both nodes' wall clocks; sync with chrony (Amazon Time Sync)"
                    ),
                )
            }
        }
        Err(e) => (Status::Warn, format!("cannot compare: {e}")),
    }
}

async fn peer_checks(pf: &mut Preflight, o: &PreflightOptions) {
    let Some(peer) = o.peer else {
        pf.push("peer", Status::Skip, "no --cluster peer given");
        return;
    };
    let (sync, bfd) = (
        SocketAddr::new(peer, o.sync_port),
        SocketAddr::new(peer, o.bfd_port),
    );
    let timeout = o.timeout;
    let tcp =
        tokio::task::spawn_blocking(move || TcpStream::connect_timeout(&sync, timeout).map(|_| ()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let (status, detail) = judge_tcp(tcp, sync, timeout);
    pf.push(format!("peer sync {}/tcp", o.sync_port), status, detail);
    let udp = tokio::task::spawn_blocking(move || udp_probe(bfd, timeout))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let (status, detail) = judge_udp(udp, bfd, timeout);
    pf.push(format!("peer BFD {}/udp", o.bfd_port), status, detail);
}

fn judge_tcp(r: std::io::Result<()>, to: SocketAddr, timeout: Duration) -> (Status, String) {
    match r {
        Ok(()) => (Status::Pass, format!("{to}: a listener answers")),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => (
            Status::Pass,
            format!("{to}: refused, so the path is open (nothing listens yet)"),
        ),
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => (
            Status::Fail,
            format!(
                "{to}: no answer in {} ms: a security group or firewall drops it; \
                 allow it between the pair (HA then fails silently: loxilb #813)",
                timeout.as_millis()
            ),
        ),
        Err(e) => (Status::Fail, format!("{to}: {e}")),
    }
}

/// One empty datagram, then waits for an ICMP error or an answer.
fn udp_probe(to: SocketAddr, timeout: Duration) -> std::io::Result<bool> {
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
    };
    let s = UdpSocket::bind(any)?;
    s.connect(to)?;
    s.set_read_timeout(Some(timeout))?;
    s.send(&[])?;
    let mut buf = [0u8; 64];
    match s.recv(&mut buf) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
        Err(e) => Err(e),
    }
}

fn judge_udp(r: std::io::Result<bool>, to: SocketAddr, timeout: Duration) -> (Status, String) {
    match r {
        Ok(true) => (Status::Pass, format!("{to}: answered")),
        Ok(false) => (
            Status::Warn,
            format!(
                "{to}: silent for {} ms: a running peer's BFD drops the empty probe, but a \
                 security group dropping 3784/udp looks the same; check it allows the pair",
                timeout.as_millis()
            ),
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => (
            Status::Pass,
            format!("{to}: port unreachable, so the path is open (no BFD listener yet)"),
        ),
        Err(e) => (Status::Fail, format!("{to}: {e}")),
    }
}

/// Drivers with native (driver-mode) XDP in mainline Linux.
const NATIVE_XDP_DRIVERS: &[&str] = &[
    "ena",
    "virtio_net",
    "veth",
    "tun",
    "ixgbe",
    "ixgbevf",
    "i40e",
    "ice",
    "igb",
    "igc",
    "mlx4_en",
    "mlx5_core",
    "bnxt_en",
    "nfp",
    "qede",
    "hv_netvsc",
    "gve",
    "sfc",
    "netdevsim",
    "bonding",
];

/// ENA drivers refuse native XDP above this MTU (EC2's default is 9001).
const ENA_XDP_MAX_MTU: u32 = 3498;

/// Reads the interface's XDP state and driver; attaches nothing.
fn xdp_support(iface: &str) -> (Status, String) {
    let link = match ip_json(&["-d", "link", "show", "dev", iface]) {
        Ok(v) => v,
        Err(e) => return (Status::Fail, e),
    };
    let l = &link[0];
    let mtu = l["mtu"].as_u64().unwrap_or(0) as u32;
    let attached = l["xdp"]["mode"].as_u64();
    let driver = driver_of(iface);
    judge_xdp(attached, driver.as_deref(), mtu)
}

/// iproute2's XDP modes: 1 driver (native), 2 generic, 3 offloaded, 4 several.
fn judge_xdp(attached: Option<u64>, driver: Option<&str>, mtu: u32) -> (Status, String) {
    let drv = driver.unwrap_or("unknown");
    match attached {
        Some(1) | Some(3) => return (Status::Pass, format!("attached natively (driver {drv})")),
        Some(2) => {
            return (
                Status::Warn,
                format!(
                    "attached in generic mode (driver {drv}): every packet pays for an skb; check why native failed"
                ),
            );
        }
        Some(m) => return (Status::Pass, format!("attached (mode {m}, driver {drv})")),
        None => {}
    }
    match driver {
        Some("ena") if mtu > ENA_XDP_MAX_MTU => (
            Status::Warn,
            format!(
                "driver ena refuses native XDP at MTU {mtu} (at most {ENA_XDP_MAX_MTU}): the agent falls back to \
                 generic mode; lower the MTU for native (ip link set dev IFACE mtu {ENA_XDP_MAX_MTU})"
            ),
        ),
        Some(d) if NATIVE_XDP_DRIVERS.contains(&d) => {
            (Status::Pass, format!("driver {d} supports native XDP"))
        }
        Some(d) => (
            Status::Warn,
            format!(
                "driver {d} is not known to support native XDP: the agent runs in generic mode"
            ),
        ),
        None => (
            Status::Warn,
            "no driver reported (a virtual device such as lo): the agent runs in generic mode"
                .into(),
        ),
    }
}

fn ip_json(args: &[&str]) -> Result<serde_json::Value, String> {
    let out = Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e} (install iproute2)", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -j: {e}"))?;
    if v.as_array().is_none_or(Vec::is_empty) {
        return Err(format!("ip {}: no such interface", args.join(" ")));
    }
    Ok(v)
}

/// The driver: sysfs for devices, `ethtool -i` for virtual ones.
fn driver_of(iface: &str) -> Option<String> {
    if let Ok(p) = std::fs::read_link(format!("/sys/class/net/{iface}/device/driver"))
        && let Some(name) = p.file_name()
    {
        return Some(name.to_string_lossy().into_owned());
    }
    let out = Command::new("ethtool").args(["-i", iface]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("driver:"))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
}

/// The interface holding `ip`.
fn iface_with(ip: IpAddr) -> Result<Option<String>, String> {
    let v = ip_json(&["addr", "show"])?;
    Ok(v.as_array().and_then(|links| {
        links.iter().find_map(|l| {
            let holds = l["addr_info"].as_array()?.iter().any(|a| {
                a["local"]
                    .as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .is_some_and(|a| a == ip)
            });
            holds.then(|| l["ifname"].as_str().map(str::to_string))?
        })
    }))
}

/// The table: one row per check, then the verdict.
pub fn render(pf: &Preflight) -> String {
    let w = pf
        .checks
        .iter()
        .map(|c| c.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!("{:<w$}  {:<6}  detail\n", "check", "result");
    for c in &pf.checks {
        let s = match c.status {
            Status::Pass => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        out.push_str(&format!("{:<w$}  {s:<6}  {}\n", c.check, c.detail));
    }
    let failed: Vec<&str> = pf
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.check.as_str())
        .collect();
    if failed.is_empty() {
        out.push_str("preflight: no check failed\n");
    } else {
        out.push_str(&format!("preflight: FAILED {}\n", failed.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.0.2.20:22222".parse().unwrap()
    }

    #[test]
    fn a_refused_connection_proves_the_path_and_silence_fails() {
        let t = Duration::from_secs(2);
        let refused = std::io::Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(judge_tcp(Err(refused), addr(), t).0, Status::Pass);
        assert_eq!(judge_tcp(Ok(()), addr(), t).0, Status::Pass);
        let (s, d) = judge_tcp(Err(ErrorKind::TimedOut.into()), addr(), t);
        assert_eq!(s, Status::Fail);
        assert!(d.contains("security group"), "{d}");
        let unreachable = std::io::Error::from(ErrorKind::HostUnreachable);
        assert_eq!(judge_tcp(Err(unreachable), addr(), t).0, Status::Fail);
    }

    #[test]
    fn bfd_silence_is_a_warning_port_unreachable_a_pass() {
        let t = Duration::from_secs(1);
        assert_eq!(judge_udp(Ok(false), addr(), t).0, Status::Warn);
        let refused = std::io::Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(judge_udp(Err(refused), addr(), t).0, Status::Pass);
        assert_eq!(
            judge_udp(Err(ErrorKind::NetworkUnreachable.into()), addr(), t).0,
            Status::Fail
        );
    }

    #[test]
    fn the_date_header_has_a_one_second_resolution() {
        let max = Duration::from_millis(500);
        // Local 0.8 s ahead of the truncated Date: the truth is in [-0.2, 0.8].
        assert_eq!(judge_skew(Ok(0.8), max, "u").0, Status::Pass);
        assert_eq!(judge_skew(Ok(1.4), max, "u").0, Status::Pass);
        assert_eq!(judge_skew(Ok(1.6), max, "u").0, Status::Fail);
        assert_eq!(judge_skew(Ok(-0.4), max, "u").0, Status::Pass);
        assert_eq!(judge_skew(Ok(-0.6), max, "u").0, Status::Fail);
        assert_eq!(judge_skew(Err("x".into()), max, "u").0, Status::Warn);
    }

    #[test]
    fn xdp_verdicts_name_the_driver_and_the_ena_mtu_limit() {
        assert_eq!(judge_xdp(Some(1), Some("ena"), 9001).0, Status::Pass);
        assert_eq!(judge_xdp(Some(2), Some("ena"), 9001).0, Status::Warn);
        let (s, d) = judge_xdp(None, Some("ena"), 9001);
        assert_eq!(s, Status::Warn);
        assert!(d.contains("3498"), "{d}");
        assert_eq!(judge_xdp(None, Some("ena"), 1500).0, Status::Pass);
        assert_eq!(judge_xdp(None, Some("veth"), 1500).0, Status::Pass);
        assert_eq!(judge_xdp(None, None, 65536).0, Status::Warn);
    }

    #[test]
    fn a_failed_check_fails_the_run_and_is_named() {
        let mut pf = Preflight::default();
        pf.push("IMDSv2", Status::Pass, "");
        pf.push("permission ec2:AssociateAddress", Status::Fail, "DENIED");
        pf.push("peer", Status::Skip, "");
        pf.ok = pf.checks.iter().all(|c| c.status != Status::Fail);
        assert!(!pf.ok);
        let t = render(&pf);
        assert!(
            t.contains("preflight: FAILED permission ec2:AssociateAddress"),
            "{t}"
        );
    }
}
