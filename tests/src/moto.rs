//! moto's server as a stand-in for the EC2 (and IAM) API: started on a free
//! loopback port, waited for (bounded), killed when dropped.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::http::{self, Message};

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    /// Address moto listens on (127.0.0.1 unless [`Moto::start_on`]).
    pub host: String,
    pub port: u16,
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Moto {
    /// Starts moto with no IAM enforcement.
    pub async fn start() -> Result<Self> {
        Self::start_with_env(&[]).await
    }

    /// Starts moto with extra environment (e.g. `INITIAL_NO_AUTH_ACTION_COUNT`).
    pub async fn start_with_env(env: &[(&str, &str)]) -> Result<Self> {
        Self::start_on("127.0.0.1", free_port()?, env).await
    }

    /// Starts moto listening on `host:port` in the caller's network
    /// namespace (e.g. an address other namespaces can route to).
    pub async fn start_on(host: &str, port: u16, env: &[(&str, &str)]) -> Result<Self> {
        let bin = which("moto_server").context(
            "moto_server not found on PATH; install it with `pip install 'moto[server]'` (scripts/setup.sh does)",
        )?;
        let mut cmd = Command::new(bin);
        cmd.args(["-H", host, "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawning moto_server")?;
        let mut moto = Self {
            child,
            host: host.to_string(),
            port,
        };
        moto.wait_ready(Duration::from_secs(30)).await?;
        Ok(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        let req = Message {
            start: "GET /moto-api/ HTTP/1.1".into(),
            headers: vec![("Host".into(), self.addr())],
            body: vec![],
        };
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("moto_server exited early with {status}");
            }
            if let Ok(resp) = http::roundtrip(&self.addr(), &req, Duration::from_secs(2)).await
                && resp.status() > 0
            {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "moto_server did not answer on {} within {limit:?}",
                    self.addr()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An unsigned-but-routable AWS query call (for moto's first
    /// `INITIAL_NO_AUTH_ACTION_COUNT` calls, which skip authentication).
    /// The fake Authorization header only tells moto which service is meant.
    pub async fn raw_query(&self, service: &str, params: &[(&str, &str)]) -> Result<String> {
        let body = params
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = Message {
            start: "POST / HTTP/1.1".into(),
            headers: vec![
                ("Host".into(), self.addr()),
                (
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                ),
                (
                    "Authorization".into(),
                    format!(
                        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
                    ),
                ),
            ],
            body: body.into_bytes(),
        };
        let resp = http::roundtrip(&self.addr(), &req, Duration::from_secs(10)).await?;
        let text = String::from_utf8_lossy(&resp.body).to_string();
        if resp.status() >= 300 {
            bail!("{service} {params:?}: HTTP {}: {text}", resp.status());
        }
        Ok(text)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The text between `<tag>` and `</tag>` (first occurrence).
pub fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let i = xml.find(&open)? + open.len();
    let j = xml[i..].find(&close)? + i;
    Some(xml[i..j].to_string())
}
