//! Building blocks shared by every reply: header names, rate-limit headers, SSE streams.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use tokio::sync::mpsc;

use crate::body::MockBody;
use crate::ids;
use crate::state::Shared;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
pub(crate) const X_MOCK_NAME: HeaderName = HeaderName::from_static("x-mock-name");

pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub(crate) const EVENT_STREAM: HeaderValue =
    HeaderValue::from_static("text/event-stream; charset=utf-8");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// Events buffered between the producer task and hyper: a default-length stream fits, so
/// hyper can write ready events together. Paced streams (`x-mock-event-interval-ms`)
/// still go out one event at a time, and a client going away is noticed through
/// `Sender::closed` while the producer waits.
const STREAM_DEPTH: usize = 32;

/// A response with `status`, a `content-type` and room for the usual headers.
pub(crate) fn response(
    status: StatusCode,
    content_type: HeaderValue,
    body: MockBody,
) -> Response<MockBody> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.reserve(20);
    headers.insert(header::CONTENT_TYPE, content_type);
    res
}

/// A `200` SSE response whose events come from `events`, one frame each.
///
/// A producer task feeds the body through a channel, sleeping `interval` between events;
/// if the client goes away first, the stream counts as cancelled.
pub(crate) fn stream<I>(
    shared: &Arc<Shared>,
    events: I,
    interval: Option<Duration>,
) -> Response<MockBody>
where
    I: Iterator<Item = Bytes> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(STREAM_DEPTH);
    tokio::spawn(pump(Arc::clone(shared), tx, events, interval));
    let mut res = response(StatusCode::OK, EVENT_STREAM, MockBody::Channel(rx));
    res.headers_mut().insert(header::CACHE_CONTROL, NO_CACHE);
    res
}

async fn pump<I>(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Bytes>,
    events: I,
    interval: Option<Duration>,
) where
    I: Iterator<Item = Bytes>,
{
    for (i, event) in events.enumerate() {
        if let Some(interval) = interval.filter(|_| i > 0) {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = tx.closed() => {
                    shared.stream_cancelled();
                    return;
                }
            }
        }
        if tx.send(event).await.is_err() {
            shared.stream_cancelled();
            return;
        }
    }
}

/// A header value from a string the mock generated (ids, numbers, timestamps).
pub(crate) fn value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or(HeaderValue::from_static("invalid"))
}

/// Adds the Anthropic rate-limit headers: fixed, plausible limits; resets one second ahead.
pub(crate) fn anthropic_ratelimit(headers: &mut HeaderMap) {
    // (limit, remaining) for requests, input tokens, output tokens, tokens.
    const FIXED: [(&str, &str); 4] = [
        ("4000", "3999"),
        ("2000000", "1999000"),
        ("400000", "400000"),
        ("2400000", "2399000"),
    ];
    const NAMES: [[HeaderName; 3]; 4] = [
        [
            HeaderName::from_static("anthropic-ratelimit-requests-limit"),
            HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
            HeaderName::from_static("anthropic-ratelimit-requests-reset"),
        ],
        [
            HeaderName::from_static("anthropic-ratelimit-input-tokens-limit"),
            HeaderName::from_static("anthropic-ratelimit-input-tokens-remaining"),
            HeaderName::from_static("anthropic-ratelimit-input-tokens-reset"),
        ],
        [
            HeaderName::from_static("anthropic-ratelimit-output-tokens-limit"),
            HeaderName::from_static("anthropic-ratelimit-output-tokens-remaining"),
            HeaderName::from_static("anthropic-ratelimit-output-tokens-reset"),
        ],
        [
            HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
            HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
            HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
        ],
    ];
    let reset = value(ids::rfc3339(ids::unix_now().as_secs() + 1));
    for ((limit, remaining), [n_limit, n_remaining, n_reset]) in FIXED.iter().zip(NAMES) {
        headers.insert(n_limit, HeaderValue::from_static(limit));
        headers.insert(n_remaining, HeaderValue::from_static(remaining));
        headers.insert(n_reset, reset.clone());
    }
}

/// Adds OpenAI-style rate-limit headers (fixed values, durations as the OpenAI API sends them).
pub(crate) fn openai_ratelimit(headers: &mut HeaderMap) {
    const FIXED: [(HeaderName, HeaderValue); 6] = [
        (
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderValue::from_static("4000"),
        ),
        (
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderValue::from_static("3999"),
        ),
        (
            HeaderName::from_static("x-ratelimit-reset-requests"),
            HeaderValue::from_static("15ms"),
        ),
        (
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderValue::from_static("2400000"),
        ),
        (
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderValue::from_static("2399000"),
        ),
        (
            HeaderName::from_static("x-ratelimit-reset-tokens"),
            HeaderValue::from_static("25ms"),
        ),
    ];
    for (name, value) in FIXED {
        headers.insert(name, value);
    }
}
