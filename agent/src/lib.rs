//! The floatlb agent library: everything the `floatlb` and `floatctl` binaries run.

pub mod bfd;
pub mod cli;
pub mod cloudctl;
pub mod config;
pub mod daemon;
pub mod ha;
pub mod neigh;
pub mod ratelimit;
pub mod xdp;
