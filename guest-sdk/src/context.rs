//! Which run, step and item a call is for.

use crate::__bindings::RunContext;

/// Facts about the call being made: the run, the step, the item inside
/// `for_each`, whether this is a dry run, and which attempt.
#[derive(Debug, Clone)]
pub struct Context {
    inner: RunContext,
}

impl Context {
    /// Wraps the context the host passed to `run`.
    pub(crate) fn new(inner: RunContext) -> Self {
        Self { inner }
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// The flow's name.
    pub fn flow(&self) -> &str {
        &self.inner.flow
    }

    /// The step's id.
    pub fn step(&self) -> &str {
        &self.inner.step
    }

    /// Inside `for_each`: the item's position, from 0.
    pub fn item_index(&self) -> Option<u64> {
        self.inner.item_index
    }

    /// Inside `for_each`: a stable name for the item, to key state by;
    /// never blank (the host does not call for an item named so).
    pub fn item_key(&self) -> Option<&str> {
        self.inner.item_key.as_deref()
    }

    /// Whether this run is a rehearsal: writes are not sent, and state
    /// written is discarded when the run ends.
    pub fn dry_run(&self) -> bool {
        self.inner.dry_run
    }

    /// When the run started, RFC 3339 in UTC.
    pub fn started_at(&self) -> &str {
        &self.inner.started_at
    }

    /// 1 on the first call, 2 and up when the step's `retry` calls again.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }
}
