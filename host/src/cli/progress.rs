//! Showing a run while it happens: readable lines on stderr, one JSON object
//! per event on stdout with `--json`, or nothing with `--quiet`.

use std::io::Write;
use std::sync::Mutex;

use serde_json::Value;

use super::terminal;
use crate::engine::{LogLevel, MemoryUse};
use crate::run::approval::Held;
use crate::run::output::Kind;
use crate::run::{GateSummary, Json, Observer, Payload, RunEvent, Status, StepOutput};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Human,
    Json,
    Quiet,
}

pub struct Progress {
    mode: Mode,
    verbose: bool,
    /// Show every keyed item as it finishes (`run --only`: the people
    /// asked about; their stories follow the run).
    trace: bool,
    last_item_line: Mutex<usize>,
    /// The run's id, from its start: the last line names the command that
    /// shows what failed.
    run_id: Mutex<String>,
}

impl Progress {
    pub fn new(mode: Mode, verbose: bool) -> Self {
        Self {
            mode,
            verbose,
            trace: false,
            last_item_line: Mutex::new(0),
            run_id: Mutex::new(String::new()),
        }
    }

    /// The same, showing each keyed item and its output.
    pub fn tracing(self, trace: bool) -> Self {
        Self { trace, ..self }
    }

    fn human(&self, event: &RunEvent) {
        if let RunEvent::ApprovalGate { summary, .. } = event {
            // Laid out over lines here; what came from elsewhere (the
            // reason, keys) is escaped inside.
            let _ = writeln!(std::io::stderr().lock(), "{}", gate_lines(summary));
            return;
        }
        if let Some(line) = self.human_line(event) {
            // What a component or a service wrote is in it: escaped, so a
            // terminal shows it rather than obeys it.
            let _ = writeln!(std::io::stderr().lock(), "{}", terminal::line(&line));
        }
    }

    /// The line an event shows as, if any.
    fn human_line(&self, event: &RunEvent) -> Option<String> {
        if let RunEvent::StepStarted { .. } = event {
            // Each loop counts its own progress lines: one that ended
            // short of its total (items held after it started, a stop)
            // must not mute the next one's.
            *self
                .last_item_line
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = 0;
        }
        if let RunEvent::RunStarted { run_id, .. } = event {
            *self.run_id.lock().unwrap_or_else(|e| e.into_inner()) = run_id.clone();
        }
        match event {
            RunEvent::RunStarted {
                run_id,
                flow,
                dry_run,
                ..
            } => Some(format!(
                "▶ {flow}  (run {run_id}){}",
                if *dry_run {
                    "  — DRY RUN: reads only, nothing will be changed"
                } else {
                    ""
                }
            )),
            RunEvent::StepStarted {
                step,
                component,
                items,
                ..
            } => Some(match items {
                Some(n) => format!("  · {step} ({component}): {n} item{}…", plural(*n)),
                None => format!("  · {step} ({component})…"),
            }),
            RunEvent::ItemFinished {
                step,
                key: Some(key),
                status,
                error,
                ..
            } if self.trace => Some(traced_item(step, key, *status, error.as_deref())),
            RunEvent::ItemFinished {
                step,
                done,
                total,
                failed,
                ..
            } => self.item_line(step, *done, *total, *failed),
            RunEvent::ItemHeld {
                step, key, held, ..
            } => (self.trace || self.verbose).then(|| match held {
                Held::Waiting => format!("      {step}: {key} waits for approval"),
                Held::Rejected => format!("      {step}: {key} held: rejected"),
            }),
            RunEvent::ApprovalGate { .. } => None,
            RunEvent::Keyed { .. } => None,
            RunEvent::StepFinished {
                step,
                status,
                output,
                error,
                duration,
                connections,
                attempts,
                memory,
                ..
            } => Some(step_line(
                step,
                *status,
                output.as_ref(),
                error.as_deref(),
                &Measured {
                    duration: *duration,
                    connections,
                    attempts: attempts.as_ref().map_or(1, |a| a.made),
                    memory: *memory,
                },
            )),
            RunEvent::StillWorking {
                step,
                elapsed,
                connections,
            } => Some(format!(
                "      {}",
                still_working_line(step, *elapsed, connections)
            )),
            RunEvent::Log {
                step,
                level,
                message,
            } => (self.verbose || matches!(level, LogLevel::Warn | LogLevel::Error)).then(|| {
                format!(
                    "      [{step}] {}: {message}",
                    format!("{level:?}").to_lowercase()
                )
            }),
            RunEvent::Artifact { name, path, .. } => {
                Some(format!("  ↳ wrote {name}: {}", path.display()))
            }
            RunEvent::RunFinished {
                status,
                duration,
                setbacks,
                ..
            } => Some(match (status, setbacks.said()) {
                (Status::Succeeded, Some(failed)) => format!(
                    "✓ finished in {}, but {failed} (the run went on past them: `sluice runs show {}` says why)",
                    format_duration(*duration),
                    self.run_id.lock().unwrap_or_else(|e| e.into_inner()),
                ),
                (Status::Succeeded, None) => {
                    format!("✓ finished in {}", format_duration(*duration))
                }
                // As the history records it: a stop asked for is no failure.
                (Status::Interrupted, _) => {
                    format!("✗ interrupted after {}", format_duration(*duration))
                }
                _ => format!("✗ failed after {}", format_duration(*duration)),
            }),
        }
    }

    /// About five progress lines per loop, whatever its length.
    fn item_line(&self, step: &str, done: usize, total: usize, failed: usize) -> Option<String> {
        let every = total.div_ceil(5).max(1);
        let mut last = self
            .last_item_line
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if done != total && done < *last + every {
            return None;
        }
        *last = if done == total { 0 } else { done };
        let failed = if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        };
        Some(format!("      {step}: {done}/{total} done{failed}"))
    }
}

/// A step that runs on with nothing else to show: how long, and what
/// holds each busy connection.
pub(super) fn still_working_line(
    step: &str,
    elapsed: std::time::Duration,
    connections: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut line = format!(
        "{step}: still working after {}",
        humantime::format_duration(std::time::Duration::from_secs(elapsed.as_secs()))
    );
    for (name, busy) in connections {
        line.push_str(&format!("; connection `{name}`: {busy}"));
    }
    line
}

/// One keyed item and whether it ran well, for `run --only` (the person's
/// story, told from the outputs, follows when the run is over).
fn traced_item(step: &str, key: &str, status: Status, error: Option<&str>) -> String {
    let word = match status {
        Status::Succeeded => "✓",
        Status::Skipped => "–",
        Status::Failed | Status::Interrupted => "✗",
    };
    match error {
        Some(e) => format!("      {word} {step}: {key}  {e}"),
        None => format!("      {word} {step}: {key}"),
    }
}

/// What a step's approval gate decided: what ran, what waits and why, and
/// the command that approves it.
fn gate_lines(g: &GateSummary) -> String {
    let mut facts = Vec::new();
    let would = if g.dry_run { "would " } else { "" };
    // Beside approved or held items, say what ran without approval too,
    // or the line reads as if only the approved ones ran.
    if g.unapproved > 0 && (g.approved > 0 || !g.waiting.is_empty() || !g.rejected.is_empty()) {
        facts.push(format!(
            "{} {would}run without needing approval",
            g.unapproved
        ));
    }
    if g.approved > 0 {
        facts.push(format!(
            "{} approved item{} {would}run",
            g.approved,
            plural(g.approved as usize)
        ));
    }
    if !g.waiting.is_empty() {
        facts.push(format!("{} {would}wait for approval", g.waiting.len()));
    }
    if !g.rejected.is_empty() {
        facts.push(format!("{} rejected (left alone)", g.rejected.len()));
    }
    if g.closed > 0 {
        let closed = if g.dry_run {
            "would be closed"
        } else {
            "closed"
        };
        facts.push(format!("{} no longer needed ({closed})", g.closed));
    }
    if facts.is_empty() {
        facts.push("nothing waits".into());
    }
    let plan = match &g.plan {
        Some(id) => format!("plan {id}"),
        // A dry run would open a plan only for items that would wait.
        None if g.dry_run && !g.waiting.is_empty() => "a new plan".into(),
        None => "no plan".into(),
    };
    let mut text = format!(
        "  ⏸ {}: approval ({plan}): {}",
        terminal::line(&g.step),
        facts.join(", ")
    );
    if let Some(why) = g.reason.as_ref().filter(|_| !g.waiting.is_empty()) {
        text.push_str(&format!("\n      why: {}", terminal::line(why)));
    }
    if let Some(cmd) = &g.approve {
        // A command that names keys already (a run given `--only`) is the
        // one for some keys.
        let names_keys = g.approve_plan() != Some(cmd.as_str());
        // Keys come from data: shown, never obeyed.
        let cmd = terminal::line(cmd);
        let some = match names_keys {
            true => String::new(),
            false => format!(" (or `{cmd} --only KEY`)"),
        };
        text.push_str(&format!(
            "\n      to approve: `{cmd}`{some}; to look first: `sluice approvals show {}`",
            g.plan.as_deref().unwrap_or_default()
        ));
    }
    text
}

/// A finished step: its summary, requests and time, or why it did not succeed.
/// What a step's line reports of how its run went.
struct Measured<'a> {
    duration: std::time::Duration,
    connections: &'a std::collections::BTreeMap<String, crate::connections::RequestStats>,
    /// Attempts of its call; 1 when it called once or per item.
    attempts: u32,
    memory: Option<MemoryUse>,
}

fn step_line(
    step: &str,
    status: Status,
    output: Option<&Payload>,
    error: Option<&str>,
    measured: &Measured<'_>,
) -> String {
    let Measured {
        duration,
        connections,
        attempts,
        memory,
    } = *measured;
    let requests: u64 = connections.values().map(|c| c.requests).sum();
    let throttled: u64 = connections.values().map(|c| c.throttled).sum();
    let retried: u64 = connections.values().map(|c| c.retried).sum();
    let waited_ms: u64 = connections.values().map(|c| c.wait_ms).sum();
    let mut facts = Vec::new();
    // Numbers and sizes from the output as the run holds it (no redacted
    // copy of a large list), the line itself redacted.
    let summary = output.and_then(|o| Some(o.redact(&summarize(o.unredacted()?))));
    if let Some(summary) = summary.filter(|s| !s.is_empty()) {
        facts.push(summary);
    }
    if requests > 0 {
        let mut r = format!("{requests} request{}", plural(requests as usize));
        if retried > 0 {
            r.push_str(&format!(", {retried} retried"));
        }
        if throttled > 0 {
            r.push_str(&format!(", {throttled} throttled"));
        }
        // Rate limits and Retry-After, added up over the requests (those
        // waiting at once count each): how much of the step they cost.
        if waited_ms > 0 {
            let waited = format_duration(std::time::Duration::from_millis(waited_ms));
            r.push_str(&format!(", waited {waited} in all"));
        }
        facts.push(r);
    }
    if attempts > 1 {
        facts.push(format!("{attempts} attempts"));
    }
    facts.push(format_duration(duration));
    if let Some(memory) = memory {
        facts.push(memory_fact(memory));
    }
    match status {
        Status::Succeeded => format!("  ✓ {step}  {}", facts.join(" · ")),
        Status::Skipped => format!(
            "  – {step}  skipped ({})",
            error.unwrap_or("its `when` is false")
        ),
        Status::Failed | Status::Interrupted => {
            format!("  ✗ {step}  {}", error.unwrap_or("failed"))
        }
    }
}

/// How near the step's instances came to their memory cap, in MiB.
fn memory_fact(memory: MemoryUse) -> String {
    const MIB: usize = 1024 * 1024;
    format!(
        "memory {} of {} MiB",
        memory.peak.div_ceil(MIB),
        memory.limit / MIB
    )
}

impl Observer for Progress {
    fn event(&self, event: &RunEvent) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Human => self.human(event),
            Mode::Json => {
                if let Ok(line) = serde_json::to_string(event) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{}", terminal::json(&line));
                }
            }
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A few facts from a step's output: numbers and list sizes at the top level.
/// Numbers, counts of lists and a few flags from the top of a step's
/// output, read from its text (no tree of a large list is made).
fn summarize(output: &StepOutput) -> String {
    if output.json().kind() != Kind::Object {
        return String::new();
    }
    // A component's own tally, when it has one, says it best.
    for key in ["counts", "summary"] {
        if let Some(Value::Object(tally)) = output.field(key).map(Json::to_value) {
            return tally
                .iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| format!("{} {n}", k.replace('_', " "))))
                .collect::<Vec<_>>()
                .join(", ");
        }
    }
    let has_count = output.field("count").is_some();
    let mut facts = Vec::new();
    for (key, value) in output.fields() {
        match value.kind() {
            Kind::Number => facts.push(format!("{} {}", key.replace('_', " "), value.to_value())),
            Kind::Array if !has_count || key != "items" => {
                facts.push(format!("{key} {}", value.len()))
            }
            Kind::Bool if key == "sent" || key == "would_send" => {
                facts.push(format!("{key} {}", value.to_value()))
            }
            _ => {}
        }
        if facts.len() >= 8 {
            break;
        }
    }
    facts.join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    fn gate(approved: u64, unapproved: u64, dry_run: bool) -> GateSummary {
        GateSummary {
            step: "deactivate".into(),
            plan: None,
            reason: None,
            approve: None,
            approved,
            unapproved,
            waiting: Vec::new(),
            rejected: Vec::new(),
            closed: 0,
            dry_run,
        }
    }

    /// A run that went on past failed items ends naming the command that
    /// says why, with its own id (nothing above lists them by default).
    #[test]
    fn a_run_past_failures_ends_naming_its_runs_show() {
        let p = Progress::new(Mode::Human, false);
        p.human_line(&RunEvent::RunStarted {
            run_id: "20261206T1200Z-abc123".into(),
            flow: "sync".into(),
            dry_run: false,
            output_dir: Default::default(),
        });
        let end = p.human_line(&RunEvent::RunFinished {
            status: Status::Succeeded,
            error: None,
            duration: std::time::Duration::from_millis(2500),
            setbacks: crate::run::Setbacks {
                failed_steps: Vec::new(),
                failed_items: 4,
            },
        });
        assert_eq!(
            end.as_deref(),
            Some(
                "✓ finished in 2.5 s, but 4 items failed (the run went on past them: `sluice runs show 20261206T1200Z-abc123` says why)"
            )
        );
    }

    /// A quiet step's line: its time to the second, then each busy
    /// connection by name.
    #[test]
    fn a_still_working_line_names_what_holds_each_connection() {
        let busy = std::collections::BTreeMap::from([
            (
                "graph".to_string(),
                "1 request waiting for an answer".to_string(),
            ),
            (
                "procore".to_string(),
                "nothing sent for 40s more, as the service asked (Retry-After)".to_string(),
            ),
        ]);
        assert_eq!(
            still_working_line("create", std::time::Duration::from_millis(90_400), &busy),
            "create: still working after 1m 30s; connection `graph`: 1 request waiting for an answer; connection `procore`: nothing sent for 40s more, as the service asked (Retry-After)"
        );
        assert_eq!(
            still_working_line(
                "diff",
                std::time::Duration::from_secs(30),
                &Default::default()
            ),
            "diff: still working after 30s"
        );
    }

    /// A gate's line counts what ran without approval beside the approved
    /// items, and a dry run where nothing would wait opens no plan.
    #[test]
    fn a_gate_line_says_what_ran_and_which_plan() {
        assert_eq!(
            gate_lines(&gate(2, 3, false)),
            "  ⏸ deactivate: approval (no plan): 3 run without needing approval, 2 approved items run"
        );
        assert_eq!(
            gate_lines(&gate(0, 3, true)),
            "  ⏸ deactivate: approval (no plan): nothing waits"
        );
        // Items no longer needed are closed, or would be in a dry run.
        for (dry_run, closed) in [(false, "closed"), (true, "would be closed")] {
            let g = GateSummary {
                closed: 2,
                ..gate(0, 0, dry_run)
            };
            assert_eq!(
                gate_lines(&g),
                format!("  ⏸ deactivate: approval (no plan): 2 no longer needed ({closed})")
            );
        }
    }

    /// A run that went to the end with failed items says so in its last
    /// line; one without says only that it finished.
    #[test]
    fn the_last_line_counts_the_items_that_failed() {
        let progress = Progress::new(Mode::Human, false);
        let last = |failed_steps: &[&str], failed_items| {
            progress
                .human_line(&RunEvent::RunFinished {
                    status: Status::Succeeded,
                    error: None,
                    duration: Duration::from_millis(7_000),
                    setbacks: crate::run::Setbacks {
                        failed_steps: failed_steps.iter().map(|s| s.to_string()).collect(),
                        failed_items,
                    },
                })
                .unwrap()
        };
        assert_eq!(last(&[], 0), "✓ finished in 7.0 s");
        assert!(
            last(&[], 1).starts_with("✓ finished in 7.0 s, but 1 item failed (the run went on"),
            "{}",
            last(&[], 1)
        );
        assert!(
            last(&[], 3).contains("but 3 items failed"),
            "{}",
            last(&[], 3)
        );
        assert!(
            last(&["mail"], 0).contains("but step `mail` failed (the run went on"),
            "{}",
            last(&["mail"], 0)
        );
    }

    /// A step its `retry` called three times says so; one called once
    /// says nothing of attempts.
    #[test]
    fn a_retried_step_line_says_how_many_attempts_it_took() {
        let line = |attempts| {
            step_line(
                "fetch",
                Status::Succeeded,
                None,
                None,
                &Measured {
                    duration: Duration::from_millis(5),
                    connections: &BTreeMap::new(),
                    attempts,
                    memory: None,
                },
            )
        };
        assert_eq!(line(3), "  ✓ fetch  3 attempts · 5 ms");
        assert_eq!(line(1), "  ✓ fetch  5 ms");
    }

    /// A step whose requests waited for a rate limit says how long, added
    /// up over its requests; one that never waited says nothing of it.
    #[test]
    fn a_step_line_says_how_long_its_requests_waited() {
        let line = |wait_ms| {
            let mut connections = BTreeMap::new();
            connections.insert(
                "procore".to_string(),
                crate::connections::RequestStats {
                    requests: 12,
                    retried: 0,
                    throttled: 1,
                    wait_ms,
                },
            );
            step_line(
                "create",
                Status::Succeeded,
                None,
                None,
                &Measured {
                    duration: Duration::from_secs(11),
                    connections: &connections,
                    attempts: 1,
                    memory: None,
                },
            )
        };
        assert_eq!(
            line(42_000),
            "  ✓ create  12 requests, 1 throttled, waited 42.0 s in all · 11.0 s"
        );
        assert_eq!(line(0), "  ✓ create  12 requests, 1 throttled · 11.0 s");
    }

    /// The step's peak linear memory is shown beside its cap, rounded up
    /// to whole MiB (a step at 511.2 MiB of 512 is near its cap).
    #[test]
    fn a_step_line_says_how_near_its_memory_cap_the_step_came() {
        const MIB: usize = 1024 * 1024;
        let line = step_line(
            "diff",
            Status::Succeeded,
            None,
            None,
            &Measured {
                duration: Duration::from_millis(5),
                connections: &BTreeMap::new(),
                attempts: 1,
                memory: Some(MemoryUse {
                    peak: 511 * MIB + 200_000,
                    limit: 512 * MIB,
                }),
            },
        );
        assert_eq!(line, "  ✓ diff  5 ms · memory 512 of 512 MiB");
    }
}
