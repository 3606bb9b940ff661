//! API-key authentication for Tollgate.
//!
//! - [`KeyAuthLayer`] (server side): reads the key from `x-api-key` or
//!   `Authorization: Bearer`, looks its SHA-256 up in a [`KeyLookup`] through a short-lived
//!   cache, puts a [`Principal`](tollgate_core::Principal) into the request's extensions
//!   and removes the client's credential headers. Rejections are 401/403 responses in the
//!   request's dialect whose message says exactly what is wrong, never echoing the key.
//! - [`SetApiKeyLayer`] (client side): injects a key, marked sensitive.
//! - [`KeyLookup`] (what the layer needs: find a key by hash, and the [`KeyFormat`] of
//!   its keys) and [`KeyStore`] (administration: issue, list, disable keys; accounts),
//!   with [`MemoryKeyStore`], `SqliteKeyStore` (feature `sqlite`) and `PostgresKeyStore`
//!   (feature `postgres`); [`open`] picks one by URL. Stores hold only hashes. Issued
//!   keys are `tg-` and 32 random base62 characters ([`SecretKey`]); a store of your
//!   own may accept other formats ([`KeyFormat::Any`]).
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tollgate_auth::{KeyAuthLayer, KeyStore, MemoryKeyStore, NewKey};
//! use tollgate_core::Principal;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Issue a key (normally done once, with `tollgate keys create`).
//! let store = MemoryKeyStore::new();
//! store.create_account("acme").await?;
//! let (record, key) = store
//!     .create(NewKey::new("acme").name("ci-bot").allowed_models(["claude-haiku-4-5"]))
//!     .await?;
//!
//! // The stack: KeyAuthLayer in front of whatever relays the request.
//! let svc = ServiceBuilder::new()
//!     .layer(KeyAuthLayer::new(store))
//!     .service(service_fn(|req: Request<Full<Bytes>>| async move {
//!         let who = req.extensions().get::<Principal>().expect("authenticated");
//!         assert!(req.headers().get("x-api-key").is_none(), "never forwarded");
//!         let body = format!("hello, key {} of {}", who.key_id, who.account_id);
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
//!     }));
//!
//! let req = Request::post("/v1/messages")
//!     .header("x-api-key", key.expose())
//!     .body(Full::default())?;
//! let res = svc.clone().oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//!
//! // An Anthropic key sent to the gateway by mistake: 401 that says what to do.
//! let req = Request::post("/v1/messages")
//!     .header("x-api-key", "sk-ant-api03-not-for-the-gateway")
//!     .body(Full::default())?;
//! let res = svc.oneshot(req).await?;
//! assert_eq!(res.status(), 401);
//! assert_eq!(res.headers()["x-should-retry"], "false");
//! # let _ = record;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `sqlite`: `SqliteKeyStore` and `sqlite:` URLs in [`open`].
//! - `postgres`: `PostgresKeyStore` and `postgres://` URLs.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

mod cache;
mod check;
mod key;
pub mod key_auth;
mod record;
pub mod set_api_key;
pub mod store;
mod timestamp;

pub use check::{InvalidApiKey, KeyFormat};
pub use key::{DISPLAY_PREFIX_LEN, KEY_LEN, KEY_PREFIX, KEY_RANDOM_CHARS, KeyHash, SecretKey};
pub use key_auth::{KeyAuth, KeyAuthLayer};
pub use record::{Account, AccountStatus, KeyRecord, KeyStatus, NewKey};
pub use set_api_key::{SetApiKey, SetApiKeyLayer};
#[cfg(feature = "postgres")]
pub use store::PostgresKeyStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteKeyStore;
pub use store::{BoxFuture, KeyLookup, KeyStore, MemoryKeyStore, StoreError, StoreErrorKind, open};
pub use timestamp::{format_rfc3339, parse_rfc3339};
