//! A text written as the contents of a JSON string, piece by piece: the
//! page goes into the step's output this way, measured first so the
//! output is allocated once at its size.

/// The escape of `byte`, when it needs one. Every byte that does is
/// ASCII, so it is never part of a multi-byte character.
fn escape(byte: u8) -> Option<&'static str> {
    const CONTROL: [&str; 32] = [
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
        "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011",
        "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019",
        "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    ];
    match byte {
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        0..=0x1f => Some(CONTROL[usize::from(byte)]),
        _ => None,
    }
}

/// How long `text` is once escaped.
pub fn escaped_len(text: &str) -> usize {
    text.bytes().map(|b| escape(b).map_or(1, str::len)).sum()
}

/// Appends `text` to `out`, escaped as the inside of a JSON string.
pub fn escape_into(out: &mut String, text: &str) {
    let mut plain = 0;
    for (at, byte) in text.bytes().enumerate() {
        if let Some(escaped) = escape(byte) {
            out.push_str(&text[plain..at]);
            out.push_str(escaped);
            plain = at + 1;
        }
    }
    out.push_str(&text[plain..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_reads_back_as_the_same_string_at_the_measured_length() {
        let text = "<p class=\"a\">Zoë \\ 山田\n\t\r\u{1}\u{1f}</p>";
        let mut out = String::from("\"");
        escape_into(&mut out, text);
        out.push('"');
        assert_eq!(out.len(), escaped_len(text) + 2);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text);
        assert_eq!(out, serde_json::to_string(text).unwrap());
    }
}
