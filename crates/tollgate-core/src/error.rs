//! The one error table, and the envelopes built from it.
//!
//! Every status a client of Tollgate can see has one row in [`ERROR_TABLE`]: its Anthropic
//! `error.type`, the OpenAI `type`/`code` it maps to, the root-cause [`Domain`], whether
//! the official SDKs retry it, and a one-line hint for the human reading the error. Passthrough
//! rendering, client-side typed errors, retry policy, fallback triggers and metrics labels
//! all read this table instead of keeping their own.
//!
//! A [`GatewayError`] is an error *Tollgate itself* decided on (a bad body, a missing key, an
//! exhausted balance, a dead upstream). It renders as a response in the request's
//! [`Dialect`], marked `x-tollgate-origin: gateway`. Upstream errors are never re-rendered:
//! they pass through byte for byte; [`UpstreamError::parse`] only reads them.
//!
//! # Example
//!
//! ```
//! use tollgate_core::error::{Dialect, ErrorKind, GatewayError, RenderOptions};
//!
//! let err = GatewayError::new(ErrorKind::InvalidRequest, "max_tokens: field required");
//! let res: http::Response<bytes::Bytes> = err.to_response(Dialect::Anthropic, &RenderOptions::default());
//! assert_eq!(res.status(), 400);
//! assert_eq!(res.headers()["x-tollgate-origin"], "gateway");
//! assert_eq!(res.headers()["x-should-retry"], "false");
//! let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
//! assert_eq!(body["error"]["type"], "invalid_request_error");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::ext::Origin;
use crate::headers;
use crate::request_id::new_request_id;

/// Where the fault lies, i.e. who has to act for the next request to succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// The request itself is wrong; the caller must change it.
    Client,
    /// The account or key behind the request (credentials, balance, permissions).
    Account,
    /// Too much traffic for a limit; waiting fixes it.
    Traffic,
    /// The upstream API failed or is overloaded.
    Upstream,
    /// The path to the upstream failed (connect, reset, timeout).
    Network,
}

impl Domain {
    /// Lower-case label, stable for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Client => "client",
            Domain::Account => "account",
            Domain::Traffic => "traffic",
            Domain::Upstream => "upstream",
            Domain::Network => "network",
        }
    }
}

/// The wire dialect a request speaks, and so the shape its errors must have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Anthropic Messages API: `{"type":"error","error":{..},"request_id":..}`.
    #[default]
    Anthropic,
    /// OpenAI-compatible API: `{"error":{"message","type","param","code"}}`.
    OpenAi,
}

impl Dialect {
    /// The dialect of a request path: `…/chat/completions` speaks OpenAI, everything else
    /// Anthropic.
    pub fn from_path(path: &str) -> Dialect {
        if path.ends_with("/chat/completions") || path.ends_with("/chat/completions/") {
            Dialect::OpenAi
        } else {
            Dialect::Anthropic
        }
    }
}

/// Every kind of error the table knows. One variant per row of [`ERROR_TABLE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 400: the request is malformed or not allowed as sent.
    InvalidRequest,
    /// 401: the credential is missing, malformed, unknown, disabled or expired.
    Authentication,
    /// 402: the account cannot pay for the request.
    Billing,
    /// 403: the credential is valid but not allowed to do this.
    Permission,
    /// 404: the path or the model does not exist.
    NotFound,
    /// 408: the request took too long to arrive or to be served.
    RequestTimeout,
    /// 409: a concurrent change conflicted.
    Conflict,
    /// 413: the body is larger than allowed.
    RequestTooLarge,
    /// 429: a rate limit was hit.
    RateLimit,
    /// 500: the upstream failed internally.
    Api,
    /// 502: the upstream could not be reached or answered garbage.
    BadGateway,
    /// 503: the service is temporarily unavailable.
    Unavailable,
    /// 504: the upstream did not answer in time.
    Timeout,
    /// 529: the upstream API is overloaded.
    Overloaded,
}

/// One row of the error table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorClass {
    /// The table row's kind.
    pub kind: ErrorKind,
    /// HTTP status in the Anthropic dialect.
    pub status: u16,
    /// Anthropic `error.type`.
    pub anthropic_type: &'static str,
    /// HTTP status in the OpenAI dialect (OpenAI has no 402 and no 529).
    pub openai_status: u16,
    /// OpenAI `error.type`.
    pub openai_type: &'static str,
    /// OpenAI `error.code`, `None` renders as `null`.
    pub openai_code: Option<&'static str>,
    /// Who has to act.
    pub domain: Domain,
    /// Whether the official SDKs retry this status (absent an `x-should-retry` header).
    pub retryable: bool,
    /// What the person reading the error should do, in one line.
    pub hint: &'static str,
}

/// The table. Order is by status; [`ErrorKind::class`] indexes it.
pub static ERROR_TABLE: &[ErrorClass] = &[
    ErrorClass {
        kind: ErrorKind::InvalidRequest,
        status: 400,
        anthropic_type: "invalid_request_error",
        openai_status: 400,
        openai_type: "invalid_request_error",
        openai_code: None,
        domain: Domain::Client,
        retryable: false,
        hint: "Fix the request as the message says; sending it again unchanged fails again.",
    },
    ErrorClass {
        kind: ErrorKind::Authentication,
        status: 401,
        anthropic_type: "authentication_error",
        openai_status: 401,
        openai_type: "invalid_request_error",
        openai_code: Some("invalid_api_key"),
        domain: Domain::Account,
        retryable: false,
        hint: "Send a valid API key in x-api-key or Authorization: Bearer.",
    },
    ErrorClass {
        kind: ErrorKind::Billing,
        status: 402,
        anthropic_type: "billing_error",
        openai_status: 429,
        openai_type: "insufficient_quota",
        openai_code: Some("insufficient_quota"),
        domain: Domain::Account,
        retryable: false,
        hint: "Top up the account's balance or lower max_tokens.",
    },
    ErrorClass {
        kind: ErrorKind::Permission,
        status: 403,
        anthropic_type: "permission_error",
        openai_status: 403,
        openai_type: "permission_error",
        openai_code: None,
        domain: Domain::Account,
        retryable: false,
        hint: "Use a key that is allowed this model or resource, or ask for the scope to be widened.",
    },
    ErrorClass {
        kind: ErrorKind::NotFound,
        status: 404,
        anthropic_type: "not_found_error",
        openai_status: 404,
        openai_type: "invalid_request_error",
        openai_code: None,
        domain: Domain::Client,
        retryable: false,
        hint: "Check the path and the model id; retired models answer 404.",
    },
    ErrorClass {
        kind: ErrorKind::RequestTimeout,
        status: 408,
        anthropic_type: "timeout_error",
        openai_status: 408,
        openai_type: "invalid_request_error",
        openai_code: Some("timeout"),
        domain: Domain::Network,
        retryable: true,
        hint: "Retry; send the body promptly and check the connection.",
    },
    ErrorClass {
        kind: ErrorKind::Conflict,
        status: 409,
        anthropic_type: "conflict_error",
        openai_status: 409,
        openai_type: "invalid_request_error",
        openai_code: Some("conflict"),
        domain: Domain::Client,
        retryable: true,
        hint: "A concurrent change conflicted; retry after re-reading the resource.",
    },
    ErrorClass {
        kind: ErrorKind::RequestTooLarge,
        status: 413,
        anthropic_type: "request_too_large",
        openai_status: 413,
        openai_type: "invalid_request_error",
        openai_code: Some("request_too_large"),
        domain: Domain::Client,
        retryable: false,
        hint: "Shrink the request body (fewer or smaller messages, images or documents).",
    },
    ErrorClass {
        kind: ErrorKind::RateLimit,
        status: 429,
        anthropic_type: "rate_limit_error",
        openai_status: 429,
        openai_type: "requests",
        openai_code: Some("rate_limit_exceeded"),
        domain: Domain::Traffic,
        retryable: true,
        hint: "Slow down: wait for retry-after seconds before sending again.",
    },
    ErrorClass {
        kind: ErrorKind::Api,
        status: 500,
        anthropic_type: "api_error",
        openai_status: 500,
        openai_type: "server_error",
        openai_code: None,
        domain: Domain::Upstream,
        retryable: true,
        hint: "The upstream failed internally; retry with backoff.",
    },
    ErrorClass {
        kind: ErrorKind::BadGateway,
        status: 502,
        anthropic_type: "api_error",
        openai_status: 502,
        openai_type: "server_error",
        openai_code: Some("bad_gateway"),
        domain: Domain::Network,
        retryable: true,
        hint: "The upstream could not be reached or answered garbage; retry with backoff.",
    },
    ErrorClass {
        kind: ErrorKind::Unavailable,
        status: 503,
        anthropic_type: "api_error",
        openai_status: 503,
        openai_type: "service_unavailable_error",
        openai_code: None,
        domain: Domain::Upstream,
        retryable: true,
        hint: "The service is temporarily unavailable; retry with backoff.",
    },
    ErrorClass {
        kind: ErrorKind::Timeout,
        status: 504,
        anthropic_type: "timeout_error",
        openai_status: 504,
        openai_type: "server_error",
        openai_code: Some("timeout"),
        domain: Domain::Network,
        retryable: true,
        hint: "The upstream did not answer in time; use streaming for long generations.",
    },
    ErrorClass {
        kind: ErrorKind::Overloaded,
        status: 529,
        anthropic_type: "overloaded_error",
        openai_status: 503,
        openai_type: "service_unavailable_error",
        openai_code: Some("server_is_overloaded"),
        domain: Domain::Upstream,
        retryable: true,
        hint: "The upstream API is overloaded (not your quota); retry with backoff or another model.",
    },
];

// ===== impl ErrorKind =====

impl ErrorKind {
    /// Every kind, in table order.
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::InvalidRequest,
        ErrorKind::Authentication,
        ErrorKind::Billing,
        ErrorKind::Permission,
        ErrorKind::NotFound,
        ErrorKind::RequestTimeout,
        ErrorKind::Conflict,
        ErrorKind::RequestTooLarge,
        ErrorKind::RateLimit,
        ErrorKind::Api,
        ErrorKind::BadGateway,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Overloaded,
    ];

    /// This kind's row of [`ERROR_TABLE`].
    pub fn class(self) -> &'static ErrorClass {
        let i = match self {
            ErrorKind::InvalidRequest => 0,
            ErrorKind::Authentication => 1,
            ErrorKind::Billing => 2,
            ErrorKind::Permission => 3,
            ErrorKind::NotFound => 4,
            ErrorKind::RequestTimeout => 5,
            ErrorKind::Conflict => 6,
            ErrorKind::RequestTooLarge => 7,
            ErrorKind::RateLimit => 8,
            ErrorKind::Api => 9,
            ErrorKind::BadGateway => 10,
            ErrorKind::Unavailable => 11,
            ErrorKind::Timeout => 12,
            ErrorKind::Overloaded => 13,
        };
        &ERROR_TABLE[i]
    }

    /// The kind an HTTP error status belongs to. A 4xx not in the table is
    /// `InvalidRequest` and a 5xx not in the table is `Api`, as the Anthropic API documents;
    /// `None` for statuses below 400.
    pub fn from_status(status: u16) -> Option<ErrorKind> {
        Some(match status {
            401 => ErrorKind::Authentication,
            402 => ErrorKind::Billing,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            408 => ErrorKind::RequestTimeout,
            409 => ErrorKind::Conflict,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimit,
            502 => ErrorKind::BadGateway,
            503 => ErrorKind::Unavailable,
            504 => ErrorKind::Timeout,
            529 => ErrorKind::Overloaded,
            // 400 and every 4xx the table does not name ("other 4XX" in the API docs).
            400..=499 => ErrorKind::InvalidRequest,
            // 500 and every 5xx the table does not name.
            500..=599 => ErrorKind::Api,
            _ => return None,
        })
    }

    /// The kind named by an Anthropic `error.type` (first row wins for shared types).
    pub fn from_anthropic_type(error_type: &str) -> Option<ErrorKind> {
        let error_type = error_type.strip_prefix("gateway_").unwrap_or(error_type);
        ERROR_TABLE
            .iter()
            .find(|c| c.anthropic_type == error_type)
            .map(|c| c.kind)
    }

    /// HTTP status in the given dialect.
    pub fn status(self, dialect: Dialect) -> StatusCode {
        let class = self.class();
        let code = match dialect {
            Dialect::Anthropic => class.status,
            Dialect::OpenAi => class.openai_status,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class().anthropic_type)
    }
}

// ===== GatewayError =====

/// How gateway errors are rendered. Shared by every layer that rejects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Prefix `error.type` with `gateway_` (e.g. `gateway_rate_limit_error`) for clients that
    /// branch on type strings to tell gateway errors from upstream ones. Off by default:
    /// standard types keep the official SDKs' exception mapping intact, and the
    /// `x-tollgate-origin` header already tells the two apart.
    pub type_prefix: bool,
}

/// An error Tollgate itself decided on, before or instead of an upstream answer.
///
/// It renders as a complete response ([`GatewayError::to_response`]) and rides in that
/// response's extensions so that outer layers can re-render it (e.g. in another dialect).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayError {
    kind: ErrorKind,
    message: Cow<'static, str>,
    retry_after: Option<Duration>,
    should_retry: Option<bool>,
    openai_code: Option<&'static str>,
    error_code: Option<&'static str>,
    request_id: Option<String>,
}

impl GatewayError {
    /// An error of `kind` whose message says what happened and what to do.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        GatewayError {
            kind,
            message: message.into(),
            retry_after: None,
            should_retry: None,
            openai_code: None,
            error_code: None,
            request_id: None,
        }
    }

    /// Tell the client when to come back: sets `retry-after` (whole seconds, rounded up)
    /// and `retry-after-ms` (exact).
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Override the table's retry verdict sent as `x-should-retry`.
    pub fn with_should_retry(mut self, retry: bool) -> Self {
        self.should_retry = Some(retry);
        self
    }

    /// Override the OpenAI `code` (e.g. `model_not_found` for a 404 about the model).
    pub fn with_openai_code(mut self, code: &'static str) -> Self {
        self.openai_code = Some(code);
        self
    }

    /// A stable machine code, rendered as `error.details.error_code` in the Anthropic
    /// dialect (the way the API marks e.g. `enforced_spend_limit_reached`).
    pub fn with_error_code(mut self, code: &'static str) -> Self {
        self.error_code = Some(code);
        self
    }

    /// Use this request id instead of a fresh one.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// The table row.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The wait sent as `retry-after`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The `x-should-retry` verdict this error renders with.
    pub fn should_retry(&self) -> bool {
        self.should_retry.unwrap_or(self.kind.class().retryable)
    }

    /// The error's body in `dialect`, exactly the bytes [`GatewayError::to_response`] sends.
    pub fn to_body(&self, dialect: Dialect, options: &RenderOptions, request_id: &str) -> Bytes {
        let class = self.kind.class();
        let prefix = if options.type_prefix { "gateway_" } else { "" };
        let json = match dialect {
            Dialect::Anthropic => {
                let error_type = format!("{prefix}{}", class.anthropic_type);
                serde_json::to_vec(&AnthropicEnvelope {
                    kind: "error",
                    error: AnthropicError {
                        kind: &error_type,
                        message: &self.message,
                        details: self.error_code.map(|error_code| Details { error_code }),
                    },
                    request_id,
                })
            }
            Dialect::OpenAi => {
                let error_type = format!("{prefix}{}", class.openai_type);
                serde_json::to_vec(&OpenAiEnvelope {
                    error: OpenAiError {
                        message: &self.message,
                        kind: &error_type,
                        param: None,
                        code: self.openai_code.or(class.openai_code),
                    },
                })
            }
        };
        // Serializing these plain structs cannot fail; an empty body would still be marked.
        Bytes::from(json.unwrap_or_default())
    }

    /// Render as a complete response in `dialect`: status, JSON envelope, `request-id`
    /// (Anthropic) or `x-request-id` (OpenAI), `x-should-retry`, `retry-after`(-ms),
    /// `x-tollgate-origin: gateway`; the error itself and [`Origin::Gateway`] go into the
    /// response's extensions.
    pub fn to_response<B: From<Bytes>>(
        &self,
        dialect: Dialect,
        options: &RenderOptions,
    ) -> Response<B> {
        let request_id = match &self.request_id {
            Some(id) => id.clone(),
            None => new_request_id(),
        };
        let body = self.to_body(dialect, options, &request_id);
        let mut res = Response::new(B::from(body));
        *res.status_mut() = self.kind.status(dialect);
        let h = res.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            let name = match dialect {
                Dialect::Anthropic => headers::REQUEST_ID,
                Dialect::OpenAi => headers::X_REQUEST_ID,
            };
            h.insert(name, v);
        }
        h.insert(headers::X_TOLLGATE_ORIGIN, Origin::Gateway.header_value());
        h.insert(
            headers::X_SHOULD_RETRY,
            HeaderValue::from_static(if self.should_retry() { "true" } else { "false" }),
        );
        if let Some(wait) = self.retry_after {
            let ms = wait.as_millis();
            let secs = ms.div_ceil(1000);
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs as u64));
            h.insert(headers::RETRY_AFTER_MS, HeaderValue::from(ms as u64));
        }
        res.extensions_mut().insert(Origin::Gateway);
        res.extensions_mut().insert(self.clone());
        res
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for GatewayError {}

#[derive(Serialize)]
struct AnthropicEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    error: AnthropicError<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
}

#[derive(Serialize)]
struct Details {
    error_code: &'static str,
}

#[derive(Serialize)]
struct OpenAiEnvelope<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

// ===== UpstreamError =====

/// An upstream error body, read leniently: whatever could be understood, plus the
/// original bytes untouched.
///
/// Parsing never fails. A JSON envelope of either dialect fills the fields; anything else
/// (an HTML page from a proxy, an empty body, truncated JSON) leaves them `None` and
/// `dialect` `None`, with `raw` still holding every byte.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamError {
    /// Which envelope shape the body had, `None` if it was not a JSON envelope.
    pub dialect: Option<Dialect>,
    /// `error.type`.
    pub error_type: Option<String>,
    /// `error.message`.
    pub message: Option<String>,
    /// OpenAI `error.code` (stringified if it was a number).
    pub code: Option<String>,
    /// Anthropic `error.details.error_code`, the stable machine code.
    pub error_code: Option<String>,
    /// Anthropic body `request_id`.
    pub request_id: Option<String>,
    /// The body exactly as received.
    pub raw: Bytes,
}

impl UpstreamError {
    /// Read `body` as an error envelope of either dialect.
    pub fn parse(body: Bytes) -> UpstreamError {
        let mut out = UpstreamError {
            raw: body,
            ..UpstreamError::default()
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&out.raw) else {
            return out;
        };
        let Some(error) = value.get("error").and_then(|e| e.as_object()) else {
            return out;
        };
        let text = |v: Option<&serde_json::Value>| -> Option<String> {
            match v? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        out.dialect = Some(
            if value.get("type").and_then(|t| t.as_str()) == Some("error") {
                Dialect::Anthropic
            } else {
                Dialect::OpenAi
            },
        );
        out.error_type = text(error.get("type"));
        out.message = text(error.get("message"));
        out.code = text(error.get("code"));
        out.error_code = text(error.get("details").and_then(|d| d.get("error_code")));
        out.request_id = text(value.get("request_id"));
        out
    }

    /// The table row: from `error.type` when it names one, else from the status.
    pub fn kind(&self, status: u16) -> Option<ErrorKind> {
        self.error_type
            .as_deref()
            .filter(|_| self.dialect == Some(Dialect::Anthropic))
            .and_then(ErrorKind::from_anthropic_type)
            .filter(|k| k.class().status == status)
            .or_else(|| ErrorKind::from_status(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(res: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(res.body()).expect("gateway bodies are JSON")
    }

    #[test]
    fn table_has_one_row_per_kind_in_order() {
        assert_eq!(ERROR_TABLE.len(), ErrorKind::ALL.len());
        for kind in ErrorKind::ALL {
            assert_eq!(kind.class().kind, kind);
            assert_eq!(ErrorKind::from_status(kind.class().status), Some(kind));
        }
    }

    #[test]
    fn table_matches_the_wire_reference_statuses() {
        let expect = [
            (400, "invalid_request_error", false),
            (401, "authentication_error", false),
            (402, "billing_error", false),
            (403, "permission_error", false),
            (404, "not_found_error", false),
            (409, "conflict_error", true),
            (413, "request_too_large", false),
            (429, "rate_limit_error", true),
            (500, "api_error", true),
            (504, "timeout_error", true),
            (529, "overloaded_error", true),
        ];
        for (status, ty, retry) in expect {
            let class = ErrorKind::from_status(status).expect("in table").class();
            assert_eq!(
                (class.anthropic_type, class.retryable),
                (ty, retry),
                "{status}"
            );
        }
    }

    #[test]
    fn unknown_statuses_fall_back_by_class() {
        assert_eq!(ErrorKind::from_status(422), Some(ErrorKind::InvalidRequest));
        assert_eq!(ErrorKind::from_status(599), Some(ErrorKind::Api));
        assert_eq!(ErrorKind::from_status(200), None);
    }

    #[test]
    fn anthropic_envelope_has_the_documented_shape() {
        let err = GatewayError::new(ErrorKind::Authentication, "no API key")
            .with_request_id("req_tg_test");
        let res: Response<Bytes> = err.to_response(Dialect::Anthropic, &RenderOptions::default());
        assert_eq!(res.status(), 401);
        assert_eq!(
            res.body(),
            &Bytes::from_static(
                br#"{"type":"error","error":{"type":"authentication_error","message":"no API key"},"request_id":"req_tg_test"}"#
            )
        );
        assert_eq!(res.headers()["request-id"], "req_tg_test");
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.extensions().get::<Origin>(), Some(&Origin::Gateway));
        assert_eq!(res.extensions().get::<GatewayError>(), Some(&err));
    }

    #[test]
    fn openai_envelope_maps_billing_to_insufficient_quota() {
        let err = GatewayError::new(ErrorKind::Billing, "insufficient balance");
        let res: Response<Bytes> = err.to_response(Dialect::OpenAi, &RenderOptions::default());
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["x-should-retry"], "false");
        assert!(res.headers().contains_key("x-request-id"));
        assert_eq!(
            json(&res),
            serde_json::json!({"error":{"message":"insufficient balance","type":"insufficient_quota","param":null,"code":"insufficient_quota"}})
        );
    }

    #[test]
    fn overloaded_is_503_in_openai_dialect() {
        let res: Response<Bytes> = GatewayError::new(ErrorKind::Overloaded, "busy")
            .to_response(Dialect::OpenAi, &RenderOptions::default());
        assert_eq!(res.status(), 503);
        assert_eq!(json(&res)["error"]["code"], "server_is_overloaded");
    }

    #[test]
    fn retry_after_is_rounded_up_and_exact_in_ms() {
        let res: Response<Bytes> = GatewayError::new(ErrorKind::RateLimit, "slow down")
            .with_retry_after(Duration::from_millis(1_001))
            .to_response(Dialect::Anthropic, &RenderOptions::default());
        assert_eq!(res.headers()["retry-after"], "2");
        assert_eq!(res.headers()["retry-after-ms"], "1001");
        assert_eq!(res.headers()["x-should-retry"], "true");
    }

    #[test]
    fn type_prefix_marks_gateway_types() {
        let opts = RenderOptions { type_prefix: true };
        let res: Response<Bytes> =
            GatewayError::new(ErrorKind::RateLimit, "x").to_response(Dialect::Anthropic, &opts);
        assert_eq!(json(&res)["error"]["type"], "gateway_rate_limit_error");
        assert_eq!(
            ErrorKind::from_anthropic_type("gateway_rate_limit_error"),
            Some(ErrorKind::RateLimit)
        );
    }

    #[test]
    fn error_code_renders_as_details() {
        let res: Response<Bytes> = GatewayError::new(ErrorKind::RateLimit, "cap")
            .with_error_code("enforced_spend_limit_reached")
            .to_response(Dialect::Anthropic, &RenderOptions::default());
        assert_eq!(
            json(&res)["error"]["details"]["error_code"],
            "enforced_spend_limit_reached"
        );
    }

    #[test]
    fn should_retry_override_wins_over_table() {
        let err = GatewayError::new(ErrorKind::RateLimit, "cap").with_should_retry(false);
        let res: Response<Bytes> = err.to_response(Dialect::Anthropic, &RenderOptions::default());
        assert_eq!(res.headers()["x-should-retry"], "false");
    }

    #[test]
    fn parses_anthropic_envelope_with_details() {
        let raw = Bytes::from_static(br#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_011CfxCap00000000000000005"}"#);
        let e = UpstreamError::parse(raw.clone());
        assert_eq!(e.dialect, Some(Dialect::Anthropic));
        assert_eq!(e.error_type.as_deref(), Some("rate_limit_error"));
        assert_eq!(
            e.error_code.as_deref(),
            Some("enforced_spend_limit_reached")
        );
        assert_eq!(
            e.request_id.as_deref(),
            Some("req_011CfxCap00000000000000005")
        );
        assert_eq!(e.kind(429), Some(ErrorKind::RateLimit));
        assert_eq!(e.raw, raw);
    }

    #[test]
    fn parses_openai_envelope_with_numeric_code() {
        let e = UpstreamError::parse(Bytes::from_static(
            br#"{"error":{"message":"quota","type":"insufficient_quota","param":null,"code":429}}"#,
        ));
        assert_eq!(e.dialect, Some(Dialect::OpenAi));
        assert_eq!(e.code.as_deref(), Some("429"));
        assert_eq!(e.kind(429), Some(ErrorKind::RateLimit));
    }

    #[test]
    fn non_json_body_keeps_every_byte() {
        let raw = Bytes::from_static(b"<html><body>502 Bad Gateway</body></html>");
        let e = UpstreamError::parse(raw.clone());
        assert_eq!(e.dialect, None);
        assert_eq!(e.message, None);
        assert_eq!(e.raw, raw);
        assert_eq!(e.kind(502), Some(ErrorKind::BadGateway));
    }

    #[test]
    fn error_type_disagreeing_with_status_falls_back_to_status() {
        let e = UpstreamError::parse(Bytes::from_static(
            br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#,
        ));
        assert_eq!(e.kind(529), Some(ErrorKind::Overloaded));
    }
}
