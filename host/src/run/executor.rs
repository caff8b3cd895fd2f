//! The run loop.
//!
//! Before any step runs, every component is loaded and pre-instantiated and
//! every OAuth2 connection a step uses gets its token ([`super::prepare`]),
//! so a wrong path or a rejected secret fails the run before anything is
//! changed. Then steps run in file order ([`super::step`]). A step's failure
//! fails the run unless the step says `on_error = "continue"`; inside
//! `for_each` ([`super::for_each`]), `continue` records the failed item and
//! goes on with the others, `fail` stops starting new items. A step that
//! runs a while says so every 30 s, with what holds its connections.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::context::{Results, RunContext, RunFields, RunServices, StepFailure};
use super::events::{Observer, RunEvent, Setbacks, Status};
use super::output::Outputs;
use super::{approval, prepare, step};
use crate::connections::tape::Tapes;
use crate::connections::{self, Services};
use crate::engine::Engine;
use crate::flow::{Flow, Step};
use crate::redact::Redactor;
use crate::state::{MemoryStore, StateStore};

/// What must still hold each time a run starts a step or a `for_each`
/// item; for a replica, that it holds the flow's lease. Asked at each
/// start, so a process resumed after a pause finds out it lost the flow
/// before it acts again, not at its next background renewal.
pub trait RunGuard: Send + Sync {
    /// `Err` says why the run must stop: nothing new starts.
    fn may_go_on(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

pub struct RunOptions {
    pub run_id: String,
    pub dry_run: bool,
    /// The run's own folder: artifacts are written here.
    pub output_dir: PathBuf,
    /// Set to stop the run gracefully: the running step (and the `for_each`
    /// items already started) finish, nothing new starts, and the run ends
    /// as interrupted.
    pub cancel: Arc<AtomicBool>,
    /// The run's redactor: the flow's secrets and every token its
    /// connections obtain. Shared, so whoever started the run can keep
    /// secrets out of what it reports about it (a panic's text, say).
    pub redactor: Redactor,
    /// Records the run's exchanges, or answers them from a recording.
    pub tapes: Option<Arc<Tapes>>,
    /// Asked before each step and item starts (see [`RunGuard`]).
    pub guard: Option<Arc<dyn RunGuard>>,
    /// Where approval plans are kept, for steps with `approval`; without
    /// it such a step fails and runs nothing.
    pub approvals: Option<super::approval::ApprovalStore>,
    /// `--only KEY`: in each `for_each` step, only the items with these
    /// keys (compared without case); empty: every item.
    pub only: Vec<String>,
    /// Keep every `for_each` item's output in its step's output (and so in
    /// [`RunOutcome::outputs`]) even when no later step reads them; by
    /// default only their records have them (see [`super::for_each`]).
    pub keep_item_outputs: bool,
    /// Where this run's flow state lives (the store its history goes to,
    /// with the run's fencing number); `None`: the runner's own, in memory.
    pub state: Option<Arc<dyn StateStore>>,
    /// When the run started (RFC 3339): the run context's `started-at`.
    pub started_at: String,
    /// How often a running step says it still works, and what holds its
    /// connections ([`RunEvent::StillWorking`]).
    pub still_working_every: Duration,
}

/// How often a step says it still works, unless the options say otherwise:
/// often enough that a quiet terminal never looks hung for long.
pub const STILL_WORKING_EVERY: Duration = Duration::from_secs(30);

impl RunOptions {
    pub fn new(run_id: String, output_dir: PathBuf, dry_run: bool) -> Self {
        Self {
            run_id,
            dry_run,
            output_dir,
            cancel: Arc::default(),
            redactor: Redactor::default(),
            approvals: None,
            only: Vec::new(),
            keep_item_outputs: false,
            state: None,
            tapes: None,
            guard: None,
            started_at: chrono::Utc::now().to_rfc3339(),
            still_working_every: STILL_WORKING_EVERY,
        }
    }

    /// Whether the run keeps nothing it does: a dry run, or a replay
    /// (answered from a recording). Neither records nor spends an
    /// approval, and neither stores state.
    pub fn rehearsal(&self) -> bool {
        self.dry_run || self.tapes.as_ref().is_some_and(|t| t.replaying())
    }

    pub(super) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Why nothing new may start now, if so: the run's guard says it
    /// must stop (which cancels the run), or it was cancelled.
    pub(super) async fn stopped(&self) -> Option<String> {
        if let Some(guard) = &self.guard
            && let Err(why) = guard.may_go_on().await
        {
            self.cancel.store(true, Ordering::SeqCst);
            return Some(why);
        }
        self.cancelled().then(String::new)
    }
}

#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: Status,
    /// One paragraph naming the step and the cause; already redacted.
    pub error: Option<String>,
    /// What failed that the run went on past.
    pub setbacks: Setbacks,
    pub output_dir: PathBuf,
    pub artifacts: Vec<PathBuf>,
    /// Each step's output, made a tree only when read.
    pub outputs: Outputs,
    pub duration: Duration,
}

/// Runs flows on one engine, with one HTTP client and one token and rate
/// budget per API ([`Services`]) for every run it makes, and one flow
/// state store.
#[derive(Clone)]
pub struct Runner {
    pub engine: Arc<Engine>,
    pub services: Arc<Services>,
    pub state: Arc<dyn StateStore>,
}

impl Runner {
    /// A runner whose flow state lives in memory, as long as the runner
    /// (a run given a store in [`RunOptions::state`] uses that instead).
    pub fn new(engine: Arc<Engine>) -> anyhow::Result<Self> {
        Ok(Self {
            engine,
            services: Arc::new(Services::new(connections::http_client()?)),
            state: Arc::new(MemoryStore::default()),
        })
    }

    /// The same runner, keeping flow state in `state`.
    pub fn with_state(self, state: Arc<dyn StateStore>) -> Self {
        Self { state, ..self }
    }

    pub async fn run(
        &self,
        flow: &Flow,
        options: &RunOptions,
        observer: Arc<dyn Observer>,
    ) -> RunOutcome {
        let started = Instant::now();
        let counted = Arc::new(FailedItems {
            inner: observer,
            failed: AtomicU64::new(0),
        });
        let observer: Arc<dyn Observer> = counted.clone();
        let redactor = options.redactor.clone();
        for secret in &flow.secrets {
            redactor.add(secret.expose().to_string());
        }
        observer.event(&RunEvent::RunStarted {
            run_id: options.run_id.clone(),
            flow: flow.name.clone(),
            dry_run: options.dry_run,
            output_dir: options.output_dir.clone(),
        });
        let mut results = Results::default();
        let result = self
            .run_steps(flow, options, &observer, &redactor, &mut results)
            .await;
        if let Err(failure) = &result {
            skip_the_rest(flow, failure, &results, observer.as_ref());
        }
        let (status, error) = match result {
            Ok(()) => (Status::Succeeded, None),
            Err(StepFailure::Failed(why) | StepFailure::Halted(why)) => {
                (Status::Failed, Some(redactor.redact_error(&why)))
            }
            Err(StepFailure::Interrupted(why)) => {
                (Status::Interrupted, Some(redactor.redact_error(&why)))
            }
        };
        let duration = started.elapsed();
        let setbacks = Setbacks {
            failed_steps: results.failed_and_continued.clone(),
            failed_items: counted.failed.load(Ordering::SeqCst),
        };
        observer.event(&RunEvent::RunFinished {
            status,
            error: error.clone(),
            duration,
            setbacks: setbacks.clone(),
        });
        RunOutcome {
            run_id: options.run_id.clone(),
            status,
            error,
            setbacks,
            output_dir: options.output_dir.clone(),
            artifacts: results.artifacts,
            outputs: results.outputs.into_iter().fold(
                Outputs::default(),
                |mut outputs, (step, output)| {
                    outputs.insert(step, output);
                    outputs
                },
            ),
            duration,
        }
    }

    async fn run_steps(
        &self,
        flow: &Flow,
        options: &RunOptions,
        observer: &Arc<dyn Observer>,
        redactor: &Redactor,
        results: &mut Results,
    ) -> Result<(), StepFailure> {
        // `sluice run` checked this before it took the flow's lease; a
        // `sluice serve` run checks it here.
        prepare::output_folder(flow, &options.output_dir).map_err(|why| {
            StepFailure::Failed(format!("flow `{}`: {why}; no step was run", flow.name))
        })?;
        let prepared = prepare::components(&self.engine, flow)?;
        // Compiling may take seconds: a stop asked for meanwhile sends
        // nothing, not even for a token.
        if options.cancelled() {
            return Err(StepFailure::Interrupted(
                "the run was stopped before its first step, while its components were prepared"
                    .into(),
            ));
        }
        let tapes = options.tapes.as_deref();
        let connections = connections::for_flow(flow, &self.services, redactor, tapes);
        prepare::check_credentials(flow, &connections).await?;
        let fields = RunFields {
            id: options.run_id.clone(),
            dry_run: options.dry_run,
            started_at: options.started_at.clone(),
            flow: flow.name.clone(),
            output_dir: options.output_dir.display().to_string(),
            approvals: approval::open_keys(options.approvals.as_ref(), flow).await?,
            earlier_unfinished: super::earlier::unfinished(
                options.approvals.as_ref().map(|a| &a.store),
                &flow.name,
                &options.run_id,
            )
            .await?,
            only: options.only.clone(),
        };
        let services = RunServices {
            observer: observer.clone(),
            redactor: redactor.clone(),
            connections,
            state: options.state.clone().unwrap_or_else(|| self.state.clone()),
        };
        let ctx = RunContext::new(&self.engine, flow, options, services, fields);
        for (step, prepared) in flow.steps.iter().zip(prepared) {
            if let Some(why) = ctx.options.stopped().await {
                let why = if why.is_empty() {
                    why
                } else {
                    format!(": {why}")
                };
                return Err(StepFailure::Interrupted(format!(
                    "the run was stopped before step `{}`{why}",
                    step.id
                )));
            }
            with_news(&ctx, step, step::run(&ctx, step, &prepared, results)).await?;
        }
        Ok(())
    }
}

/// Runs a step's `work`, saying every [`RunOptions::still_working_every`]
/// that it still works and what holds its connections now.
async fn with_news<T>(ctx: &RunContext<'_>, step: &Step, work: impl Future<Output = T>) -> T {
    let every = ctx.options.still_working_every;
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval_at(started + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => ctx.emit(&RunEvent::StillWorking {
                step: step.id.clone(),
                elapsed: started.elapsed(),
                connections: busy_connections(ctx, step),
            }),
        }
    }
}

/// Each of `step`'s connections that has requests in flight or held, with
/// what holds it, in words.
fn busy_connections(ctx: &RunContext<'_>, step: &Step) -> BTreeMap<String, String> {
    step.connections
        .iter()
        .filter_map(|grant| {
            let connection = ctx.connections.get(&grant.connection)?;
            Some((grant.connection.clone(), connection.busy().words()?))
        })
        .collect()
}

/// Passes a run's events on, counting the `for_each` items that failed:
/// those of a step that went on without them, and of one that failed or
/// was stopped, which has no output to count them in.
struct FailedItems {
    inner: Arc<dyn Observer>,
    failed: AtomicU64,
}

impl Observer for FailedItems {
    fn event(&self, event: &RunEvent) {
        if let RunEvent::ItemFinished {
            status: Status::Failed,
            ..
        } = event
        {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.event(event);
    }
}

/// Records the steps a run that stopped early never reached as skipped,
/// saying why, so its record shows the whole flow.
fn skip_the_rest(flow: &Flow, failure: &StepFailure, results: &Results, observer: &dyn Observer) {
    let why = match failure {
        StepFailure::Interrupted(_) => "the run was interrupted",
        StepFailure::Failed(_) | StepFailure::Halted(_) if results.finished.is_empty() => {
            "the run failed before its first step"
        }
        StepFailure::Failed(_) | StepFailure::Halted(_) => "an earlier step failed",
    };
    for step in flow
        .steps
        .iter()
        .filter(|s| !results.finished.contains(&s.id))
    {
        observer.event(&RunEvent::StepFinished {
            step: step.id.clone(),
            component: step.uses.to_string(),
            status: Status::Skipped,
            output: None,
            error: Some(why.to_string()),
            duration: Duration::ZERO,
            connections: BTreeMap::new(),
            attempts: None,
            memory: None,
        });
    }
}
