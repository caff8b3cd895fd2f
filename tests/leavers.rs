//! The leavers' and returners' built-ins end to end through the `sluice`
//! binary against the Procore emulator: `procore-deactivate-user` behind an
//! approval gate (the report lists who waits with the exact approve
//! command; `sluice approve ID --run` runs the flow again with the
//! `--param` values of the run that found them, and the person is
//! deactivated and taken off the project, as the request log shows);
//! `procore-reactivate-user` (reactivated once, back on the project with
//! its template; a second run changes nothing); `run --only`, which
//! tells each person's story through the steps; and a deactivation whose
//! answer was lost and whose look-up failed too, which fails its item.
//!
//! The people come from params here, so these tests hold the components,
//! the report and the CLI to their word whatever decides who leaves; the
//! shipped flow's own decisions are tested in tests/lifecycle.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::emulated::{Run, sluice_cmd, var};
use serde_json::{Value, json};
use sluice_emulator::faults::{FaultKind, Faults, TargetedFault};
use sluice_emulator::scenario::{ProjectUser, Scenario};
use sluice_emulator::{EmulatorConfig, RunningEmulator};

const FLOW: &str = r#"name = "leavers-and-returners"

[params]
leavers = []
returners = []

[secrets]
procore_client_secret = { env = "PROCORE_CLIENT_SECRET" }

[connections.procore]
base_url = "${env.PROCORE_BASE_URL}/rest/v1.0"
headers = { "Procore-Company-Id" = "${env.PROCORE_COMPANY_ID}" }
auth.oauth2_client_credentials = { token_url = "${env.PROCORE_TOKEN_URL}", client_id = "${env.PROCORE_CLIENT_ID}", client_secret = "${secrets.procore_client_secret}" }

[[step]]
id = "deactivate"
uses = "procore-deactivate-user"
connections = ["procore"]
for_each = "${params.leavers}"
for_each_key = "${item.key}"
approval = "always"
on_error = "continue"
with = { user = "${item}", company_id = "${env.PROCORE_COMPANY_ID}", project_id = "${env.PROCORE_PROJECT_ID:-}" }

[[step]]
id = "reactivate"
uses = "procore-reactivate-user"
connections = ["procore"]
for_each = "${params.returners}"
for_each_key = "${item.key}"
on_error = "continue"
with = { user = "${item}", company_id = "${env.PROCORE_COMPANY_ID}", project_id = "${env.PROCORE_PROJECT_ID:-}", permission_template_id = "${env.PROCORE_PERMISSION_TEMPLATE_ID:-}" }

[[step]]
id = "report"
uses = "html-report"
with = { diff = { missing = [], present = [], present_inactive = [], counts = { people = 0, missing = 0, present = 0, present_inactive = 0, procore_only = 0 } }, deactivated = "${steps.deactivate}", reactivated = "${steps.reactivate}" }
artifacts = { "report.html" = "html" }
"#;

/// The emulator with Ann (active, on the project), Bo (inactive, off it)
/// and Cy (active), the flow file and a data directory.
struct Env {
    emulator: RunningEmulator,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    flow: PathBuf,
    ann: u64,
    bo: u64,
    cy: u64,
}

impl Env {
    async fn start() -> Env {
        let mut scenario = Scenario::hand_written();
        let ann = scenario.add_procore_user("ann@x.com", "ann@x.com", true).id;
        let bo = scenario.add_procore_user("bo@x.com", "bo@x.com", false).id;
        let cy = scenario.add_procore_user("cy@x.com", "cy@x.com", true).id;
        let project = scenario.project_ids[0];
        scenario.project_users.push(ProjectUser {
            project_id: project,
            user_id: ann,
            permission_template_id: None,
        });
        let emulator = sluice_emulator::start(EmulatorConfig {
            scenario,
            ..EmulatorConfig::default()
        })
        .await
        .unwrap();
        let env = emulator.env_vars();
        let dir = tempfile::tempdir().unwrap();
        let flow = common::write_flow(dir.path(), "leavers.toml", FLOW);
        Env {
            emulator,
            env,
            dir,
            flow,
            ann,
            bo,
            cy,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn sluice(&self, args: &[&str]) -> Run {
        sluice_cmd(&self.env, &self.data(), args).await
    }

    /// `sluice run` on the flow with more arguments; it must succeed.
    async fn run(&self, extra: &[&str]) -> Run {
        let mut args = vec!["run", self.flow.to_str().unwrap()];
        args.extend_from_slice(extra);
        let run = self.sluice(&args).await;
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        run
    }

    fn company(&self) -> &str {
        var(&self.env, "PROCORE_COMPANY_ID")
    }

    fn project(&self) -> u64 {
        var(&self.env, "PROCORE_PROJECT_ID").parse().unwrap()
    }

    /// The Procore writes the emulator answered: `(method, path, status)`.
    fn writes(&self) -> Vec<(String, String, u16)> {
        self.emulator
            .snapshot()
            .requests
            .iter()
            .filter(|r| r.method != "GET" && r.path.starts_with("/rest/"))
            .map(|r| (r.method.clone(), r.path.clone(), r.status))
            .collect()
    }

    fn active(&self, id: u64) -> bool {
        let snapshot = self.emulator.snapshot();
        snapshot
            .procore_users()
            .iter()
            .find(|u| u.id == id)
            .unwrap()
            .is_active
    }

    fn on_project(&self, id: u64) -> Vec<Option<u64>> {
        self.emulator
            .snapshot()
            .project_users()
            .iter()
            .filter(|m| m.user_id == id && m.project_id == self.project())
            .map(|m| m.permission_template_id)
            .collect()
    }

    /// Every run's report, oldest first.
    fn reports(&self) -> Vec<String> {
        let runs: Vec<PathBuf> = std::fs::read_dir(self.data().join("runs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        // Oldest first by when each report was written: run ids do not sort
        // by time.
        let mut reports: Vec<(std::time::SystemTime, String)> = runs
            .iter()
            .filter_map(|r| {
                let path = r.join("report.html");
                let written = std::fs::metadata(&path).ok()?.modified().ok()?;
                Some((written, std::fs::read_to_string(path).ok()?))
            })
            .collect();
        reports.sort_by_key(|(written, _)| *written);
        reports.into_iter().map(|(_, text)| text).collect()
    }

    /// The only pending plan's id.
    async fn plan_id(&self) -> String {
        let run = self.sluice(&["approvals", "--json"]).await;
        let plans: Value = serde_json::from_str(&run.stdout).unwrap();
        let plans = plans.as_array().unwrap();
        assert_eq!(plans.len(), 1, "{plans:?}");
        plans[0]["id"].as_str().unwrap().to_string()
    }
}

fn leaver(key: &str, id: u64, reason: &str) -> Value {
    json!({"key": key, "procore_id": id, "name": key, "email": key, "login": key, "reason": reason})
}

fn param(name: &str, list: &[Value]) -> String {
    format!("{name}={}", Value::Array(list.to_vec()))
}

fn row_of(report: &str, key: &str) -> String {
    report
        .lines()
        .find(|l| l.starts_with("<tr><td>") && l.contains(&format!("<td>{key}</td>")))
        .unwrap_or_else(|| panic!("no row for {key}:\n{report}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leavers_wait_with_the_approve_command_and_approve_run_keeps_the_params() {
    let env = Env::start().await;
    let leavers = param(
        "leavers",
        &[
            leaver("ann@x.com", env.ann, "no license group"),
            leaver("cy@x.com", env.cy, "account disabled"),
        ],
    );
    let first = env.run(&["--param", &leavers]).await;
    assert!(
        env.writes().is_empty(),
        "nothing is deactivated before approval"
    );
    let id = env.plan_id().await;
    let report = env.reports().pop().unwrap();
    let ann = row_of(&report, "ann@x.com");
    assert!(
        ann.starts_with("<tr><td>waiting for approval</td>"),
        "{ann}"
    );
    assert!(ann.ends_with("<td>no license group</td></tr>"), "{ann}");
    assert!(
        report.contains(&format!(
            "Approve with: sluice approve {id} --revision 1 (one person: sluice approve {id} --revision 1 --only KEY"
        )),
        "{report}"
    );
    assert!(
        first.stderr.contains(&format!("sluice approve {id}")),
        "{}",
        first.stderr
    );
    // `approvals show` says why each waits, before the input it cuts.
    let show = env.sluice(&["approvals", "show", &id]).await;
    let line = |key: &str| {
        show.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no line for {key}:\n{}", show.stdout))
            .to_string()
    };
    assert!(
        line("ann@x.com").contains("pending     1  no license group; input {"),
        "{}",
        show.stdout
    );
    assert!(
        line("cy@x.com").contains("pending     1  account disabled; input {"),
        "{}",
        show.stdout
    );

    // Approving Ann and running at once: the run gets the same leavers
    // param (without it, `leavers` would be empty and nobody deactivated).
    let approved = env
        .sluice(&[
            "approve",
            &id,
            "--only",
            "ann@x.com",
            "--by",
            "alice",
            "--run",
        ])
        .await;
    assert_eq!(approved.code, 0, "{}\n{}", approved.stdout, approved.stderr);
    let (company, project) = (env.company().to_string(), env.project());
    assert_eq!(
        env.writes(),
        [
            (
                "PATCH".into(),
                format!("/rest/v1.0/companies/{company}/users/{}", env.ann),
                200
            ),
            (
                "DELETE".into(),
                format!(
                    "/rest/v1.0/projects/{project}/users/{}/actions/remove",
                    env.ann
                ),
                204
            ),
        ],
        "the nested PATCH (a flat body is a 400) and the documented removal"
    );
    assert!(!env.active(env.ann) && env.on_project(env.ann).is_empty());
    assert!(env.active(env.cy), "Cy was not approved");
    let report = env.reports().pop().unwrap();
    let ann = row_of(&report, "ann@x.com");
    assert!(
        ann.contains("<td>deactivated</td>") && ann.contains("removed from the project"),
        "{ann}"
    );
    assert!(row_of(&report, "cy@x.com").contains("<td>waiting for approval</td>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returner_is_reactivated_once_and_back_on_the_project() {
    let env = Env::start().await;
    let returners = param(
        "returners",
        &[
            json!({"key": "bo@x.com", "procore_id": env.bo, "name": "Bo",
                 "license_group": "License – Office E3", "matched_by": "upn"}),
        ],
    );
    let run = env.run(&["--param", &returners, "--json"]).await;
    let (company, project) = (env.company().to_string(), env.project());
    let reactivate = format!("/rest/v1.0/companies/{company}/users/inactive/{}", env.bo);
    let add = format!("/rest/v1.0/projects/{project}/users/{}/actions/add", env.bo);
    assert_eq!(
        env.writes(),
        [
            ("PATCH".into(), reactivate.clone(), 200),
            ("POST".into(), add.clone(), 201)
        ]
    );
    assert!(env.active(env.bo));
    let template: u64 = var(&env.env, "PROCORE_PERMISSION_TEMPLATE_ID")
        .parse()
        .unwrap();
    assert_eq!(env.on_project(env.bo), [Some(template)]);
    let output = &run.output_of("reactivate")["items"][0]["output"];
    assert_eq!(output["status"], "reactivated");
    assert_eq!(output["project"], "added");
    let report = env.reports().pop().unwrap();
    let bo = row_of(&report, "bo@x.com");
    assert!(bo.starts_with("<tr><td>reactivated</td>"), "{bo}");
    assert!(
        bo.ends_with("<td>License – Office E3 (matched by UPN)</td></tr>"),
        "{bo}"
    );

    // The same list again: Procore says Bo is not inactive (404), the
    // look-up finds Bo active, and nothing is reactivated a second time.
    let again = env.run(&["--param", &returners, "--json"]).await;
    assert_eq!(
        again.output_of("reactivate")["items"][0]["output"]["status"],
        "already_active"
    );
    let patches: Vec<u16> = env
        .writes()
        .into_iter()
        .filter(|(m, p, _)| m == "PATCH" && *p == reactivate)
        .map(|(_, _, s)| s)
        .collect();
    assert_eq!(patches, [200, 404], "one reactivation");
    assert_eq!(env.on_project(env.bo).len(), 1, "one membership");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_only_tells_the_persons_story_through_the_steps() {
    let env = Env::start().await;
    let leavers = param(
        "leavers",
        &[
            leaver("ann@x.com", env.ann, "user gone"),
            leaver("cy@x.com", env.cy, "no license group"),
        ],
    );
    let returners = param(
        "returners",
        &[
            json!({"key": "bo@x.com", "procore_id": env.bo, "license_group": "License – Office E3", "matched_by": "mail"}),
        ],
    );
    let run = env
        .run(&[
            "--param",
            &leavers,
            "--param",
            &returners,
            "--only",
            "Ann@X.com",
            "--only",
            "bo@x.com",
        ])
        .await;
    let id = env.plan_id().await;
    let err = &run.stderr;
    assert!(err.contains("  Ann@X.com:"), "{err}");
    assert!(
        err.contains(&format!(
            "deactivate  waits for approval; approve with `sluice approve {id} --revision 1 --only ann@x.com`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "reactivate  license group License – Office E3, matched by mail, Procore user {}, reactivated, project: added",
            env.bo
        )),
        "{err}"
    );
    assert!(
        !err.contains("cy@x.com"),
        "only the people asked about: {err}"
    );
    assert!(!err.contains("\"status\""), "no raw outputs: {err}");
    assert!(env.active(env.cy) && env.active(env.ann));
}

/// A deactivation Procore applied but answered 500 (every resend too) is
/// looked up on the inactive list; when that read fails as well, the item
/// fails with the PATCH's error and says the look-up failed, and nothing
/// follows it (no project removal): a read that failed never counts as
/// "inactive", although Procore did deactivate Ann here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_deactivation_answer_whose_look_up_fails_too_fails_the_item() {
    let env = Env::start().await;
    let leavers = param(
        "leavers",
        &[leaver("ann@x.com", env.ann, "no license group")],
    );
    env.run(&["--param", &leavers]).await;
    let id = env.plan_id().await;
    let approved = env.sluice(&["approve", &id, "--by", "alice"]).await;
    assert_eq!(approved.code, 0, "{}\n{}", approved.stdout, approved.stderr);
    let company = env.company().to_string();
    let fault = |method: &str, path_suffix: String, fault| TargetedFault {
        method: method.into(),
        path_suffix,
        body_contains: None,
        at: Vec::new(),
        fault,
    };
    env.emulator.set_faults(Faults {
        targeted: vec![
            fault(
                "PATCH",
                format!("/companies/{company}/users/{}", env.ann),
                FaultKind::ServerErrorAfterApply,
            ),
            fault(
                "GET",
                format!("/companies/{company}/users/inactive"),
                FaultKind::ServerError,
            ),
        ],
        ..Faults::default()
    });
    let run = env.run(&["--param", &leavers, "--json"]).await;
    let item = &run.output_of("deactivate")["items"][0];
    assert_eq!(item["status"], "failed", "{item:#}");
    let message = item["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("HTTP 500 from PATCH")
            && message.contains("the look-up of user")
            && message.contains("may have been applied; the next run reads Procore"),
        "{item:#}"
    );
    assert!(!env.active(env.ann), "Procore applied the change");
    let looked_up = env.emulator.snapshot().requests.iter().any(|r| {
        r.method == "GET"
            && r.path
                .starts_with(&format!("/rest/v1.0/companies/{company}/users/inactive?"))
    });
    assert!(looked_up, "the step looked Ann up");
    assert!(
        env.writes().iter().all(|(method, _, _)| method == "PATCH"),
        "no removal: {:?}",
        env.writes()
    );
    assert_eq!(env.on_project(env.ann).len(), 1, "still on the project");
}
