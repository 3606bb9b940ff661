//! Per-check cost of the memory backend, and the layer's overhead over a no-op service.
//!
//! `cargo bench -p tollgate-ratelimit --bench check`
//!
//! Limits are realistic (Anthropic's tier 4 for one model, plus a daily budget); the
//! benches advance a manual clock by a second per iteration so that every check is
//! admitted. The `baseline` benches give the machine's scale.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::Full;
use tollgate_core::{Limits, ManualClock, Principal};
use tollgate_ratelimit::{Decision, LimitsConfig, RateLimitConfig, RateLimitLayer, RateLimiter};
use tower::{Layer, ServiceExt};

fn key(id: i64) -> Principal {
    Principal {
        key_id: id,
        account_id: Arc::from(format!("account-{}", id % 1000)),
        name: None,
        allowed_models: None,
        limits: Limits::default(),
    }
}

fn config(scopes: usize) -> RateLimitConfig {
    let limits = LimitsConfig {
        rpm: Some(4_000),
        itpm: Some(2_000_000),
        otpm: Some(400_000),
        tpd: Some(1_000_000_000),
        burst: 100,
    };
    let mut c = RateLimitConfig {
        default_key: limits,
        ..RateLimitConfig::default()
    };
    if scopes >= 2 {
        c.account = limits;
    }
    if scopes >= 3 {
        c.global = limits;
    }
    c
}

fn limiter(scopes: usize) -> (RateLimiter, ManualClock) {
    let clock = ManualClock::new();
    let limiter = RateLimiter::with_clock(&config(scopes), Arc::new(clock.clone())).expect("valid");
    (limiter, clock)
}

fn check(limiter: &RateLimiter, principal: &Principal) -> bool {
    let decision = limiter
        .check(Some(principal), 1000)
        .now_or_never()
        .expect("the memory backend decides at once");
    matches!(decision, Decision::Admitted(_))
}

fn bench_baseline(c: &mut Criterion) {
    c.bench_function("baseline: std Instant::now", |b| {
        b.iter(std::time::Instant::now)
    });
    let map: dashmap::DashMap<u64, [u64; 4]> = dashmap::DashMap::new();
    c.bench_function("baseline: dashmap entry (SipHash)", |b| {
        b.iter(|| map.entry(black_box(7)).or_insert([0; 4])[0] += 1)
    });
}

fn bench_checks(c: &mut Criterion) {
    let k = key(1);
    let (one, clock) = limiter(1);
    c.bench_function("memory check: key scope, 4 dimensions, hot key", |b| {
        b.iter(|| {
            clock.advance(Duration::from_secs(1));
            check(&one, black_box(&k))
        })
    });

    let (three, clock) = limiter(3);
    c.bench_function("memory check: key + account + global, hot key", |b| {
        b.iter(|| {
            clock.advance(Duration::from_secs(1));
            check(&three, black_box(&k))
        })
    });

    let keys: Vec<Principal> = (0..1_000_000).map(key).collect();
    let (many, clock) = limiter(3);
    let mut i = 0;
    c.bench_function(
        "memory check: key + account + global, 1M distinct keys",
        |b| {
            b.iter(|| {
                clock.advance(Duration::from_secs(1));
                i = (i + 1) % keys.len();
                check(&many, black_box(&keys[i]))
            })
        },
    );
}

fn bench_headers(c: &mut Criterion) {
    let (three, _clock) = limiter(3);
    let Decision::Admitted(admission) = three
        .check(Some(&key(1)), 1000)
        .now_or_never()
        .expect("at once")
    else {
        panic!("admitted")
    };
    c.bench_function("Admission::write_headers (3 scopes, 4 dimensions)", |b| {
        b.iter(|| {
            let mut headers = http::HeaderMap::new();
            admission.write_headers(black_box(&mut headers));
            headers
        })
    });
}

fn bench_layer(c: &mut Criterion) {
    let noop = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let (with_headers, clock) = limiter(3);
    let limited = RateLimitLayer::new(with_headers).layer(noop);
    let (without_headers, quiet_clock) = limiter(3);
    let quiet = RateLimitLayer::new(without_headers)
        .headers_on_success(false)
        .layer(noop);
    let k = key(1);
    let request = || {
        let mut req = Request::post("/v1/messages")
            .body(Full::default())
            .expect("valid");
        req.extensions_mut().insert(k.clone());
        req
    };
    c.bench_function("no-op service", |b| {
        b.iter(|| noop.oneshot(request()).now_or_never())
    });
    c.bench_function(
        "RateLimitLayer (3 scopes, success headers) over no-op",
        |b| {
            b.iter(|| {
                clock.advance(Duration::from_secs(1));
                limited.clone().oneshot(request()).now_or_never()
            })
        },
    );
    c.bench_function(
        "RateLimitLayer (3 scopes, no success headers) over no-op",
        |b| {
            b.iter(|| {
                quiet_clock.advance(Duration::from_secs(1));
                quiet.clone().oneshot(request()).now_or_never()
            })
        },
    );
}

criterion_group!(
    benches,
    bench_baseline,
    bench_checks,
    bench_headers,
    bench_layer
);
criterion_main!(benches);
