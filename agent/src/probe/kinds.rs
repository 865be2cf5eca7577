//! One probe of one endpoint, by kind. Each returns `Ok(())` when the
//! endpoint passes, or why it failed; the caller bounds it with the
//! probe's timeout.
//!
//! - `tcp`: a connection is accepted.
//! - `udp`: loxilb's rule. A datagram (`probereq`, or empty) is sent on a
//!   connected socket; an ICMP port-unreachable (the socket's
//!   `ECONNREFUSED`) means down, and silence until the timeout means up
//!   (a UDP service need not answer). A reply is up too, unless
//!   `proberesp` is set and the reply does not contain it.
//! - `http`/`https`: `GET <probereq or />` answers 2xx or 3xx (and, with
//!   `proberesp`, a body containing it). HTTPS does not verify the
//!   endpoint's certificate: endpoints are pods with self-signed ones, and
//!   the probe asks "does it serve", not "who is it".
//! - `ping`: an ICMP echo reply (a raw socket; the agent runs as root).

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// How an endpoint is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
    Http,
    Https,
    Ping,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::Ping => "ping",
        }
    }
}

/// Most bytes of an answer read (status line and a bounded body).
const MAX_READ: usize = 16 * 1024;

/// Probes `ip:port` once.
pub async fn probe(
    kind: &Kind,
    ip: Ipv4Addr,
    port: u16,
    request: &str,
    response: &str,
    timeout: Duration,
) -> Result<(), String> {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    let work = async {
        match kind {
            Kind::Tcp => TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Kind::Udp => udp(addr, request, response, timeout).await,
            Kind::Http => http(addr, request, response).await,
            Kind::Https => {
                let (req, resp) = (request.to_string(), response.to_string());
                tokio::task::spawn_blocking(move || https(addr, &req, &resp, timeout))
                    .await
                    .map_err(|e| e.to_string())?
            }
            Kind::Ping => tokio::task::spawn_blocking(move || ping(ip, timeout))
                .await
                .map_err(|e| e.to_string())?,
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        // UDP: silence is up (handled inside, before this fires).
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

async fn udp(
    addr: SocketAddr,
    request: &str,
    response: &str,
    timeout: Duration,
) -> Result<(), String> {
    let sock = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| e.to_string())?;
    sock.connect(addr).await.map_err(|e| e.to_string())?;
    sock.send(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 2048];
    // Leave the outer timeout a margin: silence must read as up.
    let wait = timeout.mul_f64(0.8);
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Err(_) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("ICMP port unreachable".into())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(n)) => {
            if response.is_empty() || String::from_utf8_lossy(&buf[..n]).contains(response) {
                Ok(())
            } else {
                Err(format!("reply does not contain {response:?}"))
            }
        }
    }
}

fn http_request(addr: SocketAddr, request: &str) -> String {
    let path = if request.starts_with('/') {
        request
    } else {
        "/"
    };
    format!(
        "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: floatlb-probe\r\nConnection: close\r\n\r\n",
        addr.ip()
    )
}

/// Judges an HTTP answer: 2xx/3xx, and the body holds `response` if set.
fn judge_http(raw: &[u8], response: &str) -> Result<(), String> {
    let text = String::from_utf8_lossy(raw);
    let code: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "no HTTP status line".to_string())?;
    if !(200..400).contains(&code) {
        return Err(format!("HTTP {code}"));
    }
    if !response.is_empty() {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if !body.contains(response) {
            return Err(format!("HTTP {code}, body without {response:?}"));
        }
    }
    Ok(())
}

async fn http(addr: SocketAddr, request: &str, response: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(http_request(addr, request).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while raw.len() < MAX_READ {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if response.is_empty() && raw.windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    judge_http(&raw, response)
}

/// Accepts any server certificate (see the module docs).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn https(addr: SocketAddr, request: &str, response: &str, timeout: Duration) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(http_request(addr, request).as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let _ = Read::by_ref(&mut tls)
        .take(MAX_READ as u64)
        .read_to_end(&mut raw);
    judge_http(&raw, response)
}

fn ping(ip: Ipv4Addr, timeout: Duration) -> Result<(), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .map_err(|e| format!("raw ICMP socket: {e}"))?;
    // A datagram socket's calls (sendto, recvfrom) are what a raw socket
    // needs; std's UdpSocket gives them over initialised buffers.
    let sock = std::net::UdpSocket::from(raw);
    let id: u16 = rand::random();
    let seq: u16 = rand::random();
    let mut pkt = [0u8; 16];
    pkt[0] = 8; // echo request
    pkt[4..6].copy_from_slice(&id.to_be_bytes());
    pkt[6..8].copy_from_slice(&seq.to_be_bytes());
    pkt[8..16].copy_from_slice(b"floatlb!");
    let ck = checksum(&pkt);
    pkt[2..4].copy_from_slice(&ck.to_be_bytes());
    sock.send_to(&pkt, SocketAddrV4::new(ip, 0))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no echo reply within {} ms", timeout.as_millis()));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let data = &buf[..n];
        let ihl = usize::from(data.first().map_or(5, |b| b & 0x0f)) * 4;
        let icmp = data.get(ihl..).unwrap_or(&[]);
        if from.ip() == std::net::IpAddr::V4(ip)
            && icmp.len() >= 8
            && icmp[0] == 0
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Ok(());
        }
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_are_judged_by_status_and_body() {
        assert!(judge_http(b"HTTP/1.1 200 OK\r\n\r\nhello", "").is_ok());
        assert!(judge_http(b"HTTP/1.1 302 Found\r\n\r\n", "").is_ok());
        assert_eq!(
            judge_http(b"HTTP/1.1 503 x\r\n\r\n", ""),
            Err("HTTP 503".into())
        );
        assert!(judge_http(b"HTTP/1.1 200 OK\r\n\r\nhello", "hell").is_ok());
        assert!(judge_http(b"HTTP/1.1 200 OK\r\n\r\nhello", "bye").is_err());
        assert!(judge_http(b"garbage", "").is_err());
    }

    #[tokio::test]
    async fn udp_silence_is_up_and_port_unreachable_is_down() {
        // A bound socket that never answers: silence.
        let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = quiet.local_addr().unwrap().port();
        let t = Duration::from_millis(200);
        let lo = Ipv4Addr::LOCALHOST;
        assert_eq!(probe(&Kind::Udp, lo, port, "", "", t).await, Ok(()));
        drop(quiet);
        // Nothing bound: the kernel answers ICMP port unreachable.
        let r = probe(&Kind::Udp, lo, port, "x", "", t).await;
        assert_eq!(r, Err("ICMP port unreachable".into()));
    }

    #[tokio::test]
    async fn http_probes_read_the_status_and_the_body() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (i, conn) in l.incoming().take(2).enumerate() {
                let mut c = conn.unwrap();
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let answer: &[u8] = if i == 0 {
                    b"HTTP/1.0 200 OK\r\n\r\nalive"
                } else {
                    b"HTTP/1.0 500 Oops\r\n\r\n"
                };
                let _ = c.write_all(answer);
            }
        });
        let t = Duration::from_secs(2);
        let lo = Ipv4Addr::LOCALHOST;
        assert_eq!(
            probe(&Kind::Http, lo, port, "/healthz", "alive", t).await,
            Ok(())
        );
        assert_eq!(
            probe(&Kind::Http, lo, port, "/healthz", "", t).await,
            Err("HTTP 500".into())
        );
    }

    #[tokio::test]
    async fn ping_gets_an_echo_reply_where_raw_sockets_are_allowed() {
        let r = probe(
            &Kind::Ping,
            Ipv4Addr::LOCALHOST,
            0,
            "",
            "",
            Duration::from_secs(1),
        )
        .await;
        match r {
            Err(e) if e.starts_with("raw ICMP socket") => {
                eprintln!("not root: {e}; the agent runs as root")
            }
            other => assert_eq!(other, Ok(())),
        }
    }

    #[tokio::test]
    async fn tcp_refused_is_down_and_accepted_is_up() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Duration::from_millis(500);
        let lo = Ipv4Addr::LOCALHOST;
        assert_eq!(probe(&Kind::Tcp, lo, port, "", "", t).await, Ok(()));
        drop(l);
        assert!(probe(&Kind::Tcp, lo, port, "", "", t).await.is_err());
    }
}
