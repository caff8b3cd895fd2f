//! One step of a run: its `when`, its call (once, or once per item through
//! [`super::for_each`]), the events that describe it, its artifacts, and
//! what a failure means for the run (its `on_error`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_store::Attempts;

use super::call::Caller;
use super::context::{Results, RunContext, StepFailure};
use super::events::{RunEvent, Status};
use super::output::StepOutput;
use super::payload::Payload;
use super::{artifacts, for_each, ledger, paged};
use crate::engine::{Invocation, LogLevel, OutputCap, Prepared, StepContext, StepInput};
use crate::flow::Step;
use crate::flow::model::OnError;
use crate::flow::model::ValueTemplate;
use crate::flow::resolve::{Found, ResolveError, Scope};
use crate::flow::schema::{InputMismatch, InputSchema};
use crate::state::CommitQueue;

/// The longest log line shown or recorded, in characters.
const MAX_LOG_LINE: usize = 2000;

/// Runs `step` and records its outcome in `results`. An error is what
/// stops the run: a failure under `on_error = "fail"`, or an interruption.
pub async fn run(
    ctx: &RunContext<'_>,
    step: &Step,
    prepared: &Arc<Prepared>,
    results: &mut Results,
) -> Result<(), StepFailure> {
    let component = step.uses.to_string();
    match skip_reason(ctx, step, results) {
        Ok(None) => {}
        Ok(Some(why)) => {
            finish_early(ctx, step, Status::Skipped, why);
            results.finished.insert(step.id.clone());
            results.outputs.insert(step.id.clone(), StepOutput::null());
            return Ok(());
        }
        Err(why) => {
            let why = ctx.redactor.redact_error(&why);
            finish_early(ctx, step, Status::Failed, why.clone());
            results.finished.insert(step.id.clone());
            return Err(StepFailure::Failed(why));
        }
    }
    let context = step_context(ctx, step, &component);
    let caller = Arc::new(caller(ctx, step, prepared));
    let started = Instant::now();
    let scope = ctx.scope(results);
    let missed_before = replay_misses(ctx);
    let (result, attempts) = match &step.for_each {
        None => run_once(ctx, step, &caller, &context, &scope).await,
        Some(list) => (
            for_each::run(ctx, step, list, &caller, &context, &scope).await,
            None,
        ),
    };
    let result = result.and_then(|output| answered(ctx, &missed_before).map(|()| output));
    let ended = Ended {
        started,
        result,
        attempts,
    };
    finish(ctx, step, &context, ended, results)
}

/// The requests of a replay that found no recorded answer so far (none
/// when the run is not a replay).
fn replay_misses(ctx: &RunContext<'_>) -> Vec<String> {
    ctx.options
        .tapes
        .as_ref()
        .map(|t| t.misses())
        .unwrap_or_default()
}

/// Fails a replayed step one of whose requests found no recorded answer
/// (those missed before it started are `before`), even when its
/// component carried on past the `unavailable` it got: the replay did not
/// do what the recording did.
fn answered(ctx: &RunContext<'_>, before: &[String]) -> Result<(), StepFailure> {
    let now = replay_misses(ctx);
    if now.len() <= before.len() {
        return Ok(());
    }
    // The same request may have missed in an earlier step too.
    let miss = now.iter().find(|m| !before.contains(m)).or(now.last());
    Err(StepFailure::Failed(miss.cloned().unwrap_or_default()))
}

/// Why `step` is skipped: `None` when every `when` condition holds, else
/// the first that does not, quoted as the flow file wrote it and with what
/// it read as, so that "mail skipped" says which setting or output to look
/// at (`${env.REPORT_MAIL_FROM:-}` is empty; a component of one's own whose
/// output lacks the field read is null or absent). Every condition is
/// evaluated first: one that cannot be is an error, naming the step,
/// whatever the others say.
fn skip_reason(
    ctx: &RunContext<'_>,
    step: &Step,
    results: &Results,
) -> Result<Option<String>, String> {
    let scope = ctx.scope(results);
    // Read in place: `when = "${steps.diff.missing}"` copies no list.
    let values = step
        .when
        .iter()
        .map(|c| scope.resolve_in_place(&c.template))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "step `{}` ({}): its `when` could not be evaluated: {e}",
                step.id, step.uses
            )
        })?;
    Ok(step
        .when
        .iter()
        .zip(&values)
        .find(|(_, value)| !value.truthy())
        .map(|(condition, value)| {
            format!(
                "its `when` is false: `{}` is {}",
                condition.text,
                value.falsy_words()
            )
        }))
}

/// The `StepFinished` of a step that never called its component.
fn finish_early(ctx: &RunContext<'_>, step: &Step, status: Status, why: String) {
    ctx.emit(&RunEvent::StepFinished {
        step: step.id.clone(),
        component: step.uses.to_string(),
        status,
        output: None,
        error: Some(why),
        duration: Duration::ZERO,
        connections: BTreeMap::new(),
        attempts: None,
        memory: None,
    });
}

/// What every call of this step shares: its granted connections, the
/// dry-run flag, where its log lines go and its request counts.
fn step_context(ctx: &RunContext<'_>, step: &Step, component: &str) -> Arc<StepContext> {
    // The component names each connection by its role.
    let granted = step
        .connections
        .iter()
        .filter_map(|g| {
            let conn = ctx.connections.get(&g.connection)?;
            Some((g.role.clone(), conn.clone()))
        })
        .collect();
    let (observer, redactor, step_id) =
        (ctx.observer.clone(), ctx.redactor.clone(), step.id.clone());
    Arc::new(StepContext {
        step_id: step.id.clone(),
        component: component.to_string(),
        granted,
        dry_run: ctx.options.dry_run,
        lease: ctx.options.guard.clone(),
        log: Arc::new(move |level: LogLevel, message: &str| {
            observer.event(&RunEvent::Log {
                step: step_id.clone(),
                level,
                message: redactor
                    .redact(message)
                    .chars()
                    .take(MAX_LOG_LINE)
                    .collect(),
            });
        }),
        stats: Mutex::new(BTreeMap::new()),
        memory: Default::default(),
    })
}

/// How this step's component is called: the run context it receives
/// (before any item), its state, its deadline and its `retry`.
fn caller(ctx: &RunContext<'_>, step: &Step, prepared: &Arc<Prepared>) -> Caller {
    Caller {
        engine: ctx.engine.clone(),
        prepared: prepared.clone(),
        state: ctx.state.clone(),
        overlay: ctx.overlay.clone(),
        queue: (step.for_each.is_some() && ctx.overlay.is_none())
            .then(|| CommitQueue::new(ctx.state.clone(), &ctx.fields.flow, &ctx.fields.id)),
        invocation: Invocation {
            run_id: ctx.fields.id.clone(),
            flow: ctx.fields.flow.clone(),
            step: step.id.clone(),
            item_index: None,
            item_key: None,
            dry_run: ctx.fields.dry_run,
            started_at: ctx.fields.started_at.clone(),
            attempt: 1,
        },
        timeout: step.timeout,
        lists: paged::output_rules(step),
        output_schema: output_schema(step),
        retry: step.retry,
        cancel: ctx.options.cancel.clone(),
        guard: ctx.options.guard.clone(),
    }
}

/// The output schema the step's component describes, compiled to check
/// each output against (a schema that does not compile was refused when
/// the flow was checked; `None` then, and without a description).
fn output_schema(step: &Step) -> Option<Arc<InputSchema>> {
    let d = step.description.as_ref()?;
    InputSchema::for_output(&d.name, &d.output_schema)
        .ok()
        .map(Arc::new)
}

/// A step without `for_each`: one call with the resolved `with` (more
/// than one attempt under its `retry`), and its attempts when it called.
async fn run_once(
    ctx: &RunContext<'_>,
    step: &Step,
    caller: &Caller,
    context: &Arc<StepContext>,
    scope: &Scope<'_>,
) -> (Result<StepOutput, StepFailure>, Option<Attempts>) {
    let (text, paged) = match input_text(step, scope, Check::Schema) {
        Ok(input) => (Arc::new(input.text), input.paged),
        Err(e) => return (Err(e), None),
    };
    ctx.emit(&RunEvent::StepStarted {
        step: step.id.clone(),
        component: context.component.clone(),
        input: Payload::text(text.clone(), &ctx.redactor),
        items: None,
    });
    // Watchers have written what they show: the text is the call's.
    let input = StepInput {
        text: Arc::unwrap_or_clone(text),
        paged,
    };
    let cap = OutputCap {
        bytes: step.max_output,
        key: "max_output_bytes",
    };
    match caller.call(context.clone(), input, None, cap).await {
        Ok(called) => {
            let tries = Some(called.tries.record(&ctx.redactor));
            // Only `for_each` items queue their writes; wait here all the same.
            if let Some(committing) = called.committing
                && let Err(e) = committing.committed().await
            {
                let failed = super::call::Failed::after(e, called.tries);
                return (Err(step_failure(&failed)), tries);
            }
            (Ok(called.output), tries)
        }
        Err(failed) => {
            let tries = Some(failed.tries.record(&ctx.redactor));
            (Err(step_failure(&failed)), tries)
        }
    }
}

/// How a failed call ends its step: interrupted when the run's stop (or a
/// lost lease) cut it short, halting the run when its state could not be
/// saved, failed otherwise.
fn step_failure(failed: &super::call::Failed) -> StepFailure {
    match (&failed.stopped, &failed.error) {
        (Some(_), _) => StepFailure::Interrupted(failed.to_string()),
        (None, crate::engine::CallError::State(_)) => StepFailure::Halted(failed.to_string()),
        (None, _) => StepFailure::Failed(failed.to_string()),
    }
}

/// How a step ended: when it started, its result, and its attempts when
/// it called its component once (not per item).
struct Ended {
    started: Instant,
    result: Result<StepOutput, StepFailure>,
    attempts: Option<Attempts>,
}

/// Emits the step's `StepFinished`, writes its artifacts and keeps its
/// output; says whether the run goes on.
fn finish(
    ctx: &RunContext<'_>,
    step: &Step,
    context: &StepContext,
    ended: Ended,
    results: &mut Results,
) -> Result<(), StepFailure> {
    let label = format!("step `{}` ({})", step.id, context.component);
    let halts = matches!(ended.result, Err(StepFailure::Halted(_)));
    let (status, output, error) = match ended.result {
        Ok(output) => (Status::Succeeded, Some(output), None),
        Err(StepFailure::Failed(why) | StepFailure::Halted(why)) => (
            Status::Failed,
            None,
            Some(ctx.redactor.redact_error(&format!("{label} failed: {why}"))),
        ),
        Err(StepFailure::Interrupted(why)) => (
            Status::Interrupted,
            None,
            Some(ctx.redactor.redact_error(&format!("{label}: {why}"))),
        ),
    };
    ctx.emit(&RunEvent::StepFinished {
        step: step.id.clone(),
        component: context.component.clone(),
        status,
        output: output
            .as_ref()
            .map(|o| Payload::output(o.clone(), &ctx.redactor)),
        error: error.clone(),
        duration: ended.started.elapsed(),
        connections: context.stats(),
        attempts: ended.attempts,
        memory: context.memory.get(),
    });
    results.finished.insert(step.id.clone());
    match (output, error) {
        (Some(output), _) => {
            ledger::emit(ctx, step, &output);
            artifacts::write(ctx, step, &output, results)?;
            results.outputs.insert(step.id.clone(), output);
            Ok(())
        }
        (None, error) if status == Status::Interrupted => {
            Err(StepFailure::Interrupted(error.unwrap_or_default()))
        }
        (None, _) if step.on_error == OnError::Continue && !halts => {
            results.outputs.insert(step.id.clone(), StepOutput::null());
            if status == Status::Failed {
                results.failed_and_continued.push(step.id.clone());
            }
            Ok(())
        }
        (None, error) => Err(StepFailure::Failed(
            error.unwrap_or_else(|| format!("{label} failed")),
        )),
    }
}

/// The step's `with`, resolved against `scope` (an empty object without
/// one) and checked against its component's input schema, before the
/// component is called.
pub fn resolve_input(step: &Step, scope: &Scope<'_>) -> Result<Value, StepFailure> {
    let input = match &step.with {
        Some(with) => scope.resolve_value(with).map_err(unresolved)?,
        None => json!({}),
    };
    step.check_input(&input).map_err(misfit)?;
    Ok(input)
}

/// Whether [`input_text`] checks the input against its component's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Schema,
    /// This very input (same step, same scope, same item) passed the check
    /// already: a `for_each` item's input is checked with every other
    /// item's before the first item starts, and need not be again when the
    /// item runs (the check costs more than the rest of making the input).
    Done,
}

/// The same input as the JSON text its component reads. A `with` table is
/// never made one value: each entry is read where it lives (a reference
/// into another step's output is that output's own text), checked there,
/// and written out (at 100k members the compare step's input is two lists
/// of a hundred thousand people). A list the component reads in pages is
/// not written: the text names it, and the call serves it (see [`paged`]).
pub fn input_text(step: &Step, scope: &Scope<'_>, check: Check) -> Result<StepInput, StepFailure> {
    let Some(ValueTemplate::Object(entries)) = &step.with else {
        let input = match (check, &step.with) {
            (Check::Schema, _) => resolve_input(step, scope)?,
            (Check::Done, Some(with)) => scope.resolve_value(with).map_err(unresolved)?,
            (Check::Done, None) => json!({}),
        };
        return Ok(input.to_string().into());
    };
    let resolved = entries
        .iter()
        .map(|(key, value)| Ok((key.as_str(), scope.resolve_borrowed(value)?)))
        .collect::<Result<Vec<_>, ResolveError>>()
        .map_err(unresolved)?;
    let (placeholders, lists) = paged::split(step, scope, entries, &resolved);
    if let (Some(schema), Check::Schema) = (&step.input_schema, check) {
        let names: Vec<&str> = placeholders.iter().map(|(k, _)| k.as_str()).collect();
        schema
            .check_entries_paged(&resolved, &names)
            .map_err(misfit)?;
    }
    let mut written = resolved;
    for (key, value) in &placeholders {
        if let Some(entry) = written.iter_mut().find(|(k, _)| *k == key) {
            entry.1 = Found::Value(Cow::Borrowed(value));
        }
    }
    Ok(StepInput {
        text: object_text(&written),
        paged: lists,
    })
}

/// An object's entries, written as that object's JSON text.
fn object_text(entries: &[(&str, Found<'_>)]) -> String {
    let mut text = String::from("{");
    for (n, (key, value)) in entries.iter().enumerate() {
        if n > 0 {
            text.push(',');
        }
        text.push_str(&Value::from(*key).to_string());
        text.push(':');
        value.write_json(&mut text);
    }
    text.push('}');
    text
}

fn unresolved(e: ResolveError) -> StepFailure {
    StepFailure::Failed(format!("its input could not be resolved: {e}"))
}

fn misfit(e: InputMismatch) -> StepFailure {
    StepFailure::Failed(format!("its input does not fit: {e}"))
}
