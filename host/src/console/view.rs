//! The pages as askama templates (in `templates/`, compiled into the
//! binary; askama escapes every value for HTML unless told otherwise, and
//! only server-rendered fragments are marked safe), the rows they show,
//! and the small formatting helpers they share.

use askama::Template;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use sluice_store::RunSummary;
use sluice_store::render::format_ms;

/// What every page around its content shows: who is looking, the CSRF
/// token its forms carry, and a notice.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    pub who: String,
    pub csrf: String,
    /// Signed in with the token (so there is a session to end).
    pub signed_in: bool,
    pub notice: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub title: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub csrf: String,
    pub next: String,
    pub name: String,
    pub problem: Option<String>,
}

#[derive(Template)]
#[template(path = "flows.html")]
pub struct FlowsPage {
    pub chrome: Chrome,
    pub flows: Vec<FlowRow>,
    /// Whether this console can start runs (`sluice serve --http`).
    pub can_run: bool,
}

pub struct FlowRow {
    pub name: String,
    pub description: Option<String>,
    pub file: Option<String>,
    pub schedule_words: String,
    pub cron: Option<String>,
    pub next: String,
    pub last_run: Option<RunLink>,
    pub last_success: String,
    /// Served by this process, so it can be run now.
    pub served: bool,
    pub runs_href: String,
    pub run_href: String,
}

pub struct RunLink {
    pub href: String,
    pub status: String,
    pub started: String,
}

#[derive(Template)]
#[template(path = "runs.html")]
pub struct RunsPage {
    pub chrome: Chrome,
    pub flow_options: Vec<Choice>,
    pub status_options: Vec<Choice>,
    pub runs: Vec<RunRow>,
    pub filtered: bool,
    pub first_href: Option<String>,
    pub next_href: Option<String>,
}

/// One option of a filter's `<select>`.
pub struct Choice {
    pub value: String,
    pub selected: bool,
}

pub struct RunRow {
    pub id: String,
    pub href: String,
    pub flow: String,
    pub trigger: String,
    pub started: String,
    pub took: String,
    pub status: String,
    pub dry_run: bool,
    pub error: Option<String>,
    pub items: String,
}

#[derive(Template)]
#[template(path = "run.html")]
pub struct RunPage {
    pub chrome: Chrome,
    pub run: RunRow,
    pub flow_href: String,
    pub flow_file: String,
    pub ended: String,
    pub error: Option<String>,
    pub live: bool,
    pub live_href: String,
    /// [`StepsFragment`], rendered (and so escaped) already.
    pub steps_html: String,
    pub item_groups: Vec<ItemGroup>,
    pub artifacts: Vec<ArtifactView>,
}

/// The steps of a run: part of the run page, and what the live updates send.
#[derive(Template)]
#[template(path = "run_steps.html")]
pub struct StepsFragment {
    pub steps: Vec<StepView>,
}

pub struct StepView {
    pub id: String,
    pub component: String,
    pub status: String,
    /// When it started, from the start of the run (`+0:03`).
    pub offset: String,
    pub took: String,
    /// CSS classes placing its bar on the run's time line.
    pub bar_offset: String,
    pub bar_width: String,
    pub items: Option<String>,
    pub connections: Vec<ConnectionView>,
    pub error: Option<String>,
    pub attempts: Option<AttemptsView>,
}

/// A step's or item's attempts under its `retry`, when there were several:
/// how many, and why each earlier one failed (one line each).
pub struct AttemptsView {
    pub made: u32,
    pub failed: Vec<String>,
}

impl AttemptsView {
    pub fn of(attempts: Option<&sluice_store::Attempts>) -> Option<AttemptsView> {
        let a = attempts.filter(|a| a.made > 1)?;
        Some(AttemptsView {
            made: a.made,
            failed: a
                .failed
                .iter()
                .map(|f| format!("{}. {} [{}]: {}", f.attempt, f.kind, f.code, f.message))
                .collect(),
        })
    }
}

pub struct ConnectionView {
    pub name: String,
    pub requests: u64,
    pub retried: u64,
    pub throttled: u64,
    pub waited: String,
}

pub struct ItemGroup {
    pub step: String,
    pub action: String,
    pub query: String,
    pub summary: String,
    pub items: Vec<ItemView>,
    /// Whether any item shown has a key: the Key column is left out of
    /// steps without `for_each_key` (and of records older than keys).
    pub keyed: bool,
    pub prev_href: Option<String>,
    pub next_href: Option<String>,
}

pub struct ItemView {
    /// Counted from 1, as `sluice runs show` and run errors count items.
    pub number: u64,
    /// Who or what the item is about (its step's `for_each_key`), which
    /// its input need not repeat.
    pub key: Option<String>,
    pub status: String,
    pub took: String,
    pub input_short: String,
    pub input: String,
    pub output_short: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<AttemptsView>,
}

pub struct ArtifactView {
    pub name: String,
    pub href: String,
    /// Shown in a sandboxed frame on the page (HTML reports).
    pub inline: bool,
}

#[derive(Template)]
#[template(path = "ledger.html")]
pub struct LedgerPage {
    pub chrome: Chrome,
    pub email: String,
    pub entries: Vec<LedgerEntry>,
    pub truncated: bool,
}

pub struct LedgerEntry {
    pub when: String,
    pub flow: String,
    pub run_id: String,
    pub run_href: String,
    pub dry_run: bool,
    pub step: String,
    pub status: String,
    pub outcome: String,
    pub error: Option<String>,
    pub detail_short: String,
    pub detail: String,
}

/// Characters kept as they are in a path segment; everything else is
/// percent-encoded, so a name can never break out of its segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` as one URL path segment.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// `path?k=v&…` with the pairs form-encoded; empty values are left out.
pub fn href(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(k, v);
        any = true;
    }
    if any {
        format!("{path}?{}", query.finish())
    } else {
        path.to_string()
    }
}

pub fn run_href(id: &str) -> String {
    format!("/runs/{}", segment(id))
}

/// A stored timestamp as `2026-11-24 05:42:00` (UTC).
pub fn utc(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

pub fn took(ms: Option<u64>) -> String {
    ms.map_or_else(|| "—".to_string(), format_ms)
}

/// The first `chars` characters of a JSON value written compactly.
pub fn short_json(value: &Value, chars: usize) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > chars {
        let cut: String = text.chars().take(chars.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        text
    }
}

pub fn pretty_json(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// A run as a row of the run list (`items` filled by the caller).
pub fn run_row(r: &RunSummary) -> RunRow {
    RunRow {
        id: r.id.clone(),
        href: run_href(&r.id),
        flow: r.flow.clone(),
        trigger: r.trigger.to_string(),
        started: utc(&r.started_at),
        took: match r.status {
            sluice_store::RunStatus::Running => "…".to_string(),
            _ => took(r.duration_ms),
        },
        status: r.status.to_string(),
        dry_run: r.dry_run,
        error: r.error.as_deref().map(|e| short_json(&Value::from(e), 160)),
        items: String::new(),
    }
}

/// A page, rendered; a template that fails to render is a bug, reported
/// as such rather than as a half page.
pub fn render(template: &impl Template) -> Result<String, askama::Error> {
    template.render()
}

#[derive(Template)]
#[template(path = "approvals.html")]
pub struct ApprovalsPage {
    pub chrome: Chrome,
    pub open: Vec<PlanRow>,
    pub closed: Vec<PlanRow>,
}

/// An approval plan in a list, and at the top of its own page.
pub struct PlanRow {
    pub id: String,
    pub href: String,
    pub flow: String,
    pub step: String,
    pub reason: String,
    pub open: bool,
    /// The plan's revision: the decision form sends it back, so a request
    /// a later run added is not decided from this page.
    pub revision: u64,
    pub pending: u64,
    pub approved: u64,
    pub rejected: u64,
    pub done: u64,
    pub closed: u64,
    pub updated: String,
    pub closed_at: Option<String>,
}

#[derive(Template)]
#[template(path = "plan.html")]
pub struct PlanPage {
    pub chrome: Chrome,
    pub plan: PlanRow,
    /// Where the decision form posts.
    pub action: String,
    /// This page's items (pending first), of the plan's `items_total`.
    pub items: Vec<PlanItemView>,
    /// "items 1–200 of 4808", when the plan has more than one page.
    pub items_range: Option<String>,
    pub prev_href: Option<String>,
    pub next_href: Option<String>,
    /// Pending items of the plan this page does not show: the form then
    /// offers every pending item of the plan, not only those shown.
    pub pending_elsewhere: u64,
    /// When the page was made (RFC 3339): "every pending item of the
    /// plan" tells which items someone decided after it.
    pub shown_at: String,
    /// Newest first, the latest [`super::approvals::DECISIONS_SHOWN`].
    pub decisions: Vec<DecisionView>,
    /// Decisions older than those shown.
    pub decisions_more: usize,
}

pub struct PlanItemView {
    pub key: String,
    pub state: String,
    /// Pending, approved or rejected: a decision may still change it.
    pub decidable: bool,
    pub pending: bool,
    /// Why the item is in the plan, when its input says.
    pub why: String,
    pub what_short: String,
    pub what: String,
    /// Who decided last, and when.
    pub decided: String,
    pub note: Option<String>,
    pub last_seen_run: String,
    pub last_seen_href: String,
}

pub struct DecisionView {
    pub key: String,
    pub decision: String,
    pub by: String,
    pub at: String,
    pub note: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_their_url_segment() {
        assert_eq!(segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(segment("../x"), "..%2Fx");
        assert_eq!(
            href("/runs", &[("flow", "a&b=c"), ("status", "")]),
            "/runs?flow=a%26b%3Dc"
        );
    }

    #[test]
    fn hostile_text_is_escaped_in_pages() {
        let page = ErrorPage {
            chrome: Chrome {
                who: "<b>me</b>".into(),
                ..Chrome::default()
            },
            title: "\"quoted\" & 'single'".into(),
            message: "<script>alert(1)</script>".into(),
        };
        let html = render(&page).unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
        assert!(html.contains("&#60;b&#62;me&#60;/b&#62;"));
        assert!(!html.contains("\"quoted\""));
    }
}
