use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tollgate_core::usage::{BodyFormat, observe_response};
use tollgate_core::{ErrorKind, GatewayError, Served, Usage, headers};
use tower::Service;

use crate::amount::Amount;
use crate::body::{BalanceBody, Reporter};
use crate::layer::Shared;
use crate::ledger::{LedgerEntry, ReserveError};
use crate::settle::{ChargeContext, Guard, spawn_tracked};

/// `x-tollgate-cost`: micro-units charged, on responses settled before their head went out.
pub const X_TOLLGATE_COST: HeaderName = HeaderName::from_static("x-tollgate-cost");

pub(crate) type ReserveResult = Result<Guard, Refused>;

/// The reserve, from the ledger call to the [`Guard`] around its reservation.
pub(crate) type ReserveFuture = Pin<Box<dyn Future<Output = ReserveResult> + Send>>;

/// A reserve the ledger refused (or failed), with the request's facts for the answer.
pub(crate) struct Refused {
    pub(crate) error: ReserveError,
    pub(crate) ctx: ChargeContext,
}

/// What the future needs once the reservation is decided.
pub(crate) struct Pending<S, ReqBody> {
    pub(crate) inner: S,
    pub(crate) req: Request<ReqBody>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) worst: Amount,
}

/// The reserve under way, polled by the response future itself: no task, no channel, and a
/// ledger that answers at once (memory) costs one poll. If the response future is dropped
/// while the reserve is started but unfinished, the rest of it runs in a spawned task
/// (counted by [`BalanceLayer::idle`](crate::BalanceLayer::idle)) and the guard it ends
/// with is dropped there, which releases the reservation: a cancelled request never
/// leaves one behind.
pub(crate) struct InFlight {
    fut: Option<ReserveFuture>,
    started: bool,
    shared: Arc<Shared>,
    handle: Handle,
}

impl InFlight {
    pub(crate) fn new(fut: ReserveFuture, shared: Arc<Shared>, handle: Handle) -> InFlight {
        InFlight {
            fut: Some(fut),
            started: false,
            shared,
            handle,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ReserveResult> {
        let fut = self
            .fut
            .as_mut()
            .expect("ResponseFuture polled after completion");
        self.started = true;
        let result = ready!(fut.as_mut().poll(cx));
        self.fut = None;
        Poll::Ready(result)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            if self.started {
                spawn_tracked(&self.shared, &self.handle, async move {
                    drop(fut.await);
                });
            }
        }
    }
}

pin_project! {
    /// Response future of [`BalanceService`](crate::BalanceService): waits for the
    /// reservation, calls the inner service, and hands the reservation to the response
    /// body (or releases it).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Passthrough {
            #[pin]
            fut: S::Future,
        },
        Rejected {
            res: Option<Response<Bytes>>,
        },
        Reserving {
            reserve: InFlight,
            pending: Option<Pending<S, ReqBody>>,
        },
        Calling {
            #[pin]
            fut: S::Future,
            guard: Option<Guard>,
        },
        Settling {
            rx: oneshot::Receiver<LedgerEntry>,
            res: Option<S::Response>,
        },
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn passthrough(fut: S::Future) -> Self {
        ResponseFuture {
            state: State::Passthrough { fut },
        }
    }

    pub(crate) fn reject(res: Response<Bytes>) -> Self {
        ResponseFuture {
            state: State::Rejected { res: Some(res) },
        }
    }

    pub(crate) fn reserving(reserve: InFlight, pending: Pending<S, ReqBody>) -> Self {
        ResponseFuture {
            state: State::Reserving {
                reserve,
                pending: Some(pending),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<BalanceBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Passthrough { fut } => {
                    return fut.poll(cx).map_ok(|res| res.map(BalanceBody::plain));
                }
                StateProj::Rejected { res } => {
                    let res = res.take().expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(res.map(BalanceBody::full)));
                }
                StateProj::Reserving { reserve, pending } => {
                    let result = ready!(reserve.poll(cx));
                    let mut p = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    match result {
                        Ok(guard) => State::Calling {
                            fut: p.inner.call(p.req),
                            guard: Some(guard),
                        },
                        Err(refused) => State::Rejected {
                            res: Some(refusal(&p.shared, &refused.ctx, p.worst, refused.error)),
                        },
                    }
                }
                StateProj::Calling { fut, guard } => match ready!(fut.poll(cx)) {
                    Ok(res) => {
                        let guard = guard
                            .take()
                            .expect("ResponseFuture polled after completion");
                        match respond(guard, res) {
                            Responded::Now(res) => return Poll::Ready(Ok(res)),
                            Responded::AfterSettle(rx, res) => {
                                State::Settling { rx, res: Some(res) }
                            }
                        }
                    }
                    Err(e) => {
                        if let Some(guard) = guard.take() {
                            guard.release("the upstream call failed".into());
                        }
                        return Poll::Ready(Err(e));
                    }
                },
                StateProj::Settling { rx, res } => {
                    let entry = ready!(Pin::new(rx).poll(cx)).ok();
                    let mut res = res.take().expect("ResponseFuture polled after completion");
                    if let Some(entry) = entry {
                        res.headers_mut()
                            .insert(X_TOLLGATE_COST, HeaderValue::from(entry.cost().micros()));
                    }
                    return Poll::Ready(Ok(res.map(BalanceBody::plain)));
                }
            };
            this.state.set(next);
        }
    }
}

enum Responded<B> {
    Now(Response<BalanceBody<B>>),
    AfterSettle(oneshot::Receiver<LedgerEntry>, Response<B>),
}

/// Hand the reservation to the response: release it for an error status, settle it now
/// when the usage is already known, else let the body settle it when it ends.
fn respond<B>(mut guard: Guard, res: Response<B>) -> Responded<B> {
    let status = res.status();
    let ctx = &mut guard.ctx;
    ctx.http_status = Some(status.as_u16());
    ctx.upstream_request_id = [headers::REQUEST_ID, headers::X_REQUEST_ID]
        .iter()
        .find_map(|name| res.headers().get(name))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    ctx.served_model = res.extensions().get::<Served>().map(|s| s.model.clone());
    if status.is_client_error() || status.is_server_error() {
        guard.release(format!("HTTP {} without usage", status.as_u16()));
        return Responded::Now(res.map(BalanceBody::plain));
    }
    let format = BodyFormat::from_headers(res.headers(), ctx.dialect);
    if let (false, Some(usage)) = (
        matches!(format, BodyFormat::Sse(_)),
        res.extensions().get::<Usage>().copied(),
    ) {
        return Responded::AfterSettle(guard.settle_now(usage), res);
    }
    let reporter: Reporter = Box::new(move |report| guard.finish(report));
    Responded::Now(observe_response(res, format, reporter))
}

fn refusal(
    shared: &Shared,
    ctx: &ChargeContext,
    worst: Amount,
    refused: ReserveError,
) -> Response<Bytes> {
    let (available, currency) = match refused {
        ReserveError::Insufficient {
            available,
            currency,
            ..
        } => (available, currency),
        ReserveError::UnknownAccount(_) => (Amount::ZERO, "USD".to_string()),
        other => {
            tracing::error!(account = %ctx.account, error = %other, "balance reserve failed");
            return unavailable(shared, ctx, "the balance ledger failed");
        }
    };
    let message = format!(
        "insufficient balance: this request may cost up to {}, available {}; top up or lower max_tokens",
        worst.display_in(&currency),
        available.display_in(&currency)
    );
    GatewayError::new(shared.insufficient, message)
        .with_should_retry(false)
        .to_response(ctx.dialect, &shared.render)
}

fn unavailable(shared: &Shared, ctx: &ChargeContext, what: &str) -> Response<Bytes> {
    GatewayError::new(
        ErrorKind::Unavailable,
        format!("{what}, so the request cannot be billed and was not sent; retry shortly"),
    )
    .with_should_retry(true)
    .to_response(ctx.dialect, &shared.render)
}
