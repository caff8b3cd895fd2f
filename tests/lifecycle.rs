//! The shipped flow's lifecycle, end to end through the `sluice` binary
//! against the emulators, with the run history (approvals, the ledger and
//! the flow's state) in a temporary data directory: a first run adopts and
//! changes nobody; leavers wait in one plan and exactly the approved ones
//! are deactivated (and taken off the project); rejected ones stay as they
//! are (once the person returns they are closed, and their ledger keeps it);
//! a settled run writes nothing; nobody unmanaged is touched (unless
//! `managed_domains` says so); a failed read or no license group
//! deactivates nobody; creates above `max_unapproved_creates` wait; a
//! deactivation Procore applied but answered with an error (a 500, or a
//! 404 to the resend) is kept, and the person is reactivated on return.
//!
//! Every expected outcome is written by hand from the tenant each test
//! builds person by person.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::emulated::{Run, flow_path, sluice, sluice_cmd};
use serde_json::{Value, json};
use sluice_emulator::faults::{FaultKind, Faults, TargetedFault};
use sluice_emulator::scenario::ProjectUser;
use sluice_emulator::state::LoggedRequest;
use sluice_emulator::{EmulatorConfig, RunningEmulator, Scenario};

const E3: &str = "License – Microsoft E3";
const O1: &str = "License – Office E1";

/// One person of a hand-written tenant: the Entra and Procore ids.
#[derive(Clone)]
struct Person {
    graph_id: String,
    procore_id: u64,
}

/// A tenant built person by person, its emulators, and a data directory.
struct Tenant {
    emu: RunningEmulator,
    env: Vec<(String, String)>,
    data: tempfile::TempDir,
    people: BTreeMap<String, Person>,
    groups: BTreeMap<&'static str, String>,
}

/// Who is in the tenant: `(mail, groups)`; each also has an active
/// Procore user on the project. `unlicensed` are Procore users only;
/// `missing` hold an E3 license and have no Procore user.
struct Plan<'a> {
    licensed: &'a [(&'a str, &'a [&'static str])],
    unlicensed: &'a [&'a str],
    missing: &'a [&'a str],
}

impl Tenant {
    async fn new(plan: Plan<'_>) -> Tenant {
        let mut sc = Scenario::hand_written();
        let mut groups = BTreeMap::new();
        for name in [E3, O1] {
            groups.insert(name, sc.add_group(name));
        }
        let project = sc.project_ids[0];
        let mut people = BTreeMap::new();
        for (mail, in_groups) in plan.licensed {
            let ids: Vec<&str> = in_groups.iter().map(|g| groups[g].as_str()).collect();
            let name = format!("Person {}", mail.split('@').next().unwrap());
            let graph_id = sc.add_user(&name, Some(mail), mail, &ids).id.clone();
            let procore_id = sc.add_procore_user(mail, mail, true).id;
            sc.project_users.push(ProjectUser {
                project_id: project,
                user_id: procore_id,
                permission_template_id: None,
            });
            people.insert(
                mail.to_string(),
                Person {
                    graph_id,
                    procore_id,
                },
            );
        }
        for mail in plan.missing {
            let name = format!("New {}", mail.split('@').next().unwrap());
            sc.add_user(&name, Some(mail), mail, &[groups[E3].as_str()]);
        }
        for login in plan.unlicensed {
            let procore_id = sc.add_procore_user(login, login, true).id;
            people.insert(
                login.to_string(),
                Person {
                    graph_id: String::new(),
                    procore_id,
                },
            );
        }
        let emu = sluice_emulator::start(EmulatorConfig {
            scenario: sc,
            ..EmulatorConfig::default()
        })
        .await
        .unwrap();
        let env = emu.env_vars();
        Tenant {
            emu,
            env,
            data: tempfile::tempdir().unwrap(),
            people,
            groups,
        }
    }

    fn id(&self, mail: &str) -> u64 {
        self.people[mail].procore_id
    }

    fn graph_id(&self, mail: &str) -> &str {
        &self.people[mail].graph_id
    }

    /// Takes `mail` out of the license group `group`.
    fn leave_group(&self, mail: &str, group: &str) {
        assert!(
            self.emu
                .remove_member(&self.groups[group], self.graph_id(mail))
        );
    }

    /// Takes the Entra user `graph_id` out of the license group `group`.
    fn leave_group_of(&self, graph_id: &str, group: &str) {
        assert!(self.emu.remove_member(&self.groups[group], graph_id));
    }

    /// `sluice run` on the shipped flow; returns the run and the Procore
    /// requests it made.
    async fn run(&self, extra: &[&str]) -> (Run, Vec<LoggedRequest>) {
        let before = self.emu.snapshot().requests.len();
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let run = sluice(&self.env, self.data.path(), &args).await;
        let requests = self.emu.snapshot().requests[before..]
            .iter()
            .filter(|r| r.path.starts_with("/rest/"))
            .cloned()
            .collect();
        (run, requests)
    }

    /// A run that must succeed.
    async fn run_ok(&self, extra: &[&str]) -> (Run, Vec<LoggedRequest>) {
        let (run, requests) = self.run(extra).await;
        assert_eq!(run.code, 0, "{}\n{}", run.stderr, tail(&run.stdout));
        (run, requests)
    }

    async fn cli(&self, args: &[&str]) -> Run {
        sluice_cmd(&self.env, self.data.path(), args).await
    }

    async fn json(&self, args: &[&str]) -> Value {
        let run = self.cli(args).await;
        assert_eq!(run.code, 0, "{args:?}: {}\n{}", run.stdout, run.stderr);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
    }

    /// The pending plans, as `(id, step)`.
    async fn plans(&self) -> Vec<(String, String)> {
        let plans = self.json(&["approvals", "--json"]).await;
        plans
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_string(),
                    p["step"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Each item of a plan, by key: its state.
    async fn items(&self, id: &str) -> BTreeMap<String, String> {
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

    async fn decide(&self, verb: &str, id: &str, keys: &[&str]) {
        let mut args = vec![verb, id, "--by", "Dana Admin"];
        for key in keys {
            args.extend(["--only", key]);
        }
        let r = self.cli(&args).await;
        assert_eq!(r.code, 0, "{args:?}: {}\n{}", r.stdout, r.stderr);
    }

    fn on_project(&self, mail: &str) -> bool {
        let id = self.id(mail);
        let snapshot = self.emu.snapshot();
        snapshot.project_users().iter().any(|m| m.user_id == id)
    }

    fn active(&self, mail: &str) -> bool {
        let id = self.id(mail);
        let snapshot = self.emu.snapshot();
        let user = snapshot.procore_users().iter().find(|u| u.id == id);
        user.unwrap().is_active
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The Procore writes among `requests`, as `METHOD path status`.
fn writes(requests: &[LoggedRequest]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect()
}

/// The `step_finished` event of `step` in `run`.
fn step_finished(run: &Run, step: &str) -> Value {
    run.events()
        .into_iter()
        .find(|e| e["event"] == "step_finished" && e["step"] == step)
        .unwrap_or_else(|| panic!("no step_finished for {step}"))
}

/// Each leaver `compare` found, by key: its reason.
fn leavers(run: &Run) -> BTreeMap<String, String> {
    run.output_of("diff")["leavers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["key"].as_str().unwrap().to_string(),
                l["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const ANN: &str = "ann@contoso.com";
const BOB: &str = "bob@contoso.com";
const CY: &str = "cy@contoso.com";
const DEE: &str = "dee@contoso.com";
const GIL: &str = "gil@contoso.com";
const EVE: &str = "eve@contoso.com";
const FAY: &str = "fay@contoso.com";
const SUB: &str = "sub@partner.com";

/// Ann stays; Bob moves to another license group; Cy, Dee and Gil leave
/// their group; Eve's account is disabled; Fay is deleted. Sub, of a
/// partner, holds no license and is not managed.
async fn five_leavers() -> Tenant {
    let t = Tenant::new(Plan {
        licensed: &[
            (ANN, &[E3]),
            (BOB, &[E3, O1]),
            (CY, &[E3]),
            (DEE, &[E3]),
            (GIL, &[O1]),
            (EVE, &[E3]),
            (FAY, &[E3]),
        ],
        unlicensed: &[SUB],
        missing: &[],
    })
    .await;
    // The first run adopts every match and changes nobody.
    let (first, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert_eq!(first.output_of("diff")["counts"]["adopted"], 7);
    assert!(leavers(&first).is_empty());
    t.leave_group(BOB, E3);
    for (mail, group) in [(CY, E3), (DEE, E3), (GIL, O1)] {
        t.leave_group(mail, group);
    }
    assert!(t.emu.set_account_enabled(t.graph_id(EVE), false));
    assert!(t.emu.delete_user(t.graph_id(FAY)));
    t
}

#[tokio::test]
async fn five_leavers_wait_in_one_plan_and_exactly_the_approved_ones_are_deactivated() {
    let t = five_leavers().await;
    // Nobody is deactivated before an admin says so: one plan of five.
    let (found, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert_eq!(
        leavers(&found),
        map(&[
            (CY, "no license group"),
            (DEE, "no license group"),
            (EVE, "account disabled"),
            (FAY, "user gone"),
            (GIL, "no license group"),
        ]),
        "Bob is still in another license group"
    );
    let plans = t.plans().await;
    assert_eq!(plans.len(), 1, "{plans:?}");
    let (id, step) = plans[0].clone();
    assert_eq!(step, "deactivate");
    let pending = |keys: &[&str]| -> Vec<(String, String)> {
        keys.iter()
            .map(|k| (k.to_string(), "pending".to_string()))
            .collect()
    };
    assert_eq!(
        t.items(&id).await,
        pending(&[CY, DEE, EVE, FAY, GIL]).into_iter().collect()
    );
    assert_eq!(
        found.output_of("deactivate")["approval"]["approve"],
        format!("sluice approve {id} --revision 1")
    );

    // Approve two: exactly those two are deactivated and leave the project.
    t.decide("approve", &id, &[CY, EVE]).await;
    let (_, requests) = t.run_ok(&[]).await;
    let project = t.emu.snapshot().scenario.project_ids[0];
    let company = t.emu.snapshot().scenario.company_id;
    let mut expected = Vec::new();
    for mail in [CY, EVE] {
        let id = t.id(mail);
        expected.push(format!(
            "PATCH /rest/v1.0/companies/{company}/users/{id} 200"
        ));
        expected.push(format!(
            "DELETE /rest/v1.0/projects/{project}/users/{id}/actions/remove 204"
        ));
    }
    let mut got = writes(&requests);
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    // Each PATCH sent exactly Procore's nested body; the removals none.
    for r in requests.iter().filter(|r| r.method != "GET") {
        let body = r
            .body
            .as_deref()
            .map(|b| serde_json::from_str::<Value>(b).unwrap());
        match r.method.as_str() {
            "PATCH" => assert_eq!(
                body,
                Some(json!({"user": {"is_active": false}})),
                "{}",
                r.path
            ),
            _ => assert_eq!(body, None, "{} {}", r.method, r.path),
        }
    }
    for mail in [CY, EVE] {
        assert!(!t.active(mail) && !t.on_project(mail), "{mail}");
    }
    for mail in [ANN, BOB, DEE, FAY, GIL, SUB] {
        assert!(t.active(mail), "{mail} is untouched");
    }
    let items = t.items(&id).await;
    assert_eq!(
        (
            &items[CY],
            &items[EVE],
            &items[DEE],
            &items[FAY],
            &items[GIL]
        ),
        (
            &"done".to_string(),
            &"done".to_string(),
            &"pending".to_string(),
            &"pending".to_string(),
            &"pending".to_string()
        )
    );

    // A rejected leaver stays as they are, run after run.
    t.decide("reject", &id, &[DEE]).await;
    t.decide("approve", &id, &[FAY, GIL]).await;
    let (_, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests).len(), 4, "{:?}", writes(&requests));
    assert!(t.active(DEE) && t.on_project(DEE));
    assert!(!t.active(FAY) && !t.active(GIL));
    // Settled: nothing left to do, nothing written.
    let (settled, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert_eq!(leavers(&settled), map(&[(DEE, "no license group")]));
    assert!(t.active(DEE));
    assert_eq!(t.items(&id).await[DEE], "rejected");
}

/// The command a run printed approves what that run showed: a leaver a
/// later run found joins the same plan at a new revision and is not
/// deactivated by it (a plain `sluice approve ID` approved them too).
#[tokio::test]
async fn the_command_a_report_printed_does_not_approve_a_leaver_found_later() {
    let t = five_leavers().await;
    let (found, _) = t.run_ok(&[]).await;
    let shown = found.output_of("deactivate")["approval"]["approve"]
        .as_str()
        .unwrap()
        .to_string();
    let (id, _) = t.plans().await[0].clone();
    assert_eq!(shown, format!("sluice approve {id} --revision 1"));
    // Ann leaves before the admin reads the report: the next run adds her.
    t.leave_group(ANN, E3);
    let (later, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert_eq!(
        later.output_of("deactivate")["approval"]["approve"],
        format!("sluice approve {id} --revision 2")
    );
    assert_eq!(t.plans().await[0].0, id, "the same plan");
    // The admin runs the command the first report gave.
    let mut args: Vec<&str> = shown.split(' ').skip(1).collect();
    args.extend(["--by", "Dana Admin"]);
    let approved = t.cli(&args).await;
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    assert!(
        approved.stdout.contains("approved 5 items")
            && approved.stdout.contains(&format!(
                "Left pending: 1 item that joined the plan after revision 1, after what you looked at: {ANN}."
            )),
        "{}",
        approved.stdout
    );
    let (_, requests) = t.run_ok(&[]).await;
    let patched = writes(&requests)
        .iter()
        .filter(|w| w.starts_with("PATCH"))
        .count();
    assert_eq!(patched, 5, "{:?}", writes(&requests));
    for mail in [CY, DEE, EVE, FAY, GIL] {
        assert!(!t.active(mail), "{mail}");
    }
    assert!(t.active(ANN) && t.on_project(ANN), "Ann waits for a look");
    assert_eq!(t.items(&id).await[ANN], "pending");
}

#[tokio::test]
async fn the_ledger_tells_one_leavers_story_with_the_approver() {
    let t = five_leavers().await;
    t.run_ok(&[]).await;
    let (id, _) = t.plans().await[0].clone();
    t.decide("approve", &id, &[EVE]).await;
    t.run_ok(&[]).await;
    // Eve's account is enabled again: she returns, once, and rejoins the project.
    assert!(t.emu.set_account_enabled(t.graph_id(EVE), true));
    let (_, requests) = t.run_ok(&[]).await;
    let company = t.emu.snapshot().scenario.company_id;
    let eve = t.id(EVE);
    assert!(
        writes(&requests).contains(&format!(
            "PATCH /rest/v1.0/companies/{company}/users/inactive/{eve} 200"
        )),
        "{:?}",
        writes(&requests)
    );
    let reactivation = requests
        .iter()
        .find(|r| r.path == format!("/rest/v1.0/companies/{company}/users/inactive/{eve}"))
        .unwrap();
    assert_eq!(reactivation.body.as_deref().unwrap_or(""), "", "no body");
    assert!(t.active(EVE) && t.on_project(EVE));
    let (_, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new(), "reactivated once");
    let ledger = t.json(&["ledger", EVE, "--json"]).await;
    let story: Vec<(String, String, String)> = ledger
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap_or("").to_string(),
                e["status"]
                    .as_str()
                    .or(e["decision"].as_str())
                    .unwrap_or("")
                    .to_string(),
                e["by"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let entry = |s: &str, w: &str, b: &str| (s.to_string(), w.to_string(), b.to_string());
    assert_eq!(
        story,
        [
            entry("diff", "succeeded", ""),
            entry("deactivate", "waiting", ""),
            entry("deactivate", "approved", "Dana Admin"),
            entry("deactivate", "succeeded", ""),
            entry("reactivate", "succeeded", ""),
        ],
        "{ledger:#}"
    );
    // The first run adopted her, matched by mail, with the Procore id.
    let adopted = &ledger[0]["output"];
    assert_eq!(
        (
            &adopted["status"],
            &adopted["matched_by"],
            &adopted["procore_id"]
        ),
        (&json!("adopted"), &json!("mail"), &json!(eve)),
        "{ledger:#}"
    );
    let text = t.cli(&["ledger", EVE]).await;
    assert!(text.stdout.contains("Dana Admin"), "{}", text.stdout);
    assert!(
        text.stdout.contains("status=adopted") && text.stdout.contains("matched_by=mail"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn unmanaged_users_are_never_touched_unless_their_domain_is_managed() {
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3])],
        unlicensed: &[SUB, "old@contoso.com"],
        missing: &[],
    })
    .await;
    for _ in 0..2 {
        let (run, requests) = t.run_ok(&[]).await;
        assert!(leavers(&run).is_empty());
        assert_eq!(writes(&requests), Vec::<String>::new());
    }
    assert!(t.plans().await.is_empty());
    // With the company's domain managed, its unlicensed user is a leaver
    // (and waits for approval); the partner's is still left alone.
    let (run, requests) = t
        .run_ok(&["--param", r#"managed_domains=["contoso.com"]"#])
        .await;
    assert_eq!(
        leavers(&run),
        map(&[("old@contoso.com", "no license group")])
    );
    assert_eq!(writes(&requests), Vec::<String>::new());
    let (id, _) = t.plans().await[0].clone();
    t.decide("approve", &id, &["old@contoso.com"]).await;
    let (_, requests) = t
        .run_ok(&["--param", r#"managed_domains=["contoso.com"]"#])
        .await;
    assert_eq!(writes(&requests).len(), 2, "{:?}", writes(&requests));
    assert!(!t.active("old@contoso.com"));
    assert!(t.active(SUB) && t.active(ANN));
}

/// `contoso.com` managed, and up to ten deactivations a run without an
/// admin.
const IN_DOMAIN_WITH_TEN_UNAPPROVED: [&str; 4] = [
    "--param",
    r#"managed_domains=["contoso.com"]"#,
    "--param",
    "max_unapproved_deactivations=10",
];

/// A first run changes nobody without an admin: `managed_domains` makes
/// an unlicensed in-domain user a leaver from it, but they wait for
/// approval even where the threshold would let them go.
#[tokio::test]
async fn a_first_run_deactivates_nobody_without_an_admin_whatever_the_params() {
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3]), (CY, &[E3]), (DEE, &[E3])],
        unlicensed: &[SUB, "old@contoso.com"],
        missing: &[],
    })
    .await;
    let params = IN_DOMAIN_WITH_TEN_UNAPPROVED;
    let (run, requests) = t.run_ok(&params).await;
    assert_eq!(
        leavers(&run),
        map(&[("old@contoso.com", "no license group")])
    );
    assert_eq!(writes(&requests), Vec::<String>::new());
    let guard = &run.output_of("diff")["guard"];
    assert_eq!(guard["hold"], true, "{guard}");
    assert!(
        guard["reason"].as_str().unwrap().contains("first run"),
        "{guard}"
    );
    // Ann leaves: while the first run's leaver waits, she waits too, and
    // the run says why.
    t.leave_group(ANN, E3);
    let (run, requests) = t.run_ok(&params).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    let guard = &run.output_of("diff")["guard"];
    assert!(
        guard["reason"]
            .as_str()
            .unwrap()
            .contains("people the first run found leaving are not all approved or rejected"),
        "{guard}"
    );
    // Approved, the next run deactivates them, and Ann (one leaver, under
    // the threshold) with them.
    let (id, _) = t.plans().await[0].clone();
    t.decide("approve", &id, &["old@contoso.com"]).await;
    let (run, requests) = t.run_ok(&params).await;
    assert_eq!(run.output_of("diff")["guard"]["hold"], false);
    assert_eq!(writes(&requests).len(), 4, "{:?}", writes(&requests));
    assert!(!t.active("old@contoso.com") && !t.active(ANN));
    assert!(t.active(SUB) && t.active(CY));
}

/// Once the first run's leavers are decided, someone who leaves later is
/// deactivated under `max_unapproved_deactivations`, as in any run: the
/// first run's hold does not go on (it did, saying "this is the flow's
/// first run" at every run, while any leaver waited).
#[tokio::test]
async fn the_first_runs_hold_ends_once_its_leavers_are_decided() {
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3]), (CY, &[E3]), (DEE, &[E3])],
        unlicensed: &["old@contoso.com"],
        missing: &[],
    })
    .await;
    let params = IN_DOMAIN_WITH_TEN_UNAPPROVED;
    t.run_ok(&params).await;
    let (id, _) = t.plans().await[0].clone();
    t.decide("approve", &id, &["old@contoso.com"]).await;
    t.leave_group(ANN, E3);
    let (run, requests) = t.run_ok(&params).await;
    let guard = &run.output_of("diff")["guard"];
    assert_eq!(guard["hold"], false, "{guard}");
    assert_eq!(writes(&requests).len(), 4, "{:?}", writes(&requests));
    assert!(!t.active("old@contoso.com") && !t.active(ANN) && t.active(CY));
    // Cy leaves later (two holders to one: not more than half): no hold
    // either.
    t.leave_group(CY, E3);
    let (run, _) = t.run_ok(&params).await;
    assert_eq!(run.output_of("diff")["guard"]["hold"], false);
    assert!(!t.active(CY));
}

/// `managed_domains` manages an in-domain user only while a run's param
/// says so: once a run without it comes, the unlicensed users it named are
/// nobody's leavers again, whatever the threshold allows (a grace clock it
/// kept for them makes no one managed either).
#[tokio::test]
async fn an_in_domain_user_is_managed_only_while_the_run_names_the_domain() {
    let domain = [
        "d1@contoso.com",
        "d2@contoso.com",
        "d3@contoso.com",
        "d4@contoso.com",
    ];
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3])],
        unlicensed: &[SUB, domain[0], domain[1], domain[2], domain[3]],
        missing: &[],
    })
    .await;
    let (first, _) = t.run_ok(&[]).await;
    assert_eq!(first.output_of("diff")["counts"]["adopted"], 1);
    let managed = ["--param", r#"managed_domains=["contoso.com"]"#];
    // A grace clock starts for each of them, and a run inside the grace
    // makes nobody a leaver yet.
    let (run, requests) = t
        .run_ok(&[managed[0], managed[1], "--param", r#"leaver_grace="3days""#])
        .await;
    assert!(leavers(&run).is_empty());
    assert_eq!(
        run.output_of("diff")["leaving"].as_array().unwrap().len(),
        4
    );
    assert_eq!(writes(&requests), Vec::<String>::new());
    let (run, requests) = t.run_ok(&managed).await;
    let waiting: Vec<(&str, &str)> = domain.iter().map(|d| (*d, "no license group")).collect();
    assert_eq!(leavers(&run), map(&waiting));
    assert_eq!(writes(&requests), Vec::<String>::new());
    // Without the param they are not managed: no leaver, no change, even
    // with room for ten deactivations without approval.
    for _ in 0..2 {
        let (run, requests) = t
            .run_ok(&["--param", "max_unapproved_deactivations=10"])
            .await;
        assert!(leavers(&run).is_empty(), "{:?}", leavers(&run));
        assert_eq!(writes(&requests), Vec::<String>::new());
    }
    for mail in domain.iter().chain([&SUB, &ANN]) {
        assert!(t.active(mail), "{mail}");
    }
    // Named again, they are leavers again, and deactivated when allowed;
    // the flow deactivated them, so they stay managed.
    let (run, requests) = t
        .run_ok(&[
            managed[0],
            managed[1],
            "--param",
            "max_unapproved_deactivations=10",
        ])
        .await;
    assert_eq!(leavers(&run), map(&waiting));
    assert_eq!(writes(&requests).len(), 8, "{:?}", writes(&requests));
    assert!(domain.iter().all(|d| !t.active(d)));
    assert!(t.active(SUB) && t.active(ANN));
}

/// Every request `GET …suffix` fails with a 503, retries included, for
/// each of `path_suffixes`.
fn failing(path_suffixes: &[&str]) -> Faults {
    let fault = |suffix: &&str| TargetedFault {
        method: "GET".into(),
        path_suffix: suffix.to_string(),
        body_contains: None,
        at: Vec::new(),
        fault: FaultKind::Unavailable,
    };
    Faults {
        targeted: path_suffixes.iter().map(fault).collect(),
        ..Faults::default()
    }
}

#[tokio::test]
async fn a_read_failing_on_every_retry_fails_the_run_naming_it_and_deactivates_nobody() {
    let t = five_leavers().await;
    // The members step reads changes through Graph delta after the first
    // run; when delta fails too it reads every member, and that fails.
    let members: &[&str] = &["/members", "/groups/delta"];
    for (suffixes, step) in [(members, "members"), (&["/users/inactive"], "procore")] {
        t.emu.set_faults(failing(suffixes));
        let (run, requests) = t.run(&[]).await;
        assert_ne!(run.code, 0, "{}", tail(&run.stdout));
        // The run fails at the read, naming it; compare never runs.
        let events = run.events();
        let finished = |status: &str| -> Vec<String> {
            events
                .iter()
                .filter(|e| e["event"] == "step_finished" && e["status"] == status)
                .map(|e| e["step"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(finished("failed"), [step], "{}", tail(&run.stdout));
        assert!(!finished("succeeded").contains(&"diff".to_string()));
        let end = events.last().unwrap();
        assert!(
            end["error"]
                .as_str()
                .unwrap()
                .contains(&format!("step `{step}`")),
            "{end}"
        );
        assert_eq!(writes(&requests), Vec::<String>::new());
        assert!(t.plans().await.is_empty(), "no plan from a failed read");
    }
    for mail in [CY, DEE, EVE, FAY, GIL] {
        assert!(t.active(mail));
    }
}

/// No license group matched: nobody is deactivated, not even a key an
/// admin approved before, and that approval waits for the next run.
#[tokio::test]
async fn no_matching_license_group_deactivates_nobody_not_even_an_approved_key() {
    let t = five_leavers().await;
    let (found, _) = t.run_ok(&[]).await;
    assert_eq!(leavers(&found).len(), 5);
    let plans = t.plans().await;
    assert_eq!(plans.len(), 1, "{plans:?}");
    let id = plans[0].0.clone();
    t.decide("approve", &id, &[CY]).await;

    // Even a flow that lets deactivations run unapproved deactivates nobody.
    let before = t.emu.snapshot().requests.len();
    let (run, requests) = t
        .run_ok(&[
            "--param",
            r#"group_prefixes=["License – Nothing"]"#,
            "--param",
            "max_unapproved_deactivations=100",
        ])
        .await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    let guard = &run.output_of("diff")["guard"];
    assert_eq!(guard["hold"], true);
    let reason = guard["reason"].as_str().unwrap();
    assert!(
        reason.contains("no license group") && reason.contains("nobody is deactivated"),
        "{guard}"
    );
    let deactivate = step_finished(&run, "deactivate");
    assert_eq!(deactivate["status"], "skipped", "{deactivate}");
    assert_eq!(
        deactivate["error"], "its `when` is false: `${steps.groups.count}` is 0",
        "the skip names the condition: {deactivate}"
    );
    // Nobody was checked for leaving: the report lists nobody as a
    // leaver (compare's leavers are every managed person, unchecked), and
    // the mail's subject says why it came.
    assert_eq!(guard["kind"], "no_license_group", "{guard}");
    let report = run.output_of("report");
    let subject = report["subject"].as_str().unwrap();
    assert!(subject.ends_with(", no license group matched"), "{subject}");
    let html = report["html"].as_str().unwrap();
    assert!(!html.contains("not acted on"), "{html}");
    // No Graph request per managed person to tell who is gone, and no
    // delta round with an empty filter (Graph answers that with a 400);
    // only the report's mail besides.
    let graph: Vec<String> = t.emu.snapshot().requests[before..]
        .iter()
        .filter(|r| r.path.starts_with("/v1.0/") && !r.path.ends_with("/sendMail"))
        .map(|r| r.path.split('?').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(graph, ["/v1.0/groups"], "only the groups are listed");
    for mail in [ANN, BOB, CY, DEE, EVE, FAY, GIL] {
        assert!(t.active(mail), "{mail}");
    }
    assert_eq!(t.items(&id).await[CY], "approved");

    // With the groups back, the approval made before is applied.
    let (_, requests) = t.run_ok(&[]).await;
    let company = t.emu.snapshot().scenario.company_id;
    let cy = t.id(CY);
    assert!(
        writes(&requests).contains(&format!(
            "PATCH /rest/v1.0/companies/{company}/users/{cy} 200"
        )),
        "{:?}",
        writes(&requests)
    );
    assert!(!t.active(CY));
    for mail in [DEE, EVE, FAY, GIL] {
        assert!(t.active(mail), "{mail}");
    }
}

#[tokio::test]
async fn more_creates_than_max_unapproved_creates_wait_until_approved() {
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3])],
        unlicensed: &[],
        missing: &[
            "m1@contoso.com",
            "m2@contoso.com",
            "m3@contoso.com",
            "m4@contoso.com",
            "m5@contoso.com",
        ],
    })
    .await;
    let (run, requests) = t.run_ok(&["--param", "max_unapproved_creates=3"]).await;
    assert_eq!(writes(&requests), Vec::<String>::new(), "{}", run.stderr);
    let plans = t.plans().await;
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].1, "create");
    assert_eq!(t.items(&plans[0].0).await.len(), 5);
    t.decide("approve", &plans[0].0, &[]).await;
    let (_, requests) = t.run_ok(&["--param", "max_unapproved_creates=3"]).await;
    let creates = writes(&requests)
        .iter()
        .filter(|w| w.starts_with("POST") && w.ends_with("/users 201"))
        .count();
    assert_eq!(creates, 5, "{:?}", writes(&requests));
}

/// The report of the run whose id is `run_id`.
fn report_of(t: &Tenant, run: &Run) -> String {
    run.report(t.data.path())
}

/// Creates held by `max_unapproved_creates` need someone as held
/// deactivations do: each waits in the report with the approve command,
/// they are counted, and the summary is mailed.
#[tokio::test]
async fn creates_held_for_approval_are_reported_and_mailed_with_the_approve_command() {
    let missing = [
        "m1@contoso.com",
        "m2@contoso.com",
        "m3@contoso.com",
        "m4@contoso.com",
    ];
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3])],
        unlicensed: &[],
        missing: &missing,
    })
    .await;
    let (run, requests) = t.run_ok(&["--param", "max_unapproved_creates=3"]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    let plans = t.plans().await;
    assert_eq!(plans.len(), 1);
    let approve = format!("sluice approve {} --revision 1", plans[0].0);
    let report = run.output_of("report");
    assert_eq!(report["summary"]["waiting_for_approval"], 4, "{report}");
    assert_eq!(report["notable"], true);
    let page = report_of(&t, &run);
    for key in missing {
        assert!(
            page.contains(&format!(
                "<td>waiting for approval</td><td>New {}</td><td>{key}</td>",
                key.split('@').next().unwrap()
            )),
            "{key}: {page}"
        );
    }
    assert!(page.contains(&approve), "{page}");
    let mails = t.emu.snapshot().mails;
    assert_eq!(mails.len(), 1, "the held creates are mailed");
    assert!(
        mails[0].subject.contains("4 waiting for approval"),
        "{}",
        mails[0].subject
    );
    assert!(mails[0].html.contains(&approve), "{}", mails[0].html);
}

/// No license group matched: every create and deactivation is stopped,
/// which needs someone, so the report is mailed saying why, although
/// nothing was done or waits.
#[tokio::test]
async fn no_matching_license_group_is_mailed() {
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3]), (BOB, &[E3])],
        unlicensed: &[],
        missing: &[],
    })
    .await;
    t.run_ok(&[]).await;
    assert!(t.emu.snapshot().mails.is_empty(), "nothing happened");
    let (run, requests) = t
        .run_ok(&["--param", r#"group_prefixes=["License – Nothing"]"#])
        .await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert_eq!(run.output_of("report")["notable"], true);
    let mails = t.emu.snapshot().mails;
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].html.contains("no license group matched"),
        "{}",
        mails[0].html
    );
}

/// The holders-halved guard keeps the count of the last run it trusted
/// while any deactivation it held waits for a decision; once an admin has
/// rejected (or approved) them all, the count of the last run that held
/// them is trusted: someone who leaves after that is not held for the old
/// drop (a tester's run said "fell from 33 to 8" after every held
/// deactivation was decided), and a new drop fires it again.
#[tokio::test]
async fn rejecting_what_the_guard_held_makes_the_new_count_the_one_it_trusts() {
    let t = seven_in_e3().await;
    // Deactivations would run without approval but for the guard.
    let params = ["--param", "max_unapproved_deactivations=10"];
    let guard = |run: &Run| run.output_of("diff")["guard"]["hold"] == json!(true);
    let (first, _) = t.run_ok(&params).await;
    assert_eq!(first.output_of("diff")["counts"]["adopted"], 7);
    // Five of seven leave their group at once: more than half.
    for mail in [BOB, CY, DEE, EVE, FAY] {
        t.leave_group(mail, E3);
    }
    let (held, requests) = t.run_ok(&params).await;
    assert!(guard(&held), "{}", held.output_of("diff")["guard"]);
    assert_eq!(writes(&requests), Vec::<String>::new());
    let (id, _) = t.plans().await[0].clone();
    // Two rejected, three still waiting: the guard still holds.
    t.decide("reject", &id, &[BOB, CY]).await;
    let (run, requests) = t.run_ok(&params).await;
    assert!(guard(&run));
    assert_eq!(writes(&requests), Vec::<String>::new());
    // All five rejected, and Gil leaves since: two holders to one is no
    // drop of more than half from the count the admin saw, so Gil is
    // deactivated under the threshold, and the rejected five are left as
    // they are.
    t.decide("reject", &id, &[DEE, EVE, FAY]).await;
    t.leave_group(GIL, E3);
    let (run, requests) = t.run_ok(&params).await;
    assert!(!guard(&run), "{}", run.output_of("diff")["guard"]);
    let company = t.emu.snapshot().scenario.company_id;
    let gil = t.id(GIL);
    let patches: Vec<String> = writes(&requests)
        .into_iter()
        .filter(|w| w.starts_with("PATCH"))
        .collect();
    assert_eq!(
        patches,
        [format!(
            "PATCH /rest/v1.0/companies/{company}/users/{gil} 200"
        )],
        "{}",
        run.stderr
    );
    for mail in [ANN, BOB, CY, DEE, EVE, FAY] {
        assert!(t.active(mail), "{mail}");
    }
    assert!(!t.active(GIL));
    // A new drop from that count fires it again.
    t.leave_group(ANN, E3);
    let (run, requests) = t.run_ok(&params).await;
    assert!(guard(&run));
    assert!(
        run.output_of("diff")["guard"]["reason"]
            .as_str()
            .unwrap()
            .contains("from 1 to 0"),
        "{}",
        run.output_of("diff")["guard"]
    );
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert!(t.active(ANN));
}

/// Seven license holders, all in E3, all in Procore.
async fn seven_in_e3() -> Tenant {
    Tenant::new(Plan {
        licensed: &[
            (ANN, &[E3]),
            (BOB, &[E3]),
            (CY, &[E3]),
            (DEE, &[E3]),
            (EVE, &[E3]),
            (FAY, &[E3]),
            (GIL, &[E3]),
        ],
        unlicensed: &[],
        missing: &[],
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_found_in_the_leavers_grace_holds_them_when_it_ends() {
    let t = seven_in_e3().await;
    let params = [
        "--param",
        "max_unapproved_deactivations=10",
        "--param",
        r#"leaver_grace="2s""#,
    ];
    t.run_ok(&params).await;
    // Five of seven leave at once; the run that finds them is inside their
    // grace, so it has nobody to deactivate or hold yet.
    for mail in [BOB, CY, DEE, EVE, FAY] {
        t.leave_group(mail, E3);
    }
    let (found, requests) = t.run_ok(&params).await;
    assert_eq!(
        found.output_of("diff")["leaving"].as_array().unwrap().len(),
        5
    );
    assert_eq!(writes(&requests), Vec::<String>::new());
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // Their grace is over: the drop holds them all, under the threshold.
    let (run, requests) = t.run_ok(&params).await;
    let guard = &run.output_of("diff")["guard"];
    assert_eq!(guard["hold"], json!(true), "{guard}");
    assert!(
        guard["reason"].as_str().unwrap().contains("from 7 to 2"),
        "{guard}"
    );
    assert_eq!(writes(&requests), Vec::<String>::new(), "{}", run.stderr);
    for mail in [BOB, CY, DEE, EVE, FAY] {
        assert!(t.active(mail), "{mail}");
    }
    assert_eq!(t.plans().await.len(), 1);
}

/// A license holder missing from Procore, to be created.
const NEW: &str = "new@contoso.com";

/// Ann, licensed and in Procore, and [`NEW`], licensed and missing.
async fn ann_and_a_newcomer() -> Tenant {
    Tenant::new(Plan {
        licensed: &[(ANN, &[E3])],
        unlicensed: &[],
        missing: &[NEW],
    })
    .await
}

#[tokio::test]
async fn a_person_the_flow_created_whose_entra_user_is_deleted_leaves_as_user_gone() {
    let t = ann_and_a_newcomer().await;
    let (first, _) = t.run_ok(&[]).await;
    assert_eq!(first.output_of("create")["ok"], 1, "{}", first.stdout);
    // The record the create wrote keeps the Entra id, as an adopted one does.
    let graph_id = t
        .emu
        .snapshot()
        .scenario
        .graph_users
        .iter()
        .find(|u| u.mail.as_deref() == Some(NEW))
        .unwrap()
        .id
        .clone();
    assert!(t.emu.delete_user(&graph_id));
    assert!(t.emu.delete_user(t.graph_id(ANN)));
    let (found, _) = t.run_ok(&[]).await;
    assert_eq!(
        leavers(&found),
        map(&[(ANN, "user gone"), (NEW, "user gone")]),
        "created and adopted alike"
    );
}

/// A members page that labels the flow's people devices (a security
/// tester's proxy) made leavers of them ("no license group"), deactivated
/// under a threshold. Object ids are unique across the directory, so
/// the read contradicts itself: it fails, and nobody is changed.
#[tokio::test]
async fn a_page_that_labels_known_users_devices_fails_and_changes_nobody() {
    // Two of seven in E3: too few to trip the mass-change guard.
    let t = Tenant::new(Plan {
        licensed: &[
            (ANN, &[E3]),
            (BOB, &[E3]),
            (CY, &[O1]),
            (DEE, &[O1]),
            (EVE, &[O1]),
            (FAY, &[O1]),
            (GIL, &[O1]),
        ],
        unlicensed: &[],
        missing: &[],
    })
    .await;
    let params = [
        "--param",
        "max_unapproved_deactivations=10",
        "--param",
        "incremental=false",
    ];
    let (first, _) = t.run_ok(&params).await;
    assert_eq!(first.output_of("diff")["counts"]["adopted"], 7);
    t.emu.set_faults(every(
        "GET",
        format!("/groups/{}/members", t.groups[E3]),
        FaultKind::UsersAsDevices,
    ));
    let (run, requests) = t.run(&params).await;
    assert_ne!(run.code, 0, "{}", tail(&run.stdout));
    assert!(
        run.stderr.contains("as a member that is not a user"),
        "{}",
        run.stderr
    );
    assert_eq!(writes(&requests), Vec::<String>::new());
}

#[tokio::test]
async fn an_approved_deactivation_procore_refused_through_every_retry_keeps_its_approval() {
    let t = five_leavers().await;
    t.run_ok(&[]).await;
    let (id, _) = t.plans().await[0].clone();
    t.decide("approve", &id, &[CY, EVE]).await;
    // Procore is unavailable for Cy's deactivation, retries included.
    let cy = t.id(CY);
    t.emu.set_faults(every(
        "PATCH",
        format!("/users/{cy}"),
        FaultKind::Unavailable,
    ));
    let (run, _) = t.run(&[]).await;
    assert!(t.active(CY), "{}", tail(&run.stdout));
    assert!(!t.active(EVE));
    let items = t.items(&id).await;
    assert_eq!(
        (items[CY].as_str(), items[EVE].as_str()),
        ("approved", "done"),
        "a failure a later run could fix does not use up the approval"
    );
    // The next run deactivates Cy as approved, without asking again.
    t.emu.set_faults(Faults::default());
    let (_, requests) = t.run_ok(&[]).await;
    assert!(!t.active(CY));
    assert!(
        writes(&requests)
            .iter()
            .any(|w| w.starts_with("PATCH /rest/v1.0/companies/")
                && w.ends_with(&format!("/users/{cy} 200"))),
        "{:?}",
        writes(&requests)
    );
    assert_eq!(t.items(&id).await[CY], "done");
}

/// A data directory where the run's folder cannot be made (`runs` is a
/// file) used to fail the run at its report, after every create; now the
/// run is refused before anything is read.
#[tokio::test]
async fn a_flow_whose_report_cannot_be_written_does_not_run() {
    let t = ann_and_a_newcomer().await;
    std::fs::write(t.data.path().join("runs"), "not a folder").unwrap();
    let (run, requests) = t.run(&[]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stderr, tail(&run.stdout));
    assert!(
        run.stderr.contains("was not run: its report files go to")
            && run.stderr.contains("which cannot be made"),
        "{}",
        run.stderr
    );
    assert_eq!(requests.len(), 0, "nothing read, nothing created");
}

#[tokio::test]
async fn a_flow_with_approvals_does_not_run_when_its_history_cannot_be_opened() {
    let t = ann_and_a_newcomer().await;
    std::fs::write(t.data.path().join("history.sqlite"), vec![0x5a_u8; 10_000]).unwrap();
    let (run, requests) = t.run(&[]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stderr, tail(&run.stdout));
    assert!(
        run.stderr.contains("was not run") && run.stderr.contains("(`create`, `deactivate`)"),
        "{}",
        run.stderr
    );
    // Either setting may be what is wrong: both are named.
    assert!(
        run.stderr.contains("`--data-dir`") && run.stderr.contains("`--database`"),
        "{}",
        run.stderr
    );
    assert_eq!(requests.len(), 0, "nothing read, nothing created");
    // Nor does a dry run: without the approvals it could not say what
    // would run, and its gated steps would fail while it "finished".
    let (dry, requests) = t.run(&["--dry-run"]).await;
    assert_eq!(dry.code, 1, "{}\n{}", dry.stderr, tail(&dry.stdout));
    assert!(dry.stderr.contains("was not run"), "{}", dry.stderr);
    assert_eq!(requests.len(), 0);
}

/// A host killed while a deactivated person's project removal waits (here
/// on a long `Retry-After`) has already kept that the flow was
/// deactivating them (before the PATCH): when they hold a license again,
/// the next run reactivates them. (Once, with nothing kept before the
/// item's end, the fact died with the host, and the returner stayed
/// inactive for good as "inactive, not the flow's doing".)
#[tokio::test]
async fn a_deactivation_is_kept_even_when_the_host_dies_before_the_item_ends() {
    let t = cy_deactivated_by_a_host_killed_during_the_removal().await;
    cy_is_licensed_again_and_reactivated(&t).await;
}

/// The project removal a killed host never saw answered: the record
/// still says `deactivating`, so the next run confirms Cy's deactivation
/// on the inactive list (no second PATCH), takes Cy off the project, and
/// the item that does it puts the deactivation in Cy's ledger, which the
/// killed run's item never did.
#[tokio::test]
async fn a_removal_a_killed_host_never_finished_is_made_by_the_next_run() {
    let t = cy_deactivated_by_a_host_killed_during_the_removal().await;
    assert!(t.on_project(CY));
    assert!(
        !story(&t, CY)
            .await
            .iter()
            .any(|(step, ..)| step == "deactivate"),
        "the killed run's item never ended"
    );
    let (run, requests) = t
        .run_ok(&["--param", "max_unapproved_deactivations=10"])
        .await;
    assert_eq!(run.output_of("diff")["leavers"][0]["inactive"], json!(true));
    let project = t.emu.snapshot().scenario.project_ids[0];
    assert_eq!(
        writes(&requests),
        [format!(
            "DELETE /rest/v1.0/projects/{project}/users/{}/actions/remove 204",
            t.id(CY)
        )]
    );
    assert!(!t.active(CY) && !t.on_project(CY));
    assert_eq!(
        story(&t, CY).await.last(),
        Some(&(
            "deactivate".to_string(),
            "succeeded".to_string(),
            String::new()
        ))
    );
    owes_nothing_more(&t, &["--param", "max_unapproved_deactivations=10"]).await;
}

/// Cy and Eve leave and both deactivations are approved; the run that
/// makes them is killed while Cy's PATCH is tried again and again
/// (Procore unavailable), once Eve's item has ended. Eve's item spent
/// her approval with its own record, so the next run finds it done;
/// before, approvals were spent only when the step ended, which the dead
/// host never reached, and the next run closed Eve's as "no longer
/// needed", as if she had never been deactivated. The next run makes
/// Cy's and spends it.
#[tokio::test]
async fn an_approval_an_item_used_before_its_host_died_stays_used() {
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3]), (CY, &[E3]), (EVE, &[E3])],
        unlicensed: &[],
        missing: &[],
    })
    .await;
    t.run_ok(&[]).await;
    t.leave_group(CY, E3);
    t.leave_group(EVE, E3);
    t.run_ok(&[]).await;
    let (id, _) = t.plans().await[0].clone();
    t.decide("approve", &id, &[CY, EVE]).await;
    let company = t.emu.snapshot().scenario.company_id;
    t.emu.set_faults(Faults {
        targeted: vec![TargetedFault {
            method: "PATCH".into(),
            path_suffix: format!("/companies/{company}/users/{}", t.id(CY)),
            body_contains: None,
            at: Vec::new(),
            fault: FaultKind::Unavailable,
        }],
        ..Faults::default()
    });
    let mut child = sluice_cmd_killable(&t, &[]);
    let asked = std::time::Instant::now();
    let eve_done = |story: Vec<(String, String, String)>| {
        story
            .iter()
            .any(|(step, status, _)| step == "deactivate" && status == "succeeded")
    };
    while !eve_done(story(&t, EVE).await) {
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(60),
            "Eve's deactivation never ended: {:?} {:?}",
            story(&t, EVE).await,
            writes(&t.emu.snapshot().requests)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().await.unwrap();
    assert!(t.active(CY) && !t.active(EVE));
    assert_eq!(t.items(&id).await[EVE], "done", "spent by the killed run");
    t.emu.set_faults(Faults::default());
    // The dead run's lease lapses.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    t.run_ok(&[]).await;
    assert!(!t.active(CY) && !t.active(EVE));
    assert_eq!(
        t.items(&id).await,
        [(CY, "done"), (EVE, "done")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into()
    );
    assert!(
        !story(&t, EVE)
            .await
            .iter()
            .any(|(_, status, _)| status == "closed"),
        "Eve's approval was not closed as no longer needed"
    );
}

/// The shipped flow's host (with `extra` arguments and a one-second
/// lease), started to be killed.
fn sluice_cmd_killable(t: &Tenant, extra: &[&str]) -> tokio::process::Child {
    let flow = flow_path();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .args(["run", flow.to_str().unwrap(), "--lease", "1s"])
        .args(extra)
        .env("SLUICE_DATA_DIR", t.data.path())
        .envs(t.env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs the shipped flow (with `extra` arguments and a one-second lease)
/// and kills its host once it has sent a `method` request whose path ends
/// with `suffix`, which the faults set make it wait on.
async fn run_killed_at(t: &Tenant, method: &str, suffix: &str, extra: &[&str]) {
    let mut child = sluice_cmd_killable(t, extra);
    sent(t, method, suffix).await;
    child.kill().await.unwrap();
}

/// Waits (up to a minute) until the emulator has been sent a `method`
/// request whose path ends with `suffix`.
async fn sent(t: &Tenant, method: &str, suffix: &str) {
    let asked = std::time::Instant::now();
    while !t
        .emu
        .snapshot()
        .requests
        .iter()
        .any(|r| r.method == method && r.path.ends_with(suffix))
    {
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(60),
            "no {method} …{suffix} was sent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Ann and Cy are adopted; Cy leaves, and a run allowed to deactivate
/// them is killed while Cy's project removal waits on a long
/// `Retry-After`, after the deactivation reached Procore. The faults are
/// off again and the dead run's lease has lapsed.
async fn cy_deactivated_by_a_host_killed_during_the_removal() -> Tenant {
    let t = ann_and_cy().await;
    t.run_ok(&[]).await;
    t.leave_group(CY, E3);
    let cy = t.id(CY);
    let project = t.emu.snapshot().scenario.project_ids[0];
    let removal = format!("/projects/{project}/users/{cy}/actions/remove");
    t.emu.set_faults(Faults {
        retry_after_secs: 600,
        targeted: vec![TargetedFault {
            method: "DELETE".into(),
            path_suffix: removal.clone(),
            body_contains: None,
            at: Vec::new(),
            fault: FaultKind::TooMany,
        }],
        ..Faults::default()
    });
    run_killed_at(
        &t,
        "DELETE",
        &removal,
        &["--param", "max_unapproved_deactivations=10"],
    )
    .await;
    assert!(!t.active(CY), "the deactivation reached Procore");
    t.emu.set_faults(Faults::default());
    // The dead run's lease lapses.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    t
}

/// Cy's deactivation is done: inactive and off the project in Procore,
/// the approval `id` used, and the ledger's last word a deactivate item
/// that succeeded.
async fn cy_is_deactivated_with_the_approval(t: &Tenant, id: &str) {
    assert!(!t.active(CY) && !t.on_project(CY));
    assert_eq!(t.items(id).await[CY], "done", "the approval is used");
    assert_eq!(
        story(t, CY).await.last(),
        Some(&(
            "deactivate".to_string(),
            "succeeded".to_string(),
            String::new()
        ))
    );
}

/// Cy, whom the flow deactivated, holds a license again: the next run
/// finds them a returner, reactivates them through the inactive route and
/// puts them back on the project.
async fn cy_is_licensed_again_and_reactivated(t: &Tenant) {
    let (cy, company) = (t.id(CY), t.emu.snapshot().scenario.company_id);
    assert!(t.emu.add_member(&t.groups[E3], t.graph_id(CY)));
    let (run, requests) = t.run_ok(&[]).await;
    assert_eq!(
        run.output_of("diff")["returners"][0]["key"],
        json!(CY),
        "{}",
        tail(&run.stdout)
    );
    assert!(
        writes(&requests).contains(&format!(
            "PATCH /rest/v1.0/companies/{company}/users/inactive/{cy} 200"
        )),
        "{:?}",
        writes(&requests)
    );
    assert!(t.active(CY) && t.on_project(CY));
}

/// A deactivation an admin rejected is closed as no longer needed once the
/// person holds a license again, and the ledger says so; when they leave
/// again the plan's item waits anew, and the ledger still tells the
/// earlier closing (not only the item's latest state).
#[tokio::test]
async fn a_rejected_leaver_who_returns_is_closed_and_the_ledger_keeps_it() {
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3]), (CY, &[E3]), (DEE, &[E3])],
        unlicensed: &[],
        missing: &[],
    })
    .await;
    t.run_ok(&[]).await;
    // Cy and Dee leave; both wait. Cy's deactivation is rejected; Dee's
    // still waits, so the plan stays open.
    t.leave_group(CY, E3);
    t.leave_group(DEE, E3);
    t.run_ok(&[]).await;
    let (id, _) = t.plans().await[0].clone();
    t.decide("reject", &id, &[CY]).await;
    // Cy holds a license again: the next run closes the rejected item.
    assert!(t.emu.add_member(&t.groups[E3], t.graph_id(CY)));
    let (_, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert_eq!(t.items(&id).await, map(&[(CY, "closed"), (DEE, "pending")]));
    let closing = (
        "deactivate".to_string(),
        "closed".to_string(),
        "no longer among the items: no longer needed".to_string(),
    );
    assert_eq!(story(&t, CY).await.last(), Some(&closing));
    let text = t.cli(&["ledger", CY]).await;
    assert!(
        text.stdout.contains(&format!(
            "approval closed (plan {id}): no longer among the items"
        )),
        "{}",
        text.stdout
    );
    // Cy leaves again: the same plan's item waits anew, and the closing
    // stays in Cy's story between the rejection and the new wait.
    t.leave_group(CY, E3);
    t.run_ok(&[]).await;
    assert_eq!(
        t.items(&id).await,
        map(&[(CY, "pending"), (DEE, "pending")])
    );
    let entry = |s: &str, w: &str, d: &str| (s.to_string(), w.to_string(), d.to_string());
    assert_eq!(
        story(&t, CY).await,
        [
            entry("diff", "succeeded", ""),
            entry("deactivate", "waiting", ""),
            entry("deactivate", "rejected", "Dana Admin"),
            closing,
            entry("deactivate", "waiting", ""),
        ]
    );
}

/// A rejection stands while the person is a leaver, also through a run
/// that does not count them as one: a run without the `managed_domains`
/// that made them leavers, or with a longer `leaver_grace`. Such a run
/// used to close the rejected item as no longer needed, and the next run
/// took the person for a new leaver: deactivated without approval under
/// `max_unapproved_deactivations`, though an admin had said to keep them.
#[tokio::test]
async fn a_rejection_stands_through_runs_that_do_not_count_the_leaver() {
    const D1: &str = "d1@contoso.com";
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3]), (CY, &[E3])],
        unlicensed: &[D1],
        missing: &[],
    })
    .await;
    let domain = ["--param", r#"managed_domains=["contoso.com"]"#];
    let room = ["--param", "max_unapproved_deactivations=5"];
    let both = [domain[0], domain[1], room[0], room[1]];
    // The first run finds D1 leaving and holds her; an admin keeps her.
    t.run_ok(&both).await;
    let (id, _) = t.plans().await[0].clone();
    t.decide("reject", &id, &[D1]).await;
    // A run without the domains, then one with them and room to spare.
    let (run, requests) = t.run_ok(&[]).await;
    assert_eq!(leavers(&run), map(&[(D1, "no license group")]));
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert_eq!(t.items(&id).await, map(&[(D1, "rejected")]));
    let (_, requests) = t.run_ok(&both).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert_eq!(t.items(&id).await, map(&[(D1, "rejected")]));
    assert!(t.active(D1));
    // Cy leaves and waits (every deactivation waits by default); kept too.
    t.leave_group(CY, E3);
    t.run_ok(&[]).await;
    assert_eq!(
        t.items(&id).await,
        map(&[(CY, "pending"), (D1, "rejected")])
    );
    t.decide("reject", &id, &[CY]).await;
    // A run whose grace would put Cy back in it, then one with room.
    let (run, requests) = t.run_ok(&["--param", r#"leaver_grace="1h""#]).await;
    assert!(leavers(&run).contains_key(CY), "{:?}", leavers(&run));
    assert_eq!(writes(&requests), Vec::<String>::new());
    let (_, requests) = t.run_ok(&room).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert_eq!(
        t.items(&id).await,
        map(&[(CY, "rejected"), (D1, "rejected")])
    );
    assert!(t.active(CY) && t.active(D1));
}

/// A `--only` run's report says first that it handled only the people
/// named, and its subject (the mail's) says so: a tester's `--only` run
/// mailed "1 created, 0 failed" with no word of the person still missing.
#[tokio::test]
async fn a_report_of_a_run_with_only_says_whom_it_handled() {
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3])],
        unlicensed: &[],
        missing: &[BOB, GIL],
    })
    .await;
    let (run, requests) = t.run_ok(&["--only", BOB]).await;
    let report = run.output_of("report");
    let subject = report["subject"].as_str().unwrap();
    assert!(subject.ends_with(" (only 1 person, --only)"), "{subject}");
    let first = report["warnings"][0].as_str().unwrap();
    assert!(
        first.starts_with(&format!(
            "this run handled only the people named with --only ({BOB}): everyone else was left as they were"
        )),
        "{first}"
    );
    let created: Vec<String> = writes(&requests)
        .into_iter()
        .filter(|w| w.starts_with("POST") && w.ends_with("/users 201"))
        .collect();
    assert_eq!(created.len(), 1, "only Bob: {:?}", writes(&requests));
    // A run without it says nothing of the kind.
    let (run, _) = t.run_ok(&[]).await;
    let report = run.output_of("report");
    assert!(!report["subject"].as_str().unwrap().contains("--only"));
}

/// A key's ledger as `(step, what, who or why)`: an item's status, a
/// decision and who made it, a closing and its detail.
async fn story(t: &Tenant, key: &str) -> Vec<(String, String, String)> {
    let ledger = t.json(&["ledger", key, "--json"]).await;
    let text = |e: &Value, field: &str| e[field].as_str().unwrap_or("").to_string();
    ledger
        .as_array()
        .unwrap()
        .iter()
        .map(|e| match e["kind"].as_str() {
            Some("decision") => (text(e, "step"), text(e, "decision"), text(e, "by")),
            Some("closed") => (text(e, "step"), "closed".into(), text(e, "detail")),
            _ => (text(e, "step"), text(e, "status"), String::new()),
        })
        .collect()
}

/// Ann and Cy, both in E3 and both in Procore.
async fn ann_and_cy() -> Tenant {
    Tenant::new(Plan {
        licensed: &[(ANN, &[E3]), (CY, &[E3])],
        unlicensed: &[],
        missing: &[],
    })
    .await
}

/// Ann and Cy hold a license and are adopted; Cy leaves, and the next run
/// has Cy's deactivation wait for approval: the tenant and the plan's id.
async fn cy_leaves_and_waits() -> (Tenant, String) {
    let t = ann_and_cy().await;
    t.run_ok(&[]).await;
    t.leave_group(CY, E3);
    t.run_ok(&[]).await;
    let (id, _) = t.plans().await[0].clone();
    (t, id)
}

/// Cy, approved for deactivation, joins a license group again, and Graph's
/// look-up does not list Cy yet (its replication delay): the read does not
/// say whether Cy holds a license, so the run deactivates nobody, not even
/// Cy, and says why. (Before, Cy was deactivated and taken off the project
/// while back in the group.) The next run finds Cy and closes the approval
/// as no longer needed.
#[tokio::test]
async fn an_approved_leaver_back_in_a_group_graph_does_not_list_yet_is_not_deactivated() {
    let (t, id) = cy_leaves_and_waits().await;
    t.decide("approve", &id, &[CY]).await;
    assert!(t.emu.add_member(&t.groups[E3], t.graph_id(CY)));
    t.emu.set_faults(Faults {
        lookup_lag: Some(1),
        ..Faults::default()
    });
    let (run, requests) = t
        .run_ok(&["--param", "max_unapproved_deactivations=100"])
        .await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert!(t.active(CY) && t.on_project(CY));
    let guard = &run.output_of("diff")["guard"];
    assert_eq!(guard["kind"], "unlisted_joiners", "{guard}");
    assert_eq!(guard["deactivate"], false, "{guard}");
    let deactivate = step_finished(&run, "deactivate");
    assert_eq!(deactivate["status"], "skipped", "{deactivate}");
    let report = run.output_of("report");
    let html = report["html"].as_str().unwrap();
    assert!(html.contains("not listed by Graph yet"), "{html}");
    assert_eq!(t.items(&id).await[CY], "approved", "kept for the next run");

    let (run, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert!(t.active(CY));
    assert_eq!(run.output_of("diff")["guard"]["hold"], false);
    assert_eq!(t.items(&id).await[CY], "closed");
}

/// Cy, approved for deactivation, whose PATCH Procore applies but answers
/// with a 500 at the `at`-th attempts (every one when empty): the host
/// resends the idempotent PATCH, and a resend that reaches Procore once Cy
/// is inactive is a 404 (the route holds active users only). The step finds
/// Cy on the inactive list, so the item is done: deactivated, recorded,
/// off the project; and when Cy holds a license again the next run
/// reactivates them. (Before, the item failed and nothing was kept: the
/// approval was closed as no longer needed and Cy stayed inactive for good
/// as "inactive, not the flow's doing".) Returns the PATCHes' statuses.
async fn a_deactivation_applied_but_answered_with_an_error(at: Vec<u64>) -> Vec<u16> {
    a_deactivation_applied_then(at, None).await
}

/// As [`a_deactivation_applied_but_answered_with_an_error`]; every PATCH
/// of Cy after those `at` gets `then`, when given.
async fn a_deactivation_applied_then(at: Vec<u64>, then: Option<FaultKind>) -> Vec<u16> {
    let (t, id) = cy_leaves_and_waits().await;
    t.decide("approve", &id, &[CY]).await;
    let cy = t.id(CY);
    let snapshot = t.emu.snapshot();
    let (company, project) = (
        snapshot.scenario.company_id,
        snapshot.scenario.project_ids[0],
    );
    let patch_of_cy = |at: Vec<u64>, fault: FaultKind| TargetedFault {
        method: "PATCH".into(),
        path_suffix: format!("/companies/{company}/users/{cy}"),
        body_contains: None,
        at,
        fault,
    };
    let mut targeted = vec![patch_of_cy(at, FaultKind::ServerErrorAfterApply)];
    targeted.extend(then.map(|fault| patch_of_cy(Vec::new(), fault)));
    t.emu.set_faults(Faults {
        targeted,
        ..Faults::default()
    });
    let (run, requests) = t.run_ok(&[]).await;
    t.emu.set_faults(Faults::default());
    let patch = format!("/rest/v1.0/companies/{company}/users/{cy}");
    let statuses: Vec<u16> = requests
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == patch)
        .map(|r| r.status)
        .collect();
    let first = requests
        .iter()
        .position(|r| r.method == "PATCH" && r.path == patch)
        .unwrap();
    let look_up = format!(
        "/rest/v1.0/companies/{company}/users/inactive?page=1&per_page=1000&filters[search]=cy%40contoso.com"
    );
    assert!(
        requests[first..]
            .iter()
            .any(|r| r.method == "GET" && r.path == look_up),
        "Cy is looked up on the inactive list by email address"
    );
    assert!(
        writes(&requests).contains(&format!(
            "DELETE /rest/v1.0/projects/{project}/users/{cy}/actions/remove 204"
        )),
        "{:?}",
        writes(&requests)
    );
    assert!(!t.active(CY) && !t.on_project(CY));
    let item = &run.output_of("deactivate")["items"][0];
    assert_eq!(
        (
            &item["output"]["status"],
            &item["output"]["removed_from_project"]
        ),
        (&json!("deactivated"), &json!("removed")),
        "{item:#}"
    );
    cy_is_deactivated_with_the_approval(&t, &id).await;
    // Cy holds a license again: the record says the flow deactivated them.
    cy_is_licensed_again_and_reactivated(&t).await;
    statuses
}

#[tokio::test]
async fn a_deactivation_answered_500_every_time_after_it_was_applied_is_kept() {
    let statuses = a_deactivation_applied_but_answered_with_an_error(Vec::new()).await;
    assert!(
        statuses.len() > 1 && statuses.iter().all(|s| *s == 500),
        "resent, and a 500 every time: {statuses:?}"
    );
}

/// The resends of a deactivation Procore applied are throttled until
/// the host gives up: a 429 says nothing of Cy, so the step looks Cy up
/// and finds them inactive. (Before, the 429 counted as a refusal, and
/// the record went back to active while Procore had Cy inactive: never
/// reactivated once licensed again.)
#[tokio::test]
async fn a_deactivation_applied_then_throttled_until_the_host_gives_up_is_kept() {
    let statuses = a_deactivation_applied_then(vec![1], Some(FaultKind::TooMany)).await;
    assert!(
        statuses.len() > 2 && statuses[0] == 500 && statuses[1..].iter().all(|s| *s == 429),
        "applied, then throttled every time: {statuses:?}"
    );
}

#[tokio::test]
async fn a_deactivation_whose_resend_procore_answers_404_is_kept() {
    let statuses = a_deactivation_applied_but_answered_with_an_error(vec![1]).await;
    assert_eq!(statuses, [500, 404], "the resend finds Cy inactive");
}

/// Cy's approved deactivation, which Procore applies but answers with a
/// 500 every time, while every look-up on the inactive list fails too: the
/// item fails, but the record says the flow was deactivating Cy (kept
/// before the PATCH). The next run lists Cy again, as a leaver Procore has
/// inactive already; the step confirms it on the inactive list without a
/// second PATCH, records it, takes Cy off the project and uses the
/// approval; and once Cy holds a license again they are reactivated.
/// (Before, the next run closed the approval as "no longer needed" and Cy
/// stayed inactive for good.)
#[tokio::test]
async fn a_deactivation_neither_answered_nor_confirmed_is_finished_by_the_next_run() {
    let (t, id) = cy_leaves_and_waits().await;
    let plan = t.json(&["approvals", "show", &id, "--json"]).await;
    assert_eq!(
        plan["plan"]["reason"],
        json!(
            "1 item without approval is more than the 0 this step may run unapproved (approval above 0)"
        ),
        "{plan:#}"
    );
    t.decide("approve", &id, &[CY]).await;
    let cy = t.id(CY);
    let snapshot = t.emu.snapshot();
    let (company, project) = (
        snapshot.scenario.company_id,
        snapshot.scenario.project_ids[0],
    );
    let fault = |method: &str, path_suffix: String, at: Vec<u64>, fault| TargetedFault {
        method: method.into(),
        path_suffix,
        body_contains: None,
        at,
        fault,
    };
    t.emu.set_faults(Faults {
        targeted: vec![
            fault(
                "PATCH",
                format!("/companies/{company}/users/{cy}"),
                Vec::new(),
                FaultKind::ServerErrorAfterApply,
            ),
            // The first is the run's own read of the inactive list.
            fault(
                "GET",
                format!("/companies/{company}/users/inactive"),
                (2..=100).collect(),
                FaultKind::ServerError,
            ),
        ],
        ..Faults::default()
    });
    let (run, _) = t.run(&[]).await;
    t.emu.set_faults(Faults::default());
    let item = &run.output_of("deactivate")["items"][0];
    assert_eq!(item["status"], "failed", "{item:#}");
    assert!(!t.active(CY), "Procore applied it");
    let (run, requests) = t.run_ok(&[]).await;
    let leaver = &run.output_of("diff")["leavers"][0];
    assert_eq!(
        (&leaver["key"], &leaver["inactive"]),
        (&json!(CY), &json!(true)),
        "{leaver:#}"
    );
    let patch = format!("/rest/v1.0/companies/{company}/users/{cy}");
    assert!(
        !requests
            .iter()
            .any(|r| r.method == "PATCH" && r.path == patch),
        "not sent again: {:?}",
        writes(&requests)
    );
    assert!(
        writes(&requests).contains(&format!(
            "DELETE /rest/v1.0/projects/{project}/users/{cy}/actions/remove 204"
        )),
        "{:?}",
        writes(&requests)
    );
    let item = &run.output_of("deactivate")["items"][0];
    assert_eq!(item["output"]["status"], "deactivated", "{item:#}");
    cy_is_deactivated_with_the_approval(&t, &id).await;
    cy_is_licensed_again_and_reactivated(&t).await;
}

/// A deactivation Procore refuses for sure (a 429 past every retry) puts
/// Cy's record back as it was (`deactivating` is kept only while the
/// outcome cannot be told): the flow never takes a later deactivation by
/// someone else for its own, nor reactivates someone it did not deactivate.
#[tokio::test]
async fn a_deactivation_refused_for_sure_leaves_the_record_as_it_was() {
    let (t, id) = cy_leaves_and_waits().await;
    t.decide("approve", &id, &[CY]).await;
    let (cy, company) = (t.id(CY), t.emu.snapshot().scenario.company_id);
    t.emu.set_faults(Faults {
        targeted: vec![TargetedFault {
            method: "PATCH".into(),
            path_suffix: format!("/companies/{company}/users/{cy}"),
            body_contains: None,
            at: Vec::new(),
            fault: FaultKind::TooMany,
        }],
        retry_after_secs: 0,
        ..Faults::default()
    });
    let (run, _) = t.run(&[]).await;
    t.emu.set_faults(Faults::default());
    let item = &run.output_of("deactivate")["items"][0];
    assert_eq!(item["status"], "failed", "{item:#}");
    assert!(t.active(CY), "Procore refused it");
    let store = sluice_store::Store::open(&sluice_store::Location::Sqlite(sluice_store::path_in(
        t.data.path(),
    )))
    .await
    .unwrap();
    let key = sluice_store::StateKey::try_from(format!("managed/{CY}").as_str()).unwrap();
    let record = store
        .state_get("procore-license-sync", &key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record["status"], "active", "{record:#}");
}

/// A host killed while Cy's approved deactivation waits out a ten-minute
/// `Retry-After` (never applied) leaves the record `deactivating`. An
/// admin then rejects it: the next run sees Cy still active, so the record
/// is active again, and nothing is sent. (Before, it stayed `deactivating`,
/// and a deactivation an admin later made by hand was taken for the
/// flow's: Cy, licensed again, was reactivated.)
#[tokio::test]
async fn a_deactivation_a_killed_host_never_sent_through_is_undone_in_the_record() {
    let (t, id) = cy_leaves_and_waits().await;
    t.decide("approve", &id, &[CY]).await;
    let (cy, company) = (t.id(CY), t.emu.snapshot().scenario.company_id);
    let patch = format!("/companies/{company}/users/{cy}");
    t.emu.set_faults(Faults {
        retry_after_secs: 600,
        ..every("PATCH", patch.clone(), FaultKind::TooMany)
    });
    run_killed_at(&t, "PATCH", &patch, &[]).await;
    t.emu.set_faults(Faults::default());
    assert!(t.active(CY));
    let record = || async {
        let store = sluice_store::Store::open(&sluice_store::Location::Sqlite(
            sluice_store::path_in(t.data.path()),
        ))
        .await
        .unwrap();
        let key = sluice_store::StateKey::try_from(format!("managed/{CY}").as_str()).unwrap();
        store
            .state_get("procore-license-sync", &key)
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(record().await["status"], "deactivating");
    // The dead run's lease lapses.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    t.decide("reject", &id, &[CY]).await;
    let (_, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    let kept = record().await;
    assert_eq!(kept["status"], "active", "{kept:#}");
    assert!(kept["leaving_since"].is_string(), "{kept:#}");
}

/// The flow deactivates Cy; an admin reactivates Cy by hand while Cy
/// holds no license, then deactivates Cy by hand again. Licensed again,
/// Cy is reported as inactive and left alone: the last deactivation was
/// the admin's. (Before, the record still said the flow had deactivated
/// Cy, and the flow reactivated Cy and put them back on the project.)
#[tokio::test]
async fn a_deactivation_an_admin_undid_and_redid_by_hand_is_not_the_flows() {
    let (t, id) = cy_leaves_and_waits().await;
    t.decide("approve", &id, &[CY]).await;
    t.run_ok(&[]).await;
    assert!(!t.active(CY));
    let cy = t.id(CY);
    assert!(t.emu.set_procore_active(cy, true));
    let (run, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert_eq!(leavers(&run), map(&[(CY, "no license group")]));
    assert!(t.emu.set_procore_active(cy, false));
    t.run_ok(&[]).await;
    assert!(t.emu.add_member(&t.groups[E3], t.graph_id(CY)));
    let (run, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    let diff = run.output_of("diff");
    assert_eq!(diff["returners"], json!([]), "{diff:#}");
    let reported: Vec<&str> = diff["inactive_unmanaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["key"].as_str().unwrap())
        .collect();
    assert_eq!(reported, [CY]);
    assert!(!t.active(CY));
}

/// The flow deactivates Cy and takes Cy off the project; an admin
/// reactivates Cy by hand before Cy holds a license again. Once Cy does,
/// Cy is put back on the project, as a returner would be. (The record
/// active again must still owe the add.)
#[tokio::test]
async fn someone_reactivated_by_hand_before_their_license_returns_rejoins_the_project() {
    let (t, id) = cy_leaves_and_waits().await;
    t.decide("approve", &id, &[CY]).await;
    t.run_ok(&[]).await;
    assert!(!t.active(CY) && !t.on_project(CY));
    assert!(t.emu.set_procore_active(t.id(CY), true));
    let (_, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new(), "not while leaving");
    assert!(t.emu.add_member(&t.groups[E3], t.graph_id(CY)));
    let (_, requests) = t.run_ok(&[]).await;
    let made = writes(&requests);
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(
        made[0].starts_with("POST /rest/v1.0/projects/")
            && made[0].ends_with(&format!("/users/{}/actions/add 201", t.id(CY))),
        "{made:?}"
    );
    assert!(t.active(CY) && t.on_project(CY));
    let (_, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
}

/// Cy's approved deactivation reaches Procore (applied, answered 500),
/// and the host is killed while the resend waits out a ten-minute
/// `Retry-After`: the record says `deactivating`, and the approval is
/// still open. An admin then rejects it. The next run records Cy as
/// deactivated without a request to Procore (not even the project
/// removal, which nobody approves now), the ledger says so and the
/// rejected item is closed; the run after has nothing to do, and once Cy
/// holds a license again they are reactivated. (Before, every run listed
/// Cy for the deactivate step to confirm, its gate held the confirmation
/// as rejected, "1 rejected (left alone)", and the record stayed
/// `deactivating` for ever.)
#[tokio::test]
async fn a_rejection_after_a_killed_host_applied_the_deactivation_is_recorded_as_too_late() {
    let (t, id) = cy_leaves_and_waits().await;
    t.decide("approve", &id, &[CY]).await;
    let (cy, company) = (t.id(CY), t.emu.snapshot().scenario.company_id);
    let patch = format!("/companies/{company}/users/{cy}");
    // The first PATCH is applied and answered 500; every resend waits.
    let mut faults = every("PATCH", patch.clone(), FaultKind::TooMany);
    let applied = TargetedFault {
        at: vec![1],
        fault: FaultKind::ServerErrorAfterApply,
        ..faults.targeted[0].clone()
    };
    faults.targeted.insert(0, applied);
    t.emu.set_faults(Faults {
        retry_after_secs: 600,
        ..faults
    });
    run_killed_at(&t, "PATCH", &patch, &[]).await;
    t.emu.set_faults(Faults::default());
    assert!(!t.active(CY), "Procore applied it");
    assert_eq!(record_of(&t, CY).await["status"], "deactivating");
    // The dead run's lease lapses.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    t.decide("reject", &id, &[CY]).await;

    let (run, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert!(leavers(&run).is_empty(), "{:?}", leavers(&run));
    assert_eq!(record_of(&t, CY).await["status"], "deactivated");
    // The admin who rejected it is told it stands: in the report (named
    // as Procore names them), and in the mail the report makes worth
    // sending.
    let page = report_of(&t, &run);
    assert!(
        page.contains(&format!(
            "<td>deactivated before the rejection</td><td>Existing User {cy}</td><td>{CY}</td><td>Procore id {cy}; Procore had applied it"
        )),
        "{page}"
    );
    assert_eq!(run.output_of("report")["notable"], true, "worth a mail");
    assert_eq!(t.items(&id).await[CY], "closed");
    assert!(t.on_project(CY), "not taken off the project unapproved");
    let ledger = t.json(&["ledger", CY, "--json"]).await;
    let told = ledger
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["step"] == "diff" && e["output"]["status"] == "deactivated");
    assert!(
        told.is_some_and(|e| e["output"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("rejected"))),
        "{ledger:#}"
    );

    let (run, requests) = t.run_ok(&[]).await;
    assert_eq!(writes(&requests), Vec::<String>::new());
    assert!(leavers(&run).is_empty(), "{:?}", leavers(&run));
    assert_eq!(t.items(&id).await[CY], "closed");
    cy_is_licensed_again_and_reactivated(&t).await;
}

/// The flow's record of `key` (`managed/<key>` in its state).
async fn record_of(t: &Tenant, key: &str) -> Value {
    let store = sluice_store::Store::open(&sluice_store::Location::Sqlite(sluice_store::path_in(
        t.data.path(),
    )))
    .await
    .unwrap();
    let key = sluice_store::StateKey::try_from(format!("managed/{key}").as_str()).unwrap();
    store
        .state_get("procore-license-sync", &key)
        .await
        .unwrap()
        .unwrap()
}

/// Bob's UPN, his key while he has no mailbox.
const UPN: &str = "bob@contoso.onmicrosoft.com";

/// A tenant where Bob holds a license, has no Procore user and no mailbox
/// yet (so his key is his UPN); and his Entra id.
async fn bob_without_a_mailbox() -> (Tenant, String) {
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3])],
        unlicensed: &[],
        missing: &[UPN],
    })
    .await;
    let graph_id = t
        .emu
        .snapshot()
        .scenario
        .graph_users
        .iter()
        .find(|u| u.user_principal_name == UPN)
        .unwrap()
        .id
        .clone();
    assert!(t.emu.set_mail(&graph_id, None), "no mailbox yet");
    (t, graph_id)
}

/// Bob is licensed before his mailbox exists, so the flow creates his
/// Procore user under his UPN; then Exchange gives him a mail, which is his
/// key from then on. The flow keeps his Entra id, so the next runs know him:
/// nobody is created, his first account is nobody's leaver, and the report
/// says Procore still has his old address. When he really leaves, he waits
/// for approval under the key his ledger and his Procore user have.
#[tokio::test]
async fn a_mail_that_appears_after_the_license_creates_nobody_and_makes_no_leaver() {
    const MAIL: &str = "Bob.Smith@contoso.com";
    let (t, graph_id) = bob_without_a_mailbox().await;
    let (first, requests) = t.run_ok(&[]).await;
    assert_eq!(first.output_of("create")["ok"], 1, "{}", first.stdout);
    let created = |requests: &[LoggedRequest]| {
        writes(requests)
            .iter()
            .filter(|w| w.starts_with("POST") && w.ends_with("/users 201"))
            .count()
    };
    assert_eq!(created(&requests), 1, "{:?}", writes(&requests));
    let procore_users = || t.emu.snapshot().procore_users().len();
    let before = procore_users();

    // The mailbox comes: his key is now his mail.
    assert!(t.emu.set_mail(&graph_id, Some(MAIL)));
    for _ in 0..2 {
        let (run, requests) = t.run_ok(&[]).await;
        assert_eq!(writes(&requests), Vec::<String>::new(), "nothing created");
        assert_eq!(procore_users(), before);
        let diff = run.output_of("diff");
        assert_eq!(diff["missing"], json!([]), "{diff}");
        assert!(leavers(&run).is_empty(), "{:?}", leavers(&run));
        assert_eq!(diff["known_as"][0]["key"], "bob.smith@contoso.com");
        assert_eq!(diff["known_as"][0]["managed_as"], UPN);
        assert!(t.plans().await.is_empty(), "nobody waits to be deactivated");
        let page = report_of(&t, &run);
        assert!(
            page.contains(&format!(
                "<td>in Procore under another address</td><td>New bob</td><td>bob.smith@contoso.com</td>\
                 <td>the same Entra user as Procore user {}, known in Procore as {UPN}; \
                 Procore's email was not changed (change it there by hand); not created</td>",
                diff["known_as"][0]["procore_id"]
            )),
            "{page}"
        );
    }

    // He leaves: one deactivation waits, under his first key, with the
    // true reason; his ledger tells the whole story of that Procore user.
    t.leave_group_of(&graph_id, E3);
    let (run, _) = t.run_ok(&[]).await;
    assert_eq!(leavers(&run), map(&[(UPN, "no license group")]));
    let (plan, _) = t.plans().await[0].clone();
    assert_eq!(t.items(&plan).await, map(&[(UPN, "pending")]));
    assert_eq!(
        story(&t, UPN).await,
        [
            ("create".to_string(), "succeeded".to_string(), String::new()),
            (
                "deactivate".to_string(),
                "waiting".to_string(),
                String::new()
            ),
        ]
    );
}

/// Bob, created under his UPN before his mailbox existed, leaves and is
/// deactivated; his mail appears while he is away. When he holds a license
/// again no key of his names his Procore user: the flow's record of his
/// Entra id does. He returns under the key the flow keeps, and the report
/// says he was matched by Entra id (it said "mail", a key that matches no
/// Procore user).
#[tokio::test]
async fn a_returner_whose_mail_appeared_while_away_is_matched_by_entra_id() {
    let (t, graph_id) = bob_without_a_mailbox().await;
    t.run_ok(&[]).await;
    let bob = |t: &Tenant| {
        let snapshot = t.emu.snapshot();
        let user = snapshot
            .procore_users()
            .iter()
            .find(|u| u.email_address == UPN)
            .cloned();
        user.expect("the first run created Bob under his UPN")
    };
    t.leave_group_of(&graph_id, E3);
    t.run_ok(&[]).await;
    let (plan, _) = t.plans().await[0].clone();
    t.decide("approve", &plan, &[UPN]).await;
    t.run_ok(&[]).await;
    assert!(!bob(&t).is_active, "deactivated once approved");

    assert!(t.emu.set_mail(&graph_id, Some("Bob.Smith@contoso.com")));
    assert!(t.emu.add_member(&t.groups[E3], &graph_id));
    let (run, _) = t.run_ok(&[]).await;
    let diff = run.output_of("diff");
    let returner = &diff["returners"][0];
    assert_eq!(
        (&returner["key"], &returner["matched_by"]),
        (&json!(UPN), &json!("entra_id")),
        "{diff}"
    );
    assert_eq!(diff["missing"], json!([]), "nobody created: {diff}");
    assert!(bob(&t).is_active, "reactivated");
    let reactivated = &run.output_of("reactivate")["items"][0]["output"];
    assert_eq!(reactivated["matched_by"], "entra_id", "{reactivated}");
    let page = report_of(&t, &run);
    let row = page
        .split("<tr>")
        .find(|row| row.contains(&format!("<td>{UPN}</td>")))
        .unwrap_or_else(|| panic!("no row of Bob: {page}"));
    assert!(row.contains("reactivated"), "{row}");
    assert!(row.contains("(matched by Entra id)</td>"), "{row}");
    // The run that brings him back says Procore has his old address (it
    // was said only by the next run, once he was active).
    let known_as: Vec<(&Value, &Value)> = diff["known_as"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (&k["key"], &k["procore_id"]))
        .collect();
    assert_eq!(
        known_as,
        [(&json!("bob.smith@contoso.com"), &returner["procore_id"])],
        "{diff}"
    );
    let row = page
        .split("<tr>")
        .find(|row| row.contains("bob.smith@contoso.com"))
        .unwrap_or_else(|| panic!("no row of Bob's new address: {page}"));
    assert!(row.contains(&format!("known in Procore as {UPN}")), "{row}");
}

/// Dee is managed only for her domain: her Entra account is disabled while
/// she is still in a license group, so the first run with
/// `managed_domains` finds her leaving for that, and she is deactivated
/// once approved. When her account comes back under a new mail, no key of
/// hers names her Procore user; the Entra id of the disabled account,
/// which the deactivation recorded, does. She is reactivated, not created
/// again. (Before, her record kept no Entra id, and a second Procore user
/// was created while the first stayed inactive.)
#[tokio::test]
async fn a_domain_leaver_disabled_then_back_under_a_new_mail_is_reactivated() {
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3]), (DEE, &[E3])],
        unlicensed: &[],
        missing: &[],
    })
    .await;
    let domain = ["--param", r#"managed_domains=["contoso.com"]"#];
    assert!(t.emu.set_account_enabled(t.graph_id(DEE), false));
    let (run, _) = t.run_ok(&domain).await;
    assert_eq!(leavers(&run), map(&[(DEE, "account disabled")]));
    let (plan, _) = t.plans().await[0].clone();
    t.decide("approve", &plan, &[DEE]).await;
    t.run_ok(&domain).await;
    assert!(!t.active(DEE), "deactivated once approved");
    let users = t.emu.snapshot().procore_users().len();

    assert!(t.emu.set_account_enabled(t.graph_id(DEE), true));
    assert!(t.emu.set_mail(t.graph_id(DEE), Some("Dee.New@contoso.com")));
    let (run, requests) = t.run_ok(&[]).await;
    let diff = run.output_of("diff");
    assert_eq!(diff["missing"], json!([]), "nobody created: {diff}");
    let returner = &diff["returners"][0];
    assert_eq!(
        (&returner["key"], &returner["matched_by"]),
        (&json!(DEE), &json!("entra_id")),
        "{diff}"
    );
    assert!(t.active(DEE), "reactivated: {:?}", writes(&requests));
    assert_eq!(t.emu.snapshot().procore_users().len(), users);
}

/// Bob, created under his UPN, whose mail appeared since: while he holds a
/// license under the new key nobody asks Graph about his old one, and when
/// his account is disabled his Procore user leaves for that reason, not
/// "no license group".
#[tokio::test]
async fn a_re_keyed_person_whose_account_is_disabled_leaves_as_disabled() {
    let (t, graph_id) = bob_without_a_mailbox().await;
    t.run_ok(&[]).await;
    assert!(t.emu.set_mail(&graph_id, Some("Bob.Smith@contoso.com")));
    // Every request of the run, Graph's too (run_ok keeps Procore's only).
    let before = t.emu.snapshot().requests.len();
    t.run_ok(&[]).await;
    let requests = t.emu.snapshot().requests;
    let asked: Vec<&LoggedRequest> = requests[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains(&format!("/users/{graph_id}")))
        .collect();
    assert!(
        asked.is_empty(),
        "a license holder's user was looked up: {asked:?}"
    );
    assert!(t.emu.set_account_enabled(&graph_id, false));
    let (run, _) = t.run_ok(&[]).await;
    assert_eq!(leavers(&run), map(&[(UPN, "account disabled")]));
}

/// Bob, licensed before his mailbox exists, is created under his UPN by
/// a run whose host dies before the create's item ends (while the project
/// add waits out a ten-minute `Retry-After`), so no record says the flow
/// made him; then his mail appears, and it is his key. The mark the
/// killed run left keeps his Entra id: the next run takes the user made
/// under his UPN as the flow's (kept under the UPN, origin `created`),
/// makes the project add it owes, and reports him in Procore under
/// another address; nobody is created again. (Before, a second user was
/// created under his mail, and the first stayed unmanaged.)
#[tokio::test]
async fn a_newcomer_a_killed_run_created_whose_mail_appeared_is_not_created_again() {
    let (t, graph_id) = bob_without_a_mailbox().await;
    t.emu.set_faults(Faults {
        retry_after_secs: 600,
        ..every("POST", "/actions/add".into(), FaultKind::TooMany)
    });
    run_killed_at(&t, "POST", "/actions/add", &[]).await;
    t.emu.set_faults(Faults::default());
    let snapshot = t.emu.snapshot();
    let (users, project) = (
        snapshot.procore_users().len(),
        snapshot.scenario.project_ids[0],
    );
    let bob = snapshot
        .procore_users()
        .iter()
        .find(|u| u.email_address == UPN)
        .expect("the killed run created Bob")
        .id;
    assert!(t.emu.set_mail(&graph_id, Some("Bob.Smith@contoso.com")));
    // The dead run's lease lapses.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let (run, requests) = t.run_ok(&[]).await;
    let diff = run.output_of("diff");
    assert_eq!(diff["missing"], json!([]), "{diff}");
    let adopted = (&diff["adopted"][0]["key"], &diff["adopted"][0]["origin"]);
    assert_eq!(adopted, (&json!(UPN), &json!("created")), "{diff}");
    assert_eq!(diff["known_as"][0]["managed_as"], UPN);
    assert_eq!(owed(&run), [(UPN.to_string(), "add".to_string())]);
    assert_eq!(
        writes(&requests),
        [format!(
            "POST /rest/v1.0/projects/{project}/users/{bob}/actions/add 201"
        )],
        "only the owed add; nobody created again"
    );
    assert_eq!(t.emu.snapshot().procore_users().len(), users);
    owes_nothing_more(&t, &[]).await;
}

/// Every `method` request whose path ends with `suffix` gets `fault`,
/// retries included.
fn every(method: &str, suffix: String, fault: FaultKind) -> Faults {
    Faults {
        targeted: vec![TargetedFault {
            method: method.into(),
            path_suffix: suffix,
            body_contains: None,
            at: Vec::new(),
            fault,
        }],
        ..Faults::default()
    }
}

/// Every `method` request whose path ends with `suffix` fails with a 500
/// before it is applied, retries included.
fn refusing(method: &str, suffix: String) -> Faults {
    every(method, suffix, FaultKind::ServerError)
}

/// The keys and actions of the project calls a run's compare step found owed.
fn owed(run: &Run) -> Vec<(String, String)> {
    run.output_of("diff")["project_owed"]
        .as_array()
        .unwrap_or_else(|| panic!("no project_owed: {}", tail(&run.stdout)))
        .iter()
        .map(|o| {
            let text = |f: &str| o[f].as_str().unwrap_or_default().to_string();
            (text("key"), text("action"))
        })
        .collect()
}

/// A new user's project add that Procore refuses through every retry is
/// reported as failed, and owed: the next run adds them (once), and the
/// run after owes nothing. (Before, the person was "present" from then on
/// and never joined the project.)
#[tokio::test]
async fn a_project_add_procore_refused_is_made_by_the_next_run() {
    let t = ann_and_a_newcomer().await;
    t.emu.set_faults(refusing("POST", "/actions/add".into()));
    let (first, _) = t.run_ok(&[]).await;
    let created = &first.output_of("create")["items"][0]["output"];
    assert_eq!(created["status"], "created", "{}", tail(&first.stdout));
    assert!(
        created["project"]
            .as_str()
            .is_some_and(|p| p.starts_with("failed")),
        "{created}"
    );
    let newcomer = Newcomer::of(&t);
    assert!(!newcomer.on_project(&t));

    t.emu.set_faults(Faults::default());
    let (second, requests) = t.run_ok(&[]).await;
    newcomer.gets_only_the_owed_add(&t, &second, &requests);
    let made = &second.output_of("project")["items"][0]["output"];
    assert_eq!(made["status"], "added", "{made}");
    let report = report_of(&t, &second);
    assert!(
        report.contains("Project calls owed by earlier runs"),
        "{report}"
    );

    owes_nothing_more(&t, &[]).await;
}

/// The host dies after Procore created a newcomer and before the
/// create's item ended (here: while the project add waits out a
/// ten-minute `Retry-After`), so no record says the flow made them. The
/// next run finds them created since a run found them missing: the
/// flow's own (origin `created`), owed the project add, which it makes
/// once; nobody is created again. (Before, they were adopted and never
/// joined the project.)
#[tokio::test]
async fn a_newcomer_a_killed_run_created_still_joins_the_project() {
    let t = ann_and_a_newcomer().await;
    newcomer_created_by_a_killed_run_joins_the_project(&t, &[]).await;
}

/// The same when the creation waited for an admin first: the run that
/// found the newcomer missing held them, the admin approved, and the run
/// that created them was killed.
#[tokio::test]
async fn a_newcomer_approved_then_created_by_a_killed_run_still_joins_the_project() {
    let t = ann_and_a_newcomer().await;
    let held = ["--param", "max_unapproved_creates=0"];
    let (first, requests) = t.run_ok(&held).await;
    assert_eq!(
        writes(&requests),
        Vec::<String>::new(),
        "{}",
        tail(&first.stdout)
    );
    let (id, _) = t.plans().await[0].clone();
    t.decide("approve", &id, &[NEW]).await;
    newcomer_created_by_a_killed_run_joins_the_project(&t, &held).await;
}

/// A run (with `extra`) killed while the newcomer's project add waits,
/// then a run that makes the add the killed one owed.
async fn newcomer_created_by_a_killed_run_joins_the_project(t: &Tenant, extra: &[&str]) {
    t.emu.set_faults(Faults {
        retry_after_secs: 600,
        ..every("POST", "/actions/add".into(), FaultKind::TooMany)
    });
    run_killed_at(t, "POST", "/actions/add", extra).await;
    let newcomer = Newcomer::of(t);
    assert!(!newcomer.on_project(t));
    t.emu.set_faults(Faults::default());
    // The dead run's lease lapses.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let (second, requests) = t.run_ok(extra).await;
    let adopted = &second.output_of("diff")["adopted"];
    let origin = adopted
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == NEW)
        .map(|a| a["origin"].clone());
    assert_eq!(origin, Some(json!("created")), "{adopted}");
    newcomer.gets_only_the_owed_add(t, &second, &requests);
    owes_nothing_more(t, extra).await;
}

/// [`NEW`] once a run created them: their Procore id, and the flow's
/// project.
struct Newcomer {
    id: u64,
    project: u64,
}

impl Newcomer {
    fn of(t: &Tenant) -> Newcomer {
        let snapshot = t.emu.snapshot();
        let user = snapshot
            .procore_users()
            .iter()
            .find(|u| u.email_address == NEW);
        Newcomer {
            id: user.expect("a run created the newcomer").id,
            project: snapshot.scenario.project_ids[0],
        }
    }

    fn on_project(&self, t: &Tenant) -> bool {
        let snapshot = t.emu.snapshot();
        let members = snapshot.project_users();
        members
            .iter()
            .any(|m| m.project_id == self.project && m.user_id == self.id)
    }

    /// `run` (which sent `requests`) found the newcomer's project add
    /// owed and made it, and nothing else: nobody was created again.
    fn gets_only_the_owed_add(&self, t: &Tenant, run: &Run, requests: &[LoggedRequest]) {
        assert_eq!(owed(run), [(NEW.to_string(), "add".to_string())]);
        let (project, id) = (self.project, self.id);
        assert_eq!(
            writes(requests),
            [format!(
                "POST /rest/v1.0/projects/{project}/users/{id}/actions/add 201"
            )],
            "only the owed add; nobody created again"
        );
        assert!(self.on_project(t));
    }
}

/// A deactivated leaver's project removal that Procore refuses through
/// every retry is owed: the next run takes them off the project without
/// deactivating them again.
#[tokio::test]
async fn a_project_removal_procore_refused_is_made_by_the_next_run() {
    let t = ann_and_cy().await;
    t.run_ok(&[]).await;
    t.leave_group(CY, E3);
    let (cy, project) = (t.id(CY), t.emu.snapshot().scenario.project_ids[0]);
    let removal = format!("/projects/{project}/users/{cy}/actions/remove");
    t.emu.set_faults(refusing("DELETE", removal.clone()));
    let allow = ["--param", "max_unapproved_deactivations=10"];
    let (first, _) = t.run_ok(&allow).await;
    let done = &first.output_of("deactivate")["items"][0]["output"];
    assert_eq!(done["removed_from_project"], "failed", "{done}");
    assert!(!t.active(CY) && t.on_project(CY));

    t.emu.set_faults(Faults::default());
    let (second, requests) = t.run_ok(&allow).await;
    assert_eq!(owed(&second), [(CY.to_string(), "remove".to_string())]);
    assert_eq!(
        writes(&requests),
        [format!("DELETE /rest/v1.0{removal} 204")],
        "only the owed removal; no second deactivation"
    );
    assert!(!t.active(CY) && !t.on_project(CY));

    owes_nothing_more(&t, &allow).await;
}

/// The next run finds no project call owed, and changes nothing.
async fn owes_nothing_more(t: &Tenant, extra: &[&str]) {
    let (run, requests) = t.run_ok(extra).await;
    assert_eq!(owed(&run), []);
    assert_eq!(writes(&requests), Vec::<String>::new());
}

/// A returner whose reactivation Procore took but never answered (every
/// attempt's connection lost after it was applied) fails the item, and
/// the record still says deactivated. The next run finds Cy active and
/// licensed, a plain match: the record becomes active and owes the project
/// add a returner gets, which that same run makes; the run after owes
/// nothing. (Before, Cy stayed off the project for good; later, the add
/// waited for the run after.)
#[tokio::test]
async fn a_reactivation_never_seen_answered_still_puts_them_back_on_the_project() {
    let t = ann_and_cy().await;
    t.run_ok(&[]).await;
    t.leave_group(CY, E3);
    let allow = ["--param", "max_unapproved_deactivations=10"];
    t.run_ok(&allow).await;
    assert!(!t.active(CY) && !t.on_project(CY));
    assert!(t.emu.add_member(&t.groups[E3], t.graph_id(CY)));
    let cy = t.id(CY);
    t.emu.set_faults(every(
        "PATCH",
        format!("/users/inactive/{cy}"),
        FaultKind::DropAfterApply,
    ));
    let (lost, _) = t.run(&allow).await;
    assert_eq!(
        lost.output_of("reactivate")["failed"],
        1,
        "{}",
        tail(&lost.stdout)
    );
    assert!(t.active(CY) && !t.on_project(CY));

    t.emu.set_faults(Faults::default());
    let (matched, requests) = t.run_ok(&allow).await;
    assert_eq!(owed(&matched), [(CY.to_string(), "add".to_string())]);
    let project = t.emu.snapshot().scenario.project_ids[0];
    assert_eq!(
        writes(&requests),
        [format!(
            "POST /rest/v1.0/projects/{project}/users/{cy}/actions/add 201"
        )]
    );
    assert!(t.active(CY) && t.on_project(CY));
    owes_nothing_more(&t, &allow).await;
}

/// The first request of `method` to a path ending in `path_suffix` is
/// applied, and its answer lost.
fn lost_once(method: &str, path_suffix: String) -> TargetedFault {
    TargetedFault {
        method: method.into(),
        path_suffix,
        body_contains: None,
        at: vec![1],
        fault: FaultKind::DropAfterApply,
    }
}

/// Procore documents no answer to a write repeated once applied. Against a
/// server that refuses each repeat with a 422 (`refuse_repeats`), the
/// resends that answers lost after Procore applied the write cause are
/// settled by asking Procore how things stand: Cy's deactivation (resent
/// once Cy is inactive), Cy's reactivation (resent once Cy is active) and
/// the project add after it (resent once Cy is on the project) are each
/// done, nothing is owed, and the run after changes nothing. (Before, the
/// deactivation was undone in the flow's records, and the reactivation
/// and the add failed, the add owed to every later run.)
#[tokio::test]
async fn writes_resent_after_a_lost_answer_to_a_server_refusing_repeats_are_done() {
    let t = ann_and_cy().await;
    t.run_ok(&[]).await;
    t.leave_group(CY, E3);
    let (cy, company) = (t.id(CY), t.emu.snapshot().scenario.company_id);
    let strict = |targeted| Faults {
        refuse_repeats: true,
        targeted,
        ..Faults::default()
    };
    t.emu.set_faults(strict(vec![lost_once(
        "PATCH",
        format!("/companies/{company}/users/{cy}"),
    )]));
    let allow = ["--param", "max_unapproved_deactivations=10"];
    let (run, requests) = t.run_ok(&allow).await;
    let item = &run.output_of("deactivate")["items"][0];
    assert_eq!(item["output"]["status"], "deactivated", "{item:#}");
    assert!(
        writes(&requests).contains(&format!(
            "PATCH /rest/v1.0/companies/{company}/users/{cy} 422"
        )),
        "{:?}",
        writes(&requests)
    );
    assert!(!t.active(CY) && !t.on_project(CY));

    assert!(t.emu.add_member(&t.groups[E3], t.graph_id(CY)));
    let project = t.emu.snapshot().scenario.project_ids[0];
    t.emu.set_faults(strict(vec![
        lost_once("PATCH", format!("/users/inactive/{cy}")),
        lost_once(
            "POST",
            format!("/projects/{project}/users/{cy}/actions/add"),
        ),
    ]));
    let (run, requests) = t.run_ok(&allow).await;
    let item = &run.output_of("reactivate")["items"][0];
    assert_eq!(item["status"], "ok", "{item:#}");
    // The resend found Cy active: the first attempt had reactivated them.
    assert_eq!(item["output"]["status"], "already_active", "{item:#}");
    assert_eq!(item["output"]["project"], "added", "{item:#}");
    let refused: Vec<String> = writes(&requests)
        .into_iter()
        .filter(|w| w.ends_with(" 422"))
        .collect();
    assert_eq!(
        refused,
        [
            format!("PATCH /rest/v1.0/companies/{company}/users/inactive/{cy} 422"),
            format!("POST /rest/v1.0/projects/{project}/users/{cy}/actions/add 422"),
        ]
    );
    assert!(t.active(CY) && t.on_project(CY));
    t.emu.set_faults(Faults::default());
    owes_nothing_more(&t, &allow).await;
}

/// A project add owed since a run where Procore refused it, made by the
/// next run against a server that refuses repeats: the answer to the add
/// is lost after Procore applied it, the resend is refused with a 422, and
/// "Show project user" says Cy is on the project, so the add is done and
/// owed no more.
#[tokio::test]
async fn an_owed_add_resent_to_a_server_refusing_repeats_is_done() {
    let t = ann_and_cy().await;
    t.run_ok(&[]).await;
    t.leave_group(CY, E3);
    let allow = ["--param", "max_unapproved_deactivations=10"];
    t.run_ok(&allow).await;
    assert!(t.emu.add_member(&t.groups[E3], t.graph_id(CY)));
    let (cy, project) = (t.id(CY), t.emu.snapshot().scenario.project_ids[0]);
    let add = format!("/projects/{project}/users/{cy}/actions/add");
    t.emu
        .set_faults(every("POST", add.clone(), FaultKind::ServerError));
    t.run(&allow).await;
    assert!(t.active(CY) && !t.on_project(CY));
    t.emu.set_faults(Faults {
        refuse_repeats: true,
        targeted: vec![lost_once("POST", add)],
        ..Faults::default()
    });
    let (run, requests) = t.run_ok(&allow).await;
    let item = &run.output_of("project")["items"][0];
    assert_eq!(item["output"]["status"], "added", "{item:#}");
    assert!(
        writes(&requests).contains(&format!(
            "POST /rest/v1.0/projects/{project}/users/{cy}/actions/add 422"
        )),
        "{:?}",
        writes(&requests)
    );
    assert!(t.on_project(CY));
    t.emu.set_faults(Faults::default());
    owes_nothing_more(&t, &allow).await;
}

/// Duration params of the form `validate` checks are all read by the
/// steps: humantime refused `1.333h` (its fractions overflow), and
/// `999999999y` was past chrono's range, each failing its step after both
/// tenants were read.
#[tokio::test]
async fn every_duration_validate_lets_through_runs() {
    let t = ann_and_a_newcomer().await;
    for (grace, every) in [("1.333h", "999999999y"), ("999999999y 1.7M", "1.333h")] {
        let grace = format!("leaver_grace={grace}");
        let every = format!("full_sync_every={every}");
        t.run_ok(&["--param", &grace, "--param", &every]).await;
    }
}

/// A host killed in the middle of a busy create step: every person it
/// recorded as created has the create step's item in the run history
/// (state and record are committed together), so the ledger tells of each,
/// and the next run makes the rest, nobody twice.
#[tokio::test]
async fn a_host_killed_among_many_creates_leaves_every_kept_create_in_the_history() {
    const NEWCOMERS: usize = 60;
    let missing: Vec<String> = (0..NEWCOMERS)
        .map(|i| format!("new{i:02}@contoso.com"))
        .collect();
    let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
    let t = Tenant::new(Plan {
        licensed: &[(ANN, &[E3])],
        unlicensed: &[],
        missing: &missing,
    })
    .await;
    run_killed_after(&t, "POST", "/users", NEWCOMERS / 2).await;
    let store = sluice_store::Store::open(&sluice_store::Location::Sqlite(sluice_store::path_in(
        t.data.path(),
    )))
    .await
    .unwrap();
    let query = sluice_store::StateQuery {
        prefix: "managed/".into(),
        start_after: None,
        limit: 1000,
    };
    let records = store
        .state_list_text("procore-license-sync", &query)
        .await
        .unwrap()
        .entries;
    let created: Vec<String> = records
        .iter()
        .filter(|e| serde_json::from_str::<Value>(&e.value).unwrap()["origin"] == "created")
        .map(|e| e.key.trim_start_matches("managed/").to_string())
        .collect();
    assert!(
        !created.is_empty() && created.len() < NEWCOMERS,
        "the host was killed in the middle of the creates: {} kept",
        created.len()
    );
    let runs = store.list_runs(None, 10).await.unwrap();
    let detail = store.run_detail(&runs[0].id).await.unwrap().unwrap();
    let recorded: Vec<String> = (detail.items.iter())
        .filter(|i| i.step_id == "create" && i.status == sluice_store::ItemStatus::Succeeded)
        .filter_map(|i| i.key.clone())
        .collect();
    for key in &created {
        assert!(
            recorded.contains(key),
            "{key} is recorded as created but its item is not in the history: {recorded:?}"
        );
    }
    for key in &recorded {
        assert!(created.contains(key), "{key} has an item but no record");
    }
    assert!(
        detail.steps.iter().any(|s| s.step_id == "create"),
        "a record is never ahead of its step: {:?}",
        detail.steps
    );
    drop(store);
    // The dead run's lease lapses; the next run creates the rest, once.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    t.run_ok(&[]).await;
    let snapshot = t.emu.snapshot();
    for mail in &missing {
        let users = (snapshot.scenario.procore_users.iter())
            .filter(|u| u.email_address == *mail)
            .count();
        assert_eq!(users, 1, "{mail} is in Procore once");
    }
}

/// Like [`run_killed_at`], once `count` `method` requests whose path ends
/// with `suffix` were sent.
async fn run_killed_after(t: &Tenant, method: &str, suffix: &str, count: usize) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .args(["run", flow_path().to_str().unwrap(), "--lease", "1s"])
        .env("SLUICE_DATA_DIR", t.data.path())
        .envs(t.env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let asked = std::time::Instant::now();
    let sent = || {
        (t.emu.snapshot().requests.iter())
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .count()
    };
    while sent() < count {
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(60),
            "fewer than {count} {method} …{suffix} were sent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    child.kill().await.unwrap();
}

/// A run stopped (SIGTERM, as a deploy does) after it created the
/// newcomer never reaches its report or mail. The next run, which has
/// nothing to do itself, tells what the stopped run did, in its report
/// and by mail; the run after that, with nothing new, mails nothing.
/// Before, the newcomer's creation was told to nobody.
#[tokio::test]
async fn what_a_stopped_run_did_is_told_by_the_next_runs_report_and_mail() {
    let t = ann_and_a_newcomer().await;
    // The newcomer's project add waits a second on a 429, long enough to
    // stop the run while the create item is under way.
    t.emu.set_faults(Faults {
        retry_after_secs: 1,
        targeted: vec![TargetedFault {
            method: "POST".into(),
            path_suffix: "/actions/add".into(),
            body_contains: None,
            at: vec![1],
            fault: FaultKind::TooMany,
        }],
        ..Faults::default()
    });
    let child = sluice_cmd_killable(&t, &[]);
    sent(&t, "POST", "/actions/add").await;
    let pid = child.id().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let stopped = child.wait_with_output().await.unwrap();
    assert_eq!(stopped.status.code(), Some(1), "a stopped run exits 1");
    assert!(
        Newcomer::of(&t).on_project(&t),
        "the item under way finished"
    );
    assert!(
        t.emu.snapshot().mails.is_empty(),
        "the stopped run mailed nothing"
    );
    t.emu.set_faults(Faults::default());

    let (second, _) = t.run_ok(&[]).await;
    let report = second.output_of("report");
    let warnings: Vec<&str> = (report["warnings"].as_array().unwrap().iter())
        .filter_map(Value::as_str)
        .collect();
    let told: Vec<&&str> = warnings
        .iter()
        .filter(|w| w.contains("did not finish; its work may be unreported: create 1 done"))
        .collect();
    assert_eq!(told.len(), 1, "{warnings:?}");
    assert!(told[0].contains("(interrupted, started "), "{}", told[0]);
    assert_eq!(report["summary"]["created"], 0, "this run created nobody");
    assert_eq!(report["notable"], true);
    let mails = t.emu.snapshot().mails;
    assert_eq!(
        mails.len(),
        1,
        "the next run mails what the stopped one did"
    );
    assert!(
        mails[0]
            .subject
            .ends_with(", and what 1 earlier stopped run did"),
        "{}",
        mails[0].subject
    );
    assert!(
        mails[0]
            .html
            .contains("its work may be unreported: create 1 done"),
        "{}",
        mails[0].html
    );

    let (third, _) = t.run_ok(&[]).await;
    assert_eq!(third.output_of("report")["notable"], false);
    assert_eq!(t.emu.snapshot().mails.len(), 1, "told once");
}
