//! The axum router: every path under `/netlox/v1`.
//!
//! Each handler parses its request into one [`Command`] (all validation
//! happens here, before anything is sent), sends it to the owner task, and
//! turns the [`Reply`] into loxilb's JSON. Handlers hold no state; a gone
//! owner answers 503.
//!
//! Layers, outermost first:
//! 1. error shape: any error answer that is not already JSON (axum's own 405,
//!    a rejected body) is rewritten into `{"code","fields","message","result"}`;
//! 2. request timeout (503 in that shape);
//! 3. token check (401), skipped for the liveness probe `GET /netlox/v1`
//!    and the status page `GET /` (static; its own requests carry the token);
//! 4. a 1 MiB body limit (413).

use std::{collections::HashMap, net::Ipv4Addr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{
        DefaultBodyLimit, Path, Query, Request as HttpRequest, State, rejection::BytesRejection,
    },
    http::{Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    auth::ApiToken,
    command::{CiRole, CiStateRequest, Command, CommandError, Reply, Request},
    model::{Limits, Oper, Protocol, ServiceKey, parse_port, validate_entry},
    response::{ApiError, JSON, json},
    wire::{
        BfdBody, BfdList, CiStateBody, CiStateList, ConntrackList, EndpointList, Format, LbEntry,
        LbList, SuccessBody, VersionBody, decode,
    },
};

/// Largest request body (413 above it).
pub const BODY_LIMIT: usize = 1 << 20;
/// Default request timeout (503 after it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Every path starts with this.
pub const BASE: &str = "/netlox/v1";

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The owner task's command queue.
    pub tx: mpsc::Sender<Request>,
    /// Required on every request but the liveness probe, when set.
    pub token: Option<ApiToken>,
    pub limits: Limits,
    pub version: &'static str,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Told of every answered request (metrics), if set.
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// A queue of its own for health checks, if set: the owner serves it
    /// beside the API queue, so a GSLB's check does not wait behind every
    /// queued change.
    pub health_tx: Option<mpsc::Sender<Request>>,
}

/// Sees every answered request: its route template (`/netlox/v1/config/...`
/// with `{ip}` placeholders; `unmatched` for unknown paths, so the label
/// set stays bounded) and status code. The agent counts them in metrics.
pub trait RequestObserver: std::fmt::Debug + Send + Sync {
    fn observe(&self, route: &str, code: u16);
}

impl ApiState {
    /// A state with the default request timeout.
    pub fn new(
        tx: mpsc::Sender<Request>,
        token: Option<ApiToken>,
        limits: Limits,
        version: &'static str,
    ) -> Self {
        Self {
            tx,
            token,
            limits,
            version,
            request_timeout: DEFAULT_TIMEOUT,
            observer: None,
            health_tx: None,
        }
    }
}

/// The API router. Serve it with [`crate::server::serve`].
pub fn router(state: ApiState) -> Router {
    router_with(state, Router::new())
}

/// The API router with routes of the agent's own outside `/netlox/v1`
/// (`GET /metrics`), served behind the same layers (token, timeout,
/// error shape).
pub fn router_with(state: ApiState, extra: Router<Arc<ApiState>>) -> Router {
    let state = Arc::new(state);
    let api = Router::new()
        .route("/config/loadbalancer", post(post_lb))
        .route("/config/loadbalancer/all", get(get_lb).delete(delete_all))
        .route(
            "/config/loadbalancer/externalipaddress/{ip}/port/{port}/protocol/{proto}",
            delete(delete_by_key),
        )
        .route("/config/loadbalancer/name/{name}", delete(delete_by_name))
        .route("/config/cistate/all", get(get_cistate))
        .route("/config/cistate", post(post_cistate))
        .route("/config/bfd/all", get(get_bfd))
        .route("/config/bfd", post(post_bfd))
        .route("/config/conntrack/all", get(get_conntrack))
        .route("/config/endpoint/all", get(get_endpoints))
        .route("/status", get(get_status))
        .route("/ha/transitions", get(get_transitions))
        .route("/version", get(get_version))
        .route("/openapi.json", get(get_openapi));
    Router::new()
        .route("/", get(status_page))
        .route(BASE, get(liveness))
        .route("/netlox/v1/", get(liveness))
        .nest(BASE, api)
        .merge(crate::health::routes())
        .merge(extra)
        .route_layer(middleware::from_fn(tag_route))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), check_token))
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .layer(middleware::map_response(error_shape))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The route template a request matched, carried on its answer.
#[derive(Debug, Clone)]
struct RouteTag(String);

/// Tags a routed request's answer with its route template.
async fn tag_route(req: HttpRequest, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string());
    let mut resp = next.run(req).await;
    if let Some(r) = route {
        resp.extensions_mut().insert(RouteTag(r));
    }
    resp
}

/// Tells the observer (metrics) of each answered request.
async fn observe(State(st): St, req: HttpRequest, next: Next) -> Response {
    let Some(obs) = st.observer.clone() else {
        return next.run(req).await;
    };
    let resp = next.run(req).await;
    let route = resp
        .extensions()
        .get::<RouteTag>()
        .map_or("unmatched", |t| t.0.as_str());
    obs.observe(route, resp.status().as_u16());
    resp
}

type St = State<Arc<ApiState>>;
type ApiResult = Result<Response, ApiError>;

fn is_liveness(req: &HttpRequest) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && matches!(req.uri().path(), "/netlox/v1" | "/netlox/v1/" | "/")
}

/// The live status page: one self-contained HTML file (no CDN, no web
/// fonts) that fetches the JSON API and `/metrics` every 2 s. It needs no
/// token itself (it holds no data); its requests carry the token the user
/// types into it, as the API requires.
const STATUS_PAGE: &str = include_str!("status.html");

async fn status_page() -> Response {
    let mut resp = Response::new(Body::from(STATUS_PAGE));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

async fn check_token(State(st): St, req: HttpRequest, next: Next) -> Response {
    if let Some(token) = &st.token
        && !is_liveness(&req)
    {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| token.accepts(v.as_bytes()));
        if !ok {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

pub(crate) async fn time_limit(State(st): St, req: HttpRequest, next: Next) -> Response {
    match tokio::time::timeout(st.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::timeout(st.request_timeout.as_secs_f64()).into_response(),
    }
}

/// Rewrites error answers that are not JSON (axum's 405, an extractor's
/// plain-text rejection) into loxilb's error shape.
async fn error_shape(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == JSON.as_bytes());
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this path".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the body is larger than the limit of {BODY_LIMIT} bytes")
        }
        s => s.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut out = ApiError::new(status, message).into_response();
    if let Some(allow) = resp.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

async fn fallback(req: HttpRequest) -> ApiError {
    ApiError::not_found_path(req.uri().path())
}

/// Sends `cmd` to the owner task and awaits its answer.
pub(crate) async fn exec(st: &ApiState, cmd: Command) -> Result<Reply, ApiError> {
    exec_on(&st.tx, cmd).await
}

/// Sends `cmd` on `tx` and awaits the owner's answer.
pub(crate) async fn exec_on(tx: &mpsc::Sender<Request>, cmd: Command) -> Result<Reply, ApiError> {
    let (reply, rx) = oneshot::channel();
    tx.send(Request { cmd, reply })
        .await
        .map_err(|_| CommandError::Unavailable("the agent is not accepting commands".into()))?;
    match rx.await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(CommandError::Unavailable("the agent dropped the request".into()).into()),
    }
}

/// Runs a command whose only good answer is [`Reply::Done`].
async fn exec_done(st: &ApiState, cmd: Command) -> ApiResult {
    match exec(st, cmd).await? {
        Reply::Done => Ok(json(StatusCode::OK, &SuccessBody::success())),
        other => Err(wrong_reply("Done", &other)),
    }
}

fn wrong_reply(want: &str, got: &Reply) -> ApiError {
    let got = format!("{got:?}");
    let got: String = got.chars().take(40).collect();
    ApiError::internal(format!(
        "internal error: the agent answered {got}... where {want} was due"
    ))
}

fn ok<T: serde::Serialize>(body: &T) -> ApiResult {
    Ok(json(StatusCode::OK, body))
}

/// Liveness: 200 without auth, as kube-loxilb probes every 2 s.
#[utoipa::path(get, path = "/netlox/v1", tag = "liveness",
    responses((status = 200, description = "Alive", body = SuccessBody)))]
pub(crate) async fn liveness() -> Response {
    json(StatusCode::OK, &SuccessBody::success())
}

/// Creates or updates a service (`oper` 0), or attaches (1) / detaches (2) endpoints.
#[utoipa::path(post, path = "/netlox/v1/config/loadbalancer", tag = "loadbalancer",
    request_body = LbEntry,
    responses((status = 200, description = "Applied", body = SuccessBody)))]
pub(crate) async fn post_lb(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let entry: LbEntry = decode(&body?, Format::Json, "").map_err(ApiError::decode)?;
    let (service, oper) = validate_entry("", &entry, &st.limits)?;
    let cmd = match oper {
        Oper::Upsert => Command::UpsertService(Box::new(service)),
        Oper::Attach => Command::AttachEndpoints {
            key: service.key(),
            endpoints: service.endpoints,
        },
        Oper::Detach => Command::DetachEndpoints {
            key: service.key(),
            endpoints: service.endpoints,
        },
    };
    exec_done(&st, cmd).await
}

/// Every service, in the format `--config` reads.
#[utoipa::path(get, path = "/netlox/v1/config/loadbalancer/all", tag = "loadbalancer",
    responses((status = 200, description = "The services", body = LbList)))]
pub(crate) async fn get_lb(State(st): St) -> ApiResult {
    match exec(&st, Command::ListServices).await? {
        Reply::Services(list) => ok(&list),
        other => Err(wrong_reply("Services", &other)),
    }
}

/// Deletes every service.
#[utoipa::path(delete, path = "/netlox/v1/config/loadbalancer/all", tag = "loadbalancer",
    responses((status = 200, description = "Deleted", body = SuccessBody)))]
pub(crate) async fn delete_all(State(st): St) -> ApiResult {
    exec_done(&st, Command::DeleteAllServices).await
}

/// Deletes the service with this external IP, port and protocol. The body
/// kube-loxilb sends along must be JSON if present; its contents are not
/// checked (a delete must work for whatever the create carried).
#[utoipa::path(delete,
    path = "/netlox/v1/config/loadbalancer/externalipaddress/{ip}/port/{port}/protocol/{proto}",
    tag = "loadbalancer",
    params(
        ("ip" = String, Path, description = "External IPv4 address"),
        ("port" = u16, Path, description = "Service port"),
        ("proto" = String, Path, description = "tcp or udp (sctp rules cannot exist: 404)"),
        ("bgp" = Option<bool>, Query, description = "Ignored beyond validation"),
        ("block" = Option<u32>, Query, description = "Ignored beyond validation"),
    ),
    request_body(content = Option<LbEntry>, description = "Optional; kube-loxilb repeats the create body"),
    responses((status = 200, description = "Deleted", body = SuccessBody)))]
pub(crate) async fn delete_by_key(
    State(st): St,
    Path((ip, port, proto)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body?;
    let external_ip = ip.parse::<Ipv4Addr>().map_err(|_| {
        CommandError::invalid("ip_address", format!("{ip:?}"), "not an IPv4 address")
    })?;
    let port = port
        .parse::<i64>()
        .map_err(|_| CommandError::invalid("port", format!("{port:?}"), "must be 1..=65535"))
        .and_then(|p| parse_port("port", p).map_err(CommandError::from))?;
    for (name, value) in &query {
        let good = match name.as_str() {
            "bgp" => value.parse::<bool>().is_ok(),
            "block" => value.parse::<u32>().is_ok(),
            _ => true,
        };
        if !good {
            return Err(
                CommandError::invalid(name, format!("{value:?}"), "not a valid value").into(),
            );
        }
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| {
            ApiError::decode(crate::wire::DecodeError::Syntax {
                format: "JSON",
                message: e.to_string(),
            })
        })?;
    }
    let protocol = match Protocol::parse("proto", &proto) {
        Ok(p) => p,
        Err(crate::model::ConfigError::Unsupported { .. }) => {
            // No rule of this protocol can have been created.
            return Err(CommandError::NotFound(format!(
                "lbrule {external_ip}:{port}/{}",
                proto.to_ascii_lowercase()
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let key = ServiceKey {
        external_ip,
        port,
        protocol,
    };
    exec_done(&st, Command::DeleteService(key)).await
}

/// Deletes the service with this `name`.
#[utoipa::path(delete, path = "/netlox/v1/config/loadbalancer/name/{name}", tag = "loadbalancer",
    params(("name" = String, Path, description = "The service's name")),
    responses((status = 200, description = "Deleted", body = SuccessBody)))]
pub(crate) async fn delete_by_name(State(st): St, Path(name): Path<String>) -> ApiResult {
    exec_done(&st, Command::DeleteServiceByName(name)).await
}

/// The HA instance and its role.
#[utoipa::path(get, path = "/netlox/v1/config/cistate/all", tag = "ha",
    responses((status = 200, description = "Instances", body = CiStateList)))]
pub(crate) async fn get_cistate(State(st): St) -> ApiResult {
    match exec(&st, Command::ListCiState).await? {
        Reply::CiState(list) => ok(&list),
        other => Err(wrong_reply("CiState", &other)),
    }
}

/// Sets the role (kube-loxilb `--setRoles`).
#[utoipa::path(post, path = "/netlox/v1/config/cistate", tag = "ha",
    request_body = CiStateBody,
    responses((status = 200, description = "Applied", body = SuccessBody)))]
pub(crate) async fn post_cistate(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let b: CiStateBody = decode(&body?, Format::Json, "").map_err(ApiError::decode)?;
    let state = CiRole::parse(&b.state).ok_or_else(|| {
        CommandError::invalid(
            "state",
            format!("{:?}", b.state),
            "one of MASTER, BACKUP, FAULT, STOP, NOT_DEFINED",
        )
    })?;
    let vip = if b.vip.is_empty() {
        Ipv4Addr::UNSPECIFIED
    } else {
        b.vip.parse().map_err(|_| {
            CommandError::invalid("vip", format!("{:?}", b.vip), "not an IPv4 address")
        })?
    };
    let instance = if b.instance.is_empty() {
        "llb-inst0".to_string()
    } else {
        b.instance
    };
    let req = CiStateRequest {
        instance,
        state,
        vip,
    };
    exec_done(&st, Command::SetCiState(req)).await
}

/// The BFD session(s).
#[utoipa::path(get, path = "/netlox/v1/config/bfd/all", tag = "ha",
    responses((status = 200, description = "Sessions", body = BfdList)))]
pub(crate) async fn get_bfd(State(st): St) -> ApiResult {
    match exec(&st, Command::ListBfd).await? {
        Reply::Bfd(list) => ok(&list),
        other => Err(wrong_reply("Bfd", &other)),
    }
}

/// Sets the BFD interval and multiplier, as `loxicmd set bfd` does. The
/// session itself comes from `--ka`; a `sourceIp` is refused.
#[utoipa::path(post, path = "/netlox/v1/config/bfd", tag = "ha",
    request_body = BfdBody,
    responses((status = 200, description = "Applied", body = SuccessBody)))]
pub(crate) async fn post_bfd(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let b: BfdBody = decode(&body?, Format::Json, "").map_err(ApiError::decode)?;
    let remote_ip = if b.remote_ip.is_empty() {
        None
    } else {
        Some(b.remote_ip.parse::<Ipv4Addr>().map_err(|_| {
            CommandError::invalid(
                "remoteIp",
                format!("{:?}", b.remote_ip),
                "not an IPv4 address",
            )
        })?)
    };
    if !b.source_ip.is_empty() {
        return Err(CommandError::Unsupported {
            field: "sourceIp".into(),
            value: format!("{:?}", b.source_ip),
            reason: "the BFD session comes from --ka; only interval and retryCount can be set"
                .into(),
        }
        .into());
    }
    let interval_us = match b.interval {
        Some(v) => u32::try_from(v).ok().filter(|&v| v >= 1).ok_or_else(|| {
            CommandError::invalid("interval", v, "microseconds in 1..=4294967295")
        })?,
        None => return Err(CommandError::invalid("interval", "(missing)", "required").into()),
    };
    let multiplier = match b.retry_count {
        Some(v) => u8::try_from(v)
            .ok()
            .filter(|&v| v >= 1)
            .ok_or_else(|| CommandError::invalid("retryCount", v, "must be 1..=255"))?,
        None => return Err(CommandError::invalid("retryCount", "(missing)", "required").into()),
    };
    let cmd = Command::SetBfd {
        remote_ip,
        interval_us,
        multiplier,
    };
    exec_done(&st, cmd).await
}

/// Tracked flows, in loxilb's shape.
#[utoipa::path(get, path = "/netlox/v1/config/conntrack/all", tag = "state",
    responses((status = 200, description = "Flows", body = ConntrackList)))]
pub(crate) async fn get_conntrack(State(st): St) -> ApiResult {
    match exec(&st, Command::ListConntrack).await? {
        Reply::Conntrack(list) => ok(&list),
        other => Err(wrong_reply("Conntrack", &other)),
    }
}

/// Each endpoint's state.
#[utoipa::path(get, path = "/netlox/v1/config/endpoint/all", tag = "state",
    responses((status = 200, description = "Endpoints", body = EndpointList)))]
pub(crate) async fn get_endpoints(State(st): St) -> ApiResult {
    match exec(&st, Command::ListEndpoints).await? {
        Reply::Endpoints(list) => ok(&list),
        other => Err(wrong_reply("Endpoints", &other)),
    }
}

/// Role, peer, BFD, floating addresses and the last transition.
#[utoipa::path(get, path = "/netlox/v1/status", tag = "state",
    responses((status = 200, description = "Status", body = crate::command::StatusReport)))]
pub(crate) async fn get_status(State(st): St) -> ApiResult {
    match exec(&st, Command::Status).await? {
        Reply::Status(s) => ok(&*s),
        other => Err(wrong_reply("Status", &other)),
    }
}

/// The HA transition records with their cloud reports.
#[utoipa::path(get, path = "/netlox/v1/ha/transitions", tag = "state",
    responses((status = 200, description = "Transitions", body = crate::command::TransitionList)))]
pub(crate) async fn get_transitions(State(st): St) -> ApiResult {
    match exec(&st, Command::Transitions).await? {
        Reply::Transitions(t) => ok(&t),
        other => Err(wrong_reply("Transitions", &other)),
    }
}

/// The agent's version.
#[utoipa::path(get, path = "/netlox/v1/version", tag = "state",
    responses((status = 200, description = "Version", body = VersionBody)))]
pub(crate) async fn get_version(State(st): St) -> Response {
    json(
        StatusCode::OK,
        &VersionBody {
            version: st.version.to_string(),
            build_info: format!("floatlb {}", st.version),
        },
    )
}

/// This document.
#[utoipa::path(get, path = "/netlox/v1/openapi.json", tag = "state",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn get_openapi() -> Response {
    let mut resp = Response::new(Body::from(crate::openapi::document_json()));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(JSON));
    resp
}
