//! Writes, one commit each, as a run progresses.

use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use crate::cap::capped;
use crate::{History, HistoryError, NewRun};

/// Where the next step of a run goes in its listing.
fn next_position(conn: &rusqlite::Connection, run: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM steps WHERE run_id = ?1",
        params![run],
        |r| r.get(0),
    )
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl History {
    pub fn start_run(&self, run: &NewRun<'_>) -> Result<(), HistoryError> {
        self.conn().execute(
            "INSERT INTO runs (id, flow, flow_file, trigger, dry_run, status, started_at, output_dir, pid) VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8)",
            params![run.id, run.flow, run.flow_file, run.trigger, run.dry_run, now(), run.output_dir, std::process::id()],
        )?;
        Ok(())
    }

    /// A firing that did not run because the previous run was still going.
    pub fn record_skipped(&self, run: &NewRun<'_>, reason: &str) -> Result<(), HistoryError> {
        let t = now();
        self.conn().execute(
            "INSERT INTO runs (id, flow, flow_file, trigger, dry_run, status, error, started_at, ended_at, pid) VALUES (?1, ?2, ?3, ?4, ?5, 'skipped', ?6, ?7, ?7, ?8)",
            params![run.id, run.flow, run.flow_file, run.trigger, run.dry_run, reason, t, std::process::id()],
        )?;
        Ok(())
    }

    pub fn finish_run(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), HistoryError> {
        self.conn().execute(
            "UPDATE runs SET status = ?2, error = ?3, ended_at = ?4 WHERE id = ?1",
            params![id, status, error, now()],
        )?;
        Ok(())
    }

    pub fn start_step(
        &self,
        run: &str,
        step: &str,
        component: &str,
        input: &Value,
        items_total: Option<usize>,
    ) -> Result<(), HistoryError> {
        let conn = self.conn();
        let position = next_position(&conn, run)?;
        conn.execute(
            "INSERT OR REPLACE INTO steps (run_id, step_id, position, component, status, started_at, input, items_total) VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7)",
            params![run, step, position, component, now(), capped(input), items_total.map(|n| n as i64)],
        )?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn finish_step(
        &self,
        run: &str,
        step: &str,
        component: &str,
        status: &str,
        output: Option<&Value>,
        error: Option<&str>,
        connections: &Value,
        duration_ms: u64,
    ) -> Result<(), HistoryError> {
        let conn = self.conn();
        let exists: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM steps WHERE run_id = ?1 AND step_id = ?2",
                params![run, step],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            // A skipped step never started.
            let position = next_position(&conn, run)?;
            conn.execute(
                "INSERT INTO steps (run_id, step_id, position, component, status, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run, step, position, component, status, now()],
            )?;
        }
        conn.execute(
            "UPDATE steps SET status = ?3, ended_at = ?4, duration_ms = ?5, output = ?6, error = ?7, connections = ?8 WHERE run_id = ?1 AND step_id = ?2",
            params![run, step, status, now(), duration_ms as i64, output.map(capped), error, connections.to_string()],
        )?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record_item(
        &self,
        run: &str,
        step: &str,
        index: usize,
        status: &str,
        input: &Value,
        output: Option<&Value>,
        error: Option<&str>,
        duration_ms: u64,
    ) -> Result<(), HistoryError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO items (run_id, step_id, idx, status, duration_ms, input, output, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![run, step, index as i64, status, duration_ms as i64, capped(input), output.map(capped), error],
        )?;
        Ok(())
    }

    pub fn add_artifact(&self, run: &str, name: &str, path: &str) -> Result<(), HistoryError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO artifacts (run_id, name, path) VALUES (?1, ?2, ?3)",
            params![run, name, path],
        )?;
        Ok(())
    }

    /// Marks a run that will not finish (and its running steps) as interrupted.
    pub fn mark_interrupted(&self, run: &str, reason: &str) -> Result<(), HistoryError> {
        let conn = self.conn();
        let t = now();
        conn.execute(
            "UPDATE runs SET status = 'interrupted', error = COALESCE(error, ?2), ended_at = ?3 WHERE id = ?1 AND status = 'running'",
            params![run, reason, t],
        )?;
        conn.execute("UPDATE steps SET status = 'interrupted', ended_at = ?2 WHERE run_id = ?1 AND status = 'running'", params![run, t])?;
        Ok(())
    }
}
