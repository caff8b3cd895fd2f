//! The run history end to end: migrations, a run written and read back,
//! capped JSON, runs left behind by a dead process, pruning, listing,
//! rendering and sharing one file between handles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sluice_store::{
    DetailOptions, History, HistoryError, ItemStatus, NewRun, RunStatus, SCHEMA_VERSION,
    StepStatus, Trigger, render_run_detail, render_run_detail_with, render_runs_table,
};

fn new_run<'a>(id: &'a str, flow: &'a str) -> NewRun<'a> {
    NewRun {
        id,
        flow,
        flow_file: "flows/x.toml",
        trigger: "manual",
        dry_run: false,
        output_dir: "/tmp/out",
    }
}

fn sql(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn count(conn: &rusqlite::Connection, table: &str, run: &str) -> i64 {
    conn.query_row(
        &format!("SELECT COUNT(*) FROM {table} WHERE run_id = ?1"),
        [run],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn migrations_run_from_empty_and_reopen_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(&dir.path().join("nested/folder"));
    let h = History::open(&path).unwrap();
    assert_eq!(h.schema_version().unwrap(), SCHEMA_VERSION);
    h.start_run(&new_run("r1", "f")).unwrap();
    drop(h);
    for _ in 0..2 {
        let h = History::open(&path).unwrap();
        assert_eq!(h.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(h.list_runs(None, 10).unwrap().len(), 1);
    }
    let mode: String = sql(&path)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(
        History::open_in_memory().unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
}

#[test]
fn a_version_1_file_is_migrated_with_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let conn = sql(&path);
    conn.execute_batch(sluice_store::schema::MIGRATIONS[0])
        .unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    conn.execute(
        "INSERT INTO runs (id, flow, flow_file, trigger, dry_run, status, started_at, ended_at, pid)
         VALUES ('old', 'sync', 'f.toml', 'schedule', 0, 'succeeded', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:02.500Z', 1)",
        [],
    )
    .unwrap();
    drop(conn);
    let h = History::open(&path).unwrap();
    assert_eq!(h.schema_version().unwrap(), SCHEMA_VERSION);
    let run = &h.list_runs(None, 10).unwrap()[0];
    assert_eq!(
        (run.id.as_str(), run.status, run.trigger),
        ("old", RunStatus::Succeeded, Trigger::Schedule)
    );
    assert_eq!(run.duration_ms, Some(2500));
}

#[test]
fn a_file_from_a_newer_sluice_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    drop(History::open(&path).unwrap());
    sql(&path).pragma_update(None, "user_version", 99).unwrap();
    let err = History::open(&path).unwrap_err();
    assert!(
        matches!(err, HistoryError::TooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer Sluice"), "{err}");
}

fn write_full_run(h: &History) {
    h.start_run(&new_run("r1", "sync")).unwrap();
    h.start_step("r1", "diff", "compare", &json!({"people": []}), None)
        .unwrap();
    h.finish_step(
        "r1",
        "diff",
        "compare",
        StepStatus::Succeeded,
        Some(&json!({"missing": [1, 2]})),
        None,
        &json!({}),
        12,
    )
    .unwrap();
    h.start_step(
        "r1",
        "create",
        "procore-create-user",
        &json!({"user": "${item}"}),
        Some(2),
    )
    .unwrap();
    h.record_item(
        "r1",
        "create",
        0,
        ItemStatus::Succeeded,
        &json!({"user": 1}),
        Some(&json!({"status": "created"})),
        None,
        &json!({"procore": {"requests": 1, "retried": 0, "throttled": 0, "wait_ms": 0}}),
        5,
    )
    .unwrap();
    h.record_item(
        "r1",
        "create",
        1,
        "failed",
        &json!({"user": 2}),
        None,
        Some("HTTP 503 from procore"),
        &json!({"procore": {"requests": 2, "retried": 1, "throttled": 1, "wait_ms": 1500}}),
        7,
    )
    .unwrap();
    h.finish_step(
        "r1",
        "create",
        "procore-create-user",
        "failed",
        Some(&json!({"ok": 1, "failed": 1})),
        Some("1 of 2 items failed"),
        &json!({"procore": {"requests": 3, "retried": 1, "throttled": 0, "wait_ms": 0}}),
        20,
    )
    .unwrap();
    // A step that never started is recorded whole when it ends.
    h.finish_step(
        "r1",
        "mail",
        "graph-send-mail",
        "skipped",
        None,
        Some("an earlier step failed"),
        &Value::Null,
        0,
    )
    .unwrap();
    h.add_artifact("r1", "report.html", "/tmp/out/report.html")
        .unwrap();
    h.finish_run(
        "r1",
        RunStatus::Failed,
        Some("step `create` failed: 1 of 2 items failed"),
    )
    .unwrap();
}

#[test]
fn a_run_with_steps_items_and_artifacts_reads_back() {
    let h = History::open_in_memory().unwrap();
    write_full_run(&h);
    let d = h.run_detail("r1").unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Failed);
    assert_eq!(d.run.flow_file, "flows/x.toml");
    assert!(d.run.ended_at.is_some() && d.run.duration_ms.is_some());
    let ids: Vec<_> = d.steps.iter().map(|s| s.step_id.as_str()).collect();
    assert_eq!(ids, vec!["diff", "create", "mail"]);
    let diff = &d.steps[0];
    assert_eq!(diff.input, Some(json!({"people": []})));
    assert_eq!(diff.output, Some(json!({"missing": [1, 2]})));
    assert_eq!(diff.duration_ms, Some(12));
    let create = &d.steps[1];
    assert_eq!(create.status, StepStatus::Failed);
    assert_eq!(create.items_total, Some(2));
    assert_eq!(
        create.connections.as_ref().unwrap()["procore"]["retried"],
        json!(1)
    );
    assert_eq!(d.steps[2].status, "skipped");
    assert_eq!(d.steps[2].error.as_deref(), Some("an earlier step failed"));
    assert_eq!(d.steps[2].connections, None);
    let items: Vec<_> = d.items_of("create").collect();
    assert_eq!(items.len(), 2);
    assert_eq!(
        (items[1].index, items[1].status, items[1].duration_ms),
        (1, ItemStatus::Failed, 7)
    );
    assert_eq!(items[1].error.as_deref(), Some("HTTP 503 from procore"));
    assert_eq!(
        items[1].connections.as_ref().unwrap()["procore"]["retried"],
        json!(1)
    );
    assert_eq!(
        items[0].connections.as_ref().unwrap()["procore"]["requests"],
        json!(1)
    );
    assert_eq!(items[0].output, Some(json!({"status": "created"})));
    assert!(items[0].ended_at.is_some());
    assert_eq!(d.artifacts[0].path, "/tmp/out/report.html");
    // A unique prefix of the id finds the run; a shared one is named as such.
    assert!(h.run_detail("r").unwrap().is_some());
    h.start_run(&new_run("r2", "sync")).unwrap();
    let err = h.run_detail("r").unwrap_err();
    assert!(err.to_string().contains("matches 2 runs"), "{err}");
    assert!(h.run_detail("nope").unwrap().is_none());
    // The JSON form (`sluice runs show --json`) carries words, not numbers.
    let text = serde_json::to_value(&d).unwrap();
    assert_eq!(text["run"]["status"], json!("failed"));
    assert_eq!(text["steps"][0]["output"]["missing"], json!([1, 2]));
}

#[test]
fn render_shows_the_key_facts() {
    let h = History::open_in_memory().unwrap();
    write_full_run(&h);
    let text = render_run_detail(&h.run_detail("r1").unwrap().unwrap());
    for needle in [
        "Run r1  FAILED",
        "sync (flows/x.toml)",
        "trigger   manual",
        "took ",
        "error     step `create` failed",
        "output    /tmp/out",
        "report.html  /tmp/out/report.html",
        "1. diff",
        "12 ms",
        "items: 2 of 2 done, 1 failed",
        "#2 failed after 7 ms: HTTP 503 from procore",
        "requests: procore: 2 requests (1 retried, 1 throttled, waited 1.5 s)",
        "requests: procore: 3 requests (1 retried)",
        "3. mail",
        "skipped",
        "why: an earlier step failed",
        "`sluice runs show r1 --items` lists every item",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    // The succeeded item is counted, not listed, unless every item is asked for.
    assert!(!text.contains("#1 succeeded"), "{text}");
    let all = render_run_detail_with(
        &h.run_detail("r1").unwrap().unwrap(),
        DetailOptions { all_items: true },
    );
    assert!(
        all.contains("#1 succeeded after 5 ms\n           requests: procore: 1 request\n"),
        "{all}"
    );
    assert!(!all.contains("--items"), "{all}");
    let table = render_runs_table(&h.list_runs(None, 10).unwrap());
    assert!(table.starts_with("RUN"), "{table}");
    for needle in ["r1", "sync", "manual", "failed", "step `create` failed"] {
        assert!(table.contains(needle), "{needle:?} missing:\n{table}");
    }
    assert_eq!(render_runs_table(&[]), "No runs recorded yet.\n");
}

#[test]
fn big_inputs_and_outputs_are_stored_as_valid_markers() {
    let h = History::open_in_memory().unwrap();
    h.start_run(&new_run("r1", "sync")).unwrap();
    let users: Vec<Value> = (0..20_000)
        .map(|i| json!({"mail": format!("user{i}@example.com")}))
        .collect();
    let big = json!({ "users": users });
    let size = big.to_string().len() as u64;
    h.start_step("r1", "users", "procore-users", &big, None)
        .unwrap();
    h.finish_step(
        "r1",
        "users",
        "procore-users",
        "succeeded",
        Some(&big),
        None,
        &json!({}),
        1,
    )
    .unwrap();
    h.record_item(
        "r1",
        "users",
        0,
        "succeeded",
        &big,
        Some(&json!("ok")),
        None,
        &Value::Null,
        1,
    )
    .unwrap();
    let d = h.run_detail("r1").unwrap().unwrap();
    for stored in [
        d.steps[0].input.as_ref(),
        d.steps[0].output.as_ref(),
        d.items[0].input.as_ref(),
    ] {
        let stored = stored.unwrap();
        assert_eq!(stored["truncated"], json!(true));
        assert_eq!(stored["bytes"], json!(size));
        assert!(
            stored["preview"]
                .as_str()
                .unwrap()
                .starts_with("{\"users\":[{\"mail\"")
        );
    }
    let text = render_run_detail(&d);
    assert!(
        text.contains(&format!("({size} bytes, too big to keep whole)")),
        "{text}"
    );
}

#[test]
fn a_run_left_running_is_readable_and_recovered_as_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let h = History::open(&path).unwrap();
    h.start_run(&new_run("r1", "sync")).unwrap();
    h.start_step("r1", "diff", "compare", &json!({}), None)
        .unwrap();
    h.finish_step(
        "r1",
        "diff",
        "compare",
        "succeeded",
        None,
        None,
        &json!({}),
        3,
    )
    .unwrap();
    h.start_step("r1", "create", "procore-create-user", &json!({}), Some(3))
        .unwrap();
    h.record_item(
        "r1",
        "create",
        0,
        "succeeded",
        &json!(1),
        None,
        None,
        &Value::Null,
        4,
    )
    .unwrap();
    // The process "dies": nothing more is written.
    drop(h);

    let h = History::open(&path).unwrap();
    let d = h.run_detail("r1").unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Running);
    assert_eq!(d.steps[1].status, StepStatus::Running);
    let text = render_run_detail(&d);
    assert!(text.contains("still running"), "{text}");
    assert!(text.contains("items: 1 of 3 done so far"), "{text}");
    let last_sign_of_life = d.items[0].ended_at.clone().unwrap();

    // A run started after the recovering process did is left alone: r2,
    // recorded a second after the restart.
    let restart = chrono::Utc::now();
    h.start_run(&new_run("r2", "sync")).unwrap();
    let after_restart = restart + chrono::Duration::seconds(1);
    sql(&path)
        .execute(
            "UPDATE runs SET started_at = ?1 WHERE id = 'r2'",
            [after_restart.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)],
        )
        .unwrap();
    assert_eq!(h.recover_stale_runs(restart).unwrap(), 1);
    assert_eq!(h.recover_stale_runs(restart).unwrap(), 0);

    let d = h.run_detail("r1").unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Interrupted);
    assert_eq!(d.run.ended_at.as_deref(), Some(last_sign_of_life.as_str()));
    assert!(
        d.run
            .error
            .as_deref()
            .unwrap()
            .contains("ended before the run finished")
    );
    assert_eq!(d.steps[0].status, StepStatus::Succeeded);
    assert_eq!(d.steps[1].status, StepStatus::Interrupted);
    let text = render_run_detail(&d);
    assert!(
        text.contains("INTERRUPTED") && text.contains("ended before the run finished"),
        "{text}"
    );
    assert!(
        text.contains("items: 1 of 3 done, 0 failed; 2 not started"),
        "{text}"
    );
    assert_eq!(
        h.run_detail("r2").unwrap().unwrap().run.status,
        RunStatus::Running
    );
}

#[test]
fn a_run_whose_process_is_gone_reads_as_interrupted_without_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let h = History::open(&path).unwrap();
    h.start_run(&new_run("r1", "sync")).unwrap();
    h.start_step("r1", "diff", "compare", &json!({}), None)
        .unwrap();
    // Pretend this process restarted with the same pid (a container's pid 1).
    sql(&path)
        .execute("UPDATE runs SET process_token = 'earlier'", [])
        .unwrap();
    let runs = h.list_runs(None, 10).unwrap();
    assert_eq!(runs[0].status, RunStatus::Interrupted);
    assert!(
        runs[0]
            .error
            .as_deref()
            .unwrap()
            .contains("ended before the run finished")
    );
    assert_eq!(
        h.run_detail("r1").unwrap().unwrap().steps[0].status,
        StepStatus::Interrupted
    );
    let stored: String = sql(&path)
        .query_row("SELECT status FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, "running");
    // Explicit marking, as the scheduler does on shutdown.
    h.start_run(&new_run("r2", "sync")).unwrap();
    h.mark_interrupted("r2", "the host was stopped").unwrap();
    let r2 = h.run_detail("r2").unwrap().unwrap().run;
    assert_eq!(
        (r2.status, r2.error.as_deref()),
        (RunStatus::Interrupted, Some("the host was stopped"))
    );
}

#[test]
fn prune_removes_only_runs_that_ended_long_ago_with_their_children() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let h = History::open(&path).unwrap();
    for id in ["old", "new", "old-running", "old-dead", "old-start-new-end"] {
        let mut run = new_run(id, "sync");
        let out = format!("/data/runs/{id}");
        run.output_dir = &out;
        h.start_run(&run).unwrap();
        h.start_step(id, "s", "c", &json!({}), Some(1)).unwrap();
        h.record_item(
            id,
            "s",
            0,
            "succeeded",
            &json!(1),
            None,
            None,
            &Value::Null,
            1,
        )
        .unwrap();
        h.add_artifact(id, "report.html", "/tmp/r.html").unwrap();
    }
    for id in ["old", "new", "old-start-new-end"] {
        h.finish_run(id, "succeeded", None).unwrap();
    }
    let conn = sql(&path);
    // `old-dead`'s process is gone and its last sign of life is old too.
    conn.execute_batch(
        "UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z' WHERE id LIKE 'old%';
         UPDATE runs SET ended_at = '2020-01-01T00:01:00.000Z' WHERE id = 'old';
         UPDATE steps SET started_at = '2020-01-01T00:00:01.000Z' WHERE run_id LIKE 'old%';
         UPDATE items SET ended_at = '2020-01-01T00:00:02.000Z' WHERE run_id LIKE 'old%';
         UPDATE runs SET process_token = 'gone' WHERE id = 'old-dead';",
    )
    .unwrap();
    let mut pruned = h
        .prune_older_than(Duration::from_secs(30 * 86_400))
        .unwrap();
    pruned.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        pruned
            .iter()
            .map(|p| (p.id.as_str(), p.output_dir.as_deref()))
            .collect::<Vec<_>>(),
        vec![
            ("old", Some("/data/runs/old")),
            ("old-dead", Some("/data/runs/old-dead"))
        ]
    );
    let mut left: Vec<_> = h
        .list_runs(None, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    left.sort();
    // Started long ago but ended just now: not pruned. Still running: never.
    assert_eq!(left, vec!["new", "old-running", "old-start-new-end"]);
    for table in ["steps", "items", "artifacts"] {
        assert_eq!(count(&conn, table, "old"), 0, "{table}");
        assert_eq!(count(&conn, table, "old-dead"), 0, "{table}");
        assert_eq!(count(&conn, table, "new"), 1, "{table}");
    }
    assert!(h.prune_older_than(Duration::MAX).unwrap().is_empty());
    assert!(h.prune_older_than(Duration::ZERO).unwrap().len() >= 2);
    assert_eq!(
        h.list_runs(None, 10).unwrap()[0].status,
        RunStatus::Running,
        "a running run survives any age"
    );
}

#[test]
fn a_version_2_file_gains_item_request_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let conn = sql(&path);
    for (i, migration) in sluice_store::schema::MIGRATIONS[..2].iter().enumerate() {
        conn.execute_batch(migration).unwrap();
        conn.pragma_update(None, "user_version", i as i64 + 1)
            .unwrap();
    }
    conn.execute_batch(
        "INSERT INTO runs (id, flow, flow_file, trigger, dry_run, status, started_at, ended_at)
         VALUES ('v2', 'sync', 'f.toml', 'manual', 0, 'succeeded', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z');
         INSERT INTO steps (run_id, step_id, position, component, status, started_at, items_total)
         VALUES ('v2', 'each', 0, 'c', 'succeeded', '2026-01-01T00:00:00.000Z', 1);
         INSERT INTO items (run_id, step_id, idx, status, duration_ms) VALUES ('v2', 'each', 0, 'succeeded', 3);",
    )
    .unwrap();
    drop(conn);
    let h = History::open(&path).unwrap();
    assert_eq!(h.schema_version().unwrap(), 3);
    let d = h.run_detail("v2").unwrap().unwrap();
    assert_eq!(d.items[0].connections, None);
    h.record_item(
        "v2",
        "each",
        0,
        "succeeded",
        &json!(1),
        None,
        None,
        &json!({"api": {"requests": 4}}),
        3,
    )
    .unwrap();
    let d = h.run_detail("v2").unwrap().unwrap();
    assert_eq!(
        d.items[0].connections,
        Some(json!({"api": {"requests": 4}}))
    );
}

#[test]
fn a_run_whose_task_died_is_marked_failed_with_its_running_steps() {
    let h = History::open_in_memory().unwrap();
    h.start_run(&new_run("r1", "sync")).unwrap();
    h.start_step("r1", "s", "c", &json!({}), None).unwrap();
    h.mark_failed("r1", "the run stopped unexpectedly: boom")
        .unwrap();
    let d = h.run_detail("r1").unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Failed);
    assert!(d.run.ended_at.is_some());
    assert_eq!(
        d.run.error.as_deref(),
        Some("the run stopped unexpectedly: boom")
    );
    assert_eq!(d.steps[0].status, StepStatus::Failed);
    // The steps it never reached are recorded as skipped, after the others.
    let steps = [("s", "c"), ("t", "c2"), ("u", "c3")].map(|(a, b)| (a.to_string(), b.to_string()));
    h.skip_unrecorded_steps("r1", &steps, "the run was interrupted")
        .unwrap();
    let d = h.run_detail("r1").unwrap().unwrap();
    let shown: Vec<_> = d
        .steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.status, s.error.as_deref()))
        .collect();
    assert_eq!(
        shown,
        vec![
            ("s", StepStatus::Failed, None),
            ("t", StepStatus::Skipped, Some("the run was interrupted")),
            ("u", StepStatus::Skipped, Some("the run was interrupted")),
        ]
    );
    // A run that has ended is left alone.
    h.finish_run("r1", "succeeded", None).unwrap();
    h.mark_failed("r1", "late").unwrap();
    h.mark_interrupted("r1", "late").unwrap();
    assert_eq!(
        h.run_detail("r1").unwrap().unwrap().run.status,
        RunStatus::Succeeded
    );
}

#[test]
fn an_old_row_with_our_pid_and_no_token_is_not_taken_as_ours() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let h = History::open(&path).unwrap();
    h.start_run(&new_run("r1", "sync")).unwrap();
    // As a schema-1 row written by an earlier process that had our pid.
    sql(&path)
        .execute(
            "UPDATE runs SET process_token = NULL, started_at = '2026-01-01T00:00:00.000Z'",
            [],
        )
        .unwrap();
    // Unknown: shown as stored, and recovered by a host that starts now.
    assert_eq!(h.list_runs(None, 1).unwrap()[0].status, RunStatus::Running);
    assert_eq!(h.recover_stale_runs(SystemTime::now()).unwrap(), 1);
    let run = &h.list_runs(None, 1).unwrap()[0];
    assert_eq!(run.status, RunStatus::Interrupted);
    assert_eq!(run.ended_at.as_deref(), Some("2026-01-01T00:00:00.000Z"));
}

#[test]
fn listing_filters_by_flow_and_limits_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let h = History::open(&path).unwrap();
    // Started at these minutes past ten: newest first is not the order of
    // the ids, nor the order they were written in.
    for (id, minute) in [("a0", 3), ("a1", 1), ("a2", 4), ("a3", 0), ("a4", 2)] {
        h.start_run(&new_run(id, "alpha")).unwrap();
        sql(&path)
            .execute(
                "UPDATE runs SET started_at = ?1 WHERE id = ?2",
                [format!("2026-01-01T10:0{minute}:00.000Z"), id.to_string()],
            )
            .unwrap();
    }
    h.start_run(&new_run("b0", "beta")).unwrap();
    let alpha = h.list_runs(Some("alpha"), 3).unwrap();
    assert_eq!(
        alpha.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["a2", "a0", "a4"]
    );
    assert_eq!(h.list_runs(Some("beta"), 10).unwrap().len(), 1);
    assert_eq!(h.list_runs(Some("gamma"), 10).unwrap().len(), 0);
    assert_eq!(h.list_runs(None, 100).unwrap().len(), 6);
    assert_eq!(h.list_runs(None, 0).unwrap().len(), 0);
}

#[test]
fn unknown_words_and_runs_are_refused() {
    let h = History::open_in_memory().unwrap();
    let mut bad = new_run("r1", "sync");
    bad.trigger = "cron";
    let err = h.start_run(&bad).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown trigger `cron`; expected one of: manual, schedule, demo"),
        "{err}"
    );
    h.start_run(&new_run("r1", "sync")).unwrap();
    let err = h.finish_run("r1", "done", None).unwrap_err();
    assert!(
        err.to_string().contains("unknown run status `done`"),
        "{err}"
    );
    assert!(
        matches!(h.finish_run("zz", "failed", None), Err(HistoryError::UnknownRun(id)) if id == "zz")
    );
    assert!(matches!(
        h.start_step("zz", "s", "c", &json!({}), None),
        Err(HistoryError::UnknownRun(_))
    ));
}

#[test]
fn skipped_firings_are_recorded_as_ended() {
    let h = History::open_in_memory().unwrap();
    let mut run = new_run("s1", "sync");
    run.trigger = "schedule";
    h.record_skipped(&run, "the previous run is still going")
        .unwrap();
    let r = &h.list_runs(None, 1).unwrap()[0];
    assert_eq!(r.status, RunStatus::Skipped);
    assert_eq!(r.duration_ms, Some(0));
    assert_eq!(r.error.as_deref(), Some("the previous run is still going"));
}

#[test]
fn two_handles_on_one_file_write_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let a = Arc::new(History::open(&path).unwrap());
    let b = Arc::new(History::open(&path).unwrap());
    let threads: Vec<_> = [a.clone(), b.clone(), a.clone(), b]
        .into_iter()
        .enumerate()
        .map(|(t, h)| {
            std::thread::spawn(move || {
                let id = format!("t{t}");
                h.start_run(&new_run(&id, "sync")).unwrap();
                h.start_step(&id, "each", "c", &json!({}), Some(25))
                    .unwrap();
                for i in 0..25 {
                    h.record_item(
                        &id,
                        "each",
                        i,
                        "succeeded",
                        &json!(i),
                        None,
                        None,
                        &Value::Null,
                        1,
                    )
                    .unwrap();
                }
                h.finish_run(&id, "succeeded", None).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let runs = a.list_runs(None, 10).unwrap();
    assert_eq!(runs.len(), 4);
    for r in runs {
        assert_eq!(a.run_detail(&r.id).unwrap().unwrap().items.len(), 25);
    }
}

#[test]
fn the_data_dir_comes_from_the_environment_in_order() {
    let dir = |vars: &[(&str, &str)]| {
        sluice_store::data_dir_from(|name| {
            vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.into())
        })
    };
    let all = [
        ("SLUICE_DATA_DIR", "/srv/sluice"),
        ("XDG_DATA_HOME", "/home/ops/.data"),
        ("HOME", "/home/ops"),
    ];
    assert_eq!(dir(&all), Path::new("/srv/sluice"));
    assert_eq!(dir(&all[1..]), Path::new("/home/ops/.data/sluice"));
    assert_eq!(dir(&all[2..]), Path::new("/home/ops/.local/share/sluice"));
    assert_eq!(dir(&[]), Path::new(".sluice"));
    // An empty variable counts as unset.
    let empty = [("SLUICE_DATA_DIR", ""), ("XDG_DATA_HOME", ""), all[2]];
    assert_eq!(dir(&empty), Path::new("/home/ops/.local/share/sluice"));
}

#[test]
fn durations_parse_and_run_ids_start_with_the_time() {
    assert_eq!(
        sluice_store::parse_duration("30d").unwrap(),
        Duration::from_secs(30 * 86_400)
    );
    assert!(sluice_store::parse_duration("soon").is_err());
    let before = chrono::Utc::now().timestamp();
    let id = sluice_store::new_run_id();
    let after = chrono::Utc::now().timestamp();
    let (time, suffix) = id.split_once("Z-").unwrap();
    let started = chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%S")
        .unwrap()
        .and_utc()
        .timestamp();
    assert!((before..=after).contains(&started), "{id}");
    assert!(
        suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
}
