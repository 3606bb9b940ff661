use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::response::Parts;
use http::{HeaderMap, StatusCode};
use tollgate_core::error::ERROR_TABLE;
use tollgate_core::headers::{X_SHOULD_RETRY, X_TOLLGATE_ORIGIN, parse_retry_after};
use tollgate_core::{
    BoxError, Dialect, Domain, ErrorKind, GatewayError, Origin, RenderOptions, TransportError,
    UpstreamError,
};

use crate::body::Collected;
use crate::describe::{non_envelope, request_id};

/// An error response from the API (or from a Tollgate gateway in front of it), read and
/// classified so that callers branch on fields instead of parsing bodies.
///
/// Built by [`Classify`](super::Classify) from any status ≥ 400. `kind` comes from the
/// [error table](tollgate_core::error::ERROR_TABLE), so it agrees with what a gateway
/// would have rendered; `raw` keeps the body as received (its first MiB).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiError {
    /// HTTP status as received.
    pub status: StatusCode,
    /// The error table's row: from `error.type` when it names one, else from the status.
    pub kind: ErrorKind,
    /// `error.type` as sent (e.g. `rate_limit_error`, `gateway_rate_limit_error`).
    pub error_type: Option<String>,
    /// Stable machine code: Anthropic `error.details.error_code` (e.g.
    /// `enforced_spend_limit_reached`), else OpenAI `error.code`.
    pub error_code: Option<String>,
    /// `error.message`, or a description of a body that was not an error envelope.
    pub message: String,
    /// `request-id` / `x-request-id` header, else the body's `request_id`.
    pub request_id: Option<String>,
    /// The wait asked for by `retry-after-ms` or `retry-after`.
    pub retry_after: Option<Duration>,
    /// `x-should-retry` when sent, else whether the official SDKs retry this status.
    pub should_retry: bool,
    /// `x-tollgate-origin: gateway` makes this [`Origin::Gateway`]; anything else is the
    /// upstream's error.
    pub origin: Origin,
    /// Every response header (rate-limit state, request ids, …).
    pub headers: HeaderMap,
    /// The body as received, at most its first MiB.
    pub raw: Bytes,
}

// ===== impl ApiError =====

impl ApiError {
    /// Whether sending the request again may succeed (`x-should-retry`, else the table).
    pub fn is_retryable(&self) -> bool {
        self.should_retry
    }

    /// Who has to act for the next request to succeed.
    pub fn domain(&self) -> Domain {
        self.kind.class().domain
    }

    /// Read an error response whose body has been collected.
    pub(crate) fn from_parts(parts: Parts, body: Collected, now: SystemTime) -> ApiError {
        let status = parts.status;
        let headers = parts.headers;
        let parsed = UpstreamError::parse(body.bytes.clone());
        let kind = kind_of(&parsed, status.as_u16());
        let message = match (&parsed.message, parsed.dialect) {
            (Some(message), _) => message.clone(),
            (None, Some(_)) => format!(
                "the server returned a {} {} error without a message",
                status.as_u16(),
                parsed
                    .error_type
                    .as_deref()
                    .unwrap_or(kind.class().anthropic_type),
            ),
            (None, None) => non_envelope("the server", status, &headers, &body),
        };
        let should_retry = match headers.get(X_SHOULD_RETRY).map(|v| v.as_bytes()) {
            Some(b"true") => true,
            Some(b"false") => false,
            _ => kind.class().retryable,
        };
        let origin = match headers.get(X_TOLLGATE_ORIGIN).map(|v| v.as_bytes()) {
            Some(b"gateway") => Origin::Gateway,
            _ => Origin::Upstream,
        };
        ApiError {
            status,
            kind,
            error_code: parsed.error_code.or(parsed.code),
            error_type: parsed.error_type,
            message,
            request_id: request_id(&headers)
                .map(str::to_owned)
                .or(parsed.request_id),
            retry_after: parse_retry_after(&headers, now),
            should_retry,
            origin,
            headers,
            raw: parsed.raw,
        }
    }

    /// The error a local layer decided on (e.g. client-side pacing that would wait too
    /// long), read back from the response it renders: the same fields a gateway's answer
    /// would give, [`Origin::Gateway`] included.
    pub(crate) fn from_gateway(err: &GatewayError) -> ApiError {
        let res = err.to_response::<Bytes>(Dialect::Anthropic, &RenderOptions::default());
        let (parts, bytes) = res.into_parts();
        let body = Collected {
            seen: bytes.len() as u64,
            bytes,
            ..Collected::default()
        };
        ApiError::from_parts(parts, body, SystemTime::now())
    }
}

/// The table row of an error body. OpenAI envelopes are matched on status, `type` and
/// `code` (so a 429 `insufficient_quota` is billing, not traffic); Anthropic ones on
/// `error.type`; anything else on the status.
fn kind_of(parsed: &UpstreamError, status: u16) -> ErrorKind {
    if let (Some(Dialect::OpenAi), Some(ty)) = (parsed.dialect, parsed.error_type.as_deref()) {
        let ty = ty.strip_prefix("gateway_").unwrap_or(ty);
        let rows = || {
            ERROR_TABLE
                .iter()
                .filter(move |c| c.openai_status == status && c.openai_type == ty)
        };
        let row = rows()
            .find(|c| c.openai_code == parsed.code.as_deref())
            .or_else(|| rows().next());
        if let Some(row) = row {
            return row.kind;
        }
    }
    parsed.kind(status).unwrap_or(ErrorKind::Api)
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = self
            .error_type
            .as_deref()
            .unwrap_or(self.kind.class().anthropic_type);
        write!(f, "{} {ty}: {}", self.status.as_u16(), self.message)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request-id {id})")?;
        }
        Ok(())
    }
}

impl StdError for ApiError {}

// ===== ClientError =====

/// Why a classified call failed: the server answered with an error, or no answer came.
#[derive(Debug)]
#[non_exhaustive]
#[allow(
    clippy::large_enum_variant,
    reason = "errors are the rare path; an unboxed ApiError matches and moves plainly"
)]
pub enum ClientError {
    /// The server answered with a status ≥ 400.
    Api(ApiError),
    /// No response: connect failure, reset, timeout.
    Transport(TransportError),
}

impl ClientError {
    /// Whether sending the request again may succeed. API errors follow `x-should-retry`
    /// and the table; transport failures are retryable, as the official SDKs treat them.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Api(e) => e.is_retryable(),
            ClientError::Transport(e) => e.kind().error_kind().class().retryable,
        }
    }

    /// The API error, if the server answered.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            ClientError::Transport(_) => None,
        }
    }

    /// The status the server answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        self.api().map(|e| e.status)
    }

    /// The wait the server asked for before the next attempt, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.api().and_then(|e| e.retry_after)
    }

    /// Classify an inner service's error, keeping one that is already classified. An
    /// error that is, or is caused by, a [`GatewayError`] (a local layer's refusal, such
    /// as the rate-limit crate's `PaceError`) becomes the [`ApiError`] it renders as.
    pub(crate) fn from_boxed(err: BoxError) -> ClientError {
        let err = match err.downcast::<ClientError>() {
            Ok(e) => return *e,
            Err(err) => err,
        };
        let mut cause: Option<&(dyn StdError + 'static)> = Some(&*err);
        while let Some(e) = cause {
            if let Some(gateway) = e.downcast_ref::<GatewayError>() {
                return ClientError::Api(ApiError::from_gateway(gateway));
            }
            cause = e.source();
        }
        match err.downcast::<TransportError>() {
            Ok(e) => ClientError::Transport(*e),
            Err(err) => ClientError::Transport(TransportError::classify(err)),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Api(e) => e.fmt(f),
            ClientError::Transport(e) => e.fmt(f),
        }
    }
}

impl StdError for ClientError {
    /// Transparent: the variant's own source, since `Display` already shows the variant.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            ClientError::Api(e) => e.source(),
            ClientError::Transport(e) => e.source(),
        }
    }
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        ClientError::Api(e)
    }
}

impl From<TransportError> for ClientError {
    fn from(e: TransportError) -> Self {
        ClientError::Transport(e)
    }
}
