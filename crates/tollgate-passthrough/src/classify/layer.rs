use tower::Layer;

use super::Classify;

/// Turns a client's error responses into typed [`ApiError`](crate::ApiError)s and its
/// transport failures into classified [`TransportError`](tollgate_core::TransportError)s.
///
/// # Example
///
/// ```
/// use tollgate_passthrough::ClassifyLayer;
///
/// // Typed errors for every status ≥ 400:
/// let layer = ClassifyLayer::new();
/// // Or only classify transport failures and hand error responses on as they are:
/// let relay = ClassifyLayer::new().pass_error_responses(true);
/// # let _ = (layer, relay);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClassifyLayer {
    pass_error_responses: bool,
}

// ===== impl ClassifyLayer =====

impl ClassifyLayer {
    /// Classify every status ≥ 400 as an [`ApiError`](crate::ApiError).
    pub fn new() -> Self {
        ClassifyLayer::default()
    }

    /// `true`: return error responses as `Ok(response)`, unread (for relays that stream
    /// them on); only transport failures become `Err`.
    pub fn pass_error_responses(mut self, pass: bool) -> Self {
        self.pass_error_responses = pass;
        self
    }
}

impl<S> Layer<S> for ClassifyLayer {
    type Service = Classify<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Classify::new(inner, self.pass_error_responses)
    }
}
