//! Kill -9 the `tollgate` binary while it streams billed responses, restart it, let it
//! reconcile, and check the books in its SQLite ledger to the micro-unit: the topup equals
//! the balance plus every charge, nothing stays reserved, and every reservation was closed
//! by exactly one entry.

#![cfg(all(feature = "gateway", feature = "sqlite"))]

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tollgate::balance::{EntryKind, Ledger, LedgerEntry, SqliteLedger};

use common::{STREAM_MESSAGE, UPSTREAM_KEY, start_mock};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
/// What the account is topped up with, in micro-dollars ($50).
const TOPUP_MICROS: i64 = 50_000_000;
/// Seconds a reservation holds; the restart waits this long so that the startup
/// reconciliation releases everything the killed process held.
const TTL_SECS: u64 = 1;

/// Run the CLI on `db`; its stdout and stderr.
fn cli(db: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--database", db])
        .output()
        .expect("run tollgate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tollgate {args:?}: {stderr}");
    (stdout, stderr)
}

/// A `tollgate serve` child, killed on drop.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(config: &std::path::Path, log: &std::path::Path) -> Gateway {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start tollgate serve");
    Gateway(child)
}

type Http = HyperClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Poll `/healthz` until it answers 200, for at most 10 s.
async fn wait_ready(http: &Http, url: &str, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let req = http::Request::get(format!("{url}/healthz"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        if let Ok(res) = http.request(req).await {
            if res.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "tollgate serve not ready: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// One streamed request read to its end; `Err` when the gateway went away.
async fn stream_once(http: &Http, url: &str, key: &str) -> Result<u16, String> {
    let req = http::Request::post(format!("{url}/v1/messages"))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", key)
        .header("x-mock-output-tokens", "40")
        .header("x-mock-event-interval-ms", "5")
        .body(Full::new(Bytes::from_static(STREAM_MESSAGE.as_bytes())))
        .expect("request");
    let res = http.request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn books_balance_to_the_micro_unit_after_kill_9_under_load() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    cli(&db, &["accounts", "create", "acme"]);
    cli(&db, &["accounts", "topup", "acme", "50.00"]);
    let (key, _) = cli(&db, &["keys", "create", "--account", "acme"]);
    let key = key.trim().to_string();

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             database = \"{db}\"\n\
             \n\
             [retry]\n\
             max_attempts = 1\n\
             \n\
             [balance]\n\
             reservation_ttl_secs = {TTL_SECS}\n\
             \n\
             [[upstreams]]\n\
             name = \"mock\"\n\
             base_url = \"{}\"\n\
             api_key = \"{UPSTREAM_KEY}\"\n",
            mock.url()
        ),
    )
    .expect("config");
    let log = dir.path().join("gateway.log");
    let http: Http = HyperClient::builder(TokioExecutor::new()).build_http();

    let mut gateway = serve(&config, &log);
    wait_ready(&http, &url, &log).await;

    // 16 clients stream 40-token responses (about 0.2 s each) until the gateway dies.
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (http, url, key, served) = (http.clone(), url.clone(), key.clone(), served.clone());
            tokio::spawn(async move {
                while let Ok(status) = stream_once(&http, &url, &key).await {
                    assert_eq!(status, 200, "a funded account is served");
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    gateway.0.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    gateway.0.wait().expect("reaped");
    for c in clients {
        c.await.expect("client task");
    }
    assert!(
        served.load(Ordering::Relaxed) > 0,
        "requests completed before the kill"
    );

    // What the dead process left: reservations still open.
    let ledger = SqliteLedger::connect(&db).await.expect("open ledger");
    let held_at_kill = ledger.balance("acme").await.expect("balance").reserved;
    assert!(held_at_kill.micros() > 0, "the kill hit requests in flight");
    drop(ledger);

    // Restart once every hold has lapsed: the startup reconciliation releases them.
    tokio::time::sleep(Duration::from_millis(TTL_SECS * 1_000 + 200)).await;
    let _gateway = serve(&config, &log);
    wait_ready(&http, &url, &log).await;
    let ledger = SqliteLedger::connect(&db).await.expect("open ledger");
    let deadline = Instant::now() + Duration::from_secs(5);
    while ledger
        .balance("acme")
        .await
        .expect("balance")
        .reserved
        .micros()
        != 0
    {
        assert!(
            Instant::now() < deadline,
            "reconciliation released the holds"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let balance = ledger.balance("acme").await.expect("balance");
    let entries = ledger.history("acme", u32::MAX).await.expect("history");
    let sum = |kind: EntryKind| -> i64 {
        entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.amount.micros())
            .sum()
    };
    assert_eq!(sum(EntryKind::Topup), TOPUP_MICROS);
    assert_eq!(
        TOPUP_MICROS,
        balance.balance.micros() - sum(EntryKind::Charge),
        "topup = balance + Σ charges"
    );
    assert_eq!(
        entries.iter().map(|e| e.amount.micros()).sum::<i64>(),
        balance.balance.micros(),
        "Σ entries = balance"
    );

    // Every reservation was closed by exactly one entry (a reservation without one would
    // still be open, and reserved would not be zero).
    let mut closed: HashMap<&str, Vec<&LedgerEntry>> = HashMap::new();
    for e in &entries {
        if let Some(id) = &e.request_id {
            closed.entry(id).or_default().push(e);
        }
    }
    assert!(!closed.is_empty(), "requests were billed");
    for (id, by) in &closed {
        assert_eq!(by.len(), 1, "{id} closed exactly once: {by:?}");
    }
    let expired: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Expire)
        .collect();
    assert!(
        entries.iter().any(|e| e.kind == EntryKind::Charge),
        "requests were charged before the kill"
    );
    assert_eq!(
        expired.iter().map(|e| e.reserved.micros()).sum::<i64>(),
        held_at_kill.micros(),
        "the reconciliation released exactly what the kill left held"
    );
}
