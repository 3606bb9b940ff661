//! Reserve + settle latency and throughput per ledger. Not a pass/fail test; run with
//! `cargo test --release -p tollgate-balance --all-features --test latency -- --ignored --nocapture`.

#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tollgate_balance::{Amount, Charge, Ledger, SqliteLedger};

use common::Backend;

async fn reserve_settle(ledger: &dyn Ledger, account: &str, id: &str) {
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let r = ledger
        .reserve(account, id, Amount::from_micros(100), expires)
        .await
        .expect("reserve");
    ledger
        .settle(
            &r,
            Charge::new(Amount::from_micros(60), "claude-sonnet-4-6"),
        )
        .await
        .expect("settle");
}

async fn measure(name: &str, ledger: Arc<dyn Ledger>, sequential: usize, concurrent: usize) {
    for a in 0..50 {
        let account = format!("bench{a}");
        ledger.open_account(&account, "USD").await.expect("open");
        ledger
            .topup(&account, Amount::from_micros(i64::MAX / 4), "bench")
            .await
            .expect("topup");
    }
    for i in 0..sequential.min(100) {
        reserve_settle(&*ledger, "bench0", &format!("warm_{i}")).await;
    }
    let start = Instant::now();
    for i in 0..sequential {
        reserve_settle(&*ledger, "bench0", &format!("seq_{i}")).await;
    }
    let per = start.elapsed() / sequential as u32;
    let one = at_50_concurrent(&ledger, concurrent, false).await;
    let many = at_50_concurrent(&ledger, concurrent, true).await;
    println!(
        "{name}: reserve+settle {per:.1?} sequential; at 50 concurrent: {one:.0} pairs/s on one account, {many:.0} pairs/s on 50 accounts"
    );
}

/// Pairs per second from 50 concurrent clients, on one account or one account each.
async fn at_50_concurrent(ledger: &Arc<dyn Ledger>, total: usize, spread: bool) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|c| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let account = if spread {
                    format!("bench{c}")
                } else {
                    "bench0".to_string()
                };
                for i in 0..total / 50 {
                    reserve_settle(&*ledger, &account, &format!("c{spread}_{c}_{i}")).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    (total / 50 * 50) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints timings; run explicitly"]
async fn reserve_settle_latency() {
    common::run(Backend::Memory, |l| measure("memory", l, 200_000, 200_000)).await;
    common::run(Backend::Sqlite, |l| {
        measure("sqlite (synchronous=FULL)", l, 2_000, 2_000)
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite:{}", dir.path().join("normal.db").display());
    let options = SqliteLedger::options(&url)
        .expect("options")
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
    let normal = SqliteLedger::connect_with(options).await.expect("open");
    measure(
        "sqlite (synchronous=NORMAL)",
        Arc::new(normal),
        5_000,
        5_000,
    )
    .await;
    common::run(Backend::Postgres, |l| measure("postgres", l, 3_000, 5_000)).await;
}
