use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use tollgate_core::{Clock, SystemClock};

use super::sql::{is_unique_violation, sql_ledger};
use crate::amount::Amount;

/// A ledger in a SQLite database file (feature `sqlite`).
///
/// Opened with WAL journaling, `synchronous = NORMAL` and a 10 s busy timeout. WAL with
/// `NORMAL` keeps every commit across a crash of the process (kill -9) and never corrupts
/// the file; a power loss or OS crash may roll back the last commits before a checkpoint.
/// For `FULL` (one fsync per commit, about 4× slower here), pass
/// `SqliteLedger::options(url)?.synchronous(SqliteSynchronous::Normal)` to
/// [`connect_with`](SqliteLedger::connect_with). Every write is a `BEGIN IMMEDIATE` transaction on the
/// pool's single connection, so concurrent reserves in this process queue for it instead
/// of failing with `SQLITE_BUSY`, and another process on the same file (the `tollgate
/// accounts` CLI) waits for the write lock. Tables are `tollgate_balances`,
/// `tollgate_reservations` and `tollgate_ledger`, created by migrations 2001+.
///
/// # Example
///
/// ```
/// use tollgate_balance::{Ledger, SqliteLedger};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let dir = tempfile::tempdir().unwrap();
/// let url = format!("sqlite:{}", dir.path().join("balances.db").display());
/// let ledger = SqliteLedger::connect(&url).await.unwrap();
/// assert!(ledger.open_account("acme", "USD").await.unwrap());
/// # }
/// ```
#[derive(Debug)]
pub struct SqliteLedger {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

impl SqliteLedger {
    /// Open (creating if missing) the database at `url` (`sqlite:path.db`,
    /// `sqlite::memory:`) with [`SqliteLedger::options`], and migrate it.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Storage`] when the URL is malformed or the file cannot be opened or
    /// migrated.
    pub async fn connect(url: &str) -> Result<SqliteLedger, LedgerError> {
        SqliteLedger::connect_with(SqliteLedger::options(url)?).await
    }

    /// The recommended connection options for `url`: create if missing, WAL,
    /// `synchronous = NORMAL`, 10 s busy timeout, foreign keys on.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Storage`] for a malformed URL.
    pub fn options(url: &str) -> Result<SqliteConnectOptions, LedgerError> {
        Ok(SqliteConnectOptions::from_str(url)
            .map_err(storage)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true))
    }

    /// Open with `options` as given, and migrate.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Storage`] when the database cannot be opened or migrated.
    pub async fn connect_with(options: SqliteConnectOptions) -> Result<SqliteLedger, LedgerError> {
        // One connection: SQLite has one writer anyway, and every ledger write is a write
        // transaction; queueing on the pool is cheaper than spinning on the busy handler.
        // It also keeps a `:memory:` database alive and the same for every caller.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(storage)?;
        SqliteLedger::migrator().run(&pool).await.map_err(storage)?;
        Ok(SqliteLedger {
            pool,
            clock: Arc::new(SystemClock),
        })
    }

    /// The embedded migrations (versions 2001+). They ignore versions applied by other
    /// migrators in the same database, such as tollgate-auth's 1001+.
    pub fn migrator() -> Migrator {
        let mut migrator = sqlx::migrate!("./migrations/sqlite");
        migrator.set_ignore_missing(true);
        migrator
    }

    /// Timestamp entries with `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SqliteLedger {
        self.clock = clock;
        self
    }

    /// The connection pool, e.g. to run reports on the ledger tables.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The conditional update and the reservation row, in one write transaction.
    /// `Ok(false)` when the account is unknown or cannot afford `amount`.
    async fn reserve_inner(
        &self,
        account: &str,
        request_id: &str,
        amount: Amount,
        expires_at: std::time::SystemTime,
    ) -> Result<bool, ReserveError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(storage)?;
        let held = sqlx::query(
            "UPDATE tollgate_balances SET reserved = reserved + $1 \
             WHERE account_id = $2 AND balance - reserved >= $1",
        )
        .bind(amount.micros())
        .bind(account)
        .execute(&mut *tx)
        .await
        .map_err(storage)?
        .rows_affected();
        if held == 0 {
            return Ok(false);
        }
        let inserted = sqlx::query(
            "INSERT INTO tollgate_reservations (request_id, account_id, amount, state, created_at, expires_at) \
             VALUES ($1, $2, $3, 'open', $4, $5)",
        )
        .bind(request_id)
        .bind(account)
        .bind(amount.micros())
        .bind(to_millis(self.clock.wall()))
        .bind(to_millis(expires_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(ReserveError::DuplicateRequest(request_id.to_string()));
            }
            Err(e) => return Err(storage(e).into()),
        }
        tx.commit().await.map_err(storage)?;
        Ok(true)
    }
}

impl SqliteLedger {
    async fn close(
        &self,
        request_id: &str,
        charge: Option<Charge>,
        reason: &str,
    ) -> Result<LedgerEntry, LedgerError> {
        self.close_in_transaction(request_id, charge, reason).await
    }
}

sql_ledger! {
    ledger: SqliteLedger,
    row: SqliteRow,
    conn: sqlx::SqliteConnection,
    begin: "BEGIN IMMEDIATE",
    lock: "",
    lock_many: "",
}
