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
//! - [`command`]: what a request becomes ([`command::Command`]) and what the
//!   agent answers ([`command::Reply`], [`command::CommandError`]).
//! - [`health`]: the per-service health check for GSLBs (`/health/lb/...`).
//! - [`router`]: the axum router; [`server`]: plain HTTP, TLS, mTLS;
//!   [`openapi`]: the OpenAPI 3.1 document; [`auth`]: the token.
//!
//! # Parse, then execute
//! A handler decodes and validates the whole request into one typed command
//! before anything is sent, so a bad request changes nothing; the agent's
//! owner task is the only place state changes, one command at a time. A
//! handler awaits the owner's reply on a oneshot channel; a gone owner is a
//! 503, and so is a request that takes longer than the timeout (10 s).
//!
//! # Wire rules
//! - Answers are `Content-Type: application/json` exactly (kube-loxilb
//!   decodes a GET answer only then), in loxilb's casing.
//! - Success of a change is 200 `{"result":"Success"}`, the only answer
//!   kube-loxilb counts as success (a 204 is a failure to it).
//! - Errors are `{"code","fields","message","result"}`; the message names the
//!   field and the value. Malformed JSON is a 400, a body over 1 MiB a 413, an
//!   unknown path a 404, a missing or wrong token a 401.
//! - Input field names match case-insensitively; unknown fields are ignored;
//!   what floatlb does not do is a 400 "not supported" naming the field.
//!
//! # Error choices
//! - Deleting a rule that does not exist is a 404 whose `result` says
//!   `not-exists`, as loxilb answers. kube-loxilb retries failed deletes, so
//!   it keeps retrying a delete that loxilb would also refuse.
//! - An identical re-POST may be a 409 whose `result` contains `exists`
//!   (kube-loxilb counts it as success), as loxilb does.
//! - `--max-services` reached is a 403, loxilb's "capacity insufficient"
//!   code: not a 409, whose text kube-loxilb might read as "exists".
//! - A delete's optional body must be JSON but its contents are not checked:
//!   kube-loxilb repeats the create body, and a delete must not fail because
//!   the create carried a field floatlb refuses.
#![forbid(unsafe_code)]

pub mod auth;
pub mod command;
pub mod health;
pub mod model;
pub mod openapi;
pub mod response;
pub mod router;
pub mod server;
pub mod validate;
pub mod wire;

pub use auth::ApiToken;
pub use command::{Command, CommandError, Reply, Request};
pub use model::{
    ConfigError, Endpoint, LbConfig, Limits, NatMode, Oper, ProbeSpec, ProbeType, Protocol,
    Selection, Service, ServiceKey,
};
pub use router::{ApiState, RequestObserver, router, router_with};
pub use server::{TlsFiles, serve};
