//! The ledger on PostgreSQL: items found through `items_by_key`, decisions
//! and closings through the approval tables' key indexes (see
//! [`crate::ledger`]).

use tokio_postgres::GenericClient;

use super::query::{time, word};
use crate::StoreError;
use crate::approval::key_norm;
use crate::cap::parse_stored;
use crate::ledger::*;

type Result<T> = std::result::Result<T, StoreError>;

pub(crate) async fn ledger(
    c: &impl GenericClient,
    key: &str,
    flow: Option<&str>,
) -> Result<Vec<LedgerEntry>> {
    let norm = key_norm(key);
    let mut entries = Vec::new();
    let rows = c
        .query(
            "SELECT coalesce(i.ended_at, r.started_at), i.item_key, r.flow, i.step_id, r.id, r.dry_run,
                    i.status, i.idx, i.output, i.error
             FROM items i JOIN runs r ON r.id = i.run_id
             WHERE i.key_norm = $1 AND ($2::text IS NULL OR r.flow = $2)",
            &[&norm, &flow],
        )
        .await?;
    for r in &rows {
        entries.push(LedgerEntry {
            at: time(r, 0)?,
            key: r.try_get(1)?,
            flow: r.try_get(2)?,
            step: r.try_get(3)?,
            event: LedgerEvent::Item {
                run_id: r.try_get(4)?,
                dry_run: r.try_get(5)?,
                status: word(r, 6)?,
                index: u64::try_from(r.try_get::<_, i64>(7)?).unwrap_or_default(),
                output: parse_stored(r.try_get(8)?),
                error: r.try_get(9)?,
            },
        });
    }
    let rows = c
        .query(
            "SELECT d.decided_at, d.item_key, p.flow, p.step, p.id, d.decision, d.decided_by, d.note
             FROM approval_decisions d JOIN approval_plans p ON p.id = d.plan_id
             WHERE d.key_norm = $1 AND ($2::text IS NULL OR p.flow = $2)",
            &[&norm, &flow],
        )
        .await?;
    for r in &rows {
        entries.push(LedgerEntry {
            at: time(r, 0)?,
            key: r.try_get(1)?,
            flow: r.try_get(2)?,
            step: r.try_get(3)?,
            event: LedgerEvent::Decision {
                plan_id: r.try_get(4)?,
                decision: word(r, 5)?,
                by: r.try_get(6)?,
                note: r.try_get(7)?,
            },
        });
    }
    let rows = c
        .query(
            "SELECT c.closed_at, c.item_key, p.flow, p.step, p.id, c.run_id, c.detail
             FROM approval_closings c JOIN approval_plans p ON p.id = c.plan_id
             WHERE c.key_norm = $1 AND ($2::text IS NULL OR p.flow = $2)",
            &[&norm, &flow],
        )
        .await?;
    for r in &rows {
        entries.push(LedgerEntry {
            at: time(r, 0)?,
            key: r.try_get(1)?,
            flow: r.try_get(2)?,
            step: r.try_get(3)?,
            event: LedgerEvent::Closed {
                plan_id: r.try_get(4)?,
                run_id: r.try_get(5)?,
                detail: r.try_get(6)?,
            },
        });
    }
    sort_entries(&mut entries);
    Ok(entries)
}

pub(crate) async fn ledger_keys(
    c: &impl GenericClient,
    q: &LedgerKeysQuery,
) -> Result<LedgerKeysPage> {
    let size = q.page_size();
    let after = q.after.as_deref().map(key_norm);
    // DISTINCT ON keeps each key's first row in the ORDER BY: its newest.
    let rows = c
        .query(
            "SELECT key_norm, item_key, step_id, at, run_id, status, output, error FROM (
                SELECT DISTINCT ON (i.key_norm) i.key_norm, i.item_key, i.step_id,
                       coalesce(i.ended_at, r.started_at) AS at, r.id AS run_id, i.status, i.output, i.error
                FROM items i JOIN runs r ON r.id = i.run_id
                WHERE r.flow = $1 AND NOT r.dry_run AND i.key_norm IS NOT NULL
                  AND ($2::text IS NULL OR i.key_norm > $2)
                ORDER BY i.key_norm, coalesce(i.ended_at, r.started_at) DESC, r.id DESC, i.idx DESC
             ) latest ORDER BY key_norm LIMIT $3",
            &[
                &q.flow,
                &after,
                &i64::try_from(size + 1).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    let more = rows.len() > size;
    let approvals = c
        .prepare(
            "SELECT p.id, p.step, a.state, a.decided_by
             FROM approval_items a JOIN approval_plans p ON p.id = a.plan_id
             WHERE a.key_norm = $1 AND p.flow = $2 AND p.status = 'open'
             ORDER BY p.created_at",
        )
        .await?;
    let mut keys = Vec::with_capacity(size.min(rows.len()));
    for r in rows.iter().take(size) {
        let norm: String = r.try_get(0)?;
        let approvals = c
            .query(&approvals, &[&norm, &q.flow])
            .await?
            .iter()
            .map(|a| {
                Ok(KeyApproval {
                    plan_id: a.try_get(0)?,
                    step: a.try_get(1)?,
                    state: word(a, 2)?,
                    by: a.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        keys.push(LedgerKey {
            key: r.try_get(1)?,
            step: r.try_get(2)?,
            at: time(r, 3)?,
            run_id: r.try_get(4)?,
            status: word(r, 5)?,
            output: parse_stored(r.try_get(6)?),
            error: r.try_get(7)?,
            approvals,
        });
    }
    Ok(LedgerKeysPage { keys, more })
}
