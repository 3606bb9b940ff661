//! Error replies in both dialects, and the HTML page a misbehaving proxy would send.
//!
//! Statuses with a wire-reference fixture are answered with the fixture's exact bytes;
//! the rest get a well-formed envelope with a fresh request id.

use http::{HeaderName, HeaderValue, Response, StatusCode, header};

use crate::body::MockBody;
use crate::fixtures::{self, Fixture};
use crate::json;
use crate::reply::{self, JSON, REQUEST_ID, X_REQUEST_ID, X_SHOULD_RETRY};
use crate::script::Script;

/// `x-mock-error-code` value that turns a 429 into the spend-cap fixture F6.
const SPEND_CAP: &str = "enforced_spend_limit_reached";

/// Which API's error shape to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `{"type":"error","error":{…},"request_id":…}` with `request-id`.
    Anthropic,
    /// `{"error":{"message","type","param","code"}}` with `x-request-id`.
    OpenAi,
}

/// The parts of a request's script that shape an error reply.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Style<'a> {
    pub(crate) retry_after: Option<&'a HeaderValue>,
    pub(crate) html: bool,
    pub(crate) error_code: Option<&'a str>,
}

impl<'a> From<&Script<'a>> for Style<'a> {
    fn from(script: &Script<'a>) -> Self {
        Style {
            retry_after: script.retry_after,
            html: script.html_errors,
            error_code: script.error_code,
        }
    }
}

/// An error reply for `status`.
///
/// `message` is set for errors the mock itself finds (bad JSON, unknown path, bad
/// `x-mock-*` header); scripted failures pass `None` and get the fixture or the
/// status's usual message.
pub(crate) fn reply(
    dialect: Dialect,
    status: u16,
    style: Style<'_>,
    message: Option<&str>,
) -> Response<MockBody> {
    if style.html {
        return html(status, style.retry_after);
    }
    match dialect {
        Dialect::Anthropic => anthropic(status, style, message),
        Dialect::OpenAi => openai(status, style, message),
    }
}

/// The fixture's exact status, headers and body; `retry_after` replaces or adds `retry-after`.
pub(crate) fn fixture(
    f: &'static Fixture,
    retry_after: Option<&HeaderValue>,
) -> Response<MockBody> {
    let mut res = Response::new(MockBody::full(f.body.as_bytes()));
    *res.status_mut() = status_code(f.status);
    let headers = res.headers_mut();
    headers.reserve(f.headers.len() + 2);
    for (name, value) in f.headers {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if let Some(retry_after) = retry_after {
        headers.insert(header::RETRY_AFTER, retry_after.clone());
    }
    res
}

fn anthropic(status: u16, style: Style<'_>, message: Option<&str>) -> Response<MockBody> {
    if message.is_none() {
        let known = match (status, style.error_code) {
            (429, Some(SPEND_CAP)) => Some(&fixtures::F6_429_SPEND_CAP),
            (status, None) => fixtures::for_status(status),
            _ => None,
        };
        if let Some(f) = known {
            return fixture(f, style.retry_after);
        }
    }
    let id = crate::ids::fresh("req_mock_");
    let mut body = String::with_capacity(200);
    body.push_str(r#"{"type":"error","error":{"type":""#);
    body.push_str(anthropic_type(status));
    body.push_str(r#"","message":"#);
    json::push_str(
        &mut body,
        message.unwrap_or_else(|| default_message(status)),
    );
    if let Some(code) = style.error_code {
        body.push_str(r#","details":{"error_code":"#);
        json::push_str(&mut body, code);
        body.push('}');
    }
    body.push_str(r#"},"request_id":"#);
    json::push_str(&mut body, &id);
    body.push('}');

    let mut res = reply::response(status_code(status), JSON, MockBody::full(body));
    let headers = res.headers_mut();
    headers.insert(REQUEST_ID, reply::value(id));
    if let Some(retry_after) = style.retry_after {
        headers.insert(header::RETRY_AFTER, retry_after.clone());
    }
    res
}

/// The Anthropic `error.type` for an HTTP status (wire reference §4.1).
pub(crate) fn anthropic_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        409 => "conflict_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

fn default_message(status: u16) -> &'static str {
    match status {
        401 => "invalid x-api-key",
        402 => "Your credit balance is too low to access the Claude API.",
        403 => "Your API key does not have permission to use the specified resource.",
        404 => "The requested resource could not be found.",
        408 => "Request timed out before the request body was received.",
        409 => "The request conflicts with the current state of the resource.",
        413 => "Request exceeds the maximum allowed number of bytes.",
        429 => "This request would exceed your organization's rate limit.",
        500 => "Internal server error",
        502 => "Bad gateway",
        503 => "Service unavailable",
        504 => "Request timed out; use streaming for long requests.",
        529 => "Overloaded",
        400..=499 => "Invalid request",
        _ => "Internal server error",
    }
}

/// OpenAI status, `type`, `code` and whether to add `x-should-retry: false`, per §9.1.
struct OpenAiError {
    status: u16,
    kind: &'static str,
    code: Option<&'static str>,
    terminal: bool,
    message: &'static str,
}

fn openai_mapping(status: u16, error_code: Option<&str>, scripted: bool) -> OpenAiError {
    let e = |status, kind, code, message| OpenAiError {
        status,
        kind,
        code,
        terminal: false,
        message,
    };
    match (status, error_code) {
        (402, _) | (429, Some(SPEND_CAP)) => OpenAiError {
            terminal: true,
            ..e(
                429,
                "insufficient_quota",
                Some("insufficient_quota"),
                "You exceeded your current quota, please check your plan and billing details.",
            )
        },
        (401, _) => e(
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided.",
        ),
        (403, _) => e(403, "permission_error", None, default_message(403)),
        // A scripted 404 on /v1/chat/completions stands for an unknown model.
        (404, _) if scripted => e(
            404,
            "invalid_request_error",
            Some("model_not_found"),
            "The model does not exist or you do not have access to it.",
        ),
        (409, _) => e(
            409,
            "invalid_request_error",
            Some("conflict"),
            default_message(409),
        ),
        (413, _) => e(
            413,
            "invalid_request_error",
            Some("request_too_large"),
            default_message(413),
        ),
        (429, _) => e(
            429,
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached for requests",
        ),
        (504, _) => e(504, "server_error", Some("timeout"), default_message(504)),
        (503 | 529, _) => e(
            503,
            "service_unavailable_error",
            Some("server_is_overloaded"),
            "The server is overloaded, please try again later.",
        ),
        (400..=499, _) => e(
            status,
            "invalid_request_error",
            None,
            default_message(status),
        ),
        _ => e(status, "server_error", None, default_message(status)),
    }
}

fn openai(status: u16, style: Style<'_>, message: Option<&str>) -> Response<MockBody> {
    let mapped = openai_mapping(status, style.error_code, message.is_none());
    let code = match style.error_code {
        Some(code) if code != SPEND_CAP => Some(code),
        _ => mapped.code,
    };
    let mut body = String::with_capacity(200);
    body.push_str(r#"{"error":{"message":"#);
    json::push_str(&mut body, message.unwrap_or(mapped.message));
    body.push_str(r#","type":"#);
    json::push_str(&mut body, mapped.kind);
    body.push_str(r#","param":null,"code":"#);
    match code {
        Some(code) => json::push_str(&mut body, code),
        None => body.push_str("null"),
    }
    body.push_str("}}");

    let mut res = reply::response(status_code(mapped.status), JSON, MockBody::full(body));
    let headers = res.headers_mut();
    headers.insert(X_REQUEST_ID, reply::value(crate::ids::fresh("req_mock_")));
    let default_retry_after =
        (mapped.status == 429 && !mapped.terminal).then(|| HeaderValue::from_static("7"));
    if let Some(retry_after) = style.retry_after.cloned().or(default_retry_after) {
        headers.insert(header::RETRY_AFTER, retry_after);
    }
    if mapped.terminal {
        headers.insert(X_SHOULD_RETRY, HeaderValue::from_static("false"));
    }
    res
}

/// An nginx-style HTML error page, as a proxy in front of the API would send.
fn html(status: u16, retry_after: Option<&HeaderValue>) -> Response<MockBody> {
    let code = status_code(status);
    let reason = match status {
        529 => "Overloaded",
        _ => code.canonical_reason().unwrap_or("Error"),
    };
    let body = format!(
        "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n\
         <center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n\
         </body>\r\n</html>\r\n"
    );
    let mut res = reply::response(
        code,
        HeaderValue::from_static("text/html"),
        MockBody::full(body),
    );
    if let Some(retry_after) = retry_after {
        res.headers_mut()
            .insert(header::RETRY_AFTER, retry_after.clone());
    }
    res
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
