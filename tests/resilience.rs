//! Retry and fallback in the gateway, over real sockets, against mocks that fail.

mod common;

use std::time::Duration;

use http_body_util::BodyExt;
use tollgate::gateway::{Config, UpstreamConfig};
use tollgate::mock::{MockOptions, MockServer, fixtures};

use common::{MESSAGE, STREAM_MESSAGE, body_json, start, start_mock};

fn two_routes(a: &MockServer, b: &MockServer) -> Config {
    let mut config = common::config(UpstreamConfig::new("a", &a.url(), common::UPSTREAM_KEY));
    config
        .upstreams
        .push(UpstreamConfig::new("b", &b.url(), common::UPSTREAM_KEY));
    config.retry.max_attempts = 3;
    config.retry.base_delay_ms = 10;
    config.retry.max_delay_ms = 20;
    config
}

#[tokio::test]
async fn upstream_that_fails_twice_is_retried_to_success() {
    let mock = start_mock().await;
    let mut config = common::config(UpstreamConfig::new("m", &mock.url(), common::UPSTREAM_KEY));
    config.retry.max_attempts = 3;
    config.retry.base_delay_ms = 10;
    let (gw, client) = start(config).await;
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[("x-mock-fail-times", "2"), ("x-mock-scenario", "twice")],
            MESSAGE,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-tollgate-attempts"], "3");
    let sent = mock.received();
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter().all(|r| r.body == MESSAGE.as_bytes()),
        "same bytes each time"
    );
    let counts: Vec<_> = sent
        .iter()
        .map(|r| r.header("x-tollgate-retry-count").map(str::to_string))
        .collect();
    assert_eq!(counts[2].as_deref(), Some("2"), "{counts:?}");
}

#[tokio::test]
async fn overloaded_route_a_is_served_by_route_b_with_served_by_headers() {
    let a = MockServer::start(
        MockOptions::new()
            .name("a")
            .default_header("x-mock-status", "529"),
    )
    .await
    .expect("mock a");
    let b = MockServer::start(MockOptions::new().name("b"))
        .await
        .expect("mock b");
    let (gw, client) = start(two_routes(&a, &b)).await;
    let res = client.post(&gw.url(), "/v1/messages", &[], MESSAGE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-tollgate-route"], "b");
    assert_eq!(res.headers()["x-tollgate-model"], "claude-sonnet-4-6");
    assert_eq!(res.headers()["x-mock-name"], "b");
    // The next request skips the cooling route a.
    let before = a.request_count();
    let res = client.post(&gw.url(), "/v1/messages", &[], MESSAGE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        a.request_count(),
        before,
        "route a is cooling and was skipped"
    );
}

#[tokio::test]
async fn when_every_route_fails_the_last_upstream_error_comes_back_byte_for_byte() {
    let a = MockServer::start(MockOptions::new().default_header("x-mock-status", "529"))
        .await
        .expect("mock a");
    let b = MockServer::start(MockOptions::new().default_header("x-mock-status", "500"))
        .await
        .expect("mock b");
    let (gw, client) = start(two_routes(&a, &b)).await;
    let res = client.post(&gw.url(), "/v1/messages", &[], MESSAGE).await;
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["x-tollgate-origin"], "upstream");
    assert!(res.headers().contains_key("x-tollgate-attempts"));
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, fixtures::F7_500.body.as_bytes());
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let mock = start_mock().await;
    let mut config = common::config(UpstreamConfig::new("m", &mock.url(), common::UPSTREAM_KEY));
    config.retry.max_attempts = 3;
    let (gw, client) = start(config).await;
    for status in ["400", "401", "403", "404", "413"] {
        let res = client
            .post(
                &gw.url(),
                "/v1/messages",
                &[("x-mock-status", status)],
                MESSAGE,
            )
            .await;
        assert_eq!(res.status().as_str(), status);
    }
    assert_eq!(mock.request_count(), 5, "one attempt each");
}

#[tokio::test]
async fn stream_failing_before_content_is_retried_invisibly() {
    let mock = start_mock().await;
    let mut config = common::config(UpstreamConfig::new("m", &mock.url(), common::UPSTREAM_KEY));
    config.retry.max_attempts = 3;
    config.retry.base_delay_ms = 10;
    let (gw, client) = start(config).await;
    // The first attempt errors right after message_start (0 deltas), the second succeeds.
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[
                ("x-mock-stream-error-after", "0"),
                ("x-mock-fail-times", "1"),
                ("x-mock-scenario", "stream-early"),
            ],
            STREAM_MESSAGE,
        )
        .await;
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
    assert_eq!(text.matches("event: message_start").count(), 1, "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(!text.contains("event: error"), "{text}");
}

#[tokio::test]
async fn stream_failing_after_content_ends_with_an_error_event_and_is_not_retried() {
    let mock = start_mock().await;
    let mut config = common::config(UpstreamConfig::new("m", &mock.url(), common::UPSTREAM_KEY));
    config.retry.max_attempts = 3;
    let (gw, client) = start(config).await;
    let res = client
        .post(
            &gw.url(),
            "/v1/messages",
            &[("x-mock-stream-error-after", "2")],
            STREAM_MESSAGE,
        )
        .await;
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
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("overloaded_error"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn a_dead_first_route_fails_over_to_the_second() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let b = start_mock().await;
    let mut config = common::config(UpstreamConfig::new(
        "dead",
        &format!("http://127.0.0.1:{port}"),
        common::UPSTREAM_KEY,
    ));
    config
        .upstreams
        .push(UpstreamConfig::new("b", &b.url(), common::UPSTREAM_KEY));
    config.retry.max_attempts = 2;
    let (gw, client) = start(config).await;
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        client.post(&gw.url(), "/v1/messages", &[], MESSAGE),
    )
    .await
    .expect("answered");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-tollgate-route"], "b");
    let json = body_json(res).await;
    assert_eq!(json["type"], "message");
}
