//! One request: read, record, apply the script, route, answer.
//!
//! Order of decisions: body (over 32 MiB → F4 413), `x-mock-*` headers (bad → 400),
//! latency; then, on known endpoints, scripted failure (`x-mock-status` /
//! `x-mock-fail-times`) and fixture replay; then the endpoint's own answer (unknown
//! path → 404, bad JSON → 400).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::body::MockBody;
use crate::call::{self, Call};
use crate::errors::{self, Dialect, Style};
use crate::fixtures::Fixture;
use crate::reply::{self, X_MOCK_NAME};
use crate::script::Script;
use crate::state::Shared;
use crate::{anthropic, openai};

/// Largest request body accepted, as on the real API; larger ones get fixture F4.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Status of a scripted failure that names none (`x-mock-fail-times` alone).
const DEFAULT_FAIL_STATUS: u16 = 529;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Messages,
    CountTokens,
    Models,
    Model(&'a str),
    ChatCompletions,
    NotFound,
}

impl<'a> Route<'a> {
    fn of(method: &Method, path: &'a str) -> Self {
        match (method, path) {
            (&Method::POST, "/v1/messages") => Route::Messages,
            (&Method::POST, "/v1/messages/count_tokens") => Route::CountTokens,
            (&Method::POST, "/v1/chat/completions") => Route::ChatCompletions,
            (&Method::GET, "/v1/models") => Route::Models,
            (&Method::GET, _) => match path.strip_prefix("/v1/models/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::Model(id),
                _ => Route::NotFound,
            },
            _ => Route::NotFound,
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            Route::ChatCompletions => Dialect::OpenAi,
            _ => Dialect::Anthropic,
        }
    }
}

/// hyper's entry point: never fails, every outcome is a response.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let mut res = respond(&shared, req).await;
    if let Some(name) = &shared.name {
        res.headers_mut().insert(X_MOCK_NAME, name.clone());
    }
    Ok(res)
}

async fn respond(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<MockBody> {
    shared.count_request();
    let (parts, body) = req.into_parts();
    let route = Route::of(&parts.method, parts.uri.path());
    let dialect = route.dialect();

    let body = Limited::new(body, MAX_BODY_BYTES).collect().await;
    let body = match body {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            shared.record(&parts, &Bytes::new());
            let (status, message) = if e.is::<LengthLimitError>() {
                (413, None)
            } else {
                (
                    400,
                    Some("could not read the request body; send a complete body"),
                )
            };
            return errors::reply(dialect, status, Style::default(), message);
        }
    };
    shared.record(&parts, &body);

    let mut script = match Script::parse(&parts.headers, &shared.defaults) {
        Ok(script) => script,
        Err(message) => return errors::reply(dialect, 400, Style::default(), Some(&message)),
    };
    if let Some(latency) = script.latency {
        tokio::time::sleep(latency).await;
    }
    let style = Style::from(&script);

    if route != Route::NotFound {
        let failure = match script.fail_times {
            // A streamed scenario without a status fails the way its script says: with
            // the mid-stream error, for its first N requests only.
            Some(n) if script.stream_error_after.is_some() && script.status.is_none() => {
                if !shared.scenario_fails(script.scenario, n) {
                    script.stream_error_after = None;
                }
                None
            }
            Some(n) => shared
                .scenario_fails(script.scenario, n)
                .then(|| script.status.unwrap_or(DEFAULT_FAIL_STATUS)),
            None => script.status,
        };
        if let Some(status) = failure {
            return errors::reply(dialect, status, style, None);
        }
        if let Some(fixture) = script.fixture {
            return replay(shared, fixture, &script);
        }
    }

    let bad_request = |message: String| errors::reply(dialect, 400, style, Some(&message));
    match route {
        Route::Messages => match Call::parse(&body, &script) {
            Ok(call) if call.stream => anthropic::stream(shared, &call),
            Ok(call) => anthropic::message(&call),
            Err(message) => bad_request(message),
        },
        Route::CountTokens => match call::validate(&body) {
            Ok(()) => anthropic::count_tokens(call::input_tokens(body.len())),
            Err(message) => bad_request(message),
        },
        Route::ChatCompletions => match Call::parse(&body, &script) {
            Ok(call) if call.stream => openai::stream(shared, &call),
            Ok(call) => openai::completion(&call),
            Err(message) => bad_request(message),
        },
        Route::Models => anthropic::models(),
        Route::Model(id) => anthropic::model(id).unwrap_or_else(|| {
            let message = format!("model: {id}");
            errors::reply(dialect, 404, style, Some(&message))
        }),
        Route::NotFound => {
            let message = format!(
                "{} {} is not an endpoint of this API; the mock serves POST /v1/messages, \
                 POST /v1/messages/count_tokens, GET /v1/models, GET /v1/models/{{id}}, \
                 POST /v1/chat/completions",
                parts.method,
                parts.uri.path()
            );
            errors::reply(dialect, 404, style, Some(&message))
        }
    }
}

/// Serves a fixture byte for byte; streams go out one SSE event per frame.
fn replay(
    shared: &Arc<Shared>,
    fixture: &'static Fixture,
    script: &Script<'_>,
) -> Response<MockBody> {
    if !fixture.is_stream() {
        return errors::fixture(fixture, script.retry_after);
    }
    let events = fixture
        .body
        .split_inclusive("\n\n")
        .map(|event| Bytes::from_static(event.as_bytes()));
    let mut res = reply::stream(shared, events, script.event_interval);
    let headers = res.headers_mut();
    headers.clear();
    for (name, value) in fixture.headers {
        headers.append(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
    }
    res
}
