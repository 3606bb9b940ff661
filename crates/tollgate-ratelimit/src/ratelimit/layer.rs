use tollgate_core::RenderOptions;
use tower::Layer;

use super::RateLimit;
use crate::config::{ConfigError, RateLimitConfig};
use crate::limiter::RateLimiter;

/// Applies [`RateLimit`] to a service: per-key, per-account and global limits decided in
/// `call`, refusals answered as 429 responses.
///
/// # Example
///
/// ```
/// use tollgate_ratelimit::{RateLimitConfig, RateLimitLayer};
///
/// let config: RateLimitConfig = toml::from_str("[default_key]\nrpm = 60").unwrap();
/// let layer = RateLimitLayer::from_config(&config).unwrap().headers_on_success(false);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    headers_on_success: bool,
    render: RenderOptions,
}

// ===== impl RateLimitLayer =====

impl RateLimitLayer {
    /// A layer deciding with `limiter`; success headers as the limiter's configuration says.
    pub fn new(limiter: RateLimiter) -> Self {
        RateLimitLayer {
            headers_on_success: limiter.headers_on_success(),
            limiter,
            render: RenderOptions::default(),
        }
    }

    /// A layer with a new limiter built from `config` (see [`RateLimiter::from_config`]).
    ///
    /// # Errors
    ///
    /// As [`RateLimiter::from_config`].
    pub fn from_config(config: &RateLimitConfig) -> Result<Self, ConfigError> {
        Ok(RateLimitLayer::new(RateLimiter::from_config(config)?))
    }

    /// Whether successful responses carry `anthropic-ratelimit-*` for the tightest scope.
    pub fn headers_on_success(mut self, on: bool) -> Self {
        self.headers_on_success = on;
        self
    }

    /// How rejections are rendered (e.g. the `gateway_` type prefix).
    pub fn render_options(mut self, render: RenderOptions) -> Self {
        self.render = render;
        self
    }

    /// The limiter every service of this layer shares.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(
            inner,
            self.limiter.clone(),
            self.headers_on_success,
            self.render.clone(),
        )
    }
}
