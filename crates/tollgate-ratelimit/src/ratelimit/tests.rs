use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tollgate_core::{Endpoint, Limits, ManualClock, Principal, RequestMeta};
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::{RateLimitConfig, RateLimiter};

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

const WALL: u64 = 1_795_000_000; // 2026-11-18T11:06:40Z

fn full(text: &str) -> TestBody {
    Full::new(Bytes::from(text.to_owned())).boxed_unsync()
}

fn layer(configure: impl FnOnce(&mut RateLimitConfig)) -> (RateLimitLayer, ManualClock) {
    let mut config = RateLimitConfig::default();
    configure(&mut config);
    let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(WALL));
    let limiter = RateLimiter::with_clock(&config, Arc::new(clock.clone())).expect("valid config");
    (RateLimitLayer::new(limiter), clock)
}

fn principal(id: i64, account: &str) -> Principal {
    Principal {
        key_id: id,
        account_id: Arc::from(account),
        name: None,
        allowed_models: None,
        limits: Limits::default(),
    }
}

fn meta(endpoint: Endpoint, tokens: u64) -> RequestMeta {
    RequestMeta {
        endpoint,
        dialect: endpoint.dialect(),
        model: "claude-sonnet-4-6".into(),
        max_tokens: Some(1024),
        stream: false,
        messages: 1,
        est_input_tokens: tokens,
        body: Bytes::new(),
    }
}

fn request(key: Option<&Principal>, endpoint: Endpoint, tokens: u64) -> Request<TestBody> {
    let path = match endpoint {
        Endpoint::Messages => "/v1/messages",
        Endpoint::CountTokens => "/v1/messages/count_tokens",
        Endpoint::ChatCompletions => "/v1/chat/completions",
    };
    let mut req = Request::post(path).body(full("")).expect("valid");
    if let Some(p) = key {
        req.extensions_mut().insert(p.clone());
    }
    req.extensions_mut().insert(meta(endpoint, tokens));
    req
}

fn message(output: u64) -> Response<TestBody> {
    let body =
        format!(r#"{{"type":"message","usage":{{"input_tokens":10,"output_tokens":{output}}}}}"#);
    Response::builder()
        .header("content-type", "application/json")
        .body(full(&body))
        .expect("valid")
}

/// An upstream that answers a message with `output` tokens, counting its calls.
fn upstream(
    output: u64,
) -> (
    impl Service<Request<TestBody>, Response = Response<TestBody>, Error = Infallible, Future: Send>
    + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = tower::service_fn(move |_req: Request<TestBody>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(message(output)) }
    });
    (svc, calls)
}

async fn json(res: Response<RateLimitBody<TestBody>>) -> serde_json::Value {
    let body = res
        .into_body()
        .collect()
        .await
        .expect("infallible")
        .to_bytes();
    serde_json::from_slice(&body).expect("json body")
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .expect("ascii")
}

#[tokio::test]
async fn a_refusal_is_a_429_with_retry_after_rounded_up_exact_ms_and_the_scopes_headers() {
    let (layer, clock) = layer(|c| c.default_key.rpm = Some(3));
    let (inner, calls) = upstream(5);
    let svc = layer.layer(inner);
    let key = principal(1, "acme");
    for _ in 0..3 {
        let res = svc
            .clone()
            .oneshot(request(Some(&key), Endpoint::Messages, 10))
            .await
            .expect("ok");
        assert_eq!(res.status(), StatusCode::OK);
    }
    clock.advance(Duration::from_millis(500));
    let res = svc
        .clone()
        .oneshot(request(Some(&key), Endpoint::Messages, 10))
        .await
        .expect("ok");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "a refused request never reaches the upstream"
    );
    let h = res.headers();
    assert_eq!(header(h, "retry-after"), "20");
    assert_eq!(header(h, "retry-after-ms"), "19500");
    assert_eq!(header(h, "x-should-retry"), "true");
    assert_eq!(header(h, "x-tollgate-origin"), "gateway");
    assert_eq!(header(h, "anthropic-ratelimit-requests-limit"), "3");
    assert_eq!(header(h, "anthropic-ratelimit-requests-remaining"), "0");
    // Full again 59.5 s after 11:06:40.5: 11:07:40, rounded up to the second.
    assert_eq!(
        header(h, "anthropic-ratelimit-requests-reset"),
        "2026-11-18T11:07:40Z"
    );
    assert!(h.get("anthropic-ratelimit-input-tokens-limit").is_none());
    let body = json(res).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("requests per minute for this key exceeded (limit 3)"),
        "{message}"
    );
    assert!(message.contains("retry after 19.500 s"), "{message}");
}

#[tokio::test]
async fn a_wait_longer_than_a_minute_keeps_retry_after_but_says_do_not_retry() {
    let (layer, _clock) = layer(|c| c.default_key.tpd = Some(10_000));
    let (inner, _calls) = upstream(0);
    let svc = layer.layer(inner);
    let key = principal(1, "acme");
    svc.clone()
        .oneshot(request(Some(&key), Endpoint::Messages, 10_000))
        .await
        .expect("ok");
    let res = svc
        .oneshot(request(Some(&key), Endpoint::Messages, 1000))
        .await
        .expect("ok");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(res.headers(), "x-should-retry"), "false");
    assert_eq!(header(res.headers(), "retry-after"), "8640");
    assert_eq!(
        header(res.headers(), "anthropic-ratelimit-tokens-limit"),
        "10000"
    );
    assert_eq!(
        header(res.headers(), "anthropic-ratelimit-tokens-remaining"),
        "0"
    );
    let body = json(res).await;
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("tokens per day for this key exceeded"),
        "{message}"
    );
    assert!(
        message.contains("longer than a client should wait"),
        "{message}"
    );
}

#[tokio::test]
async fn a_refusal_speaks_the_openai_dialect_on_chat_completions() {
    let (layer, _clock) = layer(|c| c.global.rpm = Some(1));
    let (inner, _calls) = upstream(0);
    let svc = layer.layer(inner);
    svc.clone()
        .oneshot(request(None, Endpoint::ChatCompletions, 1))
        .await
        .expect("ok");
    let res = svc
        .oneshot(request(None, Endpoint::ChatCompletions, 1))
        .await
        .expect("ok");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(header(res.headers(), "retry-after"), "60");
    let body = json(res).await;
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("for this gateway")
    );
}

#[tokio::test]
async fn a_successful_response_carries_the_tightest_scope_of_each_dimension() {
    let (layer, _clock) = layer(|c| {
        c.default_key.rpm = Some(10);
        c.default_key.itpm = Some(1000);
        c.account.rpm = Some(5);
        c.global.otpm = Some(100_000);
    });
    let inner = tower::service_fn(|_req: Request<TestBody>| async {
        let mut res = message(0);
        // The pooled upstream account's own headers are replaced, not mixed in.
        res.headers_mut().insert(
            "anthropic-ratelimit-requests-limit",
            "4000".parse().expect("v"),
        );
        res.headers_mut().insert(
            "anthropic-ratelimit-tokens-limit",
            "2000000".parse().expect("v"),
        );
        Ok::<_, Infallible>(res)
    });
    let svc = layer.layer(inner);
    let key = principal(1, "acme");
    let res = svc
        .oneshot(request(Some(&key), Endpoint::Messages, 100))
        .await
        .expect("ok");
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    assert_eq!(header(h, "anthropic-ratelimit-requests-limit"), "5");
    assert_eq!(header(h, "anthropic-ratelimit-requests-remaining"), "4");
    assert_eq!(
        header(h, "anthropic-ratelimit-requests-reset"),
        "2026-11-18T11:06:52Z"
    );
    assert_eq!(header(h, "anthropic-ratelimit-input-tokens-limit"), "1000");
    assert_eq!(
        header(h, "anthropic-ratelimit-input-tokens-remaining"),
        "900"
    );
    assert_eq!(
        header(h, "anthropic-ratelimit-output-tokens-limit"),
        "100000"
    );
    assert_eq!(
        header(h, "anthropic-ratelimit-output-tokens-remaining"),
        "100000"
    );
    assert_eq!(header(h, "anthropic-ratelimit-tokens-limit"), "1000");
    assert_eq!(header(h, "anthropic-ratelimit-tokens-remaining"), "900");
}

#[tokio::test]
async fn success_headers_can_be_switched_off() {
    let (layer, _clock) = layer(|c| c.default_key.rpm = Some(10));
    let (inner, _calls) = upstream(0);
    let svc = layer.headers_on_success(false).layer(inner);
    let key = principal(1, "acme");
    let res = svc
        .oneshot(request(Some(&key), Endpoint::Messages, 1))
        .await
        .expect("ok");
    assert!(
        !res.headers()
            .keys()
            .any(|k| k.as_str().starts_with("anthropic-ratelimit-"))
    );
}

#[tokio::test]
async fn upstream_error_responses_pass_through_untouched() {
    let (layer, _clock) = layer(|c| c.default_key.rpm = Some(10));
    let inner = tower::service_fn(|_req: Request<TestBody>| async {
        let res = Response::builder()
            .status(429)
            .header("retry-after", "7")
            .header("anthropic-ratelimit-requests-remaining", "0")
            .body(full(
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"upstream"}}"#,
            ))
            .expect("valid");
        Ok::<_, Infallible>(res)
    });
    let svc = layer.layer(inner);
    let res = svc
        .oneshot(request(Some(&principal(1, "a")), Endpoint::Messages, 1))
        .await
        .expect("ok");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers().len(), 2);
    assert_eq!(header(res.headers(), "retry-after"), "7");
    assert_eq!(
        header(res.headers(), "anthropic-ratelimit-requests-remaining"),
        "0"
    );
    assert_eq!(json(res).await["error"]["message"], "upstream");
}

#[tokio::test]
async fn output_tokens_are_charged_when_the_body_ends_not_before() {
    let (layer, _clock) = layer(|c| c.default_key.otpm = Some(6000));
    let (inner, _calls) = upstream(9000);
    let svc = layer.layer(inner);
    let key = principal(1, "acme");
    let first = svc
        .clone()
        .oneshot(request(Some(&key), Endpoint::Messages, 1))
        .await
        .expect("ok");
    let second = svc
        .clone()
        .oneshot(request(Some(&key), Endpoint::Messages, 1))
        .await
        .expect("ok");
    assert_eq!(
        second.status(),
        StatusCode::OK,
        "output is unknown until the body ends"
    );
    let _ = json(first).await;
    let res = svc
        .clone()
        .oneshot(request(Some(&key), Endpoint::Messages, 1))
        .await
        .expect("ok");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(res.headers(), "retry-after-ms"), "30010");
    assert_eq!(
        header(res.headers(), "anthropic-ratelimit-output-tokens-remaining"),
        "0"
    );
    let message = json(res).await["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(
        message.contains("output tokens per minute for this key are used up"),
        "{message}"
    );
}

type Events = tokio::sync::mpsc::UnboundedSender<&'static str>;

type EventSlot = Arc<parking_lot::Mutex<Option<Events>>>;

/// An upstream that answers an SSE stream whose events the test sends through `slot`.
fn streaming_upstream(
    slot: EventSlot,
) -> impl Service<Request<TestBody>, Response = Response<TestBody>, Error = Infallible, Future: Send>
+ Clone {
    tower::service_fn(move |_req: Request<TestBody>| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        *slot.lock() = Some(tx);
        async move {
            let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                let event = rx.recv().await?;
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(event.as_bytes()))),
                    rx,
                ))
            });
            let res = Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(frames).boxed_unsync())
                .expect("valid");
            Ok::<_, Infallible>(res)
        }
    })
}

const MESSAGE_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n";
const DELTA: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
const MESSAGE_DELTA: &str = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":30}}\n\n";
const MESSAGE_STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

#[tokio::test]
async fn a_stream_carries_the_headers_before_its_first_event_and_is_charged_at_its_end() {
    let (layer, _clock) = layer(|c| c.default_key.otpm = Some(60));
    let events = EventSlot::default();
    let inner = streaming_upstream(events.clone());
    let svc = layer.layer(inner);
    let key = principal(1, "acme");
    let res = svc
        .clone()
        .oneshot(request(Some(&key), Endpoint::Messages, 1))
        .await
        .expect("ok");
    // The head is out and no event has been produced yet.
    assert_eq!(
        header(res.headers(), "anthropic-ratelimit-output-tokens-limit"),
        "60"
    );
    assert_eq!(
        header(res.headers(), "anthropic-ratelimit-output-tokens-remaining"),
        "60"
    );
    let tx = events.lock().take().expect("stream started");
    for event in [MESSAGE_START, DELTA, MESSAGE_DELTA, MESSAGE_STOP] {
        tx.send(event).expect("open");
    }
    drop(tx);
    let relayed = res
        .into_body()
        .collect()
        .await
        .expect("infallible")
        .to_bytes();
    assert_eq!(
        relayed.len(),
        MESSAGE_START.len() + DELTA.len() + MESSAGE_DELTA.len() + MESSAGE_STOP.len()
    );
    let next = svc
        .oneshot(request(Some(&key), Endpoint::Messages, 1))
        .await
        .expect("ok");
    assert_eq!(
        header(
            next.headers(),
            "anthropic-ratelimit-output-tokens-remaining"
        ),
        "30"
    );
}

#[tokio::test]
async fn a_stream_cut_short_is_charged_at_least_one_token_per_delta_relayed() {
    let (layer, _clock) = layer(|c| c.default_key.otpm = Some(60));
    let events = EventSlot::default();
    let inner = streaming_upstream(events.clone());
    let svc = layer.layer(inner);
    let key = principal(1, "acme");
    let res = svc
        .clone()
        .oneshot(request(Some(&key), Endpoint::Messages, 1))
        .await
        .expect("ok");
    let tx = events.lock().take().expect("stream started");
    for event in [MESSAGE_START, DELTA, DELTA, DELTA] {
        tx.send(event).expect("open");
    }
    let mut body = res.into_body();
    for _ in 0..4 {
        body.frame().await.expect("a frame").expect("infallible");
    }
    drop(body); // the client went away
    let next = svc
        .oneshot(request(Some(&key), Endpoint::Messages, 1))
        .await
        .expect("ok");
    assert_eq!(
        header(
            next.headers(),
            "anthropic-ratelimit-output-tokens-remaining"
        ),
        "57"
    );
}

#[tokio::test]
async fn count_tokens_costs_one_request_and_no_tokens() {
    let (layer, _clock) = layer(|c| {
        c.default_key.rpm = Some(10);
        c.default_key.itpm = Some(100);
    });
    let (inner, _calls) = upstream(0);
    let svc = layer.layer(inner);
    let key = principal(1, "acme");
    let res = svc
        .oneshot(request(Some(&key), Endpoint::CountTokens, 5000))
        .await
        .expect("ok");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(res.headers(), "anthropic-ratelimit-requests-remaining"),
        "9"
    );
    assert_eq!(
        header(res.headers(), "anthropic-ratelimit-input-tokens-remaining"),
        "100"
    );
}

#[tokio::test]
async fn a_request_without_request_meta_costs_one_request() {
    let (layer, _clock) = layer(|c| c.default_key.rpm = Some(1));
    let (inner, _calls) = upstream(0);
    let svc = layer.layer(inner);
    let get = || {
        let mut req = Request::get("/v1/models").body(full("")).expect("valid");
        req.extensions_mut().insert(principal(1, "acme"));
        req
    };
    assert_eq!(
        svc.clone().oneshot(get()).await.expect("ok").status(),
        StatusCode::OK
    );
    let res = svc.oneshot(get()).await.expect("ok");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        res.headers().contains_key("request-id"),
        "Anthropic dialect by path"
    );
}

#[tokio::test]
async fn readiness_is_the_inner_services_and_a_refusal_never_reaches_it() {
    let (layer, _clock) = layer(|c| c.default_key.rpm = Some(1));
    let (mock, mut handle) = tower_test::mock::pair::<Request<TestBody>, Response<TestBody>>();
    let mut svc = tower_test::mock::Spawn::new(layer.layer(mock));
    let key = principal(1, "acme");

    handle.allow(0);
    assert!(svc.poll_ready().is_pending());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let admitted = svc.call(request(Some(&key), Endpoint::Messages, 1));
    let (_req, send) = handle.next_request().await.expect("reached the upstream");
    send.send_response(message(0));
    assert_eq!(admitted.await.expect("ok").status(), StatusCode::OK);

    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let refused = svc
        .call(request(Some(&key), Endpoint::Messages, 1))
        .await
        .expect("ok");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        handle.poll_request().is_pending(),
        "the upstream saw nothing"
    );
}

#[test]
fn refusal_bodies_can_be_rebuilt_from_bytes_by_outer_layers() {
    let body: RateLimitBody<TestBody> = RateLimitBody::from(Bytes::from_static(b"{}"));
    assert_eq!(http_body::Body::size_hint(&body).exact(), Some(2));
}

#[tokio::test]
async fn the_input_estimate_is_settled_to_the_reported_input_and_cache_writes_when_the_body_ends() {
    let (layer, _clock) = layer(|c| c.default_key.itpm = Some(6000));
    let svc = layer.layer(tower::service_fn(|_req: Request<TestBody>| async {
        let body = r#"{"type":"message","usage":{"input_tokens":10,"cache_creation_input_tokens":40,"cache_read_input_tokens":900,"output_tokens":3}}"#;
        let res = Response::builder()
            .header("content-type", "application/json")
            .body(full(body))
            .expect("valid");
        Ok::<_, Infallible>(res)
    }));
    let key = principal(1, "acme");
    // Estimated at 3,000 input tokens: that much is spent at admission.
    let res = svc
        .clone()
        .oneshot(request(Some(&key), Endpoint::Messages, 3000))
        .await
        .expect("ok");
    assert_eq!(
        header(res.headers(), "anthropic-ratelimit-input-tokens-remaining"),
        "3000"
    );
    let _ = json(res).await;
    // The API counted 10 + 40 (cache reads are free of ITPM): 2,950 come back.
    let res = svc
        .clone()
        .oneshot(request(Some(&key), Endpoint::Messages, 0))
        .await
        .expect("ok");
    assert_eq!(
        header(res.headers(), "anthropic-ratelimit-input-tokens-remaining"),
        "5950"
    );
}
