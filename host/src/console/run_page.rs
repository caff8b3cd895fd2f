//! One run: its facts and error in full, its steps as a time line with
//! requests per connection, the items of each `for_each` step (failed ones
//! first, searchable, paged), its report in a sandboxed frame, and, while
//! it runs, live updates of its steps by server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::Value;
use sluice_store::browse::{ItemFilter, RunOverview};
use sluice_store::{ItemStatus, RunStatus, StepRecord};

use super::Console;
use super::extract::{PagePath, PageQuery};
use super::guard::Seen;
use super::pages::{Failure, page, plausible};
use super::view::{
    self, ArtifactView, AttemptsView, ConnectionView, ItemGroup, ItemView, RunPage, StepView,
    StepsFragment, href, pretty_json, render, run_href, segment, short_json, took,
};

/// Items per page of a step's items.
const ITEMS_PER_PAGE: usize = 50;
/// How often a live page's run is read again.
const LIVE_POLL: Duration = Duration::from_secs(1);
/// Report files bigger than this are not served.
const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// The policy of a report: its own inline styles, nothing else, no script,
/// and a unique origin (`sandbox`), shown only in the console's own frame.
const REPORT_CSP: &str =
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'";

#[derive(Debug, Deserialize, Default)]
pub struct RunQuery {
    #[serde(default)]
    step: String,
    #[serde(default)]
    q: String,
    /// Text, read by [`RunQuery::page`]: a number that does not parse
    /// gets the console's own page, not axum's plain-text rejection.
    #[serde(default)]
    page: String,
}

impl RunQuery {
    /// The items page asked for (0, the first, when none is).
    fn page(&self) -> Result<usize, Failure> {
        super::pages::page_number(&self.page)
    }
}

pub async fn run(
    State(console): State<Arc<Console>>,
    seen: Seen,
    PagePath(id): PagePath<String>,
    PageQuery(q): PageQuery<RunQuery>,
) -> Response {
    match run_page(&console, &seen, &id, q).await {
        Ok(p) => page(StatusCode::OK, &p),
        Err(f) => f.page(&seen),
    }
}

async fn overview(console: &Console, id: &str) -> Result<RunOverview, Failure> {
    plausible(id)?;
    console
        .data
        .overview(id.to_string())
        .await?
        .ok_or_else(|| Failure::NotFound(format!("The history has no run {id}.")))
}

async fn run_page(
    console: &Console,
    seen: &Seen,
    id: &str,
    q: RunQuery,
) -> Result<RunPage, Failure> {
    // A bad page number is refused whichever step it is for.
    let page = q.page()?;
    let o = overview(console, id).await?;
    let steps_html = steps_fragment(&o)?;
    let mut item_groups = Vec::new();
    for step in o.steps.iter().filter(|s| s.items_total.is_some()) {
        item_groups.push(item_group(console, &o, step, &q, page).await?);
    }
    let r = &o.run;
    let mut row = view::run_row(r);
    row.items = String::new();
    Ok(RunPage {
        chrome: seen.chrome(),
        flow_href: href("/runs", &[("flow", &r.flow)]),
        flow_file: r.flow_file.clone(),
        ended: r.ended_at.as_deref().map_or("—".to_string(), view::utc),
        error: r.error.clone(),
        live: r.status == RunStatus::Running,
        live_href: format!("{}/live", run_href(&r.id)),
        steps_html,
        item_groups,
        artifacts: o
            .artifacts
            .iter()
            .map(|a| ArtifactView {
                href: format!("{}/files/{}", run_href(&r.id), segment(&a.name)),
                inline: a.name.ends_with(".html"),
                name: a.name.clone(),
            })
            .collect(),
        run: row,
    })
}

/// The steps as a time line, rendered.
fn steps_fragment(o: &RunOverview) -> Result<String, Failure> {
    let start = parse(&o.run.started_at);
    let end = o
        .run
        .ended_at
        .as_deref()
        .and_then(parse)
        .or_else(|| Some(chrono::Utc::now().fixed_offset()));
    let span_ms = match (start, end) {
        (Some(s), Some(e)) => (e - s).num_milliseconds().max(1),
        _ => 1,
    };
    let steps = o
        .steps
        .iter()
        .map(|s| step_view(s, o, start, span_ms))
        .collect();
    render(&StepsFragment { steps }).map_err(|e| Failure::Internal(e.to_string()))
}

fn parse(t: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(t).ok()
}

/// A whole percentage of the run's span, 0 to 100.
fn percent(ms: i64, span_ms: i64) -> i64 {
    (ms.max(0) * 100 / span_ms).clamp(0, 100)
}

fn step_view(
    s: &StepRecord,
    o: &RunOverview,
    run_start: Option<chrono::DateTime<chrono::FixedOffset>>,
    span_ms: i64,
) -> StepView {
    let offset_ms = match (run_start, parse(&s.started_at)) {
        (Some(run), Some(step)) => (step - run).num_milliseconds().max(0),
        _ => 0,
    };
    let dur_ms = s.duration_ms.map_or_else(
        || {
            parse(&s.started_at).map_or(0, |t| {
                (chrono::Utc::now().fixed_offset() - t).num_milliseconds()
            })
        },
        |d| i64::try_from(d).unwrap_or(i64::MAX),
    );
    let left = percent(offset_ms, span_ms);
    let width = percent(dur_ms, span_ms).min(100 - left);
    StepView {
        id: s.step_id.clone(),
        component: s.component.clone(),
        status: s.status.to_string(),
        offset: format!("+{}", took(Some(u64::try_from(offset_ms).unwrap_or(0)))),
        took: took(s.duration_ms),
        bar_offset: format!("o{left}"),
        bar_width: format!("w{width}"),
        items: s.items_total.map(|total| items_line(o, &s.step_id, total)),
        connections: connections(s.connections.as_ref()),
        error: s.error.clone(),
        attempts: AttemptsView::of(s.attempts.as_ref()),
    }
}

/// `120 items: 118 succeeded, 2 failed`.
fn items_line(o: &RunOverview, step: &str, total: u64) -> String {
    let parts: Vec<String> = o
        .item_counts
        .iter()
        .filter(|c| c.step_id == step)
        .map(|c| format!("{} {}", c.count, c.status))
        .collect();
    let noun = if total == 1 { "item" } else { "items" };
    if parts.is_empty() {
        format!("{total} {noun}")
    } else {
        format!("{total} {noun}: {}", parts.join(", "))
    }
}

fn connections(value: Option<&Value>) -> Vec<ConnectionView> {
    let Some(Value::Object(map)) = value else {
        return Vec::new();
    };
    map.iter()
        .map(|(name, stats)| {
            let n = |k: &str| stats.get(k).and_then(Value::as_u64).unwrap_or(0);
            ConnectionView {
                name: name.clone(),
                requests: n("requests"),
                retried: n("retried"),
                throttled: n("throttled"),
                waited: took(Some(n("wait_ms"))),
            }
        })
        .collect()
}

async fn item_group(
    console: &Console,
    o: &RunOverview,
    step: &StepRecord,
    q: &RunQuery,
    page: usize,
) -> Result<ItemGroup, Failure> {
    let mine = q.step == step.step_id;
    let query = if mine { q.q.clone() } else { String::new() };
    let page_no = if mine { page } else { 0 };
    let filter = ItemFilter {
        search: Some(query.clone()).filter(|s| !s.trim().is_empty()),
        offset: page_no.saturating_mul(ITEMS_PER_PAGE),
        limit: ITEMS_PER_PAGE,
    };
    let found = console
        .data
        .items_page(o.run.id.clone(), step.step_id.clone(), filter)
        .await?;
    let base = run_href(&o.run.id);
    let link = |p: usize| {
        let p = p.to_string();
        format!(
            "{}#items-{}",
            href(
                &base,
                &[("step", &step.step_id), ("q", &query), ("page", &p)]
            ),
            segment(&step.step_id)
        )
    };
    let shown_to = (page_no + 1).saturating_mul(ITEMS_PER_PAGE) as u64;
    let failed = o
        .item_counts
        .iter()
        .filter(|c| c.step_id == step.step_id && c.status == ItemStatus::Failed)
        .map(|c| c.count)
        .sum::<u64>();
    Ok(ItemGroup {
        step: step.step_id.clone(),
        action: base.clone(),
        summary: if query.trim().is_empty() {
            format!(
                "{} items, {failed} failed; failed ones first",
                found.matching
            )
        } else {
            format!("{} items match", found.matching)
        },
        query: query.clone(),
        keyed: found.items.iter().any(|i| i.key.is_some()),
        items: found.items.iter().map(item_view).collect(),
        prev_href: (page_no > 0).then(|| link(page_no - 1)),
        next_href: (found.matching > shown_to).then(|| link(page_no + 1)),
    })
}

fn item_view(i: &sluice_store::ItemRecord) -> ItemView {
    let input = i.input.clone().unwrap_or(Value::Null);
    ItemView {
        number: i.index + 1,
        key: i.key.clone(),
        status: i.status.to_string(),
        took: took(Some(i.duration_ms)),
        input_short: short_json(&input, 100),
        input: pretty_json(&input),
        output_short: i
            .output
            .as_ref()
            .map_or(String::new(), |o| short_json(o, 100)),
        output: i.output.as_ref().map(pretty_json),
        error: i.error.clone(),
        attempts: AttemptsView::of(i.attempts.as_ref()),
    }
}

/// `GET /runs/ID/live`: the run's steps each time they change, as `steps`
/// events carrying the rendered time line, then one `end` event when the
/// run has ended.
pub async fn live(
    State(console): State<Arc<Console>>,
    seen: Seen,
    PagePath(id): PagePath<String>,
) -> Response {
    if let Err(f) = overview(&console, &id).await {
        return f.page(&seen);
    }
    Sse::new(updates(console, id))
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Follow {
    console: Arc<Console>,
    id: String,
    last: Option<String>,
    ended: bool,
}

fn updates(console: Arc<Console>, id: String) -> impl Stream<Item = Result<Event, Infallible>> {
    let start = Follow {
        console,
        id,
        last: None,
        ended: false,
    };
    futures_util::stream::unfold(start, |mut f| async move {
        if f.ended {
            return None;
        }
        loop {
            if f.last.is_some() {
                tokio::time::sleep(LIVE_POLL).await;
            }
            let o = match f.console.data.overview(f.id.clone()).await {
                Ok(Some(o)) => o,
                Ok(None) => return None,
                Err(_) => {
                    // A busy database: try again at the next poll.
                    f.last.get_or_insert_with(String::new);
                    continue;
                }
            };
            if o.run.status != RunStatus::Running {
                f.ended = true;
                let event = Event::default().event("end").data(o.run.status.as_str());
                return Some((Ok(event), f));
            }
            let Ok(html) = steps_fragment(&o) else {
                return None;
            };
            if f.last.as_ref() != Some(&html) {
                f.last = Some(html.clone());
                return Some((Ok(Event::default().event("steps").data(html)), f));
            }
        }
    })
}

/// `GET /runs/ID/files/NAME`: a file the run recorded (its report), if it
/// lies inside the run's own folder. HTML is served under a policy that
/// sandboxes it.
pub async fn file(
    State(console): State<Arc<Console>>,
    seen: Seen,
    PagePath((id, name)): PagePath<(String, String)>,
) -> Response {
    match read_file(&console, &id, &name).await {
        Ok(bytes) => {
            let html = name.ends_with(".html");
            let mut response = (StatusCode::OK, bytes).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(if html {
                    "text/html; charset=utf-8"
                } else {
                    "text/plain; charset=utf-8"
                }),
            );
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(REPORT_CSP),
            );
            headers.insert(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("SAMEORIGIN"),
            );
            response
        }
        Err(f) => f.page(&seen),
    }
}

async fn read_file(console: &Console, id: &str, name: &str) -> Result<Vec<u8>, Failure> {
    let o = overview(console, id).await?;
    let missing = || Failure::NotFound(format!("Run {id} has no file {name}."));
    let artifact = o
        .artifacts
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(missing)?;
    let folder = o
        .run
        .output_dir
        .clone()
        .filter(|d| !d.is_empty())
        .ok_or_else(missing)?;
    let path = std::path::PathBuf::from(&artifact.path);
    tokio::task::spawn_blocking(move || {
        let folder = std::fs::canonicalize(folder).ok()?;
        let path = std::fs::canonicalize(path).ok()?;
        if !path.starts_with(&folder) || std::fs::metadata(&path).ok()?.len() > MAX_FILE_BYTES {
            return None;
        }
        std::fs::read(path).ok()
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(missing)
}
