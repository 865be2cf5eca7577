//! HA failover of a real floatlb pair in network namespaces (root).
//!
//! Two agents run `--cloud=garp` on one L2 segment with a client and an
//! endpoint (see `floatlb_tests::hapair`). A probe sends a UDP datagram to
//! the VIP every millisecond; the endpoint echoes it back through the LB.
//! Each case prints its timing figures (detection, client gap); the
//! assertions are about behaviour: who is MASTER, never two, no flapping.
//!
//! The tests share the machine's two cores with 10 ms BFD timers, so they
//! run one at a time (a lock), not in parallel.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use floatlb_tests::hapair::{Pair, Roles, TEST_HOLDS, kill_node, now_unix_us};
use nix::sys::signal::Signal;

static SERIAL: Mutex<()> = Mutex::new(());

/// Hold timers of every test (see [`TEST_HOLDS`]).
const HOLDS: &[&str] = TEST_HOLDS;
/// BFD interval of the tests. 10 ms x 3 flaps on a loaded 2-core box
/// (a starved sender really falls silent for 30 ms) and a flap is a real
/// BFD outage to the HA machine, so the functional tests use 30 ms x 3;
/// `bench_ha` measures 10 ms x 3.
const KA_US: u32 = 30_000;
const PREEMPT_HOLD: Duration = Duration::from_millis(1500);

/// Builds the pair, starts both agents with BFD `ka_us` x `mult`, waits for
/// node 0 MASTER / node 1 BACKUP and for the probe's echoes to flow.
fn elected_pair(prefix: &str, ka_us: u32, mult: u8) -> Result<Pair> {
    let mut pair = Pair::new(prefix)?;
    for i in 0..2 {
        pair.spawn(i, ka_us, mult, HOLDS)?;
    }
    for i in 0..2 {
        pair.wait_running(i)?;
    }
    pair.wait_role(0, "Master", Duration::from_secs(15))?;
    pair.wait_role(1, "Backup", Duration::from_secs(5))?;
    pair.wait_promoted(0, Duration::from_secs(5))?;
    Ok(pair)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Samples roles every 10 ms for `dur` and fails if both were ever MASTER.
fn never_two_masters(pair: &Pair, dur: Duration) -> Result<Vec<Roles>> {
    let samples = pair.sample_roles(dur);
    let dual = samples
        .iter()
        .filter(|r| r.0[0] == "Master" && r.0[1] == "Master")
        .count();
    ensure!(
        dual == 0,
        "{dual} of {} samples show two MASTERs{}",
        samples.len(),
        pair.logs()
    );
    Ok(samples)
}

fn exactly_one_master(pair: &Pair) -> Result<usize> {
    let r = pair.roles();
    let masters: Vec<usize> = (0..2).filter(|&i| r.0[i] == "Master").collect();
    ensure!(
        masters.len() == 1,
        "want exactly one MASTER, roles {r:?}{}",
        pair.logs()
    );
    Ok(masters[0])
}

#[test]
fn sigkill_of_the_master_backup_takes_over_and_returning_node_waits_for_the_hold() -> Result<()> {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut pair = elected_pair("hak", KA_US, 3)?;
    let probe = pair.probe()?;
    probe.wait_flowing(Duration::from_secs(5))?;

    let (t_kill, kill_us) = kill_node(&mut pair, 0)?;
    let takeover = pair.wait_role(1, "Master", Duration::from_secs(5))?;
    probe.wait_flowing(Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(200));
    let (gap, _) = probe.largest_gap_since(t_kill);
    let down_us = pair.bfd_down_after(1, kill_us).ok_or_else(|| {
        anyhow::anyhow!("node 1 logged no BFD Down after the kill{}", pair.logs())
    })?;
    let detection = Duration::from_micros(down_us.saturating_sub(kill_us));
    println!(
        "HA sigkill (BFD {} ms x 3): detection {:.1} ms (kill -> BFD Down on the backup), \
         client gap {:.1} ms, backup MASTER in state file after {:.1} ms",
        KA_US / 1000,
        ms(detection),
        ms(gap),
        ms(takeover)
    );
    ensure!(
        detection < Duration::from_secs(1),
        "BFD Down came {detection:?} after the kill"
    );

    // Node 0 returns: it must stay BACKUP while BFD has been Up for less
    // than the preempt hold, then get the role back, never two MASTERs.
    pair.spawn(0, KA_US, 3, HOLDS)?;
    pair.wait_running(0)?;
    pair.set_link(0, true)?;
    let back_us = now_unix_us();
    let samples = never_two_masters(&pair, Duration::from_secs(5))?;
    let up_us = pair
        .events(0, "bfd_state")
        .iter()
        .filter(|v| v["new"] == "Up")
        .filter_map(|v| v["at_unix_us"].as_u64())
        .find(|&t| t >= back_us)
        .ok_or_else(|| anyhow::anyhow!("returning node 0 never saw BFD Up{}", pair.logs()))?;
    let master_us = pair
        .transitions(0)
        .iter()
        .find(|(_, _, new)| new == "Master")
        .map(|(t, _, _)| *t)
        .ok_or_else(|| anyhow::anyhow!("node 0 did not get the role back{}", pair.logs()))?;
    let held = Duration::from_micros(master_us.saturating_sub(up_us));
    println!(
        "HA return: node 0 stayed BACKUP {:.0} ms after BFD Up (preempt hold {} ms), {} role samples, no dual MASTER",
        ms(held),
        PREEMPT_HOLD.as_millis(),
        samples.len()
    );
    ensure!(
        held >= PREEMPT_HOLD,
        "node 0 took the role back after {held:?}, before the hold"
    );
    ensure!(
        exactly_one_master(&pair)? == 0,
        "node 0 should be MASTER again"
    );
    Ok(())
}

#[test]
fn sigterm_hands_over_gracefully() -> Result<()> {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut pair = elected_pair("hat", KA_US, 3)?;
    let probe = pair.probe()?;
    probe.wait_flowing(Duration::from_secs(5))?;
    let t = Instant::now();
    let status = pair.stop(0, Signal::SIGTERM)?;
    ensure!(
        status.success(),
        "node 0 exited with {status} after SIGTERM"
    );
    let takeover = pair.wait_role(1, "Master", Duration::from_secs(5))?;
    probe.wait_flowing(Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(200));
    let (gap, _) = probe.largest_gap_since(t);
    let reason = pair
        .events(1, "ha_transition")
        .iter()
        .rev()
        .find(|v| v["new"] == "Master")
        .and_then(|v| v["reason"].as_str().map(str::to_string))
        .unwrap_or_default();
    println!(
        "HA sigterm: client gap {:.1} ms, backup MASTER after {:.1} ms (reason: {reason})",
        ms(gap),
        ms(takeover)
    );
    ensure!(
        reason.contains("AdminDown"),
        "backup did not promote on the AdminDown: {reason}"
    );
    Ok(())
}

/// Link down on the MASTER (agent alive): the BACKUP takes over; when the
/// link returns the pair settles on one MASTER.
#[test]
fn link_down_and_back() -> Result<()> {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let pair = elected_pair("hal", KA_US, 3)?;
    let probe = pair.probe()?;
    probe.wait_flowing(Duration::from_secs(5))?;
    let t = Instant::now();
    pair.set_link(0, false)?;
    pair.wait_role(1, "Master", Duration::from_secs(5))?;
    probe.wait_flowing(Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(200));
    let (gap, _) = probe.largest_gap_since(t);
    println!("HA link down: client gap {:.1} ms", ms(gap));
    pair.set_link(0, true)?;
    let t_up = Instant::now();
    // The pair settles: then exactly one MASTER for a second, and traffic.
    let m = pair.wait_one_master(Duration::from_secs(10))?;
    never_two_masters(&pair, Duration::from_secs(1))?;
    probe.wait_flowing(Duration::from_secs(5))?;
    let (gap_back, _) = probe.largest_gap_since(t_up);
    println!(
        "HA link back: node {m} MASTER, client gap {:.1} ms",
        ms(gap_back)
    );
    Ok(())
}

#[test]
fn total_loss_on_the_master_fails_over() -> Result<()> {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let pair = elected_pair("han", KA_US, 3)?;
    let probe = pair.probe()?;
    probe.wait_flowing(Duration::from_secs(5))?;
    let t = Instant::now();
    let t_us = now_unix_us();
    let how = pair.loss(0, Some(100))?;
    pair.wait_role(1, "Master", Duration::from_secs(5))?;
    probe.wait_flowing(Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(200));
    let (gap, _) = probe.largest_gap_since(t);
    let detection = pair
        .bfd_down_after(1, t_us)
        .map(|d| ms(Duration::from_micros(d - t_us)));
    println!(
        "HA 100% loss on the MASTER ({how}): detection {detection:?} ms, client gap {:.1} ms",
        ms(gap)
    );
    pair.loss(0, None)?;
    pair.wait_one_master(Duration::from_secs(10))?;
    never_two_masters(&pair, Duration::from_secs(1))?;
    Ok(())
}

/// 30 % loss both ways with 20 ms x 10 BFD: no role change at all.
#[test]
fn thirty_percent_loss_does_not_flap() -> Result<()> {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let pair = elected_pair("has", 20_000, 10)?;
    let before: Vec<usize> = (0..2).map(|i| pair.transitions(i).len()).collect();
    let bfd_before: Vec<usize> = (0..2).map(|i| pair.events(i, "bfd_state").len()).collect();
    let mut how = "";
    for i in 0..2 {
        how = pair.loss(i, Some(30))?;
    }
    let samples = never_two_masters(&pair, Duration::from_secs(4))?;
    for i in 0..2 {
        pair.loss(i, None)?;
    }
    let after: Vec<usize> = (0..2).map(|i| pair.transitions(i).len()).collect();
    let bfd_after: Vec<usize> = (0..2).map(|i| pair.events(i, "bfd_state").len()).collect();
    let flips = samples.windows(2).filter(|w| w[0] != w[1]).count();
    println!(
        "HA 30% loss ({how}) for 4 s (BFD 20 ms x 10): role transitions {:?}, BFD state changes {:?}, role flips in samples {flips}",
        [after[0] - before[0], after[1] - before[1]],
        [bfd_after[0] - bfd_before[0], bfd_after[1] - bfd_before[1]],
    );
    ensure!(
        after == before && flips == 0,
        "roles changed under 30% loss{}",
        pair.logs()
    );
    ensure!(pair.roles() == Roles(["Master".into(), "Backup".into()]));
    Ok(())
}

#[test]
fn cold_start_never_shows_two_masters() -> Result<()> {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut pair = Pair::new("hac")?;
    pair.spawn(0, KA_US, 3, HOLDS)?;
    pair.spawn(1, KA_US, 3, HOLDS)?;
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut dual = 0;
    let mut master_at = None;
    while start.elapsed() < Duration::from_secs(15) {
        let r = pair.roles();
        if r.0[0] == "Master" && r.0[1] == "Master" {
            dual += 1;
        }
        if master_at.is_none() && r.0.iter().any(|x| x == "Master") {
            master_at = Some(start.elapsed());
        }
        samples.push(r);
        if master_at.is_some_and(|t| start.elapsed() > t + Duration::from_secs(1)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "HA cold start: {} samples every 10 ms, {dual} with two MASTERs, first MASTER after {:?}",
        samples.len(),
        master_at
    );
    ensure!(dual == 0, "two MASTERs in {dual} samples{}", pair.logs());
    ensure!(master_at.is_some(), "no MASTER elected{}", pair.logs());
    ensure!(
        exactly_one_master(&pair)? == 0,
        "the preferred node 0 should win"
    );
    Ok(())
}
