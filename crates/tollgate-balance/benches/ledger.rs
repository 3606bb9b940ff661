//! Reserve + settle per ledger (criterion): one pair at a time (latency), and 50 tasks at
//! once on one hot account and on 50 accounts (throughput; criterion's `elem/s` is pairs
//! per second). Memory, SQLite (a file in a temporary directory, the default options) and
//! the local PostgreSQL (a schema of its own, dropped afterwards; skipped when unreachable
//! unless `CI=true`, see `tests/common`).
//!
//! Run: `cargo bench -p tollgate-balance --all-features --bench ledger`. The SQL figures
//! depend on the disk and on what else runs; compare backends within one run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tollgate_balance::{Amount, Charge, Ledger};

use common::Backend;

/// Concurrent tasks of the throughput benchmarks.
const TASKS: u64 = 50;

/// Unique request ids across every iteration of every benchmark.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

async fn reserve_settle(ledger: &dyn Ledger, account: &str) {
    let id = format!("bench_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let r = ledger
        .reserve(account, &id, Amount::from_micros(100), expires)
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));
    ledger
        .settle(
            &r,
            Charge::new(Amount::from_micros(60), "claude-sonnet-4-6"),
        )
        .await
        .unwrap_or_else(|e| panic!("settle: {e}"));
}

/// `iters` pairs spread over [`TASKS`] tasks, on `bench0` only or one account per task.
async fn concurrent(ledger: &Arc<dyn Ledger>, iters: u64, spread: bool) -> Duration {
    let per_task = iters.div_ceil(TASKS);
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let account = format!("bench{}", if spread { t } else { 0 });
                for _ in 0..per_task {
                    reserve_settle(&*ledger, &account).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("bench task: {e}"));
    }
    // Per pair asked for, so that criterion's elem/s is pairs per second.
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * TASKS) as f64)
}

fn ledgers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    for (name, backend) in [
        ("memory", Backend::Memory),
        ("sqlite", Backend::Sqlite),
        ("postgres", Backend::Postgres),
    ] {
        let Some(test) = rt.block_on(common::ledger(backend)) else {
            continue;
        };
        rt.block_on(fund(&test.ledger));
        bench_one(c, &rt, name, &test.ledger);
        rt.block_on(test.cleanup());
    }
}

async fn fund(ledger: &Arc<dyn Ledger>) {
    for a in 0..TASKS {
        let account = format!("bench{a}");
        ledger
            .open_account(&account, "USD")
            .await
            .unwrap_or_else(|e| panic!("open: {e}"));
        ledger
            .topup(&account, Amount::from_micros(i64::MAX / 4), "bench")
            .await
            .unwrap_or_else(|e| panic!("topup: {e}"));
    }
}

fn bench_one(c: &mut Criterion, rt: &Runtime, name: &str, ledger: &Arc<dyn Ledger>) {
    let mut group = c.benchmark_group(format!("ledger/{name}"));
    group.throughput(Throughput::Elements(1));
    if name != "memory" {
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
    }
    group.bench_function("reserve_settle/serial", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let ledger = ledger.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    reserve_settle(&*ledger, "bench0").await;
                }
                start.elapsed()
            }
        });
    });
    for (what, spread) in [("one_account", false), ("50_accounts", true)] {
        group.bench_function(format!("reserve_settle/50_concurrent/{what}"), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let ledger = ledger.clone();
                async move { concurrent(&ledger, iters, spread).await }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, ledgers);
criterion_main!(benches);
