//! Keeping stored records small. An input or output over [`MAX_JSON_BYTES`]
//! is replaced by a valid JSON marker,
//! `{"truncated": true, "bytes": N, "preview": "<start of its text>"}`, so
//! whatever reads the history can always parse what it finds. Error texts
//! over [`MAX_ERROR_BYTES`] are cut at a character boundary with a note.

use std::borrow::Cow;

use serde_json::{Value, json};

use crate::model::{Attempts, FailedAttempt};

/// 64 KiB per input or output: a report's HTML fits; a 100k-user list does not.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// Enough of a cut document to see what it was.
pub const PREVIEW_CHARS: usize = 2000;
/// 16 KiB per error: a message with a response body's start, not a dump.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// The JSON text to store for `value`: itself, or the truncation marker,
/// which keeps the value's `reason` (its own, or one of its objects', as
/// [`crate::PlanItem::reason`] finds it): a held leaver whose Entra name
/// was huge lost the reason an approver reads beside them.
pub fn capped(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= MAX_JSON_BYTES {
        return text;
    }
    let mut marker = json!({
        "truncated": true,
        "bytes": text.len(),
        "preview": text.chars().take(PREVIEW_CHARS).collect::<String>(),
    });
    let own = value.get("reason").and_then(Value::as_str);
    let reason = own.or_else(|| {
        value
            .as_object()?
            .values()
            .find_map(|v| v.get("reason").and_then(Value::as_str))
    });
    if let Some(reason) = reason.filter(|r| r.len() <= REASON_BYTES) {
        marker["reason"] = Value::from(reason);
    }
    marker.to_string()
}

/// The longest `reason` a truncation marker keeps.
const REASON_BYTES: usize = 1024;

/// The JSON text to store for a document held as text: the text itself,
/// or the truncation marker, as [`capped`] makes them.
pub fn capped_text(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_JSON_BYTES {
        return Cow::Borrowed(text);
    }
    let preview: String = text.chars().take(PREVIEW_CHARS).collect();
    Cow::Owned(json!({ "truncated": true, "bytes": text.len(), "preview": preview }).to_string())
}

/// Whether a stored value is the truncation marker; its original size if so.
pub fn truncated_bytes(value: &Value) -> Option<u64> {
    if value.get("truncated") == Some(&Value::Bool(true)) {
        value.get("bytes").and_then(Value::as_u64)
    } else {
        None
    }
}

/// The error text to store: itself, or its start and a note of its size.
/// A text with a cut in it already (a component's message inside a step's
/// error) is said to be at least as large as that cut's note gives, so
/// cutting again never understates what was there.
pub fn capped_error(text: &str) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_string();
    }
    let mut end = MAX_ERROR_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let total = earlier_cut(text).map_or(text.len(), |n| n.max(text.len()));
    cut_note(&text[..end], total)
}

/// `start`, cut from a text of `total` bytes, with the note saying so.
pub fn cut_note(start: &str, total: usize) -> String {
    format!("{start}… (cut; {total} bytes in all)")
}

/// The size the last cut note in a text gives, if it has one.
fn earlier_cut(text: &str) -> Option<usize> {
    let (_, note) = text.rsplit_once("… (cut; ")?;
    let (size, _) = note.split_once(" bytes in all)")?;
    size.parse().ok()
}

/// A stored JSON text read back. Text that does not parse (written by hand
/// or by an older build) is kept as a JSON string rather than lost.
pub(crate) fn parse_stored(text: Option<String>) -> Option<Value> {
    let text = text?;
    Some(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The most failed attempts of one step or item kept: the last ones (their
/// numbers say which they were).
pub const MAX_FAILED_ATTEMPTS: usize = 32;

/// The attempts to store (none for a single attempt): the last
/// [`MAX_FAILED_ATTEMPTS`] failures, each message capped as an error.
pub(crate) fn attempts_text(attempts: Option<&Attempts>) -> Option<String> {
    let a = attempts.filter(|a| a.made > 1)?;
    let skip = a.failed.len().saturating_sub(MAX_FAILED_ATTEMPTS);
    let failed: Vec<FailedAttempt> = a.failed[skip..]
        .iter()
        .map(|f| FailedAttempt {
            message: capped_error(&f.message),
            ..f.clone()
        })
        .collect();
    serde_json::to_string(&Attempts {
        made: a.made,
        failed,
    })
    .ok()
}

/// Attempts read back; a value this build cannot read is left out.
pub(crate) fn parse_attempts(text: Option<String>) -> Option<Attempts> {
    serde_json::from_str(&text?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_values_become_valid_markers() {
        let big = json!({ "users": vec!["someone@example.com"; 10_000] });
        let stored: Value = serde_json::from_str(&capped(&big)).unwrap();
        assert_eq!(stored["truncated"], json!(true));
        assert!(stored["bytes"].as_u64().unwrap() > MAX_JSON_BYTES as u64);
        assert_eq!(truncated_bytes(&stored), Some(big.to_string().len() as u64));
        assert!(
            stored["preview"]
                .as_str()
                .unwrap()
                .starts_with("{\"users\"")
        );
        let small = json!({"a": 1});
        assert_eq!(capped(&small), small.to_string());
        assert_eq!(truncated_bytes(&small), None);
        // A held leaver with a huge name keeps the reason beside the cut.
        let leaver = json!({"user": {"name": "B".repeat(100_000), "reason": "no license group"}});
        let stored: Value = serde_json::from_str(&capped(&leaver)).unwrap();
        assert_eq!(stored["truncated"], json!(true));
        assert_eq!(stored["reason"], json!("no license group"));
        let without: Value = serde_json::from_str(&capped(&big)).unwrap();
        assert_eq!(without.get("reason"), None);
    }

    #[test]
    fn multibyte_text_is_cut_on_a_boundary() {
        let first = capped_error(&"x".repeat(3 * MAX_ERROR_BYTES));
        let again = capped_error(&format!("step `a` failed: {first} and more"));
        assert!(
            again.ends_with("… (cut; 49152 bytes in all)"),
            "a second cut keeps the first one's size: {}",
            &again[again.len() - 60..]
        );
        let once = capped_error(&format!("{first}; and then"));
        assert!(
            once.ends_with("… (cut; 49152 bytes in all)"),
            "{}",
            &once[once.len() - 60..]
        );
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = capped_error(&long);
        assert!(cut.len() < MAX_ERROR_BYTES + 64);
        assert!(cut.ends_with("bytes in all)"));
        let big = Value::String("€".repeat(MAX_JSON_BYTES));
        let stored: Value = serde_json::from_str(&capped(&big)).unwrap();
        assert_eq!(
            stored["preview"].as_str().unwrap().chars().count(),
            PREVIEW_CHARS
        );
    }
}
