//! The flow's key-value store, kept from one run to the next.
//!
//! Scoped to the flow's name; keys are 1 to 512 bytes, values JSON of at
//! most 256 KiB. Writes become durable when this call (the step, or this
//! `for_each` item) succeeds, or earlier with [`commit`], and never in a
//! dry run, where they are seen
//! by the rest of the run and then discarded. Two items writing different
//! keys both land; the same key is last-writer-wins. Key per-item state by
//! [`Context::item_key`](crate::Context::item_key).
//!
//! ```ignore
//! let seen: Option<Vec<String>> = state::get("seen")?;
//! state::set("seen", &keys)?;
//! for entry in state::entries::<Person>("person/") { let (key, person) = entry?; }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__bindings::sluice::flow::state::{self as wit, StateError};
use crate::StepError;

/// The most entries the host returns per page.
pub const MAX_PAGE: u32 = 1000;

fn to_step_error(e: StateError) -> StepError {
    match e {
        StateError::InvalidKey(why) => StepError::internal(why).with_code("state-key"),
        StateError::InvalidValue(why) => StepError::internal(why).with_code("state-value"),
        StateError::TooManyWrites(mib) => StepError::internal(format!(
            "the state writes of one call would hold more than the host's {mib} MiB"
        ))
        .with_code("state-writes"),
        StateError::Unavailable(why) => StepError::unavailable(why).with_code("state-unavailable"),
    }
}

fn decode<T: DeserializeOwned>(key: &str, text: &str) -> Result<T, StepError> {
    serde_json::from_str(text).map_err(|e| {
        StepError::internal(format!(
            "the state under `{key}` is not the shape this component expects: {e}"
        ))
        .with_code("state-shape")
    })
}

/// The value under `key`, or `None`.
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, StepError> {
    match wit::get(key).map_err(to_step_error)? {
        Some(text) => decode(key, &text).map(Some),
        None => Ok(None),
    }
}

/// Stores `value` under `key` when this call succeeds.
pub fn set<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), StepError> {
    let text = serde_json::to_string(value).map_err(|e| {
        StepError::internal(format!(
            "the state for `{key}` could not be serialised: {e}"
        ))
    })?;
    set_json(key, &text)
}

/// Stores `json`, a value already serialised as JSON text (the host checks
/// that it is), under `key` when this call succeeds: for a component that
/// serialised it anyway, to check its size.
pub fn set_json(key: &str, json: &str) -> Result<(), StepError> {
    wit::set(key, json).map_err(to_step_error)
}

/// Removes `key` when this call succeeds.
pub fn delete(key: &str) -> Result<(), StepError> {
    wit::delete(key).map_err(to_step_error)
}

/// Makes this call's writes so far durable now, whatever the call does
/// next (contract 0.2.3): write the record of a change made in another
/// system and commit it before the next request, so a host that dies in
/// between still knows. Does nothing durable in a dry run.
pub fn commit() -> Result<(), StepError> {
    wit::commit().map_err(to_step_error)
}

/// One page of entries whose keys start with `prefix`, after `start_after`.
pub struct Page<T> {
    /// Key and value, in ascending key order.
    pub entries: Vec<(String, T)>,
    /// Where the next page starts (`start_after`), if there may be one.
    pub next: Option<String>,
}

/// Up to `limit` entries (at most [`MAX_PAGE`]) whose keys start with
/// `prefix`, after `start_after`.
pub fn list<T: DeserializeOwned>(
    prefix: &str,
    start_after: Option<&str>,
    limit: u32,
) -> Result<Page<T>, StepError> {
    let page = wit::list(prefix, start_after, limit).map_err(to_step_error)?;
    let entries = page
        .entries
        .into_iter()
        .map(|e| Ok((e.key.clone(), decode(&e.key, &e.value)?)))
        .collect::<Result<Vec<_>, StepError>>()?;
    Ok(Page {
        entries,
        next: page.next,
    })
}

/// Every entry whose key starts with `prefix`, read a page at a time.
pub fn entries<T: DeserializeOwned>(prefix: &str) -> Entries<T> {
    Entries {
        prefix: prefix.to_string(),
        next: Some(None),
        buffered: Vec::new().into_iter(),
    }
}

/// The iterator of [`entries`].
pub struct Entries<T> {
    prefix: String,
    /// `Some(start_after)` while more pages may follow.
    next: Option<Option<String>>,
    buffered: std::vec::IntoIter<(String, T)>,
}

impl<T: DeserializeOwned> Iterator for Entries<T> {
    type Item = Result<(String, T), StepError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.buffered.next() {
                return Some(Ok(entry));
            }
            let start_after = self.next.take()?;
            match list::<T>(&self.prefix, start_after.as_deref(), MAX_PAGE) {
                Ok(page) => {
                    self.next = page.next.map(Some);
                    self.buffered = page.entries.into_iter();
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
