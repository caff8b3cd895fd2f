//! The SQLite schema, as an ordered list of migrations applied from day one.
//! `PRAGMA user_version` records how many have run; each migration runs in
//! the same transaction as the version bump, so a file is never half
//! migrated. A released migration is never edited: a new one is appended.
//!
//! Invariants the rest of the crate relies on: timestamps are fixed-width
//! RFC 3339 UTC text (they compare as text); steps, items and artifacts
//! belong to a run (`ON DELETE CASCADE`, and pruning deletes them
//! explicitly too), and so do approval gates; approval items, decisions
//! and closings belong to their plan.

use std::path::Path;

use rusqlite::Connection;

use crate::StoreError;

/// The migrations, in order: entry `i` takes a file from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
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
    // 2: which process instance wrote a run (a pid alone is reused, e.g. by
    // a container's pid 1 after a restart), when each item ended (the last
    // sign of life of a run that died mid-step), and indexes for pruning and
    // recovery.
    r#"
    ALTER TABLE runs ADD COLUMN process_token TEXT;
    ALTER TABLE items ADD COLUMN ended_at TEXT;
    CREATE INDEX runs_by_end ON runs(ended_at);
    CREATE INDEX runs_by_status ON runs(status);
    "#,
    // 3: request counts per connection for each `for_each` item, as steps
    // have them: `{"graph": {"requests": n, "retried": n, "throttled": n,
    // "wait_ms": n}}`.
    r#"
    ALTER TABLE items ADD COLUMN connections TEXT;
    "#,
    // 4: the flow state store: a JSON value per (flow, key). Keys compare
    // by their bytes (BINARY, SQLite's default), as `list` pages them.
    r#"
    CREATE TABLE flow_state (
        flow        TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        run_id      TEXT,
        PRIMARY KEY (flow, key)
    ) WITHOUT ROWID;
    "#,
    // 5: replicas. Which replica (and host) ran a run under which fencing
    // number; a lease per flow; one row per claimed firing.
    r#"
    ALTER TABLE runs ADD COLUMN replica TEXT;
    ALTER TABLE runs ADD COLUMN host TEXT;
    ALTER TABLE runs ADD COLUMN fence INTEGER;
    CREATE TABLE leases (
        flow         TEXT PRIMARY KEY,
        fence        INTEGER NOT NULL,
        holder       TEXT,
        holder_token TEXT,
        run_id       TEXT,
        expires_at   TEXT NOT NULL
    );
    CREATE TABLE firings (
        flow         TEXT NOT NULL,
        scheduled_at TEXT NOT NULL,
        replica      TEXT NOT NULL,
        run_id       TEXT NOT NULL,
        claimed_at   TEXT NOT NULL,
        PRIMARY KEY (flow, scheduled_at)
    );
    CREATE INDEX firings_by_claim ON firings(claimed_at);
    "#,
    // 6: approvals and the ledger. Each `for_each` item keeps its key (as
    // written, and lower-cased for look-ups: the ledger is this index over
    // the items). A plan per flow and step holds what its gate held back
    // (at most one open: a partial unique index), its items and every
    // decision; `approval_gates` says what each run's gate did.
    r#"
    ALTER TABLE items ADD COLUMN item_key TEXT;
    ALTER TABLE items ADD COLUMN key_norm TEXT;
    CREATE INDEX items_by_key ON items(key_norm) WHERE key_norm IS NOT NULL;
    CREATE TABLE approval_plans (
        id              TEXT PRIMARY KEY,
        flow            TEXT NOT NULL,
        step            TEXT NOT NULL,
        status          TEXT NOT NULL,
        reason          TEXT NOT NULL,
        flow_file       TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        created_by_run  TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        updated_by_run  TEXT NOT NULL,
        closed_at       TEXT
    );
    CREATE UNIQUE INDEX approval_plans_open ON approval_plans(flow, step) WHERE status = 'open';
    CREATE INDEX approval_plans_by_flow ON approval_plans(flow, created_at);
    CREATE TABLE approval_items (
        plan_id         TEXT NOT NULL REFERENCES approval_plans(id) ON DELETE CASCADE,
        key_norm        TEXT NOT NULL,
        item_key        TEXT NOT NULL,
        position        INTEGER NOT NULL,
        input           TEXT NOT NULL,
        state           TEXT NOT NULL,
        first_seen_run  TEXT NOT NULL,
        last_seen_run   TEXT NOT NULL,
        last_seen_at    TEXT NOT NULL,
        decided_by      TEXT,
        decided_at      TEXT,
        note            TEXT,
        outcome         TEXT,
        outcome_run     TEXT,
        outcome_at      TEXT,
        outcome_detail  TEXT,
        PRIMARY KEY (plan_id, key_norm)
    );
    CREATE INDEX approval_items_by_key ON approval_items(key_norm);
    CREATE TABLE approval_decisions (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        plan_id         TEXT NOT NULL REFERENCES approval_plans(id) ON DELETE CASCADE,
        key_norm        TEXT NOT NULL,
        item_key        TEXT NOT NULL,
        decision        TEXT NOT NULL,
        decided_by      TEXT NOT NULL,
        decided_at      TEXT NOT NULL,
        note            TEXT
    );
    CREATE INDEX approval_decisions_by_key ON approval_decisions(key_norm);
    CREATE INDEX approval_decisions_by_plan ON approval_decisions(plan_id, seq);
    CREATE TABLE approval_gates (
        run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id     TEXT NOT NULL,
        position    INTEGER NOT NULL,
        plan_id     TEXT,
        reason      TEXT,
        approved    INTEGER NOT NULL,
        unapproved  INTEGER NOT NULL,
        waiting     INTEGER NOT NULL,
        rejected    INTEGER NOT NULL,
        closed      INTEGER NOT NULL,
        PRIMARY KEY (run_id, step_id)
    );
    "#,
    // 7: the `--param` overrides of the run that last updated a plan, so
    // `sluice approve --run` runs the flow as it was run.
    r#"
    ALTER TABLE approval_plans ADD COLUMN params TEXT;
    "#,
    // 8: the attempts of a step or item its `retry` called again, as JSON
    // `{"made": n, "failed": [{"attempt", "kind", "code", "message"}]}`
    // (NULL when it ran once).
    r#"
    ALTER TABLE steps ADD COLUMN attempts TEXT;
    ALTER TABLE items ADD COLUMN attempts TEXT;
    "#,
    // 9: the flow state as an ordinary table with a unique (flow, key)
    // index, no longer WITHOUT ROWID. There each row lives whole in its
    // key's B-tree cell, so every key search that passed a large value (a
    // members chunk, up to 256 KiB) read that value in full: a first run's
    // 74k state writes at 100k members spent seconds in it. The index keeps
    // the keys' byte order (BINARY), which `list` pages by.
    r#"
    CREATE TABLE flow_state_rows (
        flow        TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        run_id      TEXT,
        UNIQUE (flow, key)
    );
    INSERT INTO flow_state_rows (flow, key, value, updated_at, run_id)
        SELECT flow, key, value, updated_at, run_id FROM flow_state;
    DROP TABLE flow_state;
    ALTER TABLE flow_state_rows RENAME TO flow_state;
    "#,
    // 10: every closing of an approval item whose key left the step's
    // items, kept apart from the item as its decisions are: when the key
    // comes back the item is a new request and its outcome is cleared, but
    // the ledger still tells the closing. The items closed so far are its
    // first rows.
    r#"
    CREATE TABLE approval_closings (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        plan_id         TEXT NOT NULL REFERENCES approval_plans(id) ON DELETE CASCADE,
        key_norm        TEXT NOT NULL,
        item_key        TEXT NOT NULL,
        run_id          TEXT NOT NULL,
        closed_at       TEXT NOT NULL,
        detail          TEXT
    );
    CREATE INDEX approval_closings_by_key ON approval_closings(key_norm);
    INSERT INTO approval_closings (plan_id, key_norm, item_key, run_id, closed_at, detail)
        SELECT plan_id, key_norm, item_key, COALESCE(outcome_run, ''), outcome_at, outcome_detail
        FROM approval_items WHERE state = 'closed' AND outcome_at IS NOT NULL
        ORDER BY outcome_at;
    "#,
    // 11: the process holding a lease (its host and pid, beside the token
    // it had), so a process on that host sees it gone, and takes the lease
    // over at once, even when it died before its run wrote anything.
    r#"
    ALTER TABLE leases ADD COLUMN holder_host TEXT;
    ALTER TABLE leases ADD COLUMN holder_pid INTEGER;
    "#,
    // 12: a plan's items still open, so whether a plan is settled is one
    // look-up, not a scan of every item it ever had: each approved item
    // that runs asks it, and a plan of 8,000 made that quadratic. The
    // condition is written exactly as the queries write it, which is what
    // lets SQLite use a partial index.
    r#"
    CREATE INDEX approval_items_open ON approval_items(plan_id)
        WHERE state IN ('pending', 'approved', 'rejected');
    "#,
    // 13: a plan's revision (1 when opened, one more at each run that adds
    // a request), the revision each item joined at, and the revision a
    // run's gate left its plan at: `sluice approve ID --revision N`
    // decides only what a report of revision N showed. Plans and items
    // from before count as revision 1.
    r#"
    ALTER TABLE approval_plans ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE approval_items ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE approval_gates ADD COLUMN revision INTEGER;
    "#,
    // 14: the approve command a run's gate printed. A run given `--only`
    // names its keys in it, which the plan and revision alone cannot say.
    r#"
    ALTER TABLE approval_gates ADD COLUMN approve_command TEXT;
    "#,
];

/// The schema version this build writes: the number of migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`]. Safe to call on every
/// open: an up-to-date file is only read.
pub fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let shown = || path.display().to_string();
    let found = version(conn).map_err(|e| StoreError::Open {
        location: shown(),
        why: crate::error::sqlite_why(&e),
    })?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    // Several processes (the scheduler, `sluice run`, `sluice runs`) may
    // open a new file at once: read the version again and migrate under one
    // write lock, so exactly one of them does it.
    let failed = |version: i64| {
        move |e: rusqlite::Error| StoreError::Migrate {
            location: shown(),
            version,
            why: crate::error::sqlite_why(&e),
        }
    };
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(failed(found + 1))?;
    let result = (|| {
        let found = version(conn).map_err(failed(found + 1))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                location: shown(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
            let target = i as i64 + 1;
            conn.execute_batch(sql).map_err(failed(target))?;
            conn.pragma_update(None, "user_version", target)
                .map_err(failed(target))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(failed(SCHEMA_VERSION)),
        Err(e) => {
            // The error that matters is the one above, not the rollback's.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Refuses a database a newer Sluice has migrated since this process
/// opened it: a replica left on the old version during a rolling upgrade
/// must not claim firings or leases and run them with the old rules.
pub fn not_newer(conn: &Connection, location: &str) -> Result<(), StoreError> {
    crate::error::refuse_newer(&location, version(conn)?, SCHEMA_VERSION)
}

/// `PRAGMA user_version`: how many migrations the file has had.
pub fn version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}
