//! The run loop.
//!
//! Before any step runs, every component is loaded and pre-instantiated and
//! every OAuth2 connection a step uses gets its token, so a wrong path or a
//! rejected secret fails the run before anything is changed. Then steps run
//! in file order. A step's failure fails the run unless the step says
//! `on_error = "continue"`; inside `for_each`, `continue` records the failed
//! item and goes on with the others, `fail` stops starting new items.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::events::{Observer, RunEvent, Status};
use crate::connections::{self, Connections};
use crate::engine::{CallError, Engine, LogLevel, Prepared, StepContext};
use crate::flow::model::{ComponentRef, OnError};
use crate::flow::resolve::{Scope, truthy, walk};
use crate::flow::{Flow, Step};
use crate::redact::Redactor;

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
}

impl RunOptions {
    pub fn new(run_id: String, output_dir: PathBuf, dry_run: bool) -> Self {
        Self {
            run_id,
            dry_run,
            output_dir,
            cancel: Arc::default(),
            redactor: Redactor::default(),
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: Status,
    /// One paragraph naming the step and the cause; already redacted.
    pub error: Option<String>,
    pub output_dir: PathBuf,
    pub artifacts: Vec<PathBuf>,
    pub outputs: BTreeMap<String, Value>,
    pub duration: Duration,
}

/// Runs flows on one engine with one HTTP client.
#[derive(Clone)]
pub struct Runner {
    pub engine: Arc<Engine>,
    pub http: reqwest::Client,
}

/// Why a run stopped early, already phrased for people.
enum StepFailure {
    Failed(String),
    Interrupted(String),
}

impl Runner {
    pub fn new(engine: Arc<Engine>) -> anyhow::Result<Self> {
        Ok(Self {
            engine,
            http: connections::http_client()?,
        })
    }

    pub async fn run(
        &self,
        flow: &Flow,
        options: &RunOptions,
        observer: Arc<dyn Observer>,
    ) -> RunOutcome {
        let started = Instant::now();
        let redactor = options.redactor.clone();
        for secret in &flow.secrets {
            redactor.add(secret.clone());
        }
        observer.event(&RunEvent::RunStarted {
            run_id: options.run_id.clone(),
            flow: flow.name.clone(),
            dry_run: options.dry_run,
            output_dir: options.output_dir.clone(),
        });
        let mut run = RunState {
            outputs: BTreeMap::new(),
            artifacts: Vec::new(),
            finished: HashSet::new(),
            run_value: json!({
                "id": options.run_id,
                "dry_run": options.dry_run,
                "started_at": chrono::Utc::now().to_rfc3339(),
                "flow": flow.name,
                "output_dir": options.output_dir.display().to_string(),
            }),
        };
        let result = self
            .run_steps(flow, options, &observer, &redactor, &mut run)
            .await;
        if let Err(failure) = &result {
            skip_the_rest(flow, failure, &run, &observer);
        }
        let (status, error) = match result {
            Ok(()) => (Status::Succeeded, None),
            Err(StepFailure::Failed(why)) => (Status::Failed, Some(redactor.redact(&why))),
            Err(StepFailure::Interrupted(why)) => {
                (Status::Interrupted, Some(redactor.redact(&why)))
            }
        };
        let duration = started.elapsed();
        observer.event(&RunEvent::RunFinished {
            status,
            error: error.clone(),
            duration,
        });
        RunOutcome {
            run_id: options.run_id.clone(),
            status,
            error,
            output_dir: options.output_dir.clone(),
            artifacts: run.artifacts,
            outputs: run.outputs,
            duration,
        }
    }

    async fn run_steps(
        &self,
        flow: &Flow,
        options: &RunOptions,
        observer: &Arc<dyn Observer>,
        redactor: &Redactor,
        run: &mut RunState,
    ) -> Result<(), StepFailure> {
        let prepared = self.prepare_components(flow)?;
        let connections = connections::for_flow(flow, &self.http, redactor);
        check_credentials(flow, &connections).await?;
        for (step, prepared) in flow.steps.iter().zip(prepared) {
            if options.cancelled() {
                return Err(StepFailure::Interrupted(format!(
                    "the run was stopped before step `{}`",
                    step.id
                )));
            }
            let scope = Scope {
                params: Some(&flow.params),
                env: Some(&flow.env),
                steps: Some(&run.outputs),
                item: None,
                run: Some(&run.run_value),
            };
            let component = step.uses.to_string();
            let label = format!("step `{}` ({component})", step.id);
            let when = step
                .when
                .iter()
                .map(|w| scope.resolve(w))
                .collect::<Result<Vec<_>, _>>();
            match when {
                Ok(values) if values.iter().all(truthy) => {}
                Ok(_) => {
                    observer.event(&RunEvent::StepFinished {
                        step: step.id.clone(),
                        component,
                        status: Status::Skipped,
                        output: None,
                        error: Some("its `when` is false".into()),
                        duration: Duration::ZERO,
                        connections: BTreeMap::new(),
                    });
                    run.finished.insert(step.id.clone());
                    run.outputs.insert(step.id.clone(), Value::Null);
                    continue;
                }
                Err(e) => {
                    let why = redactor
                        .redact(&format!("{label}: its `when` could not be evaluated: {e}"));
                    observer.event(&RunEvent::StepFinished {
                        step: step.id.clone(),
                        component,
                        status: Status::Failed,
                        output: None,
                        error: Some(why.clone()),
                        duration: Duration::ZERO,
                        connections: BTreeMap::new(),
                    });
                    run.finished.insert(step.id.clone());
                    return Err(StepFailure::Failed(why));
                }
            }
            let granted = step
                .connections
                .iter()
                .filter_map(|c| connections.get(c).map(|conn| (c.clone(), conn.clone())))
                .collect();
            let log_observer = observer.clone();
            let log_redactor = redactor.clone();
            let log_step = step.id.clone();
            let context = Arc::new(StepContext {
                step_id: step.id.clone(),
                component: component.clone(),
                granted,
                dry_run: options.dry_run,
                log: Arc::new(move |level: LogLevel, message: &str| {
                    log_observer.event(&RunEvent::Log {
                        step: log_step.clone(),
                        level,
                        message: log_redactor
                            .redact(message)
                            .chars()
                            .take(MAX_LOG_LINE)
                            .collect(),
                    });
                }),
                stats: Mutex::new(BTreeMap::new()),
            });
            let started = Instant::now();
            let result = match &step.for_each {
                None => {
                    self.run_single(step, &prepared, &context, &scope, observer, redactor)
                        .await
                }
                Some(list) => {
                    self.run_for_each(
                        step,
                        list,
                        &prepared,
                        &context,
                        &scope,
                        observer,
                        redactor,
                        &options.cancel,
                    )
                    .await
                }
            };
            let (status, output, error) = match result {
                Ok(output) => (Status::Succeeded, Some(output), None),
                Err(StepFailure::Failed(why)) => (
                    Status::Failed,
                    None,
                    Some(redactor.redact(&format!("{label} failed: {why}"))),
                ),
                Err(StepFailure::Interrupted(why)) => (
                    Status::Interrupted,
                    None,
                    Some(redactor.redact(&format!("{label}: {why}"))),
                ),
            };
            observer.event(&RunEvent::StepFinished {
                step: step.id.clone(),
                component,
                status,
                output: output.as_ref().map(|o| redactor.redact_json(o)),
                error: error.clone(),
                duration: started.elapsed(),
                connections: context.stats(),
            });
            run.finished.insert(step.id.clone());
            match (output, error) {
                (Some(output), _) => {
                    self.write_artifacts(step, &output, options, observer, redactor, run)?;
                    run.outputs.insert(step.id.clone(), output);
                }
                (None, error) if status == Status::Interrupted => {
                    return Err(StepFailure::Interrupted(error.unwrap_or_default()));
                }
                (None, error) => {
                    if step.on_error == OnError::Continue {
                        run.outputs.insert(step.id.clone(), Value::Null);
                    } else {
                        return Err(StepFailure::Failed(
                            error.unwrap_or_else(|| format!("{label} failed")),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn prepare_components(&self, flow: &Flow) -> Result<Vec<Arc<Prepared>>, StepFailure> {
        flow.steps
            .iter()
            .map(|step| {
                let fail = |why: String| {
                    StepFailure::Failed(format!(
                        "step `{}` cannot load component `{}`: {why}",
                        step.id, step.uses
                    ))
                };
                let bytes: std::borrow::Cow<'static, [u8]> = match &step.uses {
                    ComponentRef::Builtin(name) => match sluice_builtins::find(name) {
                        Some(b) => b.wasm.into(),
                        None => return Err(fail("no such built-in".into())),
                    },
                    ComponentRef::File(path) => {
                        std::fs::read(path).map_err(|e| fail(e.to_string()))?.into()
                    }
                };
                self.engine
                    .prepare(&bytes)
                    .map_err(|e| fail(format!("{e:#}")))
            })
            .collect()
    }

    async fn run_single(
        &self,
        step: &Step,
        prepared: &Arc<Prepared>,
        context: &Arc<StepContext>,
        scope: &Scope<'_>,
        observer: &Arc<dyn Observer>,
        redactor: &Redactor,
    ) -> Result<Value, StepFailure> {
        let input = resolve_input(step, scope)?;
        observer.event(&RunEvent::StepStarted {
            step: step.id.clone(),
            component: context.component.clone(),
            input: redactor.redact_json(&input),
            items: None,
        });
        call(
            &self.engine,
            prepared,
            context.clone(),
            &input,
            step.timeout,
        )
        .await
        .map_err(|e| StepFailure::Failed(describe(&e)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_for_each(
        &self,
        step: &Step,
        list: &crate::flow::template::Template,
        prepared: &Arc<Prepared>,
        context: &Arc<StepContext>,
        scope: &Scope<'_>,
        observer: &Arc<dyn Observer>,
        redactor: &Redactor,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Value, StepFailure> {
        let items = match scope.resolve(list) {
            Ok(Value::Array(items)) => items,
            Ok(Value::Null) => Vec::new(),
            Ok(other) => {
                return Err(StepFailure::Failed(format!(
                    "`for_each` must be a list, but it is {}",
                    match other {
                        Value::Object(_) => "an object",
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        _ => "a boolean",
                    }
                )));
            }
            Err(e) => {
                return Err(StepFailure::Failed(format!(
                    "`for_each` could not be resolved: {e}"
                )));
            }
        };
        let total = items.len();
        // Inputs are resolved up front: a bad reference fails the step before any item runs.
        let inputs = items
            .iter()
            .map(|item| {
                resolve_input(
                    step,
                    &Scope {
                        item: Some(item),
                        ..*scope
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        observer.event(&RunEvent::StepStarted {
            step: step.id.clone(),
            component: context.component.clone(),
            input: redactor.redact_json(&json!({ "items": total })),
            items: Some(total),
        });
        let semaphore = Arc::new(Semaphore::new(step.concurrency));
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, (item, input)) in items.into_iter().zip(inputs).enumerate() {
            let (engine, prepared, context, observer, redactor) = (
                self.engine.clone(),
                prepared.clone(),
                context.clone(),
                observer.clone(),
                redactor.clone(),
            );
            let (semaphore, stop, done, failed, cancel) = (
                semaphore.clone(),
                stop.clone(),
                done.clone(),
                failed.clone(),
                cancel.clone(),
            );
            let (step_id, timeout, on_error) = (step.id.clone(), step.timeout, step.on_error);
            tasks.spawn(async move {
                let Ok(_permit) = semaphore.acquire_owned().await else {
                    return (index, item, None);
                };
                if stop.load(Ordering::SeqCst) || cancel.load(Ordering::SeqCst) {
                    return (index, item, None);
                }
                let started = Instant::now();
                // The item counts its own requests, then adds them to the step's.
                let own = Arc::new(context.for_item());
                let result = call(&engine, &prepared, own.clone(), &input, timeout).await;
                let item_stats = own.stats();
                for (name, stats) in &item_stats {
                    context.record(name, stats);
                }
                if result.is_err() {
                    failed.fetch_add(1, Ordering::SeqCst);
                    if on_error == OnError::Fail {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
                let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                let (status, output, error) = match &result {
                    Ok(v) => (Status::Succeeded, Some(redactor.redact_json(v)), None),
                    Err(e) => (Status::Failed, None, Some(redactor.redact(&describe(e)))),
                };
                observer.event(&RunEvent::ItemFinished {
                    step: step_id,
                    index,
                    status,
                    input: redactor.redact_json(&input),
                    output,
                    error,
                    duration: started.elapsed(),
                    done: finished,
                    total,
                    failed: failed.load(Ordering::SeqCst),
                    connections: item_stats,
                });
                (index, item, Some(result))
            });
        }
        let mut results: Vec<ItemOutcome> = Vec::with_capacity(total);
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(r) => results.push(r),
                Err(e) => {
                    return Err(StepFailure::Failed(format!(
                        "an item's task ended unexpectedly: {e}"
                    )));
                }
            }
        }
        results.sort_by_key(|(i, _, _)| *i);
        if cancel.load(Ordering::SeqCst) && results.iter().any(|(_, _, r)| r.is_none()) {
            let finished = results.iter().filter(|(_, _, r)| r.is_some()).count();
            return Err(StepFailure::Interrupted(format!(
                "stopped after {finished} of {total} items; the rest were not started"
            )));
        }
        let mut first_failure = None;
        let (mut ok, mut failed_count) = (0usize, 0usize);
        let entries: Vec<Value> = results
            .into_iter()
            .filter_map(|(index, item, result)| match result? {
                Ok(output) => {
                    ok += 1;
                    Some(json!({ "item": item, "status": "ok", "output": output }))
                }
                Err(e) => {
                    failed_count += 1;
                    if first_failure.is_none() {
                        first_failure = Some(format!("item {} of {total} failed: {}", index + 1, describe(&e)));
                    }
                    Some(json!({
                        "item": item,
                        "status": "failed",
                        "error": { "code": e.code(), "message": redactor.redact(&describe(&e)), "retryable": e.retryable() },
                    }))
                }
            })
            .collect();
        if step.on_error == OnError::Fail
            && let Some(why) = first_failure
        {
            return Err(StepFailure::Failed(why));
        }
        Ok(json!({ "items": entries, "ok": ok, "failed": failed_count }))
    }

    /// Writes the step's artifacts, redacted: a report file is read by
    /// people and mailed, and must not carry a secret a step saw.
    fn write_artifacts(
        &self,
        step: &Step,
        output: &Value,
        options: &RunOptions,
        observer: &Arc<dyn Observer>,
        redactor: &Redactor,
        run: &mut RunState,
    ) -> Result<(), StepFailure> {
        for (name, path) in &step.artifacts {
            let content = match walk(output.clone(), path) {
                Value::String(s) => s,
                Value::Null => continue,
                other => serde_json::to_string_pretty(&other).unwrap_or_default(),
            };
            let content = redactor.redact(&content);
            let target = options.output_dir.join(name);
            let write = std::fs::create_dir_all(&options.output_dir)
                .and_then(|_| std::fs::write(&target, content));
            if let Err(e) = write {
                return Err(StepFailure::Failed(format!(
                    "step `{}` could not write artifact {}: {e}",
                    step.id,
                    target.display()
                )));
            }
            observer.event(&RunEvent::Artifact {
                step: step.id.clone(),
                name: name.clone(),
                path: target.clone(),
            });
            run.artifacts.push(target);
        }
        Ok(())
    }
}

/// An item's index, the item, and its result (`None`: never started).
type ItemOutcome = (usize, Value, Option<Result<Value, CallError>>);

/// The longest log line shown or recorded, in characters.
const MAX_LOG_LINE: usize = 2000;

struct RunState {
    outputs: BTreeMap<String, Value>,
    artifacts: Vec<PathBuf>,
    /// Steps that have had their `StepFinished`.
    finished: HashSet<String>,
    run_value: Value,
}

/// Records the steps a run that stopped early never reached as skipped,
/// saying why, so its record shows the whole flow.
fn skip_the_rest(flow: &Flow, failure: &StepFailure, run: &RunState, observer: &Arc<dyn Observer>) {
    let why = match failure {
        StepFailure::Interrupted(_) => "the run was interrupted",
        StepFailure::Failed(_) if run.finished.is_empty() => "the run failed before its first step",
        StepFailure::Failed(_) => "an earlier step failed",
    };
    for step in flow.steps.iter().filter(|s| !run.finished.contains(&s.id)) {
        observer.event(&RunEvent::StepFinished {
            step: step.id.clone(),
            component: step.uses.to_string(),
            status: Status::Skipped,
            output: None,
            error: Some(why.to_string()),
            duration: Duration::ZERO,
            connections: BTreeMap::new(),
        });
    }
}

fn resolve_input(step: &Step, scope: &Scope<'_>) -> Result<Value, StepFailure> {
    match &step.with {
        Some(with) => scope
            .resolve_value(with)
            .map_err(|e| StepFailure::Failed(format!("its input could not be resolved: {e}"))),
        None => Ok(json!({})),
    }
}

async fn call(
    engine: &Engine,
    prepared: &Prepared,
    context: Arc<StepContext>,
    input: &Value,
    timeout: Duration,
) -> Result<Value, CallError> {
    let text = engine
        .call(prepared, context, &input.to_string(), timeout)
        .await?;
    serde_json::from_str(&text).map_err(|e| CallError::InvalidOutput(e.to_string()))
}

fn describe(e: &CallError) -> String {
    e.to_string()
}

/// Fetches a token for every OAuth2 connection a step uses, concurrently.
async fn check_credentials(flow: &Flow, connections: &Connections) -> Result<(), StepFailure> {
    let used: std::collections::BTreeSet<&String> = flow
        .steps
        .iter()
        .flat_map(|s| s.connections.iter())
        .collect();
    let checks = used
        .into_iter()
        .filter_map(|name| connections.get(name).map(|c| (name.clone(), c.clone())))
        .filter(|(_, c)| c.needs_token());
    let mut tasks = tokio::task::JoinSet::new();
    for (name, conn) in checks {
        tasks.spawn(async move { (name, conn.check_credentials().await) });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => {
                return Err(StepFailure::Failed(format!(
                    "connection `{name}`: {e}; no step was run"
                )));
            }
            // A check that panicked proved nothing.
            Err(e) => {
                return Err(StepFailure::Failed(format!(
                    "a connection's credentials could not be checked ({e}); no step was run"
                )));
            }
        }
    }
    Ok(())
}
