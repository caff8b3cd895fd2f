//! The PostgreSQL schema, as an ordered list of migrations (numbered on
//! their own: this list is not SQLite's). A released migration is never
//! edited; a new one is appended.
//!
//! `sluice_schema` has one row per migration applied. Several replicas may
//! start at once on an empty database: each creates `sluice_schema` if it
//! is missing (a lost race to create it is ignored), then migrates inside
//! one transaction that first locks that table (`LOCK TABLE … EXCLUSIVE`,
//! held until the transaction ends), reads the version again and applies
//! what is still missing. DDL is transactional in PostgreSQL, so the others
//! wait, find the work done, and change nothing; a failed migration leaves
//! nothing behind. No session-level lock is involved, so this works through
//! a pooler in transaction mode.

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient};

use crate::{Location, StoreError};

/// The migrations, in order: entry `i` takes the database from version `i`
/// to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the run history, flow state, leases and claimed firings, as SQLite
    // has them at its schema 5.
    r#"
    CREATE TABLE runs (
        id            text PRIMARY KEY,
        flow          text NOT NULL,
        flow_file     text NOT NULL,
        trigger       text NOT NULL,
        dry_run       boolean NOT NULL,
        status        text NOT NULL,
        error         text,
        started_at    timestamptz NOT NULL,
        ended_at      timestamptz,
        output_dir    text,
        pid           bigint,
        process_token text,
        host          text,
        replica       text,
        fence         bigint
    );
    CREATE INDEX runs_by_flow ON runs (flow, started_at);
    CREATE INDEX runs_by_start ON runs (started_at);
    CREATE INDEX runs_by_end ON runs (ended_at);
    CREATE INDEX runs_by_status ON runs (status);
    CREATE TABLE steps (
        run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step_id     text NOT NULL,
        position    bigint NOT NULL,
        component   text NOT NULL,
        status      text NOT NULL,
        started_at  timestamptz NOT NULL,
        ended_at    timestamptz,
        duration_ms bigint,
        input       text,
        output      text,
        error       text,
        connections text,
        items_total bigint,
        PRIMARY KEY (run_id, step_id)
    );
    CREATE TABLE items (
        run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step_id     text NOT NULL,
        idx         bigint NOT NULL,
        status      text NOT NULL,
        duration_ms bigint NOT NULL,
        input       text,
        output      text,
        error       text,
        ended_at    timestamptz,
        connections text,
        PRIMARY KEY (run_id, step_id, idx)
    );
    CREATE TABLE artifacts (
        run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        name   text NOT NULL,
        path   text NOT NULL,
        seq    bigint GENERATED ALWAYS AS IDENTITY,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE flow_state (
        flow       text NOT NULL,
        key        text COLLATE "C" NOT NULL,
        value      text NOT NULL,
        updated_at timestamptz NOT NULL,
        run_id     text,
        PRIMARY KEY (flow, key)
    );
    CREATE TABLE leases (
        flow         text PRIMARY KEY,
        fence        bigint NOT NULL,
        holder       text,
        holder_token text,
        run_id       text,
        expires_at   timestamptz NOT NULL
    );
    CREATE TABLE firings (
        flow         text NOT NULL,
        scheduled_at timestamptz NOT NULL,
        replica      text NOT NULL,
        run_id       text NOT NULL,
        claimed_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (flow, scheduled_at)
    );
    CREATE INDEX firings_by_claim ON firings (claimed_at);
    "#,
    // 2: approvals and the ledger, as SQLite has them at its schema 6. Each
    // item keeps its key (as written, and lower-cased for look-ups); a plan
    // per flow and step (at most one open), its items, every decision, and
    // what each run's gate did. Keys sort by their bytes, as on SQLite.
    r#"
    ALTER TABLE items ADD COLUMN item_key text;
    ALTER TABLE items ADD COLUMN key_norm text COLLATE "C";
    CREATE INDEX items_by_key ON items (key_norm) WHERE key_norm IS NOT NULL;
    CREATE TABLE approval_plans (
        id              text PRIMARY KEY,
        flow            text NOT NULL,
        step            text NOT NULL,
        status          text NOT NULL,
        reason          text NOT NULL,
        flow_file       text NOT NULL,
        created_at      timestamptz NOT NULL,
        created_by_run  text NOT NULL,
        updated_at      timestamptz NOT NULL,
        updated_by_run  text NOT NULL,
        closed_at       timestamptz
    );
    CREATE UNIQUE INDEX approval_plans_open ON approval_plans (flow, step) WHERE status = 'open';
    CREATE INDEX approval_plans_by_flow ON approval_plans (flow, created_at);
    CREATE TABLE approval_items (
        plan_id         text NOT NULL REFERENCES approval_plans (id) ON DELETE CASCADE,
        key_norm        text COLLATE "C" NOT NULL,
        item_key        text NOT NULL,
        position        bigint NOT NULL,
        input           text NOT NULL,
        state           text NOT NULL,
        first_seen_run  text NOT NULL,
        last_seen_run   text NOT NULL,
        last_seen_at    timestamptz NOT NULL,
        decided_by      text,
        decided_at      timestamptz,
        note            text,
        outcome         text,
        outcome_run     text,
        outcome_at      timestamptz,
        outcome_detail  text,
        PRIMARY KEY (plan_id, key_norm)
    );
    CREATE INDEX approval_items_by_key ON approval_items (key_norm);
    CREATE TABLE approval_decisions (
        seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        plan_id         text NOT NULL REFERENCES approval_plans (id) ON DELETE CASCADE,
        key_norm        text NOT NULL,
        item_key        text NOT NULL,
        decision        text NOT NULL,
        decided_by      text NOT NULL,
        decided_at      timestamptz NOT NULL,
        note            text
    );
    CREATE INDEX approval_decisions_by_key ON approval_decisions (key_norm);
    CREATE INDEX approval_decisions_by_plan ON approval_decisions (plan_id, seq);
    CREATE TABLE approval_gates (
        run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step_id     text NOT NULL,
        position    bigint NOT NULL,
        plan_id     text,
        reason      text,
        approved    bigint NOT NULL,
        unapproved  bigint NOT NULL,
        waiting     bigint NOT NULL,
        rejected    bigint NOT NULL,
        closed      bigint NOT NULL,
        PRIMARY KEY (run_id, step_id)
    );
    "#,
    // 3: the `--param` overrides of the run that last updated a plan, as
    // SQLite has them at its schema 7.
    r#"
    ALTER TABLE approval_plans ADD COLUMN params text;
    "#,
    // 4: the attempts of a step or item its `retry` called again, as
    // SQLite has them at its schema 8.
    r#"
    ALTER TABLE steps ADD COLUMN attempts text;
    ALTER TABLE items ADD COLUMN attempts text;
    "#,
    // 5: every closing of an approval item whose key left the step's
    // items, as SQLite has them at its schema 10.
    r#"
    CREATE TABLE approval_closings (
        seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        plan_id         text NOT NULL REFERENCES approval_plans (id) ON DELETE CASCADE,
        key_norm        text NOT NULL,
        item_key        text NOT NULL,
        run_id          text NOT NULL,
        closed_at       timestamptz NOT NULL,
        detail          text
    );
    CREATE INDEX approval_closings_by_key ON approval_closings (key_norm);
    INSERT INTO approval_closings (plan_id, key_norm, item_key, run_id, closed_at, detail)
        SELECT plan_id, key_norm, item_key, coalesce(outcome_run, ''), outcome_at, outcome_detail
        FROM approval_items WHERE state = 'closed' AND outcome_at IS NOT NULL
        ORDER BY outcome_at;
    "#,
    // 6: the process holding a lease (its host and pid), as SQLite has it
    // at its schema 11.
    r#"
    ALTER TABLE leases ADD COLUMN holder_host text;
    ALTER TABLE leases ADD COLUMN holder_pid bigint;
    "#,
    // 7: a plan's items still open, as SQLite has them at its schema 12:
    // whether a plan is settled is one look-up, not a scan of its items.
    r#"
    CREATE INDEX approval_items_open ON approval_items (plan_id)
        WHERE state IN ('pending', 'approved', 'rejected');
    "#,
    // 8: a plan's revision, the revision each item joined at and the one
    // a run's gate left its plan at, as SQLite has them at its schema 13.
    r#"
    ALTER TABLE approval_plans ADD COLUMN revision bigint NOT NULL DEFAULT 1;
    ALTER TABLE approval_items ADD COLUMN revision bigint NOT NULL DEFAULT 1;
    ALTER TABLE approval_gates ADD COLUMN revision bigint;
    "#,
    // 9: the approve command a run's gate printed, as SQLite has it at its
    // schema 14.
    r#"
    ALTER TABLE approval_gates ADD COLUMN approve_command text;
    "#,
];

/// The schema version this build writes: the number of migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`]; see the module docs for
/// how concurrent starts are made safe.
pub async fn migrate(client: &mut Client, location: &Location) -> Result<(), StoreError> {
    let failed = |version: i64| {
        move |e: tokio_postgres::Error| StoreError::Migrate {
            location: location.to_string(),
            version,
            why: describe(&e),
        }
    };
    create_schema_table(client).await.map_err(failed(0))?;
    if version(&*client).await.map_err(failed(0))? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = client.transaction().await.map_err(failed(0))?;
    tx.batch_execute("LOCK TABLE sluice_schema IN EXCLUSIVE MODE")
        .await
        .map_err(failed(0))?;
    let found = version(&tx).await.map_err(failed(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            location: location.to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    let me = crate::process::this_process();
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let target = i as i64 + 1;
        tx.batch_execute(sql).await.map_err(failed(target))?;
        tx.execute(
            "INSERT INTO sluice_schema (version, applied_by) VALUES ($1, $2)",
            &[&target, &format!("{}/{}", me.host, me.token)],
        )
        .await
        .map_err(failed(target))?;
    }
    tx.commit().await.map_err(failed(SCHEMA_VERSION))
}

/// Creates the version table when missing. Two replicas may both find it
/// missing; the loser's error (the table, its type or its index already
/// exists: PostgreSQL reports the race in several ways) means the work is
/// done, which the table being there now confirms.
async fn create_schema_table(client: &Client) -> Result<(), tokio_postgres::Error> {
    let result = client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sluice_schema (
                version    bigint PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now(),
                applied_by text NOT NULL
            )",
        )
        .await;
    let Err(e) = result else { return Ok(()) };
    let raced = [
        SqlState::UNIQUE_VIOLATION,
        SqlState::DUPLICATE_TABLE,
        SqlState::DUPLICATE_OBJECT,
    ];
    if !e.code().is_some_and(|c| raced.contains(c)) {
        return Err(e);
    }
    let exists: bool = client
        .query_one("SELECT to_regclass('sluice_schema') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if exists { Ok(()) } else { Err(e) }
}

/// Refuses a database a newer Sluice has migrated since this process
/// opened it: a replica left on the old version during a rolling upgrade
/// must not claim firings or leases and run them with the old rules.
pub async fn not_newer(c: &impl GenericClient, location: &Location) -> Result<(), StoreError> {
    let found = version(c).await?;
    crate::error::refuse_newer(location, found, SCHEMA_VERSION)
}

/// How many migrations the database has had.
pub async fn version(c: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    let row = c
        .query_one("SELECT coalesce(max(version), 0) FROM sluice_schema", &[])
        .await?;
    row.try_get(0)
}

/// A server error with its detail, for messages.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}
