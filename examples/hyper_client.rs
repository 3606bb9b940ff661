//! Wrap a hyper-util client: fail over between two base URLs, retry what the API says is
//! retryable, and get typed errors.
//!
//! ```text
//! Classify → Fallback (primary, secondary) → Retry → BaseUrl → SetApiKey → hyper-util Client
//! ```
//!
//! Two mock upstreams stand in for two API endpoints: `primary` answers every request
//! with 529 (overloaded), `secondary` works.
//!
//! Run with `cargo run --example hyper_client`.

use std::error::Error;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate::auth::SetApiKeyLayer;
use tollgate::client::{BaseUrlLayer, replayable};
use tollgate::fallback::{FallbackConfig, ModelRoutes};
use tollgate::mock::{MockOptions, MockServer};
use tollgate::prelude::*;
use tollgate::retry::RetryConfig;
use tower::{ServiceBuilder, ServiceExt};

const MESSAGE: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let primary = MockServer::start(
        MockOptions::new()
            .name("primary")
            .default_header("x-mock-status", "529"),
    )
    .await?;
    let secondary = MockServer::start(MockOptions::new().name("secondary")).await?;
    println!(
        "mock upstreams: primary {} (always 529), secondary {}",
        primary.url(),
        secondary.url()
    );

    // Every model: try `primary`, then `secondary`. Retry and fallback share one budget.
    let mut routes = FallbackConfig::default();
    routes.models.insert(
        "*".into(),
        ModelRoutes {
            routes: vec!["primary".into(), "secondary".into()],
            fallback_models: vec![],
        },
    );
    let retry = RetryLayer::new(RetryConfig::client());
    let api_key = std::env::var("ANTHROPIC_API_KEY").unwrap_or_else(|_| "sk-ant-example".into());

    let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let client = ServiceBuilder::new()
        .classify() // outermost: retry and fallback below still see error responses
        .fallback(FallbackLayer::new(routes).budget(retry.retry_budget()))
        .api_retry(retry)
        .layer(BaseUrlLayer::new([
            ("primary", primary.url()),
            ("secondary", secondary.url()),
        ])?)
        .layer(SetApiKeyLayer::x_api_key(&api_key)?)
        .service(hyper);

    // 1. The primary is overloaded: served by the secondary, invisibly to the caller.
    for n in 1..=2 {
        let req = replayable(message(&[])?)?;
        let res = client.clone().oneshot(req).await?;
        let served = res
            .extensions()
            .get::<Served>()
            .cloned()
            .expect("Served is set");
        let route = header(res.headers(), "x-tollgate-route");
        let body = res.into_body().collect().await?.to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body)?;
        println!(
            "request {n}: 200 served by {route} after {} attempt(s): {:?}…",
            served.attempts,
            first_words(json["content"][0]["text"].as_str().unwrap_or_default())
        );
        assert_eq!((&*served.route, route.as_str()), ("secondary", "secondary"));
        // The first request tried the primary once; the second skipped it (cooling down).
        assert_eq!(served.attempts, if n == 1 { 2 } else { 1 });
    }
    assert_eq!(
        primary.request_count(),
        1,
        "the resting primary was not asked again"
    );
    assert_eq!(secondary.request_count(), 2);
    assert_eq!(
        secondary.received()[0].header("x-api-key"),
        Some(api_key.as_str())
    );

    // 2. An error about the request itself: not retried, not failed over, a typed error.
    let req = replayable(message(&[("x-mock-status", "400")])?)?;
    let outcome = match client.clone().oneshot(req).await {
        Ok(res) => format!("{}", res.status()),
        Err(ClientError::Api(e)) if e.is_retryable() => format!("retryable: {e}"),
        Err(ClientError::Api(e)) => format!("{:?} error from the {:?}: {e}", e.kind, e.origin),
        Err(e) => format!("no answer: {e}"),
    };
    println!("request 3: {outcome}");
    assert!(
        outcome.starts_with("InvalidRequest error from the Upstream: 400 invalid_request_error"),
        "{outcome}"
    );
    assert_eq!(secondary.request_count(), 3, "the 400 was sent once");

    // 3. A body that is not a valid request never leaves the process.
    let Err(err) = replayable::<Full<Bytes>>(
        Request::post("/v1/messages").body(Bytes::from_static(br#"{"model":"x"}"#))?,
    ) else {
        panic!("a request without max_tokens is refused");
    };
    println!("request 4: refused before sending: {}", err.message());
    Ok(())
}

/// `POST /v1/messages` with extra headers; the base URL comes from the route.
fn message(headers: &[(&str, &str)]) -> http::Result<Request<Bytes>> {
    let mut req = Request::post("/v1/messages")
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Bytes::from_static(MESSAGE.as_bytes()))
}

fn header(headers: &http::HeaderMap, name: &str) -> String {
    let value = headers.get(name).and_then(|v| v.to_str().ok());
    value.unwrap_or("-").to_owned()
}

fn first_words(text: &str) -> String {
    text.split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}
