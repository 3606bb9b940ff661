//! Wrap a reqwest client: pacing, retry, fallback between two base URLs, typed errors,
//! built in one call with `tollgate::client::stack` from a `ClientConfig`.
//!
//! ```text
//! Classify → Fallback (primary, secondary) → Retry → Pace → BaseUrl (+ the route's key) → Reqwest
//! ```
//!
//! `tollgate::client::Reqwest` (feature `reqwest`) makes a `reqwest::Client` a tower
//! service over `http` types; responses stream back as an `http_body::Body`. Two mock
//! upstreams stand in for two API endpoints: `primary` answers every request with 529,
//! `secondary` works. `hyper_client` stacks the same layers one by one.
//!
//! Run with `cargo run --example reqwest_client --features reqwest`.

use std::error::Error;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tollgate::client::{ClientConfig, ClientRoute, Reqwest, replayable};
use tollgate::core::TransportErrorKind;
use tollgate::mock::{MockOptions, MockServer};
use tollgate::prelude::*;
use tollgate::ratelimit::PaceConfig;
use tollgate::retry::RetryConfig;
use tower::{ServiceBuilder, ServiceExt};

const MESSAGE: &str = r#"{"model":"claude-haiku-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hello"}]}"#;

/// Requests sent in the pacing demo.
const REQUESTS: u32 = 6;

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

    // Pace to 300 requests a minute with a burst of 1 % (3 requests), then one every
    // 200 ms. Requests wait for capacity (at most 5 s) instead of being refused with a 429.
    // One pacer stands for one upstream credential; both routes use the same key here.
    let mut pace = PaceConfig::default();
    pace.limits.rpm = Some(300);
    pace.limits.burst = 1;
    pace.max_wait_ms = 5_000;
    let api_key = std::env::var("ANTHROPIC_API_KEY").unwrap_or_else(|_| "sk-ant-example".into());

    // Every model: try `primary`, then `secondary`; retries as the SDKs do them.
    let config = ClientConfig::new()
        .route(ClientRoute::new("primary", primary.url()).api_key(&api_key))
        .route(ClientRoute::new("secondary", secondary.url()).api_key(&api_key))
        .pace(pace);
    let client = ServiceBuilder::new()
        .layer(tollgate::client::stack(&config)?)
        .service(Reqwest::new(reqwest::Client::new()));

    // 1. Streams, paced: each served by the secondary; the body streams event by event.
    let start = Instant::now();
    for n in 1..=REQUESTS {
        let req = replayable::<reqwest::Body>(message(&[])?)?;
        let res = client.clone().oneshot(req).await?;
        let route = header(res.headers(), "x-tollgate-route");
        let attempts = header(res.headers(), "x-tollgate-attempts");
        let mut body = res.into_body();
        let (mut frames, mut text) = (0, String::new());
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                frames += 1;
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        println!(
            "stream {n} at {:>4} ms: served by {route} after {attempts} attempt(s), {frames} frames, ends with message_stop: {}",
            start.elapsed().as_millis(),
            text.contains("event: message_stop")
        );
        assert_eq!(route, "secondary");
        assert!(text.contains("event: message_stop"));
    }
    let elapsed = start.elapsed();
    // Pacing counts upstream attempts: the first request's try on the primary is one.
    println!(
        "{REQUESTS} requests ({} upstream attempts) paced to 300/min, 3 at once then one per 200 ms: {} ms",
        REQUESTS + 1,
        elapsed.as_millis(),
    );
    assert!(
        elapsed >= Duration::from_millis(550),
        "paced, not sent at once"
    );
    assert_eq!(
        primary.request_count(),
        1,
        "only the first request tried the primary"
    );

    // 2. A typed error: an unknown model (404). Not retried, not failed over.
    let req = replayable::<reqwest::Body>(message(&[("x-mock-status", "404")])?)?;
    match client.clone().oneshot(req).await {
        Ok(res) => panic!("expected a 404, got {}", res.status()),
        Err(ClientError::Api(e)) => {
            println!(
                "ApiError: {e} — kind {:?}, domain {:?}, retryable {}",
                e.kind,
                e.domain(),
                e.is_retryable()
            );
            assert_eq!(e.kind, ErrorKind::NotFound);
            assert!(!e.is_retryable());
        }
        Err(e) => return Err(e.into()),
    }

    // 3. No upstream at all: a classified transport error, after the retries.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}", listener.local_addr()?) // nothing listens once it is dropped
    };
    let dead_config = ClientConfig::new()
        .route(ClientRoute::new("gone", closed))
        .retry(RetryConfig {
            max_attempts: 2,
            base_delay_ms: 10,
            ..RetryConfig::client()
        });
    let dead = ServiceBuilder::new()
        .layer(tollgate::client::stack(&dead_config)?)
        .service(Reqwest::new(reqwest::Client::new()));
    let req = replayable::<reqwest::Body>(message(&[])?)?;
    match dead.oneshot(req).await {
        Err(ClientError::Transport(e)) => {
            println!(
                "TransportError ({:?}): {e} — retryable {}",
                e.kind(),
                e.kind().error_kind().class().retryable
            );
            assert_eq!(e.kind(), TransportErrorKind::Connect);
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
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
