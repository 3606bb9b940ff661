use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tollgate_core::{BoxError, Domain, ErrorKind, Origin, TransportErrorKind};
use tower_test::mock;

use super::*;
use crate::test_support::{
    F1_401, F2_402, F3_403, F4_413, F5_429, F6_429_SPEND_CAP, F7_500, F7_529, TestBody, fixture,
    parse_fixture,
};

/// Send one request through `layer` to a mock that answers `upstream`.
async fn call(
    layer: ClassifyLayer,
    upstream: Result<Response<TestBody>, BoxError>,
) -> Result<Response<TestBody>, ClientError> {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<TestBody>, Response<TestBody>, _>(layer);
    assert!(matches!(svc.poll_ready(), Poll::Ready(Ok(()))));
    let req = Request::post("https://api.anthropic.com/v1/messages")
        .body(TestBody::empty())
        .expect("request");
    let fut = svc.call(req);
    let (_req, send) = handle.next_request().await.expect("the request was sent");
    match upstream {
        Ok(res) => send.send_response(res),
        Err(e) => send.send_error(e),
    }
    fut.await
}

async fn api_error(res: Response<TestBody>) -> ApiError {
    match call(ClassifyLayer::new(), Ok(res)).await {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn fixtures_become_api_errors_of_their_table_kind() {
    let cases = [
        (
            F1_401,
            ErrorKind::Authentication,
            Some("req_011CfxAuth0000000000000001"),
            false,
        ),
        (
            F2_402,
            ErrorKind::Billing,
            Some("req_011CfxBill0000000000000002"),
            false,
        ),
        (
            F3_403,
            ErrorKind::Permission,
            Some("req_011CfxPerm0000000000000003"),
            false,
        ),
        (F4_413, ErrorKind::RequestTooLarge, None, false),
        (
            F5_429,
            ErrorKind::RateLimit,
            Some("req_011CfxRate0000000000000004"),
            true,
        ),
        (
            F6_429_SPEND_CAP,
            ErrorKind::RateLimit,
            Some("req_011CfxCap00000000000000005"),
            true,
        ),
        (
            F7_500,
            ErrorKind::Api,
            Some("req_011CfxApi00000000000000006"),
            true,
        ),
        (
            F7_529,
            ErrorKind::Overloaded,
            Some("req_011CfxOvl00000000000000007"),
            true,
        ),
    ];
    for (raw, kind, request_id, should_retry) in cases {
        let (status, headers, body) = parse_fixture(raw);
        let err = api_error(fixture(raw)).await;
        assert_eq!(err.status, status);
        assert_eq!(err.kind, kind, "{status}");
        assert_eq!(err.request_id.as_deref(), request_id, "{status}");
        assert_eq!(err.should_retry, should_retry, "{status}");
        assert_eq!(err.error_type.as_deref(), Some(kind.class().anthropic_type));
        assert_eq!(err.origin, Origin::Upstream);
        assert_eq!(err.headers, headers);
        assert_eq!(err.raw, body);
    }
}

#[tokio::test]
async fn f5_retry_after_is_seven_seconds() {
    let err = api_error(fixture(F5_429)).await;
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(err.domain(), Domain::Traffic);
}

#[tokio::test]
async fn f6_spend_cap_has_no_wait_and_its_error_code() {
    let err = api_error(fixture(F6_429_SPEND_CAP)).await;
    assert_eq!(err.retry_after, None);
    assert_eq!(
        err.error_code.as_deref(),
        Some("enforced_spend_limit_reached")
    );
    assert!(
        err.is_retryable(),
        "no x-should-retry: the table says 429 is retryable"
    );
}

#[tokio::test]
async fn x_should_retry_false_overrides_the_table() {
    let mut res = fixture(F6_429_SPEND_CAP);
    res.headers_mut()
        .insert("x-should-retry", "false".parse().expect("value"));
    let err = api_error(res).await;
    assert!(!err.is_retryable());
    assert!(!ClientError::Api(err).is_retryable());
}

#[tokio::test]
async fn f4_without_request_id_has_none() {
    let err = api_error(fixture(F4_413)).await;
    assert_eq!(err.request_id, None);
    assert_eq!(
        err.message,
        "Request exceeds the maximum allowed number of bytes."
    );
}

#[tokio::test]
async fn display_reads_status_type_message_and_request_id() {
    let err = api_error(fixture(F5_429)).await;
    assert_eq!(
        err.to_string(),
        "429 rate_limit_error: This request would exceed your organization's rate limit of 1,000 requests per minute. (request-id req_011CfxRate0000000000000004)"
    );
}

#[tokio::test]
async fn openai_error_envelope_parses() {
    let res = Response::builder()
        .status(429)
        .header("content-type", "application/json")
        .header("x-request-id", "req_oai_1")
        .header("retry-after-ms", "1500")
        .body(TestBody::from(
            r#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        ))
        .expect("response");
    let err = api_error(res).await;
    assert_eq!(err.kind, ErrorKind::RateLimit);
    assert_eq!(err.error_type.as_deref(), Some("requests"));
    assert_eq!(err.error_code.as_deref(), Some("rate_limit_exceeded"));
    assert_eq!(err.message, "Rate limit reached for requests");
    assert_eq!(err.request_id.as_deref(), Some("req_oai_1"));
    assert_eq!(err.retry_after, Some(Duration::from_millis(1500)));
}

#[tokio::test]
async fn openai_insufficient_quota_is_billing() {
    let res = Response::builder()
        .status(429)
        .header("content-type", "application/json")
        .body(TestBody::from(
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
        ))
        .expect("response");
    let err = api_error(res).await;
    assert_eq!(err.kind, ErrorKind::Billing);
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn non_json_body_keeps_raw_bytes_and_is_described() {
    let page = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>";
    let res = Response::builder()
        .status(503)
        .header("content-type", "text/html")
        .body(TestBody::from(page))
        .expect("response");
    let err = api_error(res).await;
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert_eq!(err.raw, Bytes::from_static(page.as_bytes()));
    assert_eq!(err.error_type, None);
    assert_eq!(
        err.message,
        "the server returned a non-JSON 503 response (text/html, 70 bytes): 503 Service Temporarily Unavailable"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn gateway_origin_header_marks_a_gateway_error() {
    let mut res = fixture(F5_429);
    res.headers_mut()
        .insert("x-tollgate-origin", "gateway".parse().expect("value"));
    assert_eq!(api_error(res).await.origin, Origin::Gateway);
}

#[tokio::test]
async fn error_body_is_kept_to_one_mib() {
    let (tx, body) = TestBody::channel();
    for _ in 0..17 {
        tx.send(Ok(Bytes::from(vec![b'x'; 64 * 1024])))
            .expect("open");
    }
    let res = Response::builder()
        .status(500)
        .body(body)
        .expect("response");
    // The sender stays open: reading must stop at the limit, not at the end.
    let err = api_error(res).await;
    assert_eq!(err.raw.len(), 1024 * 1024);
    drop(tx);
}

#[tokio::test]
async fn ok_response_passes_through_unread() {
    let (tx, body) = TestBody::channel();
    tx.send(Ok(Bytes::from_static(b"event: message_start\n\n")))
        .expect("open");
    let res = Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .expect("response");
    let res = call(ClassifyLayer::new(), Ok(res)).await.expect("a 200");
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    assert_eq!(
        body.poll_data_now(),
        Poll::Ready(Some(Bytes::from_static(b"event: message_start\n\n")))
    );
    assert_eq!(body.poll_data_now(), Poll::Pending);
    drop(tx);
}

#[tokio::test]
async fn pass_error_responses_returns_them_untouched() {
    let (status, headers, body) = parse_fixture(F7_529);
    let res = call(
        ClassifyLayer::new().pass_error_responses(true),
        Ok(fixture(F7_529)),
    )
    .await
    .expect("error responses are passed on");
    assert_eq!(res.status(), status);
    assert_eq!(res.headers(), &headers);
    assert_eq!(res.into_body().bytes().await, body);
}

#[tokio::test]
async fn transport_error_is_classified_and_retryable() {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let err = call(ClassifyLayer::new(), Err(refused.into()))
        .await
        .expect_err("a transport error");
    let ClientError::Transport(t) = &err else {
        panic!("expected a transport error, got {err:?}");
    };
    assert_eq!(t.kind(), TransportErrorKind::Connect);
    assert!(err.is_retryable());
    assert_eq!(err.status(), None);
}

/// An inner layer's own refusal, carried as the source of its error type.
#[derive(Debug)]
struct LocalRefusal(tollgate_core::GatewayError);

impl std::fmt::Display for LocalRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused locally")
    }
}

impl std::error::Error for LocalRefusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[tokio::test]
async fn an_inner_error_caused_by_a_gateway_error_becomes_the_api_error_it_renders() {
    let refusal = tollgate_core::GatewayError::new(ErrorKind::RateLimit, "pacing: wait too long")
        .with_retry_after(Duration::from_millis(1500))
        .with_should_retry(false);
    let err = call(
        ClassifyLayer::new(),
        Err(Box::new(LocalRefusal(refusal.clone()))),
    )
    .await
    .expect_err("an error");
    let ClientError::Api(api) = &err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(api.status, http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(api.kind, ErrorKind::RateLimit);
    assert_eq!(api.message, "pacing: wait too long");
    assert_eq!(api.retry_after, Some(Duration::from_millis(1500)));
    assert_eq!(api.origin, Origin::Gateway);
    assert!(!err.is_retryable());

    // The GatewayError itself, boxed, too.
    let err = call(ClassifyLayer::new(), Err(Box::new(refusal)))
        .await
        .expect_err("an error");
    assert_eq!(err.status(), Some(http::StatusCode::TOO_MANY_REQUESTS));
}

#[tokio::test]
async fn readiness_failure_is_a_transport_error() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<TestBody>, Response<TestBody>, _>(ClassifyLayer::new());
    handle.send_error(tower::timeout::error::Elapsed::new());
    match svc.poll_ready() {
        Poll::Ready(Err(ClientError::Transport(t))) => {
            assert_eq!(t.kind(), TransportErrorKind::Timeout);
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
}
