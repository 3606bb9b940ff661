//! Token usage, read from a response body while it streams past.
//!
//! [`Observed`] wraps a response body. Every frame passes through untouched and
//! unbuffered; on the way it reads the `usage` the upstream reports:
//!
//! - **JSON** (non-streaming): `usage` of the message (Anthropic) or of the chat
//!   completion (OpenAI), read when the body ends. Chunks are kept by reference
//!   (`Bytes` clones, no copy) up to [`MAX_JSON_BYTES`]; a larger body is relayed but
//!   its usage is not read.
//! - **SSE** (Anthropic): input and cache tokens from `message_start`, the **last**
//!   `message_delta`'s cumulative counts (which overwrite the start values they carry),
//!   `message_stop` as completion, `event: error` as failure. Content deltas are only
//!   counted, never buffered, so memory per stream is bounded by one line of a usage
//!   event (at most [`MAX_LINE_BYTES`]) whatever the stream's length.
//! - **SSE** (OpenAI): the chunk carrying `usage`, `data: [DONE]` as completion, a chunk
//!   with a top-level `error` as failure.
//!
//! When the body ends, fails or is dropped, the callback gets one [`UsageReport`]:
//! exactly once, whatever happens.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tollgate_core::usage::{BodyFormat, Observed, Outcome};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let json = r#"{"type":"message","usage":{"input_tokens":12,"output_tokens":30}}"#;
//! let (tx, rx) = std::sync::mpsc::channel();
//! let body = Observed::new(Full::new(Bytes::from(json)), BodyFormat::Json, move |report| {
//!     let _ = tx.send(report);
//! });
//! let bytes = body.collect().await.unwrap().to_bytes();
//! assert_eq!(bytes, json); // untouched
//! let report = rx.recv().unwrap();
//! assert_eq!(report.outcome, Outcome::Completed);
//! assert_eq!((report.usage.input, report.usage.output), (12, 30));
//! # }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde::Deserialize;

use crate::error::Dialect;
use crate::json_skim::{self, Skim};

/// JSON bodies larger than this are relayed without reading their usage (16 MiB).
pub const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;
/// An SSE line of a usage-bearing event longer than this is skipped (64 KiB).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Tokens a response used. `input` excludes cache reads and writes, as the API reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Uncached input tokens (`input_tokens`; OpenAI: `prompt_tokens` minus cached).
    pub input: u64,
    /// Output tokens (`output_tokens`; OpenAI: `completion_tokens`).
    pub output: u64,
    /// Cache writes, all TTLs (`cache_creation_input_tokens`).
    pub cache_write: u64,
    /// The part of `cache_write` written with the 1-hour TTL (priced differently).
    pub cache_write_1h: u64,
    /// Cache reads (`cache_read_input_tokens`; OpenAI: `prompt_tokens_details.cached_tokens`).
    pub cache_read: u64,
}

impl Usage {
    /// All input-side tokens: uncached input plus cache writes and reads.
    pub fn total_input(&self) -> u64 {
        self.input + self.cache_write + self.cache_read
    }
}

/// How a response body ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The body ended normally (`message_stop`, `[DONE]`, or a complete JSON body).
    Completed,
    /// The upstream signalled an error in-band (`event: error`), or the body failed.
    /// Holds the error type when one was given.
    Errored(Option<String>),
    /// The body ended without the stream's terminal event.
    Truncated,
    /// The body was dropped before its end: the client went away.
    Cancelled,
}

/// What [`Observed`] reports once the body is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageReport {
    /// The best usage known: the last values the upstream reported.
    pub usage: Usage,
    /// Whether the upstream reported any usage at all.
    pub usage_seen: bool,
    /// Whether the final output count was seen (`message_delta`, or a JSON/OpenAI usage
    /// object); when `false`, `usage.output` is at best a partial count.
    pub output_final: bool,
    /// How the body ended.
    pub outcome: Outcome,
    /// Content delta events relayed (streams only).
    pub delta_events: u64,
    /// Bytes of content delta `data:` lines relayed (streams only): a basis for estimating
    /// output when a stream ends without final usage.
    pub delta_bytes: u64,
}

/// What a body is, and so how to read usage from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON document.
    Json,
    /// A server-sent event stream in the given dialect.
    Sse(Dialect),
    /// Anything else: relayed, no usage.
    Other,
}

impl BodyFormat {
    /// The format of a response from its `content-type`.
    pub fn from_headers(headers: &HeaderMap, dialect: Dialect) -> BodyFormat {
        let ct = headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if starts_with_ignore_case(ct, b"text/event-stream") {
            BodyFormat::Sse(dialect)
        } else if starts_with_ignore_case(ct, b"application/json") {
            BodyFormat::Json
        } else {
            BodyFormat::Other
        }
    }
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

pin_project! {
    /// A response body that reports its usage when it is over; see the [module docs](self).
    pub struct Observed<B, F>
    where
        F: FnOnce(UsageReport),
    {
        #[pin]
        inner: B,
        reporter: Reporter<F>,
    }
}

impl<B, F> Observed<B, F>
where
    F: FnOnce(UsageReport),
{
    /// Wrap `inner`; `on_done` is called exactly once when the body ends, fails or is dropped.
    pub fn new(inner: B, format: BodyFormat, on_done: F) -> Self {
        Observed {
            inner,
            reporter: Reporter {
                scanner: Scanner::new(format),
                on_done: Some(on_done),
            },
        }
    }
}

impl<B, F> Body for Observed<B, F>
where
    B: Body<Data = Bytes>,
    F: FnOnce(UsageReport),
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.reporter.scanner.feed(data);
                }
                // Servers stop polling once the body says it has ended (content-length
                // reached), so that is the end too, not only `None`.
                if this.inner.is_end_stream() {
                    this.reporter.finish(None);
                }
            }
            Poll::Ready(Some(Err(_))) => this.reporter.finish(Some(Outcome::Errored(None))),
            Poll::Ready(None) => this.reporter.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct Reporter<F: FnOnce(UsageReport)> {
    scanner: Scanner,
    on_done: Option<F>,
}

impl<F: FnOnce(UsageReport)> Reporter<F> {
    /// Report once. `outcome` overrides what the scanner concluded from the bytes.
    fn finish(&mut self, outcome: Option<Outcome>) {
        if let Some(on_done) = self.on_done.take() {
            let report = self.scanner.report(outcome);
            on_done(report);
        }
    }
}

impl<F: FnOnce(UsageReport)> Drop for Reporter<F> {
    fn drop(&mut self) {
        self.finish(Some(Outcome::Cancelled));
    }
}

// ===== MeteredBody =====

/// What a [`MeteredBody`] calls once its body is over.
pub type OnUsage = Box<dyn FnOnce(UsageReport) + Send + Sync>;

pin_project! {
    /// A layer's response body: the inner body untouched, the inner body [`Observed`] for
    /// its usage, or a complete body of bytes (a rejection, or an outer layer re-rendering
    /// one). Frames pass through as they come; nothing is buffered.
    ///
    /// Layers that meter usage (rate limits charge output, balance settles) answer with it,
    /// so their response types stay one type whichever way a request went.
    pub struct MeteredBody<B> {
        #[pin]
        kind: MeteredKind<B>,
    }
}

pin_project! {
    #[project = MeteredKindProj]
    enum MeteredKind<B> {
        Plain { #[pin] body: B },
        Metered { #[pin] body: Observed<B, OnUsage> },
        Full { data: Option<Bytes> },
    }
}

impl<B> MeteredBody<B> {
    /// The inner body, untouched.
    pub fn plain(body: B) -> Self {
        MeteredBody {
            kind: MeteredKind::Plain { body },
        }
    }

    /// The inner body, observed for its usage.
    pub fn metered(body: Observed<B, OnUsage>) -> Self {
        MeteredBody {
            kind: MeteredKind::Metered { body },
        }
    }

    /// A complete body of these bytes.
    pub fn full(data: Bytes) -> Self {
        MeteredBody {
            kind: MeteredKind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

/// A complete body of these bytes (how rejections, and outer layers re-rendering them,
/// build a body).
impl<B> From<Bytes> for MeteredBody<B> {
    fn from(data: Bytes) -> Self {
        MeteredBody::full(data)
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            MeteredKindProj::Plain { body } => body.poll_frame(cx),
            MeteredKindProj::Metered { body } => body.poll_frame(cx),
            MeteredKindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            MeteredKind::Plain { body } => body.is_end_stream(),
            MeteredKind::Metered { body } => body.is_end_stream(),
            MeteredKind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            MeteredKind::Plain { body } => body.size_hint(),
            MeteredKind::Metered { body } => body.size_hint(),
            MeteredKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl<B> std::fmt::Debug for MeteredBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            MeteredKind::Plain { .. } => "plain",
            MeteredKind::Metered { .. } => "metered",
            MeteredKind::Full { .. } => "full",
        };
        f.debug_struct("MeteredBody").field("kind", &kind).finish()
    }
}

// ===== UsageTap =====

/// One response's usage, read once and shared by every layer that meters it.
///
/// Several layers need the same [`UsageReport`] (rate limits charge output tokens,
/// balance settles, metrics count tokens). Rather than each wrapping the body in its own
/// [`Observed`] (one scan and, for JSON, one parse per layer), the innermost layer
/// observes the body and leaves a tap in the response's extensions; layers further out
/// [`subscribe`](UsageTap::subscribe) to it and pass the body on untouched.
/// [`observe_response`] does either, whichever applies.
///
/// Subscribers are called once, in the order they subscribed, right after the observing
/// layer's own callback: the order nested [`Observed`] bodies would report in. A layer
/// that replaces a response's body but keeps its extensions must remove the tap
/// (`extensions_mut().remove::<UsageTap>()`), since it no longer describes that body.
#[derive(Clone)]
pub struct UsageTap {
    format: BodyFormat,
    state: std::sync::Arc<std::sync::Mutex<TapState>>,
}

enum TapState {
    Pending(Vec<OnUsage>),
    Done(UsageReport),
}

impl UsageTap {
    fn new(format: BodyFormat) -> Self {
        UsageTap {
            format,
            state: std::sync::Arc::new(std::sync::Mutex::new(TapState::Pending(Vec::new()))),
        }
    }

    /// The format the body is read as.
    pub fn format(&self) -> BodyFormat {
        self.format
    }

    /// Call `on_done` with the body's report once it is over (at once if it already is).
    pub fn subscribe(&self, on_done: OnUsage) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            TapState::Pending(subscribers) => subscribers.push(on_done),
            TapState::Done(report) => {
                let report = report.clone();
                drop(state);
                on_done(report);
            }
        }
    }

    /// Subscribe `on_done` to the tap `res` carries for a body of `format`; without one,
    /// `on_done` comes back and the caller observes the body itself (see
    /// [`observe_response`], which does).
    pub fn subscribe_to<B>(
        res: &http::Response<B>,
        format: BodyFormat,
        on_done: OnUsage,
    ) -> Result<(), OnUsage> {
        match res.extensions().get::<UsageTap>() {
            Some(tap) if tap.format == format => {
                tap.subscribe(on_done);
                Ok(())
            }
            _ => Err(on_done),
        }
    }

    /// Hand the report to every subscriber, and to later ones as they come.
    fn publish(&self, report: UsageReport) {
        let subscribers = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match std::mem::replace(&mut *state, TapState::Done(report.clone())) {
                TapState::Pending(subscribers) => subscribers,
                TapState::Done(_) => Vec::new(),
            }
        };
        let mut subscribers = subscribers.into_iter().peekable();
        while let Some(on_done) = subscribers.next() {
            if subscribers.peek().is_none() {
                on_done(report);
                break;
            }
            on_done(report.clone());
        }
    }
}

impl std::fmt::Debug for UsageTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageTap")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Meter a response's usage: `on_done` gets its [`UsageReport`] once the body is over.
///
/// If an inner layer already observes this body (a [`UsageTap`] of the same format in the
/// extensions), `on_done` subscribes to it and the body passes on
/// [plain](MeteredBody::plain): the body is read once however many layers meter it.
/// Otherwise the body is [`Observed`] here and a tap is left for the layers further out.
pub fn observe_response<B>(
    res: http::Response<B>,
    format: BodyFormat,
    on_done: OnUsage,
) -> http::Response<MeteredBody<B>> {
    let on_done = match UsageTap::subscribe_to(&res, format, on_done) {
        Ok(()) => return res.map(MeteredBody::plain),
        Err(on_done) => on_done,
    };
    let (mut parts, body) = res.into_parts();
    let tap = UsageTap::new(format);
    parts.extensions.insert(tap.clone());
    let on_done: OnUsage = Box::new(move |report: UsageReport| {
        on_done(report.clone());
        tap.publish(report);
    });
    http::Response::from_parts(
        parts,
        MeteredBody::metered(Observed::new(body, format, on_done)),
    )
}

// ===== Scanner =====

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    None,
    MessageStart,
    MessageDelta,
    MessageStop,
    Error,
    Delta,
    Other,
}

/// The incremental reader behind [`Observed`], usable on its own (e.g. by a layer that
/// holds events back before committing a stream).
#[derive(Debug)]
pub struct Scanner {
    format: BodyFormat,
    // SSE: the current event name and an unfinished line carried between frames.
    event: Event,
    partial: BytesMut,
    partial_len: usize,
    // JSON: the body's chunks by reference.
    chunks: Vec<Bytes>,
    json_len: usize,
    usage: Usage,
    usage_seen: bool,
    output_final: bool,
    completed: bool,
    error: Option<Option<String>>,
    delta_events: u64,
    delta_bytes: u64,
}

impl Scanner {
    /// A scanner for a body of `format`.
    pub fn new(format: BodyFormat) -> Self {
        Scanner {
            format,
            event: Event::None,
            partial: BytesMut::new(),
            partial_len: 0,
            chunks: Vec::new(),
            json_len: 0,
            usage: Usage::default(),
            usage_seen: false,
            output_final: false,
            completed: false,
            error: None,
            delta_events: 0,
            delta_bytes: 0,
        }
    }

    /// Read the next piece of the body.
    pub fn feed(&mut self, data: &Bytes) {
        match self.format {
            BodyFormat::Json => {
                self.json_len = self.json_len.saturating_add(data.len());
                if self.json_len <= MAX_JSON_BYTES {
                    self.chunks.push(data.clone());
                } else {
                    self.chunks = Vec::new();
                }
            }
            BodyFormat::Sse(_) => self.feed_sse(data),
            BodyFormat::Other => {}
        }
    }

    /// Usage reported so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Content delta events seen so far.
    pub fn delta_events(&self) -> u64 {
        self.delta_events
    }

    /// Whether an in-band error was seen, and its type.
    pub fn error(&self) -> Option<Option<&str>> {
        self.error.as_ref().map(|e| e.as_deref())
    }

    /// Conclude: `outcome` overrides what the bytes said.
    pub fn report(&mut self, outcome: Option<Outcome>) -> UsageReport {
        if self.format == BodyFormat::Json {
            // A cut-off document does not parse, so this is safe whatever `outcome` says.
            self.finish_json();
        }
        let from_bytes = if let Some(err) = &self.error {
            Outcome::Errored(err.clone())
        } else if self.completed || self.format == BodyFormat::Other {
            Outcome::Completed
        } else {
            Outcome::Truncated
        };
        let outcome = match outcome {
            // A drop after the terminal event is not a cancellation.
            Some(Outcome::Cancelled) if self.completed || self.error.is_some() => from_bytes,
            Some(o) => o,
            None => from_bytes,
        };
        UsageReport {
            usage: self.usage,
            usage_seen: self.usage_seen,
            output_final: self.output_final,
            outcome,
            delta_events: self.delta_events,
            delta_bytes: self.delta_bytes,
        }
    }

    fn finish_json(&mut self) {
        let chunks = std::mem::take(&mut self.chunks);
        if self.json_len > MAX_JSON_BYTES || chunks.is_empty() {
            return;
        }
        let whole = if chunks.len() == 1 {
            chunks[0].clone()
        } else {
            let mut buf = BytesMut::with_capacity(self.json_len);
            for c in &chunks {
                buf.extend_from_slice(c);
            }
            buf.freeze()
        };
        // The skim finds `usage` without deserializing the content around it; what it
        // can't decide, serde does, as it did for every reply before.
        let usage = match json_skim::top_level_field(&whole, b"usage") {
            Skim::Field(raw) => serde_json::from_slice::<Option<UsageJson>>(raw),
            Skim::Absent => Ok(None),
            Skim::Unsure => serde_json::from_slice::<JsonDoc>(&whole).map(|doc| doc.usage),
        };
        let Ok(usage) = usage else {
            return;
        };
        self.completed = true;
        if let Some(u) = usage {
            self.apply(&u, true);
            self.output_final = true;
        }
    }

    fn feed_sse(&mut self, data: &Bytes) {
        let mut rest: &[u8] = data;
        while !rest.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    let (line, tail) = rest.split_at(i);
                    rest = &tail[1..];
                    if self.partial_len > 0 {
                        if self.partial_len + line.len() <= MAX_LINE_BYTES {
                            self.partial.extend_from_slice(line);
                        }
                        self.partial_len += line.len();
                        let whole = std::mem::take(&mut self.partial);
                        let len = self.partial_len;
                        self.partial_len = 0;
                        if len <= MAX_LINE_BYTES {
                            self.line(&whole, len);
                        } else {
                            self.line_too_long(len);
                        }
                        self.partial = whole;
                        self.partial.clear();
                    } else {
                        self.line(line, line.len());
                    }
                }
                None => {
                    // An unfinished line: keep it (bounded) until its end arrives.
                    if self.partial_len + rest.len() <= MAX_LINE_BYTES {
                        self.partial.extend_from_slice(rest);
                    }
                    self.partial_len += rest.len();
                    rest = &[];
                }
            }
        }
    }

    /// An over-long line is skipped, but a content delta is still counted.
    fn line_too_long(&mut self, len: usize) {
        if self.event == Event::Delta {
            self.delta_events += 1;
            self.delta_bytes += len as u64;
        }
    }

    fn line(&mut self, line: &[u8], len: usize) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.event = Event::None;
            return;
        }
        if let Some(name) = line.strip_prefix(b"event:") {
            let name = name.strip_prefix(b" ").unwrap_or(name);
            self.event = match name {
                b"content_block_delta" => Event::Delta,
                b"message_start" => Event::MessageStart,
                b"message_delta" => Event::MessageDelta,
                b"message_stop" => Event::MessageStop,
                b"error" => Event::Error,
                _ => Event::Other,
            };
            return;
        }
        let Some(data) = line.strip_prefix(b"data:") else {
            return; // comments (":"), id:, retry:
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        match (self.event, self.format) {
            (Event::Delta, _) => {
                self.delta_events += 1;
                self.delta_bytes += len as u64;
            }
            (Event::MessageStart, _) => {
                if let Ok(ev) = serde_json::from_slice::<MessageStart>(data) {
                    if let Some(u) = ev.message.usage {
                        self.apply(&u, false);
                    }
                }
            }
            (Event::MessageDelta, _) => {
                if let Ok(ev) = serde_json::from_slice::<JsonDoc>(data) {
                    if let Some(u) = ev.usage {
                        self.apply(&u, false);
                        if u.output_tokens.is_some() {
                            self.output_final = true;
                        }
                    }
                }
            }
            (Event::MessageStop, _) => self.completed = true,
            (Event::Error, _) => self.error = Some(error_type(data)),
            (Event::Other, _) => {}
            (Event::None, BodyFormat::Sse(Dialect::OpenAi)) => self.openai_data(data, len),
            (Event::None, _) => {}
        }
    }

    fn openai_data(&mut self, data: &[u8], len: usize) {
        if data == b"[DONE]" {
            self.completed = true;
            return;
        }
        let has = |needle: &[u8]| memchr::memmem::find(data, needle).is_some();
        if has(b"\"usage\"") || has(b"\"error\"") {
            if let Ok(chunk) = serde_json::from_slice::<OpenAiChunk>(data) {
                if let Some(err) = chunk.error {
                    self.error = Some(err.kind);
                    return;
                }
                if let Some(u) = chunk.usage {
                    self.apply(&u, true);
                    self.output_final = true;
                }
                if chunk.has_content {
                    self.delta_events += 1;
                    self.delta_bytes += len as u64;
                }
                return;
            }
        }
        self.delta_events += 1;
        self.delta_bytes += len as u64;
    }

    /// Reported counts overwrite earlier ones; absent counts leave them (the SDK's rule).
    fn apply(&mut self, u: &UsageJson, openai: bool) {
        self.usage_seen = true;
        if openai {
            let cached = u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0);
            if let Some(p) = u.prompt_tokens {
                self.usage.input = p.saturating_sub(cached);
                self.usage.cache_read = cached;
            }
            if let Some(c) = u.completion_tokens {
                self.usage.output = c;
            }
        }
        if let Some(v) = u.input_tokens {
            self.usage.input = v;
        }
        if let Some(v) = u.output_tokens {
            self.usage.output = v;
        }
        if let Some(v) = u.cache_creation_input_tokens {
            self.usage.cache_write = v;
        }
        if let Some(v) = u.cache_read_input_tokens {
            self.usage.cache_read = v;
        }
        if let Some(split) = &u.cache_creation {
            if let Some(v) = split.ephemeral_1h_input_tokens {
                self.usage.cache_write_1h = v;
            }
        }
    }
}

fn error_type(data: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<ErrorBody>,
    }
    serde_json::from_slice::<Envelope>(data)
        .ok()
        .and_then(|e| e.error)
        .and_then(|e| e.kind)
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct JsonDoc {
    #[serde(default)]
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct MessageStart {
    message: JsonDoc,
}

#[derive(Deserialize)]
struct OpenAiChunk {
    #[serde(default)]
    usage: Option<UsageJson>,
    #[serde(default)]
    error: Option<ErrorBody>,
    #[serde(default, rename = "choices", deserialize_with = "non_empty")]
    has_content: bool,
}

fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Vec::<serde::de::IgnoredAny>::deserialize(d)?;
    Ok(!v.is_empty())
}

#[derive(Deserialize)]
struct UsageJson {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation: Option<CacheSplit>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct CacheSplit {
    ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// Fixtures F8 (a complete stream) and F9 (errors after the first delta), byte for
    /// byte, from the one copy the mock serves.
    const F8: &str = tollgate_mock::fixtures::F8_STREAM.body;
    const F9: &str = tollgate_mock::fixtures::F9_STREAM_ERROR.body;

    type Chunks = Vec<Result<Frame<Bytes>, std::convert::Infallible>>;

    fn frames(text: &str, sizes: &[usize]) -> Chunks {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < bytes.len() {
            let n = sizes[i % sizes.len()].max(1).min(bytes.len() - at);
            out.push(Ok(Frame::data(Bytes::copy_from_slice(&bytes[at..at + n]))));
            at += n;
            i += 1;
        }
        out
    }

    async fn run(chunks: Chunks, format: BodyFormat) -> (Bytes, UsageReport) {
        let slot = Arc::new(Mutex::new(None));
        let s = slot.clone();
        let body = Observed::new(
            StreamBody::new(futures_util::stream::iter(chunks)),
            format,
            move |r| *s.lock().expect("lock") = Some(r),
        );
        let bytes = body.collect().await.expect("infallible").to_bytes();
        let report = slot.lock().expect("lock").take().expect("reported");
        (bytes, report)
    }

    #[tokio::test]
    async fn reads_f8_usage_and_passes_bytes_untouched() {
        let (bytes, r) = run(frames(F8, &[F8.len()]), BodyFormat::Sse(Dialect::Anthropic)).await;
        assert_eq!(bytes, F8.as_bytes());
        assert_eq!(r.outcome, Outcome::Completed);
        assert_eq!(r.usage.input, 472);
        assert_eq!(r.usage.output, 15);
        assert!(r.output_final);
        assert_eq!(r.delta_events, 2);
    }

    #[tokio::test]
    async fn events_split_at_every_byte_give_the_same_report() {
        let (whole_bytes, whole) =
            run(frames(F8, &[F8.len()]), BodyFormat::Sse(Dialect::Anthropic)).await;
        for sizes in [&[1][..], &[2, 3, 5], &[7, 64, 1], &[100]] {
            let (bytes, r) = run(frames(F8, sizes), BodyFormat::Sse(Dialect::Anthropic)).await;
            assert_eq!(bytes, whole_bytes);
            assert_eq!(r, whole, "sizes {sizes:?}");
        }
    }

    #[tokio::test]
    async fn crlf_line_endings_are_understood() {
        let crlf = F8.replace('\n', "\r\n");
        let (_, r) = run(frames(&crlf, &[13]), BodyFormat::Sse(Dialect::Anthropic)).await;
        assert_eq!((r.usage.input, r.usage.output), (472, 15));
        assert_eq!(r.outcome, Outcome::Completed);
    }

    #[tokio::test]
    async fn mid_stream_error_reports_errored_with_partial_usage() {
        let (_, r) = run(frames(F9, &[40]), BodyFormat::Sse(Dialect::Anthropic)).await;
        assert_eq!(r.outcome, Outcome::Errored(Some("overloaded_error".into())));
        assert_eq!(r.usage.input, 25);
        assert_eq!(r.usage.output, 1);
        assert!(!r.output_final);
        assert_eq!(r.delta_events, 1);
    }

    #[tokio::test]
    async fn stream_without_terminal_event_is_truncated() {
        let cut = &F8[..F8.find("event: message_delta").expect("present")];
        let (_, r) = run(frames(cut, &[50]), BodyFormat::Sse(Dialect::Anthropic)).await;
        assert_eq!(r.outcome, Outcome::Truncated);
        assert_eq!(r.delta_events, 2);
    }

    #[tokio::test]
    async fn dropping_the_body_reports_cancelled_once() {
        let count = Arc::new(Mutex::new(Vec::new()));
        let c = count.clone();
        let mut body = Observed::new(
            StreamBody::new(futures_util::stream::iter(frames(F8, &[200]))),
            BodyFormat::Sse(Dialect::Anthropic),
            move |r| c.lock().expect("lock").push(r),
        );
        let first = body.frame().await;
        assert!(first.is_some());
        drop(body);
        let reports = count.lock().expect("lock");
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].outcome, Outcome::Cancelled);
    }

    #[tokio::test]
    async fn a_body_that_ends_by_length_reports_on_its_last_frame() {
        let json = r#"{"usage":{"input_tokens":3,"output_tokens":4}}"#;
        let slot = Arc::new(Mutex::new(None));
        let s = slot.clone();
        let mut body = Observed::new(
            http_body_util::Full::new(Bytes::from(json)),
            BodyFormat::Json,
            move |r| *s.lock().expect("lock") = Some(r),
        );
        // Poll exactly the one data frame, as hyper does for a body with a known length.
        let _ = body.frame().await;
        assert!(body.is_end_stream());
        let report = slot
            .lock()
            .expect("lock")
            .take()
            .expect("reported before drop");
        assert_eq!(report.outcome, Outcome::Completed);
        assert_eq!(report.usage.output, 4);
        drop(body);
    }

    #[tokio::test]
    async fn message_delta_overwrites_start_values_it_carries() {
        let s = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":7,\"input_tokens\":11}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let (_, r) = run(frames(s, &[9]), BodyFormat::Sse(Dialect::Anthropic)).await;
        assert_eq!(
            r.usage,
            Usage {
                input: 11,
                output: 9,
                cache_write: 5,
                cache_write_1h: 0,
                cache_read: 3
            }
        );
    }

    #[tokio::test]
    async fn json_usage_with_cache_split_is_read() {
        let json = r#"{"id":"msg_01FxNonStream0000000000001","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[{"type":"text","text":"Hello! How can I help?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1200,"cache_creation_input_tokens":10000,"cache_read_input_tokens":50000,"cache_creation":{"ephemeral_5m_input_tokens":10000,"ephemeral_1h_input_tokens":0},"output_tokens":800,"service_tier":"standard"}}"#;
        let (bytes, r) = run(frames(json, &[17]), BodyFormat::Json).await;
        assert_eq!(bytes, json.as_bytes());
        assert_eq!(
            r.usage,
            Usage {
                input: 1200,
                output: 800,
                cache_write: 10000,
                cache_write_1h: 0,
                cache_read: 50000
            }
        );
        assert_eq!(r.outcome, Outcome::Completed);
        assert_eq!(r.usage.total_input(), 61_200);
    }

    #[tokio::test]
    async fn openai_stream_reads_usage_chunk_and_done() {
        let s = concat!(
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":4,\"prompt_tokens_details\":{\"cached_tokens\":10}}}\n\n",
            "data: [DONE]\n\n",
        );
        let (_, r) = run(frames(s, &[11]), BodyFormat::Sse(Dialect::OpenAi)).await;
        assert_eq!(r.outcome, Outcome::Completed);
        assert_eq!(
            (r.usage.input, r.usage.cache_read, r.usage.output),
            (20, 10, 4)
        );
        assert_eq!(r.delta_events, 1);
    }

    #[tokio::test]
    async fn openai_stream_error_chunk_is_errored() {
        let s = "data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\",\"param\":null,\"code\":\"overloaded_error\"}}\n\ndata: [DONE]\n\n";
        let (_, r) = run(frames(s, &[5]), BodyFormat::Sse(Dialect::OpenAi)).await;
        assert_eq!(r.outcome, Outcome::Errored(Some("overloaded_error".into())));
    }

    #[tokio::test]
    async fn memory_stays_bounded_on_a_long_line() {
        let mut s = String::from("event: message_start\ndata: ");
        s.push_str(&"x".repeat(MAX_LINE_BYTES * 3));
        s.push_str("\n\nevent: content_block_delta\ndata: {}\n\nevent: message_stop\ndata: {}\n\n");
        let mut scanner = Scanner::new(BodyFormat::Sse(Dialect::Anthropic));
        for chunk in s.as_bytes().chunks(4096) {
            scanner.feed(&Bytes::copy_from_slice(chunk));
            assert!(scanner.partial.capacity() <= MAX_LINE_BYTES * 2);
        }
        let r = scanner.report(None);
        assert_eq!(r.outcome, Outcome::Completed);
        assert_eq!(r.delta_events, 1);
    }

    /// Two layers meter one response, inner then outer (as balance and rate limits do).
    type Meters = Arc<Mutex<Vec<(&'static str, UsageReport)>>>;
    type ChunkBody = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Frame0>>>;
    type Frame0 = Result<Frame<Bytes>, std::convert::Infallible>;

    fn two_meters(
        text: &str,
        outer_format: BodyFormat,
    ) -> (http::Response<MeteredBody<MeteredBody<ChunkBody>>>, Meters) {
        let body = StreamBody::new(futures_util::stream::iter(frames(text, &[9])));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (inner, outer) = (calls.clone(), calls.clone());
        let res = observe_response(
            http::Response::new(body),
            BodyFormat::Json,
            Box::new(move |r| inner.lock().expect("lock").push(("inner", r))),
        );
        let res = observe_response(
            res,
            outer_format,
            Box::new(move |r| outer.lock().expect("lock").push(("outer", r))),
        );
        (res, calls)
    }

    const JSON: &str = r#"{"type":"message","usage":{"input_tokens":12,"output_tokens":30}}"#;

    #[tokio::test]
    async fn an_outer_meter_shares_the_inner_read_and_reports_after_it() {
        let (res, calls) = two_meters(JSON, BodyFormat::Json);
        assert_eq!(
            format!("{:?}", res.body()),
            r#"MeteredBody { kind: "plain" }"#
        );
        let bytes = res
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        assert_eq!(bytes, JSON.as_bytes());
        let calls = calls.lock().expect("lock");
        let order: Vec<_> = calls.iter().map(|(who, _)| *who).collect();
        assert_eq!(order, ["inner", "outer"]);
        assert_eq!(calls[0].1, calls[1].1);
        assert_eq!((calls[1].1.usage.input, calls[1].1.usage.output), (12, 30));
        assert_eq!(calls[1].1.outcome, Outcome::Completed);
    }

    #[tokio::test]
    async fn a_dropped_body_reports_cancelled_to_every_meter_once() {
        let (res, calls) = two_meters(JSON, BodyFormat::Json);
        let mut body = res.into_body();
        assert!(body.frame().await.is_some());
        drop(body);
        let calls = calls.lock().expect("lock");
        assert_eq!(calls.len(), 2);
        assert!(calls.iter().all(|(_, r)| r.outcome == Outcome::Cancelled));
    }

    #[tokio::test]
    async fn a_meter_reading_another_format_observes_the_body_itself() {
        let (res, calls) = two_meters(JSON, BodyFormat::Other);
        assert_eq!(
            format!("{:?}", res.body()),
            r#"MeteredBody { kind: "metered" }"#
        );
        let _ = res.into_body().collect().await.expect("infallible");
        let calls = calls.lock().expect("lock");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].1.usage.output, 30);
        assert!(!calls[1].1.usage_seen);
    }

    #[test]
    fn a_subscriber_after_the_end_gets_the_report_at_once() {
        let tap = UsageTap::new(BodyFormat::Json);
        let report = Scanner::new(BodyFormat::Json).report(Some(Outcome::Cancelled));
        tap.publish(report.clone());
        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        tap.subscribe(Box::new(move |r| *g.lock().expect("lock") = Some(r)));
        assert_eq!(got.lock().expect("lock").take(), Some(report));
    }

    #[test]
    fn format_comes_from_content_type() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            "text/event-stream; charset=utf-8".parse().expect("valid"),
        );
        assert_eq!(
            BodyFormat::from_headers(&h, Dialect::Anthropic),
            BodyFormat::Sse(Dialect::Anthropic)
        );
        h.insert("content-type", "application/json".parse().expect("valid"));
        assert_eq!(
            BodyFormat::from_headers(&h, Dialect::Anthropic),
            BodyFormat::Json
        );
        h.insert("content-type", "text/html".parse().expect("valid"));
        assert_eq!(
            BodyFormat::from_headers(&h, Dialect::Anthropic),
            BodyFormat::Other
        );
    }

    proptest::proptest! {
        #[test]
        fn any_split_of_f8_reports_the_same_usage(cuts in proptest::collection::vec(1usize..200, 1..20)) {
            let mut scanner = Scanner::new(BodyFormat::Sse(Dialect::Anthropic));
            let bytes = F8.as_bytes();
            let mut at = 0;
            for c in cuts.iter().cycle() {
                if at >= bytes.len() { break; }
                let n = (*c).min(bytes.len() - at);
                scanner.feed(&Bytes::copy_from_slice(&bytes[at..at + n]));
                at += n;
            }
            let r = scanner.report(None);
            proptest::prop_assert_eq!(r.outcome, Outcome::Completed);
            proptest::prop_assert_eq!((r.usage.input, r.usage.output), (472, 15));
        }
    }
}
