//! The shipped flow, exactly as shipped, through the `sluice` binary against
//! the emulators with a realistic tenant: the emulator's final state must be
//! what the identity rules say, with and without faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sluice_emulator::{EmulatorConfig, Faults, RetryAfterStyle, Scenario};

fn flow_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flows/procore-license-sync.toml")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `sluice run` on the shipped flow with exactly the given environment.
async fn sluice(env: &[(String, String)], data_dir: &Path, extra: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env_clear()
        .arg("run")
        .arg(flow_path())
        .args(extra)
        .env("SLUICE_DATA_DIR", data_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run sluice");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn created_keys(state: &sluice_emulator::StateSnapshot) -> BTreeSet<String> {
    state
        .created_users()
        .iter()
        .map(|u| u.email_address.to_lowercase())
        .collect()
}

fn assert_no_secret(run: &Run, env: &[(String, String)], state: &sluice_emulator::StateSnapshot) {
    for (k, v) in env {
        if k.contains("SECRET") {
            assert!(
                !run.stdout.contains(v.as_str()) && !run.stderr.contains(v.as_str()),
                "{k} leaked"
            );
        }
    }
    let _ = state;
    assert!(
        !run.stderr.contains("eyJ0eXAi") && !run.stdout.contains("eyJ0eXAi"),
        "a token leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_exactly_the_missing_license_holders_and_is_idempotent() {
    let scenario = Scenario::generate(300, 42);
    let expected = scenario.expected_sync();
    assert!(
        expected.to_create.len() >= 15 && !expected.inactive.is_empty(),
        "the scenario exercises the rules"
    );
    let before = scenario.procore_users.clone();
    let emulator = sluice_emulator::start(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await
    .unwrap();
    let env = emulator.env_vars();
    let data = tempfile::tempdir().unwrap();

    let run = sluice(&env, data.path(), &[]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    assert_eq!(
        created_keys(&state),
        expected.to_create,
        "exactly the expected users, no extras, none missing"
    );
    // Every created user came from a nested {"user": …} body with the fields Procore requires.
    for u in state.created_users() {
        assert_eq!(u.login, u.email_address);
        assert!(!u.last_name.trim().is_empty(), "{u:?}");
        assert!(u.is_employee);
        assert!(u.is_active);
    }
    // Project membership with the configured template.
    let project: u64 = env
        .iter()
        .find(|(k, _)| k == "PROCORE_PROJECT_ID")
        .unwrap()
        .1
        .parse()
        .unwrap();
    let template: u64 = env
        .iter()
        .find(|(k, _)| k == "PROCORE_PERMISSION_TEMPLATE_ID")
        .unwrap()
        .1
        .parse()
        .unwrap();
    for u in state.created_users() {
        assert!(
            state.project_users().iter().any(|p| p.user_id == u.id
                && p.project_id == project
                && p.permission_template_id == Some(template)),
            "{} was not added to project {project}",
            u.email_address
        );
    }
    // Users who were there before, Procore-only ones included, are untouched.
    for old in &before {
        let now = state
            .procore_users()
            .iter()
            .find(|u| u.id == old.id)
            .expect("nobody is deleted");
        assert_eq!(
            (now.is_active, &now.login, &now.email_address),
            (old.is_active, &old.login, &old.email_address)
        );
    }
    // Inactive matches are reported, not re-created.
    assert!(created_keys(&state).is_disjoint(&expected.inactive));
    // One mail with the report; hostile names are escaped in it.
    assert_eq!(state.mails.len(), 1);
    let mail = &state.mails[0];
    assert_eq!(mail.content_type, "HTML");
    assert!(mail.html.contains("#1C6EA4"));
    assert!(
        !mail.html.contains("<img src=x") && !mail.html.contains("<script>"),
        "unescaped hostile name in the mail"
    );
    assert!(
        mail.html.contains("&lt;img src=x onerror=alert(1)&gt;")
            || mail.html.contains("&lt;script&gt;")
    );
    assert!(
        run.stderr.contains("report.html"),
        "prints where the report is:\n{}",
        run.stderr
    );
    assert_no_secret(&run, &env, &state);

    // A second run right after creates nothing and mails nothing.
    let again = sluice(&env, data.path(), &[]).await;
    assert_eq!(again.code, 0, "stderr:\n{}", again.stderr);
    let state = emulator.snapshot();
    assert_eq!(created_keys(&state), expected.to_create);
    assert_eq!(state.mails.len(), 1, "nothing new, no mail");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing_and_says_what_it_would_do() {
    let scenario = Scenario::generate(120, 5);
    let expected = scenario.expected_sync();
    let emulator = sluice_emulator::start(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await
    .unwrap();
    let env = emulator.env_vars();
    let data = tempfile::tempdir().unwrap();
    let run = sluice(&env, data.path(), &["--dry-run"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
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
    let report = std::fs::read_dir(data.path().join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("report.html");
    let html = std::fs::read_to_string(report).unwrap();
    assert!(html.contains("Rehearsal (dry run)"));
    assert_eq!(
        html.matches("<td>would create</td>").count(),
        expected.to_create.len()
    );
    assert!(run.stderr.contains("DRY RUN"), "{}", run.stderr);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_do_not_change_the_result() {
    let scenario = Scenario::generate(300, 42);
    let expected = scenario.expected_sync();
    let faults = Faults {
        token_expires_after_calls: Some(9),
        rate_429_every: Some(7),
        retry_after: RetryAfterStyle::Fractional,
        retry_after_secs: 0,
        fail_503_at: vec![3, 20],
        fail_500_at: vec![12, 25],
        drop_connection_at: vec![5, 16],
        empty_graph_pages: true,
        seed: 9,
        ..Faults::default()
    };
    let emulator = sluice_emulator::start(EmulatorConfig {
        scenario,
        faults,
        conflict_status: 409,
        ..Default::default()
    })
    .await
    .unwrap();
    let env = emulator.env_vars();
    let data = tempfile::tempdir().unwrap();
    let run = sluice(&env, data.path(), &[]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    assert_eq!(created_keys(&state), expected.to_create);
    let statuses: BTreeSet<u16> = state.requests.iter().map(|r| r.status).collect();
    for s in [401, 429, 500, 503] {
        assert!(
            statuses.contains(&s),
            "fault {s} was never exercised: {statuses:?}"
        );
    }
    assert!(
        run.stderr.contains("throttled") && run.stderr.contains("retried"),
        "{}",
        run.stderr
    );
    assert_no_secret(&run, &env, &state);
    emulator.shutdown().await;
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
    assert!(run.stderr.contains("mail  skipped"), "{}", run.stderr);
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
