//! Bidirectional Forwarding Detection: RFC 5880 asynchronous mode over
//! RFC 5881 single-hop UDP, IPv4 and IPv6.
//!
//! Layout: [`packet`] is the wire codec, [`fsm`] the state table,
//! [`session`] the per-session variables and timer arithmetic, [`events`]
//! the pure handlers, [`tasks`] the socket I/O, [`manager`] the owner
//! side, and [`thread`] runs the manager on a dedicated OS thread for the
//! daemon.
//!
//! Concurrency: one task per receive socket decodes datagrams and sends
//! typed events over an mpsc channel; sessions live only in the
//! [`manager::BfdManager`], owned by one task, so nothing is shared or locked.
//! In the daemon that task is the only one in the current-thread runtime
//! of the BFD thread (besides the receive tasks), so nothing the daemon
//! does elsewhere can delay a transmission.

pub mod events;
pub mod fsm;
pub mod manager;
pub mod packet;
pub mod session;
pub mod tasks;
pub mod thread;
