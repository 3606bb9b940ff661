use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use tollgate_core::{BoxError, RequestMeta};
use tower::Service;

use crate::X_STAINLESS_READ_TIMEOUT;
use crate::ext::{Attempts, Deadline, MaxAttempts};
use crate::future::{Replay, ResponseFuture};
use crate::layer::Shared;
use crate::stream::CommitBody;

/// The service made by [`RetryLayer`](crate::RetryLayer).
///
/// Requests carrying a [`RequestMeta`] are replayable: every attempt is rebuilt from the
/// request's head (method, URI, version, headers, extensions) and `RequestMeta::body`.
/// The last attempt allowed (the only one when `max_attempts` is 1) takes the head
/// itself, so a request that cannot be retried is never copied.
/// Requests without one are sent once, untouched.
///
/// # Errors
///
/// The inner service's error, boxed (its concrete type stays reachable with
/// `downcast_ref`), when the last attempt failed without a response.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Retry<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Retry { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Retry<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ReqB: From<Bytes>,
    ResB: Body<Data = Bytes>,
{
    type Response = Response<CommitBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqB, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // Use the service that was made ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();

        let (mut parts, body) = req.into_parts();
        let Some(meta) = parts.extensions.get::<RequestMeta>() else {
            let fut = inner.call(Request::from_parts(parts, body));
            return ResponseFuture::new(inner, fut, None, shared);
        };
        let (bytes, dialect) = (meta.body.clone(), meta.dialect);
        drop(body);

        let attempts = Attempts::of(&mut parts.extensions);
        attempts.deposit_once(&shared.budget);
        let config = &shared.config;
        let max = parts
            .extensions
            .get::<MaxAttempts>()
            .map_or(config.max_attempts, |m| m.0.min(config.max_attempts))
            .max(1);
        let now = shared.clock.now();
        let deadline = [
            config.deadline().and_then(|d| now.checked_add(d)),
            parts.extensions.get::<Deadline>().map(|d| d.0),
            read_timeout(&parts.headers).and_then(|d| now.checked_add(d)),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(deadline) = deadline {
            parts.extensions.insert(Deadline(deadline));
        }

        let (replay, req) = Replay::start(parts, bytes, dialect, attempts, max, deadline);
        let fut = inner.call(req);
        ResponseFuture::new(inner, fut, Some(replay), shared)
    }
}

/// The client's own read timeout (`x-stainless-read-timeout`, seconds), past which a
/// retry would answer nobody.
fn read_timeout(headers: &HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(X_STAINLESS_READ_TIMEOUT)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs > 0.0 && secs < 1e9).then(|| Duration::from_secs_f64(secs))
}
