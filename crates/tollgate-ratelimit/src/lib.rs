//! Rate limits for Tollgate: requests, input tokens and output tokens per minute and
//! tokens per day, per key, per account and for the whole gateway, answered the way the
//! Anthropic API answers them.
//!
//! - [`RateLimitLayer`] (server side, after key auth): decides in `call` — never by
//!   pending `poll_ready` — whether a request fits every limit of its key, its account
//!   and the gateway; refuses with a 429 `rate_limit_error` that names the dimension and
//!   scope, `retry-after` (rounded up), `retry-after-ms` (exact), `x-should-retry` and
//!   `anthropic-ratelimit-*`; puts the same headers on successful responses; when the
//!   body ends, charges the output tokens the response reports and corrects the input
//!   estimate to the reported input.
//! - [`RateLimiter`]: the decision engine behind it (GCRA, weighted, with output-token
//!   debt), on the memory backend or, with the `redis` feature, on Redis shared by many
//!   gateway instances, with a `fail_open` / `fail_closed` outage policy.
//! - [`PaceLayer`] (client side): waits for capacity instead of being refused, learning
//!   from the upstream's `anthropic-ratelimit-*` headers; see [`pace`].
//! - [`RateLimitConfig`]: the `[ratelimit]` configuration table; see [`config`].
//!
//! Limits come from the [`Principal`](tollgate_core::Principal) that key auth leaves
//! (the key's own `limits`, else the configured defaults), costs from the
//! [`RequestMeta`](tollgate_core::RequestMeta) (`est_input_tokens`), output from the
//! response's usage ([`observe_response`](tollgate_core::usage::observe_response): the
//! read of an inner layer, such as balance, is shared rather than repeated).
//!
//! # Example
//!
//! A key limited to 2 requests per minute, in front of a service that answers a message:
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tollgate_core::{Dialect, Endpoint, Limits, Principal, RequestMeta};
//! use tollgate_ratelimit::{RateLimitConfig, RateLimitLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let config: RateLimitConfig = toml::from_str("[default_key]\nrpm = 2").unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::from_config(&config).unwrap())
//!     .service(tower::service_fn(|_req: Request<Full<Bytes>>| async {
//!         let body = r#"{"type":"message","usage":{"input_tokens":9,"output_tokens":3}}"#;
//!         let res = Response::builder()
//!             .header("content-type", "application/json")
//!             .body(Full::new(Bytes::from(body)))
//!             .unwrap();
//!         Ok::<_, std::convert::Infallible>(res)
//!     }));
//!
//! // What key auth and RequestMetaLayer leave in the extensions.
//! let request = || {
//!     let mut req = Request::post("/v1/messages").body(Full::default()).unwrap();
//!     req.extensions_mut().insert(Principal {
//!         key_id: 42,
//!         account_id: Arc::from("acme"),
//!         name: None,
//!         allowed_models: None,
//!         limits: Limits::default(),
//!     });
//!     req.extensions_mut().insert(RequestMeta {
//!         endpoint: Endpoint::Messages,
//!         dialect: Dialect::Anthropic,
//!         model: "claude-sonnet-4-6".into(),
//!         max_tokens: Some(1024),
//!         stream: false,
//!         messages: 1,
//!         est_input_tokens: 9,
//!         body: Bytes::new(),
//!     });
//!     req
//! };
//!
//! let res = svc.clone().oneshot(request()).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["anthropic-ratelimit-requests-limit"], "2");
//! assert_eq!(res.headers()["anthropic-ratelimit-requests-remaining"], "1");
//! svc.clone().oneshot(request()).await.unwrap();
//!
//! let refused = svc.clone().oneshot(request()).await.unwrap();
//! assert_eq!(refused.status(), 429);
//! assert_eq!(refused.headers()["retry-after"], "30");
//! assert_eq!(refused.headers()["retry-after-ms"], "30000");
//! assert_eq!(refused.headers()["x-should-retry"], "true");
//! assert_eq!(refused.headers()["anthropic-ratelimit-requests-remaining"], "0");
//! let body = refused.into_body().collect().await.unwrap().to_bytes();
//! let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(body["error"]["type"], "rate_limit_error");
//! assert!(body["error"]["message"].as_str().unwrap().contains("requests per minute for this key"));
//! # }
//! ```
//!
//! # Features
//!
//! - `redis`: the Redis backend ([`BackendConfig::Redis`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
mod gcra;
mod headers;
mod limiter;
pub mod pace;
mod ratelimit;

pub use config::{
    BackendConfig, ConfigError, LimitsConfig, OutagePolicy, RateLimitConfig, RedisConfig,
};
pub use limiter::{
    Admission, Decision, Dimension, MAX_RETRYABLE_WAIT, Quota, RateLimiter, Refusal, Scope,
    Unavailable,
};
pub use pace::{Pace, PaceConfig, PaceError, PaceFuture, PaceLayer};
pub use ratelimit::{RateLimit, RateLimitBody, RateLimitLayer, ResponseFuture};
