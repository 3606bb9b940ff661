//! Memory per key and per-check time of the memory backend at 1M keys.
//!
//! Bytes per key: the process's resident set (`VmRSS`) after 1M distinct keys have been
//! checked once, minus before (the principals are allocated before the first reading).
//!
//! `cargo test --release -p tollgate-ratelimit --test memory_cost -- --ignored --nocapture`

use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use tollgate_core::{Limits, Principal};
use tollgate_ratelimit::{Decision, RateLimitConfig, RateLimiter};

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn memory_backend_bytes_per_key_and_check_time_at_one_million_keys() {
    const KEYS: i64 = 1_000_000;
    let mut config = RateLimitConfig::default();
    config.default_key.rpm = Some(1000);
    config.default_key.itpm = Some(1_000_000);
    config.default_key.otpm = Some(100_000);
    config.default_key.tpd = Some(100_000_000);
    let limiter = RateLimiter::from_config(&config).expect("valid");
    let account: Arc<str> = Arc::from("acme");
    let principals: Vec<Principal> = (0..KEYS)
        .map(|id| Principal {
            key_id: id,
            account_id: account.clone(),
            name: None,
            allowed_models: None,
            limits: Limits::default(),
        })
        .collect();
    let before = rss_bytes().expect("linux /proc");
    let start = Instant::now();
    for p in &principals {
        let d = limiter.check(Some(p), 100).now_or_never().expect("at once");
        assert!(matches!(d, Decision::Admitted(_)));
    }
    let inserting = start.elapsed();
    let after = rss_bytes().expect("linux /proc");
    assert_eq!(limiter.tracked(), KEYS as usize);
    let start = Instant::now();
    for p in &principals {
        let d = limiter.check(Some(p), 100).now_or_never().expect("at once");
        assert!(matches!(d, Decision::Admitted(_)));
    }
    let existing = start.elapsed();
    eprintln!(
        "1M keys: RSS +{:.1} MiB = {} bytes/key; first check (insert) {:?}/check, later checks {:?}/check",
        (after - before) as f64 / (1024.0 * 1024.0),
        (after - before) / KEYS as u64,
        inserting / KEYS as u32,
        existing / KEYS as u32,
    );
}
