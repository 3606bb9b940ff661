//! Kill -9 a process that is reserving and settling under load, then reconcile: the books
//! balance to the micro-unit (SQLite and PostgreSQL; memory dies with its process).

#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tollgate_balance::{Amount, Charge, EntryKind, Ledger, SqliteLedger};

use common::Backend;

const CHILD_ENV: &str = "TOLLGATE_BALANCE_CRASH_CHILD";
const START: i64 = 1_000_000_000;

/// The child: 8 workers reserving, settling, releasing and abandoning, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by the crash tests"]
async fn crash_child() {
    let Ok(target) = std::env::var(CHILD_ENV) else {
        return;
    };
    let ledger: Arc<dyn Ledger> = match target.strip_prefix("schema=") {
        Some(schema) => Arc::new(common::postgres_in(schema, &child_application(schema)).await),
        None => Arc::new(SqliteLedger::connect(&target).await.expect("open")),
    };
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let mut seed = w.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                for i in 0.. {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let roll = (seed >> 33) % 100;
                    let expires = SystemTime::now() + Duration::from_secs(3600);
                    let id = format!("w{w}_{i}");
                    let Ok(r) = ledger
                        .reserve("acme", &id, Amount::from_micros(1_000), expires)
                        .await
                    else {
                        continue;
                    };
                    match roll {
                        0..=69 => {
                            let cost = Amount::from_micros((seed >> 40) as i64 % 1_000);
                            ledger
                                .settle(&r, Charge::new(cost, "m"))
                                .await
                                .expect("settle");
                        }
                        70..=89 => {
                            ledger.release(&r, "released").await.expect("release");
                        }
                        _ => {} // left open, as a crash would
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

fn child_application(schema: &str) -> String {
    format!("crash-child-{schema}")
}

/// The server finishes statements a killed client already sent; wait for its sessions to go.
async fn wait_for_child_sessions(schema: &str) {
    let admin = sqlx::PgPool::connect(&common::postgres_url())
        .await
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(child_application(schema))
                .fetch_one(&admin)
                .await
                .expect("pg_stat_activity");
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed child's sessions linger"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.close().await;
}

async fn books_balance_after_kill_9(backend: Backend) {
    let Some(t) = common::ledger(backend).await else {
        return;
    };
    let ledger = t.ledger.clone();
    ledger.open_account("acme", "USD").await.expect("open");
    ledger
        .topup("acme", Amount::from_micros(START), "start")
        .await
        .expect("topup");
    let target = match (backend, t.schema()) {
        (Backend::Postgres, Some(schema)) => format!("schema={schema}"),
        _ => t.sqlite_url().expect("sqlite file"),
    };
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &target)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = ledger.history("acme", 400).await.expect("history").len();
        if done >= 400 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child made only {done} entries in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("kill -9"); // SIGKILL: no destructor, no flush
    child.wait().expect("reaped");
    if let Some(schema) = t.schema() {
        wait_for_child_sessions(schema).await;
    }

    // A restarted gateway, once the crashed one's reservations expired.
    let before = ledger.balance("acme").await.expect("balance");
    assert!(
        before.reserved > Amount::ZERO,
        "the crash left reservations open"
    );
    let released = ledger
        .reconcile_expired(SystemTime::now() + Duration::from_secs(7200))
        .await
        .expect("reconcile");
    assert!(released > 0);

    let after = ledger.balance("acme").await.expect("balance");
    assert_eq!(after.reserved, Amount::ZERO, "nothing left held");
    assert_eq!(after.balance, before.balance, "reconciling charges nothing");
    let history = ledger.history("acme", u32::MAX).await.expect("history");
    let sum: i64 = history.iter().map(|e| e.amount.micros()).sum();
    assert_eq!(
        sum,
        after.balance.micros(),
        "the ledger adds up to the balance"
    );
    let expired = history
        .iter()
        .filter(|e| e.kind == EntryKind::Expire)
        .count() as u64;
    assert_eq!(
        expired, released,
        "one logged entry per released reservation"
    );
    assert!(after.balance.micros() >= 0);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_books_balance_after_kill_9_and_reconcile() {
    books_balance_after_kill_9(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_books_balance_after_kill_9_and_reconcile() {
    books_balance_after_kill_9(Backend::Postgres).await;
}
