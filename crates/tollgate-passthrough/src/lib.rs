//! Upstream-error passthrough for the server side and typed API errors for the client side.
//!
//! - [`PassthroughLayer`] (server, outermost after tracing): upstream responses reach the
//!   client byte for byte, marked `x-tollgate-origin: upstream`, hop-by-hop and upstream
//!   account headers removed; gateway errors are rendered in the request's dialect;
//!   transport failures become retryable 502/504 envelopes; HTML error pages from proxies
//!   are wrapped into envelopes (keeping their status). Its `Error` is `Infallible`.
//! - [`ClassifyLayer`] (client): error responses become [`ApiError`]s with the error
//!   table's kind, the request id, `retry-after` and the retry verdict; transport failures
//!   become classified [`TransportError`](tollgate_core::TransportError)s.
//!
//! Neither reads a successful body: streams pass through frame by frame.
//!
//! # Example
//!
//! A relay whose upstream sits behind a proxy that answers an HTML 502, called through a
//! classifying client:
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tollgate_core::{ErrorKind, Origin};
//! use tollgate_passthrough::{ClassifyLayer, ClientError, PassthroughLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let upstream = tower::service_fn(|_req: Request<Full<Bytes>>| async {
//!     let page = "<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>";
//!     let res = Response::builder()
//!         .status(502)
//!         .header("content-type", "text/html")
//!         .header("connection", "close")
//!         .body(Full::from(page))
//!         .expect("valid");
//!     Ok::<_, std::io::Error>(res)
//! });
//! let gateway = ServiceBuilder::new()
//!     .layer(PassthroughLayer::new())
//!     .service(upstream);
//!
//! // What the gateway sends: the upstream's status, as a JSON envelope.
//! let req = Request::post("/v1/messages").body(Full::default()).expect("valid");
//! let res = gateway.clone().oneshot(req).await.expect("infallible");
//! assert_eq!(res.status(), 502);
//! assert_eq!(res.headers()["content-type"], "application/json");
//! assert_eq!(res.headers()["x-tollgate-origin"], "upstream");
//! assert!(!res.headers().contains_key("connection"));
//!
//! // What a classifying client makes of it.
//! let client = ServiceBuilder::new().layer(ClassifyLayer::new()).service(gateway);
//! let req = Request::post("/v1/messages").body(Full::default()).expect("valid");
//! let Err(ClientError::Api(err)) = client.oneshot(req).await else { panic!("an API error") };
//! assert_eq!(err.kind, ErrorKind::BadGateway);
//! assert_eq!(err.origin, Origin::Upstream);
//! assert!(err.is_retryable());
//! assert!(err.message.starts_with("upstream returned a non-JSON 502 response (text/html"));
//! assert!(err.message.contains("502 Bad Gateway nginx"));
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
pub mod classify;
mod describe;
pub mod passthrough;

#[cfg(test)]
mod test_support;

pub use classify::{ApiError, Classify, ClassifyLayer, ClientError};
pub use passthrough::{NonJsonErrors, Passthrough, PassthroughConfig, PassthroughLayer};
