//! A plain HTTP/1.1 client for the agent's REST API, speaking as
//! kube-loxilb does (`Content-Type: application/json` on every request,
//! the raw token in `Authorization`), from inside a test namespace.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// The API's default port (loxilb's).
pub const API_PORT: u16 = 11111;

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }

    /// kube-loxilb's success: 200 and `"result":"Success"`.
    pub fn is_success(&self) -> bool {
        self.status == 200
            && self
                .json()
                .is_ok_and(|v| v["result"].as_str() == Some("Success"))
    }
}

/// The API of an agent, reached from a namespace.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub ns: String,
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl ApiClient {
    /// The API on loopback inside `ns`.
    pub fn local(ns: &Netns) -> Self {
        Self {
            ns: ns.name().to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], API_PORT)),
            token: None,
        }
    }

    /// Sends one request; `path` is under `/netlox/v1`.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<Answer> {
        self.call_at(method, &format!("/netlox/v1{path}"), body)
    }

    /// `GET` of a path outside `/netlox/v1` (`/metrics`, `/health/...`, `/`).
    pub fn get_at(&self, path: &str) -> Result<Answer> {
        self.call_at("GET", path, None)
    }

    /// `method` on the absolute `path` with extra request headers.
    pub fn call_at_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer> {
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        self.send(method, path, None, &extra)
    }

    /// Sends one request to the absolute `path`.
    pub fn call_at(&self, method: &str, path: &str, body: Option<&str>) -> Result<Answer> {
        self.send(method, path, body, "")
    }

    fn send(&self, method: &str, path: &str, body: Option<&str>, extra: &str) -> Result<Answer> {
        let addr = self.addr;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}"
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: {t}\r\n"));
        }
        let body = body.unwrap_or("");
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let raw = enter(&self.ns, move || -> Result<Vec<u8>> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(15)))?;
            s.write_all(req.as_bytes())?;
            let mut out = Vec::new();
            s.read_to_end(&mut out)?;
            Ok(out)
        })??;
        parse(&raw)
    }

    pub fn get(&self, path: &str) -> Result<Answer> {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &str) -> Result<Answer> {
        self.call("POST", path, Some(body))
    }

    /// Waits until the API answers the liveness probe.
    pub fn wait_up(&self, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            match self.get("") {
                Ok(a) if a.status == 200 => return Ok(t0.elapsed()),
                _ if t0.elapsed() > timeout => bail!("the API did not answer within {timeout:?}"),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Runs `f` on a thread inside the namespace `name` (which the caller owns).
fn enter<R: Send + 'static>(name: &str, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    let path = std::path::PathBuf::from("/run/netns").join(name);
    let file =
        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    std::thread::spawn(move || -> Result<R> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
}

fn parse(raw: &[u8]) -> Result<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of HTTP head in the answer")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let mut content_type = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_string());
            }
            if k.eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// kube-loxilb's create body for a service (the AWS multi-AZ shape:
/// fullnat, `privateIP` set), as it sends it: compact, its field order,
/// `BGP` and `Monitor` capitalised.
pub fn kube_loxilb_body(
    external_ip: &str,
    private_ip: &str,
    port: u16,
    protocol: &str,
    name: &str,
    endpoints: &[(std::net::Ipv4Addr, u16)],
) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(ip, p)| {
            format!(
                r#"{{"endpointIP":"{ip}","targetPort":{p},"weight":1,"state":"","counter":""}}"#
            )
        })
        .collect();
    format!(
        r#"{{"serviceArguments":{{"externalIP":"{external_ip}","privateIP":"{private_ip}","port":{port},"protocol":"{protocol}","sel":0,"mode":2,"BGP":false,"Monitor":false,"inactiveTimeOut":1800,"block":0,"managed":true,"probetype":"","probeport":0,"probereq":"","proberesp":"","name":"{name}:llb-inst0"}},"secondaryIPs":[],"allowedSources":[],"endpoints":[{}]}}"#,
        eps.join(",")
    )
}
