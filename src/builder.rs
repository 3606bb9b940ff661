//! [`ServiceBuilderExt`]: the Tollgate layers as `tower::ServiceBuilder` methods.
//!
//! Each method adds one layer, outermost first, the way `.layer(..)` does; each is behind
//! the cargo feature of its crate. Methods that take a configuration also take the
//! finished layer ([`IntoLayer`]), so a layer built with extra settings (a shared retry
//! budget, a clock, render options) fits in the same chain.
//!
//! Two methods carry an `api_` prefix: tower's own `ServiceBuilder::retry` and
//! `ServiceBuilder::rate_limit` (features `retry` and `limit` of tower, which reqwest and
//! many applications turn on) are inherent methods and would shadow ours.
//!
//! # Example
//!
//! A server stack in the gateway's order, in front of a relay (here a stand-in that
//! answers like the API):
//!
//! ```
//! use std::sync::Arc;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tollgate::auth::NewKey;
//! use tollgate::balance::Amount;
//! use tollgate::prelude::*;
//! use tollgate::ratelimit::RateLimitConfig;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = Arc::new(MemoryKeyStore::new());
//! keys.create_account("acme").await?;
//! let (_, key) = keys.create(NewKey::new("acme")).await?;
//! let ledger = Arc::new(MemoryLedger::new());
//! ledger.open_account("acme", "USD").await?;
//! ledger.topup("acme", Amount::parse("5.00")?, "welcome").await?;
//!
//! let relay = service_fn(|_req: Request<Full<Bytes>>| async {
//!     let body = r#"{"type":"message","usage":{"input_tokens":9,"output_tokens":3}}"#;
//!     let res = Response::builder().header("content-type", "application/json");
//!     Ok::<_, std::io::Error>(res.body(Full::from(body)).expect("valid"))
//! });
//! let gateway = ServiceBuilder::new()
//!     .passthrough()
//!     .request_meta()
//!     .key_auth(keys)
//!     .api_rate_limit(RateLimitLayer::from_config(&RateLimitConfig::default())?)
//!     .balance(ledger, PriceTable::default())
//!     .service(relay);
//!
//! let body = r#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;
//! let request = |key: &str| {
//!     Request::post("/v1/messages").header("x-api-key", key).body(Full::from(body))
//! };
//! let res = gateway.clone().oneshot(request(key.expose())?).await?;
//! assert_eq!(res.status(), 200);
//! let res = gateway.oneshot(request("tg-not-a-key")?).await?;
//! assert_eq!(res.status(), 401);
//! assert_eq!(res.headers()["x-tollgate-origin"], "gateway");
//! # Ok(()) }
//! ```
//!
//! On the client side the same builder wraps an HTTP client: see [`crate::client`].

#[cfg(feature = "balance")]
use std::sync::Arc;

use tollgate_core::RequestMetaLayer;
use tower::ServiceBuilder;
use tower::layer::util::Stack;

#[cfg(feature = "auth")]
use tollgate_auth::{KeyAuthLayer, KeyLookup};
#[cfg(feature = "balance")]
use tollgate_balance::{BalanceLayer, Ledger, PriceTable};
#[cfg(feature = "fallback")]
use tollgate_fallback::{FallbackConfig, FallbackLayer};
#[cfg(feature = "passthrough")]
use tollgate_passthrough::{ClassifyLayer, PassthroughLayer};
#[cfg(feature = "ratelimit")]
use tollgate_ratelimit::{PaceLayer, RateLimitLayer, RateLimiter};
#[cfg(feature = "retry")]
use tollgate_retry::{RetryConfig, RetryLayer};

/// What a [`ServiceBuilderExt`] method accepts in place of a finished layer `T`: `T`
/// itself, or what `T` is built from without a chance of failure (a configuration, a
/// limiter).
///
/// Fallible configurations are not accepted: build the layer and handle the error, e.g.
/// `RateLimitLayer::from_config(&config)?`.
pub trait IntoLayer<T> {
    /// The layer.
    fn into_layer(self) -> T;
}

impl<T> IntoLayer<T> for T {
    fn into_layer(self) -> T {
        self
    }
}

#[cfg(feature = "retry")]
impl IntoLayer<RetryLayer> for RetryConfig {
    fn into_layer(self) -> RetryLayer {
        RetryLayer::new(self)
    }
}

#[cfg(feature = "fallback")]
impl IntoLayer<FallbackLayer> for FallbackConfig {
    fn into_layer(self) -> FallbackLayer {
        FallbackLayer::new(self)
    }
}

#[cfg(feature = "ratelimit")]
impl IntoLayer<RateLimitLayer> for RateLimiter {
    fn into_layer(self) -> RateLimitLayer {
        RateLimitLayer::new(self)
    }
}

mod sealed {
    pub trait Sealed<L> {}
    impl<L> Sealed<L> for tower::ServiceBuilder<L> {}
}

/// The Tollgate layers as methods of [`tower::ServiceBuilder`]; see the
/// [module docs](self) for an example.
///
/// Server side, outermost first (DESIGN's order): `passthrough`, `request_meta`,
/// `key_auth`, `api_rate_limit`, `balance`, `fallback`, `api_retry`, then the upstream
/// client.
///
/// Client side: `classify` (outside retry and fallback: it turns error responses into
/// `Err`), `fallback`, `api_retry`, `pace`, then a service that sends each attempt to its
/// route's base URL ([`client::BaseUrlLayer`](crate::client::BaseUrlLayer)) and the HTTP
/// client.
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// Read the request body once (32 MiB limit, 413; bad JSON or fields, 400) and leave
    /// a replayable [`RequestMeta`](tollgate_core::RequestMeta); see [`RequestMetaLayer`].
    fn request_meta(self) -> ServiceBuilder<Stack<RequestMetaLayer, L>>;

    /// Server side, outermost: relay upstream errors byte for byte, render gateway errors
    /// in the request's dialect, turn transport failures into 502/504 envelopes; see
    /// [`PassthroughLayer`]. The resulting service's error is `Infallible`, as axum wants.
    #[cfg(feature = "passthrough")]
    fn passthrough(self) -> ServiceBuilder<Stack<PassthroughLayer, L>>;

    /// Client side: error responses become [`ClientError::Api`](crate::passthrough::ClientError)
    /// with a typed [`ApiError`](crate::passthrough::ApiError), and so do local refusals
    /// from inner layers (a pacing timeout is a 429 from the gateway origin); transport
    /// failures become [`ClientError::Transport`](crate::passthrough::ClientError). See
    /// [`ClassifyLayer`].
    /// Put it outside retry and fallback, which must still see error responses.
    #[cfg(feature = "passthrough")]
    fn classify(self) -> ServiceBuilder<Stack<ClassifyLayer, L>>;

    /// Authenticate `x-api-key` / `Authorization: Bearer` against `store` (any
    /// [`KeyLookup`], e.g. `Arc<MemoryKeyStore>` or your own); 401/403 that say why. See
    /// [`KeyAuthLayer`] for the cache and its settings.
    #[cfg(feature = "auth")]
    fn key_auth<K: KeyLookup + 'static>(
        self,
        store: K,
    ) -> ServiceBuilder<Stack<KeyAuthLayer<K>, L>>;

    /// Server-side rate limits per key, account and gateway (429 with `retry-after` and
    /// `anthropic-ratelimit-*`). Takes a [`RateLimitLayer`] (e.g.
    /// `RateLimitLayer::from_config(&config)?`) or a [`RateLimiter`].
    ///
    /// Named `api_rate_limit` because tower's `ServiceBuilder::rate_limit` (feature
    /// `limit`) would shadow a method called `rate_limit`.
    #[cfg(feature = "ratelimit")]
    fn api_rate_limit(
        self,
        limit: impl IntoLayer<RateLimitLayer>,
    ) -> ServiceBuilder<Stack<RateLimitLayer, L>>;

    /// Client-side pacing: wait for capacity (configured, or learned from the upstream's
    /// `anthropic-ratelimit-*` headers) instead of being refused; see [`PaceLayer`].
    #[cfg(feature = "ratelimit")]
    fn pace(self, pace: PaceLayer) -> ServiceBuilder<Stack<PaceLayer, L>>;

    /// Reserve the worst-case cost in `ledger` before the request, settle from the usage
    /// the response reports; 402 when the balance does not cover it. See [`BalanceLayer`].
    #[cfg(feature = "balance")]
    fn balance(
        self,
        ledger: Arc<dyn Ledger>,
        prices: PriceTable,
    ) -> ServiceBuilder<Stack<BalanceLayer, L>>;

    /// Send each attempt again when the API says it may help (429, 5xx, 529, connection
    /// failures), with backoff and `retry-after`. Takes a [`RetryConfig`] (use
    /// [`RetryConfig::client`] on the client side) or a [`RetryLayer`].
    ///
    /// Named `api_retry` because tower's `ServiceBuilder::retry` (feature `retry`, which
    /// reqwest turns on) would shadow a method called `retry`.
    #[cfg(feature = "retry")]
    fn api_retry(self, retry: impl IntoLayer<RetryLayer>) -> ServiceBuilder<Stack<RetryLayer, L>>;

    /// Try the routes configured for the request's model in order, marking each attempt
    /// with a [`TargetRoute`](tollgate_core::TargetRoute). Takes a [`FallbackConfig`] or a
    /// [`FallbackLayer`]; pass
    /// `FallbackLayer::new(config).budget(retry.retry_budget())` to share one retry
    /// budget with the `api_retry` layer below it, as the gateway does.
    #[cfg(feature = "fallback")]
    fn fallback(
        self,
        fallback: impl IntoLayer<FallbackLayer>,
    ) -> ServiceBuilder<Stack<FallbackLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn request_meta(self) -> ServiceBuilder<Stack<RequestMetaLayer, L>> {
        self.layer(RequestMetaLayer::new())
    }

    #[cfg(feature = "passthrough")]
    fn passthrough(self) -> ServiceBuilder<Stack<PassthroughLayer, L>> {
        self.layer(PassthroughLayer::new())
    }

    #[cfg(feature = "passthrough")]
    fn classify(self) -> ServiceBuilder<Stack<ClassifyLayer, L>> {
        self.layer(ClassifyLayer::new())
    }

    #[cfg(feature = "auth")]
    fn key_auth<K: KeyLookup + 'static>(
        self,
        store: K,
    ) -> ServiceBuilder<Stack<KeyAuthLayer<K>, L>> {
        self.layer(KeyAuthLayer::new(store))
    }

    #[cfg(feature = "ratelimit")]
    fn api_rate_limit(
        self,
        limit: impl IntoLayer<RateLimitLayer>,
    ) -> ServiceBuilder<Stack<RateLimitLayer, L>> {
        self.layer(limit.into_layer())
    }

    #[cfg(feature = "ratelimit")]
    fn pace(self, pace: PaceLayer) -> ServiceBuilder<Stack<PaceLayer, L>> {
        self.layer(pace)
    }

    #[cfg(feature = "balance")]
    fn balance(
        self,
        ledger: Arc<dyn Ledger>,
        prices: PriceTable,
    ) -> ServiceBuilder<Stack<BalanceLayer, L>> {
        self.layer(BalanceLayer::new(ledger, prices))
    }

    #[cfg(feature = "retry")]
    fn api_retry(self, retry: impl IntoLayer<RetryLayer>) -> ServiceBuilder<Stack<RetryLayer, L>> {
        self.layer(retry.into_layer())
    }

    #[cfg(feature = "fallback")]
    fn fallback(
        self,
        fallback: impl IntoLayer<FallbackLayer>,
    ) -> ServiceBuilder<Stack<FallbackLayer, L>> {
        self.layer(fallback.into_layer())
    }
}
