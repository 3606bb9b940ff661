//! The mock over real sockets on 127.0.0.1, driven by a hyper-util client (and a raw
//! TCP stream where bytes on the wire matter).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_mock::fixtures::{self, Fixture};
use tollgate_mock::{MockOptions, MockServer};

const MESSAGE: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":1024,"messages":[{"role":"user","content":"Hello, Claude"}]}"#;
const STREAM: &str = r#"{"model":"claude-haiku-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;

// ===== helpers =====

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// SSE events as (event name or "", data parsed as JSON or as a string).
    fn events(&self) -> Vec<(String, Value)> {
        std::str::from_utf8(&self.body)
            .unwrap()
            .split_terminator("\n\n")
            .map(|event| {
                let mut name = String::new();
                let mut data = Value::Null;
                for line in event.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.to_owned();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.into()));
                    }
                }
                (name, data)
            })
            .collect()
    }
}

fn request(
    mock: &MockServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{}{path}", mock.url()))
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::from(body.to_owned())).unwrap()
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Reply {
    let res = client.request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn post(mock: &MockServer, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    send(&client(), request(mock, Method::POST, path, headers, body)).await
}

async fn get(mock: &MockServer, path: &str) -> Reply {
    send(&client(), request(mock, Method::GET, path, &[], "")).await
}

async fn start() -> MockServer {
    MockServer::start(MockOptions::new()).await.unwrap()
}

fn assert_fixture(reply: &Reply, f: &Fixture) {
    assert_eq!(reply.status.as_u16(), f.status, "{}", f.name);
    assert_eq!(reply.body, f.body.as_bytes(), "{}", f.name);
    for (name, value) in f.headers {
        assert_eq!(reply.header(name), *value, "{} header {name}", f.name);
    }
}

/// Sends `request` on a fresh TCP connection and returns everything until close.
async fn raw(mock: &MockServer, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

// ===== error fixtures =====

#[tokio::test]
async fn each_fixture_status_replies_with_the_fixture_body_and_headers() {
    let mock = start().await;
    for f in [
        &fixtures::F1_401,
        &fixtures::F2_402,
        &fixtures::F3_403,
        &fixtures::F4_413,
        &fixtures::F5_429,
        &fixtures::F7_500,
        &fixtures::F7_529,
    ] {
        let status = f.status.to_string();
        let reply = post(
            &mock,
            "/v1/messages",
            &[("x-mock-status", &status)],
            MESSAGE,
        )
        .await;
        assert_fixture(&reply, f);
        assert_eq!(reply.header("content-length"), f.body.len().to_string());
    }
}

#[tokio::test]
async fn fixture_error_head_is_the_fixture_head_on_the_wire() {
    let mock = start().await;
    let wire = raw(
        &mock,
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-mock-status: 429\r\n\
         content-length: 2\r\n\r\n{}",
    )
    .await;
    let (head, body) = wire.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{head}"
    );
    let lines: Vec<&str> = head.lines().skip(1).collect();
    let content_length = format!("content-length: {}", fixtures::F5_429.body.len());
    assert!(lines.contains(&content_length.as_str()), "{head}");
    // Apart from hyper's framing headers, the head is the fixture's, in its order.
    let rest: Vec<&str> = lines
        .into_iter()
        .filter(|l| {
            !["date:", "content-length:", "connection:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    let expected: Vec<String> = fixtures::F5_429
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect();
    assert_eq!(rest, expected);
    assert_eq!(body, fixtures::F5_429.body);
}

#[tokio::test]
async fn spend_cap_error_code_turns_a_429_into_f6() {
    let mock = start().await;
    let reply = post(
        &mock,
        "/v1/messages",
        &[
            ("x-mock-status", "429"),
            ("x-mock-error-code", "enforced_spend_limit_reached"),
        ],
        MESSAGE,
    )
    .await;
    assert_fixture(&reply, &fixtures::F6_429_SPEND_CAP);
    assert!(reply.headers.get("retry-after").is_none());
}

#[tokio::test]
async fn other_error_code_goes_into_details() {
    let mock = start().await;
    let reply = post(
        &mock,
        "/v1/messages",
        &[
            ("x-mock-status", "400"),
            ("x-mock-error-code", "organization_on_hold"),
        ],
        MESSAGE,
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json()["error"]["details"]["error_code"],
        "organization_on_hold"
    );
}

#[tokio::test]
async fn statuses_without_fixture_get_an_envelope_with_a_fresh_request_id() {
    let mock = start().await;
    for (status, kind) in [
        (400, "invalid_request_error"),
        (404, "not_found_error"),
        (408, "timeout_error"),
        (409, "conflict_error"),
        (422, "invalid_request_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (599, "api_error"),
    ] {
        let s = status.to_string();
        let a = post(&mock, "/v1/messages", &[("x-mock-status", &s)], MESSAGE).await;
        let b = post(&mock, "/v1/messages", &[("x-mock-status", &s)], MESSAGE).await;
        assert_eq!(a.status.as_u16(), status);
        assert_eq!(a.header("content-type"), "application/json");
        let body = a.json();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], kind, "status {status}");
        assert!(body["error"]["message"].is_string());
        assert_eq!(body["request_id"], a.header("request-id"));
        assert!(a.header("request-id").starts_with("req_mock_"));
        assert_ne!(a.header("request-id"), b.header("request-id"));
    }
}

#[tokio::test]
async fn retry_after_header_is_added_to_error_replies() {
    let mock = start().await;
    let reply = post(
        &mock,
        "/v1/messages",
        &[("x-mock-status", "503"), ("x-mock-retry-after", "3")],
        MESSAGE,
    )
    .await;
    assert_eq!(reply.header("retry-after"), "3");

    let f5 = post(&mock, "/v1/messages", &[("x-mock-status", "429")], MESSAGE).await;
    assert_eq!(f5.header("retry-after"), "7");
    let overridden = post(
        &mock,
        "/v1/messages",
        &[("x-mock-status", "429"), ("x-mock-retry-after", "2")],
        MESSAGE,
    )
    .await;
    assert_eq!(overridden.header("retry-after"), "2");
    assert_eq!(overridden.body, fixtures::F5_429.body.as_bytes());
}

#[tokio::test]
async fn html_error_format_sends_a_text_html_page() {
    let mock = start().await;
    let reply = post(
        &mock,
        "/v1/messages",
        &[("x-mock-status", "502"), ("x-mock-error-format", "html")],
        MESSAGE,
    )
    .await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.header("content-type"), "text/html");
    assert!(
        std::str::from_utf8(&reply.body)
            .unwrap()
            .contains("<h1>502 Bad Gateway</h1>")
    );
}

// ===== scripting =====

#[tokio::test]
async fn fail_times_fails_the_first_n_of_a_scenario_then_succeeds() {
    let mock = start().await;
    let headers = [("x-mock-fail-times", "2"), ("x-mock-scenario", "retry-1")];
    let statuses = [
        post(&mock, "/v1/messages", &headers, MESSAGE).await.status,
        post(&mock, "/v1/messages", &headers, MESSAGE).await.status,
        post(&mock, "/v1/messages", &headers, MESSAGE).await.status,
        post(&mock, "/v1/messages", &headers, MESSAGE).await.status,
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [529, 529, 200, 200]);
}

#[tokio::test]
async fn fail_times_counts_each_scenario_separately_and_uses_x_mock_status() {
    let mock = start().await;
    let a = [
        ("x-mock-fail-times", "1"),
        ("x-mock-scenario", "a"),
        ("x-mock-status", "500"),
    ];
    let b = [("x-mock-fail-times", "1"), ("x-mock-scenario", "b")];
    assert_eq!(post(&mock, "/v1/messages", &a, MESSAGE).await.status, 500);
    assert_eq!(post(&mock, "/v1/messages", &b, MESSAGE).await.status, 529);
    assert_eq!(post(&mock, "/v1/messages", &a, MESSAGE).await.status, 200);
    assert_eq!(post(&mock, "/v1/messages", &b, MESSAGE).await.status, 200);
    mock.reset_scenarios();
    assert_eq!(post(&mock, "/v1/messages", &a, MESSAGE).await.status, 500);
}

#[tokio::test]
async fn default_header_makes_an_instance_always_fail() {
    let mock = MockServer::start(
        MockOptions::new()
            .default_header("x-mock-status", "529")
            .name("route-b"),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let reply = post(&mock, "/v1/messages", &[], MESSAGE).await;
        assert_fixture(&reply, &fixtures::F7_529);
        assert_eq!(reply.header("x-mock-name"), "route-b");
    }
}

#[tokio::test]
async fn request_header_overrides_default_header() {
    let mock = MockServer::start(MockOptions::new().default_header("x-mock-status", "529"))
        .await
        .unwrap();
    let ok = post(&mock, "/v1/messages", &[("x-mock-status", "200")], MESSAGE).await;
    assert_eq!(ok.status, 200);
    let other = post(&mock, "/v1/messages", &[("x-mock-status", "401")], MESSAGE).await;
    assert_fixture(&other, &fixtures::F1_401);
}

#[tokio::test]
async fn unknown_default_header_fails_start() {
    let err = MockServer::start(MockOptions::new().default_header("x-mock-stauts", "529"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("x-mock-stauts"), "{err}");
}

#[tokio::test]
async fn unknown_mock_header_is_a_400_naming_it() {
    let mock = start().await;
    let reply = post(&mock, "/v1/messages", &[("x-mock-statu", "529")], MESSAGE).await;
    assert_eq!(reply.status, 400);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("x-mock-statu"), "{message}");
}

#[tokio::test]
async fn latency_delays_the_response_head() {
    let mock = start().await;
    let client = client();
    let started = Instant::now();
    let res = client
        .request(request(
            &mock,
            Method::POST,
            "/v1/messages",
            &[("x-mock-latency-ms", "60")],
            MESSAGE,
        ))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(res.status(), 200);
}

// ===== successful replies =====

#[tokio::test]
async fn message_echoes_model_with_realistic_usage_and_headers() {
    let mock = start().await;
    let reply = post(
        &mock,
        "/v1/messages",
        &[("x-mock-output-tokens", "5")],
        MESSAGE,
    )
    .await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["model"], "claude-sonnet-4-6");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["content"][0]["type"], "text");
    assert_eq!(body["usage"]["input_tokens"], MESSAGE.len().div_ceil(4));
    assert_eq!(body["usage"]["output_tokens"], 5);
    assert_eq!(body["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(body["usage"]["cache_read_input_tokens"], 0);

    let id = reply.header("request-id");
    assert_eq!(id.len(), "req_mock_".len() + 20);
    assert!(
        id["req_mock_".len()..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric())
    );
    for kind in ["requests", "input-tokens", "output-tokens", "tokens"] {
        for part in ["limit", "remaining"] {
            let value = reply.header(&format!("anthropic-ratelimit-{kind}-{part}"));
            assert!(value.parse::<u64>().is_ok(), "{kind}-{part}: {value:?}");
        }
        let reset = reply.header(&format!("anthropic-ratelimit-{kind}-reset"));
        assert!(
            reset.len() == 20 && reset.ends_with('Z') && reset.as_bytes()[10] == b'T',
            "{reset}"
        );
    }
    let again = post(&mock, "/v1/messages", &[], MESSAGE).await;
    assert_ne!(again.header("request-id"), id);
    assert_eq!(again.json()["usage"]["output_tokens"], 16);
}

#[tokio::test]
async fn max_tokens_caps_output_and_sets_stop_reason() {
    let mock = start().await;
    let body = r#"{"model":"m","max_tokens":3,"messages":[]}"#;
    let reply = post(
        &mock,
        "/v1/messages",
        &[("x-mock-output-tokens", "10")],
        body,
    )
    .await;
    assert_eq!(reply.json()["usage"]["output_tokens"], 3);
    assert_eq!(reply.json()["stop_reason"], "max_tokens");
}

#[tokio::test]
async fn invalid_json_is_a_400_invalid_request_error() {
    let mock = start().await;
    let reply = post(&mock, "/v1/messages", &[], "{\"model\":").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    assert_eq!(reply.json()["request_id"], reply.header("request-id"));
}

#[tokio::test]
async fn unknown_path_is_a_404_not_found_error() {
    let mock = start().await;
    let reply = post(&mock, "/v1/complete", &[], MESSAGE).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn count_tokens_answers_input_tokens() {
    let mock = start().await;
    let reply = post(&mock, "/v1/messages/count_tokens", &[], MESSAGE).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        serde_json::json!({"input_tokens": MESSAGE.len().div_ceil(4)})
    );
}

#[tokio::test]
async fn models_list_and_one_model() {
    let mock = start().await;
    let list = get(&mock, "/v1/models").await.json();
    assert_eq!(list["has_more"], false);
    let data = list["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert_eq!(list["first_id"], data[0]["id"]);
    assert_eq!(list["last_id"], data[data.len() - 1]["id"]);

    let id = data[0]["id"].as_str().unwrap();
    let one = get(&mock, &format!("/v1/models/{id}")).await;
    assert_eq!(one.json()["type"], "model");
    assert_eq!(one.json()["id"], id);
    assert_eq!(get(&mock, "/v1/models/no-such-model").await.status, 404);
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let mock = start().await;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let reply = send(
        &client,
        request(&mock, Method::POST, "/v1/messages", &[], MESSAGE),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["type"], "message");
}

// ===== streams =====

#[tokio::test]
async fn stream_follows_the_real_event_sequence_with_cumulative_usage() {
    let mock = start().await;
    let reply = post(
        &mock,
        "/v1/messages",
        &[("x-mock-output-tokens", "4")],
        STREAM,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(reply.header("cache-control"), "no-cache");
    assert!(reply.header("request-id").starts_with("req_mock_"));

    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    let start = &events[0].1["message"];
    assert_eq!(start["model"], "claude-haiku-4-5");
    assert_eq!(start["usage"]["input_tokens"], STREAM.len().div_ceil(4));
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(events[8].1["usage"]["output_tokens"], 4);
    assert_eq!(events[8].1["delta"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn stream_error_after_n_deltas_ends_with_an_overloaded_error_event() {
    let mock = start().await;
    let reply = post(
        &mock,
        "/v1/messages",
        &[("x-mock-stream-error-after", "2")],
        STREAM,
    )
    .await;
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "error",
        ]
    );
    let error = &events[5].1;
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert_eq!(error["error"]["message"], "Overloaded");
    assert_eq!(error["request_id"], reply.header("request-id"));
}

#[tokio::test]
async fn fail_times_with_stream_error_after_fails_only_the_first_streams() {
    let mock = start().await;
    let headers = [
        ("x-mock-stream-error-after", "0"),
        ("x-mock-fail-times", "1"),
        ("x-mock-scenario", "stream-once"),
    ];
    let first = post(&mock, "/v1/messages", &headers, STREAM).await;
    assert_eq!(first.status, 200);
    let names: Vec<String> = first.events().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.last().map(String::as_str), Some("error"));
    let second = post(&mock, "/v1/messages", &headers, STREAM).await;
    let names: Vec<String> = second.events().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
}

#[tokio::test]
async fn fixture_f8_replay_is_byte_identical() {
    let mock = start().await;
    let wire = raw(
        &mock,
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-mock-fixture: f8\r\n\
         content-length: 2\r\n\r\n{}",
    )
    .await;
    let (head, _) = wire.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(head.contains("\r\ntransfer-encoding: chunked"));
    for (name, value) in fixtures::F8_STREAM.headers {
        assert!(
            head.contains(&format!("\r\n{name}: {value}")),
            "{name} missing in {head}"
        );
    }

    let reply = post(&mock, "/v1/messages", &[("x-mock-fixture", "f8")], STREAM).await;
    assert_eq!(reply.body.len(), 983);
    assert_fixture(&reply, &fixtures::F8_STREAM);
}

#[tokio::test]
async fn fixture_f9_replay_is_byte_identical() {
    let mock = start().await;
    let reply = post(&mock, "/v1/messages", &[("x-mock-fixture", "f9")], STREAM).await;
    assert_eq!(reply.body.len(), 708);
    assert_fixture(&reply, &fixtures::F9_STREAM_ERROR);
}

#[tokio::test]
async fn event_interval_spaces_out_stream_events() {
    let mock = start().await;
    let client = client();
    let res = client
        .request(request(
            &mock,
            Method::POST,
            "/v1/messages",
            &[
                ("x-mock-output-tokens", "1"),
                ("x-mock-event-interval-ms", "15"),
            ],
            STREAM,
        ))
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"event: message_start\n"));
    // The first event arrives on its own; the other six follow, 15 ms apart.
    let started = Instant::now();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest.windows(2).filter(|w| w == b"\n\n").count(), 6);
    // Six gaps of 15 ms; allow for the first event's own delivery time.
    assert!(
        started.elapsed() >= Duration::from_millis(5 * 15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn cancelled_stream_is_counted_when_the_client_drops_the_body() {
    let mock = start().await;
    let client = client();
    let res = client
        .request(request(
            &mock,
            Method::POST,
            "/v1/messages",
            &[
                ("x-mock-output-tokens", "1000"),
                ("x-mock-event-interval-ms", "10"),
            ],
            STREAM,
        ))
        .await
        .unwrap();
    let mut body = res.into_body();
    let _first = body.frame().await.unwrap().unwrap();
    assert_eq!(mock.cancelled_streams(), 0);
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), mock.wait_cancelled_streams(1))
        .await
        .unwrap();
    assert_eq!(mock.cancelled_streams(), 1);
}

#[tokio::test]
async fn completed_stream_is_not_counted_as_cancelled() {
    let mock = start().await;
    post(&mock, "/v1/messages", &[], STREAM).await;
    post(&mock, "/v1/chat/completions", &[], STREAM).await;
    assert_eq!(mock.cancelled_streams(), 0);
}

// ===== OpenAI dialect =====

#[tokio::test]
async fn chat_completion_has_the_openai_shape() {
    let mock = start().await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#;
    let reply = post(
        &mock,
        "/v1/chat/completions",
        &[("x-mock-output-tokens", "3")],
        body,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("x-request-id").starts_with("req_mock_"));
    let json = reply.json();
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["model"], "gpt-4o");
    assert_eq!(json["choices"][0]["message"]["role"], "assistant");
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
    let input = body.len().div_ceil(4) as u64;
    assert_eq!(json["usage"]["prompt_tokens"], input);
    assert_eq!(json["usage"]["completion_tokens"], 3);
    assert_eq!(json["usage"]["total_tokens"], input + 3);
}

#[tokio::test]
async fn chat_stream_sends_chunks_a_usage_chunk_and_done() {
    let mock = start().await;
    let body =
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let reply = post(
        &mock,
        "/v1/chat/completions",
        &[("x-mock-output-tokens", "2")],
        body,
    )
    .await;
    assert_eq!(
        reply.header("content-type"),
        "text/event-stream; charset=utf-8"
    );
    let events = reply.events();
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(events[0].1["choices"][0]["delta"]["role"], "assistant");
    assert!(events[1].1["choices"][0]["delta"]["content"].is_string());
    assert!(events[2].1["choices"][0]["delta"]["content"].is_string());
    assert_eq!(events[3].1["choices"][0]["finish_reason"], "stop");
    assert!(events[3].1["usage"].is_null());
    assert_eq!(events[4].1["choices"], serde_json::json!([]));
    assert_eq!(events[4].1["usage"]["completion_tokens"], 2);
    assert_eq!(events[5].1, Value::String("[DONE]".into()));
    for (_, chunk) in &events[..5] {
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
}

#[tokio::test]
async fn chat_stream_without_include_usage_has_no_usage_chunk() {
    let mock = start().await;
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    let reply = post(
        &mock,
        "/v1/chat/completions",
        &[("x-mock-output-tokens", "2")],
        body,
    )
    .await;
    let events = reply.events();
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|(_, e)| e.get("usage").is_none()));
    assert_eq!(events[4].1, Value::String("[DONE]".into()));
}

#[tokio::test]
async fn chat_stream_error_is_an_error_chunk_then_done() {
    let mock = start().await;
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    let reply = post(
        &mock,
        "/v1/chat/completions",
        &[("x-mock-stream-error-after", "1")],
        body,
    )
    .await;
    let events = reply.events();
    assert_eq!(events.len(), 4);
    assert_eq!(events[2].1["error"]["type"], "overloaded_error");
    assert_eq!(events[3].1, Value::String("[DONE]".into()));
}

#[tokio::test]
async fn chat_errors_have_the_openai_shape_and_mapping() {
    let mock = start().await;
    for (asked, status, kind, code) in [
        (
            "529",
            503,
            "service_unavailable_error",
            Value::from("server_is_overloaded"),
        ),
        (
            "401",
            401,
            "invalid_request_error",
            Value::from("invalid_api_key"),
        ),
        (
            "402",
            429,
            "insufficient_quota",
            Value::from("insufficient_quota"),
        ),
        ("429", 429, "requests", Value::from("rate_limit_exceeded")),
        ("500", 500, "server_error", Value::Null),
        ("504", 504, "server_error", Value::from("timeout")),
    ] {
        let reply = post(
            &mock,
            "/v1/chat/completions",
            &[("x-mock-status", asked)],
            "{}",
        )
        .await;
        assert_eq!(reply.status.as_u16(), status, "{asked}");
        let json = reply.json();
        let error = json.as_object().unwrap();
        assert_eq!(error.len(), 1, "only `error` at top level: {json}");
        assert_eq!(json["error"]["type"], kind, "{asked}");
        assert_eq!(json["error"]["code"], code, "{asked}");
        assert!(json["error"]["param"].is_null());
        assert!(json["error"]["message"].is_string());
        assert!(reply.header("x-request-id").starts_with("req_mock_"));
        assert!(reply.headers.get("request-id").is_none());
    }
    let quota = post(
        &mock,
        "/v1/chat/completions",
        &[("x-mock-status", "402")],
        "{}",
    )
    .await;
    assert_eq!(quota.header("x-should-retry"), "false");
}

// ===== recording and lifecycle =====

#[tokio::test]
async fn recording_captures_method_path_headers_and_body() {
    let mock = start().await;
    post(
        &mock,
        "/v1/messages?beta=true",
        &[("x-api-key", "sk-test"), ("x-mock-output-tokens", "1")],
        MESSAGE,
    )
    .await;
    get(&mock, "/v1/models").await;
    let received = mock.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].method, Method::POST);
    assert_eq!(received[0].path_and_query, "/v1/messages?beta=true");
    assert_eq!(received[0].header("x-api-key"), Some("sk-test"));
    assert_eq!(received[0].body, MESSAGE.as_bytes());
    assert_eq!(received[0].json().unwrap()["model"], "claude-sonnet-4-6");
    assert_eq!(received[1].method, Method::GET);
    mock.clear();
    assert!(mock.received().is_empty());
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn recording_off_still_counts_requests() {
    let mock = MockServer::start(MockOptions::new().record(false))
        .await
        .unwrap();
    post(&mock, "/v1/messages", &[], MESSAGE).await;
    post(&mock, "/v1/messages", &[("x-mock-status", "529")], MESSAGE).await;
    assert!(mock.received().is_empty());
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn serve_stops_when_shutdown_resolves() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tollgate_mock::serve(
        listener,
        MockOptions::new(),
        async move {
            let _ = stopped.await;
        },
    ));
    let res = client()
        .request(
            Request::get(format!("http://{addr}/v1/models"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(res);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dropping_the_server_closes_the_port() {
    let mock = start().await;
    let addr = mock.addr();
    drop(mock);
    // The aborted server task drops its listener the next time the runtime polls it.
    let mut closed = false;
    for _ in 0..100 {
        tokio::task::yield_now().await;
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed);
}
