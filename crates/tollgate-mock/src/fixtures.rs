//! The wire reference's byte-level fixtures F1–F9, as constants.
//!
//! The mock serves these exact bytes (for `x-mock-status` values that have a fixture, and
//! for `x-mock-fixture`), and tests anywhere in the workspace compare responses against
//! them. Header lists leave out the framing headers `date`, `content-length` and
//! `transfer-encoding`: hyper writes those, and `content-length` always equals
//! `body.len()`.

/// One recorded upstream response: status, headers (in wire order) and body bytes.
///
/// Kept as plain `&'static` data so it can be compared against anything (raw socket
/// bytes, a hyper response, a reqwest response) without conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixture {
    /// Value of `x-mock-fixture` that replays this fixture (`f1` … `f9`, `f7-500`, `f7-529`).
    pub name: &'static str,
    /// HTTP status code.
    pub status: u16,
    /// Response headers, lowercase names, without `date`, `content-length`, `transfer-encoding`.
    pub headers: &'static [(&'static str, &'static str)],
    /// Body bytes exactly as on the wire (de-chunked for the streams).
    pub body: &'static str,
}

impl Fixture {
    /// The value of header `name` in this fixture, if it has one.
    pub fn header(&self, name: &str) -> Option<&'static str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Whether this fixture is an SSE stream (F8, F9), served event by event.
    pub fn is_stream(&self) -> bool {
        self.status == 200
    }
}

/// Every fixture, in document order.
pub const ALL: [&Fixture; 10] = [
    &F1_401,
    &F2_402,
    &F3_403,
    &F4_413,
    &F5_429,
    &F6_429_SPEND_CAP,
    &F7_500,
    &F7_529,
    &F8_STREAM,
    &F9_STREAM_ERROR,
];

/// The fixture whose [`Fixture::name`] is `name` (ASCII case-insensitive).
pub fn by_name(name: &str) -> Option<&'static Fixture> {
    ALL.into_iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// The fixture the mock answers for an error `status` (the spend-cap F6 needs
/// `x-mock-error-code: enforced_spend_limit_reached` and is not returned here).
pub fn for_status(status: u16) -> Option<&'static Fixture> {
    match status {
        401 => Some(&F1_401),
        402 => Some(&F2_402),
        403 => Some(&F3_403),
        413 => Some(&F4_413),
        429 => Some(&F5_429),
        500 => Some(&F7_500),
        529 => Some(&F7_529),
        _ => None,
    }
}

/// F1 — 401 `authentication_error`: the credential was rejected.
pub const F1_401: Fixture = Fixture {
    name: "f1",
    status: 401,
    headers: &[
        ("content-type", "application/json"),
        ("request-id", "req_011CfxAuth0000000000000001"),
        ("x-should-retry", "false"),
    ],
    body: r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_011CfxAuth0000000000000001"}"#,
};

/// F2 — 402 `billing_error`: the organisation cannot pay.
pub const F2_402: Fixture = Fixture {
    name: "f2",
    status: 402,
    headers: &[
        ("content-type", "application/json"),
        ("request-id", "req_011CfxBill0000000000000002"),
        ("x-should-retry", "false"),
    ],
    body: r#"{"type":"error","error":{"type":"billing_error","message":"Your credit balance is too low to access the Claude API."},"request_id":"req_011CfxBill0000000000000002"}"#,
};

/// F3 — 403 `permission_error`: the key may not use this resource.
pub const F3_403: Fixture = Fixture {
    name: "f3",
    status: 403,
    headers: &[
        ("content-type", "application/json"),
        ("request-id", "req_011CfxPerm0000000000000003"),
        ("x-should-retry", "false"),
    ],
    body: r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."},"request_id":"req_011CfxPerm0000000000000003"}"#,
};

/// F4 — 413 `request_too_large`, edge-generated: no `request-id` header and no `request_id` in the body.
pub const F4_413: Fixture = Fixture {
    name: "f4",
    status: 413,
    headers: &[("content-type", "application/json")],
    body: r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#,
};

/// F5 — 429 `rate_limit_error` with `retry-after: 7` and the full `anthropic-ratelimit-*` set.
pub const F5_429: Fixture = Fixture {
    name: "f5",
    status: 429,
    headers: &[
        ("content-type", "application/json"),
        ("request-id", "req_011CfxRate0000000000000004"),
        ("retry-after", "7"),
        ("x-should-retry", "true"),
        ("anthropic-ratelimit-requests-limit", "1000"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "2026-11-23T17:30:07Z"),
        ("anthropic-ratelimit-input-tokens-limit", "2000000"),
        ("anthropic-ratelimit-input-tokens-remaining", "1514000"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2026-11-23T17:30:01Z",
        ),
        ("anthropic-ratelimit-output-tokens-limit", "400000"),
        ("anthropic-ratelimit-output-tokens-remaining", "398000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2026-11-23T17:30:00Z",
        ),
        ("anthropic-ratelimit-tokens-limit", "2400000"),
        ("anthropic-ratelimit-tokens-remaining", "1912000"),
        ("anthropic-ratelimit-tokens-reset", "2026-11-23T17:30:01Z"),
    ],
    body: r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your organization's rate limit of 1,000 requests per minute."},"request_id":"req_011CfxRate0000000000000004"}"#,
};

/// F6 — 429 tier spend cap (`details.error_code: enforced_spend_limit_reached`), without `retry-after`.
pub const F6_429_SPEND_CAP: Fixture = Fixture {
    name: "f6",
    status: 429,
    headers: &[
        ("content-type", "application/json"),
        ("request-id", "req_011CfxCap00000000000000005"),
    ],
    body: r#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_011CfxCap00000000000000005"}"#,
};

/// F7 (500) — 500 `api_error`.
pub const F7_500: Fixture = Fixture {
    name: "f7-500",
    status: 500,
    headers: &[
        ("content-type", "application/json"),
        ("request-id", "req_011CfxApi00000000000000006"),
        ("x-should-retry", "true"),
    ],
    body: r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"},"request_id":"req_011CfxApi00000000000000006"}"#,
};

/// F7 (529) — 529 `overloaded_error`.
pub const F7_529: Fixture = Fixture {
    name: "f7-529",
    status: 529,
    headers: &[
        ("content-type", "application/json"),
        ("request-id", "req_011CfxOvl00000000000000007"),
        ("x-should-retry", "true"),
    ],
    body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CfxOvl00000000000000007"}"#,
};

/// F8 — A complete SSE stream (983-byte body): text `Hello, world!`, 472 input and 15 output tokens.
pub const F8_STREAM: Fixture = Fixture {
    name: "f8",
    status: 200,
    headers: &[
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
        ("request-id", "req_011CfxSse00000000000000008"),
    ],
    body: r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01FxStream000000000000001","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":2}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type":"ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", world!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}

"#,
};

/// F9 — An SSE stream that fails mid-way with `event: error` / `overloaded_error` (708-byte body).
pub const F9_STREAM_ERROR: Fixture = Fixture {
    name: "f9",
    status: 200,
    headers: &[
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
        ("request-id", "req_011CfxSse00000000000000008"),
    ],
    body: r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01FxStream000000000000002","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Once upon a"}}

event: error
data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CfxSseErr000000000008"}

"#,
};
