//! Bidirectional Forwarding Detection: RFC 5880 asynchronous mode over
//! RFC 5881 single-hop UDP, IPv4 and IPv6.
//!
//! Layout: [`packet`] is the wire codec, [`fsm`] the state table,
//! [`session`] the per-session variables and timer arithmetic, [`events`]
//! the pure handlers, [`tasks`] the socket I/O, and [`manager`] the owner
//! side that the daemon's single owner task drives.
//!
//! Concurrency: one task per receive socket decodes datagrams and sends
//! typed events over an mpsc channel; sessions live only in the
//! [`manager::BfdManager`], owned by one task, so nothing is shared or locked.

pub mod events;
pub mod fsm;
pub mod manager;
pub mod packet;
pub mod session;
pub mod tasks;
