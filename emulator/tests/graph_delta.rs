//! Graph delta for groups with members, on the wire: a first round that
//! lists every member, rounds that list only changes (`@removed` for a
//! member who left), large groups split across pages, and 410 Gone for a
//! token that expired or was never issued.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sluice_emulator::{EmulatorConfig, Faults, Scenario};

mod common;

use common::{Env, start};

/// One `members@delta` entry: the member's id, its type, and whether it left.
type Entry = (String, String, bool);

/// Everything a round said, merged per group across its pages.
struct Round {
    groups: BTreeMap<String, Vec<Entry>>,
    names: BTreeMap<String, String>,
    pages: usize,
    delta_link: String,
}

async fn read_round(env: &Env, token: &str, first: &str) -> Round {
    let mut round = Round {
        groups: BTreeMap::new(),
        names: BTreeMap::new(),
        pages: 0,
        delta_link: String::new(),
    };
    let mut url = first.to_string();
    loop {
        let r = env.graph(token, &url).await;
        assert_eq!(r.status(), 200, "{url}");
        let page: Value = r.json().await.unwrap();
        round.pages += 1;
        for group in page["value"].as_array().unwrap() {
            let id = group["id"].as_str().unwrap().to_string();
            if let Some(name) = group["displayName"].as_str() {
                round.names.insert(id.clone(), name.to_string());
            }
            let entries = round.groups.entry(id).or_default();
            for m in group["members@delta"].as_array().into_iter().flatten() {
                entries.push((
                    m["id"].as_str().unwrap().to_string(),
                    m["@odata.type"].as_str().unwrap().to_string(),
                    m.get("@removed").is_some(),
                ));
                if let Some(removed) = m.get("@removed") {
                    assert_eq!(removed, &json!({"reason": "deleted"}));
                }
            }
        }
        match (
            page["@odata.nextLink"].as_str(),
            page["@odata.deltaLink"].as_str(),
        ) {
            (Some(next), None) => url = next.to_string(),
            (None, Some(delta)) => {
                round.delta_link = delta.to_string();
                return round;
            }
            other => panic!("a page has a nextLink or a deltaLink, not {other:?}"),
        }
    }
}

/// The direct members of each group as the emulator holds them.
fn membership(scenario: &Scenario, groups: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    groups
        .iter()
        .map(|id| {
            let members = scenario.group(id).unwrap().members.iter();
            (
                id.to_string(),
                members.map(|m| m.id().to_string()).collect(),
            )
        })
        .collect()
}

/// Applies a round to what a client knew.
fn apply(known: &mut BTreeMap<String, BTreeSet<String>>, round: &Round) {
    for (group, entries) in &round.groups {
        let members = known.entry(group.clone()).or_default();
        for (id, _, removed) in entries {
            if *removed {
                members.remove(id);
            } else {
                members.insert(id.clone());
            }
        }
    }
}

fn license_groups(scenario: &Scenario) -> Vec<String> {
    scenario
        .groups
        .iter()
        .filter(|g| g.display_name.starts_with("License – "))
        .map(|g| g.id.clone())
        .collect()
}

fn filtered_url(env: &Env, groups: &[String]) -> String {
    delta_url(env, groups, "displayName,members")
}

/// The first request of a groups delta round over `groups`, selecting
/// `select`.
fn delta_url(env: &Env, groups: &[String], select: &str) -> String {
    let filter = groups
        .iter()
        .map(|g| format!("id eq '{g}'"))
        .collect::<Vec<_>>()
        .join(" or ");
    reqwest::Url::parse_with_params(
        &format!("{}/groups/delta", env.var("GRAPH_BASE_URL")),
        &[("$select", select), ("$filter", &filter)],
    )
    .unwrap()
    .to_string()
}

#[tokio::test]
async fn a_first_round_lists_every_member_splitting_large_groups_across_pages() {
    let scenario = Scenario::generate(3000, 9);
    let groups = license_groups(&scenario);
    let largest = groups
        .iter()
        .map(|g| scenario.group(g).unwrap().members.len())
        .max()
        .unwrap();
    assert!(largest > 1000, "a group larger than one page: {largest}");
    let env = start(EmulatorConfig {
        scenario: scenario.clone(),
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let round = read_round(&env, &token, &filtered_url(&env, &groups)).await;
    assert!(round.pages >= 3, "{} pages", round.pages);
    let mut known = BTreeMap::new();
    apply(&mut known, &round);
    let ids: Vec<&str> = groups.iter().map(String::as_str).collect();
    assert_eq!(
        known,
        membership(&scenario, &ids),
        "only the filtered groups, every member"
    );
    for (group, name) in &round.names {
        assert_eq!(name, &scenario.group(group).unwrap().display_name);
    }
    let kinds: BTreeSet<&str> = round
        .groups
        .values()
        .flatten()
        .map(|(_, kind, _)| kind.as_str())
        .collect();
    assert!(kinds.contains("#microsoft.graph.user") && kinds.contains("#microsoft.graph.group"));
    assert!(
        round
            .groups
            .values()
            .flatten()
            .all(|(_, _, removed)| !removed)
    );
    // Nothing changed: the deltaLink gives an empty round.
    let again = read_round(&env, &token, &round.delta_link).await;
    assert!(again.groups.is_empty() && again.pages == 1);
    // Without a filter, every group; the only filter delta takes is on id.
    let all = read_round(
        &env,
        &token,
        &format!(
            "{}/groups/delta?$select=displayName",
            env.var("GRAPH_BASE_URL")
        ),
    )
    .await;
    assert_eq!(all.groups.len(), scenario.groups.len());
    assert!(
        all.groups.values().all(Vec::is_empty),
        "members only when selected"
    );
    let by_name = env
        .graph(
            &token,
            &format!(
                "{}/groups/delta?$filter=startswith(displayName,'License')",
                env.var("GRAPH_BASE_URL")
            ),
        )
        .await;
    assert_eq!(by_name.status(), 400);
}

#[tokio::test]
async fn later_rounds_list_only_joins_and_leaves_with_removed() {
    let scenario = Scenario::generate(200, 4);
    let groups = license_groups(&scenario);
    let users: Vec<String> = scenario.graph_users.iter().map(|u| u.id.clone()).collect();
    let env = start(EmulatorConfig {
        scenario: scenario.clone(),
        // Each round starts with an empty page that has a nextLink.
        faults: Faults {
            empty_graph_pages: true,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let first = read_round(&env, &token, &filtered_url(&env, &groups)).await;
    let mut known = BTreeMap::new();
    apply(&mut known, &first);
    // Between runs: one leaves a group, one is deleted, one is disabled
    // (not a membership change), one joins, one leaves and comes back.
    let g = &groups[0];
    let member_of_g = |i: usize| scenario.group(g).unwrap().members[i].id().to_string();
    let (leaver, deleted, bounced) = (member_of_g(1), member_of_g(2), member_of_g(3));
    let joiner = users
        .iter()
        .find(|u| !known[g].contains(*u))
        .unwrap()
        .clone();
    assert!(env.emu.remove_member(g, &leaver));
    assert!(env.emu.delete_user(&deleted));
    assert!(env.emu.set_account_enabled(&member_of_g(4), false));
    assert!(env.emu.add_member(g, &joiner));
    assert!(env.emu.remove_member(g, &bounced) && env.emu.add_member(g, &bounced));
    let changes = read_round(&env, &token, &first.delta_link).await;
    let entries: BTreeSet<(String, bool)> = changes.groups[g]
        .iter()
        .map(|(id, _, removed)| (id.clone(), *removed))
        .collect();
    assert!(entries.contains(&(leaver.clone(), true)));
    assert!(entries.contains(&(joiner.clone(), false)));
    assert!(
        entries.contains(&(bounced.clone(), false)),
        "net: still a member"
    );
    assert!(
        !changes
            .groups
            .values()
            .flatten()
            .any(|(id, _, _)| *id == deleted),
        "a user in deleted items keeps its memberships: the group delta says nothing"
    );
    assert!(
        changes.groups.keys().all(|id| groups.contains(id)),
        "only the filtered groups"
    );
    apply(&mut known, &changes);
    // The users delta is what says the deleted user is gone.
    for members in known.values_mut() {
        members.remove(&deleted);
    }
    let now = env.emu.snapshot().scenario;
    let ids: Vec<&str> = groups.iter().map(String::as_str).collect();
    assert_eq!(
        known,
        membership(&now, &ids),
        "the merged rounds, less the deleted user, equal a full read"
    );
    // A round after everything settled lists nothing.
    let settled = read_round(&env, &token, &changes.delta_link).await;
    assert!(settled.groups.is_empty());
}

#[tokio::test]
async fn expired_or_unknown_tokens_are_410_gone_with_where_to_start_again() {
    let env = start(EmulatorConfig::default()).await;
    let token = env.graph_token().await;
    let base = env.var("GRAPH_BASE_URL").to_string();
    let first = read_round(
        &env,
        &token,
        &format!("{base}/groups/delta?$select=displayName,members"),
    )
    .await;
    for (url, restart) in [
        (
            format!("{base}/groups/delta?$deltatoken=never-issued"),
            format!("{base}/groups/delta"),
        ),
        (
            format!("{base}/groups/delta?$skiptoken=never-issued"),
            format!("{base}/groups/delta"),
        ),
    ] {
        let r = env.graph(&token, &url).await;
        assert_eq!(r.status(), 410);
        assert_eq!(r.headers()["location"].to_str().unwrap(), restart);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "syncStateNotFound");
    }
    // Expired (as after Graph's seven days): a full read starts again from
    // the Location, which keeps the round's options.
    env.emu.expire_delta_tokens();
    let r = env.graph(&token, &first.delta_link).await;
    assert_eq!(r.status(), 410);
    let restart = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        restart.contains("$select=displayName%2Cmembers")
            || restart.contains("$select=displayName,members"),
        "{restart}"
    );
    let again = read_round(&env, &token, &restart).await;
    assert!(!again.groups.is_empty());
    // $deltatoken=latest: no objects, a link for changes from now on.
    let latest: Value = env
        .graph(&token, &format!("{base}/groups/delta?$deltatoken=latest"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(latest["value"], json!([]));
    assert!(latest["@odata.deltaLink"].is_string());
}

#[tokio::test]
async fn the_emulator_reports_its_own_service_time() {
    let env = start(EmulatorConfig::default()).await;
    let token = env.graph_token().await;
    for _ in 0..3 {
        env.graph(&token, &format!("{}/groups", env.var("GRAPH_BASE_URL")))
            .await;
    }
    let stats = env.emu.stats();
    assert_eq!(stats.requests, 4, "the token request and three lists");
    assert!(stats.service_time_ms > 0.0);
    let over_http: Value = env
        .http
        .get(format!("{}/_admin/stats", env.emu.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http["requests"], json!(4));
    let over_http_ms = over_http["service_time_ms"].as_f64().unwrap();
    // JSON numbers are read back to within a rounding of the f64.
    assert!(
        over_http_ms >= stats.service_time_ms - 1e-9,
        "{over_http_ms} {stats:?}"
    );
}

/// A generated tenant of `users` users (from `seed`), its emulators, a
/// Graph token and Graph's base URL.
async fn tenant(users: usize, seed: u64) -> (Scenario, Env, String, String) {
    let scenario = Scenario::generate(users, seed);
    let env = start(EmulatorConfig {
        scenario: scenario.clone(),
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let base = env.var("GRAPH_BASE_URL").to_string();
    (scenario, env, token, base)
}

/// Every page of a users delta round: the users it listed and its deltaLink.
async fn read_user_round(env: &Env, token: &str, first: &str) -> (Vec<Value>, String, usize) {
    let (mut users, mut url, mut pages) = (Vec::new(), first.to_string(), 0);
    loop {
        let r = env.graph(token, &url).await;
        assert_eq!(r.status(), 200, "{url}");
        let page: Value = r.json().await.unwrap();
        pages += 1;
        users.extend(page["value"].as_array().unwrap().iter().cloned());
        match (
            page["@odata.nextLink"].as_str(),
            page["@odata.deltaLink"].as_str(),
        ) {
            (Some(next), None) => url = next.to_string(),
            (None, Some(delta)) => return (users, delta.to_string(), pages),
            other => panic!("a page has a nextLink or a deltaLink, not {other:?}"),
        }
    }
}

#[tokio::test]
async fn users_delta_lists_every_user_then_only_disabled_and_deleted_ones() {
    let (scenario, env, token, base) = tenant(1000, 4).await;
    let select = "id,mail,userPrincipalName,accountEnabled";
    let first = format!("{base}/users/delta?$select={select}");
    let (users, link, pages) = read_user_round(&env, &token, &first).await;
    assert!(
        pages > 1,
        "a tenant of {} users is several pages",
        users.len()
    );
    let ids: BTreeSet<&str> = users.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), scenario.graph_users.len(), "each user once");
    assert!(
        users.iter().all(|u| u.get("displayName").is_none()),
        "$select kept"
    );
    // A link for now, without reading every user.
    let latest: Value = env
        .graph(&token, &format!("{first}&$deltatoken=latest"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(latest["value"], json!([]));
    let latest_link = latest["@odata.deltaLink"].as_str().unwrap().to_string();

    let (disabled, deleted) = (&scenario.graph_users[3].id, &scenario.graph_users[5].id);
    assert!(env.emu.set_account_enabled(disabled, false));
    assert!(env.emu.delete_user(deleted));
    for link in [&link, &latest_link] {
        let (changed, _, pages) = read_user_round(&env, &token, link).await;
        assert_eq!(pages, 1);
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(changed[0]["id"], json!(disabled));
        assert_eq!(changed[0]["accountEnabled"], json!(false));
        assert!(changed[0].get("displayName").is_none(), "$select kept");
        assert_eq!(
            changed[1],
            json!({"id": deleted, "@removed": {"reason": "changed"}})
        );
    }
    // Nothing changed since the last round: an empty round.
    let (_, next_link, _) = read_user_round(&env, &token, &link).await;
    let (changed, _, _) = read_user_round(&env, &token, &next_link).await;
    assert_eq!(changed, Vec::<Value>::new());
    // Expired: 410 Gone, Location the round's first request.
    env.emu.expire_delta_tokens();
    let r = env.graph(&token, &next_link).await;
    assert_eq!(r.status(), 410);
    let restart = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        restart.starts_with(&format!("{base}/users/delta?")),
        "{restart}"
    );
    assert!(restart.contains("accountEnabled"), "{restart}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "syncStateNotFound");
}

/// A delta round sees a change only to what it selected (Graph: "if a
/// change occurs to a property that is not selected, the resource ...
/// does not appear in the delta response"), always returns `id`, and
/// takes only `id eq` filters, for at most 50 objects.
#[tokio::test]
async fn delta_rounds_see_only_selected_changes_and_take_only_id_filters() {
    let (scenario, env, token, base) = tenant(200, 4).await;
    let groups = license_groups(&scenario);
    let names_only = format!("{base}/users/delta?$select=displayName");
    let (users, names_link, _) = read_user_round(&env, &token, &names_only).await;
    assert!(
        users.iter().all(|u| u["id"].is_string()),
        "id always returned"
    );
    let enabled = format!("{base}/users/delta?$select=id,accountEnabled");
    let (_, enabled_link, _) = read_user_round(&env, &token, &enabled).await;
    let one = &scenario.graph_users[1].id;
    let filtered = format!("{base}/users/delta?$select=accountEnabled&$filter=id eq '{one}'");
    let (only, filtered_link, _) = read_user_round(&env, &token, &filtered).await;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["id"], json!(one));
    let names_round = read_round(&env, &token, &delta_url(&env, &groups, "displayName")).await;

    let (disabled, deleted) = (&scenario.graph_users[3].id, &scenario.graph_users[5].id);
    assert!(env.emu.set_account_enabled(disabled, false));
    assert!(env.emu.delete_user(deleted));
    let (changed, _, _) = read_user_round(&env, &token, &names_link).await;
    assert_eq!(
        changed,
        vec![json!({"id": deleted, "@removed": {"reason": "changed"}})],
        "a disable is not seen without accountEnabled selected; a deletion is"
    );
    let (changed, _, _) = read_user_round(&env, &token, &enabled_link).await;
    assert_eq!(changed.len(), 2, "{changed:?}");
    let (changed, _, _) = read_user_round(&env, &token, &filtered_link).await;
    assert_eq!(changed, Vec::<Value>::new(), "neither change is user 1's");
    let g = &groups[0];
    let member = scenario.group(g).unwrap().members[0].id().to_string();
    assert!(env.emu.remove_member(g, &member));
    let later = read_round(&env, &token, &names_round.delta_link).await;
    assert!(
        later.groups.is_empty(),
        "membership changes are not seen without members selected: {:?}",
        later.groups.keys()
    );

    let fifty_one_ids = (0..51)
        .map(|i| format!("id eq '{i}'"))
        .collect::<Vec<_>>()
        .join(" or ");
    for (url, why) in [
        (
            format!("{base}/users/delta?$filter=startswith(displayName,'A')"),
            "only id filters",
        ),
        (
            format!("{base}/users/delta?$filter={fifty_one_ids}"),
            "at most 50 users",
        ),
        (
            format!("{base}/groups/delta?$select=members&$filter={fifty_one_ids}"),
            "at most 50 groups",
        ),
    ] {
        let r = env.graph(&token, &url).await;
        assert_eq!(r.status(), 400, "{why}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "Request_UnsupportedQuery", "{why}");
    }
}

/// `in (…)` and `or` join at most 15 clauses outside advanced queries.
#[tokio::test]
async fn filters_join_at_most_fifteen_clauses_outside_advanced_queries() {
    let (scenario, env, token, base) = tenant(50, 2).await;
    let ids: Vec<String> = scenario
        .graph_users
        .iter()
        .map(|u| format!("'{}'", u.id))
        .collect();
    let within = format!("{base}/users?$filter=id in ({})", ids[..15].join(","));
    let r = env.graph(&token, &within).await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 15);
    let ors = |n: usize| {
        ids[..n]
            .iter()
            .map(|id| format!("id eq {id}"))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    for url in [
        format!("{base}/users?$filter=id in ({})", ids[..16].join(",")),
        format!("{base}/users?$filter={}", ors(16)),
        format!(
            "{base}/users?$filter=accountEnabled eq true and ({})",
            ors(16)
        ),
    ] {
        let r = env.graph(&token, &url).await;
        assert_eq!(r.status(), 400, "{url}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "Request_UnsupportedQuery");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("Max allowed: 15"), "{message}");
    }
    assert_eq!(
        env.graph(&token, &format!("{base}/users?$filter={}", ors(15)))
            .await
            .status(),
        200
    );
}
