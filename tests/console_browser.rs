//! The console in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (chromedriver) by fantoccini. `sluice serve --http` with a
//! console token serves the shipped license sync against the emulators;
//! the browser signs in, runs the flow from the Flows page, watches its run
//! to the end, opens the report, the runs list and the items, and finds a
//! person in the ledger. A second admin approves, from the Approvals
//! page, two of the people a gated copy of the flow held back instead of
//! creating, runs the flow again, and sees exactly those two created in
//! the emulated Procore and the others still pending. Every page is saved as a screenshot under the
//! test's output folder (`target/tmp/console-browser/`), and any message
//! the browser's console logs as an error (a CSP violation, a failed
//! request, a script error) fails the test.
//!
//! `scripts/test-deps` installs `chromium` and `chromium-driver`.
//!
//! Nothing here waits a fixed time: every step waits for what the page (or
//! the process) shows, polling it, up to [`PATIENCE`], which is generous
//! because a debug build of the runs, the browser and the rest of the
//! suite share a loaded machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::console_child::ConsoleChild;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const TOKEN: &str = "browser-test-token-0123456789abcdef";

/// The longest any one wait lasts before the test gives up: far beyond
/// what a step takes even on a loaded machine, so only a real fault
/// reaches it.
const PATIENCE: Duration = Duration::from_secs(300);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(200);

fn first_existing(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Chromedriver's log of the browser's console since the last call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// Headless Chromium behind chromedriver, with a fresh profile.
struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn start(shots: PathBuf) -> Browser {
        let chromium = first_existing(&["/usr/lib/chromium/chromium", "/usr/bin/chromium"])
            .expect("Chromium is not installed: run scripts/test-deps (Debian packages chromium, chromium-driver)");
        let chromedriver = first_existing(&["/usr/bin/chromedriver"]).expect(
            "chromedriver is not installed: run scripts/test-deps (Debian package chromium-driver)",
        );
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut caps = Capabilities::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let webdriver = format!("http://127.0.0.1:{port}");
        // Until chromedriver listens and Chromium has started, a session
        // cannot be made: try again until it can.
        let deadline = Instant::now() + PATIENCE;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&webdriver)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => {
                    panic!("chromedriver never started a Chromium session: {e}")
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        };
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver,
            shots,
            _profile: profile,
        }
    }

    /// Waits for an element, as long as [`PATIENCE`].
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    /// Saves a screenshot and fails on anything the page logged as an error.
    async fn check(&self, name: &str) {
        self.check_expecting(name, None).await;
    }

    /// As [`Browser::check`], for a page whose own status is an error
    /// (`status`, e.g. "404 (Not Found)"): Chromium logs that load, and
    /// only that is let through.
    async fn check_expecting(&self, name: &str, status: Option<&str>) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
        let log = self.client.issue_cmd(BrowserLog).await.unwrap();
        let errors: Vec<String> = log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].to_string())
            .filter(|m| {
                status.is_none_or(|s| {
                    !m.contains(&format!("the server responded with a status of {s}"))
                })
            })
            .collect();
        assert!(
            errors.is_empty(),
            "the {name} page logged errors: {errors:#?}"
        );
    }

    async fn text(&self, css: &str) -> String {
        self.element(css).await.text().await.unwrap()
    }

    async fn body(&self) -> String {
        self.text("body").await
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.element(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.element(css).await.click().await.unwrap();
    }

    /// Waits until `css` holds `want` (the page may reload meanwhile, as
    /// a live run's page does when the run ends).
    async fn wait_text(&self, css: &str, want: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(e) = self.client.find(Locator::Css(css)).await
                && let Ok(t) = e.text().await
                && t.contains(want)
            {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        let body = match self.client.find(Locator::Css("body")).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        panic!("{css} never showed {want:?} in {PATIENCE:?}: {body}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `sluice serve FLOW --http 127.0.0.1:0` with the console token, its
/// stderr collected.
fn serve(data: &Path, flow: &Path, env: &[(String, String)]) -> ConsoleChild {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env_clear()
        .env("SLUICE_DATA_DIR", data)
        .env("SLUICE_CONSOLE_TOKEN", TOKEN)
        .args(["serve", flow.to_str().unwrap(), "--http", "127.0.0.1:0"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    ConsoleChild::spawn(cmd)
}

/// The shipped flow, with a schedule that cannot fire during the test.
fn shipped_flow(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flows/procore-license-sync.toml");
    write_flow(dir, &std::fs::read_to_string(shipped).unwrap())
}

/// The shipped flow whose `create` step waits for a person to approve
/// each new user (keyed by the person's identity key).
fn gated_flow(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flows/procore-license-sync.toml");
    let text = std::fs::read_to_string(shipped).unwrap();
    // The shipped flow holds creates only above `max_unapproved_creates`.
    let guard = "approval = { above = \"${params.max_unapproved_creates}\" }\n";
    assert!(
        text.contains(guard),
        "the shipped flow guards its creates by key"
    );
    write_flow(dir, &text.replace(guard, "approval = \"always\"\n"))
}

fn write_flow(dir: &Path, text: &str) -> PathBuf {
    let line = text
        .lines()
        .find(|l| l.starts_with("schedule = "))
        .expect("the shipped flow has a schedule");
    let text = text.replace(
        line,
        "schedule = { cron = \"0 0 0 1 1 *\", timezone = \"America/Los_Angeles\" }",
    );
    let path = dir.join("procore-license-sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_signs_in_runs_the_sync_and_follows_a_person() {
    let emulator = sluice_emulator::start(sluice_emulator::EmulatorConfig::default())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let flow = shipped_flow(data.path());
    let mut serving = serve(data.path(), &flow, &emulator.env_vars());
    let base = format!("http://{}", serving.console_addr().await);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-browser");
    let b = Browser::start(shots).await;

    // Signing in: every page sends the browser to the login form first.
    b.client.goto(&format!("{base}/runs")).await.unwrap();
    b.wait_text("h1", "Sluice console").await;
    b.check("login").await;
    b.fill("#name", "Dana Admin").await;
    b.fill("#token", "not-the-token-at-all").await;
    b.click("#sign-in").await;
    b.wait_text("#problem", "not the console token").await;
    b.check_expecting("login-refused", Some("401 (Unauthorized)"))
        .await;
    b.fill("#name", "Dana Admin").await;
    b.fill("#token", TOKEN).await;
    b.click("#sign-in").await;
    b.wait_text("h1", "Runs").await;
    assert!(b.body().await.contains("Dana Admin"));

    // Flows: the schedule in words, then "Run now".
    b.client.goto(&format!("{base}/")).await.unwrap();
    b.wait_text("#flows", "procore-license-sync").await;
    let flows = b.text("#flows").await;
    assert!(flows.contains("in America/Los_Angeles"), "{flows}");
    b.check("flows").await;
    b.click("button.run-now").await;
    b.wait_text("h1", "Run ").await;
    b.wait_text("#run-status", "succeeded").await;
    b.wait_text("#steps", "create").await;
    let steps = b.text("#steps").await;
    assert!(
        steps.contains("graph") && steps.contains("procore"),
        "{steps}"
    );
    let frame = b
        .client
        .find(Locator::Css("iframe.report"))
        .await
        .expect("the report is shown inline");
    assert_eq!(frame.attr("sandbox").await.unwrap().as_deref(), Some(""));
    b.check("run").await;

    // The items of the create step, searched.
    let state = emulator.snapshot();
    let created = state.created_users();
    let person = created.first().expect("the sync created someone");
    let email = person.email_address.clone();
    b.fill("input.item-search", &email.to_uppercase()).await;
    b.click("form.filters button").await;
    b.wait_text("table.items", &email).await;
    b.check("run-items").await;

    // The runs list.
    b.client.goto(&format!("{base}/runs")).await.unwrap();
    b.wait_text("#runs", "succeeded").await;
    b.check("runs").await;

    // The ledger: the person's story, found by mail in any case.
    b.client.goto(&format!("{base}/ledger")).await.unwrap();
    b.fill("#email", &email.to_uppercase()).await;
    b.click("#find").await;
    b.wait_text("#story", "created").await;
    b.check("ledger").await;

    // An unknown run: the 404 page, with no console errors.
    b.client
        .goto(&format!("{base}/runs/no-such-run"))
        .await
        .unwrap();
    b.wait_text("h1", "Not found").await;
    b.check_expecting("not-found", Some("404 (Not Found)"))
        .await;

    // Signing out returns to the login form.
    b.client.goto(&format!("{base}/")).await.unwrap();
    b.click("nav form button").await;
    b.wait_text("h1", "Sluice console").await;
    let _ = b.client.clone().close().await;
}

/// Signs in with the token under `name`, from the login form.
async fn sign_in(b: &Browser, base: &str, name: &str) {
    b.client.goto(&format!("{base}/approvals")).await.unwrap();
    b.wait_text("h1", "Sluice console").await;
    b.fill("#name", name).await;
    b.fill("#token", TOKEN).await;
    b.click("#sign-in").await;
    b.wait_text("h1", "Approvals").await;
}

/// Runs the only served flow from the Flows page and waits for its end.
async fn run_now(b: &Browser, base: &str) {
    b.client.goto(&format!("{base}/")).await.unwrap();
    b.click("button.run-now").await;
    b.wait_text("h1", "Run ").await;
    b.wait_text("#run-status", "succeeded").await;
}

/// The identity keys of the people the emulated Procore got through its API.
fn created(emulator: &sluice_emulator::RunningEmulator) -> Vec<String> {
    let state = emulator.snapshot();
    let mut keys: Vec<String> = state
        .created_users()
        .iter()
        .map(|u| u.email_address.trim().to_lowercase())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_approves_two_of_the_held_creations_and_only_those_run() {
    let emulator = sluice_emulator::start(sluice_emulator::EmulatorConfig::default())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let flow = gated_flow(data.path());
    let mut serving = serve(data.path(), &flow, &emulator.env_vars());
    let base = format!("http://{}", serving.console_addr().await);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-browser-approvals");
    let b = Browser::start(shots).await;
    sign_in(&b, &base, "Dana Admin").await;
    b.wait_text("#no-open", "No plan waits").await;

    // The first run holds every creation in a plan; nobody is created.
    run_now(&b, &base).await;
    assert_eq!(created(&emulator), Vec::<String>::new());
    b.client.goto(&format!("{base}/approvals")).await.unwrap();
    b.wait_text("#open-plans", "procore-license-sync").await;
    b.check("approvals").await;
    b.click("#open-plans a").await;
    b.wait_text("#plan-status", "open").await;
    let boxes = b
        .client
        .find_all(Locator::Css("#plan-items input[name=key]"))
        .await
        .unwrap();
    let mut keys = Vec::new();
    for checkbox in &boxes {
        keys.push(checkbox.attr("value").await.unwrap().unwrap());
    }
    assert!(keys.len() >= 3, "three or more people wait: {keys:?}");
    let status = b.text("#plan-status").await;
    assert!(
        status.contains(&format!("{} pending, 0 approved", keys.len())),
        "{status}"
    );
    b.check("plan").await;

    // Two of them approved, with a note, under the login's name.
    boxes[0].click().await.unwrap();
    boxes[1].click().await.unwrap();
    b.fill("#note", "new starters, confirmed with HR").await;
    b.click("#approve").await;
    b.wait_text("#plan-status", "2 approved").await;
    let decisions = b.text("#decisions").await;
    assert!(
        decisions.contains("Dana Admin") && decisions.contains("new starters, confirmed with HR"),
        "{decisions}"
    );
    for key in &keys[..2] {
        assert!(decisions.contains(key.as_str()), "{key}: {decisions}");
    }
    b.check("plan-decided").await;

    // The next run creates exactly those two; the others still wait.
    run_now(&b, &base).await;
    let mut approved: Vec<String> = keys[..2].iter().map(|k| k.to_lowercase()).collect();
    approved.sort();
    assert_eq!(created(&emulator), approved);
    b.client.goto(&format!("{base}/approvals")).await.unwrap();
    b.wait_text("#open-plans", "procore-license-sync").await;
    b.click("#open-plans a").await;
    b.wait_text("#plan-status", "2 ran").await;
    let status = b.text("#plan-status").await;
    assert!(
        status.contains(&format!("open: {} pending, 0 approved", keys.len() - 2)),
        "{status}"
    );
    let rows = b.text("#plan-items").await;
    for key in &keys[2..] {
        assert!(rows.contains(key.as_str()), "{key} still waits: {rows}");
    }
    b.check("plan-after-run").await;
    let _ = b.client.clone().close().await;
}
