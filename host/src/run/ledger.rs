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

use std::fmt;

use serde::Serialize;
use serde::ser::SerializeSeq;
use serde_json::Value;

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
}
