use std::sync::Arc;
use std::time::Duration;

use tollgate_core::{Clock, SystemClock};
use tollgate_retry::RetryBudget;
use tower::Layer;

use crate::config::FallbackConfig;
use crate::cooldown::Cooldowns;
use crate::plan::Table;
use crate::service::Fallback;

/// Tries a model's upstream routes in order, resting the ones that fail, and — only when
/// configured — substitutes another model; see the [crate docs](crate).
///
/// # Example
///
/// Sharing the retry layer's budget, so that route switches and retries draw on one
/// allowance:
///
/// ```
/// use tollgate_fallback::{FallbackConfig, FallbackLayer};
/// use tollgate_retry::{RetryConfig, RetryLayer};
///
/// let config: FallbackConfig = toml::from_str(r#"
///     [models."*"]
///     routes = ["primary", "secondary"]
/// "#).expect("valid config");
/// let retry = RetryLayer::new(RetryConfig::default());
/// let fallback = FallbackLayer::new(config).budget(retry.retry_budget());
/// # let _ = (retry, fallback);
/// ```
#[derive(Clone, Debug)]
pub struct FallbackLayer {
    shared: Arc<Shared>,
}

/// What every service and future of one layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: FallbackConfig,
    pub(crate) table: Table,
    pub(crate) cooldowns: Cooldowns,
    pub(crate) budget: Option<Arc<RetryBudget>>,
    pub(crate) clock: Arc<dyn Clock>,
}

// ===== impl FallbackLayer =====

impl FallbackLayer {
    /// A layer for `config` on the system clock, without a retry budget (switches are
    /// then bounded only by the number of routes; see [`FallbackLayer::budget`]).
    pub fn new(config: FallbackConfig) -> Self {
        FallbackLayer {
            shared: Arc::new(Shared::new(config, None, Arc::new(SystemClock))),
        }
    }

    /// Draw every switch to another route or model from `budget` — share the retry
    /// layer's ([`RetryLayer::retry_budget`](tollgate_retry::RetryLayer::retry_budget)).
    pub fn budget(self, budget: Arc<RetryBudget>) -> Self {
        let s = &self.shared;
        FallbackLayer {
            shared: Arc::new(Shared::new(s.config.clone(), Some(budget), s.clock.clone())),
        }
    }

    /// Read time from `clock` (cooldowns, deadlines, HTTP-date `retry-after`). Cooldowns
    /// recorded so far are forgotten: call this while building the stack.
    pub fn clock(self, clock: Arc<dyn Clock>) -> Self {
        let s = &self.shared;
        FallbackLayer {
            shared: Arc::new(Shared::new(s.config.clone(), s.budget.clone(), clock)),
        }
    }

    /// How much longer `route` rests for `model`, `None` if it is not cooling.
    pub fn cooldown_remaining(&self, route: &str, model: &str) -> Option<Duration> {
        let now = self.shared.clock.now();
        self.shared
            .cooldowns
            .cooling_until(route, model, now)
            .map(|until| until - now)
    }

    /// The configuration in use.
    pub fn config(&self) -> &FallbackConfig {
        &self.shared.config
    }
}

impl<S> Layer<S> for FallbackLayer {
    type Service = Fallback<S>;

    fn layer(&self, inner: S) -> Fallback<S> {
        Fallback::new(inner, self.shared.clone())
    }
}

impl Shared {
    fn new(
        config: FallbackConfig,
        budget: Option<Arc<RetryBudget>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Shared {
            table: Table::new(&config),
            cooldowns: Cooldowns::new(clock.clone(), config.cooldown_base(), config.cooldown_max()),
            config,
            budget,
            clock,
        }
    }
}
