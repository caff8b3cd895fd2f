//! Text on its way to a terminal, made inert.
//!
//! Much of what Sluice prints comes from elsewhere: component log lines,
//! step error codes and messages, a service's error text, flow names from
//! a file. A terminal acts on control characters in them: an escape
//! sequence can erase the line that says a step failed, rewrite it as a
//! success, set the clipboard (OSC 52) or plant a hyperlink (OSC 8); a
//! carriage return overwrites a line; bidirectional overrides reorder it.
//! Everything printed goes through one of these functions first, which
//! write such characters out visibly (`\u{1b}`) instead.
//!
//! - [`line`] for one line or one paragraph: line breaks are escaped too,
//!   so an error stays one paragraph.
//! - [`lines`] for text Sluice laid out itself over several lines (a run's
//!   detail, a flow file's diagnostics): only `\n` is kept.
//! - [`json`] for JSON text: the characters JSON leaves raw (DEL, C1,
//!   bidirectional controls) as `\uXXXX` escapes, which JSON readers decode
//!   back to the same text.

use std::borrow::Cow;

/// A character a terminal may act on rather than show: C0 controls, DEL,
/// C1 controls, and the bidirectional embeddings, overrides and isolates.
fn is_active(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

fn escape_with(
    text: &str,
    keep: impl Fn(char) -> bool,
    escape: impl Fn(char, &mut String),
) -> Cow<'_, str> {
    if !text.chars().any(|c| is_active(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_active(c) && !keep(c) {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Rust's own notation: `\n`, `\r`, `\t`, and `\u{1b}` for the rest.
fn visibly(c: char, out: &mut String) {
    out.extend(c.escape_default());
}

/// One line or paragraph, every active character escaped.
pub fn line(text: &str) -> Cow<'_, str> {
    escape_with(text, |_| false, visibly)
}

/// Several lines laid out by Sluice: line breaks kept, the rest escaped.
pub fn lines(text: &str) -> Cow<'_, str> {
    escape_with(text, |c| c == '\n', visibly)
}

/// JSON text with the active characters JSON allows raw written as
/// `\uXXXX` (inside strings, where alone they can occur).
pub fn json(text: &str) -> Cow<'_, str> {
    escape_with(
        text,
        |c| c == '\n',
        |c, out| {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_shown_not_obeyed() {
        let hostile = "ok\u{1b}[2K\r\u{1b}]52;c;aGk=\u{7}\u{9b}31m\u{7f}\u{202E}txt.exe\nnext";
        assert_eq!(
            line(hostile),
            "ok\\u{1b}[2K\\r\\u{1b}]52;c;aGk=\\u{7}\\u{9b}31m\\u{7f}\\u{202e}txt.exe\\nnext"
        );
        assert_eq!(
            lines(hostile),
            "ok\\u{1b}[2K\\r\\u{1b}]52;c;aGk=\\u{7}\\u{9b}31m\\u{7f}\\u{202e}txt.exe\nnext"
        );
        assert!(matches!(line("plain – ünïcode ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_stays_json_and_means_the_same() {
        let value = serde_json::json!({"m": "a\u{1b}b\u{9b}c\u{7f}d\u{202E}e"});
        let text = serde_json::to_string(&value).unwrap();
        let safe = json(&text);
        assert!(!safe.chars().any(is_active), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }
}
