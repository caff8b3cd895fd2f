//! What happens during a run, as events for whoever watches: the progress
//! printer, the `--json` stream and the run history all consume the same
//! events. Every text in an event is already redacted; a step's inputs
//! and outputs are shared with the run and redacted as they are written
//! ([`Payload`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sluice_store::Attempts;

use super::approval::{GateSummary, Held};
use super::payload::Payload;
use crate::connections::RequestStats;
use crate::engine::{LogLevel, MemoryUse};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Succeeded,
    Failed,
    Skipped,
    Interrupted,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    RunStarted {
        run_id: String,
        flow: String,
        dry_run: bool,
        output_dir: PathBuf,
    },
    StepStarted {
        step: String,
        component: String,
        input: Payload,
        items: Option<usize>,
    },
    ItemFinished {
        step: String,
        index: usize,
        /// The item's key (its step's `for_each_key`).
        key: Option<String>,
        status: Status,
        input: Payload,
        output: Option<Payload>,
        error: Option<String>,
        #[serde(serialize_with = "millis")]
        duration: Duration,
        done: usize,
        total: usize,
        failed: usize,
        /// This item's own requests per connection (the step's
        /// [`RunEvent::StepFinished`] sums every item's).
        connections: BTreeMap<String, RequestStats>,
        /// How many attempts it took, and why each earlier one failed.
        attempts: Attempts,
        /// Whether its record is already in the run history, committed
        /// with its state writes (see [`crate::state::CommitQueue`]): the
        /// recorder then leaves it be.
        #[serde(skip)]
        recorded: bool,
        /// The approval plan whose item for this key it used up, spent
        /// with its record ([`sluice_store::ItemEnd::spends_approval`]).
        #[serde(skip)]
        spends_approval: Option<String>,
    },
    /// An item its step's approval gate holds back: it does not run in
    /// this run (it waits for a decision, or its key was rejected).
    ItemHeld {
        step: String,
        index: usize,
        key: String,
        held: Held,
        input: Payload,
    },
    /// What a step without `for_each` said about each key it handled (its
    /// `ledger` entries): recorded as the step's items, for the ledger.
    Keyed {
        step: String,
        /// Made as they are read (a first run adopts a whole tenant).
        entries: super::ledger::KeyedEntries,
    },
    /// What a step's approval gate decided: the plan, why, what ran and
    /// what waits, and the command that approves it; the plan's revision
    /// after it, which `runs show` names in that command.
    ApprovalGate {
        summary: GateSummary,
        revision: Option<u64>,
    },
    /// A step ended, or will never run (`Skipped`: then `error` says why —
    /// its `when` is false, an earlier step failed, or the run was
    /// interrupted first).
    StepFinished {
        step: String,
        component: String,
        status: Status,
        output: Option<Payload>,
        error: Option<String>,
        #[serde(serialize_with = "millis")]
        duration: Duration,
        connections: BTreeMap<String, RequestStats>,
        /// How many attempts its call took, and why each earlier one
        /// failed; `None` for a step that never called, or called per item.
        attempts: Option<Attempts>,
        /// The most linear memory its instances held (the largest item's,
        /// under `for_each`), beside their cap; `None` for a step that
        /// never called its component.
        memory: Option<MemoryUse>,
    },
    /// A step has run a while with nothing else to show: how long, and
    /// what holds each of its connections now (requests waiting for an
    /// answer, a wait the service asked for), so a long quiet stretch is
    /// never mistaken for a hang (or a hang for work).
    StillWorking {
        step: String,
        #[serde(serialize_with = "millis")]
        elapsed: Duration,
        /// By connection name, what holds it, in words; only the busy ones.
        connections: BTreeMap<String, String>,
    },
    Log {
        step: String,
        level: LogLevel,
        message: String,
    },
    Artifact {
        step: String,
        name: String,
        path: PathBuf,
    },
    RunFinished {
        status: Status,
        error: Option<String>,
        #[serde(serialize_with = "millis")]
        duration: Duration,
        /// What failed that the run went on past.
        #[serde(flatten)]
        setbacks: Setbacks,
    },
}

/// What failed in a run that went on past it (`on_error = "continue"`):
/// steps, and items of steps that went on without them. A run that ends
/// `succeeded` with some says so where its end is shown (`sluice run`'s
/// last line, `serve`'s log), or they go unseen run after run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Setbacks {
    /// Steps that failed, by id.
    pub failed_steps: Vec<String>,
    /// `for_each` items that failed.
    pub failed_items: u64,
}

impl Setbacks {
    /// What failed, as words ("step `mail` failed, 2 items failed"), or
    /// `None` when nothing did.
    pub fn said(&self) -> Option<String> {
        let mut parts: Vec<String> = self
            .failed_steps
            .iter()
            .map(|s| format!("step `{s}` failed"))
            .collect();
        match self.failed_items {
            0 => {}
            1 => parts.push("1 item failed".to_string()),
            n => parts.push(format!("{n} items failed")),
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Receives the events of a run, in order.
pub trait Observer: Send + Sync {
    fn event(&self, event: &RunEvent);
}

/// Sends each event to several observers.
pub struct Fanout(pub Vec<Arc<dyn Observer>>);

impl Observer for Fanout {
    fn event(&self, event: &RunEvent) {
        for o in &self.0 {
            o.event(event);
        }
    }
}
