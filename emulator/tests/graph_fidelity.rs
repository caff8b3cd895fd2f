//! The Graph emulator where it once answered differently from Graph: each
//! test is one divergence a Graph SDK found, checked on the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use sluice_emulator::scenario::Member;
use sluice_emulator::{EmulatorConfig, Faults, Scenario};

mod common;

use common::{Env, start};

/// A tenant whose first license group holds enabled and disabled users,
/// a nested group (so transitive members differ) and a device.
fn tenant() -> Scenario {
    Scenario::generate(120, 5)
}

fn license_group(scenario: &Scenario) -> &sluice_emulator::scenario::GraphGroup {
    scenario
        .groups
        .iter()
        .find(|g| g.display_name == "License – Office 365 E1")
        .unwrap()
}

async fn get(env: &Env, token: &str, path: &str, eventual: bool) -> reqwest::Response {
    let url = format!("{}{path}", env.var("GRAPH_BASE_URL"));
    let mut request = env.http.get(url).bearer_auth(token);
    if eventual {
        request = request.header("ConsistencyLevel", "eventual");
    }
    request.send().await.unwrap()
}

/// Every item of a collection, following nextLinks.
async fn all(env: &Env, token: &str, path: &str, eventual: bool) -> (Vec<Value>, Value) {
    let first: Value = get(env, token, path, eventual).await.json().await.unwrap();
    let mut items = first["value"].as_array().unwrap().clone();
    let mut next = first["@odata.nextLink"].as_str().map(str::to_string);
    while let Some(url) = next {
        let mut request = env.http.get(&url).bearer_auth(token);
        if eventual {
            request = request.header("ConsistencyLevel", "eventual");
        }
        let page: Value = request.send().await.unwrap().json().await.unwrap();
        items.extend(page["value"].as_array().unwrap().iter().cloned());
        next = page["@odata.nextLink"].as_str().map(str::to_string);
    }
    (items, first)
}

async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["innerError"]["request-id"].is_string(),
        "Graph's envelope: {body}"
    );
    (
        status,
        body["error"]["code"].as_str().unwrap().to_string(),
        body["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn send_mail_reads_property_names_without_regard_to_case() {
    let env = start(EmulatorConfig::default()).await;
    let token = env.graph_token().await;
    let url = env.send_mail_url();
    // As the Graph SDKs send it: the action's parameter names as Graph's
    // metadata spells them, and the body type's enum in lower case.
    let sdk = json!({"Message": {"subject": "From the SDK", "body": {"contentType": "html", "content": "<p>x</p>"},
        "toRecipients": [{"emailAddress": {"address": "a@x.com"}}]}, "SaveToSentItems": false});
    let hand = json!({"message": {"Subject": "By hand", "Body": {"ContentType": "HTML", "Content": "<p>y</p>"},
        "ToRecipients": [{"EmailAddress": {"Address": "b@x.com"}}]}, "saveToSentItems": false});
    for body in [&sdk, &hand] {
        let r = env
            .http
            .post(&url)
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{body}");
    }
    let mails = env.emu.snapshot().mails;
    let got: Vec<(&str, &str, &str)> = mails
        .iter()
        .map(|m| (m.subject.as_str(), m.to[0].as_str(), m.html.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("From the SDK", "a@x.com", "<p>x</p>"),
            ("By hand", "b@x.com", "<p>y</p>")
        ]
    );
}

/// A sendMail body of `size` bytes: a message whose HTML is padded to it.
fn mail_of_size(size: usize) -> String {
    let with = |content: &str| {
        json!({"message": {"subject": "Big", "body": {"contentType": "HTML", "content": content},
            "toRecipients": [{"emailAddress": {"address": "a@x.com"}}]}, "saveToSentItems": false})
        .to_string()
    };
    let body = with(&"x".repeat(size - with("").len()));
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn send_mail_takes_up_to_graphs_4_mb_and_refuses_more_with_413() {
    let env = start(EmulatorConfig::default()).await;
    let token = env.graph_token().await;
    let url = env.send_mail_url();
    let limit = sluice_emulator::graph::SEND_MAIL_MAX_BYTES;
    assert_eq!(limit, 4 * 1024 * 1024);
    let post = |body: String| {
        env.http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Above axum's 2 MB default and up to the limit: accepted.
    let at_limit = post(mail_of_size(limit)).await.unwrap();
    assert_eq!(at_limit.status(), 202);
    assert_eq!(env.emu.snapshot().mails.len(), 1);
    // One byte more, or far more: 413 in Graph's envelope, nothing sent.
    for size in [limit + 1, 3 * limit] {
        let (status, code, message) = error_of(post(mail_of_size(size)).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str(), message.as_str()),
            (
                413,
                "RequestEntityTooLarge",
                "The maximum request length supported is 4MB."
            ),
            "{size} bytes"
        );
    }
    assert_eq!(env.emu.snapshot().mails.len(), 1);
}

#[tokio::test]
async fn member_counts_are_given_for_advanced_queries_only() {
    let scenario = tenant();
    let group = license_group(&scenario);
    let direct = scenario.members(group, false).len();
    let transitive = scenario.members(group, true).len();
    assert!(transitive > direct && direct > 10, "{direct} {transitive}");
    let env = start(EmulatorConfig {
        scenario: scenario.clone(),
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    for (relation, expected) in [("members", direct), ("transitiveMembers", transitive)] {
        let path = format!("/groups/{}/{relation}?$count=true&$top=10", group.id);
        let counted: Value = get(&env, &token, &path, true).await.json().await.unwrap();
        assert_eq!(counted["@odata.count"], json!(expected), "{relation}");
        assert_eq!(counted["value"].as_array().unwrap().len(), 10);
        // The count stays on the following pages, whose links keep $count.
        let next = counted["@odata.nextLink"].as_str().unwrap();
        let page: Value = env
            .http
            .get(next)
            .bearer_auth(&token)
            .header("ConsistencyLevel", "eventual")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["@odata.count"], json!(expected));
        // Without the header Graph ignores $count=true, silently.
        let plain = get(&env, &token, &path, false).await;
        assert_eq!(plain.status(), 200);
        assert!(
            plain
                .json::<Value>()
                .await
                .unwrap()
                .get("@odata.count")
                .is_none()
        );
    }
}

#[tokio::test]
async fn member_filters_are_applied_as_advanced_queries_and_refused_otherwise() {
    let scenario = tenant();
    let group = license_group(&scenario);
    let enabled_users: Vec<&str> = scenario
        .members(group, false)
        .into_iter()
        .filter_map(|m| match m {
            Member::User { id } => scenario.user(id).filter(|u| u.account_enabled),
            _ => None,
        })
        .map(|u| u.id.as_str())
        .collect();
    let disabled = scenario
        .members(group, false)
        .into_iter()
        .filter(|m| matches!(m, Member::User { id } if !scenario.user(id).unwrap().account_enabled))
        .count();
    assert!(
        disabled > 0,
        "the tenant has disabled members to filter out"
    );
    let env = start(EmulatorConfig {
        scenario: scenario.clone(),
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let path = format!(
        "/groups/{}/members?$count=true&$filter=accountEnabled%20eq%20true&$select=id,accountEnabled&$top=25",
        group.id
    );
    let (items, first) = all(&env, &token, &path, true).await;
    let users: Vec<&str> = items
        .iter()
        .filter(|m| m["@odata.type"] == "#microsoft.graph.user")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(users, enabled_users);
    assert!(
        items.iter().all(|m| m["accountEnabled"] == true),
        "{items:?}"
    );
    assert_eq!(first["@odata.count"], json!(items.len()));
    // Without the advanced query parameters Graph refuses the filter.
    for (eventual, query) in [(false, "$count=true&"), (true, ""), (false, "")] {
        let refused = get(
            &env,
            &token,
            &format!(
                "/groups/{}/members?{query}$filter=accountEnabled%20eq%20true",
                group.id
            ),
            eventual,
        )
        .await;
        let (status, code, message) = error_of(refused).await;
        assert_eq!((status, code.as_str()), (400, "Request_UnsupportedQuery"));
        assert!(message.contains("reference property"), "{message}");
    }
    // On /groups, ne is an advanced operator too.
    let ne = get(
        &env,
        &token,
        "/groups?$filter=displayName%20ne%20'x'",
        false,
    )
    .await;
    assert_eq!(error_of(ne).await.1, "Request_UnsupportedQuery");
    let ne = get(
        &env,
        &token,
        "/groups?$count=true&$filter=displayName%20ne%20'All%20Staff'",
        true,
    )
    .await;
    let body: Value = ne.json().await.unwrap();
    assert_eq!(body["@odata.count"], json!(scenario.groups.len() - 1));
}

#[tokio::test]
async fn unknown_select_properties_are_refused_and_real_ones_served() {
    let scenario = tenant();
    let group = license_group(&scenario);
    let env = start(EmulatorConfig {
        scenario: scenario.clone(),
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    for (path, type_name) in [
        (
            format!("/groups/{}/members?$select=id,favouriteColour", group.id),
            "microsoft.graph.directoryObject",
        ),
        (
            "/groups?$select=displayName,favouriteColour".to_string(),
            "microsoft.graph.group",
        ),
        (
            "/users?$select=favouriteColour".to_string(),
            "microsoft.graph.user",
        ),
    ] {
        let (status, code, message) = error_of(get(&env, &token, &path, false).await).await;
        assert_eq!((status, code.as_str()), (400, "Request_BadRequest"));
        assert_eq!(
            message,
            format!("Could not find a property named 'favouriteColour' on type '{type_name}'.")
        );
    }
    // A real property the emulator does not model comes back as null, with
    // Graph's spelling whatever the case asked for.
    let page: Value = get(
        &env,
        &token,
        &format!("/groups/{}/members?$select=ID,department", group.id),
        false,
    )
    .await
    .json()
    .await
    .unwrap();
    let user = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["@odata.type"] == "#microsoft.graph.user")
        .unwrap();
    assert_eq!(
        user,
        &json!({"@odata.type": "#microsoft.graph.user", "id": user["id"], "department": null})
    );
}

#[tokio::test]
async fn unknown_graph_paths_answer_in_graphs_envelope() {
    let scenario = tenant();
    let env = start(EmulatorConfig {
        scenario: scenario.clone(),
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let missing = "00000000-0000-4000-8000-000000000000";
    for path in [
        format!("/groups/{missing}"),
        format!("/users/{missing}"),
        format!("/groups/{missing}/members"),
    ] {
        let (status, code, message) = error_of(get(&env, &token, &path, false).await).await;
        assert_eq!(
            (status, code.as_str()),
            (404, "Request_ResourceNotFound"),
            "{path}"
        );
        assert!(message.contains(missing));
    }
    for (path, segment) in [
        ("/applications".to_string(), "applications"),
        (
            format!("/groups/{}/owners", scenario.groups[0].id),
            "owners",
        ),
        ("/me/messages".to_string(), "me"),
    ] {
        let (status, code, message) = error_of(get(&env, &token, &path, false).await).await;
        assert_eq!((status, code.as_str()), (400, "BadRequest"), "{path}");
        assert_eq!(
            message,
            format!("Resource not found for the segment '{segment}'.")
        );
    }
    let post = env
        .http
        .post(format!("{}/groups", env.var("GRAPH_BASE_URL")))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(post).await.0, 405);
    // The objects that exist are served, by id or user principal name.
    let group: Value = get(
        &env,
        &token,
        &format!("/groups/{}?$select=id,displayName", scenario.groups[0].id),
        false,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(group["displayName"], json!(scenario.groups[0].display_name));
    let upn = &scenario.graph_users[1].user_principal_name;
    let user: Value = get(
        &env,
        &token,
        &format!("/users/{upn}?$select=id,accountEnabled"),
        false,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(user["id"], json!(scenario.graph_users[1].id));
    assert_eq!(
        user["accountEnabled"],
        json!(scenario.graph_users[1].account_enabled)
    );
    // Procore's side keeps Procore's shape for its own unknown paths.
    let procore = env.procore_token().await;
    let r = env
        .procore(&procore, reqwest::Method::GET, "nothing/here", None)
        .await;
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["errors"].is_string());
}

#[tokio::test]
async fn graph_401s_name_the_authority_in_www_authenticate() {
    let env = start(EmulatorConfig {
        faults: Faults {
            token_expires_after_calls: Some(0),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let procore_token = env.procore_token().await;
    let expired = env.graph_token().await;
    for token in [
        None,
        Some("not-a-token"),
        Some(procore_token.as_str()),
        Some(expired.as_str()),
    ] {
        let mut request = env
            .http
            .get(format!("{}/groups", env.var("GRAPH_BASE_URL")));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let r = request.send().await.unwrap();
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.starts_with("Bearer ")
                && challenge.contains("authorization_uri=\"https://login.microsoftonline.com/"),
            "{challenge}"
        );
        let (status, code, _) = error_of(r).await;
        assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationToken"));
    }
}
