//! The `html-report` step: the sync's report as one self-contained page.
//!
//! In the spirit of the Power Automate flow it replaces (a styled table with
//! a #1C6EA4 header), with summary counts and a table per section
//! ([`sections`]): new users, leavers (deactivated, waiting for approval,
//! rejected, with the exact `sluice approve ap-…` command when something
//! waits), returners (reactivated), and inactive Procore users the flow does
//! not manage (reported, never touched). Each row says why: the license
//! group and whether the person was matched by mail or UPN, or why they
//! left. Every value is HTML-escaped.
//!
//! Input ([`input`]): the compare step's parts (`counts`, `guard`, and
//! the lists `present_inactive`, `leavers`, `returners`,
//! `inactive_unmanaged`, `known_as`; and `rejected_too_late`, deactivations
//! an admin rejected after Procore had applied them, shown among the
//! leavers), the create step's items (`created_items`) and
//! its approval gate (`created_approval`), the
//! `for_each` outputs of procore-deactivate-user and
//! procore-reactivate-user (`deactivated`, `reactivated`, or null), that
//! of procore-project-owed (`project`: project calls earlier runs owed,
//! shown in a section of their own only when there were some),
//! `skipped_disabled`, `warnings` and `members_warnings`, and
//! `earlier_unfinished` (earlier runs stopped before their report, each
//! told as a warning, and mailed). The lists are read from the host a
//! page at a time (contract 0.2.1), so a million members' report holds
//! one page of them at once. The earlier shape, `diff` (the whole compare
//! output) and `created` (the whole create output), still works. Who waits
//! for approval and who was rejected is read from each gated step's own
//! output (`approval`, which the host adds to a gated step's output): the
//! deactivate step's whole, the create step's as `created_approval` (or
//! inside the whole `created`).
//! The run's id, its flow and whether it is a dry run come from the run
//! context. Each warning (for example "no group matched the prefixes"),
//! and the reason when `compare`'s guard holds deactivations back, is
//! shown as a line of its own above the tables.
//!
//! Output `{"html", "mail_html", "mail_rows_left_out", "subject",
//! "summary": {…}, "notable", "warnings"}`. `html` is the whole page, a row
//! per person, which the flow keeps as the run's `report.html`;
//! `mail_html` is the body the flow mails ([`mail`]): the counts, what
//! needs someone first, where the full report is, and at most `mail_rows`
//! (input, default 1000) rows of each section, so it stays small whatever
//! the tenant's size. The rows are made one at a time ([`assemble`]):
//! written into the page, counted, and kept for the mail only as far as
//! it can show them; the page is written into the output text once
//! ([`Report::into_text`]). `notable` is true when anything was done (created,
//! deactivated, reactivated), failed, or waits for approval, or when
//! `compare`'s guard held deactivations back (in a dry run, also when
//! anything would be done), which is when the flow mails it — and only
//! then.

pub mod assemble;
pub mod input;
pub mod json;
pub mod mail;
pub mod page;
pub mod sections;

use serde::Serialize;
use sluice_guest::{Context, JsonSchema, JsonText, StepError};
use sluice_guest_services::sync::{Guard, GuardKind};

use assemble::{Assembled, Assembler};
pub use input::Input;
use page::Page;
use sections::status;

/// Which run the report is about.
pub struct About<'a> {
    pub dry_run: bool,
    pub flow: &'a str,
    pub run_id: &'a str,
}

/// The report (the step's output; written by [`Report::into_text`]).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The page: every row (the run's report file).
    pub html: String,
    #[serde(flatten)]
    pub rest: Rest,
}

/// The output but the page.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Rest {
    /// The mail body: warnings and what needs someone first, the counts,
    /// where the full report is, and the first `mail_rows` rows of each
    /// section; at most 1 MiB whatever the number of people.
    pub mail_html: String,
    /// How many rows of the page the mail body leaves out.
    pub mail_rows_left_out: usize,
    /// A subject line for mailing it.
    pub subject: String,
    /// The counts.
    pub summary: Summary,
    /// Whether anything was done, failed or waits for approval, or the
    /// guard held deactivations back (in a dry run, also: would be done):
    /// when the flow mails the report.
    pub notable: bool,
    /// The warnings shown.
    pub warnings: Vec<String>,
}

/// The report: the page, in parts, and the rest of the output.
pub struct Report {
    pub page: Page,
    pub rest: Rest,
}

impl Report {
    /// The whole page.
    pub fn html(&self) -> String {
        self.page.text()
    }

    /// The step's output as JSON text: the page escaped straight into a
    /// text allocated once at its size, so the page (most of the output)
    /// is never held twice.
    pub fn into_text(self) -> Result<String, StepError> {
        let rest = serde_json::to_string(&self.rest).map_err(|e| {
            StepError::internal(format!("the output could not be serialised: {e}"))
                .with_code("bad-output")
        })?;
        // `rest` is an object: its fields follow the page's.
        let rest = rest.strip_prefix('{').unwrap_or(&rest);
        let parts = self.page.parts();
        let page_len: usize = parts.iter().map(|p| json::escaped_len(p)).sum();
        let mut text = String::with_capacity(page_len + rest.len() + 16);
        text.push_str("{\"html\":\"");
        for part in parts {
            json::escape_into(&mut text, part);
        }
        text.push('"');
        if rest != "}" {
            text.push(',');
        }
        text.push_str(rest);
        Ok(text)
    }
}

/// The counts at the top of the report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
pub struct Summary {
    pub created: usize,
    pub conflicts: usize,
    pub failed: usize,
    pub would_create: usize,
    pub inactive_in_procore: usize,
    /// License holders known in Procore under another address.
    pub known_as: usize,
    pub skipped_disabled: usize,
    pub present: usize,
    pub license_holders: usize,
    pub deactivated: usize,
    pub would_deactivate: usize,
    pub waiting_for_approval: usize,
    pub rejected: usize,
    pub reactivated: usize,
    pub would_reactivate: usize,
    pub inactive_not_managed: usize,
    /// Project calls earlier runs owed, made in this run.
    pub project_calls: usize,
    pub would_project_calls: usize,
}

/// Every section, in the order shown, with every row: for a caller that
/// wants them all (the step itself never holds them at once).
pub fn sections(input: &Input) -> Result<Vec<sections::Section>, StepError> {
    let mut all = sections::AllRows::default();
    sections::write(input, &mut all)?;
    Ok(all.0)
}

/// The warnings to show: the non-empty ones, trimmed, then the guard's
/// reason when it holds deactivations back.
pub fn warnings(input: &Input) -> Result<Vec<String>, StepError> {
    let guard = input.parts()?.guard;
    let held = guard.hold.then(|| {
        format!(
            "deactivations are held back in this run: {}",
            guard.reason.trim()
        )
    });
    let given = (input.warnings.iter().chain(&input.members_warnings))
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .map(str::to_string);
    // A `--only` run says so first: every count below is only of them.
    Ok(only_line(&input.only)
        .into_iter()
        .chain(given)
        .chain(input.earlier_unfinished.iter().map(input::EarlierRun::line))
        .chain(held)
        .collect())
}

/// What a `--only` run says first: that it handled only the people it
/// names, and left everyone else for the next full run.
fn only_line(only: &[String]) -> Option<String> {
    let keys: Vec<&str> = only
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .collect();
    if keys.is_empty() {
        return None;
    }
    const SHOWN: usize = 10;
    let mut named = keys[..keys.len().min(SHOWN)].join(", ");
    if keys.len() > SHOWN {
        named.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    Some(format!(
        "this run handled only the people named with --only ({named}): everyone else was left as they were, and is not counted here; the next run without --only handles them"
    ))
}

fn summary(rows: &Assembled, input: &Input) -> Result<Summary, StepError> {
    let count = |s: &str| rows.count(s);
    let counts = input.parts()?.counts;
    Ok(Summary {
        created: count(status::CREATED) + count(status::CREATED_NOT_ADDED),
        conflicts: count(status::CONFLICT),
        failed: count(status::FAILED)
            + count(status::DEACTIVATED_NOT_REMOVED)
            + count(status::CREATED_NOT_ADDED)
            + count(status::REACTIVATED_NOT_ADDED),
        would_create: count(status::WOULD_CREATE),
        inactive_in_procore: count(status::INACTIVE),
        known_as: count(status::KNOWN_AS),
        skipped_disabled: input.skipped_disabled,
        present: counts.present,
        license_holders: counts.people,
        deactivated: count(status::DEACTIVATED)
            + count(status::DEACTIVATED_NOT_REMOVED)
            + count(status::DEACTIVATED_BEFORE_REJECTION),
        would_deactivate: count(status::WOULD_DEACTIVATE),
        waiting_for_approval: count(status::WAITING),
        rejected: count(status::REJECTED),
        reactivated: count(status::REACTIVATED)
            + count(status::ALREADY_ACTIVE)
            + count(status::REACTIVATED_NOT_ADDED),
        would_reactivate: count(status::WOULD_REACTIVATE),
        inactive_not_managed: count(status::NOT_MANAGED),
        project_calls: count(status::ADDED_TO_PROJECT)
            + count(status::REMOVED_FROM_PROJECT)
            + count(status::NOT_ON_PROJECT),
        would_project_calls: count(status::WOULD_ADD_TO_PROJECT)
            + count(status::WOULD_REMOVE_FROM_PROJECT),
    })
}

/// Whether the report is worth a mail: anything done, failed or waiting
/// (in a dry run: anything that would be done), or the guard held
/// deactivations back (no license group matched, or the license holders
/// more than halved): that needs someone even when nobody waits.
pub fn notable(s: &Summary, guard_held: bool, dry_run: bool) -> bool {
    let done = s.created + s.deactivated + s.reactivated + s.project_calls;
    let would = s.would_create + s.would_deactivate + s.would_reactivate + s.would_project_calls;
    done + s.failed + s.waiting_for_approval > 0 || guard_held || (dry_run && would > 0)
}

fn subject(s: &Summary, guard: &Guard, dry_run: bool, earlier_unfinished: usize) -> String {
    let earlier = match earlier_unfinished {
        0 => String::new(),
        1 => ", and what 1 earlier stopped run did".to_string(),
        n => format!(", and what {n} earlier stopped runs did"),
    };
    // A guard that held is why the mail went: the subject says so, not
    // only the body ("0 created, 0 failed" reads as a quiet run).
    let held = match (guard.hold, guard.kind) {
        (false, _) => "",
        (true, Some(GuardKind::NoLicenseGroup)) => ", no license group matched",
        (true, _) => ", deactivations held back",
    };
    format!("{}{held}{earlier}", subject_of_this_run(s, dry_run))
}

/// The subject's end in a `--only` run: its counts are only of them.
fn only_subject(only: &[String]) -> String {
    match only.iter().filter(|k| !k.trim().is_empty()).count() {
        0 => String::new(),
        1 => " (only 1 person, --only)".to_string(),
        n => format!(" (only {n} people, --only)"),
    }
}

fn subject_of_this_run(s: &Summary, dry_run: bool) -> String {
    if dry_run {
        let project = match s.would_project_calls {
            0 => String::new(),
            n => format!(", {n} owed project calls"),
        };
        return format!(
            "[Rehearsal] Procore license sync: {} would be created, {} deactivated, {} reactivated{project}, {} failed",
            s.would_create, s.would_deactivate, s.would_reactivate, s.failed
        );
    }
    let mut subject = format!(
        "Procore license sync: {} created, {} failed, {} conflicts",
        s.created, s.failed, s.conflicts
    );
    for (n, what) in [
        (s.deactivated, "deactivated"),
        (s.reactivated, "reactivated"),
        (s.project_calls, "owed project calls made"),
        (s.waiting_for_approval, "waiting for approval"),
    ] {
        if n > 0 {
            subject.push_str(&format!(", {n} {what}"));
        }
    }
    subject
}

/// The report for `input` about the run `about`: one pass over the rows
/// (the paged lists read a page at a time).
pub fn report(input: &Input, about: &About<'_>) -> Result<Report, StepError> {
    let mut assembler = Assembler::new(input.mail_rows);
    sections::write(input, &mut assembler)?;
    let rows = assembler.finish();
    let summary = summary(&rows, input)?;
    let warnings = warnings(input)?;
    let guard = input.parts()?.guard;
    let mail = mail::body(&rows.sections, &summary, &warnings, about, input.mail_rows);
    let anyone = rows.anyone();
    let page = Page::new(rows.tables, anyone, &summary, &warnings, about);
    Ok(Report {
        page,
        rest: Rest {
            mail_html: mail.html,
            mail_rows_left_out: mail.left_out,
            subject: subject(
                &summary,
                &guard,
                about.dry_run,
                input.earlier_unfinished.len(),
            ) + only_subject(&input.only).as_str(),
            // An earlier run's work that no report told is news.
            notable: notable(&summary, guard.hold, about.dry_run)
                || !input.earlier_unfinished.is_empty(),
            summary,
            warnings,
        },
    })
}

fn run(input: Input, context: &Context) -> Result<JsonText<Output>, StepError> {
    let about = About {
        dry_run: context.dry_run(),
        flow: context.flow(),
        run_id: context.run_id(),
    };
    Ok(JsonText::new(report(&input, &about)?.into_text()?))
}

sluice_guest::step!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use sections::{Row, Section};
    use serde_json::{Value, json};
    use sluice_guest::ItemResult;
    use sluice_guest_services::sync::ProjectRemoval;

    fn input(value: Value) -> Input {
        serde_json::from_value(value).unwrap()
    }

    /// The step's output, the page whole.
    struct Out {
        html: String,
        mail_html: String,
        mail_rows_left_out: usize,
        subject: String,
        summary: Summary,
        notable: bool,
        warnings: Vec<String>,
    }

    fn report(input: &Input, about: &About<'_>) -> Out {
        let report = super::report(input, about).unwrap();
        let Rest {
            mail_html,
            mail_rows_left_out,
            subject,
            summary,
            notable,
            warnings,
        } = report.rest;
        Out {
            html: report.page.text(),
            mail_html,
            mail_rows_left_out,
            subject,
            summary,
            notable,
            warnings,
        }
    }

    fn about(dry_run: bool) -> About<'static> {
        About {
            dry_run,
            flow: "procore-license-sync",
            run_id: "r1",
        }
    }

    fn error(message: &str) -> Value {
        json!({"kind": "unavailable", "code": "http-503", "message": message, "retryable": true})
    }

    fn sample() -> Input {
        input(json!({
            "skipped_disabled": 2,
            "diff": {
                "missing": [],
                "present": [],
                "counts": {"people": 5, "missing": 4, "present": 1, "present_inactive": 1, "procore_only": 0},
                "present_inactive": [{"key": "old@x.com", "displayName": "Old <b>Timer</b>", "procore_id": 9}]
            },
            "created": {"ok": 3, "failed": 1, "items": [
                {"item": {"key": "a@x.com", "displayName": "<img src=x onerror=alert(1)>"}, "status": "ok", "output": {"key": "a@x.com", "display_name": "A", "status": "created", "procore_id": 11}},
                {"item": {"key": "b@x.com", "displayName": "B & \"Co\""}, "status": "ok", "output": {"key": "b@x.com", "display_name": "B", "status": "conflict", "reason": "login has already been taken"}},
                {"item": {"key": "d@x.com", "displayName": "D"}, "status": "ok", "output": {"key": "d@x.com", "display_name": "D", "status": "created", "procore_id": 12, "reason": "confirmed after a retry", "project": "added"}},
                {"item": {"key": "c@x.com", "displayName": "C"}, "status": "failed", "error": error("HTTP 503 from companies/1/users")}
            ]}
        }))
    }

    fn quiet(counts: Value) -> Value {
        json!({"missing": [], "present": [], "present_inactive": [], "counts": counts})
    }

    #[test]
    fn every_value_is_escaped() {
        let out = report(&sample(), &about(false));
        let page = out.html;
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("Old &lt;b&gt;Timer&lt;/b&gt;"));
        assert!(page.contains("B &amp; \"Co\""));
        assert!(page.contains("#1C6EA4"));
        assert!(
            page.contains("<td>Procore id 12; confirmed after a retry; project: added</td>"),
            "{page}"
        );
    }

    #[test]
    fn summary_counts_every_outcome() {
        let out = report(&sample(), &about(false));
        assert_eq!(
            out.summary,
            Summary {
                created: 2,
                conflicts: 1,
                failed: 1,
                would_create: 0,
                inactive_in_procore: 1,
                skipped_disabled: 2,
                present: 1,
                license_holders: 5,
                ..Summary::default()
            }
        );
        assert!(out.notable);
        assert!(out.subject.contains("2 created"));
    }

    #[test]
    fn a_dry_run_is_marked_as_a_rehearsal() {
        let mut i = sample();
        i.created = serde_json::from_value(json!({"ok": 1, "failed": 0, "items": [
            {"item": {"key": "a@x.com", "displayName": "A"}, "status": "ok", "output": {"key": "a@x.com", "display_name": "A", "status": "would_create"}}
        ]}))
        .unwrap();
        let out = report(&i, &about(true));
        assert!(out.html.contains("Rehearsal (dry run)"));
        assert!(out.html.contains("<th>Would create</th>"));
        assert!(out.html.contains("<th>Would deactivate</th>"));
        assert!(out.subject.starts_with("[Rehearsal]"));
        assert_eq!(out.summary.would_create, 1);
    }

    #[test]
    fn warnings_are_shown_escaped_and_replace_all_is_well() {
        let i = input(json!({
            "diff": quiet(json!({"people": 0, "missing": 0, "present": 0, "present_inactive": 0, "procore_only": 0})),
            "created": null,
            "warnings": ["no Graph group's name starts with \"License - <Microsoft>\": nobody is synced.", ""]
        }));
        let out = report(&i, &about(false));
        let html = &out.html;
        assert_eq!(html.matches("class=\"warning\"").count(), 1, "{html}");
        assert!(html.contains("<strong>Warning:</strong> no Graph group's name starts with \"License - &lt;Microsoft&gt;\""));
        assert!(!html.contains("every license holder is already in Procore"));
        assert_eq!(out.warnings.len(), 1);
    }

    #[test]
    fn the_members_steps_warnings_follow_the_others() {
        let i = input(json!({
            "diff": quiet(json!({"people": 0, "missing": 0, "present": 0, "present_inactive": 0, "procore_only": 0})),
            "created": null,
            "warnings": ["a group warning"],
            "members_warnings": [" ", "Graph delta could not be used, so every member was read: 410 Gone"]
        }));
        let out = report(&i, &about(false));
        assert_eq!(
            out.warnings,
            [
                "a group warning",
                "Graph delta could not be used, so every member was read: 410 Gone"
            ]
        );
        assert!(
            out.html
                .contains("<strong>Warning:</strong> Graph delta could not be used"),
            "{}",
            out.html
        );
        assert!(!out.notable, "a warning alone is not mailed");
    }

    /// A `--only` run's report says first that it handled only the people
    /// named, and its subject says so: its counts are only of them (a
    /// tester's `--only` run mailed "1 created" with no word of the one
    /// still missing).
    #[test]
    fn a_run_with_only_says_so_first_and_in_its_subject() {
        let i = input(json!({
            "diff": quiet(json!({"people": 2, "missing": 1, "present": 1, "present_inactive": 0, "procore_only": 0})),
            "created": null,
            "warnings": ["a group warning"],
            "only": ["zed@contoso.com"]
        }));
        let out = report(&i, &about(false));
        assert_eq!(out.warnings.len(), 2);
        assert!(
            out.warnings[0].starts_with(
                "this run handled only the people named with --only (zed@contoso.com): everyone else was left as they were"
            ),
            "{:?}",
            out.warnings
        );
        assert!(
            out.subject.ends_with(" (only 1 person, --only)"),
            "{}",
            out.subject
        );
        assert!(
            out.html
                .contains("handled only the people named with --only")
        );
        let many: Vec<String> = (0..12).map(|n| format!("p{n}@x.com")).collect();
        assert!(only_line(&many).unwrap().contains("p9@x.com and 2 more"));
        assert_eq!(only_subject(&many), " (only 12 people, --only)");
        assert!(only_line(&[]).is_none() && only_subject(&[]).is_empty());
    }

    /// A run stopped part-way never reached its report: the next run's
    /// report tells what it did, at the top of the page and the mail, and
    /// is mailed though this run did nothing.
    #[test]
    fn what_an_earlier_stopped_run_did_is_told_and_mailed() {
        let i = input(json!({
            "diff": quiet(json!({"people": 3, "missing": 0, "present": 3, "present_inactive": 0, "procore_only": 0})),
            "created": null,
            "earlier_unfinished": [{
                "id": "20261206T160934Z-470543",
                "status": "interrupted",
                "started_at": "2026-12-06T16:09:34Z",
                "error": "the run was stopped before step `report`: SIGTERM",
                "done": {"create": 1269, "deactivate": 3},
                "failed": {"create": 2},
                "unrecorded": {"create": 4}
            }]
        }));
        let out = report(&i, &about(false));
        let line = "run 20261206T160934Z-470543 (interrupted, started 2026-12-06T16:09:34Z) did not finish; its work may be unreported: create 1269 done, 2 failed, 4 not started or cut off; deactivate 3 done (`sluice runs show 20261206T160934Z-470543`)";
        assert_eq!(out.warnings, [line]);
        assert!(out.notable, "told by mail though this run did nothing");
        assert!(
            out.subject
                .ends_with(", and what 1 earlier stopped run did"),
            "{}",
            out.subject
        );
        assert!(out.html.contains(line), "{}", out.html);
        assert!(
            out.mail_html.contains(
                "create 1269 done, 2 failed, 4 not started or cut off; deactivate 3 done"
            ),
            "{}",
            out.mail_html
        );
    }

    #[test]
    fn nothing_to_do_is_not_notable() {
        let i = input(json!({
            "diff": quiet(json!({"people": 3, "missing": 0, "present": 3, "present_inactive": 0, "procore_only": 0})),
            "created": null
        }));
        let out = report(&i, &about(false));
        assert!(!out.notable);
        assert!(!out.html.contains("class=\"warning\""));
        assert!(
            out.html
                .contains("every license holder is already in Procore")
        );
    }

    fn leavers_input(gate: Value) -> Input {
        input(leavers_value(gate))
    }

    fn leavers_value(gate: Value) -> Value {
        json!({
            "diff": {
                "missing": [], "present": [], "present_inactive": [
                    {"key": "bo@x.com", "displayName": "Bo", "procore_id": 7}
                ],
                "counts": {"people": 4, "missing": 0, "present": 2, "present_inactive": 1, "procore_only": 3},
                "leavers": [], "returners": [
                    {"key": "bo@x.com", "procore_id": 7, "name": "Bo", "license_group": "License – Office", "matched_by": "upn"}
                ],
                "inactive_unmanaged": [{"key": "ext@sub.com", "procore_id": 99, "login": "ext@sub.com"}],
                "guard": {"hold": false, "reason": ""}
            },
            "created": {"ok": 1, "failed": 0, "items": [
                {"item": {"key": "new@x.com", "displayName": "New", "mail": "New@x.com", "groups": ["License – Microsoft E3"]},
                 "status": "ok", "output": {"key": "new@x.com", "display_name": "New", "status": "created", "procore_id": 31}}
            ]},
            "deactivated": {"ok": 1, "failed": 0, "approval": gate, "items": [
                {"item": {"key": "ann@x.com", "procore_id": 42, "name": "Ann", "reason": "user gone"},
                 "status": "ok", "output": {"key": "ann@x.com", "name": "Ann", "procore_id": 42, "status": "deactivated",
                   "deactivated": true, "removed_from_project": "removed", "reason": "user gone"}}
            ]},
            "reactivated": {"ok": 1, "failed": 0, "items": [
                {"item": {"key": "bo@x.com", "procore_id": 7}, "status": "ok", "output": {
                  "key": "bo@x.com", "name": "Bo", "procore_id": 7, "status": "reactivated", "reactivated": true,
                  "project": "added", "license_group": "License – Office", "matched_by": "upn"}}
            ]}
        })
    }

    fn gate(waiting: Value, rejected: Value) -> Value {
        json!({"step": "deactivate", "plan": "ap-7", "reason": "this step always needs approval",
               "approve": "sluice approve ap-7", "approved": 1, "unapproved": 0,
               "waiting": waiting, "rejected": rejected, "closed": 0, "dry_run": false})
    }

    fn row<'a>(sections: &'a [Section], key: &str) -> &'a Row {
        sections
            .iter()
            .flat_map(|s| s.rows.iter())
            .find(|r| r.key == key)
            .unwrap()
    }

    /// A deactivation Procore had applied before an admin rejected it is a
    /// row among the leavers, counted as deactivated, near the top of the
    /// mail: the admin who rejected it learns it stands.
    #[test]
    fn a_deactivation_rejected_too_late_is_told_and_counted() {
        let mut value = leavers_value(Value::Null);
        value["diff"]["rejected_too_late"] = json!([{"key": "cy@x.com", "status": "deactivated",
            "procore_id": 43, "origin": "adopted", "detail": "too late", "name": "Cy Young"}]);
        let out = report(&input(value.clone()), &about(false));
        let cy = row(&sections(&input(value.clone())).unwrap(), "cy@x.com").clone();
        assert_eq!(cy.status, status::DEACTIVATED_BEFORE_REJECTION);
        assert_eq!(cy.name, "Cy Young", "named as Procore names them");
        assert!(
            cy.detail
                .starts_with("Procore id 43; Procore had applied it"),
            "{}",
            cy.detail
        );
        assert_eq!(out.summary.deactivated, 2, "Ann, and Cy");
        assert!(out.notable);
        let (cy_at, ann_at) = (
            out.mail_html.find("cy@x.com").unwrap(),
            out.mail_html.find("ann@x.com").unwrap(),
        );
        assert!(cy_at < ann_at, "{}", out.mail_html);
        // Given as a part beside the other parts, the same; null is none.
        let parts = json!({"counts": value["diff"]["counts"], "rejected_too_late": value["diff"]["rejected_too_late"]});
        let cy = row(&sections(&input(parts)).unwrap(), "cy@x.com").clone();
        assert_eq!(cy.status, status::DEACTIVATED_BEFORE_REJECTION);
        let null = json!({"counts": value["diff"]["counts"], "rejected_too_late": null});
        assert_eq!(report(&input(null), &about(false)).summary.deactivated, 0);
    }

    #[test]
    fn leavers_waiting_and_rejected_are_listed_with_the_approve_command() {
        let i = leavers_input(gate(
            json!([{"key": "cy@x.com", "item": {"key": "cy@x.com", "procore_id": 43, "name": "Cy", "reason": "no license group"}}]),
            json!([{"key": "di@x.com", "item": {"key": "di@x.com", "procore_id": 44, "name": "Di", "reason": "account disabled"}}]),
        ));
        let all = sections(&i).unwrap();
        let leavers = all.iter().find(|s| s.title == "Leavers").unwrap();
        let statuses: Vec<(&str, &str, &str)> = leavers
            .rows
            .iter()
            .map(|r| (r.key.as_str(), r.status, r.why.as_str()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("ann@x.com", "deactivated", "user gone"),
                ("cy@x.com", "waiting for approval", "no license group"),
                ("di@x.com", "rejected", "account disabled"),
            ]
        );
        let note = leavers.note.as_deref().unwrap();
        assert!(note.contains("Approve with: sluice approve ap-7"), "{note}");
        assert!(note.contains("sluice approvals show ap-7"), "{note}");
        assert_eq!(
            row(&all, "ann@x.com").detail,
            "Procore id 42; removed from the project"
        );
        let out = report(&i, &about(false));
        assert!(out.html.contains("<h2>Leavers</h2>"));
        assert!(out.html.contains("sluice approve ap-7"));
        assert_eq!(
            (
                out.summary.deactivated,
                out.summary.waiting_for_approval,
                out.summary.rejected
            ),
            (1, 1, 1)
        );
        assert!(
            out.subject.contains("1 deactivated") && out.subject.contains("1 waiting for approval")
        );
        assert!(out.notable);
    }

    #[test]
    fn returners_and_unmanaged_inactive_users_have_their_own_sections() {
        let i = leavers_input(gate(json!([]), json!([])));
        let all = sections(&i).unwrap();
        let bo = row(&all, "bo@x.com");
        assert_eq!(
            bo.status, "reactivated",
            "a returner is not also an inactive row"
        );
        assert_eq!(bo.why, "License – Office (matched by UPN)");
        assert_eq!(bo.detail, "Procore id 7; project: added");
        // A returner whose key changed while away: matched by Entra id,
        // before and after the reactivation.
        let mut by_entra = leavers_value(gate(json!([]), json!([])));
        by_entra["diff"]["returners"][0]["matched_by"] = json!("entra_id");
        by_entra["reactivated"]["items"][0]["output"]["matched_by"] = json!("entra_id");
        let bo = row(&sections(&input(by_entra.clone())).unwrap(), "bo@x.com").clone();
        assert_eq!(bo.why, "License – Office (matched by Entra id)");
        by_entra["reactivated"] = json!({"ok": 0, "failed": 1, "items": [
            {"item": {"key": "bo@x.com", "procore_id": 7, "name": "Bo",
                      "license_group": "License – Office", "matched_by": "entra_id"},
             "status": "failed", "error": error("HTTP 500 from companies/1/users/7")}
        ]});
        let failed = row(&sections(&input(by_entra)).unwrap(), "bo@x.com").clone();
        assert_eq!(failed.why, "License – Office (matched by Entra id)");
        let ext = row(&all, "ext@sub.com");
        assert_eq!(ext.status, "inactive, not managed");
        assert!(ext.detail.contains("left alone"), "{}", ext.detail);
        assert_eq!(
            row(&all, "new@x.com").why,
            "License – Microsoft E3 (matched by mail)"
        );
        let out = report(&i, &about(false));
        assert!(out.html.contains("<h2>Returners</h2>"));
        assert!(
            out.html
                .contains("<h2>Inactive in Procore, not managed by this flow</h2>")
        );
        assert_eq!(
            (out.summary.reactivated, out.summary.inactive_not_managed),
            (1, 1)
        );
        assert_eq!(out.summary.inactive_in_procore, 0);
        assert!(
            all.iter().all(|s| s.note.is_none()),
            "nothing waits: no approve line"
        );
    }

    #[test]
    fn only_waiting_is_notable_but_only_rejected_is_not() {
        let nothing_done = |g: Value| {
            let mut i = leavers_input(g);
            i.created = None;
            i.reactivated = None;
            if let Some(d) = i.deactivated.as_mut() {
                d.items.clear();
            }
            i
        };
        let held = json!([{"key": "cy@x.com", "item": {"key": "cy@x.com", "procore_id": 43, "reason": "no license group"}}]);
        let waiting = report(&nothing_done(gate(held.clone(), json!([]))), &about(false));
        assert!(waiting.notable);
        let rejected = report(&nothing_done(gate(json!([]), held)), &about(false));
        assert!(!rejected.notable, "a standing rejection is no news");
    }

    #[test]
    fn creates_held_for_approval_wait_with_the_approve_command() {
        let held = json!([{"key": "new@x.com", "item": {"key": "new@x.com", "displayName": "New",
            "mail": "new@x.com", "groups": ["License – Microsoft E3"]}}]);
        let mut gate = gate(held, json!([]));
        gate["step"] = json!("create");
        gate["reason"] = json!("more than 3 items (4)");
        let i = input(json!({
            "diff": quiet(json!({"people": 1, "missing": 1, "present": 0, "present_inactive": 0, "procore_only": 0})),
            "created_items": [],
            "created_approval": gate
        }));
        let out = report(&i, &about(false));
        assert_eq!(out.summary.waiting_for_approval, 1);
        assert!(out.notable);
        let all = sections(&i).unwrap();
        let new = &all[0];
        assert_eq!(new.title, "New users");
        assert!(new.note.as_deref().unwrap().contains("sluice approve ap-7"));
        assert_eq!(
            (
                new.rows[0].status,
                new.rows[0].name.as_str(),
                new.rows[0].key.as_str()
            ),
            (status::WAITING, "New", "new@x.com")
        );
        assert!(
            out.mail_html.contains("sluice approve ap-7"),
            "{}",
            out.mail_html
        );
    }

    #[test]
    fn the_guard_and_a_failed_project_removal_are_reported() {
        let mut i = leavers_input(gate(json!([]), json!([])));
        let diff = i.diff.as_mut().unwrap();
        diff.guard.hold = true;
        diff.guard.reason = "license holders fell from 100 to 10".into();
        let d = i.deactivated.as_mut().unwrap();
        if let ItemResult::Ok { output } = &mut d.items[0].result {
            output.removed_from_project = Some(ProjectRemoval::Failed);
            output.problem =
                Some("deactivated, but not removed from project 5: HTTP 403: no".into());
        }
        let out = report(&i, &about(false));
        assert!(
            out.warnings
                .iter()
                .any(|w| w.contains("fell from 100 to 10"))
        );
        assert!(out.html.contains("held back in this run"));
        assert_eq!((out.summary.deactivated, out.summary.failed), (1, 1));
        // Held back with nothing done or waiting: still worth a mail.
        let i = input(json!({
            "diff": {"counts": {"people": 0, "missing": 0, "present": 0, "present_inactive": 0, "procore_only": 2},
                     "guard": {"hold": true, "reason": "no license group matched the group prefixes"}},
            "created": null
        }));
        assert!(report(&i, &about(false)).notable);
        assert!(out.html.contains("not removed from project 5: HTTP 403"));
    }

    /// No license group matched: the deactivate step did not run, and
    /// compare's leavers are every managed person, unchecked. None is
    /// listed as a leaver, and the subject says why the mail came. Held
    /// back for another reason, the leavers are listed as not acted on.
    #[test]
    fn a_run_that_matched_no_license_group_lists_no_leavers() {
        let held = |kind: &str| {
            let mut v = leavers_value(Value::Null);
            v["deactivated"] = Value::Null;
            v["diff"]["leavers"] = json!([
                {"key": "cy@x.com", "procore_id": 43, "name": "Cy", "reason": "no license group"},
                {"key": "di@x.com", "procore_id": 44, "name": "Di", "reason": "no license group"}
            ]);
            v["diff"]["guard"] = json!({"hold": true, "reason": "because", "kind": kind});
            input(v)
        };
        let i = held("no_license_group");
        let out = report(&i, &about(false));
        let all = sections(&i).unwrap();
        assert!(
            all.iter()
                .flat_map(|s| s.rows.iter())
                .all(|r| r.status != status::NOT_ACTED_ON && r.key != "cy@x.com"),
            "nobody listed as leaving"
        );
        assert!(!out.html.contains("cy@x.com") && !out.mail_html.contains("di@x.com"));
        assert!(
            out.subject.ends_with(", no license group matched"),
            "{}",
            out.subject
        );
        assert!(out.notable);

        let i = held("holders_fell");
        let out = report(&i, &about(false));
        assert_eq!(
            row(&sections(&i).unwrap(), "cy@x.com").status,
            status::NOT_ACTED_ON
        );
        assert!(
            out.subject.ends_with(", deactivations held back"),
            "{}",
            out.subject
        );
        let quiet = report(&leavers_input(Value::Null), &about(false));
        assert!(!quiet.subject.contains("held back"), "{}", quiet.subject);
    }

    #[test]
    fn a_project_add_procore_refused_counts_as_failed_and_comes_first() {
        let mut v = leavers_value(gate(json!([]), json!([])));
        v["created"]["items"][0]["output"]["project"] = json!("failed: HTTP 503: busy");
        v["reactivated"]["items"][0]["output"]["project"] = json!("failed: HTTP 403: no");
        let out = report(&input(v), &about(false));
        let s = &out.summary;
        assert_eq!(
            (s.created, s.reactivated, s.deactivated, s.failed),
            (1, 1, 1, 2),
            "both done, and both failed"
        );
        assert!(out.notable);
        for status in [status::CREATED_NOT_ADDED, status::REACTIVATED_NOT_ADDED] {
            assert!(out.html.contains(status), "{status}: {}", out.html);
        }
        assert!(out.html.contains("project: failed: HTTP 503: busy"));
        let first = out.mail_html.find(status::CREATED_NOT_ADDED);
        let done = out.mail_html.find(&format!(">{}<", status::DEACTIVATED));
        assert!(first.is_some() && first < done, "{}", out.mail_html);
    }

    #[test]
    fn owed_project_calls_made_are_shown_and_a_failed_one_counts_as_failed() {
        let mut v = leavers_value(gate(json!([]), json!([])));
        let quiet = report(&input(v.clone()), &about(false));
        assert!(
            !quiet.html.contains("owed by earlier runs"),
            "no section without calls"
        );
        v["project"] = json!({"ok": 2, "failed": 1, "items": [
            {"item": {"key": "al@x.com", "procore_id": 7, "name": "Al", "project_id": "5", "action": "add"},
             "status": "ok", "output": {"key": "al@x.com", "name": "Al", "procore_id": 7, "project_id": "5", "action": "add", "status": "added"}},
            {"item": {"key": "bo@x.com", "procore_id": 8, "name": "Bo", "project_id": "5", "action": "remove"},
             "status": "ok", "output": {"key": "bo@x.com", "name": "Bo", "procore_id": 8, "project_id": "5", "action": "remove", "status": "not_on_project"}},
            {"item": {"key": "cy@x.com", "procore_id": 9, "name": "Cy", "project_id": "5", "action": "add"},
             "status": "failed", "error": error("HTTP 503: busy")}
        ]});
        let out = report(&input(v), &about(false));
        let s = &out.summary;
        assert_eq!((s.project_calls, s.failed), (2, 1));
        assert!(out.notable);
        assert!(out.html.contains("Project calls owed by earlier runs"));
        for text in [
            status::ADDED_TO_PROJECT,
            status::NOT_ON_PROJECT,
            "an earlier run owed the add to project 5",
            "an earlier run owed the removal from project 5",
            "HTTP 503: busy",
            "Owed project calls made",
        ] {
            assert!(out.html.contains(text), "{text}: {}", out.html);
        }
        assert!(
            out.subject.contains("2 owed project calls made"),
            "{}",
            out.subject
        );
    }

    /// A first run at scale: `n` people created, three failed, and two
    /// leavers waiting for approval.
    fn many(n: usize) -> Input {
        let mut items: Vec<Value> = (0..n)
            .map(|i| {
                let key = format!("user{i}@x.com");
                json!({"item": {"key": key, "displayName": format!("User {i}")}, "status": "ok",
                       "output": {"key": key, "display_name": format!("User {i}"), "status": "created", "procore_id": i}})
            })
            .collect();
        for i in 0..3 {
            items.push(
                json!({"item": {"key": format!("broken{i}@x.com"), "displayName": "Broken"},
                "status": "failed", "error": error(&format!("HTTP 503 number {i}"))}),
            );
        }
        let mut i = leavers_input(gate(
            json!([
                {"key": "cy@x.com", "item": {"key": "cy@x.com", "procore_id": 43, "name": "Cy", "reason": "no license group"}},
                {"key": "dee@x.com", "item": {"key": "dee@x.com", "procore_id": 44, "name": "Dee", "reason": "no license group"}}
            ]),
            json!([]),
        ));
        i.created = serde_json::from_value(json!({"ok": n, "failed": 3, "items": items})).unwrap();
        i
    }

    #[test]
    fn the_mail_of_a_large_run_is_bounded_and_says_how_many_more_the_report_has() {
        let n = 20_000;
        let out = report(&many(n), &about(false));
        // The page keeps every row.
        assert_eq!(out.html.matches("<tr><td>created</td>").count(), n);
        assert!(out.html.len() > mail::MAIL_MAX_BYTES, "{}", out.html.len());
        // The mail: the first 1000 rows of a section (the 3 failures
        // first), and how many more.
        let mail = &out.mail_html;
        assert!(mail.len() < 512 * 1024, "{} bytes", mail.len());
        assert_eq!(mail.matches("<tr><td>created</td>").count(), 997);
        assert_eq!(out.mail_rows_left_out, n + 3 - 1000);
        assert!(
            mail.contains(&format!("… and {} more in this section", n + 3 - 1000)),
            "{mail}"
        );
        // The counts of every section, and where the full report is.
        assert!(mail.contains(&format!("<td>{n}</td>")), "the created count");
        assert!(mail.contains("<code>report.html</code> in the folder of run <code>r1</code>"));
        assert!(mail.contains("sluice runs show r1"));
        // What needs someone comes first: the failures (before any created
        // row) and the approve command, above the counts.
        let first = |needle: &str| {
            mail.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {mail}"))
        };
        assert!(first("Needs your attention") < first("<table class=\"summary\">"));
        assert!(first("3 people failed") < first("<table class=\"summary\">"));
        assert!(first("Approve with: sluice approve ap-7") < first("<table class=\"summary\">"));
        assert!(first("HTTP 503 number 2") < first("<tr><td>created</td>"));
        assert!(first("<tr><td>waiting for approval</td>") < first("<tr><td>deactivated</td>"));
    }

    #[test]
    fn the_mail_rows_are_an_input_and_a_small_report_is_mailed_whole() {
        let out = report(&sample(), &about(false));
        assert_eq!(out.mail_rows_left_out, 0);
        assert!(
            out.mail_html.contains("This mail lists all 5 rows."),
            "{}",
            out.mail_html
        );
        for key in ["a@x.com", "b@x.com", "c@x.com", "d@x.com", "old@x.com"] {
            assert!(out.mail_html.contains(key), "{key}");
        }
        let mut two = sample();
        two.mail_rows = 2;
        let out = report(&two, &about(false));
        assert_eq!(out.mail_rows_left_out, 3);
        assert!(
            out.mail_html
                .contains("the first 2 rows of each section; 3 more are only in the full report")
        );
        assert_eq!(
            out.html,
            report(&sample(), &about(false)).html,
            "the page is unchanged"
        );
    }

    #[test]
    fn a_mail_that_would_weigh_too_much_shows_fewer_rows_and_long_cells_are_cut() {
        let mut i = many(20_000);
        i.mail_rows = usize::MAX;
        i.warnings = (0..50)
            .map(|n| format!("warning {n} {}", "w".repeat(5_000)))
            .collect();
        let out = report(&i, &about(false));
        assert!(
            out.mail_html.len() <= mail::MAIL_MAX_BYTES,
            "{}",
            out.mail_html.len()
        );
        assert!(out.mail_rows_left_out > 0);
        assert!(out.mail_html.contains("and 30 more warnings"));
        assert!(
            !out.mail_html
                .contains(&"w".repeat(mail::MAX_CELL_CHARS + 1))
        );
        assert!(
            out.html.contains(&"w".repeat(5_000)),
            "the page keeps them whole"
        );
    }

    /// The same report given in the shipped flow's shape: the compare
    /// output's parts and the create step's items, each its own input.
    fn in_parts(whole: &Value) -> Value {
        let mut parts = whole.clone();
        let parts_of = parts.as_object_mut().unwrap();
        let diff = parts_of.remove("diff").unwrap();
        for key in [
            "counts",
            "guard",
            "present_inactive",
            "leavers",
            "returners",
            "inactive_unmanaged",
            "known_as",
        ] {
            if let Some(value) = diff.get(key) {
                parts_of.insert(key.into(), value.clone());
            }
        }
        if let Some(created) = parts_of.remove("created") {
            parts_of.insert("created_items".into(), created["items"].clone());
        }
        parts
    }

    #[test]
    fn the_compare_outputs_parts_give_the_report_its_whole_output_gives() {
        let mut whole = leavers_value(gate(
            json!([{"key": "cy@x.com", "item": {"key": "cy@x.com", "procore_id": 43, "name": "Cy", "reason": "no license group"}}]),
            json!([]),
        ));
        // Bo's Procore user is inactive and unmanaged too: one row, as a
        // returner.
        whole["diff"]["inactive_unmanaged"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "bo@x.com", "procore_id": 7}));
        whole["diff"]["guard"] = json!({"hold": true, "reason": "no license group matched"});
        let parts = in_parts(&whole);
        assert!(parts.get("diff").is_none() && parts["created_items"].is_array());
        let (whole, parts) = (input(whole), input(parts));
        for dry_run in [false, true] {
            let (a, b) = (
                report(&whole, &about(dry_run)),
                report(&parts, &about(dry_run)),
            );
            assert_eq!(a.html, b.html);
            assert_eq!(a.mail_html, b.mail_html);
            assert_eq!(
                (&a.summary, &a.subject, a.notable, &a.warnings),
                (&b.summary, &b.subject, b.notable, &b.warnings)
            );
        }
        let out = report(&parts, &about(false));
        assert_eq!(out.html.matches("<td>bo@x.com</td>").count(), 1);
        assert_eq!(
            (
                out.summary.created,
                out.summary.reactivated,
                out.summary.inactive_not_managed
            ),
            (1, 1, 1)
        );
        assert!(
            out.html
                .contains("held back in this run: no license group matched")
        );
    }

    #[test]
    fn a_holder_known_in_procore_under_another_address_is_a_row_not_a_creation() {
        let known = json!({"key": "bob.smith@x.com", "procore_id": 5001,
            "managed_as": "bob@x.onmicrosoft.com", "login": "bob@x.onmicrosoft.com",
            "email": "Bob@x.onmicrosoft.com", "name": "Bob Smith",
            "license_group": "License – Microsoft E3", "matched_by": "mail"});
        let mut value = json!({
            "counts": {"people": 1, "missing": 0, "present": 1, "present_inactive": 0, "procore_only": 0},
            "known_as": [known]
        });
        let out = report(&input(value.clone()), &about(false));
        let row = "<td>in Procore under another address</td><td>Bob Smith</td><td>bob.smith@x.com</td>\
            <td>the same Entra user as Procore user 5001, known in Procore as Bob@x.onmicrosoft.com; \
            Procore's email was not changed (change it there by hand); not created</td>\
            <td>License – Microsoft E3 (matched by Entra id)</td>";
        assert!(out.html.contains(row), "{}", out.html);
        assert!(out.mail_html.contains(row), "{}", out.mail_html);
        assert_eq!((out.summary.known_as, out.summary.created), (1, 0));
        assert!(out.html.contains("<th>Under another address</th>"));
        assert!(!out.notable, "nothing was done or waits");
        // The same in the whole compare output.
        let whole = json!({"diff": {"missing": [], "present": [], "present_inactive": [],
            "counts": value["counts"].take(), "known_as": value["known_as"].take()}});
        assert_eq!(report(&input(whole), &about(false)).html, out.html);
    }

    #[test]
    fn a_list_given_whole_and_in_parts_is_refused_naming_both() {
        let whole = leavers_value(gate(json!([]), json!([])));
        let mut both = whole.clone();
        both["present_inactive"] = json!([]);
        both["counts"] = whole["diff"]["counts"].clone();
        let e = super::report(&input(both), &about(false)).err().unwrap();
        assert_eq!(e.code, "both-shapes");
        assert!(e.message.contains("`diff` and `counts`"), "{}", e.message);
        let mut both = whole.clone();
        both["created_items"] = whole["created"]["items"].clone();
        let e = super::report(&input(both), &about(false)).err().unwrap();
        assert!(
            e.message.contains("`created` and `created_items`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_output_text_is_the_report_with_its_page_escaped_once() {
        let sample = sample();
        let report = super::report(&sample, &about(false)).unwrap();
        let page = report.html();
        let mail = report.rest.mail_html.clone();
        let text = report.into_text().unwrap();
        let output: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(output["html"], json!(page));
        assert_eq!(output["mail_html"], json!(mail));
        assert_eq!(output["summary"]["created"], json!(2));
        assert_eq!(output["notable"], json!(true));
        let fields: Vec<&String> = output.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), 7, "{fields:?}");
    }

    #[test]
    fn the_mail_keeps_no_more_rows_than_it_could_ever_show() {
        let mut keeper = mail::Keeper::new(usize::MAX);
        let n = mail::MOST_ROWS * 2;
        for i in 0..n {
            let failed = i % 1000 == 999;
            keeper.offer(&sections::Row {
                status: if failed {
                    status::FAILED
                } else {
                    status::CREATED
                },
                name: format!("User {i}"),
                key: format!("u{i}@x.com"),
                why: String::new(),
                detail: String::new(),
            });
        }
        let section = keeper.section("New users", None);
        assert_eq!(section.total, n);
        assert_eq!(section.rows.len(), mail::MOST_ROWS);
        // The failures first, in the page's order.
        assert_eq!(section.rows[0].key, "u999@x.com");
        assert_eq!(section.rows[n / 1000].status, status::CREATED);
    }
}
