//! A step's `ledger` entries: what a step without `for_each` says about
//! each key it handled (the license sync's compare: each person it
//! adopted), emitted as one [`RunEvent::Keyed`] that the run history
//! records as the step's items, so `sluice ledger KEY` finds them through
//! the same key index as every `for_each` item.

use serde::Serialize;
use serde_json::Value;

use super::context::RunContext;
use super::events::RunEvent;
use crate::engine::LogLevel;
use crate::flow::Step;
use crate::flow::resolve::walk_ref;

/// One entry: the key and what the step said about it (the entry as the
/// component returned it, redacted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyedEntry {
    pub key: String,
    pub detail: Value,
}

/// The entries at the step's `ledger` path in `output`, borrowed from it:
/// each object with a non-empty string `key`, and a warning when anything
/// else is there (so a component that changed its output's shape is
/// noticed).
pub fn entries<'o>(step: &Step, output: &'o Value) -> (Vec<(&'o str, &'o Value)>, Option<String>) {
    let Some(segments) = &step.ledger else {
        return (Vec::new(), None);
    };
    let path = segments.join(".");
    let list = match walk_ref(output, segments) {
        None | Some(Value::Null) => return (Vec::new(), None),
        Some(Value::Array(list)) => list,
        Some(other) => {
            let why = format!(
                "`ledger = \"{path}\"` names {} in the output, not a list: nothing was recorded in the ledger",
                kind(other)
            );
            return (Vec::new(), Some(why));
        }
    };
    let entries: Vec<(&str, &Value)> = list
        .iter()
        .filter_map(|entry| {
            let key = entry.get("key").and_then(Value::as_str)?;
            (!key.trim().is_empty()).then_some((key, entry))
        })
        .collect();
    let skipped = list.len() - entries.len();
    let warning = (skipped > 0).then(|| {
        format!(
            "{skipped} of the {} entries of `{path}` have no `key`: they are not in the ledger",
            list.len()
        )
    });
    (entries, warning)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// Emits the step's ledger entries, if it has any.
pub fn emit(ctx: &RunContext<'_>, step: &Step, output: &Value) {
    let (entries, warning) = entries(step, output);
    if let Some(message) = warning {
        ctx.emit(&RunEvent::Log {
            step: step.id.clone(),
            level: LogLevel::Warn,
            message,
        });
    }
    if entries.is_empty() {
        return;
    }
    ctx.emit(&RunEvent::Keyed {
        step: step.id.clone(),
        entries: entries
            .into_iter()
            .map(|(key, detail)| KeyedEntry {
                key: key.to_string(),
                detail: ctx.redactor.redact_json(detail),
            })
            .collect(),
    });
}
