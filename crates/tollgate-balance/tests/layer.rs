//! BalanceLayer end to end over a fake upstream, on memory, SQLite and PostgreSQL ledgers.

#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::sync::Notify;
use tollgate_balance::{
    Amount, BalanceLayer, EntryKind, Ledger, LedgerEntry, PriceTable, X_TOLLGATE_COST,
};
use tollgate_core::request_meta::parse_body;
use tollgate_core::{Endpoint, ErrorKind, Principal, Served, Usage};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Fixtures F8 (a complete stream) and F9 (errors after the first delta), byte for byte,
/// from the one copy the mock serves.
const F8: &str = tollgate_mock::fixtures::F8_STREAM.body;
const F9: &str = tollgate_mock::fixtures::F9_STREAM_ERROR.body;

const START: i64 = 1_000_000;
const MESSAGES: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Hello, Claude"}]}"#;

fn principal() -> Principal {
    Principal {
        key_id: 1,
        account_id: "acme".into(),
        name: None,
        allowed_models: None,
        limits: Default::default(),
    }
}

fn request_to(path: &str, endpoint: Endpoint, json: &str) -> Request<Full<Bytes>> {
    let body = Bytes::copy_from_slice(json.as_bytes());
    let mut req = Request::post(path)
        .body(Full::new(body.clone()))
        .expect("request");
    req.extensions_mut()
        .insert(parse_body(endpoint, body).expect("valid body"));
    req.extensions_mut().insert(principal());
    req
}

fn request() -> Request<Full<Bytes>> {
    request_to("/v1/messages", Endpoint::Messages, MESSAGES)
}

/// An SSE response whose body is `text` in `chunk`-byte frames.
fn sse(text: &'static str, chunk: usize) -> Response<Body> {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = text
        .as_bytes()
        .chunks(chunk)
        .map(|c| Ok(Frame::data(Bytes::from_static(c))))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("request-id", "req_011CfxSse00000000000000008")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream::iter(frames))))
        .expect("response")
}

fn json(status: u16, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(BodyExt::boxed_unsync(Full::new(Bytes::from_static(
            text.as_bytes(),
        ))))
        .expect("response")
}

/// An upstream answering `make()` to every request, counting calls.
fn upstream<F>(
    calls: Arc<AtomicUsize>,
    make: F,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Body>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static
where
    F: Fn() -> Response<Body> + Clone + Send + Sync + 'static,
{
    service_fn(move |_req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let res = make();
        async move { Ok::<_, Infallible>(res) }
    })
}

async fn funded(ledger: &Arc<dyn Ledger>, micros: i64) -> BalanceLayer {
    ledger.open_account("acme", "USD").await.expect("open");
    if micros > 0 {
        ledger
            .topup("acme", Amount::from_micros(micros), "test")
            .await
            .expect("topup");
    }
    BalanceLayer::new(ledger.clone(), PriceTable::default())
}

/// The entry that closed the only request, after all settlement finished.
async fn closing_entry(layer: &BalanceLayer) -> LedgerEntry {
    layer.idle().await;
    let h = layer.ledger().history("acme", 10).await.expect("history");
    let closing: Vec<_> = h
        .into_iter()
        .filter(|e| e.kind != EntryKind::Topup)
        .collect();
    assert_eq!(closing.len(), 1, "exactly one closing entry: {closing:?}");
    closing.into_iter().next().expect("one")
}

async fn assert_books(layer: &BalanceLayer, balance: i64) {
    let b = layer.ledger().balance("acme").await.expect("balance");
    assert_eq!(
        (b.balance.micros(), b.reserved),
        (balance, Amount::ZERO),
        "nothing left reserved"
    );
}

on_every_ledger!(
    streaming_settle_charges_the_sse_usage,
    mid_stream_error_settles_what_was_reported,
    client_disconnect_charges_reported_input_and_estimated_output,
    a_body_dropped_unread_is_charged_the_estimated_input,
    dropped_response_future_releases_the_reservation,
    cancelled_while_reserving_releases_the_reservation,
    upstream_error_status_releases_the_reservation,
    transport_error_releases_the_reservation,
    insufficient_balance_is_a_402_billing_error_saying_what_to_do,
    usage_known_before_the_head_sets_x_tollgate_cost,
    the_served_model_is_what_gets_priced,
);

async fn streaming_settle_charges_the_sse_usage(ledger: Arc<dyn Ledger>) {
    let layer = funded(&ledger, START).await;
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(Default::default(), || sse(F8, 17)));
    let res = svc.oneshot(request()).await.expect("infallible");
    assert_eq!(res.status(), 200);
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(bytes, F8.as_bytes(), "relayed untouched");

    let e = closing_entry(&layer).await;
    // 472 × $3/MTok + 15 × $15/MTok = 1 416 + 225 µ$.
    assert_eq!(
        (e.kind, e.cost()),
        (EntryKind::Charge, Amount::from_micros(1_641))
    );
    assert_eq!((e.usage.input, e.usage.output), (472, 15));
    assert_eq!(e.key_id, Some(1));
    assert_eq!(e.model.as_deref(), Some("claude-sonnet-4-6"));
    assert_eq!(e.http_status, Some(200));
    assert_eq!(
        e.upstream_request_id.as_deref(),
        Some("req_011CfxSse00000000000000008")
    );
    assert_eq!(e.note.as_deref(), Some("completed"));
    assert!(
        e.request_id
            .as_deref()
            .is_some_and(|id| id.starts_with("req_tg_"))
    );
    assert_books(&layer, START - 1_641).await;
}

async fn mid_stream_error_settles_what_was_reported(ledger: Arc<dyn Ledger>) {
    let layer = funded(&ledger, START).await;
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(Default::default(), || sse(F9, 40)));
    let res = svc.oneshot(request()).await.expect("infallible");
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(bytes, F9.as_bytes());

    let e = closing_entry(&layer).await;
    // Input 25 and the last reported output 1: 75 + 15 µ$.
    assert_eq!(
        (e.kind, e.cost()),
        (EntryKind::Charge, Amount::from_micros(90))
    );
    assert_eq!((e.usage.input, e.usage.output), (25, 1));
    assert!(
        e.note
            .as_deref()
            .is_some_and(|n| n.contains("overloaded_error")),
        "{:?}",
        e.note
    );
    assert_books(&layer, START - 90).await;
}

async fn client_disconnect_charges_reported_input_and_estimated_output(ledger: Arc<dyn Ledger>) {
    let layer = funded(&ledger, START).await;
    // The upstream sends everything up to the end of the deltas, then stalls.
    let cut: &'static str = &F8[..F8.find("event: content_block_stop").expect("present")];
    let svc = ServiceBuilder::new().layer(layer.clone()).service(upstream(
        Default::default(),
        move || {
            let frames = stream::iter(
                cut.as_bytes()
                    .chunks(64)
                    .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from_static(c))))
                    .collect::<Vec<_>>(),
            )
            .chain(stream::pending());
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
                .expect("response")
        },
    ));
    let res = svc.oneshot(request()).await.expect("infallible");
    let mut body = res.into_body();
    let mut seen = 0;
    while seen < cut.len() {
        let frame = body.frame().await.expect("a frame").expect("infallible");
        seen += frame.into_data().map(|d| d.len()).unwrap_or(0);
    }
    drop(body); // the client goes away mid-stream

    let e = closing_entry(&layer).await;
    // Input 472 as reported; output estimated from the two relayed deltas:
    // ⌈(91 + 94 − 2 × 86) / 4⌉ = 4 tokens (more than the 2 reported) → 1 416 + 60 µ$.
    assert_eq!((e.usage.input, e.usage.output), (472, 4));
    assert_eq!(e.cost(), Amount::from_micros(1_476));
    assert_eq!(
        e.note.as_deref(),
        Some("client disconnected; output estimated")
    );
    assert_books(&layer, START - 1_476).await;
}

async fn a_body_dropped_unread_is_charged_the_estimated_input(ledger: Arc<dyn Ledger>) {
    let layer = funded(&ledger, START).await;
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(Default::default(), || sse(F8, 64)));
    let res = svc.oneshot(request()).await.expect("infallible");
    drop(res);

    let e = closing_entry(&layer).await;
    let est_input = MESSAGES.len().div_ceil(4) as u64;
    assert_eq!((e.usage.input, e.usage.output), (est_input, 0));
    assert_eq!(e.cost(), Amount::from_micros(est_input as i64 * 3));
    assert_eq!(
        e.note.as_deref(),
        Some("client disconnected; input and output estimated")
    );
    assert_books(&layer, START - est_input as i64 * 3).await;
}

async fn dropped_response_future_releases_the_reservation(ledger: Arc<dyn Ledger>) {
    let layer = funded(&ledger, START).await;
    let called = Arc::new(Notify::new());
    let signal = called.clone();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(move |_req: Request<Full<Bytes>>| {
            signal.notify_one();
            std::future::pending::<Result<Response<Body>, Infallible>>()
        }));
    let mut fut = Box::pin(svc.oneshot(request()));
    tokio::select! {
        _ = &mut fut => panic!("the upstream never answers"),
        _ = called.notified() => {}
    }
    let held = layer
        .ledger()
        .balance("acme")
        .await
        .expect("balance")
        .reserved;
    assert!(held > Amount::ZERO, "reserved while the upstream works");
    drop(fut); // the client went away before the response head

    let e = closing_entry(&layer).await;
    assert_eq!(
        (e.kind, e.amount, e.reserved),
        (EntryKind::Release, Amount::ZERO, held)
    );
    assert_eq!(
        e.note.as_deref(),
        Some("request cancelled before the response")
    );
    assert_books(&layer, START).await;
}

async fn cancelled_while_reserving_releases_the_reservation(ledger: Arc<dyn Ledger>) {
    let layer = funded(&ledger, START).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(calls.clone(), || sse(F8, 64)));

    // Dropped before its first poll: the reserve never started, nothing is held.
    let fut = svc.ready().await.expect("ready").call(request());
    drop(fut);
    layer.idle().await;
    let h = layer.ledger().history("acme", 10).await.expect("history");
    assert_eq!(h.len(), 1, "only the topup: {h:?}");
    assert_books(&layer, START).await;

    // Dropped after one poll, with the reserve started.
    let mut fut = Box::pin(svc.ready().await.expect("ready").call(request()));
    let first =
        std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_ready())).await;
    if format!("{ledger:?}").starts_with("MemoryLedger") {
        // The memory ledger answers in that poll: the reserve cannot be caught in flight.
        assert!(first, "memory reserves without waiting");
        return;
    }
    assert!(!first, "a SQL reserve waits for its store");
    drop(fut); // before the reserve came back

    let e = closing_entry(&layer).await;
    assert_eq!(e.kind, EntryKind::Release);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the upstream was never called"
    );
    assert_books(&layer, START).await;
}

async fn upstream_error_status_releases_the_reservation(ledger: Arc<dyn Ledger>) {
    let layer = funded(&ledger, START).await;
    const OVERLOADED: &str = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CfxOvl00000000000000007"}"#;
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(Default::default(), || json(529, OVERLOADED)));
    let res = svc.oneshot(request()).await.expect("infallible");
    assert_eq!(res.status().as_u16(), 529);
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(bytes, OVERLOADED.as_bytes(), "passed through untouched");

    let e = closing_entry(&layer).await;
    assert_eq!((e.kind, e.amount), (EntryKind::Release, Amount::ZERO));
    assert_eq!(e.note.as_deref(), Some("HTTP 529 without usage"));
    assert_books(&layer, START).await;
}

async fn transport_error_releases_the_reservation(ledger: Arc<dyn Ledger>) {
    let layer = funded(&ledger, START).await;
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_req: Request<Full<Bytes>>| async {
            Err::<Response<Body>, _>(std::io::Error::other("connection reset"))
        }));
    let err = svc
        .oneshot(request())
        .await
        .expect_err("transport errors pass through");
    assert_eq!(err.to_string(), "connection reset");

    let e = closing_entry(&layer).await;
    assert_eq!(e.kind, EntryKind::Release);
    assert_books(&layer, START).await;
}

async fn insufficient_balance_is_a_402_billing_error_saying_what_to_do(ledger: Arc<dyn Ledger>) {
    let layer = funded(&ledger, 100).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(calls.clone(), || sse(F8, 64)));
    let res = svc.oneshot(request()).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(res.headers()["x-should-retry"], "false");
    assert_eq!(res.headers()["x-tollgate-origin"], "gateway");
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.expect("body").to_bytes())
            .expect("json");
    assert_eq!(body["error"]["type"], "billing_error");
    let est_input = MESSAGES.len().div_ceil(4) as i64;
    let worst = Amount::from_micros(est_input * 6 + 1024 * 15);
    assert_eq!(
        body["error"]["message"],
        format!(
            "insufficient balance: this request may cost up to ${worst}, available $0.0001; top up or lower max_tokens"
        )
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "refused before any upstream call"
    );
    layer.idle().await;
    assert_eq!(
        layer
            .ledger()
            .history("acme", 10)
            .await
            .expect("history")
            .len(),
        1,
        "only the topup"
    );
    assert_books(&layer, 100).await;
}

async fn usage_known_before_the_head_sets_x_tollgate_cost(ledger: Arc<dyn Ledger>) {
    let layer = funded(&ledger, START).await;
    let svc =
        ServiceBuilder::new()
            .layer(layer.clone())
            .service(upstream(Default::default(), || {
                let mut res = json(200, r#"{"type":"message"}"#);
                res.extensions_mut().insert(Usage {
                    input: 1_200,
                    output: 800,
                    cache_write: 10_000,
                    cache_write_1h: 0,
                    cache_read: 50_000,
                });
                res
            }));
    let res = svc.oneshot(request()).await.expect("infallible");
    assert_eq!(res.headers()[X_TOLLGATE_COST], "68100");
    let e = closing_entry(&layer).await;
    assert_eq!(e.cost(), Amount::from_micros(68_100));
    assert_books(&layer, START - 68_100).await;
}

async fn the_served_model_is_what_gets_priced(ledger: Arc<dyn Ledger>) {
    let layer = funded(&ledger, START).await;
    let svc =
        ServiceBuilder::new()
            .layer(layer.clone())
            .service(upstream(Default::default(), || {
                let mut res = sse(F8, 64);
                res.extensions_mut().insert(Served {
                    route: "backup".into(),
                    model: "claude-haiku-4-5".into(),
                    attempts: 2,
                });
                res
            }));
    let res = svc.oneshot(request()).await.expect("infallible");
    res.into_body().collect().await.expect("body");
    let e = closing_entry(&layer).await;
    // 472 × $1/MTok + 15 × $5/MTok.
    assert_eq!(e.cost(), Amount::from_micros(547));
    assert_eq!(e.model.as_deref(), Some("claude-haiku-4-5"));
}

// ===== Behaviour that does not depend on the store =====

async fn memory_layer(micros: i64) -> BalanceLayer {
    let ledger: Arc<dyn Ledger> = Arc::new(tollgate_balance::MemoryLedger::new());
    funded(&ledger, micros).await
}

#[tokio::test]
async fn operators_can_answer_403_permission_error() {
    let layer = memory_layer(0)
        .await
        .insufficient_kind(ErrorKind::Permission);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(upstream(Default::default(), || sse(F8, 64)));
    let res = svc.oneshot(request()).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()["x-should-retry"], "false");
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.expect("body").to_bytes())
            .expect("json");
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("available $0.00"))
    );
}

#[tokio::test]
async fn openai_dialect_refusal_is_429_insufficient_quota() {
    let layer = memory_layer(0).await;
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(upstream(Default::default(), || sse(F8, 64)));
    let req = request_to(
        "/v1/chat/completions",
        Endpoint::ChatCompletions,
        r#"{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"Hi"}]}"#,
    );
    let res = svc.oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["x-should-retry"], "false");
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.expect("body").to_bytes())
            .expect("json");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    // No max_tokens: the default cap of 16 384 output tokens is reserved.
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("up to $0.24"), "{message}");
}

#[tokio::test]
async fn unknown_model_is_refused_before_any_reservation() {
    let layer = memory_layer(START).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(calls.clone(), || sse(F8, 64)));
    let req = request_to(
        "/v1/messages",
        Endpoint::Messages,
        r#"{"model":"claude-unpriced-9","max_tokens":10,"messages":[{"role":"user","content":"Hi"}]}"#,
    );
    let res = svc.oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.expect("body").to_bytes())
            .expect("json");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("model \"claude-unpriced-9\" has no price on this gateway"),
        "{message}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        layer
            .ledger()
            .history("acme", 10)
            .await
            .expect("history")
            .len(),
        1
    );
}

#[tokio::test]
async fn requests_without_principal_or_meta_pass_through_untouched() {
    let layer = memory_layer(0).await;
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(Default::default(), || json(200, r#"{"data":[]}"#)));
    let req = Request::get("/v1/models")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let res = svc.clone().oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.into_body().collect().await.expect("body").to_bytes(),
        r#"{"data":[]}"#
    );
    // A messages request whose key auth left no Principal passes too (auth refuses it).
    let mut req = request();
    req.extensions_mut().remove::<Principal>();
    assert_eq!(svc.oneshot(req).await.expect("infallible").status(), 200);
    layer.idle().await;
    assert_eq!(
        layer
            .ledger()
            .history("acme", 10)
            .await
            .expect("history")
            .len(),
        0
    );
}

#[tokio::test]
async fn the_layer_fits_an_axum_router() {
    use axum::Router;
    use axum::routing::post;

    let layer = memory_layer(START).await;
    let app: Router = Router::new()
        .route(
            "/v1/messages",
            post(|| async { ([("content-type", "text/event-stream")], F8) }),
        )
        .layer(layer.clone());
    let mut req = request().map(axum::body::Body::new);
    req.extensions_mut().insert(principal());
    let res = app.oneshot(req).await.expect("infallible");
    assert_eq!(
        res.into_body().collect().await.expect("body").to_bytes(),
        F8.as_bytes()
    );
    layer.idle().await;
    let b = layer.ledger().balance("acme").await.expect("balance");
    assert_eq!(
        (b.balance.micros(), b.reserved),
        (START - 1_641, Amount::ZERO)
    );
}

#[tokio::test]
async fn count_tokens_is_not_billed() {
    let layer = memory_layer(0).await;
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(Default::default(), || {
            json(200, r#"{"input_tokens":12}"#)
        }));
    let req = request_to(
        "/v1/messages/count_tokens",
        Endpoint::CountTokens,
        r#"{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"Hi"}]}"#,
    );
    assert_eq!(svc.oneshot(req).await.expect("infallible").status(), 200);
}

#[tokio::test]
async fn a_failing_ledger_is_a_503_that_may_be_retried() {
    #[derive(Debug)]
    struct Down;

    fn down<T: Send + 'static, E: From<tollgate_balance::LedgerError> + Send + 'static>()
    -> tollgate_balance::LedgerFuture<'static, T, E> {
        Box::pin(async {
            Err(tollgate_balance::LedgerError::Storage("connection refused".into()).into())
        })
    }

    impl Ledger for Down {
        fn open_account<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> tollgate_balance::LedgerFuture<'a, bool> {
            down()
        }
        fn reserve<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Amount,
            _: std::time::SystemTime,
        ) -> tollgate_balance::LedgerFuture<
            'a,
            tollgate_balance::Reservation,
            tollgate_balance::ReserveError,
        > {
            down()
        }
        fn settle<'a>(
            &'a self,
            _: &'a tollgate_balance::Reservation,
            _: tollgate_balance::Charge,
        ) -> tollgate_balance::LedgerFuture<'a, LedgerEntry> {
            down()
        }
        fn release<'a>(
            &'a self,
            _: &'a tollgate_balance::Reservation,
            _: &'a str,
        ) -> tollgate_balance::LedgerFuture<'a, LedgerEntry> {
            down()
        }
        fn balance<'a>(
            &'a self,
            _: &'a str,
        ) -> tollgate_balance::LedgerFuture<'a, tollgate_balance::AccountBalance> {
            down()
        }
        fn topup<'a>(
            &'a self,
            _: &'a str,
            _: Amount,
            _: &'a str,
        ) -> tollgate_balance::LedgerFuture<'a, LedgerEntry> {
            down()
        }
        fn history<'a>(
            &'a self,
            _: &'a str,
            _: u32,
        ) -> tollgate_balance::LedgerFuture<'a, Vec<LedgerEntry>> {
            down()
        }
        fn reconcile_expired(
            &self,
            _: std::time::SystemTime,
        ) -> tollgate_balance::LedgerFuture<'_, u64> {
            down()
        }
    }

    let calls = Arc::new(AtomicUsize::new(0));
    let layer = BalanceLayer::new(Arc::new(Down), PriceTable::default());
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(upstream(calls.clone(), || sse(F8, 64)));
    let res = svc.oneshot(request()).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["x-should-retry"], "true");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "never served unbilled");
}
