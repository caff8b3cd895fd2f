//! The connection layer against a loopback server the tests script: tokens,
//! refresh, rejected secrets, Retry-After, budgets, retries, dry runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sluice::engine::EngineConfig;
use sluice::run::Status;

const SECRET: &str = "client-secret-do-not-print";

/// A flow whose one step GETs (or POSTs) `path` once per item through the `api` connection.
fn flow(
    server: &TestServer,
    items: usize,
    action: &str,
    extra_with: &str,
    connection_extra: &str,
) -> String {
    flow_at(
        server,
        items,
        action,
        "things",
        extra_with,
        connection_extra,
    )
}

fn flow_at(
    server: &TestServer,
    items: usize,
    action: &str,
    path: &str,
    extra_with: &str,
    connection_extra: &str,
) -> String {
    let hostile = fixture("hostile");
    let list: Vec<String> = (1..=items).map(|i| i.to_string()).collect();
    format!(
        r#"
name = "conn"
[params]
items = [{}]

[connections.api]
base_url = "{url}/api"
auth.oauth2_client_credentials = {{ token_url = "{url}/token", client_id = "app", client_secret = "${{env.API_SECRET}}", scope = "api/.default" }}
retry = {{ max_attempts = 3, base_delay = "50ms", max_delay = "200ms" }}
{connection_extra}

[[step]]
id = "call"
uses = "{}"
connections = ["api"]
for_each = "${{params.items}}"
concurrency = 4
on_error = "continue"
with = {{ action = "{action}", connection = "api", url = "{path}/${{item}}" {extra_with} }}
"#,
        list.join(", "),
        hostile.display(),
        url = server.url,
    )
}

async fn run_flow(
    text: &str,
    dry_run: bool,
) -> (sluice::run::RunOutcome, std::sync::Arc<Collector>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_flow(dir.path(), "flow.toml", text);
    let flow = load(&path, &[("API_SECRET", SECRET)]);
    let runner = runner(EngineConfig::default());
    run(&runner, &flow, dir.path(), dry_run).await
}

fn ok_api(seen: &Seen) -> Reply {
    json_reply(200, json!({"path": seen.path}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_serves_many_requests_and_never_reaches_the_component() {
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => token_reply("tok-1", 3600),
        _ if seen.header("authorization") == Some("Bearer tok-1") => ok_api(seen),
        _ => json_reply(401, json!({"error": "no token"})),
    })
    .await;
    let (outcome, events) = run_flow(&flow(&server, 20, "get", "", ""), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(server.to("/token").len(), 1, "the token is fetched once");
    let token_request = &server.to("/token")[0];
    assert!(token_request.body.contains("grant_type=client_credentials"));
    assert!(
        token_request.body.contains("scope=api%2F.default"),
        "{}",
        token_request.body
    );
    assert_eq!(server.requests().len(), 21);
    let text = events.text();
    assert_eq!(outcome.outputs["call"]["ok"], json!(20), "{text}");
    assert!(
        !text.contains("tok-1") && !text.contains(SECRET),
        "a secret leaked into the events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_and_a_401_gets_one_fresh_token() {
    // Tokens live one second; the API also rejects the very first token once.
    let server = TestServer::start(|seen, earlier| {
        let tokens = earlier.iter().filter(|s| s.path == "/token").count();
        match seen.path.as_str() {
            "/token" => token_reply(&format!("tok-{}", tokens + 1), 1),
            _ if seen.header("authorization") == Some("Bearer tok-1") => {
                json_reply(401, json!({"error": "expired"}))
            }
            _ => ok_api(seen),
        }
    })
    .await;
    let text = flow(&server, 3, "get", "", "");
    let dir = tempfile::tempdir().unwrap();
    let path = write_flow(dir.path(), "flow.toml", &text);
    let flow = load(&path, &[("API_SECRET", SECRET)]);
    let runner = runner(EngineConfig::default());
    let (outcome, events) = run(&runner, &flow, dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.outputs["call"]["ok"], json!(3), "{}", events.text());
    let after_first = server.to("/token").len();
    assert!(after_first >= 2, "a 401 led to a fresh token");
    // Past the lifetime, the next run's requests use a new token.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (outcome, _) = run(&runner, &flow, dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded);
    assert!(
        server.to("/token").len() > after_first,
        "the expired token was refreshed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_secret_fails_the_run_before_any_step_without_printing_it() {
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => json_reply(
            401,
            json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"}),
        ),
        _ => ok_api(seen),
    })
    .await;
    let (outcome, events) = run_flow(&flow(&server, 2, "get", "", ""), false).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(error.contains("connection `api`"), "{error}");
    assert!(
        error.contains("invalid_client: AADSTS7000215: Invalid client secret provided."),
        "{error}"
    );
    assert!(!error.contains(SECRET) && !events.text().contains(SECRET));
    assert!(!events.text().contains("step_started"), "no step ran");
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|s| s.path != "/token")
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_before_the_next_request() {
    let server = TestServer::start(|seen, earlier| {
        let api_calls = earlier.iter().filter(|s| s.path != "/token").count();
        match seen.path.as_str() {
            "/token" => token_reply("t", 3600),
            _ if api_calls == 0 => (
                429,
                vec![("retry-after".into(), "1.5".into())],
                "slow down".into(),
            ),
            _ => ok_api(seen),
        }
    })
    .await;
    let (outcome, events) = run_flow(&flow(&server, 4, "get", "", ""), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let api: Vec<Seen> = server
        .requests()
        .into_iter()
        .filter(|s| s.path != "/token")
        .collect();
    assert_eq!(api.len(), 5, "four requests and one repeat");
    // Requests that started before the 429 arrived may precede it; every request after it waits.
    let throttled_at = api[0].at;
    let later: Vec<&Seen> = api
        .iter()
        .skip(1)
        .filter(|s| s.at > throttled_at + Duration::from_millis(100))
        .collect();
    assert!(!later.is_empty());
    for s in later {
        let gap = s.at - throttled_at;
        assert!(
            gap >= Duration::from_millis(1500),
            "sent {gap:?} after a Retry-After of 1.5 s"
        );
    }
    assert!(
        events.text().contains(r#""throttled":1"#),
        "{}",
        events.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_headers_slow_the_client_before_it_is_throttled() {
    // A budget of 5 requests per whole-second window, enforced with 429s.
    let windows: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, usize>>> =
        Default::default();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (w, r) = (windows.clone(), refused.clone());
    let server = TestServer::start(move |seen, _| {
        if seen.path == "/token" {
            return token_reply("t", 3600);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut windows = w.lock().unwrap();
        let used = windows.entry(now).or_default();
        let headers = |remaining: usize| {
            vec![
                ("x-rate-limit-limit".to_string(), "5".to_string()),
                ("x-rate-limit-remaining".to_string(), remaining.to_string()),
                ("x-rate-limit-reset".to_string(), (now + 1).to_string()),
            ]
        };
        if *used >= 5 {
            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut h = headers(0);
            h.push(("retry-after".into(), "1".into()));
            return (429, h, "Too Many Requests".into());
        }
        *used += 1;
        (200, headers(5 - *used), "{}".into())
    })
    .await;
    let (outcome, events) = run_flow(&flow(&server, 12, "get", "", ""), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.outputs["call"]["ok"], json!(12));
    let refused = refused.load(std::sync::atomic::Ordering::SeqCst);
    // The first window's budget is unknown until the first answers arrive,
    // so the four concurrent first requests may overshoot by one.
    assert!(
        refused <= 1,
        "{refused} requests ran into a 429: {}",
        events.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_get_is_retried_but_a_post_is_not_unless_idempotent() {
    let server = TestServer::start(|seen, earlier| {
        let same = earlier
            .iter()
            .filter(|s| s.path == seen.path && s.method == seen.method)
            .count();
        match seen.path.as_str() {
            "/token" => token_reply("t", 3600),
            _ if same == 0 => (503, vec![], "unavailable".into()),
            _ => ok_api(seen),
        }
    })
    .await;
    let (outcome, events) = run_flow(&flow(&server, 2, "get", "", ""), false).await;
    assert_eq!(outcome.outputs["call"]["ok"], json!(2), "{}", events.text());
    assert_eq!(
        server.to("/api/things/1").len(),
        2,
        "the GET was sent again"
    );

    let server = TestServer::start(|seen, earlier| {
        let same = earlier.iter().filter(|s| s.path == seen.path).count();
        match seen.path.as_str() {
            "/token" => token_reply("t", 3600),
            _ if same == 0 => (500, vec![], "boom".into()),
            _ => json_reply(201, json!({"created": true})),
        }
    })
    .await;
    let (outcome, events) =
        run_flow(&flow(&server, 1, "post", r#", body = "{}""#, ""), false).await;
    assert_eq!(
        server.to("/api/things/1").len(),
        1,
        "a plain POST is not repeated: {}",
        events.text()
    );
    assert_eq!(
        outcome.outputs["call"]["items"][0]["output"]["status"],
        json!(500)
    );
    let (outcome, events) = run_flow(
        &flow_at(
            &server,
            1,
            "post",
            "again",
            r#", body = "{}", idempotent = true"#,
            "",
        ),
        false,
    )
    .await;
    assert_eq!(
        server.to("/api/again/1").len(),
        2,
        "an idempotent POST is repeated: {}",
        events.text()
    );
    assert_eq!(
        outcome.outputs["call"]["items"][0]["output"]["status"],
        json!(201)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reads_but_never_writes() {
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => token_reply("t", 3600),
        _ => ok_api(seen),
    })
    .await;
    let (outcome, events) = run_flow(&flow(&server, 2, "post", r#", body = "{}""#, ""), true).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert!(
        server
            .requests()
            .iter()
            .all(|s| s.method == "GET" || s.path == "/token"),
        "a write was sent in a dry run"
    );
    let first = &outcome.outputs["call"]["items"][0]["output"];
    assert!(
        first["send_error"]
            .as_str()
            .unwrap_or("")
            .contains("dry run"),
        "{first}"
    );
    assert!(
        first["send_error"].as_str().unwrap_or("").contains("POST"),
        "{first}"
    );
    // Reads still happen.
    let (outcome, _) = run_flow(&flow(&server, 2, "get", "", ""), true).await;
    assert_eq!(outcome.outputs["call"]["ok"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_size_cap_is_refused() {
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => token_reply("t", 3600),
        _ => (200, vec![], "x".repeat(4096)),
    })
    .await;
    let (outcome, events) = run_flow(
        &flow(&server, 1, "get", "", "max_response_bytes = 1024"),
        false,
    )
    .await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let err = outcome.outputs["call"]["items"][0]["output"]["send_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        err.contains("larger than the connection's limit of 1024 bytes"),
        "{}",
        events.text()
    );
}
