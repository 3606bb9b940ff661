use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tollgate_core::headers::X_TOLLGATE_ATTEMPTS;
use tollgate_core::{BoxError, Dialect, Served};
use tower::Service;

use crate::X_TOLLGATE_RETRY_COUNT;
use crate::backoff::server_directed;
use crate::ext::Attempts;
use crate::layer::Shared;
use crate::policy::{Verdict, classify_error, classify_response, classify_stream_failure};
use crate::stream::{self, CommitBody, Held, Hold, StreamCommit};

pin_project! {
    /// The future of [`Retry`](crate::Retry): attempts, holds streams to their commit
    /// point, waits, and attempts again until an answer is final.
    pub struct ResponseFuture<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S::Future, ResB>,
        service: S,
        replay: Option<Replay>,
        shared: Arc<Shared>,
        _request: PhantomData<fn(ReqB)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling { #[pin] fut: F },
        Holding { hold: Hold<B> },
        Waiting { #[pin] sleep: Sleep },
        Ready,
        Done,
    }
}

/// Everything needed to send the request again.
#[derive(Debug)]
pub(crate) struct Replay {
    /// The request head; taken (not cloned) by the last attempt allowed.
    parts: Option<http::request::Parts>,
    body: Bytes,
    dialect: Dialect,
    attempts: Attempts,
    /// Calls this layer has made.
    made: u32,
    max: u32,
    deadline: Option<Instant>,
    /// The shared attempt count when the current call started.
    before: u32,
}

impl Replay {
    /// The replay state and the first attempt. With a single attempt allowed, the head
    /// is moved into it rather than copied.
    pub(crate) fn start<B: From<Bytes>>(
        parts: http::request::Parts,
        body: Bytes,
        dialect: Dialect,
        attempts: Attempts,
        max: u32,
        deadline: Option<Instant>,
    ) -> (Self, Request<B>) {
        let mut replay = Replay {
            parts: None,
            body,
            dialect,
            attempts,
            made: 0,
            max,
            deadline,
            before: 0,
        };
        let first = if max > 1 {
            replay.parts = Some(parts.clone());
            parts
        } else {
            parts
        };
        let req = replay.request(first);
        (replay, req)
    }

    /// The next attempt: the same head and bytes. The last attempt allowed takes the
    /// head instead of copying it; `None` once it has.
    pub(crate) fn next_request<B: From<Bytes>>(&mut self) -> Option<Request<B>> {
        let parts = if self.made + 1 >= self.max {
            self.parts.take()?
        } else {
            self.parts.clone()?
        };
        Some(self.request(parts))
    }

    /// An attempt with this head: `x-tollgate-retry-count` set, the bytes as the body.
    fn request<B: From<Bytes>>(&mut self, mut parts: http::request::Parts) -> Request<B> {
        self.before = self.attempts.get();
        self.made += 1;
        parts
            .headers
            .insert(X_TOLLGATE_RETRY_COUNT, HeaderValue::from(self.before));
        Request::from_parts(parts, B::from(self.body.clone()))
    }

    /// How long to wait before another attempt, or `None` if the outcome is final.
    fn wait_before_retry(&self, verdict: Verdict, shared: &Shared) -> Option<Duration> {
        let Verdict::Retry { after } = verdict else {
            return None;
        };
        if self.made >= self.max {
            return None;
        }
        let wait = match after {
            Some(after) if after > shared.config.max_retry_after() => return None,
            Some(after) => server_directed(after),
            None => shared.backoff.delay(self.made.saturating_sub(1)),
        };
        if let Some(deadline) = self.deadline {
            if shared.clock.now() + wait >= deadline {
                return None;
            }
        }
        shared.budget.withdraw().then_some(wait)
    }
}

impl<S, ReqB, ResB> ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
{
    pub(crate) fn new(
        service: S,
        fut: S::Future,
        replay: Option<Replay>,
        shared: Arc<Shared>,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            service,
            replay,
            shared,
            _request: PhantomData,
        }
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ReqB: From<Bytes>,
    ResB: Body<Data = Bytes>,
{
    type Output = Result<Response<CommitBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let (verdict, outcome) = match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let result = ready!(fut.poll(cx));
                    let Some(replay) = this.replay.as_mut() else {
                        this.state.set(State::Done);
                        return Poll::Ready(result.map(stream::pass).map_err(Into::into));
                    };
                    replay.attempts.settle(replay.before);
                    match result {
                        Ok(res) if stream::should_hold(&res) => {
                            let hold = Hold::new(res, replay.dialect);
                            this.state.set(State::Holding { hold });
                            continue;
                        }
                        Ok(res) => {
                            let verdict = match res.extensions().get::<StreamCommit>() {
                                Some(StreamCommit::FailedBeforeContent { error_type }) => {
                                    classify_stream_failure(error_type.as_deref())
                                }
                                _ => classify_response(
                                    res.status(),
                                    res.headers(),
                                    this.shared.clock.wall(),
                                ),
                            };
                            (verdict, Ok(stream::pass(res)))
                        }
                        Err(e) => {
                            let e: BoxError = e.into();
                            (classify_error(&*e), Err(e))
                        }
                    }
                }
                StateProj::Holding { hold } => match ready!(hold.poll_hold(cx)) {
                    Held::Committed(res) => (Verdict::Success, Ok(res)),
                    Held::Failed {
                        response,
                        error_type,
                    } => (classify_stream_failure(error_type.as_deref()), Ok(response)),
                },
                StateProj::Waiting { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Ready);
                    continue;
                }
                StateProj::Ready => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    let Some(req) = this.replay.as_mut().and_then(Replay::next_request) else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("retry state lost: no request to replay".into()));
                    };
                    let fut = this.service.call(req);
                    this.state.set(State::Calling { fut });
                    continue;
                }
                StateProj::Done => panic!("retry ResponseFuture polled after completion"),
            };

            let Some(replay) = this.replay.as_ref() else {
                this.state.set(State::Done);
                return Poll::Ready(outcome);
            };
            match replay.wait_before_retry(verdict, this.shared) {
                Some(wait) => {
                    drop(outcome);
                    if wait.is_zero() {
                        // The timer wheel would round a zero wait up to its next tick.
                        this.state.set(State::Ready);
                    } else {
                        this.state.set(State::Waiting {
                            sleep: tokio::time::sleep(wait),
                        });
                    }
                }
                None => {
                    this.state.set(State::Done);
                    return Poll::Ready(outcome.map(|res| stamp(res, &replay.attempts)));
                }
            }
        }
    }
}

/// Record the attempts made on the final response.
fn stamp<B>(mut res: Response<B>, attempts: &Attempts) -> Response<B> {
    let n = attempts.get();
    res.headers_mut()
        .insert(X_TOLLGATE_ATTEMPTS, HeaderValue::from(n));
    if let Some(served) = res.extensions_mut().get_mut::<Served>() {
        served.attempts = n;
    }
    res
}
