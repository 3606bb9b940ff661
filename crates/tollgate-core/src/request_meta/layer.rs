use tower::Layer;

use super::DEFAULT_MAX_BODY_BYTES;
use super::service::RequestMetaService;
use crate::error::RenderOptions;

/// Reads and checks messages request bodies once; see the [module docs](super).
#[derive(Clone, Debug)]
pub struct RequestMetaLayer {
    pub(super) max_body_bytes: usize,
    pub(super) render: RenderOptions,
}

impl RequestMetaLayer {
    /// A layer with the API's own 32 MiB body limit.
    pub fn new() -> Self {
        RequestMetaLayer {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            render: RenderOptions::default(),
        }
    }

    /// Refuse bodies larger than `bytes` with 413 `request_too_large`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// How rejections are rendered.
    pub fn render_options(mut self, render: RenderOptions) -> Self {
        self.render = render;
        self
    }
}

impl Default for RequestMetaLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for RequestMetaLayer {
    type Service = RequestMetaService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetaService {
            inner,
            max_body_bytes: self.max_body_bytes,
            render: self.render.clone(),
        }
    }
}
