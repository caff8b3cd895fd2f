//! Keeping stored JSON small: an input or output over the cap is replaced
//! by a valid JSON marker with its size and the start of its text.

use serde_json::{Value, json};

/// 64 KiB per input or output: a report's HTML fits; a 100k-user list does not.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
const PREVIEW_CHARS: usize = 2000;

pub fn capped(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= MAX_JSON_BYTES {
        return text;
    }
    let preview: String = text.chars().take(PREVIEW_CHARS).collect();
    json!({ "truncated": true, "bytes": text.len(), "preview": preview }).to_string()
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
        let small = json!({"a": 1});
        assert_eq!(capped(&small), small.to_string());
    }
}
