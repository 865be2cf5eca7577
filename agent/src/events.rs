//! Every message the agent's owner task receives: one [`Event`] type.
//!
//! The owner task ([`crate::daemon::Daemon::run`]) holds all agent state:
//! the datapath, the services, the HA machine and its records. Nothing
//! else reads or changes that state. Everything that wants a change -- a
//! signal, a timer, a BFD state change, a finished cloud job, an API
//! request -- becomes an [`Event`] and waits its turn; the order of
//! changes is the order of events. Requests that need an answer carry
//! their reply channel.
//!
//! ```text
//!  signals task ──────────┐ Shutdown, Reload
//!  timer tasks ───────────┤ RefreshNeighbours, PollDatapathEvents
//!  BFD thread ────────────┤ Bfd            (own OS thread + runtime: RFC 5880 timers)
//!  cloud worker task ─────┤ Cloud          (EC2 / gARP jobs, one after another)
//!  persist thread ────────┤ Persisted      (journal appends + fsync, group commit)
//!  sync threads ──────────┤ Sync           (agent/sync: resync done, peer streaming)
//!  prober task ───────────┤ Probes         (endpoint probe outcomes, batched; bounded concurrency)
//!                         ▼
//!               ┌───────────────────┐   owner's own deadline: HaTimer
//!               │    owner task     │── datapath (maps, attach)    [sync calls]
//!               │ (Daemon::run)     │── jobs ──▶ cloud worker
//!               └───────────────────┘── AdminDown/Up ──▶ BFD thread
//!                         ▲          ── records ──▶ stdout, state-file thread, metrics
//!                         │          ── probe plan ──▶ prober task
//!  API server tasks ──────┘ Api (bounded queue, each with a reply channel;
//!                             health checks on a second bounded queue of their own)
//!  ct-expiry thread: walks conntrack with its own map handles; hands the flows it
//!                removed to the sync queue (Deletions), sends the owner nothing
//!  sync threads: listener, reports (ring buffer), sender; own map handles;
//!                the owner only flips them MASTER/BACKUP (SyncService::set_active)
//!  GET /metrics: reads datapath maps (own handles) and asks the BFD thread
//!    for counters directly; it sends nothing to the owner
//! ```
//!
//! Internal producers use an unbounded queue ([`EventTx`]): a BFD change
//! or a cloud result must never be dropped or block its sender (the BFD
//! thread cannot wait on the owner). API requests come over a bounded
//! queue of their own, so a flood of HTTP requests meets backpressure
//! instead of memory growth; the owner turns each into [`Event::Api`].

use tokio::sync::{mpsc, oneshot};

use crate::bfd::manager::StateChange;
use crate::ha::cloud_worker::CloudDone;

/// One input to the owner task.
#[derive(Debug)]
pub enum Event {
    /// Stop (SIGTERM/SIGINT); `signal` names the cause for the log.
    Shutdown { signal: &'static str },
    /// Re-read the configuration file (SIGHUP).
    Reload,
    /// Timer: re-resolve the endpoints' next hops.
    RefreshNeighbours,
    /// Timer: drain the datapath's unresolved-neighbour reports.
    PollDatapathEvents,
    /// The HA machine's own deadline passed (produced by the owner loop).
    HaTimer,
    /// State changes of the BFD sessions, in order (BFD thread).
    Bfd(Vec<StateChange>),
    /// A cloud job finished (cloud worker).
    Cloud(CloudDone),
    /// MASTER (true) or BACKUP (false) datapath, without HA (tests, tools).
    SetActive(bool),
    /// A request from the REST API, with its reply channel.
    Api(floatlb_api::Request),
    /// Accepted changes up to a ticket are durable, or failed (state store).
    Persisted(crate::store::Persisted),
    /// Connection sync: a resync completed, or the peer's stream opened or
    /// closed (sync threads; feeds the HA machine's failback gate).
    Sync(floatlb_sync::SyncEvent),
    /// Answered once every event sent before it has been handled.
    Flush(oneshot::Sender<()>),
    /// Endpoint probe outcomes (prober task); the owner applies the
    /// retries' hysteresis and changes the datapath.
    Probes(Vec<crate::probe::Outcome>),
}

/// The sending side of the owner's queue (internal producers).
pub type EventTx = mpsc::UnboundedSender<Event>;
/// The owner's receiving side.
pub type EventRx = mpsc::UnboundedReceiver<Event>;

/// A new owner queue.
pub fn channel() -> (EventTx, EventRx) {
    mpsc::unbounded_channel()
}
