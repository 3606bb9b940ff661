//! Successful Anthropic replies: messages (JSON and SSE), count_tokens, models.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::body::MockBody;
use crate::call::Call;
use crate::ids;
use crate::json;
use crate::reply::{self, JSON, REQUEST_ID};
use crate::state::Shared;

/// Declares the generated words and, for each, its precomputed `content_block_delta` event.
macro_rules! words {
    ($($w:literal),+ $(,)?) => {
        /// The generated text cycles through these; one word = one output token = one delta.
        pub(crate) const WORDS: &[&str] = &[$($w),+];
        const DELTAS: &[&str] = &[$(concat!(
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,",
            "\"delta\":{\"type\":\"text_delta\",\"text\":\"", $w, "\"}}\n\n"
        )),+];
    };
}

words!(
    "Lorem",
    " ipsum",
    " dolor",
    " sit",
    " amet",
    ", consectetur",
    " adipiscing",
    " elit",
    ". ",
);

const CONTENT_BLOCK_START: &str = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
const PING: &str = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
const CONTENT_BLOCK_STOP: &str =
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n";
const MESSAGE_STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

/// The text of `n` output tokens.
pub(crate) fn text(n: u64) -> String {
    let mut out = String::with_capacity(n as usize * 7);
    for word in WORDS.iter().cycle().take(n as usize) {
        out.push_str(word);
    }
    out
}

/// `POST /v1/messages` without `stream`: one `message` object.
pub(crate) fn message(call: &Call<'_>) -> Response<MockBody> {
    let request_id = ids::fresh("req_mock_");
    let mut body = String::with_capacity(320 + call.output_tokens as usize * 7);
    body.push_str(r#"{"id":"msg_mock_"#);
    body.push_str(&request_id["req_mock_".len()..]);
    body.push_str(r#"","type":"message","role":"assistant","model":"#);
    json::push_str(&mut body, &call.model);
    body.push_str(r#","content":[{"type":"text","text":""#);
    body.push_str(&text(call.output_tokens));
    body.push_str(r#""}],"stop_reason":""#);
    body.push_str(stop_reason(call));
    body.push_str(r#"","stop_sequence":null,"usage":{"input_tokens":"#);
    body.push_str(&call.input_tokens.to_string());
    body.push_str(
        r#","cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":"#,
    );
    body.push_str(&call.output_tokens.to_string());
    body.push_str(r#","service_tier":"standard"}}"#);
    success(StatusCode::OK, request_id, MockBody::full(body))
}

/// `POST /v1/messages` with `"stream": true`: the real event sequence of §5.
///
/// `message_start` (input usage, `output_tokens: 1`), `content_block_start`, `ping`,
/// one `content_block_delta` per output token, `content_block_stop`, `message_delta`
/// (cumulative `output_tokens`), `message_stop`. With `stream_error_after`, an
/// `event: error` (`overloaded_error`) replaces everything after that many deltas.
pub(crate) fn stream(shared: &Arc<Shared>, call: &Call<'_>) -> Response<MockBody> {
    let request_id = ids::fresh("req_mock_");

    let mut start = String::with_capacity(400);
    start.push_str(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock_",
    );
    start.push_str(&request_id["req_mock_".len()..]);
    start.push_str(r#"","type":"message","role":"assistant","model":"#);
    json::push_str(&mut start, &call.model);
    start.push_str(
        r#","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":"#,
    );
    start.push_str(&call.input_tokens.to_string());
    start.push_str(
        ",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n",
    );

    let (deltas, tail) = match call.stream_error_after {
        Some(after) => {
            let error = format!(
                "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\
                 \"message\":\"Overloaded\"}},\"request_id\":\"{request_id}\"}}\n\n"
            );
            (after.min(call.output_tokens), vec![Bytes::from(error)])
        }
        None => {
            let delta = format!(
                "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{}\",\
                 \"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n",
                stop_reason(call),
                call.output_tokens
            );
            let tail = vec![
                Bytes::from_static(CONTENT_BLOCK_STOP.as_bytes()),
                Bytes::from(delta),
                Bytes::from_static(MESSAGE_STOP.as_bytes()),
            ];
            (call.output_tokens, tail)
        }
    };

    let head = [
        Bytes::from(start),
        Bytes::from_static(CONTENT_BLOCK_START.as_bytes()),
        Bytes::from_static(PING.as_bytes()),
    ];
    let body =
        (0..deltas).map(|i| Bytes::from_static(DELTAS[i as usize % DELTAS.len()].as_bytes()));
    let events = head.into_iter().chain(body).chain(tail);

    let mut res = reply::stream(shared, events, call.event_interval);
    let headers = res.headers_mut();
    headers.insert(REQUEST_ID, reply::value(request_id));
    reply::anthropic_ratelimit(headers);
    res
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens":N}`.
pub(crate) fn count_tokens(input_tokens: u64) -> Response<MockBody> {
    let body = format!(r#"{{"input_tokens":{input_tokens}}}"#);
    success(
        StatusCode::OK,
        ids::fresh("req_mock_"),
        MockBody::full(body),
    )
}

/// Declares the model list and each model's JSON object, all as static text.
macro_rules! models {
    ($(($id:literal, $name:literal, $created:literal)),+ $(,)?) => {
        const MODELS: &[(&str, &str)] = &[$(($id, concat!(
            r#"{"type":"model","id":""#, $id, r#"","display_name":""#, $name,
            r#"","created_at":""#, $created, r#""}"#
        ))),+];
    };
}

models!(
    ("claude-opus-4-8", "Claude Opus 4.8", "2026-08-05T00:00:00Z"),
    (
        "claude-sonnet-4-6",
        "Claude Sonnet 4.6",
        "2026-02-17T00:00:00Z"
    ),
    (
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-01T00:00:00Z"
    ),
);

/// `GET /v1/models`: the whole (small) list, one page.
pub(crate) fn models() -> Response<MockBody> {
    let mut body = String::from(r#"{"data":["#);
    for (i, (_, object)) in MODELS.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(object);
    }
    body.push_str(r#"],"has_more":false,"first_id":"#);
    json::push_str(&mut body, MODELS.first().map_or("", |m| m.0));
    body.push_str(r#","last_id":"#);
    json::push_str(&mut body, MODELS.last().map_or("", |m| m.0));
    body.push('}');
    success(
        StatusCode::OK,
        ids::fresh("req_mock_"),
        MockBody::full(body),
    )
}

/// `GET /v1/models/{id}`: that model's object, or `None` if the mock doesn't list it.
pub(crate) fn model(id: &str) -> Option<Response<MockBody>> {
    let (_, object) = MODELS.iter().find(|(m, _)| *m == id)?;
    Some(success(
        StatusCode::OK,
        ids::fresh("req_mock_"),
        MockBody::full(Bytes::from_static(object.as_bytes())),
    ))
}

fn stop_reason(call: &Call<'_>) -> &'static str {
    if call.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

fn success(status: StatusCode, request_id: String, body: MockBody) -> Response<MockBody> {
    let mut res = reply::response(status, JSON, body);
    let headers = res.headers_mut();
    headers.insert(REQUEST_ID, reply::value(request_id));
    reply::anthropic_ratelimit(headers);
    res
}
