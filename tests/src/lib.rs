//! Shared harness for floatlb's integration tests.

//!
//!   bpffs mounts, all with Drop cleanup.
//! - [`agent`]: starting and stopping the real `floatlb` binary.
//! - [`netns`]: namespaces, veth pairs, bridges, processes in a namespace,
//! - [`servers`]: echo servers that report which endpoint answered.
//! - [`topology`]: the client / LB / switch / endpoints topology.
pub mod agent;
pub mod ec2world;
pub mod faultproxy;
pub mod hapair;
pub mod http;
pub mod imds;
pub mod moto;
pub mod netns;
pub mod servers;
pub mod topology;
