use std::sync::Arc;

use tollgate_core::{Clock, SystemClock};
use tower::Layer;

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::config::RetryConfig;
use crate::service::Retry;

/// Retries what the upstream says is retryable, with server-directed waits or
/// full-jitter backoff, within a maximum of attempts, a deadline and a shared retry
/// budget; see the [crate docs](crate).
///
/// # Example
///
/// A layer whose budget is shared with another layer (e.g. the fallback layer):
///
/// ```
/// use tollgate_retry::{RetryConfig, RetryLayer};
///
/// let retry = RetryLayer::new(RetryConfig::default());
/// let shared = retry.retry_budget(); // hand this Arc to FallbackLayer::budget
/// # let _ = shared;
/// ```
#[derive(Clone, Debug)]
pub struct RetryLayer {
    shared: Arc<Shared>,
    own_budget: bool,
}

/// What every service and future of one layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RetryConfig,
    pub(crate) backoff: Backoff,
    pub(crate) budget: Arc<RetryBudget>,
    pub(crate) clock: Arc<dyn Clock>,
}

// ===== impl RetryLayer =====

impl RetryLayer {
    /// A layer with its own budget (from `config.budget`) on the system clock.
    ///
    /// Out-of-range values are clamped: `max_attempts` to at least 1, `max_delay_ms` to at
    /// least `base_delay_ms`; use [`RetryConfig::validate`] to refuse them instead.
    pub fn new(config: RetryConfig) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let budget = Arc::new(RetryBudget::with_clock(&config.budget, clock.clone()));
        RetryLayer {
            shared: Arc::new(Shared::new(config, budget, clock)),
            own_budget: true,
        }
    }

    /// Use `budget` instead of the layer's own, e.g. one shared with the fallback layer;
    /// `config.budget` is then ignored.
    pub fn budget(self, budget: Arc<RetryBudget>) -> Self {
        RetryLayer {
            shared: Arc::new(Shared::new(
                self.shared.config.clone(),
                budget,
                self.shared.clock.clone(),
            )),
            own_budget: false,
        }
    }

    /// Read time from `clock` (deadlines, HTTP-date `retry-after`, and the layer's own
    /// budget). Waits themselves are `tokio::time` sleeps.
    pub fn clock(self, clock: Arc<dyn Clock>) -> Self {
        let budget = if self.own_budget {
            Arc::new(RetryBudget::with_clock(
                &self.shared.config.budget,
                clock.clone(),
            ))
        } else {
            self.shared.budget.clone()
        };
        RetryLayer {
            shared: Arc::new(Shared::new(self.shared.config.clone(), budget, clock)),
            own_budget: self.own_budget,
        }
    }

    /// The budget this layer draws on, to share with other layers.
    pub fn retry_budget(&self) -> Arc<RetryBudget> {
        self.shared.budget.clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(inner, self.shared.clone())
    }
}

impl Shared {
    fn new(mut config: RetryConfig, budget: Arc<RetryBudget>, clock: Arc<dyn Clock>) -> Self {
        config.max_attempts = config.max_attempts.max(1);
        config.max_delay_ms = config.max_delay_ms.max(config.base_delay_ms);
        Shared {
            backoff: Backoff::new(config.base_delay(), config.max_delay()),
            config,
            budget,
            clock,
        }
    }
}
