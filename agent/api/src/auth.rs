//! The API token (`--api-token-file`).
//!
//! kube-loxilb sends the raw token as `Authorization: <token>`; other clients
//! send `Bearer <token>`. Both are accepted, compared in constant time
//! (`subtle`), so the answer time does not reveal how much of a guess was
//! right. Only the liveness probe `GET /netlox/v1` goes without a token.

use std::{fmt, path::Path, sync::Arc};

use subtle::ConstantTimeEq;

/// Errors reading a token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the API token file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the API token file {path} is empty")]
    Empty { path: String },
    #[error(
        "the API token in {path} holds whitespace or control characters; use one line of printable text"
    )]
    Bad { path: String },
}

/// A shared secret; its `Debug` form never shows it.
#[derive(Clone)]
pub struct ApiToken(Arc<[u8]>);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiToken {
    /// A token from its text (surrounding whitespace removed). `None` when
    /// empty or when it holds whitespace or control characters, which no
    /// HTTP header could carry intact.
    pub fn new(token: &str) -> Option<Self> {
        let t = token.trim();
        if t.is_empty()
            || t.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return None;
        }
        Some(Self(t.as_bytes().into()))
    }

    /// Reads the token from a file (one line; a trailing newline is fine).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        if text.trim().is_empty() {
            return Err(TokenError::Empty { path: shown });
        }
        Self::new(&text).ok_or(TokenError::Bad { path: shown })
    }

    /// Whether an `Authorization` header value carries this token, raw or
    /// after `Bearer ` (scheme matched ignoring case).
    pub fn accepts(&self, header: &[u8]) -> bool {
        let given = match header.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &header[7..],
            _ => header,
        };
        let given = given.trim_ascii();
        bool::from(given.ct_eq(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_bearer_forms_are_accepted_and_nothing_else() {
        let t = ApiToken::new("s3cret\n").unwrap();
        assert!(t.accepts(b"s3cret"));
        assert!(t.accepts(b"Bearer s3cret"));
        assert!(t.accepts(b"bearer s3cret"));
        for bad in [
            &b"s3cre"[..],
            b"s3cretX",
            b"Bearer s3cre",
            b"Basic s3cret",
            b"",
        ] {
            assert!(!t.accepts(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(ApiToken::new("  ").is_none());
        assert!(ApiToken::new("a b").is_none());
        assert_eq!(format!("{t:?}"), "ApiToken(..)");
    }
}
