//! Fallback between upstream routes for the Anthropic Messages API and OpenAI-compatible
//! APIs, with cooldowns and opt-in model substitution — server side and client side.
//!
//! [`FallbackLayer`] sends each request to the routes configured for its model, in
//! order, marking every attempt with a [`TargetRoute`](tollgate_core::TargetRoute) for
//! the upstream client to honour:
//!
//! - **Routes** serve the *same model* (other keys, accounts, base URLs). When one fails
//!   — a retryable failure, or one about the route's key or limits (401, 402, 403, 429) —
//!   the next is tried at once. An error about the request itself (400, 404, 413, …) is
//!   the answer and is not tried elsewhere.
//! - **Cooldowns**: a failed route rests for its `retry-after`, else exponentially from
//!   `cooldown_base_ms`, and is skipped while resting, so the next request does not pay
//!   for it again; if every route rests, the one that recovers first is tried. A 429 from
//!   one route rests that route (for that model) only.
//! - **Model substitution** (e.g. Opus → Sonnet) only when a model's `fallback_models`
//!   configures it, never for a request with `x-tollgate-no-substitute: 1` or the
//!   [`NoSubstitute`] extension (set it per key), and never to a model the request's
//!   [`Principal`](tollgate_core::Principal) may not use. Only the body's top-level
//!   `model` is rewritten (every other byte kept); the response is relayed as the
//!   upstream sent it, so its `model` field names the model that really served it.
//! - **Served-by**: every answer carries `x-tollgate-route`, `x-tollgate-model`,
//!   `x-tollgate-attempts` and the [`Served`](tollgate_core::Served) extension. When every
//!   route fails, the client gets the last upstream error response untouched (plus
//!   those headers); a transport error only when no upstream answered at all.
//! - **Streams** are held to their commit point like in
//!   [`tollgate_retry::stream`]: a stream failing before its first content falls back
//!   invisibly.
//! - **Bounds**: each switch draws on a [`RetryBudget`](tollgate_retry::RetryBudget)
//!   shared with the retry layer, and no switch starts after a
//!   [`Deadline`](tollgate_retry::Deadline).
//!
//! Stacked outside [`RetryLayer`](tollgate_retry::RetryLayer), the layer limits retries
//! on a route to one attempt while other routes remain ([`MaxAttempts`](tollgate_retry::MaxAttempts)),
//! so a failing route is left at once and the last route is retried with backoff.
//!
//! # Example
//!
//! Route `a` is overloaded; `b` answers:
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tollgate_core::{Endpoint, TargetRoute, request_meta::parse_body};
//! use tollgate_fallback::{FallbackConfig, FallbackLayer};
//! use tollgate_retry::{RetryConfig, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let config: FallbackConfig = toml::from_str(r#"
//!     [models."claude-sonnet-4-6"]
//!     routes = ["a", "b"]
//! "#).expect("valid config");
//!
//! // The upstream client: sends each attempt where `TargetRoute` says.
//! let upstream = tower::service_fn(|req: Request<Full<Bytes>>| async move {
//!     let route = req.extensions().get::<TargetRoute>().map(|t| t.0.clone());
//!     let status = if route.as_deref() == Some("a") { 529 } else { 200 };
//!     Ok::<_, std::io::Error>(Response::builder().status(status).body(Full::new(Bytes::new())).expect("valid"))
//! });
//! let retry = RetryLayer::new(RetryConfig::default());
//! let relay = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(config).budget(retry.retry_budget()))
//!     .layer(retry)
//!     .service(upstream);
//!
//! let body = Bytes::from_static(br#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#);
//! let mut req = Request::post("/v1/messages").body(Full::new(body.clone())).expect("valid");
//! req.extensions_mut().insert(parse_body(Endpoint::Messages, body).expect("a valid body"));
//!
//! let res = relay.oneshot(req).await.expect("an answer");
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["x-tollgate-route"], "b");
//! assert_eq!(res.headers()["x-tollgate-model"], "claude-sonnet-4-6");
//! assert_eq!(res.headers()["x-tollgate-attempts"], "2");
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

mod config;
mod cooldown;
mod future;
mod layer;
mod plan;
mod rewrite;
mod service;

#[cfg(test)]
mod tests;

use http::HeaderName;

pub use config::{FallbackConfig, ModelRoutes};
pub use future::ResponseFuture;
pub use layer::FallbackLayer;
pub use service::Fallback;

/// `x-tollgate-no-substitute: 1` on a request forbids model substitution for it; the
/// header is not forwarded upstream.
pub const X_TOLLGATE_NO_SUBSTITUTE: HeaderName =
    HeaderName::from_static("x-tollgate-no-substitute");

/// Request extension that forbids model substitution, e.g. inserted after key auth for
/// keys that must only ever get the model they asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoSubstitute;
