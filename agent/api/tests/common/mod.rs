//! A fake owner task that records commands, and a request helper.
#![allow(dead_code)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request as HttpRequest, StatusCode, header},
};
use floatlb_api::{
    ApiState, ApiToken, Command, CommandError, Limits, Reply, Request,
    openapi::ERRORS,
    router,
    wire::{BfdList, CiStateList, ConntrackList, EndpointList, LbList},
};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tower::ServiceExt;

pub const LIMITS: Limits = Limits {
    max_endpoints: 64,
    max_services: 1024,
};

pub type Answer = Arc<dyn Fn(&Command) -> Result<Reply, CommandError> + Send + Sync>;

pub struct Harness {
    pub app: Router,
    pub seen: Arc<Mutex<Vec<Command>>>,
}

/// The fake owner's default answers: empty lists, Done for changes.
pub fn default_answer(cmd: &Command) -> Result<Reply, CommandError> {
    Ok(match cmd {
        Command::ListServices => Reply::Services(LbList::default()),
        Command::ListCiState => Reply::CiState(CiStateList::default()),
        Command::ListBfd => Reply::Bfd(BfdList::default()),
        Command::ListConntrack => Reply::Conntrack(ConntrackList::default()),
        Command::ListEndpoints => Reply::Endpoints(EndpointList::default()),
        _ => Reply::Done,
    })
}

pub fn harness_with(answer: Answer, token: Option<&str>, timeout: Duration) -> Harness {
    let (tx, mut rx) = mpsc::channel::<Request>(8);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let out = answer(&req.cmd);
            log.lock().unwrap().push(req.cmd);
            let _ = req.reply.send(out);
        }
    });
    let mut state = ApiState::new(tx, token.and_then(ApiToken::new), LIMITS, "9.9.9-test");
    state.request_timeout = timeout;
    Harness {
        app: router(state),
        seen,
    }
}

pub fn harness() -> Harness {
    harness_with(Arc::new(default_answer), None, Duration::from_secs(10))
}

pub struct Answered {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answered {
    pub fn text(&self, key: &str) -> &str {
        self.body[key].as_str().unwrap_or("")
    }
}

/// Sends one request and checks the wire rules every answer must keep:
/// `Content-Type: application/json` exactly, a JSON body, errors in loxilb's
/// shape with `code` equal to the status, and a status the document lists
/// for the operation.
pub async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
    auth: Option<&str>,
) -> Answered {
    let mut req = HttpRequest::builder()
        .method(method.clone())
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{method} {uri}: content type"
    );
    let body: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {uri}: body is not JSON ({e}): {bytes:?}"));
    if !status.is_success() {
        assert_eq!(body["code"], status.as_u16(), "{method} {uri}: {body}");
        assert!(
            body["message"].is_string() && body["result"].is_string(),
            "{body}"
        );
        assert!(body.get("fields").is_some(), "{body}");
    }
    if let Some(codes) = documented(&method, uri) {
        assert!(
            status == StatusCode::OK || codes.contains(&status.as_u16()),
            "{method} {uri} answered {status}, which the document does not list ({codes:?})"
        );
    }
    Answered {
        status,
        headers,
        body,
    }
}

/// The error statuses the document lists for the operation `uri` falls on.
fn documented(method: &Method, uri: &str) -> Option<&'static [u16]> {
    let path = uri.split('?').next().unwrap_or(uri);
    let segs: Vec<&str> = path.split('/').collect();
    ERRORS.iter().find_map(|(m, template, codes)| {
        let t: Vec<&str> = template.split('/').collect();
        let same = m.eq_ignore_ascii_case(method.as_str())
            && t.len() == segs.len()
            && t.iter()
                .zip(&segs)
                .all(|(a, b)| a == b || (a.starts_with('{') && !b.is_empty()));
        same.then_some(*codes)
    })
}

pub fn taken(h: &Harness) -> Vec<Command> {
    std::mem::take(&mut *h.seen.lock().unwrap())
}
