//! BFD Control packet codec (RFC 5880 section 4).
//!
//! ```text
//! RFC 5880, 4.1. Generic BFD Control Packet Format
//!
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       My Discriminator                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Your Discriminator                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Desired Min TX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Required Min RX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Required Min Echo RX Interval                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! An optional Authentication Section MAY be present:
//! |   Auth Type   |   Auth Len    |    Authentication Data...     |
//!
//! RFC 5880, 4.4. Keyed SHA1 and Meticulous Keyed SHA1 Authentication Section
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Auth Type   |   Auth Len    |  Auth Key ID  |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence Number                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Auth Key/Hash...                        |
//! |                              ...                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Packet::decode`] applies every reception check of RFC 5880 section 6.8.6
//! that needs nothing but the bytes: "If the version number is not correct
//! (1), the packet MUST be discarded", "If the Length field is less than the
//! minimum correct value (24 if the A bit is clear, or 26 if the A bit is
//! set), the packet MUST be discarded", "If the Length field is greater than
//! the payload of the encapsulating protocol, the packet MUST be discarded",
//! "If the Detect Mult field is zero, the packet MUST be discarded", "If the
//! Multipoint (M) bit is nonzero, the packet MUST be discarded", "If the My
//! Discriminator field is zero, the packet MUST be discarded", "If the Your
//! Discriminator field is zero and the State field is not Down or AdminDown,
//! the packet MUST be discarded". Each failure is its own [`DecodeError`]
//! variant so it can be counted per kind. Checks that need session state
//! (which key, which sequence window) live in the session.
//!
//! The decoder never panics: every index is bounds-checked through
//! `get`/`split_at_checked`, and a cargo-fuzz target (agent/fuzz) holds it to that.

use sha1::{Digest, Sha1};

/// RFC 5880: "The version number of the protocol. This document defines protocol version 1."
pub const VERSION: u8 = 1;
/// Length of the mandatory part of a Control packet.
pub const HEADER_LEN: usize = 24;
/// Length of a (Meticulous) Keyed SHA1 authentication section.
pub const SHA1_AUTH_LEN: usize = 28;
/// Length of the SHA1 digest / key field.
pub const SHA1_DIGEST_LEN: usize = 20;

/// Session state as carried in the `Sta` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(v: u8) -> State {
        match v & 0x3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// Diagnostic codes (RFC 5880 section 4.1); values 9-31 are reserved and
/// kept as received so a newer peer is not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Diag {
    None,
    ControlDetectionExpired,
    EchoFailed,
    NeighborDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdminDown,
    ReverseConcatenatedPathDown,
    Reserved(u8),
}

impl Diag {
    pub fn from_u8(v: u8) -> Diag {
        match v & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionExpired,
            2 => Diag::EchoFailed,
            3 => Diag::NeighborDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdminDown,
            8 => Diag::ReverseConcatenatedPathDown,
            other => Diag::Reserved(other),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionExpired => 1,
            Diag::EchoFailed => 2,
            Diag::NeighborDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdminDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(v) => v & 0x1f,
        }
    }
}

/// Authentication types of RFC 5880 section 4.1 (`Auth Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AuthType {
    KeyedSha1 = 4,
    MeticulousKeyedSha1 = 5,
}

/// A decoded SHA1 authentication section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSection {
    pub auth_type: AuthType,
    pub key_id: u8,
    pub seq: u32,
    pub digest: [u8; SHA1_DIGEST_LEN],
}

/// A BFD Control packet. Intervals are in microseconds, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub diag: Diag,
    pub state: State,
    pub poll: bool,
    pub final_: bool,
    pub cpi: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    pub desired_min_tx: u32,
    pub required_min_rx: u32,
    pub required_min_echo_rx: u32,
    pub auth: Option<AuthSection>,
}

/// Why a datagram is not a valid BFD Control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {0} bytes is shorter than the 24-byte BFD header")]
    TooShort(usize),
    #[error("version {0} is not BFD version 1")]
    BadVersion(u8),
    #[error("length field {length} is below the minimum {min}")]
    LengthTooSmall { length: u8, min: u8 },
    #[error("length field {length} exceeds the {datagram}-byte datagram")]
    LengthExceedsDatagram { length: u8, datagram: usize },
    #[error("length field {0} leaves bytes after the header but the A bit is clear")]
    TrailingBytesWithoutAuth(u8),
    #[error("detect mult is zero")]
    ZeroDetectMult,
    #[error("multipoint (M) bit is set")]
    Multipoint,
    #[error("poll and final bits are both set")]
    PollAndFinal,
    #[error("my discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("your discriminator is zero while state is {0}")]
    ZeroYourDiscriminator(State),
    #[error(
        "authentication type {0} is not supported (only keyed SHA1 4 and meticulous keyed SHA1 5)"
    )]
    UnsupportedAuthType(u8),
    #[error("auth len {auth_len} does not match: expected {expected}")]
    BadAuthLength { auth_len: u8, expected: u8 },
}

impl DecodeError {
    /// A stable name per variant, used as the counter key and the log field.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooShort(_) => "too_short",
            DecodeError::BadVersion(_) => "bad_version",
            DecodeError::LengthTooSmall { .. } => "length_too_small",
            DecodeError::LengthExceedsDatagram { .. } => "length_exceeds_datagram",
            DecodeError::TrailingBytesWithoutAuth(_) => "trailing_bytes_without_auth",
            DecodeError::ZeroDetectMult => "zero_detect_mult",
            DecodeError::Multipoint => "multipoint",
            DecodeError::PollAndFinal => "poll_and_final",
            DecodeError::ZeroMyDiscriminator => "zero_my_discriminator",
            DecodeError::ZeroYourDiscriminator(_) => "zero_your_discriminator",
            DecodeError::UnsupportedAuthType(_) => "unsupported_auth_type",
            DecodeError::BadAuthLength { .. } => "bad_auth_length",
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

impl Packet {
    /// Decodes and validates one datagram. The returned packet's
    /// authentication digest is not verified yet: see [`verify_sha1`].
    pub fn decode(buf: &[u8]) -> Result<Packet, DecodeError> {
        let Some((hdr, _)) = buf.split_at_checked(HEADER_LEN) else {
            return Err(DecodeError::TooShort(buf.len()));
        };
        let version = hdr[0] >> 5;
        if version != VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let flags = hdr[1];
        let auth_bit = flags & 0x04 != 0;
        let length = hdr[3];
        let min = if auth_bit { 26 } else { 24 };
        if length < min {
            return Err(DecodeError::LengthTooSmall { length, min });
        }
        if usize::from(length) > buf.len() {
            return Err(DecodeError::LengthExceedsDatagram {
                length,
                datagram: buf.len(),
            });
        }
        if !auth_bit && usize::from(length) != HEADER_LEN {
            return Err(DecodeError::TrailingBytesWithoutAuth(length));
        }
        let detect_mult = hdr[2];
        if detect_mult == 0 {
            return Err(DecodeError::ZeroDetectMult);
        }
        if flags & 0x01 != 0 {
            return Err(DecodeError::Multipoint);
        }
        let poll = flags & 0x20 != 0;
        let final_ = flags & 0x10 != 0;
        if poll && final_ {
            return Err(DecodeError::PollAndFinal);
        }
        let state = State::from_bits(flags >> 6);
        let my_discr = be32(hdr, 4);
        let your_discr = be32(hdr, 8);
        if my_discr == 0 {
            return Err(DecodeError::ZeroMyDiscriminator);
        }
        if your_discr == 0 && !matches!(state, State::Down | State::AdminDown) {
            return Err(DecodeError::ZeroYourDiscriminator(state));
        }
        let auth = if auth_bit {
            let section = buf.get(HEADER_LEN..usize::from(length)).unwrap_or(&[]);
            Some(decode_auth(section)?)
        } else {
            None
        };
        Ok(Packet {
            diag: Diag::from_u8(hdr[0]),
            state,
            poll,
            final_,
            cpi: flags & 0x08 != 0,
            demand: flags & 0x02 != 0,
            detect_mult,
            my_discr,
            your_discr,
            desired_min_tx: be32(hdr, 12),
            required_min_rx: be32(hdr, 16),
            required_min_echo_rx: be32(hdr, 20),
            auth,
        })
    }

    /// Encodes the packet. With an authentication section the digest field
    /// is written as stored; use [`sign_sha1`] to fill it.
    pub fn encode(&self) -> Vec<u8> {
        let len = HEADER_LEN
            + if self.auth.is_some() {
                SHA1_AUTH_LEN
            } else {
                0
            };
        let mut out = Vec::with_capacity(len);
        out.push((VERSION << 5) | (self.diag.to_u8() & 0x1f));
        let mut flags = (self.state as u8) << 6;
        for (bit, on) in [
            (0x20, self.poll),
            (0x10, self.final_),
            (0x08, self.cpi),
            (0x04, self.auth.is_some()),
            (0x02, self.demand),
        ] {
            if on {
                flags |= bit;
            }
        }
        out.push(flags);
        out.push(self.detect_mult);
        out.push(len as u8);
        for v in [
            self.my_discr,
            self.your_discr,
            self.desired_min_tx,
            self.required_min_rx,
            self.required_min_echo_rx,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        if let Some(a) = &self.auth {
            out.push(a.auth_type as u8);
            out.push(SHA1_AUTH_LEN as u8);
            out.push(a.key_id);
            out.push(0);
            out.extend_from_slice(&a.seq.to_be_bytes());
            out.extend_from_slice(&a.digest);
        }
        out
    }
}

fn decode_auth(section: &[u8]) -> Result<AuthSection, DecodeError> {
    // Length >= 26 was checked, so the type and length bytes exist.
    let (auth_type, auth_len) = match section {
        [t, l, ..] => (*t, *l),
        _ => {
            return Err(DecodeError::BadAuthLength {
                auth_len: 0,
                expected: SHA1_AUTH_LEN as u8,
            });
        }
    };
    let auth_type = match auth_type {
        4 => AuthType::KeyedSha1,
        5 => AuthType::MeticulousKeyedSha1,
        other => return Err(DecodeError::UnsupportedAuthType(other)),
    };
    if usize::from(auth_len) != SHA1_AUTH_LEN || section.len() != SHA1_AUTH_LEN {
        return Err(DecodeError::BadAuthLength {
            auth_len,
            expected: SHA1_AUTH_LEN as u8,
        });
    }
    let mut digest = [0u8; SHA1_DIGEST_LEN];
    digest.copy_from_slice(&section[8..SHA1_AUTH_LEN]);
    Ok(AuthSection {
        auth_type,
        key_id: section[2],
        seq: be32(section, 4),
        digest,
    })
}

/// Pads or truncates a key to the 20-byte SHA1 key field (RFC 5880 6.7.4:
/// "If the key is shorter than 20 bytes, it MUST be padded with zeros").
fn key_field(key: &[u8]) -> [u8; SHA1_DIGEST_LEN] {
    let mut field = [0u8; SHA1_DIGEST_LEN];
    let n = key.len().min(SHA1_DIGEST_LEN);
    field[..n].copy_from_slice(&key[..n]);
    field
}

fn sha1_over(packet_with_key: &[u8]) -> [u8; SHA1_DIGEST_LEN] {
    let mut h = Sha1::new();
    h.update(packet_with_key);
    h.finalize().into()
}

/// Encodes `pkt` (which must carry an auth section) and signs it: the hash
/// is computed over the packet with the key in the digest field (RFC 5880 6.7.4).
pub fn sign_sha1(pkt: &Packet, key: &[u8]) -> Vec<u8> {
    let mut bytes = pkt.encode();
    if bytes.len() == HEADER_LEN + SHA1_AUTH_LEN {
        let field = HEADER_LEN + 8..HEADER_LEN + SHA1_AUTH_LEN;
        bytes[field.clone()].copy_from_slice(&key_field(key));
        let digest = sha1_over(&bytes);
        bytes[field].copy_from_slice(&digest);
    }
    bytes
}

/// Verifies the digest of a received datagram (already decoded into `pkt`).
pub fn verify_sha1(datagram: &[u8], pkt: &Packet, key: &[u8]) -> bool {
    let Some(auth) = &pkt.auth else { return false };
    let Some(bytes) = datagram.get(..HEADER_LEN + SHA1_AUTH_LEN) else {
        return false;
    };
    let mut copy = bytes.to_vec();
    copy[HEADER_LEN + 8..].copy_from_slice(&key_field(key));
    sha1_over(&copy) == auth.digest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up_packet() -> Packet {
        Packet {
            diag: Diag::None,
            state: State::Up,
            poll: true,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_discr: 0x0102_0304,
            your_discr: 0x0a0b_0c0d,
            desired_min_tx: 10_000,
            required_min_rx: 20_000,
            required_min_echo_rx: 0,
            auth: None,
        }
    }

    // Up, poll, mult 3, len 24, discriminators, 10 ms tx, 20 ms rx, no echo.
    const UP_BYTES: [u8; 24] = [
        0x20, 0xe0, 0x03, 0x18, 0x01, 0x02, 0x03, 0x04, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x00, 0x27,
        0x10, 0x00, 0x00, 0x4e, 0x20, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn encodes_up_packet_to_known_bytes() {
        assert_eq!(up_packet().encode(), UP_BYTES);
    }

    #[test]
    fn decodes_known_bytes_to_up_packet() {
        assert_eq!(Packet::decode(&UP_BYTES).unwrap(), up_packet());
    }

    #[test]
    fn decodes_down_packet_with_diag_and_zero_your_discriminator() {
        // Diag 1 (detection expired), Down, final, mult 5, 1 s tx/rx.
        let bytes = [
            0x21, 0x50, 0x05, 0x18, 0, 0, 0, 7, 0, 0, 0, 0, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x0f,
            0x42, 0x40, 0, 0, 0, 0,
        ];
        let p = Packet::decode(&bytes).unwrap();
        assert_eq!(p.state, State::Down);
        assert_eq!(p.diag, Diag::ControlDetectionExpired);
        assert!(p.final_ && !p.poll);
        assert_eq!((p.my_discr, p.your_discr), (7, 0));
        assert_eq!(p.desired_min_tx, 1_000_000);
        assert_eq!(p.encode(), bytes);
    }

    #[test]
    fn every_diag_code_round_trips() {
        for v in 0..32u8 {
            assert_eq!(Diag::from_u8(v).to_u8(), v);
        }
        assert_eq!(Diag::from_u8(7), Diag::AdminDown);
        assert_eq!(Diag::from_u8(8), Diag::ReverseConcatenatedPathDown);
    }

    #[test]
    fn sha1_signed_packet_has_known_layout_and_verifies() {
        let mut p = up_packet();
        p.poll = false;
        p.auth = Some(AuthSection {
            auth_type: AuthType::MeticulousKeyedSha1,
            key_id: 9,
            seq: 0x11223344,
            digest: [0; 20],
        });
        let bytes = sign_sha1(&p, b"secret");
        assert_eq!(bytes.len(), 52);
        assert_eq!(bytes[1], 0xc4, "state Up with the A bit");
        assert_eq!(bytes[3], 52);
        assert_eq!(&bytes[24..32], &[5, 28, 9, 0, 0x11, 0x22, 0x33, 0x44]);
        let decoded = Packet::decode(&bytes).unwrap();
        assert!(verify_sha1(&bytes, &decoded, b"secret"));
        assert!(!verify_sha1(&bytes, &decoded, b"other"));
        let mut tampered = bytes.clone();
        tampered[15] ^= 1;
        let d2 = Packet::decode(&tampered).unwrap();
        assert!(!verify_sha1(&tampered, &d2, b"secret"));
    }

    fn with(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = UP_BYTES.to_vec();
        f(&mut v);
        v
    }

    #[test]
    fn one_bad_input_vector_per_error_variant() {
        let auth_ok = sign_sha1(
            &Packet {
                auth: Some(AuthSection {
                    auth_type: AuthType::KeyedSha1,
                    key_id: 1,
                    seq: 1,
                    digest: [0; 20],
                }),
                ..up_packet()
            },
            b"k",
        );
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (UP_BYTES[..23].to_vec(), DecodeError::TooShort(23)),
            (with(|v| v[0] = 0x40), DecodeError::BadVersion(2)),
            (
                with(|v| v[3] = 20),
                DecodeError::LengthTooSmall {
                    length: 20,
                    min: 24,
                },
            ),
            (
                with(|v| {
                    v[1] |= 0x04;
                    v[3] = 25;
                }),
                DecodeError::LengthTooSmall {
                    length: 25,
                    min: 26,
                },
            ),
            (
                with(|v| v[3] = 60),
                DecodeError::LengthExceedsDatagram {
                    length: 60,
                    datagram: 24,
                },
            ),
            (
                with(|v| {
                    v[3] = 28;
                    v.extend_from_slice(&[0; 4]);
                }),
                DecodeError::TrailingBytesWithoutAuth(28),
            ),
            (with(|v| v[2] = 0), DecodeError::ZeroDetectMult),
            (with(|v| v[1] |= 0x01), DecodeError::Multipoint),
            (with(|v| v[1] |= 0x10), DecodeError::PollAndFinal),
            (with(|v| v[4..8].fill(0)), DecodeError::ZeroMyDiscriminator),
            (
                with(|v| v[8..12].fill(0)),
                DecodeError::ZeroYourDiscriminator(State::Up),
            ),
            (
                {
                    let mut v = auth_ok.clone();
                    v[24] = 2;
                    v
                },
                DecodeError::UnsupportedAuthType(2),
            ),
            (
                {
                    let mut v = auth_ok.clone();
                    v[25] = 24;
                    v
                },
                DecodeError::BadAuthLength {
                    auth_len: 24,
                    expected: 28,
                },
            ),
        ];
        let mut kinds = std::collections::HashSet::new();
        for (bytes, want) in cases {
            assert_eq!(Packet::decode(&bytes), Err(want), "vector {bytes:02x?}");
            kinds.insert(want.kind());
        }
        assert_eq!(kinds.len(), 12, "one vector per DecodeError variant");
        assert!(Packet::decode(&auth_ok).is_ok());
    }

    #[test]
    fn decoder_survives_every_truncation_and_bit_flip() {
        let signed = sign_sha1(
            &Packet {
                auth: Some(AuthSection {
                    auth_type: AuthType::MeticulousKeyedSha1,
                    key_id: 1,
                    seq: 1,
                    digest: [0; 20],
                }),
                ..up_packet()
            },
            b"k",
        );
        for n in 0..=signed.len() {
            let _ = Packet::decode(&signed[..n]);
        }
        for byte in 0..signed.len() {
            for bit in 0..8 {
                let mut v = signed.clone();
                v[byte] ^= 1 << bit;
                let _ = Packet::decode(&v);
            }
        }
    }
}
