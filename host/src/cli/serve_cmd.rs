//! `sluice serve DIR_OR_FILES…`: the timer host, wired to the run history
//! and to SIGINT/SIGTERM (stop gracefully; a second one stops at once) and
//! SIGHUP (rescan the flow files now).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use sluice_store::{History, NewRun};

use super::progress::{Mode, Progress};
use super::run_cmd::engine_for;
use crate::flow::Flow;
use crate::run::recorder::{HistoryWriter, Recorder};
use crate::run::{Fanout, Observer, RunOptions, Runner};
use crate::scheduler::{Host, Scheduler};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Flow files, or directories whose *.toml flows are served
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// How long running steps may take to finish after SIGINT/SIGTERM
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Show each run's steps as they happen
    #[arg(long, short)]
    pub verbose: bool,
}

struct ServeHost {
    writer: Arc<HistoryWriter>,
    data_dir: PathBuf,
    verbose: bool,
}

/// A flow's steps as the history names them: `(id, component)`.
fn steps_of(flow: &Flow) -> Vec<(String, String)> {
    flow.steps
        .iter()
        .map(|s| (s.id.clone(), s.uses.to_string()))
        .collect()
}

impl Host for ServeHost {
    fn load(&self, path: &Path) -> Result<Flow, String> {
        let builtins = sluice_builtins::names();
        let ctx = crate::flow::Context {
            builtins: &builtins,
            env: crate::flow::process_env(),
            param_overrides: &[],
        };
        crate::flow::load(path, &ctx).map_err(|e| e.to_string())
    }

    fn observer(
        &self,
        flow: &Flow,
        _run_id: &str,
        trigger: &str,
        _options: &RunOptions,
    ) -> Arc<dyn Observer> {
        let recorder: Arc<dyn Observer> = Arc::new(Recorder::new(
            self.writer.clone(),
            &flow.source.path.display().to_string(),
            trigger,
        ));
        let mode = if self.verbose {
            Mode::Human
        } else {
            Mode::Quiet
        };
        Arc::new(Fanout(vec![Arc::new(Progress::new(mode, false)), recorder]))
    }

    fn record_skipped(&self, flow: &Flow, reason: &str) {
        let id = crate::run::new_run_id();
        let (name, file, reason) = (
            flow.name.clone(),
            flow.source.path.display().to_string(),
            reason.to_string(),
        );
        self.writer.write(&id.clone(), move |h| {
            let run = NewRun {
                id: &id,
                flow: &name,
                flow_file: &file,
                trigger: "schedule",
                dry_run: false,
                output_dir: "",
            };
            h.record_skipped(&run, &reason)
        });
    }

    fn record_interrupted(&self, flow: &Flow, run_id: &str, reason: &str) {
        let (run, steps, reason) = (run_id.to_string(), steps_of(flow), reason.to_string());
        self.writer.write(run_id, move |h| {
            h.mark_interrupted(&run, &reason)?;
            h.skip_unrecorded_steps(&run, &steps, "the run was interrupted")
        });
    }

    fn record_failed(&self, flow: &Flow, run_id: &str, reason: &str) {
        let (run, steps, reason) = (run_id.to_string(), steps_of(flow), reason.to_string());
        self.writer.write(run_id, move |h| {
            h.mark_failed(&run, &reason)?;
            h.skip_unrecorded_steps(&run, &steps, "the run stopped before this step")
        });
    }

    fn flush(&self) -> impl Future<Output = ()> + Send {
        let writer = self.writer.clone();
        async move { writer.flush().await }
    }

    fn output_dir(&self, run_id: &str) -> PathBuf {
        sluice_store::run_dir(&self.data_dir, run_id)
    }

    fn say(&self, line: &str) {
        // Diagnostics span lines; everything else in them is escaped.
        eprintln!("{}", super::terminal::lines(line));
    }
}

/// Opens the history and records as interrupted the runs an earlier
/// process left `running` when it died: this host is the one long-lived
/// writer, so its start is when they are settled for good.
async fn open_history(data_dir: &Path) -> anyhow::Result<History> {
    let path = sluice_store::path_in(data_dir);
    let started = chrono::Utc::now();
    let (history, recovered) = tokio::task::spawn_blocking(move || {
        History::open(&path).map(|h| {
            let recovered = h.recover_stale_runs(started);
            (h, recovered)
        })
    })
    .await??;
    match recovered {
        Ok(0) => {}
        Ok(n) => eprintln!(
            "recorded {n} run{} left unfinished by a process that stopped as interrupted",
            if n == 1 { "" } else { "s" }
        ),
        Err(e) => eprintln!("warning: could not settle runs left unfinished: {e}"),
    }
    Ok(history)
}

pub async fn serve(args: ServeArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let history = open_history(data_dir).await?;
    let history_path = history.path.clone();
    let host = Arc::new(ServeHost {
        writer: HistoryWriter::start(history)?,
        data_dir: data_dir.to_path_buf(),
        verbose: args.verbose,
    });
    let runner = Runner::new(engine_for(data_dir)?)?;
    let mut scheduler = match Scheduler::new(host, runner, args.paths) {
        Ok(scheduler) => scheduler,
        Err(problems) => {
            eprintln!("error: {}", super::terminal::lines(&problems.to_string()));
            return Ok(ExitCode::from(2));
        }
    };
    scheduler.grace = args.grace;
    if scheduler.flow_count() == 0 {
        eprintln!("error: no valid scheduled flow to serve");
        return Ok(ExitCode::from(2));
    }
    let signals = super::signals::watch(true)?;
    eprintln!(
        "serving {} flow(s); history in {}; Ctrl-C or SIGTERM stops, SIGHUP rescans the flow files",
        scheduler.flow_count(),
        history_path.display()
    );
    scheduler.serve(signals.stop, signals.reload).await;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}
