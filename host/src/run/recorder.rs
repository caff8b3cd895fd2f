//! Writes a run's events into the run history as they happen, so a crash
//! leaves an honest partial record. A history that cannot be written is
//! reported once and the run goes on: losing a record must not lose work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use sluice_history::{History, NewRun};

use super::events::{Observer, RunEvent, Status};

pub struct Recorder {
    history: Arc<History>,
    flow_file: String,
    trigger: String,
    run_id: std::sync::Mutex<Option<String>>,
    warned: AtomicBool,
}

pub fn status_text(s: Status) -> &'static str {
    match s {
        Status::Succeeded => "succeeded",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
        Status::Interrupted => "interrupted",
    }
}

impl Recorder {
    pub fn new(history: Arc<History>, flow_file: &str, trigger: &str) -> Self {
        Self {
            history,
            flow_file: flow_file.to_string(),
            trigger: trigger.to_string(),
            run_id: Default::default(),
            warned: AtomicBool::new(false),
        }
    }

    fn check(&self, result: Result<(), sluice_history::HistoryError>) {
        if let Err(e) = result
            && !self.warned.swap(true, Ordering::SeqCst)
        {
            eprintln!("warning: the run history could not be written ({e}); the run goes on");
        }
    }

    fn run(&self) -> String {
        self.run_id
            .lock()
            .map(|r| r.clone().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Observer for Recorder {
    fn event(&self, event: &RunEvent) {
        let h = &self.history;
        let result = match event {
            RunEvent::RunStarted {
                run_id,
                flow,
                dry_run,
                output_dir,
            } => {
                if let Ok(mut r) = self.run_id.lock() {
                    *r = Some(run_id.clone());
                }
                h.start_run(&NewRun {
                    id: run_id,
                    flow,
                    flow_file: &self.flow_file,
                    trigger: &self.trigger,
                    dry_run: *dry_run,
                    output_dir: &output_dir.display().to_string(),
                })
            }
            RunEvent::StepStarted {
                step,
                component,
                input,
                items,
            } => h.start_step(&self.run(), step, component, input, *items),
            RunEvent::ItemFinished {
                step,
                index,
                status,
                input,
                output,
                error,
                duration,
                ..
            } => h.record_item(
                &self.run(),
                step,
                *index,
                status_text(*status),
                input,
                output.as_ref(),
                error.as_deref(),
                duration.as_millis() as u64,
            ),
            RunEvent::StepFinished {
                step,
                component,
                status,
                output,
                error,
                duration,
                connections,
            } => h.finish_step(
                &self.run(),
                step,
                component,
                status_text(*status),
                output.as_ref(),
                error.as_deref(),
                &json!(connections),
                duration.as_millis() as u64,
            ),
            RunEvent::Artifact { name, path, .. } => {
                h.add_artifact(&self.run(), name, &path.display().to_string())
            }
            RunEvent::RunFinished { status, error, .. } => {
                h.finish_run(&self.run(), status_text(*status), error.as_deref())
            }
            RunEvent::Log { .. } => Ok(()),
        };
        self.check(result);
    }
}
