//! A last line of defence against secrets in the history.
//!
//! The host redacts before it records anything: connections never hand a
//! secret or token to a component, and the host removes the ones it knows
//! (client secrets, tokens it obtained) from errors and logs. These helpers
//! are for that: the host passes every secret it knows, and each occurrence
//! is replaced by [`REDACTED`]. The history itself cannot know what is
//! secret, so it stores what it is given.

use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// `text` with every occurrence of each non-empty secret replaced by
/// [`REDACTED`]. Where secrets overlap, the longest one at a position wins,
/// so a secret containing another is removed whole.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty() && text.contains(*s))
        .collect();
    if secrets.is_empty() {
        return text.to_string();
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(secret) = secrets.iter().find(|s| rest.starts_with(**s)) {
            out.push_str(REDACTED);
            rest = &rest[secret.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// `value` with [`redact`] applied to every string and object key in it.
/// Redacting the value, not its JSON text, also catches secrets that JSON
/// would escape (a `"` or `\` in a password).
pub fn redact_json(value: &Value, secrets: &[String]) -> Value {
    match value {
        Value::String(s) => Value::String(redact(s, secrets)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| redact_json(v, secrets)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (redact(k, secrets), redact_json(v, secrets)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn removes_every_occurrence_and_ignores_empty_secrets() {
        let s = secrets(&["", "hunter2", "tok-abc"]);
        assert_eq!(
            redact("pw hunter2, token tok-abc, again hunter2", &s),
            "pw [redacted], token [redacted], again [redacted]"
        );
        assert_eq!(redact("nothing here", &s), "nothing here");
    }

    #[test]
    fn the_longest_overlapping_secret_wins() {
        let s = secrets(&["abc", "abcdef", "é"]);
        assert_eq!(
            redact("xabcdefy abc café", &s),
            "x[redacted]y [redacted] caf[redacted]"
        );
    }

    #[test]
    fn json_strings_and_keys_are_redacted() {
        let s = secrets(&["p\"w"]);
        let v = json!({"password": "p\"w", "list": ["a p\"w b", 1], "p\"w": true});
        let r = redact_json(&v, &s);
        assert!(!r.to_string().contains("p\\\"w"), "{r}");
        assert_eq!(r["list"][0], json!("a [redacted] b"));
    }
}
