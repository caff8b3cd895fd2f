//! Reads and pruning.

use std::time::Duration;

use rusqlite::{OptionalExtension, Row, params};

use crate::{History, HistoryError, ItemRecord, RunDetail, RunSummary, StepRecord};

const RUN_COLUMNS: &str =
    "id, flow, trigger, dry_run, status, error, started_at, ended_at, output_dir, pid";

/// Whether the process that wrote a `running` row still exists. Only Linux
/// can tell cheaply (/proc); elsewhere a running row is taken at its word.
fn process_alive(pid: Option<i64>) -> bool {
    match pid {
        Some(pid) if pid == std::process::id() as i64 => true,
        Some(pid) if cfg!(target_os = "linux") => {
            std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => true,
    }
}

fn summary(row: &Row<'_>) -> rusqlite::Result<RunSummary> {
    let mut status: String = row.get(4)?;
    let mut error: Option<String> = row.get(5)?;
    let pid: Option<i64> = row.get(9)?;
    if status == "running" && !process_alive(pid) {
        status = "interrupted".into();
        error.get_or_insert_with(|| {
            format!(
                "the process that ran it (pid {}) ended before the run finished",
                pid.unwrap_or(0)
            )
        });
    }
    Ok(RunSummary {
        id: row.get(0)?,
        flow: row.get(1)?,
        trigger: row.get(2)?,
        dry_run: row.get(3)?,
        status,
        error,
        started_at: row.get(6)?,
        ended_at: row.get(7)?,
        output_dir: row.get(8)?,
    })
}

impl History {
    /// Newest first.
    pub fn list_runs(
        &self,
        flow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunSummary>, HistoryError> {
        let conn = self.conn();
        let limit = limit as i64;
        let rows = match flow {
            Some(f) => {
                let mut stmt = conn.prepare(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE flow = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2"))?;
                stmt.query_map(params![f, limit], summary)?
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, id DESC LIMIT ?1"
                ))?;
                stmt.query_map(params![limit], summary)?
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    /// A run with its steps, items and artifacts; a unique id prefix works too.
    pub fn run_detail(&self, id: &str) -> Result<Option<RunDetail>, HistoryError> {
        let conn = self.conn();
        let found: Option<(RunSummary, String)> = conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS}, flow_file FROM runs WHERE id = ?1 OR id LIKE ?1 || '%' ORDER BY id = ?1 DESC LIMIT 1"),
                params![id],
                |row| Ok((summary(row)?, row.get(10)?)),
            )
            .optional()?;
        let Some((run, flow_file)) = found else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(
            "SELECT step_id, component, status, started_at, duration_ms, input, output, error, connections, items_total FROM steps WHERE run_id = ?1 ORDER BY position",
        )?;
        let mut steps = stmt
            .query_map(params![run.id], |r| {
                Ok(StepRecord {
                    step_id: r.get(0)?,
                    component: r.get(1)?,
                    status: r.get(2)?,
                    started_at: r.get(3)?,
                    duration_ms: r.get(4)?,
                    input: r.get(5)?,
                    output: r.get(6)?,
                    error: r.get(7)?,
                    connections: r.get(8)?,
                    items_total: r.get(9)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        if run.status == "interrupted" {
            for s in steps.iter_mut().filter(|s| s.status == "running") {
                s.status = "interrupted".into();
            }
        }
        let mut stmt = conn.prepare("SELECT step_id, idx, status, duration_ms, input, output, error FROM items WHERE run_id = ?1 ORDER BY step_id, idx")?;
        let items = stmt
            .query_map(params![run.id], |r| {
                Ok(ItemRecord {
                    step_id: r.get(0)?,
                    index: r.get(1)?,
                    status: r.get(2)?,
                    duration_ms: r.get(3)?,
                    input: r.get(4)?,
                    output: r.get(5)?,
                    error: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt =
            conn.prepare("SELECT name, path FROM artifacts WHERE run_id = ?1 ORDER BY name")?;
        let artifacts = stmt
            .query_map(params![run.id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(RunDetail {
            run,
            flow_file,
            steps,
            items,
            artifacts,
        }))
    }

    /// Deletes runs that started more than `age` ago, with everything they
    /// recorded. Returns how many runs were removed.
    pub fn prune_older_than(&self, age: Duration) -> Result<usize, HistoryError> {
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let cutoff = cutoff.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let conn = self.conn();
        Ok(conn.execute(
            "DELETE FROM runs WHERE started_at < ?1 AND status != 'running'",
            params![cutoff],
        )?)
    }
}
