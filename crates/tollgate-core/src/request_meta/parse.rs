use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Endpoint, RequestMeta};
use crate::error::{ErrorKind, GatewayError};

/// Only the fields the layers need; everything else is skipped (still validated as JSON).
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    /// Counted in the same pass that validates the JSON: the messages are most of the
    /// body, so they are scanned once, never built.
    #[serde(default)]
    messages: Option<Messages>,
}

/// Parse and check a messages request body for `endpoint`.
///
/// # Errors
///
/// A 400 [`GatewayError`] whose message names the field at fault and what it must be,
/// or where the JSON is broken.
pub fn parse_body(endpoint: Endpoint, body: Bytes) -> Result<RequestMeta, GatewayError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => {
            return Err(invalid(
                "request body is empty; send a JSON object with model, max_tokens and messages"
                    .into(),
            ));
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(match serde_json::from_slice::<IgnoredAny>(&body) {
                Err(e) => not_json(&e),
                Ok(_) => invalid(
                    "request body must be a JSON object with model, max_tokens and messages".into(),
                ),
            });
        }
    }
    let probe: Probe<'_> = serde_json::from_slice(&body).map_err(|e| not_json(&e))?;

    let model = match probe.model {
        None => {
            return Err(invalid(
                "model: field required; name the model to use, e.g. \"claude-sonnet-4-6\"".into(),
            ));
        }
        Some(raw) => {
            match serde_json::from_str::<String>(raw.get()) {
                Ok(m) if m.trim().is_empty() => {
                    return Err(invalid("model: must not be empty; name the model to use, e.g. \"claude-sonnet-4-6\"".into()));
                }
                Ok(m) => m,
                Err(_) => {
                    return Err(invalid(format!(
                        "model: must be a string, got {}",
                        describe(raw)
                    )));
                }
            }
        }
    };

    let max_tokens = match endpoint {
        Endpoint::Messages => match probe.max_tokens {
            None => {
                return Err(invalid(
                    "max_tokens: field required; set the maximum number of tokens to generate, e.g. 1024"
                        .into(),
                ));
            }
            Some(raw) => Some(positive_int("max_tokens", raw)?),
        },
        Endpoint::ChatCompletions => match probe.max_completion_tokens.or(probe.max_tokens) {
            None => None,
            Some(raw) => {
                let field = if probe.max_completion_tokens.is_some() {
                    "max_completion_tokens"
                } else {
                    "max_tokens"
                };
                Some(positive_int(field, raw)?)
            }
        },
        Endpoint::CountTokens => None,
    };

    let stream = match probe.stream {
        None => false,
        Some(raw) => match raw.get() {
            "true" => true,
            "false" | "null" => false,
            _ => {
                return Err(invalid(format!(
                    "stream: must be true or false, got {}",
                    describe(raw)
                )));
            }
        },
    };
    if stream && endpoint == Endpoint::CountTokens {
        return Err(invalid(
            "stream: count_tokens does not stream; remove the field".into(),
        ));
    }

    let messages = match probe.messages {
        None => {
            return Err(invalid(
                "messages: field required; send an array of {\"role\", \"content\"} objects".into(),
            ));
        }
        Some(Messages::Array(0)) => {
            return Err(invalid(
                "messages: must contain at least one message".into(),
            ));
        }
        Some(Messages::Array(n)) => n,
        Some(Messages::Other(kind)) => {
            return Err(invalid(format!(
                "messages: must be an array of {{\"role\", \"content\"}} objects, got {kind}"
            )));
        }
    };

    Ok(RequestMeta {
        endpoint,
        dialect: endpoint.dialect(),
        model,
        max_tokens,
        stream,
        messages,
        est_input_tokens: (body.len() as u64).div_ceil(4),
        body,
    })
}

fn invalid(message: String) -> GatewayError {
    GatewayError::new(ErrorKind::InvalidRequest, message)
}

fn not_json(e: &serde_json::Error) -> GatewayError {
    let what = e.to_string();
    // serde_json appends " at line L column C"; keep its wording, which says where.
    invalid(format!("request body is not valid JSON: {what}"))
}

fn positive_int(field: &str, raw: &RawValue) -> Result<u32, GatewayError> {
    match raw.get().parse::<u64>() {
        Ok(0) => Err(invalid(format!(
            "{field}: must be a positive integer, got 0"
        ))),
        Ok(n) => u32::try_from(n).map_err(|_| {
            invalid(format!(
                "{field}: must be a positive integer no larger than {}, got {n}",
                u32::MAX
            ))
        }),
        Err(_) => Err(invalid(format!(
            "{field}: must be a positive integer, got {}",
            describe(raw)
        ))),
    }
}

/// A short description of a JSON value for an error message: its literal when short,
/// else its type. Never echoes long user content.
fn describe(raw: &RawValue) -> String {
    let s = raw.get();
    let kind = match s.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    if s.len() <= 24 && !s.starts_with('{') && !s.starts_with('[') {
        format!("{kind} ({s})")
    } else {
        kind.to_string()
    }
}

/// The `messages` field: an array's length, or what else it was. Never fails, so that
/// the error names the field instead of serde's position.
enum Messages {
    Array(usize),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Messages;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Messages::Array(n))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Messages, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Messages::Other("an object"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Messages, E> {
                Ok(Messages::Other("a string"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Messages, E> {
                Ok(Messages::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Messages, E> {
                Ok(Messages::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Messages, E> {
                Ok(Messages::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Messages, E> {
                Ok(Messages::Other("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Messages, E> {
                Ok(Messages::Other("null"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Dialect;

    fn parse(endpoint: Endpoint, body: &'static str) -> Result<RequestMeta, GatewayError> {
        parse_body(endpoint, Bytes::from_static(body.as_bytes()))
    }

    fn message(body: &'static str) -> String {
        parse(Endpoint::Messages, body)
            .expect_err("rejected")
            .message()
            .to_string()
    }

    #[test]
    fn parses_the_minimal_request() {
        let body = r#"{"model":"claude-sonnet-4-6","max_tokens":1024,"system":"You are terse.","metadata":{"user_id":"u_5f1d0c2a"},"messages":[{"role":"user","content":"Hello, Claude"}]}"#;
        let meta = parse(Endpoint::Messages, body).expect("valid");
        assert_eq!(meta.model, "claude-sonnet-4-6");
        assert_eq!(meta.max_tokens, Some(1024));
        assert!(!meta.stream);
        assert_eq!(meta.messages, 1);
        assert_eq!(meta.dialect, Dialect::Anthropic);
        assert_eq!(meta.est_input_tokens, (body.len() as u64).div_ceil(4));
        assert_eq!(meta.body, body.as_bytes());
    }

    #[test]
    fn same_role_messages_in_a_row_are_accepted() {
        let meta = parse(
            Endpoint::Messages,
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}],"stream":true}"#,
        )
        .expect("the API merges consecutive same-role turns");
        assert_eq!(meta.messages, 2);
        assert!(meta.stream);
    }

    #[test]
    fn invalid_json_says_where() {
        let m = message(r#"{"model":"m","max_tokens":5 "messages":[]}"#);
        assert!(m.starts_with("request body is not valid JSON"), "{m}");
        assert!(m.contains("line 1 column"), "{m}");
    }

    #[test]
    fn non_object_body_is_rejected() {
        assert!(message("[1,2]").starts_with("request body must be a JSON object"));
        assert!(message("   ").starts_with("request body is empty"));
    }

    #[test]
    fn missing_model_names_the_field() {
        assert!(
            message(r#"{"max_tokens":5,"messages":[{"role":"user","content":"a"}]}"#)
                .starts_with("model: field required")
        );
        assert!(
            message(r#"{"model":7,"max_tokens":5,"messages":[{"role":"user","content":"a"}]}"#)
                .starts_with("model: must be a string, got a number (7)")
        );
        assert!(
            message(r#"{"model":" ","max_tokens":5,"messages":[{"role":"user","content":"a"}]}"#)
                .starts_with("model: must not be empty")
        );
    }

    #[test]
    fn max_tokens_must_be_a_positive_integer() {
        assert!(
            message(r#"{"model":"m","messages":[{"role":"user","content":"a"}]}"#)
                .starts_with("max_tokens: field required")
        );
        for bad in [
            r#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"a"}]}"#,
            r#"{"model":"m","max_tokens":-5,"messages":[{"role":"user","content":"a"}]}"#,
            r#"{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"a"}]}"#,
            r#"{"model":"m","max_tokens":"1024","messages":[{"role":"user","content":"a"}]}"#,
            r#"{"model":"m","max_tokens":99999999999,"messages":[{"role":"user","content":"a"}]}"#,
        ] {
            let m = message(bad);
            assert!(
                m.starts_with("max_tokens: must be a positive integer"),
                "{m}"
            );
        }
    }

    #[test]
    fn messages_must_be_a_non_empty_array() {
        assert!(message(r#"{"model":"m","max_tokens":5}"#).starts_with("messages: field required"));
        assert!(
            message(r#"{"model":"m","max_tokens":5,"messages":[]}"#)
                .starts_with("messages: must contain at least one")
        );
        assert!(
            message(r#"{"model":"m","max_tokens":5,"messages":"hi"}"#)
                .starts_with("messages: must be an array")
        );
    }

    #[test]
    fn stream_must_be_a_boolean() {
        let m = message(
            r#"{"model":"m","max_tokens":5,"stream":"yes","messages":[{"role":"user","content":"a"}]}"#,
        );
        assert_eq!(m, "stream: must be true or false, got a string (\"yes\")");
    }

    #[test]
    fn count_tokens_needs_no_max_tokens() {
        let meta = parse(
            Endpoint::CountTokens,
            r#"{"model":"m","messages":[{"role":"user","content":"a"}]}"#,
        )
        .expect("valid");
        assert_eq!(meta.max_tokens, None);
    }

    #[test]
    fn chat_completions_reads_max_completion_tokens() {
        let meta = parse(Endpoint::ChatCompletions, r#"{"model":"m","max_completion_tokens":77,"max_tokens":5,"messages":[{"role":"user","content":"a"}]}"#).expect("valid");
        assert_eq!(meta.max_tokens, Some(77));
        assert_eq!(meta.dialect, Dialect::OpenAi);
        let meta = parse(
            Endpoint::ChatCompletions,
            r#"{"model":"m","messages":[{"role":"user","content":"a"}]}"#,
        )
        .expect("valid");
        assert_eq!(meta.max_tokens, None);
    }

    #[test]
    fn long_values_are_not_echoed() {
        let m = message(
            r#"{"model":"m","max_tokens":"this is a very long string that should not be echoed back","messages":[{"role":"user","content":"a"}]}"#,
        );
        assert_eq!(m, "max_tokens: must be a positive integer, got a string");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_reject_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse_body(Endpoint::Messages, Bytes::from(body));
        }
    }
}
