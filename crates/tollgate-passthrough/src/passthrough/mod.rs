//! Server side: relay upstream responses faithfully and render the gateway's own errors.
//!
//! [`PassthroughLayer`] sits outermost in a server stack (just inside tracing). What comes
//! back from the stack is either the upstream's answer, which reaches the client byte for
//! byte, marked `x-tollgate-origin: upstream`, or a [`GatewayError`] some layer decided on,
//! which is rendered in the request's dialect with this layer's options. A transport
//! failure (`Err`) becomes a retryable 502 or 504 envelope, so the service never fails.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tollgate_passthrough::PassthroughLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // An upstream client that cannot connect.
//! let upstream = tower::service_fn(|_req: Request<Full<Bytes>>| async {
//!     Err::<Response<Full<Bytes>>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
//! });
//! let svc = ServiceBuilder::new().layer(PassthroughLayer::new()).service(upstream);
//!
//! let req = Request::post("/v1/chat/completions").body(Full::default()).expect("valid");
//! let res = svc.oneshot(req).await.expect("infallible");
//! assert_eq!(res.status(), 502);
//! assert_eq!(res.headers()["x-should-retry"], "true");
//! assert_eq!(res.headers()["x-tollgate-origin"], "gateway");
//! assert!(res.headers().contains_key("x-request-id")); // OpenAI dialect
//! # }
//! ```
//!
//! [`GatewayError`]: tollgate_core::GatewayError

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{NonJsonErrors, PassthroughConfig, PassthroughLayer};
pub use service::Passthrough;

#[cfg(test)]
mod tests;
