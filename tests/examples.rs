//! The example components of other languages, built from source
//! (scripts/build-examples, with the tools scripts/test-deps installs) and
//! run in the shipped flow against the emulators: `examples/python-compare`
//! (componentize-py) in place of `compare`, `examples/js-csv-report`
//! (componentize-js) in place of `html-report`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::emulated::*;
use common::examples::*;
use serde_json::{Value, json};
use sluice_emulator::Scenario;

/// The fields of one CSV line (RFC 4180: `"` quotes, `""` is a quote).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

async fn run(env: &[(String, String)], data: &Path, flow: &Path) -> Run {
    let run = sluice_cmd(env, data, &["run", flow.to_str().unwrap(), "--json"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_compare_also_matches_the_upn_in_the_shipped_flow() {
    let python = &examples().python;
    let dir = tempfile::tempdir().unwrap();
    let (emulator, env, data) = emulated_with(upn_scenario()).await;
    let uses = format!("uses = \"{}\"", python.display());
    let flow = flow_with(dir.path(), &[("uses = \"compare\"", &uses)]);
    let run = run(&env, data.path(), &flow).await;
    let diff = run.output_of("diff");
    assert_eq!(diff["matched_by_upn"], json!(["ann.lee@contoso.com"]));
    assert_eq!(diff["counts"]["missing"], 1, "{diff}");
    assert_eq!(diff["present"][0]["key"], "ann.lee@contoso.com", "{diff}");
    assert_eq!(
        created_keys(&emulator.snapshot()),
        ["bob.ray@contoso.com".to_string()].into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_compare_creates_the_person_the_python_one_matches_by_upn() {
    let (emulator, env, data) = emulated_with(upn_scenario()).await;
    let run = run(&env, data.path(), &flow_path()).await;
    assert_eq!(run.output_of("diff")["counts"]["missing"], 2);
    assert_eq!(created_keys(&emulator.snapshot()).len(), 2);
}

/// On a generated tenant the Python compare decides as the built-in does
/// (nobody there logs in with a UPN that differs from their mail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_compare_creates_who_the_built_in_would_on_a_generated_tenant() {
    let python = &examples().python;
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::generate(60, 7);
    let expected = scenario.expected_sync();
    let (emulator, env, data) = emulated_with(scenario).await;
    let uses = format!("uses = \"{}\"", python.display());
    let flow = flow_with(dir.path(), &[("uses = \"compare\"", &uses)]);
    run(&env, data.path(), &flow).await;
    let state = emulator.snapshot();
    assert_eq!(created_keys(&state), expected.to_create);
    assert!(created_keys(&state).is_disjoint(&expected.inactive));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_csv_report_writes_one_row_per_person_acted_on() {
    let js = &examples().js;
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::generate(30, 21);
    let expected = scenario.expected_sync();
    let (_emulator, env, data) = emulated_with(scenario).await;
    let uses = format!("uses = \"{}\"", js.display());
    let flow = flow_with(
        dir.path(),
        &[
            ("uses = \"html-report\"", &uses),
            (
                "artifacts = { \"report.html\" = \"html\" }",
                "artifacts = { \"report.csv\" = \"csv\" }",
            ),
        ],
    );
    let run = run(&env, data.path(), &flow).await;
    let report = run.output_of("report");
    let csv = report["csv"].as_str().unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("status,name,key,detail"));
    let rows: Vec<Vec<String>> = lines.map(csv_fields).collect();
    assert!(rows.iter().all(|r| r.len() == 4), "{csv}");
    let keys = |status: &str| -> BTreeSet<String> {
        rows.iter()
            .filter(|r| r[0] == status)
            .map(|r| r[2].clone())
            .collect()
    };
    assert!(!expected.to_create.is_empty());
    assert_eq!(keys("created"), expected.to_create);
    assert_eq!(keys("inactive in Procore"), expected.inactive);
    assert_eq!(report["rows"], json!(rows.len()));
    assert_eq!(report["notable"], Value::Bool(true));
    // The artifact is the same CSV, in the run's folder.
    let runs = data.path().join("runs");
    let folder = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read_to_string(folder.join("report.csv")).unwrap(),
        csv
    );
}
