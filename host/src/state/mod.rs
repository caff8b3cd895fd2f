//! Flow state: the key-value store a flow keeps from one run to the next
//! (the WIT's `state` interface), host side.
//!
//! - [`StateStore`]: where state lives, scoped by flow name: get, a page of
//!   a prefix, and a batch of writes applied in one transaction.
//!   [`DurableStore`] keeps it in the run history's store (SQLite or
//!   PostgreSQL) for every recorded run; [`MemoryStore`] keeps it in memory
//!   (tests, and a run with no store, whose state lasts as long as the
//!   process).
//! - [`CallState`]: what one call of a component sees — its own buffered
//!   writes over the run's (in a dry run) over the store — and the writes
//!   it leaves behind for the run to make durable on success. A call's
//!   pending writes are bounded by the memory they hold
//!   ([`MAX_WRITE_BYTES_PER_CALL`]), not by a count of keys, and are held
//!   as compact JSON text ([`Json`], checked once without being parsed
//!   into a tree) all the way to the store, which applies them in one
//!   transaction. Reads come back the same way, as the store's text, which
//!   the component parses: the host never makes a stored value a tree.
//! - [`Overlay`]: a dry run's successful writes, seen by the rest of that
//!   run and never stored.
//! - [`CommitQueue`]: a `for_each` step's items' writes, committed in
//!   batches while the next items run; a read waits for those queued
//!   before it.
//!
//! Invariants: a call's writes reach the store together or not at all, and
//! only when the call succeeded; a dry run never writes to the store. Two
//! calls' batches are applied in the order they finish, so the same key is
//! last-writer-wins.

mod call;
mod durable;
pub(crate) mod json;
mod memory;
pub mod queue;
pub mod snapshot;

use std::collections::BTreeMap;

use sluice_store::HistoryWrite;

pub use call::{CallState, Overlay, Page};
pub use durable::DurableStore;
pub use json::{Json, parse_value};
pub use memory::MemoryStore;
pub use queue::CommitQueue;

/// Longest key, in bytes (the store's limit). Long enough for a prefix and
/// an address or a URL-sized id; short enough to index cheaply.
pub const MAX_KEY_BYTES: usize = sluice_store::state::MAX_KEY_BYTES;
/// Largest value, as JSON text (the store's limit, 256 KiB): a delta link or
/// a person's record fits many times over; a whole tenant belongs in a
/// step's output, not in state.
pub const MAX_VALUE_BYTES: usize = sluice_store::state::MAX_VALUE_BYTES;
/// Host memory one call's pending writes may hold until the call ends, in
/// bytes ([`held_bytes`]): keys, values as compact JSON text, and a fixed
/// cost per key. A first run of the license sync records every person of
/// the tenant in one call (about 0.25 KiB each: a million people fit),
/// and a call that fails keeps none of it.
pub const MAX_WRITE_BYTES_PER_CALL: usize = 512 * 1024 * 1024;
/// What each pending write costs besides its key and value text (the map's
/// node and the two headers), so a flood of tiny writes is bounded too.
const WRITE_OVERHEAD: usize = 64;
/// Most entries one `list` returns.
pub const MAX_PAGE: usize = 1000;

/// How long a write to the store (flow state or run history) is kept and
/// tried again while the store cannot be reached, counted from the first
/// failure: longer than a database restart or fail-over, short enough
/// that a run does not hang on a store that is gone.
pub const STORE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// The pause between two tries while the store cannot be reached.
pub const STORE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// A change to one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Set(String, Json),
    Delete(String),
}

impl Write {
    pub fn key(&self) -> &str {
        match self {
            Write::Set(k, _) | Write::Delete(k) => k,
        }
    }
}

/// A call's writes, by key: `None` deletes.
pub type Writes = BTreeMap<String, Option<Json>>;

/// The store could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the flow state store failed: {message}")]
pub struct StoreError {
    pub message: String,
    /// Refused because the flow's lease is another replica's now (its
    /// fencing number moved on): the run was taken over, it did not fail.
    pub fenced: bool,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            fenced: false,
        }
    }
}

/// Where flow state lives. Implementations never block an async worker.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// The value under `key` in `flow`'s state, as text: a component
    /// parses it itself, so the host never makes it a tree.
    async fn get(&self, flow: &str, key: &str) -> Result<Option<Json>, StoreError>;

    /// Up to `limit` entries of `flow` whose keys start with `prefix` and
    /// sort after `start_after` (bytewise), in ascending key order. A store
    /// may return fewer than `limit` (never more) only when no more exist
    /// or when `limit` exceeds [`MAX_PAGE`].
    async fn list(
        &self,
        flow: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Json)>, StoreError>;

    /// Applies every write, in order, in one transaction; `run` is the run
    /// that made them.
    async fn apply(&self, flow: &str, run: &str, writes: Vec<Write>) -> Result<(), StoreError>;

    /// Applies `writes` as [`StateStore::apply`] does and, in the same
    /// transaction, `record` (items' records) to the history of `run`, when
    /// that history lives in this store: then a crash never leaves an
    /// item's state kept and its record lost, or the other way round. A
    /// store that keeps no history (the default) applies the writes alone
    /// and leaves the record to the run's recorder. Call
    /// [`StateStore::settle_history`] before a step's first records.
    async fn apply_recorded(
        &self,
        flow: &str,
        run: &str,
        writes: Vec<Write>,
        record: Vec<HistoryWrite>,
    ) -> Result<Recorded, StoreError> {
        let _ = record;
        self.apply(flow, run, writes).await.map(|()| Recorded::Not)
    }

    /// Waits until every event the run's recorder was given so far is
    /// written (the run's and the step's start among them), so records
    /// applied after ([`StateStore::apply_recorded`]) are never ahead of
    /// their step. Nothing to wait for by default.
    async fn settle_history(&self) {}
}

/// Where items' records went when their writes were applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Into the run history, in the same transaction as the writes.
    WithWrites,
    /// Nowhere: the run's recorder writes them, as every other record.
    Not,
}

/// Why a key or a value is refused, in the words the component gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a state key must not be empty")]
    EmptyKey,
    #[error("a state key is at most {MAX_KEY_BYTES} bytes; this one is {0}")]
    LongKey(usize),
    #[error("a state key may not contain a NUL character")]
    NulInKey,
    #[error("a state value must be a JSON document: {0}")]
    NotJson(String),
    #[error("a state value is at most {MAX_VALUE_BYTES} bytes of JSON; this one is {0}")]
    LargeValue(usize),
    #[error(
        "one call's pending state writes may hold at most {} MiB of the host's memory",
        MAX_WRITE_BYTES_PER_CALL / (1024 * 1024)
    )]
    TooManyWrites,
}

/// Checks a key against the contract's limits.
pub fn check_key(key: &str) -> Result<(), Refused> {
    match key.len() {
        0 => Err(Refused::EmptyKey),
        n if n > MAX_KEY_BYTES => Err(Refused::LongKey(n)),
        _ if key.contains('\0') => Err(Refused::NulInKey),
        _ => Ok(()),
    }
}

/// The host memory one pending write holds: its key, its value's text and
/// a fixed cost for the entry.
pub fn held_bytes(key: &str, value: Option<&Json>) -> usize {
    WRITE_OVERHEAD + key.len() + value.map_or(0, |v| v.as_str().len())
}

/// `writes` as the store applies them.
pub fn batch(writes: Writes) -> Vec<Write> {
    writes
        .into_iter()
        .map(|(k, v)| match v {
            Some(v) => Write::Set(k, v),
            None => Write::Delete(k),
        })
        .collect()
}
