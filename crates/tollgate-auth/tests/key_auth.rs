//! KeyAuthLayer behaviour: every rejection cause, what reaches the inner service, cache
//! semantics, store failures. Every rejection is also checked for key leaks in the body,
//! the headers and the captured logs.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use tollgate_auth::{
    Account, BoxFuture, KeyAuthLayer, KeyFormat, KeyHash, KeyLookup, KeyRecord, KeyStore,
    MemoryKeyStore, NewKey, SecretKey, StoreError, StoreErrorKind,
};
use tollgate_core::{Clock, Dialect, Endpoint, Limits, ManualClock, Principal, RequestMeta};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

// ===== fixtures =====

/// A store that counts lookups and touches, and can be told to fail.
#[derive(Clone, Default)]
struct Probe {
    inner: MemoryKeyStore,
    lookups: Arc<AtomicUsize>,
    touches: Arc<AtomicUsize>,
    failing: bool,
}

impl Probe {
    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    fn touches(&self) -> usize {
        self.touches.load(Ordering::SeqCst)
    }
}

impl KeyLookup for Probe {
    fn lookup<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.failing {
            return Box::pin(async {
                Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "connection refused; check that the database is running",
                ))
            });
        }
        self.inner.lookup(hash)
    }
    fn touch(&self, key_id: i64, at: SystemTime) -> BoxFuture<'_, Result<(), StoreError>> {
        self.touches.fetch_add(1, Ordering::SeqCst);
        self.inner.touch(key_id, at)
    }
}

impl KeyStore for Probe {
    fn key(&self, key_id: i64) -> BoxFuture<'_, Result<Option<KeyRecord>, StoreError>> {
        self.inner.key(key_id)
    }
    fn create(&self, new: NewKey) -> BoxFuture<'_, Result<(KeyRecord, SecretKey), StoreError>> {
        self.inner.create(new)
    }
    fn list<'a>(
        &'a self,
        account: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<KeyRecord>, StoreError>> {
        self.inner.list(account)
    }
    fn disable(&self, key_id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.disable(key_id)
    }
    fn set_limits(&self, key_id: i64, limits: Limits) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.set_limits(key_id, limits)
    }
    fn create_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Account, StoreError>> {
        self.inner.create_account(id)
    }
    fn suspend_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.suspend_account(id)
    }
    fn resume_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.resume_account(id)
    }
    fn account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Account>, StoreError>> {
        self.inner.account(id)
    }
}

struct Fixture {
    store: Probe,
    clock: ManualClock,
    key: SecretKey,
    record: KeyRecord,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(NewKey::new("acme").name("ci-bot")).await
    }

    async fn with(new: NewKey) -> Fixture {
        let store = Probe::default();
        store.create_account("acme").await.expect("account");
        let (record, key) = store.create(new).await.expect("key");
        Fixture {
            store,
            clock: ManualClock::new(),
            key,
            record,
        }
    }

    fn layer(&self) -> KeyAuthLayer<Probe> {
        KeyAuthLayer::new(self.store.clone()).clock(Arc::new(self.clock.clone()))
    }

    /// The key's secret part: must never show up anywhere.
    fn secret(&self) -> &str {
        &self.key.expose()[3..]
    }
}

/// The inner service: answers 200 with the principal's key id, after checking that no
/// credential reached it.
async fn inner(req: Request<Bytes>) -> Result<Response<Bytes>, BoxError> {
    assert!(
        req.headers().get("x-api-key").is_none(),
        "x-api-key forwarded"
    );
    assert!(
        req.headers().get("authorization").is_none(),
        "authorization forwarded"
    );
    let principal = req
        .extensions()
        .get::<Principal>()
        .expect("Principal in extensions");
    Ok(Response::new(Bytes::from(principal.key_id.to_string())))
}

fn post(path: &str) -> http::request::Builder {
    Request::post(path).header("anthropic-version", "2023-06-01")
}

fn meta(model: &str, dialect: Dialect) -> RequestMeta {
    RequestMeta {
        endpoint: Endpoint::Messages,
        dialect,
        model: model.to_owned(),
        max_tokens: Some(16),
        stream: false,
        messages: 1,
        est_input_tokens: 10,
        body: Bytes::new(),
    }
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Send `req` through `layer` with every log line captured.
async fn send(layer: &KeyAuthLayer<Probe>, req: Request<Bytes>) -> (Response<Bytes>, String) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let res = layer
        .layer(service_fn(inner))
        .oneshot(req)
        .await
        .expect("rejections are responses");
    let text = String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("utf-8 logs");
    (res, text)
}

/// Assert a gateway rejection: status, `error.type`, a hint in the message, no retry,
/// gateway origin, and `secret` nowhere in body, headers or logs. Returns the message.
fn assert_rejected(
    (res, logs): &(Response<Bytes>, String),
    status: u16,
    error_type: &str,
    hint: &str,
    secret: &str,
) -> String {
    assert_eq!(res.status(), status, "{:?}", res.body());
    let body: serde_json::Value = serde_json::from_slice(res.body()).expect("JSON envelope");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], error_type);
    let message = body["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(message.contains(hint), "{message:?} lacks {hint:?}");
    assert_eq!(res.headers()["x-should-retry"], "false");
    assert_eq!(res.headers()["x-tollgate-origin"], "gateway");
    assert_no_leak(res, logs, secret);
    message
}

fn assert_no_leak(res: &Response<Bytes>, logs: &str, secret: &str) {
    let body = String::from_utf8_lossy(res.body());
    assert!(!body.contains(secret), "key in body: {body}");
    for (name, value) in res.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(!value.contains(secret), "key in header {name}");
    }
    assert!(!logs.contains(secret), "key in logs: {logs}");
}

fn header_value(bytes: &[u8]) -> http::HeaderValue {
    http::HeaderValue::from_bytes(bytes).expect("valid header bytes")
}

// ===== 401: the credential itself =====

#[tokio::test]
async fn no_credential_header_is_401_saying_where_to_send_the_key() {
    let f = Fixture::new().await;
    let req = post("/v1/messages").body(Bytes::new()).expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "no API key: send your gateway key (tg-…) in the x-api-key header or as Authorization: Bearer <key>",
        f.secret(),
    );
}

#[tokio::test]
async fn leading_whitespace_is_401_naming_it_and_its_byte() {
    let f = Fixture::new().await;
    let value = format!(" {}", f.key.expose());
    let req = post("/v1/messages")
        .header("x-api-key", header_value(value.as_bytes()))
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "x-api-key starts with whitespace (a space at byte 0); remove whitespace around the key",
        f.secret(),
    );
}

#[tokio::test]
async fn trailing_whitespace_is_401_naming_it_and_its_byte() {
    let f = Fixture::new().await;
    let value = format!("{}\t", f.key.expose());
    let req = post("/v1/messages")
        .header("x-api-key", header_value(value.as_bytes()))
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "x-api-key ends with whitespace (a tab at byte 35)",
        f.secret(),
    );
}

#[tokio::test]
async fn a_newline_escape_in_the_key_is_401_naming_its_byte() {
    let f = Fixture::new().await;
    let value = format!("{}\\n", f.key.expose());
    let req = post("/v1/messages")
        .header("x-api-key", header_value(value.as_bytes()))
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "x-api-key contains a literal \\n escape sequence (a backslash and 'n', byte 35)",
        f.secret(),
    );
}

#[tokio::test]
async fn a_zero_width_character_is_401_naming_the_character_and_byte() {
    let f = Fixture::new().await;
    let k = f.key.expose();
    let value = format!("{}\u{200B}{}", &k[..10], &k[10..]);
    let req = post("/v1/messages")
        .header(
            "authorization",
            header_value(format!("Bearer {value}").as_bytes()),
        )
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "Authorization contains an invisible zero-width character (U+200B ZERO WIDTH SPACE) at byte 17",
        &k[10..],
    );
}

#[tokio::test]
async fn a_control_character_is_401_naming_it_and_its_byte() {
    let f = Fixture::new().await;
    let k = f.key.expose();
    let value = format!("{}\t{}", &k[..20], &k[20..]);
    let req = post("/v1/messages")
        .header("x-api-key", header_value(value.as_bytes()))
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "x-api-key contains a non-printable control character (0x09, tab) at byte 20",
        &k[20..],
    );
}

#[tokio::test]
async fn a_non_ascii_character_is_401_naming_it_and_its_byte() {
    let f = Fixture::new().await;
    let k = f.key.expose();
    let value = format!("{}é{}", &k[..12], &k[13..]);
    let req = post("/v1/messages")
        .header("x-api-key", header_value(value.as_bytes()))
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "x-api-key contains a non-ASCII character (U+00E9) at byte 12",
        &k[13..],
    );
}

// ===== 401: the Authorization header =====

#[tokio::test]
async fn authorization_with_two_spaces_is_401_saying_use_one() {
    let f = Fixture::new().await;
    let req = post("/v1/messages")
        .header("authorization", format!("Bearer  {}", f.key.expose()))
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "Authorization has 2 spaces between Bearer and the key; use exactly one",
        f.secret(),
    );
}

#[tokio::test]
async fn authorization_bearer_colon_is_401_saying_drop_the_colon() {
    let f = Fixture::new().await;
    let req = post("/v1/messages")
        .header("authorization", format!("Bearer: {}", f.key.expose()))
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "Authorization has a colon after Bearer (\"Bearer:\"); write one space and no colon",
        f.secret(),
    );
}

#[tokio::test]
async fn authorization_bearer_without_a_key_is_401_saying_the_key_is_missing() {
    let f = Fixture::new().await;
    let req = post("/v1/messages")
        .header("authorization", "Bearer ")
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "Authorization says Bearer but carries no key",
        f.secret(),
    );
}

#[tokio::test]
async fn authorization_with_basic_scheme_is_401_naming_the_scheme() {
    let f = Fixture::new().await;
    let secret = "dXNlcjpwYXNzd29yZA==";
    let req = post("/v1/messages")
        .header("authorization", format!("Basic {secret}"))
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "Authorization uses the Basic scheme; this gateway takes API keys only as Bearer tokens",
        secret,
    );
}

#[tokio::test]
async fn authorization_without_a_scheme_is_401_saying_add_bearer() {
    let f = Fixture::new().await;
    let req = post("/v1/messages")
        .header("authorization", f.key.expose())
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "Authorization carries a key without the Bearer scheme; write Authorization: Bearer <key>",
        f.secret(),
    );
}

// ===== 401: the wrong kind of key =====

#[tokio::test]
async fn an_anthropic_key_is_401_saying_use_the_gateway_key() {
    let f = Fixture::new().await;
    let secret = "api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
    let req = post("/v1/messages")
        .header("authorization", format!("Bearer sk-ant-{secret}"))
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "Authorization holds an Anthropic API key (sk-ant-…); this gateway accepts only the keys it issues: use your gateway key (tg-…) instead",
        secret,
    );
    assert_eq!(f.store.lookups(), 0);
}

#[tokio::test]
async fn an_openai_key_is_401_saying_use_the_gateway_key() {
    let f = Fixture::new().await;
    let secret = "proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
    let req = post("/v1/chat/completions")
        .header("authorization", format!("Bearer sk-{secret}"))
        .body(Bytes::new())
        .expect("request");
    let (res, logs) = send(&f.layer(), req).await;
    // The OpenAI dialect: its envelope and code.
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = serde_json::from_slice(res.body()).expect("JSON");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("holds an OpenAI API key (sk-…)"),
        "{message}"
    );
    assert!(message.contains("use your gateway key (tg-…)"), "{message}");
    assert_no_leak(&res, &logs, secret);
}

#[tokio::test]
async fn a_truncated_gateway_key_is_401_without_asking_the_store() {
    let f = Fixture::new().await;
    let k = f.key.expose();
    let req = post("/v1/messages")
        .header("x-api-key", &k[..30])
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "x-api-key holds a gateway key of 30 characters, but gateway keys have 35 (tg- and 32 letters or digits); it was cut short",
        &k[3..30],
    );
    assert_eq!(f.store.lookups(), 0);
}

/// A lookup-only store (no admin methods) whose keys are not `tg-` keys.
struct EnvKeys {
    records: Vec<KeyRecord>,
}

impl EnvKeys {
    fn new(keys: &[(&str, i64)]) -> EnvKeys {
        let records = keys
            .iter()
            .map(|&(key, id)| KeyRecord {
                id,
                account_id: "acme".to_owned(),
                name: None,
                prefix: key.chars().take(4).collect(),
                hash: KeyHash::of(key),
                allowed_models: None,
                limits: Limits::default(),
                status: tollgate_auth::KeyStatus::Active,
                account_status: tollgate_auth::AccountStatus::Active,
                created_at: SystemTime::UNIX_EPOCH,
                expires_at: None,
                last_used_at: None,
            })
            .collect();
        EnvKeys { records }
    }
}

impl KeyLookup for EnvKeys {
    fn lookup<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>> {
        let found = self.records.iter().find(|r| r.hash == *hash).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn key_format(&self) -> KeyFormat {
        KeyFormat::Any
    }
}

async fn status_through<K: KeyLookup + 'static>(
    layer: &KeyAuthLayer<K>,
    req: Request<Bytes>,
) -> (u16, String) {
    let res = layer
        .layer(service_fn(inner))
        .oneshot(req)
        .await
        .expect("rejections are responses");
    (
        res.status().as_u16(),
        String::from_utf8_lossy(res.body()).into_owned(),
    )
}

#[tokio::test]
async fn a_lookup_only_store_with_any_format_admits_keys_of_its_own_format() {
    let layer = KeyAuthLayer::new(EnvKeys::new(&[("team-a.4f9c2e", 7), ("sk-ant-ours", 8)]));
    for (key, id) in [("team-a.4f9c2e", "7"), ("sk-ant-ours", "8")] {
        let req = post("/v1/messages")
            .header("x-api-key", key)
            .body(Bytes::new())
            .expect("request");
        assert_eq!(status_through(&layer, req).await, (200, id.to_owned()));
    }
}

#[tokio::test]
async fn a_store_with_any_format_answers_unknown_keys_with_the_store_401() {
    let layer = KeyAuthLayer::new(EnvKeys::new(&[("team-a.4f9c2e", 7)]));
    let req = post("/v1/messages")
        .header("x-api-key", "sk-ant-api03-someone-elses")
        .body(Bytes::new())
        .expect("request");
    let (status, body) = status_through(&layer, req).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("this API key is not known to this gateway"),
        "{body}"
    );
    assert!(!body.contains("tg-"), "no hint at tg- keys: {body}");
    // Broken characters are still diagnosed without a lookup.
    let req = post("/v1/messages")
        .header("x-api-key", header_value(b"team-a.4f9c2e "))
        .body(Bytes::new())
        .expect("request");
    let (status, body) = status_through(&layer, req).await;
    assert_eq!(status, 401);
    assert!(body.contains("ends with whitespace"), "{body}");
}

#[tokio::test]
async fn the_layer_can_override_the_stores_key_format() {
    let f = Fixture::new().await;
    let layer = f.layer().key_format(KeyFormat::Any);
    let req = post("/v1/messages")
        .header("x-api-key", &f.key.expose()[..30])
        .body(Bytes::new())
        .expect("request");
    let out = send(&layer, req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "this API key is not known to this gateway",
        &f.key.expose()[3..30],
    );
    assert_eq!(f.store.lookups(), 1, "the store was asked");
}

// ===== 401: what the store says =====

#[tokio::test]
async fn an_unknown_key_is_401_saying_check_the_key() {
    let f = Fixture::new().await;
    let other = SecretKey::generate();
    let req = post("/v1/messages")
        .header("x-api-key", other.expose())
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "this API key is not known to this gateway; check that you sent the whole key",
        &other.expose()[3..],
    );
}

#[tokio::test]
async fn a_disabled_key_is_401_saying_ask_for_a_new_key() {
    let f = Fixture::new().await;
    f.store.disable(f.record.id).await.expect("disable");
    let req = post("/v1/messages")
        .header("x-api-key", f.key.expose())
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    let message = assert_rejected(
        &out,
        401,
        "authentication_error",
        "has been disabled; ask the gateway operator for a new key",
        f.secret(),
    );
    assert!(
        message.contains(&format!("(id {})", f.record.id)),
        "{message}"
    );
}

#[tokio::test]
async fn an_expired_key_is_401_naming_the_expiry_even_when_cached() {
    let clock = ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_083_140));
    let f = Fixture::with(
        NewKey::new("acme").expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_083_200)),
    )
    .await;
    let layer = KeyAuthLayer::new(f.store.clone())
        .clock(Arc::new(clock.clone()))
        .cache_ttl(Duration::from_secs(3600));
    let req = || {
        post("/v1/messages")
            .header("x-api-key", f.key.expose())
            .body(Bytes::new())
            .expect("request")
    };
    assert_eq!(send(&layer, req()).await.0.status(), 200);
    clock.advance(Duration::from_secs(60));
    let out = send(&layer, req()).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "expired at 2026-12-01T00:00:00Z; ask the gateway operator for a new key or a later expiry",
        f.secret(),
    );
    assert_eq!(f.store.lookups(), 1);
}

// ===== 403 =====

#[tokio::test]
async fn a_model_outside_the_scope_is_403_naming_the_model_and_the_scope() {
    let f = Fixture::with(
        NewKey::new("acme").allowed_models(["claude-haiku-4-5", "claude-sonnet-4-6"]),
    )
    .await;
    let mut req = post("/v1/messages")
        .header("x-api-key", f.key.expose())
        .body(Bytes::new())
        .expect("request");
    req.extensions_mut()
        .insert(meta("claude-opus-4-8", Dialect::Anthropic));
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        403,
        "permission_error",
        "this API key may not use model \"claude-opus-4-8\": it is scoped to 2 models (claude-haiku-4-5, claude-sonnet-4-6)",
        f.secret(),
    );
}

#[tokio::test]
async fn a_model_inside_the_scope_passes() {
    let f = Fixture::with(NewKey::new("acme").allowed_models(["claude-haiku-4-5"])).await;
    let mut req = post("/v1/messages")
        .header("x-api-key", f.key.expose())
        .body(Bytes::new())
        .expect("request");
    req.extensions_mut()
        .insert(meta("claude-haiku-4-5", Dialect::Anthropic));
    assert_eq!(send(&f.layer(), req).await.0.status(), 200);
}

#[tokio::test]
async fn a_suspended_account_is_403_saying_contact_the_operator() {
    let f = Fixture::new().await;
    f.store.suspend_account("acme").await.expect("suspend");
    let req = post("/v1/messages")
        .header("x-api-key", f.key.expose())
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        403,
        "permission_error",
        "the account \"acme\" of this API key is suspended; contact the gateway operator",
        f.secret(),
    );
}

// ===== success =====

#[tokio::test]
async fn a_valid_key_puts_the_principal_into_extensions() {
    let f = Fixture::with(
        NewKey::new("acme")
            .name("ci-bot")
            .allowed_models(["claude-haiku-4-5"])
            .limits(Limits {
                rpm: Some(60),
                ..Limits::default()
            }),
    )
    .await;
    let svc = f
        .layer()
        .layer(service_fn(|req: Request<Bytes>| async move {
            let p = req
                .extensions()
                .get::<Principal>()
                .cloned()
                .expect("principal");
            let mut res = Response::new(Bytes::new());
            res.extensions_mut().insert(p);
            Ok::<_, BoxError>(res)
        }));
    let req = post("/v1/messages")
        .header("x-api-key", f.key.expose())
        .body(Bytes::new())
        .expect("request");
    let res = svc.oneshot(req).await.expect("inner answered");
    let principal = res
        .extensions()
        .get::<Principal>()
        .cloned()
        .expect("principal");
    assert_eq!(principal, f.record.principal());
    assert_eq!(principal.account_id.as_ref(), "acme");
    assert_eq!(principal.name.as_deref(), Some("ci-bot"));
    assert_eq!(principal.limits.rpm, Some(60));
}

#[tokio::test]
async fn credential_headers_are_removed_before_the_inner_service() {
    let f = Fixture::new().await;
    let svc = f
        .layer()
        .layer(service_fn(|req: Request<Bytes>| async move {
            let h = req.headers();
            assert!(h.get("x-api-key").is_none());
            assert!(h.get("authorization").is_none());
            assert_eq!(h["anthropic-version"], "2023-06-01", "other headers stay");
            Ok::<_, BoxError>(Response::new(Bytes::new()))
        }));
    let req = post("/v1/messages")
        .header("x-api-key", f.key.expose())
        .header("authorization", format!("Bearer {}", f.key.expose()))
        .body(Bytes::new())
        .expect("request");
    let res = svc.oneshot(req).await.expect("inner answered");
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn bearer_scheme_is_accepted_in_any_case() {
    let f = Fixture::new().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let req = post("/v1/messages")
            .header("authorization", format!("{scheme} {}", f.key.expose()))
            .body(Bytes::new())
            .expect("request");
        let (res, _) = send(&f.layer(), req).await;
        assert_eq!(res.status(), 200, "{scheme}");
        assert_eq!(res.body(), &Bytes::from(f.record.id.to_string()));
    }
}

#[tokio::test]
async fn x_api_key_wins_when_both_headers_carry_different_keys() {
    let f = Fixture::new().await;
    let other = SecretKey::generate();
    // x-api-key valid, Authorization something else: accepted as x-api-key's key.
    let req = post("/v1/messages")
        .header("x-api-key", f.key.expose())
        .header("authorization", format!("Bearer {}", other.expose()))
        .body(Bytes::new())
        .expect("request");
    let (res, _) = send(&f.layer(), req).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.body(), &Bytes::from(f.record.id.to_string()));
    // x-api-key unknown, Authorization valid: x-api-key still decides.
    let req = post("/v1/messages")
        .header("x-api-key", other.expose())
        .header("authorization", format!("Bearer {}", f.key.expose()))
        .body(Bytes::new())
        .expect("request");
    let out = send(&f.layer(), req).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "not known to this gateway",
        f.secret(),
    );
}

#[tokio::test]
async fn request_meta_dialect_decides_the_envelope() {
    let f = Fixture::new().await;
    let mut req = post("/v1/messages").body(Bytes::new()).expect("request");
    req.extensions_mut()
        .insert(meta("claude-haiku-4-5", Dialect::OpenAi));
    let (res, _) = send(&f.layer(), req).await;
    let body: serde_json::Value = serde_json::from_slice(res.body()).expect("JSON");
    assert!(
        body.get("type").is_none(),
        "OpenAI envelope has no top-level type"
    );
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(res.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn inner_service_errors_pass_through_unchanged() {
    let f = Fixture::new().await;
    let svc = f
        .layer()
        .layer(service_fn(|_req: Request<Bytes>| async move {
            Err::<Response<Bytes>, BoxError>("upstream connect failed".into())
        }));
    let req = post("/v1/messages")
        .header("x-api-key", f.key.expose())
        .body(Bytes::new())
        .expect("request");
    let err = svc.oneshot(req).await.expect_err("error passes through");
    assert_eq!(err.to_string(), "upstream connect failed");
}

// ===== cache and store =====

#[tokio::test]
async fn a_cached_key_costs_no_store_lookup() {
    let f = Fixture::new().await;
    let layer = f.layer();
    let mut svc = layer.layer(service_fn(inner));
    for _ in 0..10 {
        let req = post("/v1/messages")
            .header("x-api-key", f.key.expose())
            .body(Bytes::new())
            .expect("request");
        let res = svc
            .ready()
            .await
            .expect("ready")
            .call(req)
            .await
            .expect("ok");
        assert_eq!(res.status(), 200);
    }
    assert_eq!(f.store.lookups(), 1);
    // Services from the same layer share the cache.
    let req = post("/v1/messages")
        .header("x-api-key", f.key.expose())
        .body(Bytes::new())
        .expect("request");
    assert_eq!(send(&layer, req).await.0.status(), 200);
    assert_eq!(f.store.lookups(), 1);
}

#[tokio::test]
async fn unknown_keys_are_remembered_for_the_negative_ttl() {
    let f = Fixture::new().await;
    let layer = f.layer();
    let unknown = SecretKey::generate();
    let req = || {
        post("/v1/messages")
            .header("x-api-key", unknown.expose())
            .body(Bytes::new())
            .expect("request")
    };
    assert_eq!(send(&layer, req()).await.0.status(), 401);
    assert_eq!(send(&layer, req()).await.0.status(), 401);
    assert_eq!(f.store.lookups(), 1);
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(send(&layer, req()).await.0.status(), 401);
    assert_eq!(f.store.lookups(), 2);
}

#[tokio::test]
async fn disabling_a_key_takes_effect_after_the_cache_ttl() {
    let f = Fixture::new().await;
    let layer = f.layer();
    let req = || {
        post("/v1/messages")
            .header("x-api-key", f.key.expose())
            .body(Bytes::new())
            .expect("request")
    };
    assert_eq!(send(&layer, req()).await.0.status(), 200);
    f.store.disable(f.record.id).await.expect("disable");
    f.clock.advance(Duration::from_millis(4_999));
    assert_eq!(send(&layer, req()).await.0.status(), 200, "still cached");
    f.clock.advance(Duration::from_millis(1));
    let out = send(&layer, req()).await;
    assert_rejected(
        &out,
        401,
        "authentication_error",
        "has been disabled",
        f.secret(),
    );
}

#[tokio::test]
async fn a_store_failure_is_503_saying_retry_shortly() {
    let mut f = Fixture::new().await;
    f.store.failing = true;
    let req = post("/v1/messages")
        .header("x-api-key", f.key.expose())
        .body(Bytes::new())
        .expect("request");
    let (res, logs) = send(&f.layer(), req).await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = serde_json::from_slice(res.body()).expect("JSON");
    assert_eq!(body["error"]["type"], "api_error");
    assert_eq!(
        body["error"]["message"],
        "key store unavailable; retry shortly"
    );
    assert_eq!(res.headers()["x-should-retry"], "true");
    assert_eq!(res.headers()["retry-after"], "1");
    assert!(logs.contains("key store lookup failed"), "{logs}");
    assert_no_leak(&res, &logs, f.secret());
    // Failures are not cached: the next request asks again.
    let req = post("/v1/messages")
        .header("x-api-key", f.key.expose())
        .body(Bytes::new())
        .expect("request");
    send(&f.layer(), req).await;
    assert_eq!(f.store.lookups(), 2);
}

#[tokio::test]
async fn last_use_is_recorded_at_most_once_per_interval() {
    let f = Fixture::new().await;
    let layer = f.layer();
    let req = || {
        post("/v1/messages")
            .header("x-api-key", f.key.expose())
            .body(Bytes::new())
            .expect("request")
    };
    for _ in 0..5 {
        assert_eq!(send(&layer, req()).await.0.status(), 200);
        tokio::task::yield_now().await;
    }
    assert_eq!(f.store.touches(), 1);
    let used = f.store.key(f.record.id).await.expect("store").expect("key");
    assert!(used.last_used_at.is_some());
    // After the interval (and a cache refresh that reads last_used_at back), once more.
    f.clock.advance(Duration::from_secs(60));
    for _ in 0..5 {
        assert_eq!(send(&layer, req()).await.0.status(), 200);
        tokio::task::yield_now().await;
    }
    assert_eq!(f.store.touches(), 2);
    let used_again = f.store.key(f.record.id).await.expect("store").expect("key");
    assert_eq!(
        used_again.last_used_at,
        Some(
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(
                    f.clock
                        .wall()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .expect("after epoch")
                        .as_secs()
                )
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_and_its_futures_can_be_spawned_on_other_threads() {
    let f = Fixture::new().await;
    let svc = f.layer().layer(service_fn(inner));
    for _ in 0..2 {
        // First a store lookup, then a cache hit: both futures must be Send + 'static.
        let req = post("/v1/messages")
            .header("x-api-key", f.key.expose())
            .body(Bytes::new())
            .expect("request");
        let res = tokio::spawn(svc.clone().oneshot(req))
            .await
            .expect("task")
            .expect("ok");
        assert_eq!(res.status(), 200);
    }
}
