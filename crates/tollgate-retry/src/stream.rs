//! The stream commit point: hold a streamed response until its first content, so that a
//! failure before it can still be retried or failed over invisibly; guard it after.
//!
//! A `200 text/event-stream` response is not handed on at once. Its events are read and
//! held — at most [`MAX_HOLD_BYTES`] — until one of:
//!
//! - the first content event (`content_block_delta`; for the OpenAI dialect the first
//!   chunk with content): the response is **committed**, the held events are replayed
//!   first and the rest streams through frame by frame;
//! - the hold limit, or the stream's normal end: committed as well;
//! - an `event: error`, a broken connection, or an end without the stream's terminal
//!   event: the stream **failed before content**, and the layer may try again; the
//!   client has seen nothing.
//!
//! After the commit point nothing is retried. A committed stream is guarded: if the
//! upstream connection breaks, or the stream ends without its terminal event
//! (`message_stop`, `data: [DONE]`), the client gets an `event: error` (`api_error`, in
//! the request's dialect) and the stream closes — never a silent truncation. An
//! `event: error` the upstream sent itself is relayed verbatim.
//!
//! Other responses pass through unread: [`CommitBody`] then only forwards frames.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http::response::Parts;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tollgate_core::usage::{BodyFormat, Outcome, Scanner};
use tollgate_core::{Dialect, ErrorKind, GatewayError, RenderOptions, new_request_id};

/// The most a held stream keeps before committing anyway (64 KiB): `message_start` and
/// the events before the first delta are a few hundred bytes.
pub const MAX_HOLD_BYTES: usize = 64 * 1024;

/// Response extension: where a streamed response stands relative to its commit point.
///
/// Set by the layer that held the stream, so that an outer layer neither holds it again
/// nor mistakes a failure before content for a success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamCommit {
    /// Content reached (or the stream ended normally): the response is the answer.
    Committed,
    /// The stream failed before any content; the body replays what the upstream sent
    /// and ends with an `event: error`.
    FailedBeforeContent {
        /// The in-band `error.type`, `None` when the connection broke or the stream ended.
        error_type: Option<String>,
    },
}

/// Whether `res` is a stream to hold: `200`, `text/event-stream`, not already held by
/// an inner layer.
pub fn should_hold<B>(res: &Response<B>) -> bool {
    res.status() == http::StatusCode::OK
        && res.extensions().get::<StreamCommit>().is_none()
        && matches!(
            BodyFormat::from_headers(res.headers(), Dialect::Anthropic),
            BodyFormat::Sse(_)
        )
}

/// Hand `res` on without holding it: its body is forwarded untouched.
pub fn pass<B>(res: Response<B>) -> Response<CommitBody<B>> {
    res.map(|inner| CommitBody {
        kind: Kind::Plain { inner },
    })
}

/// What holding a stream concluded.
#[derive(Debug)]
pub enum Held<B> {
    /// The commit point was reached: this is the answer.
    Committed(Response<CommitBody<B>>),
    /// The stream failed before content. The response replays what was received and ends
    /// with an `event: error`; hand it back only if no further attempt is made.
    Failed {
        /// The response, marked [`StreamCommit::FailedBeforeContent`].
        response: Response<CommitBody<B>>,
        /// The in-band error type, if the upstream sent one.
        error_type: Option<String>,
    },
}

/// A stream being held until its commit point; poll it with [`Hold::poll_hold`].
///
/// It is `Unpin` (the body is boxed), so a future can keep it in any state.
pub struct Hold<B> {
    parts: Option<Parts>,
    guard: Option<Guard<B>>,
    held_bytes: usize,
}

impl<B> fmt::Debug for Hold<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("held_bytes", &self.held_bytes)
            .finish_non_exhaustive()
    }
}

impl<B> Hold<B>
where
    B: Body<Data = Bytes>,
{
    /// Start holding `res`, a stream in `dialect` (see [`should_hold`]).
    pub fn new(res: Response<B>, dialect: Dialect) -> Self {
        let (parts, body) = res.into_parts();
        Hold {
            parts: Some(parts),
            guard: Some(Guard {
                inner: Some(Box::pin(body)),
                held: VecDeque::new(),
                scanner: Scanner::new(BodyFormat::Sse(dialect)),
                dialect,
                end: End::Open,
            }),
            held_bytes: 0,
        }
    }

    /// Read the stream up to its commit point.
    ///
    /// # Panics
    ///
    /// When polled again after it returned `Ready`.
    pub fn poll_hold(&mut self, cx: &mut Context<'_>) -> Poll<Held<B>> {
        let Some(guard) = self.guard.as_mut() else {
            panic!("Hold polled after it concluded");
        };
        while let Some(inner) = guard.inner.as_mut() {
            match inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        guard.scanner.feed(data);
                        self.held_bytes = self.held_bytes.saturating_add(data.len());
                    }
                    guard.held.push_back(frame);
                    if guard.scanner.delta_events() > 0 || self.held_bytes > MAX_HOLD_BYTES {
                        return Poll::Ready(self.conclude(None));
                    }
                    if let Some(error_type) = guard.scanner.error() {
                        let error_type = error_type.map(str::to_owned);
                        return Poll::Ready(self.conclude(Some(error_type)));
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    guard.inner = None;
                    guard.end = End::Broken;
                    return Poll::Ready(self.conclude(Some(None)));
                }
                Poll::Ready(None) => {
                    guard.inner = None;
                    guard.end = End::Ended;
                    break;
                }
            }
        }
        let complete = guard.scanner.report(None).outcome == Outcome::Completed;
        Poll::Ready(self.conclude(if complete { None } else { Some(None) }))
    }

    /// `failure`: `None` to commit, `Some(error_type)` for a failure before content.
    fn conclude(&mut self, failure: Option<Option<String>>) -> Held<B> {
        let (Some(mut parts), Some(guard)) = (self.parts.take(), self.guard.take()) else {
            panic!("Hold concluded twice");
        };
        let body = CommitBody {
            kind: Kind::Guarded { guard },
        };
        match failure {
            None => {
                parts.extensions.insert(StreamCommit::Committed);
                Held::Committed(Response::from_parts(parts, body))
            }
            Some(error_type) => {
                parts.extensions.insert(StreamCommit::FailedBeforeContent {
                    error_type: error_type.clone(),
                });
                Held::Failed {
                    response: Response::from_parts(parts, body),
                    error_type,
                }
            }
        }
    }
}

pin_project! {
    /// The response body of the retry and fallback layers: the inner body untouched, or
    /// a held stream replaying its held events first and guarded after the commit point
    /// (see the [module docs](self)).
    pub struct CommitBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Plain { #[pin] inner: B },
        Guarded { guard: Guard<B> },
    }
}

impl<B> fmt::Debug for CommitBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Plain { .. } => "plain",
            Kind::Guarded { .. } => "guarded stream",
        };
        f.debug_tuple("CommitBody").field(&kind).finish()
    }
}

impl<B> Body for CommitBody<B>
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
            KindProj::Plain { inner } => inner.poll_frame(cx),
            KindProj::Guarded { guard } => guard.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain { inner } => inner.is_end_stream(),
            Kind::Guarded { guard } => guard.held.is_empty() && guard.end == End::Done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain { inner } => inner.size_hint(),
            Kind::Guarded { .. } => SizeHint::default(),
        }
    }
}

/// How the inner body of a guarded stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Still streaming.
    Open,
    /// Ended (`None`) while held; decide at the end of the replay.
    Ended,
    /// Failed while held; an `event: error` follows the replay.
    Broken,
    /// Over: nothing more to send.
    Done,
}

struct Guard<B> {
    inner: Option<Pin<Box<B>>>,
    held: VecDeque<Frame<Bytes>>,
    scanner: Scanner,
    dialect: Dialect,
    end: End,
}

impl<B> Guard<B>
where
    B: Body<Data = Bytes>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(frame) = self.held.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.end {
            End::Done => Poll::Ready(None),
            End::Broken => Poll::Ready(Some(Ok(self.error_event(true)))),
            End::Ended => Poll::Ready(self.ended()),
            End::Open => {
                let Some(inner) = self.inner.as_mut() else {
                    self.end = End::Done;
                    return Poll::Ready(None);
                };
                match inner.as_mut().poll_frame(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            self.scanner.feed(data);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(_))) => {
                        self.inner = None;
                        Poll::Ready(Some(Ok(self.error_event(true))))
                    }
                    Poll::Ready(None) => {
                        self.inner = None;
                        Poll::Ready(self.ended())
                    }
                }
            }
        }
    }

    /// The upstream stream is over: close, or say it was cut short.
    fn ended(&mut self) -> Option<Result<Frame<Bytes>, B::Error>> {
        match self.scanner.report(None).outcome {
            Outcome::Completed | Outcome::Errored(_) => {
                self.end = End::Done;
                None
            }
            Outcome::Truncated | Outcome::Cancelled => Some(Ok(self.error_event(false))),
        }
    }

    /// The `event: error` that tells the client its stream is incomplete; ends the body.
    fn error_event(&mut self, broken: bool) -> Frame<Bytes> {
        self.end = End::Done;
        let message = if broken {
            "the upstream connection broke mid-stream and the response is incomplete; send the request again"
        } else {
            "the upstream stream ended without its final event and the response is incomplete; send the request again"
        };
        let err = GatewayError::new(ErrorKind::Api, message);
        let data = err.to_body(self.dialect, &RenderOptions::default(), &new_request_id());
        let mut event = Vec::with_capacity(data.len() + 24);
        if self.dialect == Dialect::Anthropic {
            event.extend_from_slice(b"event: error\n");
        }
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(&data);
        event.extend_from_slice(b"\n\n");
        Frame::data(Bytes::from(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    use http_body_util::BodyExt;

    use crate::test_support::{DELTA, Events, OVERLOADED, START, STOP, sse};

    async fn hold(res: Response<Events>) -> Held<Events> {
        let mut hold = Hold::new(res, Dialect::Anthropic);
        poll_fn(|cx| hold.poll_hold(cx)).await
    }

    async fn text(res: Response<CommitBody<Events>>) -> String {
        let bytes = res
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn first_content_commits_and_replays_every_byte() {
        let held = hold(sse(vec![Ok(START), Ok(DELTA), Ok(STOP)])).await;
        let Held::Committed(res) = held else {
            panic!("expected a commit")
        };
        assert_eq!(
            res.extensions().get::<StreamCommit>(),
            Some(&StreamCommit::Committed)
        );
        assert_eq!(text(res).await, format!("{START}{DELTA}{STOP}"));
    }

    #[tokio::test]
    async fn error_event_before_content_is_a_failure_with_its_type() {
        let held = hold(sse(vec![Ok(START), Ok(OVERLOADED)])).await;
        let Held::Failed {
            response,
            error_type,
        } = held
        else {
            panic!("expected a failure")
        };
        assert_eq!(error_type.as_deref(), Some("overloaded_error"));
        // Handed back, it replays the upstream's own error verbatim and adds nothing.
        assert_eq!(text(response).await, format!("{START}{OVERLOADED}"));
    }

    #[tokio::test]
    async fn broken_connection_before_content_is_a_failure() {
        let held = hold(sse(vec![Ok(START), Err(())])).await;
        let Held::Failed {
            response,
            error_type,
        } = held
        else {
            panic!("expected a failure")
        };
        assert_eq!(error_type, None);
        let body = text(response).await;
        assert!(body.starts_with(START));
        assert!(
            body.contains(
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\""
            ),
            "{body}"
        );
    }

    #[tokio::test]
    async fn broken_connection_after_content_ends_with_an_error_event() {
        let held = hold(sse(vec![Ok(START), Ok(DELTA), Err(())])).await;
        let Held::Committed(res) = held else {
            panic!("expected a commit")
        };
        let body = text(res).await;
        assert!(body.starts_with(&format!("{START}{DELTA}")));
        assert!(body.ends_with("\n\n"));
        assert!(body.contains("connection broke mid-stream"), "{body}");
    }

    #[tokio::test]
    async fn stream_ending_without_message_stop_after_content_ends_with_an_error_event() {
        let held = hold(sse(vec![Ok(START), Ok(DELTA)])).await;
        let Held::Committed(res) = held else {
            panic!("expected a commit")
        };
        let body = text(res).await;
        assert!(body.contains("ended without its final event"), "{body}");
    }

    #[tokio::test]
    async fn upstream_error_after_content_is_relayed_verbatim() {
        let held = hold(sse(vec![Ok(START), Ok(DELTA), Ok(OVERLOADED)])).await;
        let Held::Committed(res) = held else {
            panic!("expected a commit")
        };
        assert_eq!(text(res).await, format!("{START}{DELTA}{OVERLOADED}"));
    }

    #[tokio::test]
    async fn hold_commits_at_its_byte_limit() {
        let ping = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
        let frames = std::iter::repeat_n(Ok(ping), MAX_HOLD_BYTES / ping.len() + 2).collect();
        assert!(matches!(hold(sse(frames)).await, Held::Committed(_)));
    }

    #[test]
    fn only_unheld_event_streams_are_held() {
        let json = Response::builder()
            .header("content-type", "application/json")
            .body(())
            .expect("valid");
        assert!(!should_hold(&json));
        let mut stream = Response::builder()
            .header("content-type", "text/event-stream; charset=utf-8")
            .body(())
            .expect("valid");
        assert!(should_hold(&stream));
        stream.extensions_mut().insert(StreamCommit::Committed);
        assert!(!should_hold(&stream));
    }
}
