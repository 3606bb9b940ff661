//! Tower layers for the Anthropic Messages API and OpenAI-compatible APIs, and the
//! `tollgate` relay gateway built from them.
//!
//! Each layer stacks into any hyper or axum service, server side (a relay in front of an
//! upstream) or client side (wrapping a hyper or reqwest client). Layers communicate only
//! through typed request/response extensions from [`core`]; a rejection is always a
//! response with a proper error envelope, never a new error type.
//!
//! | module | feature | what |
//! |---|---|---|
//! | [`core`] | always | error table and envelopes, [`RequestMetaLayer`](core::RequestMetaLayer), usage observer, clock, extensions |
//! | `auth` | `auth` | `KeyAuthLayer` (server: `x-api-key` / Bearer → `Principal`, diagnostic 401/403) and `SetApiKeyLayer` (client); memory, SQLite, PostgreSQL key stores |
//! | `passthrough` | `passthrough` | `PassthroughLayer` (server: byte-faithful upstream errors, 502/504 for transport failures) and `ClassifyLayer` (client: typed `ApiError`) |
//! | `ratelimit` | `ratelimit`, `redis` | `RateLimitLayer` (server: RPM/ITPM/OTPM/TPD per key, account, global; 429 with Anthropic's headers) and `PaceLayer` (client: wait for capacity) |
//! | `balance` | `balance`, `sqlite`, `postgres` | `BalanceLayer`: reserve the worst case, settle from usage exactly once; memory, SQLite, PostgreSQL ledgers |
//! | `retry` | `retry` | `RetryLayer`: what the API says is retryable, full-jitter backoff, `retry-after`, a shared retry budget, the stream commit point |
//! | `fallback` | `fallback` | `FallbackLayer`: ordered routes per model, cooldowns, opt-in model substitution with truthful served-by headers |
//! | `mock` | `mock` | the scriptable Anthropic-compatible mock upstream |
//! | `gateway` | `gateway` (default) | the `tollgate` binary's library: config, stack, upstream client, metrics |
//! | [`client`] | always; `reqwest` | client side: [`stack`](client::stack) (the whole client stack from one `ClientConfig`), [`replayable`](client::replayable) requests, [`BaseUrlLayer`](client::BaseUrlLayer) (route → base URL), `Reqwest` (a reqwest `Client` as a tower service) |
//! | [`server`] | `gateway` | [`server::stack(config)`](server::stack): the gateway's whole stack (the same code as the binary) as a router to merge into your axum app |
//! | [`ServiceBuilderExt`] | per layer | `.passthrough()`, `.request_meta()`, `.key_auth(store)`, `.api_rate_limit(..)`, `.balance(..)`, `.fallback(..)`, `.api_retry(..)`, `.classify()`, `.pace(..)` on `tower::ServiceBuilder` |
//!
//! Library users who don't want the gateway's dependencies:
//! `tollgate = { version = "0.1", default-features = false, features = ["passthrough"] }`.
//!
//! Runnable examples for each way of using Tollgate (an axum app, a hyper or reqwest
//! client, a hand-built gateway, OpenAI-shaped errors) are in `examples/`; see
//! `docs/examples.md`.
//!
//! # Example
//!
//! The gateway's first two layers in front of your own relay handler:
//!
//! ```
//! use axum::{Router, body::Body, routing::post};
//! use tollgate::prelude::*;
//!
//! async fn relay(req: http::Request<Body>) -> String {
//!     let meta = req.extensions().get::<RequestMeta>().expect("set by RequestMetaLayer");
//!     format!("{} wants up to {:?} tokens", meta.model, meta.max_tokens)
//! }
//!
//! let app: Router = Router::new()
//!     .route("/v1/messages", post(relay))
//!     .layer(RequestMetaLayer::new())
//!     .layer(PassthroughLayer::new());
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use tollgate_core as core;

pub mod builder;
pub mod client;
#[cfg(feature = "gateway")]
pub mod server;

pub use builder::ServiceBuilderExt;

#[cfg(test)]
mod readme;

#[cfg(feature = "auth")]
pub use tollgate_auth as auth;

#[cfg(feature = "passthrough")]
pub use tollgate_passthrough as passthrough;

#[cfg(feature = "retry")]
pub use tollgate_retry as retry;

#[cfg(feature = "ratelimit")]
pub use tollgate_ratelimit as ratelimit;

#[cfg(feature = "balance")]
pub use tollgate_balance as balance;

#[cfg(feature = "fallback")]
pub use tollgate_fallback as fallback;

#[cfg(feature = "mock")]
pub use tollgate_mock as mock;

#[cfg(feature = "gateway")]
pub use tollgate_gateway as gateway;

/// The names most stacks need.
pub mod prelude {
    pub use crate::builder::ServiceBuilderExt;
    pub use tollgate_core::{
        Clock, Dialect, ErrorKind, GatewayError, Origin, Principal, RequestMeta, RequestMetaLayer,
        Served, SystemClock, Usage,
    };

    #[cfg(feature = "auth")]
    pub use tollgate_auth::{KeyAuthLayer, KeyLookup, KeyStore, MemoryKeyStore, SetApiKeyLayer};
    #[cfg(feature = "balance")]
    pub use tollgate_balance::{BalanceLayer, Ledger, MemoryLedger, PriceTable};
    #[cfg(feature = "fallback")]
    pub use tollgate_fallback::FallbackLayer;
    #[cfg(feature = "passthrough")]
    pub use tollgate_passthrough::{ApiError, ClassifyLayer, ClientError, PassthroughLayer};
    #[cfg(feature = "ratelimit")]
    pub use tollgate_ratelimit::{PaceLayer, RateLimitLayer};
    #[cfg(feature = "retry")]
    pub use tollgate_retry::RetryLayer;
}
