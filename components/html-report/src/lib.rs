//! The `html-report` step: the sync's report as one self-contained page.
//!
//! In the spirit of the Power Automate flow it replaces (a styled table with
//! a #1C6EA4 header), with summary counts and one row per person acted on or
//! worth a look. Every value is HTML-escaped. Input: `{"diff": <compare>,
//! "created": <for_each output of procore-create-user, or null>,
//! "skipped_disabled", "warnings"?: [text…]}`; the run's id, its flow and
//! whether it is a dry run come from the run context. Each warning (for
//! example "no group matched the prefixes") is shown as a line of its own
//! above the tables. Output `{"html", "subject", "summary": {…}, "notable",
//! "warnings"}`; `notable` is true when something was created or failed (in
//! a dry run: would be created), which is when the flow mails it.

use html_escape::encode_text as esc;
use serde::{Deserialize, Serialize};
use sluice_guest::{Context, ForEachOutput, ItemResult, JsonSchema, StepError};
use sluice_guest_services::sync::{CreateStatus, Created, Diff};

/// What to report.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The `compare` step's output.
    pub diff: Diff,
    /// The `procore-create-user` step's output (null when it did not run).
    #[serde(default)]
    pub created: Option<ForEachOutput<Created>>,
    /// How many license group members were skipped as disabled.
    #[serde(default)]
    pub skipped_disabled: usize,
    /// Lines to show above the tables; empty ones are left out.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Which run the report is about.
pub struct About<'a> {
    pub dry_run: bool,
    pub flow: &'a str,
    pub run_id: &'a str,
}

/// The report.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The page.
    pub html: String,
    /// A subject line for mailing it.
    pub subject: String,
    /// The counts.
    pub summary: Summary,
    /// Whether something was created or failed (in a dry run: would be
    /// created): when the flow mails the report.
    pub notable: bool,
    /// The warnings shown.
    pub warnings: Vec<String>,
}

/// The counts at the top of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Summary {
    pub created: usize,
    pub conflicts: usize,
    pub failed: usize,
    pub would_create: usize,
    pub inactive_in_procore: usize,
    pub skipped_disabled: usize,
    pub present: usize,
    pub license_holders: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub status: &'static str,
    pub name: String,
    pub key: String,
    pub detail: String,
}

fn display_name(item: &serde_json::Value) -> String {
    let text = |name: &str| item.get(name).and_then(serde_json::Value::as_str);
    text("displayName").unwrap_or("").to_string()
}

fn key_of(item: &serde_json::Value) -> String {
    item.get("key")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The row of one person the create step handled.
fn created_row(item: &serde_json::Value, output: &Created) -> Row {
    let status = match output.status {
        CreateStatus::Created => "created",
        CreateStatus::Conflict => "conflict",
        CreateStatus::WouldCreate => "would create",
        CreateStatus::Failed => "failed",
    };
    let mut parts = Vec::new();
    if let Some(id) = &output.procore_id {
        parts.push(format!("Procore id {id}"));
    }
    if let Some(reason) = output.reason.as_deref().filter(|r| !r.is_empty()) {
        parts.push(reason.to_string());
    }
    let mut detail = parts.join("; ");
    if let Some(project) = output.project.as_deref().filter(|p| !p.is_empty()) {
        detail = format!("{detail}; project: {}", project.replace('_', " "));
    }
    Row {
        status,
        name: display_name(item),
        key: key_of(item),
        detail,
    }
}

/// One row per item of the create step, then the inactive matches.
pub fn rows(input: &Input) -> Vec<Row> {
    let mut rows = Vec::new();
    let items = input.created.iter().flat_map(|c| c.items.iter());
    for entry in items {
        rows.push(match &entry.result {
            ItemResult::Ok { output } => created_row(&entry.item, output),
            ItemResult::Failed { error } => Row {
                status: "failed",
                name: display_name(&entry.item),
                key: key_of(&entry.item),
                detail: error.message.clone(),
            },
        });
    }
    for inactive in &input.diff.present_inactive {
        rows.push(Row {
            status: "inactive in Procore",
            name: inactive.person.display_name.clone().unwrap_or_default(),
            key: inactive.person.key.clone(),
            detail: format!(
                "holds a license but Procore user {} is inactive; not created again",
                inactive.procore_id
            ),
        });
    }
    rows
}

/// The warnings to show: the non-empty ones, trimmed.
pub fn warnings(input: &Input) -> Vec<String> {
    input
        .warnings
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn summary(rows: &[Row], input: &Input) -> Summary {
    let count = |s: &str| rows.iter().filter(|r| r.status == s).count();
    Summary {
        created: count("created"),
        conflicts: count("conflict"),
        failed: count("failed"),
        would_create: count("would create"),
        inactive_in_procore: count("inactive in Procore"),
        skipped_disabled: input.skipped_disabled,
        present: input.diff.counts.present,
        license_holders: input.diff.counts.people,
    }
}

const STYLE: &str = "body{font-family:Segoe UI,Helvetica,Arial,sans-serif;color:#222;margin:24px}\
h1{font-size:20px;color:#1C6EA4}\
.rehearsal{background:#FFF4CE;border:1px solid #E0C060;padding:8px 12px;margin:12px 0}\
.warning{background:#FDE7E9;border:1px solid #C50F1F;color:#8A0A16;padding:8px 12px;margin:12px 0}\
table{border:1px solid #1C6EA4;background-color:#EEEEEE;width:100%;text-align:left;border-collapse:collapse}\
td,th{border:1px solid #AAAAAA;padding:4px 8px}\
thead{background:#1C6EA4;border-bottom:2px solid #444444}\
thead th{font-size:15px;font-weight:bold;color:#FFFFFF;border-left:2px solid #D0E4F5}\
tbody td{font-size:13px}\
tr:nth-child(even){background:#D0E4F5}\
.summary td{font-weight:bold}";

/// The summary table; a rehearsal shows what would be created instead of
/// what was created and the conflicts met.
fn summary_table(summary: &Summary, dry_run: bool) -> String {
    let mut columns = if dry_run {
        vec![("Would create", summary.would_create)]
    } else {
        vec![
            ("Created", summary.created),
            ("Conflicts", summary.conflicts),
        ]
    };
    columns.extend([
        ("Failed", summary.failed),
        ("Inactive in Procore", summary.inactive_in_procore),
        ("Already in Procore", summary.present),
        ("Skipped (disabled)", summary.skipped_disabled),
    ]);
    let mut table = String::from("<table class=\"summary\"><thead><tr>");
    for (label, _) in &columns {
        table.push_str(&format!("<th>{label}</th>"));
    }
    table.push_str("</tr></thead><tbody><tr>");
    for (_, value) in &columns {
        table.push_str(&format!("<td>{value}</td>"));
    }
    table.push_str("</tr></tbody></table>\n");
    table
}

fn people_table(rows: &[Row], warned: bool) -> String {
    if rows.is_empty() && warned {
        return "<p>Nobody to show: no license holder was found (see the warning above).</p>\n"
            .into();
    }
    if rows.is_empty() {
        return "<p>Nobody needed anything: every license holder is already in Procore.</p>\n"
            .into();
    }
    let mut table = String::from(
        "<table><thead><tr><th>Status</th><th>Name</th><th>Email / login</th><th>Details</th></tr></thead><tbody>\n",
    );
    for r in rows {
        table.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(r.status),
            esc(&r.name),
            esc(&r.key),
            esc(&r.detail)
        ));
    }
    table.push_str("</tbody></table>\n");
    table
}

pub fn html(rows: &[Row], summary: &Summary, warnings: &[String], about: &About<'_>) -> String {
    let mut page = String::new();
    page.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Procore license sync</title><style>");
    page.push_str(STYLE);
    page.push_str("</style></head><body>\n<h1>Procore license sync</h1>\n");
    if about.dry_run {
        page.push_str("<p class=\"rehearsal\"><strong>Rehearsal (dry run):</strong> nothing was changed in Procore and no mail was sent. The rows show what a real run would do.</p>\n");
    }
    for w in warnings {
        page.push_str(&format!(
            "<p class=\"warning\"><strong>Warning:</strong> {}</p>\n",
            esc(w)
        ));
    }
    page.push_str(&format!(
        "<p>Flow <code>{}</code>, run <code>{}</code>.</p>\n",
        esc(about.flow),
        esc(about.run_id)
    ));
    page.push_str(&summary_table(summary, about.dry_run));
    page.push_str("<h2 style=\"font-size:16px\">People</h2>\n");
    page.push_str(&people_table(rows, !warnings.is_empty()));
    page.push_str("</body></html>\n");
    page
}

/// The report for `input` about the run `about`.
pub fn report(input: &Input, about: &About<'_>) -> Output {
    let rows = rows(input);
    let summary = summary(&rows, input);
    let warnings = warnings(input);
    let notable =
        summary.created + summary.failed > 0 || (about.dry_run && summary.would_create > 0);
    let subject = if about.dry_run {
        format!(
            "[Rehearsal] Procore license sync: {} would be created, {} failed",
            summary.would_create, summary.failed
        )
    } else {
        format!(
            "Procore license sync: {} created, {} failed, {} conflicts",
            summary.created, summary.failed, summary.conflicts
        )
    };
    Output {
        html: html(&rows, &summary, &warnings, about),
        subject,
        summary,
        notable,
        warnings,
    }
}

fn run(input: Input, context: &Context) -> Result<Output, StepError> {
    let about = About {
        dry_run: context.dry_run(),
        flow: context.flow(),
        run_id: context.run_id(),
    };
    Ok(report(&input, &about))
}

sluice_guest::step!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn input(value: Value) -> Input {
        serde_json::from_value(value).unwrap()
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
                license_holders: 5
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
}
