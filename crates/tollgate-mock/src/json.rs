//! Just enough JSON writing to echo request strings (model names, messages) safely.

/// Appends `s` to `out` as a JSON string literal, quotes included.
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let n = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[n >> 4]));
                out.push(char::from(HEX[n & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_string_round_trips_through_serde_json() {
        let nasty = "a\"b\\c\nd\u{1}é";
        let mut out = String::new();
        push_str(&mut out, nasty);
        let back: String = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(back, nasty);
    }
}
