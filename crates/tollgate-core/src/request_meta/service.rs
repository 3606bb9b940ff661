use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use tower::Service;

use super::Endpoint;
use super::future::ResponseFuture;
use crate::error::{ErrorKind, GatewayError, RenderOptions};

/// The service made by [`RequestMetaLayer`](super::RequestMetaLayer).
#[derive(Clone, Debug)]
pub struct RequestMetaService<S> {
    pub(super) inner: S,
    pub(super) max_body_bytes: usize,
    pub(super) render: RenderOptions,
}

impl<S> RequestMetaService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestMetaService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Body<Data = Bytes> + From<Bytes>,
    ReqBody::Error: std::fmt::Display,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let endpoint = match Endpoint::from_path(req.uri().path()) {
            Some(endpoint) if req.method() == Method::POST => endpoint,
            _ => return ResponseFuture::call(self.inner.call(req)),
        };
        let dialect = endpoint.dialect();
        if let Some(encoding) = req.headers().get(http::header::CONTENT_ENCODING) {
            if encoding.as_bytes() != b"identity" {
                let err = GatewayError::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "content-encoding {:?} is not supported; send the request body uncompressed",
                        String::from_utf8_lossy(encoding.as_bytes())
                    ),
                );
                return ResponseFuture::reject(err.to_response(dialect, &self.render));
            }
        }
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = declared.filter(|&len| len > self.max_body_bytes as u64) {
            let err = too_large(Some(len), self.max_body_bytes);
            return ResponseFuture::reject(err.to_response(dialect, &self.render));
        }
        // Use the service that was made ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::read(
            req,
            inner,
            endpoint,
            self.max_body_bytes,
            self.render.clone(),
        )
    }
}

pub(super) fn too_large(declared: Option<u64>, limit: usize) -> GatewayError {
    let message = match declared {
        Some(len) => format!(
            "request body is {len} bytes, larger than the {limit}-byte limit; shrink the request (fewer or smaller messages, images or documents)"
        ),
        None => format!(
            "request body is larger than the {limit}-byte limit; shrink the request (fewer or smaller messages, images or documents)"
        ),
    };
    GatewayError::new(ErrorKind::RequestTooLarge, message)
}
