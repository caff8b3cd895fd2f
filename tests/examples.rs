//! The example components of other languages, built from source
//! (scripts/build-examples, with the tools scripts/test-deps installs) and
//! run in the shipped flow against the emulators: `examples/python-compare`
//! (componentize-py) in place of `compare`, `examples/js-csv-report`
//! (componentize-js) in place of `html-report`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// Creates held above `max_unapproved_creates` are rows of the JS report,
/// each with the approve command, and make it notable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_csv_report_lists_creates_waiting_for_approval() {
    let js = &examples().js;
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::generate(30, 21);
    let expected = scenario.expected_sync();
    let (emulator, env, data) = emulated_with(scenario).await;
    let uses = format!("uses = \"{}\"", js.display());
    let flow = flow_with(
        dir.path(),
        &[
            ("uses = \"html-report\"", &uses),
            ("max_unapproved_creates = 500", "max_unapproved_creates = 0"),
        ],
    );
    let (csv, report) = csv_of(&env, data.path(), &flow).await;
    assert!(created_keys(&emulator.snapshot()).is_empty(), "{csv}");
    let rows = csv_rows(&csv);
    let waiting: BTreeSet<String> = rows
        .keys()
        .filter(|(status, _)| status == "waits for approval")
        .map(|(_, key)| key.clone())
        .collect();
    assert!(!expected.to_create.is_empty());
    assert_eq!(waiting, expected.to_create);
    for ((status, key), detail) in &rows {
        if status == "waits for approval" {
            assert!(detail.contains("approve with: sluice approve "), "{detail}");
            assert!(detail.ends_with(&format!("--only {key}")), "{detail}");
        }
    }
    assert_eq!(
        report["summary"]["waiting_for_approval"],
        json!(expected.to_create.len())
    );
    assert_eq!(report["notable"], Value::Bool(true));
}

/// The CSV's rows as `(status, key) → detail`.
fn csv_rows(csv: &str) -> BTreeMap<(String, String), String> {
    csv.lines()
        .skip(1)
        .map(csv_fields)
        .map(|r| ((r[0].clone(), r[2].clone()), r[3].clone()))
        .collect()
}

/// The JS report's CSV and summary for one run of the flow.
async fn csv_of(env: &[(String, String)], data: &Path, flow: &Path) -> (String, Value) {
    let report = run(env, data, flow).await.output_of("report");
    (report["csv"].as_str().unwrap().to_string(), report)
}

async fn cli(env: &[(String, String)], data: &Path, args: &[&str]) -> String {
    let run = sluice_cmd(env, data, args).await;
    assert_eq!(run.code, 0, "{args:?}: {}\n{}", run.stdout, run.stderr);
    run.stdout
}

/// The JS report lists leavers waiting (with why and the approve command),
/// rejected, deactivated (off the project), and a returner reactivated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_csv_report_lists_leavers_and_returners() {
    const CY: &str = "cy@contoso.com";
    const DEE: &str = "dee@contoso.com";
    const EVE: &str = "eve@contoso.com";
    let js = &examples().js;
    let dir = tempfile::tempdir().unwrap();
    let mails = [
        "ann@contoso.com",
        "bob@contoso.com",
        CY,
        DEE,
        EVE,
        "flo@contoso.com",
        "gus@contoso.com",
    ];
    let (scenario, group, people) = licensed_tenant("License – Microsoft E3", &mails);
    let (emulator, env, data) = emulated_with(scenario).await;
    let uses = format!("uses = \"{}\"", js.display());
    let flow = flow_with(dir.path(), &[("uses = \"html-report\"", &uses)]);
    let person = |mail: &str| people.iter().find(|p| p.mail == mail).unwrap();

    // The first run adopts everyone: nobody acted on, nothing notable.
    let (csv, report) = csv_of(&env, data.path(), &flow).await;
    assert_eq!(csv, "status,name,key,detail\r\n");
    assert_eq!(report["notable"], Value::Bool(false));

    // Cy and Dee leave the license group, Eve's account is disabled: all
    // three wait for an admin, each with why and how to approve.
    for mail in [CY, DEE] {
        assert!(emulator.remove_member(&group, &person(mail).graph_id));
    }
    assert!(emulator.set_account_enabled(&person(EVE).graph_id, false));
    let (csv, report) = csv_of(&env, data.path(), &flow).await;
    let plans: Value =
        serde_json::from_str(&cli(&env, data.path(), &["approvals", "--json"]).await).unwrap();
    let plan = plans[0]["id"].as_str().unwrap().to_string();
    let waits = |mail: &str, why: &str| {
        (
            ("waits for approval".to_string(), mail.to_string()),
            format!("{why}; approve with: sluice approve {plan} --revision 1 --only {mail}"),
        )
    };
    assert_eq!(
        csv_rows(&csv),
        [
            waits(CY, "no license group"),
            waits(DEE, "no license group"),
            waits(EVE, "account disabled"),
        ]
        .into(),
        "{csv}"
    );
    assert_eq!(report["summary"]["waiting_for_approval"], 3);
    assert_eq!(report["notable"], Value::Bool(true));

    // Cy and Eve approved, Dee rejected: two deactivated and taken off the
    // project, Dee left alone and listed as rejected.
    for (verb, mail) in [("approve", CY), ("approve", EVE), ("reject", DEE)] {
        cli(
            &env,
            data.path(),
            &[verb, &plan, "--only", mail, "--by", "Dana Admin"],
        )
        .await;
    }
    let (csv, report) = csv_of(&env, data.path(), &flow).await;
    let done =
        |status: &str, mail: &str, detail: String| ((status.to_string(), mail.to_string()), detail);
    let deactivated = |mail: &str, why: &str| {
        done(
            "deactivated",
            mail,
            format!(
                "Procore id {}; {why}; project: removed",
                person(mail).procore_id
            ),
        )
    };
    assert_eq!(
        csv_rows(&csv),
        [
            deactivated(CY, "no license group"),
            deactivated(EVE, "account disabled"),
            done("rejected", DEE, "no license group".into()),
        ]
        .into(),
        "{csv}"
    );
    assert_eq!(report["summary"]["deactivated"], 2);
    assert!(
        report["subject"]
            .as_str()
            .unwrap()
            .contains("2 deactivated"),
        "{report}"
    );

    // Eve's account is enabled again: she is reactivated and rejoins.
    assert!(emulator.set_account_enabled(&person(EVE).graph_id, true));
    let (csv, report) = csv_of(&env, data.path(), &flow).await;
    let rows = csv_rows(&csv);
    let eve = &rows[&("reactivated".to_string(), EVE.to_string())];
    assert!(
        eve.starts_with(&format!(
            "Procore id {}; license group License – Microsoft E3",
            person(EVE).procore_id
        )) && eve.ends_with("project: added"),
        "{csv}"
    );
    assert_eq!(report["summary"]["reactivated"], 1);
}

/// `sluice.toml:line:column` of the first `needle` in the flow at `path`,
/// as `sluice validate` points at it (1-based, in characters) after the
/// file's path.
fn place_of(path: &Path, needle: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let (n, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle} in {}", path.display()));
    let column = line[..line.find(needle).unwrap()].chars().count() + 1;
    let file = path.file_name().unwrap().to_str().unwrap();
    format!("{file}:{}:{column}", n + 1)
}

/// `sluice validate` checks each example's `with` against the input schema
/// its `describe` publishes, as it does a built-in's: the shipped flow with
/// either swapped in validates clean, and a `with` that does not fit is
/// refused at its file:line:column with the example named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_each_examples_with_against_its_describe() {
    let (python, js) = (&examples().python, &examples().js);
    let data = data_dir();
    let validate = |flow: PathBuf| {
        let data = data.path().to_path_buf();
        async move {
            let args = ["validate", flow.to_str().unwrap()];
            sluice_cmd(&[], &data, &args).await
        }
    };
    let compare = format!("uses = \"{}\"", python.display());
    let report = format!("uses = \"{}\"", js.display());
    let swaps = [
        ("uses = \"compare\"", compare.as_str()),
        ("uses = \"html-report\"", report.as_str()),
    ];
    for (from, to) in swaps {
        let dir = tempfile::tempdir().unwrap();
        let run = validate(flow_with(dir.path(), &[(from, to)])).await;
        assert_eq!(run.code, 0, "{to}: {}\n{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("is valid"), "{}", run.stdout);
    }

    // An input the Python compare does not take, and a count below the JS
    // report's minimum of 0.
    let dir = tempfile::tempdir().unwrap();
    let last_input = "approved = \"${run.approvals.deactivate.approved}\", project_id = \"${env.PROCORE_PROJECT_ID:-}\" }";
    let skipped = "skipped_disabled = \"${steps.members.skipped_disabled}\"";
    let flow = flow_with(
        dir.path(),
        &[
            swaps[0],
            swaps[1],
            (
                last_input,
                "approved = \"${run.approvals.deactivate.approved}\", project_id = \"${env.PROCORE_PROJECT_ID:-}\", colour = \"blue\" }",
            ),
            (skipped, "skipped_disabled = -1"),
        ],
    );
    let run = validate(flow.clone()).await;
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let err = &run.stderr;
    assert!(
        err.contains("error: `with.colour` is not an input of `python-compare`"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}\n", place_of(&flow, "colour = "))),
        "{err}"
    );
    assert!(
        err.contains("error: `with.skipped_disabled` does not fit the input of `js-csv-report`"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}\n", place_of(&flow, "skipped_disabled = -1"))),
        "{err}"
    );
    assert!(err.contains("2 problems found; nothing was run"), "{err}");
}
