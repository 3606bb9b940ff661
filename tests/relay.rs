//! The gateway as a relay, over real sockets on 127.0.0.1, in front of the mock upstream.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tollgate::gateway::UpstreamConfig;
use tollgate::mock::{MockOptions, MockServer, fixtures};

use common::{MESSAGE, body_json, gateway_for, start_mock};

#[tokio::test]
async fn upstream_error_bodies_and_headers_are_byte_identical() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    for fx in [
        &fixtures::F1_401,
        &fixtures::F2_402,
        &fixtures::F3_403,
        &fixtures::F4_413,
        &fixtures::F5_429,
        &fixtures::F7_500,
        &fixtures::F7_529,
    ] {
        let status = fx.status.to_string();
        let res = client
            .post(
                &gw.url(),
                "/v1/messages",
                &[("x-mock-status", &status)],
                MESSAGE,
            )
            .await;
        assert_eq!(res.status(), fx.status, "{}", fx.name);
        let headers = res.headers().clone();
        for (name, value) in fx.headers {
            assert_eq!(
                headers.get(*name).map(|v| v.to_str().unwrap_or_default()),
                Some(*value),
                "{}: header {name}",
                fx.name
            );
        }
        assert_eq!(headers["x-tollgate-origin"], "upstream", "{}", fx.name);
        let body = res.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, Bytes::from_static(fx.body.as_bytes()), "{}", fx.name);
    }
    gw.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn spend_cap_429_passes_through_marked_not_retryable() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let fx = &fixtures::F6_429_SPEND_CAP;
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[
                ("x-mock-status", "429"),
                ("x-mock-error-code", "enforced_spend_limit_reached"),
            ],
            MESSAGE,
        )
        .await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_none());
    // Resumes next month: the SDKs must not retry it (wire reference §4.1).
    assert_eq!(res.headers()["x-should-retry"], "false");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, fx.body.as_bytes());
}

#[tokio::test]
async fn client_credentials_never_reach_the_upstream_and_its_key_does() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let bearer = format!("Bearer {}", client.key());
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[
                ("authorization", &bearer),
                ("anthropic-version", "2026-10-21"),
                ("anthropic-beta", "context-management-2025-06-27,feature2"),
                ("anthropic-workspace-id", "wrkspc_client"),
            ],
            MESSAGE,
        )
        .await;
    assert_eq!(res.status(), 200);
    let seen = mock.received();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.header("x-api-key"), Some(common::UPSTREAM_KEY));
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.header("anthropic-workspace-id"), None);
    assert_eq!(req.header("anthropic-version"), Some("2026-10-21"));
    assert_eq!(
        req.header("anthropic-beta"),
        Some("context-management-2025-06-27,feature2")
    );
    assert_eq!(req.body, MESSAGE.as_bytes());
    let raw = format!("{:?}", req.headers);
    assert!(!raw.contains(client.key()));
}

#[tokio::test]
async fn json_round_trip_keeps_model_and_usage() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[("x-mock-output-tokens", "7")],
            MESSAGE,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-tollgate-origin"], "upstream");
    assert!(res.headers().contains_key("request-id"));
    let json = body_json(res).await;
    assert_eq!(json["model"], "claude-sonnet-4-6");
    assert_eq!(json["usage"]["output_tokens"], 7);
}

#[tokio::test]
async fn stream_events_reach_the_client_before_the_upstream_finishes() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    // 10 deltas 150 ms apart: the upstream needs well over 1.5 s to finish.
    let started = Instant::now();
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[
                ("x-mock-output-tokens", "10"),
                ("x-mock-event-interval-ms", "150"),
            ],
            common::STREAM_MESSAGE,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    let mut body = res.into_body();
    let first = body
        .frame()
        .await
        .expect("a frame")
        .expect("no error")
        .into_data()
        .expect("data");
    let first_at = started.elapsed();
    assert!(
        std::str::from_utf8(&first)
            .unwrap_or_default()
            .starts_with("event: message_start"),
        "{first:?}"
    );
    let rest = body.collect().await.expect("rest").to_bytes();
    let total = started.elapsed();
    assert!(
        first_at < total / 2,
        "first event after {first_at:?} of {total:?}: the relay buffered the stream"
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("event: message_stop"));
}

#[tokio::test]
async fn fixture_stream_is_relayed_byte_for_byte() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[("x-mock-fixture", "f8")],
            common::STREAM_MESSAGE,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["request-id"],
        fixtures::F8_STREAM.header("request-id").unwrap_or_default()
    );
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, fixtures::F8_STREAM.body.as_bytes());
    assert_eq!(body.len(), 983);
}

#[tokio::test]
async fn upstream_down_gives_a_502_envelope() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (gw, client) = common::gateway(UpstreamConfig::new(
        "dead",
        &format!("http://127.0.0.1:{port}"),
        common::UPSTREAM_KEY,
    ))
    .await;
    let res = client.post(&gw.url(), "/v1/messages", &[], MESSAGE).await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["x-tollgate-origin"], "gateway");
    assert_eq!(res.headers()["x-should-retry"], "true");
    let json = body_json(res).await;
    assert_eq!(json["type"], "error");
    assert_eq!(json["error"]["type"], "api_error");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("connect"), "{message}");
    assert!(!message.contains(common::UPSTREAM_KEY));
}

#[tokio::test]
async fn upstream_hang_gives_a_504_after_the_timeout() {
    let mock = start_mock().await;
    let mut upstream = UpstreamConfig::new("slow", &mock.url(), common::UPSTREAM_KEY);
    upstream.response_timeout_ms = 300;
    let (gw, client) = common::gateway(upstream).await;
    let started = Instant::now();
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[("x-mock-latency-ms", "10000")],
            MESSAGE,
        )
        .await;
    let took = started.elapsed();
    assert_eq!(res.status(), 504);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(res.headers()["x-should-retry"], "true");
    let json = body_json(res).await;
    assert_eq!(json["error"]["type"], "timeout_error");
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_the_upstream_request() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[
                ("x-mock-output-tokens", "200"),
                ("x-mock-event-interval-ms", "20"),
            ],
            common::STREAM_MESSAGE,
        )
        .await;
    let mut body = res.into_body();
    let _ = body.frame().await;
    drop(body);
    tokio::time::timeout(Duration::from_secs(10), mock.wait_cancelled_streams(1))
        .await
        .expect("the upstream stream was not cancelled within 10 s");
    assert_eq!(mock.cancelled_streams(), 1);
}

#[tokio::test]
async fn oversized_body_is_refused_with_413_before_reaching_the_upstream() {
    let mock = start_mock().await;
    let mut config = common::config(UpstreamConfig::new("m", &mock.url(), common::UPSTREAM_KEY));
    config.max_body_bytes = 1024;
    let (gw, client) = common::start(config).await;
    let big = format!(
        r#"{{"model":"claude-sonnet-4-6","max_tokens":16,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4096)
    );
    let res = client.post(&gw.url(), "/v1/messages", &[], &big).await;
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["x-tollgate-origin"], "gateway");
    assert_eq!(res.headers()["x-should-retry"], "false");
    let json = body_json(res).await;
    assert_eq!(json["error"]["type"], "request_too_large");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1024-byte limit")
    );
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn invalid_bodies_get_400s_that_say_what_is_wrong() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let cases = [
        (
            r#"{"model":"m","max_tokens":5 "messages":[]}"#,
            "request body is not valid JSON",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a"}]}"#,
            "max_tokens: field required",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[]}"#,
            "messages: must contain at least one message",
        ),
        (
            r#"{"max_tokens":5,"messages":[{"role":"user","content":"a"}]}"#,
            "model: field required",
        ),
    ];
    for (body, expect) in cases {
        let res = client.post(&gw.url(), "/v1/messages", &[], body).await;
        assert_eq!(res.status(), 400, "{body}");
        assert_eq!(res.headers()["x-tollgate-origin"], "gateway");
        let json = body_json(res).await;
        assert_eq!(json["error"]["type"], "invalid_request_error");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(expect), "{message}");
        assert!(
            json["request_id"]
                .as_str()
                .unwrap_or_default()
                .starts_with("req_tg_")
        );
    }
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn chat_completions_errors_come_back_in_openai_shape() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let res = client
        .post(&gw.url(), "/v1/chat/completions", &[], r#"{"model":"m"}"#)
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.headers().contains_key("x-request-id"));
    let json = body_json(res).await;
    assert!(json.get("type").is_none());
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert!(json["error"]["param"].is_null());
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("messages: field required")
    );
}

#[tokio::test]
async fn models_list_is_relayed_without_a_body_check() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let res = client.get(&gw.url(), "/v1/models").await;
    assert_eq!(res.status(), 200);
    let json = body_json(res).await;
    assert!(json["data"].is_array());
    assert_eq!(mock.received()[0].path_and_query, "/v1/models");
}

#[tokio::test]
async fn unknown_endpoint_is_a_404_envelope_listing_the_endpoints() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let res = client.get(&gw.url(), "/v2/whatever").await;
    assert_eq!(res.status(), 404);
    let json = body_json(res).await;
    assert_eq!(json["error"]["type"], "not_found_error");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("POST /v1/messages")
    );
}

#[tokio::test]
async fn non_json_upstream_error_is_wrapped_keeping_its_status() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[("x-mock-status", "502"), ("x-mock-error-format", "html")],
            MESSAGE,
        )
        .await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["x-tollgate-origin"], "upstream");
    let json = body_json(res).await;
    assert_eq!(json["type"], "error");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("text/html")
    );
}

#[tokio::test]
async fn metrics_count_requests_by_status_and_origin() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let _ = client
        .post(&gw.url(), "/v1/messages", &[], MESSAGE)
        .await
        .into_body()
        .collect()
        .await;
    let _ = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[("x-mock-status", "529")],
            MESSAGE,
        )
        .await;
    let _ = client.post(&gw.url(), "/v1/messages", &[], "{").await;
    let _ = client.get(&gw.url(), "/v1/no-such-endpoint").await;
    let res = client.get(&gw.url(), "/metrics").await;
    assert_eq!(res.status(), 200);
    let text = String::from_utf8(
        res.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf-8");
    assert!(
        text.contains(
            r#"tollgate_requests_total{status="200",origin="upstream",model="claude-sonnet-4-6"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_requests_total{status="529",origin="upstream",model=""} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_requests_total{status="400",origin="gateway",model=""} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_requests_total{status="404",origin="gateway",model=""} 1"#),
        "an unknown path is counted: {text}"
    );
    assert!(
        text.contains("tollgate_upstream_latency_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_tokens_total{model="claude-sonnet-4-6",kind="output"} 16"#),
        "{text}"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_an_in_flight_request() {
    let mock = start_mock().await;
    let (gw, client) = gateway_for(&mock).await;
    let url = gw.url();
    let pending = tokio::spawn(async move {
        client
            .post(
                &url,
                "/v1/messages",
                &[("x-mock-latency-ms", "300")],
                MESSAGE,
            )
            .await
    });
    // Let the request reach the mock before shutting down.
    tokio::time::timeout(Duration::from_secs(5), async {
        while mock.request_count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("request reached the mock");
    gw.shutdown().await.expect("clean shutdown");
    let res = pending.await.expect("task");
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn demo_config_serves_through_the_mock_default_behaviour() {
    // An instance whose default is "always 529" answers 529 unless the request overrides it.
    let mock = MockServer::start(MockOptions::new().default_header("x-mock-status", "529"))
        .await
        .expect("mock");
    let (gw, client) =
        common::start(common::config(UpstreamConfig::new("m", &mock.url(), "k"))).await;
    let res = client.post(&gw.url(), "/v1/messages", &[], MESSAGE).await;
    assert_eq!(res.status(), 529);
}
