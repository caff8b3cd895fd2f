//! Removing secrets from anything a person or a file might see.
//!
//! The flow knows its secrets (client secrets, bearer tokens, credential-
//! looking environment values) and the connections add every access token
//! they obtain. Every message that leaves the host — progress, logs, errors,
//! `--json` output, run history — passes through [`Redactor::redact`].

use std::sync::{Arc, RwLock};

/// Shared, growing list of values that must never be shown.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

pub const REDACTED: &str = "[redacted]";

/// Shorter values would redact ordinary words; no real credential is this short.
const MIN_SECRET_LEN: usize = 4;

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let r = Self::default();
        for s in secrets {
            r.add(s);
        }
        r
    }

    pub fn add(&self, secret: String) {
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        if let Ok(mut list) = self.secrets.write()
            && !list.contains(&secret)
        {
            list.push(secret);
            // Longest first, so a secret containing another is removed whole.
            list.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let Ok(list) = self.secrets.read() else {
            return REDACTED.to_string();
        };
        let mut out = text.to_string();
        for secret in list.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    /// Redacts every string inside a JSON value.
    pub fn redact_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.redact(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.redact(k), self.redact_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_every_occurrence_longest_first() {
        let r = Redactor::new([
            "s3cret".to_string(),
            "s3cret-extended".to_string(),
            "ab".to_string(),
        ]);
        assert_eq!(
            r.redact("a s3cret-extended and s3cret, ab"),
            "a [redacted] and [redacted], ab"
        );
        r.add("token123".into());
        assert_eq!(
            r.redact_json(&serde_json::json!({"k": ["token123"]})),
            serde_json::json!({"k": ["[redacted]"]})
        );
    }
}
