use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tollgate_core::{Dialect, Endpoint, Principal, RenderOptions, RequestMeta};
use tower::Service;

use super::RateLimitBody;
use super::future::ResponseFuture;
use crate::limiter::{Pending, RateLimiter};

/// Rate limits in front of a service; built by [`RateLimitLayer`](super::RateLimitLayer).
///
/// For each request, in `call` (readiness is only the inner service's):
///
/// - reads the [`Principal`] (key id, account, the key's own limits) and the
///   [`RequestMeta`] (dialect, `est_input_tokens`, endpoint) from the extensions; without a
///   principal only the global scope applies, without a `RequestMeta` the request costs
///   one request and no tokens; `count_tokens` costs one request and no tokens;
/// - **refused** (a limit is exhausted): answers a 429 `rate_limit_error` naming the
///   dimension and scope, `retry-after` (whole seconds, rounded up), `retry-after-ms`,
///   `x-should-retry` (`false` when the wait is over 60 s or the request can never fit)
///   and the refusing scope's `anthropic-ratelimit-*`; the inner service is not called;
/// - **limiter unavailable** (Redis down, `fail_closed`): answers a 503 that says so;
/// - **admitted**: calls the inner service. A 2xx response gets `anthropic-ratelimit-*`
///   for the tightest scope of each dimension (unless switched off) in its head — before
///   the first event of a stream — and, for messages endpoints when input, output or
///   daily tokens are limited, its body is observed; when it ends the reported output
///   tokens are charged and the input estimate is corrected to the reported input
///   ([`Admission::settle`](crate::Admission::settle)). Other responses (upstream 429s included) pass untouched.
///
/// # Errors
///
/// None of its own: the inner service's errors pass through unchanged.
#[derive(Debug)]
pub struct RateLimit<S> {
    inner: S,
    settings: Arc<Settings>,
}

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) limiter: RateLimiter,
    pub(crate) headers_on_success: bool,
    pub(crate) render: RenderOptions,
}

// ===== impl RateLimit =====

impl<S> RateLimit<S> {
    pub(crate) fn new(
        inner: S,
        limiter: RateLimiter,
        headers_on_success: bool,
        render: RenderOptions,
    ) -> Self {
        RateLimit {
            inner,
            settings: Arc::new(Settings {
                limiter,
                headers_on_success,
                render,
            }),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone> Clone for RateLimit<S> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<RateLimitBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (dialect, tokens, observe) = match req.extensions().get::<RequestMeta>() {
            Some(meta) if meta.endpoint == Endpoint::CountTokens => (meta.dialect, 0, false),
            Some(meta) => (meta.dialect, meta.est_input_tokens, true),
            None => (Dialect::from_path(req.uri().path()), 0, false),
        };
        let pending = self
            .settings
            .limiter
            .begin(req.extensions().get::<Principal>(), tokens);
        let settings = self.settings.clone();
        match pending {
            Pending::Ready(decision) => {
                ResponseFuture::decided(decision, inner, req, settings, dialect, observe)
            }
            Pending::Later(check) => {
                ResponseFuture::checking(check, inner, req, settings, dialect, observe)
            }
        }
    }
}
