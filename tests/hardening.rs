//! The breaks an outside security test found, one test each: hostile
//! components and loopback services that echo, alias and misbehave, run
//! through the real host.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::*;
use serde_json::json;
use sluice::engine::EngineConfig;
use sluice::run::{RunEvent, Status};

/// A client secret and a token with the characters encoders disagree on.
const CLIENT_SECRET: &str = "cs~Q8.secret/with+plus=";
const TOKEN: &str = "tok~en/with+plus=and.more";

/// One step: the hostile component GETs `path` on connection `api` and
/// returns the status and body it was given.
fn one_get(server: &TestServer, path: &str) -> String {
    format!(
        r#"
name = "harden"
[connections.api]
base_url = "{url}/api"
auth.oauth2_client_credentials = {{ token_url = "{url}/token", client_id = "app", client_secret = "${{env.API_SECRET}}" }}
retry = {{ max_attempts = 2, base_delay = "10ms", max_delay = "20ms" }}

[[step]]
id = "call"
uses = "{hostile}"
connections = ["api"]
with = {{ action = "get", connection = "api", url = "{path}" }}
"#,
        url = server.url,
        hostile = fixture("hostile").display(),
    )
}

/// Every encoding of `secret` the issue lists: plain, URL-encoded,
/// form-encoded (`~` as %7E), JSON-escaped (`\/`), base64.
fn encodings(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        secret.to_string(),
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .replace("%2E", ".")
            .replace("%7E", "~")
            .replace("%5F", "_")
            .replace("%2D", "-"),
        form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        secret.replace('/', "\\/"),
        b64.encode(secret),
        b64.encode(format!("app:{secret}")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_echoes_credentials_never_hands_them_to_the_component() {
    // The API echoes the request's Authorization header and the client
    // secret (as a misconfigured gateway's debug page would) in every form.
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => token_reply(TOKEN, 3600),
        _ => {
            let auth = seen.header("authorization").unwrap_or("").to_string();
            let mut forms = encodings(&auth);
            forms.extend(encodings(TOKEN));
            forms.extend(encodings(CLIENT_SECRET));
            json_reply(200, json!({ "echo": forms }))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_flow(dir.path(), "flow.toml", &one_get(&server, "echo"));
    let flow = load(&path, &[("API_SECRET", CLIENT_SECRET)]);
    let runner = runner(EngineConfig::default());
    let (outcome, events) = run(&runner, &flow, dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    // What the component itself returned, before any output redaction.
    let seen_by_component = outcome.outputs["call"].to_string();
    assert!(
        seen_by_component.contains("[redacted]"),
        "{seen_by_component}"
    );
    for secret in [TOKEN, CLIENT_SECRET] {
        for form in encodings(secret) {
            let form_in_json = serde_json::to_string(&form).unwrap();
            let form_in_json = form_in_json.trim_matches('"');
            assert!(
                !seen_by_component.contains(form_in_json),
                "the component saw {form:?}: {seen_by_component}"
            );
        }
    }
    let said = events.events().into_iter().any(|e| {
        matches!(e, RunEvent::Log { message, .. }
            if message.contains("removed") && message.contains("GET") && message.contains("/api/echo"))
    });
    assert!(said, "the run's log says so: {}", events.text());
}
