//! Two sync services on loopback with in-memory tables: what the MASTER
//! has reaches the BACKUP (bulk resync, then streamed changes), the resync
//! is acknowledged as an event, and a peer with the wrong key is refused,
//! counted, and installs nothing.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floatlb_sync::{
    FlowKey, FlowRecord, FlowReports, FlowTable, SyncConfig, SyncEvent, SyncKey, SyncService,
    TcpState,
};

type Shared = Arc<Mutex<HashMap<FlowKey, FlowRecord>>>;

#[derive(Clone, Default)]
struct Table(Shared);

impl FlowTable for Table {
    type Error = std::convert::Infallible;
    fn dump(&mut self) -> Result<Vec<FlowRecord>, Self::Error> {
        Ok(self.0.lock().unwrap().values().copied().collect())
    }
    fn upsert(&mut self, recs: &[FlowRecord]) -> Result<(), Self::Error> {
        let mut t = self.0.lock().unwrap();
        for r in recs {
            t.insert(r.key, *r);
        }
        Ok(())
    }
    fn delete(&mut self, keys: &[FlowKey]) -> Result<(), Self::Error> {
        let mut t = self.0.lock().unwrap();
        for k in keys {
            t.remove(k);
        }
        Ok(())
    }
}

struct Reports(mpsc::Receiver<FlowRecord>);

impl FlowReports for Reports {
    fn wait(&mut self, timeout: Duration) -> Vec<FlowRecord> {
        let mut out: Vec<FlowRecord> = self.0.recv_timeout(timeout).into_iter().collect();
        out.extend(self.0.try_iter());
        out
    }
    fn lost(&mut self) -> u64 {
        0
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn rec(port: u16) -> FlowRecord {
    FlowRecord {
        key: FlowKey {
            proto: if port.is_multiple_of(2) { 6 } else { 17 },
            client: Ipv4Addr::new(10, 1, 0, 2),
            vip: Ipv4Addr::new(10, 1, 0, 100),
            client_port: port,
            vip_port: 80,
        },
        state: TcpState::Established,
        snat: Ipv4Addr::new(10, 1, 0, 100),
        endpoint: Ipv4Addr::new(10, 1, 0, 21),
        snat_port: 20000 + port,
        endpoint_port: 8080,
        idle_ms: 0,
    }
}

struct Node {
    svc: SyncService,
    table: Table,
    reports: mpsc::Sender<FlowRecord>,
    events: mpsc::Receiver<SyncEvent>,
}

fn node(id: u8, listen: SocketAddr, peer: SocketAddr, key: &[u8]) -> Node {
    let table = Table::default();
    let (rtx, rrx) = mpsc::channel();
    let (etx, erx) = mpsc::channel();
    let etx = Mutex::new(etx);
    let svc = SyncService::start(
        SyncConfig {
            node: id,
            listen,
            peer,
            key: SyncKey::new(key, "test").unwrap(),
            queue_capacity: 1000,
            refresh: Duration::from_secs(3600),
        },
        table.clone(),
        table.clone(),
        Reports(rrx),
        Arc::new(move |e| {
            let _ = etx.lock().unwrap().send(e);
        }),
    )
    .unwrap();
    Node {
        svc,
        table,
        reports: rtx,
        events: erx,
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

const KEY: &[u8] = b"a-shared-key-for-tests";

#[test]
fn the_master_table_and_its_changes_reach_the_backup_and_the_resync_is_acknowledged() {
    let (a_addr, b_addr) = (free_port(), free_port());
    let a = node(0, a_addr, b_addr, KEY);
    let b = node(1, b_addr, a_addr, KEY);
    a.table
        .clone()
        .upsert(&(1..=3000).map(rec).collect::<Vec<_>>())
        .unwrap();
    a.svc.set_active(true);
    assert_eq!(
        a.events.recv_timeout(Duration::from_secs(10)).unwrap(),
        SyncEvent::Connected(true)
    );
    let ev = a.events.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(ev, SyncEvent::PeerResynced { id: 1, count: 3000 });
    assert_eq!(b.table.0.lock().unwrap().len(), 3000);
    // A change reported after the resync streams over.
    let mut changed = rec(5000);
    changed.state = TcpState::Fin;
    let t0 = Instant::now();
    a.reports.send(changed).unwrap();
    wait_for("the streamed change", Duration::from_secs(5), || {
        b.table.0.lock().unwrap().get(&changed.key) == Some(&changed)
    });
    println!("loopback change lag: {:?}", t0.elapsed());
    // Flows the MASTER's sweep removed are removed on the BACKUP too, in
    // order with the changes around them; a BACKUP's own removals are not
    // sent anywhere.
    let gone: Vec<FlowKey> = (1..=10).map(|p| rec(p).key).collect();
    a.svc.deletions().removed(gone.iter().copied());
    b.svc.deletions().removed([rec(11).key]);
    wait_for("the streamed removals", Duration::from_secs(5), || {
        let t = b.table.0.lock().unwrap();
        gone.iter().all(|k| !t.contains_key(k))
    });
    assert!(b.table.0.lock().unwrap().contains_key(&rec(11).key));
    assert_eq!(a.svc.stats().snapshot().deletes_sent, 10);
    assert_eq!(b.svc.stats().snapshot().deletes_received, 10);
    let (sa, sb) = (a.svc.stats().snapshot(), b.svc.stats().snapshot());
    assert_eq!((sa.resyncs_sent, sa.resyncs_acked), (1, 1));
    assert_eq!((sb.records_installed, sb.frames_refused), (3001, 0));
    assert_eq!(b.table.0.lock().unwrap().len(), 3001 - 10);
    assert!(
        b.events
            .try_iter()
            .any(|e| e == SyncEvent::ResyncReceived { count: 3000 })
    );
    a.svc.stop();
    b.svc.stop();
}

#[test]
fn a_peer_with_the_wrong_key_is_refused_counted_and_installs_nothing() {
    let (a_addr, b_addr) = (free_port(), free_port());
    let a = node(0, a_addr, b_addr, b"not-the-key-the-backup-has");
    let b = node(1, b_addr, a_addr, KEY);
    a.table
        .clone()
        .upsert(&(1..=10).map(rec).collect::<Vec<_>>())
        .unwrap();
    a.svc.set_active(true);
    // The MASTER refuses the BACKUP's Hello (and the other way round), and
    // keeps retrying: each attempt is counted.
    wait_for("refusals", Duration::from_secs(5), || {
        a.svc.stats().snapshot().refused_bad_mac >= 2
    });
    assert!(b.table.0.lock().unwrap().is_empty(), "nothing installed");
    assert_eq!(b.svc.stats().snapshot().records_installed, 0);
    assert!(a.events.try_iter().next().is_none(), "no resync reported");
    a.svc.stop();
    b.svc.stop();
}

#[test]
fn a_forged_sender_that_skips_the_hello_is_refused_by_the_backup() {
    use std::io::{Read, Write};
    let (b_addr, unused) = (free_port(), free_port());
    let b = node(1, b_addr, unused, KEY);
    let mut s = std::net::TcpStream::connect(b_addr).unwrap();
    let mut hello = vec![0u8; 16 + 12 + 32];
    s.read_exact(&mut hello).unwrap();
    // Someone without the key sends an Upsert frame signed with another key.
    let other = SyncKey::new(b"attacker-guess-of-the-key", "t").unwrap();
    let nonce = u64::from_be_bytes(hello[20..28].try_into().unwrap());
    let f = floatlb_sync::packet::encode(
        &other,
        nonce,
        0,
        &floatlb_sync::packet::Message::Upsert(vec![rec(1)]),
    );
    s.write_all(&f).unwrap();
    wait_for("the refusal", Duration::from_secs(5), || {
        b.svc.stats().snapshot().refused_bad_mac == 1
    });
    assert!(b.table.0.lock().unwrap().is_empty());
    b.svc.stop();
}

/// Bulk resync throughput over loopback (codec, HMAC, TCP and the
/// receiver's batching; in-memory tables, so no datapath install cost).
/// Printed, with a floor far below the target so a loaded CI box passes;
/// docs/BENCHMARKS.md has the release-build figure.
#[test]
fn bulk_resync_rate() {
    let n: u32 = std::env::var("FLOATLB_SYNC_BULK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (a_addr, b_addr) = (free_port(), free_port());
    let a = node(0, a_addr, b_addr, KEY);
    let b = node(1, b_addr, a_addr, KEY);
    let recs: Vec<FlowRecord> = (0..n)
        .map(|i| FlowRecord {
            key: FlowKey {
                client: Ipv4Addr::from(0x0a00_0000 + (i >> 15)),
                client_port: (i & 0x7fff) as u16 + 1,
                ..rec(1).key
            },
            ..rec(1)
        })
        .collect();
    a.table.clone().upsert(&recs).unwrap();
    let t0 = Instant::now();
    a.svc.set_active(true);
    let ev = loop {
        let ev = a.events.recv_timeout(Duration::from_secs(120)).unwrap();
        if ev != SyncEvent::Connected(true) {
            break ev;
        }
    };
    let took = t0.elapsed();
    assert!(matches!(ev, SyncEvent::PeerResynced { .. }));
    let got = b.table.0.lock().unwrap().len();
    let rate = f64::from(n) / took.as_secs_f64();
    println!(
        "bulk resync over loopback: {got} records in {:.0} ms = {:.0} records/s (target >= 200000 with the datapath)",
        took.as_secs_f64() * 1000.0,
        rate
    );
    assert_eq!(got as u32, n);
    a.svc.stop();
    b.svc.stop();
}
