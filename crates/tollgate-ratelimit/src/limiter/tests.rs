use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tollgate_core::{Limits, ManualClock, Principal};

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn limiter(configure: impl FnOnce(&mut RateLimitConfig)) -> (RateLimiter, ManualClock) {
    let mut config = RateLimitConfig::default();
    configure(&mut config);
    let clock = ManualClock::new();
    let limiter = RateLimiter::with_clock(&config, Arc::new(clock.clone())).expect("valid config");
    (limiter, clock)
}

fn key(id: i64, account: &str) -> Principal {
    Principal {
        key_id: id,
        account_id: Arc::from(account),
        name: None,
        allowed_models: None,
        limits: Limits::default(),
    }
}

/// The memory backend decides without awaiting.
fn decide(limiter: &RateLimiter, principal: Option<&Principal>, tokens: u64) -> Decision {
    match limiter.begin(principal, tokens) {
        Pending::Ready(d) => d,
        Pending::Later(_) => panic!("memory backend must decide at once"),
    }
}

fn admit(limiter: &RateLimiter, principal: Option<&Principal>, tokens: u64) -> Admission {
    match decide(limiter, principal, tokens) {
        Decision::Admitted(a) => a,
        other => panic!("expected admission, got {other:?}"),
    }
}

fn refuse(limiter: &RateLimiter, principal: Option<&Principal>, tokens: u64) -> Refusal {
    match decide(limiter, principal, tokens) {
        Decision::Refused(r) => r,
        other => panic!("expected refusal, got {other:?}"),
    }
}

#[test]
fn a_full_burst_is_admitted_at_once_then_the_next_request_waits_one_interval() {
    let (l, _clock) = limiter(|c| c.default_key.rpm = Some(60));
    let k = key(1, "acme");
    for _ in 0..60 {
        admit(&l, Some(&k), 0);
    }
    let r = refuse(&l, Some(&k), 0);
    assert_eq!(
        (r.scope(), r.dimension()),
        (Scope::Key, Dimension::Requests)
    );
    assert_eq!(r.wait(), Some(SEC));
    assert!(r.should_retry());
}

#[test]
fn a_smaller_burst_admits_its_share_of_the_limit_at_once() {
    let (l, _clock) = limiter(|c| {
        c.default_key.rpm = Some(60);
        c.default_key.burst = 10;
    });
    let k = key(1, "acme");
    for _ in 0..6 {
        admit(&l, Some(&k), 0);
    }
    refuse(&l, Some(&k), 0);
}

#[test]
fn steady_traffic_gets_exactly_one_request_per_emission_interval() {
    let (l, clock) = limiter(|c| c.default_key.rpm = Some(60));
    let k = key(1, "acme");
    for _ in 0..60 {
        admit(&l, Some(&k), 0);
    }
    for _ in 0..120 {
        clock.advance(SEC);
        admit(&l, Some(&k), 0);
        refuse(&l, Some(&k), 0);
    }
    clock.advance(SEC / 2);
    assert_eq!(refuse(&l, Some(&k), 0).wait(), Some(SEC / 2));
}

#[test]
fn input_tokens_are_weighted_by_the_request_estimate() {
    let (l, clock) = limiter(|c| c.default_key.itpm = Some(1000));
    let k = key(1, "acme");
    admit(&l, Some(&k), 600);
    let r = refuse(&l, Some(&k), 600);
    assert_eq!(r.dimension(), Dimension::InputTokens);
    assert_eq!(r.wait(), Some(Duration::from_secs(12)));
    assert_eq!(
        r.quota(Dimension::InputTokens).map(|q| q.remaining),
        Some(400)
    );
    admit(&l, Some(&k), 400);
    clock.advance(Duration::from_secs(12));
    admit(&l, Some(&k), 200);
}

#[test]
fn a_request_larger_than_the_burst_is_refused_for_good() {
    let (l, _clock) = limiter(|c| c.default_key.itpm = Some(1000));
    let r = refuse(&l, Some(&key(1, "acme")), 1500);
    assert_eq!(r.wait(), None);
    assert!(!r.should_retry());
    let err = r.to_error();
    assert!(!err.should_retry());
    assert_eq!(err.retry_after(), None);
    assert!(
        err.message().contains("needs 1500 input tokens"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("allows at most 1000 at once"),
        "{}",
        err.message()
    );
}

#[test]
fn a_key_whose_limit_is_zero_is_refused_without_retry() {
    let (l, _clock) = limiter(|_| {});
    let mut k = key(1, "acme");
    k.limits.rpm = Some(0);
    let r = refuse(&l, Some(&k), 0);
    assert_eq!((r.dimension(), r.wait()), (Dimension::Requests, None));
    assert!(r.to_error().message().contains("is 0"));
}

#[test]
fn a_refusal_spends_nothing_in_any_dimension_or_scope() {
    let (l, _clock) = limiter(|c| {
        c.default_key.rpm = Some(10);
        c.default_key.itpm = Some(1000);
        c.global.rpm = Some(100);
    });
    let k = key(1, "acme");
    admit(&l, Some(&k), 900);
    refuse(&l, Some(&k), 200);
    let a = admit(&l, Some(&k), 100);
    assert_eq!(
        a.quota(Scope::Key, Dimension::Requests)
            .map(|q| q.remaining),
        Some(8)
    );
    assert_eq!(
        a.quota(Scope::Global, Dimension::Requests)
            .map(|q| q.remaining),
        Some(98)
    );
    assert_eq!(
        a.quota(Scope::Key, Dimension::InputTokens)
            .map(|q| q.remaining),
        Some(0)
    );
}

#[test]
fn the_refusal_names_the_dimension_with_the_longest_wait() {
    let (l, _clock) = limiter(|c| {
        c.default_key.rpm = Some(1);
        c.default_key.itpm = Some(6000);
    });
    let k = key(1, "acme");
    admit(&l, Some(&k), 6000);
    // Requests wait 60 s, input tokens 1 s: the request can only pass after 60 s.
    let r = refuse(&l, Some(&k), 100);
    assert_eq!(
        (r.dimension(), r.wait()),
        (Dimension::Requests, Some(60 * SEC))
    );
}

#[test]
fn output_tokens_put_the_key_in_debt_and_it_is_refused_until_repaid() {
    let (l, clock) = limiter(|c| c.default_key.otpm = Some(6000));
    let k = key(1, "acme");
    let a = admit(&l, Some(&k), 0);
    assert!(a.settles_usage());
    // Admission does not know the output; the response reports 9,000 tokens.
    admit(&l, Some(&k), 0).charge_output(0);
    a.charge_output(9000);
    let r = refuse(&l, Some(&k), 0);
    assert_eq!(
        (r.scope(), r.dimension()),
        (Scope::Key, Dimension::OutputTokens)
    );
    // 90 s of output owed, 60 s tolerated, plus room for one token (10 ms).
    assert_eq!(r.wait(), Some(Duration::from_millis(30_010)));
    assert!(
        r.to_error()
            .message()
            .contains("output tokens per minute for this key are used up")
    );
    clock.advance(Duration::from_millis(30_009));
    refuse(&l, Some(&k), 0);
    clock.advance(Duration::from_millis(1));
    admit(&l, Some(&k), 0);
}

#[test]
fn output_is_charged_to_every_scope_that_limits_it() {
    let (l, _clock) = limiter(|c| {
        c.default_key.otpm = Some(100_000);
        c.account.otpm = Some(6000);
        c.global.tpd = Some(1_000_000);
    });
    admit(&l, Some(&key(1, "acme")), 0).charge_output(9000);
    let r = refuse(&l, Some(&key(2, "acme")), 0);
    assert_eq!(
        (r.scope(), r.dimension()),
        (Scope::Account, Dimension::OutputTokens)
    );
    let a = admit(&l, Some(&key(3, "other")), 0);
    assert_eq!(
        a.quota(Scope::Global, Dimension::TokensPerDay)
            .map(|q| q.remaining),
        Some(991_000)
    );
}

#[test]
fn the_daily_budget_refills_over_the_day_not_at_midnight() {
    let (l, clock) = limiter(|c| c.default_key.tpd = Some(10_000));
    let k = key(1, "acme");
    admit(&l, Some(&k), 5000);
    admit(&l, Some(&k), 0).charge_output(5000);
    let r = refuse(&l, Some(&k), 1000);
    assert_eq!(r.dimension(), Dimension::TokensPerDay);
    // 1,000 tokens refill in 2.4 h: too long for a retry loop.
    assert_eq!(r.wait(), Some(Duration::from_secs(8640)));
    assert!(!r.should_retry());
    assert_eq!(r.to_error().retry_after(), Some(Duration::from_secs(8640)));
    clock.advance(Duration::from_secs(12 * 3600));
    admit(&l, Some(&k), 5000);
    refuse(&l, Some(&k), 1);
    clock.advance(Duration::from_secs(24 * 3600));
    admit(&l, Some(&k), 10_000);
}

#[test]
fn a_keys_own_limits_replace_the_defaults_field_by_field() {
    let (l, _clock) = limiter(|c| {
        c.default_key.rpm = Some(2);
        c.default_key.itpm = Some(1000);
    });
    let mut k = key(1, "acme");
    k.limits.rpm = Some(3);
    let a = admit(&l, Some(&k), 10);
    assert_eq!(
        a.quota(Scope::Key, Dimension::Requests).map(|q| q.limit),
        Some(3)
    );
    assert_eq!(
        a.quota(Scope::Key, Dimension::InputTokens).map(|q| q.limit),
        Some(1000)
    );
    admit(&l, Some(&k), 0);
    admit(&l, Some(&k), 0);
    refuse(&l, Some(&k), 0);
}

#[test]
fn a_keys_own_burst_sizes_its_buckets_over_the_configured_burst() {
    let (l, clock) = limiter(|c| {
        c.default_key.rpm = Some(60);
        c.default_key.burst = 50;
    });
    // The key's own burst, 5 % of 60: three requests at once, then one a second.
    let mut k = key(1, "acme");
    k.limits.burst = Some(5);
    for _ in 0..3 {
        admit(&l, Some(&k), 0);
    }
    let r = refuse(&l, Some(&k), 0);
    assert_eq!(r.wait(), Some(SEC));
    clock.advance(SEC);
    admit(&l, Some(&k), 0);
    // A key without one gets the configured 50 %: thirty at once.
    let plain = key(2, "acme");
    for _ in 0..30 {
        admit(&l, Some(&plain), 0);
    }
    refuse(&l, Some(&plain), 0);
    // Out-of-range values from a key store are held to 1–1000 %.
    let mut odd = key(3, "acme");
    odd.limits.burst = Some(0);
    admit(&l, Some(&odd), 0);
    refuse(&l, Some(&odd), 0);
}

#[test]
fn keys_of_one_account_share_the_account_limit() {
    let (l, _clock) = limiter(|c| c.account.rpm = Some(2));
    admit(&l, Some(&key(1, "acme")), 0);
    admit(&l, Some(&key(2, "acme")), 0);
    let r = refuse(&l, Some(&key(3, "acme")), 0);
    assert_eq!(r.scope(), Scope::Account);
    assert!(r.to_error().message().contains("for this key's account"));
    admit(&l, Some(&key(4, "other")), 0);
}

#[test]
fn the_global_ceiling_is_shared_across_keys_and_accounts() {
    let (l, _clock) = limiter(|c| {
        c.default_key.rpm = Some(100);
        c.global.rpm = Some(3);
    });
    admit(&l, Some(&key(1, "a")), 0);
    admit(&l, Some(&key(2, "b")), 0);
    admit(&l, None, 0);
    let r = refuse(&l, Some(&key(3, "c")), 0);
    assert_eq!((r.scope(), r.wait()), (Scope::Global, Some(20 * SEC)));
    assert!(r.to_error().message().contains("for this gateway"));
}

#[test]
fn a_request_without_a_principal_is_limited_only_globally() {
    let (l, _clock) = limiter(|c| c.default_key.rpm = Some(1));
    for _ in 0..5 {
        let a = admit(&l, None, 0);
        assert!(a.quota(Scope::Key, Dimension::Requests).is_none());
    }
    assert_eq!(l.tracked(), 0);
}

#[test]
fn the_tightest_scope_is_the_one_with_the_fewest_remaining() {
    let (l, _clock) = limiter(|c| {
        c.default_key.rpm = Some(10);
        c.account.rpm = Some(5);
        c.global.rpm = Some(1000);
    });
    let a = admit(&l, Some(&key(1, "acme")), 0);
    let (scope, quota) = a.tightest(Dimension::Requests).expect("limited");
    assert_eq!(
        (scope, quota.limit, quota.remaining),
        (Scope::Account, 5, 4)
    );
    assert_eq!(quota.reset_after, Duration::from_secs(12));
}

#[test]
fn idle_state_is_evicted_and_busy_state_is_kept() {
    let (l, clock) = limiter(|c| {
        c.default_key.rpm = Some(60);
        c.account.rpm = Some(600);
    });
    admit(&l, Some(&key(1, "a")), 0);
    admit(&l, Some(&key(2, "a")), 0);
    clock.advance(SEC / 2);
    for _ in 0..30 {
        admit(&l, Some(&key(3, "b")), 0);
    }
    assert_eq!(l.tracked(), 5);
    clock.advance(SEC / 2);
    // Keys 1 and 2 are full again (1 s per request); account a too (0.2 s); key 3 owes 29.5 s.
    assert_eq!(l.evict_idle(), 3);
    assert_eq!(l.tracked(), 2);
    // Losslessly: key 1 starts over with a full bucket, key 3 is still limited.
    for _ in 0..60 {
        admit(&l, Some(&key(1, "a")), 0);
    }
    let a = admit(&l, Some(&key(3, "b")), 0);
    assert_eq!(
        a.quota(Scope::Key, Dimension::Requests)
            .map(|q| q.remaining),
        Some(29)
    );
}

#[test]
fn eviction_runs_by_itself_once_the_interval_has_passed() {
    let (l, clock) = limiter(|c| {
        c.default_key.rpm = Some(60);
        c.evict_interval_secs = 10;
    });
    for id in 0..100 {
        admit(&l, Some(&key(id, "a")), 0);
    }
    assert_eq!(l.tracked(), 100);
    clock.advance(10 * SEC);
    admit(&l, Some(&key(1000, "a")), 0);
    assert_eq!(l.tracked(), 1);
}

#[test]
fn an_unlimited_configuration_admits_without_keeping_state() {
    let (l, _clock) = limiter(|_| {});
    let a = admit(&l, Some(&key(1, "a")), 1_000_000);
    assert!(!a.settles_usage());
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "anthropic-ratelimit-requests-limit",
        http::HeaderValue::from_static("5"),
    );
    a.write_headers(&mut headers);
    assert_eq!(
        headers.len(),
        1,
        "nothing limited: upstream headers left alone"
    );
    assert_eq!(l.tracked(), 0);
}

#[test]
fn a_redis_backend_needs_the_feature_or_a_runtime() {
    let config = RateLimitConfig {
        backend: BackendConfig::Redis(crate::RedisConfig::default()),
        ..RateLimitConfig::default()
    };
    let err = RateLimiter::from_config(&config).expect_err("no runtime / no feature");
    assert_eq!(err.key, "backend.kind");
}

proptest! {
    /// For random arrivals and costs, the units admitted in any window of length W never
    /// exceed burst + W × limit / period (plus one tick of rounding).
    #[test]
    fn admitted_work_never_exceeds_limit_plus_burst_in_any_window(
        limit in 1u64..5_000,
        burst in 1u32..=200,
        arrivals in proptest::collection::vec((0u64..3_000, 1u64..400), 1..200),
    ) {
        let (l, clock) = limiter(|c| {
            c.default_key.itpm = Some(limit);
            c.default_key.burst = burst;
        });
        let k = key(1, "a");
        let capacity = crate::gcra::Rate::new(limit, burst, 1).capacity;
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        let mut t_ms = 0;
        for (gap_ms, cost) in arrivals {
            clock.advance(Duration::from_millis(gap_ms));
            t_ms += gap_ms;
            if let Decision::Admitted(_) = decide(&l, Some(&k), cost) {
                admitted.push((t_ms, cost));
            }
        }
        for i in 0..admitted.len() {
            let mut sum = 0;
            for j in i..admitted.len() {
                sum += admitted[j].1;
                let window_ns = u128::from(admitted[j].0 - admitted[i].0) * 1_000_000 + 1;
                let bound = u128::from(capacity) + window_ns * u128::from(limit) / 60_000_000_000;
                prop_assert!(
                    u128::from(sum) <= bound,
                    "{} units admitted in {} ms, bound {}", sum, admitted[j].0 - admitted[i].0, bound
                );
            }
        }
    }

    /// Requests and tokens together, across a key and the global scope: neither scope's
    /// requests exceed its bound.
    #[test]
    fn no_scope_exceeds_its_requests_bound_with_many_keys(
        arrivals in proptest::collection::vec((0u64..500, 0i64..4), 1..300),
    ) {
        let (l, clock) = limiter(|c| {
            c.default_key.rpm = Some(30);
            c.default_key.burst = 10;
            c.global.rpm = Some(60);
            c.global.burst = 5;
        });
        let mut per_key: Vec<Vec<u64>> = vec![Vec::new(); 4];
        let mut all = Vec::new();
        let mut t_ms = 0;
        for (gap_ms, id) in arrivals {
            clock.advance(Duration::from_millis(gap_ms));
            t_ms += gap_ms;
            if let Decision::Admitted(_) = decide(&l, Some(&key(id, "a")), 0) {
                per_key[id as usize].push(t_ms);
                all.push(t_ms);
            }
        }
        let check = |times: &[u64], capacity: u64, per_minute: u64| {
            for i in 0..times.len() {
                for j in i..times.len() {
                    let n = (j - i + 1) as u64;
                    let bound = capacity + (times[j] - times[i]) * per_minute / 60_000;
                    if n > bound {
                        return Err(format!("{n} admitted in {} ms, bound {bound}", times[j] - times[i]));
                    }
                }
            }
            Ok(())
        };
        for times in &per_key {
            prop_assert!(check(times, 3, 30).is_ok(), "{:?}", check(times, 3, 30));
        }
        prop_assert!(check(&all, 3, 60).is_ok(), "{:?}", check(&all, 3, 60));
    }
}

fn remaining(a: &Admission, scope: Scope, dim: Dimension) -> u64 {
    a.quota(scope, dim).map(|q| q.remaining).expect("limited")
}

#[test]
fn an_overestimated_input_is_refunded_when_the_usage_reports_less() {
    let (l, _clock) = limiter(|c| c.default_key.itpm = Some(6000));
    let k = key(1, "acme");
    let a = admit(&l, Some(&k), 3000);
    assert_eq!(remaining(&a, Scope::Key, Dimension::InputTokens), 3000);
    // The body looked like 3,000 tokens; the API counted 1,000.
    a.settle(Some(1000), 0);
    let b = admit(&l, Some(&k), 5000);
    assert_eq!(remaining(&b, Scope::Key, Dimension::InputTokens), 0);
    refuse(&l, Some(&k), 1);
}

#[test]
fn an_underestimated_input_is_charged_the_difference_even_into_debt() {
    let (l, clock) = limiter(|c| c.default_key.itpm = Some(6000));
    let k = key(1, "acme");
    admit(&l, Some(&k), 1000).settle(Some(9000), 0);
    // 9,000 spent of a 6,000 bucket at 100 a second: 3,000 owed, 30 s, plus 1 token.
    let r = refuse(&l, Some(&k), 1);
    assert_eq!(r.dimension(), Dimension::InputTokens);
    assert_eq!(r.wait(), Some(Duration::from_millis(30_010)));
    clock.advance(Duration::from_millis(30_010));
    admit(&l, Some(&k), 1);
}

#[test]
fn a_refund_never_fills_a_bucket_beyond_full() {
    let (l, clock) = limiter(|c| c.default_key.itpm = Some(6000));
    let k = key(1, "acme");
    let a = admit(&l, Some(&k), 6000);
    // The bucket refills completely before the response ends.
    clock.advance(60 * SEC);
    a.settle(Some(0), 0);
    admit(&l, Some(&k), 6000);
    let r = refuse(&l, Some(&k), 100);
    assert_eq!(r.wait(), Some(SEC));
}

#[test]
fn without_reported_usage_the_estimate_stands_and_output_is_still_charged() {
    let (l, _clock) = limiter(|c| {
        c.default_key.itpm = Some(6000);
        c.default_key.tpd = Some(100_000);
    });
    let k = key(1, "acme");
    admit(&l, Some(&k), 3000).settle(None, 500);
    let a = admit(&l, Some(&k), 0);
    assert_eq!(remaining(&a, Scope::Key, Dimension::InputTokens), 3000);
    assert_eq!(remaining(&a, Scope::Key, Dimension::TokensPerDay), 96_500);
}

#[test]
fn tokens_per_day_are_settled_to_real_input_plus_output_in_every_scope() {
    let (l, _clock) = limiter(|c| {
        c.default_key.tpd = Some(100_000);
        c.account.itpm = Some(60_000);
        c.global.tpd = Some(1_000_000);
    });
    let k = key(1, "acme");
    let a = admit(&l, Some(&k), 4000);
    assert_eq!(remaining(&a, Scope::Key, Dimension::TokensPerDay), 96_000);
    assert!(a.settles_usage());
    a.settle(Some(1500), 700);
    let b = admit(&l, Some(&k), 0);
    assert_eq!(remaining(&b, Scope::Key, Dimension::TokensPerDay), 97_800);
    assert_eq!(
        remaining(&b, Scope::Global, Dimension::TokensPerDay),
        997_800
    );
    assert_eq!(
        remaining(&b, Scope::Account, Dimension::InputTokens),
        58_500
    );
}

#[test]
fn stored_state_survives_rebasing_when_no_sweep_ran_for_longer_than_ten_minutes() {
    let (l, clock) = limiter(|c| {
        c.default_key.otpm = Some(60);
        c.evict_interval_secs = 3600;
    });
    let k = key(1, "acme");
    // 1,860 tokens at one a second: 30 minutes of debt beyond the 60 s bucket.
    admit(&l, Some(&k), 0).charge_output(1860);
    clock.advance(20 * 60 * SEC);
    // Another key in the same process touches state; the debtor's shard is rebased when
    // it is next locked, and its debt is still 10 minutes (plus room for one token).
    admit(&l, Some(&key(2, "acme")), 0);
    let r = refuse(&l, Some(&k), 0);
    assert_eq!(r.wait(), Some(10 * 60 * SEC + SEC));
    clock.advance(10 * 60 * SEC + SEC);
    admit(&l, Some(&k), 0);
    // Key 2's check only peeked at its output bucket: it stored nothing.
    assert_eq!(l.tracked(), 1);
    clock.advance(2 * 3600 * SEC);
    assert_eq!(l.evict_idle(), 1);
    assert_eq!(l.tracked(), 0);
}
