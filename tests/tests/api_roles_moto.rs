//! Roles from kube-loxilb on AWS (moto): two agents with `--cloud=aws` and
//! no `--ka`, started as the seed's set-up starts them; `POST
//! /config/cistate` moves the Elastic IP, `GET /status` shows each move's
//! cloud report. With `--ka` a cistate POST is refused and never makes a
//! second MASTER.
//!
//! Network: the demo's (`floatlb_tests::demonet`): a router namespace for
//! the VPC, the two node namespaces (IMDSv2 served in each), and moto in a
//! cloud namespace. The test thread joins the cloud namespace before its
//! runtime exists, so moto and every client run there.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use floatlb_tests::{
    agent::{READY_LINE, floatlb_binary},
    apiclient::{Answer, ApiClient},
    demonet::{CLOUD_IP, IMDS_IP, aws_env, build_network, wire_node},
    ec2world::{VIP, VIP_BLOCK, World, client, test_credentials},
    imds::ImdsServer,
    moto::{Moto, free_port},
    netns::{BpfMount, Netns, NsProcess, TempDir, require_root, require_tools, unique_name},
};

/// Waits (polling the API, an event source of its own) until `f` holds.
fn until(what: &str, limit: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let t0 = std::time::Instant::now();
    loop {
        if f()? {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(api: &ApiClient) -> Result<serde_json::Value> {
    api.get("/status")?.json()
}

fn role(api: &ApiClient) -> Result<String> {
    Ok(status(api)?["role"].as_str().unwrap_or("").to_string())
}

fn cistate(api: &ApiClient, state: &str) -> Result<Answer> {
    api.post(
        "/config/cistate",
        &format!(r#"{{"instance":"llb-inst0","state":"{state}","vip":"0.0.0.0"}}"#),
    )
}

struct Node {
    agent: NsProcess,
    api: ApiClient,
}

#[allow(clippy::too_many_arguments)]
fn spawn_agent(
    ns: &Netns,
    i: usize,
    dir: &Path,
    bpf: &BpfMount,
    moto: &Moto,
    peer: &str,
    me: &str,
    ka: bool,
    service: &Path,
) -> Result<Node> {
    let bin = floatlb_binary()?.to_string_lossy().into_owned();
    let empty = dir.join("empty");
    std::fs::write(&empty, "")?;
    let mut args = aws_env(moto, &empty);
    args.push(bin);
    let pin = bpf.path().join("floatlb");
    let state = dir.join(format!("state{i}"));
    for a in [
        "--iface",
        "eth0",
        "--pin-dir",
        &pin.to_string_lossy(),
        "--fib-lookup-iface",
        "lo",
        "--state-dir",
        &state.to_string_lossy(),
        "--config",
        &service.to_string_lossy(),
        "--cloud=aws",
        &format!("--cloudcidrblock={VIP_BLOCK}"),
        "--no-os-config",
        "--cloud-cluster-name",
        &format!("roles{}", std::process::id()),
        "--cluster",
        peer,
        "--self",
        &i.to_string(),
        "--verify-interval-ms",
        "500",
    ] {
        args.push(a.to_string());
    }
    if ka {
        args.push("--ka".into());
        args.push(format!("{peer}:{me}:20000"));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = dir.join(format!(
        "agent{i}-{}.log",
        if ka { "ka" } else { "cistate" }
    ));
    let mut agent = ns.spawn("env", &argv, &log)?;
    agent.wait_for_log(READY_LINE, Duration::from_secs(30))?;
    let api = ApiClient::local(ns);
    api.wait_up(Duration::from_secs(10))?;
    Ok(Node { agent, api })
}

#[test]
fn cistate_posts_move_the_eip_and_are_refused_under_ka() -> Result<()> {
    require_root()?;
    require_tools(&["ip", "sysctl", "mount", "env", "moto_server"])?;
    let tag = unique_name("frol");
    let cloud = Netns::new(format!("{tag}-cloud"))?;
    let ns_file = std::fs::File::open(Path::new("/run/netns").join(cloud.name()))?;
    // Moto and the test's EC2 client run in the cloud namespace: join it
    // before the runtime (and its threads) exist.
    nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(&tag, &cloud))
}

async fn run(tag: &str, cloud: &Netns) -> Result<()> {
    let (router, _client, nodes, _eps) = build_network(tag, cloud)?;
    let moto = Moto::start_on(&CLOUD_IP.to_string(), free_port()?, &[]).await?;
    let world = World::build(client(&moto.endpoint(), test_credentials()), tag).await?;
    let dir = TempDir::new(&format!("{tag}-files"))?;
    let mut keep = Vec::new();
    let mut imds = Vec::new();
    let mut bpfs = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        keep.push(wire_node(&router, node, i, &world.nodes[i].private_ip)?);
        let l = node.enter(|| std::net::TcpListener::bind((IMDS_IP, 80)))??;
        imds.push(ImdsServer::start_on(&world.nodes[i], l)?);
        bpfs.push(BpfMount::new(dir.join(&format!("bpf{i}")))?);
    }
    // One service on the world's EIP and the VIP (the AWS multi-AZ shape).
    let service = dir.join("lb.json");
    std::fs::write(
        &service,
        format!(
            r#"{{"lbAttr":[{{"serviceArguments":{{"externalIP":"{}","privateIP":"{VIP}","port":80,"protocol":"udp","sel":0,"mode":2}},"endpoints":[{{"endpointIP":"10.0.3.10","targetPort":8080,"weight":1}}]}}]}}"#,
            world.eip,
        ),
    )?;
    let ip = |i: usize| world.nodes[i].private_ip.clone();
    let mut pair = Vec::new();
    for i in 0..2 {
        pair.push(spawn_agent(
            &nodes[i],
            i,
            dir.path(),
            &bpfs[i],
            &moto,
            &ip(1 - i),
            &ip(i),
            false,
            &service,
        )?);
    }
    let (a, b) = (&pair[0].api, &pair[1].api);
    // The seed's set-up: no --ka, a cloud provider. Both start BACKUP and
    // hold nothing until kube-loxilb says otherwise.
    ensure!(role(a)? == "BACKUP" && role(b)? == "BACKUP");
    ensure!(status(a)?["mode"] == "cistate", "{}", status(a)?);
    let cis = a.get("/config/cistate/all")?.json()?;
    ensure!(cis["Attr"][0]["state"] == "BACKUP", "{cis}");

    // kube-loxilb elects A. The POST answers at once; the EIP follows in
    // the background.
    let t = std::time::Instant::now();
    ensure!(cistate(a, "MASTER")?.is_success());
    ensure!(cistate(b, "BACKUP")?.is_success());
    let answered = t.elapsed();
    until("A MASTER with its report", Duration::from_secs(30), || {
        let s = status(a)?;
        Ok(s["role"] == "MASTER" && s["last_transition"]["report"]["ok"] == true)
    })?;
    world.assert_eni_master(0).await?;
    println!(
        "cistate MASTER -> A: POST answered in {} ms; EIP on A after {} ms; report: {}",
        answered.as_millis(),
        t.elapsed().as_millis(),
        status(a)?["last_transition"]["report"]["duration_us"]
    );

    // kube-loxilb re-elects B (A told BACKUP first, as after A's death).
    let t = std::time::Instant::now();
    ensure!(cistate(a, "BACKUP")?.is_success());
    ensure!(cistate(b, "MASTER")?.is_success());
    until("B MASTER with its report", Duration::from_secs(40), || {
        let s = status(b)?;
        Ok(s["role"] == "MASTER" && s["last_transition"]["report"]["ok"] == true)
    })?;
    world.assert_eni_master(1).await?;
    ensure!(role(a)? == "BACKUP");
    let moves = b.get("/ha/transitions")?.json()?;
    println!(
        "cistate MASTER -> B: EIP on B after {} ms; B's transitions: {}",
        t.elapsed().as_millis(),
        moves["transitions"]
            .as_array()
            .map(|l| l.len())
            .unwrap_or(0)
    );

    // Restarted, B resumes the role kube-loxilb gave it (state dir).
    let mut b_node = pair.pop().context("node b")?;
    b_node
        .agent
        .stop(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10))?;
    let b_node = spawn_agent(
        &nodes[1],
        1,
        dir.path(),
        &bpfs[1],
        &moto,
        &ip(0),
        &ip(1),
        false,
        &service,
    )?;
    until(
        "B MASTER again after its restart",
        Duration::from_secs(40),
        || Ok(role(&b_node.api)? == "MASTER"),
    )?;
    drop(b_node);
    drop(pair);

    // With --ka, BFD elects: a cistate POST is refused, never a 2nd MASTER.
    let mut ka = Vec::new();
    for i in 0..2 {
        ka.push(spawn_agent(
            &nodes[i],
            i,
            dir.path(),
            &bpfs[i],
            &moto,
            &ip(1 - i),
            &ip(i),
            true,
            &service,
        )?);
    }
    until("one MASTER elected by BFD", Duration::from_secs(40), || {
        Ok(role(&ka[0].api)? == "MASTER" || role(&ka[1].api)? == "MASTER")
    })?;
    let backup = if role(&ka[0].api)? == "MASTER" { 1 } else { 0 };
    let refused = cistate(&ka[backup].api, "MASTER")?;
    println!("cistate under --ka: {} {}", refused.status, refused.body);
    ensure!(
        refused.status == 409 && refused.body.contains("--ka"),
        "{refused:?}"
    );
    for _ in 0..20 {
        let masters = (0..2)
            .filter(|&i| role(&ka[i].api).is_ok_and(|r| r == "MASTER"))
            .count();
        ensure!(
            masters == 1,
            "{masters} MASTERs after a refused cistate POST"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(ka);
    drop(imds);
    Ok(())
}
