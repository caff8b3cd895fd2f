//! Run history writes on PostgreSQL: a list of [`HistoryWrite`]s for one
//! run, in one transaction, after the run's fencing number is checked
//! under a share lock on the flow's lease row (a takeover, which updates
//! that row, waits for this write or makes it fail — never both land).

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;

use crate::approval::key_norm;
use crate::cap::{attempts_text, capped, capped_error, capped_text};
use crate::process::this_process;
use crate::{
    GateRecord, HistoryWrite, ItemEnd, NewRun, RunRef, RunStatus, StepEnd, StepStart, StoreError,
};

type Result<T> = std::result::Result<T, StoreError>;

pub(crate) async fn apply(
    tx: &Transaction<'_>,
    run: &RunRef,
    writes: &[HistoryWrite],
) -> Result<()> {
    check_fence(tx, run).await?;
    for w in writes {
        apply_one(tx, run, w)
            .await
            .map_err(|e| for_run(&run.id, e))?;
    }
    Ok(())
}

/// Refuses a write whose fencing number is no longer the flow's lease's.
pub(crate) async fn check_fence(tx: &Transaction<'_>, run: &RunRef) -> Result<()> {
    let Some(fence) = run.fence else {
        return Ok(());
    };
    let current: Option<i64> = tx
        .query_opt(
            "SELECT fence FROM leases WHERE flow = $1 FOR SHARE",
            &[&run.flow],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    if current == Some(fence) {
        Ok(())
    } else {
        Err(StoreError::Fenced {
            flow: run.flow.clone(),
            run: run.id.clone(),
            fence,
        })
    }
}

/// A foreign-key failure (a step for a run never started) as a clear error.
fn for_run(run: &str, e: StoreError) -> StoreError {
    match &e {
        StoreError::Postgres(pg) if pg.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
            StoreError::UnknownRun(run.to_string())
        }
        _ => e,
    }
}

fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn counts(connections: &Value) -> Option<String> {
    (!connections.is_null()).then(|| capped(connections))
}

async fn apply_one(tx: &Transaction<'_>, run: &RunRef, w: &HistoryWrite) -> Result<()> {
    let id = run.id.as_str();
    match w {
        HistoryWrite::StartRun(new) => insert_run(tx, new, run.fence, "running", None).await?,
        HistoryWrite::Skipped { run: new, reason } => {
            insert_run(tx, new, None, "skipped", Some(reason)).await?
        }
        HistoryWrite::FinishRun {
            status,
            error,
            ended_at,
        } => {
            let changed = tx
                .execute(
                    "UPDATE runs SET status = $2, error = $3, ended_at = $4 WHERE id = $1",
                    &[
                        &id,
                        &status.as_str(),
                        &error.as_deref().map(capped_error),
                        ended_at,
                    ],
                )
                .await?;
            if changed == 0 {
                return Err(StoreError::UnknownRun(id.to_string()));
            }
        }
        HistoryWrite::StartStep(step) => start_step(tx, id, step).await?,
        HistoryWrite::FinishStep(step) => finish_step(tx, id, step).await?,
        HistoryWrite::Item(item) => {
            record_item(tx, id, item).await?;
            if let Some((plan, settled)) = item.spent_approval(id) {
                super::approval::settle(tx, &plan, &[settled]).await?;
            }
        }
        HistoryWrite::Gate(gate) => record_gate(tx, id, gate).await?,
        HistoryWrite::Artifact { name, path } => {
            tx.execute(
                "INSERT INTO artifacts (run_id, name, path) VALUES ($1, $2, $3)
                 ON CONFLICT (run_id, name) DO UPDATE SET path = excluded.path",
                &[&id, name, path],
            )
            .await?;
        }
        HistoryWrite::SkipUnrecorded { steps, why, at } => {
            for (step, component) in steps {
                tx.execute(
                    "INSERT INTO steps (run_id, step_id, position, component, status, started_at, ended_at, duration_ms, error)
                     VALUES ($1, $2, (SELECT count(*) FROM steps WHERE run_id = $1), $3, 'skipped', $4, $4, 0, $5)
                     ON CONFLICT (run_id, step_id) DO NOTHING",
                    &[&id, step, component, at, &capped_error(why)],
                )
                .await?;
            }
        }
        HistoryWrite::EndUnfinished { status, reason, at } => {
            end_unfinished(tx, id, *status, reason, *at).await?;
        }
    }
    Ok(())
}

async fn insert_run(
    tx: &Transaction<'_>,
    run: &NewRun,
    fence: Option<i64>,
    status: &str,
    reason: Option<&str>,
) -> Result<()> {
    let me = this_process();
    let started = run.started_at;
    let ended = (status != "running").then_some(started);
    tx.execute(
        "INSERT INTO runs (id, flow, flow_file, trigger, dry_run, status, error, started_at, ended_at,
                           output_dir, pid, process_token, replica, host, fence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &[
            &run.id,
            &run.flow,
            &run.flow_file,
            &run.trigger.as_str(),
            &run.dry_run,
            &status,
            &reason.map(capped_error),
            &started,
            &ended,
            &run.output_dir,
            &i64::from(me.pid),
            &me.token,
            &run.replica,
            &me.host,
            &fence,
        ],
    )
    .await?;
    Ok(())
}

async fn start_step(tx: &Transaction<'_>, run: &str, s: &StepStart) -> Result<()> {
    let total = s.items_total.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    tx.execute(
        "INSERT INTO steps (run_id, step_id, position, component, status, started_at, input, items_total)
         VALUES ($1, $2, (SELECT count(*) FROM steps WHERE run_id = $1), $3, 'running', $4, $5, $6)
         ON CONFLICT (run_id, step_id) DO UPDATE SET
            component = excluded.component, status = 'running',
            started_at = excluded.started_at, ended_at = NULL, duration_ms = NULL,
            input = excluded.input, output = NULL, error = NULL,
            connections = NULL, attempts = NULL, items_total = excluded.items_total",
        &[
            &run,
            &s.step,
            &s.component,
            &s.started_at,
            &capped(&s.input),
            &total,
        ],
    )
    .await?;
    Ok(())
}

async fn finish_step(tx: &Transaction<'_>, run: &str, s: &StepEnd) -> Result<()> {
    tx.execute(
        "INSERT INTO steps (run_id, step_id, position, component, status, started_at, ended_at, duration_ms, output, error, connections, attempts)
         VALUES ($1, $2, (SELECT count(*) FROM steps WHERE run_id = $1), $3, $4, $5, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (run_id, step_id) DO UPDATE SET
            status = excluded.status, ended_at = excluded.ended_at,
            duration_ms = excluded.duration_ms, output = excluded.output,
            error = excluded.error, connections = excluded.connections,
            attempts = excluded.attempts",
        &[
            &run,
            &s.step,
            &s.component,
            &s.status.as_str(),
            &s.ended_at,
            &millis(s.duration_ms),
            &s.output.as_ref().map(capped),
            &s.error.as_deref().map(capped_error),
            &counts(&s.connections),
            &attempts_text(s.attempts.as_ref()),
        ],
    )
    .await?;
    Ok(())
}

async fn record_item(tx: &Transaction<'_>, run: &str, i: &ItemEnd) -> Result<()> {
    let input = capped_text(i.input.as_str());
    let output = i.output.as_ref().map(|o| capped_text(o.as_str()));
    tx.execute(
        "INSERT INTO items (run_id, step_id, idx, status, duration_ms, input, output, error, ended_at, connections, item_key, key_norm, attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (run_id, step_id, idx) DO UPDATE SET
            status = excluded.status, duration_ms = excluded.duration_ms,
            input = excluded.input, output = excluded.output,
            error = excluded.error, ended_at = excluded.ended_at,
            connections = excluded.connections, item_key = excluded.item_key,
            key_norm = excluded.key_norm, attempts = excluded.attempts",
        &[
            &run,
            &i.step,
            &i64::try_from(i.index).unwrap_or(i64::MAX),
            &i.status.as_str(),
            &millis(i.duration_ms),
            &input,
            &output,
            &i.error.as_deref().map(capped_error),
            &i.ended_at,
            &counts(&i.connections),
            &i.key,
            &i.key.as_deref().map(key_norm),
            &attempts_text(i.attempts.as_ref()),
        ],
    )
    .await?;
    Ok(())
}

async fn record_gate(tx: &Transaction<'_>, run: &str, g: &GateRecord) -> Result<()> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO approval_gates (run_id, step_id, position, plan_id, reason, approved, unapproved, waiting, rejected, closed, revision, approve_command)
         VALUES ($1, $2, (SELECT count(*) FROM approval_gates WHERE run_id = $1), $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (run_id, step_id) DO UPDATE SET
            plan_id = excluded.plan_id, reason = excluded.reason,
            approved = excluded.approved, unapproved = excluded.unapproved,
            waiting = excluded.waiting, rejected = excluded.rejected, closed = excluded.closed,
            revision = excluded.revision, approve_command = excluded.approve_command",
        &[
            &run,
            &g.step,
            &g.plan_id,
            &g.reason.as_deref().map(capped_error),
            &n(g.approved),
            &n(g.unapproved),
            &n(g.waiting),
            &n(g.rejected),
            &n(g.closed),
            &g.revision.map(n),
            &g.approve,
        ],
    )
    .await?;
    Ok(())
}

/// Ends a run still `running`, and its running steps, with `status`;
/// whether there was such a run.
pub(crate) async fn end_unfinished(
    tx: &Transaction<'_>,
    run: &str,
    status: RunStatus,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<bool> {
    let changed = tx
        .execute(
            "UPDATE runs SET status = $2, error = coalesce(error, $3), ended_at = $4
             WHERE id = $1 AND status = 'running'",
            &[&run, &status.as_str(), &capped_error(reason), &at],
        )
        .await?;
    if changed > 0 {
        end_steps(tx, run, status.unfinished_steps().as_str(), at).await?;
    }
    Ok(changed > 0)
}

/// The running steps of a run that ended without them end at `at`.
pub(crate) async fn end_steps(
    tx: &Transaction<'_>,
    run: &str,
    status: &str,
    at: DateTime<Utc>,
) -> Result<u64> {
    Ok(tx
        .execute(
            "UPDATE steps SET status = $3, ended_at = $2 WHERE run_id = $1 AND status = 'running'",
            &[&run, &at, &status],
        )
        .await?)
}
