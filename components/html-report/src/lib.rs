//! The `html-report` step: the sync's report as one self-contained page.
//!
//! In the spirit of the Power Automate flow it replaces (a styled table with
//! a #1C6EA4 header), with summary counts and one row per person acted on or
//! worth a look. Every value is HTML-escaped. Input: `{"diff": <compare>,
//! "created": <for_each output of procore-create-user, or null>,
//! "skipped_disabled", "dry_run", "flow", "run_id", "warnings"?: [text…]}`.
//! Each warning (for example "no group matched the prefixes") is shown as a
//! line of its own above the tables. Output `{"html", "subject", "summary":
//! {…}, "notable", "warnings"}`; `notable` is true when something was
//! created or failed (in a dry run: would be created), which is when the
//! flow mails it.

use html_escape::encode_text as esc;
use sluice_guest::{StepError, Value, json};

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub status: &'static str,
    pub name: String,
    pub key: String,
    pub detail: String,
}

fn text(v: &Value, name: &str) -> String {
    v.get(name)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// One row per item of the create step, then the inactive matches.
pub fn rows(input: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    let items = input
        .get("created")
        .and_then(|c| c.get("items"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for entry in &items {
        let item = entry.get("item").cloned().unwrap_or(Value::Null);
        let name = text(&item, "displayName");
        let key = text(&item, "key");
        if entry.get("status").and_then(Value::as_str) == Some("ok") {
            let output = entry.get("output").cloned().unwrap_or(Value::Null);
            let status = match output.get("status").and_then(Value::as_str) {
                Some("created") => "created",
                Some("conflict") => "conflict",
                Some("would_create") => "would create",
                _ => "failed",
            };
            let reason = text(&output, "reason");
            let mut detail = match output.get("procore_id").filter(|v| !v.is_null()) {
                Some(id) => format!(
                    "Procore id {}",
                    id.as_str().map_or_else(|| id.to_string(), str::to_string)
                ),
                None => String::new(),
            };
            if !reason.is_empty() {
                detail = if detail.is_empty() {
                    reason
                } else {
                    format!("{detail}; {reason}")
                };
            }
            let project = text(&output, "project");
            if !project.is_empty() {
                detail = format!("{detail}; project: {}", project.replace('_', " "));
            }
            rows.push(Row {
                status,
                name,
                key,
                detail,
            });
        } else {
            let message = entry
                .get("error")
                .map(|e| text(e, "message"))
                .unwrap_or_default();
            rows.push(Row {
                status: "failed",
                name,
                key,
                detail: message,
            });
        }
    }
    let inactive = input
        .get("diff")
        .and_then(|d| d.get("present_inactive"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for person in &inactive {
        let id = person
            .get("procore_id")
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .unwrap_or_default();
        rows.push(Row {
            status: "inactive in Procore",
            name: text(person, "displayName"),
            key: text(person, "key"),
            detail: format!("holds a license but Procore user {id} is inactive; not created again"),
        });
    }
    rows
}

/// The warnings to show: non-empty strings of `warnings` (a list, or one string).
pub fn warnings(input: &Value) -> Vec<String> {
    let list = match input.get("warnings") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(one)) => vec![one.as_str()],
        _ => Vec::new(),
    };
    list.into_iter()
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn summary(rows: &[Row], input: &Value) -> Value {
    let count = |s: &str| rows.iter().filter(|r| r.status == s).count();
    let counts = input
        .get("diff")
        .and_then(|d| d.get("counts"))
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "created": count("created"),
        "conflicts": count("conflict"),
        "failed": count("failed"),
        "would_create": count("would create"),
        "inactive_in_procore": count("inactive in Procore"),
        "skipped_disabled": input.get("skipped_disabled").and_then(Value::as_u64).unwrap_or(0),
        "present": counts.get("present").and_then(Value::as_u64).unwrap_or(0),
        "license_holders": counts.get("people").and_then(Value::as_u64).unwrap_or(0),
    })
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

pub fn html(rows: &[Row], summary: &Value, input: &Value) -> String {
    let dry_run = input
        .get("dry_run")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let flow = text(input, "flow");
    let run_id = text(input, "run_id");
    let number = |k: &str| summary.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut page = String::new();
    page.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Procore license sync</title><style>");
    page.push_str(STYLE);
    page.push_str("</style></head><body>\n<h1>Procore license sync</h1>\n");
    if dry_run {
        page.push_str("<p class=\"rehearsal\"><strong>Rehearsal (dry run):</strong> nothing was changed in Procore and no mail was sent. The rows show what a real run would do.</p>\n");
    }
    let warnings = warnings(input);
    for w in &warnings {
        page.push_str(&format!(
            "<p class=\"warning\"><strong>Warning:</strong> {}</p>\n",
            esc(w)
        ));
    }
    page.push_str(&format!(
        "<p>Flow <code>{}</code>, run <code>{}</code>.</p>\n",
        esc(&flow),
        esc(&run_id)
    ));
    page.push_str("<table class=\"summary\"><thead><tr>");
    let columns: &[(&str, &str)] = if dry_run {
        &[
            ("would_create", "Would create"),
            ("failed", "Failed"),
            ("inactive_in_procore", "Inactive in Procore"),
            ("present", "Already in Procore"),
            ("skipped_disabled", "Skipped (disabled)"),
        ]
    } else {
        &[
            ("created", "Created"),
            ("conflicts", "Conflicts"),
            ("failed", "Failed"),
            ("inactive_in_procore", "Inactive in Procore"),
            ("present", "Already in Procore"),
            ("skipped_disabled", "Skipped (disabled)"),
        ]
    };
    for (_, label) in columns {
        page.push_str(&format!("<th>{label}</th>"));
    }
    page.push_str("</tr></thead><tbody><tr>");
    for (key, _) in columns {
        page.push_str(&format!("<td>{}</td>", number(key)));
    }
    page.push_str("</tr></tbody></table>\n<h2 style=\"font-size:16px\">People</h2>\n");
    if rows.is_empty() && !warnings.is_empty() {
        page.push_str(
            "<p>Nobody to show: no license holder was found (see the warning above).</p>\n",
        );
    } else if rows.is_empty() {
        page.push_str(
            "<p>Nobody needed anything: every license holder is already in Procore.</p>\n",
        );
    } else {
        page.push_str("<table><thead><tr><th>Status</th><th>Name</th><th>Email / login</th><th>Details</th></tr></thead><tbody>\n");
        for r in rows {
            page.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(r.status),
                esc(&r.name),
                esc(&r.key),
                esc(&r.detail)
            ));
        }
        page.push_str("</tbody></table>\n");
    }
    page.push_str("</body></html>\n");
    page
}

fn run(input: Value) -> Result<Value, StepError> {
    let rows = rows(&input);
    let summary = summary(&rows, &input);
    let dry_run = input
        .get("dry_run")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let n = |k: &str| summary.get(k).and_then(Value::as_u64).unwrap_or(0);
    let notable = n("created") + n("failed") > 0 || (dry_run && n("would_create") > 0);
    let subject = if dry_run {
        format!(
            "[Rehearsal] Procore license sync: {} would be created, {} failed",
            n("would_create"),
            n("failed")
        )
    } else {
        format!(
            "Procore license sync: {} created, {} failed, {} conflicts",
            n("created"),
            n("failed"),
            n("conflicts")
        )
    };
    let page = html(&rows, &summary, &input);
    Ok(
        json!({ "html": page, "subject": subject, "summary": summary, "notable": notable, "warnings": warnings(&input) }),
    )
}

sluice_guest::step!(run);

#[cfg(test)]
mod tests {
    use super::*;

    fn input(dry_run: bool) -> Value {
        json!({
            "dry_run": dry_run,
            "flow": "procore-license-sync",
            "run_id": "r1",
            "skipped_disabled": 2,
            "diff": {
                "counts": {"people": 5, "present": 1},
                "present_inactive": [{"key": "old@x.com", "displayName": "Old <b>Timer</b>", "procore_id": 9}]
            },
            "created": {"items": [
                {"item": {"key": "a@x.com", "displayName": "<img src=x onerror=alert(1)>"}, "status": "ok", "output": {"status": "created", "procore_id": 11}},
                {"item": {"key": "b@x.com", "displayName": "B & \"Co\""}, "status": "ok", "output": {"status": "conflict", "reason": "login has already been taken"}},
                {"item": {"key": "d@x.com", "displayName": "D"}, "status": "ok", "output": {"status": "created", "procore_id": 12, "reason": "confirmed after a retry", "project": "added"}},
                {"item": {"key": "c@x.com", "displayName": "C"}, "status": "failed", "error": {"message": "HTTP 503 from companies/1/users"}}
            ]}
        })
    }

    #[test]
    fn every_value_is_escaped() {
        let i = input(false);
        let r = rows(&i);
        let page = html(&r, &summary(&r, &i), &i);
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
        let i = input(false);
        let s = summary(&rows(&i), &i);
        assert_eq!(
            s,
            json!({"created": 2, "conflicts": 1, "failed": 1, "would_create": 0, "inactive_in_procore": 1, "skipped_disabled": 2, "present": 1, "license_holders": 5})
        );
        let out = run(i).unwrap();
        assert_eq!(out["notable"], json!(true));
        assert!(out["subject"].as_str().unwrap().contains("2 created"));
    }

    #[test]
    fn a_dry_run_is_marked_as_a_rehearsal() {
        let mut i = input(true);
        i["created"] = json!({"items": [{"item": {"key": "a@x.com", "displayName": "A"}, "status": "ok", "output": {"status": "would_create"}}]});
        let out = run(i).unwrap();
        assert!(
            out["html"]
                .as_str()
                .unwrap()
                .contains("Rehearsal (dry run)")
        );
        assert!(out["subject"].as_str().unwrap().starts_with("[Rehearsal]"));
        assert_eq!(out["summary"]["would_create"], json!(1));
    }

    #[test]
    fn warnings_are_shown_escaped_and_replace_all_is_well() {
        let out = run(json!({
            "diff": {"counts": {"people": 0, "present": 0}, "present_inactive": []},
            "created": null,
            "warnings": ["no Graph group's name starts with \"License - <Microsoft>\": nobody is synced.", ""]
        }))
        .unwrap();
        let html = out["html"].as_str().unwrap();
        assert_eq!(html.matches("class=\"warning\"").count(), 1, "{html}");
        assert!(html.contains("<strong>Warning:</strong> no Graph group's name starts with \"License - &lt;Microsoft&gt;\""));
        assert!(!html.contains("every license holder is already in Procore"));
        assert_eq!(out["warnings"].as_array().unwrap().len(), 1);
        let calm = run(json!({"diff": {"counts": {}}, "created": null, "warnings": []})).unwrap();
        assert!(!calm["html"].as_str().unwrap().contains("class=\"warning\""));
    }

    #[test]
    fn nothing_to_do_is_not_notable() {
        let out = run(json!({"diff": {"counts": {"people": 3, "present": 3}, "present_inactive": []}, "created": null})).unwrap();
        assert_eq!(out["notable"], json!(false));
        assert!(
            out["html"]
                .as_str()
                .unwrap()
                .contains("every license holder is already in Procore")
        );
    }
}
