//! The access log: one line per request with what an operator needs, never the key.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate_gateway::{Config, Gateway, MemoryConfig, Stores, UpstreamConfig};
use tollgate_mock::{MockOptions, MockServer};
use tracing_subscriber::fmt::MakeWriter;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn post(url: &str, key: &str, extra: Option<(&str, &str)>) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::post(format!("{url}/v1/messages?beta=true"))
        .header("content-type", "application/json")
        .header("x-api-key", key);
    if let Some((k, v)) = extra {
        req = req.header(k, v);
    }
    let body = r#"{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    let res = client
        .request(req.body(Full::new(Bytes::from(body))).expect("request"))
        .await
        .expect("answer");
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

#[tokio::test]
async fn each_request_logs_one_access_line_with_status_model_key_id_and_request_id_but_no_key() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockServer::start(MockOptions::new()).await.expect("mock");
    let mut config = Config::with_upstreams(vec![UpstreamConfig::new(
        "mock",
        &mock.url(),
        "upstream-key",
    )]);
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.retry.max_attempts = 1;
    config.database = Some("memory".into());
    config.memory = MemoryConfig {
        account: "acme".into(),
        balance: "5".into(),
        currency: "USD".into(),
    };
    let (stores, issued) = Stores::open_issuing(&config).await.expect("stores");
    let key = issued.expect("a key for memory stores").key;
    let gw = Gateway::start_with(config, stores).await.expect("gateway");

    assert_eq!(post(&gw.url(), key.expose(), None).await, 200);
    assert_eq!(
        post(&gw.url(), "tg-wrongwrongwrongwrongwrongwrongwr", None).await,
        401
    );
    assert_eq!(
        post(&gw.url(), key.expose(), Some(("x-mock-status", "529"))).await,
        529
    );
    gw.shutdown().await.expect("shutdown");

    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    let access: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("tollgate::access"))
        .collect();
    assert_eq!(access.len(), 3, "one line per request:\n{text}");
    let ok = access[0];
    for field in [
        " INFO ",
        "method=POST",
        "path=/v1/messages ",
        "status=200",
        "latency_us=",
        "model=claude-sonnet-4-6",
        "route=mock",
        "key_id=1",
        "request_id=req_",
    ] {
        assert!(ok.contains(field), "{field:?} missing in {ok}");
    }
    let unauthenticated = access[1];
    assert!(unauthenticated.contains("status=401"), "{unauthenticated}");
    assert!(!unauthenticated.contains("key_id="), "{unauthenticated}");
    assert!(!unauthenticated.contains("model="), "{unauthenticated}");
    assert!(
        unauthenticated.contains("request_id=req_"),
        "{unauthenticated}"
    );
    let upstream_5xx = access[2];
    assert!(
        upstream_5xx.contains(" WARN ") && upstream_5xx.contains("status=529"),
        "{upstream_5xx}"
    );
    assert!(!text.contains(key.expose()), "the key must never be logged");
    assert!(!text.contains("beta=true"), "queries are not logged");
    mock.shutdown().await;
}
