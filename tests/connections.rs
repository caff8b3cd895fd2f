//! The connection layer against a loopback server the tests script: tokens,
//! refresh, rejected secrets, Retry-After, budgets, retries, dry runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sluice::engine::EngineConfig;
use sluice::run::{RunEvent, Status};

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

[secrets]
api_secret = {{ env = "API_SECRET" }}

[connections.api]
base_url = "{url}/api"
auth.oauth2_client_credentials = {{ token_url = "{url}/token", client_id = "app", client_secret = "${{secrets.api_secret}}", scope = "api/.default" }}
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
    run_on(&runner(EngineConfig::default()), text, dry_run).await
}

/// Like [`run_flow`], on a runner that has its components compiled already.
async fn run_on(
    runner: &sluice::run::Runner,
    text: &str,
    dry_run: bool,
) -> (sluice::run::RunOutcome, std::sync::Arc<Collector>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_flow(dir.path(), "flow.toml", text);
    let flow = load(&path, &[("API_SECRET", SECRET)]);
    run_keeping_items(runner, &flow, dir.path(), dry_run).await
}

fn ok_api(seen: &Seen) -> Reply {
    json_reply(200, json!({"path": seen.path}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_serves_many_requests_and_never_reaches_the_component() {
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => token_reply("access-tok-1", 3600),
        _ if seen.header("authorization") == Some("Bearer access-tok-1") => ok_api(seen),
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
        !text.contains("access-tok-1") && !text.contains(SECRET),
        "a secret leaked into the events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_gets_exactly_one_fresh_token_for_the_requests_it_refused() {
    // The API rejects the first token, for every request that carries it.
    let server = TestServer::start(|seen, earlier| {
        let tokens = earlier.iter().filter(|s| s.path == "/token").count();
        match seen.path.as_str() {
            "/token" => token_reply(&format!("access-tok-{}", tokens + 1), 3600),
            _ if seen.header("authorization") == Some("Bearer access-tok-1") => {
                json_reply(401, json!({"error": "expired"}))
            }
            _ => ok_api(seen),
        }
    })
    .await;
    let (outcome, events) = run_flow(&flow(&server, 3, "get", "", ""), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.outputs["call"]["ok"], json!(3), "{}", events.text());
    // The credential check's token, then one for every request it failed,
    // however their 401s interleaved with the fetch of the new one.
    assert_eq!(server.to("/token").len(), 2, "{}", events.text());
    let api: Vec<String> = server
        .requests()
        .iter()
        .filter(|s| s.path != "/token")
        .map(|s| s.header("authorization").unwrap_or("").to_string())
        .collect();
    // Each request that carried the first token was refused and sent again
    // with the second (how many went out before the first 401 came back
    // is up to the scheduler); every item ended with the second.
    let refused = api.iter().filter(|a| *a == "Bearer access-tok-1").count();
    assert!(refused >= 1, "{api:?}");
    assert_eq!(api.len(), 3 + refused, "{api:?}");
    assert_eq!(
        api.iter().filter(|a| *a == "Bearer access-tok-2").count(),
        3
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
            "/token" => token_reply("token-t1", 3600),
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

/// A service that allows 5 requests per window of `window_secs` whole
/// seconds, says so in Procore's `X-Rate-Limit-*` headers on every answer,
/// and refuses the rest with a 429, which carries `Retry-After` only when
/// `retry_after` (Procore documents none: the client is to read
/// `X-Rate-Limit-Reset`). With `spent_by_another`, another client has
/// spent the window the first request arrives in. Returns the server and
/// its count of 429s.
async fn budget_server(
    window_secs: u64,
    retry_after: bool,
    spent_by_another: bool,
) -> (TestServer, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let windows: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, usize>>> =
        Default::default();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (w, r) = (windows.clone(), refused.clone());
    let server = TestServer::start(move |seen, _| {
        if seen.path == "/token" {
            return token_reply("token-t1", 3600);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let window = now / window_secs;
        let reset = (window + 1) * window_secs;
        let mut windows = w.lock().unwrap();
        if spent_by_another && windows.is_empty() {
            // Another client of the API spent the window the first
            // request arrives in.
            windows.insert(window, 5);
        }
        let used = windows.entry(window).or_default();
        let headers = |remaining: usize| {
            vec![
                ("x-rate-limit-limit".to_string(), "5".to_string()),
                ("x-rate-limit-remaining".to_string(), remaining.to_string()),
                ("x-rate-limit-reset".to_string(), reset.to_string()),
            ]
        };
        if *used >= 5 {
            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut h = headers(0);
            if retry_after {
                h.push(("retry-after".into(), (reset - now).to_string()));
            }
            return (429, h, "Too Many Requests".into());
        }
        *used += 1;
        (200, headers(5 - *used), "{}".into())
    })
    .await;
    (server, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_headers_slow_the_client_before_it_is_throttled() {
    twelve_requests_within_the_budget(1, true, false).await;
}

/// Twelve GETs at four at a time against [`budget_server`]: all succeed,
/// and none is refused but the first, when another client spent its
/// window. The first request goes alone, and its answer says the budget
/// the others then keep within (at stop 53 the four went at once, and one
/// could be refused). Returns the server, for its log.
async fn twelve_requests_within_the_budget(
    window_secs: u64,
    retry_after: bool,
    spent_by_another: bool,
) -> TestServer {
    let (server, refused) = budget_server(window_secs, retry_after, spent_by_another).await;
    let (outcome, events) = run_flow(&flow(&server, 12, "get", "", ""), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.outputs["call"]["ok"], json!(12));
    let refused = refused.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        refused,
        usize::from(spent_by_another),
        "{refused} requests ran into a 429: {}",
        events.text()
    );
    server
}

/// A call that runs out of time while its connection waits for a spent
/// rate budget to reset says so, not that it waited for an answer: its
/// `request_timeout` and `retry` have nothing to do with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_timed_out_waiting_for_a_spent_budget_says_so() {
    let (server, _) = budget_server(600, false, false).await;
    let text = flow(&server, 8, "get", "", "").replace(
        "on_error = \"continue\"",
        "on_error = \"continue\"\ntimeout = \"2s\"",
    );
    assert!(text.contains("timeout = \"2s\""));
    let (outcome, events) = tokio::time::timeout(Duration::from_secs(60), run_flow(&text, false))
        .await
        .expect("the calls' timeout did not end them");
    assert_eq!(outcome.outputs["call"]["ok"], json!(5), "{}", events.text());
    let failed: Vec<String> = events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::ItemFinished {
                error: Some(error), ..
            } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    for error in &failed {
        assert!(
            error.contains("ran longer than its timeout of 2s")
                && error
                    .contains("on connection `api`: its rate budget is spent until it resets in"),
            "{error}"
        );
        assert!(!error.contains("request_timeout"), "{error}");
    }
}

/// Procore's 429 need not carry `Retry-After` (its documentation names
/// none): the budget headers say when the window resets, and every request
/// waits for that, the refused one too, so that nothing more is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_retry_after_waits_for_the_budget_window_to_reset() {
    let server = twelve_requests_within_the_budget(3, false, true).await;
    // The first window was spent by another client, and 12 requests at 5
    // a window span three more: the client waited for three resets, not
    // for a backoff.
    let api: Vec<Seen> = server
        .requests()
        .into_iter()
        .filter(|s| s.path != "/token")
        .collect();
    let spread = api.last().unwrap().at - api.first().unwrap().at;
    assert!(spread >= Duration::from_secs(6), "{spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_get_is_retried_but_a_post_is_not_unless_idempotent() {
    let server = TestServer::start(|seen, earlier| {
        let same = earlier
            .iter()
            .filter(|s| s.path == seen.path && s.method == seen.method)
            .count();
        match seen.path.as_str() {
            "/token" => token_reply("token-t1", 3600),
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
            "/token" => token_reply("token-t1", 3600),
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
async fn a_write_marked_retry_when_not_acted_goes_again_only_when_the_service_did_not_act() {
    // Each path answers its status the first time, then 202.
    let server = TestServer::start(|seen, earlier| {
        let first = !earlier.iter().any(|s| s.path == seen.path);
        let status = seen.path.rsplit('/').nth(1).and_then(|s| s.parse().ok());
        match (seen.path.as_str(), status) {
            ("/token", _) => token_reply("token-t1", 3600),
            (_, Some(status)) if first => (status, vec![], "no".into()),
            _ => json_reply(202, json!({})),
        }
    })
    .await;
    let runner = runner(EngineConfig::default());
    let flagged = r#", body = "{}", retry_when_not_acted = true"#;
    for (status, sent, answer) in [(503, 2, 202), (500, 1, 500), (502, 1, 502), (504, 1, 504)] {
        let text = flow_at(&server, 1, "post", &status.to_string(), flagged, "");
        let (outcome, events) = run_on(&runner, &text, false).await;
        let path = format!("/api/{status}/1");
        assert_eq!(server.to(&path).len(), sent, "{status}: {}", events.text());
        assert_eq!(
            outcome.outputs["call"]["items"][0]["output"]["status"],
            json!(answer),
            "{status}"
        );
    }
    // The same 503 to a plain POST is the component's to read.
    let text = flow_at(&server, 1, "post", "plain/503", r#", body = "{}""#, "");
    run_on(&runner, &text, false).await;
    assert_eq!(server.to("/api/plain/503/1").len(), 1);

    // Nothing listening: no connection, so nothing was sent; the flagged
    // write goes again (three attempts in all), a plain one does not.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    for (extra, attempts) in [
        (flagged, "after 3 attempts"),
        (r#", body = "{}""#, "after 1 attempt:"),
    ] {
        let text = format!(
            r#"
name = "dead"
[connections.api]
base_url = "{dead}/api"
retry = {{ max_attempts = 3, base_delay = "10ms", max_delay = "20ms" }}

[[step]]
id = "call"
uses = "{}"
connections = ["api"]
with = {{ action = "post", connection = "api", url = "things" {extra} }}
"#,
            fixture("hostile").display()
        );
        let (outcome, events) = run_on(&runner, &text, false).await;
        let error = outcome.outputs["call"]["send_error"].as_str().unwrap_or("");
        assert!(error.contains(attempts), "{attempts}: {}", events.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reads_but_never_writes() {
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => token_reply("token-t1", 3600),
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
        "/token" => token_reply("token-t1", 3600),
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

/// The request stats a step reported for connection `api`.
fn api_stats(events: &Collector, step: &str) -> sluice::connections::RequestStats {
    events
        .events()
        .into_iter()
        .find_map(|e| match e {
            sluice::run::RunEvent::StepFinished {
                step: s,
                connections,
                ..
            } if s == step => connections.get("api").copied(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no stats for step {step}: {}", events.text()))
}

/// A loopback port that accepts connections and never answers.
async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

fn token_flow(token_url: &str, base_url: &str, connection_extra: &str) -> String {
    format!(
        r#"
name = "token"
[secrets]
api_secret = {{ env = "API_SECRET" }}
[connections.api]
base_url = "{base_url}/api"
auth.oauth2_client_credentials = {{ token_url = "{token_url}", client_id = "app", client_secret = "${{secrets.api_secret}}" }}
{connection_extra}

[[step]]
id = "call"
uses = "{}"
connections = ["api"]
with = {{ action = "get", connection = "api", url = "things" }}
"#,
        fixture("hostile").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_never_answers_fails_the_run_in_time() {
    let silent = silent_server().await;
    let text = token_flow(
        &format!("{silent}/token"),
        &silent,
        r#"request_timeout = "1s"
retry = { max_attempts = 2, base_delay = "50ms", max_delay = "100ms" }"#,
    );
    // Without a timeout on the token request this run would never end.
    let (outcome, events) = tokio::time::timeout(Duration::from_secs(60), run_flow(&text, false))
        .await
        .expect("the credential check hung");
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("connection `api`") && error.contains("is unavailable: timed out"),
        "{error}"
    );
    assert!(error.contains("after 2 attempts"), "{error}");
    assert!(!error.contains("rejected"), "{error}");
    assert!(!events.text().contains("step_started"), "no step ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timed_out_by_a_silent_service_names_the_request_it_waited_on() {
    let tokens = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => token_reply("token-tok", 3600),
        _ => json_reply(404, json!({})),
    })
    .await;
    let silent = silent_server().await;
    // `token_flow`'s step, given a short timeout of its own.
    let text = token_flow(&format!("{}/token", tokens.url), &silent, "").replace(
        "connections = [\"api\"]\n",
        "connections = [\"api\"]\ntimeout = \"2s\"\n",
    );
    assert!(text.contains("timeout = \"2s\""));
    let (outcome, _) = tokio::time::timeout(Duration::from_secs(60), run_flow(&text, false))
        .await
        .expect("the step's timeout did not end it");
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    // The default request timeout (60 s, five attempts) outlasts the
    // step's: the step's timeout is what ends it, and says what it waited on.
    assert!(
        error.contains("ran longer than its timeout of 2s"),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "for an answer to GET {silent}/api/things on connection `api`"
        )),
        "{error}"
    );
    assert!(
        error.contains("waits up to 1m for each answer (`request_timeout`)")
            && error.contains("up to 5 times"),
        "{error}"
    );
}

/// A step that runs a while says so, with what holds its connection:
/// first a wait the service asked for (a 429's `Retry-After`), then a
/// request that gets no answer. The run's events carry it, as its
/// terminal line and `serve -v`'s `still_working` show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_quiet_step_says_it_still_works_and_what_it_waits_on() {
    let silent = silent_server().await;
    let throttled = TestServer::start(|_, earlier| match earlier.len() {
        0 => (429, vec![("retry-after".into(), "2".into())], "{}".into()),
        _ => json_reply(200, json!({"ok": true})),
    })
    .await;
    let text = format!(
        r#"
name = "quiet"
[connections.slow]
base_url = "{}/api"
[connections.silent]
base_url = "{silent}/api"
request_timeout = "2s"
retry = {{ max_attempts = 1 }}

[[step]]
id = "held"
uses = "{hostile}"
connections = ["slow"]
with = {{ action = "get", connection = "slow", url = "things" }}

[[step]]
id = "hung"
uses = "{hostile}"
connections = ["silent"]
on_error = "continue"
with = {{ action = "get", connection = "silent", url = "things" }}
"#,
        throttled.url,
        hostile = fixture("hostile").display()
    );
    let dir = tempfile::tempdir().unwrap();
    let flow = load(&write_flow(dir.path(), "quiet.toml", &text), &[]);
    let collector = std::sync::Arc::new(Collector::default());
    let run_id = sluice::run::new_run_id();
    let mut options = sluice::run::RunOptions::new(run_id.clone(), dir.path().join(&run_id), false);
    options.still_working_every = Duration::from_millis(700);
    let outcome = runner(EngineConfig::default())
        .run(&flow, &options, collector.clone())
        .await;
    assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
    let said: Vec<(String, String)> = collector
        .events()
        .iter()
        .filter_map(|e| match e {
            sluice::run::RunEvent::StillWorking {
                step, connections, ..
            } => Some((step.clone(), connections.values().cloned().collect())),
            _ => None,
        })
        .collect();
    assert!(
        said.iter().any(|(step, busy)| step == "held"
            && busy.contains("more, as the service asked (Retry-After)")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|(step, busy)| step == "hung" && busy == "1 request waiting for an answer"),
        "{said:?}"
    );
}

/// A step cut off by its timeout while it reads what an earlier write
/// did (the write's answer never came) names that write too: the change
/// may have been made, and the component can no longer say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timed_out_after_a_write_without_answer_says_it_may_have_been_made() {
    let silent = silent_server().await;
    let text = format!(
        r#"
name = "unsettled"
[connections.api]
base_url = "{silent}/api"
request_timeout = "1s"
retry = {{ max_attempts = 5, base_delay = "50ms", max_delay = "100ms" }}

[[step]]
id = "call"
uses = "{}"
connections = ["api"]
timeout = "3s"
with = {{ action = "post-then-get", connection = "api", url = "things" }}
"#,
        fixture("hostile").display()
    );
    let (outcome, _) = tokio::time::timeout(Duration::from_secs(60), run_flow(&text, false))
        .await
        .expect("the step's timeout did not end it");
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains(&format!("for an answer to GET {silent}/api/things")),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "; earlier, POST {silent}/api/things failed after 1 attempt: "
        )) && error.contains("so that change may have been made although the step did not finish"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_token_response_is_refused() {
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => (
            200,
            vec![],
            format!("{{\"access_token\": \"{}\"}}", "x".repeat(1 << 20)),
        ),
        _ => ok_api(seen),
    })
    .await;
    let text = token_flow(&format!("{}/token", server.url), &server.url, "");
    let (outcome, _) = run_flow(&text, false).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("did not issue a token") && error.contains("larger than 65536 bytes"),
        "{error}"
    );
    assert_eq!(server.to("/token").len(), 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_fails_briefly_is_retried_honouring_retry_after() {
    // 503 with Retry-After, then 429 without, then a token.
    let server = TestServer::start(|seen, earlier| {
        let tokens = earlier.iter().filter(|s| s.path == "/token").count();
        match (seen.path.as_str(), tokens) {
            ("/token", 0) => (
                503,
                vec![("retry-after".into(), "1".into())],
                "down for maintenance".into(),
            ),
            ("/token", 1) => json_reply(429, json!({"error": "too_many_requests"})),
            ("/token", _) => token_reply("token-tok", 3600),
            _ => ok_api(seen),
        }
    })
    .await;
    let text = token_flow(&format!("{}/token", server.url), &server.url, "");
    let (outcome, events) = run_flow(&text, false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let tokens = server.to("/token");
    assert_eq!(tokens.len(), 3);
    let gap = tokens[1].at - tokens[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried {gap:?} after Retry-After: 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_stays_unavailable_is_not_called_a_rejection() {
    for status in [429u16, 503] {
        let server = TestServer::start(move |seen, _| match seen.path.as_str() {
            "/token" => json_reply(status, json!({"error": "temporarily_unavailable"})),
            _ => ok_api(seen),
        })
        .await;
        let (outcome, events) = run_flow(&flow(&server, 1, "get", "", ""), false).await;
        assert_eq!(outcome.status, Status::Failed);
        let error = outcome.error.unwrap();
        assert!(
            error.contains("is unavailable")
                && error.contains(&format!("HTTP {status}"))
                && error.contains("after 3 attempts"),
            "{error}"
        );
        assert!(
            !error.contains("rejected") && !error.contains("client id and secret"),
            "{error}"
        );
        assert_eq!(server.to("/token").len(), 3, "max_attempts = 3");
        assert!(!events.text().contains(SECRET));
    }
    // A rejection is final: asked once, and the hint names the credentials.
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => json_reply(400, json!({"error": "invalid_client"})),
        _ => ok_api(seen),
    })
    .await;
    let (outcome, _) = run_flow(&flow(&server, 1, "get", "", ""), false).await;
    let error = outcome.error.unwrap();
    assert!(
        error.contains("rejected the credentials (400): invalid_client")
            && error.contains("check the client id and secret"),
        "{error}"
    );
    assert_eq!(server.to("/token").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_a_write_that_is_not_retried_still_holds_the_connection() {
    let server = TestServer::start(|seen, _| match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/token") => token_reply("token-t1", 3600),
        ("POST", _) => (503, vec![("retry-after".into(), "1".into())], "busy".into()),
        _ => ok_api(seen),
    })
    .await;
    let hostile = fixture("hostile");
    let text = format!(
        r#"
name = "hold"
[secrets]
api_secret = {{ env = "API_SECRET" }}
[connections.api]
base_url = "{url}/api"
auth.oauth2_client_credentials = {{ token_url = "{url}/token", client_id = "app", client_secret = "${{secrets.api_secret}}" }}

[[step]]
id = "write"
uses = "{h}"
connections = ["api"]
with = {{ action = "post", connection = "api", url = "things", body = "{{}}" }}

[[step]]
id = "read"
uses = "{h}"
connections = ["api"]
with = {{ action = "get", connection = "api", url = "things" }}
"#,
        url = server.url,
        h = hostile.display()
    );
    let (outcome, events) = run_flow(&text, false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(
        outcome.outputs["write"]["status"],
        json!(503),
        "not retried"
    );
    let post = server.to("/api/things");
    assert_eq!(post.len(), 2, "one POST, one GET");
    assert_eq!(
        (post[0].method.as_str(), post[1].method.as_str()),
        ("POST", "GET")
    );
    let gap = post[1].at - post[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "the GET went {gap:?} after a 503 with Retry-After: 1"
    );
    // The read step waited out what was left of the hold, and says so (how
    // much depends on how long the step took to start: the gap above is
    // the measure).
    assert!(api_stats(&events, "read").wait_ms > 0, "{}", events.text());
}

/// Moves tokio's clock, which the host reads for token lifetimes and
/// request pacing, `by` forward at once, as if that long had passed.
/// Needs the current-thread runtime (`#[tokio::test]`). The clock is paused
/// only for the jump: paused throughout, tokio would move it to the next
/// timer whenever every task waits, a request's timeout included, while
/// the reply is still on its way over loopback.
async fn let_time_pass(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn an_expired_token_is_refreshed_within_the_run() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Tokens live 30 s, refreshed from 27 s on. The first API answer
    // takes 28 s of the host's clock, so the next request finds its token
    // past the refresh point; the second takes 31 s, so the third finds its
    // token expired. (Each stays within the request's and the step's
    // timeouts, which run on the same clock.)
    let tokens = Arc::new(AtomicUsize::new(0));
    let used: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (t, u) = (tokens.clone(), used.clone());
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
            let (tokens, used) = (t.clone(), u.clone());
            async move {
                use axum::response::IntoResponse;
                if uri.path() == "/token" {
                    let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
                    let token = json!({"access_token": format!("access-tok-{n}"), "token_type": "bearer", "expires_in": 30});
                    return axum::Json(token).into_response();
                }
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                let answered = {
                    let mut used = used.lock().unwrap();
                    used.push(auth.unwrap_or("").to_string());
                    used.len()
                };
                let took = if answered == 1 { 28 } else { 31 };
                let_time_pass(Duration::from_secs(took)).await;
                axum::Json(json!({"ok": true})).into_response()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let server = TestServer {
        url,
        seen: Default::default(),
    };
    let text = flow(&server, 3, "get", "", "").replace("concurrency = 4", "concurrency = 1");
    let (outcome, events) = run_flow(&text, false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.outputs["call"]["ok"], json!(3), "{}", events.text());
    // One before the run (the credential check), then one per later request.
    assert_eq!(tokens.load(Ordering::SeqCst), 3, "{}", events.text());
    assert_eq!(
        *used.lock().unwrap(),
        [
            "Bearer access-tok-1",
            "Bearer access-tok-2",
            "Bearer access-tok-3"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_401s_triggers_exactly_one_new_token() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const BURST: usize = 6;
    // Every request with the first token waits until all BURST have
    // arrived, then all are refused together: a real burst of 401s.
    let barrier = Arc::new(tokio::sync::Barrier::new(BURST));
    let tokens = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (b, t, r) = (barrier.clone(), tokens.clone(), refused.clone());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
        let (barrier, tokens, refused) = (b.clone(), t.clone(), r.clone());
        async move {
            use axum::response::IntoResponse;
            if uri.path() == "/token" {
                let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
                return axum::Json(json!({"access_token": format!("access-tok-{n}"), "token_type": "Bearer", "expires_in": 3600})).into_response();
            }
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            if auth == "Bearer access-tok-1" {
                let all_there = tokio::time::timeout(Duration::from_secs(30), barrier.wait()).await.is_ok();
                refused.fetch_add(1, Ordering::SeqCst);
                let status = if all_there { 401 } else { 500 };
                return (axum::http::StatusCode::from_u16(status).unwrap(), "expired").into_response();
            }
            axum::Json(json!({"ok": true})).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let server = TestServer {
        url,
        seen: Default::default(),
    };
    let text = flow(&server, BURST, "get", "", "")
        .replace("concurrency = 4", &format!("concurrency = {BURST}"));
    let (outcome, events) = run_flow(&text, false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(
        outcome.outputs["call"]["ok"],
        json!(BURST),
        "{}",
        events.text()
    );
    assert_eq!(
        refused.load(Ordering::SeqCst),
        BURST,
        "every first request was refused together"
    );
    assert_eq!(
        tokens.load(Ordering::SeqCst),
        2,
        "one token before the run, one after the burst of 401s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_throttling_and_time_waited_are_counted() {
    // 503 (retried after backoff), then 429 with Retry-After: 1, then 200.
    let server = TestServer::start(|seen, earlier| {
        let api = earlier.iter().filter(|s| s.path != "/token").count();
        match (seen.path.as_str(), api) {
            ("/token", _) => token_reply("token-t1", 3600),
            (_, 0) => (503, vec![], "unavailable".into()),
            (_, 1) => (
                429,
                vec![("retry-after".into(), "1".into())],
                "slow down".into(),
            ),
            _ => ok_api(seen),
        }
    })
    .await;
    let text = flow(&server, 1, "get", "", "").replace(
        r#"base_delay = "50ms", max_delay = "200ms""#,
        r#"base_delay = "400ms", max_delay = "400ms""#,
    );
    let (outcome, events) = run_flow(&text, false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.outputs["call"]["ok"], json!(1), "{}", events.text());
    let stats = api_stats(&events, "call");
    assert_eq!(
        (stats.requests, stats.retried, stats.throttled),
        (3, 1, 1),
        "{stats:?}"
    );
    // The backoff after the 503 (200–400 ms with jitter) and the 1 s hold.
    assert!(stats.wait_ms >= 1200, "{stats:?}");
    let api = server
        .requests()
        .into_iter()
        .filter(|s| s.path != "/token")
        .collect::<Vec<_>>();
    assert!(api[2].at - api[1].at >= Duration::from_secs(1));
}

/// A flow named `name` reading Procore's company users `items` times, four
/// at a time, through a connection to `emulator`'s Procore.
fn procore_reader(emulator: &sluice_emulator::RunningEmulator, name: &str, items: usize) -> String {
    let env: std::collections::HashMap<String, String> = emulator.env_vars().into_iter().collect();
    let list: Vec<String> = (1..=items).map(|i| i.to_string()).collect();
    format!(
        r#"
name = "{name}"
[params]
items = [{items}]

[secrets]
procore = {{ env = "PROCORE_CLIENT_SECRET" }}

[connections.procore]
base_url = "{base}/rest/v1.0"
headers = {{ "Procore-Company-Id" = "{company}" }}
auth.oauth2_client_credentials = {{ token_url = "{base}/oauth/token", client_id = "{client}", client_secret = "${{secrets.procore}}" }}

[[step]]
id = "read"
uses = "{hostile}"
connections = ["procore"]
for_each = "${{params.items}}"
concurrency = 4
with = {{ action = "get", connection = "procore", url = "companies/{company}/users" }}
"#,
        items = list.join(", "),
        base = env["PROCORE_BASE_URL"],
        company = env["PROCORE_COMPANY_ID"],
        client = env["PROCORE_CLIENT_ID"],
        hostile = fixture("hostile").display(),
    )
}

/// Issue 12: a connection is its API (token endpoint, client id, scope,
/// base URL), and every run in the process shares its token and budget.
/// Two flows on one Procore app, started together against a Procore that
/// allows 10 requests a second: one token between them, and their 24
/// requests paced by the budget both see, so that none is refused. (With a
/// token and a budget per run, each run fetched its own token, and each
/// sent into the window what the other had already spent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_flows_on_one_procore_app_share_one_token_and_one_budget() {
    two_readers_on_one_app_are_never_refused(sluice_emulator::EmulatorConfig {
        procore_rate_limit: Some(10),
        rate_window_secs: 1,
        ..Default::default()
    })
    .await;
}

/// The same two flows against Procore's two documented limits at once: a
/// spike limit over a window that rolls, smaller than the 8 requests the
/// two flows would send at once, and an hourly limit the 24 requests come
/// within 2 of, so the headers report the spike window and then the hour.
/// The budget is not known before the first answer, nor after a spent
/// window resets (a rolling window gives back only what has left it): one
/// request goes alone each time, and none is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_flows_stay_within_procores_spike_and_hourly_limits() {
    two_readers_on_one_app_are_never_refused(sluice_emulator::EmulatorConfig {
        procore_spike_limit: Some(6),
        spike_window_secs: 1,
        procore_rate_limit: Some(26),
        rate_window_secs: 3600,
        ..Default::default()
    })
    .await;
}

/// Runs two flows of 12 Procore reads each, four at a time, together in
/// one process against an emulator set up by `config`: both succeed, with
/// one token between them and no request refused.
async fn two_readers_on_one_app_are_never_refused(config: sluice_emulator::EmulatorConfig) {
    let emulator = sluice_emulator::start(config).await.unwrap();
    let secret: String = emulator
        .env_vars()
        .into_iter()
        .find(|(k, _)| k == "PROCORE_CLIENT_SECRET")
        .unwrap()
        .1;
    let dir = tempfile::tempdir().unwrap();
    let env = [("PROCORE_CLIENT_SECRET", secret.as_str())];
    let a = load(
        &write_flow(
            dir.path(),
            "a.toml",
            &procore_reader(&emulator, "reader-a", 12),
        ),
        &env,
    );
    let b = load(
        &write_flow(
            dir.path(),
            "b.toml",
            &procore_reader(&emulator, "reader-b", 12),
        ),
        &env,
    );
    let runner = runner(EngineConfig::default());
    let ((first, first_events), (second, second_events)) = tokio::join!(
        run(&runner, &a, dir.path(), false),
        run(&runner, &b, dir.path(), false)
    );
    for (outcome, events) in [(&first, &first_events), (&second, &second_events)] {
        assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
        assert_eq!(
            outcome.outputs["read"]["ok"],
            json!(12),
            "{}",
            events.text()
        );
    }
    let requests = emulator.snapshot().requests;
    let to = |path: &str| requests.iter().filter(|r| r.path.starts_with(path)).count();
    assert_eq!(
        to("/oauth/token"),
        1,
        "one token for both flows: {requests:?}"
    );
    assert_eq!(to("/rest/v1.0/"), 24, "{requests:?}");
    let refused: Vec<_> = requests.iter().filter(|r| r.status == 429).collect();
    assert!(
        refused.is_empty(),
        "{} requests were refused: {refused:?}",
        refused.len()
    );
    emulator.shutdown().await;
}
