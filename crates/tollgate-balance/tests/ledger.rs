//! The generic ledger suite: every test runs on memory, SQLite and PostgreSQL.

#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tollgate_balance::{Amount, Charge, EntryKind, Ledger, LedgerEntry, LedgerError, ReserveError};

fn later() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

fn micros(n: i64) -> Amount {
    Amount::from_micros(n)
}

async fn funded(ledger: &dyn Ledger, account: &str, amount: i64) {
    assert!(ledger.open_account(account, "USD").await.expect("open"));
    ledger
        .topup(account, micros(amount), "test funds")
        .await
        .expect("topup");
}

/// Σ entry amounts over the whole history.
async fn ledger_sum(ledger: &dyn Ledger, account: &str) -> i64 {
    let entries = ledger.history(account, u32::MAX).await.expect("history");
    entries.iter().map(|e| e.amount.micros()).sum()
}

on_every_ledger!(
    concurrent_reserves_admit_exactly_what_the_balance_affords,
    a_failing_operation_among_concurrent_ones_fails_alone,
    settle_is_idempotent_on_the_request_id,
    racing_settles_and_releases_of_one_reservation_close_it_once,
    release_frees_the_hold_without_a_charge_and_is_idempotent,
    reconcile_releases_only_expired_reservations_and_logs_each,
    a_late_settle_after_expiry_is_still_charged,
    an_overrun_is_charged_in_full_and_blocks_the_account_until_topped_up,
    a_request_id_reserves_once,
    unknown_accounts_currencies_and_bad_amounts_are_refused,
    history_is_newest_first_and_never_holds_a_prompt,
);

async fn concurrent_reserves_admit_exactly_what_the_balance_affords(ledger: Arc<dyn Ledger>) {
    const COST: i64 = 7_000;
    funded(&*ledger, "acme", 10 * COST).await;
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                ledger
                    .reserve("acme", &format!("req_{i}"), micros(COST), later())
                    .await
            })
        })
        .collect();
    let mut admitted = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(r) => admitted.push(r),
            Err(ReserveError::Insufficient {
                needed, available, ..
            }) => {
                assert_eq!(needed, micros(COST));
                assert!(
                    available < micros(COST),
                    "refused with {available} available"
                );
                refused += 1;
            }
            Err(e) => panic!("unexpected reserve error: {e}"),
        }
    }
    assert_eq!(
        admitted.len(),
        10,
        "exactly the affordable ten are admitted"
    );
    assert_eq!(refused, 990);
    let b = ledger.balance("acme").await.expect("balance");
    assert_eq!(
        (b.balance, b.reserved, b.available()),
        (micros(10 * COST), micros(10 * COST), Amount::ZERO)
    );

    // Settle each at a different actual cost, concurrently.
    let settles: Vec<_> = admitted
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let cost = micros(COST - i as i64 * 100);
                ledger
                    .settle(&r, Charge::new(cost, "claude-sonnet-4-6"))
                    .await
            })
        })
        .collect();
    let mut charged = 0;
    for s in settles {
        charged += s.await.expect("task").expect("settle").cost().micros();
    }
    let b = ledger.balance("acme").await.expect("balance");
    assert_eq!(b.reserved, Amount::ZERO);
    assert!(b.balance.micros() >= 0);
    assert_eq!(b.balance.micros(), 10 * COST - charged);
    assert_eq!(
        ledger_sum(&*ledger, "acme").await,
        b.balance.micros(),
        "ledger sum = balance change"
    );
}

async fn settle_is_idempotent_on_the_request_id(ledger: Arc<dyn Ledger>) {
    funded(&*ledger, "acme", 1_000_000).await;
    let r = ledger
        .reserve("acme", "req_1", micros(50_000), later())
        .await
        .expect("reserve");
    let mut charge = Charge::new(micros(30_000), "claude-sonnet-4-6");
    charge.key_id = Some(7);
    charge.http_status = Some(200);
    charge.upstream_request_id = Some("req_upstream".into());
    let first = ledger.settle(&r, charge).await.expect("settle");
    assert_eq!(
        (first.kind, first.cost(), first.reserved),
        (EntryKind::Charge, micros(30_000), micros(50_000))
    );
    assert_eq!(first.balance_after, micros(970_000));

    let again = ledger
        .settle(&r, Charge::new(micros(999), "other"))
        .await
        .expect("second settle is a no-op");
    assert_eq!(again, first, "the second settle returns the first result");
    let released = ledger
        .release(&r, "late release")
        .await
        .expect("release after settle");
    assert_eq!(released, first);

    let b = ledger.balance("acme").await.expect("balance");
    assert_eq!((b.balance, b.reserved), (micros(970_000), Amount::ZERO));
    let charges = ledger
        .history("acme", 100)
        .await
        .expect("history")
        .into_iter()
        .filter(|e| e.kind == EntryKind::Charge)
        .count();
    assert_eq!(charges, 1);
}

async fn racing_settles_and_releases_of_one_reservation_close_it_once(ledger: Arc<dyn Ledger>) {
    funded(&*ledger, "acme", 1_000_000).await;
    for round in 0..20 {
        let r = ledger
            .reserve("acme", &format!("req_{round}"), micros(1_000), later())
            .await
            .expect("reserve");
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (ledger, r) = (ledger.clone(), r.clone());
                tokio::spawn(async move {
                    if i % 4 == 3 {
                        ledger.release(&r, "race").await
                    } else {
                        ledger.settle(&r, Charge::new(micros(100 + i), "m")).await
                    }
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task").expect("close"));
        }
        assert!(
            results.windows(2).all(|w| w[0] == w[1]),
            "every caller sees the one closing entry"
        );
    }
    let b = ledger.balance("acme").await.expect("balance");
    assert_eq!(b.reserved, Amount::ZERO);
    let closes = ledger
        .history("acme", 100)
        .await
        .expect("history")
        .into_iter()
        .filter(|e| e.kind != EntryKind::Topup)
        .count();
    assert_eq!(closes, 20);
    assert_eq!(ledger_sum(&*ledger, "acme").await, b.balance.micros());
}

async fn release_frees_the_hold_without_a_charge_and_is_idempotent(ledger: Arc<dyn Ledger>) {
    funded(&*ledger, "acme", 100).await;
    let r = ledger
        .reserve("acme", "req_1", micros(100), later())
        .await
        .expect("reserve");
    assert!(matches!(
        ledger.reserve("acme", "req_2", micros(1), later()).await,
        Err(ReserveError::Insufficient { .. })
    ));
    let released = ledger
        .release(&r, "HTTP 529 without usage")
        .await
        .expect("release");
    assert_eq!(
        (released.kind, released.amount, released.reserved),
        (EntryKind::Release, Amount::ZERO, micros(100))
    );
    assert_eq!(released.note.as_deref(), Some("HTTP 529 without usage"));
    assert_eq!(ledger.release(&r, "again").await.expect("again"), released);
    assert_eq!(
        ledger
            .settle(&r, Charge::new(micros(5), "m"))
            .await
            .expect("settle after release"),
        released,
        "a released reservation is never charged afterwards"
    );
    let b = ledger.balance("acme").await.expect("balance");
    assert_eq!((b.balance, b.reserved), (micros(100), Amount::ZERO));
}

async fn reconcile_releases_only_expired_reservations_and_logs_each(ledger: Arc<dyn Ledger>) {
    funded(&*ledger, "acme", 1_000).await;
    let now = SystemTime::now();
    let past = now - Duration::from_secs(60);
    ledger
        .reserve("acme", "stale_1", micros(100), past)
        .await
        .expect("reserve");
    ledger
        .reserve("acme", "stale_2", micros(200), past)
        .await
        .expect("reserve");
    let fresh = ledger
        .reserve("acme", "fresh", micros(300), later())
        .await
        .expect("reserve");
    let settled = ledger
        .reserve("acme", "settled", micros(50), past)
        .await
        .expect("reserve");
    ledger
        .settle(&settled, Charge::new(micros(50), "m"))
        .await
        .expect("settle");

    assert_eq!(ledger.reconcile_expired(now).await.expect("reconcile"), 2);
    let b = ledger.balance("acme").await.expect("balance");
    assert_eq!((b.balance, b.reserved), (micros(950), micros(300)));
    let expired: Vec<LedgerEntry> = ledger
        .history("acme", 100)
        .await
        .expect("history")
        .into_iter()
        .filter(|e| e.kind == EntryKind::Expire)
        .collect();
    let mut ids: Vec<_> = expired
        .iter()
        .filter_map(|e| e.request_id.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, ["stale_1", "stale_2"]);
    assert!(expired.iter().all(|e| e.amount == Amount::ZERO));

    assert_eq!(
        ledger.reconcile_expired(now).await.expect("again"),
        0,
        "nothing left to release"
    );
    ledger.release(&fresh, "done").await.expect("release");
    assert_eq!(ledger_sum(&*ledger, "acme").await, 950);
}

async fn a_late_settle_after_expiry_is_still_charged(ledger: Arc<dyn Ledger>) {
    funded(&*ledger, "acme", 1_000).await;
    let past = SystemTime::now() - Duration::from_secs(1);
    let r = ledger
        .reserve("acme", "long_stream", micros(400), past)
        .await
        .expect("reserve");
    assert_eq!(
        ledger
            .reconcile_expired(SystemTime::now())
            .await
            .expect("reconcile"),
        1
    );
    let expire = ledger
        .release(&r, "x")
        .await
        .expect("release returns the expiry");
    assert_eq!(expire.kind, EntryKind::Expire);

    let late = ledger
        .settle(&r, Charge::new(micros(250), "m"))
        .await
        .expect("late settle");
    assert_eq!(
        (late.kind, late.cost(), late.reserved),
        (EntryKind::Charge, micros(250), Amount::ZERO)
    );
    assert_eq!(
        ledger
            .settle(&r, Charge::new(micros(1), "m"))
            .await
            .expect("again"),
        late
    );
    let b = ledger.balance("acme").await.expect("balance");
    assert_eq!((b.balance, b.reserved), (micros(750), Amount::ZERO));
    assert_eq!(ledger_sum(&*ledger, "acme").await, 750);
}

async fn an_overrun_is_charged_in_full_and_blocks_the_account_until_topped_up(
    ledger: Arc<dyn Ledger>,
) {
    funded(&*ledger, "acme", 100).await;
    let r = ledger
        .reserve("acme", "req_1", micros(100), later())
        .await
        .expect("reserve");
    let e = ledger
        .settle(&r, Charge::new(micros(130), "m"))
        .await
        .expect("settle");
    assert_eq!(
        (e.cost(), e.reserved, e.balance_after),
        (micros(130), micros(100), micros(-30))
    );
    match ledger.reserve("acme", "req_2", Amount::ZERO, later()).await {
        Err(ReserveError::Insufficient { available, .. }) => assert_eq!(available, micros(-30)),
        other => panic!("expected a refusal, got {other:?}"),
    }
    ledger
        .topup("acme", micros(40), "settle the debt")
        .await
        .expect("topup");
    ledger
        .reserve("acme", "req_3", micros(10), later())
        .await
        .expect("affordable again");
}

async fn a_request_id_reserves_once(ledger: Arc<dyn Ledger>) {
    funded(&*ledger, "acme", 1_000).await;
    ledger
        .reserve("acme", "req_1", micros(10), later())
        .await
        .expect("reserve");
    assert!(matches!(
        ledger.reserve("acme", "req_1", micros(10), later()).await,
        Err(ReserveError::DuplicateRequest(id)) if id == "req_1"
    ));
    let b = ledger.balance("acme").await.expect("balance");
    assert_eq!(
        b.reserved,
        micros(10),
        "the refused duplicate holds nothing"
    );
}

async fn unknown_accounts_currencies_and_bad_amounts_are_refused(ledger: Arc<dyn Ledger>) {
    assert!(matches!(
        ledger.reserve("ghost", "req_1", micros(1), later()).await,
        Err(ReserveError::UnknownAccount(a)) if a == "ghost"
    ));
    assert!(matches!(
        ledger.balance("ghost").await,
        Err(LedgerError::UnknownAccount(_))
    ));
    assert!(matches!(
        ledger.topup("ghost", micros(1), "").await,
        Err(LedgerError::UnknownAccount(_))
    ));
    assert!(ledger.open_account("acme", "USD").await.expect("open"));
    assert!(
        !ledger
            .open_account("acme", "USD")
            .await
            .expect("open again is a no-op")
    );
    assert!(matches!(
        ledger.open_account("acme", "EUR").await,
        Err(LedgerError::CurrencyMismatch { .. })
    ));
    assert!(matches!(
        ledger.open_account("", "USD").await,
        Err(LedgerError::Invalid(_))
    ));
    assert!(matches!(
        ledger.topup("acme", Amount::ZERO, "").await,
        Err(LedgerError::Invalid(_))
    ));
    assert!(matches!(
        ledger.reserve("acme", "req_n", micros(-1), later()).await,
        Err(ReserveError::Ledger(LedgerError::Invalid(_)))
    ));
    let r = ledger
        .reserve("acme", "req_0", Amount::ZERO, later())
        .await
        .expect("zero is fine");
    assert!(matches!(
        ledger.settle(&r, Charge::new(micros(-5), "m")).await,
        Err(LedgerError::Invalid(_))
    ));
    let mut ghost = r.clone();
    ghost.request_id = "never_reserved".into();
    assert!(matches!(
        ledger.settle(&ghost, Charge::new(micros(5), "m")).await,
        Err(LedgerError::UnknownReservation(_))
    ));
}

async fn history_is_newest_first_and_never_holds_a_prompt(ledger: Arc<dyn Ledger>) {
    funded(&*ledger, "acme", 1_000_000).await;
    let r = ledger
        .reserve("acme", "req_1", micros(10_000), later())
        .await
        .expect("reserve");
    let charge = Charge {
        cost: micros(1_641),
        key_id: Some(42),
        model: "claude-sonnet-4-6".into(),
        usage: tollgate_core::Usage {
            input: 472,
            output: 15,
            cache_write: 10,
            cache_write_1h: 4,
            cache_read: 3,
        },
        upstream_request_id: Some("req_011CfxSse00000000000000008".into()),
        http_status: Some(200),
        note: Some("completed".into()),
    };
    ledger.settle(&r, charge.clone()).await.expect("settle");
    ledger
        .topup("acme", micros(5), "second")
        .await
        .expect("topup");

    let h = ledger.history("acme", 20).await.expect("history");
    assert_eq!(
        h.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EntryKind::Topup, EntryKind::Charge, EntryKind::Topup]
    );
    assert!(h.windows(2).all(|w| w[0].id > w[1].id));
    let c = &h[1];
    assert_eq!(c.account, "acme");
    assert_eq!(c.key_id, Some(42));
    assert_eq!(c.model.as_deref(), Some("claude-sonnet-4-6"));
    assert_eq!(c.usage, charge.usage);
    assert_eq!(c.upstream_request_id, charge.upstream_request_id);
    assert_eq!(c.http_status, Some(200));
    assert_eq!(c.request_id.as_deref(), Some("req_1"));
    assert_eq!(c.note.as_deref(), Some("completed"));
    assert!(c.at <= SystemTime::now() && c.at > SystemTime::now() - Duration::from_secs(60));
    assert_eq!(h[0].note.as_deref(), Some("second"));
    assert_eq!(ledger.history("acme", 1).await.expect("limit").len(), 1);
}

/// The SQL ledgers commit concurrent operations together (PostgreSQL: in one statement);
/// a duplicate reserve, an unaffordable one and an unknown reservation in the same burst
/// fail on their own and take nothing else down.
async fn a_failing_operation_among_concurrent_ones_fails_alone(ledger: Arc<dyn Ledger>) {
    funded(&*ledger, "acme", 1_000_000).await;
    let first = ledger
        .reserve("acme", "dup", micros(100), later())
        .await
        .expect("first reserve");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let ledger = ledger.clone();
            let first = first.clone();
            tokio::spawn(async move {
                match i % 5 {
                    0 => {
                        let err = ledger
                            .reserve("acme", "dup", micros(100), later())
                            .await
                            .expect_err("a reused request id is refused");
                        assert!(matches!(err, ReserveError::DuplicateRequest(_)), "{err}");
                        0
                    }
                    1 => {
                        let mut ghost = first.clone();
                        ghost.request_id = format!("ghost_{i}");
                        let err = ledger
                            .settle(&ghost, Charge::new(micros(5), "m"))
                            .await
                            .expect_err("no such reservation");
                        assert!(matches!(err, LedgerError::UnknownReservation(_)), "{err}");
                        0
                    }
                    2 => {
                        let err = ledger
                            .reserve("acme", &format!("big_{i}"), micros(10_000_000), later())
                            .await
                            .expect_err("more than the balance");
                        assert!(matches!(err, ReserveError::Insufficient { .. }), "{err}");
                        0
                    }
                    _ => {
                        let r = ledger
                            .reserve("acme", &format!("ok_{i}"), micros(1_000), later())
                            .await
                            .expect("reserve");
                        ledger
                            .settle(&r, Charge::new(micros(700), "m"))
                            .await
                            .expect("settle");
                        700
                    }
                }
            })
        })
        .collect();
    let mut charged = 0;
    for t in tasks {
        charged += t.await.expect("task");
    }
    assert_eq!(charged, 20 * 700);
    let b = ledger.balance("acme").await.expect("balance");
    assert_eq!(b.balance, micros(1_000_000 - charged));
    assert_eq!(
        b.reserved,
        micros(100),
        "only the first reservation is held"
    );
    assert_eq!(ledger_sum(&*ledger, "acme").await, b.balance.micros());
    let entry = ledger
        .settle(&first, Charge::new(micros(40), "m"))
        .await
        .expect("the first reservation is intact");
    assert_eq!(entry.reserved, micros(100));
}
