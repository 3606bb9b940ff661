//! Per route and model: how long a failed route rests before it is tried first again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tollgate_core::Clock;

/// Entries kept before expired ones are swept (model names come from clients under `"*"`).
const SWEEP_AT: usize = 1024;

/// Cooldowns keyed by route, then model: a 529 for one model on a route does not rest
/// the route for the others.
#[derive(Debug)]
pub(crate) struct Cooldowns {
    clock: Arc<dyn Clock>,
    base: Duration,
    max: Duration,
    routes: Mutex<HashMap<Arc<str>, Models>>,
}

/// One route's cooldowns, by model.
type Models = HashMap<Arc<str>, Entry>;

#[derive(Clone, Copy, Debug)]
struct Entry {
    until: Instant,
    failures: u32,
}

impl Cooldowns {
    pub(crate) fn new(clock: Arc<dyn Clock>, base: Duration, max: Duration) -> Self {
        Cooldowns {
            clock,
            base,
            max: max.max(base),
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// When `route` stops cooling for `model`, if it is cooling at `now`.
    pub(crate) fn cooling_until(&self, route: &str, model: &str, now: Instant) -> Option<Instant> {
        let routes = self.routes.lock();
        let entry = routes.get(route)?.get(model)?;
        (entry.until > now).then_some(entry.until)
    }

    /// `route` failed for `model`: rest it for `retry_after` (capped), or exponentially
    /// longer per consecutive failure.
    pub(crate) fn fail(&self, route: &Arc<str>, model: &Arc<str>, retry_after: Option<Duration>) {
        let now = self.clock.now();
        let mut routes = self.routes.lock();
        if routes.values().map(Models::len).sum::<usize>() >= SWEEP_AT {
            for models in routes.values_mut() {
                models.retain(|_, e| e.until > now);
            }
        }
        let models = routes.entry(route.clone()).or_default();
        let entry = models.entry(model.clone()).or_insert(Entry {
            until: now,
            failures: 0,
        });
        entry.failures = entry.failures.saturating_add(1);
        let rest = match retry_after {
            Some(wait) => wait.min(self.max),
            None => {
                let factor = 1u32
                    .checked_shl(entry.failures.saturating_sub(1).min(31))
                    .unwrap_or(u32::MAX);
                self.base.saturating_mul(factor).min(self.max)
            }
        };
        entry.until = now + rest;
    }

    /// `route` answered for `model`: it is healthy again.
    pub(crate) fn succeed(&self, route: &str, model: &str) {
        let mut routes = self.routes.lock();
        if let Some(models) = routes.get_mut(route) {
            models.remove(model);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::ManualClock;

    fn cooldowns(clock: &ManualClock) -> Cooldowns {
        Cooldowns::new(
            Arc::new(clock.clone()),
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn cooldown_grows_exponentially_and_is_capped() {
        let clock = ManualClock::new();
        let c = cooldowns(&clock);
        let (a, m): (Arc<str>, Arc<str>) = ("a".into(), "m".into());
        let mut rests = Vec::new();
        for _ in 0..8 {
            c.fail(&a, &m, None);
            let now = clock.now();
            rests.push(c.cooling_until("a", "m", now).map(|u| (u - now).as_secs()));
        }
        let expect: Vec<Option<u64>> = [1, 2, 4, 8, 16, 32, 60, 60].map(Some).into();
        assert_eq!(rests, expect);
    }

    #[test]
    fn retry_after_sets_the_cooldown_and_success_clears_it() {
        let clock = ManualClock::new();
        let c = cooldowns(&clock);
        let (a, m): (Arc<str>, Arc<str>) = ("a".into(), "m".into());
        c.fail(&a, &m, Some(Duration::from_secs(7)));
        clock.advance(Duration::from_secs(6));
        assert!(c.cooling_until("a", "m", clock.now()).is_some());
        assert!(c.cooling_until("a", "other-model", clock.now()).is_none());
        clock.advance(Duration::from_secs(1));
        assert!(c.cooling_until("a", "m", clock.now()).is_none());
        c.fail(&a, &m, None);
        c.succeed("a", "m");
        assert!(c.cooling_until("a", "m", clock.now()).is_none());
    }
}
