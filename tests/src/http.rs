//! A minimal HTTP/1.1 reader and writer over TCP for the test servers (IMDS,
//! the fault proxy) and for raw calls to moto. One request per connection.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A parsed HTTP message (request or response).
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Request line or status line.
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Request method and path.
    pub fn method_path(&self) -> (&str, &str) {
        let mut it = self.start.split_whitespace();
        (it.next().unwrap_or(""), it.next().unwrap_or(""))
    }

    /// Response status code.
    pub fn status(&self) -> u16 {
        self.start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Serializes with `Connection: close` and a correct `Content-Length`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (k, v) in &self.headers {
            if k.eq_ignore_ascii_case("connection")
                || k.eq_ignore_ascii_case("content-length")
                || k.eq_ignore_ascii_case("transfer-encoding")
            {
                continue;
            }
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Reads one message: head, then `Content-Length` bytes (or chunked, or to EOF).
pub async fn read_message(stream: &mut TcpStream) -> Result<Message> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the end of the HTTP head");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut msg = Message {
        start,
        headers,
        body: buf[head_end + 4..].to_vec(),
    };
    if let Some(len) = msg.header("content-length") {
        let len: usize = len.parse().context("bad Content-Length")?;
        while msg.body.len() < len {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed inside the body");
            }
            msg.body.extend_from_slice(&chunk[..n]);
        }
        msg.body.truncate(len);
    } else if msg
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut raw = std::mem::take(&mut msg.body);
        loop {
            if let Some(body) = dechunk(&raw) {
                msg.body = body;
                break;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed inside a chunked body");
            }
            raw.extend_from_slice(&chunk[..n]);
        }
    } else if msg.status() != 0 {
        // A response without length: read to EOF.
        stream.read_to_end(&mut msg.body).await?;
    }
    Ok(msg)
}

fn dechunk(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let line_end = raw[i..].windows(2).position(|w| w == b"\r\n")? + i;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&raw[i..line_end])
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        i = line_end + 2;
        if size == 0 {
            return Some(out);
        }
        if raw.len() < i + size + 2 {
            return None;
        }
        out.extend_from_slice(&raw[i..i + size]);
        i += size + 2;
    }
}

/// Sends one request to `addr` and reads the response (bounded by `timeout`).
pub async fn roundtrip(addr: &str, req: &Message, timeout: Duration) -> Result<Message> {
    tokio::time::timeout(timeout, async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(&req.to_bytes()).await?;
        read_message(&mut s).await
    })
    .await
    .with_context(|| format!("no HTTP answer from {addr} within {timeout:?}"))?
}

/// A response with a body.
pub fn response(
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Message {
    Message {
        start: format!("HTTP/1.1 {status} {reason}"),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.into(),
    }
}
