//! What the history holds: the statuses and triggers it knows, the writes
//! it takes ([`HistoryWrite`]), and the records read back.
//!
//! Statuses are enums both ways; a word read back that the history does
//! not know (a hand-edited row) is an [`UnknownWord`] error, and a word
//! typed by a user parses with `FromStr`. Each enum compares equal to its
//! text (`summary.status == "failed"`) and serialises as it.
//!
//! Timestamps are RFC 3339 text in UTC with milliseconds
//! (`2026-11-24T05:42:00.123Z`): fixed width, so they sort and compare as
//! text, in SQL and in Rust alike (PostgreSQL keeps `timestamptz` and
//! reads back the same text).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A word the history does not know where a status or trigger was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`; expected one of: {expected}")]
pub struct UnknownWord {
    /// What was being read: "run status", "trigger", ….
    pub what: &'static str,
    /// The word given.
    pub value: String,
    /// The words accepted, comma-separated.
    pub expected: String,
}

/// A closed set of lower-case words stored as text.
macro_rules! word_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in the order of the declaration.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::model::UnknownWord;
            fn from_str(s: &str) -> Result<Self, $crate::model::UnknownWord> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::model::UnknownWord {
                        what: $what,
                        value: s.to_string(),
                        expected: [$($text,)+].join(", "),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

pub(crate) use word_enum;

word_enum! {
    /// Where a run stands.
    RunStatus, "run status" {
        /// Started and not finished (or its process died, or its replica lost its lease: see [`RunSummary::status`]).
        Running => "running",
        /// Ran to the end.
        Succeeded => "succeeded",
        /// Stopped by an error, named in the run's `error`.
        Failed => "failed",
        /// A scheduled firing that did not run because the previous run of
        /// the flow was still going.
        Skipped => "skipped",
        /// Stopped before its end: the host was shut down, its process died,
        /// or its replica stopped renewing the flow's lease.
        Interrupted => "interrupted",
    }
}

impl RunStatus {
    /// The status a run's running steps take when the run ends unfinished
    /// with this one: failed with a failed run, else interrupted.
    pub fn unfinished_steps(self) -> StepStatus {
        match self {
            RunStatus::Failed => StepStatus::Failed,
            _ => StepStatus::Interrupted,
        }
    }
}

word_enum! {
    /// Where a step stands.
    StepStatus, "step status" {
        /// Started and not finished.
        Running => "running",
        /// Its component returned an output.
        Succeeded => "succeeded",
        /// Its component returned an error, trapped or timed out.
        Failed => "failed",
        /// Not run: its `when` was false, an earlier step failed, or the run
        /// was interrupted first. Its `error` says which.
        Skipped => "skipped",
        /// The run was stopped while the step ran.
        Interrupted => "interrupted",
    }
}

word_enum! {
    /// How one item of a `for_each` step ended. Items are recorded when they
    /// end, so there is no `running`.
    ItemStatus, "item status" {
        /// The component returned an output for it.
        Succeeded => "succeeded",
        /// The component returned an error for it.
        Failed => "failed",
        /// Not run.
        Skipped => "skipped",
        /// The run was stopped while the item ran.
        Interrupted => "interrupted",
        /// Not run: its step needs approval and its key has none yet
        /// (it is pending in the step's approval plan).
        Waiting => "waiting",
        /// Not run: its key was rejected in the step's approval plan.
        Rejected => "rejected",
    }
}

impl ItemStatus {
    /// Whether the item was held back by its step's approval gate.
    pub fn is_held(self) -> bool {
        matches!(self, ItemStatus::Waiting | ItemStatus::Rejected)
    }
}

word_enum! {
    /// What started a run.
    Trigger, "trigger" {
        /// `sluice run`.
        Manual => "manual",
        /// The scheduler (`sluice serve`).
        Schedule => "schedule",
        /// `sluice demo` against the emulators.
        Demo => "demo",
        /// `sluice run --replay`: answered from a recording; a rehearsal
        /// (recorded as a dry run is: it changed nothing).
        Replay => "replay",
    }
}

/// A run about to start. The host makes the id ([`crate::new_run_id`]
/// makes a suitable one) so it can name the run's output folder after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    /// Unique; sorts by start time if made by [`crate::new_run_id`].
    pub id: String,
    /// The flow's `name`.
    pub flow: String,
    /// The flow file, as given to Sluice.
    pub flow_file: String,
    pub trigger: Trigger,
    pub dry_run: bool,
    /// The folder the run writes its report files into (empty: none).
    pub output_dir: String,
    /// The replica that runs it (`--replica`, or the host name).
    pub replica: Option<String>,
    /// When it started (a skipped run also ended then). Every time in a
    /// write is when the thing happened, not when the write lands: writes
    /// are queued and batched, and a backlog must not shift the history.
    pub started_at: DateTime<Utc>,
}

/// Which run a history write is for, and the fencing number of the flow's
/// lease when the run holds one: a write whose number is no longer the
/// flow's is refused ([`crate::StoreError::Fenced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRef {
    pub id: String,
    /// The flow's `name` (the lease is the flow's).
    pub flow: String,
    pub fence: Option<i64>,
}

impl RunRef {
    /// A run written without a lease (`sluice run`, a test).
    pub fn unfenced(id: impl Into<String>, flow: impl Into<String>) -> RunRef {
        RunRef {
            id: id.into(),
            flow: flow.into(),
            fence: None,
        }
    }
}

/// A step that starts, with this (already resolved and redacted) input.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStart {
    pub step: String,
    pub component: String,
    pub input: Value,
    /// For a `for_each` step, the length of its list.
    pub items_total: Option<usize>,
    pub started_at: DateTime<Utc>,
}

/// A step that ends. A step that never started (skipped) is recorded
/// whole from this, which is why the component is given again.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEnd {
    pub step: String,
    pub component: String,
    pub status: StepStatus,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// Requests per connection,
    /// `{"graph": {"requests": n, "retried": n, "throttled": n, "wait_ms": n}}`
    /// (`Value::Null` for none).
    pub connections: Value,
    pub duration_ms: u64,
    /// Its attempts under the step's `retry`, when there were several.
    pub attempts: Option<Attempts>,
    /// When it ended (and started, for a step that never started).
    pub ended_at: DateTime<Utc>,
}

/// The attempts of a step (or `for_each` item) its `retry` policy called
/// again: how many were made, and why each one before the last failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attempts {
    /// Attempts made, the first included.
    pub made: u32,
    /// Every attempt but the last, in order (each one failed).
    pub failed: Vec<FailedAttempt>,
}

/// Why one attempt failed: the component's error, already redacted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailedAttempt {
    /// Its number, from 1.
    pub attempt: u32,
    /// The error's kind (`unavailable`, `rate-limited`).
    pub kind: String,
    pub code: String,
    pub message: String,
}

/// A JSON document for the run history, held as its text: the host makes
/// it once (redacted, from the run's own text where it can) and the store
/// keeps it as it is, without parsing it into a tree and printing it again.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryJson(String);

impl HistoryJson {
    /// `value`'s JSON text.
    pub fn of(value: &Value) -> HistoryJson {
        HistoryJson(value.to_string())
    }

    /// `text` when it is one JSON document (whitespace around it allowed).
    pub fn parse(text: String) -> Option<HistoryJson> {
        serde_json::from_str::<serde::de::IgnoredAny>(&text).ok()?;
        Some(HistoryJson(text))
    }

    /// JSON `null`.
    pub fn null() -> HistoryJson {
        HistoryJson("null".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document as a tree (`null` if it were ever not JSON).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl From<Value> for HistoryJson {
    fn from(value: Value) -> HistoryJson {
        HistoryJson::of(&value)
    }
}

impl std::fmt::Display for HistoryJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One item of a `for_each` step, recorded as it ends (or as its step's
/// approval gate holds it back).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemEnd {
    pub step: String,
    /// 0-based position in the step's list.
    pub index: usize,
    /// The item's key (its step's `for_each_key`): what the ledger and
    /// approvals know it by.
    pub key: Option<String>,
    pub status: ItemStatus,
    pub input: HistoryJson,
    pub output: Option<HistoryJson>,
    pub error: Option<String>,
    /// The item's own requests per connection, shaped as for [`StepEnd`].
    pub connections: Value,
    pub duration_ms: u64,
    /// Its attempts under the step's `retry`, when there were several.
    pub attempts: Option<Attempts>,
    pub ended_at: DateTime<Utc>,
    /// The approval plan whose item for this key it used up (it ran under
    /// an approval, for good): the approval is spent with this record, in
    /// its transaction, so an item whose record is kept is not left
    /// approved by a host that dies before the step ends (the next run
    /// would close it as no longer needed, as if it had never run).
    pub spends_approval: Option<String>,
}

impl ItemEnd {
    /// The approval this item spends ([`ItemEnd::spends_approval`]), as
    /// `run` settles it: its plan, and the item as settled there.
    pub fn spent_approval(&self, run: &str) -> Option<(String, crate::approval::Settled)> {
        let (plan, key) = (self.spends_approval.as_ref()?, self.key.as_ref()?);
        let settled = crate::approval::Settled {
            key: key.clone(),
            status: self.status,
            run_id: run.to_string(),
            error: self.error.clone(),
        };
        Some((plan.clone(), settled))
    }
}

/// One write to the run history. A list of them for one run is applied in
/// one transaction ([`crate::Backend::write`]), in order, after one check
/// of the run's fencing number.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryWrite {
    /// Records a run that starts, as `running`.
    StartRun(NewRun),
    /// A firing that did not run (the previous run was still going): a
    /// `skipped` run that starts and ends at once, `reason` as its error.
    Skipped {
        run: NewRun,
        reason: String,
    },
    /// Ends a run with its status and error.
    FinishRun {
        status: RunStatus,
        error: Option<String>,
        ended_at: DateTime<Utc>,
    },
    /// A step starts; starting it again (a retry of the whole step) starts
    /// it afresh.
    StartStep(StepStart),
    FinishStep(StepEnd),
    /// An item ends; a given index written again replaces it.
    Item(ItemEnd),
    /// What a step's approval gate did in this run; given again for the
    /// same step, it replaces the earlier one.
    Gate(GateRecord),
    /// A file the run produced (its report); a name given again points at
    /// the new path.
    Artifact {
        name: String,
        path: String,
    },
    /// The steps `(id, component)`, in flow order, that have no record yet
    /// are recorded as skipped with `why` (after a run was cut short, so the
    /// record shows the whole flow); recorded ones are left as they are.
    SkipUnrecorded {
        steps: Vec<(String, String)>,
        why: String,
        at: DateTime<Utc>,
    },
    /// A run that will not finish, and its running steps, end at `at` with
    /// `status` (interrupted, or failed when its task died), `reason` as
    /// the error unless it has one. A run that has ended is left alone.
    EndUnfinished {
        status: RunStatus,
        reason: String,
        at: DateTime<Utc>,
    },
}

/// One line of the run list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    pub id: String,
    pub flow: String,
    pub flow_file: String,
    pub trigger: Trigger,
    pub dry_run: bool,
    /// As stored, except that a `running` run whose process is known to be
    /// gone reads `interrupted`, with an `error` saying so.
    pub status: RunStatus,
    pub error: Option<String>,
    pub started_at: String,
    /// `None` while running, and for a run whose process died (its end is
    /// unknown) until [`crate::Store::recover_stale_runs`] sets it.
    pub ended_at: Option<String>,
    /// From `started_at` to `ended_at`, when both are known.
    pub duration_ms: Option<u64>,
    pub output_dir: Option<String>,
    /// The replica that ran it; `None` for runs recorded before schema 5.
    pub replica: Option<String>,
    /// The fencing number of the flow's lease it ran under (`sluice serve`).
    pub fence: Option<i64>,
}

/// One step of a run, in the order the steps started.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepRecord {
    pub step_id: String,
    /// The step's `uses`: a built-in's name or a `.wasm` path.
    pub component: String,
    pub status: StepStatus,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// The resolved `with` table, capped ([`crate::cap`]).
    pub input: Option<Value>,
    /// The component's output, capped ([`crate::cap`]).
    pub output: Option<Value>,
    /// Why it failed; for a skipped step, why it did not run.
    pub error: Option<String>,
    /// Requests per connection:
    /// `{"graph": {"requests": n, "retried": n, "throttled": n, "wait_ms": n}}`.
    pub connections: Option<Value>,
    /// For a `for_each` step, how many items it had.
    pub items_total: Option<u64>,
    /// Its attempts under its `retry`, when there were several (schema 8).
    pub attempts: Option<Attempts>,
}

/// What one step's approval gate did in one run: which plan holds what
/// it held back, and how many items it ran, held and closed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GateRecord {
    pub step: String,
    /// The flow's open plan for the step after this run, or the plan whose
    /// approved items ran.
    pub plan_id: Option<String>,
    /// Why the step needed approval in this run, when it did.
    pub reason: Option<String>,
    /// Approved items that ran.
    pub approved: u64,
    /// Items that ran without needing approval (under the threshold).
    pub unapproved: u64,
    /// Items held for a decision.
    pub waiting: u64,
    /// Items held because they were rejected.
    pub rejected: u64,
    /// Approved or pending keys closed: no longer among the items.
    pub closed: u64,
    /// The plan's revision after this run (schema 13): what
    /// `sluice approve ID --revision N` names to decide what it showed.
    pub revision: Option<u64>,
    /// The command that approves what this run showed waiting, as the run
    /// printed it (schema 14): with `--only KEY` for each key when the run
    /// was given `--only`, so it approves nobody the run did not show.
    pub approve: Option<String>,
}

/// One item of a `for_each` step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ItemRecord {
    pub step_id: String,
    /// 0-based position in the step's list.
    pub index: u64,
    /// The item's key, when its step names one; `None` in records written
    /// before schema 6.
    pub key: Option<String>,
    pub status: ItemStatus,
    pub duration_ms: u64,
    /// When the item ended; `None` in records written before schema 2.
    pub ended_at: Option<String>,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// The item's own requests per connection, shaped as
    /// [`StepRecord::connections`]; `None` in records written before schema 3.
    pub connections: Option<Value>,
    /// Its attempts under its step's `retry`, when there were several
    /// (schema 8).
    pub attempts: Option<Attempts>,
}

/// A run removed by [`crate::Store::prune_older_than`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrunedRun {
    pub id: String,
    /// The folder it wrote its files into, as recorded; the history does
    /// not touch files, the caller decides whether to delete it.
    pub output_dir: Option<String>,
}

/// A file a run produced, such as its HTML report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub path: String,
}

/// Everything recorded about one run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunDetail {
    pub run: RunSummary,
    pub steps: Vec<StepRecord>,
    /// Items of all `for_each` steps, by step then index.
    pub items: Vec<ItemRecord>,
    pub artifacts: Vec<Artifact>,
    /// What each step's approval gate did, in step order.
    pub gates: Vec<GateRecord>,
}

impl RunDetail {
    /// The items of one step.
    pub fn items_of<'a>(&'a self, step_id: &'a str) -> impl Iterator<Item = &'a ItemRecord> + 'a {
        self.items.iter().filter(move |i| i.step_id == step_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A history document is one JSON document, kept as the text given.
    #[test]
    fn history_json_is_one_json_document_kept_as_given() {
        let doc = HistoryJson::parse(r#"{"a": [1, "é"]}"#.to_string()).unwrap();
        assert_eq!(doc.as_str(), r#"{"a": [1, "é"]}"#);
        assert_eq!(doc.to_value(), json!({"a": [1, "é"]}));
        for bad in ["", "{", "1 2", "{\"a\": 1,}", "nope"] {
            assert_eq!(HistoryJson::parse(bad.to_string()), None, "{bad}");
        }
        assert_eq!(HistoryJson::of(&json!([true])).as_str(), "[true]");
        assert_eq!(HistoryJson::null().to_value(), Value::Null);
    }
}
