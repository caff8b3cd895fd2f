//! Writes, each its own committed transaction, as a run progresses.
//!
//! Status and trigger words are checked against [`crate::model`] before
//! anything is written. Inputs, outputs and request counts go through
//! [`crate::cap`]; errors are capped too. Nothing here redacts: the host
//! passes text that is already free of secrets.

use std::str::FromStr;

use rusqlite::params;
use serde_json::Value;

use crate::cap::{capped, capped_error};
use crate::model::UnknownWord;
use crate::process::this_process;
use crate::{History, HistoryError, ItemStatus, NewRun, RunStatus, StepStatus, Trigger, now_text};

/// Parses a status or trigger word given as an enum or its text.
fn word<T: FromStr<Err = UnknownWord>>(text: impl AsRef<str>) -> Result<T, HistoryError> {
    Ok(text.as_ref().parse()?)
}

/// Maps a foreign-key failure (a step for a run never started) to a clear error.
fn for_run(run: &str) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
    move |e| match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            HistoryError::UnknownRun(run.to_string())
        }
        _ => HistoryError::Sql(e),
    }
}

fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl History {
    /// Records a run that starts now, as `running`.
    pub fn start_run(&self, run: &NewRun<'_>) -> Result<(), HistoryError> {
        let trigger: Trigger = word(run.trigger)?;
        let me = this_process();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO runs (id, flow, flow_file, trigger, dry_run, status, started_at, output_dir, pid, process_token)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9)",
                params![run.id, run.flow, run.flow_file, trigger, run.dry_run, now_text(), run.output_dir, me.pid, me.token],
            )?;
            Ok(())
        })
    }

    /// A firing that did not run because the previous run of the flow was
    /// still going: a `skipped` run that starts and ends now, with `reason`
    /// as its error text.
    pub fn record_skipped(&self, run: &NewRun<'_>, reason: &str) -> Result<(), HistoryError> {
        let trigger: Trigger = word(run.trigger)?;
        let me = this_process();
        self.write(|tx| {
            let t = now_text();
            tx.execute(
                "INSERT INTO runs (id, flow, flow_file, trigger, dry_run, status, error, started_at, ended_at, pid, process_token)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'skipped', ?6, ?7, ?7, ?8, ?9)",
                params![run.id, run.flow, run.flow_file, trigger, run.dry_run, capped_error(reason), t, me.pid, me.token],
            )?;
            Ok(())
        })
    }

    /// Ends a run with `status` (a [`RunStatus`] or its text) and its error.
    pub fn finish_run(
        &self,
        id: &str,
        status: impl AsRef<str>,
        error: Option<&str>,
    ) -> Result<(), HistoryError> {
        let status: RunStatus = word(status)?;
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE runs SET status = ?2, error = ?3, ended_at = ?4 WHERE id = ?1",
                params![id, status, error.map(capped_error), now_text()],
            )?;
            if changed == 0 {
                return Err(HistoryError::UnknownRun(id.to_string()));
            }
            Ok(())
        })
    }

    /// Records that a step starts now with this (already resolved and
    /// redacted) input; `items_total` is the length of a `for_each` list.
    /// Starting a step again (a retry of the whole step) starts it afresh.
    pub fn start_step(
        &self,
        run: &str,
        step: &str,
        component: &str,
        input: &Value,
        items_total: Option<usize>,
    ) -> Result<(), HistoryError> {
        let total = items_total.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.write(|tx| {
            tx.execute(
                "INSERT INTO steps (run_id, step_id, position, component, status, started_at, input, items_total)
                 VALUES (?1, ?2, (SELECT COUNT(*) FROM steps WHERE run_id = ?1), ?3, 'running', ?4, ?5, ?6)
                 ON CONFLICT (run_id, step_id) DO UPDATE SET
                    component = excluded.component, status = 'running',
                    started_at = excluded.started_at, ended_at = NULL, duration_ms = NULL,
                    input = excluded.input, output = NULL, error = NULL,
                    connections = NULL, items_total = excluded.items_total",
                params![run, step, component, now_text(), capped(input), total],
            )
            .map_err(for_run(run))?;
            Ok(())
        })
    }

    /// Ends a step. A step that never started (skipped) is recorded here
    /// whole, which is why `component` is asked for again. `connections`
    /// holds the step's request counts per connection,
    /// `{"graph": {"requests": n, "retried": n, "throttled": n, "wait_ms": n}}`.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_step(
        &self,
        run: &str,
        step: &str,
        component: &str,
        status: impl AsRef<str>,
        output: Option<&Value>,
        error: Option<&str>,
        connections: &Value,
        duration_ms: u64,
    ) -> Result<(), HistoryError> {
        let status: StepStatus = word(status)?;
        let connections = (!connections.is_null()).then(|| capped(connections));
        self.write(|tx| {
            tx.execute(
                "INSERT INTO steps (run_id, step_id, position, component, status, started_at, ended_at, duration_ms, output, error, connections)
                 VALUES (?1, ?2, (SELECT COUNT(*) FROM steps WHERE run_id = ?1), ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (run_id, step_id) DO UPDATE SET
                    status = excluded.status, ended_at = excluded.ended_at,
                    duration_ms = excluded.duration_ms, output = excluded.output,
                    error = excluded.error, connections = excluded.connections",
                params![
                    run,
                    step,
                    component,
                    status,
                    now_text(),
                    millis(duration_ms),
                    output.map(capped),
                    error.map(capped_error),
                    connections
                ],
            )
            .map_err(for_run(run))?;
            Ok(())
        })
    }

    /// Records one item of a `for_each` step as it ends (`index` is 0-based),
    /// with its own request counts per connection (shaped as for
    /// [`History::finish_step`]; `Value::Null` for none).
    #[allow(clippy::too_many_arguments)]
    pub fn record_item(
        &self,
        run: &str,
        step: &str,
        index: usize,
        status: impl AsRef<str>,
        input: &Value,
        output: Option<&Value>,
        error: Option<&str>,
        connections: &Value,
        duration_ms: u64,
    ) -> Result<(), HistoryError> {
        let status: ItemStatus = word(status)?;
        let index = i64::try_from(index).unwrap_or(i64::MAX);
        let connections = (!connections.is_null()).then(|| capped(connections));
        self.write(|tx| {
            tx.execute(
                "INSERT INTO items (run_id, step_id, idx, status, duration_ms, input, output, error, ended_at, connections)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (run_id, step_id, idx) DO UPDATE SET
                    status = excluded.status, duration_ms = excluded.duration_ms,
                    input = excluded.input, output = excluded.output,
                    error = excluded.error, ended_at = excluded.ended_at,
                    connections = excluded.connections",
                params![
                    run,
                    step,
                    index,
                    status,
                    millis(duration_ms),
                    capped(input),
                    output.map(capped),
                    error.map(capped_error),
                    now_text(),
                    connections
                ],
            )
            .map_err(for_run(run))?;
            Ok(())
        })
    }

    /// Records a file the run produced (its report); a name given again
    /// points at the new path.
    pub fn add_artifact(&self, run: &str, name: &str, path: &str) -> Result<(), HistoryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO artifacts (run_id, name, path) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id, name) DO UPDATE SET path = excluded.path",
                params![run, name, path],
            )
            .map_err(for_run(run))?;
            Ok(())
        })
    }

    /// Records as skipped, with `why`, the steps of a run that have no
    /// record yet, after the run was cut short (its task aborted), so the
    /// record shows the whole flow. `steps` are `(step id, component)` in
    /// flow order; steps already recorded are left as they are.
    pub fn skip_unrecorded_steps(
        &self,
        run: &str,
        steps: &[(String, String)],
        why: &str,
    ) -> Result<(), HistoryError> {
        self.write(|tx| {
            let t = now_text();
            for (step, component) in steps {
                tx.execute(
                    "INSERT INTO steps (run_id, step_id, position, component, status, started_at, ended_at, duration_ms, error)
                     VALUES (?1, ?2, (SELECT COUNT(*) FROM steps WHERE run_id = ?1), ?3, 'skipped', ?4, ?4, 0, ?5)
                     ON CONFLICT (run_id, step_id) DO NOTHING",
                    params![run, step, component, t, capped_error(why)],
                )
                .map_err(for_run(run))?;
            }
            Ok(())
        })
    }

    /// Marks a run that will not finish, and its running steps, as
    /// interrupted now, with `reason` unless it already has an error (the
    /// scheduler does this on shutdown). A run that has ended is left alone.
    pub fn mark_interrupted(&self, run: &str, reason: &str) -> Result<(), HistoryError> {
        self.end_unfinished(run, RunStatus::Interrupted, StepStatus::Interrupted, reason)
    }

    /// Marks a run whose task died without ending it (a panic in the host),
    /// and its running steps, as failed now with `reason`. A run that has
    /// ended is left alone.
    pub fn mark_failed(&self, run: &str, reason: &str) -> Result<(), HistoryError> {
        self.end_unfinished(run, RunStatus::Failed, StepStatus::Failed, reason)
    }

    fn end_unfinished(
        &self,
        run: &str,
        status: RunStatus,
        step_status: StepStatus,
        reason: &str,
    ) -> Result<(), HistoryError> {
        self.write(|tx| {
            let t = now_text();
            let changed = tx.execute(
                "UPDATE runs SET status = ?2, error = COALESCE(error, ?3), ended_at = ?4
                 WHERE id = ?1 AND status = 'running'",
                params![run, status, capped_error(reason), t],
            )?;
            if changed > 0 {
                end_steps(tx, run, step_status, &t)?;
            }
            Ok(())
        })
    }
}

/// The running steps of a run that ended without them end at `ended_at`
/// with `status`.
pub(crate) fn end_steps(
    tx: &rusqlite::Transaction<'_>,
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
