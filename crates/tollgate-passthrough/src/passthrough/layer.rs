use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tollgate_core::RenderOptions;
use tower::Layer;

use super::Passthrough;

/// What to do with an upstream error whose body is not JSON (an HTML 502 from a proxy, a
/// plain-text 503 from a load balancer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NonJsonErrors {
    /// Read the body (at most 64 KiB) and answer an error envelope in the request's
    /// dialect that quotes it, keeping the upstream's status: SDKs can then show a message
    /// instead of a parse failure. The default.
    #[default]
    Wrap,
    /// Pass the body through untouched, for clients that want the proxy's own page.
    Raw,
}

/// The `[errors]` table of the gateway's configuration: how errors reach clients.
///
/// ```
/// use tollgate_passthrough::{NonJsonErrors, PassthroughConfig, PassthroughLayer};
///
/// let cfg: PassthroughConfig = toml::from_str(r#"non_json_errors = "raw""#).expect("valid");
/// assert_eq!(cfg.non_json_errors, NonJsonErrors::Raw);
/// assert!(!cfg.type_prefix && cfg.strip_upstream_identity);
/// let layer = PassthroughLayer::from_config(&cfg);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassthroughConfig {
    /// Prefix gateway error types with `gateway_` (e.g. `gateway_rate_limit_error`).
    /// Default `false`: standard types keep the official SDKs' exception classes, and
    /// `x-tollgate-origin` already tells gateway errors from upstream ones.
    pub type_prefix: bool,
    /// `"wrap"` (default) or `"raw"`: see [`NonJsonErrors`].
    pub non_json_errors: NonJsonErrors,
    /// Remove `anthropic-organization-id` and `anthropic-workspace-id` from upstream
    /// responses. Default `true`: they identify the pooled upstream account, which is the
    /// operator's business, not the tenant's.
    pub strip_upstream_identity: bool,
}

impl Default for PassthroughConfig {
    fn default() -> Self {
        PassthroughConfig {
            type_prefix: false,
            non_json_errors: NonJsonErrors::Wrap,
            strip_upstream_identity: true,
        }
    }
}

/// The settings every [`Passthrough`] clone shares.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) render: RenderOptions,
    pub(crate) non_json: NonJsonErrors,
    pub(crate) strip_identity: bool,
}

/// Makes the server stack's answers client-ready: upstream responses are relayed byte for
/// byte (marked `x-tollgate-origin: upstream`, hop-by-hop headers removed), gateway errors
/// are rendered in the request's dialect, and transport failures become 502/504 envelopes.
///
/// Put it outermost, just inside tracing. See [`Passthrough`] for the details.
///
/// # Example
///
/// ```
/// use tollgate_core::RenderOptions;
/// use tollgate_passthrough::{NonJsonErrors, PassthroughLayer};
///
/// let layer = PassthroughLayer::new()
///     .render_options(RenderOptions { type_prefix: true })
///     .non_json_errors(NonJsonErrors::Raw)
///     .strip_upstream_identity(false);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct PassthroughLayer {
    settings: Settings,
}

// ===== impl PassthroughLayer =====

impl PassthroughLayer {
    /// The defaults: standard error types, wrap non-JSON upstream errors, strip upstream
    /// account identity.
    pub fn new() -> Self {
        PassthroughLayer::from_config(&PassthroughConfig::default())
    }

    /// Build from the gateway's `[errors]` table.
    pub fn from_config(config: &PassthroughConfig) -> Self {
        PassthroughLayer {
            settings: Settings {
                render: RenderOptions {
                    type_prefix: config.type_prefix,
                },
                non_json: config.non_json_errors,
                strip_identity: config.strip_upstream_identity,
            },
        }
    }

    /// How gateway errors are rendered (e.g. the `gateway_` type prefix).
    pub fn render_options(mut self, options: RenderOptions) -> Self {
        self.settings.render = options;
        self
    }

    /// What to do with non-JSON upstream error bodies.
    pub fn non_json_errors(mut self, mode: NonJsonErrors) -> Self {
        self.settings.non_json = mode;
        self
    }

    /// Whether to remove `anthropic-organization-id` / `anthropic-workspace-id` from
    /// upstream responses.
    pub fn strip_upstream_identity(mut self, strip: bool) -> Self {
        self.settings.strip_identity = strip;
        self
    }
}

impl Default for PassthroughLayer {
    fn default() -> Self {
        PassthroughLayer::new()
    }
}

impl<S> Layer<S> for PassthroughLayer {
    type Service = Passthrough<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Passthrough::new(inner, Arc::new(self.settings.clone()))
    }
}
