//! The console's reads ([`crate::browse`]) on SQLite.

use rusqlite::{Row, Transaction, params};

use super::query::{RUN_COLUMNS, item, step, summary};
use crate::browse::{
    FlowLatest, ItemCount, ItemFilter, ItemMention, ItemPage, RunFilter, RunOverview, RunPage,
    fill_page, stored_statuses,
};
use crate::{Artifact, RunStatus, RunSummary, StepStatus, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn counts_row(r: &Row<'_>) -> rusqlite::Result<ItemCount> {
    Ok(ItemCount {
        step_id: r.get(0)?,
        status: r.get(1)?,
        count: count(r.get(2)?),
    })
}

/// Up to `n` runs after the run `after` (by start, then id), newest first.
fn runs_batch(
    tx: &Transaction<'_>,
    filter: &RunFilter,
    after: Option<&str>,
    n: usize,
) -> Result<Vec<RunSummary>> {
    let statuses = filter.status.map(stored_statuses).unwrap_or(&[]).join(",");
    let mut stmt = tx.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE (?1 IS NULL OR flow = ?1)
           AND (?2 = '' OR instr(',' || ?2 || ',', ',' || status || ',') > 0)
           AND (?3 IS NULL OR (started_at, id) < (SELECT started_at, id FROM runs WHERE id = ?3))
         ORDER BY started_at DESC, id DESC LIMIT ?4"
    ))?;
    let rows = stmt
        .query_map(params![filter.flow, statuses, after, limit(n)], summary)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub(crate) fn runs_page(tx: &Transaction<'_>, filter: &RunFilter) -> Result<RunPage> {
    // A cursor that names no run lists from the newest.
    let start = match &filter.after {
        Some(id) => {
            let known: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1)",
                params![id],
                |r| r.get(0),
            )?;
            known.then(|| id.clone())
        }
        None => None,
    };
    fill_page(filter, start, |after, n| runs_batch(tx, filter, after, n))
}

fn item_counts_of(tx: &Transaction<'_>, run: &str) -> Result<Vec<ItemCount>> {
    let mut stmt = tx.prepare_cached(
        "SELECT step_id, status, COUNT(*) FROM items WHERE run_id = ?1
         GROUP BY step_id, status ORDER BY step_id, status",
    )?;
    let counts = stmt
        .query_map(params![run], counts_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(counts)
}

pub(crate) fn item_counts(tx: &Transaction<'_>, runs: &[String]) -> Result<Vec<Vec<ItemCount>>> {
    runs.iter().map(|run| item_counts_of(tx, run)).collect()
}

pub(crate) fn run_overview(tx: &Transaction<'_>, id: &str) -> Result<Option<RunOverview>> {
    let run = tx.query_row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        params![id],
        summary,
    );
    let run = match run {
        Ok(run) => run,
        Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut stmt = tx.prepare(
        "SELECT step_id, component, status, started_at, ended_at, duration_ms, input, output, error, connections, items_total, attempts
         FROM steps WHERE run_id = ?1 ORDER BY position, started_at",
    )?;
    let mut steps = stmt
        .query_map(params![id], step)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if run.status == RunStatus::Interrupted {
        for s in steps.iter_mut().filter(|s| s.status == StepStatus::Running) {
            s.status = StepStatus::Interrupted;
        }
    }
    let mut stmt =
        tx.prepare("SELECT name, path FROM artifacts WHERE run_id = ?1 ORDER BY rowid")?;
    let artifacts = stmt
        .query_map(params![id], |r| {
            Ok(Artifact {
                name: r.get(0)?,
                path: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(RunOverview {
        item_counts: item_counts_of(tx, id)?,
        run,
        steps,
        artifacts,
    }))
}

pub(crate) fn items_page(
    tx: &Transaction<'_>,
    run: &str,
    step_id: &str,
    filter: &ItemFilter,
) -> Result<ItemPage> {
    let search = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let matches = "run_id = ?1 AND step_id = ?2 AND (?3 IS NULL OR instr(lower(
            coalesce(item_key, '') || char(10) || coalesce(input, '') || char(10) || coalesce(output, '') || char(10) || coalesce(error, '')
        ), lower(?3)) > 0)";
    let matching: i64 = tx.query_row(
        &format!("SELECT COUNT(*) FROM items WHERE {matches}"),
        params![run, step_id, search],
        |r| r.get(0),
    )?;
    let mut stmt = tx.prepare(&format!(
        "SELECT step_id, idx, status, duration_ms, ended_at, input, output, error, connections, item_key, attempts
         FROM items WHERE {matches}
         ORDER BY CASE status WHEN 'failed' THEN 0 WHEN 'interrupted' THEN 1 ELSE 2 END, idx
         LIMIT ?4 OFFSET ?5"
    ))?;
    let items = stmt
        .query_map(
            params![
                run,
                step_id,
                search,
                limit(filter.limit.max(1)),
                limit(filter.offset)
            ],
            item,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ItemPage {
        items,
        matching: count(matching),
    })
}

pub(crate) fn flows_latest(tx: &Transaction<'_>) -> Result<Vec<FlowLatest>> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {RUN_COLUMNS},
            (SELECT MAX(s.ended_at) FROM runs s WHERE s.flow = r.flow AND s.status = 'succeeded')
         FROM runs r
         WHERE r.id = (SELECT l.id FROM runs l WHERE l.flow = r.flow ORDER BY l.started_at DESC, l.id DESC LIMIT 1)
         ORDER BY r.flow"
    ))?;
    let rows = stmt
        .query_map([], |r| {
            let last_run = summary(r)?;
            Ok(FlowLatest {
                flow: last_run.flow.clone(),
                last_run,
                last_success: r.get(15)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub(crate) fn runs_from(tx: &Transaction<'_>, floor: &str) -> Result<Vec<RunSummary>> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id >= ?1 ORDER BY id"
    ))?;
    let rows = stmt
        .query_map(params![floor], summary)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub(crate) fn runs_by_id(tx: &Transaction<'_>, ids: &[String]) -> Result<Vec<RunSummary>> {
    let mut stmt = tx.prepare(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?;
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(run) = stmt.query_map(params![id], summary)?.next() {
            found.push(run?);
        }
    }
    Ok(found)
}

pub(crate) fn items_mentioning(
    tx: &Transaction<'_>,
    text: &str,
    max: usize,
) -> Result<Vec<ItemMention>> {
    let mut stmt = tx.prepare(
        "SELECT i.step_id, i.idx, i.status, i.duration_ms, i.ended_at, i.input, i.output, i.error, i.connections, i.item_key, i.attempts,
                r.id, r.flow, r.dry_run
         FROM items i JOIN runs r ON r.id = i.run_id
         WHERE instr(lower(coalesce(i.item_key, '') || char(10) || coalesce(i.input, '') || char(10) || coalesce(i.output, '')), lower(?1)) > 0
         ORDER BY r.started_at, r.id, i.idx LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![text, limit(max)], |r| {
            Ok(ItemMention {
                item: item(r)?,
                run_id: r.get(11)?,
                flow: r.get(12)?,
                dry_run: r.get(13)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
