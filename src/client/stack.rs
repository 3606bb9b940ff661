//! [`stack`]: the whole client stack from one configuration.

use std::fmt;

use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tollgate_core::headers::X_API_KEY;
use tollgate_fallback::{Fallback, FallbackConfig, FallbackLayer, ModelRoutes};
use tollgate_passthrough::{Classify, ClassifyLayer};
use tollgate_ratelimit::{Pace, PaceConfig, PaceLayer};
use tollgate_retry::{Retry, RetryConfig, RetryLayer};
use tower::Layer;

use super::{BaseUrlLayer, BaseUrlService};

// ===== ClientConfig =====

/// What [`stack`] builds: the routes (base URLs, in the order they are tried), retry,
/// pacing and, optionally, routes per model.
///
/// Every field has a default that is safe to start with: retries as the official SDKs
/// do them ([`RetryConfig::client`]), pacing learned from the upstream's
/// `anthropic-ratelimit-*` headers, every model tried on every route in order.
///
/// ```
/// use tollgate::client::ClientConfig;
///
/// let config: ClientConfig = toml::from_str(r#"
///     [[routes]]
///     name = "anthropic"
///     base_url = "https://api.anthropic.com"
///     api_key_env = "ANTHROPIC_API_KEY"
///     [[routes]]
///     name = "proxy"
///     base_url = "https://llm-proxy.internal.example"
///     api_key_env = "PROXY_KEY"
///     auth = "bearer"
///     [pace.limits]
///     rpm = 50
/// "#)?;
/// assert_eq!(config.routes.len(), 2);
/// assert_eq!(config.retry.max_attempts, 3);
/// # Ok::<_, toml::de::Error>(())
/// ```
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Where requests go, in the order they are tried; at least one.
    pub routes: Vec<ClientRoute>,
    /// Retries per route. Default [`RetryConfig::client`]: 3 attempts, full-jitter
    /// backoff from 0.5 s, `retry-after` honoured up to 60 s, a 20 % retry budget.
    pub retry: RetryConfig,
    /// Pacing: wait for capacity instead of being refused. Default: no configured limits,
    /// learned from the upstream's headers, at most 60 s of waiting.
    pub pace: PaceConfig,
    /// Routes per model (see docs/fallback.md), instead of the default: every model is
    /// tried on every route, in order.
    pub fallback: Option<FallbackConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            routes: Vec::new(),
            retry: RetryConfig::client(),
            pace: PaceConfig::default(),
            fallback: None,
        }
    }
}

impl ClientConfig {
    /// The defaults, with no routes yet.
    pub fn new() -> ClientConfig {
        ClientConfig::default()
    }

    /// Add a route (tried after the ones added before it).
    pub fn route(mut self, route: ClientRoute) -> ClientConfig {
        self.routes.push(route);
        self
    }

    /// Retry policy.
    pub fn retry(mut self, retry: RetryConfig) -> ClientConfig {
        self.retry = retry;
        self
    }

    /// Pacing settings.
    pub fn pace(mut self, pace: PaceConfig) -> ClientConfig {
        self.pace = pace;
        self
    }

    /// Routes per model.
    pub fn fallback(mut self, fallback: FallbackConfig) -> ClientConfig {
        self.fallback = Some(fallback);
        self
    }
}

/// How a route expects its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyHeader {
    /// `x-api-key: KEY` (the Anthropic API).
    #[default]
    XApiKey,
    /// `Authorization: Bearer KEY` (OpenAI-compatible APIs, gateways).
    Bearer,
}

/// One base URL the client may call, and its key.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRoute {
    /// Name in `x-tollgate-route` and in `fallback` entries.
    pub name: String,
    /// Base URL; request paths are appended (`https://api.anthropic.com` + `/v1/messages`).
    pub base_url: String,
    /// The key, inline. Prefer `api_key_env`. Without either, requests keep whatever
    /// credential they carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Name of the environment variable holding the key, read when the stack is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// How the key is sent. Default `x-api-key`.
    #[serde(default)]
    pub auth: KeyHeader,
}

impl fmt::Debug for ClientRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRoute")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("auth", &self.auth)
            .finish()
    }
}

impl ClientRoute {
    /// A route to `base_url` without a key of its own.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> ClientRoute {
        ClientRoute {
            name: name.into(),
            base_url: base_url.into(),
            api_key: None,
            api_key_env: None,
            auth: KeyHeader::default(),
        }
    }

    /// Send this key in `x-api-key`.
    pub fn api_key(mut self, key: impl Into<String>) -> ClientRoute {
        self.api_key = Some(key.into());
        self
    }

    /// Read the key from this environment variable when the stack is built.
    pub fn api_key_env(mut self, var: impl Into<String>) -> ClientRoute {
        self.api_key_env = Some(var.into());
        self
    }

    /// Send the key as `Authorization: Bearer KEY` instead.
    pub fn bearer(mut self) -> ClientRoute {
        self.auth = KeyHeader::Bearer;
        self
    }

    /// The credential header, validated; `None` without a key.
    fn credential(&self) -> Result<Option<(HeaderName, HeaderValue)>, String> {
        let key = match (&self.api_key, &self.api_key_env) {
            (Some(_), Some(_)) => return Err("set either api_key or api_key_env, not both".into()),
            (Some(key), None) => key.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                format!("environment variable {var} is not set; export it before starting")
            })?,
            (None, None) => return Ok(None),
        };
        if key.is_empty() || key.trim() != key {
            return Err(
                "the key is empty or has whitespace around it; remove the whitespace".into(),
            );
        }
        let (name, value) = match self.auth {
            KeyHeader::XApiKey => (X_API_KEY, HeaderValue::from_str(&key)),
            KeyHeader::Bearer => (
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {key}")),
            ),
        };
        let mut value = value.map_err(|_| {
            "the key contains characters not allowed in a header; copy it again".to_owned()
        })?;
        value.set_sensitive(true);
        Ok(Some((name, value)))
    }
}

/// A [`ClientConfig`] problem: the key (`routes[1].base_url`) and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key.
    pub key: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

// ===== stack =====

/// Build the client stack DESIGN describes, outermost first:
///
/// ```text
/// Classify → Fallback (routes in order) → Retry → Pace → BaseUrl (+ the route's key) → your client
/// ```
///
/// Retry and fallback share one retry budget. Put the result on a hyper-util client or
/// a [`Reqwest`](super::Reqwest) with `ServiceBuilder::new().layer(stack).service(client)`,
/// and send requests made with [`replayable`](super::replayable) and a relative URI
/// (`/v1/messages`): each attempt goes to its route's base URL.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tollgate::client::{ClientConfig, ClientRoute, replayable};
/// use tollgate::mock::{MockOptions, MockServer};
/// use tollgate::prelude::*;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let down = MockServer::start(MockOptions::new().default_header("x-mock-status", "529")).await?;
/// let up = MockServer::start(MockOptions::new()).await?;
///
/// let config = ClientConfig::new()
///     .route(ClientRoute::new("primary", down.url()).api_key("sk-ant-primary"))
///     .route(ClientRoute::new("backup", up.url()).api_key("sk-ant-backup"));
/// let client = ServiceBuilder::new()
///     .layer(tollgate::client::stack(&config)?)
///     .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
///
/// let body = r#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;
/// let request = replayable(http::Request::post("/v1/messages").body(Bytes::from(body))?)?;
/// let res = client.oneshot(request).await?;
/// assert_eq!(res.headers()["x-tollgate-route"], "backup");
/// assert_eq!(up.received()[0].header("x-api-key"), Some("sk-ant-backup"));
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// A [`ConfigError`] naming the key: no route, a bad base URL, a missing key variable, a
/// name used twice, a retry, pace or fallback value out of range.
pub fn stack(config: &ClientConfig) -> Result<ClientStack, ConfigError> {
    let err = |key: String, reason: String| ConfigError { key, reason };
    if config.routes.is_empty() {
        return Err(err(
            "routes".into(),
            "at least one route is required: ClientRoute::new(name, base_url)".into(),
        ));
    }
    let mut routes = Vec::with_capacity(config.routes.len());
    for (i, route) in config.routes.iter().enumerate() {
        let credential = route
            .credential()
            .map_err(|reason| err(format!("routes[{i}].api_key"), reason))?;
        routes.push((route.name.as_str(), route.base_url.as_str(), credential));
    }
    let base_urls =
        BaseUrlLayer::with_credentials(routes).map_err(|reason| err("routes".into(), reason))?;
    config
        .retry
        .validate()
        .map_err(|reason| err("retry".into(), reason))?;
    let pace = PaceLayer::from_config(&config.pace)
        .map_err(|e| err(format!("pace.{}", e.key), e.reason))?;
    let fallback = config.fallback.clone().unwrap_or_else(|| {
        let mut all = FallbackConfig::default();
        all.models.insert(
            "*".into(),
            ModelRoutes {
                routes: config.routes.iter().map(|r| r.name.clone()).collect(),
                fallback_models: Vec::new(),
            },
        );
        all
    });
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    fallback
        .validate(&names)
        .map_err(|reason| err("fallback".into(), reason))?;
    let retry = RetryLayer::new(config.retry.clone());
    Ok(ClientStack {
        fallback: FallbackLayer::new(fallback).budget(retry.retry_budget()),
        retry,
        pace,
        base_urls,
    })
}

/// The client stack as one layer; made by [`stack`]. Clones share the retry budget,
/// the routes' cooldowns and the pacer.
#[derive(Clone, Debug)]
pub struct ClientStack {
    fallback: FallbackLayer,
    retry: RetryLayer,
    pace: PaceLayer,
    base_urls: BaseUrlLayer,
}

impl<S> Layer<S> for ClientStack {
    type Service = Classify<Fallback<Retry<Pace<BaseUrlService<S>>>>>;

    fn layer(&self, inner: S) -> Self::Service {
        let inner = self.base_urls.layer(inner);
        let inner = self.pace.layer(inner);
        let inner = self.retry.layer(inner);
        let inner = self.fallback.layer(inner);
        ClassifyLayer::new().layer(inner)
    }
}
