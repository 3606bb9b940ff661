use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::Service;

use super::service::too_large;
use super::{Endpoint, parse_body};
use crate::error::{ErrorKind, GatewayError, RenderOptions};

pin_project! {
    /// Response future of [`RequestMetaService`](super::RequestMetaService): reads the
    /// body, then calls the inner service (or answers the rejection).
    pub struct ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, ResBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Reading {
            #[pin]
            body: ReqBody,
            reading: Option<Reading<S>>,
        },
        Calling {
            #[pin]
            fut: S::Future,
        },
        Rejected {
            res: Option<Response<ResBody>>,
        },
    }
}

struct Reading<S> {
    inner: S,
    parts: Parts,
    endpoint: Endpoint,
    limit: usize,
    render: RenderOptions,
    first: Option<Bytes>,
    rest: BytesMut,
    len: usize,
}

impl<S, ReqBody, ResBody> ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(super) fn call(fut: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
        }
    }

    pub(super) fn reject(res: Response<ResBody>) -> Self {
        ResponseFuture {
            state: State::Rejected { res: Some(res) },
        }
    }

    pub(super) fn read(
        req: Request<ReqBody>,
        inner: S,
        endpoint: Endpoint,
        limit: usize,
        render: RenderOptions,
    ) -> Self {
        let (parts, body) = req.into_parts();
        ResponseFuture {
            state: State::Reading {
                body,
                reading: Some(Reading {
                    inner,
                    parts,
                    endpoint,
                    limit,
                    render,
                    first: None,
                    rest: BytesMut::new(),
                    len: 0,
                }),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body<Data = Bytes> + From<Bytes>,
    ReqBody::Error: std::fmt::Display,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Calling { fut } => return fut.poll(cx),
                StateProj::Rejected { res } => {
                    return match res.take() {
                        Some(res) => Poll::Ready(Ok(res)),
                        None => panic!("ResponseFuture polled after completion"),
                    };
                }
                StateProj::Reading { mut body, reading } => {
                    let Some(r) = reading.as_mut() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    match ready!(body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            let Ok(data) = frame.into_data() else {
                                continue; // trailers carry nothing we need
                            };
                            r.len = r.len.saturating_add(data.len());
                            if r.len > r.limit {
                                let err = too_large(None, r.limit);
                                State::Rejected {
                                    res: Some(err.to_response(r.endpoint.dialect(), &r.render)),
                                }
                            } else {
                                match r.first.take() {
                                    None if r.rest.is_empty() => r.first = Some(data),
                                    first => {
                                        if let Some(first) = first {
                                            r.rest.extend_from_slice(&first);
                                        }
                                        r.rest.extend_from_slice(&data);
                                    }
                                }
                                continue;
                            }
                        }
                        Some(Err(e)) => {
                            let err = GatewayError::new(
                                ErrorKind::InvalidRequest,
                                format!("request body could not be read: {e}; send it again"),
                            );
                            State::Rejected {
                                res: Some(err.to_response(r.endpoint.dialect(), &r.render)),
                            }
                        }
                        None => {
                            let Some(mut r) = reading.take() else {
                                panic!("ResponseFuture polled after completion");
                            };
                            let bytes = match r.first.take() {
                                Some(first) => first,
                                None => std::mem::take(&mut r.rest).freeze(),
                            };
                            match parse_body(r.endpoint, bytes.clone()) {
                                Ok(meta) => {
                                    r.parts.extensions.insert(meta);
                                    let req = Request::from_parts(r.parts, ReqBody::from(bytes));
                                    State::Calling {
                                        fut: r.inner.call(req),
                                    }
                                }
                                Err(err) => State::Rejected {
                                    res: Some(err.to_response(r.endpoint.dialect(), &r.render)),
                                },
                            }
                        }
                    }
                }
            };
            this.state.set(next);
        }
    }
}
