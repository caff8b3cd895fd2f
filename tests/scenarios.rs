//! Small tenants written by hand, each about a dozen people around one
//! theme, run end to end: the shipped flow through the `sluice` binary
//! against the emulators. Every expected outcome here is worked out by hand
//! from the identity rules (README "What the license sync does"), not
//! computed by the emulator's oracle: if the oracle and the components
//! shared a misreading of Graph or Procore, the generated tenants of
//! `license_sync.rs` would pass and these would not. Each test also holds
//! the oracle to the same hand-written outcome.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::emulated::*;
use serde_json::Value;
use sluice_emulator::scenario::Member;
use sluice_emulator::{EmulatorConfig, FaultKind, Faults, Scenario, StateSnapshot, TargetedFault};

fn keys(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|k| k.to_string()).collect()
}

/// A hand-written tenant after one sync.
struct Synced {
    run: Run,
    state: StateSnapshot,
    /// The report file the run wrote.
    report: String,
}

impl Synced {
    /// The `key`s of a list in a step's output.
    fn keys_in(&self, step: &str, list: &str) -> BTreeSet<String> {
        let output = self.run.output_of(step);
        output[list]
            .as_array()
            .unwrap_or_else(|| panic!("no list {list} in {step}'s output: {output}"))
            .iter()
            .map(|p| p["key"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Runs the shipped flow once (`--json`) against `scenario` and checks what
/// holds for every tenant: the run went to the end, nobody who was in
/// Procore before was changed, each created user is keyed by its address
/// with a last name, one create was sent per person created or refused,
/// and no secret or token reached the output or the data directory.
async fn sync(scenario: Scenario) -> Synced {
    let synced = sync_with(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;
    // Without faults, nothing is sent twice.
    let creates = synced.state.requests.iter().filter(|r| is_create(r));
    assert_eq!(
        creates.count(),
        synced.run.create_outcomes().len(),
        "one create per person"
    );
    synced
}

/// [`sync`] with faults or other settings: all but the count of creates.
async fn sync_with(config: EmulatorConfig) -> Synced {
    let before = config.scenario.procore_users.clone();
    let (emulator, env, data) = emulated(config).await;
    let run = sluice(&env, data.path(), &["--json"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let state = emulator.snapshot();
    assert_untouched(&before, &state);
    for u in state.created_users() {
        assert_eq!(u.login, u.email_address, "{u:?}");
        assert_eq!(u.login, u.login.to_lowercase(), "{u:?}");
        assert!(!u.last_name.trim().is_empty(), "{u:?}");
    }
    assert_no_secret(&run, &emulator.secrets(), data.path());
    let report = only_report(data.path());
    emulator.shutdown().await;
    Synced { run, state, report }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_groups_named_with_a_prefix_exactly_count_not_look_alikes() {
    let mut t = Scenario::hand_written();
    let e3 = t.add_group("License – Microsoft 365 E3");
    let office = t.add_group("License – Office 365 E1");
    let bare = t.add_group("License – Microsoft");
    let hyphen = t.add_group("License - Microsoft 365 E3");
    let em_dash = t.add_group("License — Microsoft 365 E5");
    let lower = t.add_group("license – microsoft old");
    let upper = t.add_group("LICENSE – MICROSOFT 365 E3");
    let plural = t.add_group("Licenses – Microsoft Visio");
    let spaced = t.add_group(" License – Microsoft 365 E3");
    let staff = t.add_group("All Staff");
    t.add_user(
        "Ana Lima",
        Some("ana@contoso.com"),
        "ana@contoso.com",
        &[&e3],
    );
    t.add_user(
        "Eva Diaz",
        Some("eva@contoso.com"),
        "eva@contoso.com",
        &[&office],
    );
    t.add_user(
        "Kim Park",
        Some("kim@contoso.com"),
        "kim@contoso.com",
        &[&bare],
    );
    // In a license group and a look-alike: created once.
    t.add_user(
        "Gus Holt",
        Some("gus@contoso.com"),
        "gus@contoso.com",
        &[&e3, &hyphen],
    );
    // In two license groups: one person, created once.
    t.add_user(
        "Jon Ames",
        Some("jon@contoso.com"),
        "jon@contoso.com",
        &[&e3, &office],
    );
    // Only in groups that look like license groups and are not.
    t.add_user(
        "Ben Ode",
        Some("ben@contoso.com"),
        "ben@contoso.com",
        &[&hyphen],
    );
    t.add_user(
        "Cho Min",
        Some("cho@contoso.com"),
        "cho@contoso.com",
        &[&em_dash],
    );
    t.add_user(
        "Dev Rao",
        Some("dev@contoso.com"),
        "dev@contoso.com",
        &[&lower],
    );
    t.add_user(
        "Lea Roy",
        Some("lea@contoso.com"),
        "lea@contoso.com",
        &[&upper],
    );
    t.add_user(
        "Fay Orr",
        Some("fay@contoso.com"),
        "fay@contoso.com",
        &[&plural],
    );
    t.add_user(
        "Ivy Lu",
        Some("ivy@contoso.com"),
        "ivy@contoso.com",
        &[&spaced],
    );
    t.add_user(
        "Hal Beck",
        Some("hal@contoso.com"),
        "hal@contoso.com",
        &[&staff],
    );
    let created = keys(&[
        "ana@contoso.com",
        "eva@contoso.com",
        "gus@contoso.com",
        "jon@contoso.com",
        "kim@contoso.com",
    ]);
    assert_eq!(t.expected_sync().to_create, created, "the oracle");

    let s = sync(t).await;
    assert_eq!(created_keys(&s.state), created);
    assert_eq!(s.keys_in("members", "people"), created);
    let groups: BTreeSet<String> = s.run.output_of("groups")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["displayName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        groups,
        keys(&[
            "License – Microsoft",
            "License – Microsoft 365 E3",
            "License – Office 365 E1"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_is_keyed_by_mail_trimmed_and_lower_cased_else_by_upn() {
    let mut t = Scenario::hand_written();
    let e3 = t.add_group("License – Microsoft 365 E3");
    let office = t.add_group("License – Office 365 E1");
    // A guest: mail at home, an #EXT# UPN here.
    t.add_user(
        "Pat Fabrikam",
        Some("pat@fabrikam.com"),
        "pat_fabrikam.com#EXT#@contoso.onmicrosoft.com",
        &[&e3],
    );
    // No mail (null), an empty mail, a mail of spaces: keyed by UPN.
    t.add_user("Quinn Null", None, "quinn@contoso.com", &[&e3]);
    t.add_user("Ray Empty", Some(""), "ray@contoso.com", &[&e3]);
    t.add_user("Sam Blank", Some("   "), "sam@contoso.com", &[&e3]);
    // UPN-only, in mixed case.
    t.add_user("Uma Upn", None, "Uma.Upn@Contoso.com", &[&office]);
    // Padded, mixed-case mail.
    t.add_user(
        "Tia Ng",
        Some("  Tia.Ng@Contoso.COM "),
        "tia.ng@contoso.com",
        &[&e3],
    );
    // Mail and UPN differ: the mail is the key, so a Procore login equal
    // to the UPN is somebody else.
    t.add_user(
        "Vic Stone",
        Some("vic@contoso.com"),
        "victor.stone@contoso.com",
        &[&e3],
    );
    t.add_procore_user("victor.stone@contoso.com", "victor.stone@contoso.com", true);
    // Two directory objects with one address in two cases: one person.
    t.add_user(
        "Wes Ray",
        Some("wes@contoso.com"),
        "wes@contoso.com",
        &[&e3],
    );
    t.add_user(
        "Wes Ray (2)",
        Some("WES@Contoso.com"),
        "wes2@contoso.com",
        &[&office],
    );
    // A user the Procore list already has under the mail's key.
    t.add_user(
        "Zoe Adams",
        Some("zoe@contoso.com"),
        "zadams@contoso.com",
        &[&e3],
    );
    t.add_procore_user("zoe@contoso.com", "zoe@contoso.com", true);
    let created = keys(&[
        "pat@fabrikam.com",
        "quinn@contoso.com",
        "ray@contoso.com",
        "sam@contoso.com",
        "tia.ng@contoso.com",
        "uma.upn@contoso.com",
        "vic@contoso.com",
        "wes@contoso.com",
    ]);
    assert_eq!(t.expected_sync().to_create, created, "the oracle");

    let s = sync(t).await;
    assert_eq!(created_keys(&s.state), created);
    let mut people = created.clone();
    people.insert("zoe@contoso.com".into());
    assert_eq!(s.keys_in("members", "people"), people);
    assert_eq!(s.keys_in("diff", "present"), keys(&["zoe@contoso.com"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procore_matches_by_login_or_email_in_any_case_active_or_not() {
    let mut t = Scenario::hand_written();
    let e3 = t.add_group("License – Microsoft 365 E3");
    let people = [
        ("Amy Login", "amy@contoso.com"),
        ("Bo Email", "bo@contoso.com"),
        ("Cal Case", "cal@contoso.com"),
        ("Dee Padded", "dee@contoso.com"),
        ("Eli Inactive", "eli@contoso.com"),
        ("Fox Inactive", "fox@contoso.com"),
        ("Gia Both", "gia@contoso.com"),
        ("Hu Taken", "hu@contoso.com"),
        ("Ike New", "ike@contoso.com"),
        ("Jo New", "jo@contoso.com"),
    ];
    for (name, mail) in people {
        t.add_user(name, Some(mail), mail, &[&e3]);
    }
    // A case-only difference in the directory's mail.
    t.graph_users.last_mut().unwrap().mail = Some("Jo@Contoso.com".into());
    t.add_procore_user("amy@contoso.com", "amy.personal@example.com", true);
    t.add_procore_user("bo.b", "bo@contoso.com", true);
    t.add_procore_user("CAL@Contoso.Com", "cal@CONTOSO.com", true);
    t.add_procore_user(" dee@contoso.com ", "dee.d@example.com", true);
    t.add_procore_user("eli@contoso.com", "eli@contoso.com", false);
    t.add_procore_user("fox.f", "FOX@contoso.com", false);
    // An inactive and an active account for one address: the active wins.
    t.add_procore_user("gia@contoso.com", "gia@contoso.com", false);
    t.add_procore_user("gia.g", "Gia@contoso.com", true);
    // Procore users in no license group are left alone.
    t.add_procore_user("sub@buildright.com", "sub@buildright.com", true);
    t.add_procore_user("old@contoso.com", "old@contoso.com", false);
    // Hu's login belongs to a user of another Procore company.
    t.taken_elsewhere.push("HU@contoso.com".into());
    let expected = t.expected_sync();
    assert_eq!(
        expected.to_create,
        keys(&["hu@contoso.com", "ike@contoso.com", "jo@contoso.com"]),
        "the oracle (which knows nothing of other companies)"
    );
    assert_eq!(
        expected.present,
        keys(&[
            "amy@contoso.com",
            "bo@contoso.com",
            "cal@contoso.com",
            "dee@contoso.com",
            "gia@contoso.com"
        ]),
        "the oracle"
    );
    assert_eq!(
        expected.inactive,
        keys(&["eli@contoso.com", "fox@contoso.com"]),
        "the oracle"
    );

    let s = sync(t).await;
    assert_eq!(
        created_keys(&s.state),
        keys(&["ike@contoso.com", "jo@contoso.com"])
    );
    assert_eq!(s.keys_in("diff", "present"), expected.present);
    assert_eq!(s.keys_in("diff", "present_inactive"), expected.inactive);
    let outcomes: BTreeMap<String, String> = s.run.create_outcomes();
    assert_eq!(
        outcomes,
        [
            ("hu@contoso.com", "conflict"),
            ("ike@contoso.com", "created"),
            ("jo@contoso.com", "created"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    );
    // The inactive matches are still inactive: reported, never reactivated.
    let active = |login: &str| {
        s.state
            .procore_users()
            .iter()
            .find(|u| u.login == login)
            .unwrap()
            .is_active
    };
    assert!(!active("eli@contoso.com") && !active("fox.f"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_enabled_user_members_count_not_disabled_ones_devices_or_nested_groups() {
    let mut t = Scenario::hand_written();
    let e3 = t.add_group("License – Microsoft 365 E3");
    let office = t.add_group("License – Office 365 E1");
    let crews = t.add_group("Field Crews");
    t.add_user("Ada Ok", Some("ada@contoso.com"), "ada@contoso.com", &[&e3]);
    t.add_user(
        "Bea Ok",
        Some("bea@contoso.com"),
        "bea@contoso.com",
        &[&office],
    );
    // Disabled: skipped, counted.
    t.add_user(
        "Cid Off",
        Some("cid@contoso.com"),
        "cid@contoso.com",
        &[&e3],
    )
    .account_enabled = false;
    t.add_user("Dot Off", None, "dot@contoso.com", &[&office])
        .account_enabled = false;
    // Disabled in one account, enabled in another with the same address.
    t.add_user(
        "Eve Old",
        Some("eve@contoso.com"),
        "eve.old@contoso.com",
        &[&e3],
    )
    .account_enabled = false;
    t.add_user(
        "Eve New",
        Some("eve@contoso.com"),
        "eve@contoso.com",
        &[&office],
    );
    // Only in a group nested in a license group: direct members only.
    t.add_user(
        "Gil Crew",
        Some("gil@contoso.com"),
        "gil@contoso.com",
        &[&crews],
    );
    let nested = Member::Group { id: crews.clone() };
    let device = Member::Device {
        id: "d1".into(),
        display_name: "CONTOSO-LAPTOP-17".into(),
    };
    let robot = Member::ServicePrincipal {
        id: "sp1".into(),
        display_name: "Backup Service".into(),
    };
    let license = t.groups.iter_mut().find(|g| g.id == e3).unwrap();
    license.members.extend([nested, device, robot]);
    // A disabled account already in Procore is not a reason to touch it.
    t.add_user(
        "Hal Gone",
        Some("hal@contoso.com"),
        "hal@contoso.com",
        &[&e3],
    )
    .account_enabled = false;
    t.add_procore_user("hal@contoso.com", "hal@contoso.com", true);
    t.add_user(
        "Ivo Ok",
        Some("ivo@contoso.com"),
        "ivo@contoso.com",
        &[&e3, &crews],
    );
    let created = keys(&[
        "ada@contoso.com",
        "bea@contoso.com",
        "eve@contoso.com",
        "ivo@contoso.com",
    ]);
    let expected = t.expected_sync();
    assert_eq!(expected.to_create, created, "the oracle");
    assert_eq!(expected.skipped_disabled, 3, "the oracle");

    let s = sync(t).await;
    assert_eq!(created_keys(&s.state), created);
    let members = s.run.output_of("members");
    assert_eq!(members["skipped_disabled"], Value::from(3), "{members}");
    // The nested group, the device and the service principal.
    assert_eq!(members["skipped_non_user"], Value::from(3), "{members}");
}

/// The report on its own: the sync's correctness is checked above on the
/// emulator's state and the run's output; here, that the report says what
/// the run did, one row per person acted on or worth a look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_has_a_row_for_each_person_acted_on_saying_what_was_done() {
    let mut t = Scenario::hand_written();
    let e3 = t.add_group("License – Microsoft 365 E3");
    for (name, mail) in [
        ("Ana New", "ana@contoso.com"),
        ("Bad Luck", "bad@contoso.com"),
        ("Eli Inactive", "eli@contoso.com"),
        ("Hu Taken", "hu@contoso.com"),
        ("Zoe There", "zoe@contoso.com"),
    ] {
        t.add_user(name, Some(mail), mail, &[&e3]);
    }
    t.add_procore_user("eli@contoso.com", "eli@contoso.com", false);
    t.add_procore_user("zoe@contoso.com", "zoe@contoso.com", true);
    t.taken_elsewhere.push("hu@contoso.com".into());
    // Every create of Bad's fails with a 500, the host's retries included.
    let faults = Faults {
        targeted: vec![TargetedFault {
            method: "POST".into(),
            path_suffix: "/users".into(),
            body_contains: Some("\"email_address\":\"bad@contoso.com\"".into()),
            at: Vec::new(),
            fault: FaultKind::ServerError,
        }],
        ..Faults::default()
    };
    let s = sync_with(EmulatorConfig {
        scenario: t,
        faults,
        ..Default::default()
    })
    .await;
    let created = &s.state.created_users()[0];
    let rows = report_rows(&s.report);
    let statuses: Vec<(&str, &str)> = rows
        .iter()
        .map(|(status, key, _)| (key.as_str(), status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("ana@contoso.com", "created"),
            ("bad@contoso.com", "failed"),
            ("hu@contoso.com", "conflict"),
            ("eli@contoso.com", "inactive in Procore"),
        ],
        "{}",
        s.report
    );
    let details: Vec<&str> = rows.iter().map(|(_, _, d)| d.as_str()).collect();
    assert!(
        details[0].starts_with(&format!("Procore id {}", created.id)),
        "{details:?}"
    );
    assert!(details[1].contains("500"), "{details:?}");
    assert!(
        details[2].contains("another Procore company"),
        "{details:?}"
    );
    let eli = s
        .state
        .procore_users()
        .iter()
        .find(|u| u.login == "eli@contoso.com")
        .unwrap();
    assert!(
        details[3].contains(&format!("Procore user {}", eli.id)),
        "{details:?}"
    );
    // The rows agree with what the run recorded for each person.
    for (key, status) in s.run.create_outcomes() {
        assert!(
            statuses.contains(&(key.as_str(), status.as_str())),
            "{key}: {status}"
        );
    }
    // Mailed, because something was created and something failed.
    assert_eq!(s.state.mails.len(), 1);
    let mail = &s.state.mails[0];
    // The mail is the report's summary: on a run this small, every row
    // of the report (the failure first), and where the report is.
    let keys = |rows: Vec<(String, String, String)>| {
        let mut keys: Vec<(String, String)> = rows.into_iter().map(|(s, k, _)| (s, k)).collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(report_rows(&mail.html)), keys(rows.clone()));
    assert_eq!(
        report_rows(&mail.html)[0].1,
        "bad@contoso.com",
        "failures first"
    );
    assert!(mail.html.contains("1 person failed"), "{}", mail.html);
    assert!(
        mail.html.contains("This mail lists all 4 rows."),
        "{}",
        mail.html
    );
    assert!(
        mail.subject.contains("1 created, 1 failed, 1 conflicts"),
        "{}",
        mail.subject
    );
}
