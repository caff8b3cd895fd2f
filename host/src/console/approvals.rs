//! Approvals: the plans a step held back for a person to decide, each
//! with its items (key, what would be done, why), the form to approve or
//! reject all of them or some with a note, and the decisions made (who,
//! when, the note). A decision is recorded under the viewer's name (the
//! login's, or the OS user on an open loopback console); the flow's next
//! run applies what was approved.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use sluice_store::approval::MAX_NOTE_CHARS;
use sluice_store::{
    ApprovalError, Decision, DecisionOutcome, DecisionRequest, PlanDetail, PlanItemState,
    PlanQuery, PlanStatus, PlanSummary, StoreError,
};

use super::Console;
use super::extract::{PagePath, PageQuery};
use super::guard::Seen;
use super::pages::{Failure, page, plausible};
use super::view::{
    ApprovalsPage, DecisionView, PlanItemView, PlanPage, PlanRow, href, pretty_json, run_href,
    segment, short_json, utc,
};

/// Plans the list shows (open ones first, then the latest closed).
const PLANS_SHOWN: usize = 100;
/// A plan's items per page: a mass leave of thousands was one page of
/// megabytes, each row with its whole input.
const PLAN_ITEMS_PER_PAGE: usize = 200;
/// The latest decisions a plan's page lists.
pub const DECISIONS_SHOWN: usize = 200;

/// `?page=N` of a plan's page (0, the first, when none is given).
#[derive(Debug, serde::Deserialize, Default)]
pub struct PlanPageQuery {
    /// Text, read by [`PlanPageQuery::page`], so that a bad number gets the
    /// console's own page.
    #[serde(default)]
    page: String,
}

impl PlanPageQuery {
    fn page(&self) -> Result<usize, Failure> {
        super::pages::page_number(&self.page)
    }
}

fn plan_href(id: &str) -> String {
    format!("/approvals/{}", segment(id))
}

fn row(p: &PlanSummary) -> PlanRow {
    PlanRow {
        href: plan_href(&p.id),
        id: p.id.clone(),
        flow: p.flow.clone(),
        step: p.step.clone(),
        reason: p.reason.clone(),
        open: p.status == PlanStatus::Open,
        revision: p.revision,
        pending: p.counts.pending,
        approved: p.counts.approved,
        rejected: p.counts.rejected,
        done: p.counts.done,
        closed: p.counts.closed,
        updated: utc(&p.updated_at),
        closed_at: p.closed_at.as_deref().map(utc),
    }
}

/// `GET /approvals`: open plans, then decided (closed) ones.
pub async fn list(State(console): State<Arc<Console>>, seen: Seen) -> Response {
    let query = PlanQuery {
        flow: None,
        include_closed: true,
        limit: PLANS_SHOWN,
    };
    match console.data.plans(query).await {
        Ok(plans) => {
            let (open, closed): (Vec<_>, Vec<_>) = plans.iter().map(row).partition(|p| p.open);
            page(
                StatusCode::OK,
                &ApprovalsPage {
                    chrome: seen.chrome(),
                    open,
                    closed,
                },
            )
        }
        Err(e) => Failure::from(e).page(&seen),
    }
}

async fn detail(console: &Console, id: &str) -> Result<PlanDetail, Failure> {
    plausible(id)?;
    console
        .data
        .plan(id.to_string())
        .await?
        .ok_or_else(|| Failure::NotFound(format!("There is no approval plan {id}.")))
}

/// `GET /approvals/ID`: one plan, its items and every decision about it.
pub async fn plan(
    State(console): State<Arc<Console>>,
    seen: Seen,
    PagePath(id): PagePath<String>,
    PageQuery(q): PageQuery<PlanPageQuery>,
) -> Response {
    let shown = match q.page() {
        Ok(page_no) => detail(&console, &id)
            .await
            .map(|d| plan_page(&seen, &d, None, page_no)),
        Err(f) => Err(f),
    };
    match shown {
        Ok(p) => page(StatusCode::OK, &p),
        Err(f) => f.page(&seen),
    }
}

/// Page `page_no` of plan `d`'s items, pending ones first.
fn plan_page(seen: &Seen, d: &PlanDetail, notice: Option<String>, page_no: usize) -> PlanPage {
    let mut chrome = seen.chrome();
    chrome.notice = notice;
    // Pending ones first: they are what the page is for. Stable, so each
    // part keeps the store's order from page to page.
    let mut order: Vec<&sluice_store::PlanItem> = d.items.iter().collect();
    order.sort_by_key(|i| i.state != PlanItemState::Pending);
    let total = order.len();
    let from = page_no.saturating_mul(PLAN_ITEMS_PER_PAGE).min(total);
    let to = from.saturating_add(PLAN_ITEMS_PER_PAGE).min(total);
    let on_page = &order[from..to];
    let pending_here = on_page
        .iter()
        .filter(|i| i.state == PlanItemState::Pending)
        .count() as u64;
    let base = plan_href(&d.plan.id);
    let link = |p: usize| href(&base, &[("page", &p.to_string())]);
    let items: Vec<PlanItemView> = on_page
        .iter()
        .map(|i| PlanItemView {
            key: i.key.clone(),
            state: i.state.to_string(),
            decidable: i.state.is_live(),
            pending: i.state == PlanItemState::Pending,
            why: i.reason().unwrap_or_default().to_string(),
            what_short: short_json(&i.input, 120),
            what: pretty_json(&i.input),
            decided: match (&i.decided_by, &i.decided_at) {
                (Some(by), Some(at)) => format!("{by}, {}", utc(at)),
                _ => String::new(),
            },
            note: i.note.clone(),
            last_seen_href: run_href(&i.last_seen_run),
            last_seen_run: i.last_seen_run.clone(),
        })
        .collect();
    PlanPage {
        chrome,
        plan: row(&d.plan),
        action: format!("{base}/decide"),
        items,
        items_range: match (from < total, total > PLAN_ITEMS_PER_PAGE) {
            (true, true) => Some(format!("items {}–{to} of {total}, pending first", from + 1)),
            (false, _) if page_no > 0 => Some(format!(
                "page {page_no} is past the plan's last item ({total} items; pages count from 0)"
            )),
            _ => None,
        },
        // Past the end, "previous" is the last page there is.
        prev_href: (page_no > 0 && total > 0)
            .then(|| link((page_no - 1).min((total - 1) / PLAN_ITEMS_PER_PAGE))),
        next_href: (to < total).then(|| link(page_no + 1)),
        pending_elsewhere: d.plan.counts.pending.saturating_sub(pending_here),
        shown_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        decisions_more: d.decisions.len().saturating_sub(DECISIONS_SHOWN),
        decisions: d
            .decisions
            .iter()
            .rev()
            .take(DECISIONS_SHOWN)
            .map(|r| DecisionView {
                key: r.key.clone(),
                decision: r.decision.to_string(),
                by: r.by.clone(),
                at: utc(&r.at),
                note: r.note.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// What the decision form sent.
struct DecisionForm {
    decision: Decision,
    /// The keys ticked that the page did not show as pending.
    keys: Vec<String>,
    /// The pending keys the page showed that were ticked, or all of them
    /// with "every pending item": each decided only if it is still
    /// pending. Never every pending item of the plan as it is when the
    /// form arrives (a run may have added people since, whom the viewer
    /// never saw), and never one another person decided since the page
    /// was shown.
    if_pending: Vec<String>,
    /// "Every pending item of the plan": each item pending now that had
    /// joined by the revision the page showed, its other pages too (none
    /// someone decided since, none a run added since).
    all_plan: bool,
    /// When the page was made: with `all_plan`, the items of its revision
    /// someone decided after it are named as left as they are.
    shown_at: Option<chrono::DateTime<chrono::FixedOffset>>,
    note: Option<String>,
    /// The plan's revision the page showed: a key that joined since (a
    /// new request, even under a key the page showed) is not decided.
    revision: Option<u64>,
}

/// Reads the form: `decision`, the `key`s ticked (repeated), `all`, the
/// pending keys the page `shown` (repeated), `note`. A field the page
/// sends once (`decision`, `all`, `note`) that comes twice is refused: a
/// form saying both "approved" and "rejected" decides nothing, rather
/// than whichever came last.
fn read_form(body: &[u8]) -> Result<DecisionForm, Failure> {
    let (mut decision, mut keys, mut all, mut note) = (None, Vec::new(), None, None);
    let mut all_plan = None;
    let mut shown_at = None;
    let mut revision = None;
    let mut shown = Vec::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        let once = match k.as_ref() {
            "decision" => decision.replace(v.into_owned()).is_none(),
            "key" => {
                keys.push(v.into_owned());
                true
            }
            "shown" => {
                shown.push(v.into_owned());
                true
            }
            "all" => all.replace(v == "1").is_none(),
            "all_plan" => all_plan.replace(v == "1").is_none(),
            "shown_at" => shown_at.replace(v.into_owned()).is_none(),
            "note" => note.replace(v.trim().to_string()).is_none(),
            "revision" => revision.replace(v.into_owned()).is_none(),
            _ => true,
        };
        if !once {
            return Err(Failure::BadRequest(format!(
                "The form sent `{k}` more than once; nothing was decided. Reload the page and decide again."
            )));
        }
    }
    let all = all.unwrap_or(false);
    let all_plan = all_plan.unwrap_or(false);
    let note = note.filter(|n| !n.is_empty());
    let revision = match revision.map(|r| r.parse::<u64>()) {
        None => None,
        Some(Ok(r)) if r > 0 => Some(r),
        Some(_) => {
            return Err(Failure::BadRequest(
                "The form's plan revision is not a number; reload the page and decide again. Nothing was decided.".into(),
            ));
        }
    };
    let decision = match decision.as_deref() {
        Some("approved") => Decision::Approved,
        Some("rejected") => Decision::Rejected,
        _ => return Err(Failure::BadRequest("Choose approve or reject.".into())),
    };
    if all_plan && revision.is_none() {
        return Err(Failure::BadRequest(
            "The form did not say which revision of the plan its page showed; reload the page and decide again. Nothing was decided.".into(),
        ));
    }
    if keys.is_empty() && !all && !all_plan {
        return Err(Failure::BadRequest(
            "Tick the items to decide, or \"every pending item\"; nothing was decided.".into(),
        ));
    }
    if all && !all_plan && shown.is_empty() {
        return Err(Failure::BadRequest(
            "The page showed no pending item to decide; reload it and look again. Nothing was decided.".into(),
        ));
    }
    // A ticked item the page showed as pending is decided only if it
    // still is: a decision someone made since the page was shown stands
    // (the page then says so). One it showed decided (rejected, say) is
    // decided again as asked.
    let (mut if_pending, keys): (Vec<String>, Vec<String>) =
        keys.into_iter().partition(|k| shown.contains(k));
    if all {
        if_pending.extend(shown);
    }
    if_pending.sort();
    if_pending.dedup();
    if note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
    {
        return Err(Failure::BadRequest(format!(
            "The note is longer than {MAX_NOTE_CHARS} characters."
        )));
    }
    // Unreadable, it tells nothing: nobody is named as decided since.
    let shown_at = shown_at.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
    Ok(DecisionForm {
        decision,
        keys,
        if_pending,
        all_plan,
        shown_at,
        note,
        revision,
    })
}

/// `POST /approvals/ID/decide`: approves or rejects the items ticked (or
/// every pending one the page showed), recorded under the viewer's name
/// with the note.
pub async fn decide(
    State(console): State<Arc<Console>>,
    seen: Seen,
    PagePath(id): PagePath<String>,
    body: Bytes,
) -> Response {
    let Some(viewer) = &seen.viewer else {
        return Failure::BadRequest("Sign in first.".into()).page(&seen);
    };
    let mut form = match plausible(&id).and_then(|()| read_form(&body)) {
        Ok(form) => form,
        Err(f) => return f.page(&seen),
    };
    if form.all_plan {
        let by = form.revision.unwrap_or_default();
        match detail(&console, &id).await {
            Ok(d) => {
                // Pending now, or decided after the page was made (so
                // possibly pending on it): the store decides the first and
                // names the others as left as they are, as it does for
                // the pending keys a page showed.
                let decided_since = |i: &sluice_store::PlanItem| {
                    let at = i.decided_at.as_deref();
                    let at = at.and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok());
                    matches!((at, form.shown_at), (Some(at), Some(shown)) if at > shown)
                };
                form.if_pending.extend(
                    d.items
                        .into_iter()
                        .filter(|i| i.revision <= by)
                        .filter(|i| i.state == PlanItemState::Pending || decided_since(i))
                        .map(|i| i.key),
                )
            }
            Err(f) => return f.page(&seen),
        }
        if form.if_pending.is_empty() && form.keys.is_empty() {
            return Failure::Conflict(
                "Nothing of the plan as its page showed it is pending any more; nothing was decided.".into(),
            )
            .page(&seen);
        }
    }
    let request = DecisionRequest {
        plan_id: id.clone(),
        keys: form.keys,
        if_pending: form.if_pending,
        decision: form.decision,
        by: viewer.name.clone(),
        note: form.note,
        revision: form.revision,
    };
    match console.data.decide(request).await {
        Ok(outcome) if !outcome.left.is_empty() || !outcome.later.is_empty() => {
            // Shown at once, on the plan as it is now: a redirect would
            // lose the notice.
            let notice = left_notice(&outcome);
            match detail(&console, &id).await {
                Ok(d) => page(StatusCode::OK, &plan_page(&seen, &d, Some(notice), 0)),
                Err(f) => f.page(&seen),
            }
        }
        Ok(_) => Redirect::to(&plan_href(&id)).into_response(),
        Err(StoreError::Approval(ApprovalError::UnknownPlan(_))) => {
            Failure::NotFound(format!("There is no approval plan {id}.")).page(&seen)
        }
        Err(StoreError::Approval(refused)) => Failure::Conflict(refused.to_string()).page(&seen),
        Err(e) => Failure::from(e).page(&seen),
    }
}

/// What a bulk decision left alone, and why.
fn left_notice(outcome: &DecisionOutcome) -> String {
    let mut notice = format!(
        "{} item{} decided.",
        outcome.changed.len(),
        if outcome.changed.len() == 1 { "" } else { "s" },
    );
    let n = outcome.left.len();
    if n > 0 {
        notice.push_str(&format!(
            " {n} item{} of the plan {} not pending any more (someone decided, or a run settled, since the page was shown), and {} left as {}: {}.",
            if n == 1 { "" } else { "s" },
            if n == 1 { "was" } else { "were" },
            if n == 1 { "is" } else { "are" },
            if n == 1 { "it is" } else { "they are" },
            outcome.left.join(", ")
        ));
    }
    let n = outcome.later.len();
    if n > 0 {
        notice.push_str(&format!(
            " {n} item{} a run added to the plan again after the page was shown, as a new request, {} left pending for you to look at: {}.",
            if n == 1 { "" } else { "s" },
            if n == 1 { "is" } else { "are" },
            outcome.later.join(", ")
        ));
    }
    notice
}
