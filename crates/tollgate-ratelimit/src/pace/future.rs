use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tollgate_core::BoxError;
use tower::Service;

use super::{PaceError, Pacer};

pin_project! {
    /// Response future of [`Pace`](super::Pace): waits for capacity, calls, learns.
    pub struct PaceFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        pacer: Arc<Pacer>,
        tokens: u64,
        arrived: Instant,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Start { pending: Option<(S, Request<ReqBody>)> },
        Waiting { #[pin] sleep: Sleep, pending: Option<(S, Request<ReqBody>)> },
        Calling { #[pin] fut: S::Future },
    }
}

impl<S, ReqBody> PaceFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(super) fn new(inner: S, req: Request<ReqBody>, tokens: u64, pacer: Arc<Pacer>) -> Self {
        PaceFuture {
            state: State::Start {
                pending: Some((inner, req)),
            },
            pacer,
            tokens,
            arrived: Instant::now(),
        }
    }
}

impl<S, ReqBody, ResBody> Future for PaceFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let pending = match this.state.as_mut().project() {
                StateProj::Start { pending } => pending.take(),
                StateProj::Waiting { sleep, pending } => {
                    ready!(sleep.poll(cx));
                    pending.take()
                }
                StateProj::Calling { fut } => {
                    let res = ready!(fut.poll(cx)).map_err(Into::into)?;
                    this.pacer.learn(res.status(), res.headers());
                    return Poll::Ready(Ok(res));
                }
            };
            let (mut inner, req) = pending.expect("PaceFuture polled after completion");
            match this.pacer.try_acquire(*this.tokens) {
                Ok(()) => this.state.set(State::Calling {
                    fut: inner.call(req),
                }),
                Err((dimension, wait)) => {
                    let now = Instant::now();
                    let total = wait.map(|w| now.saturating_duration_since(*this.arrived) + w);
                    if total.is_none_or(|t| t > this.pacer.max_wait) {
                        let err = PaceError::new(dimension, total, this.pacer.max_wait);
                        return Poll::Ready(Err(err.into()));
                    }
                    let until = now + wait.unwrap_or_default();
                    this.state.set(State::Waiting {
                        sleep: tokio::time::sleep_until(until),
                        pending: Some((inner, req)),
                    });
                }
            }
        }
    }
}
