//! Header names the layers read and write, in one place.

use http::HeaderName;

/// `x-tollgate-origin: gateway|upstream`: who produced the response.
pub const X_TOLLGATE_ORIGIN: HeaderName = HeaderName::from_static("x-tollgate-origin");
/// `x-should-retry: true|false`: explicit retry verdict the official SDKs obey.
pub const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
/// `retry-after-ms`: exact wait in milliseconds, read by the SDKs before `retry-after`.
pub const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
/// `request-id`: Anthropic's request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
/// `x-request-id`: the OpenAI dialect's request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-api-key`: Anthropic's credential header.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// `anthropic-version`: passed through unchanged (it changes validation rules).
pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
/// `x-tollgate-route`: the upstream route that served the response.
pub const X_TOLLGATE_ROUTE: HeaderName = HeaderName::from_static("x-tollgate-route");
/// `x-tollgate-model`: the model that served the response.
pub const X_TOLLGATE_MODEL: HeaderName = HeaderName::from_static("x-tollgate-model");
/// `x-tollgate-attempts`: upstream attempts made for the response.
pub const X_TOLLGATE_ATTEMPTS: HeaderName = HeaderName::from_static("x-tollgate-attempts");

/// Hop-by-hop headers (RFC 9110 §7.6.1) that a proxy must not forward.
pub const HOP_BY_HOP: [HeaderName; 8] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Remove hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = http::HeaderMap::new();
        h.insert("connection", "close, x-private".parse().expect("valid"));
        h.insert("x-private", "1".parse().expect("valid"));
        h.insert("keep-alive", "timeout=5".parse().expect("valid"));
        h.insert("transfer-encoding", "chunked".parse().expect("valid"));
        h.insert("request-id", "req_1".parse().expect("valid"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["request-id"], "req_1");
    }
}

/// The wait a response asks for before the next attempt, read the way the official SDKs
/// read it: `retry-after-ms` (float milliseconds) first, then `retry-after` as float
/// seconds, then `retry-after` as an HTTP date (minus `now`). Negative or unparsable
/// values give `None`.
pub fn parse_retry_after(
    headers: &http::HeaderMap,
    now: std::time::SystemTime,
) -> Option<std::time::Duration> {
    use std::time::Duration;
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let finite = |v: f64| (0.0..1e12).contains(&v);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if finite(ms) {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return finite(secs).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod retry_after_tests {
    use std::time::{Duration, SystemTime};

    use super::parse_retry_after;

    fn map(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
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

    #[test]
    fn ms_header_wins_over_seconds() {
        let h = map(&[("retry-after-ms", "1500.5"), ("retry-after", "7")]);
        assert_eq!(
            parse_retry_after(&h, SystemTime::now()),
            Some(Duration::from_micros(1_500_500))
        );
    }

    #[test]
    fn seconds_and_http_dates_are_read() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(
            parse_retry_after(&map(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", later.parse().expect("valid"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(30)));
    }

    #[test]
    fn garbage_and_negative_values_are_ignored() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after(&map(&[("retry-after", "soon")]), now),
            None
        );
        assert_eq!(parse_retry_after(&map(&[("retry-after", "-3")]), now), None);
        assert_eq!(parse_retry_after(&http::HeaderMap::new(), now), None);
    }
}
