//! HA failover benchmark (root): repeated SIGKILL of the MASTER of a
//! `--cloud=garp` pair at BFD 10 ms x 3 (see `floatlb_tests::hapair`).
//!
//! Each run builds a fresh pair, waits for node 0 to be MASTER with the
//! 1 ms UDP probe flowing through it and for BFD to be Up and unchanged
//! for 1 s on both nodes, then takes node 0's link down and SIGKILLs its
//! agent at the same moment, and measures:
//! * detection: from the kill to the BFD Down logged by node 1;
//! * client gap: the largest interval between two echoes of the probe;
//! * BFD flaps: Up -> Down changes either node logged before the kill.
//!
//! Prints every run and p50 / p99 / max (nearest-rank percentiles: with
//! fewer than 100 runs the p99 is the largest value).
//! `BENCH_HA_RUNS` sets N (default 20); `BENCH_HA_LOG_DIR` keeps both
//! agents' logs of every run there. The agent is `FLOATLB_BIN`, else the
//! `floatlb` next to this binary (so `target/release/bench_ha` runs the
//! release agent).

use std::time::Duration;

use anyhow::{Context, Result};

use floatlb_tests::hapair::{Pair, kill_node};

const HOLDS: &[&str] = &[
    "--claim-hold-ms",
    "6000",
    "--preempt-hold-ms",
    "1000",
    "--flap-hold-down-ms",
    "2000",
];

/// One run's figures.
struct RunResult {
    detection_ms: f64,
    gap_ms: f64,
    /// BFD Up -> Down changes logged by each node before the kill (flaps of
    /// a session that should have stayed Up).
    flaps: [usize; 2],
}

/// Copies both agents' logs to `$BENCH_HA_LOG_DIR/run<N>-agent<i>.log`.
fn keep_logs(pair: &Pair, run: usize) {
    let Some(dir) = std::env::var_os("BENCH_HA_LOG_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::create_dir_all(&dir);
    for i in 0..2 {
        let _ = std::fs::copy(
            pair.log_path(i),
            dir.join(format!("run{run:02}-agent{i}.log")),
        );
    }
}

fn one_run(run: usize) -> Result<RunResult> {
    let mut pair = Pair::new("hab")?;
    let res = measure(&mut pair);
    keep_logs(&pair, run);
    res
}

fn measure(pair: &mut Pair) -> Result<RunResult> {
    for i in 0..2 {
        pair.spawn(i, 10_000, 3, HOLDS)?;
    }
    for i in 0..2 {
        pair.wait_running(i)?;
    }
    pair.wait_role(0, "Master", Duration::from_secs(15))?;
    pair.wait_promoted(0, Duration::from_secs(5))?;
    let probe = pair.probe()?;
    probe.wait_flowing(Duration::from_secs(5))?;
    // Measure a settled pair: BFD Up on both nodes and unchanged for 1 s.
    // A flap in the 2 s before the kill could otherwise leave node 1's
    // session in its hand-back pause at the kill (then it logs no Down and
    // claims after the claim hold). Flaps are counted and printed, not hidden.
    std::thread::sleep(Duration::from_millis(1000));
    for i in 0..2 {
        pair.wait_bfd_settled(i, Duration::from_secs(1), Duration::from_secs(15))?;
    }
    let (t_kill, kill_us) = kill_node(pair, 0)?;
    pair.wait_role(1, "Master", Duration::from_secs(10))?;
    probe.wait_flowing(Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(200));
    let (gap, _) = probe.largest_gap_since(t_kill);
    let down = pair
        .bfd_down_after(1, kill_us)
        .context("node 1 logged no BFD Down")?;
    let flaps = [0, 1].map(|i| pair.bfd_downs_before(i, kill_us));
    Ok(RunResult {
        detection_ms: (down.saturating_sub(kill_us)) as f64 / 1000.0,
        gap_ms: gap.as_secs_f64() * 1000.0,
        flaps,
    })
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn main() -> Result<()> {
    let runs: usize = std::env::var("BENCH_HA_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "HA failover, --cloud=garp, BFD 10 ms x 3, {runs} runs, agent {} (load average {})",
        floatlb_tests::agent::floatlb_binary()?.display(),
        load.trim()
    );
    let mut det = Vec::new();
    let mut gaps = Vec::new();
    let mut failed = 0;
    let mut flap_total = 0;
    for r in 1..=runs {
        match one_run(r) {
            Ok(RunResult {
                detection_ms: d,
                gap_ms: g,
                flaps,
            }) => {
                println!(
                    "run {r:>2}: detection {d:6.1} ms, client gap {g:6.1} ms, \
                     BFD flaps before the kill: node 0 {}, node 1 {}",
                    flaps[0], flaps[1]
                );
                det.push(d);
                gaps.push(g);
                flap_total += flaps[0] + flaps[1];
            }
            Err(e) => {
                failed += 1;
                let first = format!("{e:#}");
                let first = first.lines().next().unwrap_or_default().to_string();
                println!("run {r:>2}: FAILED: {first}");
            }
        }
    }
    println!("{failed} of {runs} runs failed");
    println!("BFD flaps before the kill, both nodes, all successful runs: {flap_total}");
    anyhow::ensure!(!det.is_empty(), "every run failed");
    for (name, v) in [("detection", &det), ("client gap", &gaps)] {
        println!(
            "{name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(v, 50.0),
            percentile(v, 99.0),
            percentile(v, 100.0)
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
    Ok(())
}
