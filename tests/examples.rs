//! The example components of other languages, built from source
//! (scripts/build-examples, with the tools scripts/test-deps installs) and
//! run in the shipped flow against the emulators: `examples/python-compare`
//! (componentize-py) in place of `compare`, `examples/js-csv-report`
//! (componentize-js) in place of `html-report`. Their `describe` is checked
//! by `sluice validate` as a built-in's is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use std::collections::BTreeSet;

use common::emulated::*;
use serde_json::{Value, json};
use sluice_emulator::{EmulatorConfig, RunningEmulator, Scenario};

/// The two examples, built from source once per test binary, and a data
/// directory whose compile cache holds both (see [`warm_cache`]).
struct Examples {
    python: PathBuf,
    js: PathBuf,
    warm: PathBuf,
}

fn examples() -> &'static Examples {
    static BUILT: OnceLock<Examples> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let started = Instant::now();
        let out = std::process::Command::new(root.join("scripts/build-examples"))
            .current_dir(&root)
            .output()
            .expect("run scripts/build-examples");
        assert!(
            out.status.success(),
            "scripts/build-examples failed (scripts/test-deps installs its tools):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("examples built in {:.1?}", started.elapsed());
        let paths: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .collect();
        let [python, js] = <[PathBuf; 2]>::try_from(paths).expect("two components");
        let warm = warm_cache(&python, &js);
        Examples { python, js, warm }
    })
}

/// Compiling an 18 MB Python or 12 MB JavaScript component is most of what
/// these tests cost (tens of seconds of CPU each; loading the compiled code
/// from the cache is under a second). One run of a flow made of both fills
/// the cache of a data directory beside the built examples, kept between
/// test runs; each test starts from a copy of it ([`data_dir`]).
fn warm_cache(python: &Path, js: &Path) -> PathBuf {
    let dir = python.parent().unwrap().join("warm");
    std::fs::create_dir_all(&dir).unwrap();
    let flow = dir.join("warm.toml");
    std::fs::write(
        &flow,
        format!(
            "name = \"warm\"\n\n\
             [[step]]\nid = \"diff\"\nuses = \"{}\"\n\
             with = {{ people = [], procore_users = [] }}\n\n\
             [[step]]\nid = \"report\"\nuses = \"{}\"\n\
             with = {{ diff = \"${{steps.diff}}\" }}\n",
            python.display(),
            js.display()
        ),
    )
    .unwrap();
    let data = dir.join("data");
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .env("SLUICE_DATA_DIR", &data)
        .args(["run", flow.to_str().unwrap()])
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "examples compiled (or loaded from the cache) in {:.1?}",
        started.elapsed()
    );
    data
}

/// A fresh data directory holding a copy of the warm compile cache (and the
/// key that signs its entries, without which they are not trusted).
fn data_dir() -> tempfile::TempDir {
    let warm = &examples().warm;
    let data = tempfile::tempdir().unwrap();
    let cache = data.path().join("cache");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&cache)
        .unwrap();
    for entry in std::fs::read_dir(warm.join("cache")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), cache.join(entry.file_name())).unwrap();
    }
    std::fs::copy(warm.join("cache.key"), data.path().join("cache.key")).unwrap();
    data
}

/// The shipped flow in `dir` with `from` replaced by `to`.
fn flow_with(dir: &Path, replacements: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(flow_path()).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    let path = dir.join("sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Ann's Procore login is her UPN, not her mail (the key); Bob is missing.
fn upn_scenario() -> Scenario {
    let mut s = Scenario::hand_written();
    let group = s.add_group("License – Microsoft 365 E3");
    s.add_user(
        "Ann Lee",
        Some("ann.lee@contoso.com"),
        "alee@contoso.com",
        &[&group],
    );
    s.add_user(
        "Bob Ray",
        Some("bob.ray@contoso.com"),
        "bob.ray@contoso.com",
        &[&group],
    );
    s.add_procore_user("alee@contoso.com", "alee@contoso.com", true);
    s
}

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

/// The emulators with `scenario`, the environment pointing the flow at
/// them, and a data directory with the examples already compiled.
async fn emulated_with(
    scenario: Scenario,
) -> (RunningEmulator, Vec<(String, String)>, tempfile::TempDir) {
    let data = data_dir();
    let emulator = sluice_emulator::start(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await
    .unwrap();
    let env = emulator.env_vars();
    (emulator, env, data)
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
