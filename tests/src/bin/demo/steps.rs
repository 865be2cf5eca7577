//! The demo's lab, the services it creates as kube-loxilb, and the steps
//! `run` strings together: one-shot promotion, log waits, the EIP owner,
//! the TCP connections' verdict, and the diagnostics printed on failure.

use super::*;

/// Everything the demo built. Field order is drop order: processes and
/// servers first, then mounts and files, namespaces last.
pub(crate) struct Lab {
    pub(crate) agents: [Option<NsProcess>; 2],
    pub(crate) prober: Option<Prober>,
    pub(crate) sim: Option<VpcSim>,
    pub(crate) _imds: Vec<ImdsServer>,
    pub(crate) _echo: Vec<EchoServer>,
    pub(crate) _bpf: Vec<BpfMount>,
    pub(crate) _xdp_pass: Vec<floatlb_dataplane::XdpPass>,
    pub(crate) moto: Moto,
    pub(crate) dir: TempDir,
    pub(crate) router: Netns,
    pub(crate) client: Netns,
    pub(crate) nodes: [Netns; 2],
    pub(crate) endpoints: Vec<Netns>,
}

pub(crate) fn write_config(path: &Path, eip: Ipv4Addr) -> Result<()> {
    let eps: Vec<String> = (0..ENDPOINTS)
        .map(|i| {
            format!(
                r#"{{"endpointIP":"{}","targetPort":{ENDPOINT_PORT},"weight":1}}"#,
                endpoint_ip(i)
            )
        })
        .collect();
    std::fs::write(
        path,
        format!(
            r#"{{"lbAttr":[{{"serviceArguments":{{"externalIP":"{eip}","privateIP":"{VIP}","port":{SERVICE_PORT},"protocol":"udp","sel":0,"mode":2,"name":"demo"}},"endpoints":[{}]}}]}}"#,
            eps.join(",")
        ),
    )?;
    Ok(())
}

pub(crate) fn sync_off() -> bool {
    std::env::var("FLOATLB_DEMO_SYNC").as_deref() == Ok("off")
}

/// Waits until every TCP connection has exchanged 5 more messages than at
/// the kill (when the last did), or every one of them was reset, or 40 s.
pub(crate) async fn carried_on(load: &Load, at_kill: &[u64]) -> Result<Instant> {
    let t0 = Instant::now();
    loop {
        let behind = load.behind(at_kill, 5).len();
        if behind == 0 {
            return Ok(Instant::now());
        }
        let f = load.faults();
        if f.resets >= TCP_CONNS as u64 || t0.elapsed() > Duration::from_secs(40) {
            bail!("{behind} of {TCP_CONNS} TCP connections did not carry on ({f:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The services kube-loxilb creates: UDP (the 1 ms probe) and TCP on the
/// same port, the Elastic IP as `externalIP`, the VIP as `privateIP`.
pub(crate) fn demo_services(eip: Ipv4Addr) -> Vec<demoapi::DemoService> {
    let endpoints: Vec<(Ipv4Addr, u16)> = (0..ENDPOINTS)
        .map(|i| (endpoint_ip(i), ENDPOINT_PORT))
        .collect();
    ["udp", "tcp"]
        .map(|protocol| demoapi::DemoService {
            name: format!("default_demo-{protocol}"),
            eip,
            vip: VIP,
            port: SERVICE_PORT,
            protocol,
            endpoints: endpoints.clone(),
        })
        .to_vec()
}

pub(crate) fn cloud_flags(cluster: &str) -> Vec<String> {
    [
        "--cloud",
        "aws",
        "--cloudcidrblock",
        VIP_BLOCK,
        "--no-os-config",
        "--cloud-cluster-name",
        cluster,
    ]
    .map(str::to_string)
    .to_vec()
}

/// On failure: both agents' logs and the router's and node B's view.
pub(crate) fn print_diagnostics(lab: &Lab) {
    print_logs(lab);
    for (ns, cmd) in [
        (&lab.router, vec!["ip", "route"]),
        (&lab.router, vec!["ip", "neigh"]),
        (&lab.router, vec!["bridge", "fdb", "show", "br", "vpc"]),
        (&lab.nodes[1], vec!["ip", "neigh"]),
        (&lab.nodes[1], vec!["ip", "-s", "link", "show", "eth0"]),
    ] {
        let out = ns
            .run(cmd[0], &cmd[1..])
            .unwrap_or_else(|e| format!("{e:#}"));
        println!("\n--- {} in {} ---\n{out}", cmd.join(" "), ns.name());
    }
}

pub(crate) fn sim_event(tl: &mut Timeline, e: &SimEvent, killed: Instant) {
    if e.seen < killed {
        return;
    }
    let who = match e.assoc.owner {
        Some(i) => NODE_NAMES[i].to_string(),
        None => "nobody".into(),
    };
    tl.at(
        e.seen,
        format!(
            "VPC simulator: EIP now on {} ({}) -> {who}",
            e.assoc.eni.as_deref().unwrap_or("no ENI"),
            e.assoc.private_ip.as_deref().unwrap_or("-")
        ),
    );
    tl.at(
        e.routed,
        format!("VPC simulator: router sends the VIP to {who}"),
    );
}

/// "node A (eni-..., 10.0.100.10)": who the Elastic IP serves, from the API.
pub(crate) async fn eip_owner(world: &World, sim: &VpcSim) -> Result<String> {
    let a = read_association(&world.ec2, &world.eip_alloc, sim.nodes()).await?;
    let who = match a.owner {
        Some(i) => format!("{} {}", NODE_NAMES[i], world.nodes[i].instance_id),
        None if a.eni.is_some() => "an ENI attached to no demo node".into(),
        None => "nobody".into(),
    };
    Ok(format!(
        "{who} (ENI {}, private IP {})",
        a.eni.as_deref().unwrap_or("-"),
        a.private_ip.as_deref().unwrap_or("-")
    ))
}

pub(crate) fn print_logs(lab: &Lab) {
    for (i, a) in lab.agents.iter().enumerate() {
        if let Some(a) = a {
            let log = a.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            println!("\n--- {} agent log (last lines) ---", NODE_NAMES[i]);
            for l in tail.into_iter().rev() {
                println!("{l}");
            }
        }
    }
}

/// What `floatlb cloud promote --json` printed.
pub(crate) struct OneShot {
    pub(crate) report: TransitionReport,
}

pub(crate) async fn promote_once(
    node: &Netns,
    bin: &Path,
    config: &Path,
    env: &[String],
    cluster: &str,
) -> Result<OneShot> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", node.name(), "env"])
        .args(env)
        .arg(bin)
        .args(["cloud", "promote", "--config"])
        .arg(config)
        .args(cloud_flags(cluster))
        .arg("--json")
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .context("running floatlb cloud promote")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "floatlb cloud promote printed no JSON (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let report: TransitionReport =
        serde_json::from_value(v["report"].clone()).context("promote report")?;
    Ok(OneShot { report })
}

/// Waits (bounded, without blocking the runtime) for a log line.
pub(crate) async fn wait_log(p: &mut NsProcess, needle: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if p.log().contains(needle) {
            return Ok(());
        }
        if let Some(status) = p.try_status()? {
            bail!(
                "agent exited ({status}) before {needle:?}; log:\n{}",
                p.log()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "agent did not log {needle:?} within {timeout:?}; log:\n{}",
                p.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
