//! The OpenAI client path: `POST /v1/chat/completions` through the gateway, with every
//! error in OpenAI's shape (`{"error":{"message","type","param","code"}}`).
//!
//! The gateway (`tollgate::gateway::Gateway`, the same one `tollgate serve` runs) starts
//! in front of a mock upstream, with an in-memory key store and ledger. Requests are sent
//! the way the OpenAI SDKs send them (`Authorization: Bearer <key>`); the example shows
//! a success, the gateway's own 400 and 401, and an upstream 429 relayed byte for byte.
//!
//! Run with `cargo run --example openai_compat`.

use std::error::Error;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate::auth::NewKey;
use tollgate::balance::Amount;
use tollgate::gateway::{Config, Gateway, Stores, UpstreamConfig};
use tollgate::mock::{MockOptions, MockServer};
use tollgate::prelude::*;

const CHAT: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let upstream = MockServer::start(MockOptions::new()).await?;

    let keys = Arc::new(MemoryKeyStore::new());
    keys.create_account("acme").await?;
    let (_, key) = keys.create(NewKey::new("acme").name("openai-sdk")).await?;
    let ledger = Arc::new(MemoryLedger::new());
    ledger.open_account("acme", "USD").await?;
    ledger
        .topup("acme", Amount::parse("5.00")?, "welcome")
        .await?;

    let mut config = Config::with_upstreams(vec![UpstreamConfig::new(
        "mock",
        &upstream.url(),
        "sk-ant-upstream-example",
    )]);
    config.listen = "127.0.0.1:0".parse()?;
    let stores = Stores {
        keys: Some(keys),
        ledger: Some(ledger),
    };
    let gateway = Gateway::start_with(config, stores).await?;
    let base = format!("{}/v1", gateway.url());
    println!(
        "gateway: OPENAI_BASE_URL={base} OPENAI_API_KEY={}…",
        &key.expose()[..7]
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let bearer = format!("Bearer {}", key.expose());

    // 1. A chat completion.
    let (status, origin, _, json) = post(&client, &base, &bearer, CHAT, &[]).await?;
    let content = json["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    println!(
        "200 {} from {origin}: {:?}… ({} total tokens)",
        json["object"].as_str().unwrap_or("?"),
        content
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" "),
        json["usage"]["total_tokens"]
    );
    assert_eq!(
        (status, json["object"].as_str()),
        (200, Some("chat.completion"))
    );

    // 2. The gateway's own 400: the body has no messages. OpenAI shape, marked gateway.
    let no_messages = r#"{"model":"claude-sonnet-4-6"}"#;
    let (status, origin, _, json) = post(&client, &base, &bearer, no_messages, &[]).await?;
    println!("{status} from {origin}: {}", openai_error(&json));
    assert_eq!((status, origin.as_str()), (400, "gateway"));
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert!(
        json.get("type").is_none(),
        "no Anthropic envelope on the OpenAI path"
    );

    // 3. The gateway's own 401: an OpenAI key sent by mistake.
    let wrong = "Bearer sk-proj-not-for-this-gateway";
    let (status, origin, _, json) = post(&client, &base, wrong, CHAT, &[]).await?;
    println!("{status} from {origin}: {}", openai_error(&json));
    assert_eq!((status, origin.as_str()), (401, "gateway"));

    // 4. The upstream's 429, relayed byte for byte with its retry-after (30 s: longer
    //    than the gateway waits, so it is handed to the client to decide).
    let scripted = [("x-mock-status", "429"), ("x-mock-retry-after", "30")];
    let (status, origin, retry_after, json) =
        post(&client, &base, &bearer, CHAT, &scripted).await?;
    println!(
        "{status} from {origin} (retry-after {retry_after}): {}",
        openai_error(&json)
    );
    assert_eq!(
        (status, origin.as_str(), retry_after.as_str()),
        (429, "upstream", "30")
    );
    assert_eq!(json["error"]["code"], "rate_limit_exceeded");

    gateway.shutdown().await?;
    Ok(())
}

/// `POST {base}/chat/completions`: status, `x-tollgate-origin`, `retry-after`, JSON body.
async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    authorization: &str,
    body: &'static str,
    headers: &[(&str, &str)],
) -> Result<(u16, String, String, serde_json::Value), Box<dyn Error>> {
    let mut req = Request::post(format!("{base}/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", authorization);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client.request(req.body(Full::from(body))?).await?;
    let header = |name: &str| {
        let value = res.headers().get(name).and_then(|v| v.to_str().ok());
        value.unwrap_or("-").to_owned()
    };
    let (origin, retry_after) = (header("x-tollgate-origin"), header("retry-after"));
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await?.to_bytes();
    Ok((status, origin, retry_after, serde_json::from_slice(&bytes)?))
}

/// `type / code: message` of an OpenAI error body.
fn openai_error(json: &serde_json::Value) -> String {
    let error = &json["error"];
    format!(
        "{} / {}: {}",
        error["type"].as_str().unwrap_or("?"),
        error["code"].as_str().unwrap_or("null"),
        error["message"].as_str().unwrap_or("?")
    )
}
