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
/// Concurrent reserves, settles and releases share a **group commit**: one statement (a
/// call of `tollgate_ledger_batch`, migration 2002: one round trip, one commit flush) per
/// batch, its operations ordered by account so that batches of several gateways lock
/// balance rows in one order; a lone operation runs in autocommit.
/// Tables are `tollgate_balances`, `tollgate_reservations` and `tollgate_ledger`, and the
/// function `tollgate_ledger_batch`, created by migrations 2001+ in the connection's
/// schema (`search_path`).
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

/// Runs the group commit's batches (see `group`). A lone operation runs as its own
/// statement in autocommit. A batch of several is **one statement**: a call of
/// `tollgate_ledger_batch` (migration 2002) with the operations as arrays, ordered by
/// account, which applies them in order and returns one outcome each — one round trip
/// and one commit flush for the batch, where one statement per operation in a
/// transaction cost a round trip each. No operation's own outcome (a refusal, a
/// duplicate id) aborts the others. Closes the function finds not open (closed already,
/// unknown) then go through the general state machine one by one, as a lone close does.
/// Every batch (and `reconcile_expired`) locks balance rows in account order, so batches
/// of several gateways on one database cannot deadlock on them.
struct PgEngine {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

const BATCH: &str = "SELECT o_op, o_outcome, o_entry_id, o_account, o_held, o_balance_after \
     FROM tollgate_ledger_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";

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
            let at = self.clock.wall();
            let rows = Columns::of(&sorted, at)
                .bind(sqlx::query(BATCH))
                .fetch_all(&self.pool)
                .await;
            let rows = match rows {
                Ok(rows) if rows.len() == sorted.len() => rows,
                Ok(rows) => {
                    *ops = sorted.into_iter();
                    return Err(sqlx::Error::Protocol(format!(
                        "tollgate_ledger_batch answered {} rows for {} operations",
                        rows.len(),
                        ops.len()
                    )));
                }
                Err(e) => {
                    *ops = sorted.into_iter();
                    return Err(e);
                }
            };
            // Committed: from here on every operation is answered with its own outcome.
            let mut not_open = Vec::new();
            for (op, row) in sorted.into_iter().zip(rows) {
                match batch_outcome(op, &row, at) {
                    Answer::Now(d) => done.push(d),
                    Answer::NotOpen(op) => not_open.push(op),
                }
            }
            for op in not_open {
                match self.pool.acquire().await {
                    Ok(mut conn) => {
                        if let Err(e) = self.apply(&mut conn, false, op, done).await {
                            tracing::warn!(error = %e, "ledger close after a batch failed");
                        }
                    }
                    Err(e) => op.fail(&format!("ledger store unavailable: {e}")),
                }
            }
            Ok(())
        })
    }
}

/// The batch's operations as the function's sixteen arrays (element k = operation k).
#[derive(Default)]
struct Columns {
    kind: Vec<&'static str>,
    request_id: Vec<String>,
    account: Vec<String>,
    amount: Vec<i64>,
    at: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    key_id: Vec<Option<i64>>,
    model: Vec<Option<String>>,
    input: Vec<i64>,
    output: Vec<i64>,
    cache_write: Vec<i64>,
    cache_write_1h: Vec<i64>,
    cache_read: Vec<i64>,
    upstream_request_id: Vec<Option<String>>,
    http_status: Vec<Option<i64>>,
    note: Vec<Option<String>>,
}

impl Columns {
    fn of(ops: &[Op], at: SystemTime) -> Columns {
        let mut c = Columns::default();
        for op in ops {
            match op {
                Op::Reserve {
                    account,
                    request_id,
                    amount,
                    created_at,
                    expires_at,
                    ..
                } => {
                    c.kind.push("reserve");
                    c.request_id.push(request_id.clone());
                    c.account.push(account.clone());
                    c.amount.push(*amount);
                    c.at.push(*created_at);
                    c.expires_at.push(Some(*expires_at));
                    c.push_charge(&Charge::default(), None);
                }
                Op::Close {
                    account,
                    request_id,
                    charge,
                    reason,
                    ..
                } => {
                    c.kind.push(if charge.is_some() {
                        "settle"
                    } else {
                        "release"
                    });
                    c.request_id.push(request_id.clone());
                    c.account.push(account.clone());
                    c.amount
                        .push(charge.as_ref().map_or(0, |charge| charge.cost.micros()));
                    c.at.push(to_millis(at));
                    c.expires_at.push(None);
                    match charge {
                        Some(charge) => c.push_charge(charge, charge.note.clone()),
                        None => c.push_charge(&Charge::default(), Some(reason.clone())),
                    }
                }
            }
        }
        c
    }

    fn push_charge(&mut self, c: &Charge, note: Option<String>) {
        self.key_id.push(c.key_id);
        self.model
            .push((!c.model.is_empty()).then(|| c.model.clone()));
        self.input.push(tokens(c.usage.input));
        self.output.push(tokens(c.usage.output));
        self.cache_write.push(tokens(c.usage.cache_write));
        self.cache_write_1h.push(tokens(c.usage.cache_write_1h));
        self.cache_read.push(tokens(c.usage.cache_read));
        self.upstream_request_id.push(c.upstream_request_id.clone());
        self.http_status.push(c.http_status.map(i64::from));
        self.note.push(note);
    }

    fn bind(
        self,
        q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(self.kind)
            .bind(self.request_id)
            .bind(self.account)
            .bind(self.amount)
            .bind(self.at)
            .bind(self.expires_at)
            .bind(self.key_id)
            .bind(self.model)
            .bind(self.input)
            .bind(self.output)
            .bind(self.cache_write)
            .bind(self.cache_write_1h)
            .bind(self.cache_read)
            .bind(self.upstream_request_id)
            .bind(self.http_status)
            .bind(self.note)
    }
}

/// What the batch's row says about one operation.
enum Answer {
    /// Its outcome, to send once the caller knows the batch committed.
    Now(Done),
    /// A close the function found not open: for the general state machine.
    NotOpen(Op),
}

/// The answer to `op` from its row of the batch.
fn batch_outcome(op: Op, row: &PgRow, at: SystemTime) -> Answer {
    let outcome: String = match row.try_get(1) {
        Ok(outcome) => outcome,
        Err(e) => return Answer::Now(failed(op, &storage_ref(&e))),
    };
    match (op, outcome.as_str()) {
        (Op::Reserve { reply, .. }, "held") => Answer::Now(Done::Reserve(reply, Ok(true))),
        (Op::Reserve { reply, .. }, "refused") => Answer::Now(Done::Reserve(reply, Ok(false))),
        (
            Op::Reserve {
                reply, request_id, ..
            },
            "duplicate",
        ) => Answer::Now(Done::Reserve(
            reply,
            Err(ReserveError::DuplicateRequest(request_id)),
        )),
        (
            Op::Close {
                request_id,
                charge,
                reason,
                reply,
                ..
            },
            "closed",
        ) => {
            let entry = (|| -> Result<LedgerEntry, sqlx::Error> {
                let account: String = row.try_get(3)?;
                let settle = charge.is_some();
                let c = charge.unwrap_or_default();
                let cost = c.cost.micros();
                let note = if settle { c.note.clone() } else { Some(reason) };
                Ok(Pending {
                    account: &account,
                    kind: if settle {
                        EntryKind::Charge
                    } else {
                        EntryKind::Release
                    },
                    amount: -cost,
                    reserved: row.try_get(4)?,
                    balance_after: row.try_get(5)?,
                    request_id: Some(&request_id),
                    charge: c,
                    note,
                }
                .into_entry(row.try_get(2)?, at))
            })();
            Answer::Now(Done::Close(reply, entry.map_err(|e| storage_ref(&e))))
        }
        (op @ Op::Close { .. }, "not_open") => Answer::NotOpen(op),
        (op, other) => Answer::Now(failed(
            op,
            &LedgerError::Storage(format!("unexpected batch outcome {other:?}").into()),
        )),
    }
}

/// `op` answered with `error`, though the batch committed (it wrote nothing for `op`).
fn failed(op: Op, error: &LedgerError) -> Done {
    let why = || LedgerError::Storage(error.to_string().into());
    match op {
        Op::Reserve { reply, .. } => Done::Reserve(reply, Err(why().into())),
        Op::Close { reply, .. } => Done::Close(reply, Err(why())),
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
