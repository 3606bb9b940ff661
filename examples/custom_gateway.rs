//! A gateway assembled by hand from the layers, with your own key store and price table.
//!
//! ```text
//! Passthrough → RequestMeta → KeyAuth(EnvKeys) → RateLimit → Balance(house prices)
//!   → Fallback → Retry → Upstreams (the gateway's upstream client) → mock upstream
//! ```
//!
//! - `EnvKeys` implements only `KeyLookup` (what `KeyAuthLayer` needs; `KeyStore` adds the
//!   admin methods the `tollgate keys` commands use) over keys read once at start from
//!   `TOLLGATE_EXAMPLE_KEYS` (`account=key,account=key`; a built-in list when unset), kept
//!   only as SHA-256 hashes. The keys are in the house's own format, not `tg-…`, so the
//!   store says `KeyFormat::Any`: every cleanly typed key reaches its lookup. Issuing or
//!   revoking a key means changing the list and restarting.
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
    AccountStatus, BoxFuture, KeyFormat, KeyHash, KeyLookup, KeyRecord, KeyStatus, StoreError,
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
const BUILT_IN_KEYS: &str = "acme=house_acme.7Hq2mV9x,research=house_research.Zp41cW8d";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let upstream = MockServer::start(MockOptions::new()).await?;

    let spec = std::env::var("TOLLGATE_EXAMPLE_KEYS").unwrap_or_else(|_| BUILT_IN_KEYS.into());
    let keys = EnvKeys::parse(&spec)?;
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

    // A key that is not in the list: the store was asked and does not know it.
    let (status, json) = post(&client, &url, "house_acme.guessed", "house-small").await?;
    println!("unknown  house-small       → {status} {}", describe(&json));
    assert_eq!(status, 401);
    // A key with a stray newline escape (copied from a quoted string) is diagnosed
    // before any lookup, whatever the store's key format.
    let (status, json) = post(&client, &url, &format!("{acme}\\n"), "house-small").await?;
    println!("acme\\n   house-small       → {status} {}", describe(&json));
    assert_eq!(status, 401);
    assert_eq!(
        upstream.request_count(),
        2,
        "refusals never reach the upstream"
    );
    Ok(())
}

// ===== EnvKeys =====

/// A lookup-only key store over keys fixed at start; only their hashes are kept.
#[derive(Debug)]
struct EnvKeys {
    records: Vec<KeyRecord>,
}

impl EnvKeys {
    /// `account=key` pairs separated by commas; a key is any printable ASCII without
    /// spaces (`KeyAuthLayer` refuses broken ones before asking the store).
    fn parse(spec: &str) -> Result<EnvKeys, String> {
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
            if key.len() < 16 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "TOLLGATE_EXAMPLE_KEYS entry {} (account {account}): a key is at least 16 printable ASCII characters without spaces",
                    i + 1
                ));
            }
            let research = account == "research";
            records.push(KeyRecord {
                id: i64::try_from(i + 1).map_err(|e| e.to_string())?,
                account_id: account.to_owned(),
                name: Some(format!("{account}-static")),
                // What `keys list`-style output would show: never the whole key.
                prefix: key.chars().take(6).collect(),
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
        Ok(EnvKeys { records })
    }
}

impl KeyLookup for EnvKeys {
    fn lookup<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>> {
        // KeyHash equality is constant-time.
        let found = self.records.iter().find(|r| r.hash == *hash).cloned();
        Box::pin(async move { Ok(found) })
    }

    // Not `tg-…` keys: let every cleanly typed key reach `lookup` (the default,
    // `KeyFormat::Issued`, refuses other shapes before asking the store).
    fn key_format(&self) -> KeyFormat {
        KeyFormat::Any
    }

    // `touch` (recording last use) keeps its default: nothing to record here.
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
