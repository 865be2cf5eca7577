//! The floatlb agent library: everything the `floatlb` binary runs. (`floatctl`, the API
//! client, keeps its modules in `src/ctl/`, compiled into that binary only.)

/// BFD lives in its own crate (`agent/bfd`) so the decoder can be fuzzed without the agent's dependencies.
pub use floatlb_bfd as bfd;
pub mod api;
pub mod cli;
pub mod cloud_preflight;
pub mod cloudctl;
pub mod config;
pub mod daemon;
pub mod drop_report;
pub mod events;
pub mod ha;
pub mod health;
pub mod metrics;
pub mod neigh;
pub mod preflight;
pub mod probe;
pub mod ratelimit;
pub mod store;
pub mod sync;
pub mod xdp;
