use std::sync::Arc;

use tower::Layer;

use super::{Pace, PaceConfig, Pacer};
use crate::config::ConfigError;

/// Applies [`Pace`]: requests wait for capacity (at most `max_wait`) instead of being
/// refused upstream. Clones share one pacer. See the [module docs](super) for an example.
#[derive(Clone, Debug)]
pub struct PaceLayer {
    pacer: Arc<Pacer>,
}

// ===== impl PaceLayer =====

impl PaceLayer {
    /// A pacer for `config`.
    ///
    /// # Errors
    ///
    /// A zero limit or a burst outside 1–1000 ([`PaceConfig::validate`]).
    pub fn from_config(config: &PaceConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(PaceLayer {
            pacer: Arc::new(Pacer::new(config)),
        })
    }
}

impl<S> Layer<S> for PaceLayer {
    type Service = Pace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Pace::new(inner, self.pacer.clone())
    }
}
