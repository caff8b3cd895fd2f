//! The step contract 0.2 through the real host: a component written
//! against the WIT by a tiny crate (tests/fixtures/contract-0-2, no SDK)
//! uses state across runs, sees the run context (dry run, item index and
//! key), and returns each error kind; the built-ins describe themselves; a
//! component built for 0.1 is refused with both versions named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use sluice::engine::EngineConfig;
use sluice::run::{Runner, Status};

const FLOW: &str = "contract";

/// A flow of one or more steps of the 0.2 fixture, given as `[[step]]` tables.
fn flow_with(steps: &str) -> String {
    let fixture = fixture("contract-0-2");
    format!(
        "name = \"{FLOW}\"\n{}",
        steps.replace("FIXTURE", &fixture.display().to_string())
    )
}

async fn run_text(
    runner: &Runner,
    dir: &std::path::Path,
    text: &str,
    dry_run: bool,
) -> (sluice::run::RunOutcome, Arc<Collector>) {
    let path = write_flow(dir, "flow.toml", text);
    run(runner, &load(&path, &[]), dir, dry_run).await
}

/// Every key of the flow's state, with its value.
async fn stored(runner: &Runner) -> Vec<(String, Value)> {
    runner.state.list(FLOW, "", None, 1000).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_lasts_across_runs_and_a_dry_run_sees_its_writes_and_keeps_none() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = flow_with(
        r#"
[[step]]
id = "count"
uses = "FIXTURE"
with = { increment = "runs", write = { note = "${run.id}" }, delete = ["gone"] }

[[step]]
id = "after"
uses = "FIXTURE"
with = { read = ["runs", "note", "gone"] }
"#,
    );
    runner
        .state
        .apply(
            FLOW,
            "setup",
            vec![sluice::state::Write::Set("gone".into(), json!(true))],
        )
        .await
        .unwrap();

    let (first, events) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(first.status, Status::Succeeded, "{}", events.text());
    assert_eq!(first.outputs["count"]["counter"], json!(1));
    let context = &first.outputs["count"]["context"];
    assert_eq!(context["dry_run"], json!(false));
    assert_eq!(
        (context["flow"].clone(), context["step"].clone()),
        (json!(FLOW), json!("count"))
    );
    assert_eq!(context["run_id"], json!(first.run_id));
    assert_eq!(context["attempt"], json!(1));
    assert_eq!(context["item_index"], Value::Null);
    assert_eq!(
        first.outputs["after"]["read"],
        json!({"runs": 1, "note": first.run_id, "gone": null}),
        "a later step reads what an earlier one kept"
    );
    let after_first = stored(&runner).await;
    assert_eq!(
        after_first,
        vec![
            ("note".into(), json!(first.run_id)),
            ("runs".into(), json!(1))
        ]
    );

    // A rehearsal reads the real state and sees its own writes, step to step…
    let (rehearsal, events) = run_text(&runner, dir.path(), &text, true).await;
    assert_eq!(rehearsal.status, Status::Succeeded, "{}", events.text());
    assert_eq!(
        rehearsal.outputs["count"]["context"]["dry_run"],
        json!(true)
    );
    assert_eq!(rehearsal.outputs["count"]["counter"], json!(2));
    assert_eq!(
        rehearsal.outputs["after"]["read"],
        json!({"runs": 2, "note": rehearsal.run_id, "gone": null})
    );
    // …and leaves the store exactly as it was.
    assert_eq!(stored(&runner).await, after_first);

    let (second, _) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(second.outputs["count"]["counter"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_keeps_none_of_its_writes_and_items_at_once_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    // Twenty items, eight at a time; every fifth fails after writing, one
    // traps after writing. Each writes `item/<key>` and `last`.
    let items: Vec<String> = (1..=20)
        .map(|i| match i {
            7 => format!(r#"{{ key = "k{i}", panic = true }}"#),
            i if i % 5 == 0 => format!(r#"{{ key = "k{i}", fail = {{ kind = "internal" }} }}"#),
            i => format!(r#"{{ key = "k{i}" }}"#),
        })
        .collect();
    let text = flow_with(&format!(
        r#"
[params]
items = [{}]

[[step]]
id = "each"
uses = "FIXTURE"
for_each = "${{params.items}}"
concurrency = 8
on_error = "continue"
with = {{ write_own = "${{item.key}}", write = {{ last = "${{item.key}}" }}, fail = "${{item.fail}}", panic = "${{item.panic}}" }}
"#,
        items.join(", ")
    ));
    let (outcome, events) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let each = &outcome.outputs["each"];
    assert_eq!(
        (each["ok"].clone(), each["failed"].clone()),
        (json!(15), json!(5))
    );
    for (index, entry) in each["items"].as_array().unwrap().iter().enumerate() {
        if entry["status"] == "ok" {
            let context = &entry["output"]["context"];
            assert_eq!(context["item_index"], json!(index));
            assert_eq!(context["item_key"], entry["item"]["key"]);
        }
    }
    let kept = stored(&runner).await;
    let keys: Vec<&str> = kept
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("item/"))
        .collect();
    let expected: Vec<String> = {
        let mut ok: Vec<String> = (1..=20)
            .filter(|i| i % 5 != 0 && *i != 7)
            .map(|i| format!("item/k{i}"))
            .collect();
        ok.sort();
        ok
    };
    assert_eq!(keys, expected, "every item that succeeded, and no other");
    // `last` was written by every item: the last to finish among those
    // that succeeded holds it.
    let last = kept.iter().find(|(k, _)| k == "last").unwrap().1.clone();
    let last = format!("item/{}", last.as_str().unwrap());
    assert!(expected.contains(&last), "{last}");

    // A step that fails keeps nothing either.
    let failing = flow_with(
        r#"
[[step]]
id = "fails"
uses = "FIXTURE"
with = { write = { never = 1 }, fail = { kind = "unavailable" } }
"#,
    );
    let (outcome, _) = run_text(&runner, dir.path(), &failing, false).await;
    assert_eq!(outcome.status, Status::Failed);
    assert!(stored(&runner).await.iter().all(|(k, _)| k != "never"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_kind_reaches_the_run_and_only_unavailable_and_rate_limited_are_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let kinds = [
        "bad-input",
        "not-found",
        "conflict",
        "forbidden",
        "unavailable",
        "rate-limited",
        "internal",
    ];
    let list: Vec<String> = kinds.iter().map(|k| format!("\"{k}\"")).collect();
    let text = flow_with(&format!(
        r#"
[params]
kinds = [{}]

[[step]]
id = "each"
uses = "FIXTURE"
for_each = "${{params.kinds}}"
on_error = "continue"
with = {{ fail = {{ kind = "${{item}}", code = "code-${{item}}", message = "failed as ${{item}}" }} }}
"#,
        list.join(", ")
    ));
    let (outcome, events) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let items = outcome.outputs["each"]["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), kinds.len());
    for (kind, entry) in kinds.iter().zip(&items) {
        let retryable = matches!(*kind, "unavailable" | "rate-limited");
        assert_eq!(entry["status"], "failed", "{kind}");
        let error = &entry["error"];
        assert_eq!(error["kind"], json!(kind));
        assert_eq!(error["code"], json!(format!("code-{kind}")));
        assert_eq!(error["retryable"], json!(retryable), "{kind}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&format!("reported {kind} [code-{kind}]: failed as {kind}")),
            "{error}"
        );
    }
    // Without `on_error = "continue"` the kind fails the run, named.
    let one = flow_with(
        r#"
[[step]]
id = "once"
uses = "FIXTURE"
with = { fail = { kind = "not-found", message = "no such group" } }
"#,
    );
    let (outcome, _) = run_text(&runner, dir.path(), &one, false).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("step `once`")
            && error.contains("reported not-found [not-found]: no such group"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_for_0_1_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = format!(
        "name = \"old\"\n[[step]]\nid = \"old\"\nuses = \"{}\"\n",
        fixture("contract-0-1").display()
    );
    let (outcome, events) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("step `old` cannot load component")
            && error.contains("built for the step contract sluice:flow@0.1.0")
            && error.contains("this host speaks sluice:flow@0.2.0"),
        "{error}"
    );
    assert!(
        !events.text().contains("step_started"),
        "nothing ran: {}",
        events.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_built_in_describes_itself_once_with_schemas_and_roles() {
    let runner = runner(EngineConfig::default());
    let roles = |name: &str| -> Vec<&str> {
        match name {
            "graph-groups" | "graph-group-members" | "graph-send-mail" => vec!["graph"],
            "procore-users"
            | "procore-create-user"
            | "procore-deactivate-user"
            | "procore-reactivate-user" => vec!["procore"],
            _ => vec![],
        }
    };
    for builtin in sluice_builtins::BUILTINS {
        let prepared = runner.engine.prepare(builtin.wasm).unwrap();
        let described = runner.engine.describe(&prepared).await.unwrap().unwrap();
        assert_eq!(described.name, builtin.name);
        assert_eq!(described.summary, builtin.description);
        for schema in [&described.input_schema, &described.output_schema] {
            assert_eq!(
                schema["$schema"],
                json!("https://json-schema.org/draft/2020-12/schema"),
                "{}",
                builtin.name
            );
        }
        assert_eq!(
            described.input_schema["type"],
            json!("object"),
            "{}",
            builtin.name
        );
        let declared: Vec<&str> = described
            .connections
            .iter()
            .map(|c| c.role.as_str())
            .collect();
        assert_eq!(declared, roles(builtin.name), "{}", builtin.name);
        assert!(described.connections.iter().all(|c| !c.summary.is_empty()));
        // Asked once: the same answer comes back without calling again.
        let again = runner.engine.describe(&prepared).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&described, &again));
    }
    // A component without `describe` says nothing, and runs all the same.
    let bytes = std::fs::read(fixture("contract-0-2")).unwrap();
    let prepared = runner.engine.prepare(&bytes).unwrap();
    assert!(runner.engine.describe(&prepared).await.unwrap().is_none());
}

/// `sluice run [--dry-run] FILE` in `data`, its store at `database`;
/// fails the test unless it exits with `code`.
fn sluice_run(
    data: &std::path::Path,
    database: &str,
    flow: &std::path::Path,
    dry: bool,
    code: i32,
) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env_clear()
        .env("SLUICE_DATA_DIR", data)
        .env("SLUICE_DATABASE_URL", database)
        .args(["run", "--quiet"]);
    if dry {
        cmd.arg("--dry-run");
    }
    let out = cmd.arg(flow).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every key of the flow's state in the store at `database`.
async fn stored_in(database: &str) -> Vec<(String, Value)> {
    let location: sluice_store::Location = database.parse().unwrap();
    let store = sluice_store::Store::open(&location).await.unwrap();
    let query = sluice_store::StateQuery {
        prefix: String::new(),
        start_after: None,
        limit: 1000,
    };
    let page = store.state_list(FLOW, &query).await.unwrap();
    page.entries.into_iter().map(|e| (e.key, e.value)).collect()
}

/// State kept by `sluice run` in the store: run 2 reads what run 1 wrote, a
/// dry run leaves no trace, a failed item's and a failed step's writes are
/// dropped, the items that succeeded all land.
async fn state_is_kept_in_the_store_between_runs_of_the_binary(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let count = write_flow(
        dir.path(),
        "count.toml",
        &flow_with(
            r#"
[[step]]
id = "count"
uses = "FIXTURE"
with = { increment = "runs" }
"#,
        ),
    );
    sluice_run(&data, database, &count, false, 0);
    assert_eq!(stored_in(database).await, vec![("runs".into(), json!(1))]);
    // Run 2 (another process) read run 1's value to write 2.
    sluice_run(&data, database, &count, false, 0);
    assert_eq!(stored_in(database).await, vec![("runs".into(), json!(2))]);
    sluice_run(&data, database, &count, true, 0);
    assert_eq!(
        stored_in(database).await,
        vec![("runs".into(), json!(2))],
        "a dry run leaves the store as it was"
    );

    let items = write_flow(
        dir.path(),
        "items.toml",
        &flow_with(
            r#"
[params]
items = [{ key = "a" }, { key = "b", fail = { kind = "internal" } }, { key = "c", panic = true }, { key = "d" }]

[[step]]
id = "each"
uses = "FIXTURE"
for_each = "${params.items}"
concurrency = 4
on_error = "continue"
with = { write_own = "${item.key}", fail = "${item.fail}", panic = "${item.panic}" }

[[step]]
id = "fails"
uses = "FIXTURE"
with = { write = { never = 1 }, fail = { kind = "conflict" } }
"#,
        ),
    );
    sluice_run(&data, database, &items, false, 1);
    assert_eq!(
        stored_in(database).await,
        vec![
            ("item/a".into(), json!("a")),
            ("item/d".into(), json!("d")),
            ("runs".into(), json!(2)),
        ],
        "only the items that succeeded kept their writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_kept_between_runs_of_the_binary_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("store.sqlite").display());
    state_is_kept_in_the_store_between_runs_of_the_binary(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_kept_between_runs_of_the_binary_on_postgres() {
    let database = sluice_store::testing::TempPostgres::shared()
        .new_database()
        .await;
    state_is_kept_in_the_store_between_runs_of_the_binary(&database).await;
}
