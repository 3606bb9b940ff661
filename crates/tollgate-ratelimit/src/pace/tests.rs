use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;
use tollgate_core::{BoxError, Dialect, Endpoint, Limits, Principal, RequestMeta};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use super::*;
use crate::{RateLimitConfig, RateLimitLayer};

const SEC: Duration = Duration::from_secs(1);

fn layer(configure: impl FnOnce(&mut PaceConfig)) -> PaceLayer {
    let mut config = PaceConfig::default();
    configure(&mut config);
    PaceLayer::from_config(&config).expect("valid config")
}

fn request(tokens: u64) -> Request<Full<Bytes>> {
    let mut req = Request::post("/v1/messages")
        .body(Full::default())
        .expect("valid");
    req.extensions_mut().insert(RequestMeta {
        endpoint: Endpoint::Messages,
        dialect: Dialect::Anthropic,
        model: "claude-sonnet-4-6".into(),
        max_tokens: Some(64),
        stream: false,
        messages: 1,
        est_input_tokens: tokens,
        body: Bytes::new(),
    });
    req.extensions_mut().insert(Principal {
        key_id: 9,
        account_id: Arc::from("acme"),
        name: None,
        allowed_models: None,
        limits: Limits::default(),
    });
    req
}

/// An upstream answering with `respond(call number)`, counting calls in `calls`.
fn upstream_counting(
    calls: Arc<AtomicUsize>,
    respond: impl Fn(usize) -> Response<Full<Bytes>> + Clone + Send + 'static,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone
{
    tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let res = respond(n);
        async move { Ok::<_, Infallible>(res) }
    })
}

fn ok(_: usize) -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(b"{}")))
}

fn pace_error(err: &BoxError) -> &PaceError {
    err.downcast_ref::<PaceError>().expect("a PaceError")
}

#[tokio::test(start_paused = true)]
async fn a_request_that_does_not_fit_waits_for_capacity_instead_of_failing() {
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = upstream_counting(calls.clone(), ok);
    let svc = layer(|c| {
        c.limits.rpm = Some(60);
        c.limits.burst = 5;
    })
    .layer(inner);
    let start = Instant::now();
    for _ in 0..3 {
        svc.clone().oneshot(request(0)).await.expect("ok");
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    svc.clone()
        .oneshot(request(0))
        .await
        .expect("paced, not refused");
    assert_eq!(start.elapsed(), SEC);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_wait_beyond_max_wait_fails_at_once_without_calling_the_upstream() {
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = upstream_counting(calls.clone(), ok);
    let svc = layer(|c| {
        c.limits.rpm = Some(60);
        c.limits.burst = 5;
        c.max_wait_ms = 500;
    })
    .layer(inner);
    for _ in 0..3 {
        svc.clone().oneshot(request(0)).await.expect("ok");
    }
    let start = Instant::now();
    let err = svc
        .clone()
        .oneshot(request(0))
        .await
        .expect_err("too long a wait");
    assert_eq!(start.elapsed(), Duration::ZERO);
    let pace = pace_error(&err);
    assert_eq!(pace.dimension(), Some(Dimension::Requests));
    assert_eq!(pace.wait(), Some(SEC));
    assert_eq!(pace.max_wait(), Duration::from_millis(500));
    assert!(
        err.to_string()
            .contains("requests per minute limit needs a wait of 1.000 s"),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn input_tokens_from_request_meta_are_paced() {
    let inner = upstream_counting(Arc::default(), ok);
    let svc = layer(|c| c.limits.itpm = Some(6000)).layer(inner);
    let start = Instant::now();
    svc.clone().oneshot(request(4000)).await.expect("ok");
    svc.clone().oneshot(request(4000)).await.expect("ok");
    // 8,000 tokens at 100 a second with a bucket of 6,000: the second waits 20 s.
    assert_eq!(start.elapsed(), 20 * SEC);
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_burst_fails_with_no_wait() {
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = upstream_counting(calls.clone(), ok);
    let svc = layer(|c| c.limits.itpm = Some(1000)).layer(inner);
    let err = svc.oneshot(request(2000)).await.expect_err("never fits");
    let pace = pace_error(&err);
    assert_eq!(
        (pace.dimension(), pace.wait()),
        (Some(Dimension::InputTokens), None)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

fn with_requests_headers(limit: &'static str, remaining: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .header("anthropic-ratelimit-requests-limit", limit)
        .header("anthropic-ratelimit-requests-remaining", remaining)
        .header("anthropic-ratelimit-requests-reset", "2026-11-18T11:07:40Z")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("valid")
}

#[tokio::test(start_paused = true)]
async fn the_upstreams_remaining_slows_the_next_request_before_it_is_refused() {
    let inner = upstream_counting(Arc::default(), |_| with_requests_headers("60", "0"));
    let svc = layer(|_| {}).layer(inner);
    let start = Instant::now();
    svc.clone().oneshot(request(0)).await.expect("ok");
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "nothing known before the first answer"
    );
    svc.clone().oneshot(request(0)).await.expect("ok");
    assert_eq!(
        start.elapsed(),
        SEC,
        "empty upstream bucket: one request per second"
    );
}

#[tokio::test(start_paused = true)]
async fn learning_from_headers_can_be_switched_off() {
    let inner = upstream_counting(Arc::default(), |_| with_requests_headers("60", "0"));
    let svc = layer(|c| c.learn_from_headers = false).layer(inner);
    let start = Instant::now();
    for _ in 0..3 {
        svc.clone().oneshot(request(0)).await.expect("ok");
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_upstream_429_holds_requests_back_for_its_retry_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = upstream_counting(calls.clone(), |n| {
        if n == 0 {
            Response::builder()
                .status(429)
                .header("retry-after", "3")
                .body(Full::default())
                .expect("valid")
        } else {
            ok(n)
        }
    });
    let pacer = layer(|c| c.max_wait_ms = 2_000);
    let svc = pacer.clone().layer(inner.clone());
    let start = Instant::now();
    let res = svc.clone().oneshot(request(0)).await.expect("relayed");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let err = svc
        .clone()
        .oneshot(request(0))
        .await
        .expect_err("3 s > max_wait 2 s");
    assert_eq!(pace_error(&err).dimension(), None);
    assert!(err.to_string().contains("upstream's retry-after"), "{err}");

    let patient = layer(|_| {});
    let svc = patient.layer(inner);
    svc.clone().oneshot(request(0)).await.expect("relayed 200");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "a fresh pacer knows nothing of the 429"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_after_an_upstream_429_go_once_retry_after_has_passed() {
    let inner = upstream_counting(Arc::default(), |n| {
        if n == 0 {
            Response::builder()
                .status(429)
                .header("retry-after", "3")
                .body(Full::default())
                .expect("valid")
        } else {
            ok(n)
        }
    });
    let svc = layer(|_| {}).layer(inner);
    let start = Instant::now();
    svc.clone().oneshot(request(0)).await.expect("relayed");
    let res = svc.clone().oneshot(request(0)).await.expect("ok");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), 3 * SEC);
}

/// A gateway limited to 60 RPM per key, on tokio's (paused) clock.
fn gateway_60_rpm() -> RateLimitLayer {
    let mut config = RateLimitConfig::default();
    config.default_key.rpm = Some(60);
    RateLimitLayer::from_config(&config).expect("valid")
}

#[tokio::test(start_paused = true)]
async fn a_paced_client_sends_200_requests_through_a_60_rpm_limit_without_a_429() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = upstream_counting(calls.clone(), ok);
    let client = ServiceBuilder::new()
        .layer(layer(|c| c.max_wait_ms = 120_000))
        .layer(gateway_60_rpm())
        .service(upstream);
    let start = Instant::now();
    let mut refused = 0;
    for _ in 0..200 {
        let res = client.clone().oneshot(request(0)).await.expect("paced");
        refused += usize::from(res.status() == StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(refused, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 200);
    // 60 at once, then one a second: the limit, no slower.
    assert_eq!(start.elapsed(), 140 * SEC);
}

#[tokio::test(start_paused = true)]
async fn two_hundred_concurrent_requests_paced_to_a_configured_limit_see_no_429() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = upstream_counting(calls.clone(), ok);
    let client = ServiceBuilder::new()
        .layer(layer(|c| {
            c.limits.rpm = Some(60);
            c.max_wait_ms = 600_000;
        }))
        .layer(gateway_60_rpm())
        .service(upstream);
    let start = Instant::now();
    let results =
        futures_util::future::join_all((0..200).map(|_| client.clone().oneshot(request(0)))).await;
    let refused = results
        .iter()
        .filter(|r| r.as_ref().expect("paced").status() == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(refused, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 200);
    assert_eq!(start.elapsed(), 140 * SEC);
}

#[tokio::test(start_paused = true)]
async fn classify_over_the_pacer_turns_a_too_long_wait_into_a_local_rate_limit_api_error() {
    use tollgate_core::{ErrorKind, Origin};
    use tollgate_passthrough::{ClassifyLayer, ClientError};

    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(ClassifyLayer::new())
        .layer(layer(|c| {
            c.limits.rpm = Some(60);
            c.limits.burst = 1; // 1 % of 60 rounds up to one request at once
            c.max_wait_ms = 500;
        }))
        .service(upstream_counting(calls.clone(), ok));
    svc.clone().oneshot(request(0)).await.expect("the burst");
    let err = svc
        .clone()
        .oneshot(request(0))
        .await
        .expect_err("would wait 1 s");
    let ClientError::Api(api) = &err else {
        panic!("a rate-limit ApiError, not a transport failure: {err:?}");
    };
    assert_eq!(api.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(api.kind, ErrorKind::RateLimit);
    assert_eq!(api.error_type.as_deref(), Some("rate_limit_error"));
    assert_eq!(api.origin, Origin::Gateway);
    assert_eq!(api.retry_after, Some(SEC));
    assert!(!api.is_retryable(), "pacing again would only wait again");
    assert!(
        api.message.contains("client pacing") && api.message.contains("max_wait"),
        "{}",
        api.message
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the upstream saw only the first"
    );
}
