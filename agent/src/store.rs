//! Durable agent state under `--state-dir`: what the API accepted.
//!
//! A change is acknowledged (HTTP 200) only once it is on disk, so a
//! SIGKILL at any moment loses nothing that was acknowledged. kube-loxilb
//! re-pushes its rules only to a node it has seen dead; a node that
//! restarts within its 2 s liveness window must come back with every rule
//! it acknowledged.
//!
//! Layout (all in `--state-dir`):
//! * `state.json`: a snapshot, `{"version":1,"lbAttr":[...],"cistate":..,"bfd":..}`
//!   (the services in loxilb's list format, so it reads like a dump);
//!   replaced atomically: temporary file, fsync, rename, fsync of the
//!   directory.
//! * `journal.jsonl`: the changes since the snapshot, one JSON line each.
//!
//! Writes happen on a thread of their own ([`Store`]), never in the owner
//! task: the owner sends each change with a ticket number and goes on; the
//! thread appends every change queued meanwhile, makes them durable with
//! one `fdatasync` (group commit: 16 concurrent requests cost one sync,
//! not sixteen), then reports the highest durable ticket back to the
//! owner as [`Persisted`], and the owner answers the waiting requests.
//! Rewriting a whole 10,000-service snapshot per request would be
//! quadratic; the journal makes a change cost its own size.
//!
//! The thread keeps its own copy of the state, built from the same
//! changes, and folds the journal into a new snapshot once it holds more
//! than [`COMPACT_AFTER`] lines (and at every start). A crash between the
//! snapshot's rename and the journal's truncation replays changes the
//! snapshot already holds; every change is a "set" or a "delete", so
//! replaying them again gives the same state. A torn last line (a crash
//! in the middle of an append) was never acknowledged and is dropped.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{self, BufRead, Write},
    path::{Path, PathBuf},
    sync::mpsc,
    thread::JoinHandle,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::{Event, EventTx};

/// Journal lines after which the thread writes a new snapshot.
pub const COMPACT_AFTER: usize = 4096;

const SNAPSHOT: &str = "state.json";
const JOURNAL: &str = "journal.jsonl";

/// Errors opening or reading the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not valid state: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot start the state writer thread: {0}")]
    Thread(#[source] io::Error),
    #[error(
        "state directory {0} is in use by another floatlb (give each agent its own --state-dir)"
    )]
    Locked(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// BFD timers set through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdTimers {
    pub interval_us: u32,
    pub multiplier: u8,
}

/// One accepted change. Services are keyed by the owner's rule key and
/// stored as their loxilb wire entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    PutService {
        key: String,
        /// The wire entry as compact JSON text (a JSON object in the file).
        #[serde(with = "entry_text")]
        entry: Box<str>,
    },
    DeleteService {
        key: String,
    },
    DeleteAllServices,
    SetCiState {
        state: String,
    },
    SetBfd {
        timers: BfdTimers,
    },
}

impl Change {
    /// Puts the rule `entry` under `key`.
    pub fn put_service(key: String, entry: &floatlb_api::wire::LbEntry) -> Self {
        // Serializing a wire entry (strings, numbers, lists) cannot fail.
        let text = serde_json::to_string(entry).unwrap_or_else(|_| "{}".into());
        Change::PutService {
            key,
            entry: text.into_boxed_str(),
        }
    }
}

/// A service entry kept as JSON text and written into the journal line as
/// a JSON object (not as a string), so journal and snapshot read alike.
mod entry_text {
    use serde::{
        Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::Error as _,
    };
    use serde_json::Value;

    pub fn serialize<S: Serializer>(text: &str, ser: S) -> Result<S::Ok, S::Error> {
        serde_json::from_str::<Value>(text)
            .map_err(S::Error::custom)?
            .serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Box<str>, D::Error> {
        let v = Value::deserialize(de)?;
        if !v.is_object() {
            return Err(D::Error::custom("a service entry must be a JSON object"));
        }
        Ok(v.to_string().into_boxed_str())
    }
}

/// The whole durable state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// Services by key, each as its wire entry in compact JSON text: about
    /// 0.7 KB for a rule with 8 endpoints, where a parsed `Value` tree
    /// took several KB (the writer thread keeps this copy for as long as
    /// the agent runs).
    pub services: BTreeMap<String, Box<str>>,
    pub cistate: Option<String>,
    pub bfd: Option<BfdTimers>,
}

impl Stored {
    fn apply(&mut self, c: Change) {
        match c {
            Change::PutService { key, entry } => {
                self.services
                    .insert(key, entry.to_string().into_boxed_str());
            }
            Change::DeleteService { key } => {
                self.services.remove(&key);
            }
            Change::DeleteAllServices => self.services.clear(),
            Change::SetCiState { state } => self.cistate = Some(state),
            Change::SetBfd { timers } => self.bfd = Some(timers),
        }
    }
}

/// The snapshot file's shape.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    #[serde(rename = "lbAttr")]
    lb_attr: Vec<KeyedEntry>,
    #[serde(default)]
    cistate: Option<String>,
    #[serde(default)]
    bfd: Option<BfdTimers>,
}

#[derive(Serialize, Deserialize)]
struct KeyedEntry {
    key: String,
    #[serde(flatten)]
    entry: Value,
}

/// Reported to the owner: changes up to `upto` are durable (`Ok`), or
/// could not be written (`Err`, with the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    pub upto: u64,
    pub result: Result<(), String>,
}

/// The writer thread's handle (see the module docs).
pub struct Store {
    tx: Option<mpsc::Sender<(u64, Change)>>,
    thread: Option<JoinHandle<()>>,
    /// Held (an exclusive lock) while this agent owns the directory.
    _lock: File,
}

impl Store {
    /// Opens (creating) `dir`, reads the snapshot and replays the journal,
    /// folds both into a fresh snapshot, and starts the writer thread,
    /// which reports to `events`. Returns the restored state.
    pub fn open(dir: &Path, events: EventTx) -> Result<(Store, Stored), StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        if let Err(e) = lock.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => StoreError::Locked(dir.to_path_buf()),
                std::fs::TryLockError::Error(e) => io_err(&lock_path)(e),
            });
        }
        let stored = load(dir)?;
        let mut disk = Disk::new(dir.to_path_buf(), stored.clone());
        disk.compact().map_err(io_err(dir))?;
        let (tx, rx) = mpsc::channel::<(u64, Change)>();
        let thread = std::thread::Builder::new()
            .name("state-store".into())
            .spawn(move || disk.run(rx, events))
            .map_err(StoreError::Thread)?;
        Ok((
            Store {
                tx: Some(tx),
                thread: Some(thread),
                _lock: lock,
            },
            stored,
        ))
    }

    /// Queues `change` under `ticket` (increasing); never blocks. False if
    /// the thread has stopped.
    pub fn submit(&self, ticket: u64, change: Change) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send((ticket, change)).is_ok())
    }

    /// Writes what is queued and stops the thread.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the state writer thread panicked");
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The restored state, validated.
pub struct RestoredState {
    pub services: Vec<floatlb_api::Service>,
    pub rest: crate::daemon::Restored,
}

/// Validates what the store held (each entry was valid when accepted; a
/// tighter limit since, e.g. a smaller `--max-services`, is an error
/// naming the entry, never a silent drop).
pub fn restore(s: &Stored, limits: &floatlb_api::Limits) -> Result<RestoredState, StoreError> {
    let mut entries = Vec::with_capacity(s.services.len());
    for (key, v) in &s.services {
        let e: floatlb_api::wire::LbEntry =
            serde_json::from_str(v).map_err(|e| StoreError::Corrupt {
                path: PathBuf::from(SNAPSHOT),
                message: format!("service {key}: {e}"),
            })?;
        entries.push(e);
    }
    let list = floatlb_api::wire::LbList { lb_attr: entries };
    let cfg = floatlb_api::LbConfig::from_wire(&list, limits).map_err(|e| StoreError::Corrupt {
        path: PathBuf::from(SNAPSHOT),
        message: format!("a restored service no longer validates: {e}"),
    })?;
    let role = match s.cistate.as_deref() {
        Some("MASTER") => Some(crate::ha::machine::Role::Master),
        Some("BACKUP") => Some(crate::ha::machine::Role::Backup),
        _ => None,
    };
    Ok(RestoredState {
        services: cfg.services,
        rest: crate::daemon::Restored { role, bfd: s.bfd },
    })
}

/// Reads the snapshot and replays the journal.
pub fn load(dir: &Path) -> Result<Stored, StoreError> {
    let mut stored = Stored::default();
    let snap = dir.join(SNAPSHOT);
    match std::fs::read(&snap) {
        Ok(bytes) => {
            let f: SnapshotFile =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    path: snap.clone(),
                    message: e.to_string(),
                })?;
            stored.services = f
                .lb_attr
                .into_iter()
                .map(|k| (k.key, k.entry.to_string().into_boxed_str()))
                .collect();
            stored.cistate = f.cistate;
            stored.bfd = f.bfd;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&snap)(e)),
    }
    let journal = dir.join(JOURNAL);
    let file = match File::open(&journal) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(stored),
        Err(e) => return Err(io_err(&journal)(e)),
    };
    let mut lines = io::BufReader::new(file).lines().peekable();
    let mut n = 0usize;
    while let Some(line) = lines.next() {
        let line = line.map_err(io_err(&journal))?;
        n += 1;
        match serde_json::from_str::<Change>(&line) {
            Ok(c) => stored.apply(c),
            // A torn last line: its append never completed, so it was
            // never acknowledged.
            Err(_) if lines.peek().is_none() => {
                tracing::warn!(path = %journal.display(), line = n,
                    "dropping a torn last journal line (a crash during its write)");
            }
            Err(e) => {
                return Err(StoreError::Corrupt {
                    path: journal,
                    message: format!("line {n}: {e}"),
                });
            }
        }
    }
    Ok(stored)
}

/// The thread's side: its copy of the state and the open journal.
struct Disk {
    dir: PathBuf,
    state: Stored,
    journal: Option<File>,
    lines: usize,
}

impl Disk {
    fn new(dir: PathBuf, state: Stored) -> Self {
        Self {
            dir,
            state,
            journal: None,
            lines: 0,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<(u64, Change)>, events: EventTx) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let upto = batch.last().map(|(t, _)| *t).unwrap_or(0);
            let result = self.append(batch).map_err(|e| e.to_string());
            if let Err(error) = &result {
                tracing::error!(%error, dir = %self.dir.display(),
                    "cannot persist accepted changes; they are refused");
            }
            if events
                .send(Event::Persisted(Persisted { upto, result }))
                .is_err()
            {
                break;
            }
            if self.lines >= COMPACT_AFTER
                && let Err(error) = self.compact()
            {
                tracing::warn!(%error, "cannot compact the state journal; will retry");
            }
        }
    }

    /// Appends the batch and makes it durable with one sync.
    fn append(&mut self, batch: Vec<(u64, Change)>) -> io::Result<()> {
        if self.journal.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(JOURNAL))?;
            sync_dir(&self.dir)?;
            self.journal = Some(f);
        }
        let mut buf = Vec::new();
        for (_, c) in &batch {
            serde_json::to_writer(&mut buf, c)?;
            buf.push(b'\n');
        }
        let f = self.journal.as_mut().expect("opened above");
        f.write_all(&buf)?;
        f.sync_data()?;
        self.lines += batch.len();
        for (_, c) in batch {
            self.state.apply(c);
        }
        Ok(())
    }

    /// Writes the state as a new snapshot and empties the journal.
    fn compact(&mut self) -> io::Result<()> {
        let body = snapshot_body(&self.state)?;
        write_durably(&self.dir.join(SNAPSHOT), &body)?;
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.dir.join(JOURNAL))?;
        f.sync_all()?;
        sync_dir(&self.dir)?;
        drop(f);
        self.journal = None;
        self.lines = 0;
        Ok(())
    }
}

/// The snapshot file's text ([`SnapshotFile`]'s shape), written from the
/// stored entry texts without parsing them back: each `lbAttr` element
/// is the entry object with `"key"` as its first member.
fn snapshot_body(state: &Stored) -> io::Result<Vec<u8>> {
    let mut out =
        Vec::with_capacity(64 + state.services.values().map(|v| v.len() + 64).sum::<usize>());
    out.extend_from_slice(br#"{"version":1,"lbAttr":["#);
    for (i, (key, entry)) in state.services.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"key":"#);
        serde_json::to_writer(&mut out, key)?;
        let members = entry
            .strip_prefix('{')
            .map(str::trim_start)
            .filter(|rest| rest.ends_with('}'))
            .ok_or_else(|| {
                io::Error::other(format!("service {key}: entry is not a JSON object"))
            })?;
        if members != "}" {
            out.push(b',');
        }
        out.extend_from_slice(members.as_bytes());
    }
    out.extend_from_slice(br#"],"cistate":"#);
    serde_json::to_writer(&mut out, &state.cistate)?;
    out.extend_from_slice(br#","bfd":"#);
    serde_json::to_writer(&mut out, &state.bfd)?;
    out.push(b'}');
    Ok(out)
}

/// Temporary file, fsync, rename over `path`, fsync of the directory.
pub fn write_durably(path: &Path, body: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("floatlb-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn put(key: &str, n: u64) -> Change {
        Change::PutService {
            key: key.into(),
            entry: serde_json::json!({ "serviceArguments": { "port": n } })
                .to_string()
                .into_boxed_str(),
        }
    }

    async fn persisted(rx: &mut events::EventRx) -> Persisted {
        match rx.recv().await {
            Some(Event::Persisted(p)) => p,
            other => panic!("expected Persisted, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn accepted_changes_survive_a_restart_and_replay_in_order() {
        let d = dir("restart");
        let (tx, mut rx) = events::channel();
        let (store, restored) = Store::open(&d, tx.clone()).unwrap();
        assert_eq!(restored, Stored::default());
        let changes = [
            put("a", 1),
            put("b", 2),
            put("a", 3),
            Change::DeleteService { key: "b".into() },
            Change::SetCiState {
                state: "MASTER".into(),
            },
            Change::SetBfd {
                timers: BfdTimers {
                    interval_us: 20_000,
                    multiplier: 4,
                },
            },
        ];
        for (i, c) in changes.iter().enumerate() {
            assert!(store.submit(i as u64 + 1, c.clone()));
        }
        let mut upto = 0;
        while upto < 6 {
            let p = persisted(&mut rx).await;
            assert_eq!(p.result, Ok(()));
            upto = p.upto;
        }
        // No snapshot since start: the journal alone carries the changes.
        drop(store);
        let back = load(&d).unwrap();
        assert_eq!(back.services.keys().collect::<Vec<_>>(), ["a"]);
        let a: Value = serde_json::from_str(&back.services["a"]).unwrap();
        assert_eq!(a["serviceArguments"]["port"], 3);
        assert_eq!(back.cistate.as_deref(), Some("MASTER"));
        assert_eq!(back.bfd.map(|b| b.multiplier), Some(4));
        // Opening again folds the journal into the snapshot; a second
        // agent on the same directory is refused.
        let (mut store, again) = Store::open(&d, tx.clone()).unwrap();
        assert!(matches!(
            Store::open(&d, tx).err(),
            Some(StoreError::Locked(_))
        ));
        assert_eq!(again, back);
        store.finish();
        assert_eq!(std::fs::metadata(d.join(JOURNAL)).unwrap().len(), 0);
        assert_eq!(load(&d).unwrap(), back);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_last_line_is_dropped_but_a_bad_middle_line_is_an_error() {
        let d = dir("torn");
        std::fs::create_dir_all(&d).unwrap();
        let good = serde_json::to_string(&put("a", 1)).unwrap();
        std::fs::write(d.join(JOURNAL), format!("{good}\n{{\"op\":\"put_se")).unwrap();
        let s = load(&d).unwrap();
        assert_eq!(s.services.len(), 1);
        std::fs::write(d.join(JOURNAL), format!("garbage\n{good}\n")).unwrap();
        let e = load(&d).unwrap_err().to_string();
        assert!(e.contains("journal.jsonl") && e.contains("line 1"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn replaying_a_journal_over_the_snapshot_that_holds_it_changes_nothing() {
        // A crash between the snapshot's rename and the journal's truncation.
        let d = dir("replay");
        std::fs::create_dir_all(&d).unwrap();
        let changes = [
            put("a", 1),
            Change::DeleteAllServices,
            put("b", 2),
            put("a", 5),
        ];
        let mut disk = Disk::new(d.clone(), Stored::default());
        disk.append(changes.iter().cloned().map(|c| (0, c)).collect())
            .unwrap();
        let want = disk.state.clone();
        // Snapshot written, journal left in place.
        let journal = std::fs::read(d.join(JOURNAL)).unwrap();
        disk.compact().unwrap();
        std::fs::write(d.join(JOURNAL), journal).unwrap();
        assert_eq!(load(&d).unwrap(), want);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_snapshot_text_reads_back_as_the_same_state() {
        let mut state = Stored::default();
        state.apply(put("a\"q", 7));
        state.apply(Change::PutService {
            key: "empty".into(),
            entry: "{}".into(),
        });
        state.apply(Change::SetCiState {
            state: "BACKUP".into(),
        });
        let body = snapshot_body(&state).unwrap();
        let f: SnapshotFile = serde_json::from_slice(&body).unwrap();
        assert_eq!(f.lb_attr.len(), 2);
        assert_eq!(f.lb_attr[0].key, "a\"q");
        assert_eq!(f.lb_attr[0].entry["serviceArguments"]["port"], 7);
        let d = dir("snaptext");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(SNAPSHOT), &body).unwrap();
        assert_eq!(load(&d).unwrap(), state);
        let _ = std::fs::remove_dir_all(&d);
    }
}
