use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tollgate_core::{BoxError, Dialect, ErrorKind, GatewayError, Origin, RenderOptions};
use tower_test::mock;

use super::*;
use crate::test_support::{F5_429, F6_429_SPEND_CAP, F7_529, TestBody, fixture, parse_fixture};

const MESSAGES: &str = "/v1/messages";
const CHAT: &str = "/v1/chat/completions";

/// Send one request through `layer` to a mock upstream that answers `upstream`.
async fn relay(
    layer: PassthroughLayer,
    path: &str,
    upstream: Result<Response<TestBody>, BoxError>,
) -> Response<TestBody> {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<TestBody>, Response<TestBody>, _>(layer);
    assert!(svc.poll_ready().is_ready());
    let req = Request::post(path)
        .body(TestBody::empty())
        .expect("request");
    let fut = svc.call(req);
    let (_req, send) = handle
        .next_request()
        .await
        .expect("the request went upstream");
    match upstream {
        Ok(res) => send.send_response(res),
        Err(e) => send.send_error(e),
    }
    fut.await.expect("infallible")
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).expect("a JSON body")
}

fn html_502() -> Response<TestBody> {
    Response::builder()
        .status(502)
        .header("content-type", "text/html; charset=utf-8")
        .header("content-length", "82")
        .header("request-id", "req_up_1")
        .header("retry-after", "3")
        .header("x-should-retry", "false")
        .body(TestBody::from(
            "<html><head><title>502 Bad Gateway</title></head><body><h1>oops</h1></body></html>",
        ))
        .expect("response")
}

fn gateway_rate_limit() -> Response<TestBody> {
    let mut res: Response<TestBody> = GatewayError::new(ErrorKind::RateLimit, "slow down")
        .with_request_id("req_tg_fixed")
        .with_retry_after(Duration::from_secs(3))
        .to_response(Dialect::Anthropic, &RenderOptions::default());
    res.headers_mut().insert(
        "anthropic-ratelimit-requests-remaining",
        "0".parse().expect("value"),
    );
    res
}

// ===== upstream responses =====

#[tokio::test]
async fn upstream_529_passes_byte_identical_marked_upstream() {
    let res = relay(PassthroughLayer::new(), MESSAGES, Ok(fixture(F7_529))).await;
    let (status, mut expected, body) = parse_fixture(F7_529);
    expected.insert("x-tollgate-origin", "upstream".parse().expect("value"));
    assert_eq!(res.status(), status);
    assert_eq!(res.headers(), &expected);
    assert_eq!(res.extensions().get::<Origin>(), Some(&Origin::Upstream));
    assert_eq!(res.into_body().bytes().await, body);
}

#[tokio::test]
async fn upstream_429_keeps_retry_after_and_rate_limit_headers() {
    let res = relay(PassthroughLayer::new(), MESSAGES, Ok(fixture(F5_429))).await;
    let (_, upstream, body) = parse_fixture(F5_429);
    assert_eq!(res.status(), 429);
    for (name, value) in &upstream {
        assert_eq!(res.headers().get(name), Some(value), "{name}");
    }
    assert_eq!(res.headers()["retry-after"], "7");
    let ratelimit = res
        .headers()
        .keys()
        .filter(|n| n.as_str().starts_with("anthropic-ratelimit-"))
        .count();
    assert_eq!(ratelimit, 12);
    assert_eq!(res.into_body().bytes().await, body);
}

#[tokio::test]
async fn spend_cap_429_gains_should_retry_false_with_the_same_bytes() {
    let res = relay(
        PassthroughLayer::new(),
        MESSAGES,
        Ok(fixture(F6_429_SPEND_CAP)),
    )
    .await;
    let (_, _, body) = parse_fixture(F6_429_SPEND_CAP);
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["x-should-retry"], "false");
    assert_eq!(res.headers()["x-tollgate-origin"], "upstream");
    assert_eq!(res.into_body().bytes().await, body);
}

#[tokio::test]
async fn ordinary_429_without_should_retry_is_not_marked() {
    let mut upstream = fixture(F5_429);
    upstream.headers_mut().remove("x-should-retry");
    let res = relay(PassthroughLayer::new(), MESSAGES, Ok(upstream)).await;
    let (_, _, body) = parse_fixture(F5_429);
    assert!(res.headers().get("x-should-retry").is_none());
    assert_eq!(res.into_body().bytes().await, body);
}

fn with_proxy_and_identity_headers() -> Response<TestBody> {
    let mut res = fixture(F7_529);
    let h = res.headers_mut();
    for (name, value) in [
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("anthropic-organization-id", "org_pool"),
        ("anthropic-workspace-id", "wrkspc_pool"),
    ] {
        h.insert(name, value.parse().expect("value"));
    }
    res
}

#[tokio::test]
async fn hop_by_hop_and_upstream_identity_headers_are_stripped() {
    let res = relay(
        PassthroughLayer::new(),
        MESSAGES,
        Ok(with_proxy_and_identity_headers()),
    )
    .await;
    for name in [
        "connection",
        "x-hop",
        "keep-alive",
        "transfer-encoding",
        "anthropic-organization-id",
        "anthropic-workspace-id",
    ] {
        assert!(!res.headers().contains_key(name), "{name} was relayed");
    }
    assert_eq!(
        res.headers()["request-id"],
        "req_011CfxOvl00000000000000007"
    );
}

#[tokio::test]
async fn upstream_identity_is_kept_when_configured() {
    let layer = PassthroughLayer::new().strip_upstream_identity(false);
    let res = relay(layer, MESSAGES, Ok(with_proxy_and_identity_headers())).await;
    assert_eq!(res.headers()["anthropic-organization-id"], "org_pool");
    assert_eq!(res.headers()["anthropic-workspace-id"], "wrkspc_pool");
    assert!(!res.headers().contains_key("connection"));
}

#[tokio::test]
async fn streaming_200_body_is_not_read() {
    let (tx, body) = TestBody::channel();
    tx.send(Ok(Bytes::from_static(b"event: message_start\n\n")))
        .expect("open");
    let upstream = Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(body)
        .expect("response");
    let res = relay(PassthroughLayer::new(), MESSAGES, Ok(upstream)).await;
    assert_eq!(res.headers()["x-tollgate-origin"], "upstream");
    let mut body = res.into_body();
    assert_eq!(
        body.poll_data_now(),
        Poll::Ready(Some(Bytes::from_static(b"event: message_start\n\n")))
    );
    assert_eq!(body.poll_data_now(), Poll::Pending);
    tx.send(Ok(Bytes::from_static(b"event: ping\n\n")))
        .expect("open");
    assert_eq!(
        body.poll_data_now(),
        Poll::Ready(Some(Bytes::from_static(b"event: ping\n\n")))
    );
    drop(tx);
    assert_eq!(body.poll_data_now(), Poll::Ready(None));
}

#[tokio::test]
async fn json_error_body_is_not_read() {
    let (tx, body) = TestBody::channel();
    let upstream = Response::builder()
        .status(529)
        .header("content-type", "application/json")
        .body(body)
        .expect("response");
    // The body never ends: the response must come back anyway.
    let res = relay(PassthroughLayer::new(), MESSAGES, Ok(upstream)).await;
    assert_eq!(res.status(), 529);
    let mut body = res.into_body();
    assert_eq!(body.poll_data_now(), Poll::Pending);
    tx.send(Ok(Bytes::from_static(b"{}"))).expect("open");
    assert_eq!(
        body.poll_data_now(),
        Poll::Ready(Some(Bytes::from_static(b"{}")))
    );
}

// ===== non-JSON upstream errors =====

#[tokio::test]
async fn html_502_is_wrapped_keeping_status_and_headers() {
    let res = relay(PassthroughLayer::new(), MESSAGES, Ok(html_502())).await;
    assert_eq!(res.status(), 502);
    let h = res.headers();
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-tollgate-origin"], "upstream");
    assert_eq!(h["request-id"], "req_up_1");
    assert_eq!(h["retry-after"], "3");
    assert_eq!(h["x-should-retry"], "false");
    assert!(!h.contains_key("content-length"));
    assert_eq!(res.extensions().get::<Origin>(), Some(&Origin::Upstream));
    assert!(res.extensions().get::<GatewayError>().is_none());
    let body = json(&res.into_body().bytes().await);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "api_error");
    assert_eq!(body["request_id"], "req_up_1");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with(
            "upstream returned a non-JSON 502 response (text/html, 82 bytes): 502 Bad Gateway oops"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn html_502_passes_raw_when_configured() {
    let layer = PassthroughLayer::new().non_json_errors(NonJsonErrors::Raw);
    let res = relay(layer, MESSAGES, Ok(html_502())).await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(res.headers()["x-tollgate-origin"], "upstream");
    assert_eq!(
        res.into_body().bytes().await,
        Bytes::from_static(
            b"<html><head><title>502 Bad Gateway</title></head><body><h1>oops</h1></body></html>"
        )
    );
}

#[tokio::test]
async fn wrapped_error_keeps_an_unknown_status_in_the_openai_dialect() {
    let upstream = Response::builder()
        .status(520)
        .header("content-type", "text/plain")
        .body(TestBody::from("origin error"))
        .expect("response");
    let res = relay(PassthroughLayer::new(), CHAT, Ok(upstream)).await;
    assert_eq!(res.status(), 520);
    assert_eq!(res.headers()["x-should-retry"], "true");
    assert!(res.headers().contains_key("x-request-id"));
    let body = json(&res.into_body().bytes().await);
    assert_eq!(body["error"]["type"], "server_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("non-JSON 520 response (text/plain, 12 bytes): origin error")
    );
}

#[tokio::test]
async fn non_json_error_body_is_read_at_most_64_kib() {
    let (tx, body) = TestBody::channel();
    for _ in 0..20 {
        tx.send(Ok(Bytes::from(vec![b'x'; 4096]))).expect("open");
    }
    let upstream = Response::builder()
        .status(503)
        .body(body)
        .expect("response");
    // The sender stays open: the body never ends, yet the wrap completes.
    let res = relay(PassthroughLayer::new(), MESSAGES, Ok(upstream)).await;
    assert_eq!(res.status(), 503);
    let body = json(&res.into_body().bytes().await);
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with(
            "upstream returned a non-JSON 503 response (no content-type, more than 65536 bytes): xxx"
        ),
        "{message}"
    );
    drop(tx);
}

#[tokio::test]
async fn mislabelled_json_envelope_passes_as_sent() {
    let (_, _, envelope) = parse_fixture(F7_529);
    let upstream = Response::builder()
        .status(529)
        .header("content-type", "text/plain")
        .body(TestBody::from(envelope.clone()))
        .expect("response");
    let res = relay(PassthroughLayer::new(), MESSAGES, Ok(upstream)).await;
    assert_eq!(res.headers()["content-type"], "text/plain");
    assert_eq!(res.into_body().bytes().await, envelope);
}

// ===== transport failures =====

#[tokio::test]
async fn connect_error_becomes_502_with_should_retry_true() {
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    let res = relay(PassthroughLayer::new(), MESSAGES, Err(refused.into())).await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(res.headers()["x-should-retry"], "true");
    assert_eq!(res.headers()["x-tollgate-origin"], "gateway");
    assert_eq!(res.extensions().get::<Origin>(), Some(&Origin::Gateway));
    let body = json(&res.into_body().bytes().await);
    assert_eq!(body["error"]["type"], "api_error");
    assert_eq!(
        body["error"]["message"],
        "could not connect to the upstream (connection refused); retry shortly — if it persists the gateway's upstream is down"
    );
}

#[tokio::test]
async fn tower_timeout_becomes_504_timeout_error() {
    let elapsed = tower::timeout::error::Elapsed::new();
    let res = relay(PassthroughLayer::new(), MESSAGES, Err(elapsed.into())).await;
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.headers()["x-should-retry"], "true");
    let body = json(&res.into_body().bytes().await);
    assert_eq!(body["error"]["type"], "timeout_error");
}

#[tokio::test]
async fn transport_error_on_chat_completions_renders_openai_shape() {
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    let res = relay(PassthroughLayer::new(), CHAT, Err(reset.into())).await;
    assert_eq!(res.status(), 502);
    assert!(res.headers().contains_key("x-request-id"));
    assert!(!res.headers().contains_key("request-id"));
    let body = json(&res.into_body().bytes().await);
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(body["error"]["code"], "bad_gateway");
    assert!(body.get("type").is_none());
}

#[tokio::test]
async fn transport_error_message_never_echoes_url_credentials() {
    let err: BoxError =
        "error sending request for url (https://user:sk-secret@up.example/v1/messages?key=sk-2)"
            .into();
    let res = relay(PassthroughLayer::new(), MESSAGES, Err(err)).await;
    let body = res.into_body().bytes().await;
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("sk-"), "{text}");
    assert!(text.contains("https://up.example/v1/messages"), "{text}");
}

#[tokio::test]
async fn classified_client_transport_error_keeps_its_kind() {
    let err = crate::ClientError::Transport(tollgate_core::TransportError::new(
        tollgate_core::TransportErrorKind::Timeout,
        "no response head within 600 s",
    ));
    let res = relay(PassthroughLayer::new(), MESSAGES, Err(err.into())).await;
    assert_eq!(res.status(), 504);
    let body = json(&res.into_body().bytes().await);
    assert_eq!(
        body["error"]["message"],
        "the upstream did not answer in time (no response head within 600 s); retry, and use streaming for long generations"
    );
}

#[tokio::test]
async fn inner_readiness_failure_is_answered_as_502() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<TestBody>, Response<TestBody>, _>(PassthroughLayer::new());
    handle.send_error(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert!(matches!(svc.poll_ready(), Poll::Ready(Ok(()))));
    let req = Request::post(MESSAGES)
        .body(TestBody::empty())
        .expect("request");
    let res = svc.call(req).await.expect("infallible");
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["x-should-retry"], "true");
}

#[tokio::test]
async fn readiness_follows_the_inner_service() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<TestBody>, Response<TestBody>, _>(PassthroughLayer::new());
    handle.allow(0);
    assert!(svc.poll_ready().is_pending());
    handle.allow(1);
    assert!(svc.is_woken());
    assert!(svc.poll_ready().is_ready());
}

// ===== gateway errors =====

#[tokio::test]
async fn gateway_error_is_untouched_by_default() {
    let original = gateway_rate_limit();
    let headers = original.headers().clone();
    let body = original.body_ref_bytes();
    let res = relay(PassthroughLayer::new(), MESSAGES, Ok(original)).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers(), &headers);
    assert_eq!(res.into_body().bytes().await, body);
}

#[tokio::test]
async fn gateway_error_is_rerendered_with_prefix_when_configured() {
    let layer = PassthroughLayer::new().render_options(RenderOptions { type_prefix: true });
    let res = relay(layer, MESSAGES, Ok(gateway_rate_limit())).await;
    assert_eq!(res.status(), 429);
    let h = res.headers();
    assert_eq!(h["request-id"], "req_tg_fixed");
    assert_eq!(h["retry-after"], "3");
    assert_eq!(h["anthropic-ratelimit-requests-remaining"], "0");
    assert_eq!(h["x-tollgate-origin"], "gateway");
    let body = json(&res.into_body().bytes().await);
    assert_eq!(body["error"]["type"], "gateway_rate_limit_error");
    assert_eq!(body["request_id"], "req_tg_fixed");
}

#[tokio::test]
async fn gateway_error_is_rerendered_in_the_request_dialect() {
    let billing: Response<TestBody> = GatewayError::new(ErrorKind::Billing, "balance too low")
        .with_request_id("req_tg_bill")
        .to_response(Dialect::Anthropic, &RenderOptions::default());
    let res = relay(PassthroughLayer::new(), CHAT, Ok(billing)).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["x-request-id"], "req_tg_bill");
    assert!(!res.headers().contains_key("request-id"));
    assert_eq!(res.headers()["x-should-retry"], "false");
    let body = json(&res.into_body().bytes().await);
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(body["error"]["message"], "balance too low");
}

// ===== configuration =====

#[test]
fn empty_errors_table_gives_the_defaults() {
    let cfg: PassthroughConfig = toml::from_str("").expect("valid");
    assert_eq!(cfg, PassthroughConfig::default());
    assert!(!cfg.type_prefix);
    assert_eq!(cfg.non_json_errors, NonJsonErrors::Wrap);
    assert!(cfg.strip_upstream_identity);
}

#[test]
fn errors_table_reads_every_key() {
    let cfg: PassthroughConfig = toml::from_str(
        "type_prefix = true\nnon_json_errors = \"raw\"\nstrip_upstream_identity = false",
    )
    .expect("valid");
    assert_eq!(
        cfg,
        PassthroughConfig {
            type_prefix: true,
            non_json_errors: NonJsonErrors::Raw,
            strip_upstream_identity: false,
        }
    );
}

#[test]
fn unknown_errors_keys_are_rejected() {
    let err = toml::from_str::<PassthroughConfig>("non_json = \"raw\"").expect_err("unknown key");
    assert!(err.to_string().contains("non_json"), "{err}");
}

/// The bytes of a complete test body, without consuming the response.
trait BodyBytes {
    fn body_ref_bytes(&self) -> Bytes;
}

impl BodyBytes for Response<TestBody> {
    fn body_ref_bytes(&self) -> Bytes {
        match self.body() {
            TestBody::Full(Some(b)) => b.clone(),
            _ => Bytes::new(),
        }
    }
}
