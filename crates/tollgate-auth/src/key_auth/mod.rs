//! Authenticate requests by API key: [`KeyAuthLayer`].
//!
//! The key is read from `x-api-key` or `Authorization: Bearer <key>` (the scheme is
//! case-insensitive, RFC 9110). When both are sent, `x-api-key` wins and `Authorization`
//! is ignored, as the Anthropic API does. The key's SHA-256 is looked up in a
//! [`KeyLookup`] store through a per-process cache; on success a
//! [`Principal`](tollgate_core::Principal) goes into the request's extensions and the
//! client's `x-api-key` and `Authorization` headers are removed, so they never travel
//! further (the upstream client adds its own key).
//!
//! # Rejections
//!
//! Rejections are responses (`Ok`), rendered in the request's dialect (the
//! [`RequestMeta`]'s, else from the path) with
//! `x-tollgate-origin: gateway` and `x-should-retry: false`. The message says why, and
//! never contains the key:
//!
//! | status | cause |
//! |---|---|
//! | 401 `authentication_error` | no key; whitespace around it; a line break, `\n` escape, space, control, zero-width or other non-ASCII character in it (named, with its byte offset); malformed `Authorization` (`Bearer:`, two spaces, no key, another scheme); another vendor's key (`sk-ant-…`, `sk-…`) or not a gateway key's shape (only with [`KeyFormat::Issued`], the default: a store whose [`KeyLookup::key_format`] is [`KeyFormat::Any`] is asked about every cleanly typed key); unknown, disabled or expired key |
//! | 403 `permission_error` | the requested model is outside the key's `allowed_models`; the key's account is suspended |
//! | 503 `api_error` | the store failed (`x-should-retry: true`, `retry-after: 1`) |
//!
//! The model check needs a `RequestMeta` (put there by `RequestMetaLayer`, outside this
//! layer); requests without one (`GET /v1/models`) are not model-checked.
//!
//! # Cache
//!
//! A found key is cached for [`DEFAULT_CACHE_TTL`] (5 s) and an unknown one for
//! [`DEFAULT_NEGATIVE_CACHE_TTL`] (1 s), in a map of at most [`DEFAULT_CACHE_CAPACITY`]
//! entries, all configurable. So **disabling a key, suspending an account or changing a
//! scope takes effect within the TTL**; expiry is checked on every request. A cached key
//! costs no store round trip. Its last use is recorded in a spawned task at most once per
//! [`DEFAULT_LAST_USED_INTERVAL`] (60 s) per key, never on the request path.
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
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store = MemoryKeyStore::new();
//! store.create_account("acme").await.unwrap();
//! let (_, key) = store.create(NewKey::new("acme")).await.unwrap();
//!
//! let svc = ServiceBuilder::new()
//!     .layer(KeyAuthLayer::new(store))
//!     .service(service_fn(|req: Request<Full<Bytes>>| async move {
//!         let who = req.extensions().get::<Principal>().expect("set by KeyAuthLayer");
//!         assert!(req.headers().get("authorization").is_none());
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who.account_id.to_string()))))
//!     }));
//!
//! let req = Request::post("/v1/messages")
//!     .header("authorization", format!("Bearer {}", key.expose()))
//!     .body(Full::default())
//!     .unwrap();
//! assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 200);
//!
//! let anonymous = Request::post("/v1/messages").body(Full::default()).unwrap();
//! assert_eq!(svc.oneshot(anonymous).await.unwrap().status(), 401);
//! # }
//! ```

mod future;
mod layer;
mod service;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use tollgate_core::headers::X_API_KEY;
use tollgate_core::{Clock, Dialect, ErrorKind, GatewayError, RenderOptions, RequestMeta};

pub use self::future::ResponseFuture;
pub use self::layer::KeyAuthLayer;
pub use self::service::KeyAuth;
use crate::cache::{CachedKey, KeyCache};
use crate::record::{AccountStatus, KeyStatus, to_unix};
use crate::timestamp::format_rfc3339;
use crate::{KeyFormat, KeyLookup};

/// How long a found key is served from the cache: 5 s.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);
/// How long an unknown key is remembered as unknown: 1 s.
pub const DEFAULT_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most entries the cache holds: 10 000.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Least time between two `last_used_at` writes for one key: 60 s.
pub const DEFAULT_LAST_USED_INTERVAL: Duration = Duration::from_secs(60);

/// At most this many allowed models are listed in a 403; more are only counted.
const LIST_MODELS_UP_TO: usize = 5;

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) cache_ttl: Duration,
    pub(crate) negative_cache_ttl: Duration,
    pub(crate) cache_capacity: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) render: RenderOptions,
    pub(crate) last_used_interval: Duration,
    /// Which keys are diagnosed before the store is asked; from the store unless set.
    pub(crate) key_format: KeyFormat,
}

/// What every service made by one layer shares: store, cache, configuration.
#[derive(Debug)]
pub(crate) struct Shared<K> {
    pub(crate) store: Arc<K>,
    pub(crate) cache: KeyCache,
    pub(crate) config: Config,
}

impl<K> Shared<K> {
    pub(crate) fn new(store: Arc<K>, config: Config) -> Shared<K> {
        Shared {
            store,
            cache: KeyCache::new(
                config.cache_ttl,
                config.negative_cache_ttl,
                config.cache_capacity,
            ),
            config,
        }
    }

    pub(crate) fn render<B: From<Bytes>>(
        &self,
        err: &GatewayError,
        dialect: Dialect,
    ) -> Response<B> {
        tracing::debug!(
            status = err.kind().class().status,
            reason = err.message(),
            "key auth rejected a request"
        );
        err.to_response(dialect, &self.config.render)
    }
}

impl<K: KeyLookup + 'static> Shared<K> {
    /// Decide on a request whose key the store answered `key` for. On success the
    /// principal is in the extensions and the credential headers are gone.
    pub(crate) fn admit<B>(
        &self,
        key: Option<&CachedKey>,
        req: &mut Request<B>,
    ) -> Result<(), GatewayError> {
        let Some(key) = key else {
            return Err(unauthorized(
                "this API key is not known to this gateway; check that you sent the whole key you were issued, or ask the gateway operator for a new one",
            ));
        };
        let record = &key.record;
        if record.status == KeyStatus::Disabled {
            return Err(unauthorized(format!(
                "this API key (id {}) has been disabled; ask the gateway operator for a new key",
                record.id
            )));
        }
        let now = self.config.clock.wall();
        if let Some(at) = record.expires_at.filter(|&at| at <= now) {
            return Err(unauthorized(format!(
                "this API key (id {}) expired at {}; ask the gateway operator for a new key or a later expiry",
                record.id,
                format_rfc3339(at)
            )));
        }
        if record.account_status == AccountStatus::Suspended {
            return Err(forbidden(format!(
                "the account {:?} of this API key is suspended; contact the gateway operator",
                record.account_id
            )));
        }
        if let Some(meta) = req.extensions().get::<RequestMeta>() {
            if !key.principal.allows_model(&meta.model) {
                return Err(forbidden(model_out_of_scope(
                    &meta.model,
                    record.allowed_models.as_deref().unwrap_or_default(),
                )));
            }
        }
        self.touch(key, now);
        let headers = req.headers_mut();
        headers.remove(X_API_KEY);
        headers.remove(AUTHORIZATION);
        req.extensions_mut().insert(key.principal.clone());
        Ok(())
    }

    /// Record the key's last use in a spawned task, at most once per interval.
    fn touch(&self, key: &CachedKey, now: SystemTime) {
        let now_secs = u64::try_from(to_unix(now)).unwrap_or(0);
        let last = key.last_touch.load(Ordering::Relaxed);
        let every = self.config.last_used_interval.as_secs();
        if now_secs < last.saturating_add(every)
            || key
                .last_touch
                .compare_exchange(last, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let key_id = key.record.id;
        runtime.spawn(async move {
            if let Err(e) = store.touch(key_id, now).await {
                tracing::warn!(key_id, error = %e, "could not record a key's last use");
            }
        });
    }
}

pub(crate) fn unauthorized(message: impl Into<std::borrow::Cow<'static, str>>) -> GatewayError {
    GatewayError::new(ErrorKind::Authentication, message).with_should_retry(false)
}

fn forbidden(message: String) -> GatewayError {
    GatewayError::new(ErrorKind::Permission, message).with_should_retry(false)
}

pub(crate) fn store_unavailable() -> GatewayError {
    GatewayError::new(
        ErrorKind::Unavailable,
        "key store unavailable; retry shortly",
    )
    .with_should_retry(true)
    .with_retry_after(Duration::from_secs(1))
}

fn model_out_of_scope(model: &str, allowed: &[String]) -> String {
    let model: String = model.chars().take(100).collect();
    let scope = match allowed.len() {
        0 => "it is scoped to no models".to_owned(),
        1 => format!("it is scoped to 1 model ({})", allowed[0]),
        n if n <= LIST_MODELS_UP_TO => {
            format!("it is scoped to {n} models ({})", allowed.join(", "))
        }
        n => format!("it is scoped to {n} other models"),
    };
    format!(
        "this API key may not use model {model:?}: {scope}; use an allowed model or ask the gateway operator to widen the key's scope"
    )
}

/// The dialect a rejection of `req` is rendered in.
pub(crate) fn dialect_of<B>(req: &Request<B>) -> Dialect {
    req.extensions()
        .get::<RequestMeta>()
        .map_or_else(|| Dialect::from_path(req.uri().path()), |m| m.dialect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_message_lists_few_models_and_counts_many() {
        let few = [
            "claude-haiku-4-5".to_owned(),
            "claude-sonnet-4-6".to_owned(),
        ];
        assert_eq!(
            model_out_of_scope("claude-opus-4-8", &few),
            "this API key may not use model \"claude-opus-4-8\": it is scoped to 2 models (claude-haiku-4-5, claude-sonnet-4-6); use an allowed model or ask the gateway operator to widen the key's scope"
        );
        let many: Vec<String> = (0..9).map(|i| format!("m{i}")).collect();
        assert!(model_out_of_scope("x", &many).contains("scoped to 9 other models;"));
        assert!(model_out_of_scope("x", &[]).contains("scoped to no models"));
    }
}
