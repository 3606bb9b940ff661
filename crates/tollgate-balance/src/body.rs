use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tollgate_core::usage::{Observed, UsageReport};

/// The callback an observed body settles with.
pub(crate) type Reporter = Box<dyn FnOnce(UsageReport) + Send + Sync>;

pin_project! {
    /// Response body of [`BalanceService`](crate::BalanceService): the inner body frame by
    /// frame (never buffered), observed for usage when the request holds a reservation,
    /// or the refusal's bytes.
    pub struct BalanceBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Plain {
            #[pin]
            body: B,
        },
        Metered {
            #[pin]
            body: Observed<B, Reporter>,
        },
        Full {
            data: Option<Bytes>,
        },
    }
}

impl<B> BalanceBody<B> {
    pub(crate) fn plain(body: B) -> Self {
        BalanceBody {
            kind: Kind::Plain { body },
        }
    }

    pub(crate) fn metered(body: Observed<B, Reporter>) -> Self {
        BalanceBody {
            kind: Kind::Metered { body },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        BalanceBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B> Body for BalanceBody<B>
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
            KindProj::Metered { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain { body } => body.is_end_stream(),
            Kind::Metered { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain { body } => body.size_hint(),
            Kind::Metered { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl<B> std::fmt::Debug for BalanceBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Plain { .. } => "plain",
            Kind::Metered { .. } => "metered",
            Kind::Full { .. } => "full",
        };
        f.debug_struct("BalanceBody").field("kind", &kind).finish()
    }
}
