//! Per-layer overhead against a no-op inner service (criterion).
//!
//! Each benchmark drives one layer in front of a `service_fn` that answers at once, with
//! the realistic request of the issue: a 2 KB Messages body. Compare each layer's time
//! with `baseline/noop` from the same run; ratios, not absolute numbers, are what carry
//! between machines. Run: `cargo bench --bench layers`.

use std::convert::Infallible;

use axum::body::Body;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::BodyExt;
use std::sync::Arc;

use tollgate::auth::{KeyAuthLayer, KeyStore, MemoryKeyStore, NewKey};
use tollgate::balance::{Amount, BalanceLayer, Ledger, MemoryLedger, PriceTable};
use tollgate::core::request_meta::parse_body;
use tollgate::core::usage::{BodyFormat, Observed};
use tollgate::core::{Dialect, Endpoint, Principal, RequestMeta, RequestMetaLayer};
use tollgate::fallback::{FallbackConfig, FallbackLayer};
use tollgate::passthrough::PassthroughLayer;
use tollgate::ratelimit::{LimitsConfig, RateLimitConfig, RateLimitLayer};
use tollgate::retry::{RetryConfig, RetryLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A 2 KB Messages request, like a short multi-turn chat.
fn body_2k() -> Bytes {
    let mut messages = Vec::new();
    let mut i = 0;
    while serde_json::to_vec(&messages).map(|v| v.len()).unwrap_or(0) < 1900 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": format!("Turn {i}: tell me more about tower layers and how they compose in axum.")}));
        i += 1;
    }
    let json =
        serde_json::json!({"model": "claude-sonnet-4-6", "max_tokens": 1024, "messages": messages});
    Bytes::from(serde_json::to_vec(&json).unwrap_or_default())
}

fn request(body: &Bytes) -> Request<Body> {
    Request::post("/v1/messages")
        .header("content-type", "application/json")
        .body(Body::from(body.clone()))
        .unwrap_or_default()
}

async fn noop(_req: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Body::empty()))
}

/// A no-op upstream that answers a JSON message with usage, as the API does.
async fn usage_response(_req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let mut res = Response::new(Body::from(Bytes::from_static(
        br#"{"type":"message","model":"claude-sonnet-4-6","usage":{"input_tokens":500,"output_tokens":200}}"#,
    )));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

fn layers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let body = body_2k();
    let mut group = c.benchmark_group("layer");
    group.throughput(Throughput::Elements(1));

    group.bench_function("baseline/noop", |b| {
        let svc = service_fn(noop);
        b.to_async(&rt).iter(|| {
            let req = request(&body);
            async move { svc.oneshot(req).await }
        });
    });

    group.bench_function(BenchmarkId::new("request_meta", "2KB"), |b| {
        let svc = RequestMetaLayer::new().layer(service_fn(noop));
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            let req = request(&body);
            async move { svc.call(req).await }
        });
    });

    // A request as the layers after RequestMetaLayer and KeyAuthLayer see it.
    let meta: RequestMeta =
        parse_body(Endpoint::Messages, body.clone()).unwrap_or_else(|e| panic!("bench body: {e}"));
    let keys = Arc::new(MemoryKeyStore::new());
    let (principal, secret): (Principal, String) = rt.block_on(async {
        keys.create_account("bench")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (record, secret) = keys
            .create(NewKey::new("bench"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (record.principal(), secret.expose().to_string())
    });
    let authed = |body: &Bytes| {
        let mut req = request(body);
        req.extensions_mut().insert(meta.clone());
        req.extensions_mut().insert(principal.clone());
        req
    };

    group.bench_function("key_auth/cached", |b| {
        let svc = KeyAuthLayer::new(keys.clone() as Arc<dyn KeyStore>).layer(service_fn(noop));
        let keyed = |body: &Bytes| {
            let mut req = request(body);
            req.headers_mut().insert(
                "x-api-key",
                secret.parse().unwrap_or_else(|e| panic!("{e}")),
            );
            req
        };
        // Warm the cache: the bench measures a hot key.
        let _ = rt.block_on(svc.clone().oneshot(keyed(&body)));
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            let req = keyed(&body);
            async move { svc.call(req).await }
        });
    });

    for (name, headers) in [
        ("rate_limit/memory", false),
        ("rate_limit/memory+headers", true),
    ] {
        group.bench_function(name, |b| {
            let config = RateLimitConfig {
                default_key: LimitsConfig {
                    rpm: Some(1_000_000_000),
                    itpm: Some(1_000_000_000_000),
                    ..LimitsConfig::default()
                },
                ..RateLimitConfig::default()
            };
            let layer = RateLimitLayer::from_config(&config)
                .unwrap_or_else(|e| panic!("{}: {}", e.key, e.reason))
                .headers_on_success(headers);
            let svc = layer.layer(service_fn(noop));
            b.to_async(&rt).iter(|| {
                let mut svc = svc.clone();
                let req = authed(&body);
                async move { svc.call(req).await }
            });
        });
    }

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
            let req = authed(&body);
            // Read the body to its end: that is when the layer settles.
            async move {
                let res = svc.call(req).await.unwrap_or_else(|e| match e {});
                res.into_body().collect().await.map(|c| c.to_bytes().len())
            }
        });
    });

    group.bench_function("fallback+retry/success", |b| {
        let retry = RetryLayer::new(RetryConfig::default());
        let fallback = FallbackLayer::new(FallbackConfig::default()).budget(retry.retry_budget());
        let svc = fallback.layer(retry.layer(service_fn(noop)));
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            let req = authed(&body);
            async move { svc.call(req).await.map(|r| r.status()) }
        });
    });

    group.bench_function("passthrough/200", |b| {
        let svc = PassthroughLayer::new().layer(service_fn(noop));
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            let req = request(&body);
            async move { svc.call(req).await }
        });
    });
    group.finish();
}

/// The F8-style stream with `n` deltas, one event per frame.
fn sse_frames(n: usize) -> Vec<Bytes> {
    let mut frames = vec![Bytes::from_static(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-6\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":2}}}\n\n")];
    for _ in 0..n {
        frames.push(Bytes::from_static(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there \"}}\n\n"));
    }
    frames.push(Bytes::from_static(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":1000}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    frames
}

fn usage_observer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let frames = sse_frames(1000);
    let mut group = c.benchmark_group("usage_observer");
    group.throughput(Throughput::Elements(frames.len() as u64));
    let stream = |frames: &[Bytes]| {
        let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = frames
            .iter()
            .map(|f| Ok(http_body::Frame::data(f.clone())))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    };
    group.bench_function("sse_1000_events/baseline", |b| {
        b.to_async(&rt)
            .iter(|| async { stream(&frames).collect().await.map(|c| c.to_bytes().len()) });
    });
    group.bench_function("sse_1000_events/observed", |b| {
        b.to_async(&rt).iter(|| async {
            let body = Observed::new(stream(&frames), BodyFormat::Sse(Dialect::Anthropic), |r| {
                std::hint::black_box(r);
            });
            body.collect().await.map(|c| c.to_bytes().len())
        });
    });
    group.finish();
}

criterion_group!(benches, layers, usage_observer);
criterion_main!(benches);
