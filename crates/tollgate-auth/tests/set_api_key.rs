//! SetApiKeyLayer: the client-side key injection.

use std::convert::Infallible;

use http::{HeaderMap, Request, Response};
use tollgate_auth::SetApiKeyLayer;
use tower::{Layer, ServiceExt, service_fn};

const KEY: &str = "tg-0123456789abcdefghijABCDEFGHIJ01";

async fn sent_headers(layer: SetApiKeyLayer, req: Request<()>) -> HeaderMap {
    let svc = layer.layer(service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>(Response::new(req.headers().clone()))
    }));
    svc.oneshot(req).await.expect("infallible").into_body()
}

#[tokio::test]
async fn x_api_key_is_set_and_marked_sensitive() {
    let headers = sent_headers(
        SetApiKeyLayer::x_api_key(KEY).expect("valid"),
        Request::new(()),
    )
    .await;
    assert_eq!(headers["x-api-key"], KEY);
    assert!(headers["x-api-key"].is_sensitive());
    assert!(headers.get("authorization").is_none());
}

#[tokio::test]
async fn bearer_is_set_and_marked_sensitive() {
    let headers = sent_headers(
        SetApiKeyLayer::bearer(KEY).expect("valid"),
        Request::new(()),
    )
    .await;
    assert_eq!(headers["authorization"], format!("Bearer {KEY}").as_str());
    assert!(headers["authorization"].is_sensitive());
}

#[tokio::test]
async fn existing_credentials_are_replaced_by_exactly_one() {
    let req = Request::builder()
        .header("x-api-key", "old-key")
        .header("authorization", "Bearer old-token")
        .header("anthropic-version", "2023-06-01")
        .body(())
        .expect("request");
    let headers = sent_headers(SetApiKeyLayer::bearer(KEY).expect("valid"), req).await;
    assert!(headers.get("x-api-key").is_none());
    assert_eq!(headers.get_all("authorization").iter().count(), 1);
    assert_eq!(headers["authorization"], format!("Bearer {KEY}").as_str());
    assert_eq!(headers["anthropic-version"], "2023-06-01");
}

#[test]
fn debug_never_shows_the_key() {
    let layer = SetApiKeyLayer::x_api_key(KEY).expect("valid");
    let debug = format!("{layer:?}");
    assert!(!debug.contains(&KEY[3..]), "{debug}");
    let svc = layer.layer(());
    assert!(!format!("{svc:?}").contains(&KEY[3..]));
}

#[test]
fn a_key_with_a_trailing_newline_is_refused_naming_the_byte() {
    let err = SetApiKeyLayer::x_api_key(&format!("{KEY}\n")).expect_err("newline");
    assert_eq!(
        err.to_string(),
        "the API key ends with whitespace (a newline at byte 35); remove whitespace around the key"
    );
    assert!(!err.to_string().contains(&KEY[3..]));
}

#[test]
fn upstream_provider_keys_are_accepted() {
    // The gateway's upstream client injects the route's Anthropic key with this layer.
    assert!(SetApiKeyLayer::x_api_key("sk-ant-api03-abc_DEF-123").is_ok());
}
