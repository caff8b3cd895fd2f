//! The flow state store on SQLite.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::state::StateEntry;
use crate::{RunRef, StateBatch, StateKey, StatePage, StateQuery, StoreError, now_text};

/// The stored text of `key` (see [`crate::state::parse_value`]).
pub(crate) fn get(
    tx: &Transaction<'_>,
    flow: &str,
    key: &StateKey,
) -> Result<Option<String>, StoreError> {
    let text: Option<String> = tx
        .prepare_cached("SELECT value FROM flow_state WHERE flow = ?1 AND key = ?2")?
        .query_row(params![flow, key.as_str()], |r| r.get(0))
        .optional()?;
    Ok(text)
}

pub(crate) fn list(
    tx: &Transaction<'_>,
    flow: &str,
    q: &StateQuery,
) -> Result<StatePage<String>, StoreError> {
    let size = q.page_size();
    // The larger of the prefix and `start_after` bounds the scan from below
    // (`key > start_after` is applied too, so an equal key is left out).
    let from = match &q.start_after {
        Some(after) if after.as_str() > q.prefix.as_str() => after.as_str(),
        _ => q.prefix.as_str(),
    };
    let mut stmt = tx.prepare_cached(
        "SELECT key, value FROM flow_state
         WHERE flow = ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3) AND (?4 IS NULL OR key > ?4)
         ORDER BY key LIMIT ?5",
    )?;
    let rows = stmt
        .query_map(
            params![
                flow,
                from,
                q.prefix_end(),
                q.start_after,
                i64::try_from(size + 1).unwrap_or(i64::MAX)
            ],
            |r| {
                Ok(StateEntry {
                    key: r.get(0)?,
                    value: r.get(1)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StatePage::from_rows(rows, size))
}

/// Applies `batch` inside the caller's transaction (or savepoint): see
/// [`super::group`], which gives each batch its own savepoint.
pub(crate) fn apply(tx: &Connection, flow: &str, batch: &StateBatch) -> Result<(), StoreError> {
    let texts = batch.texts()?;
    if let Some(fence) = batch.fence {
        let run = RunRef {
            id: batch.run_id.clone().unwrap_or_default(),
            flow: flow.to_string(),
            fence: Some(fence),
        };
        super::history::check_fence(tx, &run)?;
    }
    let t = now_text();
    // Prepared once per connection (cached): a first run may set a key per
    // person of the tenant, and each `for_each` item applies its own batch.
    let mut set = tx.prepare_cached(
        "INSERT INTO flow_state (flow, key, value, updated_at, run_id) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (flow, key) DO UPDATE SET
            value = excluded.value, updated_at = excluded.updated_at, run_id = excluded.run_id",
    )?;
    let mut delete = tx.prepare_cached("DELETE FROM flow_state WHERE flow = ?1 AND key = ?2")?;
    for (key, value) in texts {
        match value {
            Some(value) => set.execute(params![flow, key, value.as_ref(), t, batch.run_id])?,
            None => delete.execute(params![flow, key])?,
        };
    }
    Ok(())
}
