//! Load-balancer configuration in loxilb's list format.
//!
//! The wire types and their one validation live in the `floatlb-api` crate
//! (`agent/api`), shared by `--config` files and API bodies; this module
//! re-exports them and supplies the agent's [`Limits`], whose per-service
//! endpoint bound is the datapath's own `MAX_ENDPOINTS`.

pub use floatlb_api::{
    ConfigError, Endpoint, LbConfig, Limits, NatMode, Oper, ProbeSpec, ProbeType, Protocol,
    Selection, Service, ServiceKey,
};

/// Most endpoints one service may have (the datapath's fixed per-service slot count).
pub const MAX_ENDPOINTS: usize = floatlb_common::MAX_ENDPOINTS;

/// The limits a configuration file is checked against. The service count is
/// left to the datapath (`--max-services`), which refuses a sync that does
/// not fit, as before.
pub const fn file_limits() -> Limits {
    Limits {
        max_endpoints: MAX_ENDPOINTS,
        max_services: usize::MAX,
    }
}
