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

/// A path, the headers and the bytes a [`fixed_server`] answers it with.
type Route = (&'static str, Vec<(&'static str, String)>, Vec<u8>);

/// A loopback server answering each path with fixed headers and bytes.
async fn fixed_server(routes: Vec<Route>) -> String {
    let routes = std::sync::Arc::new(routes);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let routes = routes.clone();
        async move {
            let Some((_, headers, body)) = routes.iter().find(|(p, _, _)| *p == uri.path()) else {
                return axum::response::Response::builder()
                    .status(404)
                    .body(axum::body::Body::empty())
                    .unwrap();
            };
            let mut response = axum::response::Response::builder().status(200);
            for (n, v) in headers {
                response = response.header(*n, v);
            }
            response.body(axum::body::Body::from(body.clone())).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn gzip(chunks: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for chunk in chunks {
        encoder.write_all(&chunk).unwrap();
    }
    encoder.finish().unwrap()
}

/// Runs one GET of `path` per item against `url` with a 1 MiB response
/// cap; returns what the component got back for each.
async fn get_each(url: &str, paths: &[&str]) -> Vec<serde_json::Value> {
    let list: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    let text = format!(
        r#"
name = "harden"
[params]
paths = [{}]
[connections.api]
base_url = "{url}/api"
max_response_bytes = 1048576

[[step]]
id = "call"
uses = "{hostile}"
connections = ["api"]
for_each = "${{params.paths}}"
with = {{ action = "get", connection = "api", url = "${{item}}" }}
"#,
        list.join(", "),
        hostile = fixture("hostile").display(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_flow(dir.path(), "flow.toml", &text);
    let flow = load(&path, &[]);
    let (outcome, events) = run(&runner(EngineConfig::default()), &flow, dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    outcome.outputs["call"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["output"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_answers_are_decompressed_within_the_size_cap() {
    let small = gzip(std::iter::once(br#"{"ok":true}"#.to_vec()));
    // 200 MiB of zeros: about 200 KiB compressed.
    let bomb = gzip((0..200).map(|_| vec![0u8; 1024 * 1024]));
    assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
    let gz = || vec![("content-encoding", "gzip".to_string())];
    let url = fixed_server(vec![
        ("/api/small", gz(), small),
        ("/api/bomb", gz(), bomb),
        (
            "/api/zstd",
            vec![("content-encoding", "zstd".into())],
            b"(\xb5/\xfd".to_vec(),
        ),
    ])
    .await;
    let got = get_each(&url, &["small", "bomb", "zstd"]).await;
    assert_eq!(got[0], json!({"status": 200, "body": r#"{"ok":true}"#}));
    let bomb_error = got[1]["send_error"].as_str().unwrap_or_default();
    assert!(bomb_error.contains("1048576"), "{}", got[1]);
    let zstd_error = got[2]["send_error"].as_str().unwrap_or_default();
    assert!(zstd_error.contains("Content-Encoding `zstd`"), "{}", got[2]);
}
