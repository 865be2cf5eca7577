//! Reading and writing whole frames on a stream, with the session checks
//! that need more than one frame: the Hello and the sequence numbers.

use std::io::{Read, Write};

use crate::packet::{self, DecodeError, Frame, HEADER_LEN, Message, SyncKey};
use crate::stats::SyncStats;

/// Why a sync session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("sync connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("refused frame: {0}")]
    Refused(#[from] DecodeError),
    #[error("refused frame: sequence {got}, expected {want}")]
    Sequence { got: u64, want: u64 },
    #[error("refused frame: expected a Hello, got {0}")]
    NotHello(&'static str),
    #[error("refused Hello: it does not echo this session's nonce")]
    StaleNonce,
    #[error("refused frame: {0} is not valid in this direction")]
    Unexpected(&'static str),
    #[error("the local datapath refused the flows: {0}")]
    Install(String),
}

impl SessionError {
    /// Whether the peer sent something we refused (counted as refused).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, SessionError::Io(_) | SessionError::Install(_))
    }
}

/// Names a message kind for logs and errors.
pub fn kind_name(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "Hello",
        Message::Upsert(_) => "Upsert",
        Message::Delete(_) => "Delete",
        Message::ResyncStart { .. } => "ResyncStart",
        Message::ResyncEnd { .. } => "ResyncEnd",
        Message::ResyncAck { .. } => "ResyncAck",
    }
}

/// One direction of a session: the key, the session nonce and the next
/// sequence number.
pub struct Half {
    pub key: SyncKey,
    pub nonce: u64,
    pub seq: u64,
}

impl Half {
    pub fn new(key: SyncKey, nonce: u64) -> Self {
        Self { key, nonce, seq: 0 }
    }

    /// Writes `msg` as the next frame.
    pub fn send(
        &mut self,
        w: &mut impl Write,
        msg: &Message,
        stats: &SyncStats,
    ) -> std::io::Result<()> {
        let b = packet::encode(&self.key, self.nonce, self.seq, msg);
        w.write_all(&b)?;
        self.seq += 1;
        SyncStats::add(&stats.frames_sent, 1);
        Ok(())
    }

    /// Reads the next frame and checks its sequence number; a refusal is
    /// counted in `stats`.
    pub fn recv(&mut self, r: &mut impl Read, stats: &SyncStats) -> Result<Frame, SessionError> {
        let res = self.recv_inner(r);
        match &res {
            Ok(_) => SyncStats::add(&stats.frames_received, 1),
            Err(e) if e.is_refusal() => {
                SyncStats::add(&stats.frames_refused, 1);
                if matches!(e, SessionError::Refused(DecodeError::BadMac)) {
                    SyncStats::add(&stats.refused_bad_mac, 1);
                }
            }
            Err(_) => {}
        }
        res
    }

    fn recv_inner(&mut self, r: &mut impl Read) -> Result<Frame, SessionError> {
        let mut buf = vec![0u8; HEADER_LEN];
        r.read_exact(&mut buf)?;
        let total = packet::frame_len(&buf)?;
        buf.resize(total, 0);
        r.read_exact(&mut buf[HEADER_LEN..])?;
        let (frame, _) = packet::decode(&self.key, self.nonce, &buf)?;
        if frame.seq != self.seq {
            return Err(SessionError::Sequence {
                got: frame.seq,
                want: self.seq,
            });
        }
        self.seq += 1;
        Ok(frame)
    }
}
