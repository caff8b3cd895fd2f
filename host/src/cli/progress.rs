//! Showing a run while it happens: readable lines on stderr, one JSON object
//! per event on stdout with `--json`, or nothing with `--quiet`.

use std::io::Write;
use std::sync::Mutex;

use serde_json::Value;

use crate::engine::LogLevel;
use crate::run::{Observer, RunEvent, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Human,
    Json,
    Quiet,
}

pub struct Progress {
    mode: Mode,
    verbose: bool,
    last_item_line: Mutex<usize>,
}

impl Progress {
    pub fn new(mode: Mode, verbose: bool) -> Self {
        Self {
            mode,
            verbose,
            last_item_line: Mutex::new(0),
        }
    }

    fn human(&self, event: &RunEvent) {
        let mut err = std::io::stderr().lock();
        let _ = match event {
            RunEvent::RunStarted {
                run_id,
                flow,
                dry_run,
                ..
            } => writeln!(
                err,
                "▶ {flow}  (run {run_id}){}",
                if *dry_run {
                    "  — DRY RUN: reads only, nothing will be changed"
                } else {
                    ""
                }
            ),
            RunEvent::StepStarted {
                step,
                component,
                items,
                ..
            } => match items {
                Some(n) => writeln!(err, "  · {step} ({component}): {n} item{}…", plural(*n)),
                None => writeln!(err, "  · {step} ({component})…"),
            },
            RunEvent::ItemFinished {
                step,
                done,
                total,
                failed,
                ..
            } => {
                // About five progress lines per loop, whatever its length.
                let every = total.div_ceil(5).max(1);
                let mut last = self
                    .last_item_line
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if done == total || *done >= *last + every {
                    *last = if done == total { 0 } else { *done };
                    writeln!(
                        err,
                        "      {step}: {done}/{total} done{}",
                        if *failed > 0 {
                            format!(", {failed} failed")
                        } else {
                            String::new()
                        }
                    )
                } else {
                    Ok(())
                }
            }
            RunEvent::StepFinished {
                step,
                status,
                output,
                error,
                duration,
                connections,
                ..
            } => {
                let requests: u64 = connections.values().map(|c| c.requests).sum();
                let throttled: u64 = connections.values().map(|c| c.throttled).sum();
                let retried: u64 = connections.values().map(|c| c.retried).sum();
                let mut facts = Vec::new();
                if let Some(summary) = output.as_ref().map(summarize).filter(|s| !s.is_empty()) {
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
                    facts.push(r);
                }
                facts.push(format_duration(*duration));
                match status {
                    Status::Succeeded => writeln!(err, "  ✓ {step}  {}", facts.join(" · ")),
                    Status::Skipped => writeln!(
                        err,
                        "  – {step}  skipped ({})",
                        error.as_deref().unwrap_or("its `when` is false")
                    ),
                    Status::Failed | Status::Interrupted => {
                        writeln!(err, "  ✗ {step}  {}", error.as_deref().unwrap_or("failed"))
                    }
                }
            }
            RunEvent::Log {
                step,
                level,
                message,
            } => {
                if self.verbose || matches!(level, LogLevel::Warn | LogLevel::Error) {
                    writeln!(
                        err,
                        "      [{step}] {}: {message}",
                        format!("{level:?}").to_lowercase()
                    )
                } else {
                    Ok(())
                }
            }
            RunEvent::Artifact { name, path, .. } => {
                writeln!(err, "  ↳ wrote {name}: {}", path.display())
            }
            RunEvent::RunFinished {
                status, duration, ..
            } => match status {
                Status::Succeeded => writeln!(err, "✓ finished in {}", format_duration(*duration)),
                _ => writeln!(err, "✗ failed after {}", format_duration(*duration)),
            },
        };
    }
}

impl Observer for Progress {
    fn event(&self, event: &RunEvent) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Human => self.human(event),
            Mode::Json => {
                if let Ok(line) = serde_json::to_string(event) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
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
fn summarize(output: &Value) -> String {
    let Value::Object(map) = output else {
        return String::new();
    };
    // A component's own tally, when it has one, says it best.
    for key in ["counts", "summary"] {
        if let Some(Value::Object(tally)) = map.get(key) {
            return tally
                .iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| format!("{} {n}", k.replace('_', " "))))
                .collect::<Vec<_>>()
                .join(", ");
        }
    }
    let mut facts = Vec::new();
    for (key, value) in map {
        match value {
            Value::Number(n) => facts.push(format!("{} {n}", key.replace('_', " "))),
            Value::Array(a) if !map.contains_key("count") || key != "items" => {
                facts.push(format!("{key} {}", a.len()))
            }
            Value::Object(inner) if key == "counts" || key == "summary" => {
                for (k, v) in inner {
                    if let Value::Number(n) = v {
                        facts.push(format!("{k} {n}"));
                    }
                }
            }
            Value::Bool(b) if key == "sent" || key == "would_send" => {
                facts.push(format!("{key} {b}"))
            }
            _ => {}
        }
        if facts.len() >= 8 {
            break;
        }
    }
    facts.join(", ")
}
