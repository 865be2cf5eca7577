//! Partition scenarios for the demo's two-AZ lab (`tests/src/bin/demo.rs`):
//! BFD between the nodes blocked with iptables inside the node namespaces
//! (both nodes alive and reaching EC2), or the MASTER cut off from its peer
//! and from EC2. While a scenario runs, both agents' roles (their HA state
//! files) are sampled every 10 ms and the VPC simulator records every EIP
//! move, so "never two MASTERs" and "the EIP moves N times" are measured.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{netns::Netns, vpcsim::VpcSim};

/// The nodes' names in the scenarios' output.
const NODE_NAMES: [&str; 2] = ["node A", "node B"];

/// BFD single-hop control port.
const BFD_PORT: &str = "3784";

/// What a scenario saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// EIP owner changes the simulator applied during the scenario.
    pub eip_moves: usize,
    /// 10 ms samples at which both agents said MASTER.
    pub dual_master_samples: u32,
    pub samples: u32,
}

/// The role an agent's HA state file holds ("Init" when unreadable).
pub fn role(state_file: &Path) -> String {
    std::fs::read(state_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["role"].as_str().map(str::to_string))
        .unwrap_or_else(|| "Init".into())
}

/// iptables rules added to a node namespace; removed by [`Self::heal`] or on drop.
pub struct Block<'a> {
    ns: &'a Netns,
    rules: Vec<Vec<String>>,
}

impl<'a> Block<'a> {
    pub fn new(ns: &'a Netns) -> Self {
        Block {
            ns,
            rules: Vec::new(),
        }
    }

    fn add(&mut self, rule: &[&str]) -> Result<()> {
        let mut args = vec!["-A"];
        args.extend_from_slice(rule);
        self.ns.run("iptables", &args)?;
        self.rules
            .push(rule.iter().map(|s| s.to_string()).collect());
        Ok(())
    }

    /// Drops BFD control packets both ways.
    pub fn bfd(&mut self) -> Result<()> {
        self.add(&["INPUT", "-p", "udp", "--dport", BFD_PORT, "-j", "DROP"])?;
        self.add(&["OUTPUT", "-p", "udp", "--dport", BFD_PORT, "-j", "DROP"])
    }

    /// Cuts the node off from the EC2 endpoint (connections are refused,
    /// so calls fail fast instead of waiting out the SDK's timeouts).
    pub fn cloud(&mut self, cloud_ip: Ipv4Addr) -> Result<()> {
        let ip = cloud_ip.to_string();
        self.add(&[
            "OUTPUT",
            "-d",
            &ip,
            "-p",
            "tcp",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ])
    }

    /// Removes every rule added, newest first.
    pub fn heal(&mut self) -> Result<()> {
        while let Some(rule) = self.rules.pop() {
            let mut args = vec!["-D".to_string()];
            args.extend(rule);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            self.ns.run("iptables", &argv)?;
        }
        Ok(())
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        let _ = self.heal();
    }
}

/// Samples both agents' roles every 10 ms for `d`; counts dual MASTERs
/// and the EIP moves the simulator applied meanwhile.
pub async fn observe(state: &[PathBuf; 2], sim: &VpcSim, d: Duration) -> Observed {
    let moves_before = sim.events().len();
    let mut o = Observed::default();
    let end = Instant::now() + d;
    while Instant::now() < end {
        o.samples += 1;
        if role(&state[0]) == "Master" && role(&state[1]) == "Master" {
            o.dual_master_samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    o.eip_moves = sim.events().len() - moves_before;
    o
}

/// Waits (bounded) until node `i`'s role is `want`; returns the wait.
pub async fn wait_role(state: &Path, want: &str, timeout: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        if role(state) == want {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            bail!(
                "{} did not become {want} within {timeout:?} (role {})",
                state.display(),
                role(state)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until exactly one node is MASTER and the other BACKUP.
pub async fn wait_one_master(state: &[PathBuf; 2], timeout: Duration) -> Result<usize> {
    let t0 = Instant::now();
    loop {
        let r = [role(&state[0]), role(&state[1])];
        match (r[0].as_str(), r[1].as_str()) {
            ("Master", "Backup") => return Ok(0),
            ("Backup", "Master") => return Ok(1),
            _ if t0.elapsed() > timeout => bail!("no single MASTER within {timeout:?}: {r:?}"),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// BFD blocked both ways in both node namespaces; both nodes alive and
/// reaching EC2. The EIP must not move and there must never be two
/// MASTERs; after healing, one MASTER.
pub async fn run_partition(
    nodes: &[Netns; 2],
    state: &[PathBuf; 2],
    sim: &VpcSim,
    d: Duration,
) -> Result<bool> {
    println!(
        "\n[partition] BFD between the nodes blocked (iptables in both node namespaces) for {:.0} s; both reach EC2",
        d.as_secs_f64()
    );
    let mut blocks = [Block::new(&nodes[0]), Block::new(&nodes[1])];
    for b in &mut blocks {
        b.bfd()?;
    }
    let o = observe(state, sim, d).await;
    for b in &mut blocks {
        b.heal()?;
    }
    let after = wait_one_master(state, Duration::from_secs(20)).await;
    println!("  EIP moves during the partition: {}", o.eip_moves);
    println!(
        "  10 ms samples with two MASTERs: {} of {}",
        o.dual_master_samples, o.samples
    );
    match &after {
        Ok(m) => println!("  healed: one MASTER ({})", NODE_NAMES[*m]),
        Err(e) => println!("  healed: {e:#}"),
    }
    Ok(o.eip_moves == 0 && o.dual_master_samples == 0 && after.is_ok())
}

/// Node A (MASTER) cut off from node B and from EC2: node B must take over
/// once; node A demotes when it reaches EC2 again (BFD still blocked).
pub async fn run_isolate(
    nodes: &[Netns; 2],
    state: &[PathBuf; 2],
    sim: &VpcSim,
    cloud_ip: Ipv4Addr,
) -> Result<bool> {
    println!(
        "\n[isolate] node A cut off from node B (BFD dropped) and from EC2 (TCP to moto refused)"
    );
    let moves_before = sim.events().len();
    let mut bfd = Block::new(&nodes[0]);
    let mut ec2 = Block::new(&nodes[0]);
    let t0 = Instant::now();
    bfd.bfd()?;
    ec2.cloud(cloud_ip)?;
    let took = sim.wait_owner(1, Duration::from_secs(20)).await;
    match &took {
        Ok(ev) => println!(
            "  node B took over: EIP routed to it {:.0} ms after the cut",
            ev.routed.duration_since(t0).as_secs_f64() * 1e3
        ),
        Err(e) => println!("  node B did not take over: {e:#}"),
    }
    let a_role = role(&state[0]);
    println!("  node A meanwhile (no EC2, no peer): {a_role}");
    let t1 = Instant::now();
    ec2.heal()?;
    let demoted = wait_role(&state[0], "Backup", Duration::from_secs(20)).await;
    match &demoted {
        Ok(_) => println!(
            "  node A reaches EC2 again: demoted {:.0} ms later (it saw node B as the owner)",
            t1.elapsed().as_secs_f64() * 1e3
        ),
        Err(e) => println!("  node A did not demote: {e:#}"),
    }
    let settle = observe(state, sim, Duration::from_secs(2)).await;
    // A move may pass through "nobody" while the ENI is rebuilt: count
    // the arrivals at a node.
    let moves = sim.events()[moves_before..]
        .iter()
        .filter(|e| e.assoc.owner.is_some())
        .count();
    println!("  EIP moves from the cut until BFD heals: {moves} (want 1)");
    bfd.heal()?;
    let after = wait_one_master(state, Duration::from_secs(20)).await;
    match &after {
        Ok(m) => println!("  BFD healed: one MASTER ({})", NODE_NAMES[*m]),
        Err(e) => println!("  BFD healed: {e:#}"),
    }
    Ok(took.is_ok()
        && demoted.is_ok()
        && moves == 1
        && settle.dual_master_samples == 0
        && after.is_ok())
}
