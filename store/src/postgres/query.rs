//! Reads, pruning and recovery of runs whose process died, on PostgreSQL.
//! Reads present the record as SQLite's do (see [`crate::sqlite::query`]):
//! a `running` run whose process on this host is known to be gone reads
//! as `interrupted`, without a write.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row, Transaction};

use crate::cap::{parse_attempts, parse_stored};
use crate::process::{Liveness, liveness};
use crate::sqlite::query::died;
use crate::{
    Artifact, GateRecord, ItemRecord, PrunedRun, RunDetail, RunStatus, RunSummary, StepRecord,
    StepStatus, StoreError, millis_between, timestamp,
};

type Result<T> = std::result::Result<T, StoreError>;

pub(crate) const RUN_COLUMNS: &str = "id, flow, flow_file, trigger, dry_run, status, error, started_at, ended_at, output_dir, pid, process_token, host, replica, fence";

pub(crate) fn time(row: &Row, i: usize) -> Result<String> {
    Ok(timestamp(row.try_get::<_, DateTime<Utc>>(i)?))
}

pub(crate) fn time_opt(row: &Row, i: usize) -> Result<Option<String>> {
    Ok(row.try_get::<_, Option<DateTime<Utc>>>(i)?.map(timestamp))
}

pub(crate) fn word<T: std::str::FromStr<Err = crate::UnknownWord>>(
    row: &Row,
    i: usize,
) -> Result<T> {
    Ok(row.try_get::<_, &str>(i)?.parse()?)
}

pub(crate) fn summary(row: &Row) -> Result<RunSummary> {
    let mut status: RunStatus = word(row, 5)?;
    let mut error: Option<String> = row.try_get(6)?;
    let pid: Option<i64> = row.try_get(10)?;
    let token: Option<&str> = row.try_get(11)?;
    let host: Option<&str> = row.try_get(12)?;
    if status == RunStatus::Running && liveness(host, pid, token) == Liveness::Gone {
        status = RunStatus::Interrupted;
        error.get_or_insert_with(|| died(pid));
    }
    let started_at = time(row, 7)?;
    let ended_at = time_opt(row, 8)?;
    Ok(RunSummary {
        id: row.try_get(0)?,
        flow: row.try_get(1)?,
        flow_file: row.try_get(2)?,
        trigger: word(row, 3)?,
        dry_run: row.try_get(4)?,
        status,
        error,
        duration_ms: millis_between(&started_at, ended_at.as_deref()),
        started_at,
        ended_at,
        output_dir: row.try_get(9)?,
        replica: row.try_get(13)?,
        fence: row.try_get(14)?,
    })
}

pub(crate) fn step(r: &Row) -> Result<StepRecord> {
    let started_at = time(r, 3)?;
    let ended_at = time_opt(r, 4)?;
    let duration: Option<i64> = r.try_get(5)?;
    Ok(StepRecord {
        step_id: r.try_get(0)?,
        component: r.try_get(1)?,
        status: word(r, 2)?,
        duration_ms: duration
            .and_then(|d| u64::try_from(d).ok())
            .or_else(|| millis_between(&started_at, ended_at.as_deref())),
        started_at,
        ended_at,
        input: parse_stored(r.try_get(6)?),
        output: parse_stored(r.try_get(7)?),
        error: r.try_get(8)?,
        connections: parse_stored(r.try_get(9)?),
        items_total: r
            .try_get::<_, Option<i64>>(10)?
            .and_then(|n| u64::try_from(n).ok()),
        attempts: parse_attempts(r.try_get(11)?),
    })
}

pub(crate) fn item(r: &Row) -> Result<ItemRecord> {
    Ok(ItemRecord {
        step_id: r.try_get(0)?,
        index: u64::try_from(r.try_get::<_, i64>(1)?).unwrap_or_default(),
        status: word(r, 2)?,
        duration_ms: u64::try_from(r.try_get::<_, i64>(3)?).unwrap_or_default(),
        ended_at: time_opt(r, 4)?,
        input: parse_stored(r.try_get(5)?),
        output: parse_stored(r.try_get(6)?),
        error: r.try_get(7)?,
        connections: parse_stored(r.try_get(8)?),
        key: r.try_get(9)?,
        attempts: parse_attempts(r.try_get(10)?),
    })
}

fn gate(r: &Row) -> Result<GateRecord> {
    let n = |i: usize| -> Result<u64> {
        Ok(u64::try_from(r.try_get::<_, i64>(i)?).unwrap_or_default())
    };
    Ok(GateRecord {
        step: r.try_get(0)?,
        plan_id: r.try_get(1)?,
        reason: r.try_get(2)?,
        approved: n(3)?,
        unapproved: n(4)?,
        waiting: n(5)?,
        rejected: n(6)?,
        closed: n(7)?,
        revision: r
            .try_get::<_, Option<i64>>(8)?
            .and_then(|v| u64::try_from(v).ok()),
        approve: r.try_get(9)?,
    })
}

pub(crate) async fn list_runs(
    c: &impl GenericClient,
    flow: Option<&str>,
    limit: usize,
) -> Result<Vec<RunSummary>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    c.query(
        &format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE $1::text IS NULL OR flow = $1
             ORDER BY started_at DESC, id DESC LIMIT $2"
        ),
        &[&flow, &limit],
    )
    .await?
    .iter()
    .map(summary)
    .collect()
}

/// Finds a run by its id, or else by a unique prefix of it.
async fn find_run(c: &impl GenericClient, id: &str) -> Result<Option<RunSummary>> {
    let exact = c
        .query_opt(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
            &[&id],
        )
        .await?;
    if let Some(row) = exact {
        return summary(&row).map(Some);
    }
    if id.is_empty() {
        return Ok(None);
    }
    // left() rather than LIKE: `_` and `%` in what the user typed are literal.
    let rows = c
        .query(
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE left(id, length($1)) = $1 ORDER BY id LIMIT 4"
            ),
            &[&id],
        )
        .await?;
    match rows.len() {
        0 => Ok(None),
        1 => summary(&rows[0]).map(Some),
        _ => {
            let count: i64 = c
                .query_one(
                    "SELECT count(*) FROM runs WHERE left(id, length($1)) = $1",
                    &[&id],
                )
                .await?
                .try_get(0)?;
            let examples: Vec<String> = rows
                .iter()
                .take(3)
                .map(|r| r.try_get::<_, String>(0))
                .collect::<std::result::Result<_, _>>()?;
            Err(StoreError::AmbiguousRun {
                prefix: id.to_string(),
                count: usize::try_from(count).unwrap_or(rows.len()),
                examples: examples.join(", "),
            })
        }
    }
}

pub(crate) async fn run_detail(c: &impl GenericClient, id: &str) -> Result<Option<RunDetail>> {
    let Some(run) = find_run(c, id).await? else {
        return Ok(None);
    };
    let mut steps = c
        .query(
            "SELECT step_id, component, status, started_at, ended_at, duration_ms, input, output, error, connections, items_total, attempts
             FROM steps WHERE run_id = $1 ORDER BY position, started_at",
            &[&run.id],
        )
        .await?
        .iter()
        .map(step)
        .collect::<Result<Vec<_>>>()?;
    if run.status == RunStatus::Interrupted {
        for s in steps.iter_mut().filter(|s| s.status == StepStatus::Running) {
            s.status = StepStatus::Interrupted;
        }
    }
    let mut items = c
        .query(
            "SELECT step_id, idx, status, duration_ms, ended_at, input, output, error, connections, item_key, attempts
             FROM items WHERE run_id = $1 ORDER BY step_id, idx",
            &[&run.id],
        )
        .await?
        .iter()
        .map(item)
        .collect::<Result<Vec<_>>>()?;
    // Items in the order of their steps, not of step names.
    items.sort_by_key(|i| (steps.iter().position(|s| s.step_id == i.step_id), i.index));
    let artifacts = c
        .query(
            "SELECT name, path FROM artifacts WHERE run_id = $1 ORDER BY seq",
            &[&run.id],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Artifact {
                name: r.try_get(0)?,
                path: r.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let gates = c
        .query(
            "SELECT step_id, plan_id, reason, approved, unapproved, waiting, rejected, closed, revision, approve_command
             FROM approval_gates WHERE run_id = $1 ORDER BY position",
            &[&run.id],
        )
        .await?
        .iter()
        .map(gate)
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(RunDetail {
        run,
        steps,
        items,
        artifacts,
        gates,
    }))
}

/// A `running` run of this host that started before a cutoff.
struct RunningRow {
    id: String,
    pid: Option<i64>,
    liveness: Liveness,
}

async fn running_before(tx: &Transaction<'_>, cutoff: DateTime<Utc>) -> Result<Vec<RunningRow>> {
    let rows = tx
        .query(
            "SELECT id, pid, process_token, host FROM runs
             WHERE status = 'running' AND started_at < $1 FOR UPDATE",
            &[&cutoff],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let pid: Option<i64> = r.try_get(1)?;
            Ok(RunningRow {
                id: r.try_get(0)?,
                pid,
                liveness: liveness(r.try_get(3)?, pid, r.try_get(2)?),
            })
        })
        .collect()
}

/// The latest time the history holds of run `id`: its start, a step's
/// start or end, an item's end. What a run whose process died is recorded
/// as ended at, rather than when someone found out.
pub(crate) async fn last_sign_of_life(
    tx: &Transaction<'_>,
    id: &str,
) -> Result<Option<DateTime<Utc>>> {
    Ok(tx
        .query_one(
            "SELECT max(t) FROM (
                SELECT started_at AS t FROM runs WHERE id = $1
                UNION ALL SELECT started_at FROM steps WHERE run_id = $1
                UNION ALL SELECT ended_at FROM steps WHERE run_id = $1
                UNION ALL SELECT ended_at FROM items WHERE run_id = $1) AS signs",
            &[&id],
        )
        .await?
        .try_get(0)?)
}

/// Records runs whose process stopped as interrupted, ending at their last
/// sign of life, with their running steps.
async fn mark_stale(tx: &Transaction<'_>, stale: &[RunningRow]) -> Result<()> {
    let now = Utc::now();
    for RunningRow { id, pid, .. } in stale {
        let last = last_sign_of_life(tx, id).await?.unwrap_or(now);
        let why = format!(
            "{}; recorded as interrupted at {}",
            died(*pid),
            timestamp(now)
        );
        tx.execute(
            "UPDATE runs SET status = 'interrupted', ended_at = $2, error = coalesce(error, $3)
             WHERE id = $1 AND status = 'running'",
            &[id, &last, &why],
        )
        .await?;
        super::history::end_steps(tx, id, StepStatus::Interrupted.as_str(), last).await?;
    }
    Ok(())
}

pub(crate) async fn prune_older_than(
    tx: &Transaction<'_>,
    age: Duration,
) -> Result<Vec<PrunedRun>> {
    let Some(cutoff) = chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
    else {
        return Ok(Vec::new());
    };
    let dead: Vec<RunningRow> = running_before(tx, cutoff)
        .await?
        .into_iter()
        .filter(|r| r.liveness == Liveness::Gone)
        .collect();
    mark_stale(tx, &dead).await?;
    // Children go with their run (ON DELETE CASCADE).
    let rows = tx
        .query(
            "DELETE FROM runs WHERE status <> 'running' AND ended_at IS NOT NULL AND ended_at < $1
             RETURNING id, output_dir",
            &[&cutoff],
        )
        .await?;
    let pruned = rows
        .iter()
        .map(|r| {
            Ok(PrunedRun {
                id: r.try_get(0)?,
                output_dir: r.try_get::<_, Option<String>>(1)?.filter(|d| !d.is_empty()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    super::approval::prune_closed(tx, cutoff).await?;
    Ok(pruned)
}

pub(crate) async fn recover_stale_runs(
    tx: &Transaction<'_>,
    since: DateTime<Utc>,
) -> Result<usize> {
    // Another host's runs are its own, or its lease's, to settle.
    let stale: Vec<RunningRow> = running_before(tx, since)
        .await?
        .into_iter()
        .filter(|r| !matches!(r.liveness, Liveness::Alive | Liveness::OtherHost))
        .collect();
    mark_stale(tx, &stale).await?;
    Ok(stale.len())
}
