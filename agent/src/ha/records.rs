//! What the HA side of the agent records, and who reads it.
//!
//! Three kinds of record: a role transition (with the reason and the
//! cloud verdict behind it), the cloud report of the promote or demote a
//! transition caused (attached to it once the worker is done), and the
//! last BFD state change of the peer session. The [`RecordLog`] keeps the
//! newest [`MAX_RECORDS`] transitions and the last BFD change, owned by
//! the owner task like all agent state, and hands every new record to its
//! subscribers ([`RecordSink`]) in order: the JSON lines on stdout
//! ([`StdoutLines`]) and the state file ([`super::state_file`]) today;
//! the API reads the log itself through the owner.
//!
//! Sinks run in the owner task, so they must be cheap: serialize and hand
//! off (the state file is written by a thread of its own).

use std::{
    collections::VecDeque,
    net::IpAddr,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use floatlb_cloud::TransitionReport;
use serde::Serialize;

use super::cloud_worker::CloudJob;
use super::machine::{CloudVerdict, Role, Transition};
use crate::bfd::{manager::StateChange, packet::State as BfdState};

/// Most transitions kept in memory and in the state file.
pub const MAX_RECORDS: usize = 200;

/// One recorded transition.
#[derive(Debug, Clone, Serialize)]
pub struct TransitionRecord {
    pub seq: u64,
    pub at_unix_us: u64,
    pub old: Role,
    pub new: Role,
    pub reason: String,
    pub cloud: Option<CloudVerdict>,
    /// The cloud promote/demote this transition caused, once done.
    pub report: Option<TransitionReport>,
    /// Failed attempts in `report` that were retried and did not fail it
    /// (a gARP send that hit ENOBUFS, a throttled EC2 call).
    pub transient_errors: usize,
}

/// Last BFD state of the peer session.
#[derive(Debug, Clone, Serialize)]
pub struct BfdRecord {
    pub peer: IpAddr,
    pub old: BfdState,
    pub new: BfdState,
    pub remote_state: BfdState,
    pub diag: crate::bfd::packet::Diag,
    pub at_unix_us: u64,
}

/// The cloud report of a finished job (`seq` 0: not caused by a transition).
#[derive(Debug, Clone, Serialize)]
pub struct CloudRecord<'a> {
    pub seq: u64,
    pub job: CloudJob,
    pub transient_errors: usize,
    pub report: &'a TransitionReport,
}

/// A new record, as subscribers see it.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    Transition(&'a TransitionRecord),
    Cloud(&'a CloudRecord<'a>),
    Bfd(&'a BfdRecord),
}

impl Record<'_> {
    /// The `event` name of the record's JSON line.
    pub fn event(&self) -> &'static str {
        match self {
            Record::Transition(_) => "ha_transition",
            Record::Cloud(_) => "ha_cloud",
            Record::Bfd(_) => "bfd_state",
        }
    }
}

/// A reader of the record log (see the module docs).
pub trait RecordSink: Send {
    /// A new record; `log` already includes it.
    fn record(&mut self, rec: Record<'_>, log: &RecordLog);
    /// The agent stops: flush what is pending.
    fn finish(&mut self) {}
}

/// Microseconds since the Unix epoch.
pub fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Wall-clock time of a monotonic instant in the recent past.
pub fn wall_of(at: Instant) -> SystemTime {
    let now = Instant::now();
    SystemTime::now() - now.saturating_duration_since(at)
}

/// The log (see the module docs).
pub struct RecordLog {
    self_id: u8,
    role: Role,
    transitions: VecDeque<TransitionRecord>,
    next_seq: u64,
    bfd_last: Option<BfdRecord>,
    sinks: Vec<Box<dyn RecordSink>>,
}

impl RecordLog {
    pub fn new(self_id: u8) -> Self {
        Self {
            self_id,
            role: Role::Init,
            transitions: VecDeque::new(),
            next_seq: 1,
            bfd_last: None,
            sinks: Vec::new(),
        }
    }

    /// Adds a reader; it sees every record from now on.
    pub fn subscribe(&mut self, sink: Box<dyn RecordSink>) {
        self.sinks.push(sink);
    }

    pub fn self_id(&self) -> u8 {
        self.self_id
    }

    /// The role after the newest transition.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The kept transitions, oldest first.
    pub fn transitions(&self) -> impl DoubleEndedIterator<Item = &TransitionRecord> {
        self.transitions.iter()
    }

    pub fn bfd_last(&self) -> Option<&BfdRecord> {
        self.bfd_last.as_ref()
    }

    /// Sequence number of the newest transition (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.transitions.back().map(|r| r.seq).unwrap_or(0)
    }

    fn publish(&mut self, rec: Record<'_>) {
        let mut sinks = std::mem::take(&mut self.sinks);
        for s in &mut sinks {
            s.record(rec, self);
        }
        self.sinks = sinks;
    }

    /// Records a transition of the machine; returns its sequence number.
    pub fn push_transition(&mut self, t: Transition) -> u64 {
        let rec = TransitionRecord {
            seq: self.next_seq,
            at_unix_us: unix_us(wall_of(t.at)),
            old: t.old,
            new: t.new,
            reason: t.reason,
            cloud: t.cloud,
            report: None,
            transient_errors: 0,
        };
        self.next_seq += 1;
        self.role = rec.new;
        self.transitions.push_back(rec.clone());
        if self.transitions.len() > MAX_RECORDS {
            self.transitions.pop_front();
        }
        self.publish(Record::Transition(&rec));
        rec.seq
    }

    /// Records a finished cloud job; a promote or demote's report is
    /// attached to the transition `seq` that caused it.
    pub fn push_cloud(&mut self, seq: u64, job: CloudJob, report: &TransitionReport) {
        if seq != 0
            && let Some(r) = self.transitions.iter_mut().rev().find(|r| r.seq == seq)
            && r.report.is_none()
        {
            r.report = Some(report.clone());
            r.transient_errors = report.retries();
        }
        let rec = CloudRecord {
            seq,
            job,
            transient_errors: report.retries(),
            report,
        };
        self.publish(Record::Cloud(&rec));
    }

    /// Records BFD state changes of the peer session.
    pub fn push_bfd(&mut self, changes: &[StateChange]) {
        for sc in changes {
            let rec = BfdRecord {
                peer: sc.peer,
                old: sc.old,
                new: sc.new,
                remote_state: sc.remote_state,
                diag: sc.diag,
                at_unix_us: unix_us(sc.at),
            };
            tracing::info!(peer = %sc.peer, old = ?sc.old, new = ?sc.new, remote = ?sc.remote_state,
                diag = ?sc.diag, "bfd state change");
            self.bfd_last = Some(rec.clone());
            self.publish(Record::Bfd(&rec));
        }
    }

    /// Lets every reader flush (at shutdown).
    pub fn finish(&mut self) {
        for s in &mut self.sinks {
            s.finish();
        }
    }
}

/// One JSON line per record on stdout, with `"event"` and `"pid"` added
/// (`"event":"ha_transition"`, `"ha_cloud"`, `"bfd_state"`): what the
/// tests, the demo and log shippers read.
pub struct StdoutLines;

impl RecordSink for StdoutLines {
    fn record(&mut self, rec: Record<'_>, _log: &RecordLog) {
        let body = match rec {
            Record::Transition(r) => serde_json::to_value(r),
            Record::Cloud(r) => serde_json::to_value(r),
            Record::Bfd(r) => serde_json::to_value(r),
        };
        let mut v = body.unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("event".into(), rec.event().into());
            m.insert("pid".into(), std::process::id().into());
        }
        println!("{v}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Seen(Arc<Mutex<Vec<String>>>);

    impl RecordSink for Seen {
        fn record(&mut self, rec: Record<'_>, log: &RecordLog) {
            let line = match rec {
                Record::Transition(t) => format!("{} {:?} role={:?}", t.seq, t.new, log.role()),
                Record::Cloud(c) => format!("cloud {}", c.seq),
                Record::Bfd(b) => format!("bfd {:?}", b.new),
            };
            self.0.lock().unwrap().push(line);
        }
    }

    fn transition(new: Role) -> Transition {
        Transition {
            at: Instant::now(),
            old: Role::Init,
            new,
            reason: "test".into(),
            cloud: None,
        }
    }

    #[test]
    fn every_subscriber_sees_every_record_in_order_and_the_log_is_bounded() {
        let mut log = RecordLog::new(0);
        let a = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::new(Mutex::new(Vec::new()));
        log.subscribe(Box::new(Seen(a.clone())));
        log.subscribe(Box::new(Seen(b.clone())));
        let seq = log.push_transition(transition(Role::Backup));
        let report =
            floatlb_cloud::Recorder::new(floatlb_cloud::Action::Promote, "none").finish(Ok(()));
        log.push_cloud(seq, CloudJob::Promote { seq }, &report);
        assert!(log.transitions().next().unwrap().report.is_some());
        assert_eq!(*a.lock().unwrap(), ["1 Backup role=Backup", "cloud 1"]);
        assert_eq!(*a.lock().unwrap(), *b.lock().unwrap());
        for _ in 0..MAX_RECORDS + 10 {
            log.push_transition(transition(Role::Master));
        }
        assert_eq!(log.transitions().count(), MAX_RECORDS);
        assert_eq!(log.last_seq(), (MAX_RECORDS + 11) as u64);
        assert_eq!(log.role(), Role::Master);
    }
}
