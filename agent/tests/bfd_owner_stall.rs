//! Why BFD runs on a thread of its own: the daemon's owner task holds the
//! HA orchestrator and also syncs services, refreshes neighbours and calls
//! the datapath. When that task is blocked for 200 ms (a slow reload), a
//! peer running BFD at 10 ms x 3 must still see our session Up: our
//! packets have to keep leaving while the owner task does not run.
//!
//! The orchestrator lives in a current-thread runtime, so a blocking call
//! in the task that owns it stops everything else in that runtime too. The
//! peer is a plain `BfdManager` driven on a thread of its own, as it would
//! be in its own process, and reports every state change it goes through.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floatlb_agent::bfd::manager::{BfdManager, ManagerConfig, StateChange};
use floatlb_agent::bfd::packet::State;
use floatlb_agent::bfd::session::SessionConfig;
use floatlb_agent::events::{self, Event, EventRx};
use floatlb_agent::ha::machine::HaConfig;
use floatlb_agent::ha::orchestrate::{HaOptions, Orchestrator};
use floatlb_cloud::{FloatingSet, NoneProvider};

const INTERVAL: Duration = Duration::from_millis(10);
const MULT: u8 = 3;
const STALL: Duration = Duration::from_millis(200);

fn session(local: Ipv4Addr, peer: Ipv4Addr, peer_port: u16) -> SessionConfig {
    SessionConfig {
        peer: IpAddr::V4(peer),
        local: IpAddr::V4(local),
        peer_port,
        desired_min_tx: INTERVAL,
        required_min_rx: INTERVAL,
        detect_mult: MULT,
        auth: None,
    }
}

fn listen(port: u16) -> ManagerConfig {
    ManagerConfig {
        port,
        ipv4: Some(Ipv4Addr::UNSPECIFIED),
        ipv6: None,
    }
}

/// The peer: its own thread and runtime; every state change goes to the
/// returned receiver. Dropping the sender stops it.
fn spawn_peer(
    port: u16,
    local: Ipv4Addr,
    peer: Ipv4Addr,
    peer_port: u16,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::sync::mpsc::Receiver<StateChange>,
    std::thread::JoinHandle<()>,
) {
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (changes_tx, changes_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("peer runtime");
        rt.block_on(async move {
            let mut b = BfdManager::bind(&listen(port)).expect("peer bind");
            b.add_session(session(local, peer, peer_port))
                .expect("peer session");
            loop {
                tokio::select! {
                    changes = b.step() => {
                        for c in changes {
                            let _ = changes_tx.send(c);
                        }
                    }
                    _ = &mut stop_rx => return,
                }
            }
        });
    });
    (stop_tx, changes_rx, thread)
}

/// Drives the orchestrator as the owner task does, until `until`; returns
/// the BFD state changes it reported.
async fn drive(o: &mut Orchestrator, rx: &mut EventRx, until: Instant) -> Vec<StateChange> {
    let mut seen = Vec::new();
    loop {
        let wake = o.next_deadline().map_or(until, |d| d.min(until));
        match tokio::time::timeout_at(wake.into(), rx.recv()).await {
            Ok(Some(Event::Bfd(changes))) => {
                seen.extend(changes.iter().cloned());
                o.on_bfd(changes);
            }
            Ok(Some(Event::Cloud(done))) => {
                o.on_cloud(done);
            }
            Ok(_) => {}
            Err(_) if Instant::now() >= until => return seen,
            Err(_) => {
                o.on_timer();
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn peer_sees_no_down_while_the_owner_task_is_blocked() {
    let a_port = 31000 + (std::process::id() % 15000) as u16 * 2;
    let b_port = a_port + 1;
    let (a_ip, b_ip) = (Ipv4Addr::new(127, 0, 0, 61), Ipv4Addr::new(127, 0, 0, 62));
    let (stop_peer, peer_changes, peer_thread) = spawn_peer(b_port, b_ip, a_ip, a_port);

    let mut opts = HaOptions::new(
        // Long holds: the node stays BACKUP, nothing but BFD happens.
        HaConfig {
            claim_hold: Duration::from_secs(60),
            preempt_hold: Duration::from_secs(60),
            ..HaConfig::default()
        },
        session(a_ip, b_ip, b_port),
    );
    opts.bfd = listen(a_port);
    opts.print_events = false;
    let (tx, mut rx) = events::channel();
    let mut orch = Orchestrator::new(opts, Arc::new(NoneProvider), FloatingSet::new([]), tx)
        .expect("orchestrator");
    orch.start();

    // Both sides Up (the peer reports it, we report it).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut we_up = false;
    let mut peer_up = false;
    while !(we_up && peer_up) {
        assert!(Instant::now() < deadline, "BFD session did not come Up");
        let step = Instant::now() + Duration::from_millis(20);
        we_up |= drive(&mut orch, &mut rx, step)
            .await
            .iter()
            .any(|c| c.new == State::Up);
        peer_up |= peer_changes.try_iter().any(|c| c.new == State::Up);
    }
    // Let the Poll Sequences that switch both sides to 10 ms finish.
    drive(
        &mut orch,
        &mut rx,
        Instant::now() + Duration::from_millis(200),
    )
    .await;
    let before: Vec<StateChange> = peer_changes.try_iter().collect();
    assert!(
        before.iter().all(|c| c.new == State::Up),
        "the session flapped before the stall (box too busy?): {before:?}"
    );

    // The owner task blocks; nothing else in its runtime runs meanwhile.
    let t0 = Instant::now();
    std::thread::sleep(STALL);
    let blocked = t0.elapsed();
    let ours = drive(
        &mut orch,
        &mut rx,
        Instant::now() + Duration::from_millis(100),
    )
    .await;
    let theirs: Vec<StateChange> = peer_changes.try_iter().collect();
    println!(
        "owner task blocked for {} ms at {} ms x {MULT}: peer state changes {}, ours {}",
        blocked.as_millis(),
        INTERVAL.as_millis(),
        theirs.len(),
        ours.len()
    );
    assert!(
        theirs.is_empty(),
        "the peer saw the session change while our owner task was blocked: {theirs:?}"
    );
    assert!(
        ours.is_empty(),
        "our session changed across the stall: {ours:?}"
    );

    drop(orch);
    let _ = stop_peer.send(());
    peer_thread.join().expect("peer thread");
}
