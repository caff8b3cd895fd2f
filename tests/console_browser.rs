//! The console in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (chromedriver) by fantoccini. `sluice serve --http` with a
//! console token serves the shipped license sync against the emulators;
//! the browser signs in, runs the flow from the Flows page, watches its run
//! to the end, opens the report, the runs list and the items, and finds a
//! person in the ledger. A second scenario is the one an admin is mailed
//! about: on a tenant the first run adopted, three people lose their
//! license (two leave the group, one account is disabled) and the next
//! run holds their deactivations; from the Approvals page the admin
//! approves two of the three with a note, runs the flow, and sees exactly
//! those two deactivated and taken off the project in the emulated
//! Procore, the third still pending, and a leaver's story in the ledger.
//! Every page is saved as a screenshot under the
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
use common::emulated::{Licensed, licensed_tenant};
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

const LICENSE: &str = "License – Microsoft E3";
const ANN: &str = "ann@contoso.com";
const BOB: &str = "bob@contoso.com";
const FLO: &str = "flo@contoso.com";
const GUS: &str = "gus@contoso.com";
const CY: &str = "cy@contoso.com";
const DEE: &str = "dee@contoso.com";
const EVE: &str = "eve@contoso.com";

/// Seven licensed people, each with an active Procore user on the
/// project. Three of them leaving leaves more than half the holders, so
/// compare's guard stays quiet and the plan is the flow's ordinary one:
/// every deactivation waits.
async fn seven_licensed() -> (sluice_emulator::RunningEmulator, Vec<Licensed>, String) {
    let (scenario, group, people) = licensed_tenant(LICENSE, &[ANN, BOB, CY, DEE, EVE, FLO, GUS]);
    let emulator = sluice_emulator::start(sluice_emulator::EmulatorConfig {
        scenario,
        ..sluice_emulator::EmulatorConfig::default()
    })
    .await
    .unwrap();
    (emulator, people, group)
}

/// Whether the emulated Procore user `id` is active, and on the project.
fn active_on_project(emulator: &sluice_emulator::RunningEmulator, id: u64) -> (bool, bool) {
    let state = emulator.snapshot();
    let active = state
        .procore_users()
        .iter()
        .find(|u| u.id == id)
        .unwrap()
        .is_active;
    let member = state.project_users().iter().any(|m| m.user_id == id);
    (active, member)
}

/// The Procore writes the emulator answered so far, as `METHOD path`.
fn procore_writes(emulator: &sluice_emulator::RunningEmulator) -> Vec<String> {
    emulator
        .snapshot()
        .requests
        .iter()
        .filter(|r| r.method != "GET" && r.path.starts_with("/rest/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_approves_two_of_three_deactivations_and_only_those_are_applied() {
    let (emulator, people, group) = seven_licensed().await;
    let data = tempfile::tempdir().unwrap();
    let flow = shipped_flow(data.path());
    let mut serving = serve(data.path(), &flow, &emulator.env_vars());
    let base = format!("http://{}", serving.console_addr().await);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-browser-approvals");
    let b = Browser::start(shots).await;
    sign_in(&b, &base, "Dana Admin").await;
    b.wait_text("#no-open", "No plan waits").await;
    b.check("approvals-none").await;

    // The first run adopts the seven matches and changes nobody.
    run_now(&b, &base).await;
    assert_eq!(procore_writes(&emulator), Vec::<String>::new());

    // Cy and Dee leave the license group; Eve's account is disabled. The
    // next run holds all three deactivations for an admin (by default
    // every deactivation waits) and writes nothing.
    for p in &people {
        if [CY, DEE].contains(&p.mail) {
            assert!(emulator.remove_member(&group, &p.graph_id));
        }
        if p.mail == EVE {
            assert!(emulator.set_account_enabled(&p.graph_id, false));
        }
    }
    run_now(&b, &base).await;
    b.wait_text("#steps", "deactivate").await;
    b.check("run-held").await;
    assert_eq!(procore_writes(&emulator), Vec::<String>::new());

    b.client.goto(&format!("{base}/approvals")).await.unwrap();
    b.wait_text("#open-plans", "deactivate").await;
    b.check("approvals").await;
    b.click("#open-plans a").await;
    b.wait_text("#plan-status", "open: 3 pending, 0 approved")
        .await;
    let rows = b.text("#plan-items").await;
    for mail in [CY, DEE, EVE] {
        assert!(rows.contains(mail), "{mail} waits: {rows}");
    }
    for mail in [ANN, BOB, FLO, GUS] {
        assert!(!rows.contains(mail), "{mail} still holds a license: {rows}");
    }
    for (mail, why) in [
        (CY, "no license group"),
        (DEE, "no license group"),
        (EVE, "account disabled"),
    ] {
        let row = b
            .text(&format!("#plan-items tr:has(input[value=\"{mail}\"])"))
            .await;
        assert!(row.contains(why), "{mail} waits because {why}: {row}");
    }
    let reason = b.text("#reason").await;
    assert!(
        reason.contains("more than the 0 this step may run unapproved"),
        "{reason}"
    );
    b.check("plan").await;

    // Cy and Eve approved, with a note, under the login's name.
    for mail in [CY, EVE] {
        b.click(&format!("#plan-items input[name=key][value=\"{mail}\"]"))
            .await;
    }
    b.fill("#note", "left the company, confirmed with HR").await;
    b.click("#approve").await;
    b.wait_text("#plan-status", "1 pending, 2 approved").await;
    let decisions = b.text("#decisions").await;
    assert!(
        decisions.contains("Dana Admin")
            && decisions.contains("left the company, confirmed with HR"),
        "{decisions}"
    );
    for mail in [CY, EVE] {
        assert!(decisions.contains(mail), "{mail}: {decisions}");
    }
    assert!(!decisions.contains(DEE), "{decisions}");
    b.check("plan-decided").await;

    // The next run deactivates exactly those two and takes them off the
    // project; Dee still waits, active.
    run_now(&b, &base).await;
    b.check("run-applied").await;
    let id = |mail: &str| people.iter().find(|p| p.mail == mail).unwrap().procore_id;
    let (company, project) = {
        let state = emulator.snapshot();
        (state.scenario.company_id, state.scenario.project_ids[0])
    };
    let mut expected = Vec::new();
    for mail in [CY, EVE] {
        expected.push(format!(
            "PATCH /rest/v1.0/companies/{company}/users/{}",
            id(mail)
        ));
        expected.push(format!(
            "DELETE /rest/v1.0/projects/{project}/users/{}/actions/remove",
            id(mail)
        ));
    }
    let mut writes = procore_writes(&emulator);
    writes.sort();
    expected.sort();
    assert_eq!(writes, expected);
    for mail in [CY, EVE] {
        assert_eq!(
            active_on_project(&emulator, id(mail)),
            (false, false),
            "{mail}"
        );
    }
    for mail in [ANN, BOB, DEE, FLO, GUS] {
        assert_eq!(
            active_on_project(&emulator, id(mail)),
            (true, true),
            "{mail}"
        );
    }
    b.client.goto(&format!("{base}/approvals")).await.unwrap();
    b.wait_text("#open-plans", "deactivate").await;
    b.click("#open-plans a").await;
    b.wait_text(
        "#plan-status",
        "open: 1 pending, 0 approved, 0 rejected, 2 ran",
    )
    .await;
    let pending = b.text("#plan-items tr.pending").await;
    assert!(pending.contains(DEE), "Dee still waits: {pending}");
    b.check("plan-after-run").await;

    // Eve's story in the ledger, found by mail in any case.
    b.client.goto(&format!("{base}/ledger")).await.unwrap();
    b.fill("#email", &EVE.to_uppercase()).await;
    b.click("#find").await;
    b.wait_text("#story", "deactivated").await;
    let story = b.text("#story").await;
    assert!(
        story.contains("approved by Dana Admin: left the company, confirmed with HR"),
        "the approval is part of Eve's story: {story}"
    );
    b.check("ledger-leaver").await;
    let _ = b.client.clone().close().await;
}
