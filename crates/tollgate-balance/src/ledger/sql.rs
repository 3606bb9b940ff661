//! What the SQLite and PostgreSQL ledgers share: the statements (both drivers take `$N`
//! placeholders), row mapping and the settle/release state machine, written once as a
//! macro over the concrete pool and row types. Only `reserve` and how a write
//! transaction begins differ, and live in each backend's file.
//!
//! A reservation row is `open`, then exactly one of `settled`, `released` or `expired`
//! (and an expired one may still be `settled` late). Every transition happens in one
//! transaction with the reservation row locked (PostgreSQL: `FOR UPDATE`; SQLite: the
//! database write lock taken by `BEGIN IMMEDIATE`, for a whole group commit there), and
//! writes one ledger entry; a unique
//! index on `(request_id, kind)` makes a second charge impossible even if that failed.

use std::time::{Duration, SystemTime};

use super::LedgerError;

/// Columns of a ledger entry, in the order `entry_from_row` reads them.
macro_rules! entry_columns {
    () => {
        "id, account_id, kind, amount, reserved, balance_after, request_id, key_id, model, input_tokens, output_tokens, cache_write_tokens, cache_write_1h_tokens, cache_read_tokens, upstream_request_id, http_status, note, created_at"
    };
}

pub(super) use entry_columns;

/// Milliseconds since the Unix epoch (negative before it), as the SQL ledgers store time.
pub(super) fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis())
            .map(|ms| -ms)
            .unwrap_or(i64::MIN),
    }
}

/// The inverse of [`to_millis`].
pub(super) fn from_millis(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

/// A token count as stored (`BIGINT`).
pub(super) fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored token count.
pub(super) fn untokens(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(super) fn storage(e: impl std::error::Error + Send + Sync + 'static) -> LedgerError {
    LedgerError::Storage(Box::new(e))
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The shared part of a SQL ledger. `$ledger` must have fields `pool` and `clock` and
/// inherent `async fn reserve_inner(&self, account, request_id, amount, expires_at)` and
/// `async fn close(&self, reservation, charge, reason)` (which may use the generated
/// `close_in_transaction`).
/// `begin` starts a write transaction; `lock` is appended to the statement selecting
/// one reservation, `lock_many` to the one selecting expired reservations.
macro_rules! sql_ledger {
    (
        ledger: $ledger:ty,
        row: $row:ty,
        conn: $conn:ty,
        begin: $begin:literal,
        lock: $lock:literal,
        lock_many: $lock_many:literal $(,)?
    ) => {
        use sqlx::Row as _;

        use $crate::ledger::sql::{entry_columns, from_millis, storage, to_millis, tokens, untokens};
        use $crate::ledger::{
            AccountBalance, Charge, EntryKind, Ledger, LedgerEntry, LedgerError, LedgerFuture,
            Reservation, ReserveError, check_id,
        };

        fn entry_from_row(row: &$row) -> Result<LedgerEntry, sqlx::Error> {
            let kind: String = row.try_get(2)?;
            let http_status: Option<i64> = row.try_get(15)?;
            Ok(LedgerEntry {
                id: row.try_get(0)?,
                account: row.try_get(1)?,
                kind: EntryKind::parse(&kind).ok_or_else(|| {
                    sqlx::Error::Decode(format!("unknown ledger entry kind {kind:?}").into())
                })?,
                amount: Amount::from_micros(row.try_get(3)?),
                reserved: Amount::from_micros(row.try_get(4)?),
                balance_after: Amount::from_micros(row.try_get(5)?),
                request_id: row.try_get(6)?,
                key_id: row.try_get(7)?,
                model: row.try_get(8)?,
                usage: tollgate_core::Usage {
                    input: untokens(row.try_get(9)?),
                    output: untokens(row.try_get(10)?),
                    cache_write: untokens(row.try_get(11)?),
                    cache_write_1h: untokens(row.try_get(12)?),
                    cache_read: untokens(row.try_get(13)?),
                },
                upstream_request_id: row.try_get(14)?,
                http_status: http_status.and_then(|s| u16::try_from(s).ok()),
                note: row.try_get(16)?,
                at: from_millis(row.try_get(17)?),
            })
        }

        /// A ledger entry not yet written.
        struct Pending<'a> {
            account: &'a str,
            kind: EntryKind,
            amount: i64,
            reserved: i64,
            balance_after: i64,
            request_id: Option<&'a str>,
            charge: Charge,
            note: Option<String>,
        }

        impl Pending<'_> {
            /// The entry as written with `id` at `at` (stored, and so returned, to the
            /// millisecond).
            fn into_entry(self, id: i64, at: std::time::SystemTime) -> LedgerEntry {
                LedgerEntry {
                    id,
                    account: self.account.to_string(),
                    kind: self.kind,
                    amount: Amount::from_micros(self.amount),
                    reserved: Amount::from_micros(self.reserved),
                    balance_after: Amount::from_micros(self.balance_after),
                    request_id: self.request_id.map(str::to_string),
                    key_id: self.charge.key_id,
                    model: (!self.charge.model.is_empty()).then_some(self.charge.model),
                    usage: self.charge.usage,
                    upstream_request_id: self.charge.upstream_request_id,
                    http_status: self.charge.http_status,
                    note: self.note.or(self.charge.note),
                    at: from_millis(to_millis(at)),
                }
            }
        }

        impl $ledger {
            /// Write `p` as of `at` and return it with its id.
            async fn insert_entry<'c, E>(
                conn: E,
                p: Pending<'_>,
                at: std::time::SystemTime,
            ) -> Result<LedgerEntry, LedgerError>
            where
                E: sqlx::Executor<'c, Database = <$row as sqlx::Row>::Database>,
            {
                let model = (!p.charge.model.is_empty()).then_some(p.charge.model.as_str());
                let note = p.note.as_deref().or(p.charge.note.as_deref());
                let u = p.charge.usage;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO tollgate_ledger (account_id, kind, amount, reserved, balance_after, request_id, key_id, model, input_tokens, output_tokens, cache_write_tokens, cache_write_1h_tokens, cache_read_tokens, upstream_request_id, http_status, note, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id",
                )
                .bind(p.account)
                .bind(p.kind.as_str())
                .bind(p.amount)
                .bind(p.reserved)
                .bind(p.balance_after)
                .bind(p.request_id)
                .bind(p.charge.key_id)
                .bind(model)
                .bind(tokens(u.input))
                .bind(tokens(u.output))
                .bind(tokens(u.cache_write))
                .bind(tokens(u.cache_write_1h))
                .bind(tokens(u.cache_read))
                .bind(p.charge.upstream_request_id.as_deref())
                .bind(p.charge.http_status.map(i64::from))
                .bind(note)
                .bind(to_millis(at))
                .fetch_one(conn)
                .await
                .map_err(storage)?;
                Ok(p.into_entry(id, at))
            }

            async fn entry_for<'c, E>(
                conn: E,
                request_id: &str,
                kind: EntryKind,
            ) -> Result<LedgerEntry, LedgerError>
            where
                E: sqlx::Executor<'c, Database = <$row as sqlx::Row>::Database>,
            {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    entry_columns!(),
                    " FROM tollgate_ledger WHERE request_id = $1 AND kind = $2"
                ))
                    .bind(request_id)
                    .bind(kind.as_str())
                    .fetch_optional(conn)
                    .await
                    .map_err(storage)?;
                match row {
                    Some(row) => entry_from_row(&row).map_err(storage),
                    None => Err(LedgerError::Storage(
                        format!("reservation {request_id:?} is closed but has no {kind} entry").into(),
                    )),
                }
            }

            /// Close the reservation `request_id` in a write transaction: `Some(charge)`
            /// settles, `None` releases with `reason`. On a closed reservation, returns the
            /// entry that closed it.
            #[allow(dead_code, reason = "SQLite closes in its group commit instead")]
            async fn close_in_transaction(
                &self,
                request_id: &str,
                charge: Option<Charge>,
                reason: &str,
            ) -> Result<LedgerEntry, LedgerError> {
                let mut tx = self.pool.begin_with($begin).await.map_err(storage)?;
                let entry = Self::close_on(&mut *tx, &*self.clock, request_id, charge, reason).await?;
                tx.commit().await.map_err(storage)?;
                Ok(entry)
            }

            /// [`close_in_transaction`](Self::close_in_transaction)'s statements, on `conn`,
            /// which is inside a write transaction.
            async fn close_on(
                conn: &mut $conn,
                clock: &dyn tollgate_core::Clock,
                request_id: &str,
                charge: Option<Charge>,
                reason: &str,
            ) -> Result<LedgerEntry, LedgerError> {
                let row = sqlx::query(concat!(
                    "SELECT account_id, amount, state FROM tollgate_reservations WHERE request_id = $1",
                    $lock
                ))
                .bind(request_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(storage)?;
                let Some(row) = row else {
                    return Err(LedgerError::UnknownReservation(request_id.to_string()));
                };
                let account: String = row.try_get(0).map_err(storage)?;
                let amount: i64 = row.try_get(1).map_err(storage)?;
                let state: String = row.try_get(2).map_err(storage)?;
                let closed_by = match (state.as_str(), charge.is_some()) {
                    ("settled", _) => Some(EntryKind::Charge),
                    ("released", _) => Some(EntryKind::Release),
                    ("expired", false) => Some(EntryKind::Expire),
                    _ => None,
                };
                if let Some(kind) = closed_by {
                    return Self::entry_for(&mut *conn, request_id, kind).await;
                }
                // Open, or expired and settled late (charged, nothing left to free).
                let reserved = if state == "open" { amount } else { 0 };
                let (kind, cost, new_state) = match &charge {
                    Some(c) => (EntryKind::Charge, c.cost.micros(), "settled"),
                    None => (EntryKind::Release, 0, "released"),
                };
                let balance_after: i64 = sqlx::query_scalar(
                    "UPDATE tollgate_balances SET balance = balance - $1, reserved = reserved - $2 \
                     WHERE account_id = $3 RETURNING balance",
                )
                .bind(cost)
                .bind(reserved)
                .bind(&account)
                .fetch_one(&mut *conn)
                .await
                .map_err(storage)?;
                sqlx::query("UPDATE tollgate_reservations SET state = $1 WHERE request_id = $2")
                    .bind(new_state)
                    .bind(request_id)
                    .execute(&mut *conn)
                    .await
                    .map_err(storage)?;
                Self::insert_entry(
                        &mut *conn,
                        Pending {
                            account: &account,
                            kind,
                            amount: -cost,
                            reserved,
                            balance_after,
                            request_id: Some(request_id),
                            note: charge.is_none().then(|| reason.to_string()),
                            charge: charge.unwrap_or_default(),
                        },
                        clock.wall(),
                    )
                    .await
            }
        }

        impl Ledger for $ledger {
            fn open_account<'a>(&'a self, account: &'a str, currency: &'a str) -> LedgerFuture<'a, bool> {
                Box::pin(async move {
                    check_id("account id", account)?;
                    check_id("currency", currency)?;
                    let created = sqlx::query(
                        "INSERT INTO tollgate_balances (account_id, currency, balance, reserved, created_at) \
                         VALUES ($1, $2, 0, 0, $3) ON CONFLICT (account_id) DO NOTHING",
                    )
                    .bind(account)
                    .bind(currency)
                    .bind(to_millis(self.clock.wall()))
                    .execute(&self.pool)
                    .await
                    .map_err(storage)?
                    .rows_affected()
                        == 1;
                    if created {
                        return Ok(true);
                    }
                    let existing = self.balance(account).await?.currency;
                    if existing == currency {
                        Ok(false)
                    } else {
                        Err(LedgerError::CurrencyMismatch {
                            account: account.to_string(),
                            existing,
                            requested: currency.to_string(),
                        })
                    }
                })
            }

            fn reserve<'a>(
                &'a self,
                account: &'a str,
                request_id: &'a str,
                amount: Amount,
                expires_at: std::time::SystemTime,
            ) -> LedgerFuture<'a, Reservation, ReserveError> {
                Box::pin(async move {
                    if amount.is_negative() {
                        return Err(LedgerError::Invalid("a reservation must not be negative".into()).into());
                    }
                    let admitted = self.reserve_inner(account, request_id, amount, expires_at).await?;
                    if admitted {
                        return Ok(Reservation {
                            request_id: request_id.to_string(),
                            account: account.to_string(),
                            amount,
                            expires_at,
                        });
                    }
                    // Refused atomically above; this read only explains why.
                    match self.balance(account).await {
                        Ok(b) => Err(ReserveError::Insufficient {
                            needed: amount,
                            available: b.available(),
                            currency: b.currency,
                        }),
                        Err(LedgerError::UnknownAccount(a)) => Err(ReserveError::UnknownAccount(a)),
                        Err(e) => Err(e.into()),
                    }
                })
            }

            fn settle<'a>(&'a self, reservation: &'a Reservation, charge: Charge) -> LedgerFuture<'a, LedgerEntry> {
                Box::pin(async move {
                    if charge.cost.is_negative() {
                        return Err(LedgerError::Invalid("a charge must not be negative".into()));
                    }
                    self.close(reservation, Some(charge), "").await
                })
            }

            fn release<'a>(&'a self, reservation: &'a Reservation, reason: &'a str) -> LedgerFuture<'a, LedgerEntry> {
                Box::pin(self.close(reservation, None, reason))
            }

            fn balance<'a>(&'a self, account: &'a str) -> LedgerFuture<'a, AccountBalance> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT balance, reserved, currency FROM tollgate_balances WHERE account_id = $1",
                    )
                    .bind(account)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(storage)?;
                    let Some(row) = row else {
                        return Err(LedgerError::UnknownAccount(account.to_string()));
                    };
                    Ok(AccountBalance {
                        balance: Amount::from_micros(row.try_get(0).map_err(storage)?),
                        reserved: Amount::from_micros(row.try_get(1).map_err(storage)?),
                        currency: row.try_get(2).map_err(storage)?,
                    })
                })
            }

            fn topup<'a>(&'a self, account: &'a str, amount: Amount, note: &'a str) -> LedgerFuture<'a, LedgerEntry> {
                Box::pin(async move {
                    if amount.micros() <= 0 {
                        return Err(LedgerError::Invalid(format!(
                            "a topup must be more than zero, got {amount}"
                        )));
                    }
                    let mut tx = self.pool.begin_with($begin).await.map_err(storage)?;
                    let balance_after: Option<i64> = sqlx::query_scalar(
                        "UPDATE tollgate_balances SET balance = balance + $1 WHERE account_id = $2 RETURNING balance",
                    )
                    .bind(amount.micros())
                    .bind(account)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(storage)?;
                    let Some(balance_after) = balance_after else {
                        return Err(LedgerError::UnknownAccount(account.to_string()));
                    };
                    let entry = Self::insert_entry(
                        &mut *tx,
                        Pending {
                            account,
                            kind: EntryKind::Topup,
                            amount: amount.micros(),
                            reserved: 0,
                            balance_after,
                            request_id: None,
                            charge: Charge::default(),
                            note: (!note.is_empty()).then(|| note.to_string()),
                        },
                        self.clock.wall(),
                    )
                    .await?;
                    tx.commit().await.map_err(storage)?;
                    Ok(entry)
                })
            }

            fn history<'a>(&'a self, account: &'a str, limit: u32) -> LedgerFuture<'a, Vec<LedgerEntry>> {
                Box::pin(async move {
                    self.balance(account).await?;
                    let rows = sqlx::query(concat!(
                        "SELECT ",
                        entry_columns!(),
                        " FROM tollgate_ledger WHERE account_id = $1 ORDER BY id DESC LIMIT $2"
                    ))
                        .bind(account)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(storage)?;
                    rows.iter()
                        .map(|r| entry_from_row(r).map_err(storage))
                        .collect()
                })
            }

            fn reconcile_expired(&self, now: std::time::SystemTime) -> LedgerFuture<'_, u64> {
                Box::pin(async move {
                    let mut tx = self.pool.begin_with($begin).await.map_err(storage)?;
                    let rows = sqlx::query(concat!(
                        "SELECT request_id, account_id, amount FROM tollgate_reservations \
                         WHERE state = 'open' AND expires_at <= $1 ORDER BY account_id, request_id",
                        $lock_many
                    ))
                    .bind(to_millis(now))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(storage)?;
                    for row in &rows {
                        let request_id: String = row.try_get(0).map_err(storage)?;
                        let account: String = row.try_get(1).map_err(storage)?;
                        let amount: i64 = row.try_get(2).map_err(storage)?;
                        let balance_after: i64 = sqlx::query_scalar(
                            "UPDATE tollgate_balances SET reserved = reserved - $1 WHERE account_id = $2 RETURNING balance",
                        )
                        .bind(amount)
                        .bind(&account)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(storage)?;
                        sqlx::query("UPDATE tollgate_reservations SET state = 'expired' WHERE request_id = $1")
                            .bind(&request_id)
                            .execute(&mut *tx)
                            .await
                            .map_err(storage)?;
                        Self::insert_entry(
                            &mut *tx,
                            Pending {
                                account: &account,
                                kind: EntryKind::Expire,
                                amount: 0,
                                reserved: amount,
                                balance_after,
                                request_id: Some(&request_id),
                                charge: Charge::default(),
                                note: Some("reservation expired".into()),
                            },
                            self.clock.wall(),
                        )
                        .await?;
                    }
                    tx.commit().await.map_err(storage)?;
                    Ok(rows.len() as u64)
                })
            }
        }
    };
}

pub(super) use sql_ledger;
