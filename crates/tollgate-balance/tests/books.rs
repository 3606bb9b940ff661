//! Property: any interleaving of reserve / settle / release / topup / reconcile keeps
//! `balance − reserved ≥ 0` and the books balanced, on every ledger.

#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tollgate_balance::{Amount, Charge, EntryKind, Ledger, Reservation, ReserveError};

use common::Backend;

#[derive(Clone, Debug)]
enum Op {
    /// Reserve this much; `true`: already expired.
    Reserve(i64, bool),
    /// Settle the n-th open reservation (mod count) at this percent of its hold.
    Settle(usize, u8),
    /// Release the n-th open reservation (mod count).
    Release(usize),
    Topup(i64),
    Reconcile,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1i64..5_000, proptest::bool::weighted(0.15)).prop_map(|(a, e)| Op::Reserve(a, e)),
        3 => (any::<usize>(), 0u8..=100).prop_map(|(i, p)| Op::Settle(i, p)),
        2 => any::<usize>().prop_map(Op::Release),
        1 => (1i64..10_000).prop_map(Op::Topup),
        1 => Just(Op::Reconcile),
    ]
}

/// What the books must say.
#[derive(Default)]
struct Model {
    balance: i64,
    reserved: i64,
    open: Vec<(Reservation, bool)>,
    admitted: usize,
}

async fn run_ops(
    ledger: &dyn Ledger,
    account: &str,
    start: i64,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    ledger.open_account(account, "USD").await.map_err(fail)?;
    ledger
        .topup(account, Amount::from_micros(start), "start")
        .await
        .map_err(fail)?;
    let mut m = Model {
        balance: start,
        ..Model::default()
    };
    let mut next = 0;
    for op in ops {
        match op {
            Op::Reserve(amount, expired) => {
                next += 1;
                let expires_at = if expired {
                    SystemTime::now() - Duration::from_secs(1)
                } else {
                    SystemTime::now() + Duration::from_secs(3600)
                };
                let id = format!("{account}_r{next}");
                match ledger
                    .reserve(account, &id, Amount::from_micros(amount), expires_at)
                    .await
                {
                    Ok(r) => {
                        prop_assert!(
                            m.balance - m.reserved >= amount,
                            "admitted {amount} with only {} available",
                            m.balance - m.reserved
                        );
                        m.reserved += amount;
                        m.admitted += 1;
                        m.open.push((r, expired));
                    }
                    Err(ReserveError::Insufficient { available, .. }) => {
                        prop_assert!(m.balance - m.reserved < amount);
                        prop_assert_eq!(available.micros(), m.balance - m.reserved);
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            Op::Settle(i, percent) if !m.open.is_empty() => {
                let (r, _) = m.open.remove(i % m.open.len());
                let cost = r.amount.micros() * i64::from(percent) / 100;
                let e = ledger
                    .settle(&r, Charge::new(Amount::from_micros(cost), "m"))
                    .await
                    .map_err(fail)?;
                prop_assert_eq!(e.cost().micros(), cost);
                m.balance -= cost;
                m.reserved -= r.amount.micros();
            }
            Op::Release(i) if !m.open.is_empty() => {
                let (r, _) = m.open.remove(i % m.open.len());
                ledger.release(&r, "released").await.map_err(fail)?;
                m.reserved -= r.amount.micros();
            }
            Op::Settle(..) | Op::Release(_) => {}
            Op::Topup(amount) => {
                ledger
                    .topup(account, Amount::from_micros(amount), "more")
                    .await
                    .map_err(fail)?;
                m.balance += amount;
            }
            Op::Reconcile => {
                // Other cases' accounts share the store; only count this account's.
                ledger
                    .reconcile_expired(SystemTime::now())
                    .await
                    .map_err(fail)?;
                let (gone, kept): (Vec<_>, Vec<_>) =
                    m.open.drain(..).partition(|(_, expired)| *expired);
                m.open = kept;
                m.reserved -= gone.iter().map(|(r, _)| r.amount.micros()).sum::<i64>();
            }
        }
        let b = ledger.balance(account).await.map_err(fail)?;
        prop_assert_eq!(
            (b.balance.micros(), b.reserved.micros()),
            (m.balance, m.reserved)
        );
        prop_assert!(
            b.available().micros() >= 0,
            "balance − reserved went negative"
        );
    }
    let history = ledger.history(account, u32::MAX).await.map_err(fail)?;
    let sum: i64 = history.iter().map(|e| e.amount.micros()).sum();
    prop_assert_eq!(sum, m.balance, "the ledger adds up to the balance");
    let closes = history
        .iter()
        .filter(|e| e.kind != EntryKind::Topup)
        .count();
    prop_assert_eq!(
        closes + m.open.len(),
        m.admitted,
        "one closing entry per admitted reservation"
    );
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn check_books(backend: Backend, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(t) = rt.block_on(common::ledger(backend)) else {
        return;
    };
    static CASE: AtomicU64 = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0i64..20_000, proptest::collection::vec(op(), 1..40));
    let result = runner.run(&strategy, |(start, ops)| {
        let account = format!("acct{}", CASE.fetch_add(1, Ordering::SeqCst));
        rt.block_on(run_ops(&*t.ledger, &account, start.max(1), ops))
    });
    rt.block_on(t.cleanup());
    if let Err(e) = result {
        panic!("{backend:?}: {e}");
    }
}

#[test]
fn memory_books_always_balance() {
    check_books(Backend::Memory, 256);
}

#[test]
fn sqlite_books_always_balance() {
    check_books(Backend::Sqlite, 24);
}

#[test]
fn postgres_books_always_balance() {
    check_books(Backend::Postgres, 24);
}
