//! `sluice run --record DIR` and `--replay DIR` on the shipped flow against
//! the emulators: the cassettes hold every exchange and no secret, and a
//! replay with the emulators stopped gives the same report, sends nothing,
//! and names a request it has no recording for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::emulated::*;
use common::examples::upn_scenario;
use serde_json::Value;
use sluice_emulator::{EmulatorConfig, Scenario};

/// The report without its run id, which each run has its own of.
fn report_of_run(data_dir: &Path, run: &Run) -> String {
    let started = run
        .events()
        .into_iter()
        .find(|e| e["event"] == "run_started")
        .unwrap();
    let run_id = started["run_id"].as_str().unwrap().to_string();
    let html = std::fs::read_to_string(data_dir.join("runs").join(&run_id).join("report.html"))
        .unwrap_or_else(|e| panic!("run {run_id} wrote no report: {e}\n{}", run.stderr));
    html.replace(&run_id, "RUN-ID")
}

fn cassette(dir: &Path, connection: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(format!("{connection}.yml"))).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// Records the shipped flow against fresh emulators into `cassettes`.
async fn recorded_run(
    people: usize,
    seed: u64,
    cassettes: &Path,
) -> (
    sluice_emulator::RunningEmulator,
    Vec<(String, String)>,
    tempfile::TempDir,
    Run,
) {
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario: Scenario::generate(people, seed),
        ..Default::default()
    })
    .await;
    let record = cassettes.to_str().unwrap();
    let run = sluice(&env, data.path(), &["--json", "--record", record]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    (emulator, env, data, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_run_replays_with_the_emulators_stopped_to_the_same_report() {
    let cassettes = tempfile::tempdir().unwrap();
    let (emulator, env, data, recorded) = recorded_run(120, 11, cassettes.path()).await;
    let state = emulator.snapshot();
    let created = created_keys(&state);
    assert!(created.len() >= 5, "the run created people: {created:?}");
    assert_eq!(state.mails.len(), 1);

    // One cassette per connection, each exchange of it in VCR's layout.
    let procore = cassette(cassettes.path(), "procore");
    let graph = cassette(cassettes.path(), "graph");
    assert!(
        procore["recorded_with"]
            .as_str()
            .unwrap()
            .starts_with("Sluice ")
    );
    let requests = |c: &Value, method: &str| -> usize {
        c["http_interactions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["request"]["method"] == method)
            .count()
    };
    let api_requests = |method: &str| {
        state
            .requests
            .iter()
            .filter(|r| r.method == method && !r.path.contains("/token"))
            .count()
    };
    assert_eq!(
        requests(&procore, "post") + requests(&graph, "post"),
        api_requests("POST"),
        "every write was recorded"
    );
    assert_eq!(
        requests(&procore, "get") + requests(&graph, "get"),
        api_requests("GET"),
        "every read was recorded, token requests left out"
    );
    let create = procore["http_interactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["request"]["method"] == "post" && i["response"]["status"]["code"] == 201)
        .unwrap();
    assert!(
        create["request"]["uri"]
            .as_str()
            .unwrap()
            .ends_with("/users")
    );
    assert!(
        create["request"]["body"]["string"]
            .as_str()
            .unwrap()
            .contains("email_address")
    );
    assert!(create["request"]["headers"]["Procore-Company-Id"].is_array());
    assert!(
        create["response"]["body"]["string"]
            .as_str()
            .unwrap()
            .contains("\"id\"")
    );
    assert!(create["recorded_at"].as_str().unwrap().ends_with(" GMT"));

    // The emulators still answer, and see nothing of a replay.
    let seen = emulator.snapshot().requests.len();
    let replay_data = tempfile::tempdir().unwrap();
    let replay = cassettes.path().to_str().unwrap();
    let replayed = sluice(&env, replay_data.path(), &["--json", "--replay", replay]).await;
    assert_eq!(replayed.code, 0, "stderr:\n{}", replayed.stderr);
    assert_eq!(
        emulator.snapshot().requests.len(),
        seen,
        "a replayed run sent a request"
    );
    assert_eq!(
        report_of_run(replay_data.path(), &replayed),
        report_of_run(data.path(), &recorded)
    );
    emulator.shutdown().await;

    // Stopped: the same report again, every create answered as recorded.
    let offline_data = tempfile::tempdir().unwrap();
    let offline = sluice(&env, offline_data.path(), &["--json", "--replay", replay]).await;
    assert_eq!(offline.code, 0, "stderr:\n{}", offline.stderr);
    assert_eq!(
        report_of_run(offline_data.path(), &offline),
        report_of_run(data.path(), &recorded)
    );
    let outcomes = offline.create_outcomes();
    assert_eq!(outcomes.keys().cloned().collect::<BTreeSet<_>>(), created);
    assert!(outcomes.values().all(|s| s == "created"), "{outcomes:?}");
    assert_eq!(offline.output_of("mail"), recorded.output_of("mail"));
}

/// Every entry of the shipped flow's state in the data directory's store.
async fn state_in(data_dir: &Path) -> Vec<(String, Value)> {
    let location = sluice_store::Location::Sqlite(sluice_store::path_in(data_dir));
    let store = sluice_store::Store::open(&location).await.unwrap();
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let query = sluice_store::StateQuery {
            prefix: String::new(),
            start_after: after.clone(),
            limit: 1000,
        };
        let page = store
            .state_list("procore-license-sync", &query)
            .await
            .unwrap();
        after = page.entries.last().map(|e| e.key.clone());
        all.extend(page.entries.into_iter().map(|e| (e.key, e.value)));
        if !page.more {
            return all;
        }
    }
}

/// A replay in the very data directory of the recorded run (whose state
/// the run then changed: its delta links, the people it adopted and
/// created) starts from the state the recorded run started from, so it
/// asks what that run asked, gives the same report, and keeps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_where_the_run_was_recorded_repeats_it_and_keeps_nothing() {
    let cassettes = tempfile::tempdir().unwrap();
    let (emulator, env, data, recorded) = recorded_run(40, 11, cassettes.path()).await;
    emulator.shutdown().await;
    let state = state_in(data.path()).await;
    assert!(
        state.iter().any(|(k, _)| k.starts_with("managed/")),
        "the recorded run kept the people it manages: {state:?}"
    );
    let replay = cassettes.path().to_str().unwrap();
    let replayed = sluice(&env, data.path(), &["--json", "--replay", replay]).await;
    assert_eq!(replayed.code, 0, "stderr:\n{}", replayed.stderr);
    assert_eq!(
        report_of_run(data.path(), &replayed),
        report_of_run(data.path(), &recorded)
    );
    assert_eq!(
        state_in(data.path()).await,
        state,
        "the replay changed the state"
    );
}

/// A replayed request with no recorded answer fails its step and the run,
/// even when the component carries on past the error it got (the
/// `hostile` fixture's `get` returns the error as its output).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_miss_fails_the_run_though_the_component_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let flow = common::write_flow(
        dir.path(),
        "tolerant.toml",
        &format!(
            r#"name = "tolerant"

[connections.api]
base_url = "http://127.0.0.1:9/api"

[[step]]
id = "look"
uses = "{}"
connections = ["api"]
with = {{ action = "get", connection = "api", url = "things" }}
"#,
            common::fixture("hostile").display()
        ),
    );
    let cassettes = dir.path().join("cassettes");
    std::fs::create_dir(&cassettes).unwrap();
    std::fs::write(
        cassettes.join("api.yml"),
        "http_interactions: []\nrecorded_with: hand\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = [
        "run",
        flow.to_str().unwrap(),
        "--json",
        "--replay",
        cassettes.to_str().unwrap(),
    ];
    let replayed = sluice_cmd(&[], &data, &args).await;
    assert_eq!(replayed.code, 1, "stderr:\n{}", replayed.stderr);
    let finished = replayed
        .events()
        .into_iter()
        .find(|e| e["event"] == "run_finished")
        .unwrap();
    assert_eq!(finished["status"], "failed", "{finished}");
    assert!(
        finished["error"]
            .as_str()
            .unwrap()
            .contains("no recorded answer"),
        "{finished}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cassettes_hold_no_secret_or_token_in_any_encoding() {
    let cassettes = tempfile::tempdir().unwrap();
    let (emulator, _env, _data, _run) = recorded_run(60, 3, cassettes.path()).await;
    let secrets = emulator.secrets();
    assert!(secrets.len() > 2, "tokens were issued: {secrets:?}");
    let files: Vec<_> = std::fs::read_dir(cassettes.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let names: BTreeSet<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "graph.yml".into(),
            "procore.yml".into(),
            "state.json".into()
        ]),
        "one cassette per connection, and the state the run started from"
    );
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, secret) in secrets.iter().enumerate() {
            for form in sluice::redact::forms(secret) {
                assert!(
                    !text.contains(&form),
                    "a form of secret #{i} ({form:.6}…) is in {}",
                    file.display()
                );
            }
        }
        let lower = text.to_lowercase();
        assert!(!lower.contains("authorization:"), "{}", file.display());
        assert!(!lower.contains("bearer "), "{}", file.display());
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_missing_from_the_cassette_fails_with_the_nearest_recorded_one() {
    let cassettes = tempfile::tempdir().unwrap();
    let (emulator, env, _data, _run) = recorded_run(60, 5, cassettes.path()).await;
    emulator.shutdown().await;
    // Take one create out of the recording.
    let path = cassettes.path().join("procore.yml");
    let mut procore = cassette(cassettes.path(), "procore");
    let all = procore["http_interactions"].as_array_mut().unwrap();
    let index = all
        .iter()
        .position(|i| {
            i["request"]["method"] == "post"
                && i["request"]["uri"].as_str().unwrap().ends_with("/users")
        })
        .unwrap();
    let removed = all.remove(index);
    std::fs::write(&path, serde_norway::to_string(&procore).unwrap()).unwrap();
    let body = removed["request"]["body"]["string"].as_str().unwrap();
    let uri = removed["request"]["uri"].as_str().unwrap();

    let data = tempfile::tempdir().unwrap();
    let replay = cassettes.path().to_str().unwrap();
    let run = sluice(&env, data.path(), &["--json", "--replay", replay]).await;
    assert_eq!(
        run.code, 1,
        "a request went unanswered: stderr:\n{}",
        run.stderr
    );
    let key: Value = serde_json::from_str(body).unwrap();
    let key = key["user"]["email_address"]
        .as_str()
        .unwrap()
        .to_lowercase();
    let outputs = run.create_outputs();
    let failed = outputs[&key]["error"].as_str().unwrap();
    let expected = format!(
        "replay: POST {uri} with body {body} has no recorded answer in {}",
        path.display()
    );
    assert!(failed.contains(&expected), "{failed}");
    assert!(
        failed.contains("; the nearest recorded request is POST "),
        "{failed}"
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    let others: Vec<_> = outputs.iter().filter(|(k, _)| **k != key).collect();
    assert!(
        others.iter().all(|(_, o)| o["status"] == "created"),
        "{others:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_without_a_cassette_for_a_connection_is_refused_before_it_runs() {
    let cassettes = tempfile::tempdir().unwrap();
    std::fs::write(
        cassettes.path().join("graph.yml"),
        "---\nhttp_interactions: []\nrecorded_with: Sluice\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("GRAPH_TENANT_ID", "t"),
        ("GRAPH_CLIENT_ID", "c"),
        ("GRAPH_CLIENT_SECRET", "graph-secret-value"),
        ("PROCORE_CLIENT_ID", "p"),
        ("PROCORE_CLIENT_SECRET", "procore-secret-value"),
        ("PROCORE_COMPANY_ID", "1"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let run = sluice(
        &env,
        data.path(),
        &["--replay", cassettes.path().to_str().unwrap()],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("no cassette for connection `procore`")
            && run.stderr.contains("--record"),
        "{}",
        run.stderr
    );
}

/// A replay runs the flow's components as they are now, against the
/// recorded services: a run recorded with the built-in `compare`, replayed
/// with the Python one (examples/python-compare, which also matches the
/// userPrincipalName), decides differently and sends only the requests of
/// its own decision, each answered from the cassette.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_with_a_changed_component_shows_the_changed_outcome() {
    let python = &common::examples::examples().python;
    let (emulator, env, data) = common::examples::emulated_with(upn_scenario()).await;
    // The mail's body is the report, which the change alters: leave it out.
    let env = without(&env, &["REPORT_MAIL_FROM", "REPORT_MAIL_TO"]);
    let cassettes = tempfile::tempdir().unwrap();
    let record = cassettes.path().to_str().unwrap();
    let recorded = sluice(&env, data.path(), &["--json", "--record", record]).await;
    assert_eq!(recorded.code, 0, "stderr:\n{}", recorded.stderr);
    let both = BTreeSet::from([
        "ann.lee@contoso.com".to_string(),
        "bob.ray@contoso.com".into(),
    ]);
    assert_eq!(created_keys(&emulator.snapshot()), both);
    emulator.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let uses = format!("uses = \"{}\"", python.display());
    let flow = common::examples::flow_with(dir.path(), &[("uses = \"compare\"", &uses)]);
    let replay_data = common::examples::data_dir();
    let replayed = sluice_cmd(
        &env,
        replay_data.path(),
        &["run", flow.to_str().unwrap(), "--json", "--replay", record],
    )
    .await;
    assert_eq!(replayed.code, 0, "stderr:\n{}", replayed.stderr);
    let diff = replayed.output_of("diff");
    assert_eq!(
        diff["matched_by_upn"],
        serde_json::json!(["ann.lee@contoso.com"])
    );
    let outcomes = replayed.create_outcomes();
    assert_eq!(
        outcomes,
        [("bob.ray@contoso.com".to_string(), "created".to_string())].into()
    );
    assert_eq!(recorded.create_outcomes().len(), 2);
    let report = |run: &Run| run.output_of("report")["summary"].clone();
    assert_eq!(report(&recorded)["created"], 2);
    assert_eq!(report(&replayed)["created"], 1);
    assert_eq!(report(&replayed)["present"], 1);
}
