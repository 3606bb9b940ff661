//! The generic cell rate algorithm (GCRA), as pure arithmetic on one `u64`.
//!
//! A dimension of a scope (say, input tokens per minute of one key) is one number: its
//! *theoretical arrival time* (TAT), the instant at which everything admitted so far would
//! have drained at the limit's rate. A full bucket and "no state at all" are the same
//! thing (`tat <= now`), which is why idle state can be dropped without losing anything.
//!
//! Units are *ticks* chosen by the backend (nanoseconds in memory, microseconds in the
//! Redis script, whose numbers are doubles). The Lua script in `limiter/redis.rs` is a
//! line-by-line copy of [`admit`] and [`shift`]; the tests below pin both.

/// One dimension's rate: `limit` units per `period` ticks, `capacity` units usable at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Units per period. `0` means nothing ever fits.
    pub(crate) limit: u64,
    /// Units that may be spent at once (the burst). At least 1 unless `limit` is 0.
    pub(crate) capacity: u64,
    /// The period in ticks (a minute or a day).
    pub(crate) period: u64,
    /// The tolerance: the backlog a full burst occupies, in ticks (`cost(capacity)`).
    pub(crate) tau: u64,
}

/// What [`admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It fits; the new TAT to store.
    Fits(u64),
    /// It fits after this many ticks.
    Wait(u64),
    /// It never fits: the cost is larger than the capacity.
    Never,
}

impl Rate {
    /// A rate of `limit` per `period` ticks whose bucket holds `burst_pct` percent of the limit.
    pub(crate) fn new(limit: u64, burst_pct: u32, period: u64) -> Rate {
        let capacity = if limit == 0 {
            0
        } else {
            mul_div_ceil(limit, u64::from(burst_pct), 100).max(1)
        };
        let mut rate = Rate {
            limit,
            capacity,
            period,
            tau: 0,
        };
        rate.tau = rate.cost(capacity);
        rate
    }

    /// Ticks that `n` units occupy: `ceil(n × period / limit)`, so the rate is never
    /// exceeded by rounding. Saturates; `u64::MAX` when the limit is 0.
    pub(crate) fn cost(&self, n: u64) -> u64 {
        if n == 0 {
            0
        } else if self.limit == 0 {
            u64::MAX
        } else {
            mul_div_ceil(n, self.period, self.limit)
        }
    }

    /// Units that could be spent right now.
    pub(crate) fn remaining(&self, tat: u64, now: u64) -> u64 {
        if self.limit == 0 {
            return 0;
        }
        let room = self.tau.saturating_sub(tat.saturating_sub(now));
        mul_div_floor(room, self.limit, self.period).min(self.capacity)
    }
}

/// Ticks until the bucket is full again (everything admitted has drained).
pub(crate) fn reset_after(tat: u64, now: u64) -> u64 {
    tat.saturating_sub(now)
}

/// Try to spend `n` units at `now` on a dimension whose TAT is `tat`.
pub(crate) fn admit(tat: u64, now: u64, rate: &Rate, n: u64) -> Outcome {
    let cost = rate.cost(n);
    let tau = rate.tau;
    if cost > tau {
        return Outcome::Never;
    }
    let after = tat.max(now).saturating_add(cost);
    let backlog = after - now;
    if backlog <= tau {
        Outcome::Fits(after)
    } else {
        Outcome::Wait(backlog - tau)
    }
}

/// Move a TAT by `ticks`: forward (a charge made unconditionally, possibly beyond the
/// tolerance: debt that later admissions wait out, e.g. output tokens known only once the
/// response is over), or back
/// (a refund of an earlier charge) but never before `now` — a bucket cannot be fuller
/// than full.
pub(crate) fn shift(tat: u64, now: u64, ticks: i64) -> u64 {
    if ticks >= 0 {
        tat.max(now).saturating_add(ticks.unsigned_abs())
    } else if tat > now {
        tat.saturating_sub(ticks.unsigned_abs()).max(now)
    } else {
        tat
    }
}

/// The ticks that spending `actual` units instead of the `charged` ones moves a TAT:
/// exactly `cost(actual) - cost(charged)`, so a refund undoes the admission's rounding.
pub(crate) fn correction(rate: &Rate, charged: u64, actual: u64) -> i64 {
    let diff = i128::from(rate.cost(actual)) - i128::from(rate.cost(charged));
    i64::try_from(diff).unwrap_or(if diff < 0 { i64::MIN } else { i64::MAX })
}

fn mul_div_ceil(a: u64, b: u64, d: u64) -> u64 {
    match a.checked_mul(b) {
        Some(p) => p.div_ceil(d),
        None => u64::try_from((u128::from(a) * u128::from(b)).div_ceil(u128::from(d)))
            .unwrap_or(u64::MAX),
    }
}

fn mul_div_floor(a: u64, b: u64, d: u64) -> u64 {
    match a.checked_mul(b) {
        Some(p) => p / d,
        None => u64::try_from(u128::from(a) * u128::from(b) / u128::from(d)).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn per_minute(limit: u64, burst_pct: u32) -> Rate {
        Rate::new(limit, burst_pct, 60 * SEC)
    }

    #[test]
    fn a_full_burst_fits_at_once_and_one_more_waits_one_interval() {
        let rate = per_minute(60, 100);
        let mut tat = 0;
        let now = 1000 * SEC;
        for _ in 0..60 {
            match admit(tat, now, &rate, 1) {
                Outcome::Fits(t) => tat = t,
                other => panic!("burst refused: {other:?}"),
            }
        }
        assert_eq!(admit(tat, now, &rate, 1), Outcome::Wait(SEC));
        assert!(matches!(admit(tat, now + SEC, &rate, 1), Outcome::Fits(_)));
    }

    #[test]
    fn burst_percent_sets_the_capacity_rounded_up_and_at_least_one() {
        assert_eq!(per_minute(60, 10).capacity, 6);
        assert_eq!(per_minute(7, 10).capacity, 1);
        assert_eq!(per_minute(7, 50).capacity, 4);
        assert_eq!(per_minute(0, 100).capacity, 0);
    }

    #[test]
    fn a_cost_above_capacity_never_fits_and_a_zero_limit_admits_nothing() {
        assert_eq!(admit(0, 0, &per_minute(100, 100), 101), Outcome::Never);
        assert_eq!(admit(0, 0, &per_minute(0, 100), 1), Outcome::Never);
        assert_eq!(per_minute(0, 100).remaining(0, 0), 0);
    }

    #[test]
    fn remaining_and_reset_follow_the_backlog() {
        let rate = per_minute(100, 100);
        let now = 50 * SEC;
        assert_eq!(rate.remaining(0, now), 100);
        let Outcome::Fits(tat) = admit(0, now, &rate, 40) else {
            panic!("fits")
        };
        assert_eq!(rate.remaining(tat, now), 60);
        assert_eq!(reset_after(tat, now), 24 * SEC);
        assert_eq!(rate.remaining(tat, now + 12 * SEC), 80);
    }

    #[test]
    fn forced_spending_goes_into_debt() {
        let rate = per_minute(60, 100);
        let tat = shift(0, 0, correction(&rate, 0, 120));
        assert_eq!(tat, 120 * SEC);
        assert_eq!(rate.remaining(tat, 0), 0);
        // One unit fits once the debt is repaid down to the capacity minus one unit.
        assert_eq!(admit(tat, 0, &rate, 1), Outcome::Wait(61 * SEC));
    }

    #[test]
    fn a_refund_moves_the_tat_back_but_never_before_now() {
        let rate = per_minute(60, 100);
        let Outcome::Fits(tat) = admit(0, 0, &rate, 30) else {
            panic!("fits")
        };
        assert_eq!(tat, 30 * SEC);
        assert_eq!(correction(&rate, 30, 10), -20 * SEC as i64);
        assert_eq!(shift(tat, 0, correction(&rate, 30, 10)), 10 * SEC);
        assert_eq!(shift(tat, 25 * SEC, -20 * SEC as i64), 25 * SEC);
        assert_eq!(shift(5, 25 * SEC, -20 * SEC as i64), 5);
        assert_eq!(shift(tat, 0, correction(&rate, 30, 50)), 50 * SEC);
        assert_eq!(shift(0, 7 * SEC, SEC as i64), 8 * SEC);
    }

    #[test]
    fn huge_day_costs_do_not_overflow() {
        let rate = Rate::new(1_000_000_000, 100, 86_400 * SEC);
        assert_eq!(rate.cost(1_000_000_000), 86_400 * SEC);
        assert_eq!(rate.cost(u64::MAX), u64::MAX);
        assert_eq!(rate.remaining(0, 0), 1_000_000_000);
    }
}
