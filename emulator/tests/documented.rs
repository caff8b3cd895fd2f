//! The emulators against the vendors' own documented examples, not against
//! our model of them. Each example is a file in `tests/documented/`, copied
//! from the vendor's documentation with its page, repository, path and
//! commit named in `source`. A test asks the emulator what the example
//! asks and checks that the answer has the example's shape: every field the
//! example shows, with the same JSON type, nested the same way; for error
//! bodies exactly the example's fields; the paging links and headers as the
//! example has them. Values are the tenant's own, so they are not compared,
//! except where the vendor fixes them (codes, messages, link relations).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sluice_emulator::{EmulatorConfig, Faults, RetryAfterStyle, Scenario};

mod common;

use common::{Env, start};

/// One documented example: what was asked and what the vendor answered.
struct Example {
    status: Option<u16>,
    headers: serde_json::Map<String, Value>,
    body: Value,
}

fn example(name: &str) -> Example {
    let path = format!(
        "{}/tests/documented/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    for key in ["page", "repository", "path", "commit", "example"] {
        assert!(file["source"][key].is_string(), "{path} names its {key}");
    }
    Example {
        status: file["status"].as_u64().map(|s| s as u16),
        headers: file["headers"].as_object().cloned().unwrap_or_default(),
        body: file["body"].clone(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where `ours` lacks the documented shape `doc`: a field the example shows
/// that ours does not have, or has with another JSON type. Ours may have
/// more fields (examples are "shortened for readability"). A documented
/// list's items must each have the shape of at least one of ours. Graph's
/// string properties are nullable (a security group's `mail` is null), so
/// null stands where the example shows a string.
fn differences(doc: &Value, ours: &Value, at: &str, out: &mut Vec<String>) {
    match (doc, ours) {
        (Value::Object(d), Value::Object(o)) => {
            for (key, dv) in d {
                match o.get(key) {
                    None => out.push(format!("{at}.{key}: missing")),
                    Some(ov) => differences(dv, ov, &format!("{at}.{key}"), out),
                }
            }
        }
        (Value::Array(d), Value::Array(o)) => {
            for (i, item) in d.iter().enumerate() {
                let fits = o.iter().any(|ov| {
                    let mut none = Vec::new();
                    differences(item, ov, "", &mut none);
                    none.is_empty()
                });
                if !fits {
                    out.push(format!("{at}[{i}]: no item of ours has its shape: {item}"));
                }
            }
        }
        (Value::Null, _) | (Value::String(_), Value::Null) => {}
        (d, o) if kind(d) == kind(o) => {}
        (d, o) => out.push(format!(
            "{at}: {} where the example has {}",
            kind(o),
            kind(d)
        )),
    }
}

fn assert_shape(name: &str, doc: &Value, ours: &Value) {
    let mut out = Vec::new();
    differences(doc, ours, "", &mut out);
    assert!(out.is_empty(), "{name}: {out:#?}\nours: {ours:#}");
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// An error body with exactly the example's fields, at each level.
fn assert_same_fields(name: &str, doc: &Value, ours: &Value, levels: &[&[&str]]) {
    for level in levels {
        let pick = |v: &Value| level.iter().fold(v.clone(), |v, k| v[*k].clone());
        assert_eq!(
            keys(&pick(doc)),
            keys(&pick(ours)),
            "{name}: the fields of {level:?}; ours: {ours:#}"
        );
    }
    assert_shape(name, doc, ours);
}

fn content_type(r: &reqwest::Response) -> String {
    r.headers()["content-type"].to_str().unwrap().to_string()
}

fn tenant() -> Scenario {
    Scenario::generate(120, 5)
}

fn license_group_id(scenario: &Scenario) -> String {
    scenario
        .groups
        .iter()
        .find(|g| g.display_name == "License – Office 365 E1")
        .unwrap()
        .id
        .clone()
}

async fn graph_get(env: &Env, token: &str, path: &str) -> reqwest::Response {
    env.graph(token, &format!("{}{path}", env.var("GRAPH_BASE_URL")))
        .await
}

/// A 200 answer checked against the example: status, JSON, shape and the
/// `@odata.context` (Graph's, a constant) where the example shows one.
async fn check_collection(name: &str, r: reqwest::Response) -> Value {
    let doc = example(name);
    assert_eq!(Some(r.status().as_u16()), doc.status, "{name}");
    assert!(content_type(&r).starts_with("application/json"), "{name}");
    let body: Value = r.json().await.unwrap();
    assert_shape(name, &doc.body, &body);
    if let Some(context) = doc.body.get("@odata.context") {
        assert_eq!(&body["@odata.context"], context, "{name}");
    }
    body
}

#[tokio::test]
async fn graph_lists_groups_members_and_transitive_members_as_documented() {
    let scenario = tenant();
    let group = license_group_id(&scenario);
    let env = start(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    check_collection(
        "graph_list_groups",
        graph_get(&env, &token, "/groups").await,
    )
    .await;
    let members = graph_get(&env, &token, &format!("/groups/{group}/members")).await;
    check_collection("graph_list_members", members).await;
    let transitive = graph_get(&env, &token, &format!("/groups/{group}/transitiveMembers")).await;
    check_collection("graph_list_transitive_members", transitive).await;
}

/// A delta round read to its end: the first page and the last.
async fn delta_round(env: &Env, token: &str, first: &str) -> (Value, Value) {
    let mut page: Value = env.graph(token, first).await.json().await.unwrap();
    let first_page = page.clone();
    while let Some(next) = page["@odata.nextLink"].as_str().map(str::to_string) {
        assert!(page.get("@odata.deltaLink").is_none());
        assert!(
            next.contains("/groups/delta?$skiptoken="),
            "a nextLink as documented: {next}"
        );
        page = env.graph(token, &next).await.json().await.unwrap();
    }
    (first_page, page)
}

#[tokio::test]
async fn graph_group_delta_pages_and_changes_are_as_documented() {
    // A group larger than one page, so the first page has a nextLink.
    let scenario = Scenario::generate(3000, 9);
    let group = license_group_id(&scenario);
    let env = start(EmulatorConfig {
        scenario: scenario.clone(),
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let url = format!(
        "{}/groups/delta?$select=displayName,description,members",
        env.var("GRAPH_BASE_URL")
    );
    let (first, last) = delta_round(&env, &token, &url).await;
    let initial = example("graph_groups_delta_initial");
    assert_shape("graph_groups_delta_initial", &initial.body, &first);
    let final_page = example("graph_groups_delta_final");
    let mut without_items = final_page.body.clone();
    without_items["value"] = json!([]);
    assert_shape("graph_groups_delta_final", &without_items, &last);
    assert!(last.get("@odata.nextLink").is_none());
    let delta_link = last["@odata.deltaLink"].as_str().unwrap().to_string();
    assert!(
        delta_link.contains("/groups/delta?$deltatoken="),
        "{delta_link}"
    );
    // One member leaves the group and another joins it.
    let members = &scenario.group(&group).unwrap().members;
    let leaver = members[0].id().to_string();
    let joiner = scenario
        .graph_users
        .iter()
        .find(|u| !members.iter().any(|m| m.id() == u.id))
        .unwrap()
        .id
        .clone();
    assert!(env.emu.remove_member(&group, &leaver));
    assert!(env.emu.add_member(&group, &joiner));
    let (changes, end) = delta_round(&env, &token, &delta_link).await;
    assert_eq!(changes, end, "the changes fit on one page");
    let documented = example("graph_groups_delta_changes");
    assert_shape("graph_groups_delta_changes", &documented.body, &changes);
}

#[tokio::test]
async fn graph_user_delta_pages_are_as_documented() {
    let env = start(EmulatorConfig {
        scenario: Scenario::generate(3000, 9),
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let url = format!("{}/users/delta", env.var("GRAPH_BASE_URL"));
    let first: Value = env.graph(&token, &url).await.json().await.unwrap();
    let mut doc = example("graph_users_delta").body;
    // The tenant's users have no phone numbers: an empty list of them.
    doc["value"][0]["businessPhones"] = json!([]);
    assert_shape("graph_users_delta", &doc, &first);
    let next = first["@odata.nextLink"].as_str().unwrap();
    assert!(next.contains("/users/delta?$skiptoken="), "{next}");
}

#[tokio::test]
async fn graph_throttling_answers_with_the_documented_body_and_retry_after() {
    let env = start(EmulatorConfig {
        scenario: tenant(),
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    env.emu.set_faults(Faults {
        rate_429_every: Some(1),
        retry_after: RetryAfterStyle::Fractional,
        retry_after_secs: 2,
        ..Default::default()
    });
    let r = graph_get(&env, &token, "/groups").await;
    let doc = example("graph_throttled");
    assert_eq!(Some(r.status().as_u16()), doc.status);
    assert!(content_type(&r).starts_with("application/json"));
    let retry_after = r.headers()["retry-after"].to_str().unwrap().to_string();
    assert!(
        retry_after.parse::<f64>().is_ok() && doc.headers["Retry-After"].is_string(),
        "seconds, a fraction as in the example: {retry_after}"
    );
    let body: Value = r.json().await.unwrap();
    assert_same_fields(
        "graph_throttled",
        &doc.body,
        &body,
        &[&[], &["error"], &["error", "innerError"]],
    );
    for field in [
        &["code"][..],
        &["message"],
        &["innerError", "code"],
        &["innerError", "status"],
    ] {
        let pick = |v: &Value| field.iter().fold(v["error"].clone(), |v, k| v[*k].clone());
        assert_eq!(pick(&body), pick(&doc.body), "{field:?}");
    }
}

#[tokio::test]
async fn graph_refuses_an_advanced_filter_without_the_advanced_parameters_as_documented() {
    let env = start(EmulatorConfig {
        scenario: tenant(),
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let r = graph_get(&env, &token, "/users?$filter=endsWith(mail,'@outlook.com')").await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let doc = example("graph_advanced_filter_without_eventual");
    assert_same_fields(
        "graph_advanced_filter_without_eventual",
        &doc.body,
        &body,
        &[&[], &["error"], &["error", "innerError"]],
    );
    assert_eq!(body["error"]["code"], doc.body["error"]["code"]);
}

#[tokio::test]
async fn identity_platform_tokens_and_token_errors_are_as_documented() {
    let env = start(EmulatorConfig::default()).await;
    let ask = |scope: &'static str| {
        env.http.post(env.var("GRAPH_TOKEN_URL")).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", env.var("GRAPH_CLIENT_ID")),
            ("client_secret", env.var("GRAPH_CLIENT_SECRET")),
            ("scope", scope),
        ])
    };
    let r = ask("https://graph.microsoft.com/.default")
        .send()
        .await
        .unwrap();
    let doc = example("identity_token");
    assert_eq!(Some(r.status().as_u16()), doc.status);
    let body: Value = r.json().await.unwrap();
    assert_shape("identity_token", &doc.body, &body);
    assert_eq!(body["token_type"], doc.body["token_type"]);
    let r = ask("https://foo.microsoft.com/.default")
        .send()
        .await
        .unwrap();
    let doc = example("identity_token_error");
    assert_eq!(Some(r.status().as_u16()), doc.status);
    let body: Value = r.json().await.unwrap();
    assert_same_fields("identity_token_error", &doc.body, &body, &[&[]]);
    assert_eq!(body["error"], doc.body["error"]);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS"),
        "{body}"
    );
}

/// The relation types of a `Link` header, in order.
fn relations(link: &str) -> Vec<String> {
    link.split(',')
        .filter_map(|value| value.split("rel=").nth(1))
        .map(|rel| rel.trim().trim_matches('"').to_string())
        .collect()
}

#[tokio::test]
async fn procore_pages_carry_the_documented_headers_and_links() {
    let env = start(EmulatorConfig {
        scenario: tenant(),
        ..Default::default()
    })
    .await;
    let token = env.procore_token().await;
    let doc = example("procore_pagination");
    let users = format!("companies/{}/users", env.var("PROCORE_COMPANY_ID"));
    let page = |n: u32| {
        let (env, token, users) = (&env, &token, &users);
        async move {
            env.procore(
                token,
                reqwest::Method::GET,
                &format!("{users}?per_page=5&page={n}"),
                None,
            )
            .await
        }
    };
    let third = page(3).await;
    assert_eq!(Some(third.status().as_u16()), doc.status);
    for (name, value) in &doc.headers {
        let ours = third.headers()[name.as_str()].to_str().unwrap().to_string();
        match name.as_str() {
            "Content-Type" => assert_eq!(&ours, value),
            "Per-Page" => assert_eq!(&ours, value, "what was asked"),
            "Total" => assert!(ours.parse::<u64>().unwrap() > 15, "{ours}"),
            "Link" => {
                let documented = relations(value.as_str().unwrap());
                assert_eq!(relations(&ours), documented, "{ours}");
                assert!(ours.contains("page=4&per_page=5>; rel=\"next\""), "{ours}");
            }
            other => panic!("a header the test does not know: {other}"),
        }
    }
    // The guide: page 1 links only next and last, page 2 first, next and last.
    let first = page(1).await.headers()["link"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(relations(&first), ["last", "next"], "{first}");
    let second = page(2).await.headers()["link"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(relations(&second), ["first", "last", "next"], "{second}");
}

#[tokio::test]
async fn procore_rate_limiting_answers_with_the_documented_message_and_headers() {
    let env = start(EmulatorConfig {
        scenario: tenant(),
        ..Default::default()
    })
    .await;
    let token = env.procore_token().await;
    env.emu.set_faults(Faults {
        rate_429_every: Some(1),
        ..Default::default()
    });
    let users = format!("companies/{}/users", env.var("PROCORE_COMPANY_ID"));
    let r = env
        .procore(&token, reqwest::Method::GET, &users, None)
        .await;
    let doc = example("procore_rate_limited");
    assert_eq!(Some(r.status().as_u16()), doc.status);
    for name in doc.headers.keys() {
        let value = r.headers()[name.as_str()].to_str().unwrap();
        assert!(value.parse::<u64>().is_ok(), "{name}: {value}");
    }
    assert_eq!(r.text().await.unwrap(), doc.body.as_str().unwrap());
}
