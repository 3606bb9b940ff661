//! The access log: one `info` event per request, written when the response head is
//! ready, with what an operator needs to find a request again.
//!
//! ```text
//! INFO tollgate::access: request method=POST path=/v1/messages status=200 latency_us=412 model=claude-sonnet-4-6 route=anthropic key_id=7 request_id=req_01…
//! INFO tollgate::access: request method=POST path=/v1/messages status=401 latency_us=39 request_id=req_tg_…
//! ```
//!
//! Fields: `method`, `path` (never the query), `status`, `latency_us` (until the response
//! head: for a stream, the time to its first byte), `model` and `route` (when an upstream
//! answered), `key_id` (the numeric id, never the key; once authenticated) and
//! `request_id` (the `request-id` / `x-request-id` the client received). 5xx answers are
//! logged at `warn`. Filter with `RUST_LOG=tollgate::access=off` to drop it.
//!
//! Why not a `tower_http::trace::TraceLayer` span: a span per request with eagerly
//! formatted fields, entered on every poll and recorded into from inner layers, cost
//! 15–35 % of the gateway's throughput at concurrency 16–64 (docs/BENCHMARKS.md). This
//! layer formats the line once, at the end, from values it already has. A `debug` span
//! (`request`, with method and path) still wraps each request for `RUST_LOG=debug`, so
//! inner layers' events can be tied to their request when debugging.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Method, Request, Response, Uri};
use pin_project_lite::pin_project;
use tollgate_core::Served;
use tollgate_core::headers::{REQUEST_ID, X_REQUEST_ID};
use tower::{Layer, Service};
use tracing::Level;
use tracing::field::display;
use tracing::instrument::Instrumented;

/// The `target` of access log events (for `RUST_LOG` filters).
pub const ACCESS_TARGET: &str = "tollgate::access";

/// The key id of the request's [`tollgate_core::Principal`], copied onto the response
/// by [`RecordKeyIdLayer`] so that the access log can show it for every answer after
/// authentication (including 402 and 429 from inner layers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyId(pub i64);

/// Logs every request once its response head is ready (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// The service made by [`AccessLogLayer`].
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
}

/// What the access log keeps of a request until its response: nothing when the log is
/// filtered out.
struct Pending {
    started: Instant,
    method: Method,
    uri: Uri,
}

impl<S, B, ResB> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: std::fmt::Display,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let pending = tracing::enabled!(target: ACCESS_TARGET, Level::WARN).then(|| Pending {
            started: Instant::now(),
            method: req.method().clone(),
            // A `Uri` clone shares its bytes; the path is only formatted if logged.
            uri: req.uri().clone(),
        });
        let span =
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path());
        AccessLogFuture {
            fut: tracing::Instrument::instrument(self.inner.call(req), span),
            pending,
        }
    }
}

pin_project! {
    /// Response future of [`AccessLog`].
    pub struct AccessLogFuture<F> {
        #[pin]
        fut: Instrumented<F>,
        pending: Option<Pending>,
    }
}

impl<F, ResB, E> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: std::fmt::Display,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.fut.poll(cx));
        if let Some(p) = this.pending.take() {
            match &result {
                Ok(res) => log_response(&p, res),
                Err(e) => tracing::warn!(
                    target: ACCESS_TARGET,
                    method = %p.method,
                    path = %p.uri.path(),
                    latency_us = elapsed_us(p.started),
                    error = %e,
                    "request failed"
                ),
            }
        }
        Poll::Ready(result)
    }
}

fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn log_response<B>(p: &Pending, res: &Response<B>) {
    let status = res.status().as_u16();
    // Absent values (`None`) are left out of the line.
    let served = res.extensions().get::<Served>();
    let model = served.map(|s| display(&s.model));
    let route = served.map(|s| display(&s.route));
    let key_id = res.extensions().get::<KeyId>().map(|k| k.0);
    let request_id = res
        .headers()
        .get(REQUEST_ID)
        .or_else(|| res.headers().get(X_REQUEST_ID))
        .and_then(|v| v.to_str().ok())
        .map(display);
    let latency_us = elapsed_us(p.started);
    // One macro per level: `tracing` fixes an event's level at compile time.
    macro_rules! access {
        ($level:ident) => {
            tracing::$level!(
                target: ACCESS_TARGET,
                method = %p.method,
                path = %p.uri.path(),
                status,
                latency_us,
                model,
                route,
                key_id,
                request_id,
                "request"
            )
        };
    }
    if status >= 500 {
        access!(warn);
    } else {
        access!(info);
    }
}

/// Copies the authenticated key's id onto the response as [`KeyId`]; sits right inside
/// the key auth layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordKeyIdLayer;

impl<S> Layer<S> for RecordKeyIdLayer {
    type Service = RecordKeyId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordKeyId { inner }
    }
}

/// The service made by [`RecordKeyIdLayer`].
#[derive(Clone, Debug)]
pub struct RecordKeyId<S> {
    inner: S,
}

impl<S, B, ResB> Service<Request<B>> for RecordKeyId<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = RecordKeyIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let key_id = req
            .extensions()
            .get::<tollgate_core::Principal>()
            .map(|p| KeyId(p.key_id));
        RecordKeyIdFuture {
            fut: self.inner.call(req),
            key_id,
        }
    }
}

pin_project! {
    /// Response future of [`RecordKeyId`].
    pub struct RecordKeyIdFuture<F> {
        #[pin]
        fut: F,
        key_id: Option<KeyId>,
    }
}

impl<F, ResB, E> Future for RecordKeyIdFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.fut.poll(cx));
        if let (Ok(res), Some(key_id)) = (&mut result, this.key_id.take()) {
            res.extensions_mut().insert(key_id);
        }
        Poll::Ready(result)
    }
}
