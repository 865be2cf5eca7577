//! Partitions of an AWS pair on moto (root), in the demo's two-AZ lab
//! (`tests/src/bin/demo.rs`, `FLOATLB_DEMO_SCENARIO`):
//! * BFD between the nodes blocked by iptables inside both node namespaces
//!   while both reach EC2 (moto): the lease heartbeat tells it from a
//!   failure, so the EIP moves 0 times and there are never two MASTERs;
//!   healed, one MASTER. 10 s here; `FLOATLB_DEMO_PARTITION_S=30
//!   FLOATLB_PARTITION_RUNS=10` is the bench of docs/BENCHMARKS.md.
//! * The MASTER cut off from its peer and from EC2: the BACKUP takes over
//!   once; the old MASTER demotes when it reaches EC2 again.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use floatlb_tests::netns::{require_root, require_tools};

fn demo(scenario: &str) -> Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .env("FLOATLB_DEMO_SCENARIO", scenario)
        .env(
            "FLOATLB_DEMO_MASTER_S",
            std::env::var("FLOATLB_DEMO_MASTER_S").unwrap_or_else(|_| "5".into()),
        )
        .output()
        .context("running the demo")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let report: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with(&format!("[{scenario}]")))
        .collect();
    println!("{}", report.join("\n"));
    ensure!(
        out.status.success(),
        "scenario {scenario} failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

#[test]
fn partition_with_ec2_reachable_moves_nothing_and_never_two_masters() -> Result<()> {
    require_root()?;
    require_tools(&["iptables"])?;
    let runs: usize = std::env::var("FLOATLB_PARTITION_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for run in 1..=runs {
        let text = demo("partition")?;
        ensure!(
            text.contains("EIP moves during the partition: 0"),
            "run {run}: {text}"
        );
        println!("partition run {run}/{runs}: 0 EIP moves, never two MASTERs");
    }
    Ok(())
}

#[test]
fn master_cut_off_from_ec2_and_peer_is_taken_over_once() -> Result<()> {
    require_root()?;
    require_tools(&["iptables"])?;
    let text = demo("isolate")?;
    ensure!(
        text.contains("EIP moves from the cut until BFD heals: 1"),
        "{text}"
    );
    Ok(())
}
