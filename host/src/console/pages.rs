//! The list pages: Flows, Runs and the Ledger, "run now", and the pages
//! for what cannot be shown (unknown paths and ids, failed reads).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use sluice_store::browse::RunFilter;
use sluice_store::{RunStatus, RunSummary};

use super::data::DataError;
use super::extract::{PagePath, PageQuery};
use super::guard::Seen;
use super::view::{
    self, Choice, ErrorPage, FlowRow, FlowsPage, LedgerEntry, LedgerPage, RunLink, RunsPage, href,
    render, run_href, segment, short_json, utc,
};
use super::{Console, words};
use crate::scheduler::control::RunNowRefused;

/// Runs per page of the run list.
const RUNS_PER_PAGE: usize = 50;
/// Entries the ledger page shows at most.
const LEDGER_MAX: usize = 500;
/// The longest id or name a path may carry; longer is not ours.
const MAX_ID_CHARS: usize = 200;
/// How long "run now" waits for the run's record before sending the
/// browser to its page.
const RECORD_WAIT: Duration = Duration::from_secs(60);
/// How often it looks.
const RECORD_POLL: Duration = Duration::from_millis(50);

/// Why a page is not shown.
pub enum Failure {
    NotFound(String),
    BadRequest(String),
    Conflict(String),
    /// The history's store does not answer, or not now: a 503, as
    /// `/metrics` and the health checks answer, not a fault of the console.
    Unavailable(String),
    Internal(String),
}

impl From<DataError> for Failure {
    fn from(e: DataError) -> Self {
        super::notice(&format!("console: {e}"));
        let message = "The run history could not be read; the console's log says why.".to_string();
        if e.is_transient() {
            Failure::Unavailable(message)
        } else {
            Failure::Internal(message)
        }
    }
}

/// An HTML page, or its error page when it cannot be rendered.
pub fn page(status: StatusCode, template: &impl askama::Template) -> Response {
    match render(template) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            super::notice(&format!("console: a page could not be rendered: {e}"));
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

impl Failure {
    pub fn page(self, seen: &Seen) -> Response {
        let (status, title, message) = match self {
            Failure::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            Failure::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            Failure::Conflict(m) => (StatusCode::CONFLICT, "Not done", m),
            Failure::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "History unavailable", m),
            Failure::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "Something failed", m),
        };
        page(
            status,
            &ErrorPage {
                chrome: seen.chrome(),
                title: title.to_string(),
                message,
            },
        )
    }
}

/// A `?page=N` as given (text, so that a bad number gets the console's
/// own page, not axum's plain-text rejection): 0, the first, when none is.
pub fn page_number(given: &str) -> Result<usize, Failure> {
    let text = given.trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse().map_err(|_| {
        Failure::BadRequest(format!(
            "`page` must be a whole number of a page that can exist (0 is the first page), not `{}`.",
            text.chars().take(40).collect::<String>()
        ))
    })
}

/// Refuses ids that cannot be ours before asking the history.
pub fn plausible(id: &str) -> Result<(), Failure> {
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS || id.chars().any(char::is_control) {
        return Err(Failure::NotFound("There is no such page.".to_string()));
    }
    Ok(())
}

/// Any path the console does not have.
pub async fn not_found(seen: Seen) -> Response {
    Failure::NotFound("There is no such page.".to_string()).page(&seen)
}

pub async fn flows(State(console): State<Arc<Console>>, seen: Seen) -> Response {
    match flow_rows(&console).await {
        Ok(flows) => page(
            StatusCode::OK,
            &FlowsPage {
                chrome: seen.chrome(),
                flows,
                can_run: console.scheduler.is_some(),
            },
        ),
        Err(f) => f.page(&seen),
    }
}

/// The flows served (or described) here first, then the others the
/// history knows, by name.
async fn flow_rows(console: &Console) -> Result<Vec<FlowRow>, Failure> {
    let latest = console.data.flows_latest().await?;
    let mut latest: BTreeMap<String, _> = latest.into_iter().map(|f| (f.flow.clone(), f)).collect();
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    for f in console.known_flows() {
        let last = latest.remove(&f.name);
        let mut row = flow_row(&f.name, last.as_ref());
        row.description = f.description.clone();
        row.file = Some(f.path.display().to_string());
        row.served = console.scheduler.is_some();
        if let Some(s) = &f.schedule {
            row.schedule_words = words::describe(s);
            row.cron = Some(s.cron.clone());
            row.next = words::next_firing(s, now);
        }
        rows.push(row);
    }
    for (name, last) in latest {
        let mut row = flow_row(&name, Some(&last));
        row.file = Some(last.last_run.flow_file.clone());
        rows.push(row);
    }
    Ok(rows)
}

fn flow_row(name: &str, latest: Option<&sluice_store::browse::FlowLatest>) -> FlowRow {
    FlowRow {
        name: name.to_string(),
        description: None,
        file: None,
        schedule_words: "not served here".to_string(),
        cron: None,
        next: "—".to_string(),
        last_run: latest.map(|l| RunLink {
            href: run_href(&l.last_run.id),
            status: l.last_run.status.to_string(),
            started: utc(&l.last_run.started_at),
        }),
        last_success: latest
            .and_then(|l| l.last_success.as_deref())
            .map_or("—".to_string(), utc),
        served: false,
        runs_href: href("/runs", &[("flow", name)]),
        run_href: format!("/flows/{}/run", segment(name)),
    }
}

/// `POST /flows/NAME/run`: starts a run now (serve only) and shows it.
pub async fn run_now(
    State(console): State<Arc<Console>>,
    seen: Seen,
    PagePath(name): PagePath<String>,
) -> Response {
    let Some(control) = &console.scheduler else {
        return Failure::NotFound(
            "This console does not run flows; use `sluice serve --http` for a \"run now\" button."
                .to_string(),
        )
        .page(&seen);
    };
    match control.run_now(&name, Duration::from_secs(10)).await {
        Ok(run_id) => {
            recorded(&console, &run_id).await;
            Redirect::to(&run_href(&run_id)).into_response()
        }
        Err(RunNowRefused::Unknown(_)) => {
            Failure::NotFound(format!("No served flow is named {name}.")).page(&seen)
        }
        Err(e @ RunNowRefused::Gone { .. }) => Failure::NotFound(e.to_string()).page(&seen),
        Err(e) => Failure::Conflict(e.to_string()).page(&seen),
    }
}

/// Waits until a run just started is in the history (its record is
/// written by the run's own task, just after the scheduler answers), so
/// the page the browser is sent to shows it rather than "no such run".
/// Gives up after [`RECORD_WAIT`]: the run page then says what it knows.
async fn recorded(console: &Console, run_id: &str) {
    let deadline = tokio::time::Instant::now() + RECORD_WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_)) = console.data.overview(run_id.to_string()).await {
            return;
        }
        tokio::time::sleep(RECORD_POLL).await;
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct RunsQuery {
    #[serde(default)]
    flow: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    after: String,
}

pub async fn runs(
    State(console): State<Arc<Console>>,
    seen: Seen,
    PageQuery(q): PageQuery<RunsQuery>,
) -> Response {
    match runs_page(&console, &seen, q).await {
        Ok(p) => page(StatusCode::OK, &p),
        Err(f) => f.page(&seen),
    }
}

async fn runs_page(console: &Console, seen: &Seen, q: RunsQuery) -> Result<RunsPage, Failure> {
    let status = match q.status.as_str() {
        "" => None,
        s => Some(
            s.parse::<RunStatus>()
                .map_err(|e| Failure::BadRequest(e.to_string()))?,
        ),
    };
    let filter = RunFilter {
        flow: Some(q.flow.clone()).filter(|f| !f.is_empty()),
        status,
        after: Some(q.after.clone()).filter(|a| !a.is_empty()),
        limit: RUNS_PER_PAGE,
    };
    let found = console.data.runs_page(filter).await?;
    let ids = found.runs.iter().map(|r| r.id.clone()).collect();
    let totals = console.data.item_totals(ids).await?;
    let runs = found
        .runs
        .iter()
        .zip(totals)
        .map(|(r, (total, failed))| {
            let mut row = view::run_row(r);
            row.items = match (total, failed) {
                (0, _) => "—".to_string(),
                (t, 0) => format!("{t}"),
                (t, f) => format!("{t} ({f} failed)"),
            };
            row
        })
        .collect();
    let mut flows: Vec<String> = console
        .data
        .flows_latest()
        .await?
        .into_iter()
        .map(|f| f.flow)
        .collect();
    if !q.flow.is_empty() && !flows.contains(&q.flow) {
        flows.push(q.flow.clone());
    }
    let pairs = |after: &str| {
        href(
            "/runs",
            &[("flow", &q.flow), ("status", &q.status), ("after", after)],
        )
    };
    Ok(RunsPage {
        chrome: seen.chrome(),
        flow_options: flows
            .into_iter()
            .map(|f| Choice {
                selected: f == q.flow,
                value: f,
            })
            .collect(),
        status_options: RunStatus::ALL
            .iter()
            .map(|s| Choice {
                value: s.to_string(),
                selected: s.as_str() == q.status,
            })
            .collect(),
        runs,
        filtered: !q.flow.is_empty() || !q.status.is_empty(),
        first_href: (!q.after.is_empty()).then(|| pairs("")),
        next_href: found
            .more
            .then(|| found.runs.last().map(|r: &RunSummary| pairs(&r.id)))
            .flatten(),
    })
}

#[derive(Debug, Deserialize, Default)]
pub struct LedgerQuery {
    #[serde(default)]
    email: String,
}

/// `GET /ledger?email=…`: every recorded item that mentions the address
/// and every approval decision about it, oldest first.
pub async fn ledger(
    State(console): State<Arc<Console>>,
    seen: Seen,
    PageQuery(q): PageQuery<LedgerQuery>,
) -> Response {
    let email = q.email.trim().to_string();
    if email.chars().count() > MAX_ID_CHARS {
        return Failure::BadRequest("That address is too long.".to_string()).page(&seen);
    }
    let (found, decided) = if email.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let found = console.data.mentions(email.clone(), LEDGER_MAX + 1).await;
        let decided = console.data.decisions(email.clone()).await;
        match (found, decided) {
            (Ok(found), Ok(decided)) => (found, decided),
            (Err(e), _) | (_, Err(e)) => return Failure::from(e).page(&seen),
        }
    };
    let truncated = found.len() > LEDGER_MAX;
    let mut timed: Vec<(Option<i64>, LedgerEntry)> = found
        .into_iter()
        .take(LEDGER_MAX)
        .map(|m| (instant(m.item.ended_at.as_deref()), item_entry(m)))
        .chain(
            decided
                .into_iter()
                .map(|e| (instant(Some(&e.at)), decision_entry(e))),
        )
        .collect();
    // Stable: entries of one instant keep the store's order.
    timed.sort_by_key(|(at, _)| *at);
    page(
        StatusCode::OK,
        &LedgerPage {
            chrome: seen.chrome(),
            email,
            entries: timed.into_iter().map(|(_, e)| e).collect(),
            truncated,
        },
    )
}

/// An RFC 3339 time as nanoseconds since the epoch, to order entries that
/// different tables recorded.
fn instant(rfc3339: Option<&str>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339?)
        .ok()?
        .timestamp_nanos_opt()
}

/// An item of a run that mentions the person.
fn item_entry(m: sluice_store::browse::ItemMention) -> LedgerEntry {
    let detail = m.item.output.clone().or(m.item.input.clone());
    let detail = detail.unwrap_or(serde_json::Value::Null);
    LedgerEntry {
        when: m.item.ended_at.as_deref().map_or("—".to_string(), utc),
        flow: m.flow,
        run_href: run_href(&m.run_id),
        run_id: m.run_id,
        dry_run: m.dry_run,
        step: m.item.step_id.clone(),
        status: m.item.status.to_string(),
        outcome: outcome(&m.item),
        error: m.item.error.clone(),
        detail_short: short_json(&detail, 120),
        detail: view::pretty_json(&detail),
    }
}

/// A decision about the person in an approval plan (who, and their note),
/// or their plan item closed as no longer needed; linked to the plan.
fn decision_entry(e: sluice_store::LedgerEntry) -> LedgerEntry {
    let (plan_id, status, outcome) = match e.event {
        sluice_store::LedgerEvent::Decision {
            plan_id,
            decision,
            by,
            note,
        } => {
            let note = note.map(|n| format!(": {n}")).unwrap_or_default();
            (plan_id, decision.to_string(), format!("by {by}{note}"))
        }
        sluice_store::LedgerEvent::Closed {
            plan_id, detail, ..
        } => (
            plan_id,
            "closed".to_string(),
            detail.unwrap_or_else(|| "no longer needed".to_string()),
        ),
        // Items come from `mentions`; `Data::decisions` leaves them out.
        sluice_store::LedgerEvent::Item { run_id, .. } => (run_id, String::new(), String::new()),
    };
    LedgerEntry {
        when: utc(&e.at),
        flow: e.flow,
        run_href: format!("/approvals/{}", segment(&plan_id)),
        run_id: plan_id,
        dry_run: false,
        step: e.step,
        status,
        outcome,
        error: None,
        detail_short: String::new(),
        detail: String::new(),
    }
}

/// What a step did for the person, when its output says so (`action`,
/// `outcome` or `status`, as the built-in components write it).
fn outcome(item: &sluice_store::ItemRecord) -> String {
    let output = item.output.as_ref();
    ["action", "outcome", "status"]
        .iter()
        .find_map(|k| output.and_then(|o| o.get(k)).and_then(|v| v.as_str()))
        .unwrap_or("")
        .to_string()
}
