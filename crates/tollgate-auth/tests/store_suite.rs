//! One suite every KeyStore passes: memory, a SQLite file, and PostgreSQL (in a fresh
//! schema per test, dropped afterwards; skipped when the server is unreachable, except
//! under `CI=true`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tollgate_auth::{
    AccountStatus, KeyHash, KeyStatus, KeyStore, MemoryKeyStore, NewKey, SecretKey, StoreErrorKind,
};
use tollgate_core::Limits;

// ===== the suite =====

async fn suite(store: Arc<dyn KeyStore>) {
    // Accounts.
    let acme = store.create_account("acme").await.expect("create account");
    assert_eq!(acme.id, "acme");
    assert_eq!(acme.status, AccountStatus::Active);
    assert_eq!(
        store.account("acme").await.expect("read"),
        Some(acme.clone())
    );
    assert_eq!(store.account("nobody").await.expect("read"), None);
    let dup = store.create_account("acme").await.expect_err("duplicate");
    assert_eq!(dup.kind(), StoreErrorKind::Conflict);
    assert!(dup.message().contains("already exists"), "{dup}");
    let bad = store.create_account("has space").await.expect_err("bad id");
    assert_eq!(bad.kind(), StoreErrorKind::InvalidInput);
    store.create_account("other").await.expect("second account");

    // A key for a missing account.
    let missing = store
        .create(NewKey::new("ghost"))
        .await
        .expect_err("no account");
    assert_eq!(missing.kind(), StoreErrorKind::NotFound);
    assert!(
        missing.message().contains("tollgate accounts create ghost"),
        "{missing}"
    );

    // Create.
    let before = SystemTime::now() - Duration::from_secs(1);
    let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let (record, key) = store
        .create(
            NewKey::new("acme")
                .name("ci-bot")
                .allowed_models(["claude-haiku-4-5", "claude-sonnet-4-6"])
                .limits(Limits {
                    rpm: Some(60),
                    itpm: None,
                    otpm: Some(8_000),
                    tpd: Some(1 << 40),
                    burst: Some(10),
                })
                .expires_at(expires + Duration::from_millis(700)),
        )
        .await
        .expect("create key");
    let k = key.expose();
    assert!(k.starts_with("tg-") && k.len() == 35, "key shape");
    assert_eq!(record.prefix, &k[..7]);
    assert_eq!(record.hash, KeyHash::of(k));
    assert_eq!(record.account_id, "acme");
    assert_eq!(record.name.as_deref(), Some("ci-bot"));
    assert_eq!(
        record.allowed_models,
        Some(vec![
            "claude-haiku-4-5".to_owned(),
            "claude-sonnet-4-6".to_owned()
        ])
    );
    assert_eq!(record.limits.rpm, Some(60));
    assert_eq!(record.limits.itpm, None);
    assert_eq!(record.limits.tpd, Some(1 << 40));
    assert_eq!(record.limits.burst, Some(10));
    assert_eq!(record.status, KeyStatus::Active);
    assert_eq!(record.account_status, AccountStatus::Active);
    assert_eq!(record.expires_at, Some(expires), "kept in whole seconds");
    assert_eq!(record.last_used_at, None);
    assert!(record.created_at >= before && record.created_at <= SystemTime::now());

    // Lookup by hash and by id.
    assert_eq!(
        store.lookup(&key.hash()).await.expect("lookup"),
        Some(record.clone())
    );
    assert_eq!(
        store
            .lookup(&SecretKey::generate().hash())
            .await
            .expect("lookup"),
        None
    );
    assert_eq!(
        store.key(record.id).await.expect("key"),
        Some(record.clone())
    );
    assert_eq!(store.key(record.id + 1000).await.expect("key"), None);

    // A plain key, for another account.
    let (plain, _) = store.create(NewKey::new("other")).await.expect("plain key");
    assert_eq!(plain.name, None);
    assert_eq!(plain.allowed_models, None);
    assert_eq!(plain.limits, Limits::default());
    assert_eq!(plain.expires_at, None);
    assert_ne!(plain.id, record.id);

    // List.
    let all: Vec<i64> = store
        .list(None)
        .await
        .expect("list")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(all, vec![record.id, plain.id]);
    let acme_keys = store.list(Some("acme")).await.expect("list acme");
    assert_eq!(acme_keys, vec![record.clone()]);
    assert!(store.list(Some("nobody")).await.expect("list").is_empty());

    // Limits.
    let limits = Limits {
        rpm: Some(5),
        itpm: Some(1000),
        otpm: None,
        tpd: None,
        burst: Some(1000),
    };
    store
        .set_limits(record.id, limits)
        .await
        .expect("set limits");
    assert_eq!(
        store
            .lookup(&key.hash())
            .await
            .expect("lookup")
            .expect("found")
            .limits,
        limits
    );
    let e = store
        .set_limits(9_999_999, limits)
        .await
        .expect_err("unknown key");
    assert_eq!(e.kind(), StoreErrorKind::NotFound);
    assert!(e.message().contains("no key with id 9999999"), "{e}");
    let huge = Limits {
        rpm: Some(u64::MAX),
        ..Limits::default()
    };
    assert_eq!(
        store
            .set_limits(record.id, huge)
            .await
            .expect_err("too large")
            .kind(),
        StoreErrorKind::InvalidInput
    );
    let zero_burst = Limits {
        burst: Some(0),
        ..Limits::default()
    };
    assert_eq!(
        store
            .set_limits(record.id, zero_burst)
            .await
            .expect_err("burst out of range")
            .kind(),
        StoreErrorKind::InvalidInput
    );

    // Touch only moves forward; unknown ids are ignored.
    let t1 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    store
        .touch(record.id, t1 + Duration::from_millis(300))
        .await
        .expect("touch");
    store
        .touch(record.id, t1 - Duration::from_secs(60))
        .await
        .expect("older touch");
    store
        .touch(9_999_999, t1)
        .await
        .expect("unknown id is fine");
    let used = store.key(record.id).await.expect("key").expect("found");
    assert_eq!(used.last_used_at, Some(t1));

    // Suspend and resume the account.
    store.suspend_account("acme").await.expect("suspend");
    let suspended = store
        .lookup(&key.hash())
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(suspended.account_status, AccountStatus::Suspended);
    assert_eq!(
        store
            .account("acme")
            .await
            .expect("read")
            .expect("found")
            .status,
        AccountStatus::Suspended
    );
    store.resume_account("acme").await.expect("resume");
    let resumed = store
        .lookup(&key.hash())
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(resumed.account_status, AccountStatus::Active);
    assert_eq!(
        store
            .suspend_account("nobody")
            .await
            .expect_err("unknown")
            .kind(),
        StoreErrorKind::NotFound
    );

    // Disable.
    store.disable(record.id).await.expect("disable");
    store.disable(record.id).await.expect("disable again");
    let disabled = store
        .lookup(&key.hash())
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(disabled.status, KeyStatus::Disabled);
    assert_eq!(
        store.disable(9_999_999).await.expect_err("unknown").kind(),
        StoreErrorKind::NotFound
    );
    let other = store.key(plain.id).await.expect("key").expect("found");
    assert_eq!(other.status, KeyStatus::Active, "other keys unaffected");

    // Bad model scope.
    let e = store
        .create(NewKey::new("acme").allowed_models(["claude-haiku-4-5", " "]))
        .await
        .expect_err("empty model");
    assert_eq!(e.kind(), StoreErrorKind::InvalidInput);
}

async fn fifty_concurrent_creates(store: Arc<dyn KeyStore>) {
    store.create_account("many").await.expect("account");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create(NewKey::new("many").name(format!("k{i}")))
                    .await
                    .expect("concurrent create")
            })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    let mut created = Vec::new();
    for task in tasks {
        let (record, key) = task.await.expect("task");
        ids.insert(record.id);
        keys.insert(key.expose().to_owned());
        created.push((record, key));
    }
    assert_eq!(ids.len(), 50, "distinct ids");
    assert_eq!(keys.len(), 50, "distinct keys");
    assert_eq!(store.list(Some("many")).await.expect("list").len(), 50);
    for (record, key) in &created {
        let found = store
            .lookup(&key.hash())
            .await
            .expect("lookup")
            .expect("found");
        assert_eq!(found.id, record.id);
    }
}

// ===== memory =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_suite() {
    suite(Arc::new(MemoryKeyStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_gives_fifty_concurrent_creates_distinct_keys_and_ids() {
    fifty_concurrent_creates(Arc::new(MemoryKeyStore::new())).await;
}

// ===== SQLite =====

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    fn url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}?mode=rwc", dir.path().join("keys.db").display())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_store_passes_the_suite() {
        let dir = tempfile::tempdir().expect("temp dir");
        suite(tollgate_auth::open(&url(&dir)).await.expect("open")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_store_gives_fifty_concurrent_creates_distinct_keys_and_ids() {
        let dir = tempfile::tempdir().expect("temp dir");
        fifty_concurrent_creates(tollgate_auth::open(&url(&dir)).await.expect("open")).await;
    }

    #[tokio::test]
    async fn sqlite_keys_survive_reopening_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("plain.db");
        let url = format!("sqlite:{}", path.display());
        let store = tollgate_auth::open(&url)
            .await
            .expect("open creates the file");
        assert!(path.exists());
        store.create_account("acme").await.expect("account");
        let (record, key) = store.create(NewKey::new("acme")).await.expect("key");
        drop(store);
        let again = tollgate_auth::open(&url).await.expect("reopen");
        assert_eq!(
            again.lookup(&key.hash()).await.expect("lookup"),
            Some(record)
        );
    }

    #[tokio::test]
    async fn sqlite_file_never_contains_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = tollgate_auth::open(&url(&dir)).await.expect("open");
        store.create_account("acme").await.expect("account");
        let (_, key) = store.create(NewKey::new("acme")).await.expect("key");
        let secret = &key.expose().as_bytes()[3..];
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "key found in a database file"
            );
        }
    }

    #[tokio::test]
    async fn sqlite_in_memory_url_works() {
        suite(tollgate_auth::open("sqlite::memory:").await.expect("open")).await;
    }

    #[tokio::test]
    async fn sqlite_open_in_a_missing_directory_says_check_the_path() {
        let err = match tollgate_auth::open("sqlite:/nonexistent-tollgate-dir/sub/keys.db").await {
            Err(e) => e,
            Ok(_) => panic!("cannot open a file in a missing directory"),
        };
        assert_eq!(err.kind(), StoreErrorKind::Unavailable);
        assert!(
            err.message()
                .contains("cannot open database sqlite:/nonexistent-tollgate-dir/sub/keys.db"),
            "{err}"
        );
        assert!(
            err.message().contains("check that the directory exists"),
            "{err}"
        );
    }

    /// Another crate's migrator (versions 1, 2) and ours (1001, 1002) share one database
    /// and one `_sqlx_migrations` table, in either order, repeatedly.
    #[tokio::test]
    async fn sqlite_migrations_coexist_with_other_crates_migrations() {
        let dir = tempfile::tempdir().expect("temp dir");
        let other = dir.path().join("other-migrations");
        std::fs::create_dir(&other).expect("dir");
        std::fs::write(
            other.join("1_balances.sql"),
            "CREATE TABLE balances (account_id TEXT PRIMARY KEY, micros INTEGER NOT NULL);",
        )
        .expect("write");
        std::fs::write(
            other.join("2_ledger.sql"),
            "CREATE TABLE ledger (id INTEGER PRIMARY KEY, micros INTEGER NOT NULL);",
        )
        .expect("write");
        let db = dir.path().join("shared.db");
        let url = format!("sqlite://{}?mode=rwc", db.display());

        let run_other = || async {
            let pool = sqlx::SqlitePool::connect(&url).await.expect("pool");
            let mut migrator = sqlx::migrate::Migrator::new(other.as_path())
                .await
                .expect("migrator");
            migrator.set_ignore_missing(true);
            migrator.run(&pool).await.expect("other crate's migrations");
            pool.close().await;
        };
        run_other().await;
        let store = tollgate_auth::open(&url).await.expect("ours after theirs");
        store.create_account("acme").await.expect("account");
        drop(store);
        run_other().await;
        let store = tollgate_auth::open(&url).await.expect("ours again");
        assert!(store.account("acme").await.expect("read").is_some());
    }
}

// ===== PostgreSQL =====

#[cfg(feature = "postgres")]
mod postgres {
    use std::future::Future;
    use std::panic::AssertUnwindSafe;
    use std::str::FromStr;
    use std::sync::atomic::{AtomicU32, Ordering};

    use futures_util::FutureExt;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use tollgate_auth::PostgresKeyStore;

    use super::*;

    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// Run `test` against a store in a schema of its own; the schema is dropped
    /// afterwards, even if the test panics.
    async fn in_fresh_schema<F, Fut>(test: F)
    where
        F: FnOnce(Arc<dyn KeyStore>) -> Fut,
        Fut: Future<Output = ()>,
    {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let url =
            std::env::var("TOLLGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let admin = match PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect(&url)
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("PostgreSQL at {url} is unreachable under CI=true: {e}");
                }
                eprintln!(
                    "skipping: PostgreSQL at {url} is unreachable ({e}); set TOLLGATE_TEST_POSTGRES_URL to test against another server"
                );
                return;
            }
        };
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let schema = format!(
            "tollgate_auth_test_{}_{}_{}",
            std::process::id(),
            nanos,
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("create schema");
        let options = PgConnectOptions::from_str(&url)
            .expect("url")
            .options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new()
            .connect_with(options)
            .await
            .expect("pool");
        let outcome = AssertUnwindSafe(async {
            let store = PostgresKeyStore::from_pool(pool.clone())
                .await
                .expect("migrate");
            test(Arc::new(store)).await;
        })
        .catch_unwind()
        .await;
        pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await
            .expect("drop schema");
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_store_passes_the_suite() {
        in_fresh_schema(suite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_store_gives_fifty_concurrent_creates_distinct_keys_and_ids() {
        in_fresh_schema(fifty_concurrent_creates).await;
    }

    #[tokio::test]
    async fn postgres_unreachable_server_error_hides_the_password() {
        let err = match tollgate_auth::open("postgres://app:hunter2@127.0.0.1:1/db").await {
            Err(e) => e,
            Ok(_) => panic!("nothing listens on port 1"),
        };
        assert_eq!(err.kind(), StoreErrorKind::Unavailable);
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(
            err.message().contains("postgres://app:***@127.0.0.1:1/db"),
            "{err}"
        );
        assert!(
            err.message().contains("check that PostgreSQL is running"),
            "{err}"
        );
    }
}
