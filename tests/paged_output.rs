//! Contract 0.2.2's paged output lists through the real host: a component
//! (tests/fixtures/paged-output) hands a list to the host a page at a
//! time, and every reader after it (a reference, a later step reading it
//! in pages, `for_each`, an artifact, the run's events) sees an ordinary
//! list, in order. Items that do not fit the output schema, a name the
//! schema does not mark, and an output whose placeholder does not match
//! what was appended fail the step with errors that say so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use sluice::engine::EngineConfig;
use sluice::run::{RunEvent, RunOutcome, Runner, Status};

/// A flow whose steps use the fixtures `EMIT` (paged-output) and `READ`
/// (paged, which reads a list in pages), given as `[[step]]` tables.
fn flow(steps: &str) -> String {
    let emit = fixture("paged-output").display().to_string();
    let read = fixture("paged").display().to_string();
    format!(
        "name = \"paged-output\"\n{}",
        steps.replace("EMIT", &emit).replace("READ", &read)
    )
}

async fn run_flow(
    runner: &Runner,
    dir: &std::path::Path,
    text: &str,
) -> (RunOutcome, Arc<Collector>) {
    let path = write_flow(dir, "flow.toml", text);
    run_keeping_items(runner, &load_described(&path, &[], runner), dir, false).await
}

fn people(n: i64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"key": format!("p{i}"), "n": i}))
        .collect()
}

/// The output text the run's events carry for `step`.
fn finished_output(events: &Collector, step: &str) -> String {
    events
        .events()
        .iter()
        .find_map(|e| match e {
            RunEvent::StepFinished {
                step: s, output, ..
            } if s == step => output.as_ref().map(|o| o.redacted().to_string()),
            _ => None,
        })
        .expect("the step finished with an output")
}

fn succeeded(outcome: &RunOutcome) {
    assert_eq!(
        outcome.status,
        Status::Succeeded,
        "{}",
        outcome.error.clone().unwrap_or_default()
    );
}

/// 2,500 people go to the host in three pages; the step's output holds
/// them as an ordinary list, in order: read by reference, read again in
/// pages by a later step, written as an artifact, shown in the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_appended_in_pages_is_an_ordinary_list_to_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = flow(
        "[[step]]\nid = \"emit\"\nuses = \"EMIT\"\nwith = { count = 2500 }\n\
         artifacts = { \"people.json\" = \"people\" }\n\n\
         [[step]]\nid = \"read\"\nuses = \"READ\"\n\
         with = { people = \"${steps.emit.people}\", page_size = 700 }\n\n\
         [[step]]\nid = \"echo\"\nuses = \"READ\"\nwith = { make = \"${steps.emit.count}\" }\n",
    );
    let (outcome, events) = run_flow(&runner, dir.path(), &text).await;
    succeeded(&outcome);
    let emitted = &outcome.outputs["emit"];
    assert_eq!(emitted["people"], json!(people(2500)));
    assert_eq!(emitted["count"], json!(2500));

    let read = &outcome.outputs["read"];
    assert_eq!(read["length"], json!(2500));
    assert_eq!(read["count"], json!(2500));
    assert_eq!(read["pages"], json!(4));
    assert_eq!(read["sum"], json!(2500 * 2499 / 2));
    assert_eq!(
        (&read["first"], &read["last"]),
        (&json!("p0"), &json!("p2499"))
    );
    assert_eq!(
        outcome.outputs["echo"]["people"].as_array().unwrap().len(),
        2500
    );

    let artifact = outcome
        .artifacts
        .iter()
        .find(|p| p.ends_with("people.json"))
        .expect("the artifact was written");
    let written: Value = serde_json::from_slice(&std::fs::read(artifact).unwrap()).unwrap();
    assert_eq!(written, json!(people(2500)));

    let shown = finished_output(&events, "emit");
    assert!(!shown.contains("x-sluice-paged"), "{}", &shown[..200]);
    assert!(
        shown.starts_with(r#"{"people":[{"key":"p0","n":0},"#),
        "{}",
        &shown[..200]
    );
}

/// Inside `for_each` each item's call has its own list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_for_each_item_has_its_own_lists() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = flow(
        "[params]\ncounts = [1200, 0, 2001]\n\n\
         [[step]]\nid = \"each\"\nuses = \"EMIT\"\nfor_each = \"${params.counts}\"\nconcurrency = 3\n\
         with = { count = \"${item}\" }\n",
    );
    let (outcome, _) = run_flow(&runner, dir.path(), &text).await;
    succeeded(&outcome);
    let items = outcome.outputs["each"]["items"].as_array().cloned();
    let items = items.unwrap_or_else(|| panic!("{}", outcome.outputs["each"]));
    let lists: Vec<Value> = items
        .iter()
        .map(|i| i["output"]["people"].clone())
        .collect();
    assert_eq!(lists, [json!(people(1200)), json!([]), json!(people(2001))]);
}

/// An item that does not fit the output schema's `items` is refused when
/// it is appended, naming its index; the step fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appended_item_that_does_not_fit_fails_the_step_naming_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text =
        flow("[[step]]\nid = \"emit\"\nuses = \"EMIT\"\nwith = { count = 2500, bad_at = 1500 }\n");
    let (outcome, _) = run_flow(&runner, dir.path(), &text).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("item 1500 of the output list `people` does not fit its schema")
            && error.contains("`people.1500.n`")
            && error.contains("[bad-output]"),
        "{error}"
    );
}

/// An output is checked against the output schema its component
/// describes: a field of the wrong type, or an item of a list written
/// whole (not handed over in pages), fails the step naming where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_does_not_fit_its_schema_fails_naming_where() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let cases = [
        (
            "count = 3, whole = true, bad_at = 1",
            "`output.people.1.n` must be an integer, not a string (output of `",
        ),
        (
            "count = 2, whole = true, misfit_count = true",
            "`output.count` must be an integer, not a string (output of `",
        ),
    ];
    for (with, expected) in cases {
        let text = flow(&format!(
            "[[step]]\nid = \"emit\"\nuses = \"EMIT\"\nwith = {{ {with} }}\n"
        ));
        let (outcome, _) = run_flow(&runner, dir.path(), &text).await;
        assert_eq!(outcome.status, Status::Failed, "{with}");
        let error = outcome.error.unwrap();
        assert!(
            error.contains("its output does not fit the output schema it describes")
                && error.contains(expected),
            "{with}: {error}"
        );
    }
    // The same list whole and fitting passes.
    let text =
        flow("[[step]]\nid = \"emit\"\nuses = \"EMIT\"\nwith = { count = 3, whole = true }\n");
    let (outcome, _) = run_flow(&runner, dir.path(), &text).await;
    succeeded(&outcome);
}

/// A component appending to a name its output schema does not mark (as
/// a component in another language might) is refused with `unknown-list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appending_to_a_name_the_output_schema_does_not_mark_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = flow(
        "[[step]]\nid = \"emit\"\nuses = \"EMIT\"\n\
         with = { raw = { name = \"count\", items = [1, 2] } }\n",
    );
    let (outcome, _) = run_flow(&runner, dir.path(), &text).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(error.contains(r#"UnknownList("count")"#), "{error}");
}

/// The placeholder's `length` must be what was appended, and a list
/// appended to must be named by its placeholder: else the output is not
/// valid and the step fails saying which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_whose_placeholder_does_not_match_the_appends_fails() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let two = r#"[{ key = "a", n = 1 }, { key = "b", n = 2 }]"#;
    let cases = [
        (
            format!("raw = {{ name = \"people\", items = {two}, length = 2 }}"),
            None,
        ),
        (
            format!("raw = {{ name = \"people\", items = {two}, length = 3 }}"),
            Some("its output says the list `people` holds 3 items, but 2 were appended"),
        ),
        (
            format!("raw = {{ name = \"people\", items = {two}, placeholder = false }}"),
            Some(
                "2 items were appended to the list `people`, but the output does not hold its placeholder",
            ),
        ),
        (
            "raw = { name = \"people\", items = { not = \"a list\" } }".to_string(),
            Some("NotAList("),
        ),
    ];
    for (with, expected) in cases {
        let text = flow(&format!(
            "[[step]]\nid = \"emit\"\nuses = \"EMIT\"\nwith = {{ {with} }}\n"
        ));
        let (outcome, _) = run_flow(&runner, dir.path(), &text).await;
        match expected {
            None => {
                succeeded(&outcome);
                assert_eq!(
                    outcome.outputs["emit"]["people"],
                    json!([{"key": "a", "n": 1}, {"key": "b", "n": 2}])
                );
            }
            Some(expected) => {
                assert_eq!(outcome.status, Status::Failed, "{with}");
                let error = outcome.error.unwrap();
                assert!(error.contains(expected), "{with}: {error}");
            }
        }
    }
}

/// The appended lists count toward the step's output cap: an append past
/// it ends the call, naming the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_lists_count_toward_the_output_cap() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let text = flow(
        "[[step]]\nid = \"emit\"\nuses = \"EMIT\"\nwith = { count = 5000 }\nmax_output_bytes = 100000\n",
    );
    let (outcome, _) = run_flow(&runner, dir.path(), &text).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("over the limit of 100000 bytes (`max_output_bytes`)"),
        "{error}"
    );
}
