//! Serving over plain HTTP, TLS and mutual TLS, with certificates made in
//! the test.

use std::{io::Write, path::PathBuf, sync::Arc, time::Duration};

use floatlb_api::{ApiState, Limits, TlsFiles, router, serve};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName},
};

const LIMITS: Limits = Limits {
    max_endpoints: 64,
    max_services: 16,
};

struct Pki {
    dir: PathBuf,
    ca_pem: String,
    client: Option<(String, String)>,
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

/// A CA, a server certificate for 127.0.0.1, and a client certificate.
fn make_pki(tag: &str) -> (Pki, TlsFiles, String) {
    let dir = std::env::temp_dir().join(format!("floatlb-api-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["floatctl".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let ca_pem = ca.pem();
    let files = TlsFiles {
        cert: write(&dir, "server.pem", &server.pem()),
        key: write(&dir, "server.key", &server_key.serialize_pem()),
        client_ca: None,
    };
    let ca_path = write(&dir, "ca.pem", &ca_pem);
    (
        Pki {
            dir,
            ca_pem,
            client: Some((client.pem(), client_key.serialize_pem())),
        },
        files,
        ca_path.display().to_string(),
    )
}

async fn start(
    tls: Option<TlsFiles>,
) -> (
    std::net::SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let app = router(ApiState::new(tx, None, LIMITS, "tls-test"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(listener, app, tls, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop, task)
}

fn client_config(ca_pem: &str, identity: Option<&(String, String)>) -> ClientConfig {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    }
}

const GET_VERSION: &[u8] =
    b"GET /netlox/v1/version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

/// One GET /netlox/v1/version over TLS; the response text, or the error.
async fn tls_get(addr: std::net::SocketAddr, cfg: ClientConfig) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(GET_VERSION)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn plain_get(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(GET_VERSION).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn plain_http_serves_and_stops_on_shutdown() {
    let (addr, stop, task) = start(None).await;
    let resp = plain_get(addr).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"version\":\"tls-test\""), "{resp}");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn tls_serves_a_client_that_trusts_the_ca_and_refuses_plain_http() {
    let (pki, files, _) = make_pki("tls");
    let (addr, stop, task) = start(Some(files)).await;
    let resp = tls_get(addr, client_config(&pki.ca_pem, None))
        .await
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("content-type: application/json\r\n"),
        "{resp}"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = plain_get(addr).await.unwrap_or_default();
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    std::fs::remove_dir_all(pki.dir).ok();
}

#[tokio::test]
async fn mtls_needs_a_client_certificate_from_the_ca() {
    let (pki, mut files, ca_path) = make_pki("mtls");
    files.client_ca = Some(ca_path.into());
    let (addr, stop, task) = start(Some(files)).await;
    let with_cert = tls_get(addr, client_config(&pki.ca_pem, pki.client.as_ref()))
        .await
        .unwrap();
    assert!(with_cert.starts_with("HTTP/1.1 200"), "{with_cert}");
    let without = tls_get(addr, client_config(&pki.ca_pem, None)).await;
    assert!(
        without
            .as_ref()
            .map_or(true, |r| !r.starts_with("HTTP/1.1 200")),
        "a client without a certificate was served: {without:?}"
    );
    // A certificate from another CA is refused too.
    let (other, _, _) = make_pki("mtls-other");
    let stranger = tls_get(addr, client_config(&pki.ca_pem, other.client.as_ref())).await;
    assert!(
        stranger
            .as_ref()
            .map_or(true, |r| !r.starts_with("HTTP/1.1 200")),
        "a client with a foreign certificate was served: {stranger:?}"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    std::fs::remove_dir_all(pki.dir).ok();
    std::fs::remove_dir_all(other.dir).ok();
}

#[tokio::test]
async fn a_bad_pem_file_fails_before_serving_naming_the_file() {
    let (pki, mut files, _) = make_pki("bad");
    files.key = write(&pki.dir, "empty.key", "");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let app = router(ApiState::new(tx, None, LIMITS, "t"));
    let err = serve(listener, app, Some(files), std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("empty.key"), "{err}");
    std::fs::remove_dir_all(pki.dir).ok();
}
