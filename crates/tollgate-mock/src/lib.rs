//! A scriptable Anthropic-compatible upstream for tests and benchmarks.
//!
//! `tollgate-mock` answers `POST /v1/messages` (JSON or SSE), `POST
//! /v1/messages/count_tokens`, `GET /v1/models[/{id}]` and `POST /v1/chat/completions`
//! (OpenAI dialect) the way the real APIs do, and lets each request script the answer
//! with headers, so integration tests and benchmarks need no real upstream:
//!
//! | header | effect |
//! |---|---|
//! | `x-mock-status: 529` | fail with that status and its envelope (fixture bytes where the wire reference has one) |
//! | `x-mock-fail-times: N` + `x-mock-scenario: ID` | fail the first N requests of scenario ID (status from `x-mock-status`, default 529), then succeed; with `x-mock-stream-error-after` and no `x-mock-status`, the first N streams fail mid-stream instead |
//! | `x-mock-retry-after: S` | add `retry-after: S` to error replies (replaces F5's `7`) |
//! | `x-mock-latency-ms: MS` | wait before sending the response head |
//! | `x-mock-event-interval-ms: MS` | wait between stream events |
//! | `x-mock-stream-error-after: N` | end a stream with `event: error` (`overloaded_error`) after N deltas |
//! | `x-mock-output-tokens: N` | N output tokens = N text deltas (default 16; capped by `max_tokens`) |
//! | `x-mock-fixture: f8` | replay a [`fixtures`] response byte for byte (`f1` … `f9`, `f7-500`, `f7-529`) |
//! | `x-mock-error-format: html` | error bodies are an HTML page (`text/html`), like a proxy's 502 |
//! | `x-mock-error-code: CODE` | put `details.error_code` in the envelope; with 429 and `enforced_spend_limit_reached`, fixture F6 |
//!
//! A request header wins over the instance's [`MockOptions::default_header`]; an unknown
//! `x-mock-*` header or a malformed value is answered with a 400 that says what to send.
//! Every request is counted and (unless turned off) recorded for assertions.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tollgate_mock::{MockOptions, MockServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = MockServer::start(MockOptions::new()).await?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//!
//! let request = http::Request::post(format!("{}/v1/messages", mock.url()))
//!     .header("content-type", "application/json")
//!     .header("x-mock-status", "529")
//!     .body(Full::from(r#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[]}"#))?;
//! let response = client.request(request).await?;
//! assert_eq!(response.status().as_u16(), 529);
//! let body = response.into_body().collect().await?.to_bytes();
//! assert_eq!(body, tollgate_mock::fixtures::F7_529.body.as_bytes());
//!
//! assert_eq!(mock.received()[0].headers["x-mock-status"], "529");
//! mock.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod anthropic;
mod body;
mod call;
mod errors;
pub mod fixtures;
mod handler;
mod ids;
mod json;
mod openai;
mod reply;
mod script;
mod server;
mod state;

use state::Shared;

/// How many requests a recording mock keeps (the oldest are dropped first).
pub const RECORD_CAPACITY: usize = 10_000;

/// How a mock instance behaves when requests don't say otherwise.
///
/// The default records requests and has no default headers: every request succeeds
/// unless it carries `x-mock-*` headers.
#[derive(Debug, Clone)]
pub struct MockOptions {
    defaults: Vec<(String, String)>,
    record: bool,
    name: Option<String>,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl MockOptions {
    /// Recording on, no default headers, no name.
    pub fn new() -> Self {
        MockOptions {
            defaults: Vec::new(),
            record: true,
            name: None,
        }
    }

    /// Behaviour applied when the request doesn't set that header itself, e.g.
    /// `("x-mock-status", "529")` = "this route always 529s" (fallback tests).
    ///
    /// Only `x-mock-*` headers the mock understands are accepted; anything else makes
    /// [`MockServer::bind`] / [`serve`] fail with `InvalidInput`.
    pub fn default_header(mut self, name: &str, value: &str) -> Self {
        self.defaults.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Whether to keep a copy of each request for [`MockServer::received`]; benchmarks
    /// turn it off so that copying headers and bodies doesn't skew the numbers.
    pub fn record(mut self, on: bool) -> Self {
        self.record = on;
        self
    }

    /// Instance name, echoed in the response header `x-mock-name`, so a test can tell
    /// which upstream route answered.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }
}

/// A request as the mock received it, for assertions.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Request method.
    pub method: http::Method,
    /// Path and query, e.g. `/v1/models?limit=2`.
    pub path_and_query: String,
    /// Every header, as sent (credentials included: tests check what was forwarded).
    pub headers: http::HeaderMap,
    /// The whole body (empty if it could not be read or was over 32 MiB).
    pub body: Bytes,
}

impl RecordedRequest {
    /// The value of header `name`, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON, for assertions on forwarded fields.
    ///
    /// # Errors
    ///
    /// When the body is not valid JSON.
    pub fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
    }
}

/// A running mock on a local port; dropping it closes the listener and every connection.
///
/// Needs a Tokio runtime (with the `time` driver) to start.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl MockServer {
    /// Starts a mock on `127.0.0.1` with a free port.
    ///
    /// # Errors
    ///
    /// When binding fails or `options` are invalid (`InvalidInput`).
    pub async fn start(options: MockOptions) -> io::Result<MockServer> {
        Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), options).await
    }

    /// Starts a mock on `addr`.
    ///
    /// # Errors
    ///
    /// When binding fails or `options` are invalid (`InvalidInput`, e.g. an unknown
    /// `x-mock-*` default header or a non-ASCII name).
    pub async fn bind(addr: SocketAddr, options: MockOptions) -> io::Result<MockServer> {
        let shared = Arc::new(Shared::new(options)?);
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, Arc::clone(&shared), async move {
            // Resolves on `shutdown` (send) as well as when the sender is dropped.
            let _ = stopped.await;
        }));
        Ok(MockServer {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`, to configure as an upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Recorded requests in arrival order (at most [`RECORD_CAPACITY`], newest kept).
    pub fn received(&self) -> Vec<RecordedRequest> {
        self.shared.received()
    }

    /// Forgets the recorded requests (counters and scenarios are kept).
    pub fn clear(&self) {
        self.shared.clear();
    }

    /// Forgets how many requests each `x-mock-scenario` has seen, so `x-mock-fail-times`
    /// starts over.
    pub fn reset_scenarios(&self) {
        self.shared.reset_scenarios();
    }

    /// Requests received so far, counted even when recording is off.
    pub fn request_count(&self) -> u64 {
        self.shared.request_count()
    }

    /// Streams whose client went away before the stream ended.
    pub fn cancelled_streams(&self) -> u64 {
        self.shared.cancelled_streams()
    }

    /// Resolves once [`cancelled_streams`](Self::cancelled_streams) reaches `n`, so a test
    /// can wait for the mock to notice a disconnect without sleeping.
    pub async fn wait_cancelled_streams(&self, n: u64) {
        self.shared.wait_cancelled_streams(n).await;
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), then returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves the mock on an existing listener until `shutdown` resolves (for
/// `tollgate mock --listen`), then drains in-flight requests for up to 5 s.
///
/// # Errors
///
/// `InvalidInput` when `options` are invalid; otherwise only when accepting fails in a
/// way that is not about one connection or a temporary lack of resources.
pub async fn serve(
    listener: TcpListener,
    options: MockOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let shared = Arc::new(Shared::new(options)?);
    server::run(listener, shared, shutdown).await
}
