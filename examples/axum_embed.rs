//! Put key auth, rate limits and prepaid balances in front of a `/v1/messages` relay
//! route of an existing axum app; its other routes stay untouched.
//!
//! ```text
//! /hello        your handler, as before
//! /v1/messages  Passthrough → RequestMeta → KeyAuth → RateLimit → Balance → relay (hyper-util → upstream)
//! ```
//!
//! A mock upstream stands in for the API. The example issues three keys (a funded
//! account, a key limited to 2 requests a minute, an account with no balance), serves
//! the app on a free port and calls it.
//!
//! Run with `cargo run --example axum_embed`.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate::auth::NewKey;
use tollgate::balance::Amount;
use tollgate::core::Limits;
use tollgate::mock::{MockOptions, MockServer};
use tollgate::prelude::*; // the layers and ServiceBuilderExt
use tollgate::ratelimit::RateLimitConfig;
use tower::ServiceBuilder;

const MESSAGE: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":256,"messages":[{"role":"user","content":"Hello"}]}"#;

/// The key this server uses upstream; clients never see it.
const UPSTREAM_KEY: &str = "sk-ant-upstream-example";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let upstream = MockServer::start(MockOptions::new()).await?;

    // Keys and balances (in memory here; SQLite/PostgreSQL stores implement the same traits).
    let keys = Arc::new(MemoryKeyStore::new());
    let ledger = Arc::new(MemoryLedger::new());
    for account in ["acme", "broke"] {
        keys.create_account(account).await?;
        ledger.open_account(account, "USD").await?;
    }
    ledger
        .topup("acme", Amount::parse("5.00")?, "welcome")
        .await?;
    let (_, acme) = keys.create(NewKey::new("acme").name("app")).await?;
    let limits = Limits {
        rpm: Some(2),
        ..Limits::default()
    };
    let (_, limited) = keys
        .create(NewKey::new("acme").name("batch").limits(limits))
        .await?;
    let (_, broke) = keys.create(NewKey::new("broke")).await?;

    // The relay: forwards the checked request to the upstream with the server's own key.
    let http = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let base: Uri = upstream.url().parse()?;
    let relay =
        tower::service_fn(move |req: Request<Body>| forward(http.clone(), base.clone(), req));

    let messages = ServiceBuilder::new()
        .passthrough() // gateway errors as API envelopes; upstream errors byte for byte
        .request_meta() // 413 / 400 before anything else; RequestMeta for the layers below
        .key_auth(keys.clone()) // 401 / 403; Principal { key_id, account_id, limits }
        .api_rate_limit(RateLimitLayer::from_config(&RateLimitConfig::default())?) // key's own limits
        .balance(ledger.clone(), PriceTable::default()) // 402 unless the worst case is covered
        .service(relay);

    // The existing app, plus one relay route.
    let app = Router::new()
        .route("/hello", get(|| async { "hello from my app\n" }))
        .route_service("/v1/messages", messages);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("app on {url}, upstream mock on {}", upstream.url());

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    let res = client.get(format!("{url}/hello").parse()?).await?;
    let status = res.status();
    let text = String::from_utf8(res.into_body().collect().await?.to_bytes().to_vec())?;
    println!(
        "GET  /hello        no key    → {} {}",
        status.as_u16(),
        text.trim()
    );
    assert_eq!(
        (status.as_u16(), text.as_str()),
        (200, "hello from my app\n")
    );

    let (status, json, _) = post(&client, &url, Some(acme.expose())).await?;
    assert_eq!(status, 200);
    let cost = settled(&ledger, "acme").await?;
    println!(
        "POST /v1/messages  acme key  → {status} {}, {} output tokens; acme charged ${cost}",
        json["type"].as_str().unwrap_or("?"),
        json["usage"]["output_tokens"]
    );
    let usage = Usage {
        input: json["usage"]["input_tokens"].as_u64().unwrap_or_default(),
        output: json["usage"]["output_tokens"].as_u64().unwrap_or_default(),
        ..Usage::default()
    };
    assert_eq!(
        cost,
        PriceTable::default().cost("claude-sonnet-4-6", "acme", &usage)?
    );
    let upstream_key = upstream.received()[0]
        .header("x-api-key")
        .map(str::to_owned);
    assert_eq!(
        upstream_key.as_deref(),
        Some(UPSTREAM_KEY),
        "the client key never goes upstream"
    );

    let (status, json, _) = post(&client, &url, None).await?;
    println!(
        "POST /v1/messages  no key    → {status} {}",
        describe(&json)
    );
    assert_eq!(status, 401);

    let (status, json, _) = post(&client, &url, Some(broke.expose())).await?;
    println!(
        "POST /v1/messages  broke key → {status} {}",
        describe(&json)
    );
    assert_eq!(status, 402);
    assert_eq!(json["error"]["type"], "billing_error");

    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(post(&client, &url, Some(limited.expose())).await?.0);
    }
    let (status, json, retry_after) = post(&client, &url, Some(limited.expose())).await?;
    println!(
        "POST /v1/messages  rpm=2 key → {statuses:?} then {status} {}{retry_after}",
        describe(&json)
    );
    assert_eq!((statuses.as_slice(), status), ([200, 200].as_slice(), 429));
    assert_eq!(
        upstream.request_count(),
        3,
        "refused requests never reached the upstream"
    );
    Ok(())
}

/// Send the request to `base` with the server's key, streaming the answer back.
async fn forward(
    client: Client<HttpConnector, Body>,
    base: Uri,
    req: Request<Body>,
) -> Result<Response<Body>, hyper_util::client::legacy::Error> {
    let (mut parts, body) = req.into_parts();
    let mut uri = base.into_parts();
    uri.path_and_query = parts.uri.path_and_query().cloned();
    parts.uri = Uri::from_parts(uri).expect("base URL and path make a URI");
    parts.headers.remove(HOST); // the client's Host is ours, not the upstream's
    parts.headers.remove(CONTENT_LENGTH); // the body was re-read; hyper sets it again
    parts
        .headers
        .insert("x-api-key", http::HeaderValue::from_static(UPSTREAM_KEY));
    let res = client.request(Request::from_parts(parts, body)).await?;
    Ok(res.map(Body::new))
}

/// `POST /v1/messages` with an optional key: status, JSON body and ` (retry-after N s)`.
async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    key: Option<&str>,
) -> Result<(u16, serde_json::Value, String), Box<dyn Error>> {
    let mut req = Request::post(format!("{url}/v1/messages"))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01");
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    let res = client.request(req.body(Full::from(MESSAGE))?).await?;
    let status = res.status().as_u16();
    let retry_after = match res.headers().get("retry-after") {
        Some(v) => format!(" (retry-after {} s)", v.to_str()?),
        None => String::new(),
    };
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body)?, retry_after))
}

/// `error.type: message` of an error envelope.
fn describe(json: &serde_json::Value) -> String {
    let error = &json["error"];
    format!(
        "{}: {}",
        error["type"].as_str().unwrap_or("?"),
        error["message"].as_str().unwrap_or("?")
    )
}

/// What `account` was charged once its open reservation is settled (a spawned task
/// settles when the response body ends).
async fn settled(ledger: &MemoryLedger, account: &str) -> Result<Amount, Box<dyn Error>> {
    for _ in 0..200 {
        let balance = ledger.balance(account).await?;
        if balance.reserved.micros() == 0 {
            let charge = Amount::parse("5.00")?.micros() - balance.balance.micros();
            return Ok(Amount::from_micros(charge));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("the reservation was not settled within 2 s".into())
}
