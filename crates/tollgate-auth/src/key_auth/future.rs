use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tollgate_core::Dialect;
use tower::Service;

use super::{Shared, store_unavailable};
use crate::cache::CachedKey;
use crate::key::KeyHash;
use crate::store::{BoxFuture, KeyLookup, StoreError};

type Lookup = BoxFuture<'static, Result<Option<Arc<CachedKey>>, StoreError>>;

pin_project! {
    /// Response future of [`KeyAuth`](super::KeyAuth): the inner service's future, a
    /// rejection, or a store lookup followed by one of those.
    pub struct ResponseFuture<S, K, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, K, ReqBody, ResBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, K, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Calling {
            #[pin]
            fut: S::Future,
        },
        Rejected {
            res: Option<Response<ResBody>>,
        },
        LookingUp {
            lookup: Lookup,
            pending: Option<Pending<S, K, ReqBody>>,
        },
    }
}

struct Pending<S, K, ReqBody> {
    shared: Arc<Shared<K>>,
    req: Request<ReqBody>,
    inner: S,
    dialect: Dialect,
}

impl<S, K, ReqBody, ResBody> ResponseFuture<S, K, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
    K: KeyLookup + 'static,
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

    pub(super) fn lookup(
        shared: Arc<Shared<K>>,
        hash: KeyHash,
        now: Instant,
        req: Request<ReqBody>,
        inner: S,
        dialect: Dialect,
    ) -> Self {
        let store = shared.clone();
        let lookup: Lookup = Box::pin(async move {
            let found = store.store.lookup(&hash).await?;
            Ok(store.cache.insert(hash, found, now))
        });
        ResponseFuture {
            state: State::LookingUp {
                lookup,
                pending: Some(Pending {
                    shared,
                    req,
                    inner,
                    dialect,
                }),
            },
        }
    }
}

impl<S, K, ReqBody, ResBody> Future for ResponseFuture<S, K, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    K: KeyLookup + 'static,
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
                StateProj::LookingUp { lookup, pending } => {
                    let found = ready!(lookup.as_mut().poll(cx));
                    let Some(Pending {
                        shared,
                        mut req,
                        mut inner,
                        dialect,
                    }) = pending.take()
                    else {
                        panic!("ResponseFuture polled after completion");
                    };
                    match found {
                        Ok(key) => match shared.admit(key.as_deref(), &mut req) {
                            Ok(()) => State::Calling {
                                fut: inner.call(req),
                            },
                            Err(err) => State::Rejected {
                                res: Some(shared.render(&err, dialect)),
                            },
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "key store lookup failed; answering 503");
                            State::Rejected {
                                res: Some(shared.render(&store_unavailable(), dialect)),
                            }
                        }
                    }
                }
            };
            this.state.set(next);
        }
    }
}
