use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue, Request};
use tollgate_core::headers::X_API_KEY;
use tower::Service;

/// The service made by [`SetApiKeyLayer`](super::SetApiKeyLayer). `Debug` does not show
/// the key.
#[derive(Clone, Debug)]
pub struct SetApiKey<S> {
    pub(super) inner: S,
    pub(super) name: HeaderName,
    pub(super) value: HeaderValue,
}

impl<S> SetApiKey<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<B>> for SetApiKey<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let headers = req.headers_mut();
        headers.remove(X_API_KEY);
        headers.remove(AUTHORIZATION);
        headers.insert(self.name.clone(), self.value.clone());
        self.inner.call(req)
    }
}
