//! What the web console reads to browse the history, on either backend:
//! run lists filtered by flow and status and paged by a cursor, one run
//! without its items (cheap enough to poll while the run goes on), one
//! step's items failed first, searched and paged, each flow's latest run,
//! the runs since a point (for metrics that follow the history), and the
//! text search behind the ledger page.
//!
//! Every read presents runs as the other reads do: a `running` run whose
//! process is known to be gone reads `interrupted`. A status filter
//! therefore asks the database for the stored statuses that can read as
//! the one wanted ([`stored_statuses`]) and keeps the rows that do.

use crate::{Artifact, ItemRecord, ItemStatus, RunStatus, RunSummary, StepRecord};

/// Which runs a list shows, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// A flow's `name`.
    pub flow: Option<String>,
    pub status: Option<RunStatus>,
    /// Only runs listed after this one (the last run of the previous page).
    pub after: Option<String>,
    /// At most this many runs.
    pub limit: usize,
}

/// One page of runs, and whether more follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    pub more: bool,
}

/// How many items of a step ended in one way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemCount {
    pub step_id: String,
    pub status: ItemStatus,
    pub count: u64,
}

/// A run with its steps, item counts and report files, without the items
/// themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOverview {
    pub run: RunSummary,
    pub steps: Vec<StepRecord>,
    pub item_counts: Vec<ItemCount>,
    pub artifacts: Vec<Artifact>,
}

/// Which items of one step a page shows: failed (then interrupted) ones
/// first, then by position.
#[derive(Debug, Clone, Default)]
pub struct ItemFilter {
    /// Text the item's key, input, output or error contains (ASCII letters
    /// compare case-insensitively).
    pub search: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

/// One page of items and how many match in all.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemPage {
    pub items: Vec<ItemRecord>,
    pub matching: u64,
}

/// A flow seen in the history: its newest run and its latest success.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowLatest {
    pub flow: String,
    pub last_run: RunSummary,
    /// When its latest succeeded run ended.
    pub last_success: Option<String>,
}

/// An item that mentions what was searched for, with the run it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemMention {
    pub run_id: String,
    pub flow: String,
    pub dry_run: bool,
    pub item: ItemRecord,
}

/// The stored statuses that can read as `wanted`.
pub(crate) fn stored_statuses(wanted: RunStatus) -> &'static [&'static str] {
    match wanted {
        RunStatus::Interrupted => &["interrupted", "running"],
        RunStatus::Running => &["running"],
        RunStatus::Succeeded => &["succeeded"],
        RunStatus::Failed => &["failed"],
        RunStatus::Skipped => &["skipped"],
    }
}

/// Fills a page from batches of rows (newest first) whose status, as
/// read, may differ from the stored one: `batch(after, n)` reads up to `n`
/// rows after the run `after`.
pub(crate) fn fill_page<E>(
    filter: &RunFilter,
    start: Option<String>,
    mut batch: impl FnMut(Option<&str>, usize) -> Result<Vec<RunSummary>, E>,
) -> Result<RunPage, E> {
    let wanted = filter.limit.max(1);
    let mut cursor = start;
    let mut runs = Vec::new();
    loop {
        let rows = batch(cursor.as_deref(), wanted + 1)?;
        let exhausted = rows.len() <= wanted;
        cursor = rows.last().map(|r| r.id.clone());
        runs.extend(
            rows.into_iter()
                .filter(|r| filter.status.is_none_or(|s| r.status == s)),
        );
        if runs.len() > wanted || exhausted {
            break;
        }
    }
    let more = runs.len() > wanted;
    runs.truncate(wanted);
    Ok(RunPage { runs, more })
}
