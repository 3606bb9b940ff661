use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use tollgate_core::{Clock, Limits, SystemClock};

use super::sql::{
    RawKey, db_error, is_foreign_key_violation, is_unique_violation, limits_to_db, select_keys,
};
use super::{
    BoxFuture, KeyLookup, KeyStore, StoreError, StoreErrorKind, redact_url, validate_account_id,
    validate_new_key,
};
use crate::key::{KeyHash, SecretKey};
use crate::record::{Account, AccountStatus, KeyRecord, NewKey, from_unix, to_unix};

/// A [`KeyStore`] in a SQLite database file (feature `sqlite`).
///
/// [`connect`](SqliteKeyStore::connect) opens (and creates) the file, turns on WAL mode
/// and a 5 s busy timeout, and runs this crate's migrations. Clones share the pool.
///
/// ```
/// use tollgate_auth::{KeyStore, NewKey, SqliteKeyStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tollgate_auth::StoreError> {
/// let dir = tempfile::tempdir().unwrap();
/// let url = format!("sqlite:{}", dir.path().join("tollgate.db").display());
/// let store = SqliteKeyStore::connect(&url).await?;
/// store.create_account("acme").await?;
/// let (record, _key) = store.create(NewKey::new("acme")).await?;
/// assert_eq!(record.id, 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteKeyStore {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
}

impl SqliteKeyStore {
    /// Open the database at `url` (`sqlite:PATH`, `sqlite://PATH?mode=rwc`,
    /// `sqlite::memory:`) and run migrations. The file is created if missing unless the
    /// URL sets `mode=` itself.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::InvalidInput`] for a URL that is not a SQLite URL,
    /// [`StoreErrorKind::Unavailable`] when the file cannot be opened or migrated.
    pub async fn connect(url: &str) -> Result<SqliteKeyStore, StoreError> {
        let shown = redact_url(url);
        let mut options = SqliteConnectOptions::from_str(url).map_err(|e| {
            StoreError::new(
                StoreErrorKind::InvalidInput,
                format!(
                    "invalid SQLite URL {shown}: {e}; use sqlite:PATH or sqlite://PATH?mode=rwc"
                ),
            )
            .with_source(e)
        })?;
        if !url.contains("mode=") {
            options = options.create_if_missing(true);
        }
        options = options
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool_options = if in_memory {
            // Every connection to `:memory:` would be a new database: keep exactly one.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new()
        };
        let pool = pool_options
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!(
                        "cannot open database {shown}: {e}; check that the directory exists and the path and permissions allow reading and writing"
                    ),
                )
                .with_source(e)
            })?;
        SqliteKeyStore::from_pool(pool)
            .await
            .map_err(|e| StoreError::new(e.kind(), format!("database {shown}: {}", e.message())))
    }

    /// Use an existing pool, running this crate's migrations on it.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Unavailable`] when the migrations cannot be applied.
    pub async fn from_pool(pool: SqlitePool) -> Result<SqliteKeyStore, StoreError> {
        migrator().run(&pool).await.map_err(|e| {
            StoreError::new(
                StoreErrorKind::Unavailable,
                format!("cannot apply the key store migrations: {e}; check that the database is writable and was not migrated by a newer Tollgate"),
            )
            .with_source(e)
        })?;
        Ok(SqliteKeyStore {
            pool,
            clock: Arc::new(SystemClock),
        })
    }

    /// Take creation timestamps from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SqliteKeyStore {
        self.clock = clock;
        self
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn read_key(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    let get = |e: sqlx::Error| db_error(e, "reading a key");
    let models: Option<String> = row.try_get("allowed_models").map_err(get)?;
    let id: i64 = row.try_get("id").map_err(get)?;
    let allowed_models = models
        .map(|json| serde_json::from_str::<Vec<String>>(&json))
        .transpose()
        .map_err(|e| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!("key {id} has unreadable allowed_models ({e}); it must be a JSON array of model ids"),
            )
        })?;
    RawKey {
        id,
        account_id: row.try_get("account_id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        prefix: row.try_get("prefix").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
        allowed_models,
        limits: [
            row.try_get("rpm").map_err(get)?,
            row.try_get("itpm").map_err(get)?,
            row.try_get("otpm").map_err(get)?,
            row.try_get("tpd").map_err(get)?,
            row.try_get("burst").map_err(get)?,
        ],
        status: row.try_get("status").map_err(get)?,
        account_status: row.try_get("account_status").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        expires_at: row.try_get("expires_at").map_err(get)?,
        last_used_at: row.try_get("last_used_at").map_err(get)?,
    }
    .into_record()
}

impl SqliteKeyStore {
    async fn key_by_id(&self, key_id: i64) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(select_keys!("WHERE k.id = ?"))
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error(e, "reading a key"))?;
        row.as_ref().map(read_key).transpose()
    }

    async fn set_account_status(&self, id: &str, status: AccountStatus) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE tollgate_accounts SET status = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "updating an account"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::account_not_found(id));
        }
        Ok(())
    }
}

impl KeyLookup for SqliteKeyStore {
    fn lookup<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(select_keys!("WHERE k.hash = ?"))
                .bind(hash.as_bytes().as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| db_error(e, "looking up a key"))?;
            let record = row.as_ref().map(read_key).transpose()?;
            // The database found it by hash; confirm in constant time in memory as well.
            Ok(record.filter(|r| r.hash == *hash))
        })
    }

    fn touch(&self, key_id: i64, at: SystemTime) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let at = to_unix(at);
            sqlx::query(
                "UPDATE tollgate_keys SET last_used_at = ? \
                 WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            )
            .bind(at)
            .bind(key_id)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "recording a key's last use"))?;
            Ok(())
        })
    }
}

impl KeyStore for SqliteKeyStore {
    fn key(&self, key_id: i64) -> BoxFuture<'_, Result<Option<KeyRecord>, StoreError>> {
        Box::pin(self.key_by_id(key_id))
    }

    fn create(&self, new: NewKey) -> BoxFuture<'_, Result<(KeyRecord, SecretKey), StoreError>> {
        Box::pin(async move {
            validate_new_key(&new)?;
            let secret = SecretKey::generate();
            let models = new
                .allowed_models
                .as_ref()
                .map(|m| serde_json::to_string(m).unwrap_or_else(|_| "[]".to_owned()));
            let [rpm, itpm, otpm, tpd, burst] = limits_to_db(&new.limits)?;
            let inserted = sqlx::query(
                "INSERT INTO tollgate_keys \
                 (account_id, name, prefix, hash, allowed_models, rpm, itpm, otpm, tpd, burst, status, created_at, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?) RETURNING id",
            )
            .bind(&new.account_id)
            .bind(&new.name)
            .bind(secret.prefix())
            .bind(secret.hash().as_bytes().as_slice())
            .bind(models)
            .bind(rpm)
            .bind(itpm)
            .bind(otpm)
            .bind(tpd)
            .bind(burst)
            .bind(to_unix(self.clock.wall()))
            .bind(new.expires_at.map(to_unix))
            .fetch_one(&self.pool)
            .await;
            let row = match inserted {
                Ok(row) => row,
                Err(e) if is_foreign_key_violation(&e) => {
                    return Err(StoreError::account_not_found(&new.account_id));
                }
                Err(e) => return Err(db_error(e, "creating a key")),
            };
            let id: i64 = row
                .try_get("id")
                .map_err(|e| db_error(e, "creating a key"))?;
            let record = self.key_by_id(id).await?.ok_or_else(|| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!(
                        "key {id} vanished right after it was created; list keys and try again"
                    ),
                )
            })?;
            Ok((record, secret))
        })
    }

    fn list<'a>(
        &'a self,
        account: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<KeyRecord>, StoreError>> {
        Box::pin(async move {
            let query = match account {
                Some(account) => {
                    sqlx::query(select_keys!("WHERE k.account_id = ? ORDER BY k.id")).bind(account)
                }
                None => sqlx::query(select_keys!("ORDER BY k.id")),
            };
            let rows = query
                .fetch_all(&self.pool)
                .await
                .map_err(|e| db_error(e, "listing keys"))?;
            rows.iter().map(read_key).collect()
        })
    }

    fn disable(&self, key_id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let done = sqlx::query("UPDATE tollgate_keys SET status = 'disabled' WHERE id = ?")
                .bind(key_id)
                .execute(&self.pool)
                .await
                .map_err(|e| db_error(e, "disabling a key"))?;
            if done.rows_affected() == 0 {
                return Err(StoreError::key_not_found(key_id));
            }
            Ok(())
        })
    }

    fn set_limits(&self, key_id: i64, limits: Limits) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let [rpm, itpm, otpm, tpd, burst] = limits_to_db(&limits)?;
            let done = sqlx::query(
                "UPDATE tollgate_keys SET rpm = ?, itpm = ?, otpm = ?, tpd = ?, burst = ? WHERE id = ?",
            )
            .bind(rpm)
            .bind(itpm)
            .bind(otpm)
            .bind(tpd)
            .bind(burst)
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "setting a key's limits"))?;
            if done.rows_affected() == 0 {
                return Err(StoreError::key_not_found(key_id));
            }
            Ok(())
        })
    }

    fn create_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Account, StoreError>> {
        Box::pin(async move {
            validate_account_id(id)?;
            let created_at = to_unix(self.clock.wall());
            let inserted = sqlx::query(
                "INSERT INTO tollgate_accounts (id, status, created_at) VALUES (?, 'active', ?)",
            )
            .bind(id)
            .bind(created_at)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => Ok(Account {
                    id: id.to_owned(),
                    status: AccountStatus::Active,
                    created_at: from_unix(created_at),
                }),
                Err(e) if is_unique_violation(&e) => Err(StoreError::account_exists(id)),
                Err(e) => Err(db_error(e, "creating an account")),
            }
        })
    }

    fn suspend_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.set_account_status(id, AccountStatus::Suspended))
    }

    fn resume_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.set_account_status(id, AccountStatus::Active))
    }

    fn account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Account>, StoreError>> {
        Box::pin(async move {
            let row =
                sqlx::query("SELECT id, status, created_at FROM tollgate_accounts WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| db_error(e, "reading an account"))?;
            let Some(row) = row else { return Ok(None) };
            let get = |e: sqlx::Error| db_error(e, "reading an account");
            let status: String = row.try_get("status").map_err(get)?;
            Ok(Some(Account {
                id: row.try_get("id").map_err(get)?,
                status: AccountStatus::parse(&status).ok_or_else(|| {
                    StoreError::new(
                        StoreErrorKind::Corrupt,
                        format!("account {id:?} has an unreadable status {status:?} in the database; set it to active or suspended"),
                    )
                })?,
                created_at: from_unix(row.try_get("created_at").map_err(get)?),
            }))
        })
    }
}
