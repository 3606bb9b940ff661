//! Reading the presented credential, and saying exactly what is wrong with a bad one.
//!
//! Every message names the header, the kind of problem and the byte offset within that
//! header's value, and says what to do. None of them contains any byte of the key.

use std::fmt;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use tollgate_core::headers::X_API_KEY;

use crate::key::{KEY_LEN, KEY_PREFIX};

/// What a presented key must look like before the store is asked, and so which wrong
/// keys [`KeyAuthLayer`](crate::KeyAuthLayer) can diagnose without a lookup. A store says
/// which with [`KeyLookup::key_format`](crate::KeyLookup::key_format).
///
/// Both formats refuse what cannot be anyone's key with a 401 that names the problem
/// and its byte offset: whitespace around it, a line break, a `\n` escape, a space, a
/// control, zero-width or other non-ASCII character, wrapping quotes, a malformed
/// `Authorization` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFormat {
    /// The keys [`KeyStore::create`](crate::KeyStore::create) issues: `tg-` and 32
    /// letters or digits. Anything else is refused before the store is asked, with a
    /// message that says what was sent instead: an Anthropic key (`sk-ant-…`), an OpenAI
    /// key (`sk-…`), a cut-short or over-long gateway key, something else entirely.
    #[default]
    Issued,
    /// Keys of the store's own format: every key of printable ASCII without spaces
    /// reaches [`lookup`](crate::KeyLookup::lookup), and an unknown one gets the
    /// "not known to this gateway" 401.
    Any,
}

impl KeyFormat {
    /// How the 401 for a missing key describes the key to send.
    fn what_to_send(self) -> &'static str {
        match self {
            KeyFormat::Issued => "your gateway key (tg-…)",
            KeyFormat::Any => "your API key",
        }
    }
}

/// How a presented key is read: `x-api-key` if present and non-empty, else
/// `Authorization: Bearer`; `format` says which keys can be diagnosed without a lookup.
///
/// # Errors
///
/// The 401 message when no usable credential is present.
pub(crate) fn extract(headers: &HeaderMap, format: KeyFormat) -> Result<&str, String> {
    let api_keys = headers.get_all(X_API_KEY);
    let mut api_key_iter = api_keys.iter();
    let api_key = api_key_iter.next();
    if api_key.is_some() && api_key_iter.next().is_some() {
        return Err(format!(
            "x-api-key was sent {} times; send it once, with one key",
            api_keys.iter().count()
        ));
    }
    let authorizations = headers.get_all(AUTHORIZATION);
    let mut auth_iter = authorizations.iter();
    let authorization = auth_iter.next();

    // x-api-key wins when both are sent, as the Anthropic API does; an empty one carries
    // no credential and gives way to Authorization.
    match (api_key, authorization) {
        (Some(v), _) if !v.is_empty() => check_api_key(v.as_bytes(), format),
        (_, Some(v)) => {
            if auth_iter.next().is_some() {
                return Err(format!(
                    "Authorization was sent {} times; send it once: Authorization: Bearer <key>",
                    authorizations.iter().count()
                ));
            }
            check_authorization(v.as_bytes(), format)
        }
        (Some(_), None) => Err(format!(
            "x-api-key is empty; send {} in x-api-key or as Authorization: Bearer <key>",
            format.what_to_send()
        )),
        (None, None) => Err(format!(
            "no API key: send {} in the x-api-key header or as Authorization: Bearer <key>",
            format.what_to_send()
        )),
    }
}

fn check_api_key(value: &[u8], format: KeyFormat) -> Result<&str, String> {
    if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
        return Err("x-api-key starts with \"Bearer \"; x-api-key takes the bare key: drop \"Bearer \" (or send Authorization: Bearer <key> instead)".to_owned());
    }
    check_key(value, "x-api-key", 0, format)
}

/// Schemes named back to the client; anything else is "an unsupported scheme", so that no
/// client bytes (possibly a key) are ever echoed.
const KNOWN_SCHEMES: [&str; 13] = [
    "Basic",
    "Digest",
    "Token",
    "Negotiate",
    "NTLM",
    "OAuth",
    "Bot",
    "ApiKey",
    "Api-Key",
    "Key",
    "HOBA",
    "Mutual",
    "AWS4-HMAC-SHA256",
];

const USE_BEARER: &str = "send Authorization: Bearer <key> or x-api-key: <key>";

fn check_authorization(value: &[u8], format: KeyFormat) -> Result<&str, String> {
    const H: &str = "Authorization";
    if value.is_empty() {
        return Err(format!("{H} is empty; {USE_BEARER}"));
    }
    if let Some(&b) = value.first().filter(|b| is_ws(**b)) {
        return Err(format!(
            "{H} starts with whitespace ({} at byte 0); remove whitespace around the value: Authorization: Bearer <key>",
            name_ws(b)
        ));
    }
    let bearer = value.len() >= 6 && value[..6].eq_ignore_ascii_case(b"bearer");
    if bearer {
        let rest = &value[6..];
        return match rest.first() {
            None => Err(format!(
                "{H} says Bearer but carries no key; send Authorization: Bearer <key>"
            )),
            Some(b':') => Err(format!(
                "{H} has a colon after Bearer (\"Bearer:\"); write one space and no colon: Authorization: Bearer <key>"
            )),
            Some(b' ') => {
                let spaces = rest.iter().take_while(|&&b| b == b' ').count();
                if spaces == rest.len() {
                    Err(format!(
                        "{H} says Bearer but carries no key; send Authorization: Bearer <key>"
                    ))
                } else if spaces > 1 {
                    Err(format!(
                        "{H} has {spaces} spaces between Bearer and the key; use exactly one: Authorization: Bearer <key>"
                    ))
                } else {
                    check_key(&rest[1..], H, 7, format)
                }
            }
            Some(&b) if is_ws(b) => Err(format!(
                "{H} has {} after Bearer; use exactly one space: Authorization: Bearer <key>",
                name_ws(b)
            )),
            // `Bearertg-…` or `BearerXYZ`: not the Bearer scheme at all.
            Some(_) => Err(format!(
                "{H} must be \"Bearer\", one space, then the key; {USE_BEARER}"
            )),
        };
    }
    let scheme_len = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
    let scheme = &value[..scheme_len];
    if let Some(known) = KNOWN_SCHEMES
        .iter()
        .find(|s| s.as_bytes().eq_ignore_ascii_case(scheme))
    {
        return Err(format!(
            "{H} uses the {known} scheme; this gateway takes API keys only as Bearer tokens: {USE_BEARER}"
        ));
    }
    if scheme_len == value.len() {
        // No scheme at all. If it is a key, say what kind; a well-formed gateway key just
        // lacks "Bearer ".
        check_key(value, H, 0, format)?;
        return Err(format!(
            "{H} carries a key without the Bearer scheme; write Authorization: Bearer <key>"
        ));
    }
    Err(format!(
        "{H} uses an unsupported scheme; this gateway takes API keys only as Bearer tokens: {USE_BEARER}"
    ))
}

/// Everything a presented key must pass before a store is asked: clean characters and,
/// for [`KeyFormat::Issued`], not another vendor's key and the shape of a gateway key.
fn check_key<'a>(
    key: &'a [u8],
    header: &str,
    base: usize,
    format: KeyFormat,
) -> Result<&'a str, String> {
    if format == KeyFormat::Any {
        check_chars(key, header, base).map_err(|e| e.0)?;
        // Checked: every byte is printable ASCII.
        return std::str::from_utf8(key)
            .map_err(|_| format!("{header} is not ASCII; copy the key again"));
    }
    // The common case first: a well-formed gateway key needs no diagnosis.
    if key.len() == KEY_LEN
        && key.starts_with(KEY_PREFIX.as_bytes())
        && key[KEY_PREFIX.len()..]
            .iter()
            .all(u8::is_ascii_alphanumeric)
    {
        return std::str::from_utf8(key)
            .map_err(|_| format!("{header} is not ASCII; copy the key again"));
    }
    check_chars(key, header, base).map_err(|e| e.0)?;
    if key.starts_with(b"sk-ant-") {
        return Err(format!(
            "{header} holds an Anthropic API key (sk-ant-…); this gateway accepts only the keys it issues: use your gateway key (tg-…) instead (the gateway adds its own upstream key)"
        ));
    }
    if key.starts_with(b"sk-") {
        return Err(format!(
            "{header} holds an OpenAI API key (sk-…); this gateway accepts only the keys it issues: use your gateway key (tg-…) instead (the gateway adds its own upstream key)"
        ));
    }
    if !key.starts_with(KEY_PREFIX.as_bytes()) {
        return Err(format!(
            "{header} does not hold a key issued by this gateway (gateway keys start with tg- and have {KEY_LEN} characters); check which key your client sends"
        ));
    }
    if key.len() != KEY_LEN {
        let what = if key.len() < KEY_LEN {
            "it was cut short"
        } else {
            "it has extra characters"
        };
        return Err(format!(
            "{header} holds a gateway key of {} characters, but gateway keys have {KEY_LEN} (tg- and 32 letters or digits); {what}: copy the whole key",
            key.len()
        ));
    }
    if let Some(i) = key[KEY_PREFIX.len()..]
        .iter()
        .position(|b| !b.is_ascii_alphanumeric())
    {
        return Err(format!(
            "{header} holds a gateway key with a character other than a letter or digit at byte {}; copy the key again",
            base + KEY_PREFIX.len() + i
        ));
    }
    // Checked above: every byte is ASCII.
    std::str::from_utf8(key).map_err(|_| format!("{header} is not ASCII; copy the key again"))
}

/// Why a key's characters cannot be right. The message names the problem and its byte
/// offset, never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidApiKey(pub(crate) String);

impl fmt::Display for InvalidApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidApiKey {}

/// Whitespace, line breaks, escapes, control and non-ASCII characters, quotes. `base` is
/// the key's offset within the header value named `header`.
pub(crate) fn check_chars(key: &[u8], header: &str, base: usize) -> Result<(), InvalidApiKey> {
    let err = |m: String| Err(InvalidApiKey(m));
    let (Some(&first), Some(&last)) = (key.first(), key.last()) else {
        return err(format!(
            "{header} is empty; send your key in x-api-key or as Authorization: Bearer <key>"
        ));
    };
    if is_ws(first) {
        return err(format!(
            "{header} starts with whitespace ({} at byte {base}); remove whitespace around the key",
            name_ws(first)
        ));
    }
    if is_ws(last) {
        return err(format!(
            "{header} ends with whitespace ({} at byte {}); remove whitespace around the key",
            name_ws(last),
            base + key.len() - 1
        ));
    }
    for (i, &b) in key.iter().enumerate() {
        let at = base + i;
        match b {
            b'\n' | b'\r' => {
                return err(format!(
                    "{header} contains a line break (byte {at}); a key is one line: remove the line break"
                ));
            }
            b'\\' if matches!(key.get(i + 1), Some(b'n' | b'r' | b't')) => {
                let letter = char::from(key[i + 1]);
                return err(format!(
                    "{header} contains a literal \\{letter} escape sequence (a backslash and '{letter}', byte {at}); remove it: the key was copied from a quoted string"
                ));
            }
            b' ' => {
                return err(format!(
                    "{header} contains a space at byte {at}; a key has no spaces: copy the whole key again"
                ));
            }
            0x00..=0x1f | 0x7f => {
                return err(format!(
                    "{header} contains a non-printable control character ({}) at byte {at}; copy the key again without it",
                    name_control(b)
                ));
            }
            0x80..=0xff => return err(describe_non_ascii(&key[i..], header, at)),
            _ => {}
        }
    }
    if matches!(first, b'"' | b'\'') || matches!(last, b'"' | b'\'') {
        let at = if matches!(first, b'"' | b'\'') {
            base
        } else {
            base + key.len() - 1
        };
        return err(format!(
            "{header} is wrapped in quotes (byte {at}); send the key without quotes"
        ));
    }
    Ok(())
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn name_ws(b: u8) -> &'static str {
    match b {
        b' ' => "a space",
        b'\t' => "a tab",
        b'\n' => "a newline",
        _ => "a carriage return",
    }
}

fn name_control(b: u8) -> String {
    let name = match b {
        0x00 => ", NUL",
        0x09 => ", tab",
        0x1b => ", escape",
        0x7f => ", DEL",
        _ => "",
    };
    format!("0x{b:02X}{name}")
}

/// `rest` starts at a byte ≥ 0x80.
fn describe_non_ascii(rest: &[u8], header: &str, at: usize) -> String {
    let c = rest
        .utf8_chunks()
        .next()
        .and_then(|chunk| chunk.valid().chars().next());
    let Some(c) = c else {
        return format!(
            "{header} contains a non-ASCII byte (0x{:02X}) at byte {at}; keys are plain ASCII letters, digits and '-': copy the key again",
            rest[0]
        );
    };
    let code = format!("U+{:04X}", u32::from(c));
    match c {
        '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}' => {
            let name = match c {
                '\u{200B}' => " ZERO WIDTH SPACE",
                '\u{200C}' => " ZERO WIDTH NON-JOINER",
                '\u{200D}' => " ZERO WIDTH JOINER",
                '\u{2060}' => " WORD JOINER",
                '\u{FEFF}' => " ZERO WIDTH NO-BREAK SPACE (byte order mark)",
                _ => " SOFT HYPHEN",
            };
            format!(
                "{header} contains an invisible zero-width character ({code}{name}) at byte {at}; it usually comes from copy-paste: copy the key again or type it"
            )
        }
        '\u{00A0}' | '\u{2007}' | '\u{202F}' | '\u{2000}'..='\u{200A}' => format!(
            "{header} contains a non-breaking or typographic space ({code}) at byte {at}; a key has no spaces: copy the key again"
        ),
        '\u{2010}'..='\u{2015}' | '\u{2212}' => format!(
            "{header} contains a typographic dash ({code}) at byte {at}; keys use the plain hyphen '-' (an editor may have replaced it): copy the key again"
        ),
        '\u{2018}' | '\u{2019}' | '\u{201C}' | '\u{201D}' => format!(
            "{header} contains a curly quote ({code}) at byte {at}; send the key without quotes"
        ),
        _ => format!(
            "{header} contains a non-ASCII character ({code}) at byte {at}; keys are plain ASCII letters, digits and '-': copy the key again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const KEY: &str = "tg-AbCdEfGhIjKlMnOpQrStUvWxYz012345";

    fn with(name: &'static str, value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            name,
            HeaderValue::from_bytes(value).expect("valid header bytes"),
        );
        h
    }

    fn err(name: &'static str, value: &[u8]) -> String {
        let message = extract(&with(name, value), KeyFormat::Issued).expect_err("must be rejected");
        assert!(!message.contains(&KEY[3..]), "{message}");
        message
    }

    #[test]
    fn a_well_formed_key_passes_from_either_header() {
        let issued = KeyFormat::Issued;
        assert_eq!(extract(&with("x-api-key", KEY.as_bytes()), issued), Ok(KEY));
        let bearer = format!("Bearer {KEY}");
        assert_eq!(
            extract(&with("authorization", bearer.as_bytes()), issued),
            Ok(KEY)
        );
    }

    #[test]
    fn a_real_newline_is_named_with_its_byte() {
        // Unreachable through http::HeaderValue, so checked on bytes.
        let key = format!("{}\n{}", &KEY[..10], &KEY[10..]);
        let e = check_key(key.as_bytes(), "x-api-key", 0, KeyFormat::Issued).expect_err("rejected");
        assert_eq!(
            e,
            "x-api-key contains a line break (byte 10); a key is one line: remove the line break"
        );
        let trailing = format!("{KEY}\r\n");
        let e = check_key(trailing.as_bytes(), "x-api-key", 0, KeyFormat::Issued)
            .expect_err("rejected");
        assert!(
            e.contains("ends with whitespace (a newline at byte 36)"),
            "{e}"
        );
    }

    #[test]
    fn offsets_in_authorization_count_from_the_header_value_start() {
        let value = format!("Bearer {}\u{200B}{}", &KEY[..5], &KEY[5..]);
        let e = err("authorization", value.as_bytes());
        assert!(e.contains("U+200B ZERO WIDTH SPACE) at byte 12"), "{e}");
    }

    #[test]
    fn invalid_utf8_is_named_as_a_byte() {
        let mut value = KEY.as_bytes().to_vec();
        value[9] = 0xE9;
        let e = err("x-api-key", &value);
        assert!(e.contains("non-ASCII byte (0xE9) at byte 9"), "{e}");
    }

    #[test]
    fn typographic_dash_is_named() {
        let value = format!("tg\u{2013}{}", &KEY[3..]);
        let e = err("x-api-key", value.as_bytes());
        assert!(e.contains("typographic dash (U+2013) at byte 2"), "{e}");
    }

    #[test]
    fn bare_gateway_key_in_authorization_is_told_to_add_bearer() {
        let e = err("authorization", KEY.as_bytes());
        assert!(e.contains("without the Bearer scheme"), "{e}");
    }

    #[test]
    fn unknown_scheme_is_not_echoed() {
        let value = format!("{KEY} something");
        let e = err("authorization", value.as_bytes());
        assert!(e.contains("unsupported scheme"), "{e}");
    }

    #[test]
    fn bearer_followed_by_tab_is_named() {
        let value = format!("Bearer\t{KEY}");
        let e = err("authorization", value.as_bytes());
        assert!(e.contains("a tab after Bearer"), "{e}");
    }

    #[test]
    fn wrapping_quotes_are_named() {
        let value = format!("\"{KEY}\"");
        let e = err("x-api-key", value.as_bytes());
        assert!(e.contains("wrapped in quotes (byte 0)"), "{e}");
    }

    #[test]
    fn repeated_x_api_key_is_rejected() {
        let mut h = HeaderMap::new();
        h.append("x-api-key", HeaderValue::from_static(KEY));
        h.append("x-api-key", HeaderValue::from_static(KEY));
        let e = extract(&h, KeyFormat::Issued).expect_err("rejected");
        assert!(e.contains("sent 2 times"), "{e}");
    }

    #[test]
    fn non_base62_character_in_a_gateway_key_is_named() {
        let value = format!("{}_{}", &KEY[..20], &KEY[21..]);
        let e = err("x-api-key", value.as_bytes());
        assert!(
            e.contains("character other than a letter or digit at byte 20"),
            "{e}"
        );
    }

    #[test]
    fn any_format_lets_other_shapes_and_vendor_prefixes_reach_the_store() {
        for key in ["sk-ant-api03-abc", "team-a.4f9c", "tg-short", "x"] {
            assert_eq!(
                extract(&with("x-api-key", key.as_bytes()), KeyFormat::Any),
                Ok(key)
            );
        }
        let bearer = b"Bearer sk-ant-api03-abc";
        assert_eq!(
            extract(&with("authorization", bearer), KeyFormat::Any),
            Ok("sk-ant-api03-abc")
        );
    }

    #[test]
    fn any_format_still_names_broken_characters() {
        let h = with("x-api-key", "my-key\u{200B}".as_bytes());
        let e = extract(&h, KeyFormat::Any).expect_err("rejected");
        assert!(e.contains("U+200B ZERO WIDTH SPACE) at byte 6"), "{e}");
        let e = extract(&with("x-api-key", b"\"my-key\""), KeyFormat::Any).expect_err("rejected");
        assert!(e.contains("wrapped in quotes"), "{e}");
    }

    #[test]
    fn missing_key_message_names_tg_keys_only_for_the_issued_format() {
        let none = HeaderMap::new();
        let issued = extract(&none, KeyFormat::Issued).expect_err("rejected");
        assert!(issued.contains("your gateway key (tg-…)"), "{issued}");
        let any = extract(&none, KeyFormat::Any).expect_err("rejected");
        assert!(
            any.contains("send your API key in the x-api-key header"),
            "{any}"
        );
        assert!(!any.contains("tg-"), "{any}");
    }
}
