//! The HTTP client: one blocking request at a time to the agent's API.
//!
//! - Transport is ureq 3 on rustls with the aws-lc-rs provider (the one the
//!   API server and the AWS SDK already build). `https://` URLs verify the
//!   agent against `--ca` (or the web PKI roots without it); `--cert/--key`
//!   present a client certificate for mutual TLS. The certificate/key pair is
//!   checked with rustls before it reaches ureq, so a mismatched pair is an
//!   error naming the files, not a panic.
//! - The token goes raw in `Authorization`, as kube-loxilb sends it.
//! - Every request carries `Content-Type: application/json`, as kube-loxilb's
//!   do. Proxies from the environment are not used: floatctl talks to one
//!   agent directly.
//! - An answer other than 2xx becomes [`ClientError::Api`] carrying loxilb's
//!   error body (`{"code","message","result"}`) when the agent sent one, so
//!   the caller can print the agent's own words.

use std::{fmt, path::Path, sync::Arc, time::Duration};

use floatlb_api::wire::ErrorBody;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

/// Every path is under this.
pub const BASE: &str = "/netlox/v1";
/// Largest answer read (a conntrack table can be large).
const MAX_ANSWER: u64 = 256 << 20;

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--api` is not an http(s) URL, or TLS options without https.
    #[error("{0}")]
    Config(String),
    /// A TLS file cannot be read or used.
    #[error("{what} {path}: {message}")]
    TlsFile {
        what: &'static str,
        path: String,
        message: String,
    },
    /// The token file cannot be read or is empty.
    #[error("token file {path}: {message}")]
    Token { path: String, message: String },
    /// No answer: refused, timed out, TLS failure.
    #[error("{method} {url}: {message}")]
    Transport {
        method: &'static str,
        url: String,
        message: String,
    },
    /// The agent answered with an error status.
    #[error("{method} {url}: {}", describe(*status, body.as_deref(), text))]
    Api {
        method: &'static str,
        url: String,
        status: u16,
        body: Option<Box<ErrorBody>>,
        text: String,
    },
    /// A 2xx answer that is not the JSON expected.
    #[error("{method} {url}: the answer is not the expected JSON ({message}): {text}")]
    Decode {
        method: &'static str,
        url: String,
        message: String,
        text: String,
    },
}

/// `404 Not Found: <message> (<result>)`: the agent's words, `result` added
/// when it says more than `message`.
fn describe(status: u16, body: Option<&ErrorBody>, text: &str) -> String {
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let head = format!("{status} {reason}").trim_end().to_string();
    match body {
        Some(b) if b.result.is_empty() || b.result == b.message => {
            format!("{head}: {}", b.message)
        }
        Some(b) if b.message.is_empty() => format!("{head}: {}", b.result),
        Some(b) => format!("{head}: {} ({})", b.message, b.result),
        None if text.trim().is_empty() => head,
        None => format!("{head}: {}", shorten(text.trim())),
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(MAX).collect::<String>())
    }
}

/// How to reach the agent.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub api: String,
    pub token: Option<String>,
    pub token_file: Option<std::path::PathBuf>,
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    pub timeout: Duration,
}

/// A connection to one agent.
pub struct Client {
    agent: ureq::Agent,
    /// `scheme://host:port`, without a trailing `/` or the `/netlox/v1` base.
    root: String,
    token: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("root", &self.root)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The answer to a request that succeeded.
#[derive(Debug, Clone)]
pub struct Answer {
    pub method: &'static str,
    pub url: String,
    pub text: String,
}

impl Answer {
    /// The body decoded as `T` (the wire types of `floatlb_api`).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_str(&self.text).map_err(|e| ClientError::Decode {
            method: self.method,
            url: self.url.clone(),
            message: e.to_string(),
            text: shorten(&self.text),
        })
    }
}

/// Splits `--api` into the root URL, checking the scheme. A trailing `/` or
/// `/netlox/v1` is accepted and dropped.
pub fn api_root(api: &str) -> Result<(String, bool), ClientError> {
    let api = api.trim();
    let https = if api.starts_with("https://") {
        true
    } else if api.starts_with("http://") {
        false
    } else {
        return Err(ClientError::Config(format!(
            "--api {api:?}: expected an http:// or https:// URL, e.g. {}",
            super::cli::DEFAULT_API
        )));
    };
    let mut root = api.trim_end_matches('/');
    root = root
        .strip_suffix(BASE)
        .unwrap_or(root)
        .trim_end_matches('/');
    let host = root.split_once("://").map_or("", |(_, h)| h);
    if host.is_empty() || host.contains('/') || host.contains('?') || host.contains('#') {
        return Err(ClientError::Config(format!(
            "--api {api:?}: expected scheme://HOST[:PORT] with no other path than {BASE}"
        )));
    }
    Ok((root.to_string(), https))
}

/// Characters escaped in a path segment: everything but unreserved ones and
/// `:` (kube-loxilb's names contain it, and axum decodes it either way).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':');

/// One path segment, percent-encoded.
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::TlsFile {
        what,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn pem_items(what: &'static str, path: &Path) -> Result<Vec<PemItem<'static>>, ClientError> {
    let text = read_file(what, path)?;
    ureq::tls::parse_pem(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::TlsFile {
            what,
            path: path.display().to_string(),
            message: format!("not PEM: {e}"),
        })
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<Certificate<'static>>, ClientError> {
    let certs: Vec<_> = pem_items(what, path)?
        .into_iter()
        .filter_map(|i| match i {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(ClientError::TlsFile {
            what,
            path: path.display().to_string(),
            message: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKey<'static>, ClientError> {
    pem_items("client key", path)?
        .into_iter()
        .find_map(|i| match i {
            PemItem::PrivateKey(k) => Some(k),
            _ => None,
        })
        .ok_or_else(|| ClientError::TlsFile {
            what: "client key",
            path: path.display().to_string(),
            message: "no PRIVATE KEY block".into(),
        })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Checks that the client certificate and key belong together, with the same
/// rustls and provider ureq will use (ureq panics on a bad pair).
fn check_pair(cert_path: &Path, key_path: &Path) -> Result<(), ClientError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let bad = |message: String| ClientError::TlsFile {
        what: "client certificate and key",
        path: format!("{} + {}", cert_path.display(), key_path.display()),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| bad(e.to_string()))?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("TLS: {e}")))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map(|_| ())
        .map_err(|e| bad(e.to_string()))
}

fn tls_config(o: &ClientOptions) -> Result<TlsConfig, ClientError> {
    let roots = match &o.ca {
        Some(ca) => RootCerts::new_with_certs(&certs("CA certificate", ca)?),
        None => RootCerts::WebPki,
    };
    let client_cert = match (&o.cert, &o.key) {
        (Some(c), Some(k)) => {
            let chain = certs("client certificate", c)?;
            let key = key(k)?;
            check_pair(c, k)?;
            Some(ClientCert::new_with_certs(&chain, key))
        }
        (None, None) => None,
        _ => {
            return Err(ClientError::Config(
                "--cert and --key go together (mutual TLS)".into(),
            ));
        }
    };
    Ok(TlsConfig::builder()
        .root_certs(roots)
        .client_cert(client_cert)
        .unversioned_rustls_crypto_provider(provider())
        .build())
}

fn read_token(path: &Path) -> Result<String, ClientError> {
    let err = |message: String| ClientError::Token {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("empty".into()));
    }
    Ok(token.to_string())
}

impl Client {
    pub fn new(o: &ClientOptions) -> Result<Self, ClientError> {
        let (root, https) = api_root(&o.api)?;
        if !https && (o.ca.is_some() || o.cert.is_some() || o.key.is_some()) {
            return Err(ClientError::Config(format!(
                "--ca, --cert and --key need an https:// --api URL (got {root})"
            )));
        }
        let token = match (&o.token, &o.token_file) {
            (Some(t), _) if !t.trim().is_empty() => Some(t.trim().to_string()),
            (Some(_), _) => return Err(ClientError::Config("--token is empty".into())),
            (None, Some(path)) => Some(read_token(path)?),
            (None, None) => None,
        };
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(o.timeout))
            .proxy(None)
            .user_agent(concat!("floatctl/", env!("CARGO_PKG_VERSION")));
        if https {
            config = config.tls_config(tls_config(o)?);
        }
        Ok(Self {
            agent: config.build().into(),
            root,
            token,
        })
    }

    /// The full URL of `path` (which starts with `/`, under `/netlox/v1`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{BASE}{path}", self.root)
    }

    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        self.call("POST", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Answer, ClientError> {
        self.call("DELETE", path, None)
    }

    /// The headers of every request.
    fn headers<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let req = req.header("Content-Type", "application/json");
        match &self.token {
            Some(t) => req.header("Authorization", t),
            None => req,
        }
    }

    fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer, ClientError> {
        let url = self.url(path);
        let transport = |message: String| ClientError::Transport {
            method,
            url: url.clone(),
            message,
        };
        let sent = match body {
            Some(b) => self.headers(self.agent.post(&url)).send(b),
            None if method == "DELETE" => self.headers(self.agent.delete(&url)).call(),
            None => self.headers(self.agent.get(&url)).call(),
        };
        let mut resp = sent.map_err(|e| transport(transport_message(&e)))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| transport(format!("reading the answer: {e}")))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !(200..300).contains(&status) {
            return Err(ClientError::Api {
                method,
                url,
                status,
                body: serde_json::from_str::<ErrorBody>(&text).ok().map(Box::new),
                text,
            });
        }
        Ok(Answer { method, url, text })
    }
}

/// ureq's error, with the usual causes said plainly.
fn transport_message(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is the agent running, and is --api right?)".into()
        }
        ureq::Error::Timeout(t) => format!("timed out ({t}); see --timeout"),
        other => {
            let text = other.to_string();
            if text.to_ascii_lowercase().contains("certificate") {
                format!(
                    "{text} (TLS: --ca must name the CA of the agent's certificate; an agent \
                     with --api-client-ca needs --cert and --key)"
                )
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_root_accepts_the_usual_forms() {
        for (given, want) in [
            ("http://127.0.0.1:11111", "http://127.0.0.1:11111"),
            ("http://127.0.0.1:11111/", "http://127.0.0.1:11111"),
            ("http://lb:11111/netlox/v1", "http://lb:11111"),
            ("https://lb:8091/netlox/v1/", "https://lb:8091"),
        ] {
            assert_eq!(api_root(given).unwrap().0, want, "{given}");
        }
        assert!(api_root("https://lb:8091").unwrap().1);
        for bad in ["127.0.0.1:11111", "ftp://x", "http://", "http://lb/other"] {
            let err = api_root(bad).unwrap_err().to_string();
            assert!(err.contains("--api") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn segments_are_escaped_but_names_stay_readable() {
        assert_eq!(
            segment("default_nginx-lb1:llb-inst0"),
            "default_nginx-lb1:llb-inst0"
        );
        assert_eq!(segment("a b/c?d#e%"), "a%20b%2Fc%3Fd%23e%25");
    }

    #[test]
    fn api_errors_print_message_and_result() {
        let body = ErrorBody {
            code: 404,
            fields: None,
            message: "lbrule 1.2.3.4:80/tcp does not exist".into(),
            result: "lbrule 1.2.3.4:80/tcp: not-exists error".into(),
        };
        assert_eq!(
            describe(404, Some(&body), ""),
            "404 Not Found: lbrule 1.2.3.4:80/tcp does not exist (lbrule 1.2.3.4:80/tcp: not-exists error)"
        );
        let same = ErrorBody {
            result: body.message.clone(),
            ..body
        };
        assert_eq!(
            describe(404, Some(&same), ""),
            "404 Not Found: lbrule 1.2.3.4:80/tcp does not exist"
        );
        assert_eq!(
            describe(502, None, "bad gateway\n"),
            "502 Bad Gateway: bad gateway"
        );
        assert_eq!(describe(599, None, ""), "599");
    }

    #[test]
    fn tls_options_need_https() {
        let o = ClientOptions {
            api: "http://127.0.0.1:1".into(),
            ca: Some("ca.pem".into()),
            timeout: Duration::from_secs(1),
            ..ClientOptions::default()
        };
        let err = Client::new(&o).unwrap_err().to_string();
        assert!(err.contains("need an https://"), "{err}");
    }
}
