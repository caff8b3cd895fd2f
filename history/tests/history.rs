//! The run history: migrations, a run written and read back, partial runs,
//! pruning, rendering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use sluice_history::{History, NewRun, render};

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

#[test]
fn migrations_run_once_and_reopen_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_history::path_in(dir.path());
    let h = History::open(&path).unwrap();
    h.start_run(&new_run("r1", "f")).unwrap();
    drop(h);
    let h = History::open(&path).unwrap();
    assert_eq!(h.list_runs(None, 10).unwrap().len(), 1);
}

#[test]
fn a_run_with_steps_items_and_artifacts_reads_back() {
    let h = History::open_in_memory().unwrap();
    h.start_run(&new_run("r1", "sync")).unwrap();
    h.start_step("r1", "diff", "compare", &json!({"people": []}), None)
        .unwrap();
    h.finish_step(
        "r1",
        "diff",
        "compare",
        "succeeded",
        Some(&json!({"missing": [1]})),
        None,
        &json!({}),
        12,
    )
    .unwrap();
    h.start_step(
        "r1",
        "create",
        "procore-create-user",
        &json!({"items": 2}),
        Some(2),
    )
    .unwrap();
    h.record_item(
        "r1",
        "create",
        0,
        "succeeded",
        &json!({"user": 1}),
        Some(&json!({"status": "created"})),
        None,
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
        Some("HTTP 503"),
        7,
    )
    .unwrap();
    h.finish_step(
        "r1",
        "create",
        "procore-create-user",
        "succeeded",
        Some(&json!({"ok": 1, "failed": 1})),
        None,
        &json!({"procore": {"requests": 3, "retried": 1, "throttled": 0, "wait_ms": 0}}),
        20,
    )
    .unwrap();
    h.finish_step(
        "r1",
        "mail",
        "graph-send-mail",
        "skipped",
        None,
        None,
        &json!({}),
        0,
    )
    .unwrap();
    h.add_artifact("r1", "report.html", "/tmp/out/report.html")
        .unwrap();
    h.finish_run("r1", "succeeded", None).unwrap();
    let d = h.run_detail("r1").unwrap().unwrap();
    assert_eq!(d.run.status, "succeeded");
    assert_eq!(
        d.steps
            .iter()
            .map(|s| s.step_id.as_str())
            .collect::<Vec<_>>(),
        vec!["diff", "create", "mail"]
    );
    assert_eq!(d.items.len(), 2);
    assert_eq!(d.artifacts[0].1, "/tmp/out/report.html");
    let text = render::run_detail(&d);
    for needle in [
        "SUCCEEDED",
        "report.html",
        "/tmp/out/report.html",
        "items: 2 of 2 recorded, 1 failed",
        "#2 HTTP 503",
        "\"requests\":3",
        "skipped",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    // A prefix of the id finds the run.
    assert!(h.run_detail("r").unwrap().is_some());
}

#[test]
fn a_run_whose_process_died_reads_as_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_history::path_in(dir.path());
    let h = History::open(&path).unwrap();
    h.start_run(&new_run("r1", "sync")).unwrap();
    h.start_step("r1", "diff", "compare", &json!({}), None)
        .unwrap();
    // Pretend another, now gone, process wrote it.
    drop(h);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE runs SET pid = 999999999", []).unwrap();
    drop(conn);
    let h = History::open(&path).unwrap();
    let runs = h.list_runs(None, 10).unwrap();
    assert_eq!(runs[0].status, "interrupted");
    assert!(
        runs[0]
            .error
            .as_deref()
            .unwrap()
            .contains("ended before the run finished")
    );
    let d = h.run_detail("r1").unwrap().unwrap();
    assert_eq!(d.steps[0].status, "interrupted");
    // Explicit marking, as the scheduler does on shutdown.
    h.start_run(&new_run("r2", "sync")).unwrap();
    h.mark_interrupted("r2", "stopped").unwrap();
    assert_eq!(
        h.run_detail("r2").unwrap().unwrap().run.status,
        "interrupted"
    );
}

#[test]
fn prune_removes_only_old_runs_with_their_children() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_history::path_in(dir.path());
    let h = History::open(&path).unwrap();
    for id in ["old", "new"] {
        h.start_run(&new_run(id, "sync")).unwrap();
        h.start_step(id, "s", "c", &json!({}), None).unwrap();
        h.finish_run(id, "succeeded", None).unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z' WHERE id = 'old'",
        [],
    )
    .unwrap();
    assert_eq!(
        h.prune_older_than(Duration::from_secs(30 * 86400)).unwrap(),
        1
    );
    let runs = h.list_runs(None, 10).unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["new"]
    );
    let orphan_steps: i64 = conn
        .query_row("SELECT COUNT(*) FROM steps WHERE run_id = 'old'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(orphan_steps, 0);
}

#[test]
fn listing_filters_by_flow_and_limits() {
    let h = History::open_in_memory().unwrap();
    for i in 0..5 {
        h.start_run(&new_run(&format!("a{i}"), "alpha")).unwrap();
    }
    h.start_run(&new_run("b0", "beta")).unwrap();
    assert_eq!(h.list_runs(Some("alpha"), 3).unwrap().len(), 3);
    assert_eq!(h.list_runs(Some("beta"), 10).unwrap().len(), 1);
    let table = render::runs_table(&h.list_runs(None, 10).unwrap());
    assert!(table.contains("alpha") && table.contains("beta") && table.starts_with("RUN"));
}
