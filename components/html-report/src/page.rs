//! The page: style, warnings, the summary table and a table per section.
//! Every value from elsewhere is HTML-escaped.

use html_escape::encode_text as esc;

use crate::sections::Row;
use crate::{About, Summary};

const STYLE: &str = "body{font-family:Segoe UI,Helvetica,Arial,sans-serif;color:#222;margin:24px}\
h1{font-size:20px;color:#1C6EA4}\
h2{font-size:16px}\
.rehearsal{background:#FFF4CE;border:1px solid #E0C060;padding:8px 12px;margin:12px 0}\
.warning{background:#FDE7E9;border:1px solid #C50F1F;color:#8A0A16;padding:8px 12px;margin:12px 0}\
.approve{background:#FFF4CE;border:1px solid #E0C060;padding:8px 12px;margin:12px 0}\
table{border:1px solid #1C6EA4;background-color:#EEEEEE;width:100%;text-align:left;border-collapse:collapse}\
td,th{border:1px solid #AAAAAA;padding:4px 8px}\
thead{background:#1C6EA4;border-bottom:2px solid #444444}\
thead th{font-size:15px;font-weight:bold;color:#FFFFFF;border-left:2px solid #D0E4F5}\
tbody td{font-size:13px}\
tr:nth-child(even){background:#D0E4F5}\
.summary td{font-weight:bold}";

/// The summary table; a rehearsal shows what would be done instead of
/// what was done.
pub(crate) fn summary_table(s: &Summary, dry_run: bool) -> String {
    let mut columns = if dry_run {
        vec![
            ("Would create", s.would_create),
            ("Would deactivate", s.would_deactivate),
            ("Would reactivate", s.would_reactivate),
        ]
    } else {
        vec![
            ("Created", s.created),
            ("Conflicts", s.conflicts),
            ("Deactivated", s.deactivated),
            ("Reactivated", s.reactivated),
        ]
    };
    columns.extend([
        ("Waiting for approval", s.waiting_for_approval),
        ("Rejected", s.rejected),
        ("Failed", s.failed),
        ("Inactive in Procore", s.inactive_in_procore),
        ("Inactive, not managed", s.inactive_not_managed),
        ("Already in Procore", s.present),
        ("Skipped (disabled)", s.skipped_disabled),
    ]);
    // Rare (a mail that appeared or changed), so shown only when there are
    // some.
    if s.known_as > 0 {
        columns.push(("Under another address", s.known_as));
    }
    // Rare too (a project call Procore refused in an earlier run).
    let project_calls = if dry_run {
        ("Would make owed project calls", s.would_project_calls)
    } else {
        ("Owed project calls made", s.project_calls)
    };
    if project_calls.1 > 0 {
        columns.push(project_calls);
    }
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

/// A table's start: its header row.
pub(crate) const TABLE_START: &str = "<table><thead><tr><th>Status</th><th>Name</th><th>Email / login</th><th>Details</th><th>Why</th></tr></thead><tbody>\n";

/// A table's end.
pub(crate) const TABLE_END: &str = "</tbody></table>\n";

/// One row, each cell shown through `cell` (the mail shortens long cells;
/// the page shows them whole), escaped.
pub(crate) fn write_row(out: &mut String, r: &Row, cell: impl Fn(&str) -> String) {
    for (n, value) in [r.status, &r.name, &r.key, &r.detail, &r.why]
        .into_iter()
        .enumerate()
    {
        out.push_str(if n == 0 { "<tr><td>" } else { "</td><td>" });
        out.push_str(&esc(&cell(value)));
    }
    out.push_str("</td></tr>\n");
}

/// A table of `rows`, each cell shown through `cell`.
pub(crate) fn rows_table<'a>(
    rows: impl Iterator<Item = &'a Row>,
    cell: impl Fn(&str) -> String,
) -> String {
    let mut out = String::from(TABLE_START);
    for r in rows {
        write_row(&mut out, r, &cell);
    }
    out.push_str(TABLE_END);
    out
}

/// A section's title and its note (the approve command), then its
/// table's start.
pub(crate) fn section_start(title: &str, note: Option<&str>) -> String {
    let mut out = format!("<h2>{}</h2>\n", esc(title));
    if let Some(note) = note {
        out.push_str(&approve_line(note));
    }
    out.push_str(TABLE_START);
    out
}

pub(crate) fn approve_line(note: &str) -> String {
    format!("<p class=\"approve\">{}</p>\n", esc(note))
}

pub(crate) fn warning_line(warning: &str) -> String {
    format!(
        "<p class=\"warning\"><strong>Warning:</strong> {}</p>\n",
        esc(warning)
    )
}

/// The document's start: style, title, and the rehearsal banner.
pub(crate) fn head(about: &About<'_>) -> String {
    let mut page = String::new();
    page.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Procore license sync</title><style>");
    page.push_str(STYLE);
    page.push_str("</style></head><body>\n<h1>Procore license sync</h1>\n");
    if about.dry_run {
        page.push_str("<p class=\"rehearsal\"><strong>Rehearsal (dry run):</strong> nothing was changed in Procore and no mail was sent. The rows show what a real run would do.</p>\n");
    }
    page
}

/// "Flow `…`, run `…`."
pub(crate) fn about_line(about: &About<'_>) -> String {
    format!(
        "<p>Flow <code>{}</code>, run <code>{}</code>.</p>\n",
        esc(about.flow),
        esc(about.run_id)
    )
}

/// The line that stands for the tables when nobody is to be shown.
pub(crate) fn nobody_line(anyone: bool, warnings: &[String]) -> Option<&'static str> {
    if anyone {
        return None;
    }
    Some(if warnings.is_empty() {
        "<p>Nobody needed anything: every license holder is already in Procore.</p>\n"
    } else {
        "<p>Nobody to show: no license holder was found (see the warning above).</p>\n"
    })
}

/// The whole page, in its parts: what comes before the sections' tables
/// (known only once every row is counted), the tables, the end. Sections
/// without rows are left out; with none at all, one line says why the
/// report is empty. Kept in parts so the tables, the bulk of it, are
/// written into the step's output once, never copied into a whole page
/// first.
pub struct Page {
    pub before: String,
    pub tables: String,
    pub after: &'static str,
}

impl Page {
    pub fn new(
        tables: String,
        anyone: bool,
        summary: &Summary,
        warnings: &[String],
        about: &About<'_>,
    ) -> Page {
        let mut before = head(about);
        for w in warnings {
            before.push_str(&warning_line(w));
        }
        before.push_str(&about_line(about));
        before.push_str(&summary_table(summary, about.dry_run));
        before.extend(nobody_line(anyone, warnings));
        Page {
            before,
            tables,
            after: "</body></html>\n",
        }
    }

    /// The parts, in order.
    pub fn parts(&self) -> [&str; 3] {
        [&self.before, &self.tables, self.after]
    }

    /// The page as one text.
    pub fn text(&self) -> String {
        self.parts().concat()
    }
}
