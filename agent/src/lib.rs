//! The floatlb agent library: everything the `floatlb` and `floatctl` binaries run.

pub mod cli;
pub mod cloudctl;
pub mod config;
