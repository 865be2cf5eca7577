//! `make demo`: a two-AZ floatlb failover on one machine.
//!
//! ```text
//!   client ns                 router ns ("the VPC")                      cloud ns
//!  ┌─────────────┐  veth  ┌───────────────────────────────────┐  veth  ┌──────────────────┐
//!  │198.51.100.2 │◄──────►│ cli 198.51.100.1   cl 203.0.113.1 │◄──────►│203.0.113.10      │
//!  └─────────────┘        │ bridge vpc: 10.0.1.1 10.0.2.1     │        │ moto (EC2 API)   │
//!                         │             10.0.3.1              │        │ demo driver,     │
//!                         │ VIP/32 -> owner (VPC simulator)   │        │ VPC simulator    │
//!                         └──┬──────────────┬───────────┬─────┘        └──────────────────┘
//!                     node A │ (us-east-1a) │ node B    │ endpoints 10.0.3.10, 10.0.3.11
//!          floatlb + XDP, IMDS 169.254.169.254 in each node namespace
//! ```
//!
//! moto stands in for EC2 (two AZ subnets, two instances, one Elastic IP,
//! built by [`floatlb_tests::ec2world`]); each node namespace runs the real
//! `floatlb` agent with `--cloud=aws --no-os-config` against moto, and an
//! IMDSv2 stand-in with its instance's identity. moto moves no packets, so the
//! VPC simulator ([`floatlb_tests::vpcsim`]) routes the VIP in the router
//! namespace to whichever node the Elastic IP is associated with.
//!
//! The demo makes node A MASTER, starts a client probing the service every
//! 1 ms, kills node A (SIGKILL of its agent and its NIC down: an instance
//! failure), and prints the timeline of the failover to node B. It exits
//! non-zero when the failover did not happen. Everything it creates
//! (namespaces, processes, moto, bpffs mounts, files) is removed on every
//! exit path, Ctrl-C included.
//!
//! Orchestration (see [`Orchestration`]): the agents' own HA, that is BFD,
//! the election and the cloud provider; or, where the agent build lacks it,
//! the one-shot `floatlb cloud promote` run in node B's namespace, which the
//! output then states.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::Path,
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail, ensure};
use floatlb_cloud::TransitionReport;
use floatlb_tests::{
    agent::floatlb_binary,
    agent_events::{AgentEvents, unix_us, wait_bfd_quiet},
    demoapi,
    demonet::{
        CLIENT_IP, CLOUD_IP, ENDPOINTS, IMDS_IP, aws_env, build_network, endpoint_ip, wire_node,
    },
    ec2world::{VIP, VIP_BLOCK, World, client, test_credentials},
    imds::ImdsServer,
    moto::{Moto, free_port},
    netns::{BpfMount, Netns, NsProcess, TempDir, require_root, require_tools, unique_name},
    partition,
    prober::{Prober, longest_gap},
    servers::EchoServer,
    syncload::Load,
    timeline::Timeline,
    vpcsim::{SimEvent, SimNode, VpcSim, read_association},
};
use nix::sys::signal::Signal;

#[path = "demo/steps.rs"]
mod steps;
use steps::*;

const SERVICE_PORT: u16 = 80;
const ENDPOINT_PORT: u16 = 8080;
/// BFD interval (µs, as `--ka` takes it) and multiplier.
const KA_INTERVAL_US: u32 = 10_000;
const KA_MULT: u8 = 3;
/// `--flap-hold-down-ms` of the demo's agents.
const FLAP_HOLD_DOWN: Duration = Duration::from_millis(1000);
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// Long-lived TCP connections kept open through the failover.
const TCP_CONNS: usize = 50;
/// The whole demo must finish within this.
const DEMO_LIMIT: Duration = Duration::from_secs(110);
const NODE_NAMES: [&str; 2] = ["node A", "node B"];
/// How long node A is MASTER before the kill (`FLOATLB_DEMO_MASTER_S`
/// lowers or raises it); it also waits for two lease renewals.
const MASTER_HOLD: Duration = Duration::from_secs(10);

fn master_hold() -> Duration {
    std::env::var("FLOATLB_DEMO_MASTER_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(MASTER_HOLD)
}

/// `FLOATLB_DEMO_SCENARIO`: `kill` (default: node A's instance fails),
/// `partition` (BFD blocked between live nodes that reach EC2) or
/// `isolate` (node A cut off from node B and from EC2).
fn scenario() -> String {
    std::env::var("FLOATLB_DEMO_SCENARIO").unwrap_or_else(|_| "kill".into())
}

/// Length of the partition (`FLOATLB_DEMO_PARTITION_S`, default 10 s).
fn partition_len() -> Duration {
    std::env::var("FLOATLB_DEMO_PARTITION_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(10))
}

/// Who carries out the failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Orchestration {
    /// The agents: BFD (`--ka`), election (`--self`) and `--cloud=aws`.
    Agents,
    /// The agents run the datapath only; node B's promotion is the one-shot
    /// `floatlb cloud promote`, started by the demo right after the kill.
    OneShot,
}

fn main() -> ExitCode {
    match main_inner() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!(
                "\nRESULT: FAILED: the failover did not happen, or a connection did not survive it (see above)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("\ndemo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner() -> Result<bool> {
    require_root()?;
    require_tools(&[
        "ip",
        "bridge",
        "ethtool",
        "sysctl",
        "mount",
        "env",
        "moto_server",
    ])?;
    let bin = floatlb_binary()?;
    let mode = orchestration(&bin)?;
    let tag = unique_name("fdemo");
    // The driver lives in the cloud namespace, next to moto: moto listens on
    // an address the node namespaces route to, and the driver reaches it too.
    // Entered before the runtime exists, so every thread inherits it.
    let cloud = Netns::new(format!("{tag}-cloud"))?;
    let ns_file = std::fs::File::open(Path::new("/run/netns").join(cloud.name()))?;
    nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET)
        .context("joining the cloud namespace")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // FLOATLB_DEMO_LIMIT_S lowers the watchdog (to test the cleanup on timeout).
    let limit = std::env::var("FLOATLB_DEMO_LIMIT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEMO_LIMIT)
        .min(DEMO_LIMIT);
    let res = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::time::timeout(limit, run(&tag, &cloud, &bin, mode)) => {
                r.unwrap_or_else(|_| bail!("the demo did not finish within {limit:?}"))
            }
            _ = tokio::signal::ctrl_c() => bail!("interrupted (Ctrl-C); cleaned up"),
            _ = term.recv() => bail!("terminated (SIGTERM); cleaned up"),
        }
    });
    // Everything `run` built has been dropped (cleaned up) by now.
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(cloud);
    res
}

/// Picks the orchestration: the agents' HA when this `floatlb` build has it
/// (it accepts `--ha-state-file`), the one-shot command otherwise.
/// `FLOATLB_DEMO_ONESHOT=1` forces the one-shot command.
fn orchestration(bin: &Path) -> Result<Orchestration> {
    if std::env::var_os("FLOATLB_DEMO_ONESHOT").is_some_and(|v| v == "1") {
        return Ok(Orchestration::OneShot);
    }
    let help = std::process::Command::new(bin).arg("--help").output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    Ok(if help.contains("--ha-state-file") {
        Orchestration::Agents
    } else {
        Orchestration::OneShot
    })
}

async fn run(tag: &str, cloud: &Netns, bin: &Path, mode: Orchestration) -> Result<bool> {
    let t_start = Instant::now();
    println!("floatlb two-AZ failover demo ({tag})");
    println!(
        "  EC2 API: moto; the data path follows the API through the demo's VPC simulator\n  (moto moves no packets: the simulator polls the Elastic IP's association every {} ms\n  and routes the VIP in the router namespace to the instance it points at)",
        VpcSim::POLL.as_millis()
    );
    match mode {
        Orchestration::Agents => println!(
            "  failover: the agents themselves (BFD {} ms x {KA_MULT}, election, --cloud=aws)",
            KA_INTERVAL_US / 1000
        ),
        Orchestration::OneShot => println!(
            "  failover: SIMULATED ORCHESTRATION (this floatlb build has no HA in the daemon, or\n  FLOATLB_DEMO_ONESHOT=1): the agents carry the datapath only (no --ka); the demo detects\n  the failure itself (it causes it) and runs `floatlb cloud promote` in each node's\n  namespace. No BFD detection is measured; the EC2 calls, EIP move and traffic gap are real."
        ),
    }

    let (router, client_ns, nodes, endpoints) = build_network(tag, cloud)?;
    let moto = Moto::start_on(&CLOUD_IP.to_string(), free_port()?, &[]).await?;
    let dir = TempDir::new("fdemo-files")?;
    let mut lab = Lab {
        agents: [None, None],
        prober: None,
        sim: None,
        _imds: Vec::new(),
        _echo: Vec::new(),
        _bpf: Vec::new(),
        _xdp_pass: Vec::new(),
        moto,
        dir,
        router,
        client: client_ns,
        nodes,
        endpoints,
    };
    let world = World::build(client(&lab.moto.endpoint(), test_credentials()), tag).await?;
    println!(
        "\n[setup] moto at {}: VPC {}, {} in {} ({}), {} in {} ({}), Elastic IP {} ({})",
        lab.moto.endpoint(),
        world.vpc,
        world.nodes[0].instance_id,
        world.nodes[0].az,
        world.nodes[0].private_ip,
        world.nodes[1].instance_id,
        world.nodes[1].az,
        world.nodes[1].private_ip,
        world.eip,
        world.eip_alloc
    );
    for i in 0..2 {
        let xdp_pass = wire_node(&lab.router, &lab.nodes[i], i, &world.nodes[i].private_ip)?;
        lab._xdp_pass.push(xdp_pass);
        let l = lab.nodes[i].enter(|| std::net::TcpListener::bind((IMDS_IP, 80)))??;
        lab._imds.push(ImdsServer::start_on(&world.nodes[i], l)?);
    }
    for (i, ep) in lab.endpoints.iter().enumerate() {
        let addr = SocketAddrV4::new(endpoint_ip(i), ENDPOINT_PORT);
        lab._echo
            .push(EchoServer::start(ep, addr, u8::try_from(i)?)?);
    }
    let config = lab.dir.join("lb.json");
    write_config(&config, world.eip)?;
    let empty = lab.dir.join("empty");
    std::fs::write(&empty, "")?;
    let env = aws_env(&lab.moto, &empty);
    println!(
        "[setup] service udp {VIP}:{SERVICE_PORT} (EIP {}) -> {} endpoints; IMDS at {IMDS_IP} in each node namespace",
        world.eip, ENDPOINTS
    );

    let sim_nodes: Vec<SimNode> = (0..2)
        .map(|i| {
            Ok(SimNode {
                name: NODE_NAMES[i].into(),
                instance_id: world.nodes[i].instance_id.clone(),
                addr: world.nodes[i].private_ip.parse()?,
            })
        })
        .collect::<Result<_>>()?;
    lab.sim = Some(VpcSim::start(
        world.ec2.clone(),
        world.eip_alloc.clone(),
        lab.router.name().into(),
        VIP,
        sim_nodes,
    )?);

    let sync_key = lab.dir.join("sync.key");
    std::fs::write(&sync_key, "demo-pair-shared-sync-key\n")?;
    for i in 0..2 {
        let bpf = BpfMount::new(lab.dir.join(&format!("bpf{i}")))?;
        let pin = bpf.path().join("floatlb");
        lab._bpf.push(bpf);
        let peer = &world.nodes[1 - i].private_ip;
        let me = &world.nodes[i].private_ip;
        let mut args = env.clone();
        args.push(bin.display().to_string());
        if mode == Orchestration::OneShot {
            // Without HA in the agents the demo has no kube-loxilb to play.
            args.extend(["--config".to_string(), config.display().to_string()]);
        }
        for a in [
            "--iface",
            "eth0",
            "--pin-dir",
            &pin.display().to_string(),
            "--fib-lookup-iface",
            "lo",
            "--state-dir",
            &lab.dir.join(&format!("state{i}")).display().to_string(),
        ] {
            args.push(a.to_string());
        }
        if mode == Orchestration::Agents {
            for a in [
                "--self",
                &i.to_string(),
                "--ka",
                &format!("{peer}:{me}:{KA_INTERVAL_US}"),
                "--ka-mult",
                &KA_MULT.to_string(),
                "--claim-hold-ms",
                "3000",
                "--preempt-hold-ms",
                "500",
                "--flap-hold-down-ms",
                &FLAP_HOLD_DOWN.as_millis().to_string(),
                "--ha-state-file",
                &lab.dir.join(&format!("ha{i}.json")).display().to_string(),
            ] {
                args.push(a.to_string());
            }
            // Connection sync to the peer (found from --ka), port 22222;
            // FLOATLB_DEMO_SYNC=off shows what the connections do without it.
            if sync_off() {
                args.extend(["--sync".into(), "off".into()]);
            } else {
                args.extend([
                    "--sync".into(),
                    "on".into(),
                    "--sync-key-file".into(),
                    sync_key.display().to_string(),
                    "--sync-listen".into(),
                    format!("{me}:22222"),
                ]);
            }
            args.extend(cloud_flags(tag));
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = lab.dir.join(&format!("agent{i}.log"));
        let proc = lab.nodes[i].spawn("env", &argv, &log)?;
        lab.agents[i] = Some(proc);
    }
    for i in 0..2 {
        let p = lab.agents[i].as_mut().context("agent")?;
        wait_log(p, floatlb_tests::agent::READY_LINE, Duration::from_secs(30)).await?;
    }
    println!(
        "[setup] both agents running (XDP on eth0{}) after {:.1} s",
        if mode == Orchestration::Agents {
            ", --cloud=aws --no-os-config, --ka to the peer"
        } else {
            ", datapath only"
        },
        t_start.elapsed().as_secs_f64()
    );

    if mode == Orchestration::Agents {
        // kube-loxilb's part: it programs every node it is given.
        let nodes = [
            (NODE_NAMES[0], &lab.nodes[0]),
            (NODE_NAMES[1], &lab.nodes[1]),
        ];
        for l in demoapi::program(&nodes, &demo_services(world.eip))? {
            println!("[kube-loxilb] {l}");
        }
    }

    // Node A becomes MASTER.
    let sim = lab.sim.as_ref().context("sim")?;
    if mode == Orchestration::OneShot {
        let run = promote_once(&lab.nodes[0], bin, &config, &env, tag).await?;
        ensure!(
            run.report.ok,
            "promoting node A failed: {:?}",
            run.report.error
        );
    }
    sim.wait_owner(0, Duration::from_secs(30)).await?;
    let before = eip_owner(&world, sim).await?;
    println!("[ready] node A is MASTER: EIP {} -> {before}", world.eip);
    if mode == Orchestration::Agents {
        for (name, ns) in NODE_NAMES.iter().zip(&lab.nodes) {
            print!("{}", demoapi::tables(name, ns));
        }
    }

    let target = SocketAddr::V4(SocketAddrV4::new(VIP, SERVICE_PORT));
    lab.prober = Some(Prober::start(&lab.client, target, PROBE_EVERY)?);
    let prober = lab.prober.as_ref().context("prober")?;
    prober
        .wait_replies_after(Instant::now(), 200, Duration::from_secs(10))
        .await
        .context("the client gets no answers through node A")?;
    println!(
        "[ready] client {CLIENT_IP} probing {target} every {} ms: answered",
        PROBE_EVERY.as_millis()
    );
    // Steady state: node A has been MASTER for a while and renewed its
    // lease at least twice, so the kill meets what a long-lived pair has
    // (an unexpired lease), whenever it happens.
    let lease_at_kill = if mode == Orchestration::Agents {
        let (renewals, lease) = world.wait_steady_lease(master_hold()).await?;
        println!(
            "[ready] node A MASTER for >= {:.0} s; its lease was renewed {renewals} times (last: {lease})",
            master_hold().as_secs_f64()
        );
        Some(lease)
    } else {
        None
    };

    let sc = scenario();
    if mode == Orchestration::Agents && sc != "kill" {
        let sim = lab.sim.as_ref().context("sim")?;
        let state = [lab.dir.join("ha0.json"), lab.dir.join("ha1.json")];
        let ok = match sc.as_str() {
            "partition" => {
                partition::run_partition(&lab.nodes, &state, sim, partition_len()).await?
            }
            "isolate" => partition::run_isolate(&lab.nodes, &state, sim, CLOUD_IP).await?,
            other => bail!("FLOATLB_DEMO_SCENARIO={other}: want kill, partition or isolate"),
        };
        if !ok {
            print_logs(&lab);
        }
        println!(
            "\nRESULT: scenario {sc} {}",
            if ok { "behaved" } else { "FAILED" }
        );
        return Ok(ok);
    }

    // Steady state, so the kill meets a settled pair: a BFD flap just before
    // the kill (10 ms timers on a loaded machine) can leave the BACKUP in its
    // 1 s hand-back pause or, after several flaps, make it wait out the flap
    // hold-down before it claims.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if mode == Orchestration::Agents {
        let quiet = wait_bfd_quiet(&lab.agents, FLAP_HOLD_DOWN + Duration::from_millis(200)).await;
        if quiet < FLAP_HOLD_DOWN {
            println!(
                "[ready] note: BFD changed state {:.0} ms before the kill (no quiet period within 15 s); node B's claim may be delayed (hand-back pause, or the flap hold-down of {} ms if the link counts as flapping)",
                quiet.as_secs_f64() * 1e3,
                FLAP_HOLD_DOWN.as_millis()
            );
        } else {
            println!("[ready] BFD steady for {:.1} s", quiet.as_secs_f64());
        }
    }

    // Long-lived TCP connections, each exchanging a checked message every
    // 20 ms, opened through node A: they must survive its death.
    let load = if mode == Orchestration::Agents {
        let vip = SocketAddr::V4(SocketAddrV4::new(VIP, SERVICE_PORT));
        let load = Load::start(&lab.client, vip, TCP_CONNS, vip, 0)?;
        load.wait_all_progress(&vec![0; TCP_CONNS], 5, Duration::from_secs(15))
            .context("the TCP connections do not exchange through node A")?;
        println!(
            "[ready] {TCP_CONNS} TCP connections through {vip}, each echoing a checked 32-byte message every 20 ms{}",
            if sync_off() {
                " (sync OFF: FLOATLB_DEMO_SYNC=off)"
            } else {
                " (synced to node B)"
            }
        );
        Some(load)
    } else {
        None
    };

    // The failure.
    let at_kill = load.as_ref().map(Load::progress);
    let killed_wall = SystemTime::now();
    let killed = Instant::now();
    let a = lab.agents[0].as_mut().context("agent A")?;
    a.stop(Signal::SIGKILL, Duration::from_secs(5))?;
    lab.nodes[0].ip(&["link", "set", "eth0", "down"])?;
    let down_done = killed.elapsed();
    let mut tl = Timeline::new(killed, killed_wall);
    tl.at(killed, "node A fails: agent SIGKILLed (MASTER)".into());
    if let Some(lease) = &lease_at_kill {
        tl.at(
            killed,
            format!("lease step: node A holds the EIP's lease tag ({lease}); node B must not wait for its expiry"),
        );
    }
    tl.after(
        down_done,
        "node A's NIC down (instance failure: its pinned XDP datapath stops too)".into(),
    );

    let report = match mode {
        Orchestration::OneShot => {
            let t = Instant::now();
            tl.at(
                t,
                "SIMULATED detection: the demo runs `floatlb cloud promote` on node B".into(),
            );
            let run = promote_once(&lab.nodes[1], bin, &config, &env, tag).await?;
            tl.at(
                Instant::now(),
                format!(
                    "`floatlb cloud promote` exited after {:.1} ms (process start, IMDS, EC2 calls, status read-back)",
                    t.elapsed().as_secs_f64() * 1e3
                ),
            );
            Some(run.report)
        }
        Orchestration::Agents => None,
    };
    let killed_unix_us = unix_us(killed_wall);
    let sim = lab.sim.as_ref().context("sim")?;
    let moved = sim.wait_owner(1, Duration::from_secs(40)).await;
    let prober = lab.prober.as_ref().context("prober")?;
    let recovered = match &moved {
        Ok(_) => prober
            .wait_replies_after(Instant::now(), 200, Duration::from_secs(10))
            .await
            .context("the client gets no answers through node B"),
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    // The agent records its promotion's report once the cloud job is done.
    let mut report = report;
    let mut events = None;
    if mode == Orchestration::Agents {
        let b = lab.agents[1].as_ref().context("agent B")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ev = AgentEvents::parse(&b.log(), killed_unix_us);
            if ev.promote.is_some() || Instant::now() > deadline {
                report = ev.promote.clone();
                events = Some(ev);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Every TCP connection carries on through node B (TCP retransmits on
    // its own backoff, so the last may resume seconds after the VIP moved).
    let tcp = match (load, &at_kill) {
        (Some(load), Some(at_kill)) => {
            let resumed = carried_on(&load, at_kill).await;
            Some((resumed, load.stop()))
        }
        _ => None,
    };
    if let Some((Ok(t), _)) = &tcp {
        tl.at(
            *t,
            format!("client: every one of the {TCP_CONNS} TCP connections has exchanged 5 more messages, through node B"),
        );
    }
    let mut prober = lab.prober.take().context("prober")?;
    prober.stop();
    let sim = lab.sim.as_ref().context("sim")?;
    let after = eip_owner(&world, sim).await?;

    if let Some(r) = &report {
        tl.report("node B", r);
    }
    if let Some(ev) = &events {
        ev.add_to(&mut tl, "node B");
    }
    for e in sim.events() {
        sim_event(&mut tl, &e, killed);
    }
    let replies = prober.replies();
    let gap = longest_gap(&replies, killed);
    let last_reply = replies.iter().map(|r| r.received).max();
    if let Some(g) = &gap {
        tl.at(
            g.before.received,
            format!(
                "client: last answer before the gap (probe #{}, endpoint {})",
                g.before.seq, g.before.endpoint
            ),
        );
        tl.at(
            g.after.received,
            format!(
                "client: first answer after the gap (probe #{}, endpoint {})",
                g.after.seq, g.after.endpoint
            ),
        );
    }
    if mode == Orchestration::Agents {
        println!("\nAfter the failover (node A is down):");
        print!("{}", demoapi::tables(NODE_NAMES[1], &lab.nodes[1]));
    }
    println!("\nTimeline (ms from the kill):");
    print!("{}", tl.render());
    println!("\nSummary:");
    println!("  EIP {} owner before: {before}", world.eip);
    println!("  EIP {} owner after:  {after}", world.eip);
    if let Some(ev) = &events {
        let ms = |us: Option<i64>| {
            us.map(|u| format!("{:.1} ms", (u - killed_unix_us) as f64 / 1e3))
                .unwrap_or_else(|| "not seen".into())
        };
        println!("  BFD detection on node B: {}", ms(ev.bfd_down));
        println!(
            "  lease step on node B: {} (watched node A's lease for a renewal after the BFD Down: none came)",
            match (ev.bfd_down, ev.master) {
                (Some(d), Some(m)) =>
                    format!("{:.1} ms from BFD Down to the claim", (m - d) as f64 / 1e3),
                _ => "not seen".into(),
            }
        );
        println!("  node B BACKUP -> MASTER: {}", ms(ev.master));
        if let Some(reason) = &ev.master_reason {
            println!("  node B's claim: {reason}");
        }
    }
    if let Some(r) = &report {
        println!(
            "  promotion: {} in {:.1} ms, {} EC2 calls ({} retried)",
            if r.ok { "ok" } else { "FAILED" },
            r.duration_us as f64 / 1e3,
            r.calls.len(),
            r.retries()
        );
    }
    if let Some(last) = last_reply
        && gap
            .as_ref()
            .is_none_or(|g| g.after.received < last || last < killed)
        && recovered.is_err()
    {
        println!(
            "  client: no answer since {:+.1} ms (the outage did not end)",
            (last.duration_since(killed).as_secs_f64()) * 1e3
        );
    } else if let Some(g) = &gap {
        println!(
            "  client traffic gap: {:.1} ms ({} probes lost of {} sent at 1 ms)",
            g.length().as_secs_f64() * 1e3,
            g.lost(),
            prober.sent()
        );
    }
    let (polls, errors, last_error) = sim.poll_stats();
    println!(
        "  VPC simulator: {polls} polls of the Elastic IP, {errors} failed; demo took {:.1} s",
        t_start.elapsed().as_secs_f64()
    );
    if let Some(e) = last_error {
        println!("  VPC simulator's last poll error: {e}");
    }
    if mode == Orchestration::OneShot {
        println!("  (orchestration simulated: no BFD in the agents; detection is the demo's own)");
    }
    let tcp_ok = match &tcp {
        Some((resumed, faults)) => {
            match resumed {
                Ok(t) => println!(
                    "  TCP connections: {TCP_CONNS} open through the failover, all carried on (the last resumed {:.1} ms after the kill); resets {}, corrupted {}, missing {}",
                    t.duration_since(killed).as_secs_f64() * 1e3,
                    faults.resets,
                    faults.corrupted,
                    faults.missing
                ),
                Err(e) => println!("  TCP connections: FAILED: {e:#}"),
            }
            resumed.is_ok() && faults.total() == 0
        }
        None => true,
    };
    let ok = tcp_ok
        && moved.is_ok()
        && recovered.is_ok()
        && report.as_ref().is_none_or(|r| r.ok)
        && sim.owner() == Some(1);
    if let Err(e) = &moved {
        println!("  FAILED: {e:#}");
    }
    if let Err(e) = &recovered {
        println!("  FAILED: {e:#}");
    }
    if ok {
        println!("\nRESULT: failover to node B done, client served again");
    } else {
        print_diagnostics(&lab);
        if let Ok(secs) = std::env::var("FLOATLB_DEMO_HOLD_S") {
            println!("holding the lab for {secs} s");
            tokio::time::sleep(Duration::from_secs(secs.parse().unwrap_or(0))).await;
        }
    }
    Ok(ok)
}
