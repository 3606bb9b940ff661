use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use tollgate_core::{BoxError, Principal, RequestMeta};
use tollgate_retry::stream::CommitBody;
use tollgate_retry::{Attempts, Deadline};
use tower::Service;

use crate::future::{ResponseFuture, Run};
use crate::layer::Shared;
use crate::{NoSubstitute, X_TOLLGATE_NO_SUBSTITUTE};

/// The service made by [`FallbackLayer`](crate::FallbackLayer).
///
/// A request with a [`RequestMeta`] whose model has routes is sent to them in turn, each
/// attempt marked with a [`TargetRoute`](tollgate_core::TargetRoute) and rebuilt from the
/// request head and `RequestMeta::body`. Other requests pass through untouched.
///
/// # Errors
///
/// The inner service's error, boxed, when no route answered at all and the last failure
/// was a transport error.
#[derive(Clone, Debug)]
pub struct Fallback<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Fallback<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Fallback { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Fallback<S>
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
        let shared = &self.shared;

        let (mut parts, body) = req.into_parts();
        let substitute =
            !opted_out(&parts.headers) && parts.extensions.get::<NoSubstitute>().is_none();
        parts.headers.remove(X_TOLLGATE_NO_SUBSTITUTE);
        let candidates = parts.extensions.get::<RequestMeta>().and_then(|meta| {
            shared.table.plan(
                &meta.model,
                substitute,
                parts.extensions.get::<Principal>(),
                &shared.cooldowns,
                shared.clock.now(),
            )
        });
        let (Some(candidates), Some(meta)) = (
            candidates.filter(|c| !c.is_empty()),
            parts.extensions.get::<RequestMeta>(),
        ) else {
            let fut = inner.call(Request::from_parts(parts, body));
            return ResponseFuture::new(inner, fut, None);
        };
        let (bytes, dialect, model) = (
            meta.body.clone(),
            meta.dialect,
            Arc::from(meta.model.as_str()),
        );
        drop(body);

        let attempts = Attempts::of(&mut parts.extensions);
        if let Some(budget) = &shared.budget {
            attempts.deposit_once(budget);
        }
        let deadline = parts.extensions.get::<Deadline>().map(|d| d.0);
        let mut run = Run::new(
            shared.clone(),
            bytes,
            model,
            dialect,
            candidates,
            attempts,
            deadline,
        );
        let req = run.first_request(parts);
        let fut = inner.call(req);
        ResponseFuture::new(inner, fut, Some(run))
    }
}

/// `x-tollgate-no-substitute: 1` (or `true`).
fn opted_out(headers: &HeaderMap) -> bool {
    headers
        .get(X_TOLLGATE_NO_SUBSTITUTE)
        .is_some_and(|v| v == "1" || v.as_bytes().eq_ignore_ascii_case(b"true"))
}
