//! The few request-body fields the mock reads, merged with the request's script.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;

use crate::script::Script;

/// Model echoed when the request body has none.
pub(crate) const DEFAULT_MODEL: &str = "claude-sonnet-4-6";

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// One generation request: what to answer and how long.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub(crate) model: Cow<'a, str>,
    /// `ceil(body bytes / 4)`, a stand-in for a tokenizer.
    pub(crate) input_tokens: u64,
    /// `x-mock-output-tokens`, capped by `max_tokens`.
    pub(crate) output_tokens: u64,
    /// Whether `max_tokens` cut the output short (`stop_reason: max_tokens`).
    pub(crate) truncated: bool,
    pub(crate) stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    pub(crate) stream_error_after: Option<u64>,
    pub(crate) event_interval: Option<Duration>,
}

/// Input tokens the mock charges for a body of `len` bytes.
pub(crate) fn input_tokens(len: usize) -> u64 {
    (len as u64).div_ceil(4)
}

/// Checks that `body` is a JSON object (what every POST endpoint takes).
pub(crate) fn validate(body: &[u8]) -> Result<(), String> {
    parse_fields(body).map(|_| ())
}

impl<'a> Call<'a> {
    /// Reads `body` (a JSON object) and the script's output settings.
    ///
    /// The error is a message for a 400 `invalid_request_error`.
    pub(crate) fn parse(body: &'a [u8], script: &Script<'_>) -> Result<Self, String> {
        let fields = parse_fields(body)?;
        let limit = fields.max_tokens.or(fields.max_completion_tokens);
        let output_tokens = limit.map_or(script.output_tokens, |m| m.min(script.output_tokens));
        Ok(Call {
            model: if fields.model.is_empty() {
                Cow::Borrowed(DEFAULT_MODEL)
            } else {
                fields.model
            },
            input_tokens: input_tokens(body.len()),
            output_tokens,
            truncated: output_tokens < script.output_tokens,
            stream: fields.stream.unwrap_or(false),
            include_usage: fields
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            stream_error_after: script.stream_error_after,
            event_interval: script.event_interval,
        })
    }
}

fn parse_fields(body: &[u8]) -> Result<Fields<'_>, String> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(
            "request body must be a JSON object, e.g. {\"model\":\"claude-sonnet-4-6\",\
                    \"max_tokens\":1024,\"messages\":[…]}"
                .to_owned(),
        );
    }
    serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))
}
