//! One BFD session: the state variables of RFC 5880 section 6.8.1, the
//! timer arithmetic of 6.8.2-6.8.4 and the authentication checks of 6.7.4.
//!
//! Timer changes follow 6.8.3: "If bfd.DesiredMinTxInterval is increased and
//! bfd.SessionState is Up, the actual transmission interval used MUST NOT
//! change until the Poll Sequence described above has terminated" and "If
//! bfd.RequiredMinRxInterval is reduced and bfd.SessionState is Up, the
//! previous value of bfd.RequiredMinRxInterval MUST be used when calculating
//! the Detection Time for the remote system until the Poll Sequence
//! described above has terminated". So the session keeps the *advertised*
//! values (what goes in packets) apart from the *active* ones (what drives
//! its own timers), and folds them together when the Final arrives.
//!
//! While not Up, 6.8.3 requires "bfd.DesiredMinTxInterval to a value of not
//! less than one second (1,000,000 microseconds)": [`Session::advertised_tx`].

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::packet::{
    AuthSection, AuthType, Diag, Packet, SHA1_DIGEST_LEN, State, sign_sha1, verify_sha1,
};

/// Transmit interval floor while the session is not Up (RFC 5880 6.8.3).
pub const SLOW_TX_US: u32 = 1_000_000;
/// Well-known single-hop control port (RFC 5881 section 4).
pub const CONTROL_PORT: u16 = 3784;

/// Keyed SHA1 authentication settings of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub auth_type: AuthType,
    pub key_id: u8,
    /// Up to 20 bytes; shorter keys are zero-padded.
    pub key: Vec<u8>,
}

/// What the owner asks for when adding a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub peer: IpAddr,
    pub local: IpAddr,
    /// Peer's control port; 3784 except in tests that share one host.
    pub peer_port: u16,
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
    pub auth: Option<AuthConfig>,
}

/// Session configuration errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("detect_mult must be 1..=255, got {0}")]
    ZeroDetectMult(u8),
    #[error("{field} must be between 1 us and 4294 s, got {value:?}")]
    BadInterval {
        field: &'static str,
        value: Duration,
    },
    #[error("peer {peer} and local {local} are of different address families")]
    FamilyMismatch { peer: IpAddr, local: IpAddr },
    #[error("auth key is {0} bytes, SHA1 keys are 1..=20 bytes")]
    BadKeyLength(usize),
}

fn to_us(field: &'static str, value: Duration) -> Result<u32, ConfigError> {
    match u32::try_from(value.as_micros()) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(ConfigError::BadInterval { field, value }),
    }
}

impl SessionConfig {
    /// Checks every field, so a bad config is rejected before any state changes.
    pub fn validate(&self) -> Result<(u32, u32), ConfigError> {
        if self.detect_mult == 0 {
            return Err(ConfigError::ZeroDetectMult(self.detect_mult));
        }
        if self.peer.is_ipv4() != self.local.is_ipv4() {
            return Err(ConfigError::FamilyMismatch {
                peer: self.peer,
                local: self.local,
            });
        }
        if let Some(a) = &self.auth
            && (a.key.is_empty() || a.key.len() > SHA1_DIGEST_LEN)
        {
            return Err(ConfigError::BadKeyLength(a.key.len()));
        }
        Ok((
            to_us("desired_min_tx", self.desired_min_tx)?,
            to_us("required_min_rx", self.required_min_rx)?,
        ))
    }
}

/// Reasons a well-formed packet is still discarded by a session (RFC 5880
/// 6.8.6 and 6.7.4) or by the socket layer (RFC 5881 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    #[error("no session matches your-discriminator {your_discr} from {src}")]
    NoSession { src: IpAddr, your_discr: u32 },
    #[error("TTL/hop limit {0} is not 255")]
    BadTtl(u8),
    #[error("packet carries authentication but the session has none")]
    AuthUnexpected,
    #[error("session requires authentication but the packet has none")]
    AuthMissing,
    #[error("auth type {got:?} differs from the configured {want:?}")]
    AuthTypeMismatch { got: AuthType, want: AuthType },
    #[error("auth key id {0} is not the configured key")]
    AuthKeyId(u8),
    #[error("auth sequence {seq} outside the window after {last}")]
    AuthSequence { seq: u32, last: u32 },
    #[error("auth digest does not match")]
    AuthDigest,
}

impl RxError {
    pub fn kind(&self) -> &'static str {
        match self {
            RxError::NoSession { .. } => "no_session",
            RxError::BadTtl(_) => "bad_ttl",
            RxError::AuthUnexpected => "auth_unexpected",
            RxError::AuthMissing => "auth_missing",
            RxError::AuthTypeMismatch { .. } => "auth_type_mismatch",
            RxError::AuthKeyId(_) => "auth_key_id",
            RxError::AuthSequence { .. } => "auth_sequence",
            RxError::AuthDigest => "auth_digest",
        }
    }
}

/// The variables of RFC 5880 6.8.1 plus the timers derived from them.
#[derive(Debug, Clone)]
pub struct Session {
    pub cfg: SessionConfig,
    pub local_discr: u32,
    pub remote_discr: u32,
    pub state: State,
    pub remote_state: State,
    pub local_diag: Diag,
    /// Configured intervals (µs).
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    /// Intervals driving our own timers until a Poll Sequence ends (µs).
    pub active_tx_us: u32,
    pub active_rx_us: u32,
    /// Last values received from the peer (µs); `remote_min_rx_us` starts at 1 (6.8.1).
    pub remote_min_rx_us: u32,
    pub remote_desired_tx_us: u32,
    pub remote_detect_mult: u8,
    /// The peer set the Demand (D) bit.
    pub remote_demand: bool,
    /// A Poll Sequence is in progress (we set P until the peer sends F).
    pub poll_pending: bool,
    pub next_tx: Option<Instant>,
    pub detect_deadline: Option<Instant>,
    pub xmit_auth_seq: u32,
    pub rcv_auth_seq: Option<u32>,
}

impl Session {
    pub fn new(cfg: SessionConfig, local_discr: u32, now: Instant) -> Result<Session, ConfigError> {
        let (tx, rx) = cfg.validate()?;
        let mut s = Session {
            cfg,
            local_discr,
            remote_discr: 0,
            state: State::Down,
            remote_state: State::Down,
            local_diag: Diag::None,
            desired_min_tx_us: tx,
            required_min_rx_us: rx,
            active_tx_us: 0,
            active_rx_us: rx,
            remote_min_rx_us: 1,
            remote_desired_tx_us: 0,
            remote_detect_mult: 0,
            remote_demand: false,
            poll_pending: false,
            next_tx: Some(now),
            detect_deadline: None,
            xmit_auth_seq: rand::random(),
            rcv_auth_seq: None,
        };
        s.active_tx_us = s.advertised_tx();
        Ok(s)
    }

    /// Desired Min TX as advertised: the configured value, but at least 1 s
    /// while the session is not Up.
    pub fn advertised_tx(&self) -> u32 {
        if self.state == State::Up {
            self.desired_min_tx_us
        } else {
            self.desired_min_tx_us.max(SLOW_TX_US)
        }
    }

    /// Periodic transmit interval before jitter (6.8.7: "the greater of
    /// bfd.DesiredMinTxInterval and bfd.RemoteMinRxInterval"), or `None`
    /// when the peer asked for no packets: RemoteMinRxInterval zero, or
    /// 6.8.7 "If bfd.RemoteDemandMode is 1, bfd.SessionState is Up, and
    /// bfd.RemoteSessionState is Up, Demand mode is active on the remote
    /// system and the local system MUST cease the periodic transmission"
    /// (a pending Poll Sequence is still sent; we never request Demand mode).
    pub fn tx_interval(&self) -> Option<Duration> {
        let demand = self.remote_demand
            && self.state == State::Up
            && self.remote_state == State::Up
            && !self.poll_pending;
        (self.remote_min_rx_us != 0 && !demand)
            .then(|| Duration::from_micros(u64::from(self.active_tx_us.max(self.remote_min_rx_us))))
    }

    /// Detection Time in asynchronous mode (6.8.4): "the value of Detect
    /// Mult received from the remote system, multiplied by the agreed
    /// transmit interval of the remote system (the greater of
    /// bfd.RequiredMinRxInterval and the last received Desired Min TX Interval)".
    pub fn detection_time(&self) -> Duration {
        let agreed = self.active_rx_us.max(self.remote_desired_tx_us);
        Duration::from_micros(u64::from(agreed) * u64::from(self.remote_detect_mult.max(1)))
    }

    /// Re-derives the active intervals after the advertised ones changed,
    /// starting a Poll Sequence (6.8.3: "If either bfd.DesiredMinTxInterval
    /// or bfd.RequiredMinRxInterval is changed, a Poll Sequence MUST be initiated").
    pub fn advertised_changed(&mut self, old_tx: u32, old_rx: u32) {
        let new_tx = self.advertised_tx();
        let new_rx = self.required_min_rx_us;
        if new_tx == old_tx && new_rx == old_rx {
            return;
        }
        let up = self.state == State::Up;
        if !(up && new_tx > self.active_tx_us) {
            self.active_tx_us = new_tx;
        }
        if !(up && new_rx < self.active_rx_us) {
            self.active_rx_us = new_rx;
        }
        if self.state != State::AdminDown {
            self.poll_pending = true;
        }
    }

    /// The Poll Sequence ended: every advertised value is now in force.
    pub fn poll_terminated(&mut self) {
        self.poll_pending = false;
        self.active_tx_us = self.advertised_tx();
        self.active_rx_us = self.required_min_rx_us;
    }

    /// Builds the next Control packet; `final_` answers a Poll (and then P
    /// is clear, 6.5: "MUST NOT have both the Poll (P) and Final (F) bits set").
    pub fn build_packet(&mut self, final_: bool) -> Vec<u8> {
        let mut pkt = Packet {
            diag: self.local_diag,
            state: self.state,
            poll: self.poll_pending && !final_,
            final_,
            cpi: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: self.advertised_tx(),
            required_min_rx: self.required_min_rx_us,
            required_min_echo_rx: 0,
            auth: None,
        };
        match &self.cfg.auth {
            None => pkt.encode(),
            Some(a) => {
                // 6.7.4: "bfd.XmitAuthSeq MUST be incremented in a circular
                // fashion" before each packet for the meticulous variant; we
                // do it for both variants, which the keyed variant permits.
                self.xmit_auth_seq = self.xmit_auth_seq.wrapping_add(1);
                pkt.auth = Some(AuthSection {
                    auth_type: a.auth_type,
                    key_id: a.key_id,
                    seq: self.xmit_auth_seq,
                    digest: [0; SHA1_DIGEST_LEN],
                });
                sign_sha1(&pkt, &a.key)
            }
        }
    }

    /// Authentication checks of 6.7.4; on success the receive sequence advances.
    pub fn check_auth(&mut self, datagram: &[u8], pkt: &Packet) -> Result<(), RxError> {
        let (cfg, auth) = match (&self.cfg.auth, &pkt.auth) {
            (None, None) => return Ok(()),
            (None, Some(_)) => return Err(RxError::AuthUnexpected),
            (Some(_), None) => return Err(RxError::AuthMissing),
            (Some(c), Some(a)) => (c, a),
        };
        if auth.auth_type != cfg.auth_type {
            return Err(RxError::AuthTypeMismatch {
                got: auth.auth_type,
                want: cfg.auth_type,
            });
        }
        if auth.key_id != cfg.key_id {
            return Err(RxError::AuthKeyId(auth.key_id));
        }
        if let Some(last) = self.rcv_auth_seq {
            // 6.7.4: meticulous accepts bfd.RcvAuthSeq+1 ..= bfd.RcvAuthSeq+3*DetectMult,
            // keyed accepts bfd.RcvAuthSeq ..= bfd.RcvAuthSeq+3*DetectMult (circular).
            let ahead = auth.seq.wrapping_sub(last);
            let window = 3 * u32::from(pkt.detect_mult);
            let lowest = u32::from(cfg.auth_type == AuthType::MeticulousKeyedSha1);
            if ahead < lowest || ahead > window {
                return Err(RxError::AuthSequence {
                    seq: auth.seq,
                    last,
                });
            }
        }
        if !verify_sha1(datagram, pkt, &cfg.key) {
            return Err(RxError::AuthDigest);
        }
        self.rcv_auth_seq = Some(auth.seq);
        Ok(())
    }
}
