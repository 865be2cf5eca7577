//! Streaming a scrape: the registry is encoded on a blocking thread into
//! chunks of [`CHUNK`] bytes that go to the HTTP body as they are made, so
//! a scrape of 10,000 services (23 MB of text) never holds the whole
//! text, and the Prometheus text format is made line by line ([`Classic`])
//! instead of as a second copy. A client that goes away stops the encode.

use std::{fmt, sync::Arc};

use axum::body::Bytes;
use tokio::sync::mpsc;

use super::Metrics;

/// Bytes per body chunk (at most; cut at a line end).
pub const CHUNK: usize = 64 * 1024;

/// OpenMetrics text to the Prometheus text format 0.0.4, a line at a time:
/// a counter's HELP and TYPE lines name its `_total` samples, and the
/// `# EOF` and `# UNIT` lines go. A HELP line is held until its TYPE line
/// says whether the family is a counter.
#[derive(Debug, Default)]
pub struct Classic {
    held: Option<String>,
}

impl Classic {
    /// Converts one line (without its newline) into `out`.
    pub fn line(&mut self, line: &str, out: &mut String) {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            return;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            self.release(out);
            self.held = Some(rest.to_string());
            return;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            if let Some(help) = self.held.take() {
                let tail = help
                    .strip_prefix(name)
                    .and_then(|t| t.strip_prefix(' '))
                    .unwrap_or("");
                out.push_str(&format!("# HELP {name}_total {tail}\n"));
            }
            out.push_str(&format!("# TYPE {name}_total counter\n"));
            return;
        }
        self.release(out);
        out.push_str(line);
        out.push('\n');
    }

    /// Writes a held HELP line unchanged.
    pub fn release(&mut self, out: &mut String) {
        if let Some(help) = self.held.take() {
            out.push_str("# HELP ");
            out.push_str(&help);
            out.push('\n');
        }
    }
}

/// Collects encoded text and sends it in chunks.
struct Chunks {
    buf: String,
    classic: Option<Classic>,
    tx: mpsc::Sender<Bytes>,
}

impl Chunks {
    fn send(&mut self, all: bool) -> fmt::Result {
        let cut = if all {
            self.buf.len()
        } else {
            match self.buf.rfind('\n') {
                Some(i) => i + 1,
                None => return Ok(()),
            }
        };
        let rest = self.buf.split_off(cut);
        let done = std::mem::replace(&mut self.buf, rest);
        let out = match &mut self.classic {
            None => done,
            Some(c) => {
                let mut out = String::with_capacity(done.len() + 64);
                for l in done.lines() {
                    c.line(l, &mut out);
                }
                if all {
                    c.release(&mut out);
                }
                out
            }
        };
        if out.is_empty() {
            return Ok(());
        }
        // The client went away: stop encoding.
        self.tx
            .blocking_send(Bytes::from(out))
            .map_err(|_| fmt::Error)
    }
}

impl fmt::Write for Chunks {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.buf.push_str(s);
        if self.buf.len() >= CHUNK {
            self.send(false)?;
        }
        Ok(())
    }
}

/// Starts a scrape; its text arrives on the returned receiver, in the
/// Prometheus text format when `classic`, else OpenMetrics.
pub fn start(metrics: Arc<Metrics>, classic: bool) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let _one = metrics.scraping.lock().await;
        metrics.sources.refresh().await;
        let m = metrics.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut w = Chunks {
                buf: String::with_capacity(CHUNK + 4096),
                classic: classic.then(Classic::default),
                tx,
            };
            if prometheus_client::encoding::text::encode(&mut w, &m.registry).is_ok() {
                let _ = w.send(true);
            }
        })
        .await;
        metrics.sources.clear();
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams `text` as the encoder would write it, in pieces of `piece`.
    fn chunked(text: &str, piece: usize, classic: bool) -> (String, usize) {
        let (tx, mut rx) = mpsc::channel(1 << 16);
        let mut w = Chunks {
            buf: String::new(),
            classic: classic.then(Classic::default),
            tx,
        };
        let mut rest = text;
        while !rest.is_empty() {
            let mut n = piece.min(rest.len());
            while !rest.is_char_boundary(n) {
                n += 1;
            }
            fmt::Write::write_str(&mut w, &rest[..n]).unwrap();
            rest = &rest[n..];
        }
        w.send(true).unwrap();
        drop(w);
        let (mut out, mut chunks) = (String::new(), 0);
        while let Ok(b) = rx.try_recv() {
            // A chunk is cut at the first line end past CHUNK (plus what the
            // conversion adds).
            assert!(b.len() <= (CHUNK + piece) * 11 / 10, "chunk of {}", b.len());
            out.push_str(std::str::from_utf8(&b).unwrap());
            chunks += 1;
        }
        (out, chunks)
    }

    #[test]
    fn streamed_chunks_make_the_same_text_as_a_whole_conversion() {
        let mut om = String::new();
        for i in 0..20_000 {
            om.push_str(&format!(
                "# HELP floatlb_c{i} Help {i}.\n# TYPE floatlb_c{i} counter\nfloatlb_c{i}_total{{a=\"x\"}} {i}\n# HELP floatlb_g{i} G.\n# TYPE floatlb_g{i} gauge\nfloatlb_g{i} 1\n"
            ));
        }
        om.push_str("# EOF\n");
        let whole = super::super::classic(&om);
        assert!(
            whole.contains("# HELP floatlb_c7_total Help 7.\n# TYPE floatlb_c7_total counter\n")
        );
        assert!(whole.contains("# HELP floatlb_g7 G.\n# TYPE floatlb_g7 gauge\n"));
        assert!(!whole.contains("# EOF"));
        for piece in [7, 100, 5000] {
            let (out, chunks) = chunked(&om, piece, true);
            assert_eq!(out, whole, "piece {piece}");
            assert!(chunks > 10, "{chunks} chunks");
            assert_eq!(chunked(&om, piece, false).0, om);
        }
    }
}
