//! The approval gate, end to end through the `sluice` binary with a real
//! component (the `noop` fixture) and the run history's SQLite store in a
//! temporary data directory: a step with `approval` holds its items in one
//! pending plan that every run updates; `sluice approve` / `reject` decide
//! by key with who and a note; the next run runs exactly the approved keys
//! still among the items; approvals are spent once; keys that leave are
//! closed; rejected keys stay held; `{ above = N }` holds the whole batch;
//! a guard forces approval; `--dry-run` and `--replay` change no approval; `--only`
//! narrows a run to some keys; `sluice ledger` tells a key's story; and a
//! run without a store to keep approvals in runs nothing. The first test
//! runs on PostgreSQL too (a throwaway cluster this process starts).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::emulated::{Run, sluice_cmd, sluice_cmd_in};
use serde_json::Value;

/// A flow whose `act` step runs `noop` once per person, under `approval`.
fn flow(dir: &Path, approval: &str) -> PathBuf {
    let noop = common::fixture("noop");
    let text = format!(
        r#"name = "people"

[params]
people = [{{ key = "Ann@x.com" }}, {{ key = "bob@x.com" }}, {{ key = "cy@x.com" }}]
max = 2
guard = ""

[[step]]
id = "act"
uses = "{}"
for_each = "${{params.people}}"
for_each_key = "${{item.key}}"
approval = {approval}
with = {{ who = "${{item.key}}" }}
"#,
        noop.display()
    );
    common::write_flow(dir, "people.toml", &text)
}

struct Env {
    dir: tempfile::TempDir,
    file: PathBuf,
    /// The environment every command gets: `SLUICE_DATABASE_URL` on
    /// PostgreSQL, nothing on SQLite (the data directory's store).
    vars: Vec<(String, String)>,
}

impl Env {
    fn new(approval: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let file = flow(dir.path(), approval);
        Env {
            dir,
            file,
            vars: Vec::new(),
        }
    }

    /// The same, every command on a new database of this process's
    /// throwaway PostgreSQL.
    async fn on_postgres(approval: &str) -> Env {
        let url = sluice_store::testing::TempPostgres::shared()
            .new_database()
            .await;
        let mut env = Env::new(approval);
        env.vars = vec![("SLUICE_DATABASE_URL".to_string(), url)];
        env
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn sluice(&self, args: &[&str]) -> Run {
        sluice_cmd(&self.vars, &self.data(), args).await
    }

    /// `sluice run` on the flow, with more arguments; it must succeed.
    async fn run(&self, extra: &[&str]) -> Run {
        let mut args = vec!["run", self.file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let run = self.sluice(&args).await;
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        run
    }

    async fn json(&self, args: &[&str]) -> Value {
        let run = self.sluice(args).await;
        assert_eq!(run.code, 0, "{args:?}: {}\n{}", run.stdout, run.stderr);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
    }

    /// The pending plans.
    async fn plans(&self) -> Vec<Value> {
        self.json(&["approvals", "--json"])
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// The only pending plan's id.
    async fn plan_id(&self) -> String {
        let plans = self.plans().await;
        assert_eq!(plans.len(), 1, "{plans:?}");
        plans[0]["id"].as_str().unwrap().to_string()
    }

    /// Each item of a plan: `(key, state)`.
    async fn items(&self, id: &str) -> Vec<(String, String)> {
        let plan = self.json(&["approvals", "show", id, "--json"]).await;
        plan["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["key"].as_str().unwrap().to_string(),
                    i["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// What a key's ledger says, as `(kind, status or decision, by)`.
    async fn ledger(&self, key: &str) -> Vec<(String, String, String)> {
        let entries = self.json(&["ledger", key, "--json"]).await;
        entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let what = e["status"]
                    .as_str()
                    .or(e["decision"].as_str())
                    .unwrap_or("")
                    .to_string();
                (
                    e["kind"].as_str().unwrap().to_string(),
                    what,
                    e["by"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

fn s(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn entry(kind: &str, what: &str, by: &str) -> (String, String, String) {
    (kind.into(), what.into(), by.into())
}

#[tokio::test]
async fn approval_always_holds_every_item_in_one_plan_and_runs_exactly_the_approved_keys() {
    approval_always_holds_every_item_and_runs_exactly_the_approved_keys(Env::new(r#""always""#))
        .await;
}

/// The same commands (`run`, `approvals`, `approvals show`, `approve`,
/// `ledger`, `runs`, `runs show`) on PostgreSQL: nothing is kept in the
/// data directory's SQLite store.
#[tokio::test]
async fn approvals_ledger_and_runs_commands_work_the_same_on_postgres() {
    let env = Env::on_postgres(r#""always""#).await;
    approval_always_holds_every_item_and_runs_exactly_the_approved_keys(env).await;
}

async fn approval_always_holds_every_item_and_runs_exactly_the_approved_keys(env: Env) {
    let first = env.run(&[]).await;
    let id = env.plan_id().await;
    assert!(
        first.stderr.contains(&format!("sluice approve {id}")),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("3 wait for approval"),
        "{}",
        first.stderr
    );
    // A second run updates the plan; it does not add one.
    env.run(&[]).await;
    assert_eq!(env.plan_id().await, id);
    assert_eq!(
        env.items(&id).await,
        s(&[
            ("Ann@x.com", "pending"),
            ("bob@x.com", "pending"),
            ("cy@x.com", "pending")
        ])
    );
    // Keys are matched without case.
    let approve = env
        .sluice(&[
            "approve",
            &id,
            "--only",
            "ANN@X.COM",
            "--by",
            "alice",
            "--note",
            "left in May\nrejected 2 items",
        ])
        .await;
    assert_eq!(approve.code, 0, "{}", approve.stderr);
    assert!(
        approve.stdout.contains("approved 1 item"),
        "{}",
        approve.stdout
    );
    // The note's line break is shown, not obeyed: it fakes no line.
    assert!(
        approve
            .stdout
            .contains(": \"left in May\\nrejected 2 items\""),
        "{}",
        approve.stdout
    );
    assert!(
        !approve.stdout.lines().any(|l| l.starts_with("rejected")),
        "{}",
        approve.stdout
    );
    let applied = env.run(&[]).await;
    assert!(
        applied.stderr.contains("1 approved item run"),
        "{}",
        applied.stderr
    );
    assert_eq!(
        env.items(&id).await,
        s(&[
            ("Ann@x.com", "done"),
            ("bob@x.com", "pending"),
            ("cy@x.com", "pending")
        ])
    );
    assert_eq!(
        env.ledger("ann@x.com").await,
        [
            entry("item", "waiting", ""),
            entry("item", "waiting", ""),
            entry("decision", "approved", "alice"),
            entry("item", "succeeded", ""),
        ]
    );
    // The approval is spent: approving it again is refused, clearly.
    let again = env.sluice(&["approve", &id, "--only", "ann@x.com"]).await;
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("already approved and run"),
        "{}",
        again.stderr
    );
    // Too late to reject it, too.
    let reject = env.sluice(&["reject", &id, "--only", "ann@x.com"]).await;
    assert_eq!(reject.code, 2);
    assert!(
        reject.stderr.contains("so there is nothing left to reject"),
        "{}",
        reject.stderr
    );
    // A rejection naming it and one that has not run (as a run under way
    // spends them) rejects the one and tells the other.
    let stop = env
        .sluice(&["reject", &id, "--only", "ann@x.com", "--only", "bob@x.com"])
        .await;
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    assert!(
        stop.stdout.contains("rejected 1 item of plan")
            && stop.stdout.contains("\n  bob@x.com\n")
            && stop.stdout.contains(
                "Left as it was: 1 item that already ran or is no longer among the step's items: Ann@x.com."
            ),
        "{}",
        stop.stdout
    );
    // And a later run does not run it again.
    env.run(&[]).await;
    let ann = env.ledger("ann@x.com").await;
    assert_eq!(
        ann.iter().filter(|e| e.1 == "succeeded").count(),
        1,
        "{ann:?}"
    );
    assert_eq!(ann.last().unwrap().1, "waiting", "a new request: {ann:?}");
    // runs show names the plan and the approve command.
    let runs = env.json(&["runs", "--json"]).await;
    let last = runs[0]["id"].as_str().unwrap().to_string();
    let show = env.sluice(&["runs", "show", &last]).await;
    assert!(
        show.stdout.contains(&format!("sluice approve {id}")),
        "{}",
        show.stdout
    );
    // The flow writes no report, so no output folder is named.
    assert!(!show.stdout.contains("  output "), "{}", show.stdout);
    let other = env.sluice(&["runs", "--flow", "nosuch"]).await;
    assert!(
        other.stdout.contains("No runs of flow `nosuch` recorded"),
        "{}",
        other.stdout
    );
    // Everything came from the store the environment names.
    let sqlite = sluice_store::path_in(&env.data());
    assert_eq!(sqlite.exists(), env.vars.is_empty(), "{}", sqlite.display());
}

/// A run started with a relative path records the file's absolute path,
/// so `approve --run` from any other directory runs it, and `approvals
/// show` and `runs show` name a file that works.
#[tokio::test]
async fn approve_run_works_from_any_directory_after_a_run_started_with_a_relative_path() {
    let env = Env::new(r#""always""#);
    let cwd = env.dir.path();
    let data = env.data();
    let first = sluice_cmd_in(Some(cwd), &env.vars, &data, &["run", "people.toml"]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let id = env.plan_id().await;
    let absolute = std::fs::canonicalize(cwd).unwrap().join("people.toml");
    let absolute = absolute.to_str().unwrap();
    let plan = env.json(&["approvals", "show", &id, "--json"]).await;
    assert_eq!(plan["plan"]["flow_file"], absolute, "{plan}");
    let show = env.sluice(&["approvals", "show", &id]).await;
    assert!(
        show.stdout.contains(&format!("people ({absolute})")),
        "{}",
        show.stdout
    );
    // Elsewhere: the approval's run runs the file the plan names.
    let elsewhere = tempfile::tempdir().unwrap();
    let approve = sluice_cmd_in(
        Some(elsewhere.path()),
        &env.vars,
        &data,
        &[
            "approve",
            &id,
            "--only",
            "bob@x.com",
            "--by",
            "alice",
            "--run",
        ],
    )
    .await;
    assert_eq!(approve.code, 0, "{}\n{}", approve.stdout, approve.stderr);
    assert!(
        approve.stderr.contains(&format!("running {absolute} now")),
        "{}",
        approve.stderr
    );
    assert!(
        approve.stderr.contains("1 approved item run"),
        "{}",
        approve.stderr
    );
    // It says the items run now, not to run the flow or use `--run`.
    assert!(
        approve
            .stdout
            .contains("The approved items run now, if they are still among the step's items."),
        "{}",
        approve.stdout
    );
    assert!(!approve.stdout.contains("--run"), "{}", approve.stdout);
    assert_eq!(
        env.items(&id).await,
        s(&[
            ("Ann@x.com", "pending"),
            ("bob@x.com", "done"),
            ("cy@x.com", "pending")
        ])
    );
    let runs = env.json(&["runs", "--json"]).await;
    let last = runs[0]["id"].as_str().unwrap().to_string();
    let show = env.sluice(&["runs", "show", &last]).await;
    assert!(show.stdout.contains(absolute), "{}", show.stdout);
}

/// `approve --run` whose flow file is gone approves nothing: it said
/// "approved", then failed to run, and the same command was then refused
/// (nothing pending). Once the file is back, the same command does both.
#[tokio::test]
async fn approve_run_with_the_flow_file_gone_approves_nothing() {
    let env = Env::new(r#""always""#);
    env.run(&[]).await;
    let id = env.plan_id().await;
    let file = &env.file;
    let moved = file.with_extension("away");
    std::fs::rename(file, &moved).unwrap();
    let args = ["approve", id.as_str(), "--only", "bob@x.com", "--run"];
    let refused = env.sluice(&args).await;
    assert_eq!(refused.code, 2, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stderr
            .contains("nothing was approved: `--run` would run plan")
            && refused.stderr.contains("which cannot be read"),
        "{}",
        refused.stderr
    );
    assert!(
        env.items(&id)
            .await
            .iter()
            .all(|(_, state)| state == "pending")
    );
    std::fs::rename(&moved, file).unwrap();
    let approved = env.sluice(&args).await;
    assert_eq!(approved.code, 0, "{}\n{}", approved.stdout, approved.stderr);
    assert!(
        env.items(&id)
            .await
            .contains(&("bob@x.com".to_string(), "done".to_string()))
    );
}

/// A plan an older `sluice` recorded with a relative path: `approve --run`
/// from a directory where it names nothing says so, and how to run it.
#[tokio::test]
async fn approve_run_with_an_old_relative_path_says_where_it_was_relative_to() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let store = sluice_store::Store::open(&sluice_store::Location::Sqlite(sluice_store::path_in(
        &data,
    )))
    .await
    .unwrap();
    let update = sluice_store::GateUpdate {
        flow: "people".into(),
        step: "act".into(),
        run_id: "20260101T000000Z-aaaaaa".into(),
        flow_file: "flows/people.toml".into(),
        params: vec![("max".into(), "1".into())],
        reason: Some("this step always needs approval".into()),
        held: vec![sluice_store::HeldItem {
            key: "ann@x.com".into(),
            input: serde_json::json!({"who": "ann@x.com"}),
        }],
        gone: Vec::new(),
        fence: None,
    };
    let id = store.record_gate(&update).await.unwrap().unwrap().id;
    drop(store);
    let approve = sluice_cmd_in(
        Some(dir.path()),
        &[],
        &data,
        &["approve", &id, "--by", "alice", "--run"],
    )
    .await;
    assert_eq!(approve.code, 2, "{}\n{}", approve.stdout, approve.stderr);
    assert!(
        approve.stdout.contains("approved 1 item"),
        "{}",
        approve.stdout
    );
    // Not run, so not said to run now: run later, as without `--run`.
    assert!(
        approve
            .stdout
            .contains("The approved items run at the flow's next run"),
        "{}",
        approve.stdout
    );
    let said = approve.stderr;
    for needle in [
        "the flow was not run",
        "flows/people.toml, a path relative to the directory its run (20260101T000000Z-aaaaaa) was started in",
        "Run it from that directory (`sluice run flows/people.toml --param max=1`)",
        "or pass the file: `sluice run PATH/TO/people.toml --param max=1`",
    ] {
        assert!(said.contains(needle), "{needle:?} missing: {said}");
    }
    assert!(!said.contains("cannot read flow file"), "{said}");
}

#[tokio::test]
async fn keys_that_leave_are_closed_and_rejected_keys_stay_held() {
    let env = Env::new(r#""always""#);
    env.run(&[]).await;
    let id = env.plan_id().await;
    for (verb, key) in [("approve", "ann@x.com"), ("reject", "bob@x.com")] {
        let r = env
            .sluice(&[verb, &id, "--only", key, "--by", "alice"])
            .await;
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    // Ann is no longer among the items before the next run.
    let fewer = r#"[{"key": "bob@x.com"}, {"key": "cy@x.com"}]"#;
    let run = env.run(&["--param", &format!("people={fewer}")]).await;
    assert!(run.stderr.contains("1 rejected"), "{}", run.stderr);
    assert!(run.stderr.contains("1 no longer needed"), "{}", run.stderr);
    assert_eq!(
        env.items(&id).await,
        s(&[
            ("Ann@x.com", "closed"),
            ("bob@x.com", "rejected"),
            ("cy@x.com", "pending")
        ])
    );
    let ann = env.ledger("ann@x.com").await;
    assert_eq!(ann.last().unwrap().0, "closed", "{ann:?}");
    assert!(!ann.iter().any(|e| e.1 == "succeeded"), "{ann:?}");
    // A closed key cannot be approved.
    let closed = env.sluice(&["approve", &id, "--only", "ann@x.com"]).await;
    assert_eq!(closed.code, 2);
    assert!(
        closed.stderr.contains("no longer among"),
        "{}",
        closed.stderr
    );
    // Rejected stays rejected at every run, and never runs; Ann, back
    // among the items, is a new request and waits again.
    env.run(&[]).await;
    assert_eq!(
        env.items(&id).await,
        s(&[
            ("Ann@x.com", "pending"),
            ("bob@x.com", "rejected"),
            ("cy@x.com", "pending")
        ])
    );
    let bob = env.ledger("bob@x.com").await;
    assert_eq!(
        bob,
        [
            entry("item", "waiting", ""),
            entry("decision", "rejected", "alice"),
            entry("item", "rejected", ""),
            entry("item", "rejected", ""),
        ]
    );
    // An unknown key or plan is named.
    let unknown = env.sluice(&["approve", &id, "--only", "zed@x.com"]).await;
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no item with key `zed@x.com`"),
        "{}",
        unknown.stderr
    );
    let no_plan = env.sluice(&["reject", "ap-000000"]).await;
    assert_eq!(no_plan.code, 2);
    assert!(
        no_plan.stderr.contains("no approval plan `ap-000000`"),
        "{}",
        no_plan.stderr
    );
}

/// A decision made from what a run printed covers what it printed: the
/// command names the plan's revision, and an item a later run added to
/// the same plan stays pending until someone looks at it. (A plain
/// `sluice approve ID` approved the items added since too.)
#[tokio::test]
async fn approving_a_revision_leaves_what_a_later_run_added_pending() {
    let env = Env::new(r#""always""#);
    let two = r#"[{"key": "Ann@x.com"}, {"key": "bob@x.com"}]"#;
    let first = env.run(&["--param", &format!("people={two}")]).await;
    let id = env.plan_id().await;
    assert!(
        first
            .stderr
            .contains(&format!("to approve: `sluice approve {id} --revision 1`")),
        "{}",
        first.stderr
    );
    // The same people again: nothing joined, the revision stays.
    let again = env.run(&["--param", &format!("people={two}")]).await;
    assert!(
        again
            .stderr
            .contains(&format!("sluice approve {id} --revision 1`")),
        "{}",
        again.stderr
    );
    // cy joins the plan at a later run: revision 2.
    let grown = env.run(&[]).await;
    assert!(
        grown
            .stderr
            .contains(&format!("sluice approve {id} --revision 2`")),
        "{}",
        grown.stderr
    );
    let plan = env.json(&["approvals", "show", &id, "--json"]).await;
    assert_eq!(plan["plan"]["revision"], 2);
    let joined: Vec<(&str, u64)> = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["key"].as_str().unwrap(), i["revision"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        joined,
        [("Ann@x.com", 1), ("bob@x.com", 1), ("cy@x.com", 2)]
    );
    let show = env.sluice(&["approvals", "show", &id]).await;
    for needle in [
        "  revision  2 (REV: the revision each item joined at)",
        &format!("Approve: sluice approve {id} --revision 2 [--only KEY]"),
    ] {
        assert!(show.stdout.contains(needle), "{needle:?}: {}", show.stdout);
    }
    assert!(
        show.stdout
            .lines()
            .any(|l| l.starts_with("  cy@x.com") && l.contains("pending     2  ")),
        "{}",
        show.stdout
    );

    // Approving what the first run showed leaves cy pending, and says so.
    let approve = env
        .sluice(&["approve", &id, "--revision", "1", "--by", "alice"])
        .await;
    assert_eq!(approve.code, 0, "{}", approve.stderr);
    for needle in [
        "approved 2 items of plan",
        "Left pending: 1 item that joined the plan after revision 1, after what you looked at: cy@x.com.",
    ] {
        assert!(
            approve.stdout.contains(needle),
            "{needle:?}: {}",
            approve.stdout
        );
    }
    assert_eq!(
        env.items(&id).await,
        s(&[
            ("Ann@x.com", "approved"),
            ("bob@x.com", "approved"),
            ("cy@x.com", "pending")
        ])
    );
    // Nothing of revision 1 is left to approve; cy cannot be approved as
    // part of it; a revision the plan never had is named.
    for (args, needle) in [
        (
            vec!["--revision", "1"],
            "no pending item from revision 1 or before; 1 pending joined later",
        ),
        (
            vec!["--revision", "1", "--only", "cy@x.com"],
            "`cy@x.com` joined plan",
        ),
        (
            vec!["--revision", "3"],
            "has no revision 3: it is at revision 2",
        ),
    ] {
        let mut full = vec!["approve", id.as_str()];
        full.extend(args);
        let refused = env.sluice(&full).await;
        assert_eq!(refused.code, 2, "{full:?}: {}", refused.stdout);
        assert!(
            refused.stderr.contains(needle),
            "{needle:?}: {}",
            refused.stderr
        );
    }
    let zero = env.sluice(&["approve", &id, "--revision", "0"]).await;
    assert_eq!(zero.code, 2, "{}", zero.stderr);
    assert_eq!(env.items(&id).await[2].1, "pending");

    // The next run runs the two approved; cy still waits, and `runs show`
    // names the revision that run left the plan at.
    let applied = env.run(&[]).await;
    assert!(
        applied.stderr.contains("2 approved items run"),
        "{}",
        applied.stderr
    );
    let runs = env.json(&["runs", "--json"]).await;
    let last = runs[0]["id"].as_str().unwrap().to_string();
    let show = env.sluice(&["runs", "show", &last]).await;
    assert!(
        show.stdout
            .contains(&format!("approve with `sluice approve {id} --revision 2`")),
        "{}",
        show.stdout
    );
}

#[tokio::test]
async fn above_a_threshold_the_whole_batch_waits_and_approved_keys_do_not_count() {
    let env = Env::new(r#"{ above = "${params.max}" }"#);
    // Three unapproved items, more than 2: none runs.
    let run = env.run(&[]).await;
    assert!(
        run.stderr
            .contains("3 items without approval are more than the 2"),
        "{}",
        run.stderr
    );
    let id = env.plan_id().await;
    assert_eq!(env.ledger("cy@x.com").await, [entry("item", "waiting", "")]);
    // One approved: two unapproved are left, within the threshold, so all run.
    let r = env
        .sluice(&["approve", &id, "--only", "cy@x.com", "--by", "bo"])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    env.run(&[]).await;
    for key in ["ann@x.com", "bob@x.com", "cy@x.com"] {
        let story = env.ledger(key).await;
        assert_eq!(story.last().unwrap().1, "succeeded", "{key}: {story:?}");
    }
    // Everything ran: the plan is closed and nothing waits.
    assert!(env.plans().await.is_empty());
    // With the threshold raised, no plan is opened at all.
    env.run(&["--param", "max=10"]).await;
    assert!(env.plans().await.is_empty());
}

#[tokio::test]
async fn a_guard_computed_earlier_makes_everything_wait_whatever_the_threshold() {
    let env = Env::new(r#"{ above = 100, when = "${params.guard}" }"#);
    // The guard is empty (false): under the threshold everything runs.
    env.run(&[]).await;
    assert!(env.plans().await.is_empty());
    let why = "license holders fell from 10 to 3 since the last run";
    let run = env.run(&["--param", &format!("guard={why}")]).await;
    assert!(run.stderr.contains(why), "{}", run.stderr);
    let id = env.plan_id().await;
    let plan = env.json(&["approvals", "show", &id, "--json"]).await;
    assert_eq!(plan["plan"]["reason"], why);
    assert_eq!(plan["items"].as_array().unwrap().len(), 3);
}

/// A first run's plan with bob@x.com approved by alice: its id, and the
/// plan as `approvals show --json` gives it then.
async fn bob_approved(env: &Env) -> (String, Value) {
    env.run(&[]).await;
    let id = env.plan_id().await;
    let r = env
        .sluice(&["approve", &id, "--only", "bob@x.com", "--by", "alice"])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = env.json(&["approvals", "show", &id, "--json"]).await;
    (id, before)
}

/// After a rehearsal, bob's approval is still there: the real run runs
/// him and spends it; the others still wait.
async fn the_real_run_spends_bobs_approval(env: &Env, id: &str) {
    env.run(&[]).await;
    assert_eq!(
        env.items(id).await,
        s(&[
            ("Ann@x.com", "pending"),
            ("bob@x.com", "done"),
            ("cy@x.com", "pending")
        ])
    );
}

/// A first dry run opens no plan, and its last words name no command to
/// approve one.
#[tokio::test]
async fn a_first_dry_run_names_no_plan_to_approve() {
    let env = Env::new(r#""always""#);
    let dry = env.run(&["--dry-run"]).await;
    assert!(
        dry.stderr
            .contains("would wait for approval: 3 items of step act (a dry run opens no plan")
            && !dry.stderr.contains("sluice approve "),
        "{}",
        dry.stderr
    );
    let plans = env.json(&["approvals", "--json"]).await;
    assert_eq!(plans.as_array().map(Vec::len), Some(0), "{plans}");
}

#[tokio::test]
async fn a_dry_run_says_what_would_run_and_wait_and_changes_no_approval() {
    let env = Env::new(r#""always""#);
    let (id, before) = bob_approved(&env).await;
    let dry = env.run(&["--dry-run"]).await;
    assert!(
        dry.stderr.contains("1 approved item would run"),
        "{}",
        dry.stderr
    );
    assert!(
        dry.stderr.contains("2 would wait for approval"),
        "{}",
        dry.stderr
    );
    // Its last words say so too: the plan an earlier run left open, and
    // that the dry run added nothing to it.
    assert!(
        dry.stderr
            .contains("would wait for approval: 2 items of step")
            && dry
                .stderr
                .contains(&format!("plan {id} is open from an earlier run"))
            && dry.stderr.contains("a dry run adds nothing to it"),
        "{}",
        dry.stderr
    );
    let after = env.json(&["approvals", "show", &id, "--json"]).await;
    assert_eq!(
        before["items"], after["items"],
        "a dry run changed the plan"
    );
    the_real_run_spends_bobs_approval(&env, &id).await;
}

#[tokio::test]
async fn a_replay_spends_no_approval_and_leaves_no_ledger_entry_of_its_own() {
    let env = Env::new(r#""always""#);
    let (id, before) = bob_approved(&env).await;
    // The flow has no connections: an empty recording answers it whole.
    let cassettes = env.dir.path().join("cassettes");
    std::fs::create_dir(&cassettes).unwrap();
    let replay = env.run(&["--replay", cassettes.to_str().unwrap()]).await;
    assert!(
        replay.stderr.contains("1 approved item"),
        "the approved item runs in the replay: {}",
        replay.stderr
    );
    let after = env.json(&["approvals", "show", &id, "--json"]).await;
    assert_eq!(before["items"], after["items"], "a replay changed the plan");
    let ledger = env.json(&["ledger", "bob@x.com", "--json"]).await;
    let replayed: Vec<&Value> = ledger
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "item" && e["status"] == "succeeded")
        .collect();
    assert_eq!(replayed.len(), 1, "{ledger:#}");
    assert_eq!(
        replayed[0]["dry_run"], true,
        "the replay's item is a rehearsal: {ledger:#}"
    );
    let runs = env.json(&["runs", "--json"]).await;
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"] == "replay"),
        "{runs:#}"
    );
    the_real_run_spends_bobs_approval(&env, &id).await;
}

#[tokio::test]
async fn only_runs_the_named_keys_and_closes_nothing_it_left_out() {
    let env = Env::new(r#"{ above = 5 }"#);
    let only = env.run(&["--only", "BOB@x.com"]).await;
    assert!(only.stderr.contains("act: bob@x.com"), "{}", only.stderr);
    assert_eq!(
        env.ledger("bob@x.com").await,
        [entry("item", "succeeded", "")]
    );
    assert!(env.ledger("ann@x.com").await.is_empty());
    // Under a threshold the whole list is over, --only holds its key too:
    // naming keys does not let through what the held batch keeps waiting.
    let held = Env::new(r#"{ above = 1 }"#);
    held.run(&[]).await;
    let id = held.plan_id().await;
    let only = held.run(&["--only", "bob@x.com"]).await;
    assert!(
        only.stderr.contains("act: bob@x.com waits for approval")
            && only.stderr.contains(&format!(
                "to approve: `sluice approve {id} --revision 1 --only bob@x.com`; to look"
            )),
        "{}",
        only.stderr
    );
    let pending = [
        ("Ann@x.com", "pending"),
        ("bob@x.com", "pending"),
        ("cy@x.com", "pending"),
    ];
    assert_eq!(held.items(&id).await, s(&pending));
    // Approved, it runs, with or without --only.
    let r = held
        .sluice(&["approve", &id, "--only", "bob@x.com", "--by", "al"])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let only = held.run(&["--only", "bob@x.com"]).await;
    assert!(only.stderr.contains("act: bob@x.com"), "{}", only.stderr);
    // Under `always`, --only holds just that key, and leaves the rest alone.
    let always = Env::new(r#""always""#);
    always.run(&[]).await;
    let id = always.plan_id().await;
    let r = always
        .sluice(&["approve", &id, "--only", "cy@x.com", "--by", "al"])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let only = always.run(&["--only", "ann@x.com"]).await;
    // Its approve command names the key it showed waiting, not the plan's
    // other pending keys: in its progress line, and in `runs show` later.
    let shown = format!("`sluice approve {id} --revision 1 --only Ann@x.com`");
    assert!(only.stderr.contains(&shown), "{}", only.stderr);
    let runs = always.json(&["runs", "--json"]).await;
    let last = runs[0]["id"].as_str().unwrap().to_string();
    let show = always.sluice(&["runs", "show", &last]).await;
    assert!(
        show.stdout.contains(&format!("approve with {shown}")),
        "{}",
        show.stdout
    );
    assert_eq!(
        always.items(&id).await,
        s(&[
            ("Ann@x.com", "pending"),
            ("bob@x.com", "pending"),
            ("cy@x.com", "approved")
        ])
    );
}

#[tokio::test]
async fn the_ledger_lists_each_keys_latest_state_by_flow() {
    let env = Env::new(r#""always""#);
    env.run(&[]).await;
    let keys = env.json(&["ledger", "--flow", "people", "--json"]).await;
    let listed: Vec<(&str, &str)> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap(), k["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("Ann@x.com", "waiting"),
            ("bob@x.com", "waiting"),
            ("cy@x.com", "waiting")
        ]
    );
    let text = env.sluice(&["ledger", "ann@x.com"]).await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("waiting"), "{}", text.stdout);
}

#[tokio::test]
async fn without_a_store_for_approvals_the_step_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = flow(dir.path(), r#""always""#);
    let flow = common::load(&file, &[]);
    let runner = common::runner(sluice::engine::EngineConfig::default());
    let (outcome, events) = common::run(&runner, &flow, dir.path(), false).await;
    let events = events.events();
    assert_eq!(outcome.status, sluice::run::Status::Failed);
    assert!(
        outcome
            .error
            .as_deref()
            .unwrap_or("")
            .contains("no run history to keep approvals in"),
        "{:?}",
        outcome.error
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, sluice::run::RunEvent::ItemFinished { .. })),
        "an item ran"
    );
}

/// A raw line break in an item's key split the rows of `approvals show`
/// and `ledger --flow`, and could forge a row; each cell shows it escaped
/// instead. (A flow's name with one is refused where it is written: see
/// the `name_unprintable` flow in `tests/flows/invalid`.)
#[tokio::test]
async fn line_breaks_in_keys_stay_inside_their_table_cells() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(flow(dir.path(), r#""always""#))
        .unwrap()
        .replace(
            r#"key = "bob@x.com""#,
            r#"key = "bob@x.com\r\nforged\u001b[2K""#,
        );
    let file = common::write_flow(dir.path(), "people.toml", &text);
    let data = dir.path().join("data");
    let run = sluice_cmd(&[], &data, &["run", file.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let plans = sluice_cmd(&[], &data, &["approvals", "--json"]).await;
    let plans: Value = serde_json::from_str(&plans.stdout).unwrap();
    let id = plans[0]["id"].as_str().unwrap();
    for args in [
        &["approvals", "show", id][..],
        &["ledger", "--flow", "people"],
    ] {
        let shown = sluice_cmd(&[], &data, args).await;
        assert_eq!(shown.code, 0, "{args:?}: {}", shown.stderr);
        let out = &shown.stdout;
        assert!(
            out.contains(r"bob@x.com\r\nforged\u{1b}[2K"),
            "{args:?}: {out}"
        );
        for line in out.lines() {
            assert!(!line.starts_with("forged"), "{args:?}: {out}");
        }
        assert!(!out.contains(['\r', '\u{1b}']), "{args:?}: {out}");
    }
}

/// A flow whose `act` step takes `ms` per person, one at a time, under
/// `approval = "always"`: the `hostile` fixture's sleep.
fn slow_flow(dir: &Path, ms: u64) -> PathBuf {
    let hostile = common::fixture("hostile");
    let text = format!(
        r#"name = "slow-people"

[params]
people = [{{ key = "Ann@x.com" }}, {{ key = "bob@x.com" }}, {{ key = "cy@x.com" }}]

[connections.idle]
base_url = "https://idle.invalid"

[[step]]
id = "act"
uses = "{}"
connections = {{ api = "idle" }}
for_each = "${{params.people}}"
for_each_key = "${{item.key}}"
approval = "always"
concurrency = 1
with = {{ action = "sleep", ms = {ms} }}
"#,
        hostile.display()
    );
    common::write_flow(dir, "slow-people.toml", &text)
}

/// Waits until the latest run in `data` is working on `step`.
async fn wait_for_step(data: &Path, step: &str) {
    let started = std::time::Instant::now();
    loop {
        let runs = sluice_cmd(&[], data, &["runs", "--json"]).await;
        let runs: Value = serde_json::from_str(&runs.stdout).unwrap();
        let run = &runs[0];
        if run["status"] == "running" {
            let id = run["id"].as_str().unwrap();
            let show = sluice_cmd(&[], data, &["runs", "show", id, "--json"]).await;
            let detail: Value = serde_json::from_str(&show.stdout).unwrap();
            let steps = detail["steps"].as_array().unwrap();
            if steps
                .iter()
                .any(|s| s["step_id"] == step && s["status"] == "running")
            {
                return;
            }
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "the run never reached its step"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A rejection made while a run works through the approved items: the
/// items it has not started are not run (held as rejected, and still
/// rejected in the plan); the one it had started is not called back, is
/// recorded as done, and `sluice reject` says a run is under way.
#[tokio::test]
async fn a_rejection_made_during_a_run_stops_the_items_not_yet_started() {
    let dir = tempfile::tempdir().unwrap();
    let file = slow_flow(dir.path(), 1500);
    let data = dir.path().join("data");
    let sluice = |args: Vec<String>| {
        let data = data.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sluice_cmd(&[], &data, &args).await
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let run_args = args(&["run", file.to_str().unwrap(), "--json"]);
    assert_eq!(sluice(run_args.clone()).await.code, 0);
    let plans: Value =
        serde_json::from_str(&sluice(args(&["approvals", "--json"])).await.stdout).unwrap();
    let id = plans[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        sluice(args(&["approve", &id, "--by", "alice"])).await.code,
        0
    );
    let running = tokio::spawn(sluice(run_args));
    // The step is under way: its first item sleeps, the other two wait.
    wait_for_step(&data, "act").await;
    let reject = sluice(args(&[
        "reject",
        &id,
        "--only",
        "ann@x.com",
        "--only",
        "bob@x.com",
        "--only",
        "cy@x.com",
        "--by",
        "bob",
        "--note",
        "stop",
    ]))
    .await;
    assert_eq!(reject.code, 0, "{}", reject.stderr);
    assert!(
        reject.stdout.contains("rejected 3 items") && reject.stdout.contains("is under way"),
        "{}",
        reject.stdout
    );
    let run = running.await.unwrap();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let act = run.output_of("act");
    assert_eq!(act["ok"], 1, "{act}");
    let rejected: Vec<&str> = act["approval"]["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["key"].as_str().unwrap())
        .collect();
    assert_eq!(rejected, ["bob@x.com", "cy@x.com"], "{act}");
    assert!(
        run.stdout.contains("was rejected after the step started"),
        "{}",
        run.stdout
    );
    plan_says(
        &data,
        &id,
        &[
            ("Ann@x.com", "done"),
            ("bob@x.com", "rejected"),
            ("cy@x.com", "rejected"),
        ],
    )
    .await;
}

/// A flow whose `act` step (as in [`flow`], `approval = "always"`) comes
/// after a `wait` step that sleeps `ms`: a run that is in `wait` has
/// started, and its gate has not read the plan yet.
fn late_gate_flow(dir: &Path, ms: u64) -> PathBuf {
    let (noop, hostile) = (common::fixture("noop"), common::fixture("hostile"));
    let text = format!(
        r#"name = "late-gate"

[params]
people = [{{ key = "Ann@x.com" }}, {{ key = "bob@x.com" }}]

[connections.idle]
base_url = "https://idle.invalid"

[[step]]
id = "wait"
uses = "{}"
connections = {{ api = "idle" }}
with = {{ action = "sleep", ms = {ms} }}

[[step]]
id = "act"
uses = "{}"
for_each = "${{params.people}}"
for_each_key = "${{item.key}}"
approval = "always"
with = {{ who = "${{item.key}}" }}
"#,
        hostile.display(),
        noop.display()
    );
    common::write_flow(dir, "late-gate.toml", &text)
}

/// An approval made after a run started is not used by that run: its
/// earlier steps read the plan as the run started (`${run.approvals}`),
/// so its gate holds the key as still waiting, and the approval stands
/// for the next run, as `sluice approve` says.
#[tokio::test]
async fn an_approval_made_after_a_run_started_waits_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = late_gate_flow(dir.path(), 1500);
    let data = dir.path().join("data");
    let file = file.to_str().unwrap().to_string();
    let run = |data: PathBuf, file: String| async move {
        sluice_cmd(&[], &data, &["run", &file, "--json"]).await
    };
    let first = run(data.clone(), file.clone()).await;
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let plans = sluice_cmd(&[], &data, &["approvals", "--json"]).await;
    let plans: Value = serde_json::from_str(&plans.stdout).unwrap();
    let id = plans[0]["id"].as_str().unwrap().to_string();

    let running = tokio::spawn(run(data.clone(), file.clone()));
    wait_for_step(&data, "wait").await;
    let approve = sluice_cmd(&[], &data, &["approve", &id, "--by", "alice"]).await;
    assert_eq!(approve.code, 0, "{}", approve.stderr);
    let second = running.await.unwrap();
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    let act = second.output_of("act");
    assert_eq!(act["ok"], 0, "{act}");
    assert_eq!(act["approval"]["approved"], 0, "{act}");
    assert_eq!(
        act["approval"]["waiting"].as_array().unwrap().len(),
        2,
        "{act}"
    );
    assert!(
        second.stdout.contains(
            "2 of its items were approved after this run started: they run at the next run"
        ),
        "{}",
        second.stdout
    );
    plan_says(
        &data,
        &id,
        &[("Ann@x.com", "approved"), ("bob@x.com", "approved")],
    )
    .await;

    let third = run(data.clone(), file).await;
    assert_eq!(third.code, 0, "{}\n{}", third.stdout, third.stderr);
    let act = third.output_of("act");
    assert_eq!(
        (act["ok"].clone(), act["approval"]["approved"].clone()),
        (2.into(), 2.into()),
        "{act}"
    );
    plan_says(&data, &id, &[("Ann@x.com", "done"), ("bob@x.com", "done")]).await;
}

/// The plan cannot be read when an approved item is about to start (here:
/// its table is renamed away under the run): that item and the ones after
/// it do not start, the step fails and says why, and, once the plan can
/// be read again, they are still approved for the next run.
#[tokio::test]
async fn a_plan_unreadable_before_an_item_starts_stops_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let file = slow_flow(dir.path(), 1500);
    let data = dir.path().join("data");
    let run_args = ["run", file.to_str().unwrap(), "--json"];
    assert_eq!(sluice_cmd(&[], &data, &run_args).await.code, 0);
    let plans = sluice_cmd(&[], &data, &["approvals", "--json"]).await;
    let plans: Value = serde_json::from_str(&plans.stdout).unwrap();
    let id = plans[0]["id"].as_str().unwrap().to_string();
    let approve = sluice_cmd(&[], &data, &["approve", &id, "--by", "alice"]).await;
    assert_eq!(approve.code, 0, "{}", approve.stderr);
    let running = tokio::spawn({
        let (data, file) = (data.clone(), file.clone());
        async move { sluice_cmd(&[], &data, &["run", file.to_str().unwrap(), "--json"]).await }
    });
    wait_for_step(&data, "act").await;
    // Ann's item is under way (it sleeps 1.5 s): its re-check is done.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let history = data.join("history.sqlite");
    let rename = |from: &str, to: &str| {
        let db = rusqlite::Connection::open(&history).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        db.execute_batch(&format!("ALTER TABLE {from} RENAME TO {to}"))
            .unwrap();
    };
    rename("approval_items", "approval_items_away");
    let run = running.await.unwrap();
    rename("approval_items_away", "approval_items");
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let events = run.events();
    let ran: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "item_finished")
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(ran, ["Ann@x.com"], "{}", run.stdout);
    let finished = events
        .iter()
        .find(|e| e["event"] == "run_finished")
        .unwrap();
    let error = finished["error"].as_str().unwrap();
    assert_eq!(finished["status"], "failed", "{finished}");
    assert!(
        error.contains("step `act`")
            && error.contains(
                "the approval of item `bob@x.com` could not be checked again before it started"
            )
            && error
                .contains("the items after it were not started, and keep their place in the plan"),
        "{error}"
    );
    // Ann's item ran, but its approval could not be spent while the plan
    // was away either (the run warned so): it stays approved, as do the
    // two that never started.
    plan_says(
        &data,
        &id,
        &[
            ("Ann@x.com", "approved"),
            ("bob@x.com", "approved"),
            ("cy@x.com", "approved"),
        ],
    )
    .await;
}

/// Asserts that plan `id` in `data`'s history holds exactly `items`, each
/// a key and its state.
async fn plan_says(data: &Path, id: &str, items: &[(&str, &str)]) {
    let show = sluice_cmd(&[], data, &["approvals", "show", id, "--json"]).await;
    let plan: Value = serde_json::from_str(&show.stdout).unwrap();
    let states: Vec<(&str, &str)> = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["key"].as_str().unwrap(), i["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, items, "{plan}");
}

/// The commands that read the history refuse one that is not there (a
/// mistyped `--data-dir`) instead of making an empty one and answering
/// "no runs", "no pending approvals", as if nothing waited for anyone.
#[tokio::test]
async fn reading_commands_refuse_a_history_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("tpyo");
    let database = format!("sqlite:{}", dir.path().join("nowhere/x.sqlite").display());
    for args in [
        vec!["runs"],
        vec!["runs", "show", "20260101T000000Z-aaaaaa"],
        vec!["approvals"],
        vec!["approvals", "show", "ap-123456"],
        vec!["approve", "ap-123456"],
        vec!["reject", "ap-123456", "--only", "ann@x.com"],
        vec!["ledger", "ann@x.com"],
        vec!["--database", &database, "approvals"],
    ] {
        let run = sluice_cmd(&[], &typo, &args).await;
        assert_eq!(run.code, 2, "{args:?}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("there is no run history at") && run.stderr.contains("--data-dir"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(!typo.exists(), "the mistyped data directory was made");
    assert!(!dir.path().join("nowhere").exists());
    // `SLUICE_DATA_DIR` set to nothing is named as the cause.
    let empty = sluice_cmd(&[], Path::new(""), &["approvals"]).await;
    assert_eq!(empty.code, 2, "{}", empty.stdout);
    assert!(
        empty.stderr.contains(
            "an empty path names no directory; give one (a SLUICE_DATA_DIR that is set but empty counts as one: unset it to use the default)"
        ),
        "{}",
        empty.stderr
    );
}

/// A huge bad value on the command line is cut in its error: a
/// 100,000-character `--param` was printed whole, twice.
#[tokio::test]
async fn a_huge_bad_value_is_cut_in_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "N".repeat(100_000);
    let run = sluice_cmd(&[], dir.path(), &["run", "flow.toml", "--param", &huge]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.len() < 1000, "{} bytes", run.stderr.len());
    assert!(
        run.stderr
            .contains("… (100000 characters)` is not NAME=VALUE"),
        "{}",
        run.stderr
    );
}

/// A bad value from the environment is named by its variable, not by a
/// flag nobody typed (`SLUICE_LEASE=abc` was "invalid value for
/// '--lease'"); a typed flag keeps its own name.
#[tokio::test]
async fn a_bad_value_from_the_environment_is_named_by_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let lease = [("SLUICE_LEASE".to_string(), "abc".to_string())];
    let from_env = sluice_cmd(&lease, dir.path(), &["run", "flow.toml"]).await;
    assert_eq!(from_env.code, 2, "{}", from_env.stdout);
    assert!(
        from_env
            .stderr
            .contains("invalid value 'abc' for SLUICE_LEASE (the environment's --lease):"),
        "{}",
        from_env.stderr
    );
    let typed = sluice_cmd(&lease, dir.path(), &["run", "flow.toml", "--lease", "xyz"]).await;
    assert!(
        typed
            .stderr
            .contains("invalid value 'xyz' for '--lease <LEASE>'"),
        "{}",
        typed.stderr
    );
}

/// A param given a secret's value is kept out of the approval plan (it
/// was stored and printed whole, where the same value in an item's input
/// was redacted), and `approve --run`, which would run the flow with
/// the plan's params, asks for them instead and approves nothing.
#[tokio::test]
async fn a_param_holding_a_secret_is_not_kept_in_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let noop = common::fixture("noop");
    let text = format!(
        r#"name = "people"

[params]
people = [{{ key = "ann@x.com" }}]
note = "n"

[secrets]
token = {{ env = "PEOPLE_TOKEN" }}

[connections.api]
base_url = "https://api.example.com"
auth.bearer = {{ token = "${{secrets.token}}" }}

[[step]]
id = "act"
uses = "{}"
for_each = "${{params.people}}"
for_each_key = "${{item.key}}"
approval = "always"
with = {{ who = "${{item.key}}", note = "${{params.note}}" }}
"#,
        noop.display()
    );
    let file = common::write_flow(dir.path(), "people.toml", &text);
    let secret = "a-secret-value-of-some-length";
    let vars = vec![("PEOPLE_TOKEN".to_string(), secret.to_string())];
    let data = dir.path().join("data");
    let note = format!("note={secret}");
    let run = sluice_cmd(
        &vars,
        &data,
        &["run", file.to_str().unwrap(), "--param", &note],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let listed = sluice_cmd(&vars, &data, &["approvals", "--json"]).await;
    let plans: Value = serde_json::from_str(&listed.stdout).unwrap();
    let id = plans[0]["id"].as_str().unwrap().to_string();
    let shown = sluice_cmd(&vars, &data, &["approvals", "show", &id, "--json"]).await;
    for printed in [&listed.stdout, &shown.stdout, &shown.stderr] {
        assert!(!printed.contains(secret), "{printed}");
    }
    assert!(shown.stdout.contains("[redacted]"), "{}", shown.stdout);
    let history = sluice_store::path_in(&data);
    for file in [history.clone(), history.with_extension("sqlite-wal")] {
        let kept = std::fs::read(&file).unwrap_or_default();
        let kept = String::from_utf8_lossy(&kept);
        assert!(!kept.contains(secret), "{file:?} keeps the secret");
    }
    let refused = sluice_cmd(&vars, &data, &["approve", &id, "--run"]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("`note` held a secret's value"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(secret), "{}", refused.stderr);
    let still = sluice_cmd(&vars, &data, &["approvals", "show", &id, "--json"]).await;
    assert!(
        still.stdout.contains("\"pending\""),
        "nothing was approved: {}",
        still.stdout
    );
}

/// A name that holds a line break printed a line of its own ("FAKE:
/// approved everything") wherever the decision is told: refused, and
/// nothing is decided.
#[tokio::test]
async fn a_decider_name_with_a_control_character_is_refused() {
    let env = Env::new(r#""always""#);
    env.run(&[]).await;
    let id = env.plan_id().await;
    for name in ["Eve\nFAKE: approved everything by Dana", "Eve\u{1b}[2K"] {
        let refused = env
            .sluice(&["approve", id.as_str(), "--only", "bob@x.com", "--by", name])
            .await;
        assert_eq!(refused.code, 2, "{}\n{}", refused.stdout, refused.stderr);
        assert!(
            refused.stderr.contains("holds a control character"),
            "{}",
            refused.stderr
        );
        assert!(!refused.stderr.contains("\nFAKE"), "{}", refused.stderr);
    }
    assert!(
        env.items(&id)
            .await
            .iter()
            .all(|(_, state)| state == "pending")
    );
}
