//! The ledger on SQLite: items found through `items_by_key`, decisions
//! and closings through the approval tables' key indexes.

use rusqlite::{Row, Transaction, params};

use crate::approval::key_norm;
use crate::cap::parse_stored;
use crate::ledger::*;
use crate::{ItemStatus, StoreError};

fn status(r: &Row<'_>, i: usize) -> rusqlite::Result<ItemStatus> {
    r.get(i)
}

/// Everything recorded about `key`, of one flow or all, oldest first.
pub(crate) fn ledger(
    tx: &Transaction<'_>,
    key: &str,
    flow: Option<&str>,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let norm = key_norm(key);
    let mut entries = Vec::new();
    let mut stmt = tx.prepare(
        "SELECT COALESCE(i.ended_at, r.started_at), i.item_key, r.flow, i.step_id, r.id, r.dry_run,
                i.status, i.idx, i.output, i.error
         FROM items i JOIN runs r ON r.id = i.run_id
         WHERE i.key_norm = ?1 AND (?2 IS NULL OR r.flow = ?2)",
    )?;
    let items = stmt.query_map(params![norm, flow], |r| {
        Ok(LedgerEntry {
            at: r.get(0)?,
            key: r.get(1)?,
            flow: r.get(2)?,
            step: r.get(3)?,
            event: LedgerEvent::Item {
                run_id: r.get(4)?,
                dry_run: r.get(5)?,
                status: status(r, 6)?,
                index: u64::try_from(r.get::<_, i64>(7)?).unwrap_or_default(),
                output: parse_stored(r.get(8)?),
                error: r.get(9)?,
            },
        })
    })?;
    for e in items {
        entries.push(e?);
    }
    let mut stmt = tx.prepare(
        "SELECT d.decided_at, d.item_key, p.flow, p.step, p.id, d.decision, d.decided_by, d.note
         FROM approval_decisions d JOIN approval_plans p ON p.id = d.plan_id
         WHERE d.key_norm = ?1 AND (?2 IS NULL OR p.flow = ?2)",
    )?;
    let decisions = stmt.query_map(params![norm, flow], |r| {
        Ok(LedgerEntry {
            at: r.get(0)?,
            key: r.get(1)?,
            flow: r.get(2)?,
            step: r.get(3)?,
            event: LedgerEvent::Decision {
                plan_id: r.get(4)?,
                decision: r.get(5)?,
                by: r.get(6)?,
                note: r.get(7)?,
            },
        })
    })?;
    for e in decisions {
        entries.push(e?);
    }
    let mut stmt = tx.prepare(
        "SELECT c.closed_at, c.item_key, p.flow, p.step, p.id, c.run_id, c.detail
         FROM approval_closings c JOIN approval_plans p ON p.id = c.plan_id
         WHERE c.key_norm = ?1 AND (?2 IS NULL OR p.flow = ?2)",
    )?;
    let closed = stmt.query_map(params![norm, flow], |r| {
        Ok(LedgerEntry {
            at: r.get(0)?,
            key: r.get(1)?,
            flow: r.get(2)?,
            step: r.get(3)?,
            event: LedgerEvent::Closed {
                plan_id: r.get(4)?,
                run_id: r.get(5)?,
                detail: r.get(6)?,
            },
        })
    })?;
    for e in closed {
        entries.push(e?);
    }
    sort_entries(&mut entries);
    Ok(entries)
}

/// Each key's newest item outside dry runs in a flow, a page in key order,
/// with where the key stands in the flow's open plans.
pub(crate) fn ledger_keys(
    tx: &Transaction<'_>,
    q: &LedgerKeysQuery,
) -> Result<LedgerKeysPage, StoreError> {
    let size = q.page_size();
    let after = q.after.as_deref().map(key_norm);
    let mut stmt = tx.prepare(
        "SELECT key_norm, item_key, step_id, at, run_id, status, output, error FROM (
            SELECT i.key_norm, i.item_key, i.step_id, COALESCE(i.ended_at, r.started_at) AS at,
                   r.id AS run_id, i.status, i.output, i.error,
                   ROW_NUMBER() OVER (PARTITION BY i.key_norm
                       ORDER BY COALESCE(i.ended_at, r.started_at) DESC, r.id DESC, i.rowid DESC) AS n
            FROM items i JOIN runs r ON r.id = i.run_id
            WHERE r.flow = ?1 AND NOT r.dry_run AND i.key_norm IS NOT NULL
              AND (?2 IS NULL OR i.key_norm > ?2))
         WHERE n = 1 ORDER BY key_norm LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(
            params![q.flow, after, i64::try_from(size + 1).unwrap_or(i64::MAX)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    LedgerKey {
                        key: r.get(1)?,
                        step: r.get(2)?,
                        at: r.get(3)?,
                        run_id: r.get(4)?,
                        status: status(r, 5)?,
                        output: parse_stored(r.get(6)?),
                        error: r.get(7)?,
                        approvals: Vec::new(),
                    },
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let more = rows.len() > size;
    let mut keys = Vec::with_capacity(size.min(rows.len()));
    let mut stmt = tx.prepare(
        "SELECT p.id, p.step, a.state, a.decided_by
         FROM approval_items a JOIN approval_plans p ON p.id = a.plan_id
         WHERE a.key_norm = ?1 AND p.flow = ?2 AND p.status = 'open'
         ORDER BY p.created_at",
    )?;
    for (norm, mut key) in rows.into_iter().take(size) {
        key.approvals = stmt
            .query_map(params![norm, q.flow], |r| {
                Ok(KeyApproval {
                    plan_id: r.get(0)?,
                    step: r.get(1)?,
                    state: r.get(2)?,
                    by: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        keys.push(key);
    }
    Ok(LedgerKeysPage { keys, more })
}
