use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tollgate_core::headers::{
    X_TOLLGATE_ATTEMPTS, X_TOLLGATE_MODEL, X_TOLLGATE_ROUTE, parse_retry_after,
};
use tollgate_core::{BoxError, Dialect, Domain, ErrorKind, RequestMeta, Served, TargetRoute};
use tollgate_retry::policy::{classify_error, classify_response, classify_stream_failure};
use tollgate_retry::stream::{self, CommitBody, Held, Hold, StreamCommit};
use tollgate_retry::{Attempts, MaxAttempts, X_TOLLGATE_RETRY_COUNT};
use tower::Service;

use crate::layer::Shared;
use crate::plan::Candidate;
use crate::rewrite::replace_model;

pin_project! {
    /// The future of [`Fallback`](crate::Fallback): one attempt per candidate route until
    /// one answers, holding streams to their commit point.
    pub struct ResponseFuture<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S::Future, ResB>,
        service: S,
        run: Option<Run<ResB>>,
        _request: PhantomData<fn(ReqB)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling { #[pin] fut: F },
        Holding { hold: Hold<B> },
        Ready,
        Done,
    }
}

impl<S, ReqB, ResB> ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
{
    pub(crate) fn new(service: S, fut: S::Future, run: Option<Run<ResB>>) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            service,
            run,
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
            let outcome = match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let result = ready!(fut.poll(cx));
                    let Some(run) = this.run.as_mut() else {
                        this.state.set(State::Done);
                        return Poll::Ready(result.map(stream::pass).map_err(Into::into));
                    };
                    run.attempts.settle(run.before);
                    match result {
                        Ok(res) if stream::should_hold(&res) => {
                            let hold = Hold::new(res, run.dialect);
                            this.state.set(State::Holding { hold });
                            continue;
                        }
                        Ok(res) => Ok(stream::pass(res)),
                        Err(e) => Err(e.into()),
                    }
                }
                StateProj::Holding { hold } => match ready!(hold.poll_hold(cx)) {
                    Held::Committed(res) => Ok(res),
                    Held::Failed { response, .. } => Ok(response),
                },
                StateProj::Ready => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    let Some(req) = this.run.as_mut().and_then(Run::next_request) else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("fallback state lost: no request to send".into()));
                    };
                    let fut = this.service.call(req);
                    this.state.set(State::Calling { fut });
                    continue;
                }
                StateProj::Done => panic!("fallback ResponseFuture polled after completion"),
            };
            let Some(run) = this.run.as_mut() else {
                this.state.set(State::Done);
                return Poll::Ready(outcome);
            };
            match run.judge(outcome) {
                Some(answer) => {
                    this.state.set(State::Done);
                    return Poll::Ready(answer);
                }
                None => this.state.set(State::Ready),
            }
        }
    }
}

/// One request's way through its candidates.
pub(crate) struct Run<B> {
    shared: Arc<Shared>,
    /// The request head; the last candidate takes it rather than a copy.
    template: Option<http::request::Parts>,
    body: Bytes,
    requested: Arc<str>,
    dialect: Dialect,
    candidates: Vec<Candidate>,
    /// Bodies rewritten for substitute models.
    rewritten: Vec<(Arc<str>, Bytes)>,
    /// Index of the next candidate to consider.
    next: usize,
    current: Option<Candidate>,
    attempts: Attempts,
    /// The shared attempt count when the current call started.
    before: u32,
    deadline: Option<Instant>,
    /// The last upstream error response, and who sent it.
    last: Option<(Response<CommitBody<B>>, Candidate)>,
    last_error: Option<BoxError>,
}

/// What a candidate's outcome says about its route.
enum RouteVerdict {
    /// An answer for the client (success, or an error about the request itself).
    Answer,
    /// The route failed: rest it and try the next candidate.
    Failed { retry_after: Option<Duration> },
}

impl<B> Run<B> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<Shared>,
        body: Bytes,
        requested: Arc<str>,
        dialect: Dialect,
        candidates: Vec<Candidate>,
        attempts: Attempts,
        deadline: Option<Instant>,
    ) -> Self {
        Run {
            shared,
            template: None,
            body,
            requested,
            dialect,
            candidates,
            rewritten: Vec::new(),
            next: 0,
            current: None,
            attempts,
            before: 0,
            deadline,
            last: None,
            last_error: None,
        }
    }

    /// The request for candidate `self.next` (the first is the requested model itself;
    /// later ones were checked by [`Run::advance`]). The last candidate takes the head
    /// instead of copying it (so a single route costs no copy); `None` after that.
    pub(crate) fn next_request<ReqB: From<Bytes>>(&mut self) -> Option<Request<ReqB>> {
        let parts = if self.next + 1 >= self.candidates.len() {
            self.template.take()?
        } else {
            self.template.clone()?
        };
        Some(self.request(parts))
    }

    /// The first attempt, with the head itself: the run keeps a copy only when other
    /// candidates may follow.
    pub(crate) fn first_request<ReqB: From<Bytes>>(
        &mut self,
        parts: http::request::Parts,
    ) -> Request<ReqB> {
        if self.candidates.len() > 1 {
            self.template = Some(parts.clone());
        }
        self.request(parts)
    }

    /// Candidate `self.next`'s request with this head (`candidates` is never empty).
    fn request<ReqB: From<Bytes>>(&mut self, mut parts: http::request::Parts) -> Request<ReqB> {
        let i = self.next.min(self.candidates.len().saturating_sub(1));
        let candidate = self.candidates[i].clone();
        self.next = i + 1;
        let body = if candidate.model == self.requested {
            self.body.clone()
        } else {
            let body = self
                .body_for(&candidate.model)
                .unwrap_or_else(|| self.body.clone());
            if let Some(meta) = parts.extensions.get_mut::<RequestMeta>() {
                meta.model = candidate.model.to_string();
                meta.body = body.clone();
            }
            if parts.headers.contains_key(http::header::CONTENT_LENGTH) {
                parts
                    .headers
                    .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
            body
        };
        parts
            .extensions
            .insert(TargetRoute(candidate.route.clone()));
        if self.next < self.candidates.len() {
            // Other routes remain: leave this one at its first failure.
            parts.extensions.insert(MaxAttempts(1));
        }
        self.before = self.attempts.get();
        parts
            .headers
            .insert(X_TOLLGATE_RETRY_COUNT, HeaderValue::from(self.before));
        self.current = Some(candidate);
        Request::from_parts(parts, ReqB::from(body))
    }

    /// The body with `model` substituted, rewritten once per model.
    fn body_for(&mut self, model: &Arc<str>) -> Option<Bytes> {
        if let Some((_, body)) = self.rewritten.iter().find(|(m, _)| m == model) {
            return Some(body.clone());
        }
        let body = replace_model(&self.body, model)?;
        self.rewritten.push((model.clone(), body.clone()));
        Some(body)
    }

    /// Move `self.next` to the next candidate that can be sent; `false` if none is left.
    fn advance(&mut self) -> bool {
        while let Some(candidate) = self.candidates.get(self.next).cloned() {
            if candidate.model == self.requested || self.body_for(&candidate.model).is_some() {
                return true;
            }
            self.next += 1;
        }
        false
    }

    /// Decide on a candidate's outcome: `Some` answer for the client, or `None` to try
    /// the next candidate.
    pub(crate) fn judge(
        &mut self,
        outcome: Result<Response<CommitBody<B>>, BoxError>,
    ) -> Option<Result<Response<CommitBody<B>>, BoxError>> {
        let candidate = self.current.take()?;
        let cooldowns = &self.shared.cooldowns;
        match outcome {
            Ok(res) => match route_verdict(&res, self.shared.clock.wall()) {
                RouteVerdict::Answer => {
                    cooldowns.succeed(&candidate.route, &candidate.model);
                    return Some(Ok(self.stamp(res, &candidate)));
                }
                RouteVerdict::Failed { retry_after } => {
                    cooldowns.fail(&candidate.route, &candidate.model, retry_after);
                    self.last = Some((res, candidate));
                }
            },
            Err(e) => {
                if !classify_error(&*e).is_retry() {
                    return Some(Err(e));
                }
                cooldowns.fail(&candidate.route, &candidate.model, None);
                self.last_error = Some(e);
            }
        }
        if self.may_switch() {
            None
        } else {
            Some(self.give_up())
        }
    }

    /// Whether another candidate may be tried: one is left, the deadline allows it, and
    /// the budget pays for it.
    fn may_switch(&mut self) -> bool {
        if !self.advance() {
            return false;
        }
        if self
            .deadline
            .is_some_and(|deadline| self.shared.clock.now() >= deadline)
        {
            return false;
        }
        self.shared.budget.as_ref().is_none_or(|b| b.withdraw())
    }

    /// Every candidate failed: the last upstream error response as it came, else the
    /// last transport error.
    fn give_up(&mut self) -> Result<Response<CommitBody<B>>, BoxError> {
        if let Some((res, candidate)) = self.last.take() {
            return Ok(self.stamp(res, &candidate));
        }
        Err(self
            .last_error
            .take()
            .unwrap_or_else(|| "no upstream route could be tried".into()))
    }

    /// Served-by headers and the [`Served`] extension.
    fn stamp(&self, mut res: Response<CommitBody<B>>, c: &Candidate) -> Response<CommitBody<B>> {
        let attempts = self.attempts.get();
        let headers = res.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&c.route) {
            headers.insert(X_TOLLGATE_ROUTE, v);
        }
        if let Ok(v) = HeaderValue::from_str(&c.model) {
            headers.insert(X_TOLLGATE_MODEL, v);
        }
        headers.insert(X_TOLLGATE_ATTEMPTS, HeaderValue::from(attempts));
        res.extensions_mut().insert(Served {
            route: c.route.clone(),
            model: c.model.clone(),
            attempts,
        });
        res
    }
}

/// A route failed when the outcome is retryable, or about the route's account or
/// traffic (401, 402, 403, 429 — another route has another key); an error about the
/// request itself (400, 404, 413, …) is the answer.
fn route_verdict<B>(res: &Response<B>, now: SystemTime) -> RouteVerdict {
    let about_route = |kind: Option<ErrorKind>| {
        kind.is_some_and(|k| matches!(k.class().domain, Domain::Account | Domain::Traffic))
    };
    if let Some(StreamCommit::FailedBeforeContent { error_type }) = res.extensions().get() {
        let error_type = error_type.as_deref();
        let failed = classify_stream_failure(error_type).is_retry()
            || about_route(error_type.and_then(ErrorKind::from_anthropic_type));
        return if failed {
            RouteVerdict::Failed { retry_after: None }
        } else {
            RouteVerdict::Answer
        };
    }
    let status = res.status();
    if status.as_u16() < 400 {
        return RouteVerdict::Answer;
    }
    if classify_response(status, res.headers(), now).is_retry()
        || about_route(ErrorKind::from_status(status.as_u16()))
    {
        RouteVerdict::Failed {
            retry_after: parse_retry_after(res.headers(), now),
        }
    } else {
        RouteVerdict::Answer
    }
}
