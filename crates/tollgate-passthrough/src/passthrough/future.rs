use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http::response::Parts;
use http_body::Body;
use pin_project_lite::pin_project;
use tollgate_core::{BoxError, Dialect};

use super::layer::Settings;
use super::service::{
    INSPECT_LIMIT, NON_JSON_LIMIT, Next, mark_spend_cap, on_response, transport_failure,
    wrap_non_json,
};
use crate::body::Collector;

pin_project! {
    /// Response future of [`Passthrough`](super::Passthrough).
    ///
    /// Polls the inner future and hands its response on; only a non-JSON upstream error
    /// has its body read (at most 64 KiB) before the answer is ready.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        dialect: Dialect,
        settings: Arc<Settings>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner {
            #[pin]
            fut: F,
        },
        Wrap {
            #[pin]
            body: B,
            parts: Option<Parts>,
            collector: Collector,
        },
        Inspect {
            #[pin]
            body: B,
            parts: Option<Parts>,
            collector: Collector,
        },
        Ready {
            res: Option<Response<B>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(super) fn new(fut: F, dialect: Dialect, settings: Arc<Settings>) -> Self {
        ResponseFuture {
            state: State::Inner { fut },
            dialect,
            settings,
        }
    }

    pub(super) fn ready(res: Response<B>, settings: Arc<Settings>) -> Self {
        ResponseFuture {
            state: State::Ready { res: Some(res) },
            dialect: Dialect::default(),
            settings,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + From<Bytes>,
    B::Error: Display,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { fut } => {
                    let res = match ready!(fut.poll(cx)) {
                        Ok(res) => res,
                        Err(e) => {
                            return Poll::Ready(Ok(transport_failure(
                                e.into(),
                                *this.dialect,
                                this.settings,
                            )));
                        }
                    };
                    match on_response(res, *this.dialect, this.settings) {
                        Next::Respond(res) => return Poll::Ready(Ok(res)),
                        Next::Wrap(parts, body) => this.state.set(State::Wrap {
                            body,
                            parts: Some(parts),
                            collector: Collector::new(NON_JSON_LIMIT),
                        }),
                        Next::Inspect(parts, body) => this.state.set(State::Inspect {
                            body,
                            parts: Some(parts),
                            collector: Collector::new(INSPECT_LIMIT),
                        }),
                    }
                }
                StateProj::Wrap {
                    body,
                    parts,
                    collector,
                } => {
                    ready!(collector.poll_collect(body, cx, |e| e.to_string()));
                    let parts = parts
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let res = wrap_non_json(parts, collector.finish(), *this.dialect);
                    // Drops the rest of the body: nobody will read it.
                    this.state.set(State::Ready { res: None });
                    return Poll::Ready(Ok(res));
                }
                StateProj::Inspect {
                    body,
                    parts,
                    collector,
                } => {
                    ready!(collector.poll_collect(body, cx, |e| e.to_string()));
                    let parts = parts
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let res = mark_spend_cap(parts, collector.finish());
                    this.state.set(State::Ready { res: None });
                    return Poll::Ready(Ok(res));
                }
                StateProj::Ready { res } => {
                    return Poll::Ready(Ok(res
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
            }
        }
    }
}
