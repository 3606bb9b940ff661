use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt::Display;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::response::Parts;
use http::{HeaderName, Request, Response};
use http_body::Body;
use tollgate_core::headers::{
    REQUEST_ID, X_REQUEST_ID, X_SHOULD_RETRY, X_TOLLGATE_ORIGIN, strip_hop_by_hop,
};
use tollgate_core::{
    BoxError, Dialect, ErrorKind, GatewayError, Origin, RenderOptions, TransportErrorKind,
    UpstreamError,
};
use tower::Service;

use super::future::ResponseFuture;
use super::layer::{NonJsonErrors, Settings};
use crate::ClientError;
use crate::body::Collected;
use crate::describe::{error_chain, is_json, non_envelope, request_id};

/// `anthropic-organization-id`: the upstream account's organization.
const ORGANIZATION_ID: HeaderName = HeaderName::from_static("anthropic-organization-id");
/// `anthropic-workspace-id`: the workspace the upstream key resolved to.
const WORKSPACE_ID: HeaderName = HeaderName::from_static("anthropic-workspace-id");

/// Most bytes of a non-JSON upstream error body read to describe it.
pub(crate) const NON_JSON_LIMIT: usize = 64 * 1024;

/// The service built by [`PassthroughLayer`](super::PassthroughLayer).
///
/// For each response of the inner service:
///
/// - **Gateway errors** (a response with [`Origin::Gateway`] and a [`GatewayError`] in its
///   extensions) are rendered again with this layer's [`RenderOptions`] and the request's
///   dialect, keeping their request id and every header the rejecting layer added. When
///   neither would change the bytes, the response is left as it is.
/// - **Upstream responses** (everything else) get `x-tollgate-origin: upstream` and
///   [`Origin::Upstream`], lose hop-by-hop headers and, by default, the upstream account's
///   `anthropic-organization-id` / `anthropic-workspace-id`. Status, body and every other
///   header pass untouched; the body is never read, except for an error whose body is not
///   JSON, which is wrapped into an envelope (see [`NonJsonErrors`]), and a small 429
///   without `x-should-retry`, read to add `x-should-retry: false` when it is the monthly
///   spend cap (the bytes stay the same).
/// - **Transport failures** (`Err` from the inner service, or from its `poll_ready`)
///   become a 502 `api_error`, or 504 `timeout_error` for a timeout, with
///   `x-should-retry: true`.
///
/// The dialect is `Dialect::from_path` of the request path: OpenAI for
/// `…/chat/completions`, Anthropic otherwise.
///
/// # Errors
///
/// None: `Error` is [`Infallible`], so the service can sit under axum's `Router::layer`.
#[derive(Debug)]
pub struct Passthrough<S> {
    inner: S,
    settings: Arc<Settings>,
    /// A readiness failure of `inner`, answered by the next `call`.
    ready_error: Option<BoxError>,
}

// ===== impl Passthrough =====

impl<S> Passthrough<S> {
    pub(crate) fn new(inner: S, settings: Arc<Settings>) -> Self {
        Passthrough {
            inner,
            settings,
            ready_error: None,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Passthrough<S> {
    fn clone(&self) -> Self {
        Passthrough::new(self.inner.clone(), self.settings.clone())
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Passthrough<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + From<Bytes>,
    ResB::Error: Display,
{
    type Response = Response<ResB>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.ready_error.is_none() {
            if let Err(e) = ready!(self.inner.poll_ready(cx)) {
                // No error type to return it in: the next call answers it as a response.
                self.ready_error = Some(e.into());
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let dialect = Dialect::from_path(req.uri().path());
        if let Some(err) = self.ready_error.take() {
            let res = transport_failure(err, dialect, &self.settings);
            return ResponseFuture::ready(res, self.settings.clone());
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(inner.call(req), dialect, self.settings.clone())
    }
}

// ===== response handling =====

/// What the response future does next with an inner response.
pub(super) enum Next<B> {
    /// Answer this.
    Respond(Response<B>),
    /// A non-JSON upstream error to wrap once its body is read.
    Wrap(Parts, B),
    /// A small JSON 429 without `x-should-retry`: read it to see whether it is the
    /// monthly spend cap, which must not be retried.
    Inspect(Parts, B),
}

/// Sort an inner response into gateway and upstream, and treat it accordingly.
pub(super) fn on_response<B: From<Bytes>>(
    mut res: Response<B>,
    dialect: Dialect,
    settings: &Settings,
) -> Next<B> {
    if res.extensions().get::<Origin>() == Some(&Origin::Gateway) {
        return Next::Respond(rerender(res, dialect, settings));
    }
    let headers = res.headers_mut();
    strip_hop_by_hop(headers);
    if settings.strip_identity {
        headers.remove(ORGANIZATION_ID);
        headers.remove(WORKSPACE_ID);
    }
    headers.insert(X_TOLLGATE_ORIGIN, Origin::Upstream.header_value());
    res.extensions_mut().insert(Origin::Upstream);
    if settings.non_json == NonJsonErrors::Wrap
        && res.status().as_u16() >= 400
        && !is_json(res.headers())
    {
        let (parts, body) = res.into_parts();
        return Next::Wrap(parts, body);
    }
    if res.status().as_u16() == 429 && !res.headers().contains_key(X_SHOULD_RETRY) {
        let small = res
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|len| len <= INSPECT_LIMIT);
        if small {
            let (parts, body) = res.into_parts();
            return Next::Inspect(parts, body);
        }
    }
    Next::Respond(res)
}

/// Largest 429 body read to look for the spend-cap code (only bodies that declare their
/// length up to this are read; real ones are a few hundred bytes).
pub(super) const INSPECT_LIMIT: usize = 16 * 1024;

/// The body of a 429 read in full: relay the same bytes, adding `x-should-retry: false`
/// when it is the monthly spend cap (`enforced_spend_limit_reached`). The API sends that
/// 429 without `retry-after` and resumes only at the start of next month; without the
/// header every SDK would retry it twice for nothing.
pub(super) fn mark_spend_cap<B: From<Bytes>>(mut parts: Parts, body: Collected) -> Response<B> {
    let parsed = UpstreamError::parse(body.bytes);
    if parsed.error_code.as_deref() == Some("enforced_spend_limit_reached") {
        parts
            .headers
            .insert(X_SHOULD_RETRY, http::HeaderValue::from_static("false"));
    }
    Response::from_parts(parts, B::from(parsed.raw))
}

/// Render a gateway error again with these options in this dialect, when that changes it.
///
/// Layers render with default options, and their dialect shows in the request id header
/// (`request-id` for Anthropic, `x-request-id` for OpenAI).
fn rerender<B: From<Bytes>>(
    res: Response<B>,
    dialect: Dialect,
    settings: &Settings,
) -> Response<B> {
    let Some(err) = res.extensions().get::<GatewayError>() else {
        return res;
    };
    let headers = res.headers();
    let rendered_in = if headers.contains_key(X_REQUEST_ID) && !headers.contains_key(REQUEST_ID) {
        Dialect::OpenAi
    } else {
        Dialect::Anthropic
    };
    if rendered_in == dialect && settings.render == RenderOptions::default() {
        return res;
    }
    let mut err = err.clone();
    if let Some(id) = request_id(headers) {
        err = err.with_request_id(id);
    }
    let (fresh, body) = err.to_response::<B>(dialect, &settings.render).into_parts();
    let (mut parts, _old_body) = res.into_parts();
    parts.status = fresh.status;
    for name in [CONTENT_LENGTH, REQUEST_ID, X_REQUEST_ID] {
        parts.headers.remove(name);
    }
    for (name, value) in &fresh.headers {
        parts.headers.insert(name, value.clone());
    }
    parts.extensions.extend(fresh.extensions);
    Response::from_parts(parts, body)
}

/// Wrap a non-JSON upstream error into an envelope in `dialect`, keeping the upstream's
/// status and headers; the response stays marked as the upstream's.
pub(super) fn wrap_non_json<B: From<Bytes>>(
    mut parts: Parts,
    body: Collected,
    dialect: Dialect,
) -> Response<B> {
    let complete = !body.truncated && body.error.is_none();
    if complete && UpstreamError::parse(body.bytes.clone()).dialect.is_some() {
        // An envelope under the wrong content type: already what a client can read.
        return Response::from_parts(parts, B::from(body.bytes));
    }
    let status = parts.status;
    let kind = ErrorKind::from_status(status.as_u16()).unwrap_or(ErrorKind::Api);
    let description = non_envelope("upstream", status, &parts.headers, &body);
    tracing::debug!(status = status.as_u16(), %description, "wrapping a non-JSON upstream error");
    let mut err = GatewayError::new(kind, format!("{description} — {}", kind.class().hint));
    if let Some(id) = request_id(&parts.headers) {
        err = err.with_request_id(id);
    }
    // The upstream's error, not the gateway's: no `gateway_` prefix.
    let (fresh, json) = err
        .to_response::<B>(dialect, &RenderOptions::default())
        .into_parts();
    for name in [CONTENT_LENGTH, CONTENT_ENCODING, CONTENT_TYPE] {
        parts.headers.remove(name);
    }
    for (name, value) in &fresh.headers {
        if name != X_TOLLGATE_ORIGIN && !parts.headers.contains_key(name) {
            parts.headers.insert(name, value.clone());
        }
    }
    Response::from_parts(parts, json)
}

/// Answer a transport failure: 502 `api_error` (504 `timeout_error` for a timeout),
/// retryable, with a message that says what happened and what to do.
pub(super) fn transport_failure<B: From<Bytes>>(
    err: BoxError,
    dialect: Dialect,
    settings: &Settings,
) -> Response<B> {
    let (kind, root): (TransportErrorKind, &(dyn StdError + 'static)) =
        match err.downcast_ref::<ClientError>() {
            Some(ClientError::Transport(t)) => (t.kind(), t),
            _ => (TransportErrorKind::of(&*err), &*err),
        };
    let detail = error_chain(root);
    let message = match kind {
        TransportErrorKind::Connect => format!(
            "could not connect to the upstream ({detail}); retry shortly — if it persists the gateway's upstream is down"
        ),
        TransportErrorKind::Timeout => format!(
            "the upstream did not answer in time ({detail}); retry, and use streaming for long generations"
        ),
        TransportErrorKind::Reset => format!(
            "the upstream connection broke before a response arrived ({detail}); retry shortly — if it keeps happening the network to the upstream is unstable"
        ),
        TransportErrorKind::Other => format!(
            "the request to the upstream failed ({detail}); retry shortly — if it persists tell the gateway's operator"
        ),
    };
    let error_kind = kind.error_kind();
    tracing::warn!(
        transport = ?kind,
        status = error_kind.status(dialect).as_u16(),
        error = %detail,
        "upstream transport failure",
    );
    GatewayError::new(error_kind, message)
        .with_should_retry(true)
        .to_response(dialect, &settings.render)
}
