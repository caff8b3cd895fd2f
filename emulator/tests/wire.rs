//! The emulators against the vendors' documented wire behaviour, so they
//! can be trusted as the ground truth of the flow tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use sluice_emulator::{
    EmulatorConfig, FaultKind, Faults, PagingHeaders, RetryAfterStyle, Scenario, TargetedFault,
};

mod common;

use common::{Env, company, start};

#[tokio::test]
async fn token_endpoints_answer_with_the_real_shapes() {
    let env = start(EmulatorConfig::default()).await;
    env.graph_token().await;
    let bad = env
        .http
        .post(env.var("GRAPH_TOKEN_URL"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", env.var("GRAPH_CLIENT_ID")),
            ("client_secret", "nope"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215")
    );
    assert_eq!(body["error_codes"], json!([7000215]));
    // Procore accepts JSON, form and multipart bodies.
    env.procore_token().await;
    let form = env
        .http
        .post(env.var("PROCORE_TOKEN_URL"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", env.var("PROCORE_CLIENT_ID")),
            ("client_secret", env.var("PROCORE_CLIENT_SECRET")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let boundary = "XyZ123";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nclient_credentials\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"client_secret\"\r\n\r\n{}\r\n--{boundary}--\r\n",
        env.var("PROCORE_CLIENT_ID"),
        env.var("PROCORE_CLIENT_SECRET")
    );
    let mp = env
        .http
        .post(env.var("PROCORE_TOKEN_URL"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(multipart)
        .send()
        .await
        .unwrap();
    assert_eq!(mp.status(), 200);
    let bad = env
        .http
        .post(env.var("PROCORE_TOKEN_URL"))
        .json(&json!({"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    // A token request's body holds a client secret: not logged, even as
    // JSON (which the log keeps of other requests).
    let tokens: Vec<_> = env
        .emu
        .snapshot()
        .requests
        .into_iter()
        .filter(|r| r.path.ends_with("/token"))
        .collect();
    assert!(tokens.len() >= 5, "{tokens:?}");
    assert!(tokens.iter().all(|r| r.body.is_none()), "{tokens:?}");
}

/// A token lifetime past the clock's range is a token that never ends,
/// not a panic in the token endpoint.
#[tokio::test]
async fn a_token_lifetime_past_the_clock_never_ends() {
    let env = start(EmulatorConfig {
        faults: Faults {
            token_lifetime_secs: Some(u64::MAX),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let token = env.procore_token().await;
    let c = company(&env);
    let users = env
        .http
        .get(format!(
            "{}/rest/v1.0/companies/{c}/users",
            env.var("PROCORE_BASE_URL")
        ))
        .bearer_auth(&token)
        .header("Procore-Company-Id", &c)
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), 200);
}

#[tokio::test]
async fn graph_pages_with_absolute_next_links_and_checks_top() {
    let env = start(EmulatorConfig {
        scenario: Scenario::generate(600, 1),
        faults: Faults {
            empty_graph_pages: true,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let groups: Value = env
        .graph(&token, &format!("{}/groups", env.var("GRAPH_BASE_URL")))
        .await
        .json()
        .await
        .unwrap();
    // The injected empty first page still carries a nextLink.
    assert_eq!(groups["value"], json!([]));
    let next = groups["@odata.nextLink"].as_str().unwrap();
    assert!(next.starts_with("http://127.0.0.1:"));
    let groups: Value = env.graph(&token, next).await.json().await.unwrap();
    let license = groups["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["displayName"] == "License – Microsoft 365 E3")
        .unwrap()
        .clone();
    let id = license["id"].as_str().unwrap();
    // Default page size 100, every page followed verbatim, @odata.type on each.
    let mut url = format!("{}/groups/{id}/members", env.var("GRAPH_BASE_URL"));
    let (mut pages, mut total) = (0, 0);
    loop {
        let page: Value = env.graph(&token, &url).await.json().await.unwrap();
        let values = page["value"].as_array().unwrap();
        assert!(values.len() <= 100);
        for v in values {
            assert!(
                v["@odata.type"]
                    .as_str()
                    .unwrap()
                    .starts_with("#microsoft.graph.")
            );
            if v["@odata.type"] == "#microsoft.graph.user" {
                assert!(
                    v.get("accountEnabled").is_none(),
                    "accountEnabled only when selected"
                );
                assert!(v.get("userPrincipalName").is_some());
            }
        }
        total += values.len();
        pages += 1;
        match page["@odata.nextLink"].as_str() {
            Some(n) => url = n.to_string(),
            None => break,
        }
    }
    assert!(pages >= 3 && total > 150, "{pages} pages, {total} members");
    let empty: Value = env
        .graph(
            &token,
            &format!(
                "{}/groups/{id}/members?$select=id,mail,accountEnabled&$top=999",
                env.var("GRAPH_BASE_URL")
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    let selected: Value = env
        .graph(&token, empty["@odata.nextLink"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let user = selected["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["@odata.type"] == "#microsoft.graph.user")
        .unwrap();
    assert!(user.get("accountEnabled").is_some() && user.get("displayName").is_none());
    for top in ["0", "1000"] {
        let r = env
            .graph(
                &token,
                &format!(
                    "{}/groups/{id}/members?$top={top}",
                    env.var("GRAPH_BASE_URL")
                ),
            )
            .await;
        assert_eq!(r.status(), 400);
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"]["code"].is_string() && e["error"]["innerError"]["request-id"].is_string()
        );
    }
    let missing = env
        .graph(
            &token,
            &format!("{}/groups/nope/members", env.var("GRAPH_BASE_URL")),
        )
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "Request_ResourceNotFound"
    );
}

#[tokio::test]
async fn graph_filters_by_prefix_with_en_dash_and_doubled_quotes() {
    let env = start(EmulatorConfig::default()).await;
    let token = env.graph_token().await;
    let url = reqwest::Url::parse_with_params(
        &format!("{}/groups", env.var("GRAPH_BASE_URL")),
        &[("$filter", "startswith(displayName,'License – Microsoft') or startswith(displayName,'O''Brien')"), ("$select", "id,displayName")],
    )
    .unwrap();
    let body: Value = env.graph(&token, url.as_str()).await.json().await.unwrap();
    let names: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "License – Microsoft 365 E3",
            "License – Microsoft 365 E5",
            "license – microsoft old"
        ],
        "startswith ignores case, as the directory's does; the hyphen decoy is not matched"
    );
    // Case-insensitive both ways: a lower-case prefix finds the real groups.
    let url = reqwest::Url::parse_with_params(
        &format!("{}/groups", env.var("GRAPH_BASE_URL")),
        &[("$filter", "startswith(displayName,'LICENSE – OFFICE')")],
    )
    .unwrap();
    let body: Value = env.graph(&token, url.as_str()).await.json().await.unwrap();
    assert_eq!(body["value"][0]["displayName"], "License – Office 365 E1");
    // Graph's directory compares with eq and startswith, not gt.
    let bad = env
        .graph(
            &token,
            &format!(
                "{}/groups?$filter=displayName%20gt%20'x'",
                env.var("GRAPH_BASE_URL")
            ),
        )
        .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["code"],
        "Request_UnsupportedQuery"
    );
    // Without a token, the Graph error envelope.
    let anon = env
        .http
        .get(format!("{}/groups", env.var("GRAPH_BASE_URL")))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    assert_eq!(
        anon.json::<Value>().await.unwrap()["error"]["code"],
        "InvalidAuthenticationToken"
    );
}

#[tokio::test]
async fn transitive_members_flatten_nested_groups() {
    let scenario = Scenario::generate(200, 11);
    let env = start(EmulatorConfig {
        scenario: scenario.clone(),
        ..Default::default()
    })
    .await;
    let token = env.graph_token().await;
    let office = scenario
        .groups
        .iter()
        .find(|g| g.display_name == "License – Office 365 E1")
        .unwrap();
    let count = |v: &Value| {
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["@odata.type"] == "#microsoft.graph.user")
            .count()
    };
    let direct: Value = env
        .graph(
            &token,
            &format!(
                "{}/groups/{}/members?$top=999",
                env.var("GRAPH_BASE_URL"),
                office.id
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    let all: Value = env
        .graph(
            &token,
            &format!(
                "{}/groups/{}/transitiveMembers?$top=999",
                env.var("GRAPH_BASE_URL"),
                office.id
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(count(&all) > count(&direct));
    assert!(
        direct["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["@odata.type"] == "#microsoft.graph.group")
    );
}

#[tokio::test]
async fn send_mail_is_accepted_with_an_empty_body_and_recorded() {
    let env = start(EmulatorConfig::default()).await;
    let token = env.graph_token().await;
    let url = env.send_mail_url();
    let mail = json!({"message": {"subject": "S", "body": {"contentType": "HTML", "content": "<p>x</p>"}, "toRecipients": [{"emailAddress": {"address": "a@x.com"}}]}, "saveToSentItems": false});
    let r = env
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&mail)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(env.emu.snapshot().mails[0].to, vec!["a@x.com"]);
    let unknown = env
        .http
        .post(format!(
            "{}/users/nobody@x.com/sendMail",
            env.var("GRAPH_BASE_URL")
        ))
        .bearer_auth(&token)
        .json(&mail)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let malformed = env
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"subject": "flat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
}

#[tokio::test]
async fn procore_lists_page_with_total_per_page_and_link() {
    let env = start(EmulatorConfig {
        scenario: Scenario::generate(500, 2),
        ..Default::default()
    })
    .await;
    let token = env.procore_token().await;
    let c = company(&env);
    let r = env
        .procore(
            &token,
            reqwest::Method::GET,
            &format!("companies/{c}/users?page=2&per_page=50"),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let total: usize = r.headers()["total"].to_str().unwrap().parse().unwrap();
    assert_eq!(r.headers()["per-page"], "50");
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert!(
        link.contains("rel=\"next\"")
            && link.contains("rel=\"first\"")
            && link.contains("rel=\"last\"")
            && link.contains("page=3"),
        "{link}"
    );
    // Procore's guide: page 2 has first, next and last, no prev.
    assert!(!link.contains("rel=\"prev\""), "{link}");
    for h in [
        "x-rate-limit-limit",
        "x-rate-limit-remaining",
        "x-rate-limit-reset",
    ] {
        assert!(r.headers().contains_key(h), "{h}");
    }
    let page: Value = r.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().len(), 50, "a bare array");
    assert!(
        page.as_array()
            .unwrap()
            .iter()
            .all(|u| u["is_active"] == true),
        "the active list holds active users only"
    );
    let inactive: Value = env
        .procore_json(&token, &format!("companies/{c}/users/inactive"))
        .await;
    assert!(
        !inactive.as_array().unwrap().is_empty()
            && inactive
                .as_array()
                .unwrap()
                .iter()
                .all(|u| u["is_active"] == false)
    );
    let last_page = total.div_ceil(50);
    let r = env
        .procore(
            &token,
            reqwest::Method::GET,
            &format!("companies/{c}/users?page={last_page}&per_page=50"),
            None,
        )
        .await;
    assert!(
        !r.headers()["link"]
            .to_str()
            .unwrap()
            .contains("rel=\"next\"")
    );
    // filters[search] is a case-insensitive partial match.
    let r = env
        .procore(
            &token,
            reqwest::Method::GET,
            &format!("companies/{c}/users?filters%5Bsearch%5D=BUILDRIGHT"),
            None,
        )
        .await;
    let found: Value = r.json().await.unwrap();
    assert!(!found.as_array().unwrap().is_empty());
    assert!(
        found
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["email_address"].as_str().unwrap().contains("buildright"))
    );
    // The inactive list documents paging and sort only: a search there is
    // ignored, and the whole list comes back.
    let all_inactive: Value = env
        .procore_json(&token, &format!("companies/{c}/users/inactive"))
        .await;
    let searched: Value = env
        .procore_json(
            &token,
            &format!("companies/{c}/users/inactive?filters%5Bsearch%5D=no-such-person"),
        )
        .await;
    assert_eq!(searched, all_inactive);
    // The company header is required even though the path names the company.
    let r = env
        .http
        .get(format!(
            "{}/rest/v1.0/companies/{c}/users",
            env.var("PROCORE_BASE_URL")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(r.status() == 400 || r.status() == 403);
}

#[tokio::test]
async fn procore_create_wants_a_nested_body_and_refuses_duplicates() {
    let scenario = Scenario::generate(50, 3);
    let inactive = scenario
        .procore_users
        .iter()
        .find(|u| !u.is_active)
        .unwrap()
        .clone();
    let env = start(EmulatorConfig {
        scenario,
        conflict_status: 409,
        ..Default::default()
    })
    .await;
    let token = env.procore_token().await;
    let c = company(&env);
    let users_path = format!("companies/{c}/users");
    let post = |body: Value| env.procore(&token, reqwest::Method::POST, &users_path, Some(body));
    let flat = post(json!({"last_name": "L", "email_address": "new@x.com"})).await;
    assert_eq!(flat.status(), 400);
    assert!(
        flat.json::<Value>().await.unwrap()["errors"]
            .as_str()
            .unwrap()
            .contains("user")
    );
    // Procore lists a missing required field as a 400 Bad Request.
    let incomplete = post(json!({"user": {"first_name": "F"}})).await;
    assert_eq!(incomplete.status(), 400);
    let e: Value = incomplete.json().await.unwrap();
    assert!(e["errors"]["last_name"].is_array() && e["errors"]["email_address"].is_array());
    let created = post(json!({"user": {"last_name": "L", "email_address": "New@X.com"}})).await;
    assert_eq!(created.status(), 201);
    let user: Value = created.json().await.unwrap();
    assert_eq!(user["login"], "New@X.com", "login defaults to the email");
    let dup = post(json!({"user": {"last_name": "L", "email_address": "new@x.COM"}})).await;
    assert_eq!(dup.status(), 409);
    assert!(
        dup.json::<Value>().await.unwrap()["errors"]["login"][0]
            .as_str()
            .unwrap()
            .contains("taken")
    );
    let dup_inactive = post(
        json!({"user": {"last_name": "L", "email_address": inactive.email_address.to_uppercase()}}),
    )
    .await;
    assert_eq!(
        dup_inactive.status(),
        409,
        "an inactive user's login is taken too"
    );
    // Deactivation is a PATCH; there is no DELETE.
    let id = user["id"].as_u64().unwrap();
    let patched = env
        .procore(
            &token,
            reqwest::Method::PATCH,
            &format!("companies/{c}/users/{id}"),
            Some(json!({"user": {"is_active": false}})),
        )
        .await;
    assert_eq!(patched.json::<Value>().await.unwrap()["is_active"], false);
    let delete = env
        .procore(
            &token,
            reqwest::Method::DELETE,
            &format!("companies/{c}/users/{id}"),
            None,
        )
        .await;
    assert!(delete.status() == 405 || delete.status() == 404);
    // Project membership with a permission template.
    let add = env
        .procore(
            &token,
            reqwest::Method::POST,
            &format!("projects/1001/users/{id}/actions/add"),
            Some(json!({"user": {"permission_template_id": 77}})),
        )
        .await;
    assert!(add.status().is_success());
    let members: Value = env.procore_json(&token, "projects/1001/users").await;
    assert_eq!(members[0]["id"], json!(id));
    // Procore documents the template as an integer: anything else is
    // refused, never dropped (a numeric string is taken, as Rails does).
    for (template, status) in [
        (json!("tpl-a"), 400),
        (json!(true), 400),
        (json!(77.5), 400),
        (json!("77"), 201),
    ] {
        let r = env
            .procore(
                &token,
                reqwest::Method::POST,
                &format!("projects/1001/users/{id}/actions/add"),
                Some(json!({"user": {"permission_template_id": template}})),
            )
            .await;
        assert_eq!(r.status(), status, "{template}");
    }
    let nowhere = env
        .procore(
            &token,
            reqwest::Method::POST,
            &format!("projects/9/users/{id}/actions/add"),
            None,
        )
        .await;
    assert_eq!(nowhere.status(), 404);
}

/// The first 429 among up to `tries` reads of the company's users.
async fn first_procore_429(env: &Env, tries: usize) -> reqwest::Response {
    let token = env.procore_token().await;
    let c = company(env);
    for _ in 0..tries {
        let r = env
            .procore(
                &token,
                reqwest::Method::GET,
                &format!("companies/{c}/users"),
                None,
            )
            .await;
        if r.status() == 429 {
            return r;
        }
    }
    panic!("no 429 past the budget in {tries} requests");
}

#[tokio::test]
async fn procore_budget_is_enforced_with_plain_text_429s() {
    let env = start(EmulatorConfig {
        procore_rate_limit: Some(5),
        ..Default::default()
    })
    .await;
    // Twelve requests: even across a minute boundary one window sees more than five.
    let r = first_procore_429(&env, 12).await;
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    assert_eq!(r.headers()["x-rate-limit-remaining"], "0");
    // Procore's rate-limiting guide gives this sentence for every 429.
    assert!(
        r.text()
            .await
            .unwrap()
            .starts_with("You have surpassed the max number of requests for an hour.")
    );
}

/// Procore's spike limit, beside its long one: the headers report the spike
/// window (fewer remain in it), whose reset is within its 10 seconds, and a
/// request past it is refused though the long budget has plenty left.
#[tokio::test]
async fn procore_spike_limit_is_reported_and_enforced_beside_the_long_one() {
    let env = start(EmulatorConfig {
        procore_spike_limit: Some(2),
        ..Default::default()
    })
    .await;
    let token = env.procore_token().await;
    let users = format!("companies/{}/users", company(&env));
    let now = chrono::Utc::now().timestamp() as u64;
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(
            env.procore(&token, reqwest::Method::GET, &users, None)
                .await,
        );
    }
    let header = |r: &reqwest::Response, name: &str| -> u64 {
        r.headers()[name].to_str().unwrap().parse().unwrap()
    };
    assert_eq!(answers[0].status(), 200);
    assert_eq!(header(&answers[0], "x-rate-limit-limit"), 2);
    assert_eq!(header(&answers[0], "x-rate-limit-remaining"), 1);
    let reset = header(&answers[0], "x-rate-limit-reset");
    assert!(
        (now + 10..=now + 12).contains(&reset),
        "{reset} against {now}"
    );
    assert_eq!(answers[1].status(), 200);
    assert_eq!(header(&answers[1], "x-rate-limit-remaining"), 0);
    assert_eq!(answers[2].status(), 429);
    assert_eq!(header(&answers[2], "x-rate-limit-limit"), 2);
    assert_eq!(header(&answers[2], "x-rate-limit-reset"), reset);
}

/// Procore's rate-limiting guide names no `Retry-After`: a client is to read
/// `X-Rate-Limit-Reset`. With the `absent` style its 429 carries only that.
#[tokio::test]
async fn a_procore_429_in_the_absent_style_says_when_only_by_its_reset() {
    let env = start(EmulatorConfig {
        procore_rate_limit: Some(1),
        faults: Faults {
            retry_after: RetryAfterStyle::Absent,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let r = first_procore_429(&env, 3).await;
    assert!(!r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["x-rate-limit-remaining"], "0");
    assert_rate_limit_headers(&r, "a 429 without Retry-After");
}

#[tokio::test]
async fn faults_happen_at_their_ordinals_and_writes_are_not_applied() {
    let env = start(EmulatorConfig::default()).await;
    let token = env.procore_token().await;
    let c = company(&env);
    env.emu.set_faults(Faults {
        fail_500_at: vec![1],
        fail_503_at: vec![2],
        drop_connection_at: vec![3],
        ..Default::default()
    });
    let body = json!({"user": {"last_name": "L", "email_address": "fault@x.com"}});
    let first = env
        .procore(
            &token,
            reqwest::Method::POST,
            &format!("companies/{c}/users"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(first.status(), 500);
    let second = env
        .procore(
            &token,
            reqwest::Method::POST,
            &format!("companies/{c}/users"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(second.status(), 503);
    let third = env
        .http
        .post(format!(
            "{}/rest/v1.0/companies/{c}/users",
            env.var("PROCORE_BASE_URL")
        ))
        .bearer_auth(&token)
        .header("Procore-Company-Id", env.var("PROCORE_COMPANY_ID"))
        .json(&body)
        .send()
        .await;
    let dropped = match third {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(dropped, "the connection was dropped");
    assert!(
        env.emu.snapshot().created_users().is_empty(),
        "no faulted write was applied"
    );
    let fourth = env
        .procore(
            &token,
            reqwest::Method::POST,
            &format!("companies/{c}/users"),
            Some(body),
        )
        .await;
    assert_eq!(fourth.status(), 201);
    // The gateway's faults: a 502 page before the service, a 504 page
    // after it applied the write. Neither body is the service's JSON.
    env.emu.set_faults(Faults {
        fail_502_at: vec![1],
        fail_504_after_apply_at: vec![2],
        ..Default::default()
    });
    let gateway = json!({"user": {"last_name": "G", "email_address": "gateway@x.com"}});
    for (status, applied) in [(502, 1), (504, 2)] {
        let r = env
            .procore(
                &token,
                reqwest::Method::POST,
                &format!("companies/{c}/users"),
                Some(gateway.clone()),
            )
            .await;
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["content-type"], "text/html");
        let page = r.text().await.unwrap();
        assert!(page.contains(&format!("<h1>{status} ")), "{page}");
        assert_eq!(
            env.emu.snapshot().created_users().len(),
            applied,
            "{status}"
        );
    }
    let log = env.emu.snapshot().requests;
    let faults: Vec<&str> = log.iter().rev().take(2).filter_map(|r| r.fault).collect();
    assert_eq!(faults, ["504_after_apply", "502"]);
    // 429s in each Retry-After style.
    for (style, check) in [
        (RetryAfterStyle::Integer, Some("2")),
        (RetryAfterStyle::Fractional, Some("2.25")),
        (RetryAfterStyle::Absent, None),
    ] {
        env.emu.set_faults(Faults {
            rate_429_every: Some(1),
            retry_after: style,
            retry_after_secs: 2,
            ..Default::default()
        });
        let g = env.graph_token().await;
        let r = env
            .graph(&g, &format!("{}/groups", env.var("GRAPH_BASE_URL")))
            .await;
        assert_eq!(r.status(), 429);
        assert_eq!(
            r.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string())
                .as_deref(),
            check
        );
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "TooManyRequests"
        );
    }
    // Tokens stop working after N calls.
    env.emu.set_faults(Faults {
        token_expires_after_calls: Some(2),
        ..Default::default()
    });
    let g = env.graph_token().await;
    let url = format!("{}/groups", env.var("GRAPH_BASE_URL"));
    assert_eq!(env.graph(&g, &url).await.status(), 200);
    assert_eq!(env.graph(&g, &url).await.status(), 200);
    let expired = env.graph(&g, &url).await;
    assert_eq!(expired.status(), 401);
    assert_eq!(
        expired.json::<Value>().await.unwrap()["error"]["code"],
        "InvalidAuthenticationToken"
    );
}

#[test]
fn scenarios_are_deterministic_large_and_consistent_with_the_rules() {
    let a = Scenario::generate(1000, 9);
    let b = Scenario::generate(1000, 9);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let big = Scenario::generate(100_000, 1);
    assert!(big.graph_users.len() > 100_000);
    let expected = big.expected_sync();
    let share = expected.to_create.len() as f64
        / (expected.to_create.len() + expected.present.len() + expected.inactive.len()) as f64;
    assert!(
        (0.05..0.2).contains(&share),
        "about 10% missing, got {share}"
    );
    // Hand-checked edge cases of the generator: padded mixed-case mail, UPN keys, guests, disabled, inactive.
    let demo = Scenario::named("demo").unwrap();
    let e = demo.expected_sync();
    let keys: Vec<&String> = e
        .to_create
        .iter()
        .chain(e.present.iter())
        .chain(e.inactive.iter())
        .collect();
    assert!(
        keys.iter()
            .all(|k| k.trim() == k.as_str() && k.to_lowercase() == **k),
        "keys are trimmed and lower case"
    );
    assert!(
        keys.iter().any(|k| k.contains("fabrikam.com")),
        "the guest counts by mail"
    );
    assert!(!e.inactive.is_empty() && e.skipped_disabled > 0);
    let decoy = demo
        .groups
        .iter()
        .find(|g| g.display_name.starts_with("License - "))
        .unwrap();
    assert!(
        !sluice_emulator::scenario::LICENSE_PREFIXES
            .iter()
            .any(|p| decoy.display_name.starts_with(p))
    );
}

/// Procore's rate-limit headers, checked for shape: Reset is Unix seconds
/// within the next minute.
fn assert_rate_limit_headers(r: &reqwest::Response, what: &str) {
    let h = r.headers();
    for name in ["x-rate-limit-limit", "x-rate-limit-remaining"] {
        assert!(
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.parse::<u64>().is_ok()),
            "{what}: {name} missing or not a number: {h:?}"
        );
    }
    let reset: u64 = h
        .get("x-rate-limit-reset")
        .unwrap_or_else(|| panic!("{what}: no x-rate-limit-reset"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        reset >= now.saturating_sub(1) && reset <= now + 61,
        "{what}: reset {reset} is not Unix seconds within the minute after {now}"
    );
}

#[tokio::test]
async fn procore_rate_limit_headers_are_on_every_response() {
    let env = start(EmulatorConfig {
        procore_rate_limit: Some(1000),
        ..Default::default()
    })
    .await;
    let token = env.procore_token().await;
    let c = company(&env);
    let users = format!("companies/{c}/users");
    let ok = env
        .procore(&token, reqwest::Method::GET, &users, None)
        .await;
    assert_eq!(ok.status(), 200);
    assert_rate_limit_headers(&ok, "a list");
    assert_eq!(ok.headers()["x-rate-limit-limit"], "1000");
    let bad = env
        .procore(
            &token,
            reqwest::Method::POST,
            &users,
            Some(json!({"flat": 1})),
        )
        .await;
    assert_eq!(bad.status(), 400);
    assert_rate_limit_headers(&bad, "a 400");
    let anon = env
        .http
        .get(format!("{}/rest/v1.0/{users}", env.var("PROCORE_BASE_URL")))
        .header("Procore-Company-Id", c.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    assert_rate_limit_headers(&anon, "a 401 without a token");
    for (kind, status) in [
        (FaultKind::TooMany, 429),
        (FaultKind::Unavailable, 503),
        (FaultKind::ServerError, 500),
        (FaultKind::ServerErrorAfterApply, 500),
    ] {
        env.emu.set_faults(Faults {
            targeted: vec![TargetedFault {
                method: "GET".into(),
                path_suffix: "/users".into(),
                body_contains: None,
                at: vec![1],
                fault: kind,
            }],
            ..Default::default()
        });
        let r = env
            .procore(&token, reqwest::Method::GET, &users, None)
            .await;
        assert_eq!(r.status(), status, "{kind:?}");
        assert_rate_limit_headers(&r, &format!("injected {kind:?}"));
    }
    // (A dropped connection has no answer to carry them.) An expired token's 401 has them too.
    env.emu.set_faults(Faults {
        token_expires_after_calls: Some(0),
        ..Default::default()
    });
    let expired = env
        .procore(&token, reqwest::Method::GET, &users, None)
        .await;
    assert_eq!(expired.status(), 401);
    assert_rate_limit_headers(&expired, "an expired token");
    // Graph has no such headers.
    env.emu.set_faults(Faults::default());
    let g = env.graph_token().await;
    let graph = env
        .graph(&g, &format!("{}/groups", env.var("GRAPH_BASE_URL")))
        .await;
    assert!(!graph.headers().contains_key("x-rate-limit-reset"));
}

#[tokio::test]
async fn procore_duplicates_are_422_by_default_and_logins_are_global() {
    let mut scenario = Scenario::generate(30, 4);
    scenario.taken_elsewhere.push("roaming@other-gc.com".into());
    let active = scenario
        .procore_users
        .iter()
        .find(|u| u.is_active)
        .unwrap()
        .clone();
    let env = start(EmulatorConfig {
        scenario,
        ..Default::default()
    })
    .await;
    let token = env.procore_token().await;
    let users = format!("companies/{}/users", company(&env));
    let dup = env
        .procore(
            &token,
            reqwest::Method::POST,
            &users,
            Some(json!({"user": {"last_name": "L", "email_address": format!("  {}  ", active.email_address.to_uppercase()), "login": active.login.to_uppercase()}})),
        )
        .await;
    assert_eq!(dup.status(), 422);
    assert!(
        dup.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let e: Value = dup.json().await.unwrap();
    assert_eq!(e, json!({"errors": {"login": ["has already been taken"]}}));
    // Held by another company's user: refused, yet absent from this company's lists.
    let elsewhere = env
        .procore(
            &token,
            reqwest::Method::POST,
            &users,
            Some(json!({"user": {"last_name": "R", "email_address": "Roaming@Other-GC.com"}})),
        )
        .await;
    assert_eq!(elsewhere.status(), 422);
    for list in [users.clone(), format!("{users}/inactive")] {
        let found: Value = env
            .procore_json(&token, &format!("{list}?filters%5Bsearch%5D=roaming"))
            .await;
        let listed = found.as_array().unwrap().iter().any(|u| {
            u["email_address"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case("roaming@other-gc.com"))
        });
        assert!(!listed, "{list}: {found}");
    }
    assert!(env.emu.snapshot().created_users().is_empty());
}

#[tokio::test]
async fn admin_endpoints_show_the_state_and_take_faults() {
    let env = start(EmulatorConfig::default()).await;
    let base = env.emu.base_url();
    let token = env.procore_token().await;
    let c = company(&env);
    env.procore(
        &token,
        reqwest::Method::POST,
        &format!("companies/{c}/users"),
        Some(json!({"user": {"last_name": "<b>Bold</b>", "email_address": "admin-view@x.com"}})),
    )
    .await;
    let page = env.http.get(format!("{base}/_admin")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("Graph and Procore emulators") && html.contains("admin-view@x.com"));
    assert!(
        html.contains("&lt;b&gt;Bold&lt;/b&gt;") && !html.contains("<b>Bold"),
        "the admin page escapes what the API stored"
    );
    let state: Value = env
        .http
        .get(format!("{base}/_admin/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(state["scenario"]["groups"].as_array().unwrap().len() > 3);
    assert!(state["mails"].as_array().unwrap().is_empty());
    let requests = state["requests"].as_array().unwrap();
    assert!(
        requests
            .iter()
            .any(|r| r["method"] == "POST" && r["status"] == 201 && r["fault"].is_null())
    );
    assert!(
        state["scenario"]["procore_users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["email_address"] == "admin-view@x.com" && u["created_by_api"] == true)
    );
    // The stats count the same creations, without the whole state.
    let stats: Value = env
        .http
        .get(format!("{base}/_admin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = env.emu.snapshot().created_users().len();
    assert_eq!(created, 1);
    assert_eq!(stats["created_users"], json!(created));
    // Faults set over HTTP take effect at once and can be read back. The
    // targeted fault counts the requests that reach the service: the
    // first, refused by the ordinal 503, is not one.
    let faults = json!({"fail_503_at": [1], "targeted": [{"method": "GET", "path_suffix": "/groups", "at": [1], "fault": "server_error"}]});
    let put = env
        .http
        .put(format!("{base}/_admin/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let read = faults_in_force(&env.http, &base).await;
    assert_eq!(read["fail_503_at"], json!([1]));
    assert_eq!(read["targeted"][0]["fault"], "server_error");
    let g = env.graph_token().await;
    let groups = format!("{}/groups", env.var("GRAPH_BASE_URL"));
    assert_eq!(env.graph(&g, &groups).await.status(), 503);
    assert_eq!(env.graph(&g, &groups).await.status(), 500);
    assert_eq!(env.graph(&g, &groups).await.status(), 200);
    let log = env.emu.snapshot().requests;
    let faulted: Vec<Option<&str>> = log
        .iter()
        .filter(|r| r.path.starts_with("/v1.0/groups"))
        .map(|r| r.fault)
        .collect();
    assert_eq!(faulted, vec![Some("503"), Some("500"), None]);
    // A misspelt fault is refused, not ignored.
    let typo = env
        .http
        .put(format!("{base}/_admin/faults"))
        .json(&json!({"fail_503_att": [1]}))
        .send()
        .await
        .unwrap();
    assert!(typo.status().is_client_error(), "{}", typo.status());
    // So is a rate that is no share of requests, and the faults stay.
    let rate = env
        .http
        .put(format!("{base}/_admin/faults"))
        .json(&json!({"rate_429": 1.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(rate.status(), 422);
    assert!(rate.text().await.unwrap().contains("`rate_429` is 1.5"));
    let kept = faults_in_force(&env.http, &base).await;
    assert_eq!(kept["fail_503_at"], json!([1]));
}

/// The faults in force, as `GET /_admin/faults` reads them back.
async fn faults_in_force(http: &reqwest::Client, base: &str) -> Value {
    http.get(format!("{base}/_admin/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn slow_responses_take_at_least_their_delay() {
    let env = start(EmulatorConfig::default()).await;
    let g = env.graph_token().await;
    env.emu.set_faults(Faults {
        slow_ms: Some(400),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let r = env
        .graph(&g, &format!("{}/groups", env.var("GRAPH_BASE_URL")))
        .await;
    assert_eq!(r.status(), 200);
    // A lower bound only: a loaded machine may take longer, never shorter.
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
}

#[tokio::test]
async fn procore_tokens_expire_with_procores_401() {
    let env = start(EmulatorConfig::default()).await;
    env.emu.set_faults(Faults {
        token_expires_after_calls: Some(2),
        ..Default::default()
    });
    let token = env.procore_token().await;
    let users = format!("companies/{}/users", company(&env));
    for _ in 0..2 {
        assert_eq!(
            env.procore(&token, reqwest::Method::GET, &users, None)
                .await
                .status(),
            200
        );
    }
    let expired = env
        .procore(&token, reqwest::Method::GET, &users, None)
        .await;
    assert_eq!(expired.status(), 401);
    assert!(
        expired.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert!(expired.json::<Value>().await.unwrap()["errors"].is_string());
    // A new token works again; a Graph token is no Procore token.
    let fresh = env.procore_token().await;
    assert_eq!(
        env.procore(&fresh, reqwest::Method::GET, &users, None)
            .await
            .status(),
        200
    );
    let graph_token = env.graph_token().await;
    assert_eq!(
        env.procore(&graph_token, reqwest::Method::GET, &users, None)
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn graph_budget_429s_say_when_in_each_retry_after_style() {
    for (style, check) in [
        (RetryAfterStyle::Integer, "integer"),
        (RetryAfterStyle::Fractional, "fraction"),
        (RetryAfterStyle::Absent, "absent"),
    ] {
        let env = start(EmulatorConfig {
            graph_rate_limit: Some(1),
            faults: Faults {
                retry_after: style,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
        let g = env.graph_token().await;
        let url = format!("{}/groups", env.var("GRAPH_BASE_URL"));
        // With a budget of one a minute, one of three requests is refused
        // even if a minute boundary falls between them.
        let mut refused = None;
        for _ in 0..3 {
            let r = env.graph(&g, &url).await;
            if r.status() == 429 {
                refused = Some(r);
                break;
            }
        }
        let r = refused.expect("a 429 past the budget");
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        match check {
            "integer" => {
                let secs: u64 = retry_after.unwrap().parse().unwrap();
                assert!((1..=60).contains(&secs));
            }
            "fraction" => {
                let v = retry_after.unwrap();
                assert!(v.contains('.'), "{v}");
                let secs: f64 = v.parse().unwrap();
                assert!(secs > 0.0 && secs <= 61.0, "{secs}");
            }
            _ => assert_eq!(retry_after, None),
        }
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "TooManyRequests");
        assert!(body["error"]["innerError"]["request-id"].is_string());
        env.emu.shutdown().await;
    }
}

#[tokio::test]
async fn members_of_every_kind_carry_their_odata_type() {
    let scenario = Scenario::generate(60, 8);
    let env = start(EmulatorConfig {
        scenario: scenario.clone(),
        ..Default::default()
    })
    .await;
    let g = env.graph_token().await;
    let mut kinds = std::collections::BTreeSet::new();
    for group in scenario
        .groups
        .iter()
        .filter(|g| g.display_name.starts_with("License – "))
    {
        let mut url = format!(
            "{}/groups/{}/members?$select=id,displayName,mail,accountEnabled",
            env.var("GRAPH_BASE_URL"),
            group.id
        );
        loop {
            let page: Value = env.graph(&g, &url).await.json().await.unwrap();
            for m in page["value"].as_array().unwrap() {
                let kind = m["@odata.type"].as_str().unwrap().to_string();
                assert!(m["id"].is_string(), "{m}");
                if kind.ends_with(".device") || kind.ends_with(".servicePrincipal") {
                    assert!(m.get("mail").is_none(), "these types have no mail: {m}");
                }
                kinds.insert(kind);
            }
            match page["@odata.nextLink"].as_str() {
                Some(n) => url = n.to_string(),
                None => break,
            }
        }
    }
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    assert_eq!(
        kinds,
        vec![
            "#microsoft.graph.device",
            "#microsoft.graph.group",
            "#microsoft.graph.servicePrincipal",
            "#microsoft.graph.user"
        ]
    );
}

#[tokio::test]
async fn writes_can_be_applied_and_then_lose_their_answer() {
    let env = start(EmulatorConfig::default()).await;
    let token = env.procore_token().await;
    let c = company(&env);
    let url = format!(
        "{}/rest/v1.0/companies/{c}/users",
        env.var("PROCORE_BASE_URL")
    );
    env.emu.set_faults(Faults {
        targeted: vec![
            TargetedFault {
                method: "POST".into(),
                path_suffix: "/users".into(),
                body_contains: Some("dropped@x.com".into()),
                at: vec![1],
                fault: FaultKind::DropAfterApply,
            },
            TargetedFault {
                method: "POST".into(),
                path_suffix: "/users".into(),
                body_contains: Some("erred@x.com".into()),
                at: vec![],
                fault: FaultKind::ServerErrorAfterApply,
            },
        ],
        ..Default::default()
    });
    let dropped = env
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("Procore-Company-Id", c.as_str())
        .json(&json!({"user": {"last_name": "D", "email_address": "dropped@x.com"}}))
        .send()
        .await;
    let broke = match dropped {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(broke, "the answer was lost");
    let erred = env
        .procore(
            &token,
            reqwest::Method::POST,
            &format!("companies/{c}/users"),
            Some(json!({"user": {"last_name": "E", "email_address": "erred@x.com"}})),
        )
        .await;
    assert_eq!(erred.status(), 500);
    let created: Vec<String> = env
        .emu
        .snapshot()
        .created_users()
        .iter()
        .map(|u| u.email_address.clone())
        .collect();
    assert_eq!(
        created,
        vec!["dropped@x.com", "erred@x.com"],
        "both were applied"
    );
    // A resend of each now meets its own first attempt: taken.
    for email in ["dropped@x.com", "erred@x.com"] {
        let again = env
            .procore(
                &token,
                reqwest::Method::POST,
                &format!("companies/{c}/users"),
                Some(json!({"user": {"last_name": "X", "email_address": email}})),
            )
            .await;
        let expected = if email == "erred@x.com" { 500 } else { 422 };
        assert_eq!(again.status(), expected, "{email}");
    }
    assert_eq!(env.emu.snapshot().created_users().len(), 2);
    let faults: Vec<&str> = env
        .emu
        .snapshot()
        .requests
        .iter()
        .filter_map(|r| r.fault)
        .collect();
    assert_eq!(
        faults,
        vec!["drop_after_apply", "500_after_apply", "500_after_apply"]
    );
}

#[tokio::test]
async fn rate_based_faults_repeat_for_a_seed() {
    async fn statuses(seed: u64) -> Vec<(u16, Option<&'static str>)> {
        let env = start(EmulatorConfig {
            faults: Faults {
                rate_503: 0.2,
                rate_500: 0.1,
                rate_429: 0.2,
                rate_drop: 0.1,
                seed,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
        let g = env.graph_token().await;
        let url = format!("{}/groups?$top=1", env.var("GRAPH_BASE_URL"));
        for _ in 0..40 {
            let _ = env
                .http
                .get(&url)
                .bearer_auth(&g)
                .send()
                .await
                .map(|r| r.bytes());
        }
        let log = env.emu.snapshot().requests;
        env.emu.shutdown().await;
        log.iter()
            .filter(|r| r.path.starts_with("/v1.0/"))
            .map(|r| (r.status, r.fault))
            .collect()
    }
    let a = statuses(11).await;
    assert_eq!(a.len(), 40);
    assert_eq!(
        a,
        statuses(11).await,
        "the same seed faults the same requests"
    );
    assert_ne!(a, statuses(12).await);
    for kind in ["503", "500", "429", "drop"] {
        assert!(
            a.iter().any(|(_, f)| *f == Some(kind)),
            "{kind} never drawn: {a:?}"
        );
    }
    assert!(a.iter().any(|(s, f)| *s == 200 && f.is_none()));
}

#[tokio::test]
async fn procore_paging_headers_can_be_left_out_and_pages_capped() {
    let scenario = Scenario::generate(80, 6);
    let active = scenario
        .procore_users
        .iter()
        .filter(|u| u.is_active)
        .count();
    for paging in [
        PagingHeaders::All,
        PagingHeaders::SeparateLinkFields,
        PagingHeaders::NoLink,
        PagingHeaders::TotalOnly,
        PagingHeaders::None,
    ] {
        let env = start(EmulatorConfig {
            scenario: scenario.clone(),
            procore_paging: paging,
            procore_max_per_page: 7,
            ..Default::default()
        })
        .await;
        let token = env.procore_token().await;
        let users = format!("companies/{}/users", company(&env));
        let r = env
            .procore(
                &token,
                reqwest::Method::GET,
                &format!("{users}?page=1&per_page=1000"),
                None,
            )
            .await;
        let h = r.headers().clone();
        let page: Value = r.json().await.unwrap();
        assert_eq!(page.as_array().unwrap().len(), 7, "pages hold at most 7");
        let has = |n: &str| h.contains_key(n);
        if paging == PagingHeaders::SeparateLinkFields {
            let fields: Vec<&str> = h
                .get_all("link")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(fields.len(), 2, "{fields:?}");
            assert!(fields[0].ends_with("rel=\"last\"") && fields[1].ends_with("rel=\"next\""));
        }
        let expected = match paging {
            PagingHeaders::All | PagingHeaders::SeparateLinkFields => (true, true, true),
            PagingHeaders::NoLink => (true, true, false),
            PagingHeaders::TotalOnly => (true, false, false),
            PagingHeaders::None => (false, false, false),
        };
        assert_eq!(
            (has("total"), has("per-page"), has("link")),
            expected,
            "{paging:?}"
        );
        if has("total") {
            assert_eq!(h["total"].to_str().unwrap(), active.to_string());
        }
        if has("per-page") {
            assert_eq!(h["per-page"], "7");
        }
        // Past the end: an empty array.
        let beyond: Value = env
            .procore_json(&token, &format!("{users}?page=1000&per_page=7"))
            .await;
        assert_eq!(beyond, json!([]));
        env.emu.shutdown().await;
    }
    // Links follow Procore's guide: page 1 has next and last only; a single page none.
    let env = start(EmulatorConfig {
        scenario: scenario.clone(),
        ..Default::default()
    })
    .await;
    let token = env.procore_token().await;
    let users = format!("companies/{}/users", company(&env));
    let first = env
        .procore(
            &token,
            reqwest::Method::GET,
            &format!("{users}?per_page=10"),
            None,
        )
        .await;
    let link = first.headers()["link"].to_str().unwrap().to_string();
    assert!(link.contains("rel=\"next\"") && link.contains("rel=\"last\""));
    assert!(
        !link.contains("rel=\"first\"") && !link.contains("rel=\"prev\""),
        "{link}"
    );
    let whole = env
        .procore(
            &token,
            reqwest::Method::GET,
            &format!("{users}?per_page=20000"),
            None,
        )
        .await;
    assert!(!whole.headers().contains_key("link"), "one page, no links");
    assert_eq!(
        whole.headers()["per-page"],
        "10000",
        "Procore's documented maximum"
    );
}

#[tokio::test]
async fn requests_addressed_to_another_host_are_refused_against_dns_rebinding() {
    let env = start(EmulatorConfig::default()).await;
    let base = env.emu.base_url();
    let port = base.rsplit(':').next().unwrap().to_string();
    let with_host = |method: reqwest::Method, path: &str, host: &str| {
        env.http
            .request(method, format!("{base}{path}"))
            .header("host", host)
    };
    // A page of evil.example, its name re-pointed at 127.0.0.1, reaches the
    // port with its own name in Host: nothing is shown or changed.
    let evil = format!("evil.example:{port}");
    for (method, path) in [
        (reqwest::Method::GET, "/_admin"),
        (reqwest::Method::GET, "/_admin/state"),
        (reqwest::Method::GET, "/_admin/faults"),
        (reqwest::Method::POST, "/oauth/token"),
    ] {
        let r = with_host(method, path, &evil).send().await.unwrap();
        assert_eq!(r.status(), 421, "{path}");
    }
    let put = with_host(reqwest::Method::PUT, "/_admin/faults", &evil)
        .json(&json!({"fail_503_at": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 421);
    let faults: Value = env
        .http
        .get(format!("{base}/_admin/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        faults["fail_503_at"],
        json!([]),
        "the refused PUT changed nothing"
    );
    assert!(
        env.emu.snapshot().requests.iter().all(|r| r.status != 421),
        "refused requests reach nothing, not even the log"
    );
    // The bound address, by number or as localhost, is answered.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let r = with_host(reqwest::Method::GET, "/_admin/state", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
}

/// A port already taken is said with the address, and how to pick a free
/// one (it was the bare "Address already in use (os error 98)").
#[tokio::test]
async fn a_port_in_use_is_named_with_what_to_do() {
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let refused = sluice_emulator::start(EmulatorConfig {
        port,
        ..EmulatorConfig::default()
    })
    .await
    .err()
    .expect("the port is taken");
    let said = format!("{refused:#}");
    assert!(
        said.starts_with(&format!(
            "cannot listen on 127.0.0.1:{port} (`--port 0` picks a free port): "
        )),
        "{said}"
    );
}
