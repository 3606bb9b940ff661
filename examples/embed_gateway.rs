//! The gateway's whole stack inside your own axum app, in one call:
//! `tollgate::server::stack(config)`.
//!
//! ```text
//! /hello, /metrics   your handlers, as before
//! /v1/messages, …    Trace → Metrics → Passthrough → RequestMeta → KeyAuth → RateLimit
//!                    → Balance → Fallback → Retry → upstream client (the gateway's own code)
//! ```
//!
//! Two mock upstreams stand in for the API: `primary` is overloaded (529), so requests
//! fail over to `secondary`. Keys and balances are in memory here; set
//! `database = "postgres://…"` in the config instead and the stack opens them itself.
//! Compare `axum_embed`, which stacks the layers one by one in front of a handler of its
//! own.
//!
//! Run with `cargo run --example embed_gateway`.

use std::error::Error;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate::auth::NewKey;
use tollgate::balance::Amount;
use tollgate::mock::{MockOptions, MockServer};
use tollgate::prelude::*;
use tollgate::server::{ServerConfig, UpstreamConfig};

const MESSAGE: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":256,"messages":[{"role":"user","content":"Hello"}]}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let primary = MockServer::start(
        MockOptions::new()
            .name("primary")
            .default_header("x-mock-status", "529"),
    )
    .await?;
    let secondary = MockServer::start(MockOptions::new().name("secondary")).await?;

    let keys = Arc::new(MemoryKeyStore::new());
    keys.create_account("acme").await?;
    let (_, key) = keys.create(NewKey::new("acme").name("app")).await?;
    let ledger = Arc::new(MemoryLedger::new());
    ledger.open_account("acme", "USD").await?;
    ledger
        .topup("acme", Amount::parse("5.00")?, "welcome")
        .await?;

    // The same configuration as tollgate.toml (minus `listen`), built in code.
    let first = UpstreamConfig::new("primary", &primary.url(), "sk-ant-primary");
    let second = UpstreamConfig::new("secondary", &secondary.url(), "sk-ant-secondary");
    let config = ServerConfig::new()
        .upstream(first) // tried first for every model…
        .upstream(second) // …then this one, as a failover
        .key_store(keys)
        .ledger(ledger.clone());
    let gateway = tollgate::server::stack(config).await?;
    let _reconciler = gateway.spawn_reconciler(); // releases what a crash left reserved
    let metrics = gateway.metrics().clone();
    let render = move || std::future::ready(metrics.render());

    // Your app, plus the gateway's API paths.
    let app = Router::new()
        .route("/hello", get(|| async { "hello from my app\n" }))
        .route("/metrics", get(render)) // the stack's Prometheus metrics
        .merge(gateway.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("app on {url}; upstreams: primary (always 529), secondary");

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (status, headers, body) = send(&client, &url, Some(key.expose())).await?;
    let route = headers
        .get("x-tollgate-route")
        .and_then(|v| v.to_str().ok());
    println!(
        "POST /v1/messages  gateway key → {status}, served by {}, {} attempt(s)",
        route.unwrap_or("-"),
        header(&headers, "x-tollgate-attempts")
    );
    assert_eq!((status, route), (200, Some("secondary")), "{body}");
    assert_eq!(
        secondary.received()[0].header("x-api-key"),
        Some("sk-ant-secondary"),
        "each route's own key goes upstream; the client's never does"
    );

    let (status, _, body) = send(&client, &url, Some("sk-ant-api03-my-own-key")).await?;
    println!(
        "POST /v1/messages  Anthropic key → {status} {}",
        message_of(&body)
    );
    assert_eq!(status, 401);

    let res = client.get(format!("{url}/hello").parse()?).await?;
    println!(
        "GET  /hello                     → {}",
        res.status().as_u16()
    );
    assert_eq!(res.status(), 200);
    let res = client.get(format!("{url}/metrics").parse()?).await?;
    let text = String::from_utf8(res.into_body().collect().await?.to_bytes().to_vec())?;
    let counted = text
        .lines()
        .filter(|l| l.starts_with("tollgate_requests_total{"))
        .count();
    println!("GET  /metrics                   → {counted} request series");
    assert!(counted >= 2, "{text}");
    Ok(())
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    key: Option<&str>,
) -> Result<(u16, http::HeaderMap, String), Box<dyn Error>> {
    let mut req = Request::post(format!("{url}/v1/messages"))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01");
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    let res = client.request(req.body(Full::from(MESSAGE))?).await?;
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, headers, String::from_utf8(body.to_vec())?))
}

fn header(headers: &http::HeaderMap, name: &str) -> String {
    let value = headers.get(name).and_then(|v| v.to_str().ok());
    value.unwrap_or("-").to_owned()
}

fn message_of(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    json["error"]["message"].as_str().unwrap_or(body).to_owned()
}
