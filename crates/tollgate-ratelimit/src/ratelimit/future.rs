use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tollgate_core::Dialect;
use tollgate_core::usage::{BodyFormat, UsageReport, observe_response};
use tower::Service;

use super::body::{OnUsage, RateLimitBody};
use super::service::Settings;
use crate::limiter::{Admission, Decision, Refusal, Unavailable};

type Check = Pin<Box<dyn Future<Output = Decision> + Send + 'static>>;

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        settings: Arc<Settings>,
        dialect: Dialect,
        observe: bool,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // Waiting for a backend round trip, holding the ready service and the request.
        Checking { check: Check, pending: Option<(S, Request<ReqBody>)> },
        Calling { #[pin] fut: S::Future, admission: Option<Admission> },
        Rejected { rejection: Option<Rejection> },
    }
}

enum Rejection {
    Refused(Refusal),
    Unavailable(Unavailable),
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(super) fn decided(
        decision: Decision,
        inner: S,
        req: Request<ReqBody>,
        settings: Arc<Settings>,
        dialect: Dialect,
        observe: bool,
    ) -> Self {
        ResponseFuture {
            state: State::after(decision, inner, req),
            settings,
            dialect,
            observe,
        }
    }

    pub(super) fn checking(
        check: Check,
        inner: S,
        req: Request<ReqBody>,
        settings: Arc<Settings>,
        dialect: Dialect,
        observe: bool,
    ) -> Self {
        ResponseFuture {
            state: State::Checking {
                check,
                pending: Some((inner, req)),
            },
            settings,
            dialect,
            observe,
        }
    }
}

impl<S, ReqBody> State<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn after(decision: Decision, mut inner: S, req: Request<ReqBody>) -> Self {
        match decision {
            Decision::Admitted(admission) => State::Calling {
                fut: inner.call(req),
                admission: Some(admission),
            },
            Decision::Refused(r) => State::Rejected {
                rejection: Some(Rejection::Refused(r)),
            },
            Decision::Unavailable(u) => State::Rejected {
                rejection: Some(Rejection::Unavailable(u)),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Output = Result<Response<RateLimitBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check, pending } => {
                    let decision = ready!(check.as_mut().poll(cx));
                    let (inner, req) = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    this.state.set(State::after(decision, inner, req));
                }
                StateProj::Calling { fut, admission } => {
                    let res = ready!(fut.poll(cx))?;
                    let admission = admission
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(admitted(
                        res,
                        admission,
                        this.settings,
                        *this.dialect,
                        *this.observe,
                    )));
                }
                StateProj::Rejected { rejection } => {
                    let render = &this.settings.render;
                    let res = match rejection
                        .take()
                        .expect("ResponseFuture polled after completion")
                    {
                        Rejection::Refused(r) => r.to_response(*this.dialect, render),
                        Rejection::Unavailable(u) => u.to_response(*this.dialect, render),
                    };
                    return Poll::Ready(Ok(res));
                }
            }
        }
    }
}

/// Headers and output charging for an admitted request's response.
fn admitted<B: Body<Data = Bytes>>(
    res: Response<B>,
    admission: Admission,
    settings: &Settings,
    dialect: Dialect,
    observe: bool,
) -> Response<RateLimitBody<B>> {
    let (mut parts, body) = res.into_parts();
    if !parts.status.is_success() {
        return Response::from_parts(parts, RateLimitBody::plain(body));
    }
    if settings.headers_on_success {
        admission.write_headers(&mut parts.headers);
    }
    if !(observe && admission.settles_usage()) {
        return Response::from_parts(parts, RateLimitBody::plain(body));
    }
    let format = BodyFormat::from_headers(&parts.headers, dialect);
    let on_done: OnUsage = Box::new(move |report: UsageReport| {
        admission.settle(input_tokens(&report), output_tokens(&report));
    });
    observe_response(Response::from_parts(parts, body), format, on_done)
}

/// Input tokens that count against input tokens per minute, as the API counts them:
/// uncached input plus cache writes (cache reads do not count). `None` when the response
/// reported no usage: the admission's estimate stands.
pub(crate) fn input_tokens(report: &UsageReport) -> Option<u64> {
    report
        .usage_seen
        .then(|| report.usage.input.saturating_add(report.usage.cache_write))
}

/// Output tokens to charge: the final count, or for a stream cut short at least one per
/// content delta relayed (each carries at least one token).
pub(crate) fn output_tokens(report: &UsageReport) -> u64 {
    if report.output_final {
        report.usage.output
    } else {
        report.usage.output.max(report.delta_events)
    }
}
