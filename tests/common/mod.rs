//! Helpers shared by the integration tests: start a mock and a gateway on 127.0.0.1:0,
//! and a small HTTP/1.1 client.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;

use tollgate::auth::{KeyStore, MemoryKeyStore, NewKey};
use tollgate::balance::{Amount, Ledger, MemoryLedger};
use tollgate::gateway::{Config, Gateway, Stores, UpstreamConfig};
use tollgate::mock::{MockOptions, MockServer};

/// The key the gateway sends upstream in tests.
pub const UPSTREAM_KEY: &str = "sk-ant-upstream-test-key";

/// The wire reference's minimal request.
pub const MESSAGE: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":1024,"system":"You are terse.","metadata":{"user_id":"u_5f1d0c2a"},"messages":[{"role":"user","content":"Hello, Claude"}]}"#;

/// The same, streamed.
pub const STREAM_MESSAGE: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Hello, Claude"}]}"#;

pub async fn start_mock() -> MockServer {
    MockServer::start(MockOptions::new())
        .await
        .expect("mock starts")
}

pub fn config(upstream: UpstreamConfig) -> Config {
    let mut config = Config::with_upstreams(vec![upstream]);
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.shutdown_grace_ms = 5_000;
    // Relay tests look at single upstream answers; tests/resilience.rs turns retries on.
    config.retry.max_attempts = 1;
    config
}

/// The account every test key spends from.
pub const ACCOUNT: &str = "acct-test";

/// A memory ledger where the test account holds $1000.
pub async fn funded_ledger() -> Arc<dyn Ledger> {
    let ledger = Arc::new(MemoryLedger::new());
    ledger.open_account(ACCOUNT, "USD").await.expect("open");
    ledger
        .topup(ACCOUNT, Amount::parse("1000.00").expect("amount"), "tests")
        .await
        .expect("topup");
    ledger
}

/// A gateway with an in-memory key store holding one account and one key; the client
/// sends that key.
pub async fn start(config: Config) -> (Gateway, Client) {
    let keys = Arc::new(MemoryKeyStore::new());
    keys.create_account(ACCOUNT).await.expect("account");
    let (_, secret) = keys
        .create(NewKey::new(ACCOUNT).name("test"))
        .await
        .expect("key");
    let stores = Stores {
        keys: Some(keys as Arc<dyn KeyStore>),
        ledger: Some(funded_ledger().await),
    };
    let gw = Gateway::start_with(config, stores)
        .await
        .expect("gateway starts");
    (gw, Client::with_key(secret.expose()))
}

/// Like [`start`], also returning the key store to issue more keys.
pub async fn start_with_keys(config: Config) -> (Gateway, Client, Arc<MemoryKeyStore>) {
    let keys = Arc::new(MemoryKeyStore::new());
    keys.create_account(ACCOUNT).await.expect("account");
    let (_, secret) = keys
        .create(NewKey::new(ACCOUNT).name("test"))
        .await
        .expect("key");
    let stores = Stores {
        keys: Some(keys.clone() as Arc<dyn KeyStore>),
        ledger: Some(funded_ledger().await),
    };
    let gw = Gateway::start_with(config, stores)
        .await
        .expect("gateway starts");
    (gw, Client::with_key(secret.expose()), keys)
}

pub async fn gateway(upstream: UpstreamConfig) -> (Gateway, Client) {
    start(config(upstream)).await
}

pub async fn gateway_for(mock: &MockServer) -> (Gateway, Client) {
    gateway(UpstreamConfig::new("mock", &mock.url(), UPSTREAM_KEY)).await
}

pub async fn body_json(res: http::Response<Incoming>) -> serde_json::Value {
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    key: Option<String>,
}

impl Client {
    /// A client that sends no key.
    pub fn anonymous() -> Self {
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
            key: None,
        }
    }

    /// A client that sends `key` in `x-api-key` unless a request sets its own credential.
    pub fn with_key(key: &str) -> Self {
        Client {
            key: Some(key.to_string()),
            ..Client::anonymous()
        }
    }

    /// The key this client sends.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or_default()
    }

    fn credential(&self, headers: &[(&str, &str)]) -> Option<&str> {
        let own = headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("x-api-key") || k.eq_ignore_ascii_case("authorization")
        });
        if own { None } else { self.key.as_deref() }
    }

    pub async fn post(
        &self,
        base: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> http::Response<Incoming> {
        let mut req =
            http::Request::post(format!("{base}{path}")).header("content-type", "application/json");
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("anthropic-version"))
        {
            req = req.header("anthropic-version", "2023-06-01");
        }
        if let Some(key) = self.credential(headers) {
            req = req.header("x-api-key", key);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .expect("request");
        self.inner.request(req).await.expect("gateway answers")
    }

    pub async fn get(&self, base: &str, path: &str) -> http::Response<Incoming> {
        let mut req = http::Request::get(format!("{base}{path}"));
        if let Some(key) = &self.key {
            req = req.header("x-api-key", key);
        }
        let req = req.body(Full::new(Bytes::new())).expect("request");
        self.inner.request(req).await.expect("gateway answers")
    }
}
