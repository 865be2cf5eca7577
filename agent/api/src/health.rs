//! The per-service health check for global traffic managers (GSLB).
//!
//! One question per service: "should traffic for this service come to this
//! site?". `GET /health/lb/{name}` or `GET /health/lb/{ip}/{port}/{proto}`
//! answers 200 only when this node is MASTER (a node without HA always
//! is) and at least `min_healthy` (query, default 1) of the service's
//! endpoints are up; otherwise 503 with a short reason in `result`:
//! `not master` or `no healthy upstreams`. An unknown service is a 404.
//! With `?local=1` only endpoints in this node's zone count (the agent
//! decides which those are; see docs/HEALTH.md).
//!
//! The answer is JSON like every other (`{"result":"ok",...}`); Route 53
//! and most GSLBs look at the status code only.
//!
//! These routes sit outside `/netlox/v1`: on the API listener behind its
//! token, and on `--health-listen` through [`health_router`], without one
//! (Route 53 health checkers send no credentials).

use std::{net::Ipv4Addr, sync::Arc};

use axum::{
    Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::Response,
    routing::get,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    command::{Command, CommandError, Reply},
    model::{Protocol, ServiceKey, parse_port},
    response::{ApiError, json},
    router::{ApiState, exec_on},
};

/// Which service a health check asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthTarget {
    /// By the service's `name` (kube-loxilb's `namespace_service:llb-inst0`).
    Name(String),
    /// By external IP, port and protocol.
    Key(ServiceKey),
}

/// A validated health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthQuery {
    pub target: HealthTarget,
    /// Count only endpoints in this node's zone.
    pub local: bool,
    /// Endpoints that must be up (at least 1).
    pub min_healthy: u16,
}

/// The agent's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthAnswer {
    /// `ok`, `not master` or `no healthy upstreams`.
    pub result: String,
    /// This node's HA role (MASTER, BACKUP, ...).
    pub role: String,
    /// Endpoints counted (all, or this zone's with `local=1`).
    pub endpoints: usize,
    /// Of those, how many are up.
    pub healthy: usize,
    #[serde(rename = "minHealthy")]
    pub min_healthy: u16,
}

impl HealthAnswer {
    /// The reason for a 503, or None for a 200.
    pub fn verdict(role_is_master: bool, healthy: usize, min_healthy: u16) -> Option<&'static str> {
        if !role_is_master {
            Some(NOT_MASTER)
        } else if healthy < usize::from(min_healthy) {
            Some(NO_HEALTHY)
        } else {
            None
        }
    }
}

pub const NOT_MASTER: &str = "not master";
pub const NO_HEALTHY: &str = "no healthy upstreams";

/// The query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct HealthParams {
    local: Option<String>,
    min_healthy: Option<String>,
}

type St = State<Arc<ApiState>>;

fn parse_params(p: &HealthParams) -> Result<(bool, u16), CommandError> {
    let local = match p.local.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") | Some("") => true,
        Some(v) => {
            return Err(CommandError::invalid("local", format!("{v:?}"), "0 or 1"));
        }
    };
    let min_healthy =
        match p.min_healthy.as_deref() {
            None => 1,
            Some(v) => v.parse::<u16>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                CommandError::invalid("min_healthy", format!("{v:?}"), "1..=65535")
            })?,
        };
    Ok((local, min_healthy))
}

async fn answer(st: &ApiState, q: HealthQuery) -> Result<Response, ApiError> {
    let tx = st.health_tx.as_ref().unwrap_or(&st.tx);
    match exec_on(tx, Command::Health(q)).await? {
        Reply::Health(a) => {
            let code = if a.result == "ok" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Ok(json(code, &a))
        }
        other => Err(ApiError::internal(format!(
            "internal error: the agent answered {:?} to a health check",
            std::mem::discriminant(&other)
        ))),
    }
}

/// Health of the service named `name`.
#[utoipa::path(get, path = "/health/lb/{name}", tag = "health",
    params(
        ("name" = String, Path, description = "The service's name"),
        ("local" = Option<String>, Query, description = "1: count only endpoints in this node's zone"),
        ("min_healthy" = Option<u16>, Query, description = "Endpoints that must be up (default 1)"),
    ),
    responses(
        (status = 200, description = "This site serves the service", body = HealthAnswer),
        (status = 503, description = "`not master` or `no healthy upstreams`", body = HealthAnswer),
    ))]
pub(crate) async fn health_by_name(
    State(st): St,
    Path(name): Path<String>,
    Query(p): Query<HealthParams>,
) -> Result<Response, ApiError> {
    let (local, min_healthy) = parse_params(&p)?;
    let q = HealthQuery {
        target: HealthTarget::Name(name),
        local,
        min_healthy,
    };
    answer(&st, q).await
}

/// Health of the service with this external IP, port and protocol.
#[utoipa::path(get, path = "/health/lb/{ip}/{port}/{proto}", tag = "health",
    params(
        ("ip" = String, Path, description = "External IPv4 address"),
        ("port" = u16, Path, description = "Service port"),
        ("proto" = String, Path, description = "tcp or udp"),
        ("local" = Option<String>, Query, description = "1: count only endpoints in this node's zone"),
        ("min_healthy" = Option<u16>, Query, description = "Endpoints that must be up (default 1)"),
    ),
    responses(
        (status = 200, description = "This site serves the service", body = HealthAnswer),
        (status = 503, description = "`not master` or `no healthy upstreams`", body = HealthAnswer),
    ))]
pub(crate) async fn health_by_key(
    State(st): St,
    Path((ip, port, proto)): Path<(String, String, String)>,
    Query(p): Query<HealthParams>,
) -> Result<Response, ApiError> {
    let (local, min_healthy) = parse_params(&p)?;
    let external_ip = ip
        .parse::<Ipv4Addr>()
        .map_err(|_| CommandError::invalid("ip", format!("{ip:?}"), "not an IPv4 address"))?;
    let port = port
        .parse::<i64>()
        .map_err(|_| CommandError::invalid("port", format!("{port:?}"), "must be 1..=65535"))
        .and_then(|p| parse_port("port", p).map_err(CommandError::from))?;
    let protocol = Protocol::parse("proto", &proto).map_err(CommandError::from)?;
    let q = HealthQuery {
        target: HealthTarget::Key(ServiceKey {
            external_ip,
            port,
            protocol,
        }),
        local,
        min_healthy,
    };
    answer(&st, q).await
}

/// The health routes, for the API router (behind its layers).
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/health/lb/{name}", get(health_by_name))
        .route("/health/lb/{ip}/{port}/{proto}", get(health_by_key))
}

/// The health routes alone, with no token (`--health-listen`), under the
/// same request timeout as the API.
pub fn health_router(state: ApiState) -> Router {
    let state = Arc::new(state);
    routes()
        .fallback(|req: axum::extract::Request| async move {
            ApiError::not_found_path(req.uri().path())
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::router::time_limit,
        ))
        .with_state(state)
}
