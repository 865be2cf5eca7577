//! loxilb's wire format, as kube-loxilb and loxicmd use it.
//!
//! These types mirror the JSON exactly and carry no meaning of their own:
//! [`crate::model`] validates them into typed services. They read `--config`
//! files (JSON or YAML) and API bodies alike.
//!
//! Input rules:
//! - Field names match case-insensitively. kube-loxilb sends `BGP` and
//!   `Monitor` where loxilb's schema says `bgp` and `monitor` (Go's decoder
//!   ignores case), so [`decode`] first reads the text into a
//!   `serde_json::Value`, renames every key that matches a canonical name
//!   ignoring ASCII case (recursively, following [`Shape`]), and only then
//!   deserializes the typed struct. A key given twice in different cases is
//!   an error rather than a silent choice.
//! - Unknown fields are ignored (kube-loxilb sends fields floatlb has no use
//!   for, such as newer HTTP-proxy options).
//! - Type errors name the field path and the value
//!   (`serviceArguments.port = "80": invalid type...`).
//!
//! Output uses loxilb's casing (the names below).

use std::fmt;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use utoipa::ToSchema;

/// `{"lbAttr":[...]}`: what `GET /config/loadbalancer/all` answers and what a
/// `--config` file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LbList {
    #[serde(rename = "lbAttr", default)]
    pub lb_attr: Vec<LbEntry>,
}

/// One load-balancer rule (loxilb's `LoadbalanceEntry`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LbEntry {
    #[serde(rename = "serviceArguments")]
    pub service_arguments: LbServiceArgs,
    /// SCTP multihoming addresses; floatlb refuses a non-empty list.
    #[serde(rename = "secondaryIPs", default)]
    pub secondary_ips: Vec<SecondaryIp>,
    /// Source prefixes allowed to reach the service (a Service's
    /// `loadBalancerSourceRanges`); empty means everyone.
    #[serde(rename = "allowedSources", default)]
    pub allowed_sources: Vec<AllowedSource>,
    #[serde(default)]
    pub endpoints: Vec<LbEndpoint>,
}

/// `serviceArguments`, with every field kube-loxilb sends. Integers are kept
/// wide (`i64`) so that an out-of-range value gets a validation error naming
/// it instead of a bare decoder error.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LbServiceArgs {
    /// The address clients use (on AWS the Elastic IP's public address).
    #[serde(rename = "externalIP")]
    pub external_ip: String,
    /// The private VIP the external address maps to; `""` when unset.
    #[serde(rename = "privateIP", default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    pub port: i64,
    /// End of a port range; floatlb accepts only 0 or `port`.
    #[serde(rename = "portMax", default, skip_serializing_if = "Option::is_none")]
    pub port_max: Option<i64>,
    /// `tcp` or `udp` (`sctp` and `icmp` are refused).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// 0 round robin, 1 hash (Maglev), 2 priority, 3 persist.
    #[serde(default)]
    pub sel: i64,
    /// 1 one-arm, 2 fullnat.
    #[serde(default)]
    pub mode: i64,
    /// Must be false: floatlb does not speak BGP.
    #[serde(default)]
    pub bgp: bool,
    /// Endpoint health monitoring (stored, no effect yet).
    #[serde(default)]
    pub monitor: bool,
    #[serde(
        rename = "inactiveTimeOut",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inactive_timeout: Option<i64>,
    /// Must be 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub block: i64,
    /// Informational (kube-loxilb sets it); echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
    #[serde(default)]
    pub probetype: String,
    #[serde(default)]
    pub probeport: i64,
    #[serde(default)]
    pub probereq: String,
    #[serde(default)]
    pub proberesp: String,
    #[serde(rename = "probeRetries", default, skip_serializing_if = "is_zero")]
    pub probe_retries: i64,
    #[serde(rename = "probeTimeout", default, skip_serializing_if = "is_zero")]
    pub probe_timeout: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 0 create or update, 1 attach endpoints, 2 detach endpoints.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub oper: i64,
    /// Must be 0 (plain).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub security: i64,
    /// Must be empty (ingress host rules are not supported).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Must be false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub proxyprotocolv2: bool,
    /// Must be false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub egress: bool,
    /// Must be false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub snat: bool,
}

fn default_protocol() -> String {
    "tcp".into()
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// One backend.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LbEndpoint {
    #[serde(rename = "endpointIP")]
    pub endpoint_ip: String,
    #[serde(rename = "targetPort")]
    pub target_port: i64,
    #[serde(default = "default_weight")]
    pub weight: i64,
    /// Output only (loxilb reports the endpoint's state); ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Output only (loxilb reports `packets:bytes`); ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<String>,
}

fn default_weight() -> i64 {
    1
}

/// `{"secondaryIP": "..."}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SecondaryIp {
    #[serde(rename = "secondaryIP", default)]
    pub secondary_ip: String,
}

/// `{"prefix": "10.0.0.0/8"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AllowedSource {
    #[serde(default)]
    pub prefix: String,
}

/// `GET /config/cistate/all`: `{"Attr":[...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CiStateList {
    #[serde(rename = "Attr")]
    pub attr: Vec<CiStateEntry>,
}

/// One HA instance as loxilb reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CiStateEntry {
    pub instance: String,
    /// MASTER, BACKUP, FAULT, STOP or NOT_DEFINED.
    pub state: String,
    /// loxilb's sync state; floatlb answers null.
    pub sync: Option<i64>,
    pub vip: String,
}

/// `POST /config/cistate` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CiStateBody {
    #[serde(default)]
    pub instance: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub vip: String,
}

/// `GET /config/bfd/all`: `{"Attr":[...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct BfdList {
    #[serde(rename = "Attr")]
    pub attr: Vec<BfdSession>,
}

/// One BFD session (loxilb's `BfdGetEntry`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct BfdSession {
    pub instance: String,
    #[serde(rename = "remoteIp")]
    pub remote_ip: String,
    #[serde(rename = "sourceIP")]
    pub source_ip: String,
    pub port: u16,
    /// Transmit interval, microseconds.
    pub interval: u64,
    /// Detect multiplier.
    #[serde(rename = "retryCount")]
    pub retry_count: u8,
    /// BFD state, e.g. `BFDUp`.
    pub state: String,
}

/// `POST /config/bfd` body (loxilb's `BfdEntry`, what `loxicmd set bfd` sends).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct BfdBody {
    #[serde(default)]
    pub instance: String,
    #[serde(rename = "remoteIp", default)]
    pub remote_ip: String,
    #[serde(rename = "sourceIp", default)]
    pub source_ip: String,
    /// Transmit interval, microseconds.
    #[serde(default)]
    pub interval: Option<i64>,
    /// Detect multiplier.
    #[serde(rename = "retryCount", default)]
    pub retry_count: Option<i64>,
}

/// `GET /config/conntrack/all`: `{"ctAttr":[...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ConntrackList {
    #[serde(rename = "ctAttr")]
    pub ct_attr: Vec<ConntrackEntry>,
}

/// One tracked flow (loxilb's `ConntrackEntry`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ConntrackEntry {
    #[serde(rename = "destinationIP")]
    pub destination_ip: String,
    #[serde(rename = "sourceIP")]
    pub source_ip: String,
    #[serde(rename = "destinationPort")]
    pub destination_port: u16,
    #[serde(rename = "sourcePort")]
    pub source_port: u16,
    pub protocol: String,
    #[serde(rename = "conntrackState")]
    pub conntrack_state: String,
    pub ident: String,
    #[serde(rename = "conntrackAct")]
    pub conntrack_act: String,
    pub packets: u64,
    pub bytes: u64,
    #[serde(rename = "servName")]
    pub serv_name: String,
}

/// `GET /config/endpoint/all`: `{"Attr":[...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct EndpointList {
    #[serde(rename = "Attr")]
    pub attr: Vec<EndpointState>,
}

/// One endpoint's health (loxilb's `EndPointGetEntry`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct EndpointState {
    #[serde(rename = "hostName")]
    pub host_name: String,
    pub name: String,
    #[serde(rename = "inactiveReTries")]
    pub inactive_retries: i64,
    #[serde(rename = "probeType")]
    pub probe_type: String,
    #[serde(rename = "probeReq")]
    pub probe_req: String,
    #[serde(rename = "probeResp")]
    pub probe_resp: String,
    #[serde(rename = "probeDuration")]
    pub probe_duration: i64,
    #[serde(rename = "probePort")]
    pub probe_port: u16,
    #[serde(rename = "minDelay")]
    pub min_delay: String,
    #[serde(rename = "avgDelay")]
    pub avg_delay: String,
    #[serde(rename = "maxDelay")]
    pub max_delay: String,
    #[serde(rename = "currState")]
    pub curr_state: String,
    /// Ours: the last probe's outcome, `ok` or why it failed (empty:
    /// never probed).
    #[serde(rename = "lastProbe", default)]
    pub last_probe: String,
    /// Ours: when the last probe ended, ms since the Unix epoch (0: never).
    #[serde(rename = "lastProbeTime", default)]
    pub last_probe_time: u64,
}

/// loxilb's error body: `{"code":409,"fields":null,"message":"...","result":"lbrule-exists error"}`.
/// kube-loxilb reads `result` as the error text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code.
    pub code: u16,
    /// The fields at fault, when known.
    pub fields: Option<Vec<String>>,
    /// What went wrong, naming the field and the value.
    pub message: String,
    /// loxilb's result text (`lbrule-exists error`, `lbrule not-exists error`, ...).
    pub result: String,
}

/// `{"result":"Success"}`: the only answer kube-loxilb counts as success.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SuccessBody {
    #[schema(example = "Success")]
    pub result: String,
}

impl SuccessBody {
    pub fn success() -> Self {
        Self {
            result: "Success".into(),
        }
    }
}

/// `GET /version`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct VersionBody {
    pub version: String,
    #[serde(rename = "buildInfo")]
    pub build_info: String,
}

/// Where in a text the decoder failed (a field path and its value, if any).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The text is not JSON/YAML at all.
    #[error("not valid {format}: {message}")]
    Syntax {
        format: &'static str,
        message: String,
    },
    /// The text parsed but a field has the wrong type or is missing.
    #[error("invalid {field} = {value}: {reason}")]
    Field {
        field: String,
        value: String,
        reason: String,
    },
}

/// The nested field names of a wire type, so keys can be matched ignoring case.
pub struct Shape {
    pub fields: &'static [(&'static str, Option<&'static Shape>)],
}

/// Types read with case-insensitive field names.
pub trait Wire: DeserializeOwned {
    const SHAPE: &'static Shape;
}

const ENDPOINT_SHAPE: Shape = Shape {
    fields: &[
        ("endpointIP", None),
        ("targetPort", None),
        ("weight", None),
        ("state", None),
        ("counter", None),
    ],
};
const ARGS_SHAPE: Shape = Shape {
    fields: &[
        ("externalIP", None),
        ("privateIP", None),
        ("port", None),
        ("portMax", None),
        ("protocol", None),
        ("sel", None),
        ("mode", None),
        ("bgp", None),
        ("monitor", None),
        ("inactiveTimeOut", None),
        ("block", None),
        ("managed", None),
        ("probetype", None),
        ("probeport", None),
        ("probereq", None),
        ("proberesp", None),
        ("probeRetries", None),
        ("probeTimeout", None),
        ("name", None),
        ("oper", None),
        ("security", None),
        ("host", None),
        ("proxyprotocolv2", None),
        ("egress", None),
        ("snat", None),
    ],
};
const ENTRY_SHAPE: Shape = Shape {
    fields: &[
        ("serviceArguments", Some(&ARGS_SHAPE)),
        (
            "secondaryIPs",
            Some(&Shape {
                fields: &[("secondaryIP", None)],
            }),
        ),
        (
            "allowedSources",
            Some(&Shape {
                fields: &[("prefix", None)],
            }),
        ),
        ("endpoints", Some(&ENDPOINT_SHAPE)),
    ],
};

impl Wire for LbList {
    const SHAPE: &'static Shape = &Shape {
        fields: &[("lbAttr", Some(&ENTRY_SHAPE))],
    };
}

impl Wire for LbEntry {
    const SHAPE: &'static Shape = &ENTRY_SHAPE;
}

impl Wire for CiStateBody {
    const SHAPE: &'static Shape = &Shape {
        fields: &[("instance", None), ("state", None), ("vip", None)],
    };
}

impl Wire for BfdBody {
    const SHAPE: &'static Shape = &Shape {
        fields: &[
            ("instance", None),
            ("remoteIp", None),
            ("sourceIp", None),
            ("interval", None),
            ("retryCount", None),
        ],
    };
}

/// Renames the keys of `value` (an object, or an array of objects) to the
/// canonical names of `shape`, ignoring ASCII case, recursively. `at` is the
/// path of `value`, for errors.
fn normalize(value: &mut Value, shape: &Shape, at: &str) -> Result<(), DecodeError> {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                normalize(item, shape, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (key, mut v) in old {
                let found = shape
                    .fields
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(&key));
                let Some(&(name, child)) = found else {
                    continue; // unknown fields are ignored
                };
                let path = join(at, name);
                if map.contains_key(name) {
                    return Err(DecodeError::Field {
                        field: path,
                        value: format!("{key:?}"),
                        reason: "the field is given twice (names match ignoring case)".into(),
                    });
                }
                if let Some(child) = child {
                    normalize(&mut v, child, &path)?;
                }
                map.insert(name.to_string(), v);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else {
        format!("{at}.{name}")
    }
}

/// The text format of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "JSON",
            Self::Yaml => "YAML",
        })
    }
}

/// The text as a JSON value tree: JSON, or YAML read into the same model.
fn parse_value(text: &[u8], format: Format) -> Result<Value, DecodeError> {
    let value: Value = match format {
        Format::Json => serde_json::from_slice(text).map_err(|e| DecodeError::Syntax {
            format: "JSON",
            message: e.to_string(),
        })?,
        Format::Yaml => serde_norway::from_slice(text).map_err(|e| DecodeError::Syntax {
            format: "YAML",
            message: e.to_string(),
        })?,
    };
    if !value.is_object() {
        return Err(DecodeError::Syntax {
            format: if format == Format::Json {
                "JSON"
            } else {
                "YAML"
            },
            message: "expected an object".into(),
        });
    }
    Ok(value)
}

/// Decodes `text` into `T`, matching field names case-insensitively and
/// ignoring unknown ones. `at` prefixes field paths in errors (`""` for none).
pub fn decode<T: Wire>(text: &[u8], format: Format, at: &str) -> Result<T, DecodeError> {
    let mut value = parse_value(text, format)?;
    normalize(&mut value, T::SHAPE, at)?;
    // No copy of the tree is kept for the error message (a 10,000-service
    // file is a tree of ~100 MB): the rare failure parses the text again.
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let shown = parse_value(text, format)
            .ok()
            .and_then(|mut v| {
                normalize(&mut v, T::SHAPE, at).ok()?;
                lookup(&v, e.path()).map(|v| v.to_string())
            })
            .unwrap_or_else(|| "(missing)".into());
        let field = if inner == "." {
            at.to_string()
        } else {
            join(at, &inner)
        };
        DecodeError::Field {
            field,
            value: shown,
            reason: e.into_inner().to_string(),
        }
    })
}

/// The value at a serde path, if it exists.
fn lookup<'a>(root: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    let mut cur = root;
    for seg in path.iter() {
        cur = match seg {
            Segment::Seq { index } => cur.get(*index)?,
            Segment::Map { key } => cur.get(key.as_str())?,
            Segment::Enum { .. } | Segment::Unknown => return None,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_ignoring_case_and_unknown_keys_are_dropped() {
        let e: LbEntry = decode(
            br#"{"SERVICEARGUMENTS":{"EXTERNALIP":"1.2.3.4","Port":80,"BGP":true,"Monitor":true,"xyz":1},
                "Endpoints":[{"EndpointIp":"10.0.0.1","TARGETPORT":8080}]}"#,
            Format::Json,
            "",
        )
        .unwrap();
        assert_eq!(e.service_arguments.external_ip, "1.2.3.4");
        assert!(e.service_arguments.bgp && e.service_arguments.monitor);
        assert_eq!(e.endpoints[0].target_port, 8080);
        assert_eq!(e.endpoints[0].weight, 1);
    }

    #[test]
    fn a_key_given_twice_in_two_cases_is_refused() {
        let err = decode::<LbEntry>(
            br#"{"serviceArguments":{"externalIP":"1.2.3.4","port":80,"bgp":false,"BGP":true}}"#,
            Format::Json,
            "",
        )
        .unwrap_err();
        assert!(err.to_string().contains("serviceArguments.bgp"), "{err}");
    }

    #[test]
    fn type_errors_name_path_and_value() {
        let err = decode::<LbList>(
            br#"{"lbAttr":[{"serviceArguments":{"externalIP":"1.2.3.4","port":"80"}}]}"#,
            Format::Json,
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("invalid lbAttr[0].serviceArguments.port = \"80\":"),
            "{err}"
        );
    }

    #[test]
    fn output_uses_loxilb_casing() {
        let e: LbEntry = decode(
            br#"{"serviceArguments":{"externalIP":"1.2.3.4","port":80,"BGP":false}}"#,
            Format::Json,
            "",
        )
        .unwrap();
        let out = serde_json::to_value(&e).unwrap();
        let args = out["serviceArguments"].as_object().unwrap();
        assert!(args.contains_key("bgp") && args.contains_key("externalIP"));
        assert!(!args.contains_key("BGP"));
    }
}
