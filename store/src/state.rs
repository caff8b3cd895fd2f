//! The flow state store: a small key/value store per flow that components
//! reach through the `state` import (`get`, `set`, `delete`, `list`).
//!
//! - Keys are UTF-8 text of 1 to [`MAX_KEY_BYTES`] bytes without NUL (a
//!   PostgreSQL `text` cannot hold one); they sort by their bytes in both
//!   backends, so paging by `start_after` is the same everywhere.
//! - Values are JSON documents of at most [`MAX_VALUE_BYTES`], stored as
//!   their text (key order kept).
//! - Writes arrive as a [`StateBatch`] applied in one transaction: all of
//!   it or none. The host collects a step's (or a `for_each` item's) writes
//!   and applies them when it succeeds, never in a dry run; the same key
//!   written by two batches is last-writer-wins. A batch written under a
//!   lease carries the lease's fencing number and is refused once another
//!   replica has taken the flow over.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// The largest value, as JSON text: state is for bookkeeping (who was seen
/// when, a cursor), not for documents.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// The most entries one `list` call returns, whatever limit it asks for.
pub const MAX_PAGE: usize = 1000;

/// A key or value the state store refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("a state key cannot be empty")]
    EmptyKey,
    #[error(
        "the state key `{shown}…` is {bytes} bytes long; keys are at most {MAX_KEY_BYTES} bytes"
    )]
    KeyTooLong { shown: String, bytes: usize },
    #[error("the state key `{0}` contains a NUL character")]
    NulInKey(String),
    #[error(
        "the value for state key `{key}` is {bytes} bytes of JSON; values are at most {MAX_VALUE_BYTES} bytes"
    )]
    ValueTooLarge { key: String, bytes: usize },
}

/// A checked state key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StateKey(String);

impl StateKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StateKey {
    type Error = StateError;

    fn try_from(key: String) -> Result<StateKey, StateError> {
        if key.is_empty() {
            return Err(StateError::EmptyKey);
        }
        if key.len() > MAX_KEY_BYTES {
            let shown: String = key.chars().take(40).collect();
            return Err(StateError::KeyTooLong {
                shown,
                bytes: key.len(),
            });
        }
        if key.contains('\0') {
            return Err(StateError::NulInKey(key.replace('\0', "\\0")));
        }
        Ok(StateKey(key))
    }
}

impl TryFrom<&str> for StateKey {
    type Error = StateError;

    fn try_from(key: &str) -> Result<StateKey, StateError> {
        StateKey::try_from(key.to_string())
    }
}

impl From<StateKey> for String {
    fn from(key: StateKey) -> String {
        key.0
    }
}

impl std::fmt::Display for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum StateWrite {
    Set {
        key: StateKey,
        value: Value,
    },
    /// A value already held as JSON text (the host keeps a component's
    /// pending writes so: a parsed value takes several times the memory).
    /// Stored as it is; the text must be one JSON document.
    SetText {
        key: StateKey,
        text: String,
    },
    Delete {
        key: StateKey,
    },
}

impl StateWrite {
    pub fn key(&self) -> &StateKey {
        match self {
            StateWrite::Set { key, .. }
            | StateWrite::SetText { key, .. }
            | StateWrite::Delete { key } => key,
        }
    }
}

/// A key and the text to store under it (`None`: delete it).
pub(crate) type KeyText<'a> = (&'a str, Option<Cow<'a, str>>);

/// Writes applied together, in order, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateBatch {
    pub writes: Vec<StateWrite>,
    /// The run that made them, kept beside each key it sets.
    pub run_id: Option<String>,
    /// The lease's fencing number when the run holds one.
    pub fence: Option<i64>,
    /// Writes to the history of the run `run_id`, kept in the same
    /// transaction: a `for_each` item's record goes with its state, so a
    /// crash between two commits never leaves work done and unrecorded.
    pub history: Vec<crate::HistoryWrite>,
}

impl StateBatch {
    /// The run whose history `history` goes to, when there is any.
    pub(crate) fn history_run(
        &self,
        flow: &str,
    ) -> Result<Option<crate::RunRef>, crate::StoreError> {
        if self.history.is_empty() {
            return Ok(None);
        }
        let Some(id) = &self.run_id else {
            return Err(crate::StoreError::Task(
                "a state batch with history writes must name its run".into(),
            ));
        };
        Ok(Some(crate::RunRef {
            id: id.clone(),
            flow: flow.to_string(),
            fence: self.fence,
        }))
    }

    /// Each value as the JSON text to store, checked for size.
    pub(crate) fn texts(&self) -> Result<Vec<KeyText<'_>>, StateError> {
        self.writes
            .iter()
            .map(|w| {
                let text = match w {
                    StateWrite::Set { value, .. } => Cow::Owned(value.to_string()),
                    StateWrite::SetText { text, .. } => Cow::Borrowed(text.as_str()),
                    StateWrite::Delete { key } => return Ok((key.as_str(), None)),
                };
                let key = w.key();
                if text.len() > MAX_VALUE_BYTES {
                    return Err(StateError::ValueTooLarge {
                        key: key.to_string(),
                        bytes: text.len(),
                    });
                }
                Ok((key.as_str(), Some(text)))
            })
            .collect()
    }
}

/// Writes one statement can apply: consecutive sets (or deletes) of a
/// batch, in order, none repeating a key (PostgreSQL refuses an `INSERT …
/// ON CONFLICT` that touches one row twice), at most `most` of them.
#[derive(Debug, PartialEq)]
pub(crate) enum Run<'a> {
    Set {
        keys: Vec<&'a str>,
        values: Vec<&'a str>,
    },
    Delete {
        keys: Vec<&'a str>,
    },
}

impl<'a> Run<'a> {
    fn keys(&self) -> &[&'a str] {
        match self {
            Run::Set { keys, .. } | Run::Delete { keys } => keys,
        }
    }

    /// Whether a write of this kind goes on at the end of this run.
    fn takes(&self, is_set: bool) -> bool {
        matches!(self, Run::Set { .. }) == is_set
    }
}

/// A batch's writes cut into [`Run`]s, in order: applying the runs one
/// after another is applying the writes one after another.
pub(crate) fn runs<'a>(texts: &'a [KeyText<'a>], most: usize) -> Vec<Run<'a>> {
    let mut out: Vec<Run<'a>> = Vec::new();
    let mut in_run = std::collections::HashSet::new();
    for (key, value) in texts {
        let goes_on = out.last().is_some_and(|run| {
            run.takes(value.is_some()) && run.keys().len() < most && !in_run.contains(key)
        });
        if !goes_on {
            in_run.clear();
            out.push(match value {
                Some(_) => Run::Set {
                    keys: Vec::new(),
                    values: Vec::new(),
                },
                None => Run::Delete { keys: Vec::new() },
            });
        }
        in_run.insert(*key);
        match (out.last_mut(), value) {
            (Some(Run::Set { keys, values }), Some(text)) => {
                keys.push(key);
                values.push(text.as_ref());
            }
            (Some(Run::Delete { keys }), None) => keys.push(key),
            _ => {}
        }
    }
    out
}

/// A `list` call: keys starting with `prefix` (empty: all), after
/// `start_after` when given, in byte order, at most `limit` of them
/// (capped at [`MAX_PAGE`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateQuery {
    pub prefix: String,
    pub start_after: Option<String>,
    pub limit: usize,
}

impl StateQuery {
    pub(crate) fn page_size(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE)
    }

    /// The smallest key above every key that starts with the prefix, when
    /// there is one: the range `prefix <= key < end` is the prefix's keys
    /// in byte (code point) order, which an index scans directly.
    pub(crate) fn prefix_end(&self) -> Option<String> {
        let mut chars: Vec<char> = self.prefix.chars().collect();
        while let Some(last) = chars.pop() {
            let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
            if let Some(next) = next {
                chars.push(next);
                return Some(chars.into_iter().collect());
            }
        }
        None
    }
}

/// One stored entry: its value parsed, or (`StateEntry<String>`) as its
/// JSON text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateEntry<V = Value> {
    pub key: String,
    pub value: V,
}

/// A page of a `list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatePage<V = Value> {
    pub entries: Vec<StateEntry<V>>,
    /// Whether more keys follow the last one; ask again with it as
    /// `start_after`.
    pub more: bool,
}

impl<V> StatePage<V> {
    /// Builds a page from up to `size + 1` rows read.
    pub(crate) fn from_rows(mut entries: Vec<StateEntry<V>>, size: usize) -> StatePage<V> {
        let more = entries.len() > size;
        entries.truncate(size);
        StatePage { entries, more }
    }

    /// The same page with each value made by `f`.
    pub(crate) fn map<W>(self, mut f: impl FnMut(V) -> W) -> StatePage<W> {
        StatePage {
            entries: self
                .entries
                .into_iter()
                .map(|e| StateEntry {
                    key: e.key,
                    value: f(e.value),
                })
                .collect(),
            more: self.more,
        }
    }
}

/// A stored value read back: text that does not parse (written by hand)
/// comes back as a JSON string rather than an error.
pub(crate) fn parse_value(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// A stored value read back as JSON text, for whoever parses it itself (a
/// component's `state.get`: a tree made here would only be printed
/// again). The same document [`parse_value`] gives: the text when it is
/// one JSON document (checked without building a tree), else that text as
/// a JSON string.
pub(crate) fn json_text(text: String) -> String {
    if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
        text
    } else {
        Value::String(text).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_read_as_text_is_the_document_parse_value_gives() {
        for text in [
            r#"{"a":[1,"x"]}"#,
            "3",
            r#""s""#,
            "not json",
            r#"{"a":"#,
            "",
        ] {
            let as_text: Value = serde_json::from_str(&json_text(text.to_string())).unwrap();
            assert_eq!(as_text, parse_value(text.to_string()), "{text}");
        }
        // A document is handed on as stored, not printed again.
        assert_eq!(
            json_text(r#"{ "b": 1, "a": 2 }"#.into()),
            r#"{ "b": 1, "a": 2 }"#
        );
    }

    #[test]
    fn keys_are_checked() {
        assert!(StateKey::try_from("a").is_ok());
        assert!(StateKey::try_from("é".repeat(256)).is_ok());
        assert_eq!(StateKey::try_from(""), Err(StateError::EmptyKey));
        let long = StateKey::try_from("x".repeat(513)).unwrap_err();
        assert!(long.to_string().contains("513 bytes"), "{long}");
        assert!(matches!(
            StateKey::try_from("a\0b"),
            Err(StateError::NulInKey(_))
        ));
    }

    #[test]
    fn a_prefix_ends_where_its_keys_do() {
        let q = |p: &str| StateQuery {
            prefix: p.into(),
            ..StateQuery::default()
        };
        assert_eq!(q("user:").prefix_end().as_deref(), Some("user;"));
        assert_eq!(q("").prefix_end(), None);
        assert_eq!(q("a\u{10FFFF}").prefix_end().as_deref(), Some("b"));
        // The next code point after the surrogate gap.
        assert_eq!(q("\u{D7FF}").prefix_end().as_deref(), Some("\u{E000}"));
    }

    #[test]
    fn a_batch_is_cut_into_runs_that_apply_in_its_order() {
        let set = |k: &'static str, v: &'static str| (k, Some(Cow::Borrowed(v)));
        let texts: Vec<KeyText<'_>> = vec![
            set("a", "1"),
            set("b", "2"),
            set("a", "3"),
            ("b", None),
            ("c", None),
            set("c", "4"),
            set("d", "5"),
            set("e", "6"),
        ];
        let sets = |keys: Vec<&'static str>, values: Vec<&'static str>| Run::Set { keys, values };
        assert_eq!(
            runs(&texts, 2),
            vec![
                sets(vec!["a", "b"], vec!["1", "2"]),
                sets(vec!["a"], vec!["3"]),
                Run::Delete {
                    keys: vec!["b", "c"]
                },
                sets(vec!["c", "d"], vec!["4", "5"]),
                sets(vec!["e"], vec!["6"]),
            ]
        );
        assert_eq!(runs(&[], 2), vec![]);
    }

    #[test]
    fn large_values_are_refused() {
        let key = StateKey::try_from("k").unwrap();
        let batch = StateBatch {
            writes: vec![StateWrite::Set {
                key,
                value: Value::String("x".repeat(MAX_VALUE_BYTES)),
            }],
            ..StateBatch::default()
        };
        assert!(matches!(
            batch.texts(),
            Err(StateError::ValueTooLarge { .. })
        ));
    }
}
