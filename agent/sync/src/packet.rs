//! Sync frame codec: versioned, length-prefixed, sequenced and
//! authenticated with HMAC-SHA256 over a pre-shared key.
//!
//! ```text
//! Frame (all integers big-endian)
//!
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Magic 'F' 0x46  |  'S' 0x53 |    Version    |     Kind      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          Body Length                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Sequence Number (64 bits)                   |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Body (Body Length bytes) ...                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   HMAC-SHA256 (32 bytes) of session nonce | header | body ... |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Bodies by kind
//!  1 Hello        | node id (1) | reserved (3) | nonce (8) |
//!  2 Upsert       | count (2) | reserved (2) | count x Flow Record (32) |
//!  3 Delete       | count (2) | reserved (2) | count x Flow Key (16)    |
//!  4 ResyncStart  | resync id (4) |
//!  5 ResyncEnd    | resync id (4) | records sent (4) |
//!  6 ResyncAck    | resync id (4) | records installed (4) |
//!
//! Flow Key (16 bytes): the client's tuple as it reaches the VIP
//! |  proto (1)  | reserved (3) | client addr (4) | VIP addr (4) |
//! | client port (2) | VIP port (2) |
//!
//! Flow Record (32 bytes): the key, its NAT mapping and its age
//! | proto (1) | TCP state (1) | reserved (2) | client addr (4) |
//! | VIP addr (4) | client port (2) | VIP port (2) | SNAT addr (4) |
//! | endpoint addr (4) | SNAT port (2) | endpoint port (2) | idle ms (4) |
//! ```
//!
//! The MAC covers the 8-byte session nonce, the 16-byte header and the
//! body, so a frame cannot be moved to another session (the receiver picks
//! the nonce and sends it in its own Hello, MAC'd under nonce 0), nor to
//! another place in its session (the sequence number counts up by one from
//! the Hello's 0 and the receiver checks it). [`decode`] checks the header,
//! then the MAC, and only then parses the body: nothing from an
//! unauthenticated frame is interpreted beyond its length. Each failure is
//! its own [`DecodeError`] variant, so refusals are counted by kind.
//!
//! The decoder never panics: every index is bounds-checked, and a
//! cargo-fuzz target (agent/sync/fuzz) holds it to that.

use std::net::Ipv4Addr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// First two bytes of every frame: "FS".
pub const MAGIC: u16 = 0x4653;
/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 16;
/// Length of the HMAC-SHA256 trailer.
pub const MAC_LEN: usize = 32;
/// Length of one flow record in an Upsert body.
pub const RECORD_LEN: usize = 32;
/// Length of one flow key in a Delete body.
pub const KEY_LEN: usize = 16;
/// Most records (or keys) one frame carries.
pub const MAX_BATCH: usize = 1024;
/// Largest body any kind can have (an Upsert of [`MAX_BATCH`] records).
pub const MAX_BODY: usize = 4 + RECORD_LEN * MAX_BATCH;
/// Shortest accepted pre-shared key, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// TCP state of a synced flow, numbered as the datapath's `CT_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    Syn = 0,
    Established = 1,
    Fin = 2,
    Closed = 3,
}

impl TcpState {
    /// From the wire (and `CT_*`) number.
    pub fn from_u8(v: u8) -> Option<TcpState> {
        Some(match v {
            0 => TcpState::Syn,
            1 => TcpState::Established,
            2 => TcpState::Fin,
            3 => TcpState::Closed,
            _ => return None,
        })
    }
}

/// The client's tuple as it reaches the VIP: what identifies a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub client: Ipv4Addr,
    pub vip: Ipv4Addr,
    pub client_port: u16,
    pub vip_port: u16,
}

/// One flow with its NAT mapping, its TCP state (UDP: `Established`) and
/// how long ago the sender last saw a packet of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowRecord {
    pub key: FlowKey,
    pub state: TcpState,
    /// Source address the endpoint sees.
    pub snat: Ipv4Addr,
    pub endpoint: Ipv4Addr,
    /// Source port the endpoint sees.
    pub snat_port: u16,
    pub endpoint_port: u16,
    /// Milliseconds since the sender last saw a packet of the flow.
    pub idle_ms: u32,
}

/// What a frame carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First frame each way. The receiver's carries the session nonce it
    /// chose; the sender's repeats it.
    Hello { node: u8, nonce: u64 },
    /// New flows and state changes (at least one record).
    Upsert(Vec<FlowRecord>),
    /// Flows to remove (at least one key).
    Delete(Vec<FlowKey>),
    /// A bulk resync begins: the records up to its end are the whole table.
    ResyncStart { id: u32 },
    /// The bulk resync `id` is complete after `count` records.
    ResyncEnd { id: u32, count: u32 },
    /// Receiver to sender: resync `id` is installed (`count` records).
    ResyncAck { id: u32, count: u32 },
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Hello { .. } => 1,
            Message::Upsert(_) => 2,
            Message::Delete(_) => 3,
            Message::ResyncStart { .. } => 4,
            Message::ResyncEnd { .. } => 5,
            Message::ResyncAck { .. } => 6,
        }
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub seq: u64,
    pub msg: Message,
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{have} bytes are fewer than the {need} the frame needs")]
    Truncated { need: usize, have: usize },
    #[error("magic {0:#06x} is not a floatlb sync frame (0x4653)")]
    BadMagic(u16),
    #[error("version {0} is not sync protocol version 1")]
    BadVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("body length {0} exceeds the maximum 32772")]
    BodyTooLong(u32),
    #[error("HMAC does not match: wrong key, or the frame was altered")]
    BadMac,
    #[error("body length {len} does not fit frame kind {kind}")]
    BadBodyLength { kind: u8, len: usize },
    #[error("record count {0} is outside 1..=1024")]
    BadCount(u16),
    #[error("protocol {0} is neither TCP (6) nor UDP (17)")]
    BadProto(u8),
    #[error("TCP state {0} is not 0..=3")]
    BadState(u8),
    #[error("{0} is zero")]
    ZeroPort(&'static str),
}

/// Why a pre-shared key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("--sync-key-file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "--sync-key-file {path}: the key has {len} bytes, fewer than 16 (e.g. `head -c 32 /dev/urandom | base64 > FILE`)"
    )]
    TooShort { path: String, len: usize },
}

/// The pre-shared key (the key file's contents, surrounding whitespace
/// trimmed). Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SyncKey(Vec<u8>);

impl std::fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SyncKey({} bytes)", self.0.len())
    }
}

impl SyncKey {
    /// A key from bytes; at least [`MIN_KEY_LEN`] of them.
    pub fn new(bytes: &[u8], path: &str) -> Result<SyncKey, KeyError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                path: path.to_string(),
                len: trimmed.len(),
            });
        }
        Ok(SyncKey(trimmed.to_vec()))
    }

    /// Reads `--sync-key-file`.
    pub fn from_file(path: &std::path::Path) -> Result<SyncKey, KeyError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        SyncKey::new(&bytes, &shown)
    }

    fn mac(&self, nonce: u64, header: &[u8], body: &[u8]) -> Hmac<Sha256> {
        // Any key length is valid for HMAC.
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        m.update(&nonce.to_be_bytes());
        m.update(header);
        m.update(body);
        m
    }
}

fn put_key(out: &mut Vec<u8>, k: &FlowKey) {
    out.extend_from_slice(&[k.proto, 0, 0, 0]);
    out.extend_from_slice(&k.client.octets());
    out.extend_from_slice(&k.vip.octets());
    out.extend_from_slice(&k.client_port.to_be_bytes());
    out.extend_from_slice(&k.vip_port.to_be_bytes());
}

fn put_record(out: &mut Vec<u8>, r: &FlowRecord) {
    out.extend_from_slice(&[r.key.proto, r.state as u8, 0, 0]);
    out.extend_from_slice(&r.key.client.octets());
    out.extend_from_slice(&r.key.vip.octets());
    out.extend_from_slice(&r.key.client_port.to_be_bytes());
    out.extend_from_slice(&r.key.vip_port.to_be_bytes());
    out.extend_from_slice(&r.snat.octets());
    out.extend_from_slice(&r.endpoint.octets());
    out.extend_from_slice(&r.snat_port.to_be_bytes());
    out.extend_from_slice(&r.endpoint_port.to_be_bytes());
    out.extend_from_slice(&r.idle_ms.to_be_bytes());
}

/// Encodes one frame. Upsert and Delete batches longer than [`MAX_BATCH`]
/// must be split by the caller ([`encode`] panics on them in debug builds
/// and the receiver refuses them).
pub fn encode(key: &SyncKey, nonce: u64, seq: u64, msg: &Message) -> Vec<u8> {
    let mut body = Vec::new();
    match msg {
        Message::Hello { node, nonce } => {
            body.extend_from_slice(&[*node, 0, 0, 0]);
            body.extend_from_slice(&nonce.to_be_bytes());
        }
        Message::Upsert(recs) => {
            debug_assert!((1..=MAX_BATCH).contains(&recs.len()));
            body.extend_from_slice(&(recs.len() as u16).to_be_bytes());
            body.extend_from_slice(&[0, 0]);
            for r in recs {
                put_record(&mut body, r);
            }
        }
        Message::Delete(keys) => {
            debug_assert!((1..=MAX_BATCH).contains(&keys.len()));
            body.extend_from_slice(&(keys.len() as u16).to_be_bytes());
            body.extend_from_slice(&[0, 0]);
            for k in keys {
                put_key(&mut body, k);
            }
        }
        Message::ResyncStart { id } => body.extend_from_slice(&id.to_be_bytes()),
        Message::ResyncEnd { id, count } | Message::ResyncAck { id, count } => {
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&count.to_be_bytes());
        }
    }
    seal(key, nonce, msg.kind(), seq, &body)
}

/// A frame of any `kind` around any `body`, with a correct header and MAC
/// (what [`encode`] does once the body is laid out). Public so tests and
/// the fuzz target can reach the body parsers behind the MAC check.
pub fn seal(key: &SyncKey, nonce: u64, kind: u8, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + MAC_LEN);
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    let tag = key.mac(nonce, &out, body).finalize().into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(&tag);
    out
}

/// Checks a header and returns the frame's total length (header, body and
/// MAC), so a stream reader knows how much to read next.
pub fn frame_len(header: &[u8]) -> Result<usize, DecodeError> {
    let h = header.get(..HEADER_LEN).ok_or(DecodeError::Truncated {
        need: HEADER_LEN,
        have: header.len(),
    })?;
    let magic = u16::from_be_bytes([h[0], h[1]]);
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    if h[2] != VERSION {
        return Err(DecodeError::BadVersion(h[2]));
    }
    if !(1..=6).contains(&h[3]) {
        return Err(DecodeError::UnknownKind(h[3]));
    }
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    if len as usize > MAX_BODY {
        return Err(DecodeError::BodyTooLong(len));
    }
    Ok(HEADER_LEN + len as usize + MAC_LEN)
}

/// Decodes the frame at the start of `buf`, authenticated under `key` and
/// the session `nonce`; returns it and the bytes it used.
pub fn decode(key: &SyncKey, nonce: u64, buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
    let total = frame_len(buf)?;
    let frame = buf.get(..total).ok_or(DecodeError::Truncated {
        need: total,
        have: buf.len(),
    })?;
    let (header, rest) = frame.split_at(HEADER_LEN);
    let (body, tag) = rest.split_at(rest.len() - MAC_LEN);
    key.mac(nonce, header, body)
        .verify_slice(tag)
        .map_err(|_| DecodeError::BadMac)?;
    let seq = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
    let kind = header[3];
    let msg = parse_body(kind, body)?;
    Ok((Frame { seq, msg }, total))
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn ip(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::from(be32(b, at))
}

fn parse_key(b: &[u8]) -> Result<FlowKey, DecodeError> {
    let proto = b[0];
    if proto != 6 && proto != 17 {
        return Err(DecodeError::BadProto(proto));
    }
    let k = FlowKey {
        proto,
        client: ip(b, 4),
        vip: ip(b, 8),
        client_port: be16(b, 12),
        vip_port: be16(b, 14),
    };
    if k.client_port == 0 {
        return Err(DecodeError::ZeroPort("client port"));
    }
    if k.vip_port == 0 {
        return Err(DecodeError::ZeroPort("VIP port"));
    }
    Ok(k)
}

fn parse_record(b: &[u8]) -> Result<FlowRecord, DecodeError> {
    // The key's layout is the record's first 16 bytes with the state byte
    // in the key's reserved slot.
    let key = parse_key(&b[..KEY_LEN])?;
    let state = TcpState::from_u8(b[1]).ok_or(DecodeError::BadState(b[1]))?;
    let r = FlowRecord {
        key,
        state,
        snat: ip(b, 16),
        endpoint: ip(b, 20),
        snat_port: be16(b, 24),
        endpoint_port: be16(b, 26),
        idle_ms: be32(b, 28),
    };
    if r.snat_port == 0 {
        return Err(DecodeError::ZeroPort("SNAT port"));
    }
    if r.endpoint_port == 0 {
        return Err(DecodeError::ZeroPort("endpoint port"));
    }
    Ok(r)
}

fn batch(
    kind: u8,
    body: &[u8],
    item: usize,
) -> Result<std::slice::ChunksExact<'_, u8>, DecodeError> {
    let bad_len = DecodeError::BadBodyLength {
        kind,
        len: body.len(),
    };
    if body.len() < 4 {
        return Err(bad_len);
    }
    let count = be16(body, 0);
    if count == 0 || usize::from(count) > MAX_BATCH {
        return Err(DecodeError::BadCount(count));
    }
    if body.len() != 4 + item * usize::from(count) {
        return Err(bad_len);
    }
    Ok(body[4..].chunks_exact(item))
}

fn parse_body(kind: u8, body: &[u8]) -> Result<Message, DecodeError> {
    let fixed = |len: usize| {
        if body.len() == len {
            Ok(())
        } else {
            Err(DecodeError::BadBodyLength {
                kind,
                len: body.len(),
            })
        }
    };
    Ok(match kind {
        1 => {
            fixed(12)?;
            Message::Hello {
                node: body[0],
                nonce: u64::from_be_bytes(body[4..12].try_into().unwrap_or_default()),
            }
        }
        2 => Message::Upsert(
            batch(kind, body, RECORD_LEN)?
                .map(parse_record)
                .collect::<Result<_, _>>()?,
        ),
        3 => Message::Delete(
            batch(kind, body, KEY_LEN)?
                .map(parse_key)
                .collect::<Result<_, _>>()?,
        ),
        4 => {
            fixed(4)?;
            Message::ResyncStart { id: be32(body, 0) }
        }
        5 | 6 => {
            fixed(8)?;
            let (id, count) = (be32(body, 0), be32(body, 4));
            if kind == 5 {
                Message::ResyncEnd { id, count }
            } else {
                Message::ResyncAck { id, count }
            }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
