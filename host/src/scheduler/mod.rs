//! `sluice serve`: runs flows at the times their schedules give.
//!
//! Each scheduled flow gets its own timer task. At a firing the flow file is
//! reloaded if it changed on disk (a reload that fails validation keeps the
//! previous version and says why); a firing that comes while the flow's
//! previous run is still going is skipped and recorded as skipped. Missed
//! firings while the host was down are not replayed: the next one runs.
//! SIGINT/SIGTERM stop the firing, let running steps finish for a grace
//! period, record what did not finish as interrupted, and exit 0. SIGHUP
//! reloads every flow now.

pub mod sources;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use tokio::sync::watch;

use crate::flow::Flow;
use crate::run::{Observer, RunOptions, Runner, Status};

/// What the scheduler needs from the rest of the host: how to load a flow,
/// how to watch and record a run, and where runs write their files.
pub trait Host: Send + Sync + 'static {
    /// Loads and validates a flow file; the error is the full report.
    fn load(&self, path: &std::path::Path) -> Result<Flow, String>;
    /// The observer for a new run (progress and history).
    fn observer(
        &self,
        flow: &Flow,
        run_id: &str,
        trigger: &str,
        options: &RunOptions,
    ) -> Arc<dyn Observer>;
    /// Records a firing skipped because the previous run was still going.
    fn record_skipped(&self, flow: &Flow, reason: &str);
    /// Records a run that was stopped without finishing.
    fn record_interrupted(&self, run_id: &str, reason: &str);
    fn output_dir(&self, run_id: &str) -> PathBuf;
    /// A line for the operator (stderr).
    fn say(&self, line: &str);
}

/// One scheduled flow and its state.
struct Entry {
    path: PathBuf,
    flow: Mutex<Arc<Flow>>,
    modified: Mutex<Option<SystemTime>>,
    running: AtomicBool,
    current: Mutex<Option<(String, Arc<AtomicBool>)>>,
}

pub struct Scheduler<H: Host> {
    host: Arc<H>,
    runner: Runner,
    entries: Vec<Arc<Entry>>,
    /// How long running steps may take to finish after a stop signal.
    pub grace: Duration,
}

impl<H: Host> Scheduler<H> {
    /// Loads every flow file; bad ones and unscheduled ones are reported and left out.
    pub fn new(host: Arc<H>, runner: Runner, files: Vec<PathBuf>) -> Self {
        let mut entries = Vec::new();
        for path in files {
            match host.load(&path) {
                Ok(flow) if flow.schedule.is_none() => {
                    host.say(&format!(
                        "– {}: flow `{}` has no schedule; not served",
                        path.display(),
                        flow.name
                    ));
                }
                Ok(flow) => entries.push(Arc::new(Entry {
                    modified: Mutex::new(modified(&path)),
                    path,
                    flow: Mutex::new(Arc::new(flow)),
                    running: AtomicBool::new(false),
                    current: Mutex::new(None),
                })),
                Err(report) => host.say(&format!("✗ {} is skipped:\n{report}", path.display())),
            }
        }
        Self {
            host,
            runner,
            entries,
            grace: Duration::from_secs(30),
        }
    }

    pub fn flow_count(&self) -> usize {
        self.entries.len()
    }

    /// Runs until `stop` turns true (or the process is signalled), then
    /// shuts down gracefully. `reload` asks for every flow to be reloaded.
    pub async fn serve(self, mut stop: watch::Receiver<bool>, mut reload: watch::Receiver<u64>) {
        for e in &self.entries {
            let flow = lock(&e.flow).clone();
            if let Some(s) = &flow.schedule {
                let next = s.next_after(Utc::now()).map_or("never".to_string(), |t| {
                    t.with_timezone(&s.timezone)
                        .format("%a %Y-%m-%d %H:%M:%S %Z")
                        .to_string()
                });
                self.host.say(&format!(
                    "⏱ {} (`{}` {}): next run {next}",
                    flow.name, s.cron, s.timezone
                ));
            }
        }
        let mut timers = tokio::task::JoinSet::new();
        let mut runs = tokio::task::JoinSet::new();
        let (fire_tx, mut fire_rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Entry>>();
        for e in &self.entries {
            timers.spawn(timer(e.clone(), fire_tx.clone(), stop.clone()));
        }
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                changed = reload.changed() => {
                    if changed.is_err() { continue; }
                    for e in &self.entries {
                        self.reload(e, true);
                    }
                }
                Some(entry) = fire_rx.recv() => {
                    self.reload(&entry, false);
                    let flow = lock(&entry.flow).clone();
                    if entry.running.swap(true, Ordering::SeqCst) {
                        self.host.say(&format!("↷ {}: the previous run is still going; this firing is skipped", flow.name));
                        self.host.record_skipped(&flow, "the previous run was still going");
                        continue;
                    }
                    let run_id = crate::run::new_run_id();
                    let options = RunOptions::new(run_id.clone(), self.host.output_dir(&run_id), false);
                    *lock(&entry.current) = Some((run_id.clone(), options.cancel.clone()));
                    let observer = self.host.observer(&flow, &run_id, "schedule", &options);
                    let (runner, host, entry) = (self.runner.clone(), self.host.clone(), entry.clone());
                    runs.spawn(async move {
                        let outcome = runner.run(&flow, &options, observer).await;
                        let line = match outcome.status {
                            Status::Succeeded => format!("✓ {} run {} finished", flow.name, outcome.run_id),
                            _ => format!("✗ {} run {}: {}", flow.name, outcome.run_id, outcome.error.as_deref().unwrap_or("failed")),
                        };
                        host.say(&line);
                        *lock(&entry.current) = None;
                        entry.running.store(false, Ordering::SeqCst);
                    });
                }
                Some(_) = runs.join_next(), if !runs.is_empty() => {}
            }
        }
        timers.abort_all();
        // Stop gracefully: no new steps or items; the running ones finish.
        let running: Vec<(String, Arc<AtomicBool>)> = self
            .entries
            .iter()
            .filter_map(|e| lock(&e.current).clone())
            .collect();
        if !running.is_empty() {
            self.host.say(&format!(
                "stopping: waiting up to {:?} for {} running flow(s) to finish their current step",
                self.grace,
                running.len()
            ));
        }
        for (_, cancel) in &running {
            cancel.store(true, Ordering::SeqCst);
        }
        let drained = tokio::time::timeout(self.grace, async {
            while runs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            runs.abort_all();
            for e in &self.entries {
                if let Some((run_id, _)) = lock(&e.current).take() {
                    self.host.record_interrupted(
                        &run_id,
                        "the host was stopped and the grace period ran out",
                    );
                }
            }
        }
    }

    /// Reloads a flow file if it changed (or when forced); keeps the old
    /// version when the new one does not validate.
    fn reload(&self, entry: &Entry, force: bool) {
        let now = modified(&entry.path);
        if !force && now == *lock(&entry.modified) {
            return;
        }
        *lock(&entry.modified) = now;
        match self.host.load(&entry.path) {
            Ok(flow) if flow.schedule.is_some() => {
                self.host
                    .say(&format!("↻ reloaded {}", entry.path.display()));
                *lock(&entry.flow) = Arc::new(flow);
            }
            Ok(_) => self.host.say(&format!(
                "✗ {} no longer has a schedule; keeping the previous version",
                entry.path.display()
            )),
            Err(report) => self.host.say(&format!(
                "✗ {} changed but does not validate; keeping the previous version:\n{report}",
                entry.path.display()
            )),
        }
    }
}

/// Sends the entry to the scheduler at each of its firing times.
async fn timer(
    entry: Arc<Entry>,
    fire: tokio::sync::mpsc::UnboundedSender<Arc<Entry>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let next = {
            let flow = lock(&entry.flow).clone();
            flow.schedule
                .as_ref()
                .and_then(|s| s.next_after(Utc::now()))
        };
        let Some(next) = next else { return };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        // Sleep may wake a hair early; never fire before the instant itself.
        while Utc::now() < next {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if fire.send(entry.clone()).is_err() {
            return;
        }
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
