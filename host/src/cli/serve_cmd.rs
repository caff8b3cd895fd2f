//! `sluice serve DIR_OR_FILES…`: the timer host, wired to the run history
//! and to SIGINT/SIGTERM (stop gracefully) and SIGHUP (reload).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use sluice_history::{History, NewRun};

use super::progress::{Mode, Progress};
use super::run_cmd::engine_for;
use crate::flow::Flow;
use crate::run::recorder::Recorder;
use crate::run::{Fanout, Observer, RunOptions, Runner};
use crate::scheduler::{Host, Scheduler, sources};

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
    history: Arc<History>,
    data_dir: PathBuf,
    verbose: bool,
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
            self.history.clone(),
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
        let file = flow.source.path.display().to_string();
        let run = NewRun {
            id: &id,
            flow: &flow.name,
            flow_file: &file,
            trigger: "schedule",
            dry_run: false,
            output_dir: "",
        };
        if let Err(e) = self.history.record_skipped(&run, reason) {
            eprintln!("warning: could not record the skipped firing: {e}");
        }
    }

    fn record_interrupted(&self, run_id: &str, reason: &str) {
        if let Err(e) = self.history.mark_interrupted(run_id, reason) {
            eprintln!("warning: could not record run {run_id} as interrupted: {e}");
        }
    }

    fn output_dir(&self, run_id: &str) -> PathBuf {
        self.data_dir.join("runs").join(run_id)
    }

    fn say(&self, line: &str) {
        eprintln!("{line}");
    }
}

pub async fn serve(args: ServeArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let files = sources::expand(&args.paths).map_err(anyhow::Error::msg)?;
    let history = Arc::new(History::open(&sluice_history::path_in(data_dir))?);
    let host = Arc::new(ServeHost {
        history,
        data_dir: data_dir.to_path_buf(),
        verbose: args.verbose,
    });
    let runner = Runner::new(engine_for(data_dir)?)?;
    let mut scheduler = Scheduler::new(host, runner, files);
    scheduler.grace = args.grace;
    if scheduler.flow_count() == 0 {
        eprintln!("error: no valid scheduled flow to serve");
        return Ok(ExitCode::from(2));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (reload_tx, reload_rx) = tokio::sync::watch::channel(0u64);
    spawn_signal_handlers(stop_tx, reload_tx)?;
    eprintln!(
        "serving {} flow(s); history in {}; Ctrl-C or SIGTERM stops",
        scheduler.flow_count(),
        sluice_history::path_in(data_dir).display()
    );
    scheduler.serve(stop_rx, reload_rx).await;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn spawn_signal_handlers(
    stop: tokio::sync::watch::Sender<bool>,
    reload: tokio::sync::watch::Sender<u64>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { let _ = stop.send(true); }
                _ = int.recv() => { let _ = stop.send(true); }
                _ = hup.recv() => { reload.send_modify(|n| *n += 1); }
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn spawn_signal_handlers(
    stop: tokio::sync::watch::Sender<bool>,
    _reload: tokio::sync::watch::Sender<u64>,
) -> anyhow::Result<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop.send(true);
        }
    });
    Ok(())
}
