//! How long to wait before a retry.

use std::time::Duration;

use rand::Rng;

/// Full-jitter exponential backoff: retry `n` (0-based) waits a uniform random time in
/// `[0, min(base · 2ⁿ, max)]`.
///
/// Full jitter spreads clients that failed together over the whole interval, so they do
/// not come back together.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tollgate_retry::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(500));
/// assert_eq!(backoff.ceiling(3), Duration::from_secs(4));
/// assert_eq!(backoff.ceiling(10), Duration::from_secs(8));
/// assert!(backoff.delay(1) <= Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Backoff from `base`, doubling per retry, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
        }
    }

    /// The longest wait before retry `retry` (0-based): `min(base · 2ⁿ, max)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A random wait before retry `retry` (0-based), uniform in `[0, ceiling(retry)]`.
    pub fn delay(&self, retry: u32) -> Duration {
        jitter_up_to(self.ceiling(retry))
    }
}

/// The wait for a server-directed delay: exactly `after`, plus a small jitter (up to
/// 10 % of it, at most 1 s) so that clients told the same instant do not all return at it.
pub fn server_directed(after: Duration) -> Duration {
    after + jitter_up_to((after / 10).min(Duration::from_secs(1)))
}

/// Uniform in `[0, max]`, at microsecond resolution.
fn jitter_up_to(max: Duration) -> Duration {
    let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
    if micros == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::rng().random_range(0..=micros))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn backoff_delay_stays_within_its_ceiling(
            base_ms in 0u64..10_000,
            max_ms in 0u64..100_000,
            retry in 0u32..64,
        ) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let ceiling = b.ceiling(retry);
            prop_assert!(ceiling <= Duration::from_millis(max_ms.max(base_ms)));
            prop_assert!(ceiling >= Duration::from_millis(base_ms).min(Duration::from_millis(max_ms.max(base_ms))));
            prop_assert!(b.delay(retry) <= ceiling);
        }

        #[test]
        fn server_directed_wait_is_at_least_the_given_wait_plus_at_most_ten_percent(ms in 0u64..120_000) {
            let after = Duration::from_millis(ms);
            let wait = server_directed(after);
            prop_assert!(wait >= after);
            prop_assert!(wait <= after + (after / 10).min(Duration::from_secs(1)));
        }
    }

    #[test]
    fn ceilings_double_from_the_base_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        let ceilings: Vec<u64> = (0..7).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [500, 1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        let ceiling = b.ceiling(2);
        let samples: Vec<Duration> = (0..2_000).map(|_| b.delay(2)).collect();
        let min = samples.iter().min().copied().unwrap_or_default();
        let max = samples.iter().max().copied().unwrap_or_default();
        assert!(min < ceiling / 10, "smallest of 2000 draws was {min:?}");
        assert!(max > ceiling * 9 / 10, "largest of 2000 draws was {max:?}");
        assert!(samples.iter().all(|d| *d <= ceiling));
    }
}
