//! `sluice serve DIR_OR_FILES…`: the timer host, wired to the run history
//! and to SIGINT/SIGTERM (stop gracefully; a second one stops at once) and
//! SIGHUP (rescan the flow files now). What it has to say goes to the log
//! ([`super::serve_log`]): text or JSON lines on stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Args;
use sluice_store::{HistoryWrite, Location, NewRun, RunRef, RunStatus, Store, Trigger};

use super::log_lines::LogFormat;
use super::run_cmd::engine_for;
use super::serve_log::{self, RunLog};
use crate::flow::Flow;
use crate::run::recorder::{HistoryWriter, RecordAs, Recorder};
use crate::run::{Fanout, Observer, RunGuard, RunOptions, Runner};
use crate::scheduler::replicas::Replica;
use crate::scheduler::{Host, Scheduler, ServeEvent};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Flow files, or directories whose *.toml flows are served
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// How long running steps may take to finish after SIGINT/SIGTERM
    #[arg(long, default_value = "30s", value_parser = super::parse_span)]
    pub grace: Duration,
    /// Also log each run's steps, failed items and component log lines
    #[arg(long, short)]
    pub verbose: bool,
    /// The name this replica records its runs under [default: the host name]
    #[arg(long, env = "SLUICE_REPLICA", default_value_t = sluice_store::process::host_name(), value_parser = super::parse_replica)]
    pub replica: String,
    /// How the log on stderr reads: `text` for a person, `json` (one
    /// object per line: time, level, event, flow, run_id, step, error,
    /// message…) for a log shipper
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How long a flow's lease lasts unless renewed: a replica that dies
    /// mid-run has its run taken over (recorded interrupted) after about this
    #[arg(long, env = "SLUICE_LEASE", default_value = "30s", value_parser = super::parse_lease)]
    pub lease: Duration,
    /// Also serve the web console on this address (e.g. 127.0.0.1:8700 or
    /// localhost:8700)
    #[arg(long, value_name = "ADDR")]
    pub http: Option<crate::console::listen::HttpAddr>,
    #[command(flatten)]
    pub console: super::console_cmd::HttpArgs,
}

struct ServeHost {
    writer: Arc<HistoryWriter>,
    replica: Arc<Replica>,
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
        super::with_context(&self.data_dir, &[], |ctx| {
            crate::flow::load(path, ctx, &crate::flow::ProcessEnv)
        })
        .map_err(|e| e.to_string())
    }

    fn observer(
        &self,
        flow: &Flow,
        run_id: &str,
        trigger: &str,
        _options: &RunOptions,
    ) -> Arc<dyn Observer> {
        let record_as = RecordAs {
            flow_file: super::recorded_path(&flow.source.path),
            trigger: trigger.parse().unwrap_or(Trigger::Schedule),
            replica: Some(self.replica.name.clone()),
            fence: self.replica.fence_of(run_id),
        };
        let recorder: Arc<dyn Observer> = Arc::new(Recorder::new(self.writer.clone(), record_as));
        if !self.verbose {
            return recorder;
        }
        Arc::new(Fanout(vec![RunLog::new(&flow.name, run_id), recorder]))
    }

    fn approvals(&self, flow: &Flow, run_id: &str) -> Option<crate::run::ApprovalStore> {
        Some(crate::run::ApprovalStore {
            store: self.writer.store().clone(),
            flow_file: super::recorded_path(&flow.source.path),
            // A scheduled run has no `--param` overrides.
            params: Vec::new(),
            fence: self.replica.fence_of(run_id),
        })
    }

    fn state(&self, _flow: &Flow, run_id: &str) -> Option<Arc<dyn crate::state::StateStore>> {
        let store = self.writer.store().clone();
        let fence = self.replica.fence_of(run_id);
        let state = crate::state::DurableStore::new(store, fence).recorded_by(self.writer.clone());
        Some(Arc::new(state))
    }

    async fn claim(&self, flow: &Flow, at: chrono::DateTime<chrono::Utc>, run_id: &str) -> bool {
        self.replica.claim(&flow.name, at, run_id).await
    }

    async fn begin(
        &self,
        flow: &Flow,
        run_id: &str,
        cancel: Arc<AtomicBool>,
    ) -> Result<Option<Arc<dyn RunGuard>>, crate::scheduler::Busy> {
        self.replica
            .begin(&flow.name, run_id, cancel)
            .await
            .map(|(_, guard)| Some(guard))
    }

    async fn end(&self, run_id: &str) {
        // The run's record first: once the lease is free, another replica
        // may take it, and a write still queued would then be refused.
        self.writer.flush().await;
        if !self.writer.store().still_in_place() {
            serve_log::emit(&ServeEvent::Warning {
                message: format!(
                    "run {run_id} was recorded in a history file that is no longer at {} (deleted, moved or replaced since this process opened it): no other process reads it; restart sluice serve to use the one there now",
                    self.writer.store().location()
                ),
            });
        }
        self.replica.end(run_id).await;
    }

    fn record_skipped(&self, flow: &Flow, run_id: &str, reason: &str) {
        let id = run_id.to_string();
        let run = NewRun {
            id: id.clone(),
            flow: flow.name.clone(),
            flow_file: super::recorded_path(&flow.source.path),
            trigger: Trigger::Schedule,
            dry_run: false,
            output_dir: String::new(),
            replica: Some(self.replica.name.clone()),
            started_at: chrono::Utc::now(),
        };
        self.writer.write(
            &RunRef::unfenced(id, &flow.name),
            vec![HistoryWrite::Skipped {
                run,
                reason: reason.to_string(),
            }],
        );
    }

    fn record_interrupted(&self, flow: &Flow, run_id: &str, reason: &str) {
        self.end_unfinished(flow, run_id, RunStatus::Interrupted, reason);
    }

    fn record_failed(&self, flow: &Flow, run_id: &str, reason: &str) {
        self.end_unfinished(flow, run_id, RunStatus::Failed, reason);
    }

    fn flush(&self) -> impl Future<Output = ()> + Send {
        let (writer, replica) = (self.writer.clone(), self.replica.clone());
        async move {
            writer.flush().await;
            replica.end_all().await;
        }
    }

    fn output_dir(&self, run_id: &str) -> PathBuf {
        sluice_store::run_dir(&self.data_dir, run_id)
    }

    fn event(&self, event: ServeEvent) {
        serve_log::emit(&event);
    }
}

impl ServeHost {
    /// Ends a run that will not finish, recording its unrecorded steps as
    /// skipped so the record shows the whole flow.
    fn end_unfinished(&self, flow: &Flow, run_id: &str, status: RunStatus, reason: &str) {
        let why = match status {
            RunStatus::Failed => "the run stopped before this step",
            _ => "the run was interrupted",
        };
        let run = RunRef {
            id: run_id.to_string(),
            flow: flow.name.clone(),
            fence: self.replica.fence_of(run_id),
        };
        let at = chrono::Utc::now();
        self.writer.write(
            &run,
            vec![
                HistoryWrite::EndUnfinished {
                    status,
                    reason: reason.to_string(),
                    at,
                },
                HistoryWrite::SkipUnrecorded {
                    steps: steps_of(flow),
                    why: why.to_string(),
                    at,
                },
            ],
        );
    }
}

/// Opens the store and records as interrupted the runs an earlier process
/// on this host left `running` when it died: this host is the one
/// long-lived writer here, so its start is when they are settled for good.
async fn open_store(database: &Location) -> anyhow::Result<Store> {
    let started = chrono::Utc::now();
    let store = Store::open(database).await?;
    match store.recover_stale_runs(started).await {
        Ok(0) => {}
        Ok(runs) => serve_log::emit(&ServeEvent::Recovered { runs }),
        Err(e) => serve_log::emit(&ServeEvent::RecoveryFailed {
            error: e.to_string(),
        }),
    }
    Ok(store)
}

pub async fn serve(
    args: ServeArgs,
    data_dir: &Path,
    database: &Location,
) -> anyhow::Result<ExitCode> {
    super::log_lines::init(args.log_format)?;
    // From here on, every word goes to the log, in its format: a log
    // shipper reads JSON lines only.
    crate::engine::cache::tell_warnings_with(|message| {
        serve_log::emit(&ServeEvent::Warning { message })
    });
    match serve_logged(args, data_dir, database).await {
        Ok(code) => Ok(code),
        Err(e) => {
            fatal(sluice_store::error::with_causes(e.as_ref()), None);
            Ok(ExitCode::from(1))
        }
    }
}

/// Says what a stop signal does while the flows load (nothing is served
/// once they have), and leaves at once on a second.
async fn stop_while_loading(mut stop: tokio::sync::watch::Receiver<crate::scheduler::Shutdown>) {
    use crate::scheduler::Shutdown;
    while stop.changed().await.is_ok() {
        match *stop.borrow_and_update() {
            Shutdown::No => {}
            Shutdown::Graceful => serve_log::emit(&ServeEvent::Warning {
                message: "stopping: nothing is served once the flows have loaded; a second Ctrl-C or SIGTERM stops at once".into(),
            }),
            Shutdown::Now => {
                serve_log::emit(&ServeEvent::Stopped);
                std::process::exit(130);
            }
        }
    }
}

/// Logs why the host cannot start or go on.
fn fatal(error: String, detail: Option<String>) {
    serve_log::emit(&ServeEvent::Fatal { error, detail });
}

async fn serve_logged(
    args: ServeArgs,
    data_dir: &Path,
    database: &Location,
) -> anyhow::Result<ExitCode> {
    // A console that may not listen where asked stops everything before
    // a flow is loaded.
    let console = match &args.http {
        Some(addr) => match super::console_cmd::options(addr, &args.console, database).await {
            Ok(options) => Some(options),
            Err(e) => {
                fatal(e.to_string(), None);
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    // Watched before the flows load (compiling their components takes a
    // minute or so on a first start): a stop asked for then is kept, and
    // nothing is served.
    let signals = super::signals::watch(super::signals::OnHangup::Reload)?;
    let loading = tokio::spawn(stop_while_loading(signals.stop.clone()));
    let store = open_store(database).await?;
    let say: Arc<dyn Fn(String) + Send + Sync> =
        Arc::new(|message: String| serve_log::emit(&ServeEvent::Replica { message }));
    let replica = Arc::new(Replica::new(
        store.clone(),
        args.replica.clone(),
        args.lease,
        say.clone(),
    ));
    let sweep = replica.sweep();
    let host = Arc::new(ServeHost {
        // A run's lost history writes are told in the log, in its format.
        writer: HistoryWriter::start_telling(store, say),
        replica,
        data_dir: data_dir.to_path_buf(),
        verbose: args.verbose,
    });
    let engine = engine_for(data_dir)?;
    let runner = Runner::new(engine.clone())?;
    serve_log::emit(&ServeEvent::Loading {
        paths: args.paths.iter().map(|p| p.display().to_string()).collect(),
    });
    // Served folders are rescanned, so one with no valid scheduled flow
    // yet (a fresh mount, files being fixed) is waited on, not a reason
    // to exit: under a service manager that would be a crash loop. Files
    // named alone that are all refused have nothing to wait for.
    let folders = args.paths.iter().any(|p| p.is_dir());
    let mut scheduler = match Scheduler::new(host, runner, args.paths) {
        Ok(scheduler) => scheduler,
        Err(problems) => {
            fatal(
                "none of the flow files given can be served".into(),
                Some(problems.to_string()),
            );
            return Ok(ExitCode::from(2));
        }
    };
    // Sized for the flows found now; a flow added later whose instances
    // find the pool full gets them on demand.
    engine.size_pool(crate::engine::PoolSize::for_concurrency(
        scheduler.concurrency(),
    ));
    scheduler.grace = args.grace;
    if scheduler.flow_count() == 0 && !folders {
        fatal("no valid scheduled flow to serve".into(), None);
        return Ok(ExitCode::from(2));
    }
    let console = match console {
        Some(options) => {
            let control = scheduler.control();
            match super::console_cmd::start_quietly(options, Some(control), Vec::new()).await? {
                Ok(running) => {
                    serve_log::emit(&ServeEvent::ConsoleListening {
                        url: running.url(),
                        note: running.where_to_open(),
                    });
                    Some(running)
                }
                Err(refused) => {
                    fatal(refused, None);
                    return Ok(ExitCode::from(2));
                }
            }
        }
        None => None,
    };
    loading.abort();
    if *signals.stop.borrow() != crate::scheduler::Shutdown::No {
        sweep.abort();
        if let Some(console) = console {
            console.stop().await;
        }
        serve_log::emit(&ServeEvent::Stopped);
        return Ok(ExitCode::SUCCESS);
    }
    serve_log::emit(&ServeEvent::Serving {
        flows: scheduler.flow_count(),
        replica: args.replica.clone(),
        lease: args.lease,
        history: database.to_string(),
    });
    scheduler.serve(signals.stop, signals.reload).await;
    sweep.abort();
    if let Some(console) = console {
        console.stop().await;
    }
    serve_log::emit(&ServeEvent::Stopped);
    Ok(ExitCode::SUCCESS)
}
