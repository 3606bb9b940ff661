//! Server side: the gateway's whole stack, for your own axum app (feature `gateway`).
//!
//! [`stack`] assembles exactly what the `tollgate` binary serves on its relayed paths,
//! in DESIGN's order and with the same code (`tollgate::gateway::stack::relay`):
//!
//! ```text
//! Trace → Metrics → Passthrough → RequestMeta → KeyAuth → RateLimit → Balance
//!   → Fallback → Retry → upstream client (routes by model, injects the upstream key)
//! ```
//!
//! [`ServerStack::router`] mounts it on `POST /v1/messages`,
//! `POST /v1/messages/count_tokens`, `GET /v1/models[/{id}]` and
//! `POST /v1/chat/completions`; merge that into your app and its other routes (and its
//! 404s) stay yours. To put the layers in front of a handler of your own instead, stack
//! them with [`ServiceBuilderExt`](crate::ServiceBuilderExt).
//!
//! [`ServerConfig`] is the gateway's configuration file without `listen` and
//! `shutdown_grace_ms` (your app owns the socket): deserialize it from the same TOML
//! (`docs/configuration.md`), or build it in code. Its defaults are safe: key auth and
//! billing are on, so a stack without a key store and a ledger (or a `database` to open
//! them from) is refused at [`stack`] instead of becoming an open relay.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::{Router, routing::get};
//! use tollgate::auth::NewKey;
//! use tollgate::balance::Amount;
//! use tollgate::mock::{MockOptions, MockServer};
//! use tollgate::prelude::*;
//! use tollgate::server::{ServerConfig, UpstreamConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = MockServer::start(MockOptions::new()).await?; // stands in for the API
//! let keys = Arc::new(MemoryKeyStore::new());
//! keys.create_account("acme").await?;
//! let (_, key) = keys.create(NewKey::new("acme")).await?;
//! let ledger = Arc::new(MemoryLedger::new());
//! ledger.open_account("acme", "USD").await?;
//! ledger.topup("acme", Amount::parse("5.00")?, "welcome").await?;
//!
//! let config = ServerConfig::new()
//!     .upstream(UpstreamConfig::new("anthropic", &upstream.url(), "sk-ant-upstream"))
//!     .key_store(keys)
//!     .ledger(ledger);
//! let gateway = tollgate::server::stack(config).await?;
//! let app: Router = Router::new()
//!     .route("/hello", get(|| async { "my own route\n" }))
//!     .merge(gateway.router());
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}", listener.local_addr()?);
//! tokio::spawn(async move { axum::serve(listener, app).await });
//!
//! let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//!     .build_http::<http_body_util::Full<bytes::Bytes>>();
//! let body = r#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;
//! let request = |key: &str| {
//!     http::Request::post(format!("{url}/v1/messages"))
//!         .header("x-api-key", key)
//!         .body(http_body_util::Full::from(body))
//! };
//! assert_eq!(client.request(request(key.expose())?).await?.status(), 200);
//! assert_eq!(client.request(request("sk-ant-wrong")?).await?.status(), 401);
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, Response};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tollgate_auth::{Account, SecretKey, StoreError, StoreErrorKind};
use tollgate_auth::{BoxFuture, KeyFormat, KeyHash, KeyLookup, KeyRecord, KeyStore, NewKey};
use tollgate_balance::{BalanceConfig, Ledger};
use tollgate_core::Limits;
use tollgate_fallback::FallbackConfig;
use tollgate_gateway::stack::RELAYED_PATHS;
use tollgate_gateway::{Config, Stores};
use tollgate_passthrough::PassthroughConfig;
use tollgate_ratelimit::RateLimitConfig;
use tollgate_retry::RetryConfig;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

pub use tollgate_gateway::{AuthConfig, ConfigError, Metrics, UpstreamAuth, UpstreamConfig};

/// Named in configuration errors of a [`ServerConfig`] built in code.
const ORIGIN: &str = "ServerConfig";

// ===== ServerConfig =====

/// What [`stack`] builds: the gateway's configuration minus the socket.
///
/// Deserializes from the gateway's TOML (without `listen` and `shutdown_grace_ms`); every
/// field has the gateway's default. Stores can come from `database` (opened by [`stack`])
/// or be handed over in code with [`key_store`](ServerConfig::key_store) /
/// [`ledger`](ServerConfig::ledger) / [`key_lookup`](ServerConfig::key_lookup).
///
/// ```
/// use tollgate::server::ServerConfig;
///
/// let config: ServerConfig = toml::from_str(r#"
///     database = "sqlite://tollgate.db"
///     [ratelimit.default_key]
///     rpm = 50
///     [[upstreams]]
///     name = "anthropic"
///     base_url = "https://api.anthropic.com"
///     api_key_env = "ANTHROPIC_UPSTREAM_KEY"
/// "#)?;
/// assert!(config.auth.enabled && config.billing, "safe defaults");
/// # Ok::<_, toml::de::Error>(())
/// ```
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where keys and balances live (`sqlite://PATH` or `postgres://…`), opened by
    /// [`stack`] unless stores are given in code. Default none.
    pub database: Option<String>,
    /// Largest request body accepted, in bytes. Default 32 MiB (413 above it).
    pub max_body_bytes: usize,
    /// Key auth. Default on, keys cached 5 s.
    pub auth: AuthConfig,
    /// How errors reach clients (see docs/passthrough.md).
    pub errors: PassthroughConfig,
    /// Charge requests to their account's balance. Default `true`.
    pub billing: bool,
    /// Prices and refusal statuses (see docs/balance.md).
    pub balance: BalanceConfig,
    /// Rate limits per key, account and global (see docs/ratelimit.md). Default none but
    /// what keys carry themselves.
    pub ratelimit: RateLimitConfig,
    /// Retries against the upstream (see docs/retry.md).
    pub retry: RetryConfig,
    /// Routes per model (see docs/fallback.md). Default: every upstream that serves a
    /// model, in order.
    pub fallback: Option<FallbackConfig>,
    /// Where requests go; at least one. A model is served by the first upstream that
    /// lists it (or `"*"`).
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(skip)]
    keys: Option<Arc<dyn KeyStore>>,
    #[serde(skip)]
    ledger: Option<Arc<dyn Ledger>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let gateway = Config::with_upstreams(Vec::new());
        ServerConfig {
            database: None,
            max_body_bytes: gateway.max_body_bytes,
            auth: gateway.auth,
            errors: gateway.errors,
            billing: gateway.billing,
            balance: gateway.balance,
            ratelimit: gateway.ratelimit,
            retry: gateway.retry,
            fallback: None,
            upstreams: Vec::new(),
            keys: None,
            ledger: None,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("database", &self.database)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("auth", &self.auth)
            .field("errors", &self.errors)
            .field("billing", &self.billing)
            .field("balance", &self.balance)
            .field("ratelimit", &self.ratelimit)
            .field("retry", &self.retry)
            .field("fallback", &self.fallback)
            .field("upstreams", &self.upstreams)
            .field("keys", &self.keys.as_ref().map(|_| "KeyStore"))
            .field("ledger", &self.ledger.as_ref().map(|_| "Ledger"))
            .finish()
    }
}

impl ServerConfig {
    /// The defaults: key auth and billing on, no upstreams yet.
    pub fn new() -> ServerConfig {
        ServerConfig::default()
    }

    /// Add an upstream route (tried in the order added).
    pub fn upstream(mut self, upstream: UpstreamConfig) -> ServerConfig {
        self.upstreams.push(upstream);
        self
    }

    /// Open keys and balances from this URL (`sqlite://PATH`, `postgres://…`).
    pub fn database(mut self, url: impl Into<String>) -> ServerConfig {
        self.database = Some(url.into());
        self
    }

    /// Authenticate against this store (e.g. `Arc<MemoryKeyStore>`) instead of one opened
    /// from `database`.
    pub fn key_store(mut self, keys: Arc<dyn KeyStore>) -> ServerConfig {
        self.keys = Some(keys);
        self
    }

    /// Authenticate against a store that only looks keys up (keys from an environment
    /// variable, another service). Its admin methods are not needed by the stack.
    pub fn key_lookup<K: KeyLookup + 'static>(self, keys: K) -> ServerConfig {
        self.key_store(Arc::new(LookupOnly(keys)))
    }

    /// Charge requests to this ledger instead of one opened from `database`.
    pub fn ledger(mut self, ledger: Arc<dyn Ledger>) -> ServerConfig {
        self.ledger = Some(ledger);
        self
    }

    /// Turn billing off: keys are checked and limited, nothing is charged.
    pub fn without_billing(mut self) -> ServerConfig {
        self.billing = false;
        self
    }

    /// Rate limits per key, account and gateway.
    pub fn rate_limits(mut self, ratelimit: RateLimitConfig) -> ServerConfig {
        self.ratelimit = ratelimit;
        self
    }

    /// Retry policy towards the upstreams.
    pub fn retry(mut self, retry: RetryConfig) -> ServerConfig {
        self.retry = retry;
        self
    }

    /// Routes per model, instead of "every upstream that serves the model, in order".
    pub fn fallback(mut self, fallback: FallbackConfig) -> ServerConfig {
        self.fallback = Some(fallback);
        self
    }

    /// The gateway configuration this is a part of (listening address and shutdown grace
    /// at their defaults: unused here).
    fn gateway_config(&self) -> Config {
        let mut config = Config::with_upstreams(self.upstreams.clone());
        config.database = self.database.clone();
        config.max_body_bytes = self.max_body_bytes;
        config.auth = self.auth.clone();
        config.errors = self.errors.clone();
        config.billing = self.billing;
        config.balance = self.balance.clone();
        config.ratelimit = self.ratelimit.clone();
        config.retry = self.retry.clone();
        config.fallback = self.fallback.clone();
        config
    }
}

// ===== stack =====

/// Build the gateway's stack from `config`: validate it the way `tollgate serve` does,
/// open the stores `database` names (running their migrations) unless they were given,
/// and assemble the layers.
///
/// # Errors
///
/// A [`ConfigError`] naming the key and saying what to do: no upstream, a bad URL or
/// key, bad limits, key auth without a key store, billing without a ledger, a database
/// that cannot be opened.
pub async fn stack(config: ServerConfig) -> Result<ServerStack, ConfigError> {
    let origin = Path::new(ORIGIN);
    let err = |key: &str, reason: String| ConfigError {
        file: origin.to_path_buf(),
        key: key.to_owned(),
        reason,
    };
    let gateway = config.gateway_config();
    let mut check = gateway.clone();
    if config.keys.is_some() {
        // The key store is given: no database is needed for it.
        check.auth.enabled = false;
    }
    check.validate(origin)?;

    let auth = gateway.auth.enabled;
    let keys = match (config.keys, &config.database) {
        (Some(keys), _) => Some(keys),
        (None, Some(url)) if auth => Some(
            tollgate_gateway::stores::open_keys(url)
                .await
                .map_err(|e| err("database", e))?,
        ),
        _ => None,
    };
    let billing = auth && gateway.billing;
    let ledger = match (config.ledger, &config.database) {
        _ if !billing => None,
        (Some(ledger), _) => Some(ledger),
        (None, Some(url)) => Some(
            tollgate_gateway::stores::open_ledger(url)
                .await
                .map_err(|e| err("database", e))?,
        ),
        (None, None) => {
            return Err(err(
                "billing",
                "billing is on but there is no ledger: pass ServerConfig::ledger(..), set database, or turn billing off (billing = false / ServerConfig::without_billing())".into(),
            ));
        }
    };
    let stores = Stores {
        keys,
        ledger: ledger.clone(),
    };
    let metrics = Metrics::new();
    let relay = tollgate_gateway::stack::relay(&gateway, metrics.clone(), &stores)
        .map_err(|reason| err("", reason))?
        .map_response(|res| res.map(Body::new));
    Ok(ServerStack {
        relay: BoxCloneSyncService::new(relay),
        metrics,
        ledger,
    })
}

// ===== ServerStack =====

/// The relay service [`ServerStack::service`] returns: the whole stack, boxed once so
/// it has a name you can store.
pub type RelayService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The gateway's stack, ready to mount; made by [`stack`]. Cheap to clone.
#[derive(Clone)]
pub struct ServerStack {
    relay: RelayService,
    metrics: Metrics,
    ledger: Option<Arc<dyn Ledger>>,
}

impl fmt::Debug for ServerStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStack")
            .field("billing", &self.ledger.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerStack {
    /// A router with the relay on the gateway's API paths (`/v1/messages`,
    /// `/v1/messages/count_tokens`, `/v1/models`, `/v1/models/{model_id}`,
    /// `/v1/chat/completions`) and nothing else: `merge` it into your app, or `nest` it
    /// under a prefix.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        RELAYED_PATHS.iter().fold(Router::new(), |app, path| {
            app.route_service(path, self.relay.clone())
        })
    }

    /// The relay as one service, for `Router::route_service` on paths of your choosing.
    pub fn service(&self) -> RelayService {
        self.relay.clone()
    }

    /// The stack's Prometheus metrics; serve [`Metrics::render`] where your app exposes
    /// metrics (the gateway serves it at `GET /metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Start what the gateway runs beside its stack when it bills: a task that releases
    /// reservations a crashed process left behind, at once and then every minute. Abort
    /// the handle on shutdown. `None` without billing.
    pub fn spawn_reconciler(&self) -> Option<JoinHandle<()>> {
        self.ledger.clone().map(|ledger| {
            tollgate_balance::spawn_reconciler(
                ledger,
                Arc::new(tollgate_core::SystemClock),
                Duration::from_secs(60),
            )
        })
    }
}

// ===== LookupOnly =====

/// A [`KeyLookup`] where the gateway's stores want a [`KeyStore`]: lookups go through,
/// administration is refused (the stack never administers keys).
struct LookupOnly<K>(K);

impl<K> LookupOnly<K> {
    fn refused<T: Send + 'static>() -> BoxFuture<'static, Result<T, StoreError>> {
        Box::pin(std::future::ready(Err(StoreError::new(
            StoreErrorKind::InvalidInput,
            "this key store only looks keys up; administer its keys where they come from",
        ))))
    }
}

impl<K: KeyLookup> KeyLookup for LookupOnly<K> {
    fn lookup<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>> {
        self.0.lookup(hash)
    }

    fn touch(
        &self,
        key_id: i64,
        at: std::time::SystemTime,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.0.touch(key_id, at)
    }

    fn key_format(&self) -> KeyFormat {
        self.0.key_format()
    }
}

impl<K: KeyLookup> KeyStore for LookupOnly<K> {
    fn key(&self, _key_id: i64) -> BoxFuture<'_, Result<Option<KeyRecord>, StoreError>> {
        Self::refused()
    }

    fn create(&self, _new: NewKey) -> BoxFuture<'_, Result<(KeyRecord, SecretKey), StoreError>> {
        Self::refused()
    }

    fn list<'a>(
        &'a self,
        _account: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<KeyRecord>, StoreError>> {
        Self::refused()
    }

    fn disable(&self, _key_id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Self::refused()
    }

    fn set_limits(&self, _key_id: i64, _limits: Limits) -> BoxFuture<'_, Result<(), StoreError>> {
        Self::refused()
    }

    fn create_account<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<Account, StoreError>> {
        Self::refused()
    }

    fn suspend_account<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Self::refused()
    }

    fn resume_account<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Self::refused()
    }

    fn account<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<Option<Account>, StoreError>> {
        Self::refused()
    }
}
