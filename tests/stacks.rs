//! `tollgate::server::stack` inside an app's own axum router and `tollgate::client::stack`
//! around a hyper client: real sockets on 127.0.0.1, the mock upstream.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate::auth::{KeyStore, MemoryKeyStore, NewKey};
use tollgate::balance::{Amount, Ledger, MemoryLedger};
use tollgate::client::{ClientConfig, ClientRoute, replayable};
use tollgate::mock::{MockOptions, MockServer};
use tollgate::passthrough::ClientError;
use tollgate::retry::RetryConfig;
use tollgate::server::{ServerConfig, ServerStack, UpstreamConfig};
use tower::{ServiceBuilder, ServiceExt};

const MESSAGE: &str =
    r#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;

type Http = Client<HttpConnector, Full<Bytes>>;

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Serve `app` on a free port; its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn send(client: &Http, req: Request<Full<Bytes>>) -> (u16, http::HeaderMap, String) {
    let res = client.request(req).await.expect("response");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn message(url: &str, key: Option<&str>) -> Request<Full<Bytes>> {
    let mut req =
        Request::post(format!("{url}/v1/messages")).header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    req.body(Full::from(MESSAGE)).expect("request")
}

/// A key store with one account and key, and a ledger funding that account with `funds`.
async fn stores(funds: &str) -> (Arc<MemoryKeyStore>, Arc<MemoryLedger>, String) {
    let keys = Arc::new(MemoryKeyStore::new());
    keys.create_account("acme").await.expect("account");
    let (_, key) = keys.create(NewKey::new("acme")).await.expect("key");
    let ledger = Arc::new(MemoryLedger::new());
    ledger.open_account("acme", "USD").await.expect("open");
    if funds != "0" {
        ledger
            .topup("acme", Amount::parse(funds).expect("amount"), "test")
            .await
            .expect("topup");
    }
    (keys, ledger, key.expose().to_owned())
}

async fn server_stack(
    upstream: &MockServer,
    keys: Arc<MemoryKeyStore>,
    ledger: Arc<MemoryLedger>,
) -> ServerStack {
    let config = ServerConfig::new()
        .upstream(UpstreamConfig::new(
            "mock",
            &upstream.url(),
            "sk-ant-upstream",
        ))
        .key_store(keys)
        .ledger(ledger);
    tollgate::server::stack(config).await.expect("stack")
}

// ===== server::stack =====

#[tokio::test]
async fn server_stack_relays_with_the_upstream_key_and_leaves_other_routes_alone() {
    let upstream = MockServer::start(MockOptions::new()).await.expect("mock");
    let (keys, ledger, key) = stores("5.00").await;
    let gateway = server_stack(&upstream, keys, ledger).await;
    let app = Router::new()
        .route("/hello", get(|| async { "mine\n" }))
        .merge(gateway.router());
    let url = serve(app).await;
    let client = http();

    let (status, headers, body) = send(&client, message(&url, Some(&key))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-tollgate-route"], "mock");
    let received = upstream.received();
    assert_eq!(received[0].header("x-api-key"), Some("sk-ant-upstream"));

    let hello = Request::get(format!("{url}/hello"))
        .body(Full::default())
        .expect("request");
    assert_eq!(send(&client, hello).await.2, "mine\n");
    // The app's own 404 stays axum's (empty), not an API envelope.
    let missing = Request::get(format!("{url}/nope"))
        .body(Full::default())
        .expect("request");
    let (status, headers, body) = send(&client, missing).await;
    assert_eq!((status, body.as_str()), (404, ""));
    assert!(headers.get("x-tollgate-origin").is_none());
}

#[tokio::test]
async fn server_stack_refuses_bad_keys_and_empty_balances_before_the_upstream() {
    let upstream = MockServer::start(MockOptions::new()).await.expect("mock");
    let (keys, ledger, key) = stores("0").await;
    let url = serve(server_stack(&upstream, keys, ledger).await.router()).await;
    let client = http();

    let (status, headers, body) = send(&client, message(&url, Some("sk-ant-api03-mine"))).await;
    assert_eq!(status, 401);
    assert_eq!(headers["x-tollgate-origin"], "gateway");
    assert!(
        body.contains("holds an Anthropic API key (sk-ant-…)"),
        "{body}"
    );
    let (status, _, body) = send(&client, message(&url, Some(&key))).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(upstream.request_count(), 0);
}

#[tokio::test]
async fn server_stack_counts_requests_in_its_metrics() {
    let upstream = MockServer::start(MockOptions::new()).await.expect("mock");
    let (keys, ledger, key) = stores("5.00").await;
    let gateway = server_stack(&upstream, keys, ledger).await;
    let url = serve(gateway.router()).await;
    send(&http(), message(&url, Some(&key))).await;
    let text = gateway.metrics().render();
    assert!(text.contains("status=\"200\""), "{text}");
}

#[tokio::test]
async fn server_stack_defaults_refuse_to_run_as_an_open_relay() {
    let upstream = UpstreamConfig::new("mock", "http://127.0.0.1:9", "sk-ant-upstream");
    let e = tollgate::server::stack(ServerConfig::new())
        .await
        .expect_err("no upstreams");
    assert_eq!(e.key, "upstreams", "{e}");
    let e = tollgate::server::stack(ServerConfig::new().upstream(upstream.clone()))
        .await
        .expect_err("auth without keys");
    assert_eq!(e.key, "database", "{e}");
    let keys: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let e = tollgate::server::stack(
        ServerConfig::new()
            .upstream(upstream.clone())
            .key_store(keys.clone()),
    )
    .await
    .expect_err("billing without a ledger");
    assert_eq!(e.key, "billing", "{e}");
    let ok = ServerConfig::new()
        .upstream(upstream)
        .key_store(keys)
        .without_billing();
    assert!(tollgate::server::stack(ok).await.is_ok());
}

#[tokio::test]
async fn server_stack_without_billing_ignores_a_given_ledger() {
    let upstream = MockServer::start(MockOptions::new()).await.expect("mock");
    let (keys, ledger, key) = stores("0").await; // an empty balance would be a 402
    let config = ServerConfig::new()
        .upstream(UpstreamConfig::new(
            "mock",
            &upstream.url(),
            "sk-ant-upstream",
        ))
        .key_store(keys)
        .ledger(ledger)
        .without_billing();
    let gateway = tollgate::server::stack(config).await.expect("stack");
    assert!(gateway.spawn_reconciler().is_none());
    let url = serve(gateway.router()).await;
    let (status, _, body) = send(&http(), message(&url, Some(&key))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn server_stack_opens_its_stores_from_a_database_url() {
    let upstream = MockServer::start(MockOptions::new()).await.expect("mock");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("stack.db").display());
    let config: ServerConfig = toml::from_str(&format!(
        "database = {url:?}\n[[upstreams]]\nname = \"mock\"\nbase_url = {:?}\napi_key = \"sk-ant-upstream\"\n",
        upstream.url()
    ))
    .expect("config");
    let gateway = tollgate::server::stack(config).await.expect("stack");
    let keys = tollgate::auth::open(&url).await.expect("keys");
    keys.create_account("acme").await.expect("account");
    let (_, key) = keys.create(NewKey::new("acme")).await.expect("key");
    let ledger: Arc<dyn Ledger> = tollgate::balance::open(&url).await.expect("ledger");
    ledger.open_account("acme", "USD").await.expect("open");
    ledger
        .topup("acme", Amount::parse("1.00").expect("amount"), "test")
        .await
        .expect("topup");
    let base = serve(gateway.router()).await;
    let (status, _, body) = send(&http(), message(&base, Some(key.expose()))).await;
    assert_eq!(status, 200, "{body}");
}

/// A lookup-only store with keys in a format of its own.
struct HouseKeys(Vec<tollgate::auth::KeyRecord>);

impl tollgate::auth::KeyLookup for HouseKeys {
    fn lookup<'a>(
        &'a self,
        hash: &'a tollgate::auth::KeyHash,
    ) -> tollgate::auth::BoxFuture<
        'a,
        Result<Option<tollgate::auth::KeyRecord>, tollgate::auth::StoreError>,
    > {
        let found = self.0.iter().find(|r| r.hash == *hash).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn key_format(&self) -> tollgate::auth::KeyFormat {
        tollgate::auth::KeyFormat::Any
    }
}

#[tokio::test]
async fn server_stack_takes_a_lookup_only_store_with_keys_of_its_own_format() {
    let upstream = MockServer::start(MockOptions::new()).await.expect("mock");
    let record = tollgate::auth::KeyRecord {
        id: 1,
        account_id: "acme".into(),
        name: None,
        prefix: "house_".into(),
        hash: tollgate::auth::KeyHash::of("house_acme.7Hq2mV9x"),
        allowed_models: None,
        limits: tollgate::core::Limits::default(),
        status: tollgate::auth::KeyStatus::Active,
        account_status: tollgate::auth::AccountStatus::Active,
        created_at: std::time::SystemTime::UNIX_EPOCH,
        expires_at: None,
        last_used_at: None,
    };
    let config = ServerConfig::new()
        .upstream(UpstreamConfig::new(
            "mock",
            &upstream.url(),
            "sk-ant-upstream",
        ))
        .key_lookup(HouseKeys(vec![record]))
        .without_billing();
    let gateway = tollgate::server::stack(config).await.expect("stack");
    let url = serve(gateway.router()).await;
    let client = http();
    let (status, _, body) = send(&client, message(&url, Some("house_acme.7Hq2mV9x"))).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = send(&client, message(&url, Some("house_acme.guessed"))).await;
    assert_eq!(status, 401);
    assert!(body.contains("not known to this gateway"), "{body}");
    assert_eq!(upstream.request_count(), 1);
}

// ===== client::stack =====

/// `tollgate::client::stack(config)` around a hyper-util client.
fn client_over_hyper(
    config: &ClientConfig,
) -> <tollgate::client::ClientStack as tower::Layer<Http>>::Service {
    ServiceBuilder::new()
        .layer(tollgate::client::stack(config).expect("stack"))
        .service(http())
}

/// A replayable `POST /v1/messages` (relative: the route gives the base URL) with one
/// extra header.
fn relative_message(name: &str, value: &str) -> Request<Full<Bytes>> {
    let req = Request::post("/v1/messages")
        .header(name, value)
        .body(Bytes::from(MESSAGE))
        .expect("request");
    replayable(req).expect("replayable")
}

#[tokio::test]
async fn client_stack_fails_over_to_the_next_route_with_its_own_key() {
    let down = MockServer::start(MockOptions::new().default_header("x-mock-status", "529"))
        .await
        .expect("mock");
    let up = MockServer::start(MockOptions::new()).await.expect("mock");
    let config = ClientConfig::new()
        .route(ClientRoute::new("primary", down.url()).api_key("key-primary"))
        .route(
            ClientRoute::new("backup", up.url())
                .api_key("key-backup")
                .bearer(),
        );
    let client = client_over_hyper(&config);
    let req = relative_message("x-api-key", "caller-key");
    let res = client.oneshot(req).await.expect("served by the backup");
    assert_eq!(res.headers()["x-tollgate-route"], "backup");
    assert!(down.request_count() >= 1);
    assert_eq!(down.received()[0].header("x-api-key"), Some("key-primary"));
    let got = &up.received()[0];
    assert_eq!(got.header("authorization"), Some("Bearer key-backup"));
    assert_eq!(
        got.header("x-api-key"),
        None,
        "the caller's key was replaced"
    );
}

#[tokio::test]
async fn client_stack_gives_typed_errors_that_are_not_retried() {
    let upstream = MockServer::start(MockOptions::new()).await.expect("mock");
    let config = ClientConfig::new().route(ClientRoute::new("only", upstream.url()));
    let client = client_over_hyper(&config);
    let req = relative_message("x-mock-status", "400");
    match client.oneshot(req).await {
        Err(ClientError::Api(e)) => assert_eq!(e.status, 400),
        other => panic!("expected a typed 400, got {other:?}"),
    }
    assert_eq!(upstream.request_count(), 1);
}

#[test]
fn client_stack_config_errors_name_the_key() {
    let e = tollgate::client::stack(&ClientConfig::new()).expect_err("no routes");
    assert_eq!(e.key, "routes");
    let bad_url = ClientConfig::new().route(ClientRoute::new("a", "api.anthropic.com"));
    let e = tollgate::client::stack(&bad_url).expect_err("bad url");
    assert!(e.reason.contains("needs a scheme and a host"), "{e}");
    let unset = ClientConfig::new().route(
        ClientRoute::new("a", "http://127.0.0.1:9").api_key_env("TOLLGATE_TEST_SURELY_UNSET"),
    );
    let e = tollgate::client::stack(&unset).expect_err("unset variable");
    assert_eq!(e.key, "routes[0].api_key", "{e}");
    let zero = ClientConfig::new()
        .route(ClientRoute::new("a", "http://127.0.0.1:9"))
        .retry(RetryConfig {
            max_attempts: 0,
            ..RetryConfig::client()
        });
    assert_eq!(
        tollgate::client::stack(&zero).expect_err("zero").key,
        "retry"
    );
}
