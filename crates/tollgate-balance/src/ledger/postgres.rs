use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use sqlx::PgConnection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use tollgate_core::{Clock, SystemClock};

use super::group::{Done, Engine, Op, Writer};
use super::sql::{is_unique_violation, sql_ledger};
use crate::amount::Amount;

/// A ledger in PostgreSQL (feature `postgres`).
///
/// A reserve is one statement: a conditional `UPDATE … WHERE balance − reserved ≥ amount`
/// feeding the `INSERT` of the reservation row, so concurrent reserves on one account
/// queue on its row lock and each re-checks the condition on the latest balance.
/// Settles and releases lock the reservation row (`FOR UPDATE`) then the balance row.
/// Concurrent reserves, settles and releases share a **group commit**: one transaction
/// (one commit flush) per batch, its operations ordered by account so that batches of
/// several gateways lock balance rows in one order; a lone operation runs in autocommit.
/// Tables are `tollgate_balances`, `tollgate_reservations` and `tollgate_ledger`, created
/// by migrations 2001+ in the connection's schema (`search_path`).
#[derive(Debug)]
pub struct PostgresLedger {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    writer: Arc<Writer>,
}

impl PostgresLedger {
    /// Connect to `url` with a pool of up to 16 connections, and migrate.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Storage`] when the URL is malformed or the server cannot be reached
    /// or migrated.
    pub async fn connect(url: &str) -> Result<PostgresLedger, LedgerError> {
        let options = PgConnectOptions::from_str(url).map_err(storage)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(options)
            .await
            .map_err(storage)?;
        PostgresLedger::from_pool(pool).await
    }

    /// Use `pool` (sized and configured by the caller), and migrate.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Storage`] when the migrations fail.
    pub async fn from_pool(pool: PgPool) -> Result<PostgresLedger, LedgerError> {
        PostgresLedger::migrator()
            .run(&pool)
            .await
            .map_err(storage)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Ok(PostgresLedger {
            writer: Arc::new(Writer::new(PgEngine {
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
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        migrator.set_ignore_missing(true);
        migrator
    }

    /// Timestamp entries with `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> PostgresLedger {
        self.writer = Arc::new(Writer::new(PgEngine {
            pool: self.pool.clone(),
            clock: clock.clone(),
        }));
        self.clock = clock;
        self
    }

    /// The connection pool, e.g. to run reports on the ledger tables.
    pub fn pool(&self) -> &PgPool {
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

/// A reserve in one statement: hold `$3` if affordable and the request id is new, and
/// insert the reservation row from what was held. Never fails on a duplicate id (it
/// holds nothing instead), so it cannot abort the batch's transaction.
const RESERVE: &str = "WITH held AS ( \
         UPDATE tollgate_balances SET reserved = reserved + $3 \
         WHERE account_id = $2 AND balance - reserved >= $3 \
           AND NOT EXISTS (SELECT 1 FROM tollgate_reservations WHERE request_id = $1) \
         RETURNING account_id \
     ) \
     INSERT INTO tollgate_reservations (request_id, account_id, amount, state, created_at, expires_at) \
     SELECT $1, account_id, $3, 'open', $4, $5 FROM held RETURNING request_id";

/// Runs the group commit's batches (see `group`). A batch of one runs in autocommit, its
/// statement being atomic on its own; a larger one in one `BEGIN … COMMIT`, so one commit
/// flush serves them all, with its operations ordered by account: every batch (and
/// `reconcile_expired`) locks balance rows in account order, so batches of several
/// gateways on one database cannot deadlock on them.
struct PgEngine {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl Engine for PgEngine {
    fn run<'a>(
        &'a self,
        ops: &'a mut std::vec::IntoIter<Op>,
        done: &'a mut Vec<Done>,
    ) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'a>> {
        Box::pin(async move {
            if ops.len() == 1 {
                let mut conn = self.pool.acquire().await?;
                for op in ops.by_ref() {
                    self.apply(&mut conn, false, op, done).await?;
                }
                return Ok(());
            }
            let mut sorted: Vec<Op> = ops.by_ref().collect();
            sorted.sort_by(|a, b| a.account().cmp(b.account()));
            *ops = sorted.into_iter();
            let mut tx = self.pool.begin().await?;
            for op in ops.by_ref() {
                self.apply(&mut tx, true, op, done).await?;
            }
            tx.commit().await
        })
    }
}

impl PgEngine {
    /// Run `op` on `conn` (inside the batch's transaction, or alone in autocommit) and
    /// push its outcome to `done`. `Err` when the store failed: in a transaction,
    /// PostgreSQL has then aborted it, and the batch fails as a whole.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        in_transaction: bool,
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
                    .fetch_optional(&mut *conn)
                    .await;
                let held = match held {
                    Ok(row) => row.is_some(),
                    // A concurrent first use of the id (another gateway). Alone, it fails
                    // only this reserve; in a transaction, PostgreSQL has aborted it, so
                    // the batch must fail (a COMMIT would silently roll back).
                    Err(e) if !in_transaction && is_unique_violation(&e) => {
                        done.push(Done::Reserve(
                            reply,
                            Err(ReserveError::DuplicateRequest(request_id)),
                        ));
                        return Ok(());
                    }
                    Err(e) => {
                        done.push(Done::Reserve(reply, Err(storage_ref(&e).into())));
                        return Err(e);
                    }
                };
                let result = if held {
                    Ok(true)
                } else {
                    let used: Result<bool, _> = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM tollgate_reservations WHERE request_id = $1)",
                    )
                    .bind(&request_id)
                    .fetch_one(&mut *conn)
                    .await;
                    match used {
                        Ok(true) => Err(ReserveError::DuplicateRequest(request_id)),
                        Ok(false) => Ok(false),
                        Err(e) => {
                            done.push(Done::Reserve(reply, Err(storage_ref(&e).into())));
                            return Err(e);
                        }
                    }
                };
                done.push(Done::Reserve(reply, result));
            }
            Op::Close {
                request_id,
                charge,
                reason,
                reply,
                ..
            } => {
                let result = match close_open(
                    &mut *conn,
                    &*self.clock,
                    &request_id,
                    charge,
                    &reason,
                )
                .await
                {
                    Ok(Ok(entry)) => Ok(entry),
                    Ok(Err(charge)) => {
                        PostgresLedger::close_on(conn, &*self.clock, &request_id, charge, &reason)
                            .await
                    }
                    Err(e) => Err(e),
                };
                let failed = matches!(result, Err(LedgerError::Storage(_)));
                done.push(Done::Close(reply, result));
                if failed {
                    return Err(sqlx::Error::Protocol(
                        "a settle or release failed in the store".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn storage_ref(e: &sqlx::Error) -> LedgerError {
    LedgerError::Storage(e.to_string().into())
}

/// Settle (`Some(charge)`) or release an *open* reservation in one statement (reservation
/// row `FOR UPDATE`, then the balance row, then the entry). `Ok(Err(charge))` hands the
/// charge back when the reservation is not open (closed already, unknown, or expired),
/// for the general state machine, which returns the entry that closed it.
async fn close_open(
    conn: &mut PgConnection,
    clock: &dyn Clock,
    request_id: &str,
    charge: Option<Charge>,
    reason: &str,
) -> Result<Result<LedgerEntry, Option<Charge>>, LedgerError> {
    let at = clock.wall();
    let settle = charge.is_some();
    let (kind, new_state) = if settle {
        (EntryKind::Charge, "settled")
    } else {
        (EntryKind::Release, "released")
    };
    let c = charge.clone().unwrap_or_default();
    let cost = c.cost.micros();
    let note = if settle {
        c.note.clone()
    } else {
        Some(reason.to_string())
    };
    let row = sqlx::query(
            "WITH r AS ( \
                 SELECT request_id, account_id, CASE WHEN state = 'open' THEN amount ELSE 0 END AS held \
                 FROM tollgate_reservations \
                 WHERE request_id = $1 AND (state = 'open' OR ($2 AND state = 'expired')) \
                 FOR UPDATE \
             ), s AS ( \
                 UPDATE tollgate_reservations t SET state = $3 FROM r WHERE t.request_id = r.request_id \
             ), b AS ( \
                 UPDATE tollgate_balances t SET balance = t.balance - $4, reserved = t.reserved - r.held \
                 FROM r WHERE t.account_id = r.account_id \
                 RETURNING t.account_id, t.balance, r.held \
             ) \
             INSERT INTO tollgate_ledger (account_id, kind, amount, reserved, balance_after, request_id, key_id, model, input_tokens, output_tokens, cache_write_tokens, cache_write_1h_tokens, cache_read_tokens, upstream_request_id, http_status, note, created_at) \
             SELECT b.account_id, $5, -$4, b.held, b.balance, $1, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 FROM b \
             RETURNING id, account_id, reserved, balance_after",
        )
        .bind(request_id)
        .bind(settle)
        .bind(new_state)
        .bind(cost)
        .bind(kind.as_str())
        .bind(c.key_id)
        .bind((!c.model.is_empty()).then_some(c.model.as_str()))
        .bind(tokens(c.usage.input))
        .bind(tokens(c.usage.output))
        .bind(tokens(c.usage.cache_write))
        .bind(tokens(c.usage.cache_write_1h))
        .bind(tokens(c.usage.cache_read))
        .bind(c.upstream_request_id.as_deref())
        .bind(c.http_status.map(i64::from))
        .bind(note.as_deref())
        .bind(to_millis(at))
        .fetch_optional(&mut *conn)
        .await
        .map_err(storage)?;
    let Some(row) = row else {
        return Ok(Err(charge));
    };
    let account: String = row.try_get(1).map_err(storage)?;
    let entry = Pending {
        account: &account,
        kind,
        amount: -cost,
        reserved: row.try_get(2).map_err(storage)?,
        balance_after: row.try_get(3).map_err(storage)?,
        request_id: Some(request_id),
        charge: c,
        note,
    }
    .into_entry(row.try_get(0).map_err(storage)?, at);
    Ok(Ok(entry))
}

sql_ledger! {
    ledger: PostgresLedger,
    row: PgRow,
    conn: sqlx::PgConnection,
    begin: "BEGIN",
    lock: " FOR UPDATE",
    lock_many: " FOR UPDATE SKIP LOCKED",
}
