//! The `x-mock-*` request headers, parsed once per request.
//!
//! A request header wins over the instance's default of the same name. Unknown `x-mock-*`
//! names are refused (400) so that a typo in a test fails loudly instead of silently
//! getting a 200.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::fixtures::{self, Fixture};

/// Every header the mock understands, in the order of [`Script`]'s fields.
pub(crate) const KNOWN: [&str; 11] = [
    "x-mock-status",
    "x-mock-fail-times",
    "x-mock-scenario",
    "x-mock-retry-after",
    "x-mock-latency-ms",
    "x-mock-event-interval-ms",
    "x-mock-stream-error-after",
    "x-mock-output-tokens",
    "x-mock-fixture",
    "x-mock-error-format",
    "x-mock-error-code",
];

/// Output length when `x-mock-output-tokens` is absent.
pub(crate) const DEFAULT_OUTPUT_TOKENS: u64 = 16;

/// Largest accepted `x-mock-output-tokens` (keeps a typo from allocating gigabytes).
const MAX_OUTPUT_TOKENS: u64 = 1_000_000;

/// Scenario id used by `x-mock-fail-times` when `x-mock-scenario` is absent.
const DEFAULT_SCENARIO: &str = "default";

/// What one request asked the mock to do.
#[derive(Debug)]
pub(crate) struct Script<'a> {
    /// Error status to fail with; `None` = succeed (unless `fail_times` says otherwise).
    pub(crate) status: Option<u16>,
    /// Fail the first N requests of `scenario`.
    pub(crate) fail_times: Option<u64>,
    pub(crate) scenario: &'a str,
    pub(crate) retry_after: Option<&'a HeaderValue>,
    pub(crate) latency: Option<Duration>,
    pub(crate) event_interval: Option<Duration>,
    pub(crate) stream_error_after: Option<u64>,
    pub(crate) output_tokens: u64,
    pub(crate) fixture: Option<&'static Fixture>,
    pub(crate) html_errors: bool,
    pub(crate) error_code: Option<&'a str>,
}

impl<'a> Script<'a> {
    /// Reads the `x-mock-*` headers of `request`, falling back to `defaults`.
    ///
    /// The error is a message for the client that says which header is wrong and what
    /// to send instead.
    pub(crate) fn parse(
        request: &'a HeaderMap,
        defaults: &'a [(HeaderName, HeaderValue)],
    ) -> Result<Self, String> {
        let mut raw: [Option<&'a HeaderValue>; KNOWN.len()] = [None; KNOWN.len()];
        let from_request = request
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-mock-"));
        for (name, value) in from_request.chain(defaults.iter().map(|(n, v)| (n, v))) {
            let i = index_of(name.as_str())?;
            raw[i].get_or_insert(value);
        }
        let [
            status,
            fail_times,
            scenario,
            retry_after,
            latency,
            event_interval,
            stream_error_after,
            output_tokens,
            fixture,
            error_format,
            error_code,
        ] = raw;

        Ok(Script {
            status: parse_status(status)?,
            fail_times: number(fail_times, "x-mock-fail-times", "3")?,
            scenario: match scenario {
                Some(v) => text(v, "x-mock-scenario")?,
                None => DEFAULT_SCENARIO,
            },
            retry_after,
            latency: number(latency, "x-mock-latency-ms", "50")?.map(Duration::from_millis),
            event_interval: number(event_interval, "x-mock-event-interval-ms", "20")?
                .map(Duration::from_millis),
            stream_error_after: number(stream_error_after, "x-mock-stream-error-after", "2")?,
            output_tokens: match number(output_tokens, "x-mock-output-tokens", "16")? {
                Some(n) if n > MAX_OUTPUT_TOKENS => {
                    return Err(format!(
                        "x-mock-output-tokens is {n}, above the mock's limit of \
                         {MAX_OUTPUT_TOKENS}; ask for fewer tokens"
                    ));
                }
                Some(n) => n,
                None => DEFAULT_OUTPUT_TOKENS,
            },
            fixture: match fixture {
                Some(v) => {
                    let name = text(v, "x-mock-fixture")?;
                    Some(fixtures::by_name(name).ok_or_else(|| {
                        format!(
                            "x-mock-fixture {name:?} is not a fixture; use one of {}",
                            fixture_names()
                        )
                    })?)
                }
                None => None,
            },
            html_errors: match error_format.map(|v| v.as_bytes()) {
                None | Some(b"json") => false,
                Some(b"html") => true,
                Some(other) => {
                    return Err(format!(
                        "x-mock-error-format must be `json` or `html`, got {:?}",
                        String::from_utf8_lossy(other)
                    ));
                }
            },
            error_code: error_code
                .map(|v| text(v, "x-mock-error-code"))
                .transpose()?,
        })
    }
}

/// Checks that a default header is one the mock understands.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    index_of(name).map(|_| ())
}

fn index_of(name: &str) -> Result<usize, String> {
    KNOWN.iter().position(|k| *k == name).ok_or_else(|| {
        format!(
            "unknown mock header {name}; the mock understands {}",
            KNOWN.join(", ")
        )
    })
}

fn fixture_names() -> String {
    fixtures::ALL
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn text<'a>(value: &'a HeaderValue, name: &str) -> Result<&'a str, String> {
    value
        .to_str()
        .map_err(|_| format!("{name} must be visible ASCII"))
}

fn number(value: Option<&HeaderValue>, name: &str, example: &str) -> Result<Option<u64>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let raw = text(value, name)?;
    raw.trim().parse().map(Some).map_err(|_| {
        format!(
            "{name} must be a whole non-negative number, got {raw:?}; send e.g. `{name}: {example}`"
        )
    })
}

fn parse_status(value: Option<&HeaderValue>) -> Result<Option<u16>, String> {
    match number(value, "x-mock-status", "529")? {
        None | Some(200..=299) => Ok(None),
        Some(s @ 400..=599) => Ok(Some(s as u16)),
        Some(s) => Err(format!(
            "x-mock-status {s} is not an error status; use 400–599 to fail or 200 to succeed"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn request_header_wins_over_default() {
        let req = headers(&[("x-mock-status", "200")]);
        let defaults = [(
            HeaderName::from_static("x-mock-status"),
            HeaderValue::from_static("529"),
        )];
        assert_eq!(Script::parse(&req, &defaults).map(|s| s.status), Ok(None));
        let empty = HeaderMap::new();
        assert_eq!(
            Script::parse(&empty, &defaults).map(|s| s.status),
            Ok(Some(529))
        );
    }

    #[test]
    fn unknown_mock_header_is_refused_by_name() {
        let req = headers(&[("x-mock-statuss", "529")]);
        let err = Script::parse(&req, &[]).err().unwrap_or_default();
        assert!(err.contains("x-mock-statuss"), "{err}");
    }

    #[test]
    fn non_numeric_latency_is_refused_with_an_example() {
        let req = headers(&[("x-mock-latency-ms", "fast")]);
        let err = Script::parse(&req, &[]).err().unwrap_or_default();
        assert!(err.contains("x-mock-latency-ms: 50"), "{err}");
    }
}
