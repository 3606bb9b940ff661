//! FallbackLayer over RetryLayer over a tiny relay (hyper-util client, one mock upstream
//! per route chosen by `TargetRoute`), on real sockets.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate_core::{BoxError, Endpoint, TargetRoute, TransportError, request_meta::parse_body};
use tollgate_fallback::{FallbackConfig, FallbackLayer};
use tollgate_mock::{MockOptions, MockServer, fixtures};
use tollgate_retry::{BudgetConfig, CommitBody, RetryConfig, RetryLayer};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

const OPUS: &str = "claude-opus-4-8";
const SONNET: &str = "claude-sonnet-4-6";
const BODY: &str =
    r#"{"model":"claude-opus-4-8","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;
const STREAM_BODY: &str = r#"{"model":"claude-opus-4-8","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;

type Relay = BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;
type Gateway =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<CommitBody<CommitBody<Incoming>>>, BoxError>;

/// The innermost service: sends each attempt to the mock named by its `TargetRoute`.
fn relay(mocks: &[(&str, &MockServer)]) -> Relay {
    let routes: Arc<HashMap<String, String>> = Arc::new(
        mocks
            .iter()
            .map(|(name, mock)| (name.to_string(), mock.url()))
            .collect(),
    );
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    BoxCloneSyncService::new(tower::service_fn(move |mut req: Request<Full<Bytes>>| {
        let base = req
            .extensions()
            .get::<TargetRoute>()
            .and_then(|t| routes.get(&*t.0))
            .cloned();
        let client = client.clone();
        async move {
            let base = base.ok_or("the request names no known route")?;
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = format!("{base}{path}").parse::<Uri>()?;
            client
                .request(req)
                .await
                .map_err(|e| BoxError::from(TransportError::classify(e)))
        }
    }))
}

/// Fallback outside retry, sharing one budget, with fast waits.
fn gateway(config: &str, mocks: &[(&str, &MockServer)]) -> (Gateway, FallbackLayer) {
    let config: FallbackConfig = toml::from_str(config).expect("valid config");
    let retry = RetryLayer::new(RetryConfig {
        base_delay_ms: 1,
        max_delay_ms: 2,
        budget: BudgetConfig {
            ttl_secs: 10,
            min_per_sec: 100,
            retry_percent: 0.2,
        },
        ..RetryConfig::default()
    });
    let fallback = FallbackLayer::new(config).budget(retry.retry_budget());
    let svc = ServiceBuilder::new()
        .layer(fallback.clone())
        .layer(retry)
        .service(relay(mocks));
    (BoxCloneSyncService::new(svc), fallback)
}

const TWO_ROUTES: &str = r#"
    [models."claude-opus-4-8"]
    routes = ["a", "b"]
"#;

async fn mock(name: &str, headers: &[(&str, &str)]) -> MockServer {
    let options = headers
        .iter()
        .fold(MockOptions::new().name(name), |o, (k, v)| {
            o.default_header(k, v)
        });
    MockServer::start(options).await.expect("mock starts")
}

fn request(body: &'static str) -> Request<Full<Bytes>> {
    let bytes = Bytes::from_static(body.as_bytes());
    let mut req = Request::post("/v1/messages")
        .header("content-type", "application/json")
        .header("content-length", bytes.len())
        .body(Full::new(bytes.clone()))
        .expect("valid request");
    req.extensions_mut()
        .insert(parse_body(Endpoint::Messages, bytes).expect("valid body"));
    req
}

fn header<B>(res: &Response<B>, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn bytes<B: http_body::Body>(res: Response<B>) -> Bytes {
    res.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

#[tokio::test]
async fn overloaded_route_a_is_served_by_route_b_with_served_by_headers() {
    let a = mock("a", &[("x-mock-status", "529")]).await;
    let b = mock("b", &[]).await;
    let (gw, _) = gateway(TWO_ROUTES, &[("a", &a), ("b", &b)]);
    let res = gw.oneshot(request(BODY)).await.expect("an answer");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-mock-name"), "b");
    assert_eq!(header(&res, "x-tollgate-route"), "b");
    assert_eq!(header(&res, "x-tollgate-model"), OPUS);
    assert_eq!(header(&res, "x-tollgate-attempts"), "2");
    assert_eq!((a.request_count(), b.request_count()), (1, 1));
}

#[tokio::test]
async fn a_cooling_route_is_skipped_by_the_next_request() {
    let a = mock("a", &[("x-mock-status", "529")]).await;
    let b = mock("b", &[]).await;
    let (gw, fallback) = gateway(TWO_ROUTES, &[("a", &a), ("b", &b)]);
    gw.clone().oneshot(request(BODY)).await.expect("an answer");
    assert!(fallback.cooldown_remaining("a", OPUS).is_some());
    let res = gw.oneshot(request(BODY)).await.expect("an answer");
    assert_eq!(header(&res, "x-tollgate-route"), "b");
    assert_eq!(header(&res, "x-tollgate-attempts"), "1");
    assert_eq!((a.request_count(), b.request_count()), (1, 2));
}

#[tokio::test]
async fn all_routes_failing_returns_the_last_upstream_error_bytes() {
    let a = mock("a", &[("x-mock-status", "529")]).await;
    let b = mock("b", &[("x-mock-status", "500")]).await;
    let (gw, _) = gateway(TWO_ROUTES, &[("a", &a), ("b", &b)]);
    let res = gw.oneshot(request(BODY)).await.expect("an answer");
    let f = fixtures::F7_500;
    assert_eq!(res.status().as_u16(), f.status);
    for (name, value) in f.headers {
        assert_eq!(header(&res, name), *value, "{name}");
    }
    assert_eq!(header(&res, "x-tollgate-route"), "b");
    // One attempt on a, then b (the last route) with its retries.
    assert_eq!(header(&res, "x-tollgate-attempts"), "4");
    assert_eq!(bytes(res).await, f.body.as_bytes());
}

const SUBSTITUTE: &str = r#"
    [models."claude-opus-4-8"]
    routes = ["a", "b"]
    fallback_models = ["claude-sonnet-4-6"]

    [models."claude-sonnet-4-6"]
    routes = ["c"]
"#;

#[tokio::test]
async fn substitution_is_not_made_unless_configured() {
    let a = mock("a", &[("x-mock-status", "529")]).await;
    let b = mock("b", &[("x-mock-status", "529")]).await;
    let c = mock("c", &[]).await;
    let config = r#"
        [models."claude-opus-4-8"]
        routes = ["a", "b"]
        [models."claude-sonnet-4-6"]
        routes = ["c"]
    "#;
    let (gw, _) = gateway(config, &[("a", &a), ("b", &b), ("c", &c)]);
    let res = gw.oneshot(request(BODY)).await.expect("an answer");
    assert_eq!(res.status(), 529);
    assert_eq!(c.request_count(), 0);
}

#[tokio::test]
async fn substituted_model_is_visible_in_headers_and_truthful_in_the_body() {
    let a = mock("a", &[("x-mock-status", "529")]).await;
    let b = mock("b", &[("x-mock-status", "529")]).await;
    let c = mock("c", &[]).await;
    let (gw, _) = gateway(SUBSTITUTE, &[("a", &a), ("b", &b), ("c", &c)]);
    let res = gw.oneshot(request(BODY)).await.expect("an answer");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-tollgate-route"), "c");
    assert_eq!(header(&res, "x-tollgate-model"), SONNET);
    let json: serde_json::Value =
        serde_json::from_slice(&bytes(res).await).expect("a JSON message");
    assert_eq!(
        json["model"], SONNET,
        "the model the upstream says served it"
    );
    let sent = &c.received()[0];
    assert_eq!(sent.body, BODY.replace(OPUS, SONNET));
    assert_eq!(
        sent.header("content-length"),
        Some(BODY.replace(OPUS, SONNET).len().to_string().as_str())
    );
}

#[tokio::test]
async fn no_substitute_header_keeps_the_requested_model() {
    let a = mock("a", &[("x-mock-status", "529")]).await;
    let b = mock("b", &[("x-mock-status", "529")]).await;
    let c = mock("c", &[]).await;
    let (gw, _) = gateway(SUBSTITUTE, &[("a", &a), ("b", &b), ("c", &c)]);
    let mut req = request(BODY);
    req.headers_mut()
        .insert("x-tollgate-no-substitute", "1".parse().expect("valid"));
    let res = gw.oneshot(req).await.expect("an answer");
    assert_eq!(res.status(), 529);
    assert_eq!(c.request_count(), 0);
}

#[tokio::test]
async fn stream_failure_before_content_is_invisible_to_the_client() {
    let a = mock("a", &[("x-mock-stream-error-after", "0")]).await;
    let b = mock("b", &[]).await;
    let (gw, _) = gateway(TWO_ROUTES, &[("a", &a), ("b", &b)]);
    let res = gw.oneshot(request(STREAM_BODY)).await.expect("an answer");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-tollgate-route"), "b");
    let body = String::from_utf8_lossy(&bytes(res).await).into_owned();
    assert!(body.starts_with("event: message_start\n"), "{body}");
    assert!(
        body.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{body}"
    );
    assert!(!body.contains("event: error"), "{body}");
    assert_eq!(a.request_count(), 1);
}

#[tokio::test]
async fn stream_failure_after_content_reaches_the_client_as_event_error() {
    let a = mock("a", &[("x-mock-stream-error-after", "3")]).await;
    let b = mock("b", &[]).await;
    let (gw, _) = gateway(TWO_ROUTES, &[("a", &a), ("b", &b)]);
    let res = gw.oneshot(request(STREAM_BODY)).await.expect("an answer");
    assert_eq!(header(&res, "x-tollgate-route"), "a");
    let body = String::from_utf8_lossy(&bytes(res).await).into_owned();
    assert_eq!(body.matches("event: content_block_delta").count(), 3);
    assert!(
        body.contains(
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\""
        ),
        "{body}"
    );
    assert!(!body.contains("message_stop"), "{body}");
    assert_eq!(b.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplification_with_fallback_and_retry_stays_within_the_shared_budget() {
    const REQUESTS: u32 = 1000;
    let options = |name| {
        MockOptions::new()
            .name(name)
            .default_header("x-mock-status", "529")
            .record(false)
    };
    let a = MockServer::start(options("a")).await.expect("mock starts");
    let b = MockServer::start(options("b")).await.expect("mock starts");
    let config: FallbackConfig = toml::from_str(TWO_ROUTES).expect("valid config");
    let retry = RetryLayer::new(RetryConfig {
        base_delay_ms: 1,
        max_delay_ms: 2,
        ..RetryConfig::default()
    });
    let svc: Gateway = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(FallbackLayer::new(config).budget(retry.retry_budget()))
            .layer(retry)
            .service(relay(&[("a", &a), ("b", &b)])),
    );
    let sent = Arc::new(AtomicU32::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (svc, sent) = (svc.clone(), sent.clone());
        tasks.spawn(async move {
            while sent.fetch_add(1, Ordering::SeqCst) < REQUESTS {
                let res = svc.clone().oneshot(request(BODY)).await.expect("an answer");
                assert_eq!(res.status(), 529);
                let _ = res.into_body().collect().await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task finished");
    }
    let attempts = a.request_count() + b.request_count();
    println!(
        "amplification (fallback a→b + retry): {REQUESTS} requests → {attempts} upstream attempts ({:.3}×; a {}, b {})",
        attempts as f64 / f64::from(REQUESTS),
        a.request_count(),
        b.request_count()
    );
    assert!(
        attempts <= u64::from(REQUESTS) * 12 / 10,
        "{attempts} attempts for {REQUESTS} requests"
    );
}
