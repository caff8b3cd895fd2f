//! A step's `ledger` entries: what a step without `for_each` says about
//! each key it handled (the license sync's compare: each person it
//! adopted), emitted as one [`RunEvent::Keyed`] that the run history
//! records as the step's items, so `sluice ledger KEY` finds them through
//! the same key index as every `for_each` item.
//!
//! A first run of the license sync adopts a whole tenant: 73,927 entries
//! at 100k members. The event does not carry them as values: it carries
//! the list where the step's output holds it ([`KeyedEntries`]), and each
//! entry is made (parsed and redacted) only as it is written, a bounded
//! batch at a time.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;
use serde::ser::SerializeSeq;
use serde_json::Value;
use sluice_store::HistoryJson;

use super::context::RunContext;
use super::events::RunEvent;
use super::output::{Json, Kind, ListItems, StepOutput};
use crate::engine::LogLevel;
use crate::flow::Step;
use crate::redact::Redactor;

/// One entry: the key and what the step said about it (the entry as the
/// component returned it, redacted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyedEntry {
    pub key: String,
    pub detail: Value,
}

/// A step's ledger entries, each still the output's own text: made into
/// [`KeyedEntry`]s only as they are read. Serialised, the list of every
/// entry.
#[derive(Clone)]
pub struct KeyedEntries {
    items: ListItems,
    redactor: Redactor,
}

impl KeyedEntries {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The entries from `start`, at most `limit` of them.
    pub fn page(&self, start: usize, limit: usize) -> impl Iterator<Item = KeyedEntry> + '_ {
        self.items
            .page(start, limit)
            .filter_map(|text| entry(text, &self.redactor))
    }

    /// The entries from `start`, at most `limit` of them, as the run
    /// history stores them: each key and the entry's redacted JSON text.
    pub fn page_for_history(
        &self,
        start: usize,
        limit: usize,
    ) -> impl Iterator<Item = (String, HistoryJson)> + '_ {
        self.items
            .page(start, limit)
            .filter_map(|text| stored(text, &self.redactor))
    }
}

impl Serialize for KeyedEntries {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for entry in self.page(0, self.len()) {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl fmt::Debug for KeyedEntries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyedEntries({} entries)", self.len())
    }
}

/// The key of an entry: its `key` field when that is a non-empty text.
fn key_of(entry: Json<'_>) -> Option<String> {
    let key = entry.get("key")?.as_string()?;
    (!key.trim().is_empty()).then_some(key)
}

/// An entry's text as a [`KeyedEntry`], redacted.
fn entry(text: &str, redactor: &Redactor) -> Option<KeyedEntry> {
    let json = Json::parse(text).ok()?;
    Some(KeyedEntry {
        key: key_of(json)?,
        detail: redactor.redact_json(&json.to_value()),
    })
}

/// An entry's text as the history stores it: its key, and its text
/// redacted as [`entry`] redacts its tree.
///
/// Most entries hold no secret. When the text has no escape sequence,
/// each of its strings and keys is the very bytes between its quotes, so
/// a secret in any of them is in the text: a text with neither is kept
/// as it is (the same document, with no tree made). Any other goes
/// through the tree, exactly as [`entry`] redacts it.
fn stored(text: &str, redactor: &Redactor) -> Option<(String, HistoryJson)> {
    let json = Json::parse(text).ok()?;
    let key = key_of(json)?;
    let text = json.text();
    let clean =
        !text.contains('\\') && matches!(redactor.scrub(text.as_bytes()).0, Cow::Borrowed(_));
    let doc = if clean {
        HistoryJson::parse(text.to_string())?
    } else {
        HistoryJson::of(&redactor.redact_json(&json.to_value()))
    };
    Some((key, doc))
}

/// The entries at a step's `ledger` path (`segments`) in `output`: each
/// object with a non-empty string `key`, and a warning when anything else
/// is there (so a component that changed its output's shape is noticed).
pub fn entries(
    segments: &[String],
    output: &StepOutput,
    redactor: &Redactor,
) -> (Option<KeyedEntries>, Option<String>) {
    let path = segments.join(".");
    let found = output.walk(segments);
    let Some(list) = output.list_at(segments) else {
        let why = found.filter(|f| f.kind() != Kind::Null).map(|other| {
            format!(
                "`ledger = \"{path}\"` names {} in the output, not a list: nothing was recorded in the ledger",
                kind(other.kind())
            )
        });
        return (None, why);
    };
    let keyed = list.filter(|text| Json::parse(text).ok().and_then(key_of).is_some());
    let skipped = list.len() - keyed.len();
    let warning = (skipped > 0).then(|| {
        format!(
            "{skipped} of the {} entries of `{path}` have no `key`: they are not in the ledger",
            list.len()
        )
    });
    let entries = KeyedEntries {
        items: keyed,
        redactor: redactor.clone(),
    };
    (Some(entries), warning)
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Null => "null",
        Kind::Bool => "a boolean",
        Kind::Number => "a number",
        Kind::String => "a string",
        Kind::Array => "a list",
        Kind::Object => "a table",
    }
}

/// Emits the step's ledger entries, if it has any.
pub fn emit(ctx: &RunContext<'_>, step: &Step, output: &StepOutput) {
    let Some(segments) = &step.ledger else {
        return;
    };
    let (entries, warning) = entries(segments, output, &ctx.redactor);
    if let Some(message) = warning {
        ctx.emit(&RunEvent::Log {
            step: step.id.clone(),
            level: LogLevel::Warn,
            message,
        });
    }
    let Some(entries) = entries.filter(|e| !e.is_empty()) else {
        return;
    };
    ctx.emit(&RunEvent::Keyed {
        step: step.id.clone(),
        entries,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The entries read from the output's text are what reading its tree
    /// gives: keyed objects in order, redacted, others counted.
    #[test]
    fn entries_are_the_keyed_objects_of_the_list_redacted() {
        let redactor = Redactor::new(["s3cret".to_string()]);
        let output = StepOutput::of(&json!({"adopted": [
            {"key": "a@x", "note": "s3cret"},
            {"key": "  "},
            {"nokey": 1},
            "text",
            {"key": "b@x", "n": [1, 2]},
        ], "n": 3}));
        let (entries, warning) = entries(&["adopted".into()], &output, &redactor);
        let entries = entries.unwrap();
        assert_eq!(entries.len(), 2);
        let all: Vec<KeyedEntry> = entries.page(0, 10).collect();
        assert_eq!(all[0].key, "a@x");
        assert_eq!(all[0].detail, json!({"key": "a@x", "note": "[redacted]"}));
        assert_eq!(all[1].detail, json!({"key": "b@x", "n": [1, 2]}));
        assert_eq!(entries.page(1, 1).count(), 1);
        assert_eq!(
            serde_json::to_value(&entries).unwrap(),
            serde_json::to_value(&all).unwrap()
        );
        assert!(warning.unwrap().starts_with("3 of the 5 entries"));
        let (none, warning) = super::entries(&["n".into()], &output, &redactor);
        assert!(none.is_none());
        assert!(warning.unwrap().contains("names a number"));
        let missing = super::entries(&["missing".into()], &output, &redactor);
        assert!(matches!(missing, (None, None)));
    }

    /// What the history stores of each entry is the document its redacted
    /// tree is, whether the secret is written plainly, escaped (`\u0073`
    /// for `s`, which only the tree sees as the secret), in a key, or not
    /// there at all; and no stored text holds the secret in any spelling.
    #[test]
    fn entries_for_the_history_are_their_redacted_trees() {
        let redactor = Redactor::new(["s3cret-value".to_string()]);
        let text = r#"{"adopted": [
            {"key": "a@x", "name": "Ann", "n": 1.5, "tags": ["x", null, true]},
            {"key": "b@x", "note": "has s3cret-value inside"},
            {"key": "c@x", "note": "\u00733cret-value", "path": "a\/b"},
            {"key": "d@x", "s3cret-value": {"deep": ["s3cret-value"]}},
            {"key": "e@x", "quote": "say \"hi\"", "é": "ü"}
        ]}"#;
        let output = StepOutput::parse(text.to_string()).unwrap();
        let (entries, _) = entries(&["adopted".into()], &output, &redactor);
        let entries = entries.unwrap();
        let trees: Vec<KeyedEntry> = entries.page(0, 10).collect();
        let stored: Vec<(String, HistoryJson)> = entries.page_for_history(0, 10).collect();
        assert_eq!(stored.len(), 5);
        for (tree, (key, doc)) in trees.iter().zip(&stored) {
            assert_eq!(&tree.key, key);
            assert_eq!(doc.to_value(), tree.detail, "{key}");
            assert!(!doc.as_str().contains("s3cret"), "{doc}");
            assert!(!doc.as_str().contains("\\u0073"), "{doc}");
        }
        assert_eq!(
            stored[2].1.to_value(),
            json!({"key": "c@x", "note": "[redacted]", "path": "a/b"})
        );
        assert_eq!(
            stored[3].1.to_value(),
            json!({"key": "d@x", "[redacted]": {"deep": ["[redacted]"]}})
        );
        // An entry with nothing to redact is stored as the component wrote it.
        assert_eq!(
            stored[0].1.as_str(),
            r#"{"key": "a@x", "name": "Ann", "n": 1.5, "tags": ["x", null, true]}"#
        );
    }
}
