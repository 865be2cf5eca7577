//! What the router sends to the agent's owner task, and what comes back.
//!
//! The API is parse-then-execute: a handler validates the request into one
//! [`Command`] (so a command is always well-formed), sends it as a
//! [`Request`] carrying a oneshot reply channel, and awaits the
//! [`Reply`] or [`CommandError`]. Handlers never touch agent state; the owner
//! task is the only writer, so commands are applied one at a time, in order.
//!
//! Errors map to HTTP codes as loxilb's do, with kube-loxilb's reading of them
//! in mind (it counts a create error whose text contains `exist` as success,
//! and retries a failed delete forever):
//!
//! | error | status | `result` |
//! |---|---|---|
//! | [`CommandError::NotFound`] | 404 | `<what>: not-exists error` (e.g. deleting an unknown rule, as loxilb) |
//! | [`CommandError::Exists`] | 409 | `<what>: exists error` (an identical re-POST, as loxilb) |
//! | [`CommandError::Invalid`] | 400 | `invalid <field> = <value>: <reason>` |
//! | [`CommandError::Unsupported`] | 400 | `not supported: <field> = <value>: <reason>` |
//! | [`CommandError::Limit`] | 403 | loxilb's "capacity insufficient" code (`--max-services` reached) |
//! | [`CommandError::Conflict`] | 409 | the reason; must not contain `exist` (kube-loxilb would read success) |
//! | [`CommandError::Unavailable`] | 503 | the reason (owner gone, shutting down, timed out) |
//!
//! The OpenAPI document lists, per path, only the statuses below; an owner
//! that answers a command with another error produces an undocumented answer
//! (schemathesis will flag it). Every command may also answer `Unavailable`.
//!
//! | command | errors the owner may answer |
//! |---|---|
//! | `UpsertService`, `AttachEndpoints`, `DetachEndpoints` | `Exists`, `NotFound` (attach/detach to an unknown rule), `Invalid`, `Unsupported`, `Limit`, `Conflict` |
//! | `DeleteService`, `DeleteServiceByName` | `NotFound` |
//! | `SetCiState` | `Invalid`, `Conflict` (e.g. refused under `--ka`) |
//! | `SetBfd` | `NotFound` (no such session), `Invalid`, `Conflict` |
//! | `DeleteAllServices` and every list/status command | none |
//! | `Health` | `NotFound` (no such service) |

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::ToSchema;

use crate::{
    model::{ConfigError, Endpoint, Service, ServiceKey},
    wire::{BfdList, CiStateList, ConntrackList, EndpointList, LbList},
};

/// One command with its reply channel.
#[derive(Debug)]
pub struct Request {
    pub cmd: Command,
    pub reply: oneshot::Sender<Result<Reply, CommandError>>,
}

/// A validated request for the owner task.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `POST /config/loadbalancer`, oper 0: create the service, or update it
    /// in place (endpoints diffed). An identical service may answer
    /// [`CommandError::Exists`] or [`Reply::Done`].
    UpsertService(Box<Service>),
    /// oper 1: add endpoints to the service `key`.
    AttachEndpoints {
        key: ServiceKey,
        endpoints: Vec<Endpoint>,
    },
    /// oper 2: remove endpoints from the service `key`.
    DetachEndpoints {
        key: ServiceKey,
        endpoints: Vec<Endpoint>,
    },
    /// `DELETE .../externalipaddress/{ip}/port/{port}/protocol/{proto}`.
    DeleteService(ServiceKey),
    /// `DELETE .../name/{name}`.
    DeleteServiceByName(String),
    /// `DELETE /config/loadbalancer/all`.
    DeleteAllServices,
    /// `GET /config/loadbalancer/all`: answer [`Reply::Services`].
    ListServices,
    /// `GET /config/cistate/all`: answer [`Reply::CiState`].
    ListCiState,
    /// `POST /config/cistate` (kube-loxilb's `--setRoles`).
    SetCiState(CiStateRequest),
    /// `GET /config/bfd/all`: answer [`Reply::Bfd`].
    ListBfd,
    /// `POST /config/bfd`: new interval and multiplier for the session to
    /// `remote_ip` (the only session when `None`).
    SetBfd {
        remote_ip: Option<Ipv4Addr>,
        interval_us: u32,
        multiplier: u8,
    },
    /// `GET /config/conntrack/all`: answer [`Reply::Conntrack`].
    ListConntrack,
    /// `GET /config/endpoint/all`: answer [`Reply::Endpoints`].
    ListEndpoints,
    /// `GET /status`: answer [`Reply::Status`].
    Status,
    /// `GET /ha/transitions`: answer [`Reply::Transitions`].
    Transitions,
    /// `GET /health/lb/...`: answer [`Reply::Health`] (or `NotFound`).
    Health(crate::health::HealthQuery),
}

/// A cluster-instance role as loxilb names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum CiRole {
    #[serde(rename = "MASTER")]
    Master,
    #[serde(rename = "BACKUP")]
    Backup,
    #[serde(rename = "FAULT")]
    Fault,
    #[serde(rename = "STOP")]
    Stop,
    #[serde(rename = "NOT_DEFINED")]
    NotDefined,
}

impl CiRole {
    pub const ALL: [Self; 5] = [
        Self::Master,
        Self::Backup,
        Self::Fault,
        Self::Stop,
        Self::NotDefined,
    ];

    /// loxilb's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "MASTER",
            Self::Backup => "BACKUP",
            Self::Fault => "FAULT",
            Self::Stop => "STOP",
            Self::NotDefined => "NOT_DEFINED",
        }
    }

    /// Parses loxilb's spelling exactly; any other value is an error.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A validated `POST /config/cistate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiStateRequest {
    /// `llb-inst0` unless given.
    pub instance: String,
    pub state: CiRole,
    /// kube-loxilb sends `0.0.0.0`.
    pub vip: Ipv4Addr,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 200 `{"result":"Success"}`.
    Done,
    Services(LbList),
    CiState(CiStateList),
    Bfd(BfdList),
    Conntrack(ConntrackList),
    Endpoints(EndpointList),
    Status(Box<StatusReport>),
    Transitions(TransitionList),
    Health(crate::health::HealthAnswer),
}

/// Why a command failed; see the module docs for the HTTP mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("invalid {field} = {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("not supported: {field} = {value}: {reason}")]
    Unsupported {
        field: String,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

impl CommandError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Exists(_) | Self::Conflict(_) => 409,
            Self::Invalid { .. } | Self::Unsupported { .. } => 400,
            Self::Limit(_) => 403,
            Self::Unavailable(_) => 503,
        }
    }

    /// loxilb's `result` text (what kube-loxilb reads).
    pub fn result(&self) -> String {
        match self {
            Self::NotFound(what) => format!("{what}: not-exists error"),
            Self::Exists(what) => format!("{what}: exists error"),
            other => other.to_string(),
        }
    }

    /// The field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } | Self::Unsupported { field, .. } => Some(field),
            _ => None,
        }
    }

    pub fn invalid(
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

impl From<ConfigError> for CommandError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid {
                field,
                value,
                reason,
            } => Self::Invalid {
                field,
                value,
                reason,
            },
            ConfigError::Unsupported {
                field,
                value,
                reason,
            } => Self::Unsupported {
                field,
                value,
                reason,
            },
            ConfigError::Syntax {
                path,
                format,
                message,
            } => Self::Invalid {
                field: path,
                value: format!("(not {format})"),
                reason: message,
            },
            ConfigError::Read { path, source } => Self::Unavailable(format!("{path}: {source}")),
        }
    }
}

/// How roles are decided on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HaMode {
    /// `--ka`: BFD elects.
    Ka,
    /// Roles come from `POST /config/cistate` (kube-loxilb `--setRoles`).
    Cistate,
    /// No peer: always active.
    Standalone,
}

/// `GET /status`: this node's HA state. The agent fills it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusReport {
    /// MASTER, BACKUP, FAULT, STOP or NOT_DEFINED.
    pub role: String,
    /// `--self`.
    pub self_id: u32,
    /// The peer's address (`--cluster`), if any.
    pub peer: Option<String>,
    pub mode: HaMode,
    pub bfd: Option<BfdStatus>,
    pub floating: Vec<FloatingStatus>,
    pub last_transition: Option<TransitionRecord>,
    pub version: String,
}

/// The BFD session to the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BfdStatus {
    pub state: String,
    pub remote_state: String,
    pub diag: String,
    pub interval_us: u32,
    pub multiplier: u8,
    /// When the session entered `state`, microseconds since the Unix epoch.
    pub since_unix_us: u64,
}

/// One floating address and where the cloud says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FloatingStatus {
    pub address: String,
    /// E.g. `eip` or `private-vip`.
    pub kind: String,
    /// The owner the cloud reports (instance or ENI id), if known.
    pub owner_per_cloud: Option<String>,
    /// True when this node holds it.
    pub held: bool,
}

/// One HA transition with its cloud report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TransitionRecord {
    pub seq: u64,
    pub at_unix_us: u64,
    pub old: String,
    pub new: String,
    pub reason: String,
    /// The cloud's state at the time, as the agent records it.
    pub cloud: Option<serde_json::Value>,
    /// The report of the cloud work this transition caused.
    pub report: Option<serde_json::Value>,
}

/// `GET /ha/transitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TransitionList {
    pub transitions: Vec<TransitionRecord>,
}
