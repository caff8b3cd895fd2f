//! Run history writes on SQLite: a list of [`HistoryWrite`]s for one run,
//! applied in one transaction after the run's fencing number is checked.
//!
//! Inputs, outputs and request counts go through [`crate::cap`]; errors
//! are capped too. Nothing here redacts: the host passes text that is
//! already free of secrets.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::approval::key_norm;
use crate::cap::{attempts_text, capped, capped_error, capped_text};
use crate::process::this_process;
use crate::{
    GateRecord, HistoryWrite, ItemEnd, NewRun, RunRef, RunStatus, StepEnd, StepStart, StepStatus,
    StoreError, timestamp,
};

/// Applies `writes` for `run`, in order.
pub(crate) fn apply(
    tx: &Connection,
    run: &RunRef,
    writes: &[HistoryWrite],
) -> Result<(), StoreError> {
    check_fence(tx, run)?;
    for w in writes {
        apply_one(tx, run, w)?;
    }
    Ok(())
}

/// Refuses a write whose fencing number is no longer the flow's lease's.
pub(crate) fn check_fence(tx: &Connection, run: &RunRef) -> Result<(), StoreError> {
    let Some(fence) = run.fence else {
        return Ok(());
    };
    // Cached: asked before every fenced write (each item's state, each
    // batch of its history).
    let current: Option<i64> = tx
        .prepare_cached("SELECT fence FROM leases WHERE flow = ?1")?
        .query_row(params![run.flow], |r| r.get(0))
        .optional()?;
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

fn apply_one(tx: &Connection, run: &RunRef, w: &HistoryWrite) -> Result<(), StoreError> {
    let id = run.id.as_str();
    match w {
        HistoryWrite::StartRun(new) => insert_run(tx, new, run.fence, "running", None)?,
        HistoryWrite::Skipped { run: new, reason } => {
            insert_run(tx, new, None, "skipped", Some(reason))?
        }
        HistoryWrite::FinishRun {
            status,
            error,
            ended_at,
        } => {
            let changed = tx.execute(
                "UPDATE runs SET status = ?2, error = ?3, ended_at = ?4 WHERE id = ?1",
                params![
                    id,
                    status,
                    error.as_deref().map(capped_error),
                    timestamp(*ended_at)
                ],
            )?;
            if changed == 0 {
                return Err(StoreError::UnknownRun(id.to_string()));
            }
        }
        HistoryWrite::StartStep(step) => {
            start_step(tx, id, step).map_err(for_run(id))?;
        }
        HistoryWrite::FinishStep(step) => {
            finish_step(tx, id, step).map_err(for_run(id))?;
        }
        HistoryWrite::Item(item) => {
            record_item(tx, id, item).map_err(for_run(id))?;
            if let Some(spent) = item.spent_approval(id) {
                super::approval::settle(tx, &spent.0, &[spent.1])?;
            }
        }
        HistoryWrite::Gate(gate) => {
            record_gate(tx, id, gate).map_err(for_run(id))?;
        }
        HistoryWrite::Artifact { name, path } => {
            tx.execute(
                "INSERT INTO artifacts (run_id, name, path) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id, name) DO UPDATE SET path = excluded.path",
                params![id, name, path],
            )
            .map_err(for_run(id))?;
        }
        HistoryWrite::SkipUnrecorded { steps, why, at } => {
            skip_unrecorded(tx, id, steps, why, &timestamp(*at)).map_err(for_run(id))?
        }
        HistoryWrite::EndUnfinished { status, reason, at } => {
            end_unfinished(tx, id, *status, reason, &timestamp(*at))?;
        }
    }
    Ok(())
}

/// Maps a foreign-key failure (a step for a run never started) to a clear error.
fn for_run(run: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            StoreError::UnknownRun(run.to_string())
        }
        _ => StoreError::Sqlite(e),
    }
}

pub(crate) fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Request counts to store: none for `null`.
pub(crate) fn counts(connections: &Value) -> Option<String> {
    (!connections.is_null()).then(|| capped(connections))
}

fn insert_run(
    tx: &Connection,
    run: &NewRun,
    fence: Option<i64>,
    status: &str,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    let me = this_process();
    let t = timestamp(run.started_at);
    let ended = (status != "running").then_some(&t);
    tx.execute(
        "INSERT INTO runs (id, flow, flow_file, trigger, dry_run, status, error, started_at, ended_at,
                           output_dir, pid, process_token, replica, host, fence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            run.id,
            run.flow,
            run.flow_file,
            run.trigger,
            run.dry_run,
            status,
            reason.map(capped_error),
            t,
            ended,
            run.output_dir,
            me.pid,
            me.token,
            run.replica,
            me.host,
            fence
        ],
    )?;
    Ok(())
}

fn start_step(tx: &Connection, run: &str, s: &StepStart) -> rusqlite::Result<usize> {
    let total = s.items_total.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    tx.execute(
        "INSERT INTO steps (run_id, step_id, position, component, status, started_at, input, items_total)
         VALUES (?1, ?2, (SELECT COUNT(*) FROM steps WHERE run_id = ?1), ?3, 'running', ?4, ?5, ?6)
         ON CONFLICT (run_id, step_id) DO UPDATE SET
            component = excluded.component, status = 'running',
            started_at = excluded.started_at, ended_at = NULL, duration_ms = NULL,
            input = excluded.input, output = NULL, error = NULL,
            connections = NULL, attempts = NULL, items_total = excluded.items_total",
        params![
            run,
            s.step,
            s.component,
            timestamp(s.started_at),
            capped(&s.input),
            total
        ],
    )
}

fn finish_step(tx: &Connection, run: &str, s: &StepEnd) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO steps (run_id, step_id, position, component, status, started_at, ended_at, duration_ms, output, error, connections, attempts)
         VALUES (?1, ?2, (SELECT COUNT(*) FROM steps WHERE run_id = ?1), ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (run_id, step_id) DO UPDATE SET
            status = excluded.status, ended_at = excluded.ended_at,
            duration_ms = excluded.duration_ms, output = excluded.output,
            error = excluded.error, connections = excluded.connections,
            attempts = excluded.attempts",
        params![
            run,
            s.step,
            s.component,
            s.status,
            timestamp(s.ended_at),
            millis(s.duration_ms),
            s.output.as_ref().map(capped),
            s.error.as_deref().map(capped_error),
            counts(&s.connections),
            attempts_text(s.attempts.as_ref())
        ],
    )
}

fn record_item(tx: &Connection, run: &str, i: &ItemEnd) -> rusqlite::Result<usize> {
    // Cached: a run writes a row per item (and per ledger entry: a first
    // run adopts a whole tenant), and parsing this statement afresh each
    // time cost more than running it.
    tx.prepare_cached(
        "INSERT INTO items (run_id, step_id, idx, status, duration_ms, input, output, error, ended_at, connections, item_key, key_norm, attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (run_id, step_id, idx) DO UPDATE SET
            status = excluded.status, duration_ms = excluded.duration_ms,
            input = excluded.input, output = excluded.output,
            error = excluded.error, ended_at = excluded.ended_at,
            connections = excluded.connections, item_key = excluded.item_key,
            key_norm = excluded.key_norm, attempts = excluded.attempts",
    )?
    .execute(params![
            run,
            i.step,
            i64::try_from(i.index).unwrap_or(i64::MAX),
            i.status,
            millis(i.duration_ms),
            capped_text(i.input.as_str()),
            i.output.as_ref().map(|o| capped_text(o.as_str())),
            i.error.as_deref().map(capped_error),
            timestamp(i.ended_at),
            counts(&i.connections),
            i.key,
            i.key.as_deref().map(key_norm),
            attempts_text(i.attempts.as_ref())
        ],
    )
}

fn record_gate(tx: &Connection, run: &str, g: &GateRecord) -> rusqlite::Result<usize> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO approval_gates (run_id, step_id, position, plan_id, reason, approved, unapproved, waiting, rejected, closed, revision, approve_command)
         VALUES (?1, ?2, (SELECT COUNT(*) FROM approval_gates WHERE run_id = ?1), ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (run_id, step_id) DO UPDATE SET
            plan_id = excluded.plan_id, reason = excluded.reason,
            approved = excluded.approved, unapproved = excluded.unapproved,
            waiting = excluded.waiting, rejected = excluded.rejected, closed = excluded.closed,
            revision = excluded.revision, approve_command = excluded.approve_command",
        params![
            run,
            g.step,
            g.plan_id,
            g.reason.as_deref().map(capped_error),
            n(g.approved),
            n(g.unapproved),
            n(g.waiting),
            n(g.rejected),
            n(g.closed),
            g.revision.map(n),
            g.approve
        ],
    )
}

fn skip_unrecorded(
    tx: &Connection,
    run: &str,
    steps: &[(String, String)],
    why: &str,
    t: &str,
) -> rusqlite::Result<()> {
    for (step, component) in steps {
        tx.execute(
            "INSERT INTO steps (run_id, step_id, position, component, status, started_at, ended_at, duration_ms, error)
             VALUES (?1, ?2, (SELECT COUNT(*) FROM steps WHERE run_id = ?1), ?3, 'skipped', ?4, ?4, 0, ?5)
             ON CONFLICT (run_id, step_id) DO NOTHING",
            params![run, step, component, t, capped_error(why)],
        )?;
    }
    Ok(())
}

/// Ends a run still `running`, and its running steps, with `status` at
/// `t`; whether there was such a run.
pub(crate) fn end_unfinished(
    tx: &Connection,
    run: &str,
    status: RunStatus,
    reason: &str,
    t: &str,
) -> Result<bool, StoreError> {
    let changed = tx.execute(
        "UPDATE runs SET status = ?2, error = COALESCE(error, ?3), ended_at = ?4
         WHERE id = ?1 AND status = 'running'",
        params![run, status, capped_error(reason), t],
    )?;
    if changed > 0 {
        end_steps(tx, run, status.unfinished_steps(), t)?;
    }
    Ok(changed > 0)
}

/// The running steps of a run that ended without them end at `ended_at`
/// with `status`.
pub(crate) fn end_steps(
    tx: &Connection,
    run: &str,
    status: StepStatus,
    ended_at: &str,
) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE steps SET status = ?3, ended_at = ?2
         WHERE run_id = ?1 AND status = 'running'",
        params![run, ended_at, status],
    )
}
