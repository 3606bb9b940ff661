use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::runtime::Handle;
use tollgate_core::{Endpoint, ErrorKind, GatewayError, Principal, RequestMeta, new_request_id};
use tower::Service;

use crate::amount::Amount;
use crate::body::BalanceBody;
use crate::future::{InFlight, Pending, Refused, ReserveFuture, ResponseFuture};
use crate::layer::Shared;
use crate::settle::{ChargeContext, Guard};

/// The service made by [`BalanceLayer`](crate::BalanceLayer).
#[derive(Clone, Debug)]
pub struct BalanceService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> BalanceService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        BalanceService { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BalanceService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<BalanceBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let ext = req.extensions();
        let (Some(principal), Some(meta)) = (ext.get::<Principal>(), ext.get::<RequestMeta>())
        else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        if meta.endpoint == Endpoint::CountTokens {
            // Free upstream; nothing to bill.
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        let shared = &self.shared;
        let dialect = meta.dialect;
        let account = principal.account_id.clone();
        let max_output = meta.max_tokens.unwrap_or(shared.default_max_tokens).into();
        let worst =
            match shared
                .prices
                .worst_case(&meta.model, &account, meta.est_input_tokens, max_output)
            {
                Ok(worst) => worst,
                Err(unknown) => {
                    let err = GatewayError::new(shared.unknown_model, unknown.to_string())
                        .with_should_retry(false)
                        .with_openai_code("model_not_found");
                    return ResponseFuture::reject(err.to_response(dialect, &shared.render));
                }
            };
        let Ok(handle) = Handle::try_current() else {
            let err = GatewayError::new(
                ErrorKind::Unavailable,
                "the balance layer runs outside a tokio runtime, so the request cannot be billed",
            );
            return ResponseFuture::reject(err.to_response(dialect, &shared.render));
        };
        let ctx = ChargeContext {
            account,
            key_id: principal.key_id,
            model: meta.model.clone(),
            served_model: None,
            est_input: meta.est_input_tokens,
            max_output,
            dialect,
            http_status: None,
            upstream_request_id: None,
        };
        let expires_at = shared.clock.wall() + shared.ttl;
        let reserve = InFlight::new(
            reserve(shared.clone(), handle.clone(), ctx, worst, expires_at),
            shared.clone(),
            handle,
        );
        // Use the service that was made ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::reserving(
            reserve,
            Pending {
                inner,
                req,
                shared: shared.clone(),
                worst,
            },
        )
    }
}

/// Reserve `worst` for the request and wrap the reservation in its [`Guard`] at once, so
/// that from then on dropping it (wherever it is) releases the reservation. The response
/// future polls this itself; see [`InFlight`] for what happens when it is dropped first.
fn reserve(
    shared: Arc<Shared>,
    handle: Handle,
    ctx: ChargeContext,
    worst: Amount,
    expires_at: std::time::SystemTime,
) -> ReserveFuture {
    Box::pin(async move {
        let request_id = new_request_id();
        let reserved = shared
            .ledger
            .reserve(&ctx.account, &request_id, worst, expires_at)
            .await;
        match reserved {
            Ok(reservation) => Ok(Guard::new(shared, reservation, ctx, handle)),
            Err(error) => Err(Refused { error, ctx }),
        }
    })
}
