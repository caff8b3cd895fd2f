//! Components from an OCI registry, against a real one on loopback: the
//! `docker-registry` package's server (Distribution), started on a temp
//! directory by each test. `sluice components push` publishes, a flow uses
//! the component by tag, `sluice.lock` pins the digest, a component
//! re-published under the same tag is not run until `sluice components
//! update`, and a pulled component runs with the registry stopped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::emulated::*;
use serde_json::Value;
use sluice_emulator::{EmulatorConfig, Scenario};

/// A Distribution registry serving a temp directory on a loopback port;
/// stopped when dropped.
struct Registry {
    child: Child,
    host: String,
    _storage: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        Registry::serve(None)
    }

    /// A registry that lets in only `user` with `password` (htpasswd
    /// authentication; its bcrypt entry made by Apache's `htpasswd`).
    fn with_login(user: &str, password: &str) -> Registry {
        Registry::serve(Some((user, password)))
    }

    fn serve(login: Option<(&str, &str)>) -> Registry {
        let binary = ["docker-registry", "/usr/bin/docker-registry"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .expect("docker-registry is not installed: run scripts/test-deps");
        let storage = tempfile::tempdir().unwrap();
        // A port the system just handed out; the registry binds it next.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            storage.path().join("data").display()
        );
        if let Some((user, password)) = login {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd is not installed (apache2-utils): run scripts/test-deps");
            assert!(out.status.success());
            let htpasswd = storage.path().join("htpasswd");
            std::fs::write(&htpasswd, out.stdout).unwrap();
            text += &format!(
                "auth:\n  htpasswd:\n    realm: sluice-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        std::fs::write(&config, text).unwrap();
        let child = Command::new(binary)
            .args(["serve", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry {
            child,
            host,
            _storage: storage,
        };
        registry.wait_until_up();
        registry
    }

    /// Waits for `/v2/` to answer; the deadline is generous for a loaded machine.
    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(&self.host) {
                use std::io::{Read, Write};
                let _ = write!(s, "GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.host);
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                // 401: up, and asking for credentials.
                if answer.starts_with("HTTP/1.")
                    && (answer.contains(" 200 ") || answer.contains(" 401 "))
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shipped flow in `dir`, its `compare` step using `uses`.
fn flow_using(dir: &Path, uses: &str) -> PathBuf {
    let text = std::fs::read_to_string(flow_path()).unwrap();
    let text = text.replace("uses = \"compare\"", &format!("uses = \"{uses}\""));
    assert!(text.contains(uses));
    let path = dir.join("sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn builtin_compare(dir: &Path) -> PathBuf {
    let path = dir.join("compare.wasm");
    std::fs::write(&path, sluice_builtins::find("compare").unwrap().wasm).unwrap();
    path
}

fn custom_compare() -> PathBuf {
    PathBuf::from(sluice_builtins::fixture("custom-compare").unwrap())
}

/// `sluice components push`, returning the digest it printed.
async fn push(data: &Path, wasm: &Path, reference: &str) -> String {
    let run = sluice_cmd(
        &[],
        data,
        &["components", "push", wasm.to_str().unwrap(), reference],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let digest = run.stdout.trim().rsplit(' ').next().unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{}", run.stdout);
    digest
}

fn pinned(flow: &Path, reference: &str) -> String {
    let text = std::fs::read_to_string(flow.parent().unwrap().join("sluice.lock")).unwrap();
    let lock: toml::Table = toml::from_str(&text).unwrap();
    lock["components"][reference].as_str().unwrap().to_string()
}

/// Runs the flow; `Some(true)` when the custom build of compare ran.
async fn run_custom(env: &[(String, String)], data: &Path, flow: &Path) -> Option<bool> {
    let run = sluice_cmd(env, data, &["run", flow.to_str().unwrap(), "--json"]).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    run.output_of("diff").get("custom").and_then(Value::as_bool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_component_is_pinned_on_first_use_and_a_moved_tag_waits_for_update() {
    let mut registry = Registry::start();
    let (_emulator, env, data) = emulated(EmulatorConfig {
        scenario: Scenario::generate(20, 3),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("oci://{}/sluice/compare:1", registry.host);
    let first = push(data.path(), &builtin_compare(dir.path()), &reference).await;
    let flow = flow_using(dir.path(), &reference);

    // First use: pulled, pinned, run.
    assert_eq!(run_custom(&env, data.path(), &flow).await, None);
    assert_eq!(pinned(&flow, &reference), first);

    // Someone re-publishes the tag: the locked flow keeps its digest, even
    // with nothing cached.
    let second = push(data.path(), &custom_compare(), &reference).await;
    assert_ne!(first, second);
    let fresh = tempfile::tempdir().unwrap();
    assert_eq!(run_custom(&env, fresh.path(), &flow).await, None);
    assert_eq!(pinned(&flow, &reference), first);

    // `components update` pins what the tag points at now.
    let update = sluice_cmd(
        &[],
        data.path(),
        &["components", "update", flow.to_str().unwrap()],
    )
    .await;
    assert_eq!(update.code, 0, "{}", update.stderr);
    assert!(
        update
            .stdout
            .contains(&format!("pinned {second} (was {first})")),
        "{}",
        update.stdout
    );
    assert_eq!(pinned(&flow, &reference), second);
    assert_eq!(run_custom(&env, data.path(), &flow).await, Some(true));

    // With the registry gone, the pinned component runs from the cache.
    registry.stop();
    assert_eq!(run_custom(&env, data.path(), &flow).await, Some(true));
    // Its progress line names it as the flow does, not by its cache path.
    let plain = sluice_cmd(&env, data.path(), &["run", flow.to_str().unwrap()]).await;
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert!(
        plain.stderr.contains(&format!("· diff ({reference})")),
        "{}",
        plain.stderr
    );
    // A pin that was never pulled cannot be: the error says what to do.
    let offline = tempfile::tempdir().unwrap();
    let run = sluice_cmd(&env, offline.path(), &["run", flow.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("sluice components pull"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_pull_fetches_ahead_and_changed_cached_bytes_are_refused() {
    let registry = Registry::start();
    let (_emulator, env, data) = emulated(EmulatorConfig {
        scenario: Scenario::generate(10, 5),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("oci://{}/sluice/compare:custom", registry.host);
    let digest = push(data.path(), &custom_compare(), &tag).await;
    // By digest: nothing to pin, and the lock stays empty of it.
    let by_digest = format!("oci://{}/sluice/compare@{digest}", registry.host);
    let flow = flow_using(dir.path(), &by_digest);
    let pull = sluice_cmd(
        &[],
        data.path(),
        &["components", "pull", flow.to_str().unwrap()],
    )
    .await;
    assert_eq!(pull.code, 0, "{}", pull.stderr);
    assert!(
        pull.stdout.contains(&format!("pulled {digest}")),
        "{}",
        pull.stdout
    );
    assert_eq!(run_custom(&env, data.path(), &flow).await, Some(true));

    // A flow with no oci:// component: said, not a silent success.
    let other = tempfile::tempdir().unwrap();
    let builtins = flow_using(other.path(), "compare");
    let nothing = sluice_cmd(
        &[],
        data.path(),
        &["components", "pull", builtins.to_str().unwrap()],
    )
    .await;
    assert_eq!(nothing.code, 0, "{}", nothing.stderr);
    assert!(
        nothing
            .stdout
            .contains("uses no oci:// component: nothing to pull or pin"),
        "{}",
        nothing.stdout
    );

    // The cached component is changed behind sluice's back: refused.
    let hex = digest.strip_prefix("sha256:").unwrap();
    let cached = data
        .path()
        .join("components/sha256")
        .join(hex)
        .join("component.wasm");
    std::fs::copy(builtin_compare(dir.path()), &cached).unwrap();
    let run = sluice_cmd(&env, data.path(), &["run", flow.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("does not match its digest"),
        "{}",
        run.stderr
    );
}

/// Both ways of giving credentials to a registry that wants them, and
/// what the registry refuses: anonymous requests and a wrong password,
/// each with an error saying what to do. The password is never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_login_comes_from_the_environment_or_the_docker_config_and_is_never_shown() {
    const USER: &str = "sluice-ci";
    const PASSWORD: &str = "Reg1stry-Pa55word/with+symbols";
    const WRONG: &str = "Not-The-Pa55word";
    let registry = Registry::with_login(USER, PASSWORD);
    let (_emulator, env, data) = emulated(EmulatorConfig {
        scenario: Scenario::generate(10, 9),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let wasm = custom_compare();
    let reference = format!("oci://{}/sluice/compare:1", registry.host);
    let push = |env: Vec<(String, String)>| {
        let data = data.path().to_path_buf();
        let (wasm, reference) = (wasm.clone(), reference.clone());
        async move {
            let args = ["components", "push", wasm.to_str().unwrap(), &reference];
            sluice_cmd(&env, &data, &args).await
        }
    };
    let login = |password: &str| {
        vec![
            ("SLUICE_REGISTRY_USERNAME".to_string(), USER.to_string()),
            ("SLUICE_REGISTRY_PASSWORD".to_string(), password.to_string()),
        ]
    };
    let mut printed = Vec::new();

    let anonymous = push(vec![]).await;
    assert_eq!(anonymous.code, 1, "{}", anonymous.stderr);
    let refused = format!("registry {} refused an anonymous request", registry.host);
    assert!(anonymous.stderr.contains(&refused), "{}", anonymous.stderr);
    assert!(anonymous.stderr.contains("SLUICE_REGISTRY_PASSWORD"));
    assert!(anonymous.stderr.contains("docker login"));
    let wrong = push(login(WRONG)).await;
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(
        wrong
            .stderr
            .contains("refused the credentials in SLUICE_REGISTRY_USERNAME"),
        "{}",
        wrong.stderr
    );
    let pushed = push(login(PASSWORD)).await;
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    printed.extend([anonymous, wrong, pushed]);

    // Pulling anonymously is refused before anything runs.
    let flow = flow_using(dir.path(), &reference);
    let flow_arg = flow.to_str().unwrap();
    let anonymous = sluice_cmd(&env, data.path(), &["run", flow_arg]).await;
    assert_eq!(anonymous.code, 2, "{}", anonymous.stderr);
    assert!(anonymous.stderr.contains(&refused), "{}", anonymous.stderr);
    assert!(!dir.path().join("sluice.lock").exists());

    // A Docker config file that is not JSON: the pull is anonymous, and the
    // refusal says the file could not be read rather than "log in".
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("config.json"), "{\"auths\": {").unwrap();
    let mut with_broken = env.clone();
    with_broken.push(("DOCKER_CONFIG".into(), broken.path().display().to_string()));
    let unread = sluice_cmd(&with_broken, data.path(), &["run", flow_arg]).await;
    assert_eq!(unread.code, 2, "{}", unread.stderr);
    assert!(
        unread.stderr.contains(&format!(
            "registry {} refused an anonymous request, made because the Docker config file could not be read",
            registry.host
        )) && unread.stderr.contains("not valid JSON"),
        "{}",
        unread.stderr
    );
    printed.push(unread);

    // The Docker config file's login, as `docker login` writes it.
    let docker = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        docker.path().join("config.json"),
        serde_json::json!({ "auths": { &registry.host: { "auth": auth } } }).to_string(),
    )
    .unwrap();
    let mut with_config = env.clone();
    with_config.push(("DOCKER_CONFIG".into(), docker.path().display().to_string()));
    let run = sluice_cmd(&with_config, data.path(), &["run", flow_arg, "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.output_of("diff")["custom"], true);
    assert!(dir.path().join("sluice.lock").exists());
    printed.extend([anonymous, run]);

    // Nothing printed or written holds the password or the wrong one, in
    // any encoding.
    let mut places: Vec<(String, Vec<u8>)> = printed
        .iter()
        .flat_map(|r| {
            [
                ("stdout".to_string(), r.stdout.clone().into_bytes()),
                ("stderr".to_string(), r.stderr.clone().into_bytes()),
            ]
        })
        .collect();
    places.extend(common::secrets::files_under(data.path()));
    places.extend(common::secrets::files_under(dir.path()));
    let found = common::secrets::secrets_found(&places, &[PASSWORD.into(), WRONG.into()]);
    assert!(found.is_empty(), "leaked: {found:#?}");
}

/// A registry whose server error echoes the credentials it was sent (seen
/// in the wild): the error is shown, the password and the Basic header's
/// base64 are not. A stub: Distribution never echoes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_error_that_echoes_the_credentials_does_not_show_them() {
    const USER: &str = "bob";
    const PASSWORD: &str = "RegPassw0rd-Secret!xyz";
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        let Some(basic) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            let challenge = [("www-authenticate", "Basic realm=\"stub\"")];
            return (StatusCode::UNAUTHORIZED, challenge).into_response();
        };
        let message = format!("denied for credentials {USER}:{PASSWORD} ({basic})");
        let body = serde_json::json!({"errors": [{"code": "DENIED", "message": message}]});
        (StatusCode::INTERNAL_SERVER_ERROR, body.to_string()).into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let flow = flow_using(dir.path(), &format!("oci://{host}/sluice/compare:1.0"));
    let env = [
        ("SLUICE_REGISTRY_USERNAME".to_string(), USER.to_string()),
        ("SLUICE_REGISTRY_PASSWORD".to_string(), PASSWORD.to_string()),
    ];
    let flow_arg = flow.to_str().unwrap();
    let pull = sluice_cmd(&env, data.path(), &["components", "pull", flow_arg]).await;
    let validate = sluice_cmd(&env, data.path(), &["validate", flow_arg]).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    for run in [&pull, &validate] {
        assert_ne!(run.code, 0, "{}", run.stderr);
        assert!(run.stderr.contains("code: 500"), "{}", run.stderr);
        assert!(
            run.stderr
                .contains("denied for credentials [redacted] (Basic [redacted])"),
            "{}",
            run.stderr
        );
        for shown in [&run.stdout, &run.stderr] {
            assert!(!shown.contains(PASSWORD), "{shown}");
            assert!(!shown.contains(&basic), "{shown}");
        }
    }
}

/// A registry that cannot be reached is refused with the reason (here,
/// nothing listens on the port), not only the URL that was asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_says_why() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let flow = flow_using(
        dir.path(),
        &format!("oci://127.0.0.1:{port}/sluice/compare:custom"),
    );
    let pull = sluice_cmd(
        &[],
        data.path(),
        &["components", "pull", flow.to_str().unwrap()],
    )
    .await;
    assert_eq!(pull.code, 2, "{}", pull.stderr);
    assert!(
        pull.stderr.to_lowercase().contains("connection refused"),
        "{}",
        pull.stderr
    );
}
