//! A structural skim of a JSON object: find one top-level field without parsing the rest.
//!
//! A non-streaming response is a few hundred bytes to megabytes of content around one small
//! `usage` object. Deserializing the whole document just to skip the content cost more
//! than any layer on the hot path (~15k instructions for the mock's reply); the skim jumps
//! over strings with `memchr` and over nested values by counting brackets, then leaves the
//! one value it was asked for to serde.
//!
//! The skim checks the document's *structure* — one object, closed, keys and values
//! separated as JSON requires, brackets matched, strings terminated, nothing after it —
//! which is what tells a complete reply from one cut off in transit. It does not validate
//! what it skips (escape sequences, UTF-8, number syntax inside nested values): a reply
//! that is complete but malformed inside its content still counts as complete. Whatever
//! the skim is unsure of (a key with escapes, the field twice, nesting deeper than 64, a
//! top level that isn't an object) it reports as [`Skim::Unsure`], and the caller asks a
//! real parser.

use memchr::memchr2;

/// What [`top_level_field`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Skim<'a> {
    /// A complete object with the field once at its top level: the value's raw bytes.
    Field(&'a [u8]),
    /// A complete object without the field at its top level.
    Absent,
    /// Cut off, malformed, or a shape the skim does not decide: parse the document.
    Unsure,
}

/// The raw value of the top-level field `name` (given unescaped) of the object `doc`.
pub(crate) fn top_level_field<'a>(doc: &'a [u8], name: &[u8]) -> Skim<'a> {
    match object_field(doc, name) {
        Some(Some((start, end))) => Skim::Field(&doc[start..end]),
        Some(None) => Skim::Absent,
        None => Skim::Unsure,
    }
}

fn object_field(doc: &[u8], name: &[u8]) -> Option<Option<(usize, usize)>> {
    let mut i = whitespace(doc, 0);
    if doc.get(i) != Some(&b'{') {
        return None;
    }
    i = whitespace(doc, i + 1);
    let mut found = None;
    if doc.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if doc.get(i) != Some(&b'"') {
                return None;
            }
            let close = string_end(doc, i + 1)?;
            let key = &doc[i + 1..close];
            if key.contains(&b'\\') {
                // `"us\u0061ge"` is `usage` too; not worth decoding here.
                return None;
            }
            i = whitespace(doc, close + 1);
            if doc.get(i) != Some(&b':') {
                return None;
            }
            let start = whitespace(doc, i + 1);
            let end = value_end(doc, start)?;
            if key == name {
                if found.is_some() {
                    // serde refuses a duplicate field; let it say so.
                    return None;
                }
                found = Some((start, end));
            }
            i = whitespace(doc, end);
            match doc.get(i) {
                Some(b',') => i = whitespace(doc, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (whitespace(doc, i) == doc.len()).then_some(found)
}

fn whitespace(doc: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = doc.get(i) {
        i += 1;
    }
    i
}

/// The index of the quote closing a string whose contents start at `i`.
fn string_end(doc: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let j = i + memchr2(b'"', b'\\', doc.get(i..)?)?;
        if doc[j] == b'"' {
            return Some(j);
        }
        // A backslash escapes the next byte (`\"`, `\\`; `\u` is followed by hex only).
        i = j + 2;
    }
}

/// The index just past the value starting at `i`.
fn value_end(doc: &[u8], i: usize) -> Option<usize> {
    match *doc.get(i)? {
        b'"' => Some(string_end(doc, i + 1)? + 1),
        b'{' | b'[' => nested_end(doc, i),
        first => {
            let len = doc[i..].iter().position(
                |b| !matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'+' | b'-' | b'.' | b'E'),
            )?;
            let scalar = &doc[i..i + len];
            let number = first == b'-' || first.is_ascii_digit();
            (number || matches!(scalar, b"true" | b"false" | b"null")).then_some(i + len)
        }
    }
}

/// The index just past the object or array opening at `i`, brackets matched by kind.
fn nested_end(doc: &[u8], mut i: usize) -> Option<usize> {
    // One bit per open bracket, 1 for `{`: 64 levels; deeper is left to serde.
    let mut open: u64 = 0;
    let mut depth = 0u32;
    while let Some(&b) = doc.get(i) {
        match b {
            b'"' => i = string_end(doc, i + 1)?,
            b'{' | b'[' => {
                if depth == 64 {
                    return None;
                }
                open = (open << 1) | u64::from(b == b'{');
                depth += 1;
            }
            b'}' | b']' => {
                if depth == 0 || (open & 1 == 1) != (b == b'}') {
                    return None;
                }
                open >>= 1;
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// The wire reference's non-streaming response (§3.1), byte for byte.
    const NON_STREAMING: &str = r#"{
  "id": "msg_01FxNonStream0000000000001",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-6",
  "content": [{"type": "text", "text": "Hello! How can I help?"}],
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 1200,
    "cache_creation_input_tokens": 10000,
    "cache_read_input_tokens": 50000,
    "cache_creation": {"ephemeral_5m_input_tokens": 10000, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 800,
    "service_tier": "standard"
  }
}"#;

    /// What a full parse says the skim should report for `doc`.
    fn expected(doc: &[u8]) -> Option<Option<Value>> {
        let value: Value = serde_json::from_slice(doc).ok()?;
        Some(value.as_object()?.get("usage").cloned())
    }

    fn skimmed(doc: &[u8]) -> Skim<'_> {
        top_level_field(doc, b"usage")
    }

    fn agrees_with_serde(doc: &[u8]) {
        match (skimmed(doc), expected(doc)) {
            (Skim::Field(raw), Some(Some(value))) => {
                let parsed: Value = serde_json::from_slice(raw).expect("the field's bytes parse");
                assert_eq!(parsed, value, "{}", String::from_utf8_lossy(doc));
            }
            (Skim::Absent, Some(None)) | (Skim::Unsure, _) => {}
            (got, want) => panic!(
                "skim {got:?}, serde {want:?} for {}",
                String::from_utf8_lossy(doc)
            ),
        }
    }

    #[test]
    fn finds_the_top_level_field_and_ignores_nested_and_quoted_ones() {
        let doc = br#"{"content":[{"type":"text","text":"say \"usage\": {} \\"}],
            "meta":{"usage":{"input_tokens":999}}, "usage" : {"input_tokens":12,"output_tokens":3} }"#;
        assert_eq!(
            skimmed(doc),
            Skim::Field(br#"{"input_tokens":12,"output_tokens":3}"#)
        );
        assert_eq!(skimmed(br#"{"meta":{"usage":1}}"#), Skim::Absent);
        assert_eq!(skimmed(br#"{"text":"\"usage\":1"}"#), Skim::Absent);
        assert_eq!(skimmed(b"{}"), Skim::Absent);
        assert_eq!(skimmed(br#"{"usage":null}"#), Skim::Field(b"null"));
    }

    #[test]
    fn cut_off_documents_are_never_complete() {
        let doc = NON_STREAMING.as_bytes();
        assert!(
            matches!(skimmed(doc), Skim::Field(_)),
            "the fixture has usage"
        );
        for cut in 0..doc.len() {
            assert_eq!(skimmed(&doc[..cut]), Skim::Unsure, "cut at {cut}");
        }
    }

    #[test]
    fn unsure_of_what_serde_decides_differently() {
        // A duplicate field, an escaped key, mismatched brackets, a non-object, trailing data.
        for doc in [
            &br#"{"usage":{},"usage":{}}"#[..],
            br#"{"us\u0061ge":{}}"#,
            br#"{"a":[}],"usage":{}}"#,
            br#"[{"input_tokens":1}]"#,
            br#"{"usage":{}} x"#,
            br#"{"usage":{},}"#,
            br#"{"usage":tru}"#,
        ] {
            assert_eq!(
                skimmed(doc),
                Skim::Unsure,
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "(\\PC|[\"\\\\{}\\[\\]:,]){0,12}".prop_map(Value::String),
            Just(Value::String("usage".into())),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![Just("usage".to_string()), "[a-z\"\\\\]{0,6}"],
                        inner
                    ),
                    0..6
                )
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_a_full_parse(value in json(), pretty in any::<bool>()) {
            let doc = if pretty {
                serde_json::to_vec_pretty(&value)
            } else {
                serde_json::to_vec(&value)
            }
            .expect("serializes");
            agrees_with_serde(&doc);
            if value.is_object() && !doc.contains(&b'\\') {
                prop_assert!(!matches!(skimmed(&doc), Skim::Unsure));
            }
            for cut in 0..doc.len() {
                prop_assert_eq!(skimmed(&doc[..cut]), Skim::Unsure);
            }
        }
    }
}
