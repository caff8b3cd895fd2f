//! `sluice run FILE`: validate, run, show progress, say where the report is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::progress::{Mode, Progress};
use crate::engine::{Engine, EngineConfig};
use crate::run::recorder::{HistoryWriter, Recorder};
use crate::run::{Fanout, Observer, RunOptions, RunOutcome, Runner, Status};
use crate::scheduler::Shutdown;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The flow file
    pub file: PathBuf,
    /// Override a param: `--param name=value` (a JSON value keeps its type)
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Perform reads but no writes; components report what they would do
    #[arg(long)]
    pub dry_run: bool,
    /// Print nothing but errors
    #[arg(long, conflicts_with = "json")]
    pub quiet: bool,
    /// Print one JSON object per event on stdout
    #[arg(long)]
    pub json: bool,
    /// Also show components' debug and info log lines
    #[arg(long, short)]
    pub verbose: bool,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not NAME=VALUE")),
    }
}

pub fn engine_for(data_dir: &Path) -> anyhow::Result<Arc<Engine>> {
    Engine::new(EngineConfig {
        cache_dir: Some(data_dir.join("cache")),
        ..EngineConfig::default()
    })
}

/// What watches a run started from the command line: the progress display
/// and the run history. A history that cannot be opened is reported and the
/// run goes on without it: losing a record must not stop the work. The
/// history is written on a thread of its own; dropping the observer (when
/// the run is over) waits for the last writes.
pub fn watch_and_record(
    data_dir: &Path,
    progress: Progress,
    flow_file: &str,
    trigger: &str,
) -> Arc<dyn Observer> {
    let progress: Arc<dyn Observer> = Arc::new(progress);
    let writer = sluice_store::History::open(&sluice_store::path_in(data_dir))
        .map_err(|e| e.to_string())
        .and_then(|history| {
            HistoryWriter::start(history)
                .map_err(|e| format!("cannot start the run history's writer: {e}"))
        });
    match writer {
        Ok(writer) => {
            let recorder: Arc<dyn Observer> = Arc::new(Recorder::new(writer, flow_file, trigger));
            Arc::new(Fanout(vec![progress, recorder]))
        }
        Err(e) => {
            eprintln!(
                "warning: {}; this run is not recorded",
                super::terminal::line(&e)
            );
            progress
        }
    }
}

pub async fn run(args: RunArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(flow) = super::load_flow(&args.file, &args.params) else {
        return Ok(ExitCode::from(2));
    };
    let mode = if args.json {
        Mode::Json
    } else if args.quiet {
        Mode::Quiet
    } else {
        Mode::Human
    };
    let observer = watch_and_record(
        data_dir,
        Progress::new(mode, args.verbose),
        &args.file.display().to_string(),
        "manual",
    );
    let runner = Runner::new(engine_for(data_dir)?)?;
    let run_id = crate::run::new_run_id();
    let options = RunOptions::new(
        run_id.clone(),
        sluice_store::run_dir(data_dir, &run_id),
        args.dry_run,
    );
    stop_gracefully_on_signal(options.cancel.clone(), mode)?;
    let outcome = runner.run(&flow, &options, observer).await;
    Ok(finish(&outcome, mode))
}

/// Ctrl-C or SIGTERM stops a run the way `serve` does: the running step
/// (and `for_each` items already started) finish, nothing new starts, the
/// run is recorded as interrupted and its history written; a second signal
/// leaves at once.
fn stop_gracefully_on_signal(
    cancel: Arc<std::sync::atomic::AtomicBool>,
    mode: Mode,
) -> anyhow::Result<()> {
    let mut stop = super::signals::watch(false)?.stop;
    tokio::spawn(async move {
        while stop.changed().await.is_ok() {
            let level = *stop.borrow_and_update();
            match level {
                Shutdown::No => {}
                Shutdown::Graceful => {
                    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                    if mode != Mode::Json {
                        eprintln!(
                            "stopping: the running step finishes and nothing new starts; Ctrl-C again stops at once"
                        );
                    }
                }
                Shutdown::Now => {
                    eprintln!("stopping without waiting: a second stop signal");
                    std::process::exit(130);
                }
            }
        }
    });
    Ok(())
}

/// Prints the outcome's last words and picks the exit status.
pub fn finish(outcome: &RunOutcome, mode: Mode) -> ExitCode {
    match outcome.status {
        Status::Succeeded => {
            if mode == Mode::Human {
                for path in &outcome.artifacts {
                    eprintln!("  report: {}", shown(path));
                }
            }
            ExitCode::SUCCESS
        }
        _ => {
            if mode != Mode::Json {
                // One paragraph, whatever the component or service wrote.
                eprintln!(
                    "error: {}",
                    super::terminal::line(outcome.error.as_deref().unwrap_or("the run failed"))
                );
                for path in &outcome.artifacts {
                    eprintln!("  partial report: {}", shown(path));
                }
            }
            ExitCode::from(1)
        }
    }
}

/// A path as printed: its characters escaped like any other text.
fn shown(path: &Path) -> String {
    super::terminal::line(&path.display().to_string()).into_owned()
}
