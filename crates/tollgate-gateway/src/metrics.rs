//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `tollgate_requests_total` | `status`, `origin` (`gateway`/`upstream`), `model` | every answered request; `model` only on 2xx answers (a client-chosen string must not create unbounded series) |
//! | `tollgate_upstream_latency_seconds` | `route` | time from sending to the upstream until its response head (or failure) |
//! | `tollgate_tokens_total` | `model`, `kind` (`input`, `output`, `cache_write`, `cache_read`) | tokens reported by the upstream's usage |
//! | `tollgate_streams_total` | `outcome` (`completed`, `errored`, `truncated`, `cancelled`) | how streamed responses ended |

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use pin_project_lite::pin_project;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tollgate_core::headers::X_TOLLGATE_ORIGIN;
use tollgate_core::usage::{BodyFormat, OnUsage, Outcome, UsageReport, UsageTap, observe_response};
use tollgate_core::{Dialect, Served};
use tower::{Layer, Service};

/// A label value shared with the request's own `Arc<str>` (model, route): looking a
/// series up costs a reference count, not a `String` allocation per request.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Label(Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    status: u16,
    origin: &'static str,
    model: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: Label,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~33 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// The gateway's metrics registry. Cheap to clone; clones share counters.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    upstream_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    tokens: Family<TokenLabels, Counter>,
    streams: Family<StreamLabels, Counter>,
    /// The `model` label of answers without one (shared, so it costs no allocation).
    no_model: Arc<str>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry (one per gateway, so several gateways in one process don't mix).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let upstream_latency =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let tokens = Family::<TokenLabels, Counter>::default();
        let streams = Family::<StreamLabels, Counter>::default();
        registry.register("requests", "Requests answered", requests.clone());
        registry.register(
            "upstream_latency_seconds",
            "Time until the upstream's response head",
            upstream_latency.clone(),
        );
        registry.register(
            "tokens",
            "Tokens reported by upstream usage",
            tokens.clone(),
        );
        registry.register("streams", "How streamed responses ended", streams.clone());
        Metrics {
            inner: Arc::new(Inner {
                registry,
                requests,
                upstream_latency,
                tokens,
                streams,
                no_model: Arc::from(""),
            }),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    pub(crate) fn observe_upstream(&self, route: &Arc<str>, elapsed: Duration) {
        self.inner
            .upstream_latency
            .get_or_create(&RouteLabels {
                route: Label(route.clone()),
            })
            .observe(elapsed.as_secs_f64());
    }

    fn observe_response(&self, status: u16, origin: &'static str, model: Arc<str>) {
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                status,
                origin,
                model: Label(model),
            })
            .inc();
    }

    fn observe_usage(&self, model: &Arc<str>, report: &UsageReport, streamed: bool) {
        let u = report.usage;
        for (kind, n) in [
            ("input", u.input),
            ("output", u.output),
            ("cache_write", u.cache_write),
            ("cache_read", u.cache_read),
        ] {
            if n > 0 {
                self.inner
                    .tokens
                    .get_or_create(&TokenLabels {
                        model: Label(model.clone()),
                        kind,
                    })
                    .inc_by(n);
            }
        }
        if streamed {
            let outcome = match report.outcome {
                Outcome::Completed => "completed",
                Outcome::Errored(_) => "errored",
                Outcome::Truncated => "truncated",
                Outcome::Cancelled => "cancelled",
            };
            self.inner
                .streams
                .get_or_create(&StreamLabels { outcome })
                .inc();
        }
    }
}

/// Counts every response and the tokens of successful ones.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl MetricsLayer {
    /// Record into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let dialect = Dialect::from_path(req.uri().path());
        MetricsFuture {
            fut: self.inner.call(req),
            metrics: Some(self.metrics.clone()),
            dialect,
        }
    }
}

pin_project! {
    /// Response future of [`MetricsService`].
    pub struct MetricsFuture<F> {
        #[pin]
        fut: F,
        metrics: Option<Metrics>,
        dialect: Dialect,
    }
}

impl<F, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.fut.poll(cx))?;
        let Some(metrics) = this.metrics.take() else {
            return Poll::Ready(Ok(res));
        };
        let origin = match res.headers().get(X_TOLLGATE_ORIGIN).map(|v| v.as_bytes()) {
            Some(b"gateway") => "gateway",
            _ => "upstream",
        };
        let status = res.status();
        let model = res
            .extensions()
            .get::<Served>()
            .filter(|_| status.is_success())
            .map_or_else(|| metrics.inner.no_model.clone(), |s| s.model.clone());
        metrics.observe_response(status.as_u16(), origin, model.clone());
        if !status.is_success() || model.is_empty() {
            return Poll::Ready(Ok(res));
        }
        let format = BodyFormat::from_headers(res.headers(), *this.dialect);
        let streamed = matches!(format, BodyFormat::Sse(_));
        let on_done: OnUsage = Box::new(move |report: UsageReport| {
            tracing::debug!(
                model = %model,
                input = report.usage.input,
                output = report.usage.output,
                cache_write = report.usage.cache_write,
                cache_read = report.usage.cache_read,
                outcome = ?report.outcome,
                "usage"
            );
            metrics.observe_usage(&model, &report, streamed);
        });
        // Read by an inner layer already (the usual case): subscribe, the body passes on.
        match UsageTap::subscribe_to(&res, format, on_done) {
            Ok(()) => Poll::Ready(Ok(res)),
            Err(on_done) => Poll::Ready(Ok(observe_response(res, format, on_done).map(Body::new))),
        }
    }
}
