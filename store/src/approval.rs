//! Approvals: what a step held back for a person to decide, and what was
//! decided. The types both backends read and write; the rules they keep:
//!
//! - A **plan** gathers the items one step of one flow held back, keyed
//!   by the step's `for_each_key`. At most one plan per flow and step is
//!   [`PlanStatus::Open`] (a unique index says so), and every run of the
//!   flow updates that one ([`GateUpdate`]) rather than adding another.
//! - Each item of a plan has a [`PlanItemState`]: `pending` until someone
//!   decides, then `approved` or `rejected` (either may be changed again
//!   until the item is used); `done` once an approved item has run
//!   (succeeded, or failed for good: the approval is spent); `closed` once
//!   its key left the step's items (no longer needed).
//! - A plan closes when none of its items is pending, approved or
//!   rejected. A closed plan takes no decision.
//! - A run never changes a decision: it adds new keys as `pending`, brings
//!   the inputs of the keys it saw up to date, closes the keys it no
//!   longer has and settles the approved items it ran. So a decision made
//!   while a run is going is never lost; that run simply does not see it.
//! - Keys compare case-insensitively ([`key_norm`]); the key as first
//!   written is what is shown.
//! - A plan has a **revision**: 1 when it opens, one more at each run that
//!   adds a request (a new key, or one that had run or left and is back).
//!   Each item keeps the revision it joined at. A report names the
//!   revision it showed (`sluice approve ID --revision N`), so a decision
//!   made from it covers what it showed and nothing a later run added
//!   ([`DecisionRequest::revision`]).
//!
//! Every decision is kept ([`DecisionRecord`]: who, when, a note), and so
//! is every closing of a key that left (which run, when): both are shown in
//! the ledger beside the runs of its key, also once the item is a new
//! request again and its own latest decision and outcome are cleared.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::ItemStatus;

/// A key as it is compared and indexed: Unicode lower case, so
/// `Ann.Lee@X.com` and `ann.lee@x.com` are one key.
pub fn key_norm(key: &str) -> String {
    key.trim().to_lowercase()
}

/// Why an item whose key left the step's items is closed, as the item and
/// its ledger entry say.
pub(crate) const NO_LONGER_NEEDED: &str = "no longer among the items: no longer needed";

/// A plan's `--param` overrides as stored: a JSON list of `[name, value]`.
pub(crate) fn params_text(params: &[(String, String)]) -> String {
    serde_json::to_string(params).unwrap_or_else(|_| "[]".into())
}

/// The stored overrides; a plan written before they were kept has none.
pub(crate) fn params_from(text: Option<String>) -> Vec<(String, String)> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// A new plan id, `ap-` and six hex digits (`ap-3f9a1c`): short enough to
/// type, random enough that two plans of one store rarely draw the same
/// (the store draws again when they do).
pub fn new_plan_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_i64(chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
    h.write_u32(std::process::id());
    format!("ap-{:06x}", h.finish() & 0xff_ffff)
}

crate::model::word_enum! {
    /// Where a plan stands.
    PlanStatus, "plan status" {
        /// Some item waits for a decision, waits to run, or is held rejected.
        Open => "open",
        /// Every item has run or left the step's items.
        Closed => "closed",
    }
}

crate::model::word_enum! {
    /// Where one item of a plan stands.
    PlanItemState, "plan item state" {
        /// Waiting for a decision.
        Pending => "pending",
        /// Approved; runs at the flow's next run if its key is still an item.
        Approved => "approved",
        /// Rejected; held back while its key is an item, until approved.
        Rejected => "rejected",
        /// Approved and run: the approval is spent.
        Done => "done",
        /// Its key is no longer among the step's items: no longer needed.
        Closed => "closed",
    }
}

crate::model::word_enum! {
    /// A decision a person makes about items of a plan.
    Decision, "decision" {
        Approved => "approved",
        Rejected => "rejected",
    }
}

impl PlanItemState {
    /// Whether the item still counts for its plan (the plan stays open).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            PlanItemState::Pending | PlanItemState::Approved | PlanItemState::Rejected
        )
    }
}

impl Decision {
    /// The item state this decision puts an item in.
    pub fn state(self) -> PlanItemState {
        match self {
            Decision::Approved => PlanItemState::Approved,
            Decision::Rejected => PlanItemState::Rejected,
        }
    }

    /// `approve` or `reject`, as the command is named.
    pub fn verb(self) -> &'static str {
        match self {
            Decision::Approved => "approve",
            Decision::Rejected => "reject",
        }
    }
}

/// How many items of a plan are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    pub pending: u64,
    pub approved: u64,
    pub rejected: u64,
    pub done: u64,
    pub closed: u64,
}

impl PlanCounts {
    pub fn add(&mut self, state: PlanItemState, n: u64) {
        let slot = match state {
            PlanItemState::Pending => &mut self.pending,
            PlanItemState::Approved => &mut self.approved,
            PlanItemState::Rejected => &mut self.rejected,
            PlanItemState::Done => &mut self.done,
            PlanItemState::Closed => &mut self.closed,
        };
        *slot += n;
    }

    /// Items that keep the plan open.
    pub fn live(&self) -> u64 {
        self.pending + self.approved + self.rejected
    }
}

/// A plan without its items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    pub id: String,
    pub flow: String,
    pub step: String,
    pub status: PlanStatus,
    /// Why the step needed approval, as the latest run found it.
    pub reason: String,
    /// The flow file of the run that last updated the plan (what
    /// `sluice approve --run` runs).
    pub flow_file: String,
    /// The `--param NAME=VALUE` overrides that run was given, in order
    /// (what `sluice approve --run` gives the flow again).
    pub params: Vec<(String, String)>,
    pub created_at: String,
    pub created_by_run: String,
    pub updated_at: String,
    pub updated_by_run: String,
    pub closed_at: Option<String>,
    /// 1 when opened, one more at each run that added a request.
    pub revision: u64,
    pub counts: PlanCounts,
}

/// How an approved item's run ended, or why an item was closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItemOutcome {
    /// `succeeded` or `failed` for an item that ran; `closed` for one
    /// that left the step's items.
    pub outcome: String,
    pub run_id: String,
    pub at: String,
    /// Why the item failed, or why it was closed.
    pub detail: Option<String>,
}

/// One item of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanItem {
    /// The key as first written.
    pub key: String,
    /// The item's input as the latest run that held it resolved it
    /// (redacted, capped).
    pub input: Value,
    pub state: PlanItemState,
    pub first_seen_run: String,
    pub last_seen_run: String,
    pub last_seen_at: String,
    /// The latest decision's author, time and note.
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub note: Option<String>,
    pub outcome: Option<PlanItemOutcome>,
    /// The plan's revision when this request joined it (again, for a key
    /// that had run or left and came back).
    pub revision: u64,
}

impl PlanItem {
    /// Why the item is in the plan, when its input says so: a `reason` of
    /// the item itself or of one of its objects (a leaver's
    /// `user.reason`, as the license sync's compare writes it). Shown
    /// beside the item by `approvals show` and the console.
    pub fn reason(&self) -> Option<&str> {
        let own = self.input.get("reason").and_then(Value::as_str);
        own.or_else(|| {
            self.input
                .as_object()?
                .values()
                .find_map(|v| v.get("reason").and_then(Value::as_str))
        })
    }
}

/// A decision as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionRecord {
    pub plan_id: String,
    pub flow: String,
    pub step: String,
    pub key: String,
    pub decision: Decision,
    pub by: String,
    pub at: String,
    pub note: Option<String>,
}

/// A plan with its items (in the order they first appeared) and every
/// decision made about them (oldest first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanDetail {
    pub plan: PlanSummary,
    pub items: Vec<PlanItem>,
    pub decisions: Vec<DecisionRecord>,
}

impl PlanDetail {
    /// The item with this key (compared case-insensitively).
    pub fn item(&self, key: &str) -> Option<&PlanItem> {
        let norm = key_norm(key);
        self.items.iter().find(|i| key_norm(&i.key) == norm)
    }
}

/// An item a step held back in this run, with its current input.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldItem {
    pub key: String,
    pub input: Value,
}

/// What one run's approval gate of one step records in the flow's open
/// plan, in one transaction:
///
/// - `held`: keys added as `pending` when new; every held key's input and
///   "last seen" are brought up to date, its state left alone (a decision
///   made meanwhile stands). When there is no open plan and something is
///   held, a plan is opened.
/// - `gone`: keys no longer among the step's items. Those still pending,
///   approved or rejected are closed as no longer needed.
///
/// The plan then closes if nothing in it is live. With `fence`, the
/// write is refused once the flow's lease moved on.
#[derive(Debug, Clone, PartialEq)]
pub struct GateUpdate {
    pub flow: String,
    pub step: String,
    pub run_id: String,
    pub flow_file: String,
    /// The run's `--param` overrides, kept with the plan for `approve --run`.
    pub params: Vec<(String, String)>,
    /// Why the step needs approval in this run; `None` when it does not
    /// and holds only rejected keys: the plan keeps the reason it has (a
    /// stand-in replaced it, and a closed plan went on saying rejected
    /// items were held after none was).
    pub reason: Option<String>,
    pub held: Vec<HeldItem>,
    pub gone: Vec<String>,
    pub fence: Option<i64>,
}

impl GateUpdate {
    /// The reason a plan opened by this update starts with.
    pub(crate) fn opening_reason(&self) -> String {
        crate::cap::capped_error(
            self.reason
                .as_deref()
                .unwrap_or("rejected items stay held until approved"),
        )
    }

    /// The reason to keep in the plan, when this update says one.
    pub(crate) fn new_reason(&self) -> Option<String> {
        self.reason.as_deref().map(crate::cap::capped_error)
    }
}

/// An approved item that ran: its approval is spent.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub key: String,
    /// `Succeeded`, or `Failed` for good.
    pub status: ItemStatus,
    pub run_id: String,
    pub error: Option<String>,
}

/// Which plans to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanQuery {
    /// Only this flow's (its `name`).
    pub flow: Option<String>,
    /// Closed plans too, newest first after the open ones.
    pub include_closed: bool,
    /// At most this many (0: no limit).
    pub limit: usize,
}

/// The longest note a decision may carry: a reason, not a document (every
/// listing of the plan shows it).
pub const MAX_NOTE_CHARS: usize = 2000;
/// The longest name of who decides.
pub const MAX_AUTHOR_CHARS: usize = 200;

/// A person's decision about a plan: every pending item (`keys` and
/// `if_pending` empty), or exactly the items with these keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRequest {
    pub plan_id: String,
    pub keys: Vec<String>,
    /// Keys decided only if they are still pending: what a page showed as
    /// pending when the person chose "every pending item shown". One that
    /// someone decided since is left as it is ([`DecisionOutcome::left`]):
    /// a bulk choice made on a stale page must not undo another person's
    /// decision about one item.
    pub if_pending: Vec<String>,
    pub decision: Decision,
    pub by: String,
    pub note: Option<String>,
    /// Only items that had joined the plan by this revision: what a report
    /// of that revision showed. Pending items that joined later are left
    /// pending ([`DecisionOutcome::later`]); a key named with `keys` that
    /// joined later is refused.
    pub revision: Option<u64>,
}

/// What a decision changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionOutcome {
    /// The plan after the decision.
    pub plan: PlanSummary,
    /// Keys whose state the decision changed.
    pub changed: Vec<String>,
    /// Keys that were in that state already (nothing recorded for them).
    pub unchanged: Vec<String>,
    /// Keys of `if_pending` someone decided otherwise since (or that ran,
    /// or left the step's items), and keys a rejection named that ran or
    /// left the step's items: left as they were.
    pub left: Vec<String>,
    /// Pending keys that joined the plan after the revision the decision
    /// named: left pending, for someone to look at first.
    pub later: Vec<String>,
}

/// A decision the store refuses, phrased for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("there is no approval plan `{0}`; `sluice approvals` lists the pending ones")]
    UnknownPlan(String),
    #[error(
        "plan {id} is closed (since {closed_at}): {done} of its items ran and {closed} were no longer needed, so there is nothing left to {verb}; `sluice approvals` lists the pending plans"
    )]
    PlanClosed {
        id: String,
        closed_at: String,
        done: u64,
        closed: u64,
        verb: &'static str,
    },
    #[error("plan {plan} has no item with key `{key}`; its keys: {keys}")]
    KeyNotInPlan {
        plan: String,
        key: String,
        /// Some of the plan's keys, for the message.
        keys: String,
    },
    #[error(
        "`{key}` in plan {plan} was already approved and run (run {run}, {outcome}), so there is nothing left to {verb}: an approval is used once"
    )]
    KeySpent {
        plan: String,
        key: String,
        run: String,
        outcome: String,
        verb: &'static str,
    },
    #[error(
        "`{key}` in plan {plan} is no longer among the step's items (closed by run {run}), so there is nothing to {verb}"
    )]
    KeyClosed {
        plan: String,
        key: String,
        run: String,
        verb: &'static str,
    },
    #[error(
        "plan {plan} has no pending item ({approved} approved, {rejected} rejected); name items with --only KEY to change a decision"
    )]
    NothingPending {
        plan: String,
        approved: u64,
        rejected: u64,
    },
    #[error(
        "plan {plan} has no revision {revision}: it is at revision {current}; `sluice approvals show {plan}` lists its items with the revision each joined at"
    )]
    NoSuchRevision {
        plan: String,
        revision: u64,
        current: u64,
    },
    #[error(
        "`{key}` joined plan {plan} at revision {joined}, after the revision {revision} you named, so it was not among what you looked at; nothing was decided. Look at it with `sluice approvals show {plan}`, then name revision {joined} or leave --revision out"
    )]
    KeyAfterRevision {
        plan: String,
        key: String,
        joined: u64,
        revision: u64,
    },
    #[error(
        "plan {plan} has no pending item from revision {revision} or before; {later} pending joined later, after what you looked at: `sluice approvals show {plan}` lists them"
    )]
    NothingPendingBy {
        plan: String,
        revision: u64,
        later: usize,
    },
    #[error("a decision needs the name of who makes it (--by NAME)")]
    NoAuthor,
    #[error(
        "the name of who decides is {chars} characters long; it may be at most {MAX_AUTHOR_CHARS}"
    )]
    LongAuthor { chars: usize },
    #[error(
        "the name of who decides holds a control character ({found}); give a name on one line, without control characters"
    )]
    AuthorControl { found: String },
    #[error(
        "the note is {chars} characters long; it may be at most {MAX_NOTE_CHARS} (a reason, not a document: link to a ticket for more)"
    )]
    LongNote { chars: usize },
}

/// One item's state as a decision needs it.
pub(crate) struct DecisionTarget {
    pub norm: String,
    pub key: String,
    pub state: PlanItemState,
    pub outcome_run: Option<String>,
    pub outcome: Option<String>,
    pub revision: u64,
}

/// What a decision is about: the items it decides, the keys of
/// `if_pending` it leaves as they are, and the pending keys that joined
/// after the revision it named.
pub(crate) struct Chosen<'a> {
    pub items: Vec<&'a DecisionTarget>,
    pub left: Vec<String>,
    pub later: Vec<String>,
}

/// The items a decision is about ([`Chosen`]), or why it is refused.
pub(crate) fn choose<'a>(
    plan: &PlanSummary,
    items: &'a [DecisionTarget],
    req: &DecisionRequest,
) -> Result<Chosen<'a>, ApprovalError> {
    if req.by.trim().is_empty() {
        return Err(ApprovalError::NoAuthor);
    }
    let chars = req.by.chars().count();
    if chars > MAX_AUTHOR_CHARS {
        return Err(ApprovalError::LongAuthor { chars });
    }
    // A line break in it printed a line of its own ("FAKE: approved …")
    // wherever the decision is told.
    if let Some(c) = req.by.chars().find(|c| c.is_control()) {
        return Err(ApprovalError::AuthorControl {
            found: format!("{:?}", c.to_string()).trim_matches('"').to_string(),
        });
    }
    let chars = req.note.as_deref().map_or(0, |n| n.chars().count());
    if chars > MAX_NOTE_CHARS {
        return Err(ApprovalError::LongNote { chars });
    }
    if plan.status == PlanStatus::Closed {
        return Err(ApprovalError::PlanClosed {
            id: plan.id.clone(),
            closed_at: plan.closed_at.clone().unwrap_or_default(),
            done: plan.counts.done,
            closed: plan.counts.closed,
            verb: req.decision.verb(),
        });
    }
    if let Some(revision) = req.revision
        && revision > plan.revision
    {
        return Err(ApprovalError::NoSuchRevision {
            plan: plan.id.clone(),
            revision,
            current: plan.revision,
        });
    }
    let by_revision = req.revision.unwrap_or(u64::MAX);
    if req.keys.is_empty() && req.if_pending.is_empty() {
        // A rejection of the plan stops what has not run yet: the items
        // approved and not run too (a mass change an admin approved and
        // then thought better of, mid-run).
        let open = |i: &&DecisionTarget| match req.decision {
            Decision::Approved => i.state == PlanItemState::Pending,
            Decision::Rejected => {
                matches!(i.state, PlanItemState::Pending | PlanItemState::Approved)
            }
        };
        // Approved items were seen by whoever approved them: a revision
        // bounds only the pending ones.
        let (pending, later): (Vec<&DecisionTarget>, Vec<&DecisionTarget>) = items
            .iter()
            .filter(open)
            .partition(|i| i.revision <= by_revision || i.state == PlanItemState::Approved);
        let later: Vec<String> = later.iter().map(|i| i.key.clone()).collect();
        if pending.is_empty() {
            return Err(match req.revision {
                Some(revision) if !later.is_empty() => ApprovalError::NothingPendingBy {
                    plan: plan.id.clone(),
                    revision,
                    later: later.len(),
                },
                _ => ApprovalError::NothingPending {
                    plan: plan.id.clone(),
                    approved: plan.counts.approved,
                    rejected: plan.counts.rejected,
                },
            });
        }
        return Ok(Chosen {
            items: pending,
            left: Vec::new(),
            later,
        });
    }
    let mut chosen: Vec<&DecisionTarget> = Vec::new();
    let mut left = Vec::new();
    // A rejection naming keys of which some ran already (a run under way
    // spends them as it goes) rejects the rest and tells those: the
    // first is the error when none is left to reject.
    let mut spent: Option<ApprovalError> = None;
    for key in &req.keys {
        let norm = key_norm(key);
        let Some(item) = items.iter().find(|i| i.norm == norm) else {
            let keys: Vec<String> = items
                .iter()
                .filter(|i| i.state.is_live())
                .map(|i| i.key.clone())
                .collect();
            return Err(ApprovalError::KeyNotInPlan {
                plan: plan.id.clone(),
                key: key.clone(),
                keys: some_keys(&keys),
            });
        };
        let over = match item.state {
            PlanItemState::Done => Some(ApprovalError::KeySpent {
                plan: plan.id.clone(),
                key: item.key.clone(),
                run: item.outcome_run.clone().unwrap_or_default(),
                outcome: item.outcome.clone().unwrap_or_default(),
                verb: req.decision.verb(),
            }),
            PlanItemState::Closed => Some(ApprovalError::KeyClosed {
                plan: plan.id.clone(),
                key: item.key.clone(),
                run: item.outcome_run.clone().unwrap_or_default(),
                verb: req.decision.verb(),
            }),
            _ => None,
        };
        if let Some(over) = over {
            if req.decision == Decision::Approved {
                return Err(over);
            }
            if !left.contains(&item.key) {
                left.push(item.key.clone());
            }
            spent.get_or_insert(over);
            continue;
        }
        match item.state {
            _ if item.revision > by_revision => {
                return Err(ApprovalError::KeyAfterRevision {
                    plan: plan.id.clone(),
                    key: item.key.clone(),
                    joined: item.revision,
                    revision: by_revision,
                });
            }
            _ if chosen.iter().any(|c| c.norm == item.norm) => {}
            _ => chosen.push(item),
        }
    }
    let mut later = Vec::new();
    for key in &req.if_pending {
        let norm = key_norm(key);
        if chosen.iter().any(|c| c.norm == norm) {
            continue;
        }
        match items.iter().find(|i| i.norm == norm) {
            Some(item) if item.state == PlanItemState::Pending && item.revision > by_revision => {
                later.push(item.key.clone())
            }
            // Pending, or decided so already (then reported unchanged).
            Some(item)
                if item.state == PlanItemState::Pending || item.state == req.decision.state() =>
            {
                chosen.push(item)
            }
            Some(item) if !left.contains(&item.key) => left.push(item.key.clone()),
            _ => {}
        }
    }
    if let (true, Some(spent)) = (chosen.is_empty(), spent) {
        return Err(spent);
    }
    // A key named twice is told once.
    let mut told = std::collections::HashSet::new();
    later.retain(|key| told.insert(key.clone()));
    Ok(Chosen {
        items: chosen,
        left,
        later,
    })
}

/// The message's list of keys: the first few, and how many more.
pub fn some_keys(keys: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut text = keys
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        text.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    if text.is_empty() {
        text = "(none)".into();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_without_case_or_surrounding_space() {
        assert_eq!(key_norm(" Ann.Lee@X.com "), "ann.lee@x.com");
        assert_eq!(key_norm("ZOË@x.com"), "zoë@x.com");
    }

    #[test]
    fn plan_ids_are_short_and_differ() {
        let a = new_plan_id();
        assert_eq!(a.len(), "ap-3f9a1c".len());
        assert!(a.starts_with("ap-"));
        assert_ne!(a, new_plan_id());
    }

    #[test]
    fn words_round_trip() {
        for s in ["pending", "approved", "rejected", "done", "closed"] {
            assert_eq!(s.parse::<PlanItemState>().unwrap().as_str(), s);
        }
        assert!("spent".parse::<PlanItemState>().is_err());
        assert_eq!(Decision::Rejected.state(), PlanItemState::Rejected);
    }
}
