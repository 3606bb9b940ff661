//! RetryLayer around a plain hyper-util client, against the mock upstream on real sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate_core::{Endpoint, TransportErrorKind, request_meta::parse_body};
use tollgate_mock::{MockOptions, MockServer};
use tollgate_retry::policy::transport_kind;
use tollgate_retry::{BudgetConfig, CommitBody, RetryConfig, RetryLayer};
use tower::{ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const BODY: &str =
    r#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;
const STREAM_BODY: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Fast waits so that real-socket tests stay quick; every other default kept.
fn fast() -> RetryConfig {
    RetryConfig {
        base_delay_ms: 1,
        max_delay_ms: 2,
        ..RetryConfig::client()
    }
}

/// A messages request the way a client stack builds it: body bytes plus `RequestMeta`.
fn request(url: &str, body: &'static str) -> Request<Full<Bytes>> {
    let bytes = Bytes::from_static(body.as_bytes());
    let mut req = Request::post(format!("{url}/v1/messages"))
        .header("content-type", "application/json")
        .body(Full::new(bytes.clone()))
        .expect("valid request");
    req.extensions_mut()
        .insert(parse_body(Endpoint::Messages, bytes).expect("valid body"));
    req
}

async fn text(res: Response<CommitBody<Incoming>>) -> String {
    let bytes = res
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn fail_times_recovery_sends_the_same_bytes_with_retry_counts() {
    let mock = MockServer::start(MockOptions::new())
        .await
        .expect("mock starts");
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(fast()))
        .service(client());
    let mut req = request(&mock.url(), BODY);
    req.headers_mut()
        .insert("x-mock-fail-times", "2".parse().expect("valid"));
    req.headers_mut()
        .insert("x-mock-scenario", "recovery".parse().expect("valid"));

    let res = svc.oneshot(req).await.expect("a response");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-tollgate-attempts"], "3");
    let received = mock.received();
    let counts: Vec<_> = received
        .iter()
        .map(|r| {
            r.header("x-tollgate-retry-count")
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(counts, ["0", "1", "2"]);
    assert!(received.iter().all(|r| r.body == BODY));
}

#[tokio::test]
async fn connection_refused_is_retried_and_then_returned_as_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(fast()))
        .map_request(move |req: Request<Full<Bytes>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            req
        })
        .service(client());
    let err = svc
        .oneshot(request(&format!("http://127.0.0.1:{port}"), BODY))
        .await
        .expect_err("nobody listens");
    assert_eq!(transport_kind(&*err), TransportErrorKind::Connect);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn stream_failing_before_content_every_time_ends_with_the_upstream_error() {
    let mock =
        MockServer::start(MockOptions::new().default_header("x-mock-stream-error-after", "0"))
            .await
            .expect("mock starts");
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(fast()))
        .service(client());
    let res = svc
        .oneshot(request(&mock.url(), STREAM_BODY))
        .await
        .expect("a response");
    assert_eq!(res.status(), 200);
    let body = text(res).await;
    assert!(!body.contains("content_block_delta"), "{body}");
    assert!(
        body.contains(
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\""
        ),
        "{body}"
    );
    assert!(
        !body.contains("api_error"),
        "nothing added to the upstream's own error: {body}"
    );
    assert_eq!(mock.request_count(), 3, "retried before any content");
}

#[tokio::test]
async fn stream_failing_after_content_is_relayed_with_its_error_event_and_not_retried() {
    let mock =
        MockServer::start(MockOptions::new().default_header("x-mock-stream-error-after", "3"))
            .await
            .expect("mock starts");
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(fast()))
        .service(client());
    let res = svc
        .oneshot(request(&mock.url(), STREAM_BODY))
        .await
        .expect("a response");
    let body = text(res).await;
    assert_eq!(body.matches("event: content_block_delta").count(), 3);
    assert!(body.contains(
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\""
    ));
    assert!(!body.contains("message_stop"));
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplification_under_a_full_outage_stays_within_the_budget() {
    const REQUESTS: u32 = 1000;
    let mock = MockServer::start(
        MockOptions::new()
            .default_header("x-mock-status", "529")
            .record(false),
    )
    .await
    .expect("mock starts");
    let config = RetryConfig {
        budget: BudgetConfig::default(),
        ..fast()
    };
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(config))
        .service(client());
    let url = mock.url();
    let mut tasks = tokio::task::JoinSet::new();
    let sent = Arc::new(AtomicU32::new(0));
    for _ in 0..32 {
        let (svc, url, sent) = (svc.clone(), url.clone(), sent.clone());
        tasks.spawn(async move {
            while sent.fetch_add(1, Ordering::SeqCst) < REQUESTS {
                let res = svc
                    .clone()
                    .oneshot(request(&url, BODY))
                    .await
                    .expect("a response");
                assert_eq!(res.status(), 529);
                let _ = res.into_body().collect().await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task finished");
    }
    let attempts = mock.request_count();
    println!(
        "amplification: {REQUESTS} requests → {attempts} upstream attempts ({:.3}×)",
        attempts as f64 / f64::from(REQUESTS)
    );
    assert!(attempts >= u64::from(REQUESTS));
    assert!(
        attempts <= u64::from(REQUESTS) * 12 / 10,
        "{attempts} attempts for {REQUESTS} requests"
    );
}
