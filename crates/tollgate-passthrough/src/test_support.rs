//! Shared test helpers: the wire reference's fixtures and a body that yields frames on cue.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use tokio::sync::mpsc;

/// Wire reference §11 F1.
pub(crate) const F1_401: &str = r#"HTTP/1.1 401 Unauthorized
date: Mon, 23 Nov 2026 17:30:00 GMT
content-type: application/json
content-length: 132
request-id: req_011CfxAuth0000000000000001
x-should-retry: false

{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_011CfxAuth0000000000000001"}"#;

/// Wire reference §11 F2.
pub(crate) const F2_402: &str = r#"HTTP/1.1 402 Payment Required
date: Mon, 23 Nov 2026 17:30:00 GMT
content-type: application/json
content-length: 164
request-id: req_011CfxBill0000000000000002
x-should-retry: false

{"type":"error","error":{"type":"billing_error","message":"Your credit balance is too low to access the Claude API."},"request_id":"req_011CfxBill0000000000000002"}"#;

/// Wire reference §11 F3.
pub(crate) const F3_403: &str = r#"HTTP/1.1 403 Forbidden
date: Mon, 23 Nov 2026 17:30:00 GMT
content-type: application/json
content-length: 179
request-id: req_011CfxPerm0000000000000003
x-should-retry: false

{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."},"request_id":"req_011CfxPerm0000000000000003"}"#;

/// Wire reference §11 F4.
pub(crate) const F4_413: &str = r#"HTTP/1.1 413 Payload Too Large
date: Mon, 23 Nov 2026 17:30:00 GMT
content-type: application/json
content-length: 118

{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#;

/// Wire reference §11 F5.
pub(crate) const F5_429: &str = r#"HTTP/1.1 429 Too Many Requests
date: Mon, 23 Nov 2026 17:30:00 GMT
content-type: application/json
content-length: 197
request-id: req_011CfxRate0000000000000004
retry-after: 7
x-should-retry: true
anthropic-ratelimit-requests-limit: 1000
anthropic-ratelimit-requests-remaining: 0
anthropic-ratelimit-requests-reset: 2026-11-23T17:30:07Z
anthropic-ratelimit-input-tokens-limit: 2000000
anthropic-ratelimit-input-tokens-remaining: 1514000
anthropic-ratelimit-input-tokens-reset: 2026-11-23T17:30:01Z
anthropic-ratelimit-output-tokens-limit: 400000
anthropic-ratelimit-output-tokens-remaining: 398000
anthropic-ratelimit-output-tokens-reset: 2026-11-23T17:30:00Z
anthropic-ratelimit-tokens-limit: 2400000
anthropic-ratelimit-tokens-remaining: 1912000
anthropic-ratelimit-tokens-reset: 2026-11-23T17:30:01Z

{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your organization's rate limit of 1,000 requests per minute."},"request_id":"req_011CfxRate0000000000000004"}"#;

/// Wire reference §11 F6.
pub(crate) const F6_429_SPEND_CAP: &str = r#"HTTP/1.1 429 Too Many Requests
date: Mon, 23 Nov 2026 17:30:00 GMT
content-type: application/json
content-length: 257
request-id: req_011CfxCap00000000000000005

{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_011CfxCap00000000000000005"}"#;

/// Wire reference §11 F7.
pub(crate) const F7_500: &str = r#"HTTP/1.1 500 Internal Server Error
date: Mon, 23 Nov 2026 17:30:00 GMT
content-type: application/json
content-length: 125
request-id: req_011CfxApi00000000000000006
x-should-retry: true

{"type":"error","error":{"type":"api_error","message":"Internal server error"},"request_id":"req_011CfxApi00000000000000006"}"#;

/// Wire reference §11 F7.
pub(crate) const F7_529: &str = r#"HTTP/1.1 529 Overloaded
date: Mon, 23 Nov 2026 17:30:00 GMT
content-type: application/json
content-length: 121
request-id: req_011CfxOvl00000000000000007
x-should-retry: true

{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CfxOvl00000000000000007"}"#;

/// Status, headers and body of a fixture (LF line ends, as written in the reference).
pub(crate) fn parse_fixture(raw: &str) -> (StatusCode, HeaderMap, Bytes) {
    let (head, body) = raw
        .split_once("\n\n")
        .expect("fixture has a head and a body");
    let mut lines = head.lines();
    let status_line = lines.next().expect("fixture has a status line");
    let code = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .expect("fixture status");
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(": ").expect("fixture header line");
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    let status = StatusCode::from_u16(code).expect("status");
    (status, headers, Bytes::copy_from_slice(body.as_bytes()))
}

/// A fixture as a response with a complete body.
pub(crate) fn fixture(raw: &str) -> Response<TestBody> {
    let (status, headers, body) = parse_fixture(raw);
    let mut res = Response::new(TestBody::from(body));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}

/// A body error for tests.
#[derive(Debug)]
pub(crate) struct BodyError(pub(crate) String);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

/// A complete body, or one fed frame by frame through a channel.
#[derive(Debug)]
pub(crate) enum TestBody {
    Full(Option<Bytes>),
    Channel(mpsc::UnboundedReceiver<Result<Bytes, BodyError>>),
}

impl TestBody {
    pub(crate) fn empty() -> Self {
        TestBody::Full(None)
    }

    /// A body whose frames are sent through the returned sender; it ends when the sender
    /// is dropped.
    pub(crate) fn channel() -> (mpsc::UnboundedSender<Result<Bytes, BodyError>>, TestBody) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, TestBody::Channel(rx))
    }

    /// Poll for the next data frame once, without waiting.
    pub(crate) fn poll_data_now(&mut self) -> Poll<Option<Bytes>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(self).poll_frame(&mut cx).map(|frame| {
            frame.map(|f| f.expect("no body error").into_data().expect("a data frame"))
        })
    }

    /// Every remaining byte.
    pub(crate) async fn bytes(self) -> Bytes {
        use http_body_util::BodyExt;
        self.collect().await.expect("no body error").to_bytes()
    }
}

impl From<Bytes> for TestBody {
    fn from(b: Bytes) -> Self {
        TestBody::Full(Some(b))
    }
}

impl From<&'static str> for TestBody {
    fn from(s: &'static str) -> Self {
        TestBody::Full(Some(Bytes::from_static(s.as_bytes())))
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            TestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            TestBody::Channel(rx) => rx.poll_recv(cx).map(|m| m.map(|r| r.map(Frame::data))),
        }
    }
}
