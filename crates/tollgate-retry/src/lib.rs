//! Retry for the Anthropic Messages API and OpenAI-compatible APIs, server side and
//! client side.
//!
//! [`RetryLayer`] sends a request again when the upstream says it may help, the way the
//! official SDKs decide it ([`policy`]): 408, 409, 429, 5xx and 529, connection failures
//! before a response head, and whatever `x-should-retry: true` marks; never 400, 401,
//! 402, 403, 404, 413 or anything marked `x-should-retry: false`.
//!
//! - **Waits**: the upstream's `retry-after-ms` / `retry-after` (seconds or HTTP date)
//!   exactly, plus a small jitter, when it is at most `max_retry_after_ms`; a longer one is
//!   not waited — the response goes back with its header. Otherwise full-jitter
//!   exponential [`Backoff`] (0.5 s base, factor 2, 8 s cap).
//! - **Bounds**: `max_attempts` (3 in total by default), a deadline, and a
//!   [`RetryBudget`] that keeps retries within a fraction of requests, shareable with
//!   the fallback layer so that a full outage cannot multiply traffic.
//! - **Same bytes**: every attempt is rebuilt from the request head and
//!   [`RequestMeta::body`](tollgate_core::RequestMeta::body), and carries
//!   `x-tollgate-retry-count: 0, 1, 2…`. A request without a `RequestMeta` cannot be
//!   replayed and is sent once.
//! - **Streams**: a streamed answer is held until its first content, so a failure before
//!   it is retried invisibly; once content went out nothing is retried and a broken
//!   stream ends with an `event: error` ([`stream`]).
//! - The final response carries `x-tollgate-attempts`, and
//!   [`Served::attempts`](tollgate_core::Served) when the inner service set `Served`.
//!
//! The layer needs a request body it can rebuild from [`Bytes`](bytes::Bytes)
//! (`From<Bytes>`) and accepts any inner error convertible to
//! [`BoxError`](tollgate_core::BoxError): it works around the gateway's upstream client
//! as well as a plain hyper-util client (`Response<Incoming>`, `legacy::Error`).
//!
//! # Example
//!
//! An upstream that is overloaded twice, then answers:
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tollgate_core::{Endpoint, request_meta::parse_body};
//! use tollgate_retry::{RetryConfig, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! let upstream = tower::service_fn(move |req: Request<Full<Bytes>>| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     assert_eq!(req.headers()["x-tollgate-retry-count"], n.to_string().as_str());
//!     async move {
//!         let status = if n < 2 { 529 } else { 200 };
//!         Ok::<_, std::io::Error>(Response::builder().status(status).body(Full::new(Bytes::new())).expect("valid"))
//!     }
//! });
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryConfig::client()))
//!     .service(upstream);
//!
//! let body = Bytes::from_static(br#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#);
//! let mut req = Request::post("https://api.anthropic.com/v1/messages").body(Full::new(body.clone())).expect("valid");
//! req.extensions_mut().insert(parse_body(Endpoint::Messages, body).expect("a valid body"));
//!
//! let res = client.oneshot(req).await.expect("an answer");
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["x-tollgate-attempts"], "3");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

mod backoff;
mod budget;
mod config;
mod ext;
mod future;
mod layer;
pub mod policy;
mod service;
pub mod stream;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use http::HeaderName;

pub use backoff::{Backoff, server_directed};
pub use budget::RetryBudget;
pub use config::{BudgetConfig, RetryConfig};
pub use ext::{Attempts, Deadline, MaxAttempts};
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use service::Retry;
pub use stream::{CommitBody, StreamCommit};

/// `x-tollgate-retry-count: N` on each upstream attempt: attempts made before it for the
/// same client request (0 on the first), like the SDKs' `x-stainless-retry-count`.
pub const X_TOLLGATE_RETRY_COUNT: HeaderName = HeaderName::from_static("x-tollgate-retry-count");

/// `x-stainless-read-timeout: S`, the official SDKs' read timeout in seconds; no retry
/// starts after it would have expired.
pub const X_STAINLESS_READ_TIMEOUT: HeaderName =
    HeaderName::from_static("x-stainless-read-timeout");
