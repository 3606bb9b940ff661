//! Balances and rate limits in the gateway, over real sockets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tollgate::auth::{KeyStore, MemoryKeyStore, NewKey};
use tollgate::balance::{Amount, Ledger, MemoryLedger};
use tollgate::core::Limits;
use tollgate::gateway::{Gateway, Stores, UpstreamConfig};

use common::{Client, MESSAGE, body_json, config, start_mock, start_with_keys};

/// A gateway whose only account holds `balance`.
async fn gateway_with_balance(
    mock_url: &str,
    balance: &str,
) -> (Gateway, Client, Arc<MemoryLedger>) {
    let keys = Arc::new(MemoryKeyStore::new());
    keys.create_account("acct").await.expect("account");
    let (_, secret) = keys.create(NewKey::new("acct")).await.expect("key");
    let ledger = Arc::new(MemoryLedger::new());
    ledger.open_account("acct", "USD").await.expect("open");
    ledger
        .topup("acct", Amount::parse(balance).expect("amount"), "test")
        .await
        .expect("topup");
    let stores = Stores {
        keys: Some(keys as Arc<dyn KeyStore>),
        ledger: Some(ledger.clone() as Arc<dyn Ledger>),
    };
    let gw = Gateway::start_with(
        config(UpstreamConfig::new("m", mock_url, common::UPSTREAM_KEY)),
        stores,
    )
    .await
    .expect("gateway");
    (gw, Client::with_key(secret.expose()), ledger)
}

#[tokio::test]
async fn a_served_request_is_charged_exactly_its_reported_usage() {
    let mock = start_mock().await;
    let (gw, client, ledger) = gateway_with_balance(&mock.url(), "1.00").await;
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[("x-mock-output-tokens", "16")],
            MESSAGE,
        )
        .await;
    assert_eq!(res.status(), 200);
    let json = body_json(res).await;
    let input = json["usage"]["input_tokens"].as_u64().expect("input");
    let output = json["usage"]["output_tokens"].as_u64().expect("output");
    // Sonnet 4.6: $3 / $15 per million tokens, rounded up to the micro-dollar.
    let expected = (input * 3_000_000 + output * 15_000_000).div_ceil(1_000_000) as i64;
    let settled = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let b = ledger.balance("acct").await.expect("balance");
            if b.reserved == Amount::ZERO && b.balance != Amount::parse("1.00").expect("amount") {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("settled within 5 s");
    assert_eq!(1_000_000 - settled.balance.micros(), expected);
}

#[tokio::test]
async fn an_account_that_cannot_afford_the_worst_case_gets_a_402_that_says_what_to_do() {
    let mock = start_mock().await;
    let (gw, client, ledger) = gateway_with_balance(&mock.url(), "0.000100").await;
    let res = client.post(&gw.url(), "/v1/messages", &[], MESSAGE).await;
    assert_eq!(res.status(), 402);
    assert_eq!(res.headers()["x-should-retry"], "false");
    assert_eq!(res.headers()["x-tollgate-origin"], "gateway");
    let json = body_json(res).await;
    assert_eq!(json["error"]["type"], "billing_error");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("insufficient balance") && message.contains("top up"),
        "{message}"
    );
    assert_eq!(mock.request_count(), 0, "refused before the upstream");
    let b = ledger.balance("acct").await.expect("balance");
    assert_eq!((b.balance.micros(), b.reserved.micros()), (100, 0));
}

#[tokio::test]
async fn an_upstream_error_releases_the_reservation_without_a_charge() {
    let mock = start_mock().await;
    let (gw, client, ledger) = gateway_with_balance(&mock.url(), "1.00").await;
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[("x-mock-status", "529")],
            MESSAGE,
        )
        .await;
    assert_eq!(res.status(), 529);
    let _ = res.into_body().collect().await;
    let released = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let b = ledger.balance("acct").await.expect("balance");
            if b.reserved == Amount::ZERO {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("released within 5 s");
    assert_eq!(released.balance, Amount::parse("1.00").expect("amount"));
}

#[tokio::test]
async fn a_key_over_its_rpm_gets_a_429_with_retry_after_and_ratelimit_headers() {
    let mock = start_mock().await;
    let (gw, _client, keys) = start_with_keys(config(UpstreamConfig::new(
        "m",
        &mock.url(),
        common::UPSTREAM_KEY,
    )))
    .await;
    let (_, secret) = keys
        .create(NewKey::new(common::ACCOUNT).limits(Limits {
            rpm: Some(2),
            ..Limits::default()
        }))
        .await
        .expect("key");
    let client = Client::with_key(secret.expose());
    for _ in 0..2 {
        let res = client.post(&gw.url(), "/v1/messages", &[], MESSAGE).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["anthropic-ratelimit-requests-limit"], "2");
        let _ = res.into_body().collect().await;
    }
    let res = client.post(&gw.url(), "/v1/messages", &[], MESSAGE).await;
    assert_eq!(res.status(), 429);
    let h = res.headers().clone();
    assert_eq!(h["x-tollgate-origin"], "gateway");
    let retry_after: u64 = h["retry-after"]
        .to_str()
        .unwrap_or_default()
        .parse()
        .expect("seconds");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert!(h.contains_key("retry-after-ms"));
    assert_eq!(h["anthropic-ratelimit-requests-remaining"], "0");
    let json = body_json(res).await;
    assert_eq!(json["error"]["type"], "rate_limit_error");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("requests per minute"), "{message}");
    assert_eq!(mock.request_count(), 2);
}
