//! Bulk resync of a large conntrack table, end to end: node A's datapath
//! holds N flows (default 1,000,000); A's sync service connects to B's over
//! loopback, dumps its table, streams it (HMAC'd frames) and B installs
//! every flow into its own datapath and acknowledges. The time runs from
//! A turning MASTER to B's ResyncAck reaching A, the moment the HA machine
//! would let a returning node take the role back. Also times A's table dump
//! and a local install alone. Both datapaths live in a private network
//! namespace; nothing is attached to an interface. Needs root.
//!
//! Usage: bench_sync [FLOWS] [ROUNDS]   (defaults 1000000, 3)

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use floatlb_dataplane::{
    CtRecord, Dataplane, DataplaneOptions, EndpointSpec, FlowKey, PROTO_TCP, ServiceSpec, TcpState,
    monotonic_ns,
};
use floatlb_sync::{SyncConfig, SyncEvent, SyncKey};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const LB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn service() -> ServiceSpec {
    ServiceSpec {
        vip: VIP,
        port: 80,
        proto: PROTO_TCP,
        sel: 1,
        snat_ip: LB,
        endpoints: (11..19)
            .map(|i| EndpointSpec {
                ip: Ipv4Addr::new(10, 0, 1, i),
                port: 8080,
                weight: 1,
            })
            .collect(),
        idle_timeout_secs: None,
    }
}

/// `n` distinct established flows spread over the service's endpoints.
fn flows(n: u32) -> Vec<CtRecord> {
    let now = monotonic_ns();
    (0..n)
        .map(|i| CtRecord {
            client: FlowKey {
                src: Ipv4Addr::from(0x0a40_0000 + (i >> 15)),
                dst: VIP,
                sport: (i & 0x7fff) as u16 + 1024,
                dport: 80,
                proto: PROTO_TCP,
            },
            nat_src: (LB, 1024 + (i % 15_000) as u16),
            nat_dst: (Ipv4Addr::new(10, 0, 1, 11 + (i / 15_000 % 8) as u8), 8080),
            tcp_state: TcpState::Established,
            packets: 0,
            bytes: 0,
            last_seen_ns: now,
        })
        .collect()
}

fn open(root: &std::path::Path, name: &str, max_ct: u32) -> anyhow::Result<Dataplane> {
    let mut dp = Dataplane::open(&DataplaneOptions {
        pin_dir: root.join(name),
        max_services: 64,
        max_conntrack: max_ct,
        ..DataplaneOptions::default()
    })?;
    dp.upsert_service(&service())?;
    Ok(dp)
}

fn sync_cfg(node: u8, listen: u16, peer: u16) -> anyhow::Result<SyncConfig> {
    Ok(SyncConfig {
        node,
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, listen)),
        peer: SocketAddr::from((Ipv4Addr::LOCALHOST, peer)),
        key: SyncKey::new(b"bench-sync-key-0123456789abcdef", "bench")?,
        queue_capacity: 65536,
        refresh: Duration::from_secs(3600),
    })
}

fn rate(n: u32, d: Duration) -> String {
    format!(
        "{:>7.0} ms  {:>9.0} flows/s",
        d.as_secs_f64() * 1e3,
        f64::from(n) / d.as_secs_f64()
    )
}

fn run(n: u32, rounds: usize, root: PathBuf) -> anyhow::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    let up = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    ensure!(up.success(), "ip link set lo up failed");
    // Two entries per flow, and room for the LRU's per-CPU free lists.
    let max_ct = 2 * n + n / 4 + 4096;
    let mut a = open(&root, "a", max_ct)?;
    let mut b = open(&root, "b", max_ct)?;
    let recs = flows(n);

    let mut local = a.flow_sync_table()?;
    let t = Instant::now();
    for chunk in recs.chunks(1024) {
        local.insert(chunk)?;
    }
    let install = t.elapsed();
    let t = Instant::now();
    let dumped = local.dump()?.len();
    let dump = t.elapsed();
    ensure!(dumped == n as usize, "A holds {dumped} flows, not {n}");
    println!("bench-sync: {n} flows, release build, loopback, HMAC-SHA256 frames");
    println!("  A: local install (batches of 1024)  {}", rate(n, install));
    println!("  A: table dump                       {}", rate(n, dump));

    let (tx, rx) = mpsc::channel::<SyncEvent>();
    let svc_b = floatlb_agent::sync::service(sync_cfg(1, 22301, 22302)?, &mut b, Arc::new(|_| {}))?;
    let svc_a = floatlb_agent::sync::service(
        sync_cfg(0, 22302, 22301)?,
        &mut a,
        Arc::new(move |e| {
            let _ = tx.send(e);
        }),
    )?;
    let mut times = Vec::new();
    for round in 1..=rounds {
        let t = Instant::now();
        svc_a.set_active(true);
        let deadline = t + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(SyncEvent::PeerResynced { count, .. }) if count == n => break,
                Ok(_) => continue,
                Err(_) => anyhow::bail!("round {round}: no ResyncAck for {n} flows within 120 s"),
            }
        }
        let took = t.elapsed();
        let held = floatlb_dataplane::pinned_conntrack_dump(&root.join("b"))?.len();
        ensure!(
            held == n as usize,
            "B holds {held} flows after the resync, not {n}"
        );
        println!(
            "  round {round}: resync A -> B, {} B's table  {}",
            if round == 1 {
                "into an empty"
            } else {
                "over a full  "
            },
            rate(n, took)
        );
        times.push(took);
        svc_a.set_active(false);
        // The sender notices within a tick and closes the session.
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(SyncEvent::Connected(false)) => break,
                Ok(_) => continue,
                Err(_) => anyhow::bail!("round {round}: the session did not close"),
            }
        }
    }
    let best = times.iter().min().copied().unwrap_or_default();
    println!(
        "  end-to-end resync: first {:.2} s, best {:.2} s for {n} flows (target: 1,000,000 in <= 5 s, >= 200,000 flows/s)",
        times[0].as_secs_f64(),
        best.as_secs_f64()
    );
    svc_a.stop();
    svc_b.stop();
    a.unload()?;
    b.unload()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    ensure!(
        nix::unistd::Uid::effective().is_root(),
        "bench_sync needs root (BPF maps, a network namespace): run with sudo"
    );
    let mut args = std::env::args().skip(1);
    let n: u32 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let root = PathBuf::from(format!("/run/floatlb-bench-sync-{}", std::process::id()));
    // The namespace is unshared on a thread of its own, so the caller's is
    // never touched; it disappears with the thread.
    let r = {
        let root = root.clone();
        std::thread::spawn(move || run(n, rounds.max(1), root))
            .join()
            .map_err(|_| anyhow::anyhow!("bench thread panicked"))?
    };
    let _ = std::fs::remove_dir_all(&root);
    r
}
