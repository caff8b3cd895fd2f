//! The run history end to end, each test once per backend (SQLite and
//! PostgreSQL) from one body: migrations, a run written and read back,
//! capped JSON, runs left behind by a dead process, pruning, listing,
//! rendering and concurrent writers. Upgrades from older files (and one
//! older PostgreSQL database) are at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use common::{Db, Kind};
use serde_json::{Value, json};
use sluice_store::{
    DetailOptions, HistoryWrite, ItemEnd, ItemStatus, Location, NewRun, RunRef, RunStatus,
    StateBatch, StateKey, StateWrite, StepEnd, StepStart, StepStatus, Store, StoreError, Trigger,
    render_run_detail, render_run_detail_with, render_runs_table,
};

fn new_run(id: &str, flow: &str) -> NewRun {
    NewRun {
        id: id.into(),
        flow: flow.into(),
        flow_file: "flows/x.toml".into(),
        trigger: Trigger::Manual,
        dry_run: false,
        output_dir: "/tmp/out".into(),
        replica: Some("replica-a".into()),
        started_at: Utc::now(),
    }
}

fn run(id: &str) -> RunRef {
    RunRef::unfenced(id, "sync")
}

async fn start(s: &Store, id: &str) {
    s.write_one(&run(id), HistoryWrite::StartRun(new_run(id, "sync")))
        .await
        .unwrap();
}

async fn start_step(s: &Store, id: &str, step: &str, input: Value, items: Option<usize>) {
    let w = HistoryWrite::StartStep(StepStart {
        step: step.into(),
        component: "c".into(),
        input,
        items_total: items,
        started_at: Utc::now(),
    });
    s.write_one(&run(id), w).await.unwrap();
}

fn end_step(step: &str, component: &str, status: StepStatus) -> StepEnd {
    StepEnd {
        step: step.into(),
        component: component.into(),
        status,
        output: None,
        error: None,
        connections: Value::Null,
        duration_ms: 0,
        attempts: None,
        ended_at: Utc::now(),
    }
}

fn item(step: &str, index: usize, status: ItemStatus, input: Value) -> ItemEnd {
    ItemEnd {
        step: step.into(),
        index,
        key: None,
        status,
        input: input.into(),
        output: None,
        error: None,
        connections: Value::Null,
        duration_ms: 1,
        attempts: None,
        ended_at: Utc::now(),
        spends_approval: None,
    }
}

async fn finish(s: &Store, id: &str, status: RunStatus) {
    let w = HistoryWrite::FinishRun {
        status,
        error: None,
        ended_at: Utc::now(),
    };
    s.write_one(&run(id), w).await.unwrap();
}

both!(
    an_items_record_commits_with_its_state_or_neither_does,
    migrations_run_from_empty_and_reopen_idempotently,
    a_database_from_a_newer_sluice_is_refused_clearly,
    a_run_with_steps_items_and_artifacts_reads_back,
    render_shows_the_key_facts,
    big_inputs_and_outputs_are_stored_as_valid_markers,
    a_run_left_running_is_readable_and_recovered_as_interrupted,
    a_run_whose_process_is_gone_reads_as_interrupted_without_a_write,
    a_run_of_another_host_is_left_to_its_lease,
    prune_removes_only_runs_that_ended_long_ago_with_their_children,
    a_run_whose_task_died_is_marked_failed_with_its_running_steps,
    an_old_row_with_our_pid_and_no_token_is_not_taken_as_ours,
    listing_filters_by_flow_and_limits_newest_first,
    unknown_runs_are_refused,
    skipped_firings_are_recorded_as_ended,
    two_handles_write_concurrently,
    times_are_the_events_not_the_write,
);

/// Writes that land together (one batch, long after the run) keep the
/// times they carry: when the run, its step and its item happened.
async fn times_are_the_events_not_the_write(db: Db) {
    let s = &db.store;
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.006Z")
        .unwrap()
        .with_timezone(&Utc);
    let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
    let mut started = new_run("r-times", "sync");
    started.started_at = at(0);
    let mut step_end = end_step("nap", "c", StepStatus::Succeeded);
    step_end.duration_ms = 12;
    step_end.ended_at = at(17);
    let mut each = item("nap", 0, ItemStatus::Succeeded, json!({}));
    each.ended_at = at(9);
    let writes = vec![
        HistoryWrite::StartRun(started),
        HistoryWrite::StartStep(StepStart {
            step: "nap".into(),
            component: "c".into(),
            input: json!({}),
            items_total: Some(1),
            started_at: at(4),
        }),
        HistoryWrite::Item(each),
        HistoryWrite::FinishStep(step_end),
        HistoryWrite::FinishRun {
            status: RunStatus::Succeeded,
            error: None,
            ended_at: at(20),
        },
    ];
    s.write(&run("r-times"), writes).await.unwrap();
    let d = s.run_detail("r-times").await.unwrap().unwrap();
    assert_eq!(d.run.started_at, "2026-01-02T03:04:05.006Z");
    assert_eq!(d.run.ended_at.as_deref(), Some("2026-01-02T03:04:05.026Z"));
    assert_eq!(d.run.duration_ms, Some(20));
    assert_eq!(d.steps[0].started_at, "2026-01-02T03:04:05.010Z");
    assert_eq!(
        d.steps[0].ended_at.as_deref(),
        Some("2026-01-02T03:04:05.023Z")
    );
    assert_eq!(
        d.items[0].ended_at.as_deref(),
        Some("2026-01-02T03:04:05.015Z")
    );
    // A skipped firing starts and ends when it was skipped.
    let mut skipped = new_run("r-skip", "sync");
    skipped.started_at = at(30);
    let w = HistoryWrite::Skipped {
        run: skipped,
        reason: "the previous run (r-times) was still going".into(),
    };
    s.write_one(&run("r-skip"), w).await.unwrap();
    let d = s.run_detail("r-skip").await.unwrap().unwrap();
    assert_eq!(d.run.started_at, "2026-01-02T03:04:05.036Z");
    assert_eq!(d.run.ended_at.as_deref(), Some("2026-01-02T03:04:05.036Z"));
}

async fn migrations_run_from_empty_and_reopen_idempotently(db: Db) {
    let version = db.store.schema_version().await.unwrap();
    let expected = match db.kind {
        Kind::Sqlite => sluice_store::sqlite::schema::SCHEMA_VERSION,
        Kind::Postgres => sluice_store::postgres::schema::SCHEMA_VERSION,
    };
    assert_eq!(version, expected);
    start(&db.store, "r1").await;
    for _ in 0..2 {
        let again = db.reopen().await;
        assert_eq!(again.schema_version().await.unwrap(), expected);
        assert_eq!(again.list_runs(None, 10).await.unwrap().len(), 1);
    }
    match db.kind {
        Kind::Sqlite => assert_eq!(db.text("PRAGMA journal_mode").await, "wal"),
        Kind::Postgres => assert_eq!(
            db.count("SELECT count(*) FROM sluice_schema").await,
            expected
        ),
    }
    let memory = Store::in_memory().await.unwrap();
    assert_eq!(
        memory.schema_version().await.unwrap(),
        sluice_store::sqlite::schema::SCHEMA_VERSION
    );
}

async fn a_database_from_a_newer_sluice_is_refused_clearly(db: Db) {
    match db.kind {
        Kind::Sqlite => db.sql("PRAGMA user_version = 99").await,
        Kind::Postgres => {
            db.sql("INSERT INTO sluice_schema (version, applied_by) VALUES (99, 'the future')")
                .await
        }
    }
    let err = Store::open(&db.location).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer Sluice"), "{err}");
}

async fn write_full_run(s: &Store) {
    let r = run("r1");
    let counts = |requests, retried, throttled, wait| json!({"procore": {"requests": requests, "retried": retried, "throttled": throttled, "wait_ms": wait}});
    let writes = vec![
        HistoryWrite::StartRun(new_run("r1", "sync")),
        HistoryWrite::StartStep(StepStart {
            step: "diff".into(),
            component: "compare".into(),
            input: json!({"people": []}),
            items_total: None,
            started_at: Utc::now(),
        }),
        HistoryWrite::FinishStep(StepEnd {
            output: Some(json!({"missing": [1, 2]})),
            connections: json!({}),
            duration_ms: 12,
            ..end_step("diff", "compare", StepStatus::Succeeded)
        }),
        HistoryWrite::StartStep(StepStart {
            step: "create".into(),
            component: "procore-create-user".into(),
            input: json!({"user": "${item}"}),
            items_total: Some(2),
            started_at: Utc::now(),
        }),
        HistoryWrite::Item(ItemEnd {
            output: Some(json!({"status": "created"}).into()),
            connections: counts(1, 0, 0, 0),
            duration_ms: 5,
            ..item("create", 0, ItemStatus::Succeeded, json!({"user": 1}))
        }),
        HistoryWrite::Item(ItemEnd {
            error: Some("HTTP 503 from procore".into()),
            connections: counts(2, 1, 1, 1500),
            duration_ms: 7,
            ..item("create", 1, ItemStatus::Failed, json!({"user": 2}))
        }),
        HistoryWrite::FinishStep(StepEnd {
            output: Some(json!({"ok": 1, "failed": 1})),
            error: Some("1 of 2 items failed".into()),
            connections: counts(3, 1, 0, 0),
            duration_ms: 20,
            ..end_step("create", "procore-create-user", StepStatus::Failed)
        }),
    ];
    s.write(&r, writes).await.unwrap();
    // A step that never started is recorded whole when it ends.
    let skipped = StepEnd {
        error: Some("an earlier step failed".into()),
        ..end_step("mail", "graph-send-mail", StepStatus::Skipped)
    };
    s.write_one(&r, HistoryWrite::FinishStep(skipped))
        .await
        .unwrap();
    let artifact = HistoryWrite::Artifact {
        name: "report.html".into(),
        path: "/tmp/out/report.html".into(),
    };
    s.write_one(&r, artifact).await.unwrap();
    let end = HistoryWrite::FinishRun {
        status: RunStatus::Failed,
        error: Some("step `create` failed: 1 of 2 items failed".into()),
        ended_at: Utc::now(),
    };
    s.write_one(&r, end).await.unwrap();
}

async fn a_run_with_steps_items_and_artifacts_reads_back(db: Db) {
    let h = &db.store;
    write_full_run(h).await;
    let d = h.run_detail("r1").await.unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Failed);
    assert_eq!(d.run.flow_file, "flows/x.toml");
    assert_eq!(d.run.replica.as_deref(), Some("replica-a"));
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
    assert_eq!(items[0].output, Some(json!({"status": "created"})));
    assert!(items[0].ended_at.is_some());
    assert_eq!(d.artifacts[0].path, "/tmp/out/report.html");
    // Times read back as fixed-width RFC 3339 text on both backends.
    assert_eq!(d.run.started_at.len(), "2026-11-24T05:42:00.123Z".len());
    assert!(d.run.started_at.ends_with('Z'));
    // A unique prefix of the id finds the run; a shared one is named as such.
    assert!(h.run_detail("r").await.unwrap().is_some());
    start(h, "r2").await;
    let err = h.run_detail("r").await.unwrap_err();
    assert!(err.to_string().contains("matches 2 runs"), "{err}");
    // `_` is no wildcard.
    assert!(h.run_detail("_").await.unwrap().is_none());
    assert!(h.run_detail("nope").await.unwrap().is_none());
    // The JSON form (`sluice runs show --json`) carries words, not numbers.
    let text = serde_json::to_value(&d).unwrap();
    assert_eq!(text["run"]["status"], json!("failed"));
    assert_eq!(text["steps"][0]["output"]["missing"], json!([1, 2]));
}

async fn render_shows_the_key_facts(db: Db) {
    let h = &db.store;
    write_full_run(h).await;
    let detail = h.run_detail("r1").await.unwrap().unwrap();
    let text = render_run_detail(&detail);
    for needle in [
        "Run r1  FAILED",
        "sync (flows/x.toml)",
        "trigger   manual",
        "replica   replica-a",
        "took ",
        "error     step `create` failed",
        "output    /tmp/out",
        "report.html  /tmp/out/report.html",
        "1. diff",
        "12 ms",
        "items: 2 of 2 done, 1 failed",
        "#2 failed after 7 ms: HTTP 503 from procore",
        "requests: procore: 2 requests (1 retried, 1 throttled, waited 1.5 s in all)",
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
    let all = render_run_detail_with(&detail, DetailOptions { all_items: true });
    assert!(
        all.contains("#1 succeeded after 5 ms\n           requests: procore: 1 request\n"),
        "{all}"
    );
    assert!(!all.contains("--items"), "{all}");
    // `--items` lists every item: it cut them at 20 ("… and 73907 more").
    let mut many = detail.clone();
    let first = many.items[0].clone();
    many.items = (0..25)
        .map(|index| sluice_store::ItemRecord {
            index,
            ..first.clone()
        })
        .collect();
    let every = render_run_detail_with(&many, DetailOptions { all_items: true });
    assert!(every.contains("#25 succeeded"), "{every}");
    assert!(!every.contains("more"), "{every}");
    let runs = h.list_runs(None, 10).await.unwrap();
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let table = render_runs_table(&runs, &h.item_counts(&ids).await.unwrap());
    assert!(table.starts_with("RUN"), "{table}");
    for needle in [
        "REPLICA",
        "r1",
        "sync",
        "manual",
        "replica-a",
        "failed",
        "step `create` failed",
        "ITEMS",
        "2 (1 failed)",
    ] {
        assert!(table.contains(needle), "{needle:?} missing:\n{table}");
    }
    assert_eq!(render_runs_table(&[], &[]), "No runs recorded yet.\n");
}

async fn big_inputs_and_outputs_are_stored_as_valid_markers(db: Db) {
    let h = &db.store;
    start(h, "r1").await;
    let users: Vec<Value> = (0..20_000)
        .map(|i| json!({"mail": format!("user{i}@example.com")}))
        .collect();
    let big = json!({ "users": users });
    let size = big.to_string().len() as u64;
    start_step(h, "r1", "users", big.clone(), None).await;
    let end = StepEnd {
        output: Some(big.clone()),
        ..end_step("users", "c", StepStatus::Succeeded)
    };
    h.write_one(&run("r1"), HistoryWrite::FinishStep(end))
        .await
        .unwrap();
    let it = ItemEnd {
        output: Some(json!("ok").into()),
        ..item("users", 0, ItemStatus::Succeeded, big)
    };
    h.write_one(&run("r1"), HistoryWrite::Item(it))
        .await
        .unwrap();
    let d = h.run_detail("r1").await.unwrap().unwrap();
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

/// Makes the run's rows look written by an earlier process on this host.
async fn written_by_a_dead_process(db: &Db, id: &str) {
    db.sql(&format!(
        "UPDATE runs SET process_token = 'earlier' WHERE id = '{id}'"
    ))
    .await;
}

async fn a_run_left_running_is_readable_and_recovered_as_interrupted(db: Db) {
    let h = &db.store;
    start(h, "r1").await;
    start_step(h, "r1", "diff", json!({}), None).await;
    let done = HistoryWrite::FinishStep(StepEnd {
        duration_ms: 3,
        ..end_step("diff", "compare", StepStatus::Succeeded)
    });
    h.write_one(&run("r1"), done).await.unwrap();
    start_step(h, "r1", "create", json!({}), Some(3)).await;
    let first = HistoryWrite::Item(item("create", 0, ItemStatus::Succeeded, json!(1)));
    h.write_one(&run("r1"), first).await.unwrap();
    let d = h.run_detail("r1").await.unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Running);
    assert_eq!(d.steps[1].status, StepStatus::Running);
    let text = render_run_detail(&d);
    assert!(text.contains("still running"), "{text}");
    assert!(text.contains("items: 1 of 3 done so far"), "{text}");
    let last_sign_of_life = d.items[0].ended_at.clone().unwrap();
    // The process "dies": nothing more is written, and its token is gone.
    written_by_a_dead_process(&db, "r1").await;

    // A run started after the recovering process did is left alone.
    let restart = Utc::now() + chrono::Duration::milliseconds(1);
    db.sql(&format!(
        "UPDATE runs SET started_at = '{}' WHERE id = 'r1'",
        sluice_store::timestamp(restart - chrono::Duration::seconds(5))
    ))
    .await;
    let h = db.reopen().await;
    h.write_one(
        &run("r2"),
        HistoryWrite::StartRun(NewRun {
            ..new_run("r2", "sync")
        }),
    )
    .await
    .unwrap();
    db.sql(&format!(
        "UPDATE runs SET started_at = '{}' WHERE id = 'r2'",
        sluice_store::timestamp(restart + chrono::Duration::seconds(1))
    ))
    .await;
    assert_eq!(h.recover_stale_runs(restart).await.unwrap(), 1);
    assert_eq!(h.recover_stale_runs(restart).await.unwrap(), 0);

    let d = h.run_detail("r1").await.unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Interrupted);
    assert_eq!(d.run.ended_at.as_deref(), Some(last_sign_of_life.as_str()));
    let error = d.run.error.as_deref().unwrap();
    assert!(error.contains("ended before the run finished"), "{error}");
    assert_eq!(d.steps[0].status, StepStatus::Succeeded);
    assert_eq!(d.steps[1].status, StepStatus::Interrupted);
    let text = render_run_detail(&d);
    assert!(text.contains("INTERRUPTED"), "{text}");
    assert!(
        text.contains(
            "items: 1 of 3 done, 0 failed; 2 not recorded (not started, or under way when the run's process stopped)"
        ),
        "{text}"
    );
    let r2 = h.run_detail("r2").await.unwrap().unwrap();
    assert_eq!(r2.run.status, RunStatus::Running);
}

async fn a_run_whose_process_is_gone_reads_as_interrupted_without_a_write(db: Db) {
    let h = &db.store;
    start(h, "r1").await;
    start_step(h, "r1", "diff", json!({}), None).await;
    // As if this process restarted with the same pid (a container's pid 1).
    written_by_a_dead_process(&db, "r1").await;
    let runs = h.list_runs(None, 10).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Interrupted);
    let error = runs[0].error.as_deref().unwrap();
    assert!(error.contains("ended before the run finished"), "{error}");
    let d = h.run_detail("r1").await.unwrap().unwrap();
    assert_eq!(d.steps[0].status, StepStatus::Interrupted);
    assert_eq!(db.text("SELECT status FROM runs").await, "running");
    // Explicit marking, as the scheduler does on shutdown.
    start(h, "r2").await;
    let stop = HistoryWrite::EndUnfinished {
        status: RunStatus::Interrupted,
        reason: "the host was stopped".into(),
        at: Utc::now(),
    };
    h.write_one(&run("r2"), stop).await.unwrap();
    let r2 = h.run_detail("r2").await.unwrap().unwrap().run;
    assert_eq!(
        (r2.status, r2.error.as_deref()),
        (RunStatus::Interrupted, Some("the host was stopped"))
    );
}

async fn a_run_of_another_host_is_left_to_its_lease(db: Db) {
    let h = &db.store;
    start(h, "r1").await;
    // Another host, and a pid that does not exist here: nothing can be
    // told from this host, so the run stays as stored.
    db.sql(
        "UPDATE runs SET host = 'another-host', pid = 999999999, process_token = 'x',
                started_at = '2020-01-01T00:00:00.000Z'",
    )
    .await;
    assert_eq!(
        h.list_runs(None, 1).await.unwrap()[0].status,
        RunStatus::Running
    );
    assert_eq!(h.recover_stale_runs(Utc::now()).await.unwrap(), 0);
    assert_eq!(db.text("SELECT status FROM runs").await, "running");
}

async fn prune_removes_only_runs_that_ended_long_ago_with_their_children(db: Db) {
    let h = &db.store;
    for id in ["old", "new", "old-running", "old-dead", "old-start-new-end"] {
        let new = NewRun {
            output_dir: format!("/data/runs/{id}"),
            ..new_run(id, "sync")
        };
        let writes = vec![
            HistoryWrite::StartRun(new),
            HistoryWrite::StartStep(StepStart {
                step: "s".into(),
                component: "c".into(),
                input: json!({}),
                items_total: Some(1),
                started_at: Utc::now(),
            }),
            HistoryWrite::Item(item("s", 0, ItemStatus::Succeeded, json!(1))),
            HistoryWrite::Artifact {
                name: "report.html".into(),
                path: "/tmp/r.html".into(),
            },
        ];
        h.write(&run(id), writes).await.unwrap();
    }
    for id in ["old", "new", "old-start-new-end"] {
        finish(h, id, RunStatus::Succeeded).await;
    }
    // `old-dead`'s process is gone and its last sign of life is old too.
    db.sql(
        "UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z' WHERE id LIKE 'old%';
         UPDATE runs SET ended_at = '2020-01-01T00:01:00.000Z' WHERE id = 'old';
         UPDATE steps SET started_at = '2020-01-01T00:00:01.000Z' WHERE run_id LIKE 'old%';
         UPDATE items SET ended_at = '2020-01-01T00:00:02.000Z' WHERE run_id LIKE 'old%';
         UPDATE runs SET process_token = 'gone' WHERE id = 'old-dead';",
    )
    .await;
    let mut pruned = h
        .prune_older_than(Duration::from_secs(30 * 86_400))
        .await
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
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    left.sort();
    // Started long ago but ended just now: not pruned. Still running: never.
    assert_eq!(left, vec!["new", "old-running", "old-start-new-end"]);
    // SQLite's write-ahead log, grown by the deletions, is cut back.
    if let Location::Sqlite(path) = &db.location {
        let log = std::path::PathBuf::from(format!("{}-wal", path.display()));
        assert_eq!(std::fs::metadata(&log).map_or(0, |m| m.len()), 0);
    }
    for table in ["steps", "items", "artifacts"] {
        for (id, n) in [("old", 0), ("old-dead", 0), ("new", 1)] {
            let q = format!("SELECT count(*) FROM {table} WHERE run_id = '{id}'");
            assert_eq!(db.count(&q).await, n, "{table} of {id}");
        }
    }
    assert!(h.prune_older_than(Duration::MAX).await.unwrap().is_empty());
    assert!(h.prune_older_than(Duration::ZERO).await.unwrap().len() >= 2);
    assert_eq!(
        h.list_runs(None, 10).await.unwrap()[0].status,
        RunStatus::Running,
        "a running run survives any age"
    );
}

async fn a_run_whose_task_died_is_marked_failed_with_its_running_steps(db: Db) {
    let h = &db.store;
    start(h, "r1").await;
    start_step(h, "r1", "s", json!({}), None).await;
    let died = HistoryWrite::EndUnfinished {
        status: RunStatus::Failed,
        reason: "the run stopped unexpectedly: boom".into(),
        at: Utc::now(),
    };
    h.write_one(&run("r1"), died).await.unwrap();
    let d = h.run_detail("r1").await.unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Failed);
    assert!(d.run.ended_at.is_some());
    assert_eq!(
        d.run.error.as_deref(),
        Some("the run stopped unexpectedly: boom")
    );
    assert_eq!(d.steps[0].status, StepStatus::Failed);
    // The steps it never reached are recorded as skipped, after the others.
    let steps = [("s", "c"), ("t", "c2"), ("u", "c3")].map(|(a, b)| (a.to_string(), b.to_string()));
    let skip = HistoryWrite::SkipUnrecorded {
        steps: steps.to_vec(),
        why: "the run was interrupted".into(),
        at: Utc::now(),
    };
    h.write_one(&run("r1"), skip).await.unwrap();
    let d = h.run_detail("r1").await.unwrap().unwrap();
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
    finish(h, "r1", RunStatus::Succeeded).await;
    for status in [RunStatus::Failed, RunStatus::Interrupted] {
        let late = HistoryWrite::EndUnfinished {
            status,
            reason: "late".into(),
            at: Utc::now(),
        };
        h.write_one(&run("r1"), late).await.unwrap();
    }
    let d = h.run_detail("r1").await.unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Succeeded);
}

async fn an_old_row_with_our_pid_and_no_token_is_not_taken_as_ours(db: Db) {
    let h = &db.store;
    start(h, "r1").await;
    // As a schema-1 row written by an earlier process that had our pid.
    db.sql(
        "UPDATE runs SET process_token = NULL, host = NULL, started_at = '2026-01-01T00:00:00.000Z'",
    )
    .await;
    // Unknown: shown as stored, and recovered by a host that starts now.
    let runs = h.list_runs(None, 1).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Running);
    assert_eq!(h.recover_stale_runs(Utc::now()).await.unwrap(), 1);
    let run = &h.list_runs(None, 1).await.unwrap()[0];
    assert_eq!(run.status, RunStatus::Interrupted);
    assert_eq!(run.ended_at.as_deref(), Some("2026-01-01T00:00:00.000Z"));
}

async fn listing_filters_by_flow_and_limits_newest_first(db: Db) {
    let h = &db.store;
    // Started at these minutes past ten: newest first is not the order of
    // the ids, nor the order they were written in.
    for (id, minute) in [("a0", 3), ("a1", 1), ("a2", 4), ("a3", 0), ("a4", 2)] {
        let w = HistoryWrite::StartRun(new_run(id, "alpha"));
        h.write_one(&RunRef::unfenced(id, "alpha"), w)
            .await
            .unwrap();
        db.sql(&format!(
            "UPDATE runs SET started_at = '2026-01-01T10:0{minute}:00.000Z' WHERE id = '{id}'"
        ))
        .await;
    }
    let w = HistoryWrite::StartRun(new_run("b0", "beta"));
    h.write_one(&RunRef::unfenced("b0", "beta"), w)
        .await
        .unwrap();
    let alpha = h.list_runs(Some("alpha"), 3).await.unwrap();
    assert_eq!(
        alpha.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["a2", "a0", "a4"]
    );
    assert_eq!(h.list_runs(Some("beta"), 10).await.unwrap().len(), 1);
    assert_eq!(h.list_runs(Some("gamma"), 10).await.unwrap().len(), 0);
    assert_eq!(h.list_runs(None, 100).await.unwrap().len(), 6);
    assert_eq!(h.list_runs(None, 0).await.unwrap().len(), 0);
}

async fn unknown_runs_are_refused(db: Db) {
    let h = &db.store;
    let end = HistoryWrite::FinishRun {
        status: RunStatus::Failed,
        error: None,
        ended_at: Utc::now(),
    };
    let err = h.write_one(&run("zz"), end).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::UnknownRun(id) if id == "zz"),
        "{err:?}"
    );
    let step = HistoryWrite::StartStep(StepStart {
        step: "s".into(),
        component: "c".into(),
        input: json!({}),
        items_total: None,
        started_at: Utc::now(),
    });
    let err = h.write_one(&run("zz"), step).await.unwrap_err();
    assert!(matches!(err, StoreError::UnknownRun(_)), "{err:?}");
    // A word no Sluice writes, put there by hand, is refused on the way out.
    start(h, "r1").await;
    db.sql("UPDATE runs SET status = 'done'").await;
    let err = h.list_runs(None, 1).await.unwrap_err();
    assert!(
        err.to_string().contains("unknown run status `done`"),
        "{err}"
    );
}

async fn skipped_firings_are_recorded_as_ended(db: Db) {
    let h = &db.store;
    let run_new = NewRun {
        trigger: Trigger::Schedule,
        ..new_run("s1", "sync")
    };
    let w = HistoryWrite::Skipped {
        run: run_new,
        reason: "the previous run is still going".into(),
    };
    h.write_one(&run("s1"), w).await.unwrap();
    let r = &h.list_runs(None, 1).await.unwrap()[0];
    assert_eq!(r.status, RunStatus::Skipped);
    assert_eq!(r.trigger, Trigger::Schedule);
    assert_eq!(r.duration_ms, Some(0));
    assert_eq!(r.error.as_deref(), Some("the previous run is still going"));
}

async fn two_handles_write_concurrently(db: Db) {
    let a = db.store.clone();
    let b = db.reopen().await;
    let tasks: Vec<_> = [a.clone(), b.clone(), a.clone(), b]
        .into_iter()
        .enumerate()
        .map(|(t, h)| {
            tokio::spawn(async move {
                let id = format!("t{t}");
                start(&h, &id).await;
                start_step(&h, &id, "each", json!({}), Some(25)).await;
                for i in 0..25 {
                    let w = HistoryWrite::Item(item("each", i, ItemStatus::Succeeded, json!(i)));
                    h.write_one(&run(&id), w).await.unwrap();
                }
                finish(&h, &id, RunStatus::Succeeded).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let runs = a.list_runs(None, 10).await.unwrap();
    assert_eq!(runs.len(), 4);
    for r in runs {
        let d = a.run_detail(&r.id).await.unwrap().unwrap();
        assert_eq!(d.items.len(), 25);
    }
}

// ---- Stores written by older Sluice versions --------------------------------

fn sql(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// A SQLite file at `path` as a build at schema `version` left it.
fn sqlite_at_version(path: &std::path::Path, version: usize) -> rusqlite::Connection {
    let conn = sql(path);
    for (i, migration) in sluice_store::sqlite::schema::MIGRATIONS[..version]
        .iter()
        .enumerate()
    {
        conn.execute_batch(migration).unwrap();
        conn.pragma_update(None, "user_version", i as i64 + 1)
            .unwrap();
    }
    conn
}

#[tokio::test]
async fn a_version_1_sqlite_file_is_migrated_with_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let conn = sql(&path);
    conn.execute_batch(sluice_store::sqlite::schema::MIGRATIONS[0])
        .unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    conn.execute(
        "INSERT INTO runs (id, flow, flow_file, trigger, dry_run, status, started_at, ended_at, pid)
         VALUES ('old', 'sync', 'f.toml', 'schedule', 0, 'succeeded', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:02.500Z', 1)",
        [],
    )
    .unwrap();
    drop(conn);
    let h = Store::open(&Location::Sqlite(path)).await.unwrap();
    assert_eq!(
        h.schema_version().await.unwrap(),
        sluice_store::sqlite::schema::SCHEMA_VERSION
    );
    let run = &h.list_runs(None, 10).await.unwrap()[0];
    assert_eq!(
        (run.id.as_str(), run.status, run.trigger),
        ("old", RunStatus::Succeeded, Trigger::Schedule)
    );
    assert_eq!(run.duration_ms, Some(2500));
    assert_eq!(run.replica, None);
}

#[tokio::test]
async fn a_version_8_sqlite_file_keeps_its_flow_state_in_a_rowid_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let conn = sqlite_at_version(&path, 8);
    conn.execute_batch(
        "INSERT INTO flow_state (flow, key, value, updated_at, run_id)
         VALUES ('sync', 'person:b', '{\"n\":2}', '2026-01-01T00:00:00.000Z', NULL),
                ('sync', 'person:a', '{\"n\":1}', '2026-01-01T00:00:00.000Z', 'r1');",
    )
    .unwrap();
    drop(conn);
    let h = Store::open(&Location::Sqlite(path.clone())).await.unwrap();
    let key = |k: &str| sluice_store::StateKey::try_from(k).unwrap();
    assert_eq!(
        h.state_get("sync", &key("person:a")).await.unwrap(),
        Some(json!({"n": 1}))
    );
    assert_eq!(
        h.state_get("sync", &key("person:b")).await.unwrap(),
        Some(json!({"n": 2}))
    );
    drop(h);
    let table: String = sql(&path)
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'flow_state'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!table.contains("WITHOUT ROWID"), "{table}");
    assert!(table.contains("UNIQUE (flow, key)"), "{table}");
}

/// A plan as a build before closings were kept left it: Ann's item closed
/// (by run r2), Bob's pending.
const PLAN_WITH_A_CLOSED_ITEM: &str = "
    INSERT INTO approval_plans (id, flow, step, status, reason, flow_file, created_at, created_by_run, updated_at, updated_by_run)
    VALUES ('ap-000001', 'sync', 'deactivate', 'open', 'always', 'f.toml', '2026-01-01T00:00:00.000Z', 'r1', '2026-01-01T00:00:00.000Z', 'r1');
    INSERT INTO approval_items (plan_id, key_norm, item_key, position, input, state, first_seen_run, last_seen_run, last_seen_at,
                                outcome, outcome_run, outcome_at, outcome_detail)
    VALUES ('ap-000001', 'ann@x.com', 'Ann@x.com', 0, '{}', 'closed', 'r1', 'r1', '2026-01-01T00:00:00.000Z',
            'closed', 'r2', '2026-01-02T00:00:00.000Z', 'no longer among the items: no longer needed'),
           ('ap-000001', 'bob@x.com', 'bob@x.com', 1, '{}', 'pending', 'r1', 'r2', '2026-01-02T00:00:00.000Z',
            NULL, NULL, NULL, NULL);";

/// Ann's closing from [`PLAN_WITH_A_CLOSED_ITEM`] is in her ledger once
/// the store is migrated; Bob has none.
async fn the_closing_of_an_older_schema_is_in_the_ledger(h: &Store) {
    let ann = h.ledger("ann@x.com", None).await.unwrap();
    assert_eq!(ann.len(), 1, "{ann:?}");
    assert_eq!(
        (ann[0].at.as_str(), ann[0].key.as_str()),
        ("2026-01-02T00:00:00.000Z", "Ann@x.com")
    );
    assert!(
        matches!(&ann[0].event, sluice_store::LedgerEvent::Closed { run_id, .. } if run_id == "r2"),
        "{ann:?}"
    );
    assert!(h.ledger("bob@x.com", None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_version_9_sqlite_file_keeps_its_closed_approval_items_in_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let conn = sqlite_at_version(&path, 9);
    conn.execute_batch(PLAN_WITH_A_CLOSED_ITEM).unwrap();
    drop(conn);
    let h = Store::open(&Location::Sqlite(path)).await.unwrap();
    the_closing_of_an_older_schema_is_in_the_ledger(&h).await;
}

/// The same on a PostgreSQL database a build at its schema 4 left.
#[tokio::test]
async fn a_version_4_postgres_database_keeps_its_closed_approval_items_in_the_ledger() {
    let url = sluice_store::testing::TempPostgres::shared()
        .new_database()
        .await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE sluice_schema (
                version    bigint PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now(),
                applied_by text NOT NULL
            )",
        )
        .await
        .unwrap();
    for (i, migration) in sluice_store::postgres::schema::MIGRATIONS[..4]
        .iter()
        .enumerate()
    {
        client.batch_execute(migration).await.unwrap();
        client
            .execute(
                "INSERT INTO sluice_schema (version, applied_by) VALUES ($1, 'old')",
                &[&(i as i64 + 1)],
            )
            .await
            .unwrap();
    }
    client.batch_execute(PLAN_WITH_A_CLOSED_ITEM).await.unwrap();
    let h = Store::open(&Location::Postgres(url)).await.unwrap();
    the_closing_of_an_older_schema_is_in_the_ledger(&h).await;
}

#[tokio::test]
async fn a_version_2_sqlite_file_gains_item_request_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = sluice_store::path_in(dir.path());
    let conn = sqlite_at_version(&path, 2);
    conn.execute_batch(
        "INSERT INTO runs (id, flow, flow_file, trigger, dry_run, status, started_at, ended_at)
         VALUES ('v2', 'sync', 'f.toml', 'manual', 0, 'succeeded', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z');
         INSERT INTO steps (run_id, step_id, position, component, status, started_at, items_total)
         VALUES ('v2', 'each', 0, 'c', 'succeeded', '2026-01-01T00:00:00.000Z', 1);
         INSERT INTO items (run_id, step_id, idx, status, duration_ms) VALUES ('v2', 'each', 0, 'succeeded', 3);",
    )
    .unwrap();
    drop(conn);
    let h = Store::open(&Location::Sqlite(path)).await.unwrap();
    let d = h.run_detail("v2").await.unwrap().unwrap();
    assert_eq!(d.items[0].connections, None);
    let w = HistoryWrite::Item(ItemEnd {
        connections: json!({"api": {"requests": 4}}),
        ..item("each", 0, ItemStatus::Succeeded, json!(1))
    });
    h.write_one(&RunRef::unfenced("v2", "sync"), w)
        .await
        .unwrap();
    let d = h.run_detail("v2").await.unwrap().unwrap();
    assert_eq!(
        d.items[0].connections,
        Some(json!({"api": {"requests": 4}}))
    );
}

#[test]
fn the_data_dir_comes_from_the_environment_in_order() {
    let looked_up = |vars: &[(&str, &str)], home: Option<&str>| {
        let home = home.map(std::path::PathBuf::from);
        sluice_store::data_dir_from(
            |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.into()),
            || home,
        )
    };
    let dir = |vars: &[(&str, &str)]| looked_up(vars, None).unwrap();
    let all = [
        ("SLUICE_DATA_DIR", "/srv/sluice"),
        ("XDG_DATA_HOME", "/home/ops/.data"),
        ("HOME", "/home/ops"),
    ];
    assert_eq!(dir(&all), Path::new("/srv/sluice"));
    assert_eq!(dir(&all[1..]), Path::new("/home/ops/.data/sluice"));
    assert_eq!(dir(&all[2..]), Path::new("/home/ops/.local/share/sluice"));
    // Without HOME, the user database's home; without either, none.
    assert_eq!(
        looked_up(&[], Some("/var/lib/svc")).unwrap(),
        Path::new("/var/lib/svc/.local/share/sluice")
    );
    assert_eq!(looked_up(&[("HOME", "")], None), None);
    assert_eq!(looked_up(&[], Some("")), None);
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
    let before = Utc::now().timestamp();
    let id = sluice_store::new_run_id();
    let after = Utc::now().timestamp();
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

/// A state batch carrying an item's record keeps both in one transaction:
/// both land, or (its run unknown, a value over the limit) neither does.
async fn an_items_record_commits_with_its_state_or_neither_does(db: Db) {
    let s = &db.store;
    start(s, "r-rec").await;
    let batch = |run: &str, k: &str, value: Value, index: usize| StateBatch {
        writes: vec![StateWrite::Set {
            key: StateKey::try_from(k).unwrap(),
            value,
        }],
        run_id: Some(run.into()),
        fence: None,
        history: vec![HistoryWrite::Item(item(
            "each",
            index,
            ItemStatus::Succeeded,
            json!({"n": index}),
        ))],
    };
    s.state_apply("sync", batch("r-rec", "a", json!(1), 0))
        .await
        .unwrap();
    let err = s
        .state_apply("sync", batch("r-none", "b", json!(2), 0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownRun(_)), "{err:?}");
    let big = Value::String("x".repeat(sluice_store::state::MAX_VALUE_BYTES));
    let err = s
        .state_apply("sync", batch("r-rec", "c", big, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::State(_)), "{err:?}");
    for (k, kept) in [("a", Some(json!(1))), ("b", None), ("c", None)] {
        let key = StateKey::try_from(k).unwrap();
        assert_eq!(s.state_get("sync", &key).await.unwrap(), kept, "{k}");
    }
    let d = s.run_detail("r-rec").await.unwrap().unwrap();
    let recorded: Vec<(u64, Option<Value>)> =
        d.items.iter().map(|i| (i.index, i.input.clone())).collect();
    assert_eq!(recorded, vec![(0, Some(json!({"n": 0})))]);
}
