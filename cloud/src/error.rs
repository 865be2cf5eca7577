//! Errors of the cloud providers, and how they are classified for retrying.

use std::time::Duration;

/// How an error should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, connection failures: retried with backoff.
    Transient,
    /// The resource is not in the needed state yet (eventual consistency):
    /// the caller polls.
    NotReady,
    /// The resource does not exist (idempotent deletes treat it as done).
    NotFound,
    /// Missing permission: fails fast.
    Denied,
    /// Invalid parameter, conflict, anything else: fails fast.
    Fatal,
}

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// An API call failed; `code` is the service's error code when it sent one.
    #[error("{call} failed ({class:?}{}): {message}", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Api {
        call: String,
        class: ErrorClass,
        code: Option<String>,
        message: String,
    },
    /// Permission missing: names the action and the policy that grants it.
    #[error(
        "{call} denied ({code}): {message}; grant ec2:{action} to this node's role (see iam/policy.json)"
    )]
    Denied {
        call: String,
        action: String,
        code: String,
        message: String,
    },
    #[error(
        "cannot read the instance identity from the EC2 metadata service (IMDSv2) at {endpoint}: {reason}; run on an EC2 instance with IMDSv2 enabled, or set AWS_EC2_METADATA_SERVICE_ENDPOINT"
    )]
    NoImds { endpoint: String, reason: String },
    #[error(
        "no AWS credentials: {reason}; attach an instance role (instance profile), or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
    )]
    NoCredentials { reason: String },
    #[error("invalid {field} = {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("{what} did not reach {state} within {waited:?}")]
    Timeout {
        what: String,
        state: String,
        waited: Duration,
    },
    /// Another cluster (or a human) owns a resource we would have to touch.
    #[error("{resource} belongs to someone else ({why}); refusing to touch it")]
    Foreign { resource: String, why: String },
    #[error("netlink: {op}: {message}")]
    Netlink { op: String, message: String },
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
}

impl CloudError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api { class, .. } => *class,
            Self::Denied { .. } => ErrorClass::Denied,
            Self::Timeout { .. } => ErrorClass::Transient,
            _ => ErrorClass::Fatal,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    pub fn is_not_found(&self) -> bool {
        self.class() == ErrorClass::NotFound
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => code.as_deref(),
            Self::Denied { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The service's message (API errors only).
    pub fn api_message(&self) -> Option<&str> {
        match self {
            Self::Api { message, .. } | Self::Denied { message, .. } => Some(message),
            _ => None,
        }
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Classifies an EC2 error code (and the HTTP status when there is no code).
pub fn classify_code(code: Option<&str>, http_status: Option<u16>) -> ErrorClass {
    match code {
        Some(
            "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "RequestThrottled"
            | "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "Unavailable"
            | "RequestTimeout"
            | "RequestTimeoutException",
        ) => ErrorClass::Transient,
        Some(
            "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" | "AuthFailure",
        ) => ErrorClass::Denied,
        Some(
            "InvalidNetworkInterface.InUse"
            | "IncorrectState"
            | "IncorrectInstanceState"
            | "DependencyViolation"
            | "InvalidAttachment.NotFound"
            | "InvalidParameterValue.AttachmentInProgress",
        ) => ErrorClass::NotReady,
        Some(c) if c.ends_with(".NotFound") || c.ends_with("NotFound") => ErrorClass::NotFound,
        Some(_) => ErrorClass::Fatal,
        None => match http_status {
            Some(s) if s >= 500 || s == 429 => ErrorClass::Transient,
            Some(403) => ErrorClass::Denied,
            _ => ErrorClass::Fatal,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ec2_codes() {
        let cases: &[(Option<&str>, Option<u16>, ErrorClass)] = &[
            (
                Some("RequestLimitExceeded"),
                Some(503),
                ErrorClass::Transient,
            ),
            (Some("InternalError"), Some(500), ErrorClass::Transient),
            (None, Some(500), ErrorClass::Transient),
            (None, Some(502), ErrorClass::Transient),
            (Some("UnauthorizedOperation"), Some(403), ErrorClass::Denied),
            (Some("AccessDenied"), Some(403), ErrorClass::Denied),
            (Some("InvalidParameterValue"), Some(400), ErrorClass::Fatal),
            (Some("InvalidSubnet.Conflict"), Some(400), ErrorClass::Fatal),
            (
                Some("InvalidNetworkInterfaceID.NotFound"),
                Some(400),
                ErrorClass::NotFound,
            ),
            (
                Some("InvalidRoute.NotFound"),
                Some(400),
                ErrorClass::NotFound,
            ),
            (
                Some("InvalidNetworkInterface.InUse"),
                Some(400),
                ErrorClass::NotReady,
            ),
            (Some("DependencyViolation"), Some(400), ErrorClass::NotReady),
            (None, Some(400), ErrorClass::Fatal),
        ];
        for (code, status, want) in cases {
            assert_eq!(classify_code(*code, *status), *want, "{code:?} {status:?}");
        }
    }

    #[test]
    fn denied_message_says_what_and_how() {
        let e = CloudError::Denied {
            call: "ec2:CreateSubnet".into(),
            action: "CreateSubnet".into(),
            code: "UnauthorizedOperation".into(),
            message: "not authorized".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("ec2:CreateSubnet") && s.contains("iam/policy.json"),
            "{s}"
        );
    }
}
