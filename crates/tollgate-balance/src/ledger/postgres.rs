use std::str::FromStr;
use std::sync::Arc;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use tollgate_core::{Clock, SystemClock};

use super::sql::{is_unique_violation, sql_ledger};
use crate::amount::Amount;

/// A ledger in PostgreSQL (feature `postgres`).
///
/// A reserve is one statement: a conditional `UPDATE … WHERE balance − reserved ≥ amount`
/// feeding the `INSERT` of the reservation row, so concurrent reserves on one account
/// queue on its row lock and each re-checks the condition on the latest balance.
/// Settles and releases lock the reservation row (`FOR UPDATE`) then the balance row.
/// Tables are `tollgate_balances`, `tollgate_reservations` and `tollgate_ledger`, created
/// by migrations 2001+ in the connection's schema (`search_path`).
#[derive(Debug)]
pub struct PostgresLedger {
    pool: PgPool,
    clock: Arc<dyn Clock>,
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
        Ok(PostgresLedger {
            pool,
            clock: Arc::new(SystemClock),
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
        self.clock = clock;
        self
    }

    /// The connection pool, e.g. to run reports on the ledger tables.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One statement: hold `amount` if affordable and insert the reservation row.
    /// `Ok(false)` when the account is unknown or cannot afford `amount`.
    async fn reserve_inner(
        &self,
        account: &str,
        request_id: &str,
        amount: Amount,
        expires_at: std::time::SystemTime,
    ) -> Result<bool, ReserveError> {
        let inserted = sqlx::query(
            "WITH held AS ( \
                 UPDATE tollgate_balances SET reserved = reserved + $3 \
                 WHERE account_id = $2 AND balance - reserved >= $3 \
                 RETURNING account_id \
             ) \
             INSERT INTO tollgate_reservations (request_id, account_id, amount, state, created_at, expires_at) \
             SELECT $1, account_id, $3, 'open', $4, $5 FROM held",
        )
        .bind(request_id)
        .bind(account)
        .bind(amount.micros())
        .bind(to_millis(self.clock.wall()))
        .bind(to_millis(expires_at))
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(done) => Ok(done.rows_affected() == 1),
            Err(e) if is_unique_violation(&e) => {
                Err(ReserveError::DuplicateRequest(request_id.to_string()))
            }
            Err(e) => Err(storage(e).into()),
        }
    }
}

impl PostgresLedger {
    /// Settle (`Some(charge)`) or release an open reservation in one statement; a
    /// reservation that is not open (closed already, unknown, or expired for a release)
    /// goes through the general transaction, which returns the entry that closed it.
    async fn close(
        &self,
        request_id: &str,
        charge: Option<Charge>,
        reason: &str,
    ) -> Result<LedgerEntry, LedgerError> {
        let at = self.clock.wall();
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
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        let Some(row) = row else {
            return self.close_in_transaction(request_id, charge, reason).await;
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
        Ok(entry)
    }
}

sql_ledger! {
    ledger: PostgresLedger,
    row: PgRow,
    conn: sqlx::PgConnection,
    begin: "BEGIN",
    lock: " FOR UPDATE",
    lock_many: " FOR UPDATE SKIP LOCKED",
}
