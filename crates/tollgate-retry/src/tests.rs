//! The retry service's behaviour, driven with scripted upstreams and paused time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokio::time::Instant;
use tollgate_core::{
    Endpoint, ManualClock, RequestMeta, Served, TransportError, TransportErrorKind,
    request_meta::parse_body,
};
use tower::{Layer, Service, ServiceExt};

use crate::test_support::{DELTA, Events, OVERLOADED, START, STOP, json, sse};
use crate::{
    Attempts, BudgetConfig, CommitBody, MaxAttempts, Retry, RetryBudget, RetryConfig, RetryLayer,
};

const BODY: &[u8] =
    br#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;

type Reply = Result<Response<Events>, TransportError>;
type Scripted = Box<dyn FnOnce() -> Reply + Send>;

/// What the scripted upstream saw: when, which retry count, which bytes.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    retry_count: Option<String>,
    body: Bytes,
}

/// An upstream answering from a script, recording every call.
#[derive(Clone)]
struct Script {
    replies: Arc<Mutex<VecDeque<Scripted>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Script {
    fn new() -> Self {
        Script {
            replies: Arc::default(),
            seen: Arc::default(),
        }
    }

    fn then(self, reply: impl FnOnce() -> Reply + Send + 'static) -> Self {
        self.replies.lock().push_back(Box::new(reply));
        self
    }

    fn status(self, status: u16) -> Self {
        self.then(move || Ok(json(status, "{}")))
    }

    fn status_with(self, status: u16, header: &'static str, value: &'static str) -> Self {
        self.then(move || {
            let mut res = json(status, "{}");
            res.headers_mut()
                .insert(header, value.parse().expect("valid value"));
            Ok(res)
        })
    }

    fn ok(self) -> Self {
        self.status(200)
    }

    fn calls(&self) -> usize {
        self.seen.lock().len()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    /// Gaps between consecutive calls.
    fn gaps(&self) -> Vec<Duration> {
        let seen = self.seen();
        seen.windows(2).map(|w| w[1].at - w[0].at).collect()
    }
}

impl Service<Request<Full<Bytes>>> for Script {
    type Response = Response<Events>;
    type Error = TransportError;
    type Future = std::future::Ready<Reply>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), TransportError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let body = futures_now(body);
        self.seen.lock().push(Seen {
            at: Instant::now(),
            retry_count: parts
                .headers
                .get("x-tollgate-retry-count")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
        });
        let reply = self.replies.lock().pop_front();
        std::future::ready(match reply {
            Some(reply) => reply(),
            None => Ok(json(200, "{}")),
        })
    }
}

/// The bytes of a `Full` body, which is ready at once.
fn futures_now(body: Full<Bytes>) -> Bytes {
    use http_body::Body;
    let mut body = std::pin::pin!(body);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match body.as_mut().poll_frame(&mut cx) {
        std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

fn request() -> Request<Full<Bytes>> {
    let mut req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from_static(BODY)))
        .expect("valid request");
    let meta = parse_body(Endpoint::Messages, Bytes::from_static(BODY)).expect("valid body");
    req.extensions_mut().insert(meta);
    req
}

fn streaming_request() -> Request<Full<Bytes>> {
    let mut req = request();
    if let Some(meta) = req.extensions_mut().get_mut::<RequestMeta>() {
        meta.stream = true;
    }
    req
}

fn config() -> RetryConfig {
    RetryConfig {
        budget: BudgetConfig {
            ttl_secs: 10,
            min_per_sec: 100,
            retry_percent: 0.2,
        },
        ..RetryConfig::default()
    }
}

fn retry(script: &Script, config: RetryConfig) -> Retry<Script> {
    RetryLayer::new(config).layer(script.clone())
}

async fn send(
    svc: Retry<Script>,
    req: Request<Full<Bytes>>,
) -> Result<Response<CommitBody<Events>>, tollgate_core::BoxError> {
    svc.oneshot(req).await
}

async fn text(res: Response<CommitBody<Events>>) -> String {
    let bytes = res
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

// ===== what is retried =====

#[tokio::test(start_paused = true)]
async fn retryable_statuses_are_retried_until_success() {
    for status in [408, 409, 429, 500, 502, 503, 504, 529] {
        let script = Script::new().status(status).ok();
        let res = send(retry(&script, config()), request())
            .await
            .expect("a response");
        assert_eq!(res.status(), 200, "{status}");
        assert_eq!(script.calls(), 2, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn client_and_account_errors_are_not_retried() {
    for status in [400, 401, 402, 403, 404, 413] {
        let script = Script::new().status(status).ok();
        let res = send(retry(&script, config()), request())
            .await
            .expect("a response");
        assert_eq!(res.status().as_u16(), status);
        assert_eq!(script.calls(), 1, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_false_stops_a_retryable_status() {
    let script = Script::new()
        .status_with(529, "x-should-retry", "false")
        .ok();
    let res = send(retry(&script, config()), request())
        .await
        .expect("a response");
    assert_eq!(res.status(), 529);
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_true_retries_a_client_error() {
    let script = Script::new()
        .status_with(400, "x-should-retry", "true")
        .ok();
    let res = send(retry(&script, config()), request())
        .await
        .expect("a response");
    assert_eq!(res.status(), 200);
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn connection_errors_are_retried() {
    let script = Script::new()
        .then(|| {
            Err(TransportError::new(
                TransportErrorKind::Connect,
                "connection refused",
            ))
        })
        .then(|| Err(TransportError::new(TransportErrorKind::Reset, "reset")))
        .ok();
    let res = send(retry(&script, config()), request())
        .await
        .expect("a response");
    assert_eq!(res.status(), 200);
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_last_transport_error_is_returned_unchanged_in_kind() {
    let script = Script::new()
        .then(|| Err(TransportError::new(TransportErrorKind::Timeout, "slow")))
        .then(|| Err(TransportError::new(TransportErrorKind::Timeout, "slow")))
        .then(|| Err(TransportError::new(TransportErrorKind::Timeout, "slow")));
    let err = send(retry(&script, config()), request())
        .await
        .expect_err("every attempt failed");
    let transport = err
        .downcast_ref::<TransportError>()
        .expect("the inner error type is kept");
    assert_eq!(transport.kind(), TransportErrorKind::Timeout);
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn other_transport_errors_are_not_retried() {
    let script = Script::new()
        .then(|| Err(TransportError::new(TransportErrorKind::Other, "bad uri")))
        .ok();
    assert!(send(retry(&script, config()), request()).await.is_err());
    assert_eq!(script.calls(), 1);
}

// ===== bounds =====

#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_the_attempts() {
    let script = Script::new().status(529).status(529).status(529).ok();
    let res = send(retry(&script, config()), request())
        .await
        .expect("a response");
    assert_eq!(res.status(), 529);
    assert_eq!(res.headers()["x-tollgate-attempts"], "3");
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_extension_lowers_the_limit_for_one_request() {
    let script = Script::new().status(529).ok();
    let mut req = request();
    req.extensions_mut().insert(MaxAttempts(1));
    let res = send(retry(&script, config()), req)
        .await
        .expect("a response");
    assert_eq!(res.status(), 529);
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn deadline_stops_retries_that_would_end_after_it() {
    // A 3 s server-directed wait fits the first time, not the second (deadline 5 s).
    let script = Script::new()
        .status_with(529, "retry-after", "3")
        .status_with(529, "retry-after", "3")
        .ok();
    let cfg = RetryConfig {
        deadline_ms: 5_000,
        ..config()
    };
    let res = send(retry(&script, cfg), request())
        .await
        .expect("a response");
    assert_eq!(res.status(), 529);
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn client_read_timeout_is_a_deadline_too() {
    let script = Script::new().status_with(529, "retry-after", "3").ok();
    let mut req = request();
    req.headers_mut()
        .insert("x-stainless-read-timeout", "2".parse().expect("valid"));
    let res = send(retry(&script, config()), req)
        .await
        .expect("a response");
    assert_eq!(res.status(), 529);
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn exhausted_budget_stops_retries() {
    let budget = Arc::new(RetryBudget::new(&BudgetConfig {
        ttl_secs: 10,
        min_per_sec: 0,
        retry_percent: 0.5,
    }));
    let script = (0..20).fold(Script::new(), |s, _| s.status(529));
    let svc = RetryLayer::new(config())
        .budget(budget.clone())
        .layer(script.clone());
    // Two requests deposit two tokens: one retry at 50 %, then none.
    let first = send(svc.clone(), request()).await.expect("a response");
    assert_eq!(first.status(), 529);
    let second = send(svc, request()).await.expect("a response");
    assert_eq!(second.status(), 529);
    assert_eq!(script.calls(), 2 + 1);
    assert_eq!(budget.available(), 0);
}

// ===== waits =====

#[tokio::test(start_paused = true)]
async fn backoff_waits_stay_within_the_full_jitter_ceilings() {
    for _ in 0..20 {
        let script = Script::new().status(529).status(529).ok();
        send(retry(&script, config()), request())
            .await
            .expect("a response");
        let gaps = script.gaps();
        assert!(gaps[0] <= Duration::from_millis(500), "{gaps:?}");
        assert!(gaps[1] <= Duration::from_millis(1_000), "{gaps:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_ms_is_waited_exactly_plus_small_jitter() {
    let script = Script::new()
        .status_with(429, "retry-after-ms", "1500")
        .ok();
    send(retry(&script, config()), request())
        .await
        .expect("a response");
    let gap = script.gaps()[0];
    assert!(gap >= Duration::from_millis(1_500), "{gap:?}");
    assert!(gap <= Duration::from_millis(1_650), "{gap:?}");
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_waited() {
    let script = Script::new().status_with(529, "retry-after", "4").ok();
    send(retry(&script, config()), request())
        .await
        .expect("a response");
    let gap = script.gaps()[0];
    assert!(gap >= Duration::from_secs(4), "{gap:?}");
    assert!(gap <= Duration::from_millis(4_400), "{gap:?}");
}

#[tokio::test(start_paused = true)]
async fn retry_after_http_date_is_waited() {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let clock = ManualClock::at(wall);
    let date = httpdate::fmt_http_date(wall + Duration::from_secs(6));
    let date: &'static str = Box::leak(date.into_boxed_str());
    let script = Script::new().status_with(503, "retry-after", date).ok();
    let svc = RetryLayer::new(config())
        .clock(Arc::new(clock))
        .layer(script.clone());
    send(svc, request()).await.expect("a response");
    let gap = script.gaps()[0];
    assert!(gap >= Duration::from_secs(6), "{gap:?}");
    assert!(gap <= Duration::from_millis(6_600), "{gap:?}");
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_the_maximum_is_handed_back_with_its_header() {
    let script = Script::new().status_with(429, "retry-after", "30").ok();
    let res = send(retry(&script, config()), request())
        .await
        .expect("a response");
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "30");
    assert_eq!(script.calls(), 1);
}

// ===== replay =====

#[tokio::test(start_paused = true)]
async fn every_attempt_sends_the_same_bytes_with_its_retry_count() {
    let script = Script::new().status(529).status(500).ok();
    send(retry(&script, config()), request())
        .await
        .expect("a response");
    let seen = script.seen();
    let counts: Vec<_> = seen.iter().map(|s| s.retry_count.clone()).collect();
    assert_eq!(
        counts,
        [Some("0".into()), Some("1".into()), Some("2".into())]
    );
    assert!(seen.iter().all(|s| s.body == BODY));
}

#[tokio::test(start_paused = true)]
async fn request_without_meta_is_sent_once_untouched() {
    let script = Script::new().status(529).ok();
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from_static(b"raw")))
        .expect("valid");
    let res = send(retry(&script, config()), req)
        .await
        .expect("a response");
    assert_eq!(res.status(), 529);
    assert!(!res.headers().contains_key("x-tollgate-attempts"));
    let seen = script.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, "raw");
    assert_eq!(seen[0].retry_count, None);
}

#[tokio::test(start_paused = true)]
async fn served_attempts_counts_every_attempt() {
    let script = Script::new().status(529).then(|| {
        let mut res = json(200, "{}");
        res.extensions_mut().insert(Served {
            route: "a".into(),
            model: "claude-sonnet-4-6".into(),
            attempts: 1,
        });
        Ok(res)
    });
    let res = send(retry(&script, config()), request())
        .await
        .expect("a response");
    assert_eq!(
        res.extensions().get::<Served>().map(|s| s.attempts),
        Some(2)
    );
    assert_eq!(res.headers()["x-tollgate-attempts"], "2");
}

#[tokio::test(start_paused = true)]
async fn attempts_already_on_the_request_are_continued() {
    let script = Script::new().status(529).ok();
    let mut req = request();
    let attempts = Attempts::new();
    attempts.settle(0);
    req.extensions_mut().insert(attempts.clone());
    let res = send(retry(&script, config()), req)
        .await
        .expect("a response");
    assert_eq!(res.headers()["x-tollgate-attempts"], "3");
    let counts: Vec<_> = script
        .seen()
        .iter()
        .map(|s| s.retry_count.clone())
        .collect();
    assert_eq!(counts, [Some("1".into()), Some("2".into())]);
}

// ===== streams =====

#[tokio::test(start_paused = true)]
async fn stream_failing_before_content_is_retried_invisibly() {
    let script = Script::new()
        .then(|| Ok(sse(vec![Ok(START), Ok(OVERLOADED)])))
        .then(|| Ok(sse(vec![Err(())])))
        .then(|| Ok(sse(vec![Ok(START), Ok(DELTA), Ok(STOP)])));
    let res = send(retry(&script, config()), streaming_request())
        .await
        .expect("a response");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-tollgate-attempts"], "3");
    assert_eq!(text(res).await, format!("{START}{DELTA}{STOP}"));
}

#[tokio::test(start_paused = true)]
async fn stream_failing_after_content_is_not_retried_and_ends_with_event_error() {
    let script = Script::new()
        .then(|| Ok(sse(vec![Ok(START), Ok(DELTA), Err(())])))
        .ok();
    let res = send(retry(&script, config()), streaming_request())
        .await
        .expect("a response");
    let body = text(res).await;
    assert!(
        body.starts_with(&format!("{START}{DELTA}event: error\n")),
        "{body}"
    );
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn stream_failing_before_content_on_the_last_attempt_is_relayed() {
    let script = Script::new()
        .then(|| Ok(sse(vec![Ok(START), Ok(OVERLOADED)])))
        .then(|| Ok(sse(vec![Ok(START), Ok(OVERLOADED)])))
        .then(|| Ok(sse(vec![Ok(START), Ok(OVERLOADED)])));
    let res = send(retry(&script, config()), streaming_request())
        .await
        .expect("a response");
    assert_eq!(
        res.extensions().get::<crate::StreamCommit>(),
        Some(&crate::StreamCommit::FailedBeforeContent {
            error_type: Some("overloaded_error".into())
        })
    );
    assert_eq!(text(res).await, format!("{START}{OVERLOADED}"));
    assert_eq!(script.calls(), 3);
}
