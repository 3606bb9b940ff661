use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
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

/// A [`KeyStore`] in a PostgreSQL database (feature `postgres`).
///
/// [`connect`](PostgresKeyStore::connect) connects a pool (5 s acquire timeout) and runs
/// this crate's migrations. Clones share the pool. To put the tables in a schema of their
/// own, add `?options=-c%20search_path%3Dmyschema` to the URL or pass a pool configured
/// that way to [`from_pool`](PostgresKeyStore::from_pool).
///
/// ```no_run
/// use tollgate_auth::{KeyStore, PostgresKeyStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tollgate_auth::StoreError> {
/// let store = PostgresKeyStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// store.create_account("acme").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresKeyStore {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_ignore_missing(true);
    migrator
}

impl PostgresKeyStore {
    /// Connect to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`) and run migrations.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::InvalidInput`] for a URL that cannot be parsed,
    /// [`StoreErrorKind::Unavailable`] when the server cannot be reached or migrated.
    /// Messages never contain the URL's password.
    pub async fn connect(url: &str) -> Result<PostgresKeyStore, StoreError> {
        let shown = redact_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::new(
                StoreErrorKind::InvalidInput,
                format!(
                    "invalid PostgreSQL URL {shown}: {e}; use postgres://USER@HOST:PORT/DATABASE"
                ),
            )
            .with_source(e)
        })?;
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!(
                        "cannot connect to database {shown}: {e}; check that PostgreSQL is running and the host, port, user, password and database name"
                    ),
                )
                .with_source(e)
            })?;
        PostgresKeyStore::from_pool(pool)
            .await
            .map_err(|e| StoreError::new(e.kind(), format!("database {shown}: {}", e.message())))
    }

    /// Use an existing pool, running this crate's migrations on it.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Unavailable`] when the migrations cannot be applied.
    pub async fn from_pool(pool: PgPool) -> Result<PostgresKeyStore, StoreError> {
        migrator().run(&pool).await.map_err(|e| {
            StoreError::new(
                StoreErrorKind::Unavailable,
                format!("cannot apply the key store migrations: {e}; check that the database is writable and was not migrated by a newer Tollgate"),
            )
            .with_source(e)
        })?;
        Ok(PostgresKeyStore {
            pool,
            clock: Arc::new(SystemClock),
        })
    }

    /// Take creation timestamps from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> PostgresKeyStore {
        self.clock = clock;
        self
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn read_key(row: &PgRow) -> Result<KeyRecord, StoreError> {
    let get = |e: sqlx::Error| db_error(e, "reading a key");
    let id: i64 = row.try_get("id").map_err(get)?;
    let allowed_models: Option<Vec<String>> = row.try_get("allowed_models").map_err(get)?;
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

impl PostgresKeyStore {
    async fn key_by_id(&self, key_id: i64) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(select_keys!("WHERE k.id = $1"))
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error(e, "reading a key"))?;
        row.as_ref().map(read_key).transpose()
    }

    async fn set_account_status(&self, id: &str, status: AccountStatus) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE tollgate_accounts SET status = $1 WHERE id = $2")
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

impl KeyLookup for PostgresKeyStore {
    fn lookup<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(select_keys!("WHERE k.hash = $1"))
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
                "UPDATE tollgate_keys SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(at)
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "recording a key's last use"))?;
            Ok(())
        })
    }
}

impl KeyStore for PostgresKeyStore {
    fn key(&self, key_id: i64) -> BoxFuture<'_, Result<Option<KeyRecord>, StoreError>> {
        Box::pin(self.key_by_id(key_id))
    }

    fn create(&self, new: NewKey) -> BoxFuture<'_, Result<(KeyRecord, SecretKey), StoreError>> {
        Box::pin(async move {
            validate_new_key(&new)?;
            let secret = SecretKey::generate();
            let [rpm, itpm, otpm, tpd, burst] = limits_to_db(&new.limits)?;
            let inserted = sqlx::query(
                "INSERT INTO tollgate_keys \
                 (account_id, name, prefix, hash, allowed_models, rpm, itpm, otpm, tpd, burst, status, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'active', $11, $12) RETURNING id",
            )
            .bind(&new.account_id)
            .bind(&new.name)
            .bind(secret.prefix())
            .bind(secret.hash().as_bytes().as_slice())
            .bind(&new.allowed_models)
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
                    sqlx::query(select_keys!("WHERE k.account_id = $1 ORDER BY k.id")).bind(account)
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
            let done = sqlx::query("UPDATE tollgate_keys SET status = 'disabled' WHERE id = $1")
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
                "UPDATE tollgate_keys SET rpm = $1, itpm = $2, otpm = $3, tpd = $4, burst = $5 WHERE id = $6",
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
                "INSERT INTO tollgate_accounts (id, status, created_at) VALUES ($1, 'active', $2)",
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
                sqlx::query("SELECT id, status, created_at FROM tollgate_accounts WHERE id = $1")
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
