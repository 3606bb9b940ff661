//! Bounded reading of error bodies: the only bodies this crate ever reads.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::Body;

/// What a bounded read gathered.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    /// The first `limit` bytes of the body.
    pub(crate) bytes: Bytes,
    /// The body was longer than the limit; reading stopped there.
    pub(crate) truncated: bool,
    /// Data bytes received, including the part of the last frame that did not fit.
    pub(crate) seen: u64,
    /// Why the body ended early, if it failed.
    pub(crate) error: Option<String>,
}

/// Reads a body frame by frame into a buffer, stopping at `limit` bytes.
#[derive(Debug)]
pub(crate) struct Collector {
    buf: BytesMut,
    limit: usize,
    seen: u64,
    truncated: bool,
    error: Option<String>,
}

impl Collector {
    pub(crate) fn new(limit: usize) -> Self {
        Collector {
            buf: BytesMut::new(),
            limit,
            seen: 0,
            truncated: false,
            error: None,
        }
    }

    /// Poll `body` until it ends, fails, or passes the limit.
    pub(crate) fn poll_collect<B>(
        &mut self,
        mut body: Pin<&mut B>,
        cx: &mut Context<'_>,
        describe_error: impl Fn(B::Error) -> String,
    ) -> Poll<()>
    where
        B: Body<Data = Bytes>,
    {
        loop {
            let frame = match ready!(body.as_mut().poll_frame(cx)) {
                None => return Poll::Ready(()),
                Some(Err(e)) => {
                    self.error = Some(describe_error(e));
                    return Poll::Ready(());
                }
                Some(Ok(frame)) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.seen = self.seen.saturating_add(data.len() as u64);
            let room = self.limit - self.buf.len();
            if data.len() > room {
                self.buf.extend_from_slice(&data[..room]);
                self.truncated = true;
                return Poll::Ready(());
            }
            self.buf.extend_from_slice(&data);
        }
    }

    /// Hand over what was read, leaving the collector empty.
    pub(crate) fn finish(&mut self) -> Collected {
        Collected {
            bytes: std::mem::take(&mut self.buf).freeze(),
            truncated: self.truncated,
            seen: self.seen,
            error: self.error.take(),
        }
    }
}
