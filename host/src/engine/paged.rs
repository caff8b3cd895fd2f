//! The lists a call's component reads in pages (the WIT's `paged`
//! interface, contract 0.2.1) instead of in its input text.
//!
//! The run decides which lists those are (the properties its component's
//! input schema marks `"x-sluice-paged": true`), writes a placeholder in
//! the input text in their place ([`placeholder`]), and hands each list
//! to the call as a [`PagedList`]: where the list lives and how to check
//! an item is the run's business, not the engine's. The engine serves
//! `length` and `page` from them.

use std::collections::BTreeMap;
use std::sync::Arc;

/// The most items one `page` call returns; a larger `limit` is cut to it.
pub const MAX_PAGE: usize = 10_000;
/// The items a `page` call with `limit` 0 returns.
pub const DEFAULT_PAGE: usize = 1000;
/// The keyword that marks a paged property in an input schema, and the
/// key of the placeholder the input text holds in its place.
pub const KEYWORD: &str = sluice_contract::PAGED_KEYWORD;

/// Why an item could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadItem(pub String);

/// One list a call reads in pages.
pub trait PagedList: Send + Sync {
    /// How many items it holds.
    fn len(&self) -> u64;

    /// Whether it holds none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items `start..start + limit` (fewer at the end, none past it) as a
    /// JSON array, each checked against the items' schema first.
    fn page(&self, start: u64, limit: usize) -> Result<String, BadItem>;
}

/// The paged lists of one call, by the input property they stand for.
/// Cheap to clone: a retried call reads the same lists.
#[derive(Clone, Default)]
pub struct PagedInputs(BTreeMap<String, Arc<dyn PagedList>>);

impl std::fmt::Debug for PagedInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl PagedInputs {
    /// Adds the list `name` stands for.
    pub fn insert(&mut self, name: &str, list: Arc<dyn PagedList>) {
        self.0.insert(name.to_string(), list);
    }

    /// The list `name` stands for.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn PagedList>> {
        self.0.get(name)
    }

    /// Whether the call reads no list in pages.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a call's component is given: its input as JSON text, and the
/// lists that text names in place of their items.
#[derive(Debug, Clone, Default)]
pub struct StepInput {
    pub text: String,
    pub paged: PagedInputs,
}

impl From<String> for StepInput {
    fn from(text: String) -> Self {
        StepInput {
            text,
            paged: PagedInputs::default(),
        }
    }
}

/// What the input text holds in place of the paged list `name` of `len`
/// items: `{"x-sluice-paged": "people", "length": 85069}`.
pub fn placeholder(name: &str, len: u64) -> serde_json::Value {
    serde_json::json!({ KEYWORD: name, "length": len })
}

/// A `page` call's `limit` as the host serves it (see [`MAX_PAGE`]).
pub fn page_size(limit: u32) -> usize {
    match usize::try_from(limit) {
        Ok(0) => DEFAULT_PAGE,
        Ok(n) => n.min(MAX_PAGE),
        Err(_) => MAX_PAGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_bounded_and_zero_means_the_default() {
        assert_eq!(page_size(0), DEFAULT_PAGE);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(u32::MAX), MAX_PAGE);
    }

    #[test]
    fn the_placeholder_names_the_list_and_its_length() {
        assert_eq!(
            placeholder("people", 3).to_string(),
            r#"{"x-sluice-paged":"people","length":3}"#
        );
    }
}
