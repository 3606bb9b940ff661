//! A gateway assembled by hand from the layers, with your own key store and price table.
//!
//! ```text
//! Passthrough → RequestMeta → KeyAuth(StaticKeyStore) → RateLimit → Balance(house prices)
//!   → Fallback → Retry → Upstreams (the gateway's upstream client) → mock upstream
//! ```
//!
//! - `StaticKeyStore` implements `KeyStore` over a fixed list of keys read once at start
//!   from `TOLLGATE_EXAMPLE_KEYS` (`account=tg-…,account=tg-…`; a built-in list when
//!   unset) and kept only as SHA-256 hashes. It is read-only: issuing or revoking a key
//!   means changing the list and restarting.
//! - The price table knows only the house models, with a discount for one account.
//!
//! Run with `cargo run --example custom_gateway`.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate::auth::{
    Account, AccountStatus, BoxFuture, KEY_LEN, KEY_PREFIX, KeyHash, KeyRecord, KeyStatus,
    KeyStore, NewKey, SecretKey, StoreError, StoreErrorKind,
};
use tollgate::balance::{Amount, ModelPrice};
use tollgate::core::{Limits, Usage};
use tollgate::fallback::{FallbackConfig, ModelRoutes};
use tollgate::gateway::upstream::Upstreams;
use tollgate::gateway::{Metrics, UpstreamConfig};
use tollgate::mock::{MockOptions, MockServer};
use tollgate::prelude::*;
use tollgate::ratelimit::RateLimitConfig;
use tollgate::retry::RetryConfig;
use tower::ServiceBuilder;

/// The keys when `TOLLGATE_EXAMPLE_KEYS` is unset (never ship keys in code: this is a demo).
const BUILT_IN_KEYS: &str =
    "acme=tg-AcmeExampleKey000000000000000001,research=tg-ResearchExampleKey00000000000002";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let upstream = MockServer::start(MockOptions::new()).await?;

    let spec = std::env::var("TOLLGATE_EXAMPLE_KEYS").unwrap_or_else(|_| BUILT_IN_KEYS.into());
    let keys = StaticKeyStore::parse(&spec)?;
    println!(
        "key store: {} keys, held as SHA-256 hashes only",
        keys.records.len()
    );

    // House models only: $0.50 / $2.00 per million input / output tokens; the research
    // account pays half.
    let prices = PriceTable::empty()
        .with_model(
            "house-large",
            ModelPrice::from_micros(500_000, 2_000_000, 0, 0, 50_000),
        )
        .with_model(
            "house-small",
            ModelPrice::from_micros(100_000, 400_000, 0, 0, 10_000),
        )
        .with_account_percent("research", 50);
    let ledger = Arc::new(MemoryLedger::new());
    for account in ["acme", "research"] {
        ledger.open_account(account, "USD").await?;
        ledger
            .topup(account, Amount::parse("1.00")?, "welcome")
            .await?;
    }

    // The stack, outermost first, in the gateway's order (tollgate::gateway::stack).
    let mut routes = FallbackConfig::default();
    routes.models.insert(
        "*".into(),
        ModelRoutes {
            routes: vec!["house".into()],
            fallback_models: vec![],
        },
    );
    let upstreams = Upstreams::new(
        &[UpstreamConfig::new(
            "house",
            &upstream.url(),
            "sk-ant-upstream-example",
        )],
        Metrics::new(),
    )?;
    let retry = RetryLayer::new(RetryConfig::default());
    let balance = BalanceLayer::new(ledger.clone(), prices.clone());
    let relay = ServiceBuilder::new()
        .layer(PassthroughLayer::new())
        .layer(RequestMetaLayer::new())
        .layer(KeyAuthLayer::new(keys))
        .layer(RateLimitLayer::from_config(&RateLimitConfig::default())?)
        .layer(balance.clone())
        .layer(FallbackLayer::new(routes).budget(retry.retry_budget()))
        .layer(retry)
        .service(upstreams);
    let app = Router::new().route_service("/v1/messages", relay);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/messages", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("gateway on {url}, upstream mock on {}", upstream.url());

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (acme, research) = (key_of(&spec, "acme")?, key_of(&spec, "research")?);

    // 200 at the house price; the research account pays half.
    for (account, key, model) in [
        ("acme", &acme, "house-large"),
        ("research", &research, "house-small"),
    ] {
        let (status, json) = post(&client, &url, key, model).await?;
        assert_eq!(status, 200, "{json}");
        balance.idle().await; // settlement runs in a spawned task once the body ended
        let charged = ledger.history(account, 1).await?[0].cost();
        let usage = Usage {
            input: json["usage"]["input_tokens"].as_u64().unwrap_or_default(),
            output: json["usage"]["output_tokens"].as_u64().unwrap_or_default(),
            ..Usage::default()
        };
        println!(
            "{account:<8} {model:<17} → {status}, {} in / {} out tokens, charged ${charged}",
            usage.input, usage.output
        );
        assert_eq!(charged, prices.cost(model, account, &usage)?);
    }

    // The store scopes the research key to house-small.
    let (status, json) = post(&client, &url, &research, "house-large").await?;
    println!("research house-large       → {status} {}", describe(&json));
    assert_eq!(status, 403);

    // A model outside the house price table is refused before the upstream sees it.
    let (status, json) = post(&client, &url, &acme, "claude-sonnet-4-6").await?;
    println!("acme     claude-sonnet-4-6 → {status} {}", describe(&json));
    assert_eq!(status, 400);

    // A well-formed key that is not in the list.
    let stranger = format!("{KEY_PREFIX}{}", "Z".repeat(KEY_LEN - KEY_PREFIX.len()));
    let (status, json) = post(&client, &url, &stranger, "house-small").await?;
    println!("unknown  house-small       → {status} {}", describe(&json));
    assert_eq!(status, 401);
    assert_eq!(
        upstream.request_count(),
        2,
        "refusals never reach the upstream"
    );
    Ok(())
}

// ===== StaticKeyStore =====

/// A read-only [`KeyStore`] over keys fixed at start; only their hashes are kept.
#[derive(Debug)]
struct StaticKeyStore {
    records: Vec<KeyRecord>,
}

impl StaticKeyStore {
    /// `account=key` pairs separated by commas. Keys have the gateway's format (`tg-` and
    /// 32 letters or digits), since `KeyAuthLayer` checks it before asking the store.
    fn parse(spec: &str) -> Result<StaticKeyStore, String> {
        let now = SystemTime::now();
        let mut records = Vec::new();
        for (i, pair) in spec
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let (account, key) = pair.split_once('=').ok_or_else(|| {
                format!("TOLLGATE_EXAMPLE_KEYS entry {}: write account=key", i + 1)
            })?;
            let well_formed = key.len() == KEY_LEN
                && key.starts_with(KEY_PREFIX)
                && key[KEY_PREFIX.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric());
            if !well_formed {
                return Err(format!(
                    "TOLLGATE_EXAMPLE_KEYS entry {} (account {account}): a key is {KEY_PREFIX} and {} letters or digits",
                    i + 1,
                    KEY_LEN - KEY_PREFIX.len()
                ));
            }
            let research = account == "research";
            records.push(KeyRecord {
                id: i64::try_from(i + 1).map_err(|e| e.to_string())?,
                account_id: account.to_owned(),
                name: Some(format!("{account}-static")),
                prefix: key[..tollgate::auth::DISPLAY_PREFIX_LEN].to_owned(),
                hash: KeyHash::of(key),
                // Store-defined scopes and limits: research may only use the small model.
                allowed_models: research.then(|| vec!["house-small".to_owned()]),
                limits: Limits {
                    rpm: Some(60),
                    ..Limits::default()
                },
                status: KeyStatus::Active,
                account_status: AccountStatus::Active,
                created_at: now,
                expires_at: None,
                last_used_at: None,
            });
        }
        Ok(StaticKeyStore { records })
    }

    fn read_only<T: Send + 'static>() -> BoxFuture<'static, Result<T, StoreError>> {
        Box::pin(async {
            Err(StoreError::new(
                StoreErrorKind::InvalidInput,
                "this key store is read-only: edit TOLLGATE_EXAMPLE_KEYS and restart",
            ))
        })
    }
}

impl KeyStore for StaticKeyStore {
    fn lookup<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>> {
        // KeyHash equality is constant-time.
        let found = self.records.iter().find(|r| r.hash == *hash).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn key(&self, key_id: i64) -> BoxFuture<'_, Result<Option<KeyRecord>, StoreError>> {
        let found = self.records.iter().find(|r| r.id == key_id).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn create(&self, _new: NewKey) -> BoxFuture<'_, Result<(KeyRecord, SecretKey), StoreError>> {
        Self::read_only()
    }

    fn list<'a>(
        &'a self,
        account: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<KeyRecord>, StoreError>> {
        let keys = self
            .records
            .iter()
            .filter(|r| account.is_none_or(|a| r.account_id == a))
            .cloned()
            .collect();
        Box::pin(async move { Ok(keys) })
    }

    fn disable(&self, _key_id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Self::read_only()
    }

    fn set_limits(&self, _key_id: i64, _limits: Limits) -> BoxFuture<'_, Result<(), StoreError>> {
        Self::read_only()
    }

    fn touch(&self, _key_id: i64, _at: SystemTime) -> BoxFuture<'_, Result<(), StoreError>> {
        // Last use is not recorded by this store.
        Box::pin(async { Ok(()) })
    }

    fn create_account<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<Account, StoreError>> {
        Self::read_only()
    }

    fn suspend_account<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Self::read_only()
    }

    fn resume_account<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Self::read_only()
    }

    fn account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Account>, StoreError>> {
        let found = self
            .records
            .iter()
            .find(|r| r.account_id == id)
            .map(|r| Account {
                id: r.account_id.clone(),
                status: r.account_status,
                created_at: r.created_at,
            });
        Box::pin(async move { Ok(found) })
    }
}

// ===== helpers =====

/// The key of `account` in the `account=key,…` list (the client side of this demo).
fn key_of(spec: &str, account: &str) -> Result<String, String> {
    spec.split(',')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(a, _)| *a == account)
        .map(|(_, key)| key.to_owned())
        .ok_or_else(|| format!("TOLLGATE_EXAMPLE_KEYS has no key for account {account}"))
}

async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    key: &str,
    model: &str,
) -> Result<(u16, serde_json::Value), Box<dyn Error>> {
    let body = serde_json::json!({
        "model": model,
        "max_tokens": 512,
        "messages": [{"role": "user", "content": "Hello"}],
    });
    let req = Request::post(url)
        .header("content-type", "application/json")
        .header("x-api-key", key)
        .body(Full::from(serde_json::to_vec(&body)?))?;
    let res = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await??;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes)?))
}

fn describe(json: &serde_json::Value) -> String {
    let error = &json["error"];
    format!(
        "{}: {}",
        error["type"].as_str().unwrap_or("?"),
        error["message"].as_str().unwrap_or("?")
    )
}
