//! The shipped flow run through the `sluice` binary against the emulators:
//! starting them, running the binary with exactly the environment given,
//! reading what the run printed, and the checks every such test makes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sluice_emulator::scenario::ProcoreUser;
use sluice_emulator::state::LoggedRequest;
use sluice_emulator::{EmulatorConfig, RunningEmulator, StateSnapshot};

pub fn flow_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flows/procore-license-sync.toml")
}

/// What one run of the binary left: its exit code and what it printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The events of a `--json` run, one per stdout line.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// What the `create` step said for each person of a `--json` run, by
    /// key: its output (`status`, `reason`, `project`…), or for an item
    /// that failed, `{"status": "failed", "error": …}`.
    pub fn create_outputs(&self) -> BTreeMap<String, Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "item_finished" && e["step"] == "create")
            .map(|e| {
                let key = e["input"]["user"]["key"].as_str().unwrap_or("").to_string();
                let output = if e["status"] == "succeeded" {
                    e["output"].clone()
                } else {
                    serde_json::json!({"status": "failed", "error": e["error"]})
                };
                (key, output)
            })
            .collect()
    }

    /// What the `create` step did for each person of a `--json` run, by
    /// key: `created`, `would_create`, `conflict` or `failed`.
    pub fn create_outcomes(&self) -> BTreeMap<String, String> {
        self.create_outputs()
            .into_iter()
            .map(|(key, output)| (key, output["status"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    /// The id of a `--json` run, from its first event that names it.
    pub fn run_id(&self) -> String {
        self.events()
            .into_iter()
            .find_map(|e| e["run_id"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no event names the run:\n{}", self.stdout))
    }

    /// The report a `--json` run wrote in `data_dir`.
    pub fn report(&self, data_dir: &Path) -> String {
        let path = data_dir
            .join("runs")
            .join(self.run_id())
            .join("report.html");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
    }

    /// The output of step `step` of a `--json` run.
    pub fn output_of(&self, step: &str) -> Value {
        self.events()
            .into_iter()
            .find(|e| e["event"] == "step_finished" && e["step"] == step)
            .map(|e| e["output"].clone())
            .unwrap_or_else(|| panic!("no step_finished for {step}:\n{}", self.stdout))
    }
}

/// Runs `sluice run` on the shipped flow with exactly the given environment.
pub async fn sluice(env: &[(String, String)], data_dir: &Path, extra: &[&str]) -> Run {
    let flow = flow_path();
    let mut args = vec!["run", flow.to_str().expect("a UTF-8 path")];
    args.extend_from_slice(extra);
    sluice_cmd(env, data_dir, &args).await
}

/// Runs the `sluice` binary with exactly the given environment and arguments.
pub async fn sluice_cmd(env: &[(String, String)], data_dir: &Path, args: &[&str]) -> Run {
    sluice_cmd_in(None, env, data_dir, args).await
}

/// [`sluice_cmd`] in the working directory `cwd` (this process's if `None`).
pub async fn sluice_cmd_in(
    cwd: Option<&Path>,
    env: &[(String, String)],
    data_dir: &Path,
    args: &[&str],
) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    cmd.env_clear().args(args).env("SLUICE_DATA_DIR", data_dir);
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

/// Emulators started with `config`, the environment that points the flow at
/// them, and a fresh data directory.
pub async fn emulated(
    config: EmulatorConfig,
) -> (RunningEmulator, Vec<(String, String)>, tempfile::TempDir) {
    let emulator = sluice_emulator::start(config).await.unwrap();
    let env = emulator.env_vars();
    (emulator, env, tempfile::tempdir().unwrap())
}

/// The report of the only run in `data_dir`.
pub fn only_report(data_dir: &Path) -> String {
    let runs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    std::fs::read_to_string(runs[0].join("report.html")).unwrap()
}

/// The people rows of a report, of every section: `(status, email or
/// login, details)` (the columns after them, such as why, are left out).
pub fn report_rows(html: &str) -> Vec<(String, String, String)> {
    html.lines()
        .filter_map(|l| l.strip_prefix("<tr><td>")?.strip_suffix("</td></tr>"))
        .map(|l| l.split("</td><td>").collect::<Vec<_>>())
        .filter(|cells| cells.len() >= 4)
        .map(|c| (c[0].to_string(), c[2].to_string(), c[3].to_string()))
        .collect()
}

pub fn var<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    &env.iter().find(|(k, _)| k == name).unwrap().1
}

pub fn without(env: &[(String, String)], names: &[&str]) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| !names.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// A request creating a Procore company user.
pub fn is_create(r: &LoggedRequest) -> bool {
    r.method == "POST" && r.path.starts_with("/rest/v1.0/companies/") && r.path.ends_with("/users")
}

/// The keys (lower-cased email addresses) of the users created through the API.
pub fn created_keys(state: &StateSnapshot) -> BTreeSet<String> {
    state
        .created_users()
        .iter()
        .map(|u| u.email_address.to_lowercase())
        .collect()
}

/// Users who were there before the run are exactly as they were.
pub fn assert_untouched(before: &[ProcoreUser], state: &StateSnapshot) {
    for old in before {
        let now = state
            .procore_users()
            .iter()
            .find(|u| u.id == old.id)
            .expect("nobody is deleted");
        assert_eq!(
            (
                now.is_active,
                &now.login,
                &now.email_address,
                &now.first_name,
                &now.last_name,
                &now.updated_at
            ),
            (
                old.is_active,
                &old.login,
                &old.email_address,
                &old.first_name,
                &old.last_name,
                &old.updated_at
            )
        );
    }
}

/// None of `secrets` (the emulator's client secrets and every token it
/// issued), in any encoding ([`super::secrets::secret_forms`]), is in what
/// the run printed or in any file it left in `data_dir`: the history
/// database and its log, the run folders, reports.
pub fn assert_no_secret(run: &Run, secrets: &[String], data_dir: &Path) {
    assert!(secrets.len() > 2, "no token was issued: {secrets:?}");
    let mut places = vec![
        ("stdout".to_string(), run.stdout.as_bytes().to_vec()),
        ("stderr".to_string(), run.stderr.as_bytes().to_vec()),
    ];
    places.extend(super::secrets::files_under(data_dir));
    let found = super::secrets::secrets_found(&places, secrets);
    assert!(
        found.is_empty(),
        "of the emulator's {} secrets, leaked: {found:#?}",
        secrets.len()
    );
}

/// One person of [`licensed_tenant`]: their mail (the key), Entra id and
/// Procore id.
pub struct Licensed {
    pub mail: &'static str,
    pub graph_id: String,
    pub procore_id: u64,
}

/// A hand-written tenant in which each of `mails` is in the license group
/// `group` and has an active Procore user on the project: the scenario,
/// the group's id and the people. A first run of the shipped flow adopts
/// them all.
pub fn licensed_tenant(
    group: &str,
    mails: &[&'static str],
) -> (sluice_emulator::Scenario, String, Vec<Licensed>) {
    let mut scenario = sluice_emulator::Scenario::hand_written();
    let group = scenario.add_group(group);
    let project = scenario.project_ids[0];
    let mut people = Vec::new();
    for &mail in mails {
        let name = format!("Person {}", mail.split('@').next().unwrap());
        let graph_id = scenario
            .add_user(&name, Some(mail), mail, &[group.as_str()])
            .id
            .clone();
        let procore_id = scenario.add_procore_user(mail, mail, true).id;
        scenario
            .project_users
            .push(sluice_emulator::scenario::ProjectUser {
                project_id: project,
                user_id: procore_id,
                permission_template_id: None,
            });
        people.push(Licensed {
            mail,
            graph_id,
            procore_id,
        });
    }
    (scenario, group, people)
}
