//! The HA state file (`--ha-state-file`) and the thread that writes it.
//!
//! The orchestrator runs in the daemon's owner task, which also sends and
//! receives BFD; at 10 ms x 3 that task must never block for more than a
//! few milliseconds, or the peer declares the session Down. A file write
//! plus rename can block for tens of milliseconds on a busy disk (a journal
//! commit, dirty-page throttling), and it hits both agents of a pair on one
//! host at once, so neither sends BFD and the first to wake declares the
//! other dead. So the owner only serializes the state, and only when it
//! changed; a [`StateWriter`] thread does the file system work. Bodies
//! queued while a write is in progress are coalesced: only the newest is
//! written.

use std::{
    io,
    path::{Path, PathBuf},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use serde::Serialize;

use super::machine::Role;
use super::records::{BfdRecord, Record, RecordLog, RecordSink, TransitionRecord, unix_us};
use crate::ratelimit::RateLimit;

/// Contents of the state file.
#[derive(Debug, Serialize)]
pub struct StateFile<'a> {
    pub pid: u32,
    pub self_id: u8,
    pub role: Role,
    /// When the content last changed.
    pub updated_unix_us: u64,
    pub bfd: Option<&'a BfdRecord>,
    pub transitions: Vec<&'a TransitionRecord>,
}

/// The record log's reader that keeps the state file current: each record
/// is turned into the whole file's content and handed to the
/// [`StateWriter`] thread (which writes only the newest).
pub struct StateFileSink {
    writer: StateWriter,
}

impl StateFileSink {
    pub fn new(writer: StateWriter) -> Self {
        Self { writer }
    }
}

impl RecordSink for StateFileSink {
    fn record(&mut self, _rec: Record<'_>, log: &RecordLog) {
        let state = StateFile {
            pid: std::process::id(),
            self_id: log.self_id(),
            role: log.role(),
            updated_unix_us: unix_us(std::time::SystemTime::now()),
            bfd: log.bfd_last(),
            transitions: log.transitions().collect(),
        };
        match serde_json::to_vec(&state) {
            Ok(body) => self.writer.publish(body),
            Err(error) => tracing::warn!(%error, "cannot encode the HA state"),
        }
    }

    fn finish(&mut self) {
        if !self.writer.finish() {
            tracing::warn!("the HA state file writer had stopped");
        }
    }
}

/// Writes `body` to `path` atomically: a temporary file next to it, then
/// a rename over it, so a reader never sees a partial file.
pub fn write_atomically(path: &Path, body: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

/// A thread that writes state-file bodies, newest wins (see the module docs).
#[derive(Debug)]
pub struct StateWriter {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl StateWriter {
    /// Starts the writer thread for `path`.
    pub fn spawn(path: PathBuf) -> io::Result<StateWriter> {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("ha-state-file".into())
            .spawn(move || {
                let mut warn = RateLimit::new(Duration::from_secs(10));
                while let Ok(mut body) = rx.recv() {
                    while let Ok(newer) = rx.try_recv() {
                        body = newer;
                    }
                    if let Err(error) = write_atomically(&path, &body)
                        && let Some(suppressed) = warn.check()
                    {
                        tracing::warn!(path = %path.display(), %error, suppressed,
                            "cannot write the HA state file");
                    }
                }
            })?;
        Ok(StateWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `body`; never blocks.
    pub fn publish(&self, body: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(body);
        }
    }

    /// Writes what is queued and stops the thread (at shutdown, so the
    /// final state reaches the file before the process exits). False if
    /// the thread had died.
    pub fn finish(&mut self) -> bool {
        self.tx = None;
        self.thread.take().is_none_or(|t| t.join().is_ok())
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        // Let the thread write what is queued and end; do not wait for it.
        self.tx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_body_is_on_disk_after_finish_and_no_temporary_is_left() {
        let dir = std::env::temp_dir().join(format!("floatlb-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let mut w = StateWriter::spawn(path.clone()).unwrap();
        for i in 0..50 {
            w.publish(format!("{{\"n\":{i}}}").into_bytes());
        }
        assert!(w.finish());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":49}");
        assert!(!path.with_extension("tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_path_is_reported_not_fatal() {
        let path = PathBuf::from("/proc/floatlb-no-such-dir/state.json");
        assert!(write_atomically(&path, b"{}").is_err());
        let mut w = StateWriter::spawn(path).unwrap();
        w.publish(b"{}".to_vec());
        assert!(w.finish(), "the writer thread survives a failed write");
    }
}
