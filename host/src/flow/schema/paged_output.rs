//! The lists of a component's output it hands over in pages (the WIT's
//! `paged-output`): the top-level properties its output schema marks
//! `"x-sluice-paged": true`, and their items' schemas, which each
//! appended item is checked against.

use std::collections::BTreeMap;

use serde_json::Value;

use super::flat::Items;
use super::{PAGED_KEYWORD, paged_list, parts};

/// The lists a component's output schema marks, each with its items'
/// schema compiled (with the root's `$defs`).
pub struct OutputListSchemas {
    component: String,
    lists: BTreeMap<String, Items>,
}

impl std::fmt::Debug for OutputListSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputListSchemas")
            .field("component", &self.component)
            .field("lists", &self.lists.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// How many of an item's mismatches an error names.
const SHOWN: usize = 3;

impl OutputListSchemas {
    /// The marked lists of `schema` (`component`'s output schema); `None`
    /// when it marks none. A marked property whose `items` cannot be
    /// compiled on its own (it has its own `$defs`, or refers outside
    /// them) is not a paged list, as for input lists.
    pub fn of(component: &str, schema: &Value) -> Option<OutputListSchemas> {
        let properties = schema.get("properties")?.as_object()?;
        let defs = schema.get("$defs");
        let lists: BTreeMap<_, _> = properties
            .iter()
            .filter(|(_, v)| paged_list(v))
            .filter_map(|(k, v)| Some((k.clone(), parts::items(v.get("items")?, defs)?)))
            .collect();
        (!lists.is_empty()).then(|| OutputListSchemas {
            component: component.to_string(),
            lists,
        })
    }

    /// The names of the marked lists.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.lists.keys().map(String::as_str)
    }

    /// Checks `item`, at `index` of the list `name`, against the list's
    /// items' schema; the error names what does not fit, and where in the
    /// item.
    pub fn check(&self, name: &str, index: u64, item: &Value) -> Result<(), String> {
        let Some(items) = self.lists.get(name) else {
            return Err(format!("`{name}` is not marked `{PAGED_KEYWORD}`"));
        };
        let found: Vec<String> = items
            .value
            .iter_errors(item)
            .take(SHOWN)
            .map(|e| {
                let at = e.instance_path().as_str().replace('/', ".");
                format!(
                    "`{name}.{index}{at}`: {}",
                    super::first_line(&e.to_string())
                )
            })
            .collect();
        if found.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} (output schema of `{}`)",
            found.join("; "),
            self.component
        ))
    }
}

impl OutputListSchemas {
    /// [`Self::check`] of an item given as its JSON text: made a `Value`
    /// only when it is not plain that it fits (see [`super::flat`]).
    pub fn check_text(&self, name: &str, index: u64, item: &str) -> Result<(), String> {
        if self.lists.get(name).is_some_and(|items| items.fits(item)) {
            return Ok(());
        }
        let value: Value = serde_json::from_str(item).map_err(|e| e.to_string())?;
        self.check(name, index, &value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schemas() -> OutputListSchemas {
        OutputListSchemas::of(
            "members",
            &json!({
                "type": "object",
                "properties": {
                    "people": {"type": "array", "items": {"$ref": "#/$defs/Person"}, "x-sluice-paged": true},
                    "plain": {"type": "array", "items": {"type": "string"}},
                    "untyped": {"type": "array", "x-sluice-paged": true},
                    "count": {"type": "integer"}
                },
                "$defs": {"Person": {"type": "object", "properties": {"n": {"type": "integer"}},
                    "required": ["n"]}}
            }),
        )
        .unwrap()
    }

    #[test]
    fn only_marked_top_level_lists_with_items_are_paged() {
        assert_eq!(schemas().names().collect::<Vec<_>>(), ["people"]);
        let nothing = json!({"properties": {"people": {"type": "array", "items": {}}}});
        assert!(OutputListSchemas::of("x", &nothing).is_none());
        assert!(OutputListSchemas::of("x", &json!(true)).is_none());
    }

    #[test]
    fn an_item_is_checked_with_the_roots_defs_naming_where_it_is_wrong() {
        let s = schemas();
        assert_eq!(s.check("people", 0, &json!({"n": 1})), Ok(()));
        let e = s.check("people", 7, &json!({"n": "x"})).unwrap_err();
        assert!(
            e.starts_with("`people.7.n`: \"x\" is not of type \"integer\""),
            "{e}"
        );
        assert!(e.ends_with("(output schema of `members`)"), "{e}");
        let e = s.check("people", 2, &json!({})).unwrap_err();
        assert!(
            e.starts_with("`people.2`: \"n\" is a required property"),
            "{e}"
        );
        assert!(s.check("plain", 0, &json!("a")).is_err());
        // Given as text, the same answers.
        assert_eq!(s.check_text("people", 0, r#"{"n": 1}"#), Ok(()));
        let text = s.check_text("people", 7, r#"{"n": "x"}"#).unwrap_err();
        assert_eq!(text, s.check("people", 7, &json!({"n": "x"})).unwrap_err());
        assert!(s.check_text("plain", 0, r#""a""#).is_err());
        assert!(s.check_text("people", 0, "{").is_err());
    }
}
