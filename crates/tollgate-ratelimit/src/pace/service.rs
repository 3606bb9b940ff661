use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tollgate_core::{BoxError, RequestMeta};
use tower::Service;

use super::{PaceFuture, Pacer};

/// Paces requests to the configured and learned limits; built by
/// [`PaceLayer`](super::PaceLayer).
///
/// The wait happens in the response future, never in `poll_ready` (which only drives the
/// inner service). A request's input tokens are `RequestMeta::est_input_tokens` when the
/// request carries a [`RequestMeta`], else 0.
///
/// # Errors
///
/// [`PaceError`](super::PaceError) (boxed) when the wait would exceed `max_wait`; the
/// inner service's errors, boxed.
#[derive(Debug)]
pub struct Pace<S> {
    inner: S,
    pacer: Arc<Pacer>,
}

// ===== impl Pace =====

impl<S> Pace<S> {
    pub(crate) fn new(inner: S, pacer: Arc<Pacer>) -> Self {
        Pace { inner, pacer }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone> Clone for Pace<S> {
    fn clone(&self) -> Self {
        Pace {
            inner: self.inner.clone(),
            pacer: self.pacer.clone(),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Pace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = PaceFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let tokens = req
            .extensions()
            .get::<RequestMeta>()
            .map_or(0, |m| m.est_input_tokens);
        PaceFuture::new(inner, req, tokens, self.pacer.clone())
    }
}
