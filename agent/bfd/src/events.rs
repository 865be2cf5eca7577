//! Pure event handlers: (session, input, now) -> outputs. No I/O, no clock
//! reads, no randomness except through [`Jitter`], so every behaviour is
//! replayable in recorded tests.
//!
//! Jitter (RFC 5880 6.8.7): "The periodic transmission of BFD Control
//! packets MUST be jittered on a per-packet basis by up to 25%, that is, the
//! interval MUST be reduced by a random value of 0 to 25%" and "If
//! bfd.DetectMult is equal to 1, the interval between transmitted BFD
//! Control packets MUST be no more than 90% of the negotiated transmission
//! interval, and MUST be no less than 75%".
//!
//! Poll/Final (6.8.6): "If the Poll (P) bit is set, send a BFD Control packet
//! to the remote system with the Poll (P) bit clear, and the Final (F) bit
//! set" and "If a BFD Control packet is received with the Final (F) bit set
//! and ... a Poll Sequence is in progress, the Poll Sequence MUST be terminated".
//! We also send one packet at once on every state change so the peer learns
//! it without waiting for the periodic timer.

use std::time::{Duration, Instant};

use super::fsm::{FsmEvent, next_state};
use super::packet::{Diag, Packet, State};
use super::session::{RxError, Session};

/// Chooses the per-packet transmit interval percentage.
pub trait Jitter {
    /// A percentage in `75..=max_pct`.
    fn percent(&mut self, max_pct: u32) -> u32;
}

/// Production jitter from the thread RNG.
#[derive(Debug, Default)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn percent(&mut self, max_pct: u32) -> u32 {
        rand::random_range(75..=max_pct)
    }
}

/// What a handler asks the I/O layer and the owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram to the session's peer.
    Transmit(Vec<u8>),
    /// The session changed state.
    StateChanged {
        old: State,
        new: State,
        diag: Diag,
        remote_state: State,
        /// The peer's discriminator (zero after a detection timeout); a
        /// restarted peer picks a new one.
        remote_discr: u32,
    },
}

/// How late the runtime's timer may fire (tokio rounds sleeps up to whole
/// milliseconds). The jitter range is narrowed by this much so a late
/// wakeup still sends within the negotiated interval.
pub const TIMER_SLACK: Duration = Duration::from_millis(1);

/// The delay until the next periodic packet for interval `iv` and a
/// jitter percentage: 75-100 % (75-90 % with detect mult 1), and at most
/// the top of that range less [`TIMER_SLACK`] (never below 75 %).
pub fn tx_delay(iv: Duration, detect_mult: u8, pct: u32) -> Duration {
    let rfc_max: u32 = if detect_mult == 1 { 90 } else { 100 };
    let floor = iv * 75 / 100;
    let cap = (iv * rfc_max / 100).saturating_sub(TIMER_SLACK).max(floor);
    (iv * pct.clamp(75, rfc_max) / 100).min(cap)
}

fn schedule_tx(s: &mut Session, now: Instant, jitter: &mut dyn Jitter) {
    s.next_tx = s.tx_interval().map(|iv| {
        let max = if s.cfg.detect_mult == 1 { 90 } else { 100 };
        now + tx_delay(iv, s.cfg.detect_mult, jitter.percent(max))
    });
}

fn apply(s: &mut Session, ev: FsmEvent, out: &mut Vec<Output>) {
    let Some((new, diag)) = next_state(s.state, ev) else {
        return;
    };
    let old = s.state;
    let (old_tx, old_rx) = (s.advertised_tx(), s.required_min_rx_us);
    s.state = new;
    if let Some(d) = diag {
        s.local_diag = d;
    }
    if new == State::AdminDown || old == State::AdminDown {
        s.poll_pending = false;
    }
    s.advertised_changed(old_tx, old_rx);
    out.push(Output::StateChanged {
        old,
        new,
        diag: s.local_diag,
        remote_state: s.remote_state,
        remote_discr: s.remote_discr,
    });
}

/// A decoded packet for this session arrived (demultiplexing done by the caller).
pub fn on_packet(
    s: &mut Session,
    datagram: &[u8],
    pkt: &Packet,
    now: Instant,
    jitter: &mut dyn Jitter,
) -> Result<Vec<Output>, RxError> {
    s.check_auth(datagram, pkt)?;
    let mut out = Vec::new();
    s.remote_discr = pkt.my_discr;
    s.remote_state = pkt.state;
    let old_remote_min_rx = s.remote_min_rx_us;
    s.remote_min_rx_us = pkt.required_min_rx;
    s.remote_desired_tx_us = pkt.desired_min_tx;
    s.remote_detect_mult = pkt.detect_mult;
    s.remote_demand = pkt.demand;
    if pkt.final_ && s.poll_pending {
        s.poll_terminated();
    }
    if s.state == State::AdminDown {
        // "If bfd.SessionState is AdminDown: Discard the packet."
        return Ok(out);
    }
    s.detect_deadline = Some(now + s.detection_time());
    apply(s, FsmEvent::Received(pkt.state), &mut out);
    let changed = !out.is_empty();
    if pkt.poll {
        out.push(Output::Transmit(s.build_packet(true)));
    }
    if changed {
        out.push(Output::Transmit(s.build_packet(false)));
        schedule_tx(s, now, jitter);
    } else if s.remote_min_rx_us < old_remote_min_rx || s.next_tx.is_none() {
        // The peer wants packets sooner: do not wait out a long slow interval.
        if let Some(iv) = s.tx_interval() {
            if s.next_tx.is_none_or(|t| t > now + iv) {
                schedule_tx(s, now, jitter);
            }
        } else {
            s.next_tx = None;
        }
    }
    Ok(out)
}

/// Runs whichever timers are due at `now`.
pub fn on_timers(s: &mut Session, now: Instant, jitter: &mut dyn Jitter) -> Vec<Output> {
    let mut out = Vec::new();
    if s.detect_deadline.is_some_and(|d| d <= now) {
        s.detect_deadline = None;
        // 6.8.1: bfd.RemoteDiscr "MUST be set to zero" once a Detection Time
        // passes without a valid packet; the sequence is forgotten too.
        s.remote_discr = 0;
        s.rcv_auth_seq = None;
        s.remote_min_rx_us = 1;
        apply(s, FsmEvent::DetectionTimeExpired, &mut out);
        if !out.is_empty() {
            out.push(Output::Transmit(s.build_packet(false)));
            schedule_tx(s, now, jitter);
        }
    }
    if s.next_tx.is_some_and(|t| t <= now) {
        out.push(Output::Transmit(s.build_packet(false)));
        schedule_tx(s, now, jitter);
    }
    out
}

/// Copies of the AdminDown packet sent at once: a graceful handover must
/// not hinge on one datagram, and the periodic rate drops to the slow 1 s
/// rate once the session is no longer Up.
pub const ADMIN_DOWN_COPIES: usize = 3;

/// Disables the session and tells the peer at once (6.8.16: "the system
/// sets bfd.SessionState to AdminDown ... and bfd.LocalDiag to an
/// appropriate value"; the peer then goes Down with diag 3).
pub fn on_admin_down(
    s: &mut Session,
    diag: Diag,
    now: Instant,
    jitter: &mut dyn Jitter,
) -> Vec<Output> {
    let mut out = Vec::new();
    apply(s, FsmEvent::AdminDown(diag), &mut out);
    if !out.is_empty() {
        s.detect_deadline = None;
        for _ in 0..ADMIN_DOWN_COPIES {
            out.push(Output::Transmit(s.build_packet(false)));
        }
        schedule_tx(s, now, jitter);
    }
    out
}

/// Re-enables an AdminDown session.
pub fn on_admin_up(s: &mut Session, now: Instant, jitter: &mut dyn Jitter) -> Vec<Output> {
    let mut out = Vec::new();
    apply(s, FsmEvent::AdminUp, &mut out);
    if !out.is_empty() {
        out.push(Output::Transmit(s.build_packet(false)));
        schedule_tx(s, now, jitter);
    }
    out
}

/// Changes the configured timers; starts a Poll Sequence and sends its
/// first Poll at once.
pub fn on_set_timers(
    s: &mut Session,
    desired_min_tx_us: u32,
    required_min_rx_us: u32,
    detect_mult: u8,
    now: Instant,
    jitter: &mut dyn Jitter,
) -> Vec<Output> {
    let (old_tx, old_rx) = (s.advertised_tx(), s.required_min_rx_us);
    s.desired_min_tx_us = desired_min_tx_us;
    s.required_min_rx_us = required_min_rx_us;
    s.cfg.detect_mult = detect_mult;
    s.advertised_changed(old_tx, old_rx);
    if s.state == State::AdminDown {
        return Vec::new();
    }
    let out = vec![Output::Transmit(s.build_packet(false))];
    schedule_tx(s, now, jitter);
    out
}

/// Earliest instant at which [`on_timers`] has work.
pub fn next_deadline(s: &Session) -> Option<Instant> {
    match (s.next_tx, s.detect_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Convenience for tests and the owner: a duration in microseconds.
pub fn us(v: u32) -> Duration {
    Duration::from_micros(u64::from(v))
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
