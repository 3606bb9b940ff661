//! Where balances live: the [`Ledger`] trait and its memory, SQLite and PostgreSQL
//! implementations.
//!
//! A ledger keeps, per account, a **balance** and the sum of open **reservations**. A
//! request reserves its worst-case cost (`reserve`, admitted only while
//! `balance − reserved ≥ amount`, decided atomically by the store), then the reservation
//! ends exactly once: `settle` charges the actual cost, `release` charges nothing, and
//! `reconcile_expired` releases reservations a crashed gateway left behind. Every change
//! writes one [`LedgerEntry`], so at any time
//!
//! ```text
//! balance = Σ topups − Σ charges        reserved = Σ open reservations
//! ```
//!
//! Entries record who, what and how much (account, key id, model, token counts, cost,
//! request ids, HTTP status, time) and never the prompt.
//!
//! # Overruns
//!
//! The reservation is an estimate (the prompt's token count is estimated from its size).
//! A settle always charges the **actual** cost, even when it is more than was reserved:
//! the request was served, so it is never free. Only such an overrun can take a balance
//! below zero; the account is then refused until it is topped up. `LedgerEntry::reserved`
//! next to `LedgerEntry::amount` shows every overrun.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tollgate_balance::{Amount, Charge, Ledger, MemoryLedger};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let ledger = MemoryLedger::new();
//! ledger.open_account("acme", "USD").await.unwrap();
//! ledger.topup("acme", "5.00".parse().unwrap(), "first payment").await.unwrap();
//!
//! let expires = SystemTime::now() + Duration::from_secs(3600);
//! let r = ledger.reserve("acme", "req_1", Amount::from_micros(50_000), expires).await.unwrap();
//! assert_eq!(ledger.balance("acme").await.unwrap().reserved, Amount::from_micros(50_000));
//!
//! let entry = ledger.settle(&r, Charge::new(Amount::from_micros(68_100), "claude-sonnet-4-6")).await.unwrap();
//! let again = ledger.settle(&r, Charge::new(Amount::from_micros(1), "claude-sonnet-4-6")).await.unwrap();
//! assert_eq!(entry, again); // exactly once
//!
//! let b = ledger.balance("acme").await.unwrap();
//! assert_eq!((b.balance, b.reserved), (Amount::from_micros(4_931_900), Amount::ZERO));
//! # }
//! ```

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod group;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tollgate_core::{Clock, Usage};

use crate::amount::Amount;

pub use self::memory::{DEFAULT_RETAINED_ENTRIES, MemoryLedger};
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresLedger;
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteLedger;

/// The boxed future every [`Ledger`] method returns.
pub type LedgerFuture<'a, T, E = LedgerError> =
    Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

/// A store of balances, reservations and ledger entries. Object safe: use it as
/// `Arc<dyn Ledger>`.
///
/// Implementations must make `reserve` atomic (a conditional update, never
/// read-then-write), make `settle` and `release` idempotent per request id, and write
/// exactly one closing entry per reservation.
pub trait Ledger: Send + Sync + fmt::Debug + 'static {
    /// Create `account` with a zero balance in `currency` (e.g. `"USD"`).
    ///
    /// Returns `true` when created, `false` when it already existed with that currency.
    ///
    /// # Errors
    ///
    /// [`LedgerError::CurrencyMismatch`] when it exists with another currency;
    /// [`LedgerError::Invalid`] for an empty id or currency; storage failures.
    fn open_account<'a>(&'a self, account: &'a str, currency: &'a str) -> LedgerFuture<'a, bool>;

    /// Reserve `amount` of `account`'s balance for request `request_id`, atomically:
    /// admitted only if `balance − reserved ≥ amount`. The reservation lapses at
    /// `expires_at` (see [`Ledger::reconcile_expired`]).
    ///
    /// # Errors
    ///
    /// [`ReserveError::Insufficient`] with what is available, [`ReserveError::UnknownAccount`],
    /// [`ReserveError::DuplicateRequest`] when `request_id` was used before, or
    /// [`ReserveError::Ledger`].
    fn reserve<'a>(
        &'a self,
        account: &'a str,
        request_id: &'a str,
        amount: Amount,
        expires_at: SystemTime,
    ) -> LedgerFuture<'a, Reservation, ReserveError>;

    /// Close `reservation` by charging `charge.cost` (which may differ from the reserved
    /// amount either way) and return the charge entry.
    ///
    /// Exactly once per request id: when the reservation is already closed, nothing
    /// changes and the entry that closed it is returned (the first settle's, or the
    /// release's). A reservation that *expired* (released by
    /// [`reconcile_expired`](Ledger::reconcile_expired)) is still charged: a late settle
    /// is never free.
    ///
    /// # Errors
    ///
    /// [`LedgerError::UnknownReservation`], [`LedgerError::Invalid`] for a negative cost,
    /// storage failures.
    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        charge: Charge,
    ) -> LedgerFuture<'a, LedgerEntry>;

    /// Close `reservation` without a charge (`reason` is recorded) and return the release
    /// entry. Idempotent like [`settle`](Ledger::settle): on a closed reservation it returns
    /// the entry that closed it.
    ///
    /// # Errors
    ///
    /// [`LedgerError::UnknownReservation`], storage failures.
    fn release<'a>(
        &'a self,
        reservation: &'a Reservation,
        reason: &'a str,
    ) -> LedgerFuture<'a, LedgerEntry>;

    /// The account's balance, open reservations and currency.
    ///
    /// # Errors
    ///
    /// [`LedgerError::UnknownAccount`], storage failures.
    fn balance<'a>(&'a self, account: &'a str) -> LedgerFuture<'a, AccountBalance>;

    /// Add `amount` (> 0) to the account's balance; `note` is recorded.
    ///
    /// # Errors
    ///
    /// [`LedgerError::UnknownAccount`], [`LedgerError::Invalid`] for a zero or negative
    /// amount, storage failures.
    fn topup<'a>(
        &'a self,
        account: &'a str,
        amount: Amount,
        note: &'a str,
    ) -> LedgerFuture<'a, LedgerEntry>;

    /// The account's last `limit` entries, newest first.
    ///
    /// # Errors
    ///
    /// [`LedgerError::UnknownAccount`], storage failures.
    fn history<'a>(&'a self, account: &'a str, limit: u32) -> LedgerFuture<'a, Vec<LedgerEntry>>;

    /// Release every open reservation whose expiry is at or before `now`, writing an
    /// [`EntryKind::Expire`] entry for each; returns how many. Run it when a gateway starts
    /// (after a crash, its reservations are still open) and periodically (see
    /// [`spawn_reconciler`]).
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn reconcile_expired(&self, now: SystemTime) -> LedgerFuture<'_, u64>;
}

/// An open hold on part of an account's balance, returned by [`Ledger::reserve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The request the reservation is for; unique per ledger.
    pub request_id: String,
    /// The account it holds balance of.
    pub account: String,
    /// The amount held.
    pub amount: Amount,
    /// When it lapses.
    pub expires_at: SystemTime,
}

/// What [`Ledger::settle`] records besides the cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Charge {
    /// The actual cost to charge.
    pub cost: Amount,
    /// The key that made the request.
    pub key_id: Option<i64>,
    /// The model that served it (and that was priced).
    pub model: String,
    /// The tokens charged for.
    pub usage: Usage,
    /// The upstream's `request-id`, to match the upstream's own bill.
    pub upstream_request_id: Option<String>,
    /// The HTTP status of the response.
    pub http_status: Option<u16>,
    /// How the response ended (`completed`, `cancelled, output estimated`, …).
    pub note: Option<String>,
}

impl Charge {
    /// A charge of `cost` for `model`, with nothing else recorded.
    pub fn new(cost: Amount, model: impl Into<String>) -> Charge {
        Charge {
            cost,
            model: model.into(),
            ..Charge::default()
        }
    }
}

/// An account's money, from [`Ledger::balance`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountBalance {
    /// Topups minus charges. Negative only after an overrun (see the [module docs](self)).
    pub balance: Amount,
    /// The sum of open reservations.
    pub reserved: Amount,
    /// The account's currency, e.g. `USD`.
    pub currency: String,
}

impl AccountBalance {
    /// What a new reservation can take: `balance − reserved`.
    pub fn available(&self) -> Amount {
        Amount::from_micros(self.balance.micros().saturating_sub(self.reserved.micros()))
    }
}

/// What a [`LedgerEntry`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Money added by [`Ledger::topup`].
    Topup,
    /// A reservation settled with a charge.
    Charge,
    /// A reservation released without a charge.
    Release,
    /// A reservation released by [`Ledger::reconcile_expired`].
    Expire,
}

impl EntryKind {
    /// `topup`, `charge`, `release` or `expire`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Topup => "topup",
            EntryKind::Charge => "charge",
            EntryKind::Release => "release",
            EntryKind::Expire => "expire",
        }
    }

    /// The kind named by [`as_str`](EntryKind::as_str).
    pub fn parse(s: &str) -> Option<EntryKind> {
        Some(match s {
            "topup" => EntryKind::Topup,
            "charge" => EntryKind::Charge,
            "release" => EntryKind::Release,
            "expire" => EntryKind::Expire,
            _ => return None,
        })
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an account's history. Never holds the prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Increasing id, per ledger.
    pub id: i64,
    /// The account.
    pub account: String,
    /// What happened.
    pub kind: EntryKind,
    /// The change to the balance: `+` for a topup, `−cost` for a charge, zero for a
    /// release or an expiry.
    pub amount: Amount,
    /// The reservation this entry closed; zero for a topup or a late charge.
    pub reserved: Amount,
    /// The balance right after this entry.
    pub balance_after: Amount,
    /// The gateway's request id (reservations only).
    pub request_id: Option<String>,
    /// The key that made the request.
    pub key_id: Option<i64>,
    /// The model charged for.
    pub model: Option<String>,
    /// The tokens charged for.
    pub usage: Usage,
    /// The upstream's `request-id`.
    pub upstream_request_id: Option<String>,
    /// The response's HTTP status.
    pub http_status: Option<u16>,
    /// Free text: the topup note, the release reason, how a response ended.
    pub note: Option<String>,
    /// When it was written.
    pub at: SystemTime,
}

impl LedgerEntry {
    /// What this entry charged: `−amount` for a charge, zero otherwise.
    pub fn cost(&self) -> Amount {
        match self.kind {
            EntryKind::Charge => Amount::from_micros(self.amount.micros().saturating_neg()),
            _ => Amount::ZERO,
        }
    }
}

/// Why a ledger operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum LedgerError {
    /// No such account.
    UnknownAccount(String),
    /// No reservation with this request id.
    UnknownReservation(String),
    /// The account exists with another currency.
    CurrencyMismatch {
        /// The account.
        account: String,
        /// Its currency.
        existing: String,
        /// The currency asked for.
        requested: String,
    },
    /// A bad argument (empty id, non-positive topup, negative cost); says which.
    Invalid(String),
    /// The URL names no ledger this build supports.
    UnsupportedUrl(String),
    /// The store failed (connection, query, migration).
    Storage(Box<dyn std::error::Error + Send + Sync>),
}

impl LedgerError {
    /// Whether the failure is the store's (worth retrying) rather than the caller's.
    pub fn is_storage(&self) -> bool {
        matches!(self, LedgerError::Storage(_))
    }
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::UnknownAccount(a) => write!(
                f,
                "account {a:?} has no balance; create it with `tollgate accounts create {a}` and top it up"
            ),
            LedgerError::UnknownReservation(r) => {
                write!(f, "no reservation for request {r:?}")
            }
            LedgerError::CurrencyMismatch {
                account,
                existing,
                requested,
            } => write!(
                f,
                "account {account:?} already exists in {existing}, not {requested}"
            ),
            LedgerError::Invalid(m) => f.write_str(m),
            LedgerError::UnsupportedUrl(m) => f.write_str(m),
            LedgerError::Storage(e) => write!(f, "ledger storage failed: {e}"),
        }
    }
}

impl std::error::Error for LedgerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LedgerError::Storage(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Why [`Ledger::reserve`] did not reserve.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReserveError {
    /// `balance − reserved < amount`.
    Insufficient {
        /// The amount asked for.
        needed: Amount,
        /// `balance − reserved` when refused (may be negative after an overrun).
        available: Amount,
        /// The account's currency.
        currency: String,
    },
    /// No such account.
    UnknownAccount(String),
    /// The request id was reserved before.
    DuplicateRequest(String),
    /// The store failed.
    Ledger(LedgerError),
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReserveError::Insufficient {
                needed,
                available,
                currency,
            } => write!(
                f,
                "insufficient balance: needs {}, available {}",
                needed.display_in(currency),
                available.display_in(currency)
            ),
            ReserveError::UnknownAccount(a) => LedgerError::UnknownAccount(a.clone()).fmt(f),
            ReserveError::DuplicateRequest(r) => {
                write!(f, "request {r:?} already has a reservation")
            }
            ReserveError::Ledger(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReserveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReserveError::Ledger(e) => Some(e),
            _ => None,
        }
    }
}

impl From<LedgerError> for ReserveError {
    fn from(e: LedgerError) -> ReserveError {
        ReserveError::Ledger(e)
    }
}

/// Open the ledger a URL names, creating or migrating its tables:
///
/// | URL | ledger | feature |
/// |---|---|---|
/// | `memory` or `memory:` | [`MemoryLedger`] (lost on exit) | always |
/// | `sqlite:path.db`, `sqlite://path.db`, `sqlite::memory:` | `SqliteLedger` | `sqlite` |
/// | `postgres://…`, `postgresql://…` | `PostgresLedger` | `postgres` |
///
/// # Errors
///
/// [`LedgerError::UnsupportedUrl`] for another scheme or one this build lacks the feature
/// for; [`LedgerError::Storage`] when the database cannot be opened or migrated.
pub async fn open(url: &str) -> Result<Arc<dyn Ledger>, LedgerError> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "memory" => Ok(Arc::new(MemoryLedger::new())),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(SqliteLedger::connect(url).await?)),
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => Err(LedgerError::UnsupportedUrl(
            "this build has no sqlite ledger; rebuild with the `sqlite` feature".into(),
        )),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(PostgresLedger::connect(url).await?)),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => Err(LedgerError::UnsupportedUrl(
            "this build has no postgres ledger; rebuild with the `postgres` feature".into(),
        )),
        _ => Err(LedgerError::UnsupportedUrl(format!(
            "unsupported ledger URL scheme {scheme:?}; use memory, sqlite:PATH or postgres://…"
        ))),
    }
}

/// Run [`Ledger::reconcile_expired`] now and then every `every`, logging what it
/// released, until the returned task is aborted. Must be called inside a tokio runtime.
pub fn spawn_reconciler(
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match ledger.reconcile_expired(clock.wall()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(released = n, "released expired balance reservations"),
                Err(e) => tracing::warn!(error = %e, "reconciling expired reservations failed"),
            }
        }
    })
}

/// Checks shared by every ledger.
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), LedgerError> {
    if id.trim().is_empty() {
        return Err(LedgerError::Invalid(format!("{what} must not be empty")));
    }
    Ok(())
}
