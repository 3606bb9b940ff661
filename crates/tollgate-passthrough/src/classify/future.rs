use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::Bytes;
use http::Response;
use http::response::Parts;
use http_body::Body;
use pin_project_lite::pin_project;
use tollgate_core::BoxError;

use crate::body::Collector;
use crate::{ApiError, ClientError};

/// Most bytes of an error body kept in [`ApiError::raw`].
const ERROR_BODY_LIMIT: usize = 1024 * 1024;

pin_project! {
    /// Response future of [`Classify`](super::Classify).
    ///
    /// Resolves as soon as the response head arrives, except for an error response,
    /// whose body is read first (at most 1 MiB).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        pass_error_responses: bool,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner {
            #[pin]
            fut: F,
        },
        Read {
            #[pin]
            body: B,
            parts: Option<Parts>,
            collector: Collector,
        },
        Done,
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(super) fn new(fut: F, pass_error_responses: bool) -> Self {
        ResponseFuture {
            state: State::Inner { fut },
            pass_error_responses,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<B>, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { fut } => {
                    let res = match ready!(fut.poll(cx)) {
                        Ok(res) => res,
                        Err(e) => return Poll::Ready(Err(ClientError::from_boxed(e.into()))),
                    };
                    if res.status().as_u16() < 400 || *this.pass_error_responses {
                        return Poll::Ready(Ok(res));
                    }
                    let (parts, body) = res.into_parts();
                    this.state.set(State::Read {
                        body,
                        parts: Some(parts),
                        collector: Collector::new(ERROR_BODY_LIMIT),
                    });
                }
                StateProj::Read {
                    body,
                    parts,
                    collector,
                } => {
                    ready!(collector.poll_collect(body, cx, |e| e.into().to_string()));
                    let parts = parts
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let err = ApiError::from_parts(parts, collector.finish(), SystemTime::now());
                    this.state.set(State::Done);
                    return Poll::Ready(Err(ClientError::Api(err)));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}
