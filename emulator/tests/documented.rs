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

/// A documented file, checked to name its source.
fn documented(name: &str) -> Value {
    let path = format!(
        "{}/tests/documented/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    for key in ["page", "repository", "path", "commit", "example"] {
        assert!(file["source"][key].is_string(), "{path} names its {key}");
    }
    file
}

fn example(name: &str) -> Example {
    let file = documented(name);
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
    // Nor a mobile phone, an office or a language, which delta leaves out:
    // "If the property has never been set before it will not be included
    // in the response at all" (the same page).
    let never_set = ["mobilePhone", "officeLocation", "preferredLanguage"];
    for property in never_set {
        doc["value"][0].as_object_mut().unwrap().remove(property);
    }
    assert_shape("graph_users_delta", &doc, &first);
    assert!(
        first["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| never_set.iter().all(|p| u.get(p).is_none())),
        "never-set properties are left out, not null"
    );
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

/// Procore's "Create company user": the `user` fields and the 201 answer's
/// fields as its reference tables them (no example body is documented),
/// and the causes its error reference gives for each refusal status.
struct CreateUser {
    fields: Vec<Value>,
    answer: Vec<Value>,
    refusals: Value,
}

fn create_user_tables() -> CreateUser {
    let file = documented("procore_create_company_user");
    for key in ["page", "repository", "path", "commit", "example"] {
        assert!(
            file["refusals"]["source"][key].is_string(),
            "refusals: {key}"
        );
    }
    assert_eq!(file["request_body"]["name"], "user");
    assert_eq!(file["request_body"]["required"], true);
    CreateUser {
        fields: file["request_body"]["fields"].as_array().unwrap().clone(),
        answer: file["response_fields"].as_array().unwrap().clone(),
        refusals: file["refusals"].clone(),
    }
}

/// Whether `value` is of the documented type (`string`, `integer`, …).
fn of_type(documented: &str, value: &Value) -> bool {
    match documented {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        other => panic!("a type the table does not use: {other}"),
    }
}

/// A value of the documented type for field number `i`.
fn value_of(field: &Value, i: usize) -> Value {
    match (
        field["name"].as_str().unwrap(),
        field["type"].as_str().unwrap(),
    ) {
        ("email_address", _) => json!("every.field@example.com"),
        (_, "string") => json!(format!("value {i}")),
        (_, "integer") => json!(i + 1),
        (_, "boolean") => json!(true),
        (name, other) => panic!("{name}: {other}"),
    }
}

/// A value of another type than the documented one.
fn wrong_value(field: &Value) -> Value {
    match field["type"].as_str().unwrap() {
        "string" => json!(7),
        "integer" => json!("7"),
        "boolean" => json!("true"),
        other => panic!("{other}"),
    }
}

async fn create(env: &Env, token: &str, body: Value) -> reqwest::Response {
    let users = format!("companies/{}/users", env.var("PROCORE_COMPANY_ID"));
    env.procore(token, reqwest::Method::POST, &users, Some(body))
        .await
}

#[tokio::test]
async fn procore_create_company_user_takes_every_documented_field_and_answers_in_the_documented_types()
 {
    let table = create_user_tables();
    // The emulator checks bodies against its own copy of the table: the same
    // fields, in the same order, with the same types and required fields.
    let ours: Vec<(String, String, bool)> = sluice_emulator::procore::user_fields::FIELDS
        .iter()
        .map(|(name, kind)| {
            let required = sluice_emulator::procore::user_fields::REQUIRED.contains(name);
            (
                name.to_string(),
                format!("{kind:?}").to_lowercase(),
                required,
            )
        })
        .collect();
    let documented: Vec<(String, String, bool)> = table
        .fields
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap().to_string();
            (
                name,
                f["type"].as_str().unwrap().to_string(),
                f["required"] == true,
            )
        })
        .collect();
    assert_eq!(ours, documented);

    let env = start(EmulatorConfig {
        scenario: tenant(),
        ..Default::default()
    })
    .await;
    let token = env.procore_token().await;
    let user: serde_json::Map<String, Value> = table
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| (f["name"].as_str().unwrap().to_string(), value_of(f, i)))
        .collect();
    let r = create(&env, &token, json!({ "user": user })).await;
    assert_eq!(r.status(), 201);
    assert!(content_type(&r).starts_with("application/json"));
    let answer: Value = r.json().await.unwrap();
    // Every field of the answer that the table lists has the listed type
    // (or is null: the emulator does not model addresses, phones, vendors).
    let listed: BTreeSet<&str> = table
        .answer
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for f in &table.answer {
        let name = f["name"].as_str().unwrap();
        if let Some(v) = answer.get(name).filter(|v| !v.is_null()) {
            assert!(of_type(f["type"].as_str().unwrap(), v), "{name}: {v}");
        }
    }
    // What the components read is there, with what was sent.
    for name in ["id", "name", "created_at", "updated_at"] {
        assert!(!answer[name].is_null(), "{name}: {answer:#}");
    }
    for name in [
        "first_name",
        "last_name",
        "email_address",
        "job_title",
        "is_active",
        "is_employee",
    ] {
        assert_eq!(answer[name], user[name], "{name}");
    }
    // Beyond the table, only the login the emulator's user lists carry.
    let beyond: Vec<&str> = keys(&answer)
        .into_iter()
        .filter(|k| !listed.contains(k))
        .collect();
    assert_eq!(beyond, ["login"], "{answer:#}");
}

#[tokio::test]
async fn procore_create_company_user_refuses_what_procore_documents_as_refused() {
    let table = create_user_tables();
    let env = start(EmulatorConfig {
        scenario: tenant(),
        ..Default::default()
    })
    .await;
    let token = env.procore_token().await;
    let bad_request = table.refusals["400"].as_str().unwrap();
    assert!(
        bad_request.contains("missing required fields")
            && bad_request.contains("invalid parameter values"),
        "{bad_request}"
    );
    // Each refusal: the status, and a body with `errors` (Procore: a 4xx
    // body "often contains a `message` or `errors` field").
    let refused = |r: reqwest::Response, status: u16, field: Option<&'static str>| async move {
        assert_eq!(r.status().as_u16(), status);
        let body: Value = r.json().await.unwrap();
        assert!(body.get("errors").is_some(), "{body}");
        if let Some(field) = field {
            assert!(body["errors"][field].is_array(), "{field}: {body}");
        }
    };
    let valid = json!({"last_name": "Doe", "email_address": "jane.doe@example.com"});
    // The `user` object is required.
    refused(create(&env, &token, valid.clone()).await, 400, None).await;
    // So are its last name and email address.
    for missing in ["last_name", "email_address"] {
        let mut user = valid.clone();
        user.as_object_mut().unwrap().remove(missing);
        let r = create(&env, &token, json!({ "user": user })).await;
        refused(r, 400, Some(missing)).await;
    }
    // Every documented field at another type is an invalid value.
    for f in &table.fields {
        let name = f["name"].as_str().unwrap();
        let mut user = valid.clone();
        user[name] = wrong_value(f);
        let r = create(&env, &token, json!({ "user": user })).await;
        assert_eq!(r.status(), 400, "{name}");
        let body: Value = r.json().await.unwrap();
        assert!(body["errors"][name].is_array(), "{name}: {body}");
    }
    assert!(
        env.emu.snapshot().created_users().is_empty(),
        "nothing refused was created"
    );
    // No token, or one Procore did not issue: 401.
    let users = format!(
        "{}/rest/v1.0/companies/{}/users",
        env.var("PROCORE_BASE_URL"),
        env.var("PROCORE_COMPANY_ID")
    );
    let send = |token: Option<&str>| {
        let mut request = env
            .http
            .post(&users)
            .header("Procore-Company-Id", env.var("PROCORE_COMPANY_ID"))
            .json(&json!({ "user": valid }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    refused(send(None).await.unwrap(), 401, None).await;
    refused(send(Some("not-a-token")).await.unwrap(), 401, None).await;
    // A company that is not there: 404.
    let r = env
        .procore(
            &token,
            reqwest::Method::POST,
            "companies/999999999/users",
            Some(json!({ "user": valid })),
        )
        .await;
    refused(r, 404, None).await;
    // Procore's reference is silent on fields it does not list: a body with
    // one is taken, and the field is not used (a new user's login is its
    // email address).
    let mut user = valid.clone();
    user["login"] = json!("someone-else");
    user["favourite_colour"] = json!("green");
    let r = create(&env, &token, json!({ "user": user })).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["login"], "jane.doe@example.com");
}
