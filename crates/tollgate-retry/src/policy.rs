//! Whether an attempt's outcome is worth another attempt, read from the one error table.
//!
//! The rules, in order (the official SDKs' rules, wire reference §7):
//!
//! 1. A status below 400 is a success.
//! 2. `x-should-retry: true` / `false` from the upstream decides, whatever the status.
//! 3. Otherwise the status's row in [`ERROR_TABLE`](tollgate_core::error::ERROR_TABLE)
//!    decides (`retryable`): 408, 409, 429, 500, 502, 503, 504, 529 and any other 5xx are
//!    retried; 400, 401, 402, 403, 404, 413 and any other 4xx are not.
//! 4. Transport failures before a response head — connect (refused, unreachable), reset,
//!    timeout — are retried; other errors are not.
//! 5. A stream that failed before its first content is retried unless its in-band error
//!    type is one the table says not to retry.
//!
//! The server-directed wait comes from [`parse_retry_after`]: `retry-after-ms`, then
//! `retry-after` in seconds or as an HTTP date.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use tollgate_core::headers::{X_SHOULD_RETRY, parse_retry_after};
use tollgate_core::{ErrorKind, TransportErrorKind};

/// What an attempt's outcome says about trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a failure: hand it back.
    Success,
    /// A failure worth another attempt; `after` is the wait the upstream asked for.
    Retry {
        /// The server-directed wait (`retry-after-ms` / `retry-after`), if any.
        after: Option<Duration>,
    },
    /// A failure that another attempt with the same request would repeat.
    Final,
}

impl Verdict {
    /// Whether this is [`Verdict::Retry`].
    pub fn is_retry(&self) -> bool {
        matches!(self, Verdict::Retry { .. })
    }
}

/// The verdict on a response head. `now` is the wall-clock time, for `retry-after`
/// given as an HTTP date.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, StatusCode};
/// use tollgate_retry::policy::{classify_response, Verdict};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "7".parse().expect("a valid header value"));
/// let v = classify_response(StatusCode::TOO_MANY_REQUESTS, &headers, SystemTime::now());
/// assert_eq!(v, Verdict::Retry { after: Some(Duration::from_secs(7)) });
///
/// headers.insert("x-should-retry", "false".parse().expect("a valid header value"));
/// let v = classify_response(StatusCode::TOO_MANY_REQUESTS, &headers, SystemTime::now());
/// assert_eq!(v, Verdict::Final);
/// ```
pub fn classify_response(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Verdict {
    if status.as_u16() < 400 {
        return Verdict::Success;
    }
    let retry = match headers.get(X_SHOULD_RETRY).map(|v| v.as_bytes()) {
        Some(b"true") => true,
        Some(b"false") => false,
        _ => ErrorKind::from_status(status.as_u16()).is_some_and(|k| k.class().retryable),
    };
    if retry {
        Verdict::Retry {
            after: parse_retry_after(headers, now),
        }
    } else {
        Verdict::Final
    }
}

/// The verdict on a transport error (the inner service's `Err`), classified through its
/// `source()` chain.
pub fn classify_error(err: &(dyn StdError + 'static)) -> Verdict {
    match transport_kind(err) {
        TransportErrorKind::Connect | TransportErrorKind::Reset | TransportErrorKind::Timeout => {
            Verdict::Retry { after: None }
        }
        TransportErrorKind::Other => Verdict::Final,
    }
}

/// The verdict on a stream that failed before its first content: `error_type` is the
/// in-band `event: error` type, `None` when the connection broke or the stream ended early.
pub fn classify_stream_failure(error_type: Option<&str>) -> Verdict {
    let retryable = error_type
        .and_then(ErrorKind::from_anthropic_type)
        .is_none_or(|k| k.class().retryable);
    if retryable {
        Verdict::Retry { after: None }
    } else {
        Verdict::Final
    }
}

/// [`TransportErrorKind::of`], plus hyper's own "the connection closed before a
/// response" errors, which carry no I/O error to classify by.
pub fn transport_kind(err: &(dyn StdError + 'static)) -> TransportErrorKind {
    let kind = TransportErrorKind::of(err);
    if kind != TransportErrorKind::Other {
        return kind;
    }
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return TransportErrorKind::Reset;
            }
        }
        cur = e.source();
    }
    TransportErrorKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use tollgate_core::TransportError;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    fn verdict(status: u16, h: &HeaderMap) -> Verdict {
        let status = StatusCode::from_u16(status).expect("valid status");
        classify_response(status, h, SystemTime::now())
    }

    #[test]
    fn statuses_the_api_retries_are_retried() {
        for status in [408, 409, 429, 500, 502, 503, 504, 529, 599] {
            assert!(verdict(status, &HeaderMap::new()).is_retry(), "{status}");
        }
    }

    #[test]
    fn client_and_account_errors_are_final() {
        for status in [400, 401, 402, 403, 404, 413, 422] {
            assert_eq!(
                verdict(status, &HeaderMap::new()),
                Verdict::Final,
                "{status}"
            );
        }
    }

    #[test]
    fn x_should_retry_overrides_the_status_both_ways() {
        let no = headers(&[("x-should-retry", "false")]);
        assert_eq!(verdict(529, &no), Verdict::Final);
        let yes = headers(&[("x-should-retry", "true")]);
        assert!(verdict(400, &yes).is_retry());
        // Compared case-sensitively, as the SDKs do: anything else falls back to the table.
        let odd = headers(&[("x-should-retry", "TRUE")]);
        assert_eq!(verdict(400, &odd), Verdict::Final);
    }

    #[test]
    fn success_statuses_are_success_whatever_the_headers() {
        let yes = headers(&[("x-should-retry", "true")]);
        assert_eq!(verdict(200, &yes), Verdict::Success);
    }

    #[test]
    fn retry_after_in_ms_seconds_and_dates_is_read() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ms = headers(&[("retry-after-ms", "1500")]);
        assert_eq!(
            classify_response(StatusCode::TOO_MANY_REQUESTS, &ms, now),
            Verdict::Retry {
                after: Some(Duration::from_millis(1500))
            }
        );
        let mut date = HeaderMap::new();
        let at = httpdate::fmt_http_date(now + Duration::from_secs(30));
        date.insert("retry-after", at.parse().expect("valid header"));
        assert_eq!(
            classify_response(StatusCode::from_u16(529).expect("valid"), &date, now),
            Verdict::Retry {
                after: Some(Duration::from_secs(30))
            }
        );
    }

    #[test]
    fn connect_reset_and_timeout_errors_are_retried_others_are_not() {
        let refused = TransportError::classify(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(classify_error(&refused).is_retry());
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(classify_error(&reset).is_retry());
        let timeout = TransportError::new(TransportErrorKind::Timeout, "slow");
        assert!(classify_error(&timeout).is_retry());
        let other = io::Error::other("invalid uri");
        assert_eq!(classify_error(&other), Verdict::Final);
    }

    #[test]
    fn stream_failures_are_retried_unless_the_error_type_is_final() {
        assert!(classify_stream_failure(Some("overloaded_error")).is_retry());
        assert!(classify_stream_failure(None).is_retry());
        assert!(classify_stream_failure(Some("some_new_error")).is_retry());
        assert_eq!(
            classify_stream_failure(Some("invalid_request_error")),
            Verdict::Final
        );
    }
}
