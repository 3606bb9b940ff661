use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tollgate_core::{Clock, SystemClock};

use super::{
    AccountBalance, Charge, EntryKind, Ledger, LedgerEntry, LedgerError, LedgerFuture, Reservation,
    ReserveError, check_id,
};
use crate::amount::Amount;

/// A ledger in process memory, behind one lock: for tests, the demo and single-process
/// setups that can lose their balances on exit.
///
/// Every operation is one critical section of a few hash-map operations (well under a
/// microsecond).
///
/// # Bounded memory
///
/// Each account keeps its last [`DEFAULT_RETAINED_ENTRIES`] ledger entries (set with
/// [`retain_entries`](MemoryLedger::retain_entries)); older ones are dropped, so memory
/// stays bounded however many requests are served. Balances and reservations stay exact:
/// they are kept as running sums, not recomputed from entries. A closed reservation is
/// forgotten together with the entry that closed it; until then a second settle or release
/// returns that entry (idempotent), afterwards it is
/// [`LedgerError::UnknownReservation`] — never a second charge. Open reservations are
/// never dropped. A reservation that expired and is settled only after its expiry entry
/// was dropped is not charged; with the default that needs thousands of entries on the
/// account in between.
#[derive(Debug)]
pub struct MemoryLedger {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

/// How many ledger entries a [`MemoryLedger`] keeps per account unless told otherwise.
pub const DEFAULT_RETAINED_ENTRIES: usize = 10_000;

#[derive(Debug)]
struct State {
    accounts: HashMap<String, Account>,
    reservations: HashMap<String, Held>,
    next_id: i64,
    /// Entries kept per account (≥ 1).
    retain: usize,
}

impl Default for State {
    fn default() -> Self {
        State {
            accounts: HashMap::new(),
            reservations: HashMap::new(),
            next_id: 0,
            retain: DEFAULT_RETAINED_ENTRIES,
        }
    }
}

#[derive(Debug)]
struct Account {
    currency: String,
    /// The account id, shared by its reservations.
    id: Arc<str>,
    balance: i64,
    reserved: i64,
    /// The newest entries; entry `i` (counted from the account's first) is at
    /// `entries[i - dropped]`.
    entries: VecDeque<LedgerEntry>,
    /// How many of the oldest entries were dropped.
    dropped: usize,
}

#[derive(Debug)]
struct Held {
    /// The account's [`Account::id`]: shared, not copied per reservation.
    account: Arc<str>,
    amount: i64,
    expires_at: SystemTime,
    open: bool,
    /// The charge or release that closed it (index into the account's entries).
    closing: Option<usize>,
    /// The expiry that released it, if reconcile did.
    expired: Option<usize>,
}

struct NewEntry<'a> {
    kind: EntryKind,
    amount: i64,
    reserved: i64,
    request_id: Option<&'a str>,
    charge: Option<Charge>,
    note: Option<String>,
}

impl MemoryLedger {
    /// An empty ledger on the system clock.
    pub fn new() -> MemoryLedger {
        MemoryLedger {
            state: Mutex::new(State::default()),
            clock: Arc::new(SystemClock),
        }
    }

    /// Timestamp entries with `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> MemoryLedger {
        self.clock = clock;
        self
    }

    /// Keep the last `entries` ledger entries per account (at least 1; default
    /// [`DEFAULT_RETAINED_ENTRIES`]). See [Bounded memory](MemoryLedger#bounded-memory).
    pub fn retain_entries(self, entries: usize) -> MemoryLedger {
        self.state.lock().retain = entries.max(1);
        self
    }
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// Write an entry; returns its index in the account's entries.
    fn record(&mut self, account: &str, at: SystemTime, new: NewEntry<'_>) -> usize {
        self.next_id += 1;
        let id = self.next_id;
        let Some(acct) = self.accounts.get_mut(account) else {
            unreachable!("entries are only recorded for existing accounts")
        };
        acct.balance = acct.balance.saturating_add(new.amount);
        let charge = new.charge.unwrap_or_default();
        let entry = LedgerEntry {
            id,
            account: account.to_string(),
            kind: new.kind,
            amount: Amount::from_micros(new.amount),
            reserved: Amount::from_micros(new.reserved),
            balance_after: Amount::from_micros(acct.balance),
            request_id: new.request_id.map(str::to_string),
            key_id: charge.key_id,
            model: (!charge.model.is_empty()).then_some(charge.model),
            usage: charge.usage,
            upstream_request_id: charge.upstream_request_id,
            http_status: charge.http_status,
            note: new.note.or(charge.note),
            at,
        };
        acct.entries.push_back(entry);
        acct.dropped + acct.entries.len() - 1
    }

    /// Entry `index` of `account`. Reservations are forgotten with the entry that closed
    /// them, so a reservation's entry is always still there; the error is a safety net.
    fn entry(&self, account: &str, index: usize) -> Result<LedgerEntry, LedgerError> {
        self.accounts
            .get(account)
            .and_then(|a| a.entries.get(index.checked_sub(a.dropped)?))
            .cloned()
            .ok_or_else(|| {
                LedgerError::Storage(
                    format!("ledger entry {index} of {account:?} is no longer kept").into(),
                )
            })
    }

    /// Drop `account`'s oldest entries beyond the retention, and forget the closed
    /// reservations they closed. Called once an operation has finished updating its
    /// reservation, so the entry just written and its reservation stay consistent.
    fn prune(&mut self, account: &str) {
        let retain = self.retain;
        let Some(acct) = self.accounts.get_mut(account) else {
            return;
        };
        while acct.entries.len() > retain {
            let Some(old) = acct.entries.pop_front() else {
                break;
            };
            let index = acct.dropped;
            acct.dropped += 1;
            let Some(request_id) = old.request_id else {
                continue;
            };
            let closed_here = self.reservations.get(&request_id).is_some_and(|h| {
                !h.open
                    && (h.closing == Some(index)
                        || (h.closing.is_none() && h.expired == Some(index)))
            });
            if closed_here {
                self.reservations.remove(&request_id);
            }
        }
    }

    /// Close an open reservation: free its hold and write `new`.
    fn close(&mut self, request_id: &str, at: SystemTime, new: NewEntry<'_>) -> (Arc<str>, usize) {
        let Some(held) = self.reservations.get_mut(request_id) else {
            unreachable!("closing a reservation that was looked up")
        };
        held.open = false;
        let (account, amount) = (held.account.clone(), held.amount);
        if let Some(acct) = self.accounts.get_mut(&*account) {
            acct.reserved -= amount;
        }
        let index = self.record(&account, at, new);
        (account, index)
    }
}

impl Ledger for MemoryLedger {
    fn open_account<'a>(&'a self, account: &'a str, currency: &'a str) -> LedgerFuture<'a, bool> {
        let result = (|| {
            check_id("account id", account)?;
            check_id("currency", currency)?;
            let mut state = self.state.lock();
            match state.accounts.get(account) {
                Some(a) if a.currency == currency => Ok(false),
                Some(a) => Err(LedgerError::CurrencyMismatch {
                    account: account.to_string(),
                    existing: a.currency.clone(),
                    requested: currency.to_string(),
                }),
                None => {
                    state.accounts.insert(
                        account.to_string(),
                        Account {
                            id: account.into(),
                            currency: currency.to_string(),
                            balance: 0,
                            reserved: 0,
                            entries: VecDeque::new(),
                            dropped: 0,
                        },
                    );
                    Ok(true)
                }
            }
        })();
        Box::pin(std::future::ready(result))
    }

    fn reserve<'a>(
        &'a self,
        account: &'a str,
        request_id: &'a str,
        amount: Amount,
        expires_at: SystemTime,
    ) -> LedgerFuture<'a, Reservation, ReserveError> {
        let result = (|| {
            if amount.is_negative() {
                return Err(
                    LedgerError::Invalid("a reservation must not be negative".into()).into(),
                );
            }
            let mut state = self.state.lock();
            if state.reservations.contains_key(request_id) {
                return Err(ReserveError::DuplicateRequest(request_id.to_string()));
            }
            let Some(acct) = state.accounts.get_mut(account) else {
                return Err(ReserveError::UnknownAccount(account.to_string()));
            };
            let available = acct.balance.saturating_sub(acct.reserved);
            if available < amount.micros() {
                return Err(ReserveError::Insufficient {
                    needed: amount,
                    available: Amount::from_micros(available),
                    currency: acct.currency.clone(),
                });
            }
            acct.reserved += amount.micros();
            let id = acct.id.clone();
            state.reservations.insert(
                request_id.to_string(),
                Held {
                    account: id,
                    amount: amount.micros(),
                    expires_at,
                    open: true,
                    closing: None,
                    expired: None,
                },
            );
            Ok(Reservation {
                request_id: request_id.to_string(),
                account: account.to_string(),
                amount,
                expires_at,
            })
        })();
        Box::pin(std::future::ready(result))
    }

    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        charge: Charge,
    ) -> LedgerFuture<'a, LedgerEntry> {
        let result = (|| {
            if charge.cost.is_negative() {
                return Err(LedgerError::Invalid("a charge must not be negative".into()));
            }
            let at = self.clock.wall();
            let id = reservation.request_id.as_str();
            let mut state = self.state.lock();
            let Some(held) = state.reservations.get(id) else {
                return Err(LedgerError::UnknownReservation(id.to_string()));
            };
            if let Some(index) = held.closing {
                return state.entry(&held.account, index);
            }
            let cost = charge.cost.micros();
            let new = |reserved| NewEntry {
                kind: EntryKind::Charge,
                amount: -cost,
                reserved,
                request_id: Some(id),
                charge: Some(charge),
                note: None,
            };
            let (account, index) = if held.open {
                let reserved = held.amount;
                state.close(id, at, new(reserved))
            } else {
                // Expired and released by reconcile: a late settle is still charged.
                let account = held.account.clone();
                let index = state.record(&account, at, new(0));
                (account, index)
            };
            if let Some(held) = state.reservations.get_mut(id) {
                held.closing = Some(index);
            }
            let entry = state.entry(&account, index);
            state.prune(&account);
            entry
        })();
        Box::pin(std::future::ready(result))
    }

    fn release<'a>(
        &'a self,
        reservation: &'a Reservation,
        reason: &'a str,
    ) -> LedgerFuture<'a, LedgerEntry> {
        let result = (|| {
            let at = self.clock.wall();
            let id = reservation.request_id.as_str();
            let mut state = self.state.lock();
            let Some(held) = state.reservations.get(id) else {
                return Err(LedgerError::UnknownReservation(id.to_string()));
            };
            if let Some(index) = held.closing.or(held.expired) {
                return state.entry(&held.account, index);
            }
            let reserved = held.amount;
            let (account, index) = state.close(
                id,
                at,
                NewEntry {
                    kind: EntryKind::Release,
                    amount: 0,
                    reserved,
                    request_id: Some(id),
                    charge: None,
                    note: Some(reason.to_string()),
                },
            );
            if let Some(held) = state.reservations.get_mut(id) {
                held.closing = Some(index);
            }
            let entry = state.entry(&account, index);
            state.prune(&account);
            entry
        })();
        Box::pin(std::future::ready(result))
    }

    fn balance<'a>(&'a self, account: &'a str) -> LedgerFuture<'a, AccountBalance> {
        let state = self.state.lock();
        let result = state
            .accounts
            .get(account)
            .map(|a| AccountBalance {
                balance: Amount::from_micros(a.balance),
                reserved: Amount::from_micros(a.reserved),
                currency: a.currency.clone(),
            })
            .ok_or_else(|| LedgerError::UnknownAccount(account.to_string()));
        Box::pin(std::future::ready(result))
    }

    fn topup<'a>(
        &'a self,
        account: &'a str,
        amount: Amount,
        note: &'a str,
    ) -> LedgerFuture<'a, LedgerEntry> {
        let result = (|| {
            if amount.micros() <= 0 {
                return Err(LedgerError::Invalid(format!(
                    "a topup must be more than zero, got {amount}"
                )));
            }
            let at = self.clock.wall();
            let mut state = self.state.lock();
            if !state.accounts.contains_key(account) {
                return Err(LedgerError::UnknownAccount(account.to_string()));
            }
            let index = state.record(
                account,
                at,
                NewEntry {
                    kind: EntryKind::Topup,
                    amount: amount.micros(),
                    reserved: 0,
                    request_id: None,
                    charge: None,
                    note: (!note.is_empty()).then(|| note.to_string()),
                },
            );
            let entry = state.entry(account, index);
            state.prune(account);
            entry
        })();
        Box::pin(std::future::ready(result))
    }

    fn history<'a>(&'a self, account: &'a str, limit: u32) -> LedgerFuture<'a, Vec<LedgerEntry>> {
        let state = self.state.lock();
        let result = state
            .accounts
            .get(account)
            .map(|a| {
                a.entries
                    .iter()
                    .rev()
                    .take(limit as usize)
                    .cloned()
                    .collect()
            })
            .ok_or_else(|| LedgerError::UnknownAccount(account.to_string()));
        Box::pin(std::future::ready(result))
    }

    fn reconcile_expired(&self, now: SystemTime) -> LedgerFuture<'_, u64> {
        let at = self.clock.wall();
        let mut state = self.state.lock();
        let mut stale: Vec<String> = state
            .reservations
            .iter()
            .filter(|(_, h)| h.open && h.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        stale.sort();
        for id in &stale {
            let reserved = state.reservations.get(id).map_or(0, |h| h.amount);
            let (_, index) = state.close(
                id,
                at,
                NewEntry {
                    kind: EntryKind::Expire,
                    amount: 0,
                    reserved,
                    request_id: Some(id),
                    charge: None,
                    note: Some("reservation expired".into()),
                },
            );
            if let Some(held) = state.reservations.get_mut(id) {
                held.expired = Some(index);
            }
            if let Some(account) = state.reservations.get(id).map(|h| h.account.clone()) {
                state.prune(&account);
            }
        }
        Box::pin(std::future::ready(Ok(stale.len() as u64)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn expiry() -> SystemTime {
        SystemTime::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn keeps_the_last_entries_and_exact_balances_while_memory_stays_bounded() {
        let ledger = MemoryLedger::new().retain_entries(3);
        ledger.open_account("acme", "USD").await.expect("ledger op");
        ledger
            .topup("acme", Amount::from_micros(1_000), "")
            .await
            .expect("ledger op");
        let mut reservations = Vec::new();
        for i in 0..10 {
            let r = ledger
                .reserve(
                    "acme",
                    &format!("req_{i}"),
                    Amount::from_micros(50),
                    expiry(),
                )
                .await
                .expect("ledger op");
            ledger
                .settle(&r, Charge::new(Amount::from_micros(10), "m"))
                .await
                .expect("ledger op");
            reservations.push(r);
        }
        let b = ledger.balance("acme").await.expect("ledger op");
        assert_eq!(
            (b.balance, b.reserved),
            (Amount::from_micros(900), Amount::ZERO)
        );
        let history = ledger.history("acme", 100).await.expect("ledger op");
        let ids: Vec<_> = history
            .iter()
            .filter_map(|e| e.request_id.as_deref())
            .collect();
        assert_eq!(ids, ["req_9", "req_8", "req_7"]);
        // Forgotten with their entries: only the kept ones are tracked.
        assert_eq!(ledger.state.lock().reservations.len(), 3);

        // A kept reservation is still idempotent: same entry, no second charge.
        let again = ledger
            .settle(&reservations[9], Charge::new(Amount::from_micros(999), "m"))
            .await
            .expect("ledger op");
        assert_eq!(again, history[0]);
        // A forgotten one is unknown, and never charged twice.
        let old = ledger
            .settle(&reservations[0], Charge::new(Amount::from_micros(999), "m"))
            .await;
        assert!(
            matches!(old, Err(LedgerError::UnknownReservation(_))),
            "{old:?}"
        );
        let b = ledger.balance("acme").await.expect("ledger op");
        assert_eq!(b.balance, Amount::from_micros(900));
    }

    #[tokio::test]
    async fn open_reservations_outlive_the_entry_window() {
        let ledger = MemoryLedger::new().retain_entries(1);
        ledger.open_account("acme", "USD").await.expect("ledger op");
        ledger
            .topup("acme", Amount::from_micros(1_000), "")
            .await
            .expect("ledger op");
        let open = ledger
            .reserve("acme", "long", Amount::from_micros(100), expiry())
            .await
            .expect("ledger op");
        for i in 0..5 {
            ledger
                .topup("acme", Amount::from_micros(1), &format!("t{i}"))
                .await
                .expect("ledger op");
        }
        let entry = ledger
            .settle(&open, Charge::new(Amount::from_micros(40), "m"))
            .await
            .expect("ledger op");
        assert_eq!(entry.amount, Amount::from_micros(-40));
        let b = ledger.balance("acme").await.expect("ledger op");
        assert_eq!(
            (b.balance, b.reserved),
            (Amount::from_micros(965), Amount::ZERO)
        );
    }
}
