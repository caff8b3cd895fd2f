//! The history as text for `sluice runs` (a table, newest first) and
//! `sluice runs show` (one run: status, times, errors, where its report is,
//! then each step with its requests, why it was skipped, how many of its
//! items ran, and its failed items with their own requests), each run with
//! the replica that ran it. Times show in the
//! local time zone; the CLI and the tests share these functions.

use std::fmt::Write as _;

use serde_json::Value;

use crate::cap::truncated_bytes;
use crate::{
    Attempts, GateRecord, ItemRecord, ItemStatus, RunDetail, RunStatus, RunSummary, StepRecord,
    StepStatus,
};

/// How much of an input or output the detail view shows.
const VALUE_PREVIEW_CHARS: usize = 160;
/// Failed items listed per step before "… and N more" (`--items` lists
/// every item, uncut).
const ITEMS_LISTED: usize = 20;
/// Width of the error column of the table.
const TABLE_ERROR_CHARS: usize = 60;

/// A stored timestamp in local time, `2026-11-24 05:42:00`.
pub fn local_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`.
pub fn format_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

fn took(ms: Option<u64>) -> String {
    ms.map_or_else(|| "—".to_string(), format_ms)
}

fn cut(text: &str, chars: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    if first.chars().count() > chars || first.len() < text.trim_end().len() {
        let short: String = first.chars().take(chars.saturating_sub(1)).collect();
        format!("{short}…")
    } else {
        first.to_string()
    }
}

/// The run list as a table, or a sentence when there is nothing to list.
/// The runs as a table; `items` holds each run's item counts (as
/// `item_counts` gives them, in the same order), shown
/// as how many items ran and how many failed: a run that succeeded with
/// failed items must not read as all well.
pub fn render_runs_table(runs: &[RunSummary], items: &[Vec<crate::browse::ItemCount>]) -> String {
    if runs.is_empty() {
        return "No runs recorded yet.\n".into();
    }
    let mut out = format!(
        "{:<24} {:<24} {:<9} {:<16} {:<17} {:<19} {:>8}  {:<14} {}\n",
        "RUN", "FLOW", "TRIGGER", "REPLICA", "STATUS", "STARTED", "TOOK", "ITEMS", "ERROR"
    );
    for (i, r) in runs.iter().enumerate() {
        let counts = items.get(i).map(Vec::as_slice).unwrap_or_default();
        let total: u64 = counts.iter().map(|c| c.count).sum();
        let failed: u64 = counts
            .iter()
            .filter(|c| c.status == crate::ItemStatus::Failed)
            .map(|c| c.count)
            .sum();
        let items = match (total, failed) {
            (0, _) => "—".to_string(),
            (t, 0) => t.to_string(),
            (t, f) => format!("{t} ({f} failed)"),
        };
        let status = if r.dry_run {
            format!("{} (dry run)", r.status)
        } else {
            r.status.to_string()
        };
        let took = match r.status {
            RunStatus::Running => "…".to_string(),
            _ => took(r.duration_ms),
        };
        let line = format!(
            "{:<24} {:<24} {:<9} {:<16} {:<17} {:<19} {:>8}  {:<14} {}",
            r.id,
            cut(&r.flow, 24),
            r.trigger,
            cut(r.replica.as_deref().unwrap_or("—"), 16),
            status,
            local_time(&r.started_at),
            took,
            items,
            r.error
                .as_deref()
                .map(|e| cut(e, TABLE_ERROR_CHARS))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// How much of a run [`render_run_detail_with`] shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetailOptions {
    /// List every `for_each` item, not only those that failed or were
    /// interrupted.
    pub all_items: bool,
}

/// One run in full, for `sluice runs show`: failed and interrupted items
/// are listed, the others counted.
pub fn render_run_detail(d: &RunDetail) -> String {
    render_run_detail_with(d, DetailOptions::default())
}

/// One run in full, as `options` say.
pub fn render_run_detail_with(d: &RunDetail, options: DetailOptions) -> String {
    let r = &d.run;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run {}  {}{}",
        r.id,
        r.status.as_str().to_uppercase(),
        if r.dry_run {
            "  (dry run: nothing was changed)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "  flow      {} ({})", r.flow, r.flow_file);
    let _ = writeln!(out, "  trigger   {}", r.trigger);
    if let Some(replica) = &r.replica {
        match r.fence {
            Some(fence) => writeln!(out, "  replica   {replica} (lease fence {fence})"),
            None => writeln!(out, "  replica   {replica}"),
        }
        .unwrap_or_default();
    }
    let _ = writeln!(out, "  started   {}", local_time(&r.started_at));
    match (&r.ended_at, r.status) {
        (Some(end), _) => {
            let _ = writeln!(
                out,
                "  ended     {}   took {}",
                local_time(end),
                took(r.duration_ms)
            );
        }
        (None, RunStatus::Running) => {
            let _ = writeln!(out, "  ended     — still running");
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "  ended     — unknown: its process stopped without recording an end"
            );
        }
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error     {}", indent(e, 12));
    }
    if let Some(dir) = r.output_dir.as_deref().filter(|d| !d.is_empty()) {
        let _ = writeln!(out, "  output    {dir}");
    }
    for a in &d.artifacts {
        let _ = writeln!(out, "  file      {}  {}", a.name, a.path);
    }
    if !d.steps.is_empty() {
        let _ = writeln!(out, "\nSteps:");
    }
    for (n, s) in d.steps.iter().enumerate() {
        step(&mut out, n + 1, s, d, options);
    }
    out
}

fn step(out: &mut String, n: usize, s: &StepRecord, d: &RunDetail, options: DetailOptions) {
    let _ = writeln!(
        out,
        "  {n}. {:<16} {:<24} {:<12} {:>8}",
        s.step_id,
        s.component.rsplit('/').next().unwrap_or(&s.component),
        s.status,
        took(s.duration_ms)
    );
    for (label, value) in [("input", &s.input), ("output", &s.output)] {
        if let Some(v) = value.as_ref().filter(|v| !v.is_null()) {
            let _ = writeln!(out, "       {label}: {}", preview(v));
        }
    }
    if let Some(line) = s.connections.as_ref().and_then(requests) {
        let _ = writeln!(out, "       requests: {line}");
    }
    if let Some(a) = &s.attempts {
        attempts(out, a, 7);
    }
    if let Some(e) = &s.error {
        // A skipped step's "error" is why it did not run.
        let label = if s.status == StepStatus::Skipped {
            "why"
        } else {
            "error"
        };
        let _ = writeln!(out, "       {label}: {}", indent(e, 9 + label.len()));
    }
    if let Some(g) = d.gates.iter().find(|g| g.step == s.step_id) {
        gate(out, g);
    }
    let items: Vec<_> = d.items_of(&s.step_id).collect();
    if s.items_total.is_none() && items.is_empty() {
        return;
    }
    let _ = writeln!(out, "       {}", items_line(s, &items));
    let listed: Vec<_> = items
        .iter()
        .filter(|i| {
            options.all_items || matches!(i.status, ItemStatus::Failed | ItemStatus::Interrupted)
        })
        .collect();
    // `--items` asked for every item: none is cut.
    let cut = if options.all_items {
        listed.len()
    } else {
        ITEMS_LISTED
    };
    for i in listed.iter().take(cut) {
        let mut line = match &i.key {
            Some(key) => format!("         #{} {key} {}", i.index + 1, i.status),
            None => format!("         #{} {}", i.index + 1, i.status),
        };
        if !i.status.is_held() {
            let _ = write!(line, " after {}", format_ms(i.duration_ms));
        }
        if let Some(e) = &i.error {
            let _ = write!(line, ": {}", indent(e, 11));
        } else if !matches!(i.status, ItemStatus::Succeeded) && !i.status.is_held() {
            line.push_str(": (no error recorded)");
        }
        let _ = writeln!(out, "{line}");
        if let Some(r) = i.connections.as_ref().and_then(requests) {
            let _ = writeln!(out, "           requests: {r}");
        }
        if let Some(a) = &i.attempts {
            attempts(out, a, 11);
        }
    }
    if listed.len() > cut {
        let _ = writeln!(out, "         … and {} more", listed.len() - cut);
    }
    if !options.all_items && listed.len() < items.len() {
        let _ = writeln!(
            out,
            "         (`sluice runs show {} --items` lists every item)",
            d.run.id
        );
    }
}

/// `attempts: 3`, then why each earlier one failed, one a line.
fn attempts(out: &mut String, a: &Attempts, by: usize) {
    let pad = " ".repeat(by);
    let _ = writeln!(out, "{pad}attempts: {}", a.made);
    for f in &a.failed {
        let head = format!("{pad}  {}. {} [{}]: ", f.attempt, f.kind, f.code);
        let _ = writeln!(out, "{head}{}", indent(&f.message, head.chars().count()));
    }
}

/// What a step's approval gate did: the plan, how many items it let
/// through, held and closed, why, and the command that approves what
/// waits. "Let through", not "ran": the gate decides before the items run,
/// and a step stopped part-way ran fewer (its items line says how many).
fn gate(out: &mut String, g: &GateRecord) {
    let mut parts = Vec::new();
    for (n, word) in [
        (g.approved, "approved item(s) let through"),
        (
            g.unapproved,
            "let through without approval (within the threshold)",
        ),
        (g.waiting, "waiting for approval"),
        (g.rejected, "held: rejected"),
        (g.closed, "closed: no longer needed"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    let plan = match &g.plan_id {
        Some(id) => format!("plan {id}"),
        None => "no plan".to_string(),
    };
    // A gate that held nothing and let nothing through printed a blank.
    let said = if parts.is_empty() {
        "nothing waited for a decision".to_string()
    } else {
        parts.join(", ")
    };
    let _ = writeln!(out, "       approval: {plan}: {said}");
    if let Some(why) = &g.reason {
        let _ = writeln!(out, "         why: {}", indent(why, 14));
    }
    if g.waiting > 0
        && let Some(id) = &g.plan_id
    {
        // The command the run printed: at the revision it left the plan
        // at, and naming the keys a run given `--only` showed, so that it
        // approves nothing the run did not show. Runs recorded before
        // schema 14 kept only the revision.
        let command = g.approve.clone().unwrap_or_else(|| match g.revision {
            Some(r) => format!("sluice approve {id} --revision {r}"),
            None => format!("sluice approve {id}"),
        });
        let _ = writeln!(
            out,
            "         approve with `{command}` (or `sluice approvals show {id}` first)"
        );
    }
}

/// `items: 7 of 10 done, 1 failed; 3 not started` — counted from the
/// items recorded, so an interrupted or failed step says how many never
/// ran; `… so far` while the step runs. A step its own process did not
/// end (it was killed, or another replica took its lease over: the step
/// is interrupted with no error of its own) says its items without a
/// record may have been under way: their work may be done.
fn items_line(s: &StepRecord, items: &[&ItemRecord]) -> String {
    let count = |st: ItemStatus| items.iter().filter(|i| i.status == st).count();
    let recorded = items.len();
    let done = items.iter().filter(|i| !i.status.is_held()).count();
    let mut line = match s.items_total {
        Some(total) => format!("items: {done} of {total} done"),
        None => format!("items: {done} done"),
    };
    if s.status == StepStatus::Running {
        line.push_str(" so far");
    }
    let _ = write!(line, ", {} failed", count(ItemStatus::Failed));
    for (st, word) in [
        (ItemStatus::Skipped, "skipped"),
        (ItemStatus::Interrupted, "interrupted"),
        (ItemStatus::Waiting, "waiting for approval"),
        (ItemStatus::Rejected, "held: rejected"),
    ] {
        if count(st) > 0 {
            let _ = write!(line, ", {} {word}", count(st));
        }
    }
    if let Some(total) = s.items_total
        && s.status != StepStatus::Running
        && u64::try_from(recorded).is_ok_and(|d| d < total)
    {
        let missing = total - recorded as u64;
        match s.status == StepStatus::Interrupted && s.error.is_none() {
            true => {
                let _ = write!(
                    line,
                    "; {missing} not recorded (not started, or under way when the run's process stopped)"
                );
            }
            false => {
                let _ = write!(line, "; {missing} not started");
            }
        }
    }
    line
}

/// A stored input or output on one line, cut; a truncated one says so.
fn preview(v: &Value) -> String {
    if let Some(bytes) = truncated_bytes(v) {
        let start = v.get("preview").and_then(Value::as_str).unwrap_or("");
        return format!(
            "({bytes} bytes, too big to keep whole) {}",
            cut(start, VALUE_PREVIEW_CHARS)
        );
    }
    cut(&v.to_string(), VALUE_PREVIEW_CHARS)
}

/// `graph: 3 requests (1 retried, 2 throttled, waited 1.2 s in all)`, from
/// the per-connection counts; other shapes print as JSON; none prints
/// nothing. The wait is added up over the requests: requests that wait at
/// once count each, so it may be longer than the step.
fn requests(v: &Value) -> Option<String> {
    let map = v.as_object()?;
    if map.is_empty() {
        return None;
    }
    let parts: Vec<String> = map
        .iter()
        .map(|(name, stats)| {
            let n = |k: &str| stats.get(k).and_then(Value::as_u64);
            let Some(requests) = n("requests") else {
                return format!("{name}: {stats}");
            };
            let mut extras = Vec::new();
            for (key, word) in [("retried", "retried"), ("throttled", "throttled")] {
                if let Some(c) = n(key).filter(|c| *c > 0) {
                    extras.push(format!("{c} {word}"));
                }
            }
            if let Some(ms) = n("wait_ms").filter(|ms| *ms > 0) {
                extras.push(format!("waited {} in all", format_ms(ms)));
            }
            let plural = if requests == 1 { "" } else { "s" };
            if extras.is_empty() {
                format!("{name}: {requests} request{plural}")
            } else {
                format!("{name}: {requests} request{plural} ({})", extras.join(", "))
            }
        })
        .collect();
    Some(parts.join("; "))
}

/// Continuation lines of a multi-line text, indented under its first.
fn indent(text: &str, by: usize) -> String {
    text.trim_end()
        .replace('\n', &format!("\n{}", " ".repeat(by)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_ms(850), "850 ms");
        assert_eq!(format_ms(12_340), "12.3 s");
        assert_eq!(format_ms(245_000), "4m 05s");
        assert_eq!(format_ms(7_380_000), "2h 03m");
    }

    /// It said "5 ran without approval" beside "items: 1 of 5 done" for a
    /// step stopped part-way.
    #[test]
    fn a_gate_says_what_it_let_through_not_what_ran() {
        let mut out = String::new();
        gate(
            &mut out,
            &GateRecord {
                step: "create".into(),
                plan_id: Some("ap-1".into()),
                reason: None,
                approved: 2,
                unapproved: 5,
                waiting: 0,
                rejected: 1,
                closed: 0,
                revision: Some(1),
                approve: None,
            },
        );
        assert_eq!(
            out,
            "       approval: plan ap-1: 2 approved item(s) let through, 5 let through without approval (within the threshold), 1 held: rejected\n"
        );
    }

    /// `runs show` of a run given `--only` printed the whole plan's
    /// command, which approved people the run never showed.
    #[test]
    fn a_gate_gives_the_approve_command_its_run_printed() {
        let held = |approve: Option<&str>| {
            let mut out = String::new();
            gate(
                &mut out,
                &GateRecord {
                    step: "deactivate".into(),
                    plan_id: Some("ap-1".into()),
                    waiting: 1,
                    revision: Some(3),
                    approve: approve.map(str::to_owned),
                    ..GateRecord::default()
                },
            );
            out
        };
        let shown = held(Some(
            "sluice approve ap-1 --revision 3 --only 'o'\''neil@x.com'",
        ));
        assert!(
            shown.contains(
                "approve with `sluice approve ap-1 --revision 3 --only 'o'\''neil@x.com'`"
            ),
            "{shown}"
        );
        // A gate that held nothing says so.
        let mut quiet = String::new();
        gate(&mut quiet, &GateRecord::default());
        assert_eq!(
            quiet,
            "       approval: no plan: nothing waited for a decision\n"
        );
        // A run recorded before the command was kept.
        let older = held(None);
        assert!(
            older.contains("approve with `sluice approve ap-1 --revision 3` (or"),
            "{older}"
        );
    }

    /// A takeover's record said "3 not started" of items that had been
    /// sent and applied before the replica was paused.
    #[test]
    fn items_a_killed_step_did_not_record_may_have_been_under_way() {
        let step = |error: Option<&str>| StepRecord {
            step_id: "create".into(),
            component: "procore-create-user".into(),
            status: StepStatus::Interrupted,
            started_at: "2026-12-06T16:05:50Z".into(),
            ended_at: None,
            duration_ms: None,
            input: None,
            output: None,
            error: error.map(str::to_string),
            connections: None,
            items_total: Some(3),
            attempts: None,
        };
        let stopped = step(Some(
            "stopped after 0 of 3 items; the rest were not started or not finished",
        ));
        assert_eq!(
            items_line(&stopped, &[]),
            "items: 0 of 3 done, 0 failed; 3 not started"
        );
        assert_eq!(
            items_line(&step(None), &[]),
            "items: 0 of 3 done, 0 failed; 3 not recorded (not started, or under way when the run's process stopped)"
        );
    }

    #[test]
    fn request_counts_are_summed_up_in_words() {
        let v = serde_json::json!({"graph": {"requests": 3, "retried": 1, "throttled": 0, "wait_ms": 1200}, "procore": {"requests": 1}});
        assert_eq!(
            requests(&v).unwrap(),
            "graph: 3 requests (1 retried, waited 1.2 s in all); procore: 1 request"
        );
        assert_eq!(requests(&serde_json::json!({})), None);
    }
}
