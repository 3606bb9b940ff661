//! Successful OpenAI-dialect replies: `POST /v1/chat/completions`, JSON and SSE.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::anthropic::{WORDS, text};
use crate::body::MockBody;
use crate::call::Call;
use crate::ids;
use crate::json;
use crate::reply::{self, JSON, X_REQUEST_ID};
use crate::state::Shared;

const DONE: &str = "data: [DONE]\n\n";
const STREAM_ERROR: &str = "data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\",\"param\":null,\"code\":\"overloaded_error\"}}\n\n";

fn finish_reason(call: &Call<'_>) -> &'static str {
    if call.truncated { "length" } else { "stop" }
}

fn usage(call: &Call<'_>) -> String {
    format!(
        r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}"#,
        call.input_tokens,
        call.output_tokens,
        call.input_tokens + call.output_tokens
    )
}

/// A `chat.completion` object.
pub(crate) fn completion(call: &Call<'_>) -> Response<MockBody> {
    let request_id = ids::fresh("req_mock_");
    let mut body = String::with_capacity(360 + call.output_tokens as usize * 7);
    body.push_str(r#"{"id":"chatcmpl-mock"#);
    body.push_str(&request_id["req_mock_".len()..]);
    body.push_str(r#"","object":"chat.completion","created":"#);
    body.push_str(&ids::unix_now().as_secs().to_string());
    body.push_str(r#","model":"#);
    json::push_str(&mut body, &call.model);
    body.push_str(r#","choices":[{"index":0,"message":{"role":"assistant","content":""#);
    body.push_str(&text(call.output_tokens));
    body.push_str(r#"","refusal":null},"logprobs":null,"finish_reason":""#);
    body.push_str(finish_reason(call));
    body.push_str(r#""}],"usage":"#);
    body.push_str(&usage(call));
    body.push('}');

    let mut res = reply::response(StatusCode::OK, JSON, MockBody::full(body));
    let headers = res.headers_mut();
    headers.insert(X_REQUEST_ID, reply::value(request_id));
    reply::openai_ratelimit(headers);
    res
}

/// `chat.completion.chunk` events: a role chunk, one chunk per output token, a
/// finish chunk, a usage chunk when `include_usage`, then `data: [DONE]`.
///
/// With `stream_error_after`, a data-only `{"error":…}` chunk and `[DONE]` replace
/// everything after that many content chunks (wire reference §9).
pub(crate) fn stream(shared: &Arc<Shared>, call: &Call<'_>) -> Response<MockBody> {
    let request_id = ids::fresh("req_mock_");
    let mut prefix = String::with_capacity(160);
    prefix.push_str(r#"data: {"id":"chatcmpl-mock"#);
    prefix.push_str(&request_id["req_mock_".len()..]);
    prefix.push_str(r#"","object":"chat.completion.chunk","created":"#);
    prefix.push_str(&ids::unix_now().as_secs().to_string());
    prefix.push_str(r#","model":"#);
    json::push_str(&mut prefix, &call.model);
    prefix.push_str(r#","choices":["#);
    // With include_usage, every chunk but the last carries `"usage":null`.
    let suffix = if call.include_usage {
        "],\"usage\":null}\n\n"
    } else {
        "]}\n\n"
    };
    let usage_chunk = [prefix.as_str(), "],\"usage\":", &usage(call), "}\n\n"].concat();
    let chunk = move |choice: &str| Bytes::from([prefix.as_str(), choice, suffix].concat());

    let first = chunk(
        r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#,
    );
    let (deltas, tail) = match call.stream_error_after {
        Some(after) => (
            after.min(call.output_tokens),
            vec![
                Bytes::from_static(STREAM_ERROR.as_bytes()),
                Bytes::from_static(DONE.as_bytes()),
            ],
        ),
        None => {
            let mut tail = vec![chunk(&format!(
                r#"{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"{}"}}"#,
                finish_reason(call)
            ))];
            if call.include_usage {
                tail.push(Bytes::from(usage_chunk));
            }
            tail.push(Bytes::from_static(DONE.as_bytes()));
            (call.output_tokens, tail)
        }
    };
    let body = (0..deltas).map(move |i| {
        let word = WORDS[i as usize % WORDS.len()];
        chunk(&format!(
            r#"{{"index":0,"delta":{{"content":"{word}"}},"logprobs":null,"finish_reason":null}}"#
        ))
    });
    let events = std::iter::once(first).chain(body).chain(tail);

    let mut res = reply::stream(shared, events, call.event_interval);
    let headers = res.headers_mut();
    headers.insert(X_REQUEST_ID, reply::value(request_id));
    reply::openai_ratelimit(headers);
    res
}
