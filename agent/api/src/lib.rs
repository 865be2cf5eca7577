//! floatlb's loxilb-compatible REST API.
//!
//! kube-loxilb drives floatlb exactly as it drives loxilb: through
//! `http://<node>:11111/netlox/v1/...`. This crate holds everything about that
//! API that is not agent state, and depends on no other floatlb crate:
//!
//! - [`wire`]: loxilb's JSON shapes (`lbAttr`, cistate, BFD, conntrack,
//!   endpoints, the error body), read with case-insensitive field names.
//! - [`model`]: the one validation, shared by `--config` files and API
//!   bodies, into typed [`model::Service`]s.
#![forbid(unsafe_code)]

pub mod model;
pub mod validate;
pub mod wire;

pub use model::{
    ConfigError, Endpoint, LbConfig, Limits, NatMode, Oper, ProbeSpec, ProbeType, Protocol,
    Selection, Service, ServiceKey,
};
