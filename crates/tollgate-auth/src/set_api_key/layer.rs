use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};
use tollgate_core::headers::X_API_KEY;
use tower::Layer;

use super::service::SetApiKey;
use crate::check::{InvalidApiKey, check_chars};

/// Sets the API key on every request; see the [module docs](super).
///
/// `Debug` does not show the key.
#[derive(Clone, Debug)]
pub struct SetApiKeyLayer {
    name: HeaderName,
    value: HeaderValue,
}

impl SetApiKeyLayer {
    /// Send the key as `x-api-key: KEY`.
    ///
    /// # Errors
    ///
    /// If the key is empty or has whitespace around it, a line break, a space, a control
    /// or a non-ASCII character: the error names the problem and its byte offset (never
    /// the key), so a key read from a file or an environment variable with a trailing
    /// newline fails here instead of at the server.
    pub fn x_api_key(key: &str) -> Result<SetApiKeyLayer, InvalidApiKey> {
        check_chars(key.as_bytes(), "the API key", 0)?;
        Ok(SetApiKeyLayer {
            name: X_API_KEY,
            value: sensitive(key.as_bytes())?,
        })
    }

    /// Send the key as `Authorization: Bearer KEY`.
    ///
    /// # Errors
    ///
    /// As [`SetApiKeyLayer::x_api_key`].
    pub fn bearer(key: &str) -> Result<SetApiKeyLayer, InvalidApiKey> {
        check_chars(key.as_bytes(), "the API key", 0)?;
        let mut value = Vec::with_capacity(7 + key.len());
        value.extend_from_slice(b"Bearer ");
        value.extend_from_slice(key.as_bytes());
        Ok(SetApiKeyLayer {
            name: AUTHORIZATION,
            value: sensitive(&value)?,
        })
    }
}

fn sensitive(bytes: &[u8]) -> Result<HeaderValue, InvalidApiKey> {
    let mut value = HeaderValue::from_bytes(bytes).map_err(|_| {
        InvalidApiKey("the API key cannot be sent in an HTTP header; copy it again".to_owned())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl<S> Layer<S> for SetApiKeyLayer {
    type Service = SetApiKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetApiKey {
            inner,
            name: self.name.clone(),
            value: self.value.clone(),
        }
    }
}
