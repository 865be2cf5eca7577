//! Shared harness for floatlb's integration tests.
//!
//! - [`netns`]: namespaces, veth pairs, bridges, processes in a namespace,
//!   bpffs mounts, all with Drop cleanup.
//! - [`topology`]: the client / LB / switch / endpoints topology.
//! - [`servers`]: echo servers that report which endpoint answered.
//! - [`agent`]: starting and stopping the real `floatlb` binary.

pub mod agent;
pub mod netns;
pub mod servers;
pub mod topology;
