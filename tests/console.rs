//! The web console over HTTP: every page, and every refusal — a wrong or
//! missing token, a POST without its CSRF token, with a planted cookie or
//! from another origin, a non-loopback address without a token, a foreign
//! `Host` on an open console, another account on an open console, unknown
//! paths and ids — with hostile names shown as text; live updates of a running run;
//! `sluice serve --http` running a flow now and reporting its health; and
//! `/metrics` after a real license sync, read by a Prometheus parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::Value;
use serde_json::json;
use sluice::console::access::load_token;
use sluice::console::{Options, Running};
use sluice_store::{
    Decision, DecisionRequest, GateUpdate, HeldItem, HistoryWrite, ItemEnd, ItemStatus, Location,
    NewRun, PlanItemState, RunRef, RunStatus, StepEnd, StepStart, StepStatus, Store, Trigger,
};

const HOSTILE: &str = "<script>alert(\"x\")</script> & 'co'";
const TOKEN: &str = "console-token-0123456789-abcdef";

/// A data directory whose history holds one finished run of a flow with a
/// hostile name: a `for_each` step with a failed item, request counts and
/// an HTML report in the run's folder.
struct Seeded {
    dir: tempfile::TempDir,
    run: String,
}

/// Writes one run's history, as a run does.
struct Writer {
    store: Store,
    run: RunRef,
}

impl Writer {
    async fn open(data: &Path, run: &str, flow: &str) -> Writer {
        let location = Location::Sqlite(sluice_store::path_in(data));
        Writer {
            store: Store::open(&location).await.unwrap(),
            run: RunRef::unfenced(run, flow),
        }
    }

    async fn w(&self, write: HistoryWrite) {
        self.store.write_one(&self.run, write).await.unwrap();
    }

    async fn start(&self, flow_file: &str, output_dir: &str) {
        self.w(HistoryWrite::StartRun(NewRun {
            id: self.run.id.clone(),
            flow: self.run.flow.clone(),
            flow_file: flow_file.into(),
            trigger: Trigger::Manual,
            dry_run: false,
            output_dir: output_dir.into(),
            replica: None,
            started_at: chrono::Utc::now(),
        }))
        .await;
    }

    async fn step(&self, step: &str, component: &str, items: Option<usize>) {
        self.w(HistoryWrite::StartStep(StepStart {
            step: step.into(),
            component: component.into(),
            input: json!({}),
            items_total: items,
            started_at: chrono::Utc::now(),
        }))
        .await;
    }

    async fn end_step(&self, step: &str, status: StepStatus, error: Option<&str>, conns: Value) {
        self.w(HistoryWrite::FinishStep(StepEnd {
            step: step.into(),
            component: "procore-create-user".into(),
            status,
            output: None,
            error: error.map(String::from),
            connections: conns,
            duration_ms: 60,
            attempts: None,
            ended_at: chrono::Utc::now(),
        }))
        .await;
    }

    async fn finish(&self, status: RunStatus, error: Option<&str>) {
        self.w(HistoryWrite::FinishRun {
            status,
            error: error.map(String::from),
            ended_at: chrono::Utc::now(),
        })
        .await;
    }
}

fn item(
    index: usize,
    status: ItemStatus,
    input: Value,
    output: Option<Value>,
    error: Option<&str>,
    conns: Value,
) -> HistoryWrite {
    HistoryWrite::Item(ItemEnd {
        step: "create".into(),
        index,
        key: None,
        status,
        input: input.into(),
        output: output.map(Into::into),
        error: error.map(String::from),
        connections: conns,
        duration_ms: 20,
        attempts: None,
        ended_at: chrono::Utc::now(),
        spends_approval: None,
    })
}

async fn seeded() -> Seeded {
    let dir = tempfile::tempdir().unwrap();
    let run = sluice_store::new_run_id();
    let out = sluice_store::run_dir(dir.path(), &run);
    std::fs::create_dir_all(&out).unwrap();
    let w = Writer::open(dir.path(), &run, HOSTILE).await;
    w.start("flows/<evil>.toml", out.to_str().unwrap()).await;
    w.step("create", "procore-create-user", Some(2)).await;
    let conns = json!({"procore": {"requests": 3, "retried": 1, "throttled": 1, "wait_ms": 1500}});
    w.w(item(
        0,
        ItemStatus::Succeeded,
        json!({"key": "ann@example.com", "name": HOSTILE}),
        Some(json!({"status": "created", "id": 7})),
        None,
        conns.clone(),
    ))
    .await;
    w.w(item(
        1,
        ItemStatus::Failed,
        json!({"key": "bob@example.com"}),
        None,
        Some("HTTP 422: <b>login taken</b>"),
        json!({}),
    ))
    .await;
    w.end_step(
        "create",
        StepStatus::Failed,
        Some("1 of 2 items failed"),
        conns,
    )
    .await;
    let report = out.join("report.html");
    std::fs::write(&report, "<html><body><h1>Report</h1></body></html>").unwrap();
    w.w(HistoryWrite::Artifact {
        name: "report.html".into(),
        path: report.to_str().unwrap().into(),
    })
    .await;
    w.finish(
        RunStatus::Failed,
        Some("step `create` failed: <b>1 of 2</b>"),
    )
    .await;
    Seeded { dir, run }
}

async fn console(data: &Path, addr: &str, token: Option<&str>, metrics_public: bool) -> Running {
    let token = load_token(token.map(String::from), None).unwrap();
    sluice::console::start(
        Options {
            listen: addr.parse::<SocketAddr>().unwrap().into(),
            token,
            metrics_public,
            database: Location::Sqlite(sluice_store::path_in(data)),
        },
        None,
        Vec::new(),
    )
    .await
    .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", addr.port())
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn get(addr: SocketAddr, path: &str, cookies: &str) -> Page {
    let mut req = client().get(url(addr, path));
    if !cookies.is_empty() {
        req = req.header(header::COOKIE, cookies);
    }
    read(req.send().await.unwrap()).await
}

async fn get_with(addr: SocketAddr, path: &str, cookies: &str, headers: &[(&str, &str)]) -> Page {
    let mut req = client().get(url(addr, path));
    if !cookies.is_empty() {
        req = req.header(header::COOKIE, cookies);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    read(req.send().await.unwrap()).await
}

async fn post(addr: SocketAddr, path: &str, cookies: &str, form: &[(&str, &str)]) -> Page {
    let mut req = client().post(url(addr, path)).form(form);
    if !cookies.is_empty() {
        req = req.header(header::COOKIE, cookies);
    }
    read(req.send().await.unwrap()).await
}

async fn read(r: reqwest::Response) -> Page {
    Page {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

/// `name=value` pairs of the response's Set-Cookie headers, and the full lines.
fn set_cookies(p: &Page) -> BTreeMap<String, String> {
    p.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| {
            let line = v.to_str().unwrap().to_string();
            let name = line.split('=').next().unwrap().to_string();
            (name, line)
        })
        .collect()
}

fn cookie_value(line: &str) -> &str {
    line.split(';').next().unwrap().split_once('=').unwrap().1
}

/// The CSRF value of the hidden field of a page's forms.
fn csrf_field(body: &str) -> String {
    field_value(body, "csrf")
}

/// The value of the form field `name` on a page.
fn field_value(body: &str, name: &str) -> String {
    let field = format!("name=\"{name}\" value=\"");
    let at = body
        .find(&field)
        .unwrap_or_else(|| panic!("a form with a `{name}` field: {body}"));
    let rest = &body[at + field.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn assert_page(p: &Page, status: StatusCode, what: &str) {
    assert_eq!(p.status, status, "{what}: {}", p.body);
    let csp = p.headers.get(header::CONTENT_SECURITY_POLICY).unwrap();
    assert!(
        csp.to_str().unwrap().contains("default-src 'none'"),
        "{what}"
    );
    assert_eq!(
        p.headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
        "nosniff"
    );
    // Not `no-referrer`, under which browsers send the console's own
    // forms with `Origin: null`, refused as from another site.
    assert_eq!(
        p.headers.get(header::REFERRER_POLICY).unwrap(),
        "same-origin"
    );
}

fn assert_hostile_is_text(p: &Page, what: &str) {
    assert!(!p.body.contains("<script>alert"), "{what}: raw script tag");
    assert!(
        !p.body.contains("<b>"),
        "{what}: raw markup from the history"
    );
}

#[tokio::test]
async fn every_page_shows_the_history_with_hostile_names_as_text() {
    let s = seeded().await;
    let c = console(s.dir.path(), "127.0.0.1:0", None, false).await;
    let run = sluice::console::view::run_href(&s.run);
    let flow = url::form_urlencoded::byte_serialize(HOSTILE.as_bytes()).collect::<String>();
    let pages = [
        ("/", "flows"),
        ("/runs", "runs"),
        (
            &*format!("/runs?flow={flow}&status=failed"),
            "runs filtered",
        ),
        (&*run, "run"),
        (
            &*format!("{run}?step=create&q=BOB@"),
            "run with an item search",
        ),
        ("/ledger?email=ANN@example.com", "ledger"),
    ];
    for (path, what) in pages {
        let p = get(c.addr, path, "").await;
        assert_page(&p, StatusCode::OK, what);
        assert_hostile_is_text(&p, what);
        assert!(
            p.body.contains("&#60;script&#62;"),
            "{what} names the flow as text"
        );
    }
    let r = get(c.addr, &run, "").await.body;
    assert!(
        r.contains("step `create` failed: &#60;b&#62;1 of 2&#60;/b&#62;"),
        "the error in full"
    );
    assert!(
        r.contains("HTTP 422: &#60;b&#62;login taken&#60;/b&#62;"),
        "the item's error"
    );
    assert!(
        r.find("bob@example.com").unwrap() < r.find("ann@example.com").unwrap(),
        "failed first"
    );
    assert!(
        r.contains("<td>procore</td><td>3</td><td>1</td><td>1</td><td>1.5 s</td>"),
        "{r}"
    );
    assert!(
        r.contains("<iframe class=\"report\" sandbox"),
        "the report inline"
    );
    let searched = get(c.addr, &format!("{run}?step=create&q=BOB@"), "")
        .await
        .body;
    assert!(searched.contains("1 items match") && !searched.contains("ann@example.com"));
    // A page number that is not one gets the console's own page.
    for query in [
        "?step=create&page=-1",
        "?page=x",
        "?page=99999999999999999999999",
    ] {
        let odd = get(c.addr, &format!("{run}{query}"), "").await;
        assert_eq!(odd.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            odd.body.contains("<html") && odd.body.contains("must be a whole number"),
            "{query}: {}",
            odd.body
        );
    }
    let second = get(c.addr, &format!("{run}?step=create&page=1"), "").await;
    assert_eq!(second.status, StatusCode::OK);
    let ledger = get(c.addr, "/ledger?email=ANN@example.com", "").await.body;
    assert!(
        ledger.contains("created") && ledger.contains(&s.run),
        "{ledger}"
    );
    // The report: served sandboxed, framed only by the console.
    let report = get(c.addr, &format!("{run}/files/report.html"), "").await;
    assert_eq!(report.status, StatusCode::OK);
    let csp = report.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.starts_with("sandbox;") && csp.contains("frame-ancestors 'self'"),
        "{csp}"
    );
    let css = get(c.addr, "/static/console.css", "").await;
    assert_eq!(css.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    c.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_ids_get_a_404_page() {
    let s = seeded().await;
    let c = console(s.dir.path(), "127.0.0.1:0", None, false).await;
    let run = sluice::console::view::run_href(&s.run);
    let long = format!("/runs/{}", "x".repeat(500));
    for path in [
        "/nope",
        "/runs/20260101T000000Z-000000",
        "/runs/%3Cscript%3E",
        &*long,
        &*format!("{run}/files/nope.html"),
        &*format!("{run}/files/..%2F..%2Fhistory.sqlite"),
        "/runs/20260101T000000Z-000000/live",
    ] {
        let p = get(c.addr, path, "").await;
        assert_page(&p, StatusCode::NOT_FOUND, path);
        assert!(
            p.body.contains("Not found"),
            "{path}: a page, not a bare status"
        );
        assert!(!p.body.contains("<script>"), "{path}");
    }
    let bad = get(c.addr, "/runs?status=exploded", "").await;
    assert_page(
        &bad,
        StatusCode::BAD_REQUEST,
        "a status that does not exist",
    );
    // What axum's own extractors would refuse with plain text: a query
    // field given twice, a path that is not UTF-8.
    for path in [
        "/runs?status=failed&status=succeeded",
        "/ledger?email=a@example.com&email=b@example.com",
        &*format!("{run}?page=1&page=2"),
        "/login?next=/runs&next=/flows",
    ] {
        let p = get(c.addr, path, "").await;
        assert_page(&p, StatusCode::BAD_REQUEST, path);
        assert!(
            p.body.contains("<html") && p.body.contains("duplicate field"),
            "{path}: {}",
            p.body
        );
    }
    for path in ["/runs/%FF", &*format!("{run}/files/%C3%28")] {
        let p = get(c.addr, path, "").await;
        assert_page(&p, StatusCode::NOT_FOUND, path);
        assert!(
            p.body.contains("There is no such page."),
            "{path}: {}",
            p.body
        );
    }
    c.stop().await;
}

#[tokio::test]
async fn an_open_console_answers_only_to_loopback_host_names() {
    let s = seeded().await;
    let c = console(s.dir.path(), "127.0.0.1:0", None, false).await;
    let p = client()
        .get(url(c.addr, "/runs"))
        .header(header::HOST, "rebound.example:8700")
        .send()
        .await
        .unwrap();
    assert_eq!(p.status(), StatusCode::FORBIDDEN);
    let ok = client()
        .get(url(c.addr, "/runs"))
        .header(header::HOST, format!("localhost:{}", c.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    c.stop().await;
}

#[tokio::test]
async fn a_console_with_a_token_asks_for_it_on_every_page() {
    let s = seeded().await;
    let c = console(s.dir.path(), "127.0.0.1:0", Some(TOKEN), false).await;
    let run = sluice::console::view::run_href(&s.run);
    // Without it: browsers go to the login form, and come back after.
    for path in ["/", "/runs", &*run, "/ledger?email=a", "/nope"] {
        let p = get(c.addr, path, "").await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{path}");
        let to = p.headers[header::LOCATION].to_str().unwrap();
        assert!(to.starts_with("/login?next="), "{path}: {to}");
    }
    let bearer = |t: &str| {
        let run = run.clone();
        let t = t.to_string();
        let addr = c.addr;
        async move {
            client()
                .get(url(addr, &run))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        bearer("wrong-token-0123456789").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(bearer(TOKEN).await, StatusCode::OK);

    // The login form: a wrong token is refused, and no session is set.
    let form = get(c.addr, "/login?next=/runs", "").await;
    assert_page(&form, StatusCode::OK, "login form");
    let csrf_cookie = set_cookies(&form)["sluice_csrf"].clone();
    assert!(csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"));
    let jar = format!("sluice_csrf={}", cookie_value(&csrf_cookie));
    let csrf = csrf_field(&form.body);
    let wrong = post(
        c.addr,
        "/login",
        &jar,
        &[
            ("csrf", &csrf),
            ("name", "Dana"),
            ("token", "wrong-token-0123456789"),
            ("next", "/runs"),
        ],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(!set_cookies(&wrong).contains_key("sluice_session"));
    assert!(wrong.body.contains("not the console token"));
    // A form the login cannot read gets the console's page, not axum's text.
    let twice = post(
        c.addr,
        "/login",
        &jar,
        &[
            ("csrf", &csrf),
            ("name", "Dana"),
            ("name", "Eve"),
            ("token", TOKEN),
        ],
    )
    .await;
    assert_page(&twice, StatusCode::BAD_REQUEST, "a form field given twice");
    assert!(
        twice.body.contains("<html") && twice.body.contains("duplicate field `name`"),
        "{}",
        twice.body
    );
    assert!(!set_cookies(&twice).contains_key("sluice_session"));
    // A name as long as `sluice approve --by` takes (200) signs in; a longer
    // one is refused, saying how long a name may be.
    for (length, status) in [(200, StatusCode::SEE_OTHER), (201, StatusCode::BAD_REQUEST)] {
        let name = "n".repeat(length);
        let login = [
            ("csrf", csrf.as_str()),
            ("name", name.as_str()),
            ("token", TOKEN),
        ];
        let answered = post(c.addr, "/login", &jar, &login).await;
        assert_eq!(answered.status, status, "{length}: {}", answered.body);
    }
    // The right one: a session cookie, HttpOnly and SameSite=Strict, and back to `next`.
    let ok = post(
        c.addr,
        "/login",
        &jar,
        &[
            ("csrf", &csrf),
            ("name", "Dana <ops>"),
            ("token", TOKEN),
            ("next", "/runs"),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.headers[header::LOCATION], "/runs");
    let session = set_cookies(&ok)["sluice_session"].clone();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(!session.contains(TOKEN));
    assert!(!session.contains("Secure"), "over plain http: {session}");
    // Behind a TLS proxy (X-Forwarded-Proto: https) both cookies are
    // Secure: the browser never sends them over plain http.
    let proxied = get_with(c.addr, "/login", "", &[("x-forwarded-proto", "https")]).await;
    let proxied_csrf = set_cookies(&proxied)["sluice_csrf"].clone();
    assert!(proxied_csrf.contains("Secure"), "{proxied_csrf}");
    let proxied_jar = format!("sluice_csrf={}", cookie_value(&proxied_csrf));
    let proxied_login = post_with(
        c.addr,
        "/login",
        &proxied_jar,
        &[("x-forwarded-proto", "https")],
        &[
            ("csrf", &csrf_field(&proxied.body)),
            ("name", "Dana"),
            ("token", TOKEN),
            ("next", "/runs"),
        ],
    )
    .await;
    assert_eq!(proxied_login.status, StatusCode::SEE_OTHER);
    let proxied_session = set_cookies(&proxied_login)["sluice_session"].clone();
    assert!(proxied_session.contains("Secure"), "{proxied_session}");
    let jar = format!("{jar}; sluice_session={}", cookie_value(&session));
    let runs = get(c.addr, "/runs", &jar).await;
    assert_page(&runs, StatusCode::OK, "runs, signed in");
    assert!(
        runs.body.contains("Dana &#60;ops&#62;"),
        "the viewer's name, as text"
    );
    for p in [&form, &wrong, &ok, &runs] {
        assert!(!p.body.contains(TOKEN));
    }
    // A tampered session is no session.
    let forged = jar.replace("sluice_session=", "sluice_session=9");
    assert_eq!(
        get(c.addr, "/runs", &forged).await.status,
        StatusCode::SEE_OTHER
    );
    // An open redirect is not: `next` stays on the console.
    let away = post(
        c.addr,
        "/login",
        &jar,
        &[
            ("csrf", &csrf),
            ("name", "Dana"),
            ("token", TOKEN),
            ("next", "//evil.example/"),
        ],
    )
    .await;
    assert_eq!(away.headers[header::LOCATION], "/");
    // Signing out ends the session in the browser…
    assert_page(&get(c.addr, "/runs", &jar).await, StatusCode::OK, "before");
    let out = post(c.addr, "/logout", &jar, &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(set_cookies(&out)["sluice_session"].contains("Max-Age=0"));
    // …and here: a copy of its cookie kept from before is refused (it
    // read pages and decided, as Dana, until it expired).
    assert_eq!(
        get(c.addr, "/runs", &jar).await.status,
        StatusCode::SEE_OTHER
    );
    // Nor the same cookie with its MAC in upper-case hex, which verifies.
    let (body, mac) = jar.rsplit_once('.').unwrap();
    let shouted = format!("{body}.{}", mac.to_ascii_uppercase());
    assert_eq!(
        get(c.addr, "/runs", &shouted).await.status,
        StatusCode::SEE_OTHER
    );
    c.stop().await;
}

#[tokio::test]
async fn a_post_without_its_csrf_token_is_refused() {
    let s = seeded().await;
    let c = console(s.dir.path(), "127.0.0.1:0", Some(TOKEN), false).await;
    let form = get(c.addr, "/login", "").await;
    let cookie = set_cookies(&form)["sluice_csrf"].clone();
    let jar = format!("sluice_csrf={}", cookie_value(&cookie));
    let login = [("name", "Dana"), ("token", TOKEN)];
    // No field, no cookie, a field that is not the cookie's: all refused.
    let none = post(c.addr, "/login", &jar, &login).await;
    assert_page(&none, StatusCode::FORBIDDEN, "no CSRF field");
    assert!(none.body.contains("CSRF"));
    let csrf = csrf_field(&form.body);
    let mut with = login.to_vec();
    with.push(("csrf", &csrf));
    let no_cookie = post(c.addr, "/login", "", &with).await;
    assert_eq!(no_cookie.status, StatusCode::FORBIDDEN);
    let other = "0".repeat(64);
    let mut forged = login.to_vec();
    forged.push(("csrf", &other));
    assert_eq!(
        post(c.addr, "/login", &jar, &forged).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(!set_cookies(&none).contains_key("sluice_session"));
    // The same form with its token goes through.
    assert_eq!(
        post(c.addr, "/login", &jar, &with).await.status,
        StatusCode::SEE_OTHER
    );
    c.stop().await;
}

#[tokio::test]
async fn metrics_and_health_need_the_token_off_loopback_unless_public() {
    let s = seeded().await;
    // Listening on every address (reached here through loopback).
    let closed = console(s.dir.path(), "0.0.0.0:0", Some(TOKEN), false).await;
    // Where it says to open it: not 0.0.0.0, which is no address to open.
    let port = closed.addr.port();
    let note = closed.where_to_open().unwrap();
    assert!(
        note.contains(&format!("open http://localhost:{port}/ here")),
        "{note}"
    );
    for path in ["/metrics", "/healthz", "/readyz"] {
        let p = get(closed.addr, path, "").await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{path}");
        let with = client()
            .get(url(closed.addr, path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(with.status(), StatusCode::OK, "{path}");
    }
    closed.stop().await;
    let public = console(s.dir.path(), "0.0.0.0:0", Some(TOKEN), true).await;
    let health = get(public.addr, "/healthz", "").await;
    let loopback = console(s.dir.path(), "127.0.0.1:0", Some(TOKEN), false).await;
    assert_eq!(loopback.where_to_open(), None);
    loopback.stop().await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "database: ok\n")
    );
    assert_eq!(
        get(public.addr, "/metrics", "").await.status,
        StatusCode::OK
    );
    // Pages still need the token.
    assert_eq!(
        get(public.addr, "/runs", "").await.status,
        StatusCode::SEE_OTHER
    );
    public.stop().await;
    // On loopback they are open even with a token.
    let lo = console(s.dir.path(), "127.0.0.1:0", Some(TOKEN), false).await;
    assert_eq!(get(lo.addr, "/metrics", "").await.status, StatusCode::OK);
    lo.stop().await;
}

fn sluice(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env_clear().env("SLUICE_DATA_DIR", data).args(args);
    cmd
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    for args in [
        vec!["console", "--http", "0.0.0.0:0"],
        vec!["serve", flows.to_str().unwrap(), "--http", "0.0.0.0:0"],
    ] {
        let out = sluice(dir.path(), &args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("not a loopback address") && stderr.contains("SLUICE_CONSOLE_TOKEN"),
            "{stderr}"
        );
    }
    // A token too short to guard anything is refused too.
    let out = sluice(dir.path(), &["console", "--http", "0.0.0.0:0"])
        .env("SLUICE_CONSOLE_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("too short") && !stderr.contains("short\n"),
        "{stderr}"
    );
}

/// `--http` takes a host name as well as an IP address: `localhost`
/// resolves to loopback, so it needs no token; a name that does not
/// resolve is refused at start, naming it.
#[tokio::test]
async fn the_console_listens_on_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut alone = Child::spawn(sluice(dir.path(), &["console", "--http", "localhost:0"]));
    let addr = alone.console_addr().await;
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_eq!(get(addr, "/healthz", "").await.body, "database: ok\n");
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    for args in [
        vec!["console", "--http", "no-such-host.invalid:0"],
        vec![
            "serve",
            flows.to_str().unwrap(),
            "--http",
            "no-such-host.invalid:0",
        ],
    ] {
        let out = sluice(dir.path(), &args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("the host name `no-such-host.invalid` does not resolve"),
            "{stderr}"
        );
    }
    let out = sluice(dir.path(), &["console", "--http", "localhost"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("has no port") && stderr.contains("HOST:PORT"),
        "{stderr}"
    );
}

/// Reads server-sent events until `until` holds for the text so far.
async fn events_until(r: &mut reqwest::Response, until: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !until(&text) {
        let chunk = tokio::time::timeout_at(deadline, r.chunk())
            .await
            .expect("the event came in time")
            .unwrap()
            .expect("the stream is still open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

#[tokio::test]
async fn a_running_run_updates_live_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let run = sluice_store::new_run_id();
    let w = Writer::open(dir.path(), &run, "live").await;
    w.start("live.toml", "").await;
    let c = console(dir.path(), "127.0.0.1:0", None, false).await;
    let page = get(c.addr, &sluice::console::view::run_href(&run), "").await;
    assert!(
        page.body.contains("data-live=\"/runs/"),
        "a running run's page listens"
    );
    let mut r = client()
        .get(url(c.addr, &format!("/runs/{run}/live")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
    // The run writes while the console reads.
    w.step("fetch", "graph-groups", None).await;
    let seen = events_until(&mut r, |t| t.contains("step-fetch")).await;
    assert!(seen.contains("event: steps"), "{seen}");
    w.end_step("fetch", StepStatus::Succeeded, None, json!({}))
        .await;
    w.finish(RunStatus::Succeeded, None).await;
    let seen = events_until(&mut r, |t| t.contains("event: end")).await;
    assert!(seen.contains("data: succeeded"), "{seen}");
    c.stop().await;
}

/// Attempts as the history keeps them: `made`, and the earlier failures.
fn attempts(made: u32, code: &str) -> sluice_store::Attempts {
    sluice_store::Attempts {
        made,
        failed: (1..made)
            .map(|attempt| sluice_store::FailedAttempt {
                attempt,
                kind: "unavailable".into(),
                code: code.into(),
                message: format!("<b>busy</b> (attempt {attempt})"),
            })
            .collect(),
    }
}

/// The run page shows how many attempts a retried step and a retried item
/// took and why each earlier one failed (as text); a step or item called
/// once shows no attempts.
#[tokio::test]
async fn the_run_page_shows_the_attempts_of_retried_steps_and_items() {
    let dir = tempfile::tempdir().unwrap();
    let run = sluice_store::new_run_id();
    let w = Writer::open(dir.path(), &run, "retried").await;
    w.start("retried.toml", "").await;
    w.step("fetch", "graph-groups", None).await;
    w.w(HistoryWrite::FinishStep(StepEnd {
        step: "fetch".into(),
        component: "graph-groups".into(),
        status: StepStatus::Succeeded,
        output: None,
        error: None,
        connections: json!({}),
        duration_ms: 60,
        attempts: Some(attempts(3, "step-busy")),
        ended_at: chrono::Utc::now(),
    }))
    .await;
    w.step("create", "procore-create-user", Some(2)).await;
    let mut retried = item(
        0,
        ItemStatus::Succeeded,
        json!({"key": "ann"}),
        None,
        None,
        json!({}),
    );
    if let HistoryWrite::Item(end) = &mut retried {
        end.attempts = Some(attempts(2, "item-busy"));
    }
    w.w(retried).await;
    w.w(item(
        1,
        ItemStatus::Succeeded,
        json!({"key": "bob"}),
        None,
        None,
        json!({}),
    ))
    .await;
    w.end_step("create", StepStatus::Succeeded, None, json!({}))
        .await;
    w.finish(RunStatus::Succeeded, None).await;
    let c = console(dir.path(), "127.0.0.1:0", None, false).await;
    let page = get(c.addr, &sluice::console::view::run_href(&run), "").await;
    assert_page(&page, StatusCode::OK, "run");
    for shown in [
        "3 attempts",
        "1. unavailable [step-busy]: &#60;b&#62;busy&#60;/b&#62; (attempt 1)",
        "2. unavailable [step-busy]: &#60;b&#62;busy&#60;/b&#62; (attempt 2)",
        "2 attempts",
        "1. unavailable [item-busy]: &#60;b&#62;busy&#60;/b&#62; (attempt 1)",
    ] {
        assert!(
            page.body.contains(shown),
            "`{shown}` not in:\n{}",
            page.body
        );
    }
    let shown = page.body.matches("class=\"sub attempts\"").count();
    assert_eq!(shown, 2, "only the retried step and item: {}", page.body);
    assert!(!page.body.contains("<b>busy"), "{}", page.body);
    c.stop().await;
}

use common::console_child::ConsoleChild as Child;

/// The run page shows each `for_each` item's key (as text), which its
/// input need not repeat: here every item's input is the same.
#[tokio::test]
async fn the_run_page_shows_each_items_key() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("keys.toml");
    std::fs::write(
        &flow,
        format!(
            "name = \"keys\"\n[params]\npeople = [\"ann@example.com\", {HOSTILE_KEY:?}]\n[connections.idle]\nbase_url = \"https://idle.invalid\"\n[[step]]\nid = \"each\"\nuses = \"{}\"\nconnections = {{ api = \"idle\" }}\nfor_each = \"${{params.people}}\"\nfor_each_key = \"${{item}}\"\nwith = {{ action = \"echo\" }}\n",
            common::fixture("hostile").display()
        ),
    )
    .unwrap();
    let out = sluice(dir.path(), &["run", flow.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let runs = Store::open(&Location::Sqlite(sluice_store::path_in(dir.path())))
        .await
        .unwrap()
        .list_runs(None, 10)
        .await
        .unwrap();
    let c = console(dir.path(), "127.0.0.1:0", None, false).await;
    let page = get(c.addr, &sluice::console::view::run_href(&runs[0].id), "").await;
    assert_page(&page, StatusCode::OK, "run");
    assert!(page.body.contains("<th>Key</th>"), "{}", page.body);
    let keys: Vec<String> = page
        .body
        .match_indices("<td class=\"mono item-key\">")
        .map(|(at, tag)| {
            let rest = &page.body[at + tag.len()..];
            unescape(&rest[..rest.find("</td>").unwrap()])
        })
        .collect();
    assert_eq!(keys, ["ann@example.com", HOSTILE_KEY], "{}", page.body);
    // Items are counted from 1, as `sluice runs show` and run errors count.
    let numbers: Vec<&str> = page
        .body
        .match_indices("<tr class=\"succeeded\">\n<td>")
        .map(|(at, tag)| {
            let rest = &page.body[at + tag.len()..];
            &rest[..rest.find("</td>").unwrap()]
        })
        .collect();
    assert_eq!(numbers, ["1", "2"], "{}", page.body);
    assert!(!page.body.contains("<b>eve</b>"), "a key is shown as text");
    // A search finds an item by its key alone.
    let searched = get(
        c.addr,
        &format!(
            "{}?step=each&q=ann%40",
            sluice::console::view::run_href(&runs[0].id)
        ),
        "",
    )
    .await;
    assert!(
        searched.body.contains("1 items match") && searched.body.contains(">ann@example.com<"),
        "{}",
        searched.body
    );
    c.stop().await;
}

#[tokio::test]
async fn serve_with_http_runs_a_flow_now_and_reports_its_health() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("echo.toml"),
        format!(
            // The hostile component's role `api` is bound to a connection it never uses.
            "name = \"echo\"\nschedule = {{ cron = \"0 0 5 * * Mon-Fri\", timezone = \"America/Los_Angeles\" }}\n[connections.idle]\nbase_url = \"https://idle.invalid\"\n[[step]]\nid = \"say\"\nuses = \"{}\"\nconnections = {{ api = \"idle\" }}\nwith = {{ action = \"echo\" }}\n",
            common::fixture("hostile").display()
        ),
    )
    .unwrap();
    let mut cmd = sluice(
        dir.path(),
        &["serve", flows.to_str().unwrap(), "--http", "127.0.0.1:0"],
    );
    cmd.env("USER", "ops-person");
    let mut serving = Child::spawn(cmd);
    let addr = serving.console_addr().await;
    let health = get(addr, "/healthz", "").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(health.body, "database: ok\nscheduler: ok\n");
    let ready = get(addr, "/readyz", "").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body, "store: ok\nscheduler: ok\n");
    let flows_page = get(addr, "/", "").await;
    assert_page(&flows_page, StatusCode::OK, "flows");
    let body = &flows_page.body;
    assert!(
        body.contains(
            "At 05:00, on Monday, Tuesday, Wednesday, Thursday, and Friday, in America/Los_Angeles"
        ),
        "{body}"
    );
    assert!(
        body.contains("PST") || body.contains("PDT"),
        "the next firing in the flow's zone"
    );
    assert!(
        body.contains("ops-person"),
        "the OS user is the viewer on loopback"
    );
    let jar = format!(
        "sluice_csrf={}",
        cookie_value(&set_cookies(&flows_page)["sluice_csrf"])
    );
    let csrf = csrf_field(body);
    // Without its CSRF token nothing runs.
    assert_eq!(
        post(addr, "/flows/echo/run", &jar, &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let started = post(addr, "/flows/echo/run", &jar, &[("csrf", &csrf)]).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let run_path = started.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    let mut status = String::new();
    for _ in 0..600 {
        let p = get(addr, &run_path, "").await;
        if p.body.contains("id=\"run-status\">succeeded") {
            status = "succeeded".into();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status, "succeeded",
        "the run started from the console ended"
    );
    let run = get(addr, &run_path, "").await.body;
    assert!(run.contains("<dt>Trigger</dt><dd>manual</dd>"), "{run}");
    let unknown = post(addr, "/flows/nope/run", &jar, &[("csrf", &csrf)]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    drop(serving);
    // `sluice console` alone has no "run now".
    let mut alone = Child::spawn(sluice(dir.path(), &["console", "--http", "127.0.0.1:0"]));
    let addr = alone.console_addr().await;
    let page = get(addr, "/", "").await;
    assert!(page.body.contains("echo") && !page.body.contains("Run now"));
    // With no $USER (nor $LOGNAME), the viewer is the name of the
    // process's user id, as `sluice approve` records it.
    let whoami = Command::new("id").arg("-un").output().unwrap();
    let me = String::from_utf8_lossy(&whoami.stdout).trim().to_string();
    let in_passwd = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("{me}:")));
    if whoami.status.success() && in_passwd {
        assert!(
            page.body.contains(&format!(">{me}<")),
            "the viewer is {me}: {}",
            page.body
        );
    }
    assert!(!page.body.contains(">unknown<"), "{}", page.body);
    assert_eq!(get(addr, "/healthz", "").await.body, "database: ok\n");
    // The first console's form is stale here (each open console signs its
    // forms with a key of its own): take one of this console's forms.
    let stale = post(addr, "/flows/echo/run", &jar, &[("csrf", &csrf)]).await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN, "{}", stale.body);
    let plan = held_plan(dir.path()).await;
    let plan_page = get(addr, &format!("/approvals/{plan}"), &jar).await;
    let csrf = csrf_field(&plan_page.body);
    let refused = post(addr, "/flows/echo/run", &jar, &[("csrf", &csrf)]).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    assert!(refused.body.contains("does not run flows"));
}

/// `sluice console FLOWS…` shows one file per flow `name`, as `serve`
/// serves one: the first in path order, and says why it left the other out.
#[tokio::test]
async fn the_console_shows_one_file_of_a_flow_name_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    let text = format!(
        "name = \"twice\"\nschedule = {{ cron = \"0 0 5 * * Mon-Fri\" }}\n[connections.idle]\nbase_url = \"https://idle.invalid\"\n[[step]]\nid = \"say\"\nuses = \"{}\"\nconnections = {{ api = \"idle\" }}\nwith = {{ action = \"echo\" }}\n",
        common::fixture("hostile").display()
    );
    let (first, second) = (flows.join("a-twice.toml"), flows.join("b-twice.toml"));
    std::fs::write(&second, &text).unwrap();
    std::fs::write(&first, &text).unwrap();
    let mut alone = Child::spawn(sluice(
        dir.path(),
        &["console", "--http", "127.0.0.1:0", flows.to_str().unwrap()],
    ));
    let addr = alone.console_addr().await;
    let said = alone.said();
    assert!(
        said.contains(&format!(
            "warning: {} is left out: flow `twice` is already shown from {}, which keeps the name (it comes first in path order); two files of one flow `name` would share its state, its lease and its approval plans. Give each flow its own `name`",
            second.display(),
            first.display()
        )),
        "{said}"
    );
    let page = get(addr, "/", "").await;
    assert_page(&page, StatusCode::OK, "flows");
    assert!(page.body.contains("a-twice.toml"), "{}", page.body);
    assert!(!page.body.contains("b-twice.toml"), "{}", page.body);
}

fn flow_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flows/procore-license-sync.toml")
}

/// A console host keeps none of the flows' secrets: `sluice console FLOWS…`
/// shows the shipped flow's schedule with none of its variables or
/// secrets set, and says why a file that does not validate is left out.
#[tokio::test]
async fn the_console_shows_a_flows_schedule_without_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "name = \"broken\"\nschedule = { cron = \"nope\" }\n",
    )
    .unwrap();
    // The environment is empty: no GRAPH_* or PROCORE_* variable, no secret.
    let mut alone = Child::spawn(sluice(
        dir.path(),
        &[
            "console",
            "--http",
            "127.0.0.1:0",
            flow_path().to_str().unwrap(),
            broken.to_str().unwrap(),
        ],
    ));
    let addr = alone.console_addr().await;
    let said = alone.said();
    assert!(!said.contains("procore-license-sync.toml"), "{said}");
    assert!(
        said.contains(&format!(
            "warning: {} does not validate, so the Flows page leaves it out (its runs are still shown):",
            broken.display()
        )) && said.contains("nope"),
        "the warning says why: {said}"
    );
    let page = get(addr, "/", "").await;
    assert_page(&page, StatusCode::OK, "flows");
    let body = &page.body;
    assert!(body.contains("procore-license-sync"), "{body}");
    assert!(body.contains("0 0 5-17 * * Mon-Fri"), "{body}");
    assert!(!body.contains("not served here"), "{body}");
    assert!(
        body.contains("PST") || body.contains("PDT"),
        "the next firing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_license_sync_have_the_expected_series() {
    let emulator = sluice_emulator::start(sluice_emulator::EmulatorConfig::default())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cmd = sluice(
        data.path(),
        &["run", flow_path().to_str().unwrap(), "--quiet"],
    );
    for (k, v) in emulator.env_vars() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = console(data.path(), "127.0.0.1:0", None, false).await;
    let p = get(c.addr, "/metrics", "").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let lines = p.body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let flow = "procore-license-sync";
    let find = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{}", p.body))
            .value
            .clone()
    };
    use prometheus_parse::Value as V;
    let counter = |v: V| match v {
        V::Counter(n) | V::Gauge(n) | V::Untyped(n) => n,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        counter(find(
            "sluice_runs_total",
            &[("flow", flow), ("status", "succeeded")]
        )),
        1.0
    );
    match find(
        "sluice_run_duration_seconds",
        &[("flow", flow), ("status", "succeeded")],
    ) {
        V::Histogram(buckets) => assert!(buckets.iter().any(|b| b.count == 1.0)),
        other => panic!("{other:?}"),
    }
    match find(
        "sluice_step_duration_seconds",
        &[("flow", flow), ("step", "create")],
    ) {
        V::Histogram(buckets) => assert_eq!(buckets.last().unwrap().count, 1.0),
        other => panic!("{other:?}"),
    }
    for connection in ["graph", "procore"] {
        let labels = [("flow", flow), ("connection", connection)];
        assert!(
            counter(find("sluice_connection_requests_total", &labels)) >= 2.0,
            "{connection}"
        );
        counter(find("sluice_connection_retries_total", &labels));
        counter(find("sluice_connection_throttled_total", &labels));
        counter(find("sluice_connection_wait_seconds_total", &labels));
    }
    // Nothing runs or waits now: the gauges read 0 rather than vanish.
    assert_eq!(counter(find("sluice_runs_running", &[("flow", flow)])), 0.0);
    assert_eq!(
        counter(find("sluice_approvals_pending", &[("flow", flow)])),
        0.0
    );
    let last = counter(find(
        "sluice_last_success_timestamp_seconds",
        &[("flow", flow)],
    ));
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(now - last < 600.0 && last <= now + 1.0, "{last} vs {now}");
    // A second scrape counts nothing twice.
    let again = get(c.addr, "/metrics", "").await.body;
    assert!(
        again.contains(&format!(
            "sluice_runs_total{{flow=\"{flow}\",status=\"succeeded\"}} 1"
        )),
        "{again}"
    );
    c.stop().await;
}

/// Three deactivations held back for approval, one with a hostile key.
async fn held_plan(data: &Path) -> String {
    let store = Store::open(&Location::Sqlite(sluice_store::path_in(data)))
        .await
        .unwrap();
    let held = ["ann@example.com", "bob@example.com", HOSTILE_KEY]
        .iter()
        .map(|k| HeldItem {
            key: k.to_string(),
            input: json!({"user": {"email": k, "reason": "no license group"}, "action": "deactivate"}),
        })
        .collect();
    let update = GateUpdate {
        flow: "offboard".into(),
        step: "deactivate".into(),
        run_id: "20260101T000000Z-aaaaaa".into(),
        flow_file: "flows/offboard.toml".into(),
        params: Vec::new(),
        reason: Some("3 deactivations exceed the limit of 2".into()),
        held,
        gone: Vec::new(),
        fence: None,
    };
    store.record_gate(&update).await.unwrap().unwrap().id
}

const HOSTILE_KEY: &str = "<b>eve</b>\"'&@example.com";

/// The pending keys a plan page showed (its `shown` fields), as text.
fn shown_keys(body: &str) -> Vec<String> {
    let field = "name=\"shown\" value=\"";
    body.match_indices(field)
        .map(|(at, _)| {
            let rest = &body[at + field.len()..];
            unescape(&rest[..rest.find('"').unwrap()])
        })
        .collect()
}

/// HTML text with its numeric character references decoded.
fn unescape(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(at) = rest.find("&#") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';').unwrap() + at;
        let code: u32 = rest[at + 2..end].parse().unwrap();
        out.push(char::from_u32(code).unwrap());
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A held plan's page as a viewer loaded it: the console, the plan, the
/// pending keys it showed, the viewer's CSRF cookie and field, and the
/// store beside it (for what happens meanwhile).
struct PlanShown {
    c: Running,
    plan: String,
    shown: Vec<String>,
    cookies: String,
    csrf: String,
    store: Store,
}

async fn plan_shown(data: &Path) -> PlanShown {
    let plan = held_plan(data).await;
    let c = console(data, "127.0.0.1:0", None, false).await;
    let page = get(c.addr, &format!("/approvals/{plan}"), "").await;
    assert_page(&page, StatusCode::OK, "plan");
    let shown = shown_keys(&page.body);
    assert_eq!(shown.len(), 3, "{}", page.body);
    assert!(shown.contains(&HOSTILE_KEY.to_string()), "{shown:?}");
    let jar = set_cookies(&page);
    let cookies = format!("sluice_csrf={}", cookie_value(&jar["sluice_csrf"]));
    let csrf = csrf_field(&page.body);
    let store = Store::open(&Location::Sqlite(sluice_store::path_in(data)))
        .await
        .unwrap();
    PlanShown {
        c,
        plan,
        shown,
        cookies,
        csrf,
        store,
    }
}

/// Run `run_id` of the `offboard` flow holds `keys` for deactivation in
/// the step's plan, beyond its limit of 2: the plan after it.
async fn a_run_holds(store: &Store, run_id: &str, keys: &[String]) -> sluice_store::PlanSummary {
    let held = keys
        .iter()
        .map(|k| HeldItem {
            key: k.clone(),
            input: json!({"user": {"email": k}, "action": "deactivate"}),
        })
        .collect();
    let update = GateUpdate {
        flow: "offboard".into(),
        step: "deactivate".into(),
        run_id: run_id.into(),
        flow_file: "flows/offboard.toml".into(),
        params: Vec::new(),
        reason: Some(format!(
            "{} deactivations exceed the limit of 2",
            keys.len()
        )),
        held,
        gone: Vec::new(),
        fence: None,
    };
    store.record_gate(&update).await.unwrap().unwrap()
}

/// A plan of thousands waiting (a mass leave) is paged, and decided from
/// its page: its page was megabytes (every item with its whole input),
/// and its form, which named every pending key, was refused over 64 KiB,
/// so past some 1,700 keys nothing could be decided there.
#[tokio::test]
async fn a_plan_of_thousands_is_paged_and_decided_from_its_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Location::Sqlite(sluice_store::path_in(dir.path())))
        .await
        .unwrap();
    let keys: Vec<String> = (0..3000)
        .map(|i| format!("someone.with.a.long.name{i:04}@example.com"))
        .collect();
    let plan = a_run_holds(&store, "20260101T000000Z-aaaaaa", &keys)
        .await
        .id;
    let c = console(dir.path(), "127.0.0.1:0", None, false).await;
    let page = get(c.addr, &format!("/approvals/{plan}"), "").await;
    assert_page(&page, StatusCode::OK, "plan");
    assert!(page.body.len() < 1_000_000, "{} bytes", page.body.len());
    let shown = shown_keys(&page.body);
    assert_eq!(shown.len(), 200);
    assert!(
        page.body.contains("items 1–200 of 3000, pending first"),
        "{}",
        page.body
    );
    assert!(page.body.contains("name=\"all_plan\""), "{}", page.body);
    let second = get(c.addr, &format!("/approvals/{plan}?page=1"), "").await;
    assert_page(&second, StatusCode::OK, "plan, page 2");
    let next = shown_keys(&second.body);
    assert_eq!(next.len(), 200);
    assert!(next.iter().all(|k| !shown.contains(k)), "{next:?}");
    let bad = get(c.addr, &format!("/approvals/{plan}?page=x"), "").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // Every pending item shown here: the 200 of this page.
    let jar = set_cookies(&page);
    let cookies = format!("sluice_csrf={}", cookie_value(&jar["sluice_csrf"]));
    let csrf = csrf_field(&page.body);
    let mut form = vec![
        ("csrf", csrf.as_str()),
        ("decision", "approved"),
        ("all", "1"),
        ("revision", "1"),
    ];
    form.extend(shown.iter().map(|k| ("shown", k.as_str())));
    let action = format!("/approvals/{plan}/decide");
    let decided = post(c.addr, &action, &cookies, &form).await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.body);
    let counts =
        |d: &sluice_store::PlanDetail, state| d.items.iter().filter(|i| i.state == state).count();
    let detail = store.plan_detail(&plan).await.unwrap().unwrap();
    assert_eq!(counts(&detail, PlanItemState::Approved), 200);
    // The page again. Meanwhile a run holds one more person, and another
    // admin approves three: every pending item of the plan is what the
    // page's revision held, on every page, not the newcomer, and the
    // three approvals stand, named as left as they are.
    let again = get(c.addr, &format!("/approvals/{plan}"), "").await;
    let shown_at = field_value(&again.body, "shown_at");
    let mut more = keys.clone();
    more.push("new.leaver@example.com".into());
    a_run_holds(&store, "20260101T010000Z-bbbbbb", &more).await;
    let others: Vec<String> = keys[2990..2993].to_vec();
    store
        .decide(&DecisionRequest {
            plan_id: plan.clone(),
            keys: others.clone(),
            if_pending: Vec::new(),
            decision: Decision::Approved,
            by: "Other Admin".into(),
            note: None,
            revision: None,
        })
        .await
        .unwrap();
    let all_plan = [
        ("csrf", csrf.as_str()),
        ("decision", "rejected"),
        ("all_plan", "1"),
        ("revision", "1"),
        ("shown_at", shown_at.as_str()),
    ];
    let decided = post(c.addr, &action, &cookies, &all_plan).await;
    assert_page(&decided, StatusCode::OK, "plan, with what it left");
    assert!(
        decided.body.contains(&format!(
            "2797 items decided. 3 items of the plan were not pending any more (someone decided, or a run settled, since the page was shown), and are left as they are: {}.",
            others.join(", ")
        )),
        "{}",
        decided.body
    );
    let detail = store.plan_detail(&plan).await.unwrap().unwrap();
    assert_eq!(counts(&detail, PlanItemState::Approved), 203);
    assert_eq!(counts(&detail, PlanItemState::Rejected), 2797);
    let new = detail
        .items
        .iter()
        .find(|i| i.key == "new.leaver@example.com");
    assert_eq!(new.unwrap().state, PlanItemState::Pending);
    // A page past the plan's last item says so.
    let past = get(c.addr, &format!("/approvals/{plan}?page=99"), "").await;
    assert!(
        past.body
            .contains("page 99 is past the plan&#39;s last item (3001 items; pages count from 0)"),
        "{}",
        past.body
    );
    // Without the revision its page showed, it decides nothing.
    let blind = post(
        c.addr,
        &action,
        &cookies,
        &[("csrf", &csrf), ("decision", "approved"), ("all_plan", "1")],
    )
    .await;
    assert_eq!(blind.status, StatusCode::BAD_REQUEST);
    // A form of 200 KiB is read; one larger than the console reads is
    // refused, on the console's own page.
    let padding = "x".repeat(200 * 1024);
    let big = post(
        c.addr,
        &action,
        &cookies,
        &[("csrf", &csrf), ("decision", "approved"), ("pad", &padding)],
    )
    .await;
    assert_page(&big, StatusCode::BAD_REQUEST, "nothing ticked");
    assert!(big.body.contains("Tick the items"), "{}", big.body);
    let padding = "x".repeat(300 * 1024);
    let huge = post(
        c.addr,
        &action,
        &cookies,
        &[("csrf", &csrf), ("decision", "approved"), ("pad", &padding)],
    )
    .await;
    assert_page(&huge, StatusCode::PAYLOAD_TOO_LARGE, "form too large");
    assert!(huge.body.contains("256 KiB"), "{}", huge.body);
    c.stop().await;
}

/// "Every pending item" decides what the page showed: a person a run held
/// after the page was loaded stays pending until someone has seen them.
#[tokio::test]
async fn every_pending_item_means_those_the_page_showed() {
    let dir = tempfile::tempdir().unwrap();
    let PlanShown {
        c,
        plan,
        shown,
        cookies,
        csrf,
        store,
    } = plan_shown(dir.path()).await;

    // Meanwhile a run holds one more person in the same plan.
    let mut keys = shown.clone();
    keys.push("dan@example.com".into());
    let held = a_run_holds(&store, "20260101T010000Z-bbbbbb", &keys).await;
    assert_eq!(held.id, plan);

    let mut form = vec![
        ("csrf", csrf.as_str()),
        ("decision", "approved"),
        ("all", "1"),
    ];
    form.extend(shown.iter().map(|k| ("shown", k.as_str())));
    let action = format!("/approvals/{plan}/decide");
    let decided = post(c.addr, &action, &cookies, &form).await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.body);
    let detail = store.plan_detail(&plan).await.unwrap().unwrap();
    let state = |key: &str| detail.items.iter().find(|i| i.key == key).unwrap().state;
    for key in &shown {
        assert_eq!(state(key), PlanItemState::Approved, "{key}");
    }
    assert_eq!(state("dan@example.com"), PlanItemState::Pending);

    // A form that showed nothing decides nothing.
    let blind = post(
        c.addr,
        &action,
        &cookies,
        &[("csrf", &csrf), ("decision", "approved"), ("all", "1")],
    )
    .await;
    assert_eq!(blind.status, StatusCode::BAD_REQUEST);
    let detail = store.plan_detail(&plan).await.unwrap().unwrap();
    let dan = detail.items.iter().find(|i| i.key == "dan@example.com");
    assert_eq!(dan.unwrap().state, PlanItemState::Pending);
    c.stop().await;
}

/// Ann is approved, deactivated and comes back as a new request after
/// the page was shown: its form, which showed her pending, does not
/// approve the new request; it says why and leaves her pending.
#[tokio::test]
async fn a_page_does_not_decide_a_request_a_later_run_added_under_a_key_it_showed() {
    let dir = tempfile::tempdir().unwrap();
    let PlanShown {
        c,
        plan,
        shown,
        cookies,
        csrf,
        store,
    } = plan_shown(dir.path()).await;
    let page = get(c.addr, &format!("/approvals/{plan}"), "").await;
    assert!(
        page.body.contains("name=\"revision\" value=\"1\""),
        "{}",
        page.body
    );
    let ann = "ann@example.com";
    store
        .decide(&DecisionRequest {
            plan_id: plan.clone(),
            keys: vec![ann.into()],
            if_pending: Vec::new(),
            decision: Decision::Approved,
            by: "alice".into(),
            note: None,
            revision: None,
        })
        .await
        .unwrap();
    store
        .settle_items(
            &plan,
            &[sluice_store::Settled {
                key: ann.into(),
                status: ItemStatus::Succeeded,
                run_id: "20260101T010000Z-bbbbbb".into(),
                error: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        a_run_holds(&store, "20260102T000000Z-cccccc", &shown)
            .await
            .revision,
        2
    );

    let mut form = vec![
        ("csrf", csrf.as_str()),
        ("decision", "approved"),
        ("all", "1"),
        ("revision", "1"),
    ];
    form.extend(shown.iter().map(|k| ("shown", k.as_str())));
    let decided = post(
        c.addr,
        &format!("/approvals/{plan}/decide"),
        &cookies,
        &form,
    )
    .await;
    assert_page(&decided, StatusCode::OK, "plan");
    assert!(
        decided.body.contains(
            "2 items decided. 1 item a run added to the plan again after the page was shown, as a new request, is left pending for you to look at: ann@example.com."
        ),
        "{}",
        decided.body
    );
    let detail = store.plan_detail(&plan).await.unwrap().unwrap();
    let state = |key: &str| detail.items.iter().find(|i| i.key == key).unwrap().state;
    assert_eq!(state(ann), PlanItemState::Pending);
    assert_eq!(state("bob@example.com"), PlanItemState::Approved);
    // A revision that is not a number decides nothing.
    let bad = post(
        c.addr,
        &format!("/approvals/{plan}/decide"),
        &cookies,
        &[
            ("csrf", &csrf),
            ("decision", "approved"),
            ("key", ann),
            ("revision", "x"),
        ],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    c.stop().await;
}

/// Alice rejects Bob from the command line after the page was shown; the
/// page's form (`fields` and every key it showed pending) then approves.
/// Her rejection stands and the page says so at once; Ann is approved.
async fn approve_on_a_page_shown_before_bob_was_rejected(
    data: &Path,
    fields: &[(&str, &str)],
) -> PlanShown {
    let shown_plan = plan_shown(data).await;
    let PlanShown {
        c,
        plan,
        shown,
        cookies,
        csrf,
        store,
    } = &shown_plan;
    store
        .decide(&DecisionRequest {
            plan_id: plan.clone(),
            keys: vec!["bob@example.com".into()],
            if_pending: Vec::new(),
            decision: Decision::Rejected,
            by: "alice".into(),
            note: Some("on leave, keep her".into()),
            revision: None,
        })
        .await
        .unwrap();
    let mut form = vec![("csrf", csrf.as_str()), ("decision", "approved")];
    form.extend_from_slice(fields);
    form.extend(shown.iter().map(|k| ("shown", k.as_str())));
    let decided = post(c.addr, &format!("/approvals/{plan}/decide"), cookies, &form).await;
    assert_page(&decided, StatusCode::OK, "plan");
    assert!(
        decided
            .body
            .contains("and is left as it is: bob@example.com"),
        "{}",
        decided.body
    );
    let detail = store.plan_detail(plan).await.unwrap().unwrap();
    let state = |key: &str| detail.items.iter().find(|i| i.key == key).unwrap().state;
    assert_eq!(state("bob@example.com"), PlanItemState::Rejected);
    assert_eq!(state("ann@example.com"), PlanItemState::Approved);
    shown_plan
}

/// "Every pending item" from a page loaded before someone rejected one of
/// them: that rejection stands, and the page says so at once.
#[tokio::test]
async fn every_pending_item_leaves_a_decision_made_since_the_page_was_shown() {
    let dir = tempfile::tempdir().unwrap();
    let PlanShown { c, plan, store, .. } =
        approve_on_a_page_shown_before_bob_was_rejected(dir.path(), &[("all", "1")]).await;
    let detail = store.plan_detail(&plan).await.unwrap().unwrap();
    let hostile = detail.items.iter().find(|i| i.key == HOSTILE_KEY);
    assert_eq!(hostile.unwrap().state, PlanItemState::Approved);
    c.stop().await;
}

/// A ticked item from a page loaded before someone rejected it: that
/// rejection stands, as with "every pending item", and the page says so.
/// (The ticked item was approved, and the next run deactivated them.)
#[tokio::test]
async fn a_ticked_item_rejected_since_the_page_was_shown_stays_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let ticked = [("key", "bob@example.com"), ("key", "ann@example.com")];
    let PlanShown {
        c,
        plan,
        cookies,
        csrf,
        store,
        ..
    } = approve_on_a_page_shown_before_bob_was_rejected(dir.path(), &ticked).await;

    // A page that showed Bob rejected (no `shown` for him) approves him
    // when ticked: deciding again is the admin's to do.
    let form = [
        ("csrf", csrf.as_str()),
        ("decision", "approved"),
        ("key", "bob@example.com"),
    ];
    let decided = post(
        c.addr,
        &format!("/approvals/{plan}/decide"),
        &cookies,
        &form,
    )
    .await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.body);
    let detail = store.plan_detail(&plan).await.unwrap().unwrap();
    let bob = detail.items.iter().find(|i| i.key == "bob@example.com");
    assert_eq!(bob.unwrap().state, PlanItemState::Approved);
    c.stop().await;
}

#[tokio::test]
async fn approvals_are_decided_in_part_with_a_note_and_recorded_under_the_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let plan = held_plan(dir.path()).await;
    let c = console(dir.path(), "127.0.0.1:0", None, false).await;
    let list = get(c.addr, "/approvals", "").await;
    assert_page(&list, StatusCode::OK, "approvals");
    assert!(list.body.contains(&plan), "{}", list.body);
    assert!(list.body.contains("3 deactivations exceed the limit of 2"));
    let page = get(c.addr, &format!("/approvals/{plan}"), "").await;
    assert_page(&page, StatusCode::OK, "plan");
    assert!(!page.body.contains("<b>eve</b>"), "a key is shown as text");
    assert!(page.body.contains("&#60;b&#62;eve&#60;/b&#62;"));
    assert!(
        page.body
            .contains("<td class=\"why\">no license group</td>"),
        "each item says why it waits: {}",
        page.body
    );
    let jar = set_cookies(&page);
    let cookies = format!("sluice_csrf={}", cookie_value(&jar["sluice_csrf"]));
    let csrf = csrf_field(&page.body);
    let action = format!("/approvals/{plan}/decide");

    // Without the CSRF token, or with nothing ticked, nothing is decided.
    let forged = post(
        c.addr,
        &action,
        &cookies,
        &[("decision", "approved"), ("all", "1")],
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let nothing = post(
        c.addr,
        &action,
        &cookies,
        &[("csrf", &csrf), ("decision", "approved")],
    )
    .await;
    assert_eq!(nothing.status, StatusCode::BAD_REQUEST);
    // A form saying both approve and reject decides nothing (not the last).
    let both = post(
        c.addr,
        &action,
        &cookies,
        &[
            ("csrf", csrf.as_str()),
            ("decision", "rejected"),
            ("decision", "approved"),
            ("key", "ann@example.com"),
        ],
    )
    .await;
    assert_page(&both, StatusCode::BAD_REQUEST, "error");
    assert!(
        both.body
            .contains("The form sent `decision` more than once; nothing was decided"),
        "{}",
        both.body
    );
    let untouched = get(c.addr, &format!("/approvals/{plan}"), &cookies).await;
    assert!(!untouched.body.contains("1 approved"), "{}", untouched.body);

    let two = [
        ("csrf", csrf.as_str()),
        ("decision", "approved"),
        ("key", "ann@example.com"),
        ("key", "BOB@example.com"),
        ("note", "left on Friday <ok>"),
    ];
    let decided = post(c.addr, &action, &cookies, &two).await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.body);
    let after = get(c.addr, &format!("/approvals/{plan}"), &cookies).await;
    let who = sluice::console::access::os_user();
    assert!(after.body.contains("2 approved"), "{}", after.body);
    assert!(after.body.contains("1 pending"), "{}", after.body);
    assert!(after.body.contains(&who), "the approver is the OS user");
    assert!(after.body.contains("left on Friday &#60;ok&#62;"));

    let store = Store::open(&Location::Sqlite(sluice_store::path_in(dir.path())))
        .await
        .unwrap();
    let detail = store.plan_detail(&plan).await.unwrap().unwrap();
    let states: Vec<_> = detail.items.iter().map(|i| i.state).collect();
    assert_eq!(
        states,
        [
            PlanItemState::Approved,
            PlanItemState::Approved,
            PlanItemState::Pending
        ]
    );
    assert_eq!(detail.decisions.len(), 2);
    assert!(detail.decisions.iter().all(|d| d.by == who));

    // The decision is part of the person's story in the ledger, found in
    // any case, linked to its plan.
    let story = get(c.addr, "/ledger?email=BOB%40EXAMPLE.COM", &cookies).await;
    assert_page(&story, StatusCode::OK, "ledger");
    assert!(
        story
            .body
            .contains(&format!("by {who}: left on Friday &#60;ok&#62;"))
            && story.body.contains(&format!("href=\"/approvals/{plan}\""))
            && story.body.contains(">approved<"),
        "{}",
        story.body
    );

    let metrics = get(c.addr, "/metrics", "").await;
    let parsed =
        prometheus_parse::Scrape::parse(metrics.body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let pending = parsed
        .samples
        .iter()
        .find(|s| {
            s.metric == "sluice_approvals_pending" && s.labels.get("flow") == Some("offboard")
        })
        .expect("pending approvals by flow");
    assert!(
        matches!(pending.value, prometheus_parse::Value::Gauge(n) | prometheus_parse::Value::Untyped(n) if n == 1.0),
        "{:?}",
        pending.value
    );

    let unknown = post(c.addr, "/approvals/ap-000000/decide", &cookies, &two).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    c.stop().await;
}

/// Posts `form` with extra request headers, as a browser would send them.
async fn post_with(
    addr: SocketAddr,
    path: &str,
    cookies: &str,
    headers: &[(&str, &str)],
    form: &[(&str, &str)],
) -> Page {
    let mut req = client().post(url(addr, path)).form(form);
    if !cookies.is_empty() {
        req = req.header(header::COOKIE, cookies);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    read(req.send().await.unwrap()).await
}

/// The states of a plan's items, in order.
async fn plan_states(data: &Path, plan: &str) -> Vec<PlanItemState> {
    let store = Store::open(&Location::Sqlite(sluice_store::path_in(data)))
        .await
        .unwrap();
    let detail = store.plan_detail(plan).await.unwrap().unwrap();
    detail.items.iter().map(|i| i.state).collect()
}

#[tokio::test]
async fn a_post_from_another_origin_or_with_a_planted_cookie_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plan = held_plan(dir.path()).await;
    let c = console(dir.path(), "127.0.0.1:0", None, false).await;
    let page = get(c.addr, &format!("/approvals/{plan}"), "").await;
    let cookies = format!(
        "sluice_csrf={}",
        cookie_value(&set_cookies(&page)["sluice_csrf"])
    );
    let csrf = csrf_field(&page.body);
    let action = format!("/approvals/{plan}/decide");
    let ann = [
        ("csrf", csrf.as_str()),
        ("decision", "approved"),
        ("key", "ann@example.com"),
    ];
    let ours = format!("http://127.0.0.1:{}", c.addr.port());

    // Another page's request, even with this browser's cookie and token.
    let https = format!("https://127.0.0.1:{}", c.addr.port());
    let elsewhere: [&[(&str, &str)]; 6] = [
        &[
            ("Origin", "http://localhost:9999"),
            ("Sec-Fetch-Site", "same-site"),
        ],
        &[("Origin", "null")],
        &[("Origin", &https)],
        &[("Origin", "http://evil.example")],
        &[("Sec-Fetch-Site", "cross-site")],
        &[("Sec-Fetch-Site", "same-site")],
    ];
    for headers in elsewhere {
        let p = post_with(c.addr, &action, &cookies, headers, &ann).await;
        assert_page(&p, StatusCode::FORBIDDEN, &format!("{headers:?}"));
        assert!(p.body.contains("another site"), "{headers:?}: {}", p.body);
    }
    // A cookie planted by a same-site page, with the same value as the
    // field: not a value the console signed.
    let planted = "b".repeat(64);
    let mut forged = ann.to_vec();
    forged[0] = ("csrf", &planted);
    let p = post(c.addr, &action, &format!("sluice_csrf={planted}"), &forged).await;
    assert_page(&p, StatusCode::FORBIDDEN, "planted cookie");
    assert!(p.body.contains("CSRF"), "{}", p.body);
    // The cookie's value as the field is no better.
    let raw = cookie_value(&set_cookies(&page)["sluice_csrf"]).to_string();
    forged[0] = ("csrf", &raw);
    let p = post(c.addr, &action, &cookies, &forged).await;
    assert_page(&p, StatusCode::FORBIDDEN, "the cookie itself as the token");
    assert_eq!(
        plan_states(dir.path(), &plan).await,
        [PlanItemState::Pending; 3],
        "nothing was decided"
    );

    // The console's own pages: by Origin, or by Sec-Fetch-Site alone.
    let mine = post_with(
        c.addr,
        &action,
        &cookies,
        &[("Origin", &ours), ("Sec-Fetch-Site", "same-origin")],
        &ann,
    )
    .await;
    assert_page(&mine, StatusCode::SEE_OTHER, "same origin");
    let bob = [
        ("csrf", csrf.as_str()),
        ("decision", "approved"),
        ("key", "bob@example.com"),
    ];
    let mine = post_with(
        c.addr,
        &action,
        &cookies,
        &[("Sec-Fetch-Site", "same-origin")],
        &bob,
    )
    .await;
    assert_page(&mine, StatusCode::SEE_OTHER, "Sec-Fetch-Site same-origin");
    assert_eq!(
        plan_states(dir.path(), &plan).await,
        [
            PlanItemState::Approved,
            PlanItemState::Approved,
            PlanItemState::Pending
        ]
    );
    c.stop().await;
}

/// `curl` run as uid 65534 (`nobody`): the status and body it got.
async fn curl_as_nobody(args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .uid(65534)
        .gid(65534)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test]
async fn an_open_console_serves_only_its_owners_account() {
    let dir = tempfile::tempdir().unwrap();
    let plan = held_plan(dir.path()).await;
    let c = console(dir.path(), "127.0.0.1:0", None, false).await;
    // This process's own account is served.
    let mine = get(c.addr, "/approvals", "").await;
    assert_page(&mine, StatusCode::OK, "the owner's own connection");
    assert!(mine.body.contains(&plan));
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED the other-account half of this test: it needs root to connect as uid 65534"
        );
        c.stop().await;
        return;
    }
    // Another account: no page, no decision, even with the finding's
    // forged cookie and field, and told what to do instead.
    let (status, body) = curl_as_nobody(&[&url(c.addr, "/approvals")]).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains(&plan), "{body}");
    assert!(
        body.contains("uid 65534") && body.contains("SLUICE_CONSOLE_TOKEN"),
        "{body}"
    );
    let t = "b".repeat(64);
    let (status, body) = curl_as_nobody(&[
        "-X",
        "POST",
        &url(c.addr, &format!("/approvals/{plan}/decide")),
        "-H",
        &format!("Cookie: sluice_csrf={t}"),
        "--data-urlencode",
        &format!("csrf={t}"),
        "--data-urlencode",
        "decision=approved",
        "--data-urlencode",
        "key=ann@example.com",
    ])
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        plan_states(dir.path(), &plan).await,
        [PlanItemState::Pending; 3]
    );
    // Operations stay open on loopback, for a scraper of another account.
    let (status, _) = curl_as_nobody(&[&url(c.addr, "/healthz")]).await;
    assert_eq!(status, 200);
    c.stop().await;

    // With a token, the token is the gate: another account holding it is served.
    let c = console(dir.path(), "127.0.0.1:0", Some(TOKEN), false).await;
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (status, body) = curl_as_nobody(&["-H", &bearer, &url(c.addr, "/approvals")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&plan));
    // It reads; it does not decide, even with a valid CSRF pair.
    let page = get_with(
        c.addr,
        &format!("/approvals/{plan}"),
        "",
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await;
    let csrf = set_cookies(&page)["sluice_csrf"].clone();
    let decided = post_with(
        c.addr,
        &format!("/approvals/{plan}/decide"),
        &format!("sluice_csrf={}", cookie_value(&csrf)),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        &[
            ("csrf", &csrf_field(&page.body)),
            ("decision", "approved"),
            ("key", "ann@example.com"),
        ],
    )
    .await;
    assert_eq!(decided.status, StatusCode::FORBIDDEN, "{}", decided.body);
    assert!(
        decided
            .body
            .contains("The bearer token reads pages and metrics only"),
        "{}",
        decided.body
    );
    assert_eq!(
        plan_states(dir.path(), &plan).await,
        [PlanItemState::Pending; 3]
    );
    c.stop().await;
}

/// Liveness and readiness differ: once a newer `sluice` has migrated the
/// store past this binary's schema, the console is still alive (`/healthz`
/// 200) but no longer ready (`/readyz` 503, saying why).
#[tokio::test]
async fn readiness_needs_the_store_at_this_binarys_schema() {
    let dir = tempfile::tempdir().unwrap();
    let c = console(dir.path(), "127.0.0.1:0", None, false).await;
    let ready = get(c.addr, "/readyz", "").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body, "store: ok\n");

    let known = sluice_store::sqlite::schema::SCHEMA_VERSION;
    let db = rusqlite::Connection::open(sluice_store::path_in(dir.path())).unwrap();
    db.pragma_update(None, "user_version", known + 1).unwrap();
    drop(db);
    let ready = get(c.addr, "/readyz", "").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert_eq!(
        ready.body,
        format!(
            "store: at schema version {}, this sluice works with version {known}\n",
            known + 1
        )
    );
    let health = get(c.addr, "/healthz", "").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    c.stop().await;
}

/// A PostgreSQL that stopped answering held every page and every metrics
/// scrape for as long as it did (100 s and more): a page gives up after
/// 10 s and says the history could not be read, and answers again once
/// the server does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_give_up_on_a_store_that_does_not_answer() {
    let url = sluice_store::testing::TempPostgres::shared()
        .new_database()
        .await;
    let parsed = url::Url::parse(&url).unwrap();
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relay =
        sluice_store::testing::freezable_relay(parsed.port().unwrap(), frozen.clone()).await;
    let mut through = parsed.clone();
    through.set_port(Some(relay)).unwrap();
    let c = sluice::console::start(
        Options {
            listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap().into(),
            token: load_token(None, None).unwrap(),
            metrics_public: false,
            database: Location::Postgres(through.to_string()),
        },
        None,
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(get(c.addr, "/runs", "").await.status, StatusCode::OK);
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let within =
        |path: &'static str| tokio::time::timeout(Duration::from_secs(20), get(c.addr, path, ""));
    let page = within("/runs").await.expect("the page still waits");
    assert!(
        page.body.contains("The run history could not be read"),
        "{}",
        page.body
    );
    // A dependency that does not answer, as `/metrics` says: not a 500.
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    let metrics = within("/metrics").await.expect("the scrape still waits");
    assert_eq!(metrics.status, StatusCode::SERVICE_UNAVAILABLE);
    frozen.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(get(c.addr, "/runs", "").await.status, StatusCode::OK);
    c.stop().await;
}

/// A `history.sqlite` deleted (or replaced) under a running process was
/// written on unseen, its runs recorded nowhere anyone reads: the process
/// is no longer alive, so an orchestrator restarts it onto the file there.
#[tokio::test]
async fn liveness_fails_once_the_history_file_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let c = console(dir.path(), "127.0.0.1:0", None, false).await;
    let health = get(c.addr, "/healthz", "").await;
    assert_eq!(health.body, "database: ok\n");
    let file = sluice_store::path_in(dir.path());
    std::fs::remove_file(&file).unwrap();
    let health = get(c.addr, "/healthz", "").await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "database: its file was deleted, moved or replaced since this process opened it: restart to use the one there now\n"
        )
    );
    c.stop().await;
}

/// With PostgreSQL's connection limit reached, the console's kept session
/// still answered, so `/readyz` said ok while every run that needed a new
/// session failed. Readiness asks for a new session and names the limit;
/// liveness, which a restart would not mend, stays ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_needs_a_new_database_session() {
    let url = sluice_store::testing::TempPostgres::shared()
        .new_database()
        .await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let role = format!("r_{name}");
    let (admin, session) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(session);
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; ALTER DATABASE {name} OWNER TO {role}"
        ))
        .await
        .unwrap();
    let user = sluice_store::testing::USER;
    let as_role = url.replacen(&format!("//{user}@"), &format!("//{role}@"), 1);
    let c = sluice::console::start(
        Options {
            listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap().into(),
            token: load_token(None, None).unwrap(),
            metrics_public: false,
            database: Location::Postgres(as_role),
        },
        None,
        Vec::new(),
    )
    .await
    .unwrap();
    let ready = get(c.addr, "/readyz", "").await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (StatusCode::OK, "store: ok\n")
    );
    // Every session the role may have is the console's own now.
    admin
        .batch_execute(&format!("ALTER ROLE {role} CONNECTION LIMIT 1"))
        .await
        .unwrap();
    // One check stands for a few seconds, so probes are not sessions.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let ready = get(c.addr, "/readyz", "").await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "store: refuses new sessions: its connection limit is reached\n"
        )
    );
    let health = get(c.addr, "/healthz", "").await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "database: ok\n")
    );
    c.stop().await;
}

/// The run ids a runs page lists, in its order.
fn listed_runs(body: &str) -> Vec<String> {
    body.split("<td class=\"mono\"><a href=\"/runs/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

/// The runs list is paged, 50 to a page, newest first: "Older runs" leads
/// to the rest, and no run is on two pages or missing.
#[tokio::test]
async fn the_runs_list_pages_newest_first_through_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    for _ in 0..53 {
        let run = sluice_store::new_run_id();
        let w = Writer::open(dir.path(), &run, "paged").await;
        w.start("flows/paged.toml", dir.path().to_str().unwrap())
            .await;
        w.finish(RunStatus::Succeeded, None).await;
        written.push(run);
    }
    let c = console(dir.path(), "127.0.0.1:0", None, false).await;
    let first = get(c.addr, "/runs", "").await;
    assert_page(&first, StatusCode::OK, "runs");
    let page_one = listed_runs(&first.body);
    assert_eq!(page_one.len(), 50, "{}", first.body);
    assert_eq!(page_one[0], written[52], "the newest run comes first");
    let older = first
        .body
        .split("id=\"older\"")
        .next()
        .and_then(|b| b.rsplit("<a href=\"").next())
        .and_then(|h| h.split('"').next())
        .expect("a link to older runs")
        .replace("&amp;", "&");
    let second = get(c.addr, &older, "").await;
    assert_page(&second, StatusCode::OK, "older runs");
    let page_two = listed_runs(&second.body);
    assert!(!second.body.contains("id=\"older\""), "the last page");
    let mut all: Vec<String> = page_one.into_iter().chain(page_two).collect();
    assert_eq!(all.len(), 53, "no run twice");
    all.sort();
    written.sort();
    assert_eq!(all, written);
    c.stop().await;
}

/// An address already taken is refused once, in one sentence: the cause
/// is not said twice.
#[test]
fn an_address_in_use_is_refused_saying_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = sluice(dir.path(), &["console", "--http", &addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("the console cannot listen on {addr}: ")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");
}
