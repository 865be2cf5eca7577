//! The REST API's place in the agent: bind early, serve once the state is
//! restored, stop with the daemon.
//!
//! The listener is bound before the datapath is opened, so a port in use
//! stops the agent before it changes anything; connections that arrive
//! before the state is restored wait in the listen backlog and are served
//! after it. Requests reach the owner task over a bounded queue
//! ([`QUEUE`]), so a flood meets backpressure; every handler is in
//! `floatlb_api::router` and only parses.

use std::path::PathBuf;

use floatlb_api::{ApiState, ApiToken, Limits, Request, TlsFiles};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::cli::{ApiArgs, Listen};

/// Requests queued for the owner task before handlers wait.
pub const QUEUE: usize = 1024;

/// Errors setting the API up.
#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    #[error("--api-listen {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("--api-token-file {path}: {message}")]
    Token { path: PathBuf, message: String },
}

/// A bound listener and its settings, not yet serving.
pub struct BoundApi {
    listener: TcpListener,
    token: Option<ApiToken>,
    tls: Option<TlsFiles>,
}

/// The serving API.
pub struct RunningApi {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Binds `--api-listen` and reads the token; `None` with `--api-listen off`.
pub async fn bind(args: &ApiArgs) -> Result<Option<BoundApi>, ApiSetupError> {
    let Listen::At(addr) = args.api_listen else {
        tracing::info!("REST API off (--api-listen off)");
        return Ok(None);
    };
    let token = match &args.api_token_file {
        None => None,
        Some(path) => Some(ApiToken::from_file(path).map_err(|e| ApiSetupError::Token {
            path: path.clone(),
            message: e.to_string(),
        })?),
    };
    let tls = match (&args.api_tls_cert, &args.api_tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.api_client_ca.clone(),
        }),
        _ => None,
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ApiSetupError::Bind { addr, source })?;
    if token.is_none() && args.api_client_ca.is_none() {
        tracing::warn!(%addr,
            "the REST API is open: anyone who reaches {addr} can change services and roles; \
             close it with --api-token-file FILE, or mTLS (--api-tls-cert, --api-tls-key, --api-client-ca), \
             or --api-listen 127.0.0.1:11111");
    }
    Ok(Some(BoundApi {
        listener,
        token,
        tls,
    }))
}

impl BoundApi {
    /// Serves requests, sending each to `tx` (the owner task), with
    /// `GET /metrics` from `metrics`, which also counts every request.
    pub fn serve(
        self,
        tx: mpsc::Sender<Request>,
        limits: Limits,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        health_tx: mpsc::Sender<Request>,
    ) -> RunningApi {
        let mut state = ApiState::new(tx, self.token, limits, env!("CARGO_PKG_VERSION"));
        state.health_tx = Some(health_tx);
        state.observer = Some(std::sync::Arc::new(crate::metrics::ApiCounter(
            metrics.clone(),
        )));
        let router = floatlb_api::router_with(state, crate::metrics::routes(metrics));
        let (stop, stopped) = oneshot::channel::<()>();
        let addr = self.listener.local_addr().ok();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(error) = floatlb_api::serve(self.listener, router, self.tls, shutdown).await
            {
                tracing::error!(%error, "the REST API stopped");
            }
        });
        tracing::info!(addr = ?addr, "REST API serving");
        RunningApi { stop, task }
    }
}

impl RunningApi {
    /// Stops accepting and waits for requests in flight.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
