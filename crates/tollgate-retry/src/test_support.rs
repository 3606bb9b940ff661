//! Scripted bodies and SSE events for unit tests.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame};

pub(crate) const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n";
pub(crate) const DELTA: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
pub(crate) const STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
pub(crate) const OVERLOADED: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

/// A body that yields scripted frames; `Err` entries are connection resets.
#[derive(Debug, Default)]
pub(crate) struct Events(VecDeque<Result<Bytes, ()>>);

impl Events {
    pub(crate) fn new(frames: Vec<Result<&'static str, ()>>) -> Self {
        Events(
            frames
                .into_iter()
                .map(|f| f.map(|s| Bytes::from_static(s.as_bytes())))
                .collect(),
        )
    }
}

impl From<&'static str> for Events {
    fn from(s: &'static str) -> Self {
        Events::new(vec![Ok(s)])
    }
}

impl Body for Events {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|f| {
            f.map(Frame::data)
                .map_err(|()| io::Error::from(io::ErrorKind::ConnectionReset))
        }))
    }
}

/// A `200 text/event-stream` response with these frames.
pub(crate) fn sse(frames: Vec<Result<&'static str, ()>>) -> Response<Events> {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Events::new(frames))
        .expect("valid response")
}

/// A JSON response with `status` and `body`.
pub(crate) fn json(status: u16, body: &'static str) -> Response<Events> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Events::from(body))
        .expect("valid response")
}
