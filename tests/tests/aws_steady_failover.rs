//! AWS failover in steady state, on moto (root): the demo's two-AZ lab
//! (`tests/src/bin/demo.rs`: two real agents with `--cloud=aws`, BFD, moto,
//! the VPC simulator, a client probing every 1 ms). Node A is MASTER for
//! `FLOATLB_DEMO_MASTER_S` (here 5 s; the bench and `make demo` use 10 s)
//! and has renewed its lease at least twice, so it holds an unexpired
//! lease; then its instance fails (agent SIGKILLed, NIC down). Node B must
//! take over on the lease heartbeat (`claim (LeaseNotRenewed)`), not after
//! the lease expires. The test asserts that behaviour: the claim reason,
//! and every gap well below the lease it no longer waits out (3 s against
//! the 6 s lease; before the heartbeat a gap was about 6.1 s). The targets
//! of docs/BENCHMARKS.md (p50 <= 1 s, p99 <= 1.5 s) are printed here and
//! judged on the 10-run bench on a quiet machine, not asserted on a shared
//! CI box, where one slow run must not fail the build.
//!
//! `FLOATLB_AWS_RUNS` sets the number of runs (3 here; the 10-run figure in
//! docs/BENCHMARKS.md is `FLOATLB_AWS_RUNS=10 FLOATLB_DEMO_MASTER_S=10`).

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use floatlb_tests::netns::require_root;

/// Half the demo's lease (3 x its 2 s verify interval): a takeover that
/// waited out the lease cannot be this fast, one on the heartbeat always is.
const NO_LEASE_WAIT: Duration = Duration::from_secs(3);

fn runs() -> usize {
    std::env::var("FLOATLB_AWS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Runs the demo once; returns (client gap, node B's claim reason, output).
fn one_run() -> Result<(Duration, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .env(
            "FLOATLB_DEMO_MASTER_S",
            std::env::var("FLOATLB_DEMO_MASTER_S").unwrap_or_else(|_| "5".into()),
        )
        .output()
        .context("running the demo")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "the demo failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let gap_ms: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("client traffic gap: "))
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no client gap in the demo's output:\n{text}"))?;
    let claim = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("node B's claim: "))
        .unwrap_or("not seen")
        .to_string();
    Ok((Duration::from_secs_f64(gap_ms / 1e3), claim, text))
}

#[test]
fn steady_state_instance_failure_is_taken_over_in_about_a_second() -> Result<()> {
    require_root()?;
    let n = runs();
    let mut gaps = Vec::new();
    for run in 1..=n {
        let (gap, claim, text) = one_run()?;
        println!(
            "run {run}/{n}: client gap {:.1} ms, node B: {claim}",
            gap.as_secs_f64() * 1e3
        );
        ensure!(
            claim.contains("LeaseNotRenewed"),
            "node B did not claim on the lease heartbeat: {claim}\n{text}"
        );
        gaps.push(gap);
    }
    gaps.sort();
    let pct = |p: f64| gaps[((gaps.len() as f64 * p).ceil() as usize).clamp(1, gaps.len()) - 1];
    let (p50, p99) = (pct(0.5), pct(0.99));
    println!(
        "AWS steady-state failover on moto, {n} runs: client gap p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (load {})",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        gaps[gaps.len() - 1].as_secs_f64() * 1e3,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let max = gaps[gaps.len() - 1];
    ensure!(
        max <= NO_LEASE_WAIT,
        "a client gap of {max:?}: the takeover waited for the lease (bound {NO_LEASE_WAIT:?})"
    );
    println!(
        "targets (judged on the quiet-machine bench): p50 <= 1 s {}, p99 <= 1.5 s {}",
        if p50 <= Duration::from_secs(1) {
            "met here"
        } else {
            "not met here"
        },
        if p99 <= Duration::from_millis(1500) {
            "met here"
        } else {
            "not met here"
        }
    );
    Ok(())
}
