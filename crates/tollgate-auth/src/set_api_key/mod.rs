//! Put an API key on outgoing requests: [`SetApiKeyLayer`], the client-side counterpart
//! of [`KeyAuthLayer`](crate::KeyAuthLayer).
//!
//! The key goes into `x-api-key: KEY` or `Authorization: Bearer KEY`, marked sensitive
//! (its `Debug` prints `Sensitive`, and HTTP/2 never indexes it for compression). Any
//! `x-api-key` or `Authorization` the request already had is removed first, so exactly
//! one credential is sent.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tollgate_auth::SetApiKeyLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let client = ServiceBuilder::new()
//!     .layer(SetApiKeyLayer::bearer("tg-0123456789abcdefghijABCDEFGHIJ01").unwrap())
//!     .service(service_fn(|req: Request<()>| async move {
//!         let auth = &req.headers()["authorization"];
//!         assert!(auth.is_sensitive());
//!         assert_eq!(auth, "Bearer tg-0123456789abcdefghijABCDEFGHIJ01");
//!         Ok::<_, Infallible>(Response::new(()))
//!     }));
//! client.oneshot(Request::new(())).await.unwrap();
//! # }
//! ```

mod layer;
mod service;

pub use self::layer::SetApiKeyLayer;
pub use self::service::SetApiKey;
