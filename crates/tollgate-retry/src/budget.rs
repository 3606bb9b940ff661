//! The retry budget: retries as a bounded fraction of requests, shared by every layer
//! that makes extra upstream attempts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tollgate_core::{Clock, SystemClock};

use crate::config::BudgetConfig;

/// Slots the window is divided into; counts expire one slot at a time.
const SLOTS: usize = 10;

/// Bounds retries to a fraction of requests over a sliding window, so that a full
/// upstream outage does not multiply traffic.
///
/// Each client request [`deposit`](RetryBudget::deposit)s once; each extra upstream
/// attempt (a retry, or a fallback to another route) must
/// [`withdraw`](RetryBudget::withdraw) first. Over the last `ttl_secs`, withdrawals are
/// allowed up to `max(min_per_sec · ttl_secs, ⌊retry_percent · deposits⌋)`.
///
/// Share one budget between [`RetryLayer`](crate::RetryLayer) and the fallback layer
/// (`Arc<RetryBudget>`); a request deposits once whichever layer sees it first (see
/// [`Attempts`](crate::Attempts)).
///
/// # Example
///
/// ```
/// use tollgate_retry::{BudgetConfig, RetryBudget};
///
/// let budget = RetryBudget::new(&BudgetConfig { ttl_secs: 10, min_per_sec: 0, retry_percent: 0.2 });
/// for _ in 0..10 {
///     budget.deposit();
/// }
/// assert!(budget.withdraw());
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw()); // 20 % of 10 requests
/// ```
pub struct RetryBudget {
    clock: Arc<dyn Clock>,
    slot: Duration,
    reserve: u64,
    permille: u64,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// Start of the current slot.
    start: Instant,
    index: usize,
    deposits: [u64; SLOTS],
    withdrawals: [u64; SLOTS],
}

impl RetryBudget {
    /// A budget on the system clock (tokio's, so paused test time applies). Values out of
    /// range are clamped (see [`BudgetConfig::validate`]).
    pub fn new(config: &BudgetConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A budget reading time from `clock`.
    pub fn with_clock(config: &BudgetConfig, clock: Arc<dyn Clock>) -> Self {
        let ttl = Duration::from_secs(config.ttl_secs.clamp(1, 3600));
        let percent = if config.retry_percent.is_finite() {
            config.retry_percent.clamp(0.0, 100.0)
        } else {
            0.0
        };
        let start = clock.now();
        RetryBudget {
            slot: ttl / SLOTS as u32,
            reserve: u64::from(config.min_per_sec).saturating_mul(ttl.as_secs()),
            permille: (percent * 1000.0).round() as u64,
            window: Mutex::new(Window {
                start,
                index: 0,
                deposits: [0; SLOTS],
                withdrawals: [0; SLOTS],
            }),
            clock,
        }
    }

    /// Count one client request.
    pub fn deposit(&self) {
        let mut w = self.window.lock();
        w.advance(self.clock.now(), self.slot);
        let i = w.index;
        w.deposits[i] = w.deposits[i].saturating_add(1);
    }

    /// Take one extra attempt from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        let mut w = self.window.lock();
        w.advance(self.clock.now(), self.slot);
        if w.withdrawn() < self.allowed(&w) {
            let i = w.index;
            w.withdrawals[i] = w.withdrawals[i].saturating_add(1);
            true
        } else {
            false
        }
    }

    /// Extra attempts the budget would allow right now.
    pub fn available(&self) -> u64 {
        let mut w = self.window.lock();
        w.advance(self.clock.now(), self.slot);
        self.allowed(&w).saturating_sub(w.withdrawn())
    }

    fn allowed(&self, w: &Window) -> u64 {
        let by_percent = w.deposited().saturating_mul(self.permille) / 1000;
        self.reserve.max(by_percent)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.window.lock();
        f.debug_struct("RetryBudget")
            .field("window", &(self.slot * SLOTS as u32))
            .field("reserve", &self.reserve)
            .field("permille", &self.permille)
            .field("deposited", &w.deposited())
            .field("withdrawn", &w.withdrawn())
            .finish()
    }
}

impl Window {
    /// Move the current slot forward to `now`, clearing the slots that expired.
    fn advance(&mut self, now: Instant, slot: Duration) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed < slot {
            return;
        }
        let steps = (elapsed.as_nanos() / slot.as_nanos().max(1)) as u64;
        if steps >= SLOTS as u64 {
            self.deposits = [0; SLOTS];
            self.withdrawals = [0; SLOTS];
        } else {
            for _ in 0..steps {
                self.index = (self.index + 1) % SLOTS;
                self.deposits[self.index] = 0;
                self.withdrawals[self.index] = 0;
            }
        }
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        self.start = self
            .start
            .checked_add(slot.saturating_mul(steps))
            .unwrap_or(now);
    }

    fn deposited(&self) -> u64 {
        self.deposits.iter().sum()
    }

    fn withdrawn(&self) -> u64 {
        self.withdrawals.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::ManualClock;

    fn budget(min_per_sec: u32, clock: &ManualClock) -> RetryBudget {
        RetryBudget::with_clock(
            &BudgetConfig {
                ttl_secs: 10,
                min_per_sec,
                retry_percent: 0.2,
            },
            Arc::new(clock.clone()),
        )
    }

    #[test]
    fn reserve_allows_retries_without_requests() {
        let clock = ManualClock::new();
        let b = budget(1, &clock);
        for _ in 0..10 {
            assert!(b.withdraw());
        }
        assert!(!b.withdraw());
    }

    #[test]
    fn percent_and_reserve_do_not_add_up() {
        let clock = ManualClock::new();
        let b = budget(1, &clock);
        for _ in 0..100 {
            b.deposit();
        }
        // max(10, 20) = 20, not 10 + 20.
        assert_eq!(b.available(), 20);
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn budget_is_exhausted_until_the_window_moves_on() {
        let clock = ManualClock::new();
        let b = budget(0, &clock);
        for _ in 0..5 {
            b.deposit();
        }
        assert!(b.withdraw());
        assert!(!b.withdraw());
        clock.advance(Duration::from_secs(5));
        assert!(!b.withdraw(), "the withdrawal is still in the window");
        for _ in 0..5 {
            b.deposit();
        }
        assert!(b.withdraw(), "10 requests in the window allow 2 retries");
        clock.advance(Duration::from_secs(11));
        assert_eq!(b.available(), 0, "everything expired");
    }

    #[test]
    fn old_slots_expire_one_at_a_time() {
        let clock = ManualClock::new();
        let b = budget(0, &clock);
        for _ in 0..5 {
            b.deposit();
        }
        clock.advance(Duration::from_millis(9_500));
        for _ in 0..5 {
            b.deposit();
        }
        assert_eq!(b.available(), 2);
        clock.advance(Duration::from_millis(600));
        assert_eq!(b.available(), 1, "the first five requests left the window");
    }
}
