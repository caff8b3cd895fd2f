//! The name a `for_each` item gives itself: the run context's `item-key`
//! (wit/types.wit), which a component keys its per-item `state` by.
//!
//! It is the item itself when it is a text, its decimal text when it is a
//! number, its `key` field when it is an object with a text or number
//! `key`, and none otherwise. A blank text (empty, or only spaces) names
//! nothing: two such items would share one name, and `""` is not even a
//! state key. So an item that names itself so is refused: by `sluice
//! validate` when the list is known in full (a param), else that item fails
//! before its component is called. (The ledger and approvals key items by
//! `for_each_key`, which refuses a blank key on its own.)

use serde_json::Value;

/// Why an item has no usable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlankKey {
    #[error("the item is {0:?}")]
    Item(String),
    #[error("its `key` field is {0:?}")]
    Field(String),
}

/// The item's `item-key`; `Ok(None)` for an item that names itself in no
/// way (a list, an object without a text or number `key`, null, a boolean).
pub fn item_key(item: &Value) -> Result<Option<String>, BlankKey> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    if let Some(own) = text(item) {
        return match own.trim().is_empty() {
            true => Err(BlankKey::Item(own)),
            false => Ok(Some(own)),
        };
    }
    match item.get("key").and_then(text) {
        Some(key) if key.trim().is_empty() => Err(BlankKey::Field(key)),
        key => Ok(key),
    }
}

/// Why a blank name is refused, for a message.
pub const BLANK_KEY_WHY: &str = "an item names itself to its component (the run context's `item-key`, which keys its state) by its text or its `key` field, and two blank names could not be told apart";

/// What to do about an item with a blank name, for a message.
pub const BLANK_KEY_HINT: &str =
    "leave the item out of the list, or give it a non-empty `key` field";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_item_names_itself_by_its_text_number_or_key_field() {
        assert_eq!(item_key(&json!("ann@x")), Ok(Some("ann@x".into())));
        assert_eq!(item_key(&json!(42)), Ok(Some("42".into())));
        assert_eq!(item_key(&json!({"key": "k1"})), Ok(Some("k1".into())));
        assert_eq!(item_key(&json!({"key": 7})), Ok(Some("7".into())));
        assert_eq!(item_key(&json!({"key": null})), Ok(None));
        assert_eq!(item_key(&json!({"mail": "a"})), Ok(None));
        assert_eq!(item_key(&json!([1])), Ok(None));
        assert_eq!(item_key(&json!(true)), Ok(None));
    }

    #[test]
    fn a_blank_name_is_refused() {
        assert_eq!(item_key(&json!("")), Err(BlankKey::Item(String::new())));
        assert_eq!(item_key(&json!(" \t")), Err(BlankKey::Item(" \t".into())));
        assert_eq!(
            item_key(&json!({"key": ""})),
            Err(BlankKey::Field(String::new()))
        );
        assert_eq!(
            item_key(&json!({"key": "  "})),
            Err(BlankKey::Field("  ".into()))
        );
    }
}
