//! The lists a call's component hands the host a page at a time (the
//! WIT's `paged-output` interface, contract 0.2.2) instead of in its
//! output text.
//!
//! Which names a component may append to, and whether an item fits, is
//! the run's business (its component's output schema): it hands the call
//! a [`ListRules`]. The engine keeps each list's items as the JSON text
//! they will have in the output (items joined by commas, no brackets), so
//! the run can put them in the output's text without building any tree
//! ([`AppendedLists`]); a component's page is checked and copied, and is
//! not kept beyond the append. Each page's items are held in a block of
//! their own, allocated once at their size: one buffer grown to a list of
//! tens of MB would be copied again and again as it doubled, each time
//! onto fresh memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::instance::OutputCap;

/// What decides which lists a call may append to and which items fit.
pub trait ListRules: Send + Sync {
    /// The names of the lists the component's output schema marks.
    fn names(&self) -> Vec<String>;

    /// Checks `item` (its JSON text), at `index` in the list `name`, when
    /// the list's items have a schema; the error says what does not fit.
    fn check(&self, name: &str, index: u64, item: &RawValue) -> Result<(), String>;
}

/// One list's items so far, as the output will hold them.
#[derive(Debug, Default)]
pub struct AppendedList {
    /// The items' JSON texts joined by commas, a block per appended page
    /// (a block after the first starts with its comma): read in order,
    /// the list's text without its brackets. Valid UTF-8 where joined, so
    /// the run can write them into the output as they are (see
    /// `crate::run::splice`).
    blocks: Vec<Vec<u8>>,
    /// The bytes of all blocks.
    bytes: usize,
    /// How many items.
    pub len: u64,
}

impl AppendedList {
    /// A list of `len` items whose joined text is `blocks` read in order.
    #[cfg(test)]
    pub(crate) fn of(blocks: Vec<Vec<u8>>, len: u64) -> AppendedList {
        AppendedList {
            bytes: blocks.iter().map(Vec::len).sum(),
            blocks,
            len,
        }
    }

    /// The bytes of the joined text.
    pub fn text_len(&self) -> usize {
        self.bytes
    }

    /// The joined text, a block at a time, in order.
    pub fn into_blocks(self) -> impl Iterator<Item = Vec<u8>> {
        self.blocks.into_iter()
    }
}

/// The lists of one call by name: every list the rules mark, appended to
/// or not.
pub type AppendedLists = BTreeMap<String, AppendedList>;

/// Why an append was refused (the WIT's `append-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "this step's output has no paged list `{0}`: its output schema must mark a top-level array property of that name `\"x-sluice-paged\": true`"
    )]
    UnknownList(String),
    #[error("the items appended to `{name}` are not a JSON array: {why}")]
    NotAList { name: String, why: String },
    #[error("item {index} of the output list `{name}` does not fit its schema: {why}")]
    BadItem {
        name: String,
        index: u64,
        why: String,
    },
}

/// The lists passed the call's output cap: the call ends (a trap).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its output lists are {size} bytes, over the limit of {limit} bytes (`{key}`)")]
pub struct ListsTooLarge {
    pub size: usize,
    pub limit: usize,
    pub key: &'static str,
}

/// The lists one call appends to, and what they may hold.
pub struct OutputLists {
    rules: Option<Arc<dyn ListRules>>,
    lists: AppendedLists,
    /// The lists' text so far, against `cap`.
    bytes: usize,
    cap: OutputCap,
}

impl std::fmt::Debug for OutputLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.lists.iter().map(|(k, v)| (k, v.len)))
            .finish()
    }
}

impl OutputLists {
    /// The lists `rules` mark, empty, held to `cap` (the call's output
    /// cap: the output text and its lists together). Without rules the
    /// call may append to no list.
    pub fn new(rules: Option<Arc<dyn ListRules>>, cap: OutputCap) -> OutputLists {
        let lists = rules
            .iter()
            .flat_map(|r| r.names())
            .map(|name| (name, AppendedList::default()))
            .collect();
        OutputLists {
            rules,
            lists,
            bytes: 0,
            cap,
        }
    }

    /// None at all, for a call whose output has no paged list.
    pub fn none(cap: OutputCap) -> OutputLists {
        OutputLists::new(None, cap)
    }

    /// The bytes the lists' items hold so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The call's output cap.
    pub fn cap(&self) -> OutputCap {
        self.cap
    }

    /// Appends the items of `page` (a JSON array's text) to `name`, each
    /// checked first: all of them, or none when one is refused. `Ok(Err)`
    /// is the component's error; `Err` ends the call (the cap).
    pub fn append(&mut self, name: &str, page: &str) -> Result<Result<(), Refused>, ListsTooLarge> {
        let (Some(rules), Some(list)) = (&self.rules, self.lists.get_mut(name)) else {
            return Ok(Err(Refused::UnknownList(name.to_string())));
        };
        let items: Vec<&RawValue> = match serde_json::from_str(page) {
            Ok(items) => items,
            Err(e) => {
                return Ok(Err(Refused::NotAList {
                    name: name.to_string(),
                    why: e.to_string(),
                }));
            }
        };
        let mut added = 0;
        for (i, item) in items.iter().enumerate() {
            let index = list.len + i as u64;
            if let Err(why) = rules.check(name, index, item) {
                return Ok(Err(Refused::BadItem {
                    name: name.to_string(),
                    index,
                    why,
                }));
            }
            added += item.get().len() + 1;
        }
        let size = self.bytes.saturating_add(added);
        if size > self.cap.bytes {
            return Err(ListsTooLarge {
                size,
                limit: self.cap.bytes,
                key: self.cap.key,
            });
        }
        if items.is_empty() {
            return Ok(Ok(()));
        }
        // `added` counts a comma per item; the list's first item has none.
        let mut block = Vec::with_capacity(added - usize::from(list.len == 0));
        for item in items {
            if list.len > 0 {
                block.push(b',');
            }
            block.extend_from_slice(item.get().as_bytes());
            list.len += 1;
        }
        list.bytes += block.len();
        list.blocks.push(block);
        self.bytes = size;
        Ok(Ok(()))
    }

    /// The lists, once the call is done.
    pub fn into_lists(self) -> AppendedLists {
        self.lists
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks `people`; an item fits when it is an object.
    struct Objects;

    impl ListRules for Objects {
        fn names(&self) -> Vec<String> {
            vec!["people".into()]
        }
        fn check(&self, _: &str, _: u64, item: &RawValue) -> Result<(), String> {
            match item.get().starts_with('{') {
                true => Ok(()),
                false => Err(format!("{} is not an object", item.get())),
            }
        }
    }

    fn lists(cap: usize) -> OutputLists {
        let cap = OutputCap {
            bytes: cap,
            key: "max_output_bytes",
        };
        OutputLists::new(Some(Arc::new(Objects)), cap)
    }

    fn text(lists: OutputLists, name: &str) -> (String, u64) {
        let list = lists.into_lists().remove(name).unwrap();
        let (len, bytes) = (list.len, list.text_len());
        let text: Vec<u8> = list.into_blocks().flatten().collect();
        assert_eq!(text.len(), bytes);
        (String::from_utf8(text).unwrap(), len)
    }

    #[test]
    fn pages_are_joined_in_order_as_compact_item_texts() {
        let mut l = lists(1 << 20);
        assert_eq!(l.append("people", r#"[{"k": 1}, {"k":2}]"#), Ok(Ok(())));
        assert_eq!(l.append("people", "[]"), Ok(Ok(())));
        assert_eq!(l.append("people", " [ {\"k\":3} ] "), Ok(Ok(())));
        assert_eq!(l.bytes(), r#"{"k": 1},{"k":2},{"k":3},"#.len());
        assert_eq!(text(l, "people"), (r#"{"k": 1},{"k":2},{"k":3}"#.into(), 3));
    }

    #[test]
    fn a_page_with_a_bad_item_is_refused_whole_naming_the_index() {
        let mut l = lists(1 << 20);
        l.append("people", "[{}, {}]").unwrap().unwrap();
        let e = l.append("people", "[{}, 5, {}]").unwrap().unwrap_err();
        assert_eq!(
            e.to_string(),
            "item 3 of the output list `people` does not fit its schema: 5 is not an object"
        );
        assert_eq!(text(l, "people"), ("{},{}".into(), 2));
    }

    #[test]
    fn unknown_names_and_what_is_not_a_list_are_refused() {
        let mut l = lists(1 << 20);
        let e = l.append("others", "[{}]").unwrap().unwrap_err();
        assert_eq!(e, Refused::UnknownList("others".into()));
        for bad in ["{}", "[{},]", "[{}] x", ""] {
            let e = l.append("people", bad).unwrap().unwrap_err();
            assert!(matches!(e, Refused::NotAList { .. }), "{bad}: {e}");
        }
        let mut none = OutputLists::none(l.cap());
        let e = none.append("people", "[{}]").unwrap().unwrap_err();
        assert_eq!(e, Refused::UnknownList("people".into()));
        assert!(none.into_lists().is_empty());
    }

    #[test]
    fn an_append_past_the_cap_ends_the_call() {
        let mut l = lists(10);
        l.append("people", r#"[{"a":1}]"#).unwrap().unwrap();
        let e = l.append("people", r#"[{"a":2}]"#).unwrap_err();
        assert_eq!((e.size, e.limit, e.key), (16, 10, "max_output_bytes"));
    }
}
