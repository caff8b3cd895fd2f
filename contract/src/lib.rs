//! JSON shapes of the step contract that both sides use.
//!
//! The host writes them and components read them, so they are defined
//! once, here: the kind of a step's error ([`ErrorKind`], the WIT's
//! `error-kind` as JSON) and a `for_each` step's output ([`ForEachOutput`]),
//! which later steps read as `${steps.<id>}`, with what its approval gate
//! held back ([`GateSummary`]): a report after a gated step lists who waits
//! for approval, who was rejected, and the command that approves them. With the `schema` feature each
//! also has a JSON Schema, for a component's `describe`. And what an
//! input or output text holds in place of a list handed over in pages
//! ([`PagedPlaceholder`], the WIT's `paged` and `paged-output`).
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The keyword that marks a top-level list property of a component's
/// input schema (read in pages, contract 0.2.1) or output schema (handed
/// over in pages, 0.2.2) as `"x-sluice-paged": true`, and names the list
/// in its placeholder.
pub const PAGED_KEYWORD: &str = "x-sluice-paged";

/// What a step's input or output text holds in place of a list handed
/// over in pages: `{"x-sluice-paged": "people", "length": 85069}`. The
/// host writes it in an input; a component writes it in its output once
/// it appended the list's items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagedPlaceholder {
    /// The list's name: its property's.
    #[serde(rename = "x-sluice-paged")]
    pub name: String,
    /// How many items it holds.
    pub length: u64,
}

/// What kind of failure a step reported (the WIT's `error-kind`). Only
/// `unavailable` and `rate-limited` are retried by a step's `retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The step's input is wrong.
    BadInput,
    /// Something the step needed does not exist.
    NotFound,
    /// The change clashes with what is already there.
    Conflict,
    /// The service refused the connection's credentials or lacks a permission.
    Forbidden,
    /// The service could not be reached or failed. Retryable.
    Unavailable,
    /// The service asked to slow down. Retryable.
    RateLimited,
    /// Anything else, a failure of the component or of the host.
    Internal,
}

impl ErrorKind {
    /// Every kind, in the WIT's order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::BadInput,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Forbidden,
        ErrorKind::Unavailable,
        ErrorKind::RateLimited,
        ErrorKind::Internal,
    ];

    /// Whether a step's `retry` policy may call the step again.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::RateLimited)
    }

    /// The kind's name as the WIT and JSON spell it (`bad-input`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "bad-input",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::RateLimited => "rate-limited",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `for_each` step's output: every item that ran, in item order, with
/// its output or its error, and the counts. `O` is the component's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(bound(serialize = "O: Serialize", deserialize = "O: Deserialize<'de>"))]
pub struct ForEachOutput<O = Value> {
    /// One entry per item that ran, in item order.
    pub items: Vec<ItemEntry<O>>,
    /// How many items succeeded.
    pub ok: usize,
    /// How many items failed.
    pub failed: usize,
    /// With `approval` on the step: what its gate decided (which items
    /// wait, which were rejected, the approve command). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<GateSummary>,
}

/// What the approval gate of a `for_each` step decided in one run: the
/// step's output carries it under `approval`, and the run's outcome and
/// events show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GateSummary {
    /// The step's id.
    pub step: String,
    /// The approval plan that holds what waits (none in a dry run that
    /// would open one, or when nothing waits and no plan was open).
    pub plan: Option<String>,
    /// Why the step needed approval in this run, when it did.
    pub reason: Option<String>,
    /// The command that approves what waits (`sluice approve ap-… --revision
    /// N`: the plan as this run left it, nothing a later run adds; in a run
    /// given `--only`, followed by `--only KEY` for each key it showed
    /// waiting), when something waits in a plan.
    pub approve: Option<String>,
    /// How many approved items ran (or would run, in a dry run).
    pub approved: u64,
    /// How many items ran without needing approval.
    pub unapproved: u64,
    /// Items waiting for a decision, with their keys.
    pub waiting: Vec<HeldEntry>,
    /// Items whose key was rejected: not run, and left alone.
    pub rejected: Vec<HeldEntry>,
    /// Plan items closed because their key is no longer among the items.
    pub closed: u64,
    /// Whether this was a dry run (nothing was recorded in the plan).
    pub dry_run: bool,
}

impl GateSummary {
    /// [`approve`](Self::approve) without the keys a run given `--only`
    /// named: the plan's command, to which `--only KEY` adds one person.
    pub fn approve_plan(&self) -> Option<&str> {
        let command = self.approve.as_deref()?;
        command.split(" --only ").next()
    }
}

/// An item an approval gate held back, with its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HeldEntry {
    /// The item's key (`for_each_key`).
    pub key: String,
    /// The item, as the list held it.
    pub item: Value,
}

/// One item of a `for_each` step and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(bound(serialize = "O: Serialize", deserialize = "O: Deserialize<'de>"))]
pub struct ItemEntry<O = Value> {
    /// The item, as the list held it.
    pub item: Value,
    /// Its outcome, tagged by `status`.
    #[serde(flatten)]
    pub result: ItemResult<O>,
}

/// `{"status": "ok", "output": …}` or `{"status": "failed", "error": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "status", rename_all = "lowercase")]
#[serde(bound(serialize = "O: Serialize", deserialize = "O: Deserialize<'de>"))]
pub enum ItemResult<O = Value> {
    /// The item's call returned this output.
    Ok {
        /// The component's output for this item.
        output: O,
    },
    /// The item's call failed.
    Failed {
        /// Why.
        error: ItemError,
    },
}

/// Why one item failed, as the run records it (redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ItemError {
    /// The kind of failure: the component's own, or `internal` for a
    /// failure the host saw (a trap, a timeout, a limit, bad output).
    pub kind: ErrorKind,
    /// The component's code, or the host's (`timeout`, `trap`, …).
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// Whether a later attempt could succeed (the kind is `unavailable`
    /// or `rate-limited`).
    pub retryable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_for_each_output_has_its_documented_shape() {
        let output: ForEachOutput = ForEachOutput {
            items: vec![
                ItemEntry {
                    item: json!("a"),
                    result: ItemResult::Ok {
                        output: json!({"n": 1}),
                    },
                },
                ItemEntry {
                    item: json!("b"),
                    result: ItemResult::Failed {
                        error: ItemError {
                            kind: ErrorKind::Unavailable,
                            code: "http-503".into(),
                            message: "down".into(),
                            retryable: true,
                        },
                    },
                },
            ],
            ok: 1,
            failed: 1,
            approval: None,
        };
        let text = serde_json::to_value(&output).unwrap();
        assert_eq!(
            text,
            json!({"items": [
                {"item": "a", "status": "ok", "output": {"n": 1}},
                {"item": "b", "status": "failed", "error": {"kind": "unavailable", "code": "http-503", "message": "down", "retryable": true}}
            ], "ok": 1, "failed": 1})
        );
        let back: ForEachOutput = serde_json::from_value(text).unwrap();
        assert_eq!(back, output);
    }

    #[test]
    fn a_gated_steps_output_says_who_waits_and_how_to_approve() {
        let text = json!({"items": [], "ok": 0, "failed": 0, "approval": {
            "step": "deactivate", "plan": "ap-1", "reason": "this step always needs approval",
            "approve": "sluice approve ap-1", "approved": 0, "unapproved": 0,
            "waiting": [{"key": "ann@x.com", "item": {"key": "ann@x.com"}}],
            "rejected": [], "closed": 0, "dry_run": false
        }});
        let output: ForEachOutput = serde_json::from_value(text.clone()).unwrap();
        let gate = output.approval.as_ref().unwrap();
        assert_eq!(gate.waiting[0].key, "ann@x.com");
        assert_eq!(gate.approve.as_deref(), Some("sluice approve ap-1"));
        assert_eq!(serde_json::to_value(&output).unwrap(), text);
    }

    #[test]
    fn a_placeholder_is_the_keyword_and_the_length_and_nothing_else() {
        let placeholder = PagedPlaceholder {
            name: "people".into(),
            length: 3,
        };
        let text = r#"{"x-sluice-paged":"people","length":3}"#;
        assert_eq!(serde_json::to_string(&placeholder).unwrap(), text);
        assert_eq!(
            serde_json::from_str::<PagedPlaceholder>(text).unwrap(),
            placeholder
        );
        let more = r#"{"x-sluice-paged":"people","length":3,"items":[]}"#;
        assert!(serde_json::from_str::<PagedPlaceholder>(more).is_err());
        assert!(serde_json::from_str::<PagedPlaceholder>(r#"{"length":3}"#).is_err());
    }

    #[test]
    fn kinds_spell_as_the_wit_does_and_two_are_retryable() {
        for kind in ErrorKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        }
        let retryable: Vec<_> = ErrorKind::ALL.iter().filter(|k| k.retryable()).collect();
        assert_eq!(
            retryable,
            [&ErrorKind::Unavailable, &ErrorKind::RateLimited]
        );
    }
}
