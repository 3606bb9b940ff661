//! Client side: typed errors for an HTTP client that calls the API directly.
//!
//! [`ClassifyLayer`] wraps a client service (hyper-util's legacy client, or a reqwest
//! adapter). Successful responses pass through unread; an error response becomes an
//! [`ApiError`] with its kind from the [error table](tollgate_core::error::ERROR_TABLE),
//! request id, retry verdict and wait; a local refusal by an inner layer (a pacing
//! timeout) becomes the gateway-origin [`ApiError`] it renders; any other failure without a
//! response becomes a classified [`TransportError`](tollgate_core::TransportError). Both are [`ClientError`]s, which a
//! retry layer above can read.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tollgate_core::ErrorKind;
//! use tollgate_passthrough::{ClassifyLayer, ClientError};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let api = tower::service_fn(|_req: Request<Full<Bytes>>| async {
//!     let res = Response::builder()
//!         .status(529)
//!         .header("content-type", "application/json")
//!         .header("request-id", "req_1")
//!         .body(Full::from(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#))
//!         .expect("valid");
//!     Ok::<_, std::io::Error>(res)
//! });
//! let client = ServiceBuilder::new().layer(ClassifyLayer::new()).service(api);
//!
//! let req = Request::post("https://api.anthropic.com/v1/messages").body(Full::default()).expect("valid");
//! let Err(ClientError::Api(err)) = client.oneshot(req).await else { panic!("an API error") };
//! assert_eq!(err.kind, ErrorKind::Overloaded);
//! assert!(err.is_retryable());
//! assert_eq!(err.to_string(), "529 overloaded_error: Overloaded (request-id req_1)");
//! # }
//! ```

mod error;
mod future;
mod layer;
mod service;

pub use error::{ApiError, ClientError};
pub use future::ResponseFuture;
pub use layer::ClassifyLayer;
pub use service::Classify;

#[cfg(test)]
mod tests;
