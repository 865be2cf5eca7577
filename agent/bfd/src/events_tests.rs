//! Recorded cases: two sessions wired back to back on a virtual clock.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;
use crate::packet::AuthType;
use crate::session::{AuthConfig, SessionConfig};

struct Fixed(u32);
impl Jitter for Fixed {
    fn percent(&mut self, max: u32) -> u32 {
        self.0.min(max)
    }
}

fn cfg(peer: u8, local: u8, tx_ms: u64, mult: u8) -> SessionConfig {
    SessionConfig {
        peer: IpAddr::V4(Ipv4Addr::new(10, 0, 0, peer)),
        local: IpAddr::V4(Ipv4Addr::new(10, 0, 0, local)),
        peer_port: 3784,
        desired_min_tx: Duration::from_millis(tx_ms),
        required_min_rx: Duration::from_millis(tx_ms),
        detect_mult: mult,
        auth: None,
    }
}

/// A transition as recorded: (ms since start, side, old, new, diag).
type Rec = (u64, char, State, State, Diag);

struct Sim {
    t0: Instant,
    now: Instant,
    s: [Session; 2],
    /// Whether each side's packets reach the other.
    link_up: [bool; 2],
    /// Every packet each side sent, decoded, with its send time.
    sent: [Vec<(u64, Packet)>; 2],
    rec: Vec<Rec>,
    jitter: Fixed,
}

impl Sim {
    fn new(a: SessionConfig, b: SessionConfig) -> Sim {
        let t0 = Instant::now();
        Sim {
            t0,
            now: t0,
            s: [
                Session::new(a, 11, t0).unwrap(),
                Session::new(b, 22, t0).unwrap(),
            ],
            link_up: [true, true],
            sent: [Vec::new(), Vec::new()],
            rec: Vec::new(),
            jitter: Fixed(100),
        }
    }

    fn ms(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    fn handle(&mut self, side: usize, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::StateChanged { old, new, diag, .. } => {
                    let c = if side == 0 { 'A' } else { 'B' };
                    self.rec.push((self.ms(), c, old, new, diag));
                }
                Output::Transmit(bytes) => {
                    let pkt = Packet::decode(&bytes).expect("we send valid packets");
                    self.sent[side].push((self.ms(), pkt.clone()));
                    if self.link_up[side] {
                        let other = 1 - side;
                        let now = self.now;
                        let res =
                            on_packet(&mut self.s[other], &bytes, &pkt, now, &mut self.jitter)
                                .expect("peer accepts");
                        self.handle(other, res);
                    }
                }
            }
        }
    }

    fn run_until(&mut self, ms: u64) {
        let end = self.t0 + Duration::from_millis(ms);
        loop {
            let next = [0, 1]
                .iter()
                .filter_map(|&i| next_deadline(&self.s[i]))
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = t;
                    for side in 0..2 {
                        let outs = on_timers(&mut self.s[side], t, &mut self.jitter);
                        self.handle(side, outs);
                    }
                }
                _ => break,
            }
        }
        self.now = end;
    }
}

use State::*;

#[test]
fn three_way_handshake_brings_both_up_and_polls_for_fast_timers() {
    let mut sim = Sim::new(cfg(2, 1, 10, 3), cfg(1, 2, 10, 3));
    sim.run_until(50);
    assert_eq!(
        sim.rec,
        vec![
            (0, 'B', Down, Init, Diag::None),
            (0, 'A', Down, Up, Diag::None),
            (0, 'B', Init, Up, Diag::None),
        ]
    );
    // Going Up changes Desired Min TX from 1 s to 10 ms: a Poll, answered by a Final.
    let a_poll = sim.sent[0]
        .iter()
        .position(|(_, p)| p.poll)
        .expect("A polls");
    assert!(
        sim.sent[1].iter().any(|(_, p)| p.final_),
        "B answers with Final"
    );
    assert!(!sim.s[0].poll_pending && !sim.s[1].poll_pending);
    assert_eq!(sim.sent[0][a_poll].1.desired_min_tx, 10_000);
    // Once Up both transmit every 9 ms: jitter at its top, which is 100 %
    // less the 1 ms timer slack.
    let late: Vec<u64> = sim.sent[0]
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t >= 18)
        .collect();
    assert_eq!(late, vec![18, 27, 36, 45]);
}

#[test]
fn not_up_transmits_at_most_once_per_750_ms_with_jitter() {
    let mut sim = Sim::new(cfg(2, 1, 10, 3), cfg(1, 2, 10, 3));
    sim.link_up = [false, false];
    sim.jitter = Fixed(75);
    sim.run_until(3000);
    let times: Vec<u64> = sim.sent[0].iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![0, 750, 1500, 2250, 3000]);
    let mut top = Sim::new(cfg(2, 1, 10, 3), cfg(1, 2, 10, 3));
    top.link_up = [false, false];
    top.run_until(3000);
    let times: Vec<u64> = top.sent[0].iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![0, 999, 1998, 2997], "never slower than 1 s");
    assert!(
        sim.sent[0]
            .iter()
            .all(|(_, p)| p.desired_min_tx == 1_000_000 && p.state == Down)
    );
}

#[test]
fn detect_mult_one_caps_jitter_at_90_percent() {
    let mut s = Session::new(cfg(2, 1, 10, 1), 5, Instant::now()).unwrap();
    let now = Instant::now();
    s.remote_min_rx_us = 1_000_000;
    on_timers(&mut s, now + Duration::from_secs(5), &mut Fixed(100));
    let gap = s.next_tx.unwrap() - (now + Duration::from_secs(5));
    assert_eq!(gap, Duration::from_millis(899), "90 % less the 1 ms slack");
}

#[test]
fn jitter_range_stays_within_rfc_bounds() {
    let ms = Duration::from_millis;
    assert_eq!(tx_delay(ms(10), 3, 100), ms(9));
    assert_eq!(tx_delay(ms(10), 3, 75), Duration::from_micros(7500));
    assert_eq!(
        tx_delay(ms(10), 3, 10),
        Duration::from_micros(7500),
        "never below 75 %"
    );
    assert_eq!(
        tx_delay(ms(10), 1, 100),
        ms(8),
        "detect mult 1: 90 % less slack"
    );
    assert_eq!(tx_delay(ms(1000), 3, 100), ms(999));
    assert_eq!(tx_delay(ms(1000), 1, 90), ms(899));
    assert_eq!(
        tx_delay(ms(2), 3, 100),
        Duration::from_micros(1500),
        "floor holds"
    );
}

#[test]
fn silence_is_detected_after_detect_mult_intervals() {
    let mut sim = Sim::new(cfg(2, 1, 10, 3), cfg(1, 2, 10, 3));
    sim.run_until(100);
    sim.link_up[1] = false; // B's packets stop reaching A at 100 ms
    sim.run_until(200);
    let down = sim.rec.iter().find(|r| r.1 == 'A' && r.3 == Down).unwrap();
    // Down exactly 3 x 10 ms after B's last packet that got through.
    let last = sim.sent[1]
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t <= 100)
        .max()
        .unwrap();
    assert_eq!(
        *down,
        (last + 30, 'A', Up, Down, Diag::ControlDetectionExpired)
    );
    assert_eq!(
        sim.s[0].remote_discr, 0,
        "6.8.1: remote discriminator reset"
    );
    // A tells B, which goes Down with diag 3.
    assert!(
        sim.rec
            .contains(&(last + 30, 'B', Up, Down, Diag::NeighborDown))
    );
    // A falls back to the 1 s slow rate.
    assert_eq!(sim.sent[0].last().unwrap().1.desired_min_tx, 1_000_000);
}

#[test]
fn admin_down_takes_the_peer_down_at_once_with_neighbor_down() {
    let mut sim = Sim::new(cfg(2, 1, 10, 3), cfg(1, 2, 10, 3));
    sim.run_until(100);
    sim.now = sim.t0 + Duration::from_millis(105);
    let outs = on_admin_down(&mut sim.s[0], Diag::AdminDown, sim.now, &mut Fixed(100));
    sim.handle(0, outs);
    assert!(
        sim.rec
            .contains(&(105, 'A', Up, AdminDown, Diag::AdminDown))
    );
    assert!(sim.rec.contains(&(105, 'B', Up, Down, Diag::NeighborDown)));
    assert_eq!(sim.s[1].remote_state, AdminDown);
    let burst = sim.sent[0]
        .iter()
        .filter(|(t, p)| *t == 105 && p.state == AdminDown)
        .count();
    assert_eq!(
        burst, ADMIN_DOWN_COPIES,
        "AdminDown goes out at once, several times"
    );
    // B stays Down (not Init) while A is AdminDown.
    sim.run_until(2000);
    assert_eq!(sim.s[1].state, Down);
    // Re-enabling brings the pair back Up.
    let outs = on_admin_up(&mut sim.s[0], sim.now, &mut Fixed(100));
    sim.handle(0, outs);
    sim.run_until(4000);
    assert_eq!((sim.s[0].state, sim.s[1].state), (Up, Up));
}

#[test]
fn timer_increase_waits_for_final_then_takes_effect() {
    let mut sim = Sim::new(cfg(2, 1, 10, 3), cfg(1, 2, 10, 3));
    sim.run_until(100);
    // Cut B -> A so the Final cannot arrive yet.
    sim.link_up[1] = false;
    let now = sim.now;
    let outs = on_set_timers(&mut sim.s[0], 50_000, 50_000, 3, now, &mut Fixed(100));
    sim.handle(0, outs);
    assert!(sim.s[0].poll_pending);
    assert_eq!(
        sim.s[0].active_tx_us, 10_000,
        "increase waits for the Poll Sequence"
    );
    assert_eq!(
        sim.s[0].active_rx_us, 50_000,
        "a larger RequiredMinRx applies at once"
    );
    let p = &sim.sent[0].last().unwrap().1;
    assert!(p.poll && p.desired_min_tx == 50_000 && p.required_min_rx == 50_000);
    // Restore the link before detection fires; B's next packet answers the poll.
    sim.link_up[1] = true;
    sim.run_until(400);
    assert!(!sim.s[0].poll_pending);
    assert_eq!(sim.s[0].active_tx_us, 50_000);
    // B now transmits at A's 50 ms RequiredMinRx; A at 50 ms too.
    let a_tail: Vec<u64> = sim.sent[0]
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t > 120)
        .collect();
    let gaps: Vec<u64> = a_tail.windows(2).map(|w| w[1] - w[0]).collect();
    // 50 ms at the top of the jitter range, less the 1 ms timer slack.
    assert!(
        gaps.len() >= 4 && gaps.iter().all(|g| *g == 49),
        "A's gaps after Final: {gaps:?}"
    );
    assert_eq!(sim.s[1].detection_time(), Duration::from_millis(150));
    assert!(sim.rec.iter().all(|r| r.0 < 100), "no flap: {:?}", sim.rec);
}

fn auth(t: AuthType, id: u8, key: &[u8]) -> Option<AuthConfig> {
    Some(AuthConfig {
        auth_type: t,
        key_id: id,
        key: key.to_vec(),
    })
}

#[test]
fn meticulous_sha1_session_comes_up_and_rejects_replay_and_bad_keys() {
    let mut a = cfg(2, 1, 10, 3);
    let mut b = cfg(1, 2, 10, 3);
    a.auth = auth(AuthType::MeticulousKeyedSha1, 7, b"s3cret");
    b.auth = a.auth.clone();
    let mut sim = Sim::new(a, b);
    sim.run_until(100);
    assert_eq!((sim.s[0].state, sim.s[1].state), (Up, Up));

    let now = sim.now;
    let bytes = sim.s[1].build_packet(false);
    let pkt = Packet::decode(&bytes).unwrap();
    assert!(on_packet(&mut sim.s[0], &bytes, &pkt, now, &mut Fixed(100)).is_ok());
    // The same sequence again is a replay for the meticulous variant.
    let replay = on_packet(&mut sim.s[0], &bytes, &pkt, now, &mut Fixed(100));
    assert!(
        matches!(replay, Err(RxError::AuthSequence { .. })),
        "{replay:?}"
    );

    let mut other = Session::new(cfg(1, 2, 10, 3), 22, now).unwrap();
    other.remote_discr = 11;
    let cases = [
        (
            auth(AuthType::MeticulousKeyedSha1, 7, b"wrong"),
            RxError::AuthDigest,
        ),
        (
            auth(AuthType::MeticulousKeyedSha1, 8, b"s3cret"),
            RxError::AuthKeyId(8),
        ),
        (
            auth(AuthType::KeyedSha1, 7, b"s3cret"),
            RxError::AuthTypeMismatch {
                got: AuthType::KeyedSha1,
                want: AuthType::MeticulousKeyedSha1,
            },
        ),
        (None, RxError::AuthMissing),
    ];
    for (auth_cfg, want) in cases {
        other.cfg.auth = auth_cfg;
        other.xmit_auth_seq = sim.s[0].rcv_auth_seq.unwrap();
        let bytes = other.build_packet(false);
        let pkt = Packet::decode(&bytes).unwrap();
        let got = on_packet(&mut sim.s[0], &bytes, &pkt, now, &mut Fixed(100));
        assert_eq!(got, Err(want));
    }
    // And a session without auth rejects a signed packet.
    let mut plain = Session::new(cfg(2, 1, 10, 3), 11, now).unwrap();
    assert_eq!(
        on_packet(&mut plain, &bytes, &pkt, now, &mut Fixed(100)),
        Err(RxError::AuthUnexpected)
    );
    assert_eq!(sim.s[0].state, Up, "rejected packets change nothing");
}

#[test]
fn bad_session_config_is_rejected_naming_the_field() {
    let mut c = cfg(2, 1, 10, 3);
    c.detect_mult = 0;
    assert_eq!(c.validate(), Err(ConfigError::ZeroDetectMult(0)));
    let mut c = cfg(2, 1, 10, 3);
    c.desired_min_tx = Duration::ZERO;
    assert!(matches!(
        c.validate(),
        Err(ConfigError::BadInterval {
            field: "desired_min_tx",
            ..
        })
    ));
    let mut c = cfg(2, 1, 10, 3);
    c.local = "::1".parse().unwrap();
    assert!(matches!(
        c.validate(),
        Err(ConfigError::FamilyMismatch { .. })
    ));
    let mut c = cfg(2, 1, 10, 3);
    c.auth = auth(AuthType::KeyedSha1, 1, &[0; 21]);
    assert_eq!(c.validate(), Err(ConfigError::BadKeyLength(21)));
}

use crate::session::ConfigError;

#[test]
fn remote_demand_mode_stops_our_periodic_packets_until_cleared() {
    let mut sim = Sim::new(cfg(2, 1, 10, 3), cfg(1, 2, 10, 3));
    sim.run_until(100);
    let now = sim.now;
    let mut bytes = sim.s[1].build_packet(false);
    bytes[1] |= 0x02; // B asks A to stop: Demand bit
    let pkt = Packet::decode(&bytes).unwrap();
    on_packet(&mut sim.s[0], &bytes, &pkt, now, &mut Fixed(100)).unwrap();
    assert_eq!(sim.s[0].tx_interval(), None);
    on_timers(
        &mut sim.s[0],
        now + Duration::from_millis(20),
        &mut Fixed(100),
    );
    assert!(sim.s[0].next_tx.is_none(), "periodic sending stops");
    let bytes = sim.s[1].build_packet(false);
    let pkt = Packet::decode(&bytes).unwrap();
    on_packet(&mut sim.s[0], &bytes, &pkt, now, &mut Fixed(100)).unwrap();
    assert!(
        sim.s[0].next_tx.is_some(),
        "a cleared Demand bit resumes sending"
    );
}

/// The HA handback after an outage, on the virtual clock: both sides time
/// out (remote discriminators reset), the link returns, A goes Up and at
/// once AdminDown, B follows to Down (diag 3) still holding A's
/// discriminator; 1 s later A resumes and the pair comes Up again. Also the
/// case where both hand back at the same instant (the AdminDowns cross and
/// are discarded) and resume 1 ms apart.
#[test]
fn admin_up_after_an_outage_handback_comes_up_again() {
    for both in [false, true] {
        let mut sim = Sim::new(cfg(2, 1, 10, 3), cfg(1, 2, 10, 3));
        sim.run_until(100);
        sim.link_up = [false, false];
        sim.run_until(200);
        assert_eq!((sim.s[0].state, sim.s[1].state), (Down, Down));
        assert_eq!((sim.s[0].remote_discr, sim.s[1].remote_discr), (0, 0));
        sim.link_up = [true, true];
        // Run until A is Up again, then hand back at that instant.
        let mut t = 200;
        while sim.s[0].state != Up {
            t += 1;
            sim.run_until(t);
            assert!(t < 5000, "never came back Up after the outage");
        }
        let now = sim.now;
        let outs = on_admin_down(&mut sim.s[0], Diag::AdminDown, now, &mut Fixed(100));
        sim.handle(0, outs);
        if both {
            let outs = on_admin_down(&mut sim.s[1], Diag::AdminDown, now, &mut Fixed(100));
            sim.handle(1, outs);
            assert_eq!(sim.s[1].state, AdminDown);
        } else {
            assert_eq!(
                (sim.s[1].state, sim.s[1].local_diag),
                (Down, Diag::NeighborDown)
            );
        }
        assert_eq!(sim.s[1].remote_discr, 11, "B keeps A's discriminator");
        sim.run_until(t + 1000);
        sim.now = sim.t0 + Duration::from_millis(t + 1000);
        let outs = on_admin_up(&mut sim.s[0], sim.now, &mut Fixed(100));
        sim.handle(0, outs);
        if both {
            sim.now += Duration::from_millis(1);
            let outs = on_admin_up(&mut sim.s[1], sim.now, &mut Fixed(100));
            sim.handle(1, outs);
        }
        sim.run_until(t + 4000);
        assert_eq!(
            (sim.s[0].state, sim.s[1].state),
            (Up, Up),
            "both={both}: {:?}",
            sim.rec
        );
        assert_eq!((sim.s[0].remote_discr, sim.s[1].remote_discr), (22, 11));
    }
}
