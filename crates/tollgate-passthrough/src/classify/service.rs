use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tollgate_core::BoxError;
use tower::Service;

use super::future::ResponseFuture;
use crate::ClientError;

/// The service built by [`ClassifyLayer`](super::ClassifyLayer).
///
/// Responses with a status below 400 pass through with their body unread (streams stay
/// streams). An error response's body is read (its first MiB) and returned as
/// [`ClientError::Api`]; an inner error caused by a local refusal (a
/// [`GatewayError`](tollgate_core::GatewayError), such as a pacing timeout) becomes the
/// [`ClientError::Api`] it renders, any other inner error [`ClientError::Transport`].
///
/// # Errors
///
/// [`ClientError::Api`] for a status ≥ 400 (unless error responses are passed on),
/// [`ClientError::Api`] for a local refusal by an inner layer,
/// [`ClientError::Transport`] when the inner service fails otherwise.
#[derive(Clone, Debug)]
pub struct Classify<S> {
    inner: S,
    pass_error_responses: bool,
}

// ===== impl Classify =====

impl<S> Classify<S> {
    pub(crate) fn new(inner: S, pass_error_responses: bool) -> Self {
        Classify {
            inner,
            pass_error_responses,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for Classify<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = ClientError;
    type Future = ResponseFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| ClientError::from_boxed(e.into()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(inner.call(req), self.pass_error_responses)
    }
}
