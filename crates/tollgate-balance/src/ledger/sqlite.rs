use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::future::Future;
use std::pin::Pin;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use tollgate_core::{Clock, SystemClock};

use super::group::{Done, Engine, Op, Writer};
use super::sql::{is_unique_violation, sql_ledger};
use crate::amount::Amount;

/// A ledger in a SQLite database file (feature `sqlite`).
///
/// Opened with WAL journaling, `synchronous = NORMAL` and a 10 s busy timeout. WAL with
/// `NORMAL` keeps every commit across a crash of the process (kill -9) and never corrupts
/// the file; a power loss or OS crash may roll back the last commits before a checkpoint.
/// For `FULL` (one fsync per commit, about 4× slower here), pass
/// `SqliteLedger::options(url)?.synchronous(SqliteSynchronous::Full)` to
/// [`connect_with`](SqliteLedger::connect_with).
///
/// Reserves, settles and releases go through a **group commit**: they queue, and one task
/// at a time runs everything queued in one `BEGIN IMMEDIATE … COMMIT` on the pool's single
/// connection, each operation still its own conditional statements (a reserve holds only
/// while `balance − reserved ≥ amount`) under a savepoint, so one that fails (a duplicate
/// request id) is undone alone. Callers get their answer only after the `COMMIT`; if the
/// commit fails, every operation of the batch fails and nothing of it was written. Under
/// load one commit carries many requests. Other writes (`topup`, `open_account`,
/// `reconcile_expired`) are their own `BEGIN IMMEDIATE` transactions, and another process
/// on the same file (the `tollgate accounts` CLI) waits for the write lock (busy timeout).
/// Tables are `tollgate_balances`, `tollgate_reservations` and `tollgate_ledger`, created
/// by migrations 2001+.
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
    writer: Arc<Writer>,
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
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Ok(SqliteLedger {
            writer: Arc::new(Writer::new(SqliteEngine {
                pool: pool.clone(),
                clock: clock.clone(),
            })),
            pool,
            clock,
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
        self.writer = Arc::new(Writer::new(SqliteEngine {
            pool: self.pool.clone(),
            clock: clock.clone(),
        }));
        self.clock = clock;
        self
    }

    /// The connection pool, e.g. to run reports on the ledger tables.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Reserve through the group commit. `Ok(false)` when the account is unknown or
    /// cannot afford `amount`.
    async fn reserve_inner(
        &self,
        account: &str,
        request_id: &str,
        amount: Amount,
        expires_at: SystemTime,
    ) -> Result<bool, ReserveError> {
        self.writer
            .reserve(account, request_id, amount, self.clock.wall(), expires_at)
            .await
    }

    /// Settle (`Some(charge)`) or release through the group commit.
    async fn close(
        &self,
        reservation: &Reservation,
        charge: Option<Charge>,
        reason: &str,
    ) -> Result<LedgerEntry, LedgerError> {
        self.writer.close(reservation, charge, reason).await
    }
}

// ===== Group commit =====

/// A reserve, in one round trip to SQLite's thread: hold `$3` if affordable, then insert
/// the reservation row only if the hold was taken (`changes()` counts the `UPDATE`). The
/// savepoint lets a failure (a duplicate request id) undo its own statements only.
const RESERVE: &str = "SAVEPOINT tollgate_op; \
     UPDATE tollgate_balances SET reserved = reserved + $3 \
     WHERE account_id = $2 AND balance - reserved >= $3; \
     INSERT INTO tollgate_reservations (request_id, account_id, amount, state, created_at, expires_at) \
     SELECT $1, $2, $3, 'open', $4, $5 WHERE changes() = 1 RETURNING request_id; \
     RELEASE tollgate_op";

/// A settle or release of an *open* reservation, in one round trip: charge `$3` and free
/// the hold, write the entry (returned), then mark the reservation closed. Each statement
/// matches only while the reservation is still open, so on any other reservation it
/// changes nothing and returns no row.
const CLOSE_OPEN: &str = "SAVEPOINT tollgate_op; \
     UPDATE tollgate_balances AS b SET balance = b.balance - $3, reserved = b.reserved - r.amount \
     FROM tollgate_reservations AS r \
     WHERE r.request_id = $1 AND r.state = 'open' AND b.account_id = r.account_id; \
     INSERT INTO tollgate_ledger (account_id, kind, amount, reserved, balance_after, request_id, key_id, model, input_tokens, output_tokens, cache_write_tokens, cache_write_1h_tokens, cache_read_tokens, upstream_request_id, http_status, note, created_at) \
     SELECT r.account_id, $4, -$3, r.amount, b.balance, $1, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 \
     FROM tollgate_reservations AS r JOIN tollgate_balances AS b ON b.account_id = r.account_id \
     WHERE r.request_id = $1 AND r.state = 'open' \
     RETURNING id, account_id, reserved, balance_after; \
     UPDATE tollgate_reservations SET state = $2 WHERE request_id = $1 AND state = 'open'; \
     RELEASE tollgate_op";

/// Undo the operation that failed since `SAVEPOINT tollgate_op`, keeping the batch.
const ROLLBACK_OP: &str = "ROLLBACK TO tollgate_op; RELEASE tollgate_op";

/// Runs the group commit's batches (see `group`) in one `BEGIN IMMEDIATE … COMMIT`, each
/// operation one multi-statement round trip to SQLite's thread under a savepoint.
struct SqliteEngine {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

impl Engine for SqliteEngine {
    fn run<'a>(
        &'a self,
        ops: &'a mut std::vec::IntoIter<Op>,
        done: &'a mut Vec<Done>,
    ) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'a>> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            for op in ops.by_ref() {
                self.apply(&mut tx, op, done).await?;
            }
            tx.commit().await
        })
    }
}

impl SqliteEngine {
    /// Run `op` inside the open transaction and push its outcome to `done`. `Err` only
    /// when the transaction itself is lost (the batch fails as a whole).
    async fn apply(
        &self,
        conn: &mut SqliteConnection,
        op: Op,
        done: &mut Vec<Done>,
    ) -> Result<(), sqlx::Error> {
        match op {
            Op::Reserve {
                account,
                request_id,
                amount,
                created_at,
                expires_at,
                reply,
            } => {
                let held = sqlx::query(RESERVE)
                    .bind(&request_id)
                    .bind(&account)
                    .bind(amount)
                    .bind(created_at)
                    .bind(expires_at)
                    .fetch_all(&mut *conn)
                    .await;
                match held {
                    Ok(rows) => done.push(Done::Reserve(reply, Ok(!rows.is_empty()))),
                    Err(e) => {
                        let undone = rollback_op(conn).await;
                        let err = if is_unique_violation(&e) {
                            ReserveError::DuplicateRequest(request_id)
                        } else {
                            storage(e).into()
                        };
                        done.push(Done::Reserve(reply, Err(err)));
                        undone?;
                    }
                }
            }
            Op::Close {
                request_id,
                charge,
                reason,
                reply,
                ..
            } => {
                let closed = self.close_open(conn, &request_id, charge, &reason).await;
                let closed = match closed {
                    Ok(Ok(entry)) => Ok(entry),
                    Ok(Err(charge)) => self.close_other(conn, &request_id, charge, &reason).await,
                    Err(e) => Err(e),
                };
                match closed {
                    Ok(entry) => done.push(Done::Close(reply, Ok(entry))),
                    Err(e) => {
                        let undone = rollback_op(conn).await;
                        done.push(Done::Close(reply, Err(e)));
                        undone?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Close an open reservation with [`CLOSE_OPEN`]. `Ok(Err(charge))` hands the charge
    /// back when the reservation is not open (closed, expired or unknown).
    async fn close_open(
        &self,
        conn: &mut SqliteConnection,
        request_id: &str,
        charge: Option<Charge>,
        reason: &str,
    ) -> Result<Result<LedgerEntry, Option<Charge>>, LedgerError> {
        let at = self.clock.wall();
        let (kind, new_state) = match charge {
            Some(_) => (EntryKind::Charge, "settled"),
            None => (EntryKind::Release, "released"),
        };
        let c = charge.as_ref();
        let cost = c.map_or(0, |c| c.cost.micros());
        let usage = c.map(|c| c.usage).unwrap_or_default();
        let note = match c {
            Some(c) => c.note.as_deref(),
            None => Some(reason),
        };
        let rows = sqlx::query(CLOSE_OPEN)
            .bind(request_id)
            .bind(new_state)
            .bind(cost)
            .bind(kind.as_str())
            .bind(c.and_then(|c| c.key_id))
            .bind(c.map(|c| c.model.as_str()).filter(|m| !m.is_empty()))
            .bind(tokens(usage.input))
            .bind(tokens(usage.output))
            .bind(tokens(usage.cache_write))
            .bind(tokens(usage.cache_write_1h))
            .bind(tokens(usage.cache_read))
            .bind(c.and_then(|c| c.upstream_request_id.as_deref()))
            .bind(c.and_then(|c| c.http_status).map(i64::from))
            .bind(note)
            .bind(to_millis(at))
            .fetch_all(&mut *conn)
            .await
            .map_err(storage)?;
        let Some(row) = rows.first() else {
            return Ok(Err(charge));
        };
        let account: String = row.try_get(1).map_err(storage)?;
        let note = (kind == EntryKind::Release).then(|| reason.to_string());
        Ok(Ok(Pending {
            account: &account,
            kind,
            amount: -cost,
            reserved: row.try_get(2).map_err(storage)?,
            balance_after: row.try_get(3).map_err(storage)?,
            request_id: Some(request_id),
            charge: charge.unwrap_or_default(),
            note,
        }
        .into_entry(row.try_get(0).map_err(storage)?, at)))
    }

    /// Close a reservation that is not open (the general state machine, under its own
    /// savepoint): a late settle of an expired one, or the entry that closed it already.
    async fn close_other(
        &self,
        conn: &mut SqliteConnection,
        request_id: &str,
        charge: Option<Charge>,
        reason: &str,
    ) -> Result<LedgerEntry, LedgerError> {
        sqlx::raw_sql("SAVEPOINT tollgate_op")
            .execute(&mut *conn)
            .await
            .map_err(storage)?;
        let entry = SqliteLedger::close_on(conn, &*self.clock, request_id, charge, reason).await?;
        sqlx::raw_sql("RELEASE tollgate_op")
            .execute(&mut *conn)
            .await
            .map_err(storage)?;
        Ok(entry)
    }
}

/// Undo the current operation's statements after it failed.
async fn rollback_op(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(ROLLBACK_OP).execute(conn).await.map(drop)
}

sql_ledger! {
    ledger: SqliteLedger,
    row: SqliteRow,
    conn: sqlx::SqliteConnection,
    begin: "BEGIN IMMEDIATE",
    lock: "",
    lock_many: "",
}
