//! One ledger per test, on every backend: memory, a real SQLite file, and a fresh schema of
//! the local PostgreSQL (`TOLLGATE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). An unreachable PostgreSQL skips, except
//! under `CI=true`, where it fails.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;
use tollgate_balance::{Ledger, MemoryLedger, PostgresLedger, SqliteLedger};

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

/// A ledger and what must be cleaned up after it.
pub struct TestLedger {
    pub ledger: Arc<dyn Ledger>,
    dir: Option<tempfile::TempDir>,
    schema: Option<(sqlx::PgPool, String)>,
}

impl TestLedger {
    /// The SQLite URL of the ledger file, if any.
    pub fn sqlite_url(&self) -> Option<String> {
        self.dir
            .as_ref()
            .map(|d| format!("sqlite:{}", d.path().join("ledger.db").display()))
    }

    /// The PostgreSQL schema the ledger lives in, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_ref().map(|(_, s)| s.as_str())
    }

    pub async fn cleanup(self) {
        if let Some((admin, schema)) = self.schema {
            let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
            admin.close().await;
        }
    }
}

pub fn postgres_url() -> String {
    std::env::var("TOLLGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A fresh ledger on `backend`, or `None` when PostgreSQL is unreachable outside CI.
pub async fn ledger(backend: Backend) -> Option<TestLedger> {
    match backend {
        Backend::Memory => Some(TestLedger {
            ledger: Arc::new(MemoryLedger::new()),
            dir: None,
            schema: None,
        }),
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
            let ledger = SqliteLedger::connect(&url)
                .await
                .expect("open sqlite ledger");
            Some(TestLedger {
                ledger: Arc::new(ledger),
                dir: Some(dir),
                schema: None,
            })
        }
        Backend::Postgres => postgres().await,
    }
}

/// A ledger on the existing PostgreSQL `schema`, its sessions named `application`.
pub async fn postgres_in(schema: &str, application: &str) -> PostgresLedger {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    let options = PgConnectOptions::from_str(&postgres_url())
        .expect("valid url")
        .options([("search_path", schema)])
        .application_name(application);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options)
        .await
        .expect("connect to test schema");
    PostgresLedger::from_pool(pool).await.expect("migrate")
}

async fn postgres() -> Option<TestLedger> {
    use sqlx::postgres::PgPoolOptions;

    static SEQ: AtomicU64 = AtomicU64::new(0);
    let url = postgres_url();
    let admin = match PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&url)
        .await
    {
        Ok(pool) => pool,
        Err(e) if in_ci() => panic!("PostgreSQL at {url} is unreachable under CI=true: {e}"),
        Err(e) => {
            eprintln!(
                "skipping: PostgreSQL at {url} is unreachable ({e}); set TOLLGATE_TEST_POSTGRES_URL"
            );
            return None;
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let schema = format!(
        "tg_balance_{}_{}_{}",
        std::process::id(),
        nanos,
        SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let create = format!("CREATE SCHEMA {schema}");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&admin)
        .await
        .expect("create test schema");
    let ledger = postgres_in(&schema, "tollgate-balance-test").await;
    Some(TestLedger {
        ledger: Arc::new(ledger),
        dir: None,
        schema: Some((admin, schema)),
    })
}

/// Run `test` on a fresh ledger of `backend`, then clean up even if it panicked.
pub async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Arc<dyn Ledger>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(t) = ledger(backend).await else {
        return;
    };
    let result = AssertUnwindSafe(test(t.ledger.clone()))
        .catch_unwind()
        .await;
    t.cleanup().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Declare `memory::NAME`, `sqlite::NAME` and `postgres::NAME` for each `async fn NAME(ledger)`.
#[macro_export]
macro_rules! on_every_ledger {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run($crate::common::Backend::Memory, super::$name).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run($crate::common::Backend::Sqlite, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run($crate::common::Backend::Postgres, super::$name).await;
                }
            )*
        }
    };
}
