//! The keys a step's `for_each_key` gives its items, by one rule for the
//! run and for `sluice validate`: a key is a non-empty text or a number,
//! and with `approval` no two items share one (an approval names exactly
//! one item). A run applies it to the items it has; validate applies it to
//! a list known in full (a param), so such a list is refused before a run.

use std::collections::HashMap;

use serde_json::Value;
use sluice_store::key_norm;

use super::resolve::{ResolveError, Scope};
use super::template::Template;

/// Why the items' keys cannot be used; items are counted from 1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    #[error("item {item}: `for_each_key` could not be resolved: {why}")]
    Unresolved { item: usize, why: ResolveError },
    #[error(
        "item {item}: `for_each_key` gave {got}, not a key; each item needs a non-empty text or number"
    )]
    NotAKey { item: usize, got: String },
    #[error(
        "items {first} and {second} have the same key {}; with `approval` each item needs its own key (check `for_each_key`)",
        same_key(first_key, key)
    )]
    Shared {
        first: usize,
        second: usize,
        /// The first item's key, as written.
        first_key: String,
        key: String,
    },
}

/// The key two items share, each as written when they differ: keys are
/// compared trimmed and ignoring case, as the store compares them.
fn same_key(first: &str, second: &str) -> String {
    if first == second {
        format!("`{second}`")
    } else {
        format!("(`{first}` and `{second}`: keys are compared trimmed and ignoring case)")
    }
}

/// Each item's key from `template`, resolved in `scope` with the item
/// bound; `unique` (a step with `approval`) refuses two items with one key
/// (compared as the store compares keys).
pub fn keys(
    template: &Template,
    items: &[Value],
    scope: &Scope<'_>,
    unique: bool,
) -> Result<Vec<String>, KeyError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut keys: Vec<String> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let scope = Scope {
            item: Some(item),
            ..*scope
        };
        let value = scope
            .resolve(template)
            .map_err(|why| KeyError::Unresolved {
                item: index + 1,
                why,
            })?;
        let key = match value {
            Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            Value::Null => {
                return Err(KeyError::NotAKey {
                    item: index + 1,
                    got: "nothing".into(),
                });
            }
            other => {
                return Err(KeyError::NotAKey {
                    item: index + 1,
                    got: other.to_string(),
                });
            }
        };
        if unique && let Some(first) = seen.insert(key_norm(&key), index) {
            return Err(KeyError::Shared {
                first: first + 1,
                second: index + 1,
                first_key: keys[first].clone(),
                key,
            });
        }
        keys.push(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key_of(text: &str) -> Template {
        Template::parse(text).unwrap()
    }

    #[test]
    fn each_item_gets_its_key_trimmed_or_its_number() {
        let items = [json!({"k": " a@x "}), json!({"k": 7})];
        assert_eq!(
            keys(&key_of("${item.k}"), &items, &Scope::default(), true),
            Ok(vec!["a@x".to_string(), "7".to_string()])
        );
    }

    #[test]
    fn a_missing_field_or_a_blank_or_an_object_is_not_a_key() {
        for (item, got) in [
            (json!({"mail": "a@x"}), "nothing"),
            (json!({"k": "  "}), "\"  \""),
            (json!({"k": {"a": 1}}), "{\"a\":1}"),
        ] {
            let items = [json!({"k": "fine"}), item];
            assert_eq!(
                keys(&key_of("${item.k}"), &items, &Scope::default(), false),
                Err(KeyError::NotAKey {
                    item: 2,
                    got: got.into()
                })
            );
        }
    }

    #[test]
    fn two_items_with_one_key_are_refused_only_where_approval_needs_each() {
        let items = [json!("A@x.com"), json!("b@x.com"), json!("a@X.com")];
        assert_eq!(
            keys(&key_of("${item}"), &items, &Scope::default(), true),
            Err(KeyError::Shared {
                first: 1,
                second: 3,
                first_key: "A@x.com".into(),
                key: "a@X.com".into()
            })
        );
        let e = keys(&key_of("${item}"), &items, &Scope::default(), true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "items 1 and 3 have the same key (`A@x.com` and `a@X.com`: keys are compared trimmed and ignoring case); with `approval` each item needs its own key (check `for_each_key`)"
        );
        assert!(keys(&key_of("${item}"), &items, &Scope::default(), false).is_ok());
    }
}
