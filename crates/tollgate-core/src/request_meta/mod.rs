//! Read the request body once, check it, and describe it for every later layer.
//!
//! [`RequestMetaLayer`] reads the body of `POST …/v1/messages`,
//! `POST …/v1/messages/count_tokens` and `POST …/v1/chat/completions` once, up to a size
//! limit (32 MiB by default, the API's own), parses the few fields the layers need and
//! puts a [`RequestMeta`] into the request's extensions. The body bytes stay in the
//! `RequestMeta` so retry and fallback can send them again. Other requests
//! (`GET /v1/models`, …) pass untouched and get no `RequestMeta`.
//!
//! Rejections are responses in the request's dialect, marked `x-tollgate-origin: gateway`:
//!
//! | problem | status | message starts with |
//! |---|---|---|
//! | body over the limit (declared `content-length`) | 413 `request_too_large` | `request body is N bytes, larger than the L-byte limit` |
//! | body over the limit (while reading) | 413 `request_too_large` | `request body is larger than the L-byte limit` |
//! | compressed body (`content-encoding`) | 400 | `content-encoding … is not supported` |
//! | not JSON | 400 | `request body is not valid JSON: … at line L column C` |
//! | not an object | 400 | `request body must be a JSON object` |
//! | `model` missing, not a string or empty | 400 | `model: …` |
//! | `max_tokens` missing (Messages) or not a positive integer | 400 | `max_tokens: …` |
//! | `messages` missing, not an array or empty | 400 | `messages: …` |
//! | `stream` not a boolean | 400 | `stream: …` |
//!
//! Consecutive messages of the same role are not rejected: the API merges them.
//!
//! The layer needs a request body type it can rebuild from [`Bytes`] (`From<Bytes>`),
//! like `axum::body::Body`, and a response body it can build its rejections from.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::Full;
//! use tollgate_core::{RequestMeta, RequestMetaLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(RequestMetaLayer::new())
//!     .service(service_fn(|req: Request<Full<Bytes>>| async move {
//!         let meta = req.extensions().get::<RequestMeta>().expect("set by the layer");
//!         let text = format!("{} {:?} {}", meta.model, meta.max_tokens, meta.stream);
//!         Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(text))))
//!     }));
//!
//! let req = Request::post("/v1/messages").body(Full::new(Bytes::from_static(
//!     br#"{"model":"claude-sonnet-4-6","max_tokens":1024,"messages":[{"role":"user","content":"Hi"}]}"#,
//! ))).unwrap();
//! let res = svc.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//!
//! let bad = Request::post("/v1/messages").body(Full::new(Bytes::from_static(
//!     br#"{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"Hi"}]}"#,
//! ))).unwrap();
//! let res = svc.oneshot(bad).await.unwrap();
//! assert_eq!(res.status(), 400); // max_tokens: field required
//! # }
//! ```

mod future;
mod layer;
mod parse;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::RequestMetaLayer;
pub use self::parse::parse_body;
pub use self::service::RequestMetaService;

use bytes::Bytes;

use crate::error::Dialect;

/// The API's own request size limit for Messages and count_tokens: 32 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Which endpoint a request body is for; decides which fields are required.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/messages`: `model`, `max_tokens`, `messages` required.
    Messages,
    /// `POST /v1/messages/count_tokens`: `model`, `messages` required.
    CountTokens,
    /// `POST /v1/chat/completions` (OpenAI dialect): `model`, `messages` required.
    ChatCompletions,
}

impl Endpoint {
    /// The endpoint of a `POST` to `path`, matched on the path's end so that the gateway
    /// can be mounted under a prefix. `None` for paths that carry no messages body.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let path = path.strip_suffix('/').unwrap_or(path);
        if path.ends_with("/v1/messages") {
            Some(Endpoint::Messages)
        } else if path.ends_with("/v1/messages/count_tokens") {
            Some(Endpoint::CountTokens)
        } else if path.ends_with("/chat/completions") {
            Some(Endpoint::ChatCompletions)
        } else {
            None
        }
    }

    /// The wire dialect this endpoint speaks.
    pub fn dialect(self) -> Dialect {
        match self {
            Endpoint::ChatCompletions => Dialect::OpenAi,
            Endpoint::Messages | Endpoint::CountTokens => Dialect::Anthropic,
        }
    }
}

/// What every layer needs to know about a messages request, parsed once.
///
/// Put into request extensions by [`RequestMetaLayer`]; client stacks build it with
/// [`parse_body`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestMeta {
    /// The endpoint the body is for.
    pub endpoint: Endpoint,
    /// The dialect errors must be rendered in.
    pub dialect: Dialect,
    /// The requested model id, as sent.
    pub model: String,
    /// The output cap. Always set for Messages; for chat completions it is
    /// `max_completion_tokens` or `max_tokens` when present; `None` for count_tokens.
    pub max_tokens: Option<u32>,
    /// Whether the response will be an SSE stream.
    pub stream: bool,
    /// Number of entries in `messages`.
    pub messages: usize,
    /// Rough input token estimate for admission decisions: one token per 4 bytes of
    /// body, rounded up. The real count comes from the upstream's usage.
    pub est_input_tokens: u64,
    /// The body exactly as received, so it can be sent again on retry or fallback.
    pub body: Bytes,
}
