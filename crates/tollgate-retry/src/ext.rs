//! Request extensions through which the retry and fallback layers share one request's
//! state, in whichever order they are stacked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use http::Extensions;
use tokio::time::Instant;

use crate::budget::RetryBudget;

/// The upstream attempts made for one client request, shared by every attempt's copy of
/// the request (clones share the count).
///
/// The first retry or fallback layer to see a request inserts it; every layer that
/// makes attempts counts them here, so `x-tollgate-retry-count` on each attempt and
/// `x-tollgate-attempts` / [`Served::attempts`](tollgate_core::Served::attempts) on the
/// response are exact however the layers are nested. It also remembers whether the
/// request was [deposited](RetryBudget::deposit) into the retry budget, so a request
/// counts once even when it crosses two layers sharing the budget.
#[derive(Clone, Debug, Default)]
pub struct Attempts {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    count: AtomicU32,
    deposited: AtomicBool,
}

impl Attempts {
    /// A fresh count (0 attempts).
    pub fn new() -> Self {
        Attempts::default()
    }

    /// The request's `Attempts`, inserted first if it has none.
    pub fn of(extensions: &mut Extensions) -> Attempts {
        extensions.get_or_insert_with(Attempts::new).clone()
    }

    /// Upstream attempts started so far.
    pub fn get(&self) -> u32 {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Count one upstream attempt unless an inner layer already counted some since the
    /// count was `before` (call with the value read before calling the inner service).
    pub fn settle(&self, before: u32) {
        let _ = self.inner.count.compare_exchange(
            before,
            before.saturating_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Deposit this request into `budget`, once per request whichever layer asks first.
    pub fn deposit_once(&self, budget: &RetryBudget) {
        if !self.inner.deposited.swap(true, Ordering::AcqRel) {
            budget.deposit();
        }
    }
}

/// Request extension: at most this many attempts in [`RetryLayer`](crate::RetryLayer)
/// for this request (the configured `max_attempts` still applies).
///
/// The fallback layer sets `MaxAttempts(1)` on an attempt while other routes remain, so
/// that a failing route is left at once instead of being retried with backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxAttempts(pub u32);

/// Request extension: no retry or fallback attempt starts after this instant (the
/// earlier of it and the layer's own deadline applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub Instant);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BudgetConfig;

    #[test]
    fn settle_counts_once_per_call_even_when_nested() {
        let a = Attempts::new();
        // Outer layer reads the count, the inner layer counts two attempts.
        let outer_before = a.get();
        let inner_before = a.get();
        a.settle(inner_before);
        let inner_before = a.get();
        a.settle(inner_before);
        // The outer layer sees the count moved and does not count again.
        a.settle(outer_before);
        assert_eq!(a.get(), 2);
    }

    #[test]
    fn a_request_deposits_once() {
        let budget = RetryBudget::new(&BudgetConfig {
            ttl_secs: 10,
            min_per_sec: 0,
            retry_percent: 1.0,
        });
        let mut ext = Extensions::new();
        let a = Attempts::of(&mut ext);
        a.deposit_once(&budget);
        Attempts::of(&mut ext).deposit_once(&budget);
        assert_eq!(budget.available(), 1);
    }
}
