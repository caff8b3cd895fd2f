//! The schema, as an ordered list of migrations applied from day one.
//! `PRAGMA user_version` records how many have run; a released migration is
//! never edited, a new one is appended.

use std::path::Path;

use rusqlite::Connection;

use crate::HistoryError;

const MIGRATIONS: &[&str] = &[
    // 1: runs, steps, items, artifacts.
    r#"
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        flow        TEXT NOT NULL,
        flow_file   TEXT NOT NULL,
        trigger     TEXT NOT NULL,
        dry_run     INTEGER NOT NULL,
        status      TEXT NOT NULL,
        error       TEXT,
        started_at  TEXT NOT NULL,
        ended_at    TEXT,
        output_dir  TEXT,
        pid         INTEGER
    );
    CREATE INDEX runs_by_flow ON runs(flow, started_at);
    CREATE INDEX runs_by_start ON runs(started_at);
    CREATE TABLE steps (
        run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id     TEXT NOT NULL,
        position    INTEGER NOT NULL,
        component   TEXT NOT NULL,
        status      TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        ended_at    TEXT,
        duration_ms INTEGER,
        input       TEXT,
        output      TEXT,
        error       TEXT,
        connections TEXT,
        items_total INTEGER,
        PRIMARY KEY (run_id, step_id)
    );
    CREATE TABLE items (
        run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id     TEXT NOT NULL,
        idx         INTEGER NOT NULL,
        status      TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        input       TEXT,
        output      TEXT,
        error       TEXT,
        PRIMARY KEY (run_id, step_id, idx)
    );
    CREATE TABLE artifacts (
        run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        path        TEXT NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    "#,
];

pub fn migrate(conn: &Connection, path: &Path) -> Result<(), HistoryError> {
    // Several processes (the scheduler, `sluice run`, `sluice runs`) may open
    // a new file at once: read the version and migrate under one write lock.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(HistoryError::TooNew {
                path: path.display().to_string(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(sql)?;
            conn.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    result
}

pub fn version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}
