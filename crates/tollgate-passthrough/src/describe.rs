//! Words for what went wrong: non-JSON error bodies and transport error chains.

use std::error::Error as StdError;

use http::{HeaderMap, StatusCode, header};
use tollgate_core::TransportError;
use tollgate_core::headers::{REQUEST_ID, X_REQUEST_ID};

use crate::body::Collected;

/// Characters of body text quoted in a description.
const SNIPPET_CHARS: usize = 200;
/// Characters of an error chain quoted in a message.
const CHAIN_CHARS: usize = 300;

/// Whether `content-type` says JSON (`application/json` or any `+json` type).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct == "application/json" || ct.ends_with("+json")
    })
}

/// The media type of `content-type`, without parameters.
fn content_type(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    (!essence.is_empty()).then_some(essence)
}

/// The request id a response carries: `request-id`, else `x-request-id`.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(REQUEST_ID)
        .or_else(|| headers.get(X_REQUEST_ID))
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty())
}

/// One line about an error body that is not an error envelope, e.g.
/// `upstream returned a non-JSON 502 response (text/html, 1234 bytes): 502 Bad Gateway nginx`.
pub(crate) fn non_envelope(
    who: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &Collected,
) -> String {
    let what = if is_json(headers) {
        format!("a {} response without an error envelope", status.as_u16())
    } else {
        format!("a non-JSON {} response", status.as_u16())
    };
    let ctype = content_type(headers).unwrap_or("no content-type");
    let size = if body.truncated {
        match headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(n) => format!("{n} bytes"),
            None => format!("more than {} bytes", body.bytes.len()),
        }
    } else {
        format!("{} bytes", body.seen)
    };
    let mut out = format!("{who} returned {what} ({ctype}, {size})");
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .filter(|e| !e.eq_ignore_ascii_case("identity"));
    if let Some(encoding) = encoding {
        out.push_str(", ");
        out.push_str(encoding);
        out.push_str("-encoded");
    } else {
        let text = snippet(&body.bytes, SNIPPET_CHARS);
        if !text.is_empty() {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    if let Some(error) = &body.error {
        out.push_str(" (the body broke off: ");
        out.push_str(error);
        out.push(')');
    }
    out
}

/// The readable text of a body: tags, scripts and styles removed, a few entities decoded,
/// whitespace collapsed, at most `max_chars` characters (then `…`).
pub(crate) fn snippet(bytes: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    // ASCII lowering keeps byte offsets, so `lower` indexes `text`.
    let lower = text.to_ascii_lowercase();
    let mut plain = String::with_capacity(text.len().min(4 * max_chars));
    let mut i = 0;
    while i < text.len() {
        let rest = &lower[i..];
        if !rest.starts_with('<') {
            let next = rest.find('<').map_or(text.len(), |p| i + p);
            plain.push_str(&text[i..next]);
            i = next;
            continue;
        }
        // Scripts and styles are code, not words: skip to their closing tag.
        let skip_from = match ["script", "style"]
            .iter()
            .find(|tag| rest[1..].starts_with(*tag))
        {
            Some(tag) => match rest.find(&format!("</{tag}")) {
                Some(p) => p,
                None => break,
            },
            None => 0,
        };
        i = match rest[skip_from..].find('>') {
            Some(p) => i + skip_from + p + 1,
            None => text.len(),
        };
        plain.push(' ');
        if plain.len() > 8 * max_chars {
            break;
        }
    }
    let plain = plain
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    let words: Vec<&str> = plain
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    let collapsed = words.join(" ");
    truncate(&collapsed, max_chars)
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The `Display` texts of an error and its sources, joined with `: `, without repeats,
/// with URL credentials and query strings removed, at most a few hundred characters.
///
/// [`TransportError`]s are skipped: their text only prefixes their source with what the
/// caller's own message already says.
pub(crate) fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        if !e.is::<TransportError>() {
            let text = e.to_string();
            if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
                parts.push(text);
            }
        }
        cur = e.source();
    }
    if parts.is_empty() {
        return "no details".to_owned();
    }
    truncate(&redact_urls(&parts.join(": ")), CHAIN_CHARS)
}

/// Remove `user:password@` and `?query`/`#fragment` from every URL in `text`: an upstream
/// URL may carry a credential, and an error message must never echo one.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let start = pos + 3;
        let end = rest[start..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '(' | ')' | '"' | '\'' | '<' | '>' | ',')
            })
            .map_or(rest.len(), |e| start + e);
        out.push_str(&rest[..start]);
        let url = &rest[start..end];
        let (authority, path) = url.split_at(url.find(['/', '?', '#']).unwrap_or(url.len()));
        out.push_str(
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host),
        );
        out.push_str(path.find(['?', '#']).map_or(path, |q| &path[..q]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_drops_tags_scripts_and_styles() {
        let html = b"<html><head><title>502 Bad Gateway</title><style>body{color:red}</style>\
            <script>var a = '<b>';</script></head>\n<body><h1>502   Bad &amp; Gateway</h1>\
            <hr><center>nginx</center></body></html>";
        assert_eq!(
            snippet(html, 200),
            "502 Bad Gateway 502 Bad & Gateway nginx"
        );
    }

    #[test]
    fn snippet_is_cut_at_the_character_limit() {
        let text = "é".repeat(300);
        let s = snippet(text.as_bytes(), 200);
        assert_eq!(s.chars().count(), 201);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn json_content_types_are_recognised() {
        let mut h = HeaderMap::new();
        for (ct, json) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("application/problem+json", true),
            ("text/html", false),
        ] {
            h.insert(header::CONTENT_TYPE, ct.parse().expect("valid"));
            assert_eq!(is_json(&h), json, "{ct}");
        }
        h.remove(header::CONTENT_TYPE);
        assert!(!is_json(&h));
    }

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(
            redact_urls(
                "error sending request for url (https://user:pw@api.example.com/v1?key=sk-1#x): refused"
            ),
            "error sending request for url (https://api.example.com/v1): refused"
        );
    }

    #[test]
    fn error_chain_skips_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let t = TransportError::classify(io);
        assert_eq!(error_chain(&t), "connection refused");
    }
}
