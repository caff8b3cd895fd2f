//! The step contract 0.2 through the real host: a component written
//! against the WIT by a tiny crate (tests/fixtures/contract-0-2, no SDK)
//! uses state across runs, sees the run context (dry run, item index and
//! key), and returns each error kind; the built-ins describe themselves; a
//! component built for 0.1 is refused with both versions named. The 0.2
//! fixture is built against the archived 0.2.0 WIT: it runs on this 0.2.3
//! host unchanged. A list marked paged is read through the host in pages
//! (tests/fixtures/paged); output lists handed over in pages are in
//! tests/paged_output.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use sluice::engine::EngineConfig;
use sluice::run::{RunEvent, Runner, Status};

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
    run_keeping_items(runner, &load(&path, &[]), dir, dry_run).await
}

/// Every key of the flow's state, with its value.
async fn stored(runner: &Runner) -> Vec<(String, Value)> {
    let entries = runner.state.list(FLOW, "", None, 1000).await.unwrap();
    entries.into_iter().map(|(k, v)| (k, v.value())).collect()
}

/// One call writes far more than 10,000 keys (a first run adopting a large
/// tenant records everyone at once): all kept when it succeeds, none when
/// it fails after writing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_keeps_twelve_thousand_keys_or_none_when_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let writes: Vec<String> = (0..12_000)
        .map(|i| format!("\"managed/p{i:05}\" = {i}"))
        .collect();
    let flow = |extra: &str| {
        flow_with(&format!(
            "[[step]]\nid = \"adopt\"\nuses = \"FIXTURE\"\nwith = {{ write = {{ {} }}{extra} }}\n",
            writes.join(", ")
        ))
    };
    let failing = flow(r#", fail = { kind = "internal" }"#);
    let (failed, events) = run_text(&runner, dir.path(), &failing, false).await;
    assert_eq!(failed.status, Status::Failed, "{}", events.text());
    assert!(
        stored(&runner).await.is_empty(),
        "a failed call keeps nothing"
    );

    let (done, events) = run_text(&runner, dir.path(), &flow(""), false).await;
    assert_eq!(done.status, Status::Succeeded, "{}", events.text());
    let mut kept = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = runner
            .state
            .list(FLOW, "managed/", after.as_deref(), 1000)
            .await
            .unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        kept.extend(page);
    }
    assert_eq!(kept.len(), 12_000);
    assert_eq!(kept[11_999].0, "managed/p11999");
    assert_eq!(kept[11_999].1.value(), json!(11_999));
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
            vec![sluice::state::Write::Set(
                "gone".into(),
                sluice::state::Json::of(&json!(true)),
            )],
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

/// An item names itself to its component (`item-key`) by its text or its
/// `key` field. A blank name would name two items alike (and key their
/// state alike), so such an item is never called: it fails, named, and the
/// others run. The list comes from an earlier step, so `validate` cannot
/// see it (a param list is refused there: tests/flows/invalid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_with_a_blank_key_is_not_called_and_fails_named() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let steps = |on_error: &str| {
        flow_with(&format!(
            r#"
[[step]]
id = "seed"
uses = "FIXTURE"
with = {{ write = {{ people = ["ann", "", {{ key = "  " }}, {{ key = "bob" }}, {{ mail = "x" }}] }} }}

[[step]]
id = "read"
uses = "FIXTURE"
with = {{ read = ["people"] }}

[[step]]
id = "each"
uses = "FIXTURE"
for_each = "${{steps.read.read.people}}"
on_error = "{on_error}"
with = {{ write_own = "${{item}}" }}
"#
        ))
    };
    let (outcome, events) = run_text(&runner, dir.path(), &steps("continue"), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let items = outcome.outputs["each"]["items"].as_array().unwrap().clone();
    let keys: Vec<Value> = items
        .iter()
        .map(|e| e["output"]["context"]["item_key"].clone())
        .collect();
    assert_eq!(
        keys,
        [
            json!("ann"),
            json!(null),
            json!(null),
            json!("bob"),
            json!(null)
        ]
    );
    for (index, blank) in [(1, r#"the item is """#), (2, r#"its `key` field is "  ""#)] {
        let entry = &items[index];
        assert_eq!(entry["status"], "failed", "{entry}");
        assert_eq!(entry["error"]["kind"], "bad-input");
        assert_eq!(entry["error"]["code"], "blank-item-key");
        assert_eq!(entry["error"]["retryable"], false);
        let message = entry["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("it was not called: its key is blank ({blank})")),
            "{message}"
        );
    }
    assert_eq!(
        outcome.outputs["each"]["ok"].clone(),
        json!(3),
        "{}",
        events.text()
    );
    // Only the named items keyed state by their name.
    let own: Vec<String> = (stored(&runner).await.into_iter())
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("item/"))
        .collect();
    assert_eq!(own, ["item/ann", "item/bob"]);

    // Under `fail` the step stops there, naming the item.
    let (outcome, events) = run_text(&runner, dir.path(), &steps("fail"), false).await;
    assert_eq!(outcome.status, Status::Failed, "{}", events.text());
    let error = outcome.error.unwrap();
    assert!(
        error.contains(
            r#"item 2 of 5 failed: it was not called: its key is blank (the item is "")"#
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_reads_the_writes_of_every_item_whose_call_ended_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    // One at a time, each item adds one to `tally`: an item gives its place
    // back before its writes are committed, so the next one's read must
    // wait for them, or two items would count the same number.
    let text = flow_with(
        r#"
[params]
items = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25]

[[step]]
id = "each"
uses = "FIXTURE"
for_each = "${params.items}"
concurrency = 1
with = { increment = "tally" }

[[step]]
id = "after"
uses = "FIXTURE"
with = { read = ["tally"] }
"#,
    );
    let (outcome, events) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let counted: Vec<Value> = outcome.outputs["each"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["output"]["counter"].clone())
        .collect();
    let expected: Vec<Value> = (1..=25).map(|n| json!(n)).collect();
    assert_eq!(counted, expected);
    let kept = stored(&runner).await;
    let tally = kept.iter().find(|(k, _)| k == "tally").unwrap();
    assert_eq!(tally.1, json!(25));
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
            && error.contains("this host speaks sluice:flow@0.2.3"),
        "{error}"
    );
    assert!(
        !events.text().contains("step_started"),
        "nothing ran: {}",
        events.text()
    );
}

/// A component's error message of any length is cut, after redaction, to
/// the size the history keeps: the run's events and its error never carry
/// megabytes (a terminal, a `--json` reader and `serve`'s log see them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_message_is_cut_everywhere_it_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = format!(
        "name = \"loud\"\n[[step]]\nid = \"loud\"\nuses = \"{}\"\nwith = {{ action = \"unavailable\", code = \"loud\", message = \"{}\" }}\n",
        fixture("hostile").display(),
        "x".repeat(2 * 1024 * 1024)
    );
    let (outcome, events) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.len() < 17 * 1024
            && error.ends_with(&format!("… (cut; {} bytes in all)", 2 * 1024 * 1024))
            && error.contains("[loud]"),
        "{} bytes: {}",
        error.len(),
        &error[..200]
    );
    let finished = events
        .events()
        .into_iter()
        .find_map(|e| match e {
            sluice::run::RunEvent::StepFinished { error, .. } => error,
            _ => None,
        })
        .unwrap();
    assert!(
        finished.len() < 17 * 1024
            && finished.ends_with(&format!("(cut; {} bytes in all)", 2 * 1024 * 1024)),
        "{} bytes",
        finished.len()
    );
}

/// A component of another package whose `run` also takes one argument is
/// no step of any version: it is refused naming the step world's `run`,
/// not sent looking for a 0.1 build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_another_world_is_not_taken_for_a_0_1_step() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = format!(
        "name = \"foreign\"\n[[step]]\nid = \"foreign\"\nuses = \"{}\"\n",
        fixture("foreign-world").display()
    );
    let (outcome, _) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(!error.contains("0.1.0"), "{error}");
    assert!(
        error.contains("does not export the step world's `run` function (`run: func(input: json, context: run-context) -> result<json, step-error>`, sluice:flow@0.2.3)"),
        "{error}"
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
            | "procore-reactivate-user"
            | "procore-project-owed" => vec!["procore"],
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

/// `sluice run --quiet [--dry-run] FILE` in `data`, its store at
/// `database`; fails the test unless it exits with `code`.
fn sluice_run(
    data: &std::path::Path,
    database: &str,
    flow: &std::path::Path,
    dry: bool,
    code: i32,
) {
    let flow = flow.display().to_string();
    let mut args = vec!["run", "--quiet"];
    if dry {
        args.push("--dry-run");
    }
    args.push(&flow);
    sluice_out(data, database, &args, code);
}

/// `sluice ARGS…` in `data` with its store at `database`; its standard
/// output, failing the test unless it exits with `code`.
fn sluice_out(data: &std::path::Path, database: &str, args: &[&str], code: i32) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .env("SLUICE_DATA_DIR", data)
        .env("SLUICE_DATABASE_URL", database)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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

/// Two tests of `check(database)`: one on a fresh SQLite file, one on a
/// fresh PostgreSQL database.
macro_rules! on_sqlite_and_postgres {
    ($check:ident: $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            let database = format!("sqlite:{}", dir.path().join("store.sqlite").display());
            $check(&database).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let database = sluice_store::testing::TempPostgres::shared()
                .new_database()
                .await;
            $check(&database).await;
        }
    };
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

on_sqlite_and_postgres!(
    state_is_kept_in_the_store_between_runs_of_the_binary:
    state_is_kept_between_runs_of_the_binary_on_sqlite,
    state_is_kept_between_runs_of_the_binary_on_postgres
);

/// The attempts a step's `StepFinished` reports.
fn step_attempts(events: &Collector, step: &str) -> sluice_store::Attempts {
    events
        .events()
        .into_iter()
        .find_map(|e| match e {
            RunEvent::StepFinished {
                step: s, attempts, ..
            } if s == step => attempts,
            _ => None,
        })
        .unwrap_or_else(|| panic!("no attempts for step {step}: {}", events.text()))
}

/// Each item's attempts, by item index, from the `ItemFinished` events.
fn item_attempts(events: &Collector) -> Vec<(usize, sluice_store::Attempts)> {
    let mut found: Vec<_> = events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::ItemFinished {
                index, attempts, ..
            } => Some((index, attempts)),
            _ => None,
        })
        .collect();
    found.sort_by_key(|(i, _)| *i);
    found
}

/// `(attempt, kind, code)` of each failed attempt, and that its message
/// is the component's own, from that attempt.
fn failures(a: &sluice_store::Attempts) -> Vec<(u32, String, String)> {
    for f in &a.failed {
        assert!(
            f.message.ends_with(&format!("(attempt {})", f.attempt)),
            "{f:?}"
        );
    }
    a.failed
        .iter()
        .map(|f| (f.attempt, f.kind.clone(), f.code.clone()))
        .collect()
}

/// A step (as a rehearsal too) failing `unavailable` twice then
/// succeeding, under a retry of three attempts: the component sees
/// attempts 1, 2 and 3, the step succeeds, the failed attempts' writes are
/// dropped, and the step's event says how each earlier attempt failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_retry_calls_again_on_unavailable_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = flow_with(
        r#"
[[step]]
id = "flaky"
uses = "FIXTURE"
retry = { max_attempts = 3, base_delay = "1ms", max_delay = "4ms" }
with = { increment = "tries", fail = { kind = "unavailable", code = "busy", until_attempt = 3 } }
"#,
    );
    for dry_run in [true, false] {
        let (outcome, events) = run_text(&runner, dir.path(), &text, dry_run).await;
        assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
        let output = &outcome.outputs["flaky"];
        assert_eq!(output["context"]["attempt"], json!(3));
        assert_eq!(output["context"]["dry_run"], json!(dry_run));
        // Each attempt read 0: what attempts 1 and 2 wrote was dropped.
        assert_eq!(output["counter"], json!(1));
        let attempts = step_attempts(&events, "flaky");
        assert_eq!(attempts.made, 3);
        assert_eq!(
            failures(&attempts),
            vec![
                (1, "unavailable".into(), "busy".into()),
                (2, "unavailable".into(), "busy".into())
            ]
        );
    }
    assert_eq!(
        stored(&runner).await,
        vec![("tries".into(), json!(1))],
        "the rehearsal kept nothing; the run kept its last attempt's write"
    );
}

/// Under a retry of three attempts, only `unavailable` and `rate-limited`
/// items are called again (each a fresh instance, its attempt counted);
/// `bad-input`, `conflict`, `internal` and a trap are final at once, even
/// though a second attempt would succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unavailable_and_rate_limited_items_are_retried_and_traps_never() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = flow_with(
        r#"
[params]
items = [
  { key = "a", fail = { kind = "unavailable", until_attempt = 2 } },
  { key = "b", fail = { kind = "rate-limited", until_attempt = 3 } },
  { key = "c", fail = { kind = "bad-input", until_attempt = 2 } },
  { key = "d", fail = { kind = "conflict", until_attempt = 2 } },
  { key = "e", fail = { kind = "internal", until_attempt = 2 } },
  { key = "f", panic = true },
  { key = "g" },
]

[[step]]
id = "each"
uses = "FIXTURE"
for_each = "${params.items}"
concurrency = 3
on_error = "continue"
retry = { max_attempts = 3, base_delay = "1ms", max_delay = "2ms" }
with = { write_own = "${item.key}", fail = "${item.fail}", panic = "${item.panic}" }
"#,
    );
    let (outcome, events) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let items = outcome.outputs["each"]["items"].as_array().unwrap().clone();
    let status: Vec<&str> = items
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        status,
        ["ok", "ok", "failed", "failed", "failed", "failed", "ok"]
    );
    assert_eq!(items[0]["output"]["context"]["attempt"], json!(2));
    assert_eq!(items[1]["output"]["context"]["attempt"], json!(3));
    assert_eq!(items[6]["output"]["context"]["attempt"], json!(1));
    let made: Vec<u32> = item_attempts(&events).iter().map(|(_, a)| a.made).collect();
    assert_eq!(made, [2, 3, 1, 1, 1, 1, 1], "{}", events.text());
    let attempts = item_attempts(&events);
    assert_eq!(
        failures(&attempts[1].1),
        vec![
            (1, "rate-limited".into(), "rate-limited".into()),
            (2, "rate-limited".into(), "rate-limited".into())
        ]
    );
    for (index, kind) in [(2, "bad-input"), (3, "conflict"), (4, "internal")] {
        let error = &items[index]["error"];
        assert_eq!(error["kind"], json!(kind));
        let message = error["message"].as_str().unwrap();
        assert!(message.ends_with("(attempt 1)"), "{kind}: {message}");
    }
    assert!(
        items[5]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("trapped"),
        "{}",
        items[5]
    );
    let kept: Vec<String> = stored(&runner).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(kept, ["item/a", "item/b", "item/g"]);
}

/// When every attempt fails, the step fails naming how many were made,
/// and its event lists why each earlier one failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_fails_every_attempt_fails_naming_the_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = flow_with(
        r#"
[[step]]
id = "down"
uses = "FIXTURE"
retry = { max_attempts = 4, base_delay = "1ms", max_delay = "2ms" }
with = { write = { never = 1 }, fail = { kind = "unavailable", code = "down", message = "service down" } }
"#,
    );
    let (outcome, events) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(outcome.status, Status::Failed, "{}", events.text());
    let error = outcome.error.unwrap();
    assert!(
        error.contains("step `down`")
            && error.contains("reported unavailable [down]: service down (attempt 4)")
            && error.contains("gave up after 4 attempts"),
        "{error}"
    );
    let attempts = step_attempts(&events, "down");
    assert_eq!(attempts.made, 4);
    assert_eq!(
        failures(&attempts)
            .iter()
            .map(|(n, _, _)| *n)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(stored(&runner).await.is_empty());
}

/// A guard that lets the run go on `allowed` times; after that it stops
/// the run (`cancel`), or says the flow's lease was lost.
struct StopsAfter {
    allowed: std::sync::atomic::AtomicUsize,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl sluice::run::RunGuard for StopsAfter {
    fn may_go_on(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        use std::sync::atomic::Ordering::SeqCst;
        let go_on = self
            .allowed
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let result = match &self.cancel {
            _ if go_on => Ok(()),
            Some(cancel) => {
                cancel.store(true, SeqCst);
                Ok(())
            }
            None => Err("the flow's lease was lost".to_string()),
        };
        Box::pin(async move { result })
    }
}

/// A retry whose wait is cut short, by a lost lease (a step) or a stop (an
/// item), ends the step as interrupted after one attempt: not as a failure
/// that "gave up", and no further attempt is made. The guard is asked
/// before the step, before each item, and at the end of each wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_wait_cut_short_by_a_stop_or_a_lost_lease_is_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let once = r#"
[[step]]
id = "down"
uses = "FIXTURE"
retry = { max_attempts = 5, base_delay = "1ms" }
with = { fail = { kind = "unavailable", code = "down" } }
"#;
    let each = r#"
[params]
items = ["only"]

[[step]]
id = "down"
uses = "FIXTURE"
for_each = "${params.items}"
retry = { max_attempts = 5, base_delay = "1ms" }
with = { fail = { kind = "rate-limited", code = "slow" } }
"#;
    for (steps, allowed, stop, why) in [
        (once, 1, false, "the flow's lease was lost"),
        (
            each,
            2,
            true,
            "the run was stopped while it waited to try again",
        ),
    ] {
        let path = write_flow(dir.path(), "flow.toml", &flow_with(steps));
        let flow = load(&path, &[]);
        let events = Arc::new(Collector::default());
        let run_id = sluice::run::new_run_id();
        let mut options =
            sluice::run::RunOptions::new(run_id.clone(), dir.path().join(&run_id), false);
        options.guard = Some(Arc::new(StopsAfter {
            allowed: allowed.into(),
            cancel: stop.then(|| options.cancel.clone()),
        }));
        let outcome = runner.run(&flow, &options, events.clone()).await;
        assert_eq!(outcome.status, Status::Interrupted, "{}", events.text());
        let error = outcome.error.unwrap();
        assert!(!error.contains("gave up"), "{error}");
        let attempts = if stop {
            let finished = events.events().into_iter().find_map(|e| match e {
                RunEvent::ItemFinished { status, error, .. } => Some((status, error)),
                _ => None,
            });
            let (status, item_error) = finished.unwrap();
            assert_eq!(status, Status::Interrupted, "{}", events.text());
            assert!(item_error.unwrap().contains(why), "{}", events.text());
            item_attempts(&events)[0].1.clone()
        } else {
            assert!(error.contains(why), "{error}");
            step_attempts(&events, "down")
        };
        assert_eq!(attempts.made, 1, "{}", events.text());
    }
}

/// A retried step and a retried item, run by the binary: `--json` events,
/// the run history (`sluice runs show`, text and `--json`) say how many
/// attempts each took and why the earlier ones failed.
async fn retries_are_in_the_history(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flow = write_flow(
        dir.path(),
        "retry.toml",
        &flow_with(
            r#"
[params]
items = [{ key = "steady" }, { key = "flaky", fail = { kind = "rate-limited", code = "slow-down", until_attempt = 2 } }]

[[step]]
id = "flaky"
uses = "FIXTURE"
retry = { max_attempts = 3, base_delay = "1ms", max_delay = "2ms" }
with = { fail = { kind = "unavailable", code = "busy", message = "try later", until_attempt = 3 } }

[[step]]
id = "each"
uses = "FIXTURE"
for_each = "${params.items}"
retry = { max_attempts = 2, base_delay = "1ms" }
with = { fail = "${item.fail}" }
"#,
        ),
    );
    let flow = flow.display().to_string();
    let events = sluice_out(&data, database, &["run", "--json", &flow], 0);
    let events: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let finished = events
        .iter()
        .find(|e| e["event"] == "step_finished" && e["step"] == "flaky")
        .unwrap();
    assert_eq!(finished["attempts"]["made"], json!(3), "{finished}");
    assert_eq!(
        finished["attempts"]["failed"][1],
        json!({"attempt": 2, "kind": "unavailable", "code": "busy", "message": "try later (attempt 2)"})
    );
    let run_id = events.iter().find(|e| e["event"] == "run_started").unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();

    let shown = sluice_out(&data, database, &["runs", "show", &run_id, "--items"], 0);
    for line in [
        "attempts: 3",
        "1. unavailable [busy]: try later (attempt 1)",
        "2. unavailable [busy]: try later (attempt 2)",
        "attempts: 2",
        "1. rate-limited [slow-down]: asked to fail with rate-limited (attempt 1)",
    ] {
        assert!(shown.contains(line), "`{line}` not in:\n{shown}");
    }
    let detail: Value = serde_json::from_str(&sluice_out(
        &data,
        database,
        &["runs", "show", &run_id, "--json"],
        0,
    ))
    .unwrap();
    let step = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_id"] == "flaky")
        .unwrap();
    assert_eq!(step["attempts"]["made"], json!(3));
    assert_eq!(step["attempts"]["failed"].as_array().unwrap().len(), 2);
    let items = detail["items"].as_array().unwrap();
    assert_eq!(
        items[0]["attempts"],
        Value::Null,
        "one attempt is not listed"
    );
    assert_eq!(items[1]["attempts"]["made"], json!(2));
    assert_eq!(
        items[1]["attempts"]["failed"][0]["code"],
        json!("slow-down")
    );
}

on_sqlite_and_postgres!(
    retries_are_in_the_history:
    retries_are_in_the_history_on_sqlite,
    retries_are_in_the_history_on_postgres
);

/// A run whose replica lost the flow's lease cannot write the flow's
/// state: its batch carries the stale fencing number, the store refuses
/// it, the step and the run stop saying so (interrupted, as the new owner
/// records the run; not retried: the refusal is final) and the state is
/// left as the lease's new owner sees it.
async fn a_replica_that_lost_its_lease_cannot_write_state(database: &str) {
    use sluice_store::{Acquired, LeaseGrant, Store};
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let store = Store::open(&database.parse().unwrap()).await.unwrap();
    let path = write_flow(
        dir.path(),
        "count.toml",
        &flow_with(
            r#"
[[step]]
id = "count"
uses = "FIXTURE"
retry = { max_attempts = 3, base_delay = "1ms" }
with = { increment = "runs" }
"#,
        ),
    );
    let flow = load(&path, &[]);
    let lease = |replica: &str, run: &str| LeaseGrant {
        flow: FLOW.into(),
        replica: replica.into(),
        token: format!("{replica}-process"),
        host: None,
        pid: None,
        run_id: run.into(),
    };
    let ttl = std::time::Duration::from_secs(600);
    let granted = |a: Acquired| match a {
        Acquired::Granted { fence, .. } => fence,
        held => panic!("the lease was not granted: {held:?}"),
    };
    // Runs under `fence`, as the replica holding it would.
    let run_under = |fence: i64| {
        let (runner, store, flow, dir) = (&runner, store.clone(), &flow, dir.path());
        async move {
            let run_id = sluice::run::new_run_id();
            let mut options =
                sluice::run::RunOptions::new(run_id.clone(), dir.join("runs").join(&run_id), false);
            options.state = Some(Arc::new(sluice::state::DurableStore::new(
                store,
                Some(fence),
            )));
            let events = Arc::new(Collector::default());
            let outcome = runner.run(flow, &options, events.clone()).await;
            (outcome, events)
        }
    };

    let old = granted(store.acquire_lease(&lease("one", "r1"), ttl).await.unwrap());
    let (first, events) = run_under(old).await;
    assert_eq!(first.status, Status::Succeeded, "{}", events.text());
    assert_eq!(stored_in(database).await, vec![("runs".into(), json!(1))]);

    // The lease changes hands: replica two holds it under a new number.
    store.release_lease(FLOW, old).await.unwrap();
    let new = granted(store.acquire_lease(&lease("two", "r2"), ttl).await.unwrap());
    assert!(new > old);

    let (stale, events) = run_under(old).await;
    assert_eq!(stale.status, Status::Interrupted, "{}", events.text());
    let error = stale.error.unwrap();
    assert!(
        error.contains("its state was not saved")
            && error.contains(&sluice_store::lease::lost(old)),
        "{error}"
    );
    assert_eq!(
        step_attempts(&events, "count").made,
        1,
        "a refusal is final"
    );
    assert_eq!(
        stored_in(database).await,
        vec![("runs".into(), json!(1))],
        "the stale replica wrote nothing"
    );

    let (owner, events) = run_under(new).await;
    assert_eq!(owner.status, Status::Succeeded, "{}", events.text());
    assert_eq!(stored_in(database).await, vec![("runs".into(), json!(2))]);
}

on_sqlite_and_postgres!(
    a_replica_that_lost_its_lease_cannot_write_state:
    a_replica_that_lost_its_lease_cannot_write_state_on_sqlite,
    a_replica_that_lost_its_lease_cannot_write_state_on_postgres
);

/// The contract 0.2 fixture is built against `wit/archive/0.2.0`: every
/// `sluice:flow` interface it imports is a 0.2.0 one, and this host
/// (0.2.3) links and runs it (the other tests here run it throughout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_for_0_2_0_links_to_the_0_2_3_host() {
    let bytes = std::fs::read(fixture("contract-0-2")).unwrap();
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, &bytes).unwrap();
    let ours: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| name.starts_with("sluice:flow/"))
        .collect();
    assert!(
        ours.contains(&"sluice:flow/state@0.2.0".to_string()),
        "{ours:?}"
    );
    assert!(ours.iter().all(|n| n.ends_with("@0.2.0")), "{ours:?}");
    assert_eq!(sluice::engine::contract::SPOKEN, "0.2.3");

    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text =
        flow_with("[[step]]\nid = \"old\"\nuses = \"FIXTURE\"\nwith = { increment = \"n\" }\n");
    let (outcome, events) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.outputs["old"]["counter"], json!(1));
}

/// A flow of the paged fixture: `make` outputs people, `read` reads them.
fn paged_flow(make: &str, read: &str) -> String {
    let fixture = fixture("paged").display().to_string();
    format!(
        "name = \"paged\"\n[[step]]\nid = \"make\"\nuses = \"{fixture}\"\nwith = {{ {make} }}\n\n\
         [[step]]\nid = \"read\"\nuses = \"{fixture}\"\nwith = {{ {read} }}\n"
    )
}

async fn run_described(
    runner: &Runner,
    dir: &std::path::Path,
    text: &str,
) -> (sluice::run::RunOutcome, Arc<Collector>) {
    let path = write_flow(dir, "flow.toml", text);
    run(runner, &load_described(&path, &[], runner), dir, false).await
}

/// The input text the `read` step's component was given.
fn read_input(events: &Collector) -> String {
    events
        .events()
        .iter()
        .find_map(|e| match e {
            RunEvent::StepStarted { step, input, .. } if step == "read" => {
                Some(input.redacted().to_string())
            }
            _ => None,
        })
        .expect("the read step started")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_marked_paged_is_left_out_of_the_input_and_read_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = paged_flow(
        "make = 2500",
        r#"people = "${steps.make.people}", page_size = 1000"#,
    );
    let (outcome, events) = run_described(&runner, dir.path(), &text).await;
    assert_eq!(
        outcome.status,
        Status::Succeeded,
        "{}",
        outcome.error.unwrap_or_default()
    );
    let read = &outcome.outputs["read"];
    assert_eq!(read["length"], json!(2500));
    assert_eq!(read["count"], json!(2500));
    assert_eq!(read["by_item"], json!(2500));
    assert_eq!(read["pages"], json!(3));
    assert_eq!(read["sum"], json!(2500 * 2499 / 2));
    assert_eq!(
        (&read["first"], &read["last"]),
        (&json!("p0"), &json!("p2499"))
    );
    // The input names the list; none of its items is in the text.
    let input = read_input(&events);
    assert!(
        input.contains(r#""people":{"x-sluice-paged":"people","length":2500}"#),
        "{}",
        &input[..input.len().min(300)]
    );
    assert!(input.len() < 200, "{}", &input[..300]);

    // A list written in the flow is paged the same way.
    let text = paged_flow(
        "make = 0",
        r#"people = [{ key = "a", n = 1 }, { key = "b", n = 2 }], page_size = 1"#,
    );
    let (outcome, events) = run_described(&runner, dir.path(), &text).await;
    assert_eq!(
        outcome.status,
        Status::Succeeded,
        "{}",
        outcome.error.unwrap_or_default()
    );
    assert_eq!(outcome.outputs["read"]["pages"], json!(2));
    assert_eq!(outcome.outputs["read"]["sum"], json!(3));
    assert!(!read_input(&events).contains(r#""key":"a""#));
}

/// A reference to a list that is not there (a skipped step's, a field the
/// output lacks) reads as null; a paged list given null is served as no
/// items, as `for_each` takes null, instead of failing the input check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_list_given_null_is_served_as_no_items() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = paged_flow(
        "make = 3",
        r#"people = "${steps.make.nobody}", page_size = 1000"#,
    );
    let (outcome, events) = run_described(&runner, dir.path(), &text).await;
    assert_eq!(
        outcome.status,
        Status::Succeeded,
        "{}",
        outcome.error.unwrap_or_default()
    );
    let read = &outcome.outputs["read"];
    assert_eq!((&read["length"], &read["count"]), (&json!(0), &json!(0)));
    let input = read_input(&events);
    assert!(
        input.contains(r#""people":{"x-sluice-paged":"people","length":0}"#),
        "{input}"
    );
}

/// The shipped compare reads 100k people and 90k Procore users in pages.
/// Each list was checked item by item against its producer's output
/// schema, which says of an item what compare's input schema says, so
/// the host does not check them again as it serves them (an eighth of
/// the compare step's time at 100k). Should a component's schema change
/// so they differ, this fails, and the lists are checked twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_compare_reads_lists_checked_the_way_it_would_check_them() {
    let runner = runner(EngineConfig::default());
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../flows/procore-license-sync.toml");
    let env = [
        "GRAPH_TENANT_ID",
        "GRAPH_CLIENT_ID",
        "GRAPH_CLIENT_SECRET",
        "PROCORE_CLIENT_ID",
        "PROCORE_CLIENT_SECRET",
        "PROCORE_COMPANY_ID",
    ]
    // A company id is a number (the steps that take it say so).
    .map(|name| match name {
        "PROCORE_COMPANY_ID" => (name, "4242"),
        _ => (name, "a-long-enough-value"),
    });
    let flow = load_described(&shipped, &env, &runner);
    let step = |id: &str| flow.steps.iter().find(|s| s.id == id).unwrap();
    let compare = step("diff").input_schema.clone().unwrap();
    for (producer, list, input) in [
        ("members", "people", "people"),
        ("procore", "users", "procore_users"),
    ] {
        let described = step(producer).description.clone().unwrap();
        let output = sluice::flow::schema::InputSchema::for_output(
            &described.name,
            &described.output_schema,
        )
        .unwrap();
        let checked = output.items_of_a_fitting_list(list).unwrap();
        let wanted = compare.paged_items(input).unwrap();
        assert!(
            checked.says_the_same(wanted),
            "`{producer}.{list}` is checked against a schema other than compare's `{input}`"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_item_that_does_not_fit_fails_the_step_when_it_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = paged_flow(
        "make = 2500, bad_at = 1500",
        r#"people = "${steps.make.people}", page_size = 1000"#,
    );
    let (outcome, _) = run_described(&runner, dir.path(), &text).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("step `read`") && error.contains("with.people.1500"),
        "{error}"
    );
    assert!(
        error.contains("bad-input") || error.contains("bad input"),
        "{error}"
    );
}

/// Every item's input is checked against the component's schema before the
/// first item runs (and not again as each runs): an item that does not fit
/// fails the step with no item started, however late in the list it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_input_that_does_not_fit_fails_the_step_before_any_item_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let fixture = fixture("paged").display().to_string();
    let text = format!(
        "name = \"paged\"\n[params]\nsizes = [1, 2, \"three\"]\n\n\
         [[step]]\nid = \"each\"\nuses = \"{fixture}\"\nfor_each = \"${{params.sizes}}\"\n\
         concurrency = 1\nwith = {{ make = \"${{item}}\" }}\n"
    );
    let (outcome, events) = run_described(&runner, dir.path(), &text).await;
    assert_eq!(outcome.status, Status::Failed, "{}", events.text());
    let error = outcome.error.unwrap();
    assert!(
        error.contains("step `each`") && error.contains("does not fit") && error.contains("make"),
        "{error}"
    );
    let started = events
        .events()
        .iter()
        .filter(|e| matches!(e, RunEvent::ItemFinished { .. }))
        .count();
    assert_eq!(started, 0, "no item ran: {}", events.text());
}

/// A state store whose writes another replica's newer lease fences off.
struct Fenced;

#[async_trait::async_trait]
impl sluice::state::StateStore for Fenced {
    async fn get(
        &self,
        _flow: &str,
        _key: &str,
    ) -> Result<Option<sluice::state::Json>, sluice::state::StoreError> {
        Ok(None)
    }

    async fn list(
        &self,
        _flow: &str,
        _prefix: &str,
        _start_after: Option<&str>,
        _limit: usize,
    ) -> Result<Vec<(String, sluice::state::Json)>, sluice::state::StoreError> {
        Ok(Vec::new())
    }

    async fn apply(
        &self,
        _flow: &str,
        _run: &str,
        _writes: Vec<sluice::state::Write>,
    ) -> Result<(), sluice::state::StoreError> {
        Err(sluice::state::StoreError {
            message: "the flow's lease held under fence 3 was taken over".into(),
            fenced: true,
        })
    }
}

/// A run whose state writes are fenced off (its replica was paused past
/// its lease and another took the flow over) is interrupted, as the
/// history the other replica wrote says, not failed; so is a call whose
/// component committed itself and failed on the refusal, and so are a
/// `for_each` step's items, whatever its `on_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_state_writes_stop_the_run_rather_than_fail_it() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default()).with_state(Arc::new(Fenced));
    let single = flow_with(
        r#"
[[step]]
id = "write"
uses = "FIXTURE"
with = { write = { note = "x" } }

[[step]]
id = "after"
uses = "FIXTURE"
with = {}
"#,
    );
    let (outcome, events) = run_text(&runner, dir.path(), &single, false).await;
    assert_eq!(outcome.status, Status::Interrupted, "{}", events.text());
    let error = outcome.error.unwrap_or_default();
    assert!(error.contains("lease"), "{error}");
    // The same when the component commits itself mid-call (as a step that
    // changes another system does before its request) and fails on the
    // refusal (`hostile`'s `commit`).
    let committing = format!(
        "name = \"{FLOW}\"\n[connections.idle]\nbase_url = \"https://idle.invalid\"\n\n[[step]]\nid = \"commit\"\nuses = \"{}\"\nconnections = {{ api = \"idle\" }}\nwith = {{ action = \"commit\" }}\n",
        fixture("hostile").display()
    );
    let (outcome, events) = run_text(&runner, dir.path(), &committing, false).await;
    assert_eq!(outcome.status, Status::Interrupted, "{}", events.text());
    let items = flow_with(
        r#"
[params]
people = ["a", "b", "c", "d", "e", "f"]

[[step]]
id = "each"
uses = "FIXTURE"
for_each = "${params.people}"
concurrency = 1
on_error = "continue"
with = { write = { seen = "${item}" } }

[[step]]
id = "after"
uses = "FIXTURE"
with = {}
"#,
    );
    let (outcome, events) = run_text(&runner, dir.path(), &items, false).await;
    assert_eq!(outcome.status, Status::Interrupted, "{}", events.text());
    // Items whose writes were refused were stopped, not failed.
    for event in events.events() {
        if let RunEvent::ItemFinished { status, index, .. } = event {
            assert_eq!(
                status,
                Status::Interrupted,
                "item {index}: {}",
                events.text()
            );
        }
    }
}

/// A run that goes on past a failed step (`on_error = "continue"`) ends
/// `succeeded`, and says which step failed: a green run must not hide it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_went_on_past_a_failed_step_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = flow_with(
        r#"
[[step]]
id = "bad"
uses = "FIXTURE"
on_error = "continue"
with = { fail = { kind = "internal" } }

[[step]]
id = "good"
uses = "FIXTURE"
with = {}
"#,
    );
    let (outcome, events) = run_text(&runner, dir.path(), &text, false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.setbacks.failed_steps, ["bad"]);
    assert_eq!(outcome.setbacks.failed_items, 0);
    let said = outcome.setbacks.said().unwrap();
    assert_eq!(said, "step `bad` failed");
}

/// A state store that keeps its first `room` commits, then refuses every
/// later one as a full disk does.
struct FillsUp {
    kept: sluice::state::MemoryStore,
    room: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl sluice::state::StateStore for FillsUp {
    async fn get(
        &self,
        flow: &str,
        key: &str,
    ) -> Result<Option<sluice::state::Json>, sluice::state::StoreError> {
        self.kept.get(flow, key).await
    }

    async fn list(
        &self,
        flow: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, sluice::state::Json)>, sluice::state::StoreError> {
        self.kept.list(flow, prefix, start_after, limit).await
    }

    async fn apply(
        &self,
        flow: &str,
        run: &str,
        writes: Vec<sluice::state::Write>,
    ) -> Result<(), sluice::state::StoreError> {
        use std::sync::atomic::Ordering;
        let room = self.room.load(Ordering::SeqCst);
        if room == 0 {
            return Err(sluice::state::StoreError::new("database or disk is full"));
        }
        self.room.store(room - 1, Ordering::SeqCst);
        self.kept.apply(flow, run, writes).await
    }
}

/// Once an item's state cannot be saved (a full disk), no later item
/// starts: each would act on the services just the same and go
/// unrecorded too. The item says it ran, and the step fails saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_item_starts_after_one_whose_state_could_not_be_saved() {
    let dir = tempfile::tempdir().unwrap();
    // The next item starts while the one before is committed, so a few
    // may start before the first refusal is known; never all of them.
    let items: Vec<String> = (1..=200).map(|i| format!("k{i}")).collect();
    let runner = runner(EngineConfig::default());
    let path = write_flow(
        dir.path(),
        "flow.toml",
        &flow_with(
            r#"
[params]
items = ITEMS

[[step]]
id = "each"
uses = "FIXTURE"
for_each = "${params.items}"
for_each_key = "${item}"
concurrency = 1
on_error = "continue"
with = { write_own = "${item}" }

[[step]]
id = "after"
uses = "FIXTURE"
with = { increment = "runs" }
"#,
        )
        .replace("ITEMS", &format!("{items:?}")),
    );
    let flow = load(&path, &[]);
    let run_id = sluice::run::new_run_id();
    let mut options =
        sluice::run::RunOptions::new(run_id.clone(), dir.path().join("runs").join(&run_id), false);
    options.state = Some(Arc::new(FillsUp {
        kept: Default::default(),
        room: 0.into(),
    }));
    let events = Arc::new(Collector::default());
    let outcome = runner.run(&flow, &options, events.clone()).await;
    assert_eq!(outcome.status, Status::Failed, "{}", events.text());
    // The run stops there, though the step goes on past failures.
    let error = outcome.error.unwrap();
    // Which item, by its place and key (the first few may have been
    // committed together with it).
    let which = error
        .split_once("the state of item ")
        .and_then(|(_, rest)| rest.split_once(" could not be saved (the flow state store failed: database or disk is full), so no item was started once that was known"))
        .map(|(which, _)| which.to_string());
    let which = which.unwrap_or_else(|| panic!("{error}"));
    let (place, key) = which
        .split_once(" (key `")
        .unwrap_or_else(|| panic!("{error}"));
    assert_eq!(format!("k{place}`)"), key, "{error}");
    let skipped = events.events().into_iter().any(|e| {
        matches!(e, RunEvent::StepFinished { step, status: Status::Skipped, .. } if step == "after")
    });
    assert!(skipped, "{}", events.text());
    let finished: Vec<(usize, Status, Option<String>)> = events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::ItemFinished {
                index,
                status,
                error,
                ..
            } => Some((index, status, error)),
            _ => None,
        })
        .collect();
    assert!(
        !finished.is_empty() && finished.len() <= 50,
        "{} of 200 items ran",
        finished.len()
    );
    for (index, status, error) in &finished {
        assert_eq!(*status, Status::Failed, "item {index}");
        assert!(
            error.as_deref().unwrap().contains(
                "it ran to the end, but its state could not be saved: the flow state store failed: database or disk is full; what its requests did stands, unrecorded"
            ),
            "{error:?}"
        );
    }
}

/// Stops the run (as Ctrl-C does) once `after` items have finished.
struct StopAfter {
    cancel: Arc<std::sync::atomic::AtomicBool>,
    after: usize,
    seen: std::sync::atomic::AtomicUsize,
    events: Arc<Collector>,
}

impl sluice::run::Observer for StopAfter {
    fn event(&self, event: &RunEvent) {
        use std::sync::atomic::Ordering;
        if matches!(event, RunEvent::ItemFinished { .. })
            && self.seen.fetch_add(1, Ordering::SeqCst) + 1 >= self.after
        {
            self.cancel.store(true, Ordering::SeqCst);
        }
        self.events.event(event);
    }
}

/// A run stopped part-way says how many of the items that ran failed, in
/// its error and in its end's count: that is all a monitor of `--json` or
/// of stderr reads (it said `failed_items: 0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_step_counts_the_items_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let items: Vec<String> = (1..=40)
        .map(|i| match i % 2 {
            0 => format!(r#"{{ key = "k{i}", fail = {{ kind = "internal" }} }}"#),
            _ => format!(r#"{{ key = "k{i}" }}"#),
        })
        .collect();
    let path = write_flow(
        dir.path(),
        "flow.toml",
        &flow_with(&format!(
            r#"
[params]
items = [{}]

[[step]]
id = "each"
uses = "FIXTURE"
for_each = "${{params.items}}"
concurrency = 1
on_error = "continue"
with = {{ write_own = "${{item.key}}", fail = "${{item.fail}}" }}
"#,
            items.join(", ")
        )),
    );
    let flow = load(&path, &[]);
    let run_id = sluice::run::new_run_id();
    let options =
        sluice::run::RunOptions::new(run_id.clone(), dir.path().join("runs").join(&run_id), false);
    let events = Arc::new(Collector::default());
    let observer = Arc::new(StopAfter {
        cancel: options.cancel.clone(),
        after: 6,
        seen: 0.into(),
        events: events.clone(),
    });
    let outcome = runner.run(&flow, &options, observer).await;
    assert_eq!(outcome.status, Status::Interrupted, "{}", events.text());
    let failed = events
        .events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                RunEvent::ItemFinished {
                    status: Status::Failed,
                    ..
                }
            )
        })
        .count();
    assert!(failed > 0, "{}", events.text());
    // …and so does its end (`run_finished`'s `failed_items`).
    assert_eq!(outcome.setbacks.failed_items, failed as u64);
    let error = outcome.error.unwrap();
    assert!(
        error.contains(&format!(" of 40 items ({failed} of them failed); the rest")),
        "{error}"
    );
}
