//! The mail body: what the flow sends, bounded whatever the tenant's size.
//!
//! The page ([`crate::page`]) has a row per person and is kept whole as the
//! run's report file; at 100,000 members it is several megabytes, more than
//! Graph takes in one sendMail request (4 MB) and more than anyone reads in
//! a mail. The mail carries instead, in this order: the warnings, what
//! needs someone (how many failed, who waits for approval and the approve
//! command), the counts of every section, where the full report is (the
//! run's id, `report.html` in the run's folder, `sluice runs show RUN`),
//! then the first rows of each section, failures and people waiting first,
//! each section ending with how many more the full report lists.
//!
//! Bounded: at most `rows` rows a section (the step's `mail_rows` input),
//! each cell cut to [`MAX_CELL_CHARS`], at most [`MAX_WARNINGS`] warnings;
//! and should that still weigh more than [`MAIL_MAX_BYTES`], the rows a
//! section are halved until it does not (down to none: counts only).

use html_escape::encode_text as esc;

use crate::page;
use crate::sections::{Row, status};
use crate::{About, Summary};

/// Rows of each section the mail shows unless the step says otherwise:
/// every row of all but the largest runs (a first run on a big tenant),
/// so an ordinary run's mail still lists everyone it acted on.
pub const DEFAULT_MAIL_ROWS: usize = 1000;

/// The most the mail body may weigh: a quarter of Graph's 4 MB sendMail
/// request, leaving room for JSON escaping and the recipients.
pub const MAIL_MAX_BYTES: usize = 1024 * 1024;

/// Longer cells (an error message, a long name) are cut, with "…".
pub const MAX_CELL_CHARS: usize = 200;

/// More warnings than this are counted, not shown.
pub const MAX_WARNINGS: usize = 20;

/// The name the shipped flow gives the full page in the run's folder.
pub const REPORT_FILE: &str = "report.html";

/// Most rows a section can show in a mail of [`MAIL_MAX_BYTES`]: a row
/// is at least its five empty cells and a status. No more are kept.
pub const MOST_ROWS: usize = MAIL_MAX_BYTES / 64;

/// A section as the mail sees it: its first rows by urgency (failures and
/// people waiting first), and how many it has in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub title: &'static str,
    pub note: Option<String>,
    /// The rows the mail may show, most urgent first, page order within.
    pub rows: Vec<Row>,
    /// Every row of the section on the page.
    pub total: usize,
}

/// A section's rows as they come, keeping the first `keep` of each
/// urgency: enough for the mail's first `keep` by urgency, whatever the
/// section's size.
#[derive(Debug)]
pub struct Keeper {
    keep: usize,
    by_urgency: [Vec<Row>; 4],
    total: usize,
}

impl Keeper {
    pub fn new(keep: usize) -> Keeper {
        Keeper {
            keep: keep.min(MOST_ROWS),
            by_urgency: Default::default(),
            total: 0,
        }
    }

    /// Whether no row was offered yet.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn offer(&mut self, row: &Row) {
        self.total += 1;
        let kept = &mut self.by_urgency[usize::from(urgency(row))];
        if kept.len() < self.keep {
            kept.push(row.clone());
        }
    }

    pub fn section(self, title: &'static str, note: Option<String>) -> Section {
        let keep = self.keep;
        let rows = self.by_urgency.into_iter().flatten().take(keep).collect();
        Section {
            title,
            note,
            rows,
            total: self.total,
        }
    }
}

/// The mail body, and how many rows of the full report it leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub html: String,
    pub left_out: usize,
}

/// The mail body with at most `rows` rows a section (fewer if that would
/// weigh more than [`MAIL_MAX_BYTES`]).
pub fn body(
    sections: &[Section],
    summary: &Summary,
    warnings: &[String],
    about: &About<'_>,
    rows: usize,
) -> Mail {
    let longest = sections.iter().map(|s| s.total).max().unwrap_or(0);
    let mut rows = rows.min(longest);
    loop {
        let mail = render(sections, summary, warnings, about, rows);
        if mail.html.len() <= MAIL_MAX_BYTES || rows == 0 {
            return mail;
        }
        rows /= 2;
    }
}

/// A cell cut to [`MAX_CELL_CHARS`] characters.
fn cell(text: &str) -> String {
    match text.char_indices().nth(MAX_CELL_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Who needs someone comes first: failures, then people waiting for
/// approval (and deactivations rejected too late), then conflicts, then
/// everyone else (in the page's order).
fn urgency(row: &Row) -> u8 {
    match row.status {
        status::FAILED
        | status::DEACTIVATED_NOT_REMOVED
        | status::CREATED_NOT_ADDED
        | status::REACTIVATED_NOT_ADDED => 0,
        status::WAITING | status::DEACTIVATED_BEFORE_REJECTION => 1,
        status::CONFLICT => 2,
        _ => 3,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Warnings, failures and approvals: what someone has to act on.
fn attention(sections: &[Section], summary: &Summary, warnings: &[String]) -> String {
    let mut out = String::new();
    for w in warnings.iter().take(MAX_WARNINGS) {
        out.push_str(&page::warning_line(&cell(w)));
    }
    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - MAX_WARNINGS;
        out.push_str(&page::warning_line(&format!(
            "and {} (see the full report)",
            plural(more, "more warning", "more warnings")
        )));
    }
    let notes: Vec<&String> = sections.iter().filter_map(|s| s.note.as_ref()).collect();
    if summary.failed == 0 && notes.is_empty() {
        return out;
    }
    out.push_str("<h2>Needs your attention</h2>\n");
    if summary.failed > 0 {
        out.push_str(&page::warning_line(&format!(
            "{} failed: listed first in their sections below, with why.",
            plural(summary.failed, "person", "people")
        )));
    }
    for note in notes {
        // Whole: a count, the gate's reason and the commands to run.
        out.push_str(&page::approve_line(note));
    }
    out
}

/// Where the full report is, and how much of it this mail shows.
fn where_line(about: &About<'_>, total: usize, left_out: usize, rows: usize) -> String {
    let run = esc(about.run_id);
    let shown = if left_out == 0 {
        format!("This mail lists all {}.", plural(total, "row", "rows"))
    } else {
        format!(
            "This mail shows the first {} of each section; {} more {} only in the full report.",
            plural(rows, "row", "rows"),
            left_out,
            if left_out == 1 { "is" } else { "are" }
        )
    };
    format!(
        "<p>{shown} The full report, with all {total} rows, is <code>{REPORT_FILE}</code> in the folder of run <code>{run}</code> (<code>runs/{run}/</code> in Sluice's data directory); <code>sluice runs show {run}</code> shows the run and where its report is.</p>\n"
    )
}

/// One section: its heading, its first `rows` rows by urgency, and how
/// many more there are.
fn section(section: &Section, rows: usize) -> String {
    let mut out = format!("<h2>{}</h2>\n", esc(section.title));
    let shown = rows.min(section.rows.len());
    if shown > 0 {
        out.push_str(&page::rows_table(section.rows.iter().take(shown), cell));
    }
    let more = section.total - shown;
    if more > 0 {
        out.push_str(&format!(
            "<p>… and {more} more in this section (see the full report).</p>\n"
        ));
    }
    out
}

fn render(
    sections: &[Section],
    summary: &Summary,
    warnings: &[String],
    about: &About<'_>,
    rows: usize,
) -> Mail {
    let total: usize = sections.iter().map(|s| s.total).sum();
    let left_out: usize = sections
        .iter()
        .map(|s| s.total - rows.min(s.rows.len()))
        .sum();
    let mut html = page::head(about);
    html.push_str(&attention(sections, summary, warnings));
    html.push_str(&page::about_line(about));
    html.push_str(&page::summary_table(summary, about.dry_run));
    html.push_str(&where_line(about, total, left_out, rows));
    html.extend(page::nobody_line(total > 0, warnings));
    for s in sections.iter().filter(|s| s.total > 0) {
        html.push_str(&section(s, rows));
    }
    html.push_str("</body></html>\n");
    Mail { html, left_out }
}
