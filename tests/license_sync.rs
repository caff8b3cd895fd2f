//! The shipped flow, exactly as shipped, through the `sluice` binary against
//! the emulators with a realistic tenant: the emulator's final state must be
//! what the identity rules say, with and without faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::emulated::*;

use sluice_emulator::{
    EmulatorConfig, FaultKind, Faults, PagingHeaders, RetryAfterStyle, Scenario, StateSnapshot,
    TargetedFault,
};

/// Requests to API paths (token requests left out) made by `method`.
fn api_requests<'a>(
    requests: &'a [sluice_emulator::state::LoggedRequest],
    method: &str,
) -> Vec<&'a sluice_emulator::state::LoggedRequest> {
    requests
        .iter()
        .filter(|r| r.method == method && !r.path.contains("/token"))
        .collect()
}

fn targeted(method: &str, path_suffix: &str, at: &[u64], fault: FaultKind) -> TargetedFault {
    TargetedFault {
        method: method.into(),
        path_suffix: path_suffix.into(),
        body_contains: None,
        at: at.to_vec(),
        fault,
    }
}

/// Every created user is in `project` with `template` (`None`: without one).
fn assert_in_project(state: &StateSnapshot, project: u64, template: Option<u64>) {
    let report = state.mails.first().map_or("", |m| m.html.as_str());
    for u in state.created_users() {
        let memberships: Vec<_> = state
            .project_users()
            .iter()
            .filter(|p| p.user_id == u.id)
            .collect();
        assert_eq!(
            memberships.len(),
            1,
            "{} should be in exactly one project: {memberships:?}; its report row: {:?}",
            u.email_address,
            report
                .lines()
                .find(|l| l.contains(&format!("<td>{}</td>", u.email_address)))
        );
        assert_eq!(
            (
                memberships[0].project_id,
                memberships[0].permission_template_id
            ),
            (project, template),
            "{}",
            u.email_address
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_exactly_the_missing_license_holders_and_is_idempotent() {
    let scenario = Scenario::generate(300, 42);
    let expected = scenario.expected_sync();
    assert!(
        expected.to_create.len() >= 15 && !expected.inactive.is_empty(),
        "the scenario exercises the rules"
    );
    // The lower-case decoy holds people who hold no license: only the
    // component's exact prefix check keeps them out (Graph's filter does not).
    let decoy = scenario
        .groups
        .iter()
        .find(|g| g.display_name == "license – microsoft old")
        .unwrap();
    let decoy_keys: BTreeSet<String> = decoy
        .members
        .iter()
        .filter_map(|m| match m {
            sluice_emulator::scenario::Member::User { id } => scenario.user(id),
            _ => None,
        })
        .filter_map(sluice_emulator::scenario::identity_key)
        .collect();
    assert!(
        decoy_keys
            .iter()
            .any(|k| !expected.to_create.contains(k) && !expected.present.contains(k)),
        "the decoy holds someone a sync must not create"
    );
    // The hostile display name belongs to someone who will be created.
    let hostile = scenario
        .graph_users
        .iter()
        .find(|u| u.display_name.starts_with("<img"))
        .unwrap();
    assert!(
        expected
            .to_create
            .contains(&sluice_emulator::scenario::identity_key(hostile).unwrap())
    );
    let before = scenario.procore_users.clone();
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;

    let run = sluice(&env, data.path(), &[]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    assert_eq!(
        created_keys(&state),
        expected.to_create,
        "exactly the expected users, no extras, none missing"
    );
    assert_eq!(
        state.requests.iter().filter(|r| is_create(r)).count(),
        expected.to_create.len(),
        "one create per missing person, none for anyone present"
    );
    // Every created user came from a nested {"user": …} body with the fields Procore requires.
    for u in state.created_users() {
        assert_eq!(u.login, u.email_address);
        assert!(!u.last_name.trim().is_empty(), "{u:?}");
        assert!(u.is_employee);
        assert!(u.is_active);
    }
    let project: u64 = var(&env, "PROCORE_PROJECT_ID").parse().unwrap();
    let template: u64 = var(&env, "PROCORE_PERMISSION_TEMPLATE_ID").parse().unwrap();
    assert_in_project(&state, project, Some(template));
    assert_untouched(&before, &state);
    // Inactive matches are reported, not re-created.
    assert!(created_keys(&state).is_disjoint(&expected.inactive));
    // One mail with the report; the hostile name is in it, escaped.
    assert_eq!(state.mails.len(), 1);
    let mail = &state.mails[0];
    assert_eq!(mail.content_type, "HTML");
    assert!(mail.html.contains("#1C6EA4"));
    assert!(
        !mail.html.contains("<img src=x") && !mail.html.contains("<script>"),
        "unescaped hostile name in the mail"
    );
    assert!(
        mail.html
            .contains("<td>&lt;img src=x onerror=alert(1)&gt;</td>"),
        "the hostile person's row is in the mail, escaped"
    );
    assert!(
        run.stderr.contains("report.html"),
        "prints where the report is:\n{}",
        run.stderr
    );
    assert_no_secret(&run, &emulator.secrets(), data.path());

    // A second run right after creates nothing, writes nothing, mails nothing.
    let first_run_requests = state.requests.len();
    let again = sluice(&env, data.path(), &[]).await;
    assert_eq!(again.code, 0, "stderr:\n{}", again.stderr);
    let state = emulator.snapshot();
    let second: Vec<_> = state.requests[first_run_requests..].to_vec();
    assert!(
        second.iter().any(|r| r.method == "GET"),
        "the second run did read"
    );
    let writes: Vec<String> = second
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("/token"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        writes.is_empty(),
        "the second run made no API POST (or any other write): {writes:?}"
    );
    assert_eq!(created_keys(&state), expected.to_create);
    assert_eq!(state.mails.len(), 1, "nothing new, no mail");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing_and_says_what_it_would_do() {
    let scenario = Scenario::generate(120, 5);
    let expected = scenario.expected_sync();
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;
    let run = sluice(&env, data.path(), &["--dry-run", "--json"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let would: BTreeSet<String> = run
        .create_outcomes()
        .into_iter()
        .map(|(key, status)| {
            assert_eq!(status, "would_create", "{key}");
            key
        })
        .collect();
    assert_eq!(would, expected.to_create, "what the run says it would do");
    assert_eq!(run.events()[0]["dry_run"], true, "{}", run.stdout);
    let state = emulator.snapshot();
    assert!(state.created_users().is_empty(), "a dry run created users");
    assert!(state.mails.is_empty(), "a dry run sent mail");
    assert!(
        state
            .requests
            .iter()
            .all(|r| r.method == "GET" || r.path.contains("/token")),
        "a write reached the emulator"
    );
    // The report says it was a rehearsal, row by row.
    let html = only_report(data.path());
    assert!(html.contains("Rehearsal (dry run)"));
    let rows = report_rows(&html);
    let would: BTreeSet<String> = rows
        .iter()
        .filter(|(status, ..)| status == "would create")
        .map(|(_, key, _)| key.clone())
        .collect();
    assert_eq!(would, expected.to_create);
    let inactive = rows
        .iter()
        .filter(|(status, ..)| status == "inactive in Procore");
    assert_eq!(inactive.count() + would.len(), rows.len(), "{rows:?}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_do_not_change_the_result() {
    let scenario = Scenario::generate(300, 42);
    let expected = scenario.expected_sync();
    let before = scenario.procore_users.clone();
    let faults = Faults {
        // Tokens expire every 9 calls: many refreshes a run, and among
        // concurrent workers a fresh token can be used up before a retry
        // reaches it (the host allows two refreshes per request for that).
        token_expires_after_calls: Some(9),
        rate_429_every: Some(7),
        retry_after: RetryAfterStyle::Fractional,
        retry_after_secs: 0,
        fail_503_at: vec![3, 20],
        fail_500_at: vec![12, 25],
        drop_connection_at: vec![5, 16],
        empty_graph_pages: true,
        targeted: vec![
            // A create whose connection drops before Procore handles it…
            targeted("POST", "/users", &[2], FaultKind::Drop),
            // …one that Procore handles and whose answer is then lost…
            targeted("POST", "/users", &[5], FaultKind::DropAfterApply),
            // …one the gateway times out on once Procore created the user
            // (an HTML 504, not Procore's JSON)…
            targeted("POST", "/users", &[8], FaultKind::GatewayTimeoutAfterApply),
            // …and the report mail, refused once.
            targeted("POST", "/sendMail", &[1], FaultKind::Unavailable),
        ],
        // A read the gateway answers with its HTML 502 page.
        fail_502_at: vec![9],
        ..Faults::default()
    };
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        faults,
        conflict_status: 409,
        ..Default::default()
    })
    .await;
    let run = sluice(&env, data.path(), &["--json"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    let report = only_report(data.path());
    assert_eq!(
        created_keys(&state),
        expected.to_create,
        "stderr:\n{}\nreport:\n{report}",
        run.stderr
    );
    assert_eq!(
        state.created_users().len(),
        expected.to_create.len(),
        "nobody was created twice"
    );
    let statuses: BTreeSet<u16> = state.requests.iter().map(|r| r.status).collect();
    for s in [401, 429, 500, 502, 503, 504] {
        assert!(
            statuses.contains(&s),
            "fault {s} was never exercised: {statuses:?}"
        );
    }
    let fault_on = |kind: &str, pred: &dyn Fn(&sluice_emulator::state::LoggedRequest) -> bool| {
        state
            .requests
            .iter()
            .filter(|r| r.fault == Some(kind) && pred(r))
            .count()
    };
    assert!(
        fault_on("drop", &is_create) >= 1,
        "a create's connection was dropped"
    );
    assert!(
        fault_on("drop", &|r| r.method == "GET") >= 1,
        "a read's connection was dropped"
    );
    assert_eq!(fault_on("drop_after_apply", &is_create), 1);
    assert_eq!(fault_on("504_after_apply", &is_create), 1);
    assert_eq!(
        fault_on("503", &|r| r.path.ends_with("/sendMail")),
        1,
        "the mail was refused once"
    );
    // The create whose answer was lost was looked up, found, and not sent
    // again; the one dropped before Procore acted was looked up, not
    // found, and sent again: no create met a user of its own.
    // A create that meets its own user is a resend after an attempt that
    // was applied (a fault after the apply that struck a resend): that
    // item is confirmed after the retry, below.
    let met_their_own: Vec<String> = state
        .requests
        .iter()
        .filter(|r| is_create(r) && r.status == 409)
        .filter_map(|r| {
            let body: serde_json::Value = serde_json::from_str(r.body.as_deref()?).ok()?;
            Some(body["user"]["email_address"].as_str()?.to_lowercase())
        })
        .collect();
    assert!(met_their_own.len() <= 2, "{met_their_own:?}");
    let project: u64 = var(&env, "PROCORE_PROJECT_ID").parse().unwrap();
    let template: u64 = var(&env, "PROCORE_PERMISSION_TEMPLATE_ID").parse().unwrap();
    assert_in_project(&state, project, Some(template));
    assert_untouched(&before, &state);
    assert_eq!(state.mails.len(), 1, "exactly one mail, after one refusal");
    // The run says every person was created, the one whose first attempt
    // went through included (not a conflict).
    let outputs = run.create_outputs();
    assert_eq!(
        outputs.keys().cloned().collect::<BTreeSet<_>>(),
        expected.to_create
    );
    for (key, output) in &outputs {
        assert_eq!(output["status"], "created", "{key}: {output}");
    }
    // The create whose connection dropped after Procore acted, and the
    // one the gateway timed out on: each confirmed by a look-up, or, when
    // the fault struck a resend, by the 409 the next resend met. Both may
    // strike the resends of one item (the 504 then replaces the 409 its
    // resend met), which is then confirmed once.
    let confirmed: BTreeSet<&String> = outputs
        .iter()
        .filter(|(_, o)| {
            let reason = o["reason"].as_str().unwrap_or_default();
            reason.starts_with("confirmed by a look-up")
                || reason.starts_with("confirmed after a retry")
        })
        .map(|(key, _)| key)
        .collect();
    assert!((1..=2).contains(&confirmed.len()), "{outputs:?}");
    for key in &met_their_own {
        assert!(
            outputs[key]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("confirmed after a retry")),
            "{key}: {}",
            outputs[key]
        );
    }
    // The gateway's HTML page is named by its title, not quoted whole.
    assert!(
        !outputs.values().any(|o| o.to_string().contains("<html>")),
        "{outputs:?}"
    );
    // And it counted the throttling and the retries.
    let total = |field: &str| -> u64 {
        run.events()
            .iter()
            .filter(|e| e["event"] == "step_finished")
            .flat_map(|e| e["connections"].as_object().cloned().unwrap_or_default())
            .map(|(_, stats)| stats[field].as_u64().unwrap())
            .sum()
    };
    assert!(
        total("throttled") > 0 && total("retried") > 0,
        "{}",
        run.stdout
    );
    assert_no_secret(&run, &emulator.secrets(), data.path());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_first_attempt_went_through_is_reported_created_once() {
    let scenario = Scenario::generate(80, 21);
    let expected = scenario.expected_sync();
    // Default duplicate status (422). The first create is applied and its
    // connection dropped; the second is applied and answered 500. Both
    // answers may hide a user made, so each is looked up, found, and not
    // sent again.
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        faults: Faults {
            targeted: vec![
                targeted("POST", "/users", &[1], FaultKind::DropAfterApply),
                targeted("POST", "/users", &[2], FaultKind::ServerErrorAfterApply),
            ],
            ..Faults::default()
        },
        ..Default::default()
    })
    .await;
    let run = sluice(&env, data.path(), &["--json"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    assert_eq!(created_keys(&state), expected.to_create);
    assert_eq!(state.created_users().len(), expected.to_create.len());
    assert_eq!(
        state.requests.iter().filter(|r| is_create(r)).count(),
        expected.to_create.len(),
        "no create was sent twice"
    );
    assert!(
        state
            .requests
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("filters[search]=")),
        "the lost answers were looked up"
    );
    // Both joined the project like everyone else.
    let project: u64 = var(&env, "PROCORE_PROJECT_ID").parse().unwrap();
    let template: u64 = var(&env, "PROCORE_PERMISSION_TEMPLATE_ID").parse().unwrap();
    assert_in_project(&state, project, Some(template));
    let outputs = run.create_outputs();
    assert_eq!(
        outputs.keys().cloned().collect::<BTreeSet<_>>(),
        expected.to_create
    );
    for (key, output) in &outputs {
        assert_eq!(output["status"], "created", "{key}: {output}");
    }
    let confirmed = outputs
        .values()
        .filter(|o| o["reason"].to_string().contains("confirmed by a look-up"))
        .count();
    assert_eq!(confirmed, 2, "{outputs:?}");
    emulator.shutdown().await;
}

/// A create sent again (its first answer a 500 that made nobody, so the
/// look-up found nobody) whose resend is applied and its answer lost
/// meets that resend at the host's next try: it is reported created,
/// confirmed after the retry, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_create_that_meets_its_own_resend_is_reported_created() {
    let scenario = Scenario::generate(80, 21);
    let expected = scenario.expected_sync();
    let key = expected.to_create.first().unwrap().clone();
    let at = |n: u64, fault: FaultKind| TargetedFault {
        body_contains: Some(key.clone()),
        ..targeted("POST", "/users", &[n], fault)
    };
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        faults: Faults {
            targeted: vec![
                at(1, FaultKind::ServerError),
                at(2, FaultKind::DropAfterApply),
            ],
            ..Faults::default()
        },
        ..Default::default()
    })
    .await;
    let run = sluice(&env, data.path(), &["--json"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    assert_eq!(created_keys(&state), expected.to_create);
    assert_eq!(state.created_users().len(), expected.to_create.len());
    let statuses: Vec<u16> = state
        .requests
        .iter()
        .filter(|r| is_create(r) && r.body.as_deref().is_some_and(|b| b.contains(key.as_str())))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    assert_eq!(statuses[0], 500);
    assert_eq!(statuses[2], 422, "{statuses:?}");
    let output = &run.create_outputs()[&key];
    assert_eq!(output["status"], "created", "{output}");
    assert!(
        output["reason"]
            .as_str()
            .unwrap()
            .contains("confirmed after a retry"),
        "{output}"
    );
    let project: u64 = var(&env, "PROCORE_PROJECT_ID").parse().unwrap();
    let template: u64 = var(&env, "PROCORE_PERMISSION_TEMPLATE_ID").parse().unwrap();
    assert_in_project(&state, project, Some(template));
    emulator.shutdown().await;
}

/// A user someone else creates in Procore while the run is under way, for
/// a person the run read as missing, is a conflict: this run's first
/// create was refused, so the user is not its own. It is reported with
/// its id, not added to the project, and not taken as the flow's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_someone_else_creates_during_the_run_is_a_conflict() {
    let scenario = Scenario::generate(80, 21);
    let expected = scenario.expected_sync();
    let key = expected.to_create.last().unwrap().clone();
    // The person's first create is answered 429 (not acted on) with a
    // Retry-After of 2 s; while the host waits, someone else creates them.
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        faults: Faults {
            targeted: vec![TargetedFault {
                body_contains: Some(key.clone()),
                ..targeted("POST", "/users", &[1], FaultKind::TooMany)
            }],
            retry_after: RetryAfterStyle::Integer,
            retry_after_secs: 2,
            ..Faults::default()
        },
        ..Default::default()
    })
    .await;
    let is_theirs = |r: &sluice_emulator::state::LoggedRequest| {
        is_create(r) && r.body.as_deref().is_some_and(|b| b.contains(key.as_str()))
    };
    let someone_else = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            if emulator.snapshot().requests.iter().any(&is_theirs) {
                break emulator
                    .create_procore_user(&key, "Someone", "Else")
                    .expect("not created yet: the create was refused 429");
            }
        }
    };
    let (run, id) = tokio::join!(sluice(&env, data.path(), &["--json"]), someone_else);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    let sent: Vec<u16> = state
        .requests
        .iter()
        .filter(|r| is_theirs(r))
        .map(|r| r.status)
        .collect();
    assert_eq!(sent, vec![429, 422], "the create, then its resend");
    let output = &run.create_outputs()[&key];
    assert_eq!(output["status"], "conflict", "{output}");
    assert_eq!(output["procore_id"], id, "{output}");
    assert!(
        output["reason"]
            .as_str()
            .unwrap()
            .contains("created during this run, by someone else"),
        "{output}"
    );
    assert!(
        !state.project_users().iter().any(|m| m.user_id == id),
        "the flow added a user it did not create to its project"
    );
    // Everyone else was created and added as usual.
    assert_eq!(created_keys(&state), expected.to_create);
    assert_eq!(state.created_users().len(), expected.to_create.len());
    // The next run adopts that user like anyone already in Procore: not as
    // one the flow created, owed the project add.
    let again = sluice(&env, data.path(), &["--json"]).await;
    assert_eq!(again.code, 0, "stderr:\n{}", again.stderr);
    let state = emulator.snapshot();
    assert!(
        !state.project_users().iter().any(|m| m.user_id == id),
        "the next run added a user the flow did not create to its project"
    );
    let ledger = sluice_cmd(&env, data.path(), &["ledger", &key, "--json"]).await;
    let entries: Vec<serde_json::Value> = serde_json::from_str(&ledger.stdout).unwrap();
    let adopted = entries
        .iter()
        .find(|e| e["step"] == "diff")
        .unwrap_or_else(|| panic!("{}", ledger.stdout));
    assert_eq!(
        (&adopted["output"]["status"], &adopted["output"]["origin"]),
        (&serde_json::json!("adopted"), &serde_json::json!("adopted")),
        "{}",
        ledger.stdout
    );
    emulator.shutdown().await;
}

/// Procore's "Create company user" field table (name → type, required),
/// as the emulator's documented fixture stores it with its source.
fn documented_create_fields() -> Vec<(String, String, bool)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../emulator/tests/documented/procore_create_company_user.json"
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(file["request_body"]["name"], "user");
    file["request_body"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap().to_string();
            (
                name,
                f["type"].as_str().unwrap().to_string(),
                f["required"] == true,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_create_body_sent_has_only_procore_documented_fields_at_their_types() {
    let scenario = Scenario::generate(80, 31);
    let expected = scenario.expected_sync();
    assert!(!expected.to_create.is_empty());
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;
    let run = sluice(&env, data.path(), &[]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let table = documented_create_fields();
    let state = emulator.snapshot();
    let creates: Vec<_> = state.requests.iter().filter(|r| is_create(r)).collect();
    assert_eq!(creates.len(), expected.to_create.len());
    for r in creates {
        let body: serde_json::Value =
            serde_json::from_str(r.body.as_deref().expect("a JSON body")).unwrap();
        let top: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(top, ["user"], "{body}");
        let user = body["user"].as_object().unwrap();
        for (name, value) in user {
            let (_, kind, _) = table
                .iter()
                .find(|(documented, _, _)| documented == name)
                .unwrap_or_else(|| panic!("`{name}` is not a documented field: {body}"));
            let fits = match kind.as_str() {
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "boolean" => value.is_boolean(),
                other => panic!("{other}"),
            };
            assert!(fits, "`{name}` should be {kind}: {body}");
        }
        for (name, _, required) in &table {
            if *required {
                let given = user.get(name).and_then(|v| v.as_str());
                assert!(
                    given.is_some_and(|v| !v.trim().is_empty()),
                    "`{name}` is required: {body}"
                );
            }
        }
    }
    assert_eq!(created_keys(&state), expected.to_create);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_taken_elsewhere_is_a_conflict_and_the_others_are_created() {
    let mut scenario = Scenario::generate(80, 22);
    let expected = scenario.expected_sync();
    let victim = expected.to_create.iter().next().unwrap().clone();
    // Held by a user of another Procore company: refused (422), and not in
    // this company's lists.
    scenario.taken_elsewhere.push(victim.to_uppercase());
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;
    let run = sluice(&env, data.path(), &["--json"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    let mut others = expected.to_create.clone();
    others.remove(&victim);
    assert_eq!(created_keys(&state), others);
    assert_eq!(
        state
            .requests
            .iter()
            .filter(|r| is_create(r) && r.status == 422)
            .count(),
        1
    );
    let outputs = run.create_outputs();
    for (key, output) in &outputs {
        let status = if *key == victim {
            "conflict"
        } else {
            "created"
        };
        assert_eq!(output["status"], status, "{key}: {output}");
    }
    let reason = outputs[&victim]["reason"].as_str().unwrap();
    assert!(
        reason.contains("taken") && reason.contains("another Procore company"),
        "{reason}"
    );
    assert_eq!(state.mails.len(), 1);
    assert!(
        state.mails[0].subject.contains("1 conflicts"),
        "{}",
        state.mails[0].subject
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_person_does_not_stop_the_others() {
    let scenario = Scenario::generate(80, 23);
    let expected = scenario.expected_sync();
    let victim = expected.to_create.iter().nth(1).unwrap().clone();
    // Every create of this one person fails with a 500, the host's retries
    // included; nobody else's does.
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        faults: Faults {
            targeted: vec![TargetedFault {
                body_contains: Some(format!("\"email_address\":\"{victim}\"")),
                ..targeted("POST", "/users", &[], FaultKind::ServerError)
            }],
            ..Faults::default()
        },
        ..Default::default()
    })
    .await;
    let run = sluice(&env, data.path(), &["--json"]).await;
    // on_error = "continue": the run goes to the end.
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    let mut others = expected.to_create.clone();
    others.remove(&victim);
    assert_eq!(created_keys(&state), others, "everyone else was created");
    assert!(
        state
            .requests
            .iter()
            .filter(|r| is_create(r) && r.fault == Some("500"))
            .count()
            > 1,
        "the host retried the failing create"
    );
    // The run says so, with the cause, against that person alone.
    let outputs = run.create_outputs();
    for (key, output) in &outputs {
        let status = if *key == victim { "failed" } else { "created" };
        assert_eq!(output["status"], status, "{key}: {output}");
    }
    assert!(outputs[&victim].to_string().contains("500"), "{outputs:?}");
    // A failure is worth a mail.
    assert_eq!(state.mails.len(), 1);
    assert!(
        state.mails[0].subject.contains("1 failed"),
        "{}",
        state.mails[0].subject
    );
    emulator.shutdown().await;
}

/// A create Procore refuses (here a 400: the address is not one) created
/// nobody, so its item fails, in Procore's words, and is not resent; the
/// others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_procore_refuses_fails_its_item_in_procores_words() {
    let mut scenario = Scenario::generate(40, 31);
    let licensed = scenario
        .groups
        .iter()
        .find(|g| g.display_name.starts_with("License – Microsoft"))
        .unwrap()
        .id
        .clone();
    let refused = "not-an-address.contoso.com";
    scenario.add_user("Odd Address", Some(refused), refused, &[licensed.as_str()]);
    let expected = scenario.expected_sync();
    assert!(
        expected.to_create.contains(refused),
        "the oracle expects a create"
    );
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;
    let run = sluice(&env, data.path(), &["--json"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let outputs = run.create_outputs();
    let failed = &outputs[refused];
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].to_string();
    assert!(
        error.contains("HTTP 400") && error.contains("is invalid"),
        "{error}"
    );
    let state = emulator.snapshot();
    let tries = state
        .requests
        .iter()
        .filter(|r| is_create(r) && r.body.as_deref().is_some_and(|b| b.contains(refused)))
        .count();
    assert_eq!(tries, 1, "a refusal is not resent");
    // The run went to the end, and its end counts the failed item.
    let finished: serde_json::Value = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "run_finished")
        .unwrap();
    assert_eq!(
        (&finished["status"], &finished["failed_items"]),
        (&serde_json::json!("succeeded"), &serde_json::json!(1)),
        "{finished}"
    );
    let mut others = expected.to_create.clone();
    others.remove(refused);
    assert_eq!(created_keys(&state), others, "everyone else was created");
    assert!(
        state.mails[0].subject.contains("1 failed"),
        "{}",
        state.mails[0].subject
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_is_joined_without_a_template_and_skipped_without_a_project() {
    // The shipped environment (project and template) is covered above; here
    // a project without a template, then neither.
    for keep in [&["PROCORE_PROJECT_ID"][..], &[][..]] {
        let scenario = Scenario::generate(60, 24);
        let expected = scenario.expected_sync();
        let emulator = sluice_emulator::start(EmulatorConfig {
            scenario,
            ..Default::default()
        })
        .await
        .unwrap();
        let all = emulator.env_vars();
        let dropped: Vec<&str> = ["PROCORE_PROJECT_ID", "PROCORE_PERMISSION_TEMPLATE_ID"]
            .into_iter()
            .filter(|k| !keep.contains(k))
            .collect();
        let env = without(&all, &dropped);
        let data = tempfile::tempdir().unwrap();
        let run = sluice(&env, data.path(), &["--json"]).await;
        assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
        let state = emulator.snapshot();
        assert_eq!(created_keys(&state), expected.to_create);
        let adds = api_requests(&state.requests, "POST")
            .into_iter()
            .filter(|r| r.path.ends_with("/actions/add"))
            .count();
        if keep.is_empty() {
            assert_eq!(adds, 0, "no project configured, no project call");
            assert!(state.project_users().is_empty());
            assert!(
                run.create_outputs()
                    .values()
                    .all(|o| o.get("project").is_none()),
                "{}",
                run.stdout
            );
        } else {
            let project: u64 = var(&all, "PROCORE_PROJECT_ID").parse().unwrap();
            assert_eq!(adds, expected.to_create.len());
            assert_in_project(&state, project, None);
            assert!(
                run.create_outputs()
                    .values()
                    .all(|o| o["project"] == "added"),
                "{}",
                run.stdout
            );
        }
        emulator.shutdown().await;
    }
}

/// A permission template, company or project id that is not a number is
/// refused when the flow is bound to its environment, before anything
/// runs: one error where the flow reads the variable (file:line:column),
/// exit 2, and not a request sent. (It was a failure of every create item
/// in a run that still exited 0.) Procore takes only an integer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procore_id_that_is_not_a_number_is_refused_before_the_run() {
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario: Scenario::generate(60, 24),
        ..Default::default()
    })
    .await;
    // The company and the project too (an audit's: `abc` for either
    // passed `validate --env`, and the run read all of Graph before
    // Procore refused the company, or created every user whose project
    // add then failed).
    for (var, value) in [
        ("PROCORE_PERMISSION_TEMPLATE_ID", "tpl-a"),
        ("PROCORE_COMPANY_ID", "abc"),
        ("PROCORE_PROJECT_ID", "p-7"),
    ] {
        let mut env = without(&env, &[var]);
        env.push((var.into(), value.into()));
        let run = sluice(&env, data.path(), &["--json"]).await;
        assert_eq!(run.code, 2, "{var}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "environment variable {var} is `{value}`, which steps "
            )),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("procore-license-sync.toml:"),
            "says where the flow reads it: {}",
            run.stderr
        );
        // The same check when asked beforehand.
        let flow = flow_path();
        let validate = ["validate", "--env", flow.to_str().unwrap()];
        let checked = sluice_cmd(&env, data.path(), &validate).await;
        assert_eq!(checked.code, 2, "{}", checked.stderr);
        assert!(
            checked
                .stderr
                .contains(&format!("environment variable {var}")),
            "{}",
            checked.stderr
        );
    }
    let state = emulator.snapshot();
    assert!(state.requests.is_empty(), "{:?}", state.requests);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procore_lists_are_read_to_the_end_by_every_kind_of_paging_header() {
    for paging in [
        PagingHeaders::SeparateLinkFields,
        PagingHeaders::TotalOnly,
        PagingHeaders::None,
    ] {
        let scenario = Scenario::generate(150, 25);
        let expected = scenario.expected_sync();
        let active = scenario
            .procore_users
            .iter()
            .filter(|u| u.is_active)
            .count();
        // Pages of 7, whatever the flow asks for: the headers (or an empty
        // page) must say when the list ends, not the size of a page.
        let (emulator, env, data) = emulated(EmulatorConfig {
            scenario,
            procore_paging: paging,
            procore_max_per_page: 7,
            ..Default::default()
        })
        .await;
        let run = sluice(&env, data.path(), &[]).await;
        assert_eq!(run.code, 0, "{paging:?} stderr:\n{}", run.stderr);
        let state = emulator.snapshot();
        assert_eq!(created_keys(&state), expected.to_create, "{paging:?}");
        assert_eq!(
            state.requests.iter().filter(|r| is_create(r)).count(),
            expected.to_create.len(),
            "{paging:?}: nobody already in Procore was sent for creation"
        );
        // The pages of the active list asked for, in order.
        let pages: Vec<usize> = state
            .requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/users?"))
            .filter(|r| !r.path.contains("/inactive") && !r.path.contains("filters"))
            .map(|r| {
                let query = r.path.split_once('?').unwrap().1;
                let page = query.split('&').find_map(|p| p.strip_prefix("page="));
                page.unwrap_or_else(|| panic!("no page in {}", r.path))
                    .parse()
                    .unwrap()
            })
            .collect();
        // Procore's paging: `page` counts from 1, each page once; a page
        // holds what the server says (7 here, whatever was asked), so a
        // short page is no sign of the end. The end is a Link without
        // `next` or, without Link, the Total reached; with no header at
        // all, the first empty page.
        let with_users = active.div_ceil(7);
        let last = match paging {
            PagingHeaders::SeparateLinkFields | PagingHeaders::TotalOnly => with_users,
            _ => with_users + 1,
        };
        assert_eq!(pages, (1..=last).collect::<Vec<_>>(), "{paging:?}");
        emulator.shutdown().await;
    }
}

/// A Procore list page that comes back empty while its `Total` says
/// more (a security tester's proxy) ended the list short: 31 people
/// already in Procore were sent for creation, and inactive ones whom the
/// contract says are never created again. The read now fails first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procore_list_that_ends_short_of_its_total_fails_before_any_create() {
    // Where the page's Link names a next page, the empty page contradicts
    // it; elsewhere (the inactive list is one page, without a Link) the
    // pages end short of their Total.
    let empty_with_next = "came back empty while its Link header names a next page";
    let short_of_total = "Procore's Total header says the list holds";
    for (path_suffix, at, paging, says) in [
        ("/users", 2, PagingHeaders::All, empty_with_next),
        ("/users", 2, PagingHeaders::TotalOnly, short_of_total),
        ("/users/inactive", 1, PagingHeaders::All, short_of_total),
    ] {
        let (emulator, env, data) = emulated(EmulatorConfig {
            scenario: Scenario::generate(150, 25),
            procore_max_per_page: 7,
            procore_paging: paging,
            ..Default::default()
        })
        .await;
        emulator.set_faults(Faults {
            targeted: vec![targeted("GET", path_suffix, &[at], FaultKind::EmptyPage)],
            ..Default::default()
        });
        let run = sluice(&env, data.path(), &[]).await;
        assert_ne!(run.code, 0, "{path_suffix}: {}", run.stdout);
        assert!(
            run.stderr.contains(says),
            "{path_suffix} {paging:?}: {}",
            run.stderr
        );
        let state = emulator.snapshot();
        assert_eq!(
            state.requests.iter().filter(|r| is_create(r)).count(),
            0,
            "{path_suffix}: nobody is sent for creation"
        );
        emulator.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_group_is_a_visible_warning_not_a_silent_success() {
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario: Scenario::generate(40, 26),
        ..Default::default()
    })
    .await;
    // A hyphen typed for the EN DASH.
    let run = sluice(
        &env,
        data.path(),
        &["--param", r#"group_prefixes=["License - Office"]"#],
    )
    .await;
    assert_eq!(
        run.code, 0,
        "a warning does not fail the run:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("License - Office") && run.stderr.contains("EN DASH"),
        "the warning names the prefix:\n{}",
        run.stderr
    );
    let report = only_report(data.path());
    assert!(
        report.contains("<p class=\"warning\"><strong>Warning:</strong> no Graph group's name starts with \"License - Office\""),
        "{report}"
    );
    assert!(!report.contains("every license holder is already in Procore"));
    let state = emulator.snapshot();
    assert!(state.created_users().is_empty());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_that_cannot_be_sent_fails_the_run_clearly_after_retries() {
    // Graph refuses every sendMail with a 503: it did not act, so the host
    // sends the mail again until the connection's attempts run out. (A 500
    // is never resent: the mail may have gone; see tests/connections.rs.)
    let scenario = Scenario::generate(60, 27);
    let expected = scenario.expected_sync();
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        faults: Faults {
            targeted: vec![targeted("POST", "/sendMail", &[], FaultKind::Unavailable)],
            ..Faults::default()
        },
        ..Default::default()
    })
    .await;
    let run = sluice(&env, data.path(), &[]).await;
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("mail") && run.stderr.contains("503"),
        "names the step and the cause:\n{}",
        run.stderr
    );
    let state = emulator.snapshot();
    assert_eq!(
        created_keys(&state),
        expected.to_create,
        "the users are created all the same"
    );
    assert!(state.mails.is_empty());
    let attempts = state
        .requests
        .iter()
        .filter(|r| r.path.ends_with("/sendMail"))
        .count();
    assert_eq!(
        attempts, 5,
        "the host sent the mail as often as the connection allows"
    );
    // The report was written before the mail step.
    assert!(only_report(data.path()).contains("<td>created</td>"));
    assert_no_secret(&run, &emulator.secrets(), data.path());
    emulator.shutdown().await;
}

/// The shipped flow with the report's mail showing `rows` rows a section.
fn flow_mailing_rows(dir: &Path, rows: usize) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(flow_path()).unwrap();
    let report_with = "only = \"${run.only}\" }";
    assert_eq!(shipped.matches(report_with).count(), 1);
    let text = shipped.replace(
        report_with,
        &format!("only = \"${{run.only}}\", mail_rows = {rows} }}"),
    );
    let path = dir.join("sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A report larger than the mail: the mail carries the counts, the first
/// rows and where the report is; the report file keeps every row. (The
/// shipped flow mails 100 rows a section; 5 here keeps the tenant small.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_larger_than_the_mail_is_mailed_as_a_summary_and_kept_whole() {
    let scenario = Scenario::generate(300, 42);
    let expected = scenario.expected_sync();
    assert!(
        expected.to_create.len() > 10,
        "more new users than mailed rows"
    );
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let flow = flow_mailing_rows(dir.path(), 5);
    let run = sluice_cmd(&env, data.path(), &["run", flow.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    assert_eq!(created_keys(&state), expected.to_create);
    // The report file: a row for every person created.
    let report = only_report(data.path());
    let created_rows: BTreeSet<String> = report_rows(&report)
        .into_iter()
        .filter(|(status, _, _)| status == "created")
        .map(|(_, key, _)| key)
        .collect();
    assert_eq!(created_rows, expected.to_create);
    // The mail: five rows of the new users, how many more, the counts and
    // where the whole report is.
    assert_eq!(state.mails.len(), 1);
    let mail = &state.mails[0].html;
    // First run: the new users' section, and inactive users not managed.
    let new_users = report_rows(&report)
        .iter()
        .filter(|(status, _, _)| status != "inactive, not managed")
        .count();
    let mailed = report_rows(mail);
    assert_eq!(
        mailed
            .iter()
            .filter(|(status, _, _)| status == "created")
            .count(),
        5,
        "{mail}"
    );
    assert!(
        mail.contains(&format!("… and {} more in this section", new_users - 5)),
        "{mail}"
    );
    assert!(
        mail.contains(&format!("<td>{}</td>", expected.to_create.len())),
        "the created count: {mail}"
    );
    let runs = data.path().join("runs");
    let run_id = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let run_id = run_id.to_str().unwrap();
    assert!(
        mail.contains(&format!("sluice runs show {run_id}")),
        "{mail}"
    );
    assert!(mail.contains("<code>report.html</code>"), "{mail}");
    assert!(mail.len() < report.len());
    assert!(mailed.len() < report_rows(&report).len());
    emulator.shutdown().await;
}

/// A flow of one step: graph-send-mail with an HTML body of `size` bytes.
fn flow_mailing_bytes(dir: &Path, size: usize) -> std::path::PathBuf {
    let text = format!(
        r#"name = "big-mail"

[params]
body = "{body}"

[secrets]
graph_client_secret = {{ env = "GRAPH_CLIENT_SECRET" }}

[connections.graph]
base_url = "${{env.GRAPH_BASE_URL}}"
auth.oauth2_client_credentials = {{ token_url = "${{env.GRAPH_TOKEN_URL}}", client_id = "${{env.GRAPH_CLIENT_ID}}", client_secret = "${{secrets.graph_client_secret}}", scope = "https://graph.microsoft.com/.default" }}

[[step]]
id = "mail"
uses = "graph-send-mail"
connections = ["graph"]
with = {{ from = "${{env.REPORT_MAIL_FROM}}", to = "${{env.REPORT_MAIL_TO}}", subject = "Big", html = "${{params.body}}" }}
"#,
        body = "x".repeat(size)
    );
    let path = dir.join(format!("mail-{size}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Through the host against the emulator: a 3 MiB mail (over axum's 2 MB
/// default, under Graph's 4 MB) is sent; a 5 MiB one is refused by the step
/// as bad input, before any request reaches Graph.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_over_graphs_4_mb_is_refused_before_sending_and_one_under_it_is_sent() {
    let (emulator, env, data) = emulated(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let run_flow = |size: usize| {
        let flow = flow_mailing_bytes(dir.path(), size);
        let (env, data) = (env.clone(), data.path().to_path_buf());
        async move { sluice_cmd(&env, &data, &["run", "--json", flow.to_str().unwrap()]).await }
    };
    let sent = run_flow(3 * 1024 * 1024).await;
    assert_eq!(sent.code, 0, "stderr:\n{}", sent.stderr);
    let state = emulator.snapshot();
    assert_eq!(state.mails.len(), 1);
    assert_eq!(state.mails[0].html.len(), 3 * 1024 * 1024);

    let refused = run_flow(5 * 1024 * 1024).await;
    assert_eq!(refused.code, 1, "stderr:\n{}", refused.stderr);
    let step = refused
        .events()
        .into_iter()
        .find(|e| e["event"] == "step_finished" && e["step"] == "mail")
        .unwrap();
    let error = step["error"].as_str().unwrap();
    assert!(
        error.contains("bad-input [mail-too-large]: the mail is 5.0 MiB")
            && error.contains("over Graph's 4 MiB (4194304 bytes) limit; nothing was sent"),
        "{step}"
    );
    assert_eq!(
        step["connections"],
        serde_json::json!({}),
        "no request: {step}"
    );
    let state = emulator.snapshot();
    let posts = state
        .requests
        .iter()
        .filter(|r| r.path.ends_with("/sendMail"))
        .count();
    assert_eq!(
        (posts, state.mails.len()),
        (1, 1),
        "only the first mail reached Graph"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_demo_runs_the_sync_and_says_what_it_did() {
    let data = tempfile::tempdir().unwrap();
    let run = sluice_cmd(&[], data.path(), &["demo", "--users", "30", "--seed", "4"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let expected = Scenario::generate(30, 4).expected_sync();
    let n = expected.to_create.len();
    assert!(
        run.stderr.contains(&format!(
            "Created {n} Procore user{}",
            if n == 1 { "" } else { "s" }
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("✓ Matches the emulator's ground truth"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Mailed the report"), "{}", run.stderr);
    let report = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("Report: "))
        .unwrap_or_else(|| panic!("no report line:\n{}", run.stderr));
    assert!(Path::new(report).is_file(), "{report}");
    assert!(report.starts_with(data.path().to_str().unwrap()));

    // A demo that fails still says what it did and where its report is.
    let data = tempfile::tempdir().unwrap();
    let faults = r#"{"targeted": [{"method": "POST", "path_suffix": "/sendMail", "fault": "server_error"}]}"#;
    let failed = sluice_cmd(
        &[],
        data.path(),
        &["demo", "--users", "30", "--seed", "4", "--faults", faults],
    )
    .await;
    assert_eq!(failed.code, 1, "stderr:\n{}", failed.stderr);
    assert!(failed.stderr.contains("error:"), "{}", failed.stderr);
    assert!(
        failed.stderr.contains(&format!("Created {n} Procore user")),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("Faults injected by the emulators"),
        "{}",
        failed.stderr
    );
    let partial = failed
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("Partial report: "))
        .unwrap_or_else(|| panic!("no report line:\n{}", failed.stderr));
    assert!(Path::new(partial).is_file(), "{partial}");
    // A fault description that does not parse is refused up front.
    let bad = sluice_cmd(&[], data.path(), &["demo", "--faults", "{\"rate_503\": "]).await;
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("--faults"), "{}", bad.stderr);
    // So is a rate that is no share of requests (a typo for 0.2).
    let rate = sluice_cmd(&[], data.path(), &["demo", "--faults", "{\"rate_503\": 2}"]).await;
    assert_ne!(rate.code, 0);
    assert!(
        rate.stderr
            .contains("--faults: `rate_503` is 2; a rate is a share of requests from 0 to 1"),
        "{}",
        rate.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_groups_count_when_the_flow_asks_for_transitive_members() {
    let scenario = Scenario::generate(200, 11);
    let direct = scenario.expected_sync();
    let transitive = scenario.expected_sync_transitive();
    assert!(
        transitive.to_create.len() > direct.to_create.len(),
        "the scenario has people only in nested groups"
    );
    let emulator = sluice_emulator::start(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await
    .unwrap();
    // No mailbox configured: the report is written, no mail is sent.
    let env: Vec<(String, String)> = emulator
        .env_vars()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("REPORT_MAIL"))
        .collect();
    let data = tempfile::tempdir().unwrap();
    let run = sluice(&env, data.path(), &["--param", "transitive=true"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    assert_eq!(created_keys(&state), transitive.to_create);
    assert!(state.mails.is_empty());
    assert!(
        run.stderr
            .contains("mail  skipped (its `when` is false: `${env.REPORT_MAIL_FROM:-}` is empty)"),
        "{}",
        run.stderr
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_fails_early_with_the_providers_words() {
    let emulator = sluice_emulator::start(EmulatorConfig {
        scenario: Scenario::generate(20, 3),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut env = emulator.env_vars();
    for (k, v) in env.iter_mut() {
        if k == "GRAPH_CLIENT_SECRET" {
            *v = "wrong-secret-value-123".into();
        }
    }
    let data = tempfile::tempdir().unwrap();
    let run = sluice(&env, data.path(), &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("connection `graph`") && run.stderr.contains("AADSTS7000215"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("wrong-secret-value-123"));
    assert!(!run.stderr.contains("panicked") && !run.stderr.contains("backtrace"));
    assert!(
        emulator
            .snapshot()
            .requests
            .iter()
            .all(|r| r.path.contains("token")),
        "no API call before the credentials are checked"
    );
    emulator.shutdown().await;
}

/// A create refused as taken is followed by a look-up searching for the
/// address Procore was sent, not the lower-cased key: for a mailbox with
/// a non-ASCII capital the two differ (`İpek` and `i̇pek`), and Procore's
/// search need not fold them alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_non_ascii_mailbox_is_looked_up_by_the_address_sent() {
    let mut scenario = Scenario::hand_written();
    let group = scenario.add_group("License – Microsoft E3");
    scenario.add_user(
        "İpek Yılmaz",
        Some("İPEK@contoso.com"),
        "ipek.yilmaz@contoso.com",
        &[group.as_str()],
    );
    scenario.taken_elsewhere.push("İpek@contoso.com".into());
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;
    let run = sluice(&env, data.path(), &["--json"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    let searches: Vec<&str> = (state.requests.iter())
        .filter(|r| r.method == "GET" && r.path.contains("search"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(searches.len(), 2, "the active and the inactive list");
    for path in searches {
        assert!(path.contains("%C4%B0pek"), "searched for İpek: {path}");
    }
    let outputs = run.create_outputs();
    let (_, output) = outputs.iter().next().unwrap();
    assert_eq!(output["status"], "conflict", "{output}");
    emulator.shutdown().await;
}

/// A run that could not use Graph delta (its link expired: 410 Gone) reads
/// every member, and says so in the report and the mail, where an admin
/// of `sluice serve` looks; it was said only in the run's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_for_an_expired_delta_link_is_told_in_the_report_and_mail() {
    let scenario = Scenario::generate(40, 10);
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;
    let first = sluice(&env, data.path(), &["--quiet"]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    emulator.expire_delta_tokens();
    let run = sluice(&env, data.path(), &["--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let members = run.output_of("members");
    assert_eq!(members["read"], "full", "{members}");
    let report = run.output_of("report");
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("Graph delta could not be used") && warnings.contains("410"),
        "{warnings}"
    );
    let page = run.report(data.path());
    assert!(page.contains("Graph delta could not be used"), "{page}");
    assert!(
        report["mail_html"]
            .as_str()
            .unwrap()
            .contains("Graph delta could not be used"),
        "the mail's body says so too"
    );
    emulator.shutdown().await;
}

/// Ctrl-C while `sluice run` loads the flow (compiling its components:
/// seconds on a first run) starts nothing, even in a process that was
/// started with SIGINT ignored (in the background by a script, which is
/// how a signal sent before the handler is in place goes unnoticed): the
/// stop is watched before the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_the_flow_loads_starts_nothing() {
    let (emulator, env, data) = emulated(EmulatorConfig {
        scenario: Scenario::generate(40, 27),
        ..Default::default()
    })
    .await;
    let flow = flow_path();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args([
        "-c",
        r#"trap '' INT; exec "$0" "$@""#,
        env!("CARGO_BIN_EXE_sluice"),
        "run",
        flow.to_str().unwrap(),
    ])
    .env_clear()
    .env("SLUICE_DATA_DIR", data.path())
    .envs(env.iter().map(|(k, v)| (k, v)))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let started = std::time::Instant::now();
    let child = cmd.spawn().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "FIGURES the run ended {:?} after its start",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopping: the running step finishes and nothing new starts"),
        "{stderr}"
    );
    // Stopped before the run (while the flow loaded), or before its first
    // step (while its components were prepared): either way not a
    // request, not even for a token.
    assert!(
        stderr.contains("was not run: it was stopped (Ctrl-C or SIGTERM) while it loaded, before anything started")
            || stderr.contains("the run was stopped before its first step, while its components were prepared"),
        "{stderr}"
    );
    let state = emulator.snapshot();
    let sent: Vec<String> = state
        .requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(sent, Vec::<String>::new(), "nothing was sent:\n{stderr}");
}
