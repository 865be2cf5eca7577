//! The checked-in OpenAPI document is the one the code generates, and the
//! served one is the same.

mod common;

use axum::http::{Method, StatusCode};

const REGEN: &str = "UPDATE_OPENAPI=1 cargo test -p floatlb-api --test openapi";

#[test]
fn checked_in_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = floatlb_api::openapi::document_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} differs from the document the code generates; regenerate it with `{REGEN}` and commit it",
        path.display()
    );
}

#[tokio::test]
async fn served_document_is_the_generated_one() {
    let h = common::harness();
    let a = common::call(&h.app, Method::GET, "/netlox/v1/openapi.json", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    let want: serde_json::Value =
        serde_json::from_str(floatlb_api::openapi::document_json()).unwrap();
    assert_eq!(a.body, want);
    assert_eq!(a.body["openapi"], "3.1.0");
    let post = &a.body["paths"]["/netlox/v1/config/loadbalancer"]["post"]["responses"];
    for code in ["200", "400", "401", "403", "404", "409", "413", "503"] {
        assert!(post.get(code).is_some(), "POST loadbalancer lacks {code}");
    }
    let live = &a.body["paths"]["/netlox/v1"]["get"];
    assert_eq!(live["security"], serde_json::json!([{}]));
}
