//! The ledger: everything that happened to one key (one person, in the
//! license sync) across runs, read from what is already stored — never a
//! second copy of it:
//!
//! - the `for_each` items recorded with that key (each run's `items` row:
//!   its step, status, the output the component returned, its error),
//!   found through an index on the key;
//! - the decisions people made about it in approval plans (who, when, a
//!   note), and each closing of a pending, approved or rejected key that
//!   left its step's items (no longer needed), kept even once the key is
//!   back and its plan item waits again.
//!
//! So pruning runs removes their entries and leaves the ledger correct
//! for what remains; a closed plan is pruned with the runs of its time.
//! Keys are looked up case-insensitively ([`crate::approval::key_norm`]).

use serde::Serialize;
use serde_json::Value;

use crate::approval::{Decision, PlanItemState};
use crate::model::ItemStatus;

/// What happened, by where it was recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LedgerEvent {
    /// An item of a run: run, held for approval, or held rejected.
    Item {
        run_id: String,
        /// A rehearsal: nothing was changed.
        dry_run: bool,
        status: ItemStatus,
        /// 0-based position in the step's list.
        index: u64,
        /// What the component returned (capped).
        output: Option<Value>,
        error: Option<String>,
    },
    /// A person approved or rejected the key in a plan.
    Decision {
        plan_id: String,
        decision: Decision,
        by: String,
        note: Option<String>,
    },
    /// The key left its step's items while it was pending, approved or
    /// rejected in a plan: closed as no longer needed.
    Closed {
        plan_id: String,
        run_id: String,
        detail: Option<String>,
    },
}

/// One line of a key's ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerEntry {
    /// RFC 3339, UTC: when the item ended, the decision was made or the
    /// key was closed.
    pub at: String,
    /// The key as the entry recorded it.
    pub key: String,
    pub flow: String,
    pub step: String,
    #[serde(flatten)]
    pub event: LedgerEvent,
}

/// Which keys `sluice ledger --flow` lists: a page in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerKeysQuery {
    pub flow: String,
    /// Keys after this one (compared lower-cased).
    pub after: Option<String>,
    /// At most this many (capped at [`MAX_KEYS_PAGE`]).
    pub limit: usize,
}

/// The most keys one page lists.
pub const MAX_KEYS_PAGE: usize = 10_000;

impl LedgerKeysQuery {
    pub(crate) fn page_size(&self) -> usize {
        self.limit.clamp(1, MAX_KEYS_PAGE)
    }
}

/// Where a key stands in an open approval plan of the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyApproval {
    pub plan_id: String,
    pub step: String,
    pub state: PlanItemState,
    /// Who made the latest decision, if any.
    pub by: Option<String>,
}

/// A key's latest state in a flow: its newest item outside dry runs, and
/// where it stands in the flow's open plans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerKey {
    pub key: String,
    pub step: String,
    pub at: String,
    pub run_id: String,
    pub status: ItemStatus,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub approvals: Vec<KeyApproval>,
}

/// A page of [`LedgerKey`]s.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerKeysPage {
    pub keys: Vec<LedgerKey>,
    /// Whether more keys follow; ask again with the last key as `after`.
    pub more: bool,
}

/// Sorts entries oldest first; at one instant, a decision before the
/// item it allowed, and items in their order.
pub(crate) fn sort_entries(entries: &mut [LedgerEntry]) {
    let rank = |e: &LedgerEntry| match &e.event {
        LedgerEvent::Decision { .. } => 0,
        LedgerEvent::Item { .. } => 1,
        LedgerEvent::Closed { .. } => 2,
    };
    entries.sort_by(|a, b| (&a.at, rank(a)).cmp(&(&b.at, rank(b))));
}
