//! Responses in loxilb's shape: `Content-Type: application/json` exactly (no
//! charset: kube-loxilb decodes a GET answer only then), and every error as
//! `{"code","fields","message","result"}` whose message names the field and
//! the value.

use axum::{
    body::Body,
    extract::rejection::BytesRejection,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{
    command::CommandError,
    model::ConfigError,
    wire::{DecodeError, ErrorBody},
};

/// The one content type of every answer.
pub const JSON: &str = "application/json";

/// `body` as JSON with status `status`.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|e| {
        // Serializing plain data structs cannot fail; still answer JSON.
        format!(r#"{{"code":500,"fields":null,"message":"cannot encode the answer: {e}","result":"internal error"}}"#)
            .into_bytes()
    });
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    resp
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub field: Option<String>,
    pub message: String,
    pub result: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status,
            field: None,
            result: message.clone(),
            message,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong Authorization header (send the API token, raw or as \"Bearer <token>\")",
        )
    }

    pub fn not_found_path(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no such path {path:?}"))
    }

    pub fn timeout(secs: f64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took more than {secs} s; try again"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A body that does not decode: 400 naming the field, or the syntax error.
    pub fn decode(e: DecodeError) -> Self {
        match e {
            DecodeError::Syntax { format, message } => Self {
                status: StatusCode::BAD_REQUEST,
                field: Some("body".into()),
                message: format!("invalid body: not valid {format}: {message}"),
                result: format!("invalid body: not valid {format}: {message}"),
            },
            DecodeError::Field {
                field,
                value,
                reason,
            } => CommandError::Invalid {
                field,
                value,
                reason,
            }
            .into(),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        Self {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            field: e.field().map(str::to_string),
            message: e.to_string(),
            result: e.result(),
        }
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        CommandError::from(e).into()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "the body is larger than the limit of {} bytes",
                crate::router::BODY_LIMIT
            )
        } else {
            format!("cannot read the body: {}", r.body_text())
        };
        Self {
            status,
            field: Some("body".into()),
            result: message.clone(),
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json(
            self.status,
            &ErrorBody {
                code: self.status.as_u16(),
                fields: self.field.map(|f| vec![f]),
                message: self.message,
                result: self.result,
            },
        )
    }
}
