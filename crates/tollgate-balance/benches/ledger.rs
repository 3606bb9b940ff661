//! Reserve + settle per ledger (criterion): one pair at a time (latency), and 50 tasks at
//! once on one hot account and on 50 accounts (throughput; criterion's `elem/s` is pairs
//! per second). And `layer/…`: one request through `BalanceLayer` on a memory ledger
//! (reserve, inner call, body read to its end, settle) against the same inner service
//! without the layer, like `benches/layers.rs` at the workspace root. Memory, SQLite (a file in a temporary directory, the default options) and
//! the local PostgreSQL (a schema of its own, dropped afterwards; skipped when unreachable
//! unless `CI=true`, see `tests/common`).
//!
//! Run: `cargo bench -p tollgate-balance --all-features --bench ledger`. The SQL figures
//! depend on the disk and on what else runs; compare backends within one run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::runtime::Runtime;
use tollgate_balance::{Amount, BalanceLayer, Charge, Ledger, MemoryLedger, PriceTable};
use tollgate_core::request_meta::parse_body;
use tollgate_core::{Endpoint, Principal, RequestMeta};
use tower::{Layer, Service, service_fn};

use common::Backend;

/// Concurrent tasks of the throughput benchmarks.
const TASKS: u64 = 50;

/// Unique request ids across every iteration of every benchmark.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

async fn reserve_settle(ledger: &dyn Ledger, account: &str) {
    let id = format!("bench_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let r = ledger
        .reserve(account, &id, Amount::from_micros(100), expires)
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));
    ledger
        .settle(
            &r,
            Charge::new(Amount::from_micros(60), "claude-sonnet-4-6"),
        )
        .await
        .unwrap_or_else(|e| panic!("settle: {e}"));
}

/// `iters` pairs spread over [`TASKS`] tasks, on `bench0` only or one account per task.
async fn concurrent(ledger: &Arc<dyn Ledger>, iters: u64, spread: bool) -> Duration {
    let per_task = iters.div_ceil(TASKS);
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let account = format!("bench{}", if spread { t } else { 0 });
                for _ in 0..per_task {
                    reserve_settle(&*ledger, &account).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("bench task: {e}"));
    }
    // Per pair asked for, so that criterion's elem/s is pairs per second.
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * TASKS) as f64)
}

fn ledgers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    for (name, backend) in [
        ("memory", Backend::Memory),
        ("sqlite", Backend::Sqlite),
        ("postgres", Backend::Postgres),
    ] {
        let Some(test) = rt.block_on(common::ledger(backend)) else {
            continue;
        };
        rt.block_on(fund(&test.ledger));
        bench_one(c, &rt, name, &test.ledger);
        rt.block_on(test.cleanup());
    }
}

async fn fund(ledger: &Arc<dyn Ledger>) {
    for a in 0..TASKS {
        let account = format!("bench{a}");
        ledger
            .open_account(&account, "USD")
            .await
            .unwrap_or_else(|e| panic!("open: {e}"));
        ledger
            .topup(&account, Amount::from_micros(i64::MAX / 4), "bench")
            .await
            .unwrap_or_else(|e| panic!("topup: {e}"));
    }
}

fn bench_one(c: &mut Criterion, rt: &Runtime, name: &str, ledger: &Arc<dyn Ledger>) {
    let mut group = c.benchmark_group(format!("ledger/{name}"));
    group.throughput(Throughput::Elements(1));
    if name != "memory" {
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
    }
    group.bench_function("reserve_settle/serial", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let ledger = ledger.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    reserve_settle(&*ledger, "bench0").await;
                }
                start.elapsed()
            }
        });
    });
    for (what, spread) in [("one_account", false), ("50_accounts", true)] {
        group.bench_function(format!("reserve_settle/50_concurrent/{what}"), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let ledger = ledger.clone();
                async move { concurrent(&ledger, iters, spread).await }
            });
        });
    }
    group.finish();
}

/// A 2 KB Messages request, as the layers after key auth see it.
fn billed_request(body: &Bytes, meta: &RequestMeta, principal: &Principal) -> Request<Full<Bytes>> {
    let mut req = Request::post("/v1/messages")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap_or_else(|e| panic!("request: {e}"));
    req.extensions_mut().insert(meta.clone());
    req.extensions_mut().insert(principal.clone());
    req
}

/// An upstream that answers at once with a JSON message and its usage.
async fn usage_response(
    _req: Request<Full<Bytes>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(
        br#"{"type":"message","model":"claude-sonnet-4-6","usage":{"input_tokens":500,"output_tokens":200}}"#,
    )));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let mut text = String::new();
    while text.len() < 1900 {
        text.push_str("Tell me more about tower layers and how they compose in axum. ");
    }
    let body = Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "model": "claude-sonnet-4-6",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": text}],
        }))
        .unwrap_or_default(),
    );
    let meta = parse_body(Endpoint::Messages, body.clone()).unwrap_or_else(|e| panic!("{e}"));
    let principal = Principal {
        key_id: 1,
        account_id: "bench".into(),
        name: None,
        allowed_models: None,
        limits: Default::default(),
    };
    let mut group = c.benchmark_group("layer");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline/usage_response", |b| {
        let svc = service_fn(usage_response);
        b.to_async(&rt).iter(|| {
            let mut svc = svc;
            let req = billed_request(&body, &meta, &principal);
            async move {
                let res = svc.call(req).await.unwrap_or_else(|e| match e {});
                res.into_body().collect().await.map(|c| c.to_bytes().len())
            }
        });
    });
    group.bench_function("balance/memory_reserve_settle", |b| {
        let ledger = Arc::new(MemoryLedger::new());
        rt.block_on(async {
            ledger
                .open_account("bench", "USD")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            ledger
                .topup("bench", Amount::from_micros(i64::MAX / 4), "bench")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        });
        let svc = BalanceLayer::new(ledger as Arc<dyn Ledger>, PriceTable::default())
            .layer(service_fn(usage_response));
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            let req = billed_request(&body, &meta, &principal);
            // Read the body to its end: that is when the layer settles.
            async move {
                let res = svc.call(req).await.unwrap_or_else(|e| match e {});
                res.into_body().collect().await.map(|c| c.to_bytes().len())
            }
        });
    });
    group.finish();
}

criterion_group!(benches, layer, ledgers);
criterion_main!(benches);
