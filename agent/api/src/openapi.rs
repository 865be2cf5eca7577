//! The OpenAPI 3.1 document, generated from the code with utoipa.
//!
//! Each handler's `#[utoipa::path]` gives its success answer and body; the
//! error answers are added here from one table ([`ERRORS`]), so every status
//! a path can answer (400, 401, 403, 404, 409, 413, 500, 503) is in the
//! document with the [`ErrorBody`] schema. The checked-in copy
//! `agent/api/openapi.json` is compared with this in a test; regenerate it
//! with `UPDATE_OPENAPI=1 cargo test -p floatlb-api --test openapi`.

use std::sync::OnceLock;

use utoipa::{
    OpenApi,
    openapi::{
        ContentBuilder, Ref, ResponseBuilder,
        security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme},
    },
};

use crate::{
    command::{
        BfdStatus, CiRole, FloatingStatus, HaMode, StatusReport, TransitionList, TransitionRecord,
    },
    router,
    wire::{
        AllowedSource, BfdBody, BfdList, BfdSession, CiStateBody, CiStateEntry, CiStateList,
        ConntrackEntry, ConntrackList, EndpointList, EndpointState, ErrorBody, LbEndpoint, LbEntry,
        LbList, LbServiceArgs, SecondaryIp, SuccessBody, VersionBody,
    },
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "floatlb API",
        version = "v1",
        description = "loxilb-compatible REST API of floatlb, as kube-loxilb drives it. \
Field names in bodies match case-insensitively; unknown fields are ignored. \
Every answer is `Content-Type: application/json`; errors are `{code, fields, message, result}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        router::liveness,
        router::post_lb,
        router::get_lb,
        router::delete_all,
        router::delete_by_key,
        router::delete_by_name,
        router::get_cistate,
        router::post_cistate,
        router::get_bfd,
        router::post_bfd,
        router::get_conntrack,
        router::get_endpoints,
        router::get_status,
        router::get_transitions,
        router::get_version,
        router::get_openapi,
        crate::health::health_by_name,
        crate::health::health_by_key,
    ),
    components(schemas(
        ErrorBody,
        SuccessBody,
        LbList,
        LbEntry,
        LbServiceArgs,
        LbEndpoint,
        SecondaryIp,
        AllowedSource,
        CiStateList,
        CiStateEntry,
        CiStateBody,
        CiRole,
        BfdList,
        BfdSession,
        BfdBody,
        ConntrackList,
        ConntrackEntry,
        EndpointList,
        EndpointState,
        VersionBody,
        crate::health::HealthAnswer,
        StatusReport,
        HaMode,
        BfdStatus,
        FloatingStatus,
        TransitionRecord,
        TransitionList,
    ))
)]
struct ApiDoc;

const CMD_GET: &[u16] = &[401, 500, 503];

/// The error statuses of each operation: `(method, path, statuses)`.
pub const ERRORS: &[(&str, &str, &[u16])] = &[
    ("get", "/netlox/v1", &[]),
    (
        "post",
        "/netlox/v1/config/loadbalancer",
        &[400, 401, 403, 404, 409, 413, 500, 503],
    ),
    ("get", "/netlox/v1/config/loadbalancer/all", CMD_GET),
    ("delete", "/netlox/v1/config/loadbalancer/all", CMD_GET),
    (
        "delete",
        "/netlox/v1/config/loadbalancer/externalipaddress/{ip}/port/{port}/protocol/{proto}",
        &[400, 401, 404, 413, 500, 503],
    ),
    (
        "delete",
        "/netlox/v1/config/loadbalancer/name/{name}",
        &[400, 401, 404, 500, 503],
    ),
    ("get", "/netlox/v1/config/cistate/all", CMD_GET),
    (
        "post",
        "/netlox/v1/config/cistate",
        &[400, 401, 409, 413, 500, 503],
    ),
    ("get", "/netlox/v1/config/bfd/all", CMD_GET),
    (
        "post",
        "/netlox/v1/config/bfd",
        &[400, 401, 404, 409, 413, 500, 503],
    ),
    ("get", "/netlox/v1/config/conntrack/all", CMD_GET),
    ("get", "/netlox/v1/config/endpoint/all", CMD_GET),
    ("get", "/netlox/v1/status", CMD_GET),
    ("get", "/netlox/v1/ha/transitions", CMD_GET),
    ("get", "/netlox/v1/version", &[401, 503]),
    ("get", "/netlox/v1/openapi.json", &[401, 503]),
    // 503 is the health verdict itself (HealthAnswer), listed by the path.
    ("get", "/health/lb/{name}", &[400, 401, 404, 500]),
    (
        "get",
        "/health/lb/{ip}/{port}/{proto}",
        &[400, 401, 404, 500],
    ),
];

fn describe(code: u16) -> &'static str {
    match code {
        400 => {
            "Malformed JSON, an invalid field, or a feature floatlb does not support; the message names the field and the value"
        }
        401 => "Missing or wrong token (`Authorization: <token>` or `Bearer <token>`)",
        403 => "Capacity insufficient: --max-services reached",
        404 => "The rule (or session) does not exist; `result` says `not-exists`",
        409 => "An identical rule exists (`result` contains `exists`), or a conflicting request",
        413 => "Body larger than 1 MiB",
        500 => "Internal error (a bug)",
        503 => "The agent cannot answer now (shutting down, or the request timed out)",
        _ => "Error",
    }
}

/// The document, with error answers and the token scheme added.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "The API token (--api-token-file), raw as kube-loxilb sends it, or as `Bearer <token>`. Only needed when the agent has one.",
            ))),
        );
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("get", item.get.as_mut()),
            ("post", item.post.as_mut()),
            ("delete", item.delete.as_mut()),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let codes = ERRORS
                .iter()
                .find(|(m, p, _)| *m == method && p == path)
                .map_or(&[][..], |(_, _, c)| *c);
            for &code in codes {
                let resp = ResponseBuilder::new()
                    .description(describe(code))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build();
                op.responses.responses.insert(code.to_string(), resp.into());
            }
            op.security = Some(if codes.contains(&401) {
                vec![SecurityRequirement::new("token", Vec::<String>::new())]
            } else {
                vec![SecurityRequirement::default()]
            });
        }
    }
    doc
}

/// The document as pretty JSON (what `/netlox/v1/openapi.json` serves and
/// what is checked in).
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut s = document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        s.push('\n');
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_error_table_entry_and_back() {
        let doc = document();
        let mut seen = 0;
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("get", &item.get),
                ("post", &item.post),
                ("delete", &item.delete),
            ] {
                if op.is_some() {
                    seen += 1;
                    assert!(
                        ERRORS.iter().any(|(m, p, _)| *m == method && p == path),
                        "{method} {path} is missing from ERRORS"
                    );
                }
            }
        }
        assert_eq!(
            seen,
            ERRORS.len(),
            "ERRORS lists an operation the document lacks"
        );
        assert!(document_json().contains("\"openapi\": \"3.1.0\""));
    }
}
