//! What leavers and returners need of the emulators: Procore's
//! deactivation, reactivation and project removal on the wire, and Entra
//! changes between runs (a member leaves a group, an account is disabled,
//! a user is deleted) through the Rust helpers and the admin endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::{Value, json};
use sluice_emulator::scenario::Member;
use sluice_emulator::{EmulatorConfig, Scenario};

mod common;

use common::{Env, company, start};

fn ids(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_u64().unwrap())
        .collect()
}

async fn listed(env: &Env, token: &str, path: &str) -> Vec<u64> {
    ids(&env
        .procore_json(token, &format!("{path}?per_page=10000"))
        .await)
}

#[tokio::test]
async fn procore_deactivates_active_users_with_a_nested_patch_and_reactivates_from_the_inactive_list()
 {
    let env = start(EmulatorConfig::default()).await;
    let token = env.procore_token().await;
    let c = company(&env);
    let (active, inactive) = (
        format!("companies/{c}/users"),
        format!("companies/{c}/users/inactive"),
    );
    let id = listed(&env, &token, &active).await[0];
    let patch = |body: Option<Value>, path: String| {
        let env = &env;
        let token = &token;
        async move { env.procore(token, Method::PATCH, &path, body).await }
    };
    let r = patch(
        Some(json!({"user": {"is_active": false}})),
        format!("{active}/{id}"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["is_active"], false);
    assert!(!listed(&env, &token, &active).await.contains(&id));
    assert!(listed(&env, &token, &inactive).await.contains(&id));
    // The update route reaches active users only: a deactivation sent
    // again, or any update of an inactive user, is a 404 and changes
    // nothing (Procore reactivates through the inactive list).
    for body in [
        json!({"user": {"is_active": false}}),
        json!({"user": {"is_active": true}}),
        json!({"user": {"first_name": "Renamed"}}),
    ] {
        let again = patch(Some(body.clone()), format!("{active}/{id}")).await;
        assert_eq!(again.status(), 404, "{body}");
        assert!(again.json::<Value>().await.unwrap()["errors"].is_string());
    }
    assert!(listed(&env, &token, &inactive).await.contains(&id));
    let user = env.emu.snapshot();
    let user = user.procore_users().iter().find(|u| u.id == id).unwrap();
    assert!(!user.is_active && user.first_name != "Renamed");
    // Procore's "Reactivate company user": no body, 200 with the user.
    let r = patch(None, format!("{inactive}/{id}")).await;
    assert_eq!(r.status(), 200);
    let user: Value = r.json().await.unwrap();
    assert_eq!(
        (user["id"].as_u64(), &user["is_active"]),
        (Some(id), &json!(true))
    );
    assert!(listed(&env, &token, &active).await.contains(&id));
    assert!(!listed(&env, &token, &inactive).await.contains(&id));
    // Only inactive users can be reactivated; unknown users are 404s; a
    // flat body is refused as Procore refuses it.
    assert_eq!(patch(None, format!("{inactive}/{id}")).await.status(), 404);
    let unknown = patch(
        Some(json!({"user": {"is_active": false}})),
        format!("{active}/999999"),
    )
    .await;
    assert_eq!(unknown.status(), 404);
    assert!(unknown.json::<Value>().await.unwrap()["errors"].is_string());
    let flat = patch(Some(json!({"is_active": false})), format!("{active}/{id}")).await;
    assert_eq!(flat.status(), 400);
    assert!(listed(&env, &token, &active).await.contains(&id));
}

#[tokio::test]
async fn project_removal_is_204_and_404_for_someone_not_on_the_project() {
    let env = start(EmulatorConfig::default()).await;
    let token = env.procore_token().await;
    let c = company(&env);
    let project = env.var("PROCORE_PROJECT_ID").to_string();
    let id = listed(&env, &token, &format!("companies/{c}/users")).await[0];
    let members = format!("projects/{project}/users");
    let add = env
        .procore(
            &token,
            Method::POST,
            &format!("{members}/{id}/actions/add"),
            Some(json!({"user": {"permission_template_id": 77}})),
        )
        .await;
    assert_eq!(add.status(), 201, "Procore documents 201 Created");
    assert_eq!(
        add.json::<Value>().await.unwrap()["permission_template"]["id"],
        77
    );
    assert_eq!(listed(&env, &token, &members).await, vec![id]);
    // Deactivation leaves project memberships alone, as in Procore.
    env.procore(
        &token,
        Method::PATCH,
        &format!("companies/{c}/users/{id}"),
        Some(json!({"user": {"is_active": false}})),
    )
    .await;
    assert_eq!(env.emu.snapshot().project_users().len(), 1);
    let remove = format!("{members}/{id}/actions/remove");
    let r = env.procore(&token, Method::DELETE, &remove, None).await;
    assert_eq!(r.status(), 204);
    assert!(r.bytes().await.unwrap().is_empty());
    assert!(env.emu.snapshot().project_users().is_empty());
    // Not on the project (any more), or no such project: 404.
    let again = env.procore(&token, Method::DELETE, &remove, None).await;
    assert_eq!(again.status(), 404);
    assert!(again.json::<Value>().await.unwrap()["errors"].is_string());
    let elsewhere = env
        .procore(
            &token,
            Method::DELETE,
            &format!("projects/555/users/{id}/actions/remove"),
            None,
        )
        .await;
    assert_eq!(elsewhere.status(), 404);
    // The user is still in the company directory.
    assert!(
        listed(&env, &token, &format!("companies/{c}/users/inactive"))
            .await
            .contains(&id)
    );
}

/// A license group's direct user members, as Graph lists them with
/// `accountEnabled`, by id.
async fn members(env: &Env, token: &str, group: &str) -> Vec<(String, bool)> {
    let page: Value = env
        .graph(
            token,
            &format!(
                "{}/groups/{group}/members?$select=id,accountEnabled&$top=999",
                env.var("GRAPH_BASE_URL")
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["@odata.type"] == "#microsoft.graph.user")
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["accountEnabled"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn entra_changes_between_runs_show_in_graph_by_helper_and_by_admin_endpoint() {
    let scenario = Scenario::generate(60, 3);
    let group = scenario
        .groups
        .iter()
        .find(|g| g.display_name == "License – Microsoft 365 E3")
        .unwrap()
        .id
        .clone();
    let users: Vec<String> = scenario
        .group(&group)
        .unwrap()
        .members
        .iter()
        .filter_map(|m| match m {
            Member::User { id } => Some(id.clone()),
            _ => None,
        })
        .take(4)
        .collect();
    let env = start(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let before = members(&env, &token, &group).await;
    let has = |list: &[(String, bool)], id: &str| list.iter().any(|(m, _)| m == id);
    // Through the Rust helpers.
    assert!(env.emu.remove_member(&group, &users[0]));
    assert!(!env.emu.remove_member(&group, &users[0]), "already gone");
    assert!(env.emu.set_account_enabled(&users[1], false));
    assert!(env.emu.delete_user(&users[2]));
    let after = members(&env, &token, &group).await;
    assert_eq!(after.len(), before.len() - 2);
    assert!(!has(&after, &users[0]) && !has(&after, &users[2]));
    assert!(
        after.contains(&(users[1].clone(), false)),
        "disabled, still a member"
    );
    let deleted = env
        .graph(
            &token,
            &format!("{}/users/{}", env.var("GRAPH_BASE_URL"), users[2]),
        )
        .await;
    assert_eq!(deleted.status(), 404);
    assert!(
        env.emu
            .snapshot()
            .scenario
            .groups
            .iter()
            .all(|g| g.members.iter().all(|m| m.id() != users[2])),
        "a deleted user leaves every group"
    );
    assert!(env.emu.add_member(&group, &users[0]), "a returner");
    assert!(has(&members(&env, &token, &group).await, &users[0]));
    // Through the admin endpoints, for `sluice emulate` driven by hand.
    let admin = format!("{}/_admin", env.emu.base_url());
    let send = |method: Method, path: String, body: Option<Value>| {
        let mut r = env.http.request(method, format!("{admin}{path}"));
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let member = format!("/groups/{group}/members/{}", users[3]);
    assert_eq!(send(Method::DELETE, member.clone(), None).await, 204);
    assert_eq!(send(Method::DELETE, member.clone(), None).await, 404);
    assert_eq!(send(Method::POST, member, None).await, 204);
    let user = format!("/users/{}", users[3]);
    let disable = Some(json!({"accountEnabled": false}));
    assert_eq!(send(Method::PATCH, user.clone(), disable).await, 204);
    assert!(
        members(&env, &token, &group)
            .await
            .contains(&(users[3].clone(), false))
    );
    let typo = Some(json!({"accountEnabld": true}));
    assert!(send(Method::PATCH, user.clone(), typo).await >= 400);
    assert_eq!(
        send(Method::PATCH, user.clone(), Some(json!({}))).await,
        400
    );
    // A mailbox that comes later (or a changed address), and its removal.
    let mail_of = |id: String| {
        let url = format!("{}/users/{id}?$select=mail", env.var("GRAPH_BASE_URL"));
        let token = token.clone();
        let env = &env;
        async move {
            let body: Value = env.graph(&token, &url).await.json().await.unwrap();
            body["mail"].clone()
        }
    };
    let mail = Some(json!({"mail": "New.Address@contoso.com"}));
    assert_eq!(send(Method::PATCH, user.clone(), mail).await, 204);
    assert_eq!(mail_of(users[3].clone()).await, "New.Address@contoso.com");
    let cleared = Some(json!({"mail": ""}));
    assert_eq!(send(Method::PATCH, user.clone(), cleared).await, 204);
    assert_eq!(mail_of(users[3].clone()).await, Value::Null);
    assert!(env.emu.set_mail(&users[3], Some("again@contoso.com")));
    assert_eq!(mail_of(users[3].clone()).await, "again@contoso.com");
    assert_eq!(send(Method::DELETE, user.clone(), None).await, 204);
    assert_eq!(send(Method::DELETE, user, None).await, 404);
    assert!(!has(&members(&env, &token, &group).await, &users[3]));
}
