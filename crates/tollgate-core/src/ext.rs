//! The typed extensions that are the whole contract between layers.
//!
//! Layers never call each other; they leave these values in request or response
//! extensions and read what earlier layers left:
//!
//! | extension | set by | read by |
//! |---|---|---|
//! | [`RequestMeta`](crate::RequestMeta) | `RequestMetaLayer` / client builder | auth scopes, ratelimit, balance, fallback, retry |
//! | [`Principal`] | `KeyAuthLayer` | ratelimit, balance, logging |
//! | [`Usage`](crate::Usage) | usage observer on the response body | ratelimit, balance, metrics |
//! | [`Served`] | fallback / retry | response headers, metrics |
//! | [`Origin`] | whoever produced the response | passthrough, metrics |

use std::sync::Arc;

use http::HeaderValue;

/// Who produced a response: Tollgate itself, or the upstream API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A layer of the gateway answered (a rejection, or a transport failure turned into an error).
    Gateway,
    /// The upstream API answered; the response is relayed as received.
    Upstream,
}

impl Origin {
    /// `gateway` or `upstream`, as sent in `x-tollgate-origin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Gateway => "gateway",
            Origin::Upstream => "upstream",
        }
    }

    /// The `x-tollgate-origin` header value.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// Per-key limits; `None` means "no limit of this key's own" (config defaults apply).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Input tokens per minute.
    pub itpm: Option<u64>,
    /// Output tokens per minute.
    pub otpm: Option<u64>,
    /// Tokens per day.
    pub tpd: Option<u64>,
    /// Percent of each of this key's limits usable at once (the bucket size, 1–1000;
    /// 100 lets a full minute's limit through at once). `None`: the configured default.
    pub burst: Option<u32>,
}

/// The authenticated caller, put into request extensions by key-auth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Numeric key id (never the key itself); cheap to use as a limiter key.
    pub key_id: i64,
    /// The account the key spends from.
    pub account_id: Arc<str>,
    /// Human name of the key, for logs.
    pub name: Option<Arc<str>>,
    /// Models this key may use; `None` means any.
    pub allowed_models: Option<Arc<[String]>>,
    /// The key's own limits.
    pub limits: Limits,
}

impl Principal {
    /// Whether this key may use `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models
            .as_deref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }
}

/// Which route and model served a response, and after how many upstream attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The upstream route's name.
    pub route: Arc<str>,
    /// The model that actually served the request (may differ from the requested one
    /// only when model substitution is configured).
    pub model: Arc<str>,
    /// Upstream attempts made, 1 when the first succeeded.
    pub attempts: u32,
}

/// Which upstream route an attempt must go to: set on the request by fallback (one
/// attempt per route), read by the upstream client. Without it the client picks the
/// first route that serves the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetRoute(pub Arc<str>);
