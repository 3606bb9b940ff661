//! Shared vocabulary of the Tollgate layers.
//!
//! Layers never call each other: they communicate through the typed extensions defined
//! here ([`RequestMeta`], [`Principal`], [`Usage`], [`Served`], [`Origin`]), render their
//! rejections with one [error table](error::ERROR_TABLE), and read time from an injected
//! [`Clock`].
//!
//! - [`error`]: the status → type → domain → retryable → hint table, gateway error
//!   envelopes in the Anthropic and OpenAI dialects, and a lenient upstream error reader.
//! - [`request_meta`]: [`RequestMetaLayer`], which reads a messages body once (size limit,
//!   JSON and field checks) and leaves a replayable [`RequestMeta`].
//! - [`usage`]: [`Observed`](usage::Observed), a response body wrapper that reads `usage`
//!   from JSON or SSE while every frame passes through untouched, and
//!   [`observe_response`](usage::observe_response) / [`UsageTap`](usage::UsageTap), which
//!   let every layer that meters a response share one read of its body.
//! - [`clock`]: [`Clock`] with a system and a manual implementation.
//! - [`ext`]: the extension types, and [`headers`] the header names.
//!
//! # Example
//!
//! A server stack's first layer, in front of any service:
//!
//! ```
//! use axum::{Router, body::Body, routing::post};
//! use tollgate_core::{RequestMeta, RequestMetaLayer};
//!
//! async fn relay(req: http::Request<Body>) -> String {
//!     let meta = req.extensions().get::<RequestMeta>().expect("set by RequestMetaLayer");
//!     format!("would relay {} bytes for {}", meta.body.len(), meta.model)
//! }
//!
//! let app: Router = Router::new()
//!     .route("/v1/messages", post(relay))
//!     .layer(RequestMetaLayer::new());
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
pub mod error;
pub mod ext;
pub mod headers;
mod json_skim;
mod request_id;
pub mod request_meta;
pub mod transport;
pub mod usage;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{
    Dialect, Domain, ErrorClass, ErrorKind, GatewayError, RenderOptions, UpstreamError,
};
pub use ext::{Limits, Origin, Principal, Served, TargetRoute};
pub use request_id::new_request_id;
pub use request_meta::{Endpoint, RequestMeta, RequestMetaLayer};
pub use transport::{TransportError, TransportErrorKind};
pub use usage::{Usage, UsageReport};

/// The boxed error type transport failures travel as.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
