//! A `for_each` step: one call per item of a list, at most `concurrency` at
//! once, each in its own instance with its own state writes (kept when that
//! item succeeds), and the step's output ([`ForEachOutput`], shared with
//! components through `sluice-contract`) listing every item's result in
//! item order.
//!
//! Items are a bounded stream: an item's input is made when a place among
//! the `concurrency` running items is free, and its task is started then,
//! so at most `concurrency` inputs are alive at once however long the list.
//! An item gives its place back when its component call ends and its
//! output and outcome are counted (so the next item starts only once the
//! outputs' cap and a failure under `fail` are known): its state writes
//! then wait for their batch ([`crate::state::CommitQueue`]) while later
//! items run, and it finishes once they are committed. Writes that cannot
//! be committed fail their item then; items started meanwhile finish. At most
//! `concurrency` + [`crate::state::queue::MAX_BATCH`] items are unfinished at once.
//! Every item's input is still resolved and checked against the schema
//! once before the first item starts (and dropped), so a bad reference
//! fails the step before anything is done; when the item runs its input is
//! made again, unchecked. Under `on_error = "fail"` the first failed item stops new items
//! from starting (those running finish); under `continue` every item runs.
//! A stopped run (`cancel`) starts no new item and ends the step as
//! interrupted.
//!
//! When no later step reads the items (`Step::items_read`, decided when
//! the flow is compiled; see [`crate::flow::reads`]), the run is not
//! limited to named items (`--only`, whose story reads them) and its
//! caller did not ask for them (`RunOptions::keep_item_outputs`), each item's
//! output goes to its `ItemFinished` (its record) and is then dropped: the
//! step's output lists every item with its status and a failed one's
//! error, but `output` is null, and the items' outputs together are not
//! held to `max_output_bytes` (nothing holds them; each item still is to
//! `max_item_output_bytes`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use chrono::Utc;
use serde_json::Value;
use sluice_contract::{ForEachOutput, ItemEntry, ItemError, ItemResult};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::approval::{self, Gate};
use super::call::{Called, Caller, Failed, ItemId, Tries};
use super::context::{RunContext, StepFailure};
use super::events::{Observer, RunEvent, Status};
use super::executor::RunGuard;
use super::output::{Kind, StepOutput};
use super::payload::Payload;
use super::recorder::item_record;
use super::step::{Check, input_text, resolve_input};
use crate::engine::{CallError, OutputCap, StepContext, StepInput};
use crate::flow::Step;
use crate::flow::model::OnError;
use crate::flow::resolve::{Found, Scope};
use crate::flow::template::Template;
use crate::redact::Redactor;
use crate::state::Recorded;
use crate::state::queue::MAX_BATCH;

/// An item's index, the item, and its result (`None`: never started).
type ItemOutcome = (usize, Value, Option<Result<Value, Failed>>);

/// An item to run: its index, the item and its key.
type ItemToRun = (usize, Value, Option<String>);

/// What every item task of one step shares.
struct Items {
    caller: Arc<Caller>,
    context: Arc<StepContext>,
    observer: Arc<dyn Observer>,
    redactor: Redactor,
    step_id: String,
    on_error: OnError,
    /// Each item's output cap, and all items' together.
    item_cap: OutputCap,
    max_output: usize,
    /// The items' outputs so far, as JSON text, against `max_output`.
    output_bytes: AtomicUsize,
    /// Whether the step's output keeps each item's output (see the
    /// module docs); when not, `max_output` does not apply.
    keep_outputs: bool,
    total: usize,
    permits: Arc<Semaphore>,
    /// Set by the first failure under `on_error = "fail"`, and by the
    /// first item whose state could not be saved.
    stop: AtomicBool,
    /// Which item's state could not be saved first (its index and key)
    /// and why: every later item would act on the services just the
    /// same and go unrecorded too, so none starts and the step fails.
    unsaved: std::sync::Mutex<Option<(usize, Option<String>, String)>>,
    cancel: Arc<AtomicBool>,
    /// The run's guard, asked before each item starts.
    guard: Option<Arc<dyn RunGuard>>,
    done: AtomicUsize,
    failed: AtomicUsize,
    /// The approvals the items spend with their records.
    spends: Option<approval::Spends>,
}

/// Runs the step once per item of `list` and gathers the results. With
/// `--only`, items whose key is not named are left out; with `approval`,
/// the gate ([`super::approval`]) decides which items run and which wait.
pub async fn run(
    ctx: &RunContext<'_>,
    step: &Step,
    list: &Template,
    caller: &Arc<Caller>,
    context: &Arc<StepContext>,
    scope: &Scope<'_>,
) -> Result<StepOutput, StepFailure> {
    let mut items = resolve_items(list, scope)?;
    let all_keys = approval::keys(step, &items, scope)?;
    let mut keys = all_keys.clone();
    if let Some(kept) = approval::only(ctx, &keys) {
        items = kept.iter().map(|&i| items[i].clone()).collect();
        keys = kept.iter().map(|&i| keys[i].clone()).collect();
    }
    // Each input is resolved and checked once here and dropped, so that a
    // bad reference fails the step before any item has done anything.
    for item in &items {
        input_of(step, scope, item, Check::Schema)?;
    }
    let input = |i: usize| value_of(step, scope, &items[i]);
    let mut gate = Gate::decide(ctx, step, &keys, &input, &all_keys, scope).await?;
    ctx.emit(&RunEvent::StepStarted {
        step: step.id.clone(),
        component: context.component.clone(),
        input: Payload::tree(
            Arc::new(serde_json::json!({ "items": items.len() })),
            &ctx.redactor,
        ),
        items: Some(items.len()),
    });
    let runs = |i: usize| gate.as_ref().is_none_or(|g| g.runs(i));
    if let Some(gate) = &gate {
        held_events(ctx, step, gate, &keys, &input)?;
    }
    // What the gate held is known before any item runs; the items then go
    // to the stream (and come back in the outcomes).
    let mut summary = gate.as_ref().map(|g| g.summary(&keys, &items));
    let total = (0..items.len()).filter(|&i| runs(i)).count();
    let shared = Arc::new(Items {
        caller: caller.clone(),
        context: context.clone(),
        observer: ctx.observer.clone(),
        redactor: ctx.redactor.clone(),
        step_id: step.id.clone(),
        on_error: step.on_error,
        item_cap: OutputCap {
            bytes: step.max_item_output,
            key: "max_item_output_bytes",
        },
        max_output: step.max_output,
        output_bytes: AtomicUsize::new(0),
        keep_outputs: step.items_read
            || ctx.options.keep_item_outputs
            || !ctx.options.only.is_empty(),
        total,
        permits: Arc::new(Semaphore::new(step.concurrency)),
        stop: AtomicBool::new(false),
        unsaved: Default::default(),
        cancel: ctx.options.cancel.clone(),
        guard: ctx.options.guard.clone(),
        done: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        spends: gate.as_ref().and_then(|g| g.spends(ctx)),
    });
    let to_run: Vec<ItemToRun> = items
        .into_iter()
        .zip(keys.iter().cloned())
        .enumerate()
        .filter(|(i, _)| runs(*i))
        .map(|(i, (item, key))| (i, item, key))
        .collect();
    let recheck = gate.as_ref().map(|g| (ctx, g));
    let Streamed {
        mut outcomes,
        rejected_since,
        unchecked,
    } = stream(&shared, step, scope, to_run, recheck).await?;
    outcomes.sort_by_key(|(i, _, _)| *i);
    if let (Some(gate), Some(summary)) = (&mut gate, &mut summary) {
        for (index, key, item) in rejected_since {
            // Resolved once before any item ran, so it resolves now; the
            // item itself stands in rather than skip the settling below.
            let held_input = value_of(step, scope, &item).unwrap_or_else(|_| item.clone());
            ctx.emit(&RunEvent::ItemHeld {
                step: step.id.clone(),
                index,
                key: key.clone(),
                held: approval::Held::Rejected,
                input: Payload::tree(Arc::new(held_input), &ctx.redactor),
            });
            gate.rejected_since(index, &key, item, summary);
        }
    }
    if let (Some(gate), Some(summary)) = (&gate, &summary) {
        settle(ctx, gate, &keys, &outcomes, summary).await;
    }
    if let Some(why) = unchecked {
        return Err(StepFailure::Failed(why));
    }
    if let Some(why) = shared.unsaved() {
        return Err(StepFailure::Halted(why));
    }
    // Over the cap, the items' outputs are not kept as the step's output
    // (each is in its item's record); the step fails whatever `on_error`.
    if let Some(why) = shared.over_cap() {
        return Err(StepFailure::Failed(why));
    }
    gather(
        outcomes,
        &keys,
        step.on_error,
        shared.cancel.load(Ordering::SeqCst),
        &ctx.redactor,
        summary,
    )
    .map(|output| StepOutput::of(&output))
}

/// Spends the approvals of the items that ran for good and says what the
/// gate did.
async fn settle(
    ctx: &RunContext<'_>,
    gate: &Gate,
    keys: &[Option<String>],
    outcomes: &[ItemOutcome],
    summary: &approval::GateSummary,
) {
    let ran: Vec<(usize, Result<(), String>)> = outcomes
        .iter()
        .filter_map(|(i, _, r)| match r.as_ref()? {
            Ok(_) => Some((*i, Ok(()))),
            Err(failed) if spends_approval(failed) => {
                Some((*i, Err(ctx.redactor.redact_error(&failed.to_string()))))
            }
            Err(_) => None,
        })
        .collect();
    gate.settle(ctx, keys, &ran).await;
    ctx.emit(&RunEvent::ApprovalGate {
        summary: summary.clone(),
        revision: gate.record.revision,
    });
}

/// Whether an item that failed this way has used its approval: a failure
/// a later run could fix (the service unavailable or throttling through
/// every retry: a retryable error) or an item the run's stop interrupted
/// keeps it, so the next run does what the admin approved without asking
/// again. Any other failure is for good.
fn spends_approval(failed: &Failed) -> bool {
    failed.stopped.is_none() && !failed.error.retryable()
}

/// The `ItemHeld` of every item the gate holds back, each with its input.
fn held_events(
    ctx: &RunContext<'_>,
    step: &Step,
    gate: &Gate,
    keys: &[Option<String>],
    input: &approval::InputOf<'_>,
) -> Result<(), StepFailure> {
    for (index, held) in gate.held.iter().enumerate() {
        let (Some(held), Some(Some(key))) = (held, keys.get(index)) else {
            continue;
        };
        ctx.emit(&RunEvent::ItemHeld {
            step: step.id.clone(),
            index,
            key: key.clone(),
            held: *held,
            input: Payload::tree(Arc::new(input(index)?), &ctx.redactor),
        });
    }
    Ok(())
}

impl Items {
    /// Counts a failed item (not one the run's stop interrupted); under
    /// `on_error = "fail"` no further item starts.
    fn count_failure(&self, called: &Result<Called, Failed>) {
        if let Err(f) = called
            && f.stopped.is_none()
        {
            self.failed.fetch_add(1, Ordering::SeqCst);
            if self.on_error == OnError::Fail {
                self.stop.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Notes an item whose state could not be saved: no item starts
    /// after it.
    fn not_saved(&self, index: usize, key: Option<&str>, error: &crate::engine::CallError) {
        if let crate::engine::CallError::State(why) = error {
            let mut unsaved = self.unsaved.lock().unwrap_or_else(|e| e.into_inner());
            unsaved.get_or_insert_with(|| (index, key.map(str::to_string), why.clone()));
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    /// When an item's state could not be saved: why no item started after
    /// it, and the step fails.
    fn unsaved(&self) -> Option<String> {
        let unsaved = self.unsaved.lock().unwrap_or_else(|e| e.into_inner());
        unsaved.as_ref().map(|(index, key, why)| {
            // Counted from 1, as the first failure is.
            let key = match key {
                Some(key) => format!(" (key `{}`)", self.redactor.redact(key)),
                None => String::new(),
            };
            format!(
                "the state of item {}{key} could not be saved ({why}), so no item was started once that was known: what later items did to the services would have gone unrecorded too",
                index + 1,
            )
        })
    }

    /// When the items' outputs together are over the step's cap: why no
    /// further item starts and the step fails.
    fn over_cap(&self) -> Option<String> {
        let total = self.output_bytes.load(Ordering::SeqCst);
        (self.keep_outputs && total > self.max_output).then(|| {
            format!(
                "its items' outputs together reached {total} bytes, over the limit of {} bytes (`max_output_bytes`); no item was started after that",
                self.max_output
            )
        })
    }
}

/// Starts each item when a place among the running ones is free, its input
/// made only then, and gathers every item's outcome (in any order). Once
/// the step is stopped (a failure under `fail`, the run's cancel, the
/// outputs' cap) the items left are never started.
///
/// With `recheck`, an item its approval gate let run on the plan's word
/// is asked about again just before it starts: one an admin rejected
/// since is not started, and comes back (index, key and item) beside the
/// outcomes ([`Streamed`]); a plan that cannot be read then stops the
/// items, and says why.
async fn stream(
    shared: &Arc<Items>,
    step: &Step,
    scope: &Scope<'_>,
    items: Vec<ItemToRun>,
    recheck: Option<(&RunContext<'_>, &Gate)>,
) -> Result<Streamed, StepFailure> {
    let mut outcomes: Vec<ItemOutcome> = Vec::with_capacity(items.len());
    let mut rejected_since = Vec::new();
    let mut unchecked = None;
    let mut tasks = JoinSet::new();
    let mut items = items.into_iter();
    let most_unfinished = step.concurrency + MAX_BATCH;
    for (index, item, key) in items.by_ref() {
        while tasks.len() >= most_unfinished
            && let Some(joined) = tasks.join_next().await
        {
            outcomes.push(joined.map_err(ended)?);
        }
        let permit = shared.permits.clone().acquire_owned().await;
        while let Some(joined) = tasks.try_join_next() {
            outcomes.push(joined.map_err(ended)?);
        }
        let stopped = shared.stop.load(Ordering::SeqCst)
            || shared.cancel.load(Ordering::SeqCst)
            || shared.over_cap().is_some();
        let (Ok(permit), false) = (permit, stopped) else {
            outcomes.push((index, item, None));
            break;
        };
        if let (Some((ctx, gate)), Some(k)) = (recheck, &key) {
            match gate.still_runs(ctx, k).await {
                Ok(None) => {}
                Ok(Some(why)) => {
                    ctx.emit(&RunEvent::Log {
                        step: step.id.clone(),
                        level: crate::engine::LogLevel::Warn,
                        message: ctx.redactor.redact(&format!(
                            "item `{k}` {why} after the step started; it was not run"
                        )),
                    });
                    rejected_since.push((index, k.clone(), item));
                    continue;
                }
                Err(e) => {
                    // Neither it nor any later item starts, and the step
                    // fails once the items under way have ended (their
                    // approvals settled): nothing approved runs unasked.
                    shared.stop.store(true, Ordering::SeqCst);
                    unchecked = Some(format!(
                        "the approval of item `{k}` could not be checked again before it started ({e}); it and the items after it were not started, and keep their place in the plan"
                    ));
                    outcomes.push((index, item, None));
                    break;
                }
            }
        }
        // Checked with every item's before the first started.
        let input = input_of(step, scope, &item, Check::Done)?;
        tasks.spawn(run_item(shared.clone(), permit, (index, item, key), input));
    }
    outcomes.extend(items.map(|(index, item, _)| (index, item, None)));
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.map_err(ended)?);
    }
    Ok(Streamed {
        outcomes,
        rejected_since,
        unchecked,
    })
}

/// What [`stream`] gives back.
struct Streamed {
    outcomes: Vec<ItemOutcome>,
    /// Items rejected after the gate let them run: index, key, item.
    rejected_since: Vec<(usize, String, Value)>,
    /// Why items stopped unstarted: their approval could not be checked.
    unchecked: Option<String>,
}

fn ended(e: tokio::task::JoinError) -> StepFailure {
    StepFailure::Failed(format!("an item's task ended unexpectedly: {e}"))
}

/// The step's input for one item, as the JSON text its component reads.
fn input_of(
    step: &Step,
    scope: &Scope<'_>,
    item: &Value,
    check: Check,
) -> Result<StepInput, StepFailure> {
    let scope = Scope {
        item: Some(item),
        ..*scope
    };
    input_text(step, &scope, check)
}

/// The step's input for one item, as a value (an item an approval gate
/// holds back keeps it in its plan).
fn value_of(step: &Step, scope: &Scope<'_>, item: &Value) -> Result<Value, StepFailure> {
    let scope = Scope {
        item: Some(item),
        ..*scope
    };
    resolve_input(step, &scope)
}

/// The list `for_each` names; null is an empty list. A list in a step's
/// output is read item by item from its text: only the list's items
/// become values, not the output around them.
fn resolve_items(list: &Template, scope: &Scope<'_>) -> Result<Vec<Value>, StepFailure> {
    let found = scope
        .resolve_in_place(list)
        .map_err(|e| StepFailure::Failed(format!("`for_each` could not be resolved: {e}")))?;
    let not_a_list =
        |what: &str| StepFailure::Failed(format!("`for_each` must be a list, but it is {what}"));
    match found {
        Found::Json(json) => match json.kind() {
            Kind::Array => Ok(json
                .items()
                .unwrap_or_default()
                .into_iter()
                .map(|item| item.to_value())
                .collect()),
            Kind::Null => Ok(Vec::new()),
            Kind::Object => Err(not_a_list("an object")),
            Kind::String => Err(not_a_list("a string")),
            Kind::Number => Err(not_a_list("a number")),
            Kind::Bool => Err(not_a_list("a boolean")),
        },
        Found::Value(value) => match value.into_owned() {
            Value::Array(items) => Ok(items),
            Value::Null => Ok(Vec::new()),
            Value::Object(_) => Err(not_a_list("an object")),
            Value::String(_) => Err(not_a_list("a string")),
            Value::Number(_) => Err(not_a_list("a number")),
            Value::Bool(_) => Err(not_a_list("a boolean")),
        },
    }
}

/// One item, holding its place among the running ones until its call ends
/// and its output and outcome are counted (see the module docs): calls the
/// component, queues its writes with the record it has if they are kept,
/// gives its place back, and reports the item's `ItemFinished` once its
/// writes are committed.
async fn run_item(
    shared: Arc<Items>,
    place: OwnedSemaphorePermit,
    item: ItemToRun,
    input: StepInput,
) -> ItemOutcome {
    let (index, item, key) = item;
    if let Some(guard) = &shared.guard
        && guard.may_go_on().await.is_err()
    {
        shared.cancel.store(true, Ordering::SeqCst);
        return (index, item, None);
    }
    let started = Instant::now();
    // The item counts its own requests, then adds them to the step's.
    let own = Arc::new(shared.context.for_item());
    let text = Arc::new(input.text.clone());
    let mut called = match ItemId::of(index, &item) {
        Ok(id) => {
            shared
                .caller
                .call(own.clone(), input, Some(&id), shared.item_cap)
                .await
        }
        // Never called: its name would be blank (see `flow::item_key`).
        Err(blank) => Err(Failed {
            error: blank.into(),
            tries: Tries {
                made: 0,
                failed: Vec::new(),
            },
            stopped: None,
        }),
    };
    let ended = Ending {
        index,
        key,
        input: Payload::text(text, &shared.redactor),
        duration: started.elapsed(),
        connections: own.stats(),
    };
    let committing = called.as_mut().ok().and_then(|c| c.committing.take());
    // Counted before the place is given back: the next item starts only
    // once the outputs' cap and a failure under `fail` are known.
    let output_bytes = called.as_ref().map_or(0, |c| c.output.text().len());
    shared
        .output_bytes
        .fetch_add(output_bytes, Ordering::SeqCst);
    shared.count_failure(&called);
    // Queued before the place is given back, so the next item's reads see
    // them; with the record the item has if they are kept, to go in the
    // same transaction.
    let mut finished = ended.event(&shared, &called);
    let commit = committing.map(|c| c.queue(item_record(&finished, Utc::now())));
    drop(place);
    let mut recorded = Recorded::Not;
    if let Some(commit) = commit {
        match commit.await {
            Ok(r) => recorded = r,
            Err(error) => {
                shared.not_saved(ended.index, ended.key.as_deref(), &error);
                shared
                    .output_bytes
                    .fetch_sub(output_bytes, Ordering::SeqCst);
                let tries = match called {
                    Ok(c) => c.tries,
                    Err(f) => f.tries,
                };
                called = Err(Failed::after(error, tries));
                shared.count_failure(&called);
                finished = ended.event(&shared, &called);
            }
        }
    }
    // A write refused because another replica took the flow over: the
    // run is that replica's now, and no further item starts here.
    if matches!(&called, Err(f) if matches!(f.error, CallError::Fenced(_) | CallError::LeaseLost(_)))
    {
        shared.cancel.store(true, Ordering::SeqCst);
    }
    for (name, stats) in &ended.connections {
        shared.context.record(name, stats);
    }
    if let RunEvent::ItemFinished {
        done,
        failed,
        recorded: in_history,
        ..
    } = &mut finished
    {
        *done = shared.done.fetch_add(1, Ordering::SeqCst) + 1;
        *failed = shared.failed.load(Ordering::SeqCst);
        *in_history = recorded == Recorded::WithWrites;
    }
    shared.observer.event(&finished);
    let result = called.map(|c| c.output);
    // Its record has the output; the step's keeps it only when read
    // (watchers have written what they show: the output is the step's).
    let result = match result {
        Ok(_) if !shared.keep_outputs => Ok(Value::Null),
        other => other.map(|output| output.to_value()),
    };
    (index, item, Some(result))
}

/// What an item's `ItemFinished` says whichever way it ends.
struct Ending {
    index: usize,
    key: Option<String>,
    input: Payload,
    /// Its call's, up to its end (not its writes' commit).
    duration: std::time::Duration,
    connections: std::collections::BTreeMap<String, crate::connections::RequestStats>,
}

impl Ending {
    /// The item's `ItemFinished` as `called` ends it; its counts of the
    /// step's items are filled in when it is sent.
    fn event(&self, shared: &Items, called: &Result<Called, Failed>) -> RunEvent {
        let redactor = &shared.redactor;
        let for_good = match called {
            Ok(_) => true,
            Err(failed) => spends_approval(failed),
        };
        let spends =
            (shared.spends.as_ref()).and_then(|s| s.plan_of(self.key.as_deref(), for_good));
        let (status, output, error, tries) = match called {
            Ok(c) => (
                Status::Succeeded,
                Some(Payload::output(c.output.clone(), redactor)),
                None,
                &c.tries,
            ),
            Err(f) => {
                let status = match f.stopped {
                    Some(_) => Status::Interrupted,
                    None => Status::Failed,
                };
                (
                    status,
                    None,
                    Some(redactor.redact_error(&f.to_string())),
                    &f.tries,
                )
            }
        };
        RunEvent::ItemFinished {
            step: shared.step_id.clone(),
            index: self.index,
            key: self.key.clone(),
            status,
            input: self.input.clone(),
            output,
            error,
            duration: self.duration,
            done: 0,
            total: shared.total,
            failed: 0,
            connections: self.connections.clone(),
            attempts: tries.record(redactor),
            recorded: false,
            spends_approval: spends,
        }
    }
}

/// The step's output from its items' outcomes, in item order, with what
/// its approval gate decided; or why the step stops the run (interrupted,
/// or a failed item under `fail`).
fn gather(
    outcomes: Vec<ItemOutcome>,
    keys: &[Option<String>],
    on_error: OnError,
    cancelled: bool,
    redactor: &Redactor,
    approval: Option<approval::GateSummary>,
) -> Result<Value, StepFailure> {
    let total = outcomes.len();
    // An item stopped while it waited to try again did not finish either.
    let unfinished = |r: &Option<Result<Value, Failed>>| match r {
        None => true,
        Some(Err(f)) => f.stopped.is_some(),
        Some(Ok(_)) => false,
    };
    if cancelled && outcomes.iter().any(|(_, _, r)| unfinished(r)) {
        let finished = outcomes.iter().filter(|(_, _, r)| !unfinished(r)).count();
        let failed = outcomes
            .iter()
            .filter(|(_, _, r)| matches!(r, Some(Err(f)) if f.stopped.is_none()))
            .count();
        let failed = match failed {
            0 => String::new(),
            n => format!(" ({n} of them failed)"),
        };
        return Err(StepFailure::Interrupted(format!(
            "stopped after {finished} of {total} items{failed}; the rest were not started or not finished"
        )));
    }
    let mut first_failure = None;
    let mut output: ForEachOutput = ForEachOutput {
        items: Vec::new(),
        ok: 0,
        failed: 0,
        approval: None,
    };
    // Each entry becomes JSON as it is taken from the outcomes: the list is
    // never held twice (as entries and as JSON) however many items ran.
    let assembled = |e: serde_json::Error| {
        StepFailure::Failed(format!("its output could not be assembled: {e}"))
    };
    let mut items = Vec::with_capacity(total);
    for (index, item, result) in outcomes {
        let result = match result {
            None => continue,
            Some(Ok(output_value)) => {
                output.ok += 1;
                ItemResult::Ok {
                    output: output_value,
                }
            }
            Some(Err(e)) => {
                output.failed += 1;
                if first_failure.is_none() {
                    // Counted from 1 here; `index` in records counts from 0.
                    let key = match keys.get(index) {
                        Some(Some(key)) => format!(" (key `{}`)", redactor.redact(key)),
                        _ => String::new(),
                    };
                    first_failure = Some(format!("item {} of {total}{key} failed: {e}", index + 1));
                }
                ItemResult::Failed {
                    error: ItemError {
                        kind: e.error.kind(),
                        code: e.error.code().to_string(),
                        message: redactor.redact_error(&e.to_string()),
                        retryable: e.error.retryable(),
                    },
                }
            }
        };
        items.push(serde_json::to_value(ItemEntry { item, result }).map_err(assembled)?);
    }
    if on_error == OnError::Fail
        && let Some(why) = first_failure
    {
        return Err(StepFailure::Failed(why));
    }
    output.approval = approval;
    let mut value = serde_json::to_value(&output).map_err(assembled)?;
    if let Some(slot) = value.get_mut("items") {
        *slot = Value::Array(items);
    }
    Ok(value)
}
