//! Writes a run's events into the run history as they happen, so a crash
//! leaves an honest partial record.
//!
//! SQLite calls block (a write may wait up to the history's busy timeout
//! for another process's lock), so they never run on the async workers:
//! every write goes, in the order it was made, to one thread of its own
//! ([`HistoryWriter`]). Whoever needs the record complete — the scheduler
//! after a run, `sluice serve` before it exits — awaits
//! [`HistoryWriter::flush`]; dropping the last handle writes what is queued
//! before the thread ends, so a `sluice run` that returns has written
//! everything. A history that cannot be written is reported once per run,
//! and the run goes on: losing a record must not lose work.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde_json::json;
use sluice_store::{History, HistoryError, NewRun};

use super::events::{Observer, RunEvent, Status};

type Write = Box<dyn FnOnce(&History) -> Result<(), HistoryError> + Send>;

enum Job {
    /// A write for one run (named in the warning if it fails).
    Write { run: String, write: Write },
    /// Answered once every job sent before it is done.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The one thread that writes to the history, fed in order by a channel.
pub struct HistoryWriter {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The history file, for messages.
    pub path: PathBuf,
}

impl HistoryWriter {
    /// Starts the writer thread; it owns the history from now on.
    pub fn start(history: History) -> std::io::Result<Arc<HistoryWriter>> {
        let path = history.path.clone();
        let (sender, jobs) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("sluice-store".into())
            .spawn(move || {
                let mut warned = HashSet::new();
                for job in jobs {
                    match job {
                        Job::Write { run, write } => {
                            if let Err(e) = write(&history)
                                && warned.insert(run.clone())
                            {
                                eprintln!(
                                    "warning: the run history could not be written for run {run} ({e}); the run goes on"
                                );
                            }
                        }
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(Arc::new(HistoryWriter {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            path,
        }))
    }

    fn send(&self, job: Job) {
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = sender.as_ref() {
            // The thread ends only when the sender is dropped: a failed send
            // means it panicked, and the history is lost either way.
            let _ = sender.send(job);
        }
    }

    /// Queues a write for `run`; it is made after every write queued before.
    pub fn write(
        &self,
        run: &str,
        write: impl FnOnce(&History) -> Result<(), HistoryError> + Send + 'static,
    ) {
        self.send(Job::Write {
            run: run.to_string(),
            write: Box::new(write),
        });
    }

    /// Waits until every write queued so far is made.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(Job::Flush(done));
        let _ = wait.await;
    }
}

impl Drop for HistoryWriter {
    /// Writes what is queued, then ends the thread.
    fn drop(&mut self) {
        drop(self.sender.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// Records one run's events through a [`HistoryWriter`].
pub struct Recorder {
    writer: Arc<HistoryWriter>,
    flow_file: Arc<str>,
    trigger: Arc<str>,
    run_id: Mutex<String>,
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
    pub fn new(writer: Arc<HistoryWriter>, flow_file: &str, trigger: &str) -> Self {
        Self {
            writer,
            flow_file: flow_file.into(),
            trigger: trigger.into(),
            run_id: Mutex::new(String::new()),
        }
    }
}

impl Observer for Recorder {
    fn event(&self, event: &RunEvent) {
        if matches!(event, RunEvent::Log { .. }) {
            return;
        }
        let run = {
            let mut id = self.run_id.lock().unwrap_or_else(|e| e.into_inner());
            if let RunEvent::RunStarted { run_id, .. } = event {
                *id = run_id.clone();
            }
            id.clone()
        };
        let (flow_file, trigger) = (self.flow_file.clone(), self.trigger.clone());
        let event = event.clone();
        let id = run.clone();
        self.writer
            .write(&run, move |h| record(h, &id, &flow_file, &trigger, &event));
    }
}

/// One event as history writes.
fn record(
    h: &History,
    run: &str,
    flow_file: &str,
    trigger: &str,
    event: &RunEvent,
) -> Result<(), HistoryError> {
    match event {
        RunEvent::RunStarted {
            run_id,
            flow,
            dry_run,
            output_dir,
        } => h.start_run(&NewRun {
            id: run_id,
            flow,
            flow_file,
            trigger,
            dry_run: *dry_run,
            output_dir: &output_dir.display().to_string(),
        }),
        RunEvent::StepStarted {
            step,
            component,
            input,
            items,
        } => h.start_step(run, step, component, input, *items),
        RunEvent::ItemFinished {
            step,
            index,
            status,
            input,
            output,
            error,
            duration,
            connections,
            ..
        } => h.record_item(
            run,
            step,
            *index,
            status_text(*status),
            input,
            output.as_ref(),
            error.as_deref(),
            &json!(connections),
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
            run,
            step,
            component,
            status_text(*status),
            output.as_ref(),
            error.as_deref(),
            &json!(connections),
            duration.as_millis() as u64,
        ),
        RunEvent::Artifact { name, path, .. } => {
            h.add_artifact(run, name, &path.display().to_string())
        }
        RunEvent::RunFinished { status, error, .. } => {
            h.finish_run(run, status_text(*status), error.as_deref())
        }
        RunEvent::Log { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_in_order_off_the_async_workers_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = sluice_store::path_in(dir.path());
        let writer = HistoryWriter::start(History::open(&path).unwrap()).unwrap();
        let recorder = Recorder::new(writer.clone(), "f.toml", "manual");
        let thread = std::thread::current().id();
        let seen = Arc::new(Mutex::new(None));
        let seen2 = seen.clone();
        writer.write("x", move |_| {
            *seen2.lock().unwrap() = Some(std::thread::current().id());
            Ok(())
        });
        recorder.event(&RunEvent::RunStarted {
            run_id: "r1".into(),
            flow: "f".into(),
            dry_run: false,
            output_dir: dir.path().join("runs/r1"),
        });
        for i in 0..50 {
            recorder.event(&RunEvent::ItemFinished {
                step: "each".into(),
                index: i,
                status: Status::Succeeded,
                input: json!(i),
                output: None,
                error: None,
                duration: std::time::Duration::from_millis(1),
                done: i + 1,
                total: 50,
                failed: 0,
                connections: Default::default(),
            });
        }
        recorder.event(&RunEvent::RunFinished {
            status: Status::Succeeded,
            error: None,
            duration: std::time::Duration::from_millis(60),
        });
        writer.flush().await;
        let seen = seen.lock().unwrap().unwrap();
        assert_ne!(seen, thread, "written on the writer's own thread");
        let reader = History::open(&path).unwrap();
        let d = reader.run_detail("r1").unwrap().unwrap();
        assert_eq!(d.run.status, "succeeded");
        assert_eq!(d.items.len(), 50);
    }

    #[test]
    fn dropping_the_last_handle_writes_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = sluice_store::path_in(dir.path());
        let writer = HistoryWriter::start(History::open(&path).unwrap()).unwrap();
        for i in 0..20 {
            let id = format!("r{i}");
            writer.write(&id.clone(), move |h| {
                h.start_run(&NewRun {
                    id: &id,
                    flow: "f",
                    flow_file: "f.toml",
                    trigger: "manual",
                    dry_run: false,
                    output_dir: "",
                })
            });
        }
        drop(writer);
        let reader = History::open(&path).unwrap();
        assert_eq!(reader.list_runs(None, 100).unwrap().len(), 20);
    }
}
