//! Reads, pruning and recovery of runs whose process died, on SQLite.
//!
//! Reads present the record honestly: a run stored as `running` whose
//! process is known to be gone ([`crate::process`]) reads as `interrupted`
//! with an error saying so, and so do its running steps — without writing
//! anything, so `sluice runs` never needs the write lock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::history::end_steps;
use crate::cap::{parse_attempts, parse_stored};
use crate::process::{Liveness, liveness};
use crate::{
    Artifact, GateRecord, ItemRecord, PrunedRun, RunDetail, RunStatus, RunSummary, StepRecord,
    StepStatus, StoreError, millis_between, now_text, timestamp,
};

pub(crate) const RUN_COLUMNS: &str = "id, flow, flow_file, trigger, dry_run, status, error, started_at, ended_at, output_dir, pid, process_token, host, replica, fence";

pub(crate) fn died(pid: Option<i64>) -> String {
    match pid {
        Some(pid) => format!("the process that ran it (pid {pid}) ended before the run finished"),
        None => "the process that ran it ended before the run finished".to_string(),
    }
}

pub(crate) fn summary(row: &Row<'_>) -> rusqlite::Result<RunSummary> {
    let mut status: RunStatus = row.get(5)?;
    let mut error: Option<String> = row.get(6)?;
    let pid: Option<i64> = row.get(10)?;
    let token: Option<String> = row.get(11)?;
    let host: Option<String> = row.get(12)?;
    if status == RunStatus::Running
        && liveness(host.as_deref(), pid, token.as_deref()) == Liveness::Gone
    {
        status = RunStatus::Interrupted;
        error.get_or_insert_with(|| died(pid));
    }
    let started_at: String = row.get(7)?;
    let ended_at: Option<String> = row.get(8)?;
    Ok(RunSummary {
        id: row.get(0)?,
        flow: row.get(1)?,
        flow_file: row.get(2)?,
        trigger: row.get(3)?,
        dry_run: row.get(4)?,
        status,
        error,
        duration_ms: millis_between(&started_at, ended_at.as_deref()),
        started_at,
        ended_at,
        output_dir: row.get(9)?,
        replica: row.get(13)?,
        fence: row.get(14)?,
    })
}

pub(crate) fn step(r: &Row<'_>) -> rusqlite::Result<StepRecord> {
    let started_at: String = r.get(3)?;
    let ended_at: Option<String> = r.get(4)?;
    let duration: Option<i64> = r.get(5)?;
    Ok(StepRecord {
        step_id: r.get(0)?,
        component: r.get(1)?,
        status: r.get(2)?,
        duration_ms: duration
            .and_then(|d| u64::try_from(d).ok())
            .or_else(|| millis_between(&started_at, ended_at.as_deref())),
        started_at,
        ended_at,
        input: parse_stored(r.get(6)?),
        output: parse_stored(r.get(7)?),
        error: r.get(8)?,
        connections: parse_stored(r.get(9)?),
        items_total: r
            .get::<_, Option<i64>>(10)?
            .and_then(|n| u64::try_from(n).ok()),
        attempts: parse_attempts(r.get(11)?),
    })
}

pub(crate) fn item(r: &Row<'_>) -> rusqlite::Result<ItemRecord> {
    Ok(ItemRecord {
        step_id: r.get(0)?,
        index: u64::try_from(r.get::<_, i64>(1)?).unwrap_or_default(),
        status: r.get(2)?,
        duration_ms: u64::try_from(r.get::<_, i64>(3)?).unwrap_or_default(),
        ended_at: r.get(4)?,
        input: parse_stored(r.get(5)?),
        output: parse_stored(r.get(6)?),
        error: r.get(7)?,
        connections: parse_stored(r.get(8)?),
        key: r.get(9)?,
        attempts: parse_attempts(r.get(10)?),
    })
}

fn gate(r: &Row<'_>) -> rusqlite::Result<GateRecord> {
    let n = |i: usize| -> rusqlite::Result<u64> {
        Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or_default())
    };
    Ok(GateRecord {
        step: r.get(0)?,
        plan_id: r.get(1)?,
        reason: r.get(2)?,
        approved: n(3)?,
        unapproved: n(4)?,
        waiting: n(5)?,
        rejected: n(6)?,
        closed: n(7)?,
        revision: r
            .get::<_, Option<i64>>(8)?
            .and_then(|v| u64::try_from(v).ok()),
        approve: r.get(9)?,
    })
}

/// Finds a run by its id, or else by a unique prefix of it.
fn find_run(tx: &Transaction<'_>, id: &str) -> Result<Option<RunSummary>, StoreError> {
    let exact = tx
        .query_row(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
            params![id],
            summary,
        )
        .optional()?;
    if exact.is_some() || id.is_empty() {
        return Ok(exact);
    }
    // substr rather than LIKE: `_` and `%` in what the user typed are literal.
    let mut stmt = tx.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT 4"
    ))?;
    let mut found = stmt
        .query_map(params![id], summary)?
        .collect::<Result<Vec<_>, _>>()?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => {
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM runs WHERE substr(id, 1, length(?1)) = ?1",
                params![id],
                |r| r.get(0),
            )?;
            Err(StoreError::AmbiguousRun {
                prefix: id.to_string(),
                count: usize::try_from(count).unwrap_or(found.len()),
                examples: found
                    .iter()
                    .take(3)
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

/// Deletes one run and everything it recorded.
fn delete_run(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<usize> {
    for table in ["items", "steps", "artifacts", "approval_gates"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE run_id = ?1"),
            params![id],
        )?;
    }
    tx.execute("DELETE FROM runs WHERE id = ?1", params![id])
}

/// A `running` run that started before a cutoff.
struct RunningRow {
    id: String,
    pid: Option<i64>,
    liveness: Liveness,
}

fn running_before(tx: &Transaction<'_>, cutoff: &str) -> rusqlite::Result<Vec<RunningRow>> {
    let mut stmt = tx.prepare(
        "SELECT id, pid, process_token, host FROM runs WHERE status = 'running' AND started_at < ?1",
    )?;
    stmt.query_map(params![cutoff], |r| {
        let (pid, token, host): (Option<i64>, Option<String>, Option<String>) =
            (r.get(1)?, r.get(2)?, r.get(3)?);
        Ok(RunningRow {
            id: r.get(0)?,
            pid,
            liveness: liveness(host.as_deref(), pid, token.as_deref()),
        })
    })?
    .collect()
}

/// The latest time the history holds of run `id`: its start, a step's
/// start or end, an item's end. What a run whose process died is recorded
/// as ended at, rather than when someone found out.
pub(crate) fn last_sign_of_life(
    tx: &Transaction<'_>,
    id: &str,
) -> rusqlite::Result<Option<String>> {
    tx.query_row(
        "SELECT MAX(t) FROM (
            SELECT started_at AS t FROM runs WHERE id = ?1
            UNION ALL SELECT started_at FROM steps WHERE run_id = ?1
            UNION ALL SELECT ended_at FROM steps WHERE run_id = ?1
            UNION ALL SELECT ended_at FROM items WHERE run_id = ?1)",
        params![id],
        |r| r.get(0),
    )
}

/// Records runs whose process stopped as interrupted, ending at their last
/// sign of life (the latest time any step or item recorded), with their
/// running steps.
fn mark_stale(tx: &Transaction<'_>, stale: &[RunningRow]) -> rusqlite::Result<()> {
    let now = now_text();
    for RunningRow { id, pid, .. } in stale {
        let last = last_sign_of_life(tx, id)?.unwrap_or_else(|| now.clone());
        tx.execute(
            "UPDATE runs SET status = 'interrupted', ended_at = ?2, error = COALESCE(error, ?3)
             WHERE id = ?1 AND status = 'running'",
            params![
                id,
                last,
                format!("{}; recorded as interrupted at {now}", died(*pid))
            ],
        )?;
        end_steps(tx, id, StepStatus::Interrupted, &last)?;
    }
    Ok(())
}

/// The newest `limit` runs, of one flow (its `name`) or of all.
pub(crate) fn list_runs(
    tx: &Transaction<'_>,
    flow: Option<&str>,
    limit: usize,
) -> Result<Vec<RunSummary>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    {
        let mut stmt = tx.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ?1 IS NULL OR flow = ?1
             ORDER BY started_at DESC, id DESC LIMIT ?2"
        ))?;
        let runs = stmt
            .query_map(params![flow, limit], summary)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(runs)
    }
}

/// A run with its steps (in the order they started), items and report
/// files. A unique prefix of the id finds the run too; a prefix shared
/// by several runs is an [`StoreError::AmbiguousRun`].
pub(crate) fn run_detail(tx: &Transaction<'_>, id: &str) -> Result<Option<RunDetail>, StoreError> {
    {
        let Some(run) = find_run(tx, id)? else {
            return Ok(None);
        };
        let mut stmt = tx.prepare(
            "SELECT step_id, component, status, started_at, ended_at, duration_ms, input, output, error, connections, items_total, attempts
             FROM steps WHERE run_id = ?1 ORDER BY position, started_at",
        )?;
        let mut steps = stmt
            .query_map(params![run.id], step)?
            .collect::<Result<Vec<_>, _>>()?;
        if run.status == RunStatus::Interrupted {
            for s in steps.iter_mut().filter(|s| s.status == StepStatus::Running) {
                s.status = StepStatus::Interrupted;
            }
        }
        let mut stmt = tx.prepare(
            "SELECT step_id, idx, status, duration_ms, ended_at, input, output, error, connections, item_key, attempts
             FROM items WHERE run_id = ?1 ORDER BY step_id, idx",
        )?;
        let mut items = stmt
            .query_map(params![run.id], item)?
            .collect::<Result<Vec<_>, _>>()?;
        // Items in the order of their steps, not of step names.
        items.sort_by_key(|i| (steps.iter().position(|s| s.step_id == i.step_id), i.index));
        let mut stmt =
            tx.prepare("SELECT name, path FROM artifacts WHERE run_id = ?1 ORDER BY rowid")?;
        let artifacts = stmt
            .query_map(params![run.id], |r| {
                Ok(Artifact {
                    name: r.get(0)?,
                    path: r.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = tx.prepare(
            "SELECT step_id, plan_id, reason, approved, unapproved, waiting, rejected, closed, revision, approve_command
             FROM approval_gates WHERE run_id = ?1 ORDER BY position",
        )?;
        let gates = stmt
            .query_map(params![run.id], gate)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(RunDetail {
            run,
            steps,
            items,
            artifacts,
            gates,
        }))
    }
}

/// Deletes the runs that ended more than `age` ago, with their steps,
/// items and artifact records, and returns them so the caller can
/// delete their files. A run still going is never pruned. A run whose
/// process is known to be gone is first recorded as interrupted at its
/// last sign of life (as [`recover_stale_runs`] does), and is
/// then pruned by that end like any other.
pub(crate) fn prune_older_than(
    tx: &Transaction<'_>,
    age: Duration,
) -> Result<Vec<PrunedRun>, StoreError> {
    let Some(cutoff) = chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
    else {
        return Ok(Vec::new());
    };
    let cutoff = timestamp(cutoff);
    {
        let dead: Vec<RunningRow> = running_before(tx, &cutoff)?
            .into_iter()
            .filter(|r| r.liveness == Liveness::Gone)
            .collect();
        mark_stale(tx, &dead)?;
        let doomed: Vec<PrunedRun> = {
            let mut stmt = tx.prepare(
                "SELECT id, output_dir FROM runs
                 WHERE status != 'running' AND ended_at IS NOT NULL AND ended_at < ?1",
            )?;
            stmt.query_map(params![cutoff], |r| {
                Ok(PrunedRun {
                    id: r.get(0)?,
                    output_dir: r.get::<_, Option<String>>(1)?.filter(|d| !d.is_empty()),
                })
            })?
            .collect::<Result<_, _>>()?
        };
        for run in &doomed {
            delete_run(tx, &run.id)?;
        }
        super::approval::prune_closed(tx, &cutoff)?;
        Ok(doomed)
    }
}

/// Records as `interrupted` the runs still marked `running` that started
/// before `current_process_start` — left by an earlier process that
/// died — with their running steps. Call it when a long-lived host (the
/// scheduler) starts, with its own start time. A run whose writer is
/// verifiably another live process (Linux) is left alone; where that
/// cannot be told, the run is marked, and its own `finish_run` later
/// sets the truth back. The run's end is its last sign of life (the
/// latest time any step or item recorded), not the time of recovery.
/// Returns how many runs were marked.
pub(crate) fn recover_stale_runs(
    tx: &Transaction<'_>,
    current_process_start: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let cutoff = timestamp(current_process_start);
    {
        // Another host's runs are its own, or its lease's, to settle.
        let stale: Vec<RunningRow> = running_before(tx, &cutoff)?
            .into_iter()
            .filter(|r| !matches!(r.liveness, Liveness::Alive | Liveness::OtherHost))
            .collect();
        mark_stale(tx, &stale)?;
        Ok(stale.len())
    }
}
