//! Serving the router: plain HTTP, TLS, or mutual TLS.
//!
//! Plain HTTP goes through `axum::serve`. TLS (`--api-tls-cert`,
//! `--api-tls-key`) uses rustls through tokio-rustls with the aws-lc-rs
//! provider (the one the AWS SDK already builds) and serves each connection
//! with hyper-util; with `--api-client-ca` a client must present a
//! certificate signed by that CA (mTLS). Certificates and keys are PEM files,
//! read once at start: a bad file fails `serve` before it accepts anything.
//!
//! Shutdown: when `shutdown` completes, no new connection is accepted and
//! open ones finish their request (bounded by [`DRAIN`]).

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tokio_rustls::{
    TlsAcceptor,
    rustls::{self, RootCertStore, ServerConfig, server::WebPkiClientVerifier},
};

/// Longest a client may take for its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest open connections may take to finish at shutdown.
pub const DRAIN: Duration = Duration::from_secs(5);

/// PEM files for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (`--api-tls-cert`).
    pub cert: PathBuf,
    /// Private key (`--api-tls-key`).
    pub key: PathBuf,
    /// CA for client certificates (`--api-client-ca`): mTLS when set.
    pub client_ca: Option<PathBuf>,
}

/// Errors serving the API.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read {what} {path}: {message}")]
    Pem {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("API listener: {0}")]
    Io(#[from] std::io::Error),
}

fn pem_err(what: &'static str, path: &Path, message: impl ToString) -> ServeError {
    ServeError::Pem {
        what,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(what, path, e))?;
    if certs.is_empty() {
        return Err(pem_err(what, path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// Builds the rustls server configuration from the PEM files.
pub fn tls_config(files: &TlsFiles) -> Result<ServerConfig, ServeError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = read_certs("certificate", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| pem_err("private key", &files.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("client CA", ca)? {
                roots.add(cert).map_err(|e| pem_err("client CA", ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| ServeError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsFiles>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Some(files) = tls else {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        return Ok(());
    };
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&files)?));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and the like: back off instead of spinning.
                    if log_allowed() {
                        tracing::warn!(%error, "API accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    if log_allowed() {
                        tracing::info!(%peer, %error, "API TLS handshake failed");
                    }
                    return;
                }
                Err(_) => return,
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(conn).await
                && log_allowed()
            {
                tracing::debug!(%peer, %error, "API connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API connections still open after the drain time; closing them");
    }
    Ok(())
}

/// At most one peer-triggered log line per second (a client can provoke
/// handshake failures at will).
fn log_allowed() -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    now > last
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
