//! CPU cost of BFD: one manager with 4 sessions at 10 ms x 3 against four
//! loopback peers. The manager runs on its own single-threaded runtime, so
//! the CPU time of that thread (from /proc/thread-self/schedstat, in ns) is
//! the whole cost: receive tasks, decoding, timers and sends.
//!
//! Prints the figure and any flaps; fails when the sessions do not come Up
//! or nothing is sent.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use floatlb_agent::bfd::manager::{BfdManager, ManagerConfig};
use floatlb_agent::bfd::packet::State;
use floatlb_agent::bfd::session::SessionConfig;

const SESSIONS: u8 = 4;
const MEASURE: Duration = Duration::from_secs(4);

fn thread_cpu() -> Result<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let ns: u64 = s.split_whitespace().next().context("schedstat")?.parse()?;
    Ok(Duration::from_nanos(ns))
}

fn session(local: Ipv4Addr, peer: Ipv4Addr, peer_port: u16) -> SessionConfig {
    SessionConfig {
        peer: IpAddr::V4(peer),
        local: IpAddr::V4(local),
        peer_port,
        desired_min_tx: Duration::from_millis(10),
        required_min_rx: Duration::from_millis(10),
        detect_mult: 3,
        auth: None,
    }
}

fn bind(port: u16) -> Result<BfdManager> {
    Ok(BfdManager::bind(&ManagerConfig {
        port,
        ipv4: Some(Ipv4Addr::UNSPECIFIED),
        ipv6: None,
    })?)
}

#[test]
fn four_sessions_at_10ms_cpu_cost() -> Result<()> {
    let base = 30000 + (std::process::id() % 15000) as u16;
    let local = Ipv4Addr::new(127, 0, 0, 1);
    let peer_ip = |k: u8| Ipv4Addr::new(127, 0, 0, 2 + k);
    let (stop_tx, stop_rx) = std_mpsc::channel::<()>();

    // The four peers share one thread of their own.
    let peers = std::thread::spawn(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut ms = Vec::new();
            for k in 0..SESSIONS {
                let mut m = bind(base + 1 + u16::from(k))?;
                m.add_session(session(peer_ip(k), local, base))?;
                ms.push(m);
            }
            let [a, b, c, d] = &mut ms[..] else {
                unreachable!()
            };
            while stop_rx.try_recv().is_err() {
                tokio::select! {
                    _ = a.step() => {}
                    _ = b.step() => {}
                    _ = c.step() => {}
                    _ = d.step() => {}
                }
            }
            Ok(())
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut m = bind(base)?;
        for k in 0..SESSIONS {
            m.add_session(session(local, peer_ip(k), base + 1 + u16::from(k)))?;
        }
        let mut changes = m.subscribe();
        let all_up = |m: &BfdManager| {
            (0..SESSIONS).all(|k| {
                m.session(IpAddr::V4(peer_ip(k)))
                    .is_some_and(|s| s.state == State::Up && !s.poll_pending)
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_up(&m) {
            ensure!(Instant::now() < deadline, "sessions did not come Up");
            tokio::time::timeout(Duration::from_millis(50), m.step())
                .await
                .ok();
        }
        while changes.try_recv().is_ok() {}
        let (cpu0, t0, tx0) = (thread_cpu()?, Instant::now(), m.counters().tx_ok);
        while t0.elapsed() < MEASURE {
            tokio::time::timeout(MEASURE - t0.elapsed(), m.step())
                .await
                .ok();
        }
        let (cpu, wall) = (thread_cpu()? - cpu0, t0.elapsed());
        let sent = m.counters().tx_ok - tx0;
        let pct = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
        println!(
            "BFD CPU: {SESSIONS} sessions at 10 ms x 3: {pct:.2}% of one core \
             ({:.1} ms CPU over {:.1} s, {sent} packets sent, {:.1} us CPU per packet sent)",
            cpu.as_secs_f64() * 1e3,
            wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / sent.max(1) as f64
        );
        // Flaps are reported, not failed on: on an overloaded box a starved
        // thread really does fall silent for 30 ms.
        let flaps = std::iter::from_fn(|| changes.try_recv().ok())
            .filter(|sc| sc.new == State::Down)
            .count();
        println!(
            "BFD CPU: session Down events while measured: {flaps} (load average: {})",
            loadavg()
        );
        ensure!(sent > 0, "nothing sent");
        Ok(())
    });
    let _ = stop_tx.send(());
    peers
        .join()
        .map_err(|_| anyhow::anyhow!("peer thread panicked"))??;
    result
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
