use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower::Service;

use super::future::ResponseFuture;
use super::{Shared, dialect_of, unauthorized};
use crate::KeyLookup;
use crate::cache::Cached;
use crate::check;
use crate::key::KeyHash;

/// The service made by [`KeyAuthLayer`](super::KeyAuthLayer).
pub struct KeyAuth<S, K> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared<K>>,
}

impl<S, K> KeyAuth<S, K> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, K> Clone for KeyAuth<S, K> {
    fn clone(&self) -> Self {
        KeyAuth {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for KeyAuth<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAuth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for KeyAuth<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    K: KeyLookup + 'static,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, K, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let dialect = dialect_of(&req);
        let hash = match check::extract(req.headers(), self.shared.config.key_format) {
            Ok(key) => KeyHash::of(key),
            Err(message) => {
                return ResponseFuture::reject(self.shared.render(&unauthorized(message), dialect));
            }
        };
        let now = self.shared.config.clock.now();
        let key = match self.shared.cache.get(&hash, now) {
            Some(Cached::Found(key)) => Some(key),
            Some(Cached::Missing) => None,
            None => {
                // Use the service that was made ready; leave a fresh clone in its place.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                return ResponseFuture::lookup(self.shared.clone(), hash, now, req, inner, dialect);
            }
        };
        match self.shared.admit(key.as_deref(), &mut req) {
            Ok(()) => ResponseFuture::call(self.inner.call(req)),
            Err(err) => ResponseFuture::reject(self.shared.render(&err, dialect)),
        }
    }
}
