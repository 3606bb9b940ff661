//! Rewrite the top-level `model` of a request body, keeping every other byte.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
}

/// `body` with its top-level `"model"` value replaced by `model`; every other byte,
/// whitespace and key order included, stays as it was. `None` when the body is not a
/// JSON object with exactly one top-level `model`.
pub(crate) fn replace_model(body: &Bytes, model: &str) -> Option<Bytes> {
    let probe: Probe<'_> = serde_json::from_slice(body).ok()?;
    let raw = probe.model?.get().as_bytes();
    // The raw value borrows from `body`: its offset is the distance between the pointers.
    let start = (raw.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(raw.len())?;
    if end > body.len() || &body[start..end] != raw {
        return None;
    }
    let value = serde_json::to_string(model).ok()?;
    let mut out = BytesMut::with_capacity(body.len() - raw.len() + value.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(&body[end..]);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(body: &'static str, model: &str) -> Option<String> {
        replace_model(&Bytes::from_static(body.as_bytes()), model)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    #[test]
    fn only_the_top_level_model_changes() {
        let body = r#"{ "messages":[{"role":"user","content":"{\"model\":\"x\"}"}],
  "metadata":{"model":"keep"},   "model" :  "claude-opus-4-8" ,"max_tokens":1}"#;
        let out = rewrite(body, "claude-sonnet-4-6").expect("rewritten");
        assert_eq!(
            out,
            body.replace(r#""claude-opus-4-8""#, r#""claude-sonnet-4-6""#)
        );
    }

    #[test]
    fn the_new_model_is_json_escaped() {
        let out = rewrite(r#"{"model":"a"}"#, "we\"ird").expect("rewritten");
        assert_eq!(out, r#"{"model":"we\"ird"}"#);
    }

    #[test]
    fn bodies_without_exactly_one_model_are_not_rewritten() {
        assert_eq!(rewrite(r#"{"max_tokens":1}"#, "m"), None);
        assert_eq!(rewrite(r#"{"model":"a","model":"b"}"#, "m"), None);
        assert_eq!(rewrite(r#"not json"#, "m"), None);
    }
}
