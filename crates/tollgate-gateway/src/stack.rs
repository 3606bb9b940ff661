//! The server stack, assembled in one place.
//!
//! Outermost first:
//!
//! ```text
//! AccessLogLayer        one event per request at its response head: method, path, status,
//!                       latency, model, route, key id, request id (never a key or a body)
//! MetricsLayer          requests by status/origin/model; tokens from usage; stream outcomes
//! PassthroughLayer      renders gateway errors in the request's dialect; transport failures
//!                       → 502/504 envelopes; marks x-tollgate-origin; strips hop-by-hop headers
//! RequestMetaLayer      body limit (32 MiB → 413), parse model/max_tokens/stream once, 400 on
//!                       bad JSON or fields; leaves RequestMeta with the replayable body
//! KeyAuthLayer          x-api-key or Bearer → Principal (cached lookup by SHA-256); 401/403
//!                       that say why; removes the client's credentials
//! RecordKeyIdLayer      copies the key id onto the response for the access log
//! RateLimitLayer        RPM / ITPM / OTPM / TPD per key, per account, global (GCRA, memory or
//!                       Redis); 429 with retry-after and anthropic-ratelimit-* headers;
//!                       output tokens charged from usage when the body ends
//! BalanceLayer          reserve the worst-case cost → settle from usage exactly once; 402
//! FallbackLayer         ordered routes per model (TargetRoute per attempt), cooldowns, opt-in
//!                       model substitution; x-tollgate-route/-model/-attempts and Served
//! RetryLayer            retryable statuses and transport errors, full-jitter backoff,
//!                       retry-after ≤ 10 s, shared retry budget; holds a stream's events
//!                       until its first content so a failure before it is retried invisibly
//! Upstreams             route by model, strip client credentials, inject the route's key,
//!                       hyper-util client over rustls; the response body streams through
//! ```
//!
//! Layers talk only through extensions defined in `tollgate-core`:
//!
//! | extension | set by | read by |
//! |---|---|---|
//! | `RequestMeta { endpoint, dialect, model, max_tokens, stream, messages, est_input_tokens, body }` | `RequestMetaLayer` | `KeyAuthLayer` (model scope, dialect), `Upstreams` (route, replay body) |
//! | `Principal { key_id, account_id, name, allowed_models, limits }` | `KeyAuthLayer` | `RateLimitLayer` (key/account limits), `BalanceLayer` (account), `FallbackLayer` (substitute scope), `RecordKeyIdLayer` (→ `KeyId` on the response, for the access log) |
//! | `UsageTap` (the innermost metering layer reads the body once, `usage::observe_response`) | `BalanceLayer`, else `RateLimitLayer`, else `MetricsLayer` | the layers further out subscribe to it: output-token debt, settlement, token counters |
//! | `TargetRoute(name)` | `FallbackLayer` (one per attempt) | `Upstreams` |
//! | `Served { route, model, attempts }` | `Upstreams`, then `FallbackLayer`/`RetryLayer` (response) | `MetricsLayer`, `AccessLogLayer` |
//! | `Origin::Gateway` / `Origin::Upstream` | the layer that answered / `PassthroughLayer` | `MetricsLayer` (via `x-tollgate-origin`) |
//! | `GatewayError` | any layer that rejects (response) | `PassthroughLayer` (re-render) |
//!
//! Between layers whose response bodies differ, `MapResponseBodyLayer::new(Body::new)`
//! brings the body back to axum's `Body` (one allocation per response).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{Request, Response, StatusCode};
use tollgate_auth::KeyAuthLayer;
use tollgate_balance::BalanceLayer;
use tollgate_core::{Dialect, ErrorKind, GatewayError, RenderOptions, RequestMetaLayer};
use tollgate_fallback::FallbackLayer;
use tollgate_passthrough::PassthroughLayer;
use tollgate_ratelimit::RateLimitLayer;
use tollgate_retry::RetryLayer;
use tower::ServiceBuilder;
use tower_http::map_response_body::MapResponseBodyLayer;

use crate::access_log::{AccessLogLayer, RecordKeyIdLayer};
use crate::config::Config;
use crate::metrics::{Metrics, MetricsLayer};
use crate::stores::Stores;
use crate::upstream::Upstreams;

/// The paths relayed to the upstream.
pub const RELAYED_PATHS: [&str; 5] = [
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/models",
    "/v1/models/{model_id}",
    "/v1/chat/completions",
];

/// Build the gateway's router from a checked configuration.
///
/// # Errors
///
/// A description of an upstream that cannot be set up (bad URL or key).
pub fn router(config: &Config, metrics: Metrics, stores: &Stores) -> Result<Router, String> {
    let relay = relay(config, metrics.clone(), stores)?;
    let render = RenderOptions {
        type_prefix: config.errors.type_prefix,
    };
    // Unknown paths are answered by the gateway, and logged and counted like any answer
    // (scanners and misconfigured base URLs show up in the access log and in metrics).
    let not_found = ServiceBuilder::new()
        .layer(AccessLogLayer)
        .layer(MetricsLayer::new(metrics.clone()))
        .service(tower::service_fn(move |req: Request<Body>| {
            let render = render.clone();
            async move { unknown_endpoint(&req, &render) }
        }));
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(render_metrics))
        .with_state(metrics);
    for path in RELAYED_PATHS {
        app = app.route_service(path, relay.clone());
    }
    Ok(app.fallback_service(not_found))
}

/// The relay behind [`RELAYED_PATHS`]: every layer of the stack above, in order, in front
/// of the [`Upstreams`]. `router` mounts it; `tollgate::server` hands it to applications
/// that mount it in their own axum router.
///
/// # Errors
///
/// A description of an upstream that cannot be set up (bad URL or key), or key auth
/// enabled without a key store.
pub fn relay(
    config: &Config,
    metrics: Metrics,
    stores: &Stores,
) -> Result<
    impl tower::Service<
        Request<Body>,
        Response = Response<
            impl http_body::Body<Data = bytes::Bytes, Error: Into<axum::BoxError>> + Send + 'static,
        >,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
    String,
> {
    let upstreams = Upstreams::new(&config.upstreams, metrics.clone())?;
    let render = RenderOptions {
        type_prefix: config.errors.type_prefix,
    };
    // Retry and fallback draw on one budget, so together they add at most its share of
    // attempts during an outage.
    let retry = RetryLayer::new(config.retry.clone());
    let ratelimit = RateLimitLayer::from_config(&config.ratelimit)
        .map_err(|e| format!("ratelimit.{}: {}", e.key, e.reason))?
        .render_options(render.clone());
    let balance = stores.ledger.as_ref().map(|ledger| {
        // Outer: back to `Body`, so that with or without billing the stack has one type.
        tower::layer::util::Stack::new(
            BalanceLayer::from_config(ledger.clone(), &config.balance)
                .render_options(render.clone()),
            MapResponseBodyLayer::new(Body::new),
        )
    });
    let key_auth = match (&stores.keys, config.auth.enabled) {
        (Some(keys), true) => Some(
            KeyAuthLayer::new(keys.clone())
                .cache_ttl(Duration::from_millis(config.auth.cache_ttl_ms))
                .render_options(render.clone()),
        ),
        (None, true) => {
            return Err("key auth is enabled but no key store was opened".into());
        }
        (_, false) => {
            tracing::warn!("key auth is disabled: every client spends the upstream key");
            None
        }
    };
    let record_key_id = key_auth.as_ref().map(|_| RecordKeyIdLayer);
    let relay = ServiceBuilder::new()
        .layer(AccessLogLayer)
        .layer(MetricsLayer::new(metrics.clone()))
        .layer(PassthroughLayer::from_config(&config.errors))
        .layer(
            RequestMetaLayer::new()
                .max_body_bytes(config.max_body_bytes)
                .render_options(render.clone()),
        )
        .option_layer(key_auth)
        .option_layer(record_key_id)
        .layer(MapResponseBodyLayer::new(Body::new))
        .layer(ratelimit)
        .layer(MapResponseBodyLayer::new(Body::new))
        .option_layer(balance)
        .layer(MapResponseBodyLayer::new(Body::new))
        .layer(FallbackLayer::new(config.fallback_config()).budget(retry.retry_budget()))
        .layer(retry)
        .service(upstreams);
    Ok(relay)
}

async fn render_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            // prometheus-client writes the OpenMetrics text format (`# EOF`, `_total`).
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

fn unknown_endpoint(
    req: &Request<Body>,
    render: &RenderOptions,
) -> Result<Response<Body>, Infallible> {
    let dialect = Dialect::from_path(req.uri().path());
    let mut res: Response<Body> = GatewayError::new(
        ErrorKind::NotFound,
        format!(
            "{} {} is not an endpoint of this gateway; it serves POST /v1/messages, POST /v1/messages/count_tokens, GET /v1/models and POST /v1/chat/completions",
            req.method(),
            req.uri().path()
        ),
    )
    .to_response(dialect, render);
    *res.status_mut() = StatusCode::NOT_FOUND;
    Ok(res)
}
