//! `sluice serve`'s log: each [`ServeEvent`] (and with `--verbose`, each
//! run's steps) as a `tracing` event with a level, a sentence for a person
//! and the fields a log shipper indexes (`event`, `flow`, `run_id`, `step`,
//! `error`, and `file`, `at`, `next_run`, `status`, and for missed firings
//! `count`, `from`, `to`, where they apply).
//! [`super::log_lines`] writes them as text or JSON lines.

use std::sync::Arc;

use chrono::DateTime;
use chrono_tz::Tz;
use tracing::Level;

use crate::engine::LogLevel;
use crate::run::{Observer, RunEvent, Setbacks, Status};
use crate::scheduler::ServeEvent;

/// One log entry, ready for `tracing`.
#[derive(Debug, PartialEq)]
pub struct Entry {
    pub level: Level,
    pub event: &'static str,
    pub message: String,
    pub flow: Option<String>,
    pub run_id: Option<String>,
    pub step: Option<String>,
    pub error: Option<String>,
    pub file: Option<String>,
    pub at: Option<String>,
    pub next_run: Option<String>,
    pub status: Option<&'static str>,
    /// Missed firings: how many, and the first and last of them.
    pub count: Option<u64>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `Some(true)` when the timer stopped counting: more than `count`.
    pub count_incomplete: Option<bool>,
    /// A run that went to the end past failures: its failed steps (by id,
    /// comma-separated) and `for_each` items.
    pub failed_steps: Option<String>,
    pub failed_items: Option<u64>,
    /// Text Sluice laid out over several lines (a flow file's
    /// diagnostics), written under the message, which stays one line.
    pub detail: Option<String>,
}

impl Entry {
    /// An entry at INFO with no fields yet.
    fn new(event: &'static str) -> Entry {
        Entry {
            level: Level::INFO,
            event,
            message: String::new(),
            flow: None,
            run_id: None,
            step: None,
            error: None,
            file: None,
            at: None,
            next_run: None,
            status: None,
            count: None,
            from: None,
            to: None,
            count_incomplete: None,
            failed_steps: None,
            failed_items: None,
            detail: None,
        }
    }
}

/// Logs `event`.
pub fn emit(event: &ServeEvent) {
    log(entry(event));
}

/// Hands an entry to `tracing` (whose level must be known where the
/// event is written, hence one call per level).
pub fn log(e: Entry) {
    macro_rules! at_level {
        ($level:expr) => {
            tracing::event!(
                $level,
                event = e.event,
                flow = e.flow.as_deref(),
                run_id = e.run_id.as_deref(),
                step = e.step.as_deref(),
                status = e.status,
                file = e.file.as_deref(),
                at = e.at.as_deref(),
                next_run = e.next_run.as_deref(),
                error = e.error.as_deref(),
                count = e.count,
                from = e.from.as_deref(),
                to = e.to.as_deref(),
                count_incomplete = e.count_incomplete,
                failed_steps = e.failed_steps.as_deref(),
                failed_items = e.failed_items,
                detail = e.detail.as_deref(),
                "{}",
                e.message
            )
        };
    }
    match e.level {
        Level::ERROR => at_level!(Level::ERROR),
        Level::WARN => at_level!(Level::WARN),
        Level::DEBUG => at_level!(Level::DEBUG),
        _ => at_level!(Level::INFO),
    }
}

/// A time as a person reads it, in the flow's zone.
fn readable(at: &DateTime<Tz>) -> String {
    at.format("%a %Y-%m-%d %H:%M:%S %Z").to_string()
}

/// `sync: 5 firings from … to … were missed (…); none is run late`.
fn missed_words(
    flow: &str,
    first: &DateTime<Tz>,
    last: &DateTime<Tz>,
    count: u64,
    more: bool,
) -> String {
    const WHY: &str = "the host was stalled or the machine asleep";
    if count == 1 && !more {
        return format!(
            "{flow}: the firing at {} was missed ({WHY}); it is not run late",
            readable(first)
        );
    }
    let how_many = if more {
        format!(
            "more than {count} firings from {} (the count stops at {})",
            readable(first),
            readable(last)
        )
    } else {
        format!(
            "{count} firings from {} to {}",
            readable(first),
            readable(last)
        )
    };
    format!("{flow}: {how_many} were missed ({WHY}); none is run late")
}

fn next_words(next: &Option<DateTime<Tz>>) -> String {
    next.as_ref().map_or("never".to_string(), readable)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `message` without the `warning: ` a terminal line starts with: the
/// log's level already says it (`WARN  warning: …` said it twice).
fn without_warning_word(message: &str) -> String {
    message
        .strip_prefix("warning: ")
        .unwrap_or(message)
        .to_owned()
}

/// The entry for a serve event: its level, sentence and fields.
pub fn entry(event: &ServeEvent) -> Entry {
    let base = Entry::new(event.name());
    match event {
        ServeEvent::Loading { .. }
        | ServeEvent::Serving { .. }
        | ServeEvent::ConsoleListening { .. }
        | ServeEvent::Replica { .. }
        | ServeEvent::Recovered { .. }
        | ServeEvent::RecoveryFailed { .. }
        | ServeEvent::Rescanning
        | ServeEvent::Stopping { .. }
        | ServeEvent::StoppingNow { .. }
        | ServeEvent::Stopped
        | ServeEvent::Fatal { .. }
        | ServeEvent::Warning { .. } => host_entry(event, base),
        ServeEvent::FlowLoaded { .. }
        | ServeEvent::FlowRejected { .. }
        | ServeEvent::FlowNotScheduled { .. }
        | ServeEvent::PathUnreadable { .. }
        | ServeEvent::FlowReloaded { .. }
        | ServeEvent::ReloadRejected { .. }
        | ServeEvent::FlowRetired { .. } => file_entry(event, base),
        _ => firing_entry(event, base),
    }
}

/// The host's own life: starting, recovering, rescanning, stopping.
fn host_entry(event: &ServeEvent, base: Entry) -> Entry {
    match event {
        ServeEvent::Loading { paths } => Entry {
            message: format!(
                "loading the flows of {}; components not in the cache yet are compiled first (a minute or so on a first start)",
                paths.join(", ")
            ),
            ..base
        },
        ServeEvent::Serving {
            flows,
            replica,
            lease,
            history,
        } => Entry {
            // Nothing to run yet is worth a look, though not an error.
            level: if *flows == 0 { Level::WARN } else { base.level },
            message: format!(
                "serving {flows} flow{} as replica {replica} (leases of {}); history in {history}; Ctrl-C or SIGTERM stops, SIGHUP rescans the flow files{}",
                plural(*flows),
                humantime::format_duration(*lease),
                if *flows == 0 {
                    "; no served folder has a valid scheduled flow yet: a new or fixed file is served once the minute's rescan or a SIGHUP finds it"
                } else {
                    ""
                },
            ),
            ..base
        },
        ServeEvent::ConsoleListening { url, note } => Entry {
            message: crate::console::listening_line(url, note.as_deref()),
            ..base
        },
        ServeEvent::Replica { message } => Entry {
            level: Level::WARN,
            message: without_warning_word(message),
            ..base
        },
        ServeEvent::Recovered { runs } => Entry {
            level: Level::WARN,
            message: format!(
                "recorded {runs} run{} left unfinished by a process that stopped as interrupted",
                plural(*runs)
            ),
            ..base
        },
        ServeEvent::RecoveryFailed { error } => Entry {
            level: Level::WARN,
            message: format!("could not settle runs left unfinished: {error}"),
            error: Some(error.clone()),
            ..base
        },
        ServeEvent::Rescanning => Entry {
            message: "rescanning the flow files (SIGHUP)".into(),
            ..base
        },
        ServeEvent::Stopping { running, grace } => Entry {
            message: format!(
                "stopping: waiting up to {} for {running} running flow{} to finish {} current step; a second Ctrl-C or SIGTERM stops at once",
                humantime::format_duration(*grace),
                plural(*running),
                if *running == 1 { "its" } else { "their" }
            ),
            ..base
        },
        ServeEvent::StoppingNow {
            reason,
            interrupted,
        } => Entry {
            level: Level::WARN,
            message: format!(
                "stopping now ({reason}): {interrupted} run{} recorded as interrupted",
                plural(*interrupted)
            ),
            error: Some(reason.clone()),
            ..base
        },
        ServeEvent::Fatal { error, detail } => Entry {
            level: Level::ERROR,
            message: format!("cannot serve: {error}"),
            error: Some(error.clone()),
            detail: detail.clone(),
            ..base
        },
        ServeEvent::Warning { message } => Entry {
            level: Level::WARN,
            message: without_warning_word(message),
            ..base
        },
        _ => Entry {
            message: "stopped".into(),
            ..base
        },
    }
}

/// A flow file served, refused, reloaded or gone.
fn file_entry(event: &ServeEvent, base: Entry) -> Entry {
    match event {
        ServeEvent::FlowLoaded {
            file,
            flow,
            cron,
            next,
        } => Entry {
            message: format!(
                "flow `{flow}` ({}) runs on `{cron}`{}; next run {}",
                file.display(),
                next.as_ref()
                    .map_or(String::new(), |t| format!(" {}", t.timezone())),
                next_words(next)
            ),
            flow: Some(flow.clone()),
            file: Some(file.display().to_string()),
            next_run: next.map(|t| t.to_rfc3339()),
            ..base
        },
        ServeEvent::FlowRejected { file, error } => Entry {
            level: Level::WARN,
            message: format!("{} is skipped:", file.display()),
            file: Some(file.display().to_string()),
            error: Some(error.clone()),
            detail: Some(error.clone()),
            ..base
        },
        ServeEvent::FlowNotScheduled { file, flow } => Entry {
            level: Level::WARN,
            message: format!(
                "{}: flow `{flow}` has no schedule; not served",
                file.display()
            ),
            flow: Some(flow.clone()),
            file: Some(file.display().to_string()),
            ..base
        },
        ServeEvent::PathUnreadable { error } => Entry {
            level: Level::WARN,
            message: error.clone(),
            error: Some(error.clone()),
            ..base
        },
        ServeEvent::FlowReloaded { file, flow, next } => Entry {
            message: format!("reloaded {}; next run {}", file.display(), next_words(next)),
            flow: Some(flow.clone()),
            file: Some(file.display().to_string()),
            next_run: next.map(|t| t.to_rfc3339()),
            ..base
        },
        ServeEvent::ReloadRejected { file, flow, error } => Entry {
            level: Level::WARN,
            message: format!(
                "{} changed but the new version is refused; keeping the previous version:",
                file.display()
            ),
            flow: Some(flow.clone()),
            file: Some(file.display().to_string()),
            error: Some(error.clone()),
            detail: Some(error.clone()),
            ..base
        },
        ServeEvent::FlowRetired {
            file,
            flow,
            run_goes_on,
        } => Entry {
            message: format!(
                "{} is gone: flow `{flow}` is no longer served{}",
                file.display(),
                if *run_goes_on {
                    " (its current run goes on to its end)"
                } else {
                    ""
                }
            ),
            flow: Some(flow.clone()),
            file: Some(file.display().to_string()),
            ..base
        },
        _ => base,
    }
}

/// A firing and what came of it.
fn firing_entry(event: &ServeEvent, base: Entry) -> Entry {
    match event {
        ServeEvent::Firing { flow, run_id, at } => Entry {
            message: format!(
                "{flow}: run {run_id} starts (the firing at {})",
                readable(at)
            ),
            flow: Some(flow.clone()),
            run_id: Some(run_id.clone()),
            at: Some(at.to_rfc3339()),
            ..base
        },
        ServeEvent::RunNow { flow, run_id } => Entry {
            message: format!("{flow}: run {run_id} starts (run now, from the console)"),
            flow: Some(flow.clone()),
            run_id: Some(run_id.clone()),
            ..base
        },
        // `run_id` is the run still going, which the skip is for; the
        // skip's own record is named in the message.
        ServeEvent::SkippedStillRunning {
            flow,
            running_run_id,
            skipped_run_id,
            at,
            reason,
        } => Entry {
            level: Level::WARN,
            message: format!(
                "{flow}: {reason}; this firing is skipped (the firing at {}, recorded as run {skipped_run_id})",
                readable(at)
            ),
            flow: Some(flow.clone()),
            run_id: running_run_id.clone(),
            at: Some(at.to_rfc3339()),
            ..base
        },
        ServeEvent::Missed {
            flow,
            first,
            last,
            count,
            more,
        } => Entry {
            level: Level::WARN,
            message: missed_words(flow, first, last, *count, *more),
            flow: Some(flow.clone()),
            at: Some(first.to_rfc3339()),
            count: Some(*count),
            from: Some(first.to_rfc3339()),
            to: Some(last.to_rfc3339()),
            count_incomplete: more.then_some(true),
            ..base
        },
        ServeEvent::NotInSchedule { flow, at, next } => Entry {
            level: Level::WARN,
            message: format!(
                "{flow}: its new schedule does not fire at {}; next run {}",
                readable(at),
                next_words(next)
            ),
            flow: Some(flow.clone()),
            at: Some(at.to_rfc3339()),
            next_run: next.map(|t| t.to_rfc3339()),
            ..base
        },
        ServeEvent::RunFinished {
            flow,
            run_id,
            status,
            error,
            setbacks,
        } => run_finished(base, flow, run_id, *status, error.as_deref(), setbacks),
        _ => base,
    }
}

fn run_finished(
    base: Entry,
    flow: &str,
    run_id: &str,
    status: Status,
    error: Option<&str>,
    setbacks: &Setbacks,
) -> Entry {
    let with_failures;
    let (level, words) = match (status, setbacks.said()) {
        // Succeeded past failures: one to look at.
        (Status::Succeeded, Some(failed)) => {
            with_failures = format!("finished, but {failed} (`sluice runs show {run_id}`)");
            (Level::WARN, with_failures.as_str())
        }
        (Status::Succeeded, None) => (Level::INFO, "finished"),
        (Status::Failed, _) => (Level::ERROR, "failed"),
        (Status::Interrupted, _) => (Level::WARN, "was interrupted"),
        (Status::Skipped, _) => (Level::WARN, "was skipped"),
    };
    Entry {
        level,
        message: match error {
            Some(error) => format!("{flow} run {run_id} {words}: {error}"),
            None => format!("{flow} run {run_id} {words}"),
        },
        flow: Some(flow.to_string()),
        run_id: Some(run_id.to_string()),
        status: Some(status_name(status)),
        error: error.map(str::to_string),
        failed_steps: (!setbacks.failed_steps.is_empty()).then(|| setbacks.failed_steps.join(",")),
        failed_items: (setbacks.failed_items > 0).then_some(setbacks.failed_items),
        ..base
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "succeeded",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
        Status::Interrupted => "interrupted",
    }
}

/// With `serve --verbose`: each step of a run, its failed items and its
/// components' log lines, with the run's flow and id.
pub struct RunLog {
    pub flow: String,
    pub run_id: String,
}

impl RunLog {
    pub fn new(flow: &str, run_id: &str) -> Arc<RunLog> {
        Arc::new(RunLog {
            flow: flow.to_string(),
            run_id: run_id.to_string(),
        })
    }

    fn base(&self, event: &'static str, step: &str) -> Entry {
        Entry {
            flow: Some(self.flow.clone()),
            run_id: Some(self.run_id.clone()),
            step: Some(step.to_string()),
            ..Entry::new(event)
        }
    }

    /// The entry for a run event, or `None` for those the serve events
    /// already tell (a run's start and end) or that are not worth a line.
    pub fn entry(&self, event: &RunEvent) -> Option<Entry> {
        let (flow, run) = (&self.flow, &self.run_id);
        match event {
            RunEvent::StepStarted {
                step, component, ..
            } => Some(Entry {
                message: format!("{flow} run {run}: step {step} ({component}) started"),
                ..self.base("step_started", step)
            }),
            RunEvent::StepFinished {
                step,
                status,
                error,
                duration,
                ..
            } => {
                let mut e = run_finished(
                    self.base("step_finished", step),
                    flow,
                    run,
                    *status,
                    error.as_deref(),
                    &Setbacks::default(),
                );
                if *status == Status::Skipped {
                    e.level = Level::INFO;
                }
                e.message = format!(
                    "{flow} run {run}: step {step} {} after {}{}",
                    status_name(*status),
                    super::progress::format_duration(*duration),
                    error.as_deref().map_or(String::new(), |e| format!(": {e}"))
                );
                Some(e)
            }
            RunEvent::ItemFinished {
                step,
                index,
                key,
                total,
                status: Status::Failed,
                error,
                ..
            } => Some(Entry {
                level: Level::WARN,
                // Counted from 1 and named by its key, as the run's own
                // error and `sluice runs show` name it.
                message: format!(
                    "{flow} run {run}: step {step}, item {} of {total}{} failed: {}",
                    index + 1,
                    key.as_deref()
                        .map_or(String::new(), |k| format!(" (key `{k}`)")),
                    error.as_deref().unwrap_or("no reason given")
                ),
                error: error.clone(),
                status: Some("failed"),
                ..self.base("item_failed", step)
            }),
            RunEvent::StillWorking {
                step,
                elapsed,
                connections,
            } => Some(Entry {
                message: format!(
                    "{flow} run {run}: {}",
                    super::progress::still_working_line(step, *elapsed, connections)
                ),
                ..self.base("still_working", step)
            }),
            RunEvent::Log {
                step,
                level,
                message,
            } => Some(Entry {
                level: match level {
                    LogLevel::Debug => Level::DEBUG,
                    LogLevel::Info => Level::INFO,
                    LogLevel::Warn => Level::WARN,
                    LogLevel::Error => Level::ERROR,
                },
                message: format!("{flow} run {run}: {step}: {message}"),
                ..self.base("step_log", step)
            }),
            _ => None,
        }
    }
}

impl Observer for RunLog {
    fn event(&self, event: &RunEvent) {
        if let Some(entry) = self.entry(event) {
            log(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::run::Payload;

    fn paris(h: u32, m: u32) -> DateTime<Tz> {
        chrono_tz::Europe::Paris
            .with_ymd_and_hms(2026, 6, 1, h, m, 0)
            .single()
            .unwrap()
    }

    /// The operations tester read `WARN  warning: the lease could not be
    /// freed …` in serve's log.
    #[test]
    fn a_warning_is_said_once_by_its_level() {
        for event in [
            ServeEvent::Replica {
                message: "warning: sync: the lease could not be freed".into(),
            },
            ServeEvent::Warning {
                message: "warning: sync: the lease could not be freed".into(),
            },
        ] {
            let said = entry(&event);
            assert_eq!(said.level, Level::WARN);
            assert_eq!(said.message, "sync: the lease could not be freed");
        }
        let plain = entry(&ServeEvent::Replica {
            message: "took over sync".into(),
        });
        assert_eq!(plain.message, "took over sync");
    }

    #[test]
    fn each_event_has_its_level_fields_and_sentence() {
        let loaded = entry(&ServeEvent::FlowLoaded {
            file: PathBuf::from("flows/sync.toml"),
            flow: "sync".into(),
            cron: "0 0 5-17 * * Mon-Fri".into(),
            next: Some(paris(5, 0)),
        });
        assert_eq!((loaded.level, loaded.event), (Level::INFO, "flow_loaded"));
        assert_eq!(loaded.flow.as_deref(), Some("sync"));
        assert_eq!(loaded.file.as_deref(), Some("flows/sync.toml"));
        assert_eq!(
            loaded.next_run.as_deref(),
            Some("2026-06-01T05:00:00+02:00")
        );
        assert_eq!(
            loaded.message,
            "flow `sync` (flows/sync.toml) runs on `0 0 5-17 * * Mon-Fri` Europe/Paris; next run Mon 2026-06-01 05:00:00 CEST"
        );
        let failed = entry(&ServeEvent::RunFinished {
            flow: "sync".into(),
            run_id: "r1".into(),
            status: Status::Failed,
            error: Some("step `create` failed".into()),
            setbacks: Setbacks::default(),
        });
        assert_eq!(
            (failed.level, failed.status),
            (Level::ERROR, Some("failed"))
        );
        assert_eq!(failed.run_id.as_deref(), Some("r1"));
        assert_eq!(failed.error.as_deref(), Some("step `create` failed"));
        assert_eq!(failed.message, "sync run r1 failed: step `create` failed");
        assert_eq!((failed.failed_items, failed.failed_steps), (None, None));
        // Succeeded past failures under `on_error = "continue"`.
        let partly = entry(&ServeEvent::RunFinished {
            flow: "sync".into(),
            run_id: "r1".into(),
            status: Status::Succeeded,
            error: None,
            setbacks: Setbacks {
                failed_steps: vec!["mail".into()],
                failed_items: 2,
            },
        });
        assert_eq!(
            (partly.level, partly.status, partly.failed_items),
            (Level::WARN, Some("succeeded"), Some(2))
        );
        assert_eq!(partly.failed_steps.as_deref(), Some("mail"));
        assert_eq!(
            partly.message,
            "sync run r1 finished, but step `mail` failed, 2 items failed (`sluice runs show r1`)"
        );
        let skipped = entry(&ServeEvent::SkippedStillRunning {
            flow: "sync".into(),
            running_run_id: Some("r1".into()),
            skipped_run_id: "r2".into(),
            at: paris(6, 0),
            reason: "the previous run (r1) was still going".into(),
        });
        assert_eq!(
            (skipped.level, skipped.event),
            (Level::WARN, "skipped_still_running")
        );
        assert_eq!(skipped.at.as_deref(), Some("2026-06-01T06:00:00+02:00"));
        assert_eq!(skipped.run_id.as_deref(), Some("r1"));
        assert_eq!(
            skipped.message,
            "sync: the previous run (r1) was still going; this firing is skipped (the firing at Mon 2026-06-01 06:00:00 CEST, recorded as run r2)"
        );
        let stopping = entry(&ServeEvent::Stopping {
            running: 2,
            grace: Duration::from_secs(30),
        });
        assert_eq!(
            stopping.message,
            "stopping: waiting up to 30s for 2 running flows to finish their current step; a second Ctrl-C or SIGTERM stops at once"
        );
        let one = entry(&ServeEvent::Stopping {
            running: 1,
            grace: Duration::from_secs(30),
        });
        assert!(
            one.message
                .contains("for 1 running flow to finish its current step"),
            "{}",
            one.message
        );
    }

    #[test]
    fn a_run_log_names_the_step_and_leaves_the_runs_own_ends_to_serve() {
        let log = RunLog::new("sync", "r1");
        let finished = log
            .entry(&RunEvent::StepFinished {
                step: "diff".into(),
                component: "compare".into(),
                status: Status::Failed,
                output: None,
                error: Some("bad input".into()),
                duration: Duration::from_millis(1500),
                connections: Default::default(),
                attempts: None,
                memory: None,
            })
            .unwrap();
        assert_eq!(
            (finished.level, finished.event),
            (Level::ERROR, "step_finished")
        );
        assert_eq!(
            (
                finished.flow.as_deref(),
                finished.run_id.as_deref(),
                finished.step.as_deref()
            ),
            (Some("sync"), Some("r1"), Some("diff"))
        );
        assert_eq!(
            finished.message,
            "sync run r1: step diff failed after 1.5 s: bad input"
        );
        // A failed item is counted from 1 and named by its key, as the
        // run's error and `sluice runs show` name it.
        let redactor = crate::redact::Redactor::default();
        let item = log
            .entry(&RunEvent::ItemFinished {
                step: "create".into(),
                index: 2,
                key: Some("ann@example.com".into()),
                status: Status::Failed,
                input: Payload::text(Arc::new("{}".into()), &redactor),
                output: None,
                error: Some("Procore refused it".into()),
                duration: Duration::from_millis(3),
                done: 3,
                total: 10,
                failed: 1,
                connections: Default::default(),
                attempts: sluice_store::Attempts {
                    made: 1,
                    failed: Vec::new(),
                },
                recorded: false,
                spends_approval: None,
            })
            .unwrap();
        assert_eq!((item.level, item.event), (Level::WARN, "item_failed"));
        assert_eq!(
            item.message,
            "sync run r1: step create, item 3 of 10 (key `ann@example.com`) failed: Procore refused it"
        );
        let quiet = log
            .entry(&RunEvent::StillWorking {
                step: "create".into(),
                elapsed: Duration::from_secs(60),
                connections: [(
                    "procore".to_string(),
                    "1 request waiting for an answer".to_string(),
                )]
                .into(),
            })
            .unwrap();
        assert_eq!((quiet.level, quiet.event), (Level::INFO, "still_working"));
        assert_eq!(
            quiet.message,
            "sync run r1: create: still working after 1m; connection `procore`: 1 request waiting for an answer"
        );
        let ended = RunEvent::RunFinished {
            status: Status::Succeeded,
            setbacks: Setbacks::default(),
            error: None,
            duration: Duration::ZERO,
        };
        assert_eq!(log.entry(&ended), None);
    }
}
