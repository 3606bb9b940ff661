//! The fallback service's behaviour, driven with a scripted upstream per route.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tollgate_core::{
    Endpoint, Limits, ManualClock, Principal, RequestMeta, Served, TargetRoute, TransportError,
    TransportErrorKind, request_meta::parse_body,
};
use tollgate_retry::{BudgetConfig, MaxAttempts, RetryBudget};
use tower::{Layer, Service, ServiceExt};

use crate::{Fallback, FallbackConfig, FallbackLayer, NoSubstitute};

const OPUS: &str = "claude-opus-4-8";
const SONNET: &str = "claude-sonnet-4-6";
const BODY: &str =
    r#"{"model": "claude-opus-4-8", "max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;

// ===== a scripted upstream =====

/// A body of scripted frames; `Err` entries are connection resets.
#[derive(Debug, Default)]
struct Frames(VecDeque<Result<Bytes, ()>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|f| {
            f.map(Frame::data)
                .map_err(|()| io::Error::from(io::ErrorKind::ConnectionReset))
        }))
    }
}

type Reply = Result<Response<Frames>, TransportError>;

fn reply(status: u16, headers: &[(&'static str, &'static str)], body: &'static str) -> Reply {
    let mut res = Response::builder().status(status);
    for (k, v) in headers {
        res = res.header(*k, *v);
    }
    let frames = Frames([Ok(Bytes::from_static(body.as_bytes()))].into());
    Ok(res.body(frames).expect("valid response"))
}

/// What one attempt looked like on arrival.
#[derive(Clone, Debug)]
struct Seen {
    route: Option<String>,
    meta_model: Option<String>,
    body: Bytes,
    max_attempts: Option<u32>,
    retry_count: Option<String>,
    no_substitute_header: bool,
}

#[derive(Clone, Default)]
struct Upstream {
    script: Arc<Mutex<HashMap<&'static str, VecDeque<Reply>>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Route `route` answers `reply` (once per call; the last one repeats).
    fn on(self, route: &'static str, reply: Reply) -> Self {
        self.script
            .lock()
            .entry(route)
            .or_default()
            .push_back(reply);
        self
    }

    fn failing(self, route: &'static str, status: u16) -> Self {
        let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        (0..8).fold(self, |u, _| u.on(route, reply(status, &[], body)))
    }

    fn routes(&self) -> Vec<String> {
        self.seen
            .lock()
            .iter()
            .map(|s| s.route.clone().unwrap_or_default())
            .collect()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

impl Service<Request<Full<Bytes>>> for Upstream {
    type Response = Response<Frames>;
    type Error = TransportError;
    type Future = std::future::Ready<Reply>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let route = parts
            .extensions
            .get::<TargetRoute>()
            .map(|t| t.0.to_string());
        self.seen.lock().push(Seen {
            route: route.clone(),
            meta_model: parts
                .extensions
                .get::<RequestMeta>()
                .map(|m| m.model.clone()),
            body: ready_bytes(body),
            max_attempts: parts.extensions.get::<MaxAttempts>().map(|m| m.0),
            retry_count: parts
                .headers
                .get("x-tollgate-retry-count")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            no_substitute_header: parts.headers.contains_key("x-tollgate-no-substitute"),
        });
        let mut script = self.script.lock();
        let queue = route.and_then(|r| script.get_mut(r.as_str()));
        let reply = match queue {
            Some(q) if q.len() > 1 => q.pop_front(),
            Some(q) => q.front().map(clone_reply),
            None => None,
        };
        std::future::ready(reply.unwrap_or_else(reply_ok))
    }
}

fn reply_ok() -> Reply {
    reply(
        200,
        &[("content-type", "application/json")],
        r#"{"type":"message","model":"as-the-upstream-says"}"#,
    )
}

/// Repeat a scripted reply: only the head and the (single, known) body frame matter.
fn clone_reply(r: &Reply) -> Reply {
    match r {
        Ok(res) => {
            let mut out = Response::builder().status(res.status());
            for (k, v) in res.headers() {
                out = out.header(k, v);
            }
            let frames = Frames(res.body().0.iter().cloned().collect());
            Ok(out.body(frames).expect("valid response"))
        }
        Err(e) => Err(TransportError::new(e.kind(), e.to_string())),
    }
}

fn ready_bytes(body: Full<Bytes>) -> Bytes {
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match body.as_mut().poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

// ===== helpers =====

fn config(toml: &str) -> FallbackConfig {
    toml::from_str(toml).expect("valid config")
}

fn two_routes() -> FallbackConfig {
    config(
        r#"
        [models."claude-opus-4-8"]
        routes = ["a", "b"]
        "#,
    )
}

fn with_substitute() -> FallbackConfig {
    config(
        r#"
        [models."claude-opus-4-8"]
        routes = ["a", "b"]
        fallback_models = ["claude-sonnet-4-6"]

        [models."claude-sonnet-4-6"]
        routes = ["c"]
        "#,
    )
}

fn request() -> Request<Full<Bytes>> {
    let body = Bytes::from_static(BODY.as_bytes());
    let mut req = Request::post("/v1/messages")
        .header("content-length", body.len())
        .body(Full::new(body.clone()))
        .expect("valid request");
    let meta = parse_body(Endpoint::Messages, body).expect("valid body");
    req.extensions_mut().insert(meta);
    req
}

fn service(layer: &FallbackLayer, upstream: &Upstream) -> Fallback<Upstream> {
    layer.layer(upstream.clone())
}

async fn send(
    svc: Fallback<Upstream>,
    req: Request<Full<Bytes>>,
) -> Result<Response<tollgate_retry::CommitBody<Frames>>, tollgate_core::BoxError> {
    svc.oneshot(req).await
}

async fn text(res: Response<tollgate_retry::CommitBody<Frames>>) -> String {
    let bytes = res
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn header(res: &Response<tollgate_retry::CommitBody<Frames>>, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

// ===== routes =====

#[tokio::test]
async fn routes_are_tried_in_order_until_one_answers() {
    let upstream = Upstream::default().failing("a", 529);
    let layer = FallbackLayer::new(two_routes());
    let res = send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.routes(), ["a", "b"]);
    assert_eq!(header(&res, "x-tollgate-route"), "b");
    assert_eq!(header(&res, "x-tollgate-model"), OPUS);
    assert_eq!(header(&res, "x-tollgate-attempts"), "2");
    assert_eq!(
        res.extensions().get::<Served>(),
        Some(&Served {
            route: "b".into(),
            model: OPUS.into(),
            attempts: 2
        })
    );
}

#[tokio::test]
async fn every_attempt_sends_the_same_bytes_with_its_retry_count() {
    let upstream = Upstream::default().failing("a", 500);
    let layer = FallbackLayer::new(two_routes());
    send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    let seen = upstream.seen();
    assert!(seen.iter().all(|s| s.body == BODY));
    let counts: Vec<_> = seen.iter().map(|s| s.retry_count.clone()).collect();
    assert_eq!(counts, [Some("0".into()), Some("1".into())]);
}

#[tokio::test]
async fn a_route_with_others_left_is_limited_to_one_attempt() {
    let upstream = Upstream::default().failing("a", 529);
    let layer = FallbackLayer::new(two_routes());
    send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    let limits: Vec<_> = upstream.seen().iter().map(|s| s.max_attempts).collect();
    assert_eq!(limits, [Some(1), None]);
}

#[tokio::test]
async fn errors_about_the_request_are_the_answer() {
    for status in [400, 404, 413] {
        let upstream = Upstream::default().failing("a", status);
        let layer = FallbackLayer::new(two_routes());
        let res = send(service(&layer, &upstream), request())
            .await
            .expect("answer");
        assert_eq!(res.status().as_u16(), status);
        assert_eq!(upstream.routes(), ["a"], "{status}");
        assert!(layer.cooldown_remaining("a", OPUS).is_none());
    }
}

#[tokio::test]
async fn errors_about_the_route_key_or_limits_switch_routes() {
    for status in [401, 402, 403, 429] {
        let upstream =
            Upstream::default().on("a", reply(status, &[("x-should-retry", "false")], "{}"));
        let layer = FallbackLayer::new(two_routes());
        let res = send(service(&layer, &upstream), request())
            .await
            .expect("answer");
        assert_eq!(res.status(), 200, "{status}");
        assert_eq!(upstream.routes(), ["a", "b"], "{status}");
    }
}

#[tokio::test]
async fn connection_errors_switch_routes() {
    let upstream = Upstream::default().on(
        "a",
        Err(TransportError::new(TransportErrorKind::Connect, "refused")),
    );
    let layer = FallbackLayer::new(two_routes());
    let res = send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(header(&res, "x-tollgate-route"), "b");
}

#[tokio::test]
async fn all_routes_failing_returns_the_last_upstream_error_untouched() {
    let upstream = Upstream::default()
        .on("a", reply(529, &[("request-id", "req_a")], "from a"))
        .on("b", reply(503, &[("request-id", "req_b")], "from b"));
    let layer = FallbackLayer::new(two_routes());
    let res = send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(res.status(), 503);
    assert_eq!(header(&res, "request-id"), "req_b");
    assert_eq!(header(&res, "x-tollgate-route"), "b");
    assert_eq!(header(&res, "x-tollgate-attempts"), "2");
    assert_eq!(text(res).await, "from b");
}

#[tokio::test]
async fn a_later_transport_error_does_not_hide_an_upstream_error_response() {
    let upstream = Upstream::default().on("a", reply(529, &[], "from a")).on(
        "b",
        Err(TransportError::new(TransportErrorKind::Reset, "reset")),
    );
    let layer = FallbackLayer::new(two_routes());
    let res = send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(res.status(), 529);
    assert_eq!(header(&res, "x-tollgate-route"), "a");
    assert_eq!(text(res).await, "from a");
}

#[tokio::test]
async fn transport_errors_everywhere_return_the_last_one() {
    let refused = || Err(TransportError::new(TransportErrorKind::Connect, "refused"));
    let upstream = Upstream::default().on("a", refused()).on("b", refused());
    let layer = FallbackLayer::new(two_routes());
    let err = send(service(&layer, &upstream), request())
        .await
        .expect_err("nobody answered");
    assert_eq!(
        err.downcast_ref::<TransportError>()
            .map(TransportError::kind),
        Some(TransportErrorKind::Connect)
    );
}

#[tokio::test]
async fn requests_without_meta_or_routes_pass_through_untouched() {
    let upstream = Upstream::default();
    let layer = FallbackLayer::new(two_routes());
    let raw = Request::get("/v1/models")
        .body(Full::new(Bytes::new()))
        .expect("valid");
    let res = send(service(&layer, &upstream), raw).await.expect("answer");
    assert!(!res.headers().contains_key("x-tollgate-route"));
    let mut other = request();
    if let Some(meta) = other.extensions_mut().get_mut::<RequestMeta>() {
        meta.model = "unrouted-model".into();
    }
    send(service(&layer, &upstream), other)
        .await
        .expect("answer");
    assert_eq!(upstream.routes(), ["", ""], "no TargetRoute was set");
}

// ===== cooldowns =====

#[tokio::test]
async fn a_failed_route_is_skipped_while_it_cools_then_tried_first_again() {
    let clock = ManualClock::new();
    let upstream = Upstream::default()
        .on("a", reply(529, &[], "{}"))
        .on("a", reply_ok());
    let layer = FallbackLayer::new(two_routes()).clock(Arc::new(clock.clone()));
    send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(
        layer.cooldown_remaining("a", OPUS),
        Some(Duration::from_secs(1))
    );
    let res = send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(header(&res, "x-tollgate-route"), "b");
    clock.advance(Duration::from_secs(1));
    let res = send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(header(&res, "x-tollgate-route"), "a");
    assert_eq!(upstream.routes(), ["a", "b", "b", "a"]);
}

#[tokio::test]
async fn retry_after_sets_the_route_cooldown() {
    let clock = ManualClock::new();
    let upstream = Upstream::default().on("a", reply(429, &[("retry-after", "7")], "{}"));
    let layer = FallbackLayer::new(two_routes()).clock(Arc::new(clock.clone()));
    send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(
        layer.cooldown_remaining("a", OPUS),
        Some(Duration::from_secs(7))
    );
    assert_eq!(layer.cooldown_remaining("b", OPUS), None);
}

#[tokio::test]
async fn when_every_route_cools_the_first_to_recover_is_tried_alone() {
    let clock = ManualClock::new();
    let upstream = Upstream::default()
        .on("a", reply(529, &[("retry-after", "9")], "{}"))
        .on("b", reply(529, &[("retry-after", "3")], "{}"));
    let layer = FallbackLayer::new(two_routes()).clock(Arc::new(clock.clone()));
    send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    let res = send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(res.status(), 529);
    assert_eq!(upstream.routes(), ["a", "b", "b"]);
}

// ===== substitution =====

#[tokio::test]
async fn substitution_is_not_made_unless_configured() {
    let upstream = Upstream::default().failing("a", 529).failing("b", 529);
    let layer = FallbackLayer::new(config(
        r#"
        [models."claude-opus-4-8"]
        routes = ["a", "b"]
        [models."claude-sonnet-4-6"]
        routes = ["c"]
        "#,
    ));
    let res = send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(res.status(), 529);
    assert_eq!(upstream.routes(), ["a", "b"]);
}

#[tokio::test]
async fn substitution_rewrites_only_the_model_and_reports_it() {
    let upstream = Upstream::default().failing("a", 529).failing("b", 529);
    let layer = FallbackLayer::new(with_substitute());
    let res = send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-tollgate-route"), "c");
    assert_eq!(header(&res, "x-tollgate-model"), SONNET);
    assert_eq!(header(&res, "x-tollgate-attempts"), "3");
    // The response body is the upstream's, untouched.
    assert_eq!(
        text(res).await,
        r#"{"type":"message","model":"as-the-upstream-says"}"#
    );
    let seen = upstream.seen();
    let last = &seen[2];
    assert_eq!(last.body, BODY.replace(OPUS, SONNET));
    assert_eq!(last.meta_model.as_deref(), Some(SONNET));
    assert_eq!(seen[0].meta_model.as_deref(), Some(OPUS));
}

#[tokio::test]
async fn no_substitute_header_forbids_substitution_and_is_not_forwarded() {
    let upstream = Upstream::default().failing("a", 529).failing("b", 529);
    let layer = FallbackLayer::new(with_substitute());
    let mut req = request();
    req.headers_mut()
        .insert("x-tollgate-no-substitute", "1".parse().expect("valid"));
    let res = send(service(&layer, &upstream), req).await.expect("answer");
    assert_eq!(res.status(), 529);
    assert_eq!(upstream.routes(), ["a", "b"]);
    assert!(upstream.seen().iter().all(|s| !s.no_substitute_header));
}

#[tokio::test]
async fn no_substitute_extension_forbids_substitution() {
    let upstream = Upstream::default().failing("a", 529).failing("b", 529);
    let layer = FallbackLayer::new(with_substitute());
    let mut req = request();
    req.extensions_mut().insert(NoSubstitute);
    send(service(&layer, &upstream), req).await.expect("answer");
    assert_eq!(upstream.routes(), ["a", "b"]);
}

#[tokio::test]
async fn a_substitute_the_key_may_not_use_is_skipped() {
    let upstream = Upstream::default().failing("a", 529).failing("b", 529);
    let layer = FallbackLayer::new(with_substitute());
    let mut req = request();
    req.extensions_mut().insert(Principal {
        key_id: 1,
        account_id: "acct".into(),
        name: None,
        allowed_models: Some(Arc::from(vec![OPUS.to_string()])),
        limits: Limits::default(),
    });
    send(service(&layer, &upstream), req).await.expect("answer");
    assert_eq!(upstream.routes(), ["a", "b"]);
}

// ===== bounds =====

#[tokio::test]
async fn switches_draw_on_the_shared_budget() {
    let budget = Arc::new(RetryBudget::new(&BudgetConfig {
        ttl_secs: 10,
        min_per_sec: 0,
        retry_percent: 0.5,
    }));
    let upstream = Upstream::default().failing("a", 529).failing("b", 529);
    let no_cooldown = FallbackConfig {
        cooldown_base_ms: 0,
        ..two_routes()
    };
    let layer = FallbackLayer::new(no_cooldown).budget(budget.clone());
    // First request: 1 deposit → no switch at 50 %; second: 2 deposits → one switch.
    send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(upstream.routes(), ["a", "a", "b"]);
    assert_eq!(budget.available(), 0);
}

#[tokio::test]
async fn no_switch_starts_after_the_deadline() {
    let upstream = Upstream::default().failing("a", 529);
    let layer = FallbackLayer::new(two_routes());
    let mut req = request();
    req.extensions_mut()
        .insert(tollgate_retry::Deadline(tokio::time::Instant::now()));
    let res = send(service(&layer, &upstream), req).await.expect("answer");
    assert_eq!(res.status(), 529);
    assert_eq!(upstream.routes(), ["a"]);
}

// ===== streams =====

const START: &str =
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\"}}\n\n";
const DELTA: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
const STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
const OVERLOADED: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

fn sse(frames: &[&'static str]) -> Reply {
    let frames = Frames(
        frames
            .iter()
            .map(|f| Ok(Bytes::from_static(f.as_bytes())))
            .collect(),
    );
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .body(frames)
        .expect("valid response"))
}

#[tokio::test]
async fn stream_failing_before_content_falls_back_invisibly() {
    let upstream = Upstream::default()
        .on("a", sse(&[START, OVERLOADED]))
        .on("b", sse(&[START, DELTA, STOP]));
    let layer = FallbackLayer::new(two_routes());
    let res = send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(header(&res, "x-tollgate-route"), "b");
    assert_eq!(text(res).await, format!("{START}{DELTA}{STOP}"));
}

#[tokio::test]
async fn stream_failing_after_content_is_not_fallen_back() {
    let upstream = Upstream::default().on("a", sse(&[START, DELTA, OVERLOADED]));
    let layer = FallbackLayer::new(two_routes());
    let res = send(service(&layer, &upstream), request())
        .await
        .expect("answer");
    assert_eq!(header(&res, "x-tollgate-route"), "a");
    assert_eq!(text(res).await, format!("{START}{DELTA}{OVERLOADED}"));
    assert_eq!(upstream.routes(), ["a"]);
}
