use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tollgate_core::usage::{Observed, UsageReport};

/// What the body calls once it is over: charge the output it reported.
pub(crate) type OnUsage = Box<dyn FnOnce(UsageReport) + Send + Sync>;

pin_project! {
    /// The response body of [`RateLimit`](super::RateLimit): the inner body untouched,
    /// the inner body observed for its output tokens (successful messages responses when
    /// output is limited), or a rejection's envelope.
    ///
    /// Frames pass through as they come; nothing is buffered.
    pub struct RateLimitBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Plain { #[pin] body: B },
        Observed { #[pin] body: Observed<B, OnUsage> },
        Full { data: Option<Bytes> },
    }
}

impl<B> RateLimitBody<B> {
    /// The inner body, untouched.
    pub fn plain(body: B) -> Self {
        RateLimitBody {
            kind: Kind::Plain { body },
        }
    }

    pub(crate) fn observed(body: Observed<B, OnUsage>) -> Self {
        RateLimitBody {
            kind: Kind::Observed { body },
        }
    }
}

/// A complete body of these bytes (how rejections, and outer layers re-rendering them,
/// build a body).
impl<B> From<Bytes> for RateLimitBody<B> {
    fn from(data: Bytes) -> Self {
        RateLimitBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B> Body for RateLimitBody<B>
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
            KindProj::Plain { body } => body.poll_frame(cx),
            KindProj::Observed { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain { body } => body.is_end_stream(),
            Kind::Observed { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain { body } => body.size_hint(),
            Kind::Observed { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl<B> std::fmt::Debug for RateLimitBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Plain { .. } => "plain",
            Kind::Observed { .. } => "observed",
            Kind::Full { .. } => "full",
        };
        f.debug_struct("RateLimitBody")
            .field("kind", &kind)
            .finish()
    }
}
