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
[secrets]
api_secret = {{ env = "API_SECRET" }}
[connections.api]
base_url = "{url}/api"
auth.oauth2_client_credentials = {{ token_url = "{url}/token", client_id = "app", client_secret = "${{secrets.api_secret}}" }}
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

/// A service answering in UTF-16 (`charset=utf-16le`, or big-endian)
/// echoes the token with a NUL byte beside each character: removed all the
/// same before the component sees the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_echoes_credentials_in_utf16_never_hands_them_over() {
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => token_reply(TOKEN, 3600),
        path => {
            let auth = seen.header("authorization").unwrap_or("").to_string();
            let text = json!({ "echo": auth, "token": TOKEN }).to_string();
            let big = path.ends_with("be");
            let units = text.encode_utf16().flat_map(|u| {
                if big {
                    u.to_be_bytes()
                } else {
                    u.to_le_bytes()
                }
            });
            // ASCII in UTF-16 is ASCII bytes and NULs: valid UTF-8 too.
            let body = String::from_utf8(units.collect()).unwrap();
            let charset = if big { "utf-16be" } else { "utf-16le" };
            (
                200,
                vec![(
                    "content-type".into(),
                    format!("application/json; charset={charset}"),
                )],
                body,
            )
        }
    })
    .await;
    for path in ["echo16le", "echo16be"] {
        let dir = tempfile::tempdir().unwrap();
        let flow_file = write_flow(dir.path(), "flow.toml", &one_get(&server, path));
        let flow = load(&flow_file, &[("API_SECRET", CLIENT_SECRET)]);
        let runner = runner(EngineConfig::default());
        let (outcome, events) = run(&runner, &flow, dir.path(), false).await;
        assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
        let body = outcome.outputs["call"]["body"]
            .as_str()
            .unwrap()
            .replace('\0', "");
        assert!(!body.contains(TOKEN), "{path}: the component saw {body}");
        assert!(body.contains("[redacted]"), "{path}: {body}");
    }
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
    let (outcome, events) =
        run_keeping_items(&runner(EngineConfig::default()), &flow, dir.path(), false).await;
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

/// A flow whose one step GETs each of `urls` (one item each) on connection
/// `api`, whose base URL is `base`, with a token from `token_url`.
fn get_each_url(base: &str, token_url: &str, urls: &[String]) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        r#"
name = "harden"
[params]
urls = [{}]
[secrets]
api_secret = {{ env = "API_SECRET" }}
[connections.api]
base_url = "{base}"
auth.oauth2_client_credentials = {{ token_url = "{token_url}", client_id = "app", client_secret = "${{secrets.api_secret}}" }}

[[step]]
id = "call"
uses = "{hostile}"
connections = ["api"]
for_each = "${{params.urls}}"
on_error = "continue"
with = {{ action = "get", connection = "api", url = "${{item}}" }}
"#,
        list.join(", "),
        hostile = fixture("hostile").display(),
    )
}

/// Runs `text` and returns each item's error code (`ok` for a success).
async fn item_codes(text: &str) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_flow(dir.path(), "flow.toml", text);
    let flow = load(&path, &[("API_SECRET", CLIENT_SECRET)]);
    let (outcome, events) = run(&runner(EngineConfig::default()), &flow, dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let codes = outcome.outputs["call"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| match i["status"].as_str() {
            Some("ok") => "ok".to_string(),
            _ => i["error"]["code"].as_str().unwrap_or("?").to_string(),
        })
        .collect();
    (codes, events.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_127_0_0_1_never_goes_to_another_loopback_name() {
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => token_reply(TOKEN, 3600),
        _ => json_reply(200, json!({})),
    })
    .await;
    let port = server.url.rsplit(':').next().unwrap().to_string();
    // Another user's service on the same port of [::1]: it counts whoever
    // connects.
    let squatter = tokio::net::TcpListener::bind(format!("[::1]:{port}"))
        .await
        .unwrap();
    let connected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connected.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = squatter.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let urls = [
        format!("http://[::1]:{port}/api/x"),
        format!("http://localhost:{port}/api/x"),
        format!("http://127.0.0.1:{port}/api/x"),
    ];
    let text = get_each_url(
        &format!("{}/api", server.url),
        &format!("{}/token", server.url),
        &urls,
    );
    let (codes, events) = item_codes(&text).await;
    assert_eq!(
        codes,
        ["sandbox-violation", "sandbox-violation", "ok"],
        "{events}"
    );
    assert_eq!(connected.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(server.to("/api/x").len(), 1, "only the base URL's own host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_forms_that_servers_read_as_dot_dot_are_refused() {
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => token_reply(TOKEN, 3600),
        _ => json_reply(200, json!({})),
    })
    .await;
    let escapes = [
        "..;/admin",
        "x/..;/..;/admin",
        "%2e%2e;/admin",
        "\u{FF0E}\u{FF0E}/admin",
        "%EF%BC%8E%EF%BC%8E/admin",
        "%c0%ae%c0%ae/admin",
        "%2525252e%2525252e/admin",
        "users/first.last",
    ];
    let urls: Vec<String> = escapes.iter().map(|e| e.to_string()).collect();
    let text = get_each_url(
        &format!("{}/api/v1", server.url),
        &format!("{}/token", server.url),
        &urls,
    );
    let (codes, events) = item_codes(&text).await;
    let mut expected = vec!["sandbox-violation"; escapes.len() - 1];
    expected.push("ok");
    assert_eq!(codes, expected, "{events}");
    let reached: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|s| s.path != "/token")
        .map(|s| s.path)
        .collect();
    assert_eq!(reached, ["/api/v1/users/first.last"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_read_cannot_be_turned_into_a_write() {
    use sluice::connections::{Connection, Method, OutgoingRequest, SendError};
    use sluice::flow::model::ConnectionSpec;
    let server = TestServer::start(|_, _| json_reply(200, json!({}))).await;
    let spec = ConnectionSpec::new(
        "api",
        url::Url::parse(&format!("{}/api", server.url)).unwrap(),
    );
    let conn = Connection::new(
        std::sync::Arc::new(spec),
        sluice::connections::http_client().unwrap(),
        sluice::redact::Redactor::default(),
    );
    let get = |headers: Vec<(&str, &str)>, body: Option<&[u8]>| OutgoingRequest {
        method: Method::Get,
        url: "things/1".into(),
        query: vec![],
        headers: headers
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.map(<[u8]>::to_vec),
        idempotent: false,
        retry_when_not_acted: false,
    };
    let mut refused = vec![get(vec![], Some(br#"{"delete": true}"#))];
    for name in [
        "X-HTTP-Method-Override",
        "X-Method-Override",
        "X-HTTP-Method",
        "Upgrade",
        "TE",
        "Expect",
        "Keep-Alive",
        "Proxy-Connection",
        "Connection",
        "Forwarded",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "Via",
    ] {
        refused.push(get(vec![(name, "DELETE")], None));
    }
    for request in refused {
        let what = format!("{:?} {:?}", request.headers, request.body);
        let (result, _) = conn.send(request, true, None).await;
        assert!(
            matches!(result, Err(SendError::Violation(_))),
            "{what}: {result:?}"
        );
    }
    assert!(server.requests().is_empty(), "nothing was sent");
    // A plain read still goes out in a dry run.
    let (result, _) = conn
        .send(get(vec![("Accept", "application/json")], None), true, None)
        .await;
    assert_eq!(result.unwrap().status, 200);
}

/// Runs the `sluice` binary with `args` on data directory `data`; returns
/// its exit status, stdout and stderr.
fn sluice(data: &std::path::Path, args: &[&str]) -> (i32, Vec<u8>, Vec<u8>) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("SLUICE_DATA_DIR")
        .output()
        .expect("run sluice");
    (out.status.code().unwrap_or(-1), out.stdout, out.stderr)
}

/// Bytes a terminal obeys: C0 controls but the line feed, DEL, C1 (as
/// UTF-8), and the right-to-left override.
fn active_bytes(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    text.chars()
        .filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202E}')
        .map(|c| format!("{c:?}"))
        .collect()
}

#[test]
fn what_components_and_flows_write_reaches_the_terminal_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // An output key and the component's error try to rewrite the line,
    // set the clipboard (OSC 52), plant a link (OSC 8), use a C1 CSI and
    // reverse the text. (A flow name that tries is refused: below.)
    let attack = r"\u001b[2K\r\u001b]52;c;aGk=\u0007\u009b32m\u001b]8;;http://evil\u0007\u202e";
    let text = format!(
        r#"
name = "plain"

# The hostile component declares the role `api`; these steps send nothing.
[connections.api]
base_url = "https://api.example.com"

[[step]]
id = "echo"
uses = "{hostile}"
connections = ["api"]
with = {{ action = "echo", "{attack}count" = 1 }}

[[step]]
id = "fail"
uses = "{hostile}"
connections = ["api"]
with = {{ action = "{attack}✓ fail done\nsecond paragraph" }}
"#,
        hostile = fixture("hostile").display(),
    );
    let named = write_flow(
        dir.path(),
        "named.toml",
        &text.replace(
            r#"name = "plain""#,
            &format!(r#"name = "plain{attack}✓ all good""#),
        ),
    );
    let (status, out, err) = sluice(&data, &["run", named.to_str().unwrap()]);
    assert_eq!(status, 2, "{}", String::from_utf8_lossy(&err));
    assert!(
        String::from_utf8_lossy(&err)
            .contains("the flow's `name` holds a control character (U+001B)"),
        "{}",
        String::from_utf8_lossy(&err)
    );
    let mut seen = vec![("run of a hostile name", out, err)];
    let flow = write_flow(dir.path(), "flow.toml", &text);
    let flow = flow.to_str().unwrap();
    let (status, out, err) = sluice(&data, &["run", flow]);
    assert_eq!(status, 1, "{}", String::from_utf8_lossy(&err));
    let err_text = String::from_utf8_lossy(&err).into_owned();
    assert!(
        err_text.contains("\\u{1b}[2K"),
        "shown, not obeyed: {err_text}"
    );
    let last = err_text.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && last.contains("second paragraph"),
        "the error is one paragraph: {err_text}"
    );
    seen.push(("run", out, err));
    // `--json` keeps stdout for its events, and says the failure on
    // stderr as the plain run does: a watcher of stderr is not left with
    // a bare exit status.
    let (status, out, err) = sluice(&data, &["run", flow, "--json"]);
    assert_eq!(status, 1, "{}", String::from_utf8_lossy(&err));
    for line in String::from_utf8_lossy(&out).lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "stdout is events only: {line}"
        );
    }
    let json_err = String::from_utf8_lossy(&err).into_owned();
    assert_eq!(json_err.lines().last(), Some(last), "{json_err}");
    seen.push(("run --json", out, err));
    let (_, out, err) = sluice(&data, &["runs"]);
    seen.push(("runs", out, err));
    let (_, listed, _) = sluice(&data, &["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&listed).unwrap();
    let id = runs[0]["run_id"]
        .as_str()
        .or_else(|| runs[0]["id"].as_str())
        .unwrap()
        .to_string();
    seen.push(("runs --json", listed, Vec::new()));
    for args in [
        vec!["runs", "show", id.as_str()],
        vec!["runs", "show", id.as_str(), "--items"],
        vec!["runs", "show", id.as_str(), "--json"],
    ] {
        let (_, out, err) = sluice(&data, &args);
        seen.push(("runs show", out, err));
    }
    for (what, out, err) in &seen {
        for (stream, bytes) in [("stdout", out), ("stderr", err)] {
            let active = active_bytes(bytes);
            assert!(
                active.is_empty(),
                "{what} {stream} has {active:?}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

#[cfg(unix)]
#[test]
fn the_data_directory_is_owner_only_and_a_swapped_cache_entry_is_never_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (hostile, noop) = (fixture("hostile"), fixture("noop"));
    let text = format!(
        r#"
name = "cache"
[connections.api]
base_url = "https://api.example.com"
[[step]]
id = "echo"
uses = "{}"
connections = ["api"]
with = {{ action = "echo", marker = "hostile ran" }}
[[step]]
id = "noop"
uses = "{}"
"#,
        hostile.display(),
        noop.display()
    );
    let flow = write_flow(dir.path(), "flow.toml", &text);
    let flow = flow.to_str().unwrap();
    let (status, _, err) = sluice(&data, &["run", flow]);
    assert_eq!(status, 0, "{}", String::from_utf8_lossy(&err));

    // Owner-only, all of it.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let cache = data.join("cache");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&data.join("cache.key")), 0o600);
    let mut files = vec![data.join("history.sqlite")];
    for entry in std::fs::read_dir(&data)
        .unwrap()
        .chain(std::fs::read_dir(&cache).unwrap())
    {
        let path = entry.unwrap().path();
        if path.is_file() {
            files.push(path);
        } else {
            assert_eq!(mode(&path), 0o700, "{}", path.display());
        }
    }
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }

    // Replace the hostile component's compiled entry with noop's.
    let entry_of = |wasm: &std::path::Path| {
        let digest = sluice::engine::cache::digest(&std::fs::read(wasm).unwrap());
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&digest)
            })
            .unwrap()
    };
    std::fs::copy(entry_of(&noop), entry_of(&hostile)).unwrap();
    let (status, out, err) = sluice(&data, &["run", flow, "--json"]);
    assert_eq!(status, 0, "{}", String::from_utf8_lossy(&err));
    let out = String::from_utf8_lossy(&out);
    let echo = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "step_finished" && e["step"] == "echo")
        .unwrap();
    assert_eq!(echo["output"]["marker"], "hostile ran", "{echo}");

    // A cache directory others may write is not used at all.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::copy(entry_of(&noop), entry_of(&hostile)).unwrap();
    let (status, _, err) = sluice(&data, &["run", flow]);
    let err = String::from_utf8_lossy(&err);
    assert_eq!(status, 0, "{err}");
    assert!(
        err.contains("cache is not used") && err.contains("writable by other users"),
        "{err}"
    );
}

/// Runs `sluice` with `args` and the flow's secret in its environment, off
/// the async runtime (the test's server answers on it meanwhile).
async fn sluice_with_secret(data: &std::path::Path, args: &[&str]) -> (String, Vec<u8>) {
    let data = data.to_path_buf();
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--data-dir")
            .arg(&data)
            .args(&owned)
            .env_remove("SLUICE_DATA_DIR")
            .env_remove("SLUICE_DATABASE_URL")
            .env("API_SECRET", CLIENT_SECRET)
            .output()
            .expect("run sluice")
    })
    .await
    .unwrap();
    let mut printed = out.stdout;
    printed.extend_from_slice(&out.stderr);
    (args.join(" "), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_a_run_leaves_is_free_of_every_secret_in_every_encoding() {
    // The service echoes the request's Authorization header, the token and
    // the client secret in every encoding, in its body and its headers; the
    // component hands what it got to its output, an artifact, an item's
    // output and its own error message.
    let server = TestServer::start(|seen, _| match seen.path.as_str() {
        "/token" => token_reply(TOKEN, 3600),
        _ => {
            let auth = seen.header("authorization").unwrap_or("").to_string();
            let mut forms = common::secrets::secret_forms(&auth);
            forms.extend(common::secrets::secret_forms(TOKEN));
            forms.extend(common::secrets::secret_forms(CLIENT_SECRET));
            let mut reply = json_reply(200, json!({ "echo": forms }));
            reply.1.push(("x-debug-authorization".into(), auth));
            reply
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text =
        one_get(&server, "echo").replacen("[secrets]", "[params]\nitems = [1, 2]\n\n[secrets]", 1)
            + &format!(
                r#"artifacts = {{ "echo.txt" = "body" }}

[[step]]
id = "items"
uses = "{hostile}"
connections = ["api"]
for_each = "${{params.items}}"
concurrency = 2
with = {{ action = "get", connection = "api", url = "echo?item=${{item}}" }}

[[step]]
id = "fail"
uses = "{hostile}"
connections = ["api"]
on_error = "continue"
with = {{ action = "${{steps.call.body}}" }}
"#,
                hostile = fixture("hostile").display(),
            );
    let flow = write_flow(dir.path(), "flow.toml", &text);
    let flow = flow.to_str().unwrap();
    let data = dir.path().join("data");
    let tapes = dir.path().join("tapes");
    let tapes_arg = tapes.to_str().unwrap();
    let mut printed = Vec::new();
    printed.push(sluice_with_secret(&data, &["run", flow, "-v", "--record", tapes_arg]).await);
    printed.push(sluice_with_secret(&data, &["run", flow, "--json"]).await);
    printed.push(sluice_with_secret(&data, &["run", flow, "--dry-run", "-v"]).await);
    let (_, listed) = sluice_with_secret(&data, &["runs", "--json"]).await;
    printed.push(sluice_with_secret(&data, &["runs"]).await);
    let runs: serde_json::Value = serde_json::from_slice(&listed)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&listed)));
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    for run in runs {
        let id = run["run_id"]
            .as_str()
            .or_else(|| run["id"].as_str())
            .unwrap();
        for extra in [&[][..], &["--items"], &["--json"]] {
            let mut args = vec!["runs", "show", id];
            args.extend_from_slice(extra);
            printed.push(sluice_with_secret(&data, &args).await);
        }
    }
    printed.push(("runs --json".into(), listed));

    // The service did echo the live token, so there was something to leak.
    let echoed = server.to("/api/echo");
    assert!(echoed.len() >= 3 * 3, "{} requests", echoed.len());
    let bearer = format!("Bearer {TOKEN}");
    assert!(
        echoed
            .iter()
            .all(|s| s.header("authorization") == Some(&bearer))
    );
    let shown = String::from_utf8_lossy(&printed[1].1).into_owned();
    assert!(shown.contains("[redacted]"), "{shown}");
    let first = String::from_utf8_lossy(&printed[0].1).into_owned();
    assert!(
        first.contains("removed"),
        "the run says it removed secrets: {first}"
    );

    let mut places = printed;
    places.extend(common::secrets::files_under(&data));
    places.extend(common::secrets::files_under(&tapes));
    let names: Vec<&str> = places.iter().map(|(n, _)| n.as_str()).collect();
    for expected in ["history.sqlite", "echo.txt", ".yml"] {
        assert!(
            names.iter().any(|n| n.contains(expected)),
            "nothing named {expected} was scanned: {names:?}"
        );
    }
    let secrets = [TOKEN.to_string(), CLIENT_SECRET.to_string(), bearer];
    // The scan finds what it looks for: the token base64-encoded inside a
    // longer text at each offset, and form-encoded.
    let b64 = base64::engine::general_purpose::STANDARD;
    for prefix in ["", "a", "ab"] {
        let planted = format!("x{}y", b64.encode(format!("{prefix}{TOKEN}.")));
        let planted = [("planted".to_string(), planted.into_bytes())];
        assert!(!common::secrets::secrets_found(&planted, &secrets).is_empty());
    }
    let planted: String = form_urlencoded::byte_serialize(TOKEN.as_bytes()).collect();
    let planted = [("planted".to_string(), planted.into_bytes())];
    assert!(!common::secrets::secrets_found(&planted, &secrets).is_empty());
    let found = common::secrets::secrets_found(&places, &secrets);
    assert!(found.is_empty(), "leaked: {found:#?}");
}

const MIB: usize = 1024 * 1024;

/// A flow of hostile steps, each `(id, extra keys)`; no connections.
/// `${params.two}`, `four` and `five` are lists of that many numbers.
fn hostile_steps(steps: &[(&str, &str)]) -> String {
    let hostile = fixture("hostile");
    let mut text = "name = \"limits\"\n\n[params]\ntwo = [1, 2]\nfour = [1, 2, 3, 4]\nfive = [1, 2, 3, 4, 5]\n"
        .to_string();
    for (id, keys) in steps {
        text.push_str(&format!(
            "\n[[step]]\nid = \"{id}\"\nuses = \"{}\"\n{keys}\n",
            hostile.display()
        ));
    }
    text
}

/// The `StepFinished` error of `step`, or "" when it has none.
fn step_error(events: &[RunEvent], step: &str) -> String {
    events
        .iter()
        .find_map(|e| match e {
            RunEvent::StepFinished { step: s, error, .. } if s == step => {
                Some(error.clone().unwrap_or_default())
            }
            _ => None,
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_items_share_one_memory_budget() {
    // Four items of 100 MiB at once would take 400 MiB; the budget is 160.
    let dir = tempfile::tempdir().unwrap();
    let text = hostile_steps(&[
        (
            "hold",
            "for_each = \"${params.four}\"\nconcurrency = 4\nwith = { action = \"hold\", mib = 100 }",
        ),
        ("greedy", "with = { action = \"hold\", mib = 200 }"),
    ]);
    let flow = load(&write_flow(dir.path(), "flow.toml", &text), &[]);
    let runner = runner(EngineConfig {
        memory_budget: 160 * MIB,
        ..EngineConfig::default()
    });
    let (outcome, events) = run(&runner, &flow, dir.path(), false).await;
    let events = events.events();
    // Each item waited for memory another gave back: all four succeeded.
    let held = &outcome.outputs["hold"];
    assert_eq!(held["ok"], 4, "{held}");
    let peak = runner.engine.memory_budget().peak();
    assert!(
        (100 * MIB..=160 * MIB).contains(&peak),
        "peak {} MiB",
        peak / MIB
    );
    // One instance wanting more than the whole budget fails at once, clearly.
    assert_eq!(outcome.status, Status::Failed);
    let error = step_error(&events, "greedy");
    assert!(
        error.contains("memory budget of 160 MiB")
            && error.contains("more than the whole budget; raise SLUICE_MEMORY_BUDGET above it"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_over_their_caps_fail_their_step_or_item() {
    let dir = tempfile::tempdir().unwrap();
    // `big` returns {"data": "x…"}: 11 bytes around the data.
    let text = hostile_steps(&[
        (
            "step",
            "on_error = \"continue\"\nmax_output_bytes = 1000\nwith = { action = \"big\", bytes = 2000 }",
        ),
        (
            "each",
            "on_error = \"continue\"\nfor_each = \"${params.two}\"\nmax_item_output_bytes = 500\nwith = { action = \"big\", bytes = 600 }",
        ),
        (
            "together",
            "on_error = \"continue\"\nfor_each = \"${params.five}\"\nmax_output_bytes = 1000\nwith = { action = \"big\", bytes = 300 }",
        ),
    ]);
    let flow = load(&write_flow(dir.path(), "flow.toml", &text), &[]);
    let (outcome, events) =
        run_keeping_items(&runner(EngineConfig::default()), &flow, dir.path(), false).await;
    let events = events.events();
    let error = step_error(&events, "step");
    assert!(
        error.contains(
            "its output is 2011 bytes, over the limit of 1000 bytes (`max_output_bytes`)"
        ),
        "{error}"
    );
    let each = &outcome.outputs["each"];
    assert_eq!(
        (each["ok"].as_u64(), each["failed"].as_u64()),
        (Some(0), Some(2)),
        "{each}"
    );
    assert_eq!(each["items"][0]["error"]["code"], "output-too-large");
    assert!(
        each["items"][0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 500 bytes (`max_item_output_bytes`)"),
        "{each}"
    );
    // Items run one at a time: the fourth takes the total past 1000 bytes
    // and the fifth is never started; the step fails despite `continue`.
    let ran = events
        .iter()
        .filter(|e| matches!(e, RunEvent::ItemFinished { step, .. } if step == "together"))
        .count();
    assert_eq!(ran, 4);
    let error = step_error(&events, "together");
    assert!(
        error.contains("its items' outputs together reached 1244 bytes, over the limit of 1000 bytes (`max_output_bytes`)"),
        "{error}"
    );
}

/// An item counts its outcome before it gives its place to the next: at
/// concurrency 1 under `on_error = "fail"`, the item after a failed one is
/// never started (tried many times: the next item is waiting for the place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_item_under_fail_stops_the_next_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let text = hostile_steps(&[(
        "each",
        "for_each = \"${params.five}\"\nwith = { action = \"unavailable\", message = \"down\" }",
    )]);
    let flow = load(&write_flow(dir.path(), "flow.toml", &text), &[]);
    let runner = runner(EngineConfig::default());
    for _ in 0..20 {
        let (outcome, events) = run(&runner, &flow, dir.path(), false).await;
        assert_eq!(outcome.status, Status::Failed);
        let started = events
            .events()
            .iter()
            .filter(|e| matches!(e, RunEvent::ItemFinished { step, .. } if step == "each"))
            .count();
        assert_eq!(started, 1, "only the first item ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_exits_is_said_to_have_exited() {
    let dir = tempfile::tempdir().unwrap();
    let text = hostile_steps(&[
        (
            "fails",
            "on_error = \"continue\"\nwith = { action = \"exit\", code = 3 }",
        ),
        ("succeeds", "with = { action = \"exit\", code = 0 }"),
    ]);
    let flow = load(&write_flow(dir.path(), "flow.toml", &text), &[]);
    let (_, events) = run(&runner(EngineConfig::default()), &flow, dir.path(), false).await;
    let events = events.events();
    for (step, status) in [("fails", 1), ("succeeds", 0)] {
        let error = step_error(&events, step);
        assert!(
            error.contains(&format!(
                "it exited with status {status} instead of returning"
            )) && error.contains("exit()")
                && !error.contains("backtrace")
                && !error.contains("trapped"),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_log_lines_is_cut_with_one_line_saying_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let text = hostile_steps(&[
        ("step", "with = { action = \"flood\", lines = 5000 }"),
        (
            "items",
            "for_each = \"${params.two}\"\nwith = { action = \"flood\", lines = 1500 }",
        ),
    ]);
    let flow = load(&write_flow(dir.path(), "flow.toml", &text), &[]);
    let (outcome, events) = run(&runner(EngineConfig::default()), &flow, dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded);
    let lines = |step: &str| -> Vec<String> {
        events
            .events()
            .into_iter()
            .filter_map(|e| match e {
                RunEvent::Log {
                    step: s, message, ..
                } if s == step => Some(message),
                _ => None,
            })
            .collect()
    };
    let step = lines("step");
    assert_eq!(step.len(), 1001);
    assert_eq!(
        step.last().unwrap(),
        "4000 more log lines were dropped: a step or item logs at most 1000"
    );
    // Each item has its own thousand.
    let items = lines("items");
    assert_eq!(items.len(), 2 * 1001);
    let notes = items
        .iter()
        .filter(|l| l.starts_with("500 more log lines"))
        .count();
    assert_eq!(notes, 2);
}

/// A `for_each` step whose items' outputs no later step reads keeps none
/// of them in its output: each is in its item's `ItemFinished` (its
/// record) only, and the items' outputs together are not held to
/// `max_output_bytes` (nothing holds them). The same step read by a later
/// step (`${steps.ID.items}`, or `${steps.ID}` whole) keeps every output,
/// under the cap as before; reading only its counts keeps none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_each_outputs_no_later_step_reads_are_not_kept_in_the_step_output() {
    let dir = tempfile::tempdir().unwrap();
    let each = |bytes: usize| {
        format!(
            "on_error = \"continue\"\nfor_each = \"${{params.five}}\"\nmax_output_bytes = 1000\nwith = {{ action = \"big\", bytes = {bytes} }}"
        )
    };
    let text = hostile_steps(&[
        ("unread", &each(300)),
        ("listed", &each(300)),
        ("whole", &each(10)),
        (
            "reader",
            "with = { action = \"echo\", ok = \"${steps.unread.ok}\", listed = \"${steps.listed.items}\", whole = \"${steps.whole}\" }",
        ),
    ]);
    let flow = load(&write_flow(dir.path(), "flow.toml", &text), &[]);
    let read: Vec<(&str, bool)> = flow
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.items_read))
        .collect();
    assert_eq!(
        read,
        [
            ("unread", false),
            ("listed", true),
            ("whole", true),
            ("reader", false)
        ]
    );
    let (outcome, events) = run(&runner(EngineConfig::default()), &flow, dir.path(), false).await;
    let events = events.events();
    // Five outputs of 311 bytes: over the 1000 the step's output may hold,
    // but it holds none of them, and the step succeeds.
    let unread = &outcome.outputs["unread"];
    assert_eq!(
        (unread["ok"].as_u64(), unread["failed"].as_u64()),
        (Some(5), Some(0)),
        "{unread}"
    );
    let items = unread["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{unread}");
    for entry in items {
        assert_eq!(entry["status"], "ok", "{entry}");
        assert_eq!(entry["output"], serde_json::Value::Null, "{entry}");
    }
    assert!(unread.to_string().len() < 500, "{unread}");
    // Each item's record has its output.
    let recorded: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::ItemFinished { step, output, .. } if step == "unread" => {
                Some(output.as_ref()?.redacted()["data"].as_str()?.len())
            }
            _ => None,
        })
        .collect();
    assert_eq!(recorded, [300; 5]);
    // Read by a later step: the cap holds as before.
    let error = step_error(&events, "listed");
    assert!(
        error.contains("over the limit of 1000 bytes (`max_output_bytes`)"),
        "{error}"
    );
    let whole = &outcome.outputs["whole"]["items"];
    for entry in whole.as_array().unwrap() {
        assert_eq!(
            entry["output"]["data"].as_str().map(str::len),
            Some(10),
            "{whole}"
        );
    }
    assert_eq!(outcome.outputs["reader"]["whole"]["ok"], 5);
    assert_eq!(outcome.outputs["reader"]["ok"], 5);
}

/// A history that cannot be opened at all when the run starts: the run
/// goes on without it (losing a record must not stop the work), and
/// exits 1 saying it is not recorded. It exited 0 with only a warning.
#[test]
fn a_run_whose_history_cannot_be_opened_exits_1() {
    let data = tempfile::tempdir().unwrap();
    let flow = write_flow(
        data.path(),
        "flow.toml",
        "name = \"kept\"\n[[step]]\nid = \"a\"\nuses = \"compare\"\nwith = { people = [], procore_users = [] }\n",
    );
    std::fs::write(data.path().join("history.sqlite"), vec![0xAB; 8192]).unwrap();
    let (code, out, err) = sluice(data.path(), &["run", flow.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&err);
    assert_eq!(code, 1, "{}{err}", String::from_utf8_lossy(&out));
    assert!(err.contains("this run is not recorded"), "{err}");
    assert!(
        err.contains(
            "ran to its end, but is not recorded at all: the run history could not be opened"
        ),
        "{err}"
    );
    assert!(err.contains("finished"), "{err}");
}

/// A history damaged under a run (here the pages of its `steps` table)
/// loses part of the run's record: the run goes to its end, but says so
/// and exits 1 rather than 0, so a monitor that reads the exit status
/// sees it.
#[test]
fn a_run_whose_history_could_not_all_be_written_exits_1() {
    let data = tempfile::tempdir().unwrap();
    let flow = write_flow(
        data.path(),
        "flow.toml",
        "name = \"kept\"\n[[step]]\nid = \"a\"\nuses = \"compare\"\nwith = { people = [], procore_users = [] }\n",
    );
    let flow = flow.to_str().unwrap();
    let (code, _, err) = sluice(data.path(), &["run", flow]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let history = data.path().join("history.sqlite");
    let (page_size, pages): (i64, Vec<i64>) = {
        let db = rusqlite::Connection::open(&history).unwrap();
        let size = db.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        let mut roots = db
            .prepare("SELECT rootpage FROM sqlite_master WHERE tbl_name = 'steps'")
            .unwrap();
        let pages = roots
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (size, pages)
    };
    assert!(!pages.is_empty());
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&history)
            .unwrap();
        for page in pages {
            let at = u64::try_from((page - 1) * page_size).unwrap();
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&vec![0xAB; usize::try_from(page_size).unwrap()])
                .unwrap();
        }
    }
    let (code, out, err) = sluice(data.path(), &["run", flow]);
    let err = String::from_utf8_lossy(&err);
    assert_eq!(code, 1, "{}{err}", String::from_utf8_lossy(&out));
    assert!(
        err.contains("the run history could not be written") && err.contains("malformed"),
        "{err}"
    );
    assert!(
        err.contains("ran to its end, but part of its history")
            && err.contains("`sluice runs` and `sluice ledger` do not show all it did"),
        "{err}"
    );
    assert!(err.contains("finished"), "{err}");
}
