//! What real Graph delta does that a kind emulator would not, on the wire:
//! users deleted and restored or created through the admin endpoints, the
//! same entity listed once per change (`delta_repeats`), replays of the
//! previous round's last page (`delta_replays`), a group's parts
//! interleaved with other groups' (`delta_shuffle`), id look-ups that do
//! not see a recent change yet (`lookup_lag`), a nextLink that points at
//! its own page (`repeat_next_link`), and never-set properties left out of
//! users delta.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sluice_emulator::{
    EmulatorConfig, FaultKind, Faults, NewUser, Scenario, TargetedFault, UserError,
};

mod common;

use common::{Env, start};

/// A small tenant: three license groups with a few members each, and
/// its emulators with a Graph token.
struct Tenant {
    env: Env,
    token: String,
    base: String,
    groups: Vec<String>,
    users: Vec<String>,
}

async fn tenant(faults: Faults) -> Tenant {
    let mut scenario = Scenario::hand_written();
    let groups: Vec<String> = ["Microsoft 365 E3", "Microsoft 365 E5", "Office 365 E1"]
        .iter()
        .map(|name| scenario.add_group(&format!("License – {name}")))
        .collect();
    let mut users = Vec::new();
    for i in 0..9 {
        let mail = format!("user{i}@x.com");
        let group = groups[i % 3].as_str();
        let user = scenario.add_user(&format!("User {i}"), Some(&mail), &mail, &[group]);
        users.push(user.id.clone());
    }
    let env = start(EmulatorConfig {
        scenario,
        faults,
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let base = env.var("GRAPH_BASE_URL").to_string();
    Tenant {
        env,
        token,
        base,
        groups,
        users,
    }
}

impl Tenant {
    /// Every page of a round, from its first request to its deltaLink.
    async fn pages(&self, first: &str) -> (Vec<Value>, String) {
        let (mut pages, mut url) = (Vec::new(), first.to_string());
        loop {
            let r = self.env.graph(&self.token, &url).await;
            assert_eq!(r.status(), 200, "{url}");
            let page: Value = r.json().await.unwrap();
            pages.push(page.clone());
            assert!(pages.len() < 100, "a round ends");
            match (
                page["@odata.nextLink"].as_str(),
                page["@odata.deltaLink"].as_str(),
            ) {
                (Some(next), None) => url = next.to_string(),
                (None, Some(delta)) => return (pages, delta.to_string()),
                other => panic!("a page has a nextLink or a deltaLink, not {other:?}"),
            }
        }
    }

    /// The entries of a round, in order.
    async fn entries(&self, first: &str) -> (Vec<Value>, String) {
        let (pages, link) = self.pages(first).await;
        let values = pages
            .iter()
            .flat_map(|p| p["value"].as_array().unwrap().clone())
            .collect();
        (values, link)
    }

    fn users_delta(&self) -> String {
        format!(
            "{}/users/delta?$select=displayName,givenName,surname,mail,userPrincipalName,accountEnabled",
            self.base
        )
    }

    fn groups_delta(&self) -> String {
        format!("{}/groups/delta?$select=displayName,members", self.base)
    }

    /// `(group, member, left)` for each `members@delta` entry of a round.
    async fn member_entries(&self, first: &str) -> (Vec<(String, String, bool)>, String) {
        let (groups, link) = self.entries(first).await;
        let entries = groups
            .iter()
            .flat_map(|g| {
                let group = g["id"].as_str().unwrap().to_string();
                g["members@delta"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |m| {
                        let id = m["id"].as_str().unwrap().to_string();
                        (group.clone(), id, m.get("@removed").is_some())
                    })
            })
            .collect();
        (entries, link)
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut r = self
            .env
            .http
            .request(method, format!("{}/_admin{path}", self.env.emu.base_url()));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn lookup(&self, ids: &[&str]) -> Vec<String> {
        let list = ids
            .iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(",");
        let url = format!("{}/users?$filter=id in ({list})&$select=id", self.base);
        let page: Value = self
            .env
            .graph(&self.token, &url)
            .await
            .json()
            .await
            .unwrap();
        page["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect()
    }
}

fn removed(id: &str) -> Value {
    json!({"id": id, "@removed": {"reason": "changed"}})
}

#[tokio::test]
/// A user deleted and restored is listed again by the users delta only:
/// "Users that have been temporary deleted keep their group memberships
/// and won't appear in the delta result until they're permanently
/// deleted" (Graph's group delta documentation).
async fn a_restored_user_comes_back_in_the_users_delta_only() {
    let t = tenant(Faults::default()).await;
    let (_, users_link) = t.entries(&t.users_delta()).await;
    let (_, groups_link) = t.entries(&t.groups_delta()).await;
    let ann = t.users[0].clone();
    let (status, _) = t
        .admin(reqwest::Method::DELETE, &format!("/users/{ann}"), None)
        .await;
    assert_eq!(status, 204);
    let r = t
        .env
        .graph(&t.token, &format!("{}/users/{ann}", t.base))
        .await;
    assert_eq!(r.status(), 404, "deleted");
    let (status, body) = t
        .admin(
            reqwest::Method::POST,
            &format!("/users/{ann}/restore"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, json!({"id": ann, "groups": [t.groups[0]]}));
    let r = t
        .env
        .graph(&t.token, &format!("{}/users/{ann}", t.base))
        .await;
    assert_eq!(r.status(), 200, "restored");

    // By default, the net change: the user as it is now, a member as before.
    let (users, _) = t.entries(&users_link).await;
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0]["id"], json!(ann));
    assert_eq!(users[0]["accountEnabled"], json!(true));
    let (members, _) = t.member_entries(&groups_link).await;
    assert!(members.is_empty(), "memberships kept: {members:?}");

    // Every change, in order: deleted, then restored.
    t.env.emu.set_faults(Faults {
        delta_repeats: true,
        ..Default::default()
    });
    let (users, _) = t.entries(&users_link).await;
    assert_eq!(users.len(), 2, "{users:?}");
    assert_eq!(users[0], removed(&ann));
    assert_eq!(users[1]["id"], json!(ann));
    assert_eq!(users[1]["mail"], json!("user0@x.com"));
    let (members, _) = t.member_entries(&groups_link).await;
    assert!(members.is_empty(), "memberships kept: {members:?}");

    for (path, status) in [
        (format!("/users/{ann}/restore"), 404),
        ("/users/nobody/restore".to_string(), 404),
    ] {
        let (got, body) = t.admin(reqwest::Method::POST, &path, None).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.contains("no deleted user"), "{body}");
    }
}

#[tokio::test]
async fn a_new_hire_is_reported_like_a_real_creation() {
    let t = tenant(Faults::default()).await;
    let (_, users_link) = t.entries(&t.users_delta()).await;
    let (_, groups_link) = t.entries(&t.groups_delta()).await;
    let hire = json!({
        "displayName": "Nia Hart",
        "givenName": "Nia",
        "mail": "nia.hart@x.com",
        "userPrincipalName": "nia.hart@x.com",
        "groups": [t.groups[1]],
    });
    let (status, body) = t.admin(reqwest::Method::POST, "/users", Some(hire)).await;
    assert_eq!(status, 201, "{body}");
    let nia = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (users, _) = t.entries(&users_link).await;
    assert_eq!(
        users,
        [json!({
            "id": nia,
            "displayName": "Nia Hart",
            "givenName": "Nia",
            "mail": "nia.hart@x.com",
            "userPrincipalName": "nia.hart@x.com",
            "accountEnabled": true,
        })],
        "surname was never set: left out, not null"
    );
    let (members, _) = t.member_entries(&groups_link).await;
    assert_eq!(members, [(t.groups[1].clone(), nia.clone(), false)]);
    // Reads other than delta show a property never set as null, as Graph does.
    let read: Value = t
        .env
        .graph(&t.token, &format!("{}/users/{nia}", t.base))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["surname"], Value::Null);
    assert_eq!(read["mobilePhone"], Value::Null);

    // An id of one's own, disabled; from Rust too.
    let mut ned = NewUser::new("Ned Roe", "ned@x.com");
    ned.id = Some("11111111-2222-4333-8444-555555555555".into());
    ned.account_enabled = false;
    assert_eq!(
        t.env.emu.create_user(ned.clone()).unwrap(),
        "11111111-2222-4333-8444-555555555555"
    );
    assert!(matches!(
        t.env.emu.create_user(ned),
        Err(UserError::IdTaken(_))
    ));

    for (body, status, says) in [
        (
            json!({"displayName": "Nia Two", "userPrincipalName": "NIA.HART@x.com"}),
            409,
            "taken by user",
        ),
        (
            json!({"displayName": "Ola", "userPrincipalName": "ola@x.com", "groups": ["nope"]}),
            400,
            "no group `nope`",
        ),
        (
            json!({"displayName": "Ola", "userPrincipalName": "ola"}),
            400,
            "name@domain",
        ),
        (
            json!({"userPrincipalName": "ola@x.com"}),
            422,
            "displayName",
        ),
    ] {
        let (got, text) = t.admin(reqwest::Method::POST, "/users", Some(body)).await;
        assert_eq!(got, status, "{text}");
        assert!(text.contains(says), "{text}");
    }
}

#[tokio::test]
async fn users_delta_leaves_out_what_was_never_set_and_shows_a_cleared_mail_as_null() {
    let t = tenant(Faults::default()).await;
    let (first, link) = t
        .entries(&format!(
            "{}/users/delta?$select=mail,jobTitle,surname",
            t.base
        ))
        .await;
    assert!(
        first.iter().all(|u| u.get("jobTitle").is_none()),
        "{first:?}"
    );
    let single = first.iter().find(|u| u["id"] == json!(t.users[0])).unwrap();
    assert_eq!(single["surname"], json!("0"), "set properties are shown");
    assert!(t.env.emu.set_mail(&t.users[0], None));
    let (changed, _) = t.entries(&link).await;
    assert_eq!(
        changed,
        [json!({"id": t.users[0], "mail": null, "surname": "0"})],
        "set once and cleared: null"
    );
}

#[tokio::test]
async fn replays_start_a_round_with_the_previous_rounds_last_page() {
    let t = tenant(Faults {
        delta_replays: true,
        delta_page_members: Some(4),
        ..Default::default()
    })
    .await;
    let (pages, users_link) = t.pages(&t.users_delta()).await;
    let last_users = pages.last().unwrap()["value"].clone();
    let (pages, groups_link) = t.pages(&t.groups_delta()).await;
    assert!(pages.len() > 1, "four entries a page: several pages");
    let last_groups = pages.last().unwrap()["value"].clone();

    let leaver = t.users[3].clone();
    assert!(t.env.emu.remove_member(&t.groups[0], &leaver));
    assert!(t.env.emu.set_account_enabled(&leaver, false));
    let (pages, users_link) = t.pages(&users_link).await;
    assert_eq!(pages[0]["value"], last_users, "the replay comes first");
    assert_eq!(pages.last().unwrap()["value"][0]["id"], json!(leaver));
    let (pages, groups_link) = t.pages(&groups_link).await;
    assert_eq!(pages[0]["value"], last_groups, "the replay comes first");
    let change = &pages.last().unwrap()["value"][0];
    assert_eq!(change["members@delta"][0]["id"], json!(leaver));
    assert!(change["members@delta"][0].get("@removed").is_some());

    // The next round replays the last page of the one before: the changes.
    let (pages, _) = t.pages(&users_link).await;
    assert_eq!(pages.len(), 2, "the replay, then an empty page");
    assert_eq!(pages[0]["value"][0]["id"], json!(leaver));
    let (pages, _) = t.pages(&groups_link).await;
    assert_eq!(
        pages[0]["value"][0]["members@delta"][0]["id"],
        json!(leaver)
    );
    assert_eq!(pages.last().unwrap()["value"], json!([]));
}

#[tokio::test]
async fn shuffled_parts_of_a_group_are_apart_and_still_add_up() {
    let t = tenant(Faults {
        delta_shuffle: true,
        delta_page_members: Some(2),
        seed: 5,
        ..Default::default()
    })
    .await;
    let (objects, _) = t.entries(&t.groups_delta()).await;
    let order: Vec<&str> = objects.iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert!(
        order.len() >= 9,
        "three members a group, one a part: {order:?}"
    );
    for (i, pair) in order.windows(2).enumerate() {
        let others_left = order[i + 1..].iter().any(|g| *g != pair[0]);
        assert!(
            pair[0] != pair[1] || !others_left,
            "a group's parts are apart: {order:?}"
        );
    }
    let mut merged: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for g in &objects {
        let members = merged.entry(g["id"].as_str().unwrap()).or_default();
        for m in g["members@delta"].as_array().into_iter().flatten() {
            members.insert(m["id"].as_str().unwrap());
        }
    }
    let expected: BTreeMap<&str, BTreeSet<&str>> = t
        .groups
        .iter()
        .enumerate()
        .map(|(g, id)| {
            let members = (0..9).filter(|i| i % 3 == g).map(|i| t.users[i].as_str());
            (id.as_str(), members.collect())
        })
        .collect();
    assert_eq!(merged, expected, "every member, once merged");
    let (again, _) = t.entries(&t.groups_delta()).await;
    assert_eq!(again, objects, "seeded: the same order every time");
}

#[tokio::test]
async fn lookups_by_id_miss_recently_changed_users_for_a_while() {
    let t = tenant(Faults {
        lookup_lag: Some(2),
        ..Default::default()
    })
    .await;
    let [a, b, c] = [&t.users[0], &t.users[1], &t.users[2]];
    assert_eq!(t.lookup(&[a, b]).await.len(), 2, "nothing changed yet");
    assert!(t.env.emu.add_member(&t.groups[1], a));
    assert!(t.env.emu.set_account_enabled(b, false));
    assert!(t.env.emu.add_member(&t.groups[0], c));
    // The last two changes are b's and c's: two look-ups miss them.
    assert_eq!(t.lookup(&[a, b, c]).await, [a.as_str()]);
    assert_eq!(t.lookup(&[b]).await, Vec::<String>::new());
    let r = t
        .env
        .graph(&t.token, &format!("{}/users/{b}", t.base))
        .await;
    assert_eq!(r.status(), 200, "a read of the one user is not delayed");
    let by_name = format!("{}/users?$filter=startswith(displayName,'User')", t.base);
    let all: Value = t.env.graph(&t.token, &by_name).await.json().await.unwrap();
    assert_eq!(
        all["value"].as_array().unwrap().len(),
        9,
        "only id look-ups lag"
    );
    assert_eq!(t.lookup(&[a, b, c]).await, [a.clone(), b.clone()]);
    assert_eq!(t.lookup(&[a, b, c]).await.len(), 3, "caught up");
    // A new hire lags too; setting the faults again starts the count again.
    let hire = t
        .env
        .emu
        .create_user(NewUser::new("New Hire", "new@x.com"))
        .unwrap();
    assert_eq!(t.lookup(&[&hire]).await, Vec::<String>::new());
    t.env.emu.set_faults(Faults {
        lookup_lag: Some(2),
        ..Default::default()
    });
    assert_eq!(t.lookup(&[&hire]).await, Vec::<String>::new());
    assert_eq!(t.lookup(&[&hire]).await, Vec::<String>::new());
    assert_eq!(t.lookup(&[&hire]).await, [hire.as_str()]);
}

#[tokio::test]
async fn a_next_link_can_point_at_its_own_page() {
    let t = tenant(Faults {
        targeted: vec![TargetedFault {
            method: "GET".into(),
            path_suffix: "/groups/delta".into(),
            body_contains: None,
            at: vec![1, 2],
            fault: FaultKind::RepeatNextLink,
        }],
        ..Default::default()
    })
    .await;
    let first = t.groups_delta();
    let page: Value = t.env.graph(&t.token, &first).await.json().await.unwrap();
    assert_eq!(page["@odata.nextLink"], json!(first), "its own address");
    assert!(page.get("@odata.deltaLink").is_none());
    let again: Value = t.env.graph(&t.token, &first).await.json().await.unwrap();
    assert_eq!(again["value"], page["value"], "the same page again");
    // Once the targeted requests are past, the round ends as usual.
    let (pages, _) = t.pages(&first).await;
    assert_eq!(pages[0]["value"], page["value"]);
    let log = t.env.emu.snapshot().requests;
    let faulted = log
        .iter()
        .filter(|r| r.fault == Some("repeat_next_link"))
        .count();
    assert_eq!(faulted, 2);
}

#[tokio::test]
async fn the_delta_knobs_have_their_documented_json_names() {
    let t = tenant(Faults::default()).await;
    let knobs = json!({
        "delta_repeats": true,
        "delta_replays": true,
        "delta_shuffle": true,
        "delta_page_members": 10,
        "lookup_lag": 3,
        "seed": 4,
        "targeted": [{"method": "GET", "path_suffix": "/users", "fault": "repeat_next_link"}],
    });
    let (status, body) = t
        .admin(reqwest::Method::PUT, "/faults", Some(knobs.clone()))
        .await;
    assert_eq!(status, 204, "{body}");
    let (_, body) = t.admin(reqwest::Method::GET, "/faults", None).await;
    let now: Value = serde_json::from_str(&body).unwrap();
    for (name, value) in knobs.as_object().unwrap() {
        if name != "targeted" {
            assert_eq!(&now[name], value, "{name}");
        }
    }
    assert_eq!(now["targeted"][0]["fault"], json!("repeat_next_link"));
    let defaults = Faults::default();
    assert!(!defaults.delta_repeats && !defaults.delta_replays && !defaults.delta_shuffle);
    assert_eq!(
        (defaults.delta_page_members, defaults.lookup_lag),
        (None, None)
    );
}
