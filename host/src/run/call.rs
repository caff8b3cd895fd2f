//! One call of a step's component, as the run makes it: the run context
//! the component receives, its view of the flow's state, and what happens
//! to the state it wrote — kept when the call succeeds (in the store, or
//! in a dry run only for the rest of the run), dropped when it fails.
//!
//! A step with a `retry` policy calls again, in a fresh instance, when an
//! attempt fails with a retryable kind (`unavailable`, `rate-limited`):
//! after `base_delay`·2^(n−1), at most `max_delay`, up to `max_attempts`
//! in all. The run context's `attempt` counts them from 1. Every other
//! failure (the other kinds; traps, timeouts and limits, which are
//! `internal`) is final. A failed attempt's state writes are dropped like
//! any failed call's; a stopped run (or one whose lease is lost) makes no
//! further attempt, and a call stopped while it waited to try again ends
//! as interrupted (its step, or item, too), not as having given up.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use sluice_store::{Attempts, FailedAttempt, HistoryWrite};

use super::executor::RunGuard;
use super::output::StepOutput;
use super::splice::{self, SpliceError};
use crate::connections::decide::backoff;
use crate::engine::{
    Call, CallError, Engine, Invocation, ListRules, OutputCap, OutputLists, Prepared, StepContext,
    StepInput, Waiting,
};
use crate::flow::item_key::{BlankKey, item_key};
use crate::flow::model::RetryPolicy;
use crate::flow::schema::InputSchema;
use crate::redact::Redactor;
use crate::state::{
    self, CallState, CommitQueue, Overlay, Recorded, StateStore, StoreError, Write, Writes,
};

/// The longest wait between two checks of whether the run was stopped
/// while it waits to try again.
const WAIT_SLICE: Duration = Duration::from_secs(1);

/// Everything needed to call one step's component, shareable with the
/// tasks of its `for_each` items.
pub struct Caller {
    pub engine: Arc<Engine>,
    pub prepared: Arc<Prepared>,
    pub state: Arc<dyn StateStore>,
    /// The dry run's overlay; `None` in a real run.
    pub overlay: Option<Arc<Overlay>>,
    /// Where a `for_each` item's writes wait for their batch (a real
    /// run's `for_each` step, never a dry run's; see [`CommitQueue`]);
    /// `None`: each call's writes are kept on their own.
    pub queue: Option<Arc<CommitQueue>>,
    /// The run context every call of the step shares (no item, attempt 1).
    pub invocation: Invocation,
    pub timeout: Duration,
    /// The lists of its output the component may hand over in pages (see
    /// [`super::paged::output_rules`]); `None`: none.
    pub lists: Option<Arc<dyn ListRules>>,
    /// The output schema its component describes, which each output is
    /// checked against (the lists handed over in pages were checked item
    /// by item as they came); `None`: it describes none.
    pub output_schema: Option<Arc<InputSchema>>,
    /// The step's `retry`; `None` calls once.
    pub retry: Option<RetryPolicy>,
    /// The run's stop flag and lease guard, asked before each new attempt.
    pub cancel: Arc<AtomicBool>,
    pub guard: Option<Arc<dyn RunGuard>>,
}

/// A call that succeeded: the output (its size is its text's) and the
/// attempts it took.
pub struct Called {
    pub output: StepOutput,
    pub tries: Tries,
    /// Its state writes, for the step's commit queue; `None` when they
    /// are already kept (or there were none).
    pub committing: Option<Committing>,
}

/// A call's writes, for its step's [`CommitQueue`]. The caller hands them
/// over ([`Committing::queue`]) with the item's record, and decides what
/// happens while they are committed (a `for_each` item gives its place to
/// the next one).
pub struct Committing {
    queue: Arc<CommitQueue>,
    writes: Vec<Write>,
}

impl Committing {
    /// Queues the writes, with `record` (the item's history) to keep in
    /// the same transaction when the store can. They are queued when this
    /// returns: queue them before the next item may start, so its reads
    /// see them. The future resolves once they are durable.
    pub fn queue(
        self,
        record: Option<HistoryWrite>,
    ) -> impl Future<Output = Result<Recorded, CallError>> + use<> {
        let answer = self.queue.queue(self.writes, record);
        async move { answer.await.map_err(state_error) }
    }

    /// Queues the writes without a record and waits until they are durable.
    pub async fn committed(self) -> Result<(), CallError> {
        self.queue(None).await.map(|_| ())
    }
}

/// Why a call's writes were not kept: refused by the fencing of a lease
/// another replica took over ([`CallError::Fenced`]), or lost otherwise.
fn state_error(e: StoreError) -> CallError {
    match e.fenced {
        true => CallError::Fenced(e.message),
        false => CallError::State(e.to_string()),
    }
}

impl Failed {
    /// A call that failed on `error` after `tries`; stopped, not failed,
    /// when the error is the lost lease's ([`CallError::Fenced`]).
    pub fn after(error: CallError, tries: Tries) -> Failed {
        let stopped = match &error {
            CallError::Fenced(_) | CallError::LeaseLost(_) => {
                Some("the flow's lease was taken over by another replica".to_string())
            }
            _ => None,
        };
        Failed {
            error,
            tries,
            stopped,
        }
    }
}

/// What one successful attempt left: its output, and its writes when they
/// wait in the commit queue.
struct Attempted {
    output: StepOutput,
    committing: Option<Committing>,
}

/// The attempts of one call: how many were made, and the error of each
/// one that failed before the last.
#[derive(Debug, Clone)]
pub struct Tries {
    pub made: u32,
    pub failed: Vec<(u32, CallError)>,
}

impl Tries {
    /// As the run history keeps them, every text redacted.
    pub fn record(&self, redactor: &Redactor) -> Attempts {
        let failed = self
            .failed
            .iter()
            .map(|(attempt, e)| FailedAttempt {
                attempt: *attempt,
                kind: e.kind().to_string(),
                code: redactor.redact(e.code()),
                message: redactor.redact(&match e {
                    CallError::Reported { message, .. } => message.clone(),
                    other => other.to_string(),
                }),
            })
            .collect();
        Attempts {
            made: self.made,
            failed,
        }
    }
}

/// A call that failed, after every attempt its step's `retry` allowed, or
/// while it waited to try again.
#[derive(Debug, Clone)]
pub struct Failed {
    /// The last attempt's error.
    pub error: CallError,
    pub tries: Tries,
    /// Why no further attempt was made though one was due: the run was
    /// stopped, or its lease lost, while it waited. The call then ends as
    /// interrupted, not as a failure.
    pub stopped: Option<String>,
}

impl std::fmt::Display for Failed {
    /// The last error, and how many attempts were made when more than one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(why) = &self.stopped {
            let n = self.tries.made;
            return write!(f, " (attempt {n}; no further attempt: {why})");
        }
        match self.tries.made {
            0 | 1 => Ok(()),
            n if self.error.retryable() => write!(f, " (gave up after {n} attempts)"),
            n => write!(f, " (attempt {n}: {} is not retried)", self.error.kind()),
        }
    }
}

/// Which item of a `for_each` a call is for.
#[derive(Debug, Clone)]
pub struct ItemId {
    pub index: u64,
    pub key: Option<String>,
}

impl ItemId {
    /// The item at `index`, named by [`item_key`]: refused when that name
    /// would be blank.
    pub fn of(index: usize, item: &Value) -> Result<ItemId, BlankKey> {
        Ok(ItemId {
            index: index as u64,
            key: item_key(item)?,
        })
    }
}

impl Caller {
    /// Calls the component with `input` (JSON text, and the lists it reads
    /// in pages), its output (JSON text, with the lists it hands over in
    /// pages) at most `cap`, again while its step's `retry` allows (see the module
    /// docs), and keeps the state the successful attempt wrote: at once,
    /// or, with the step's commit queue, by handing it over to be
    /// committed with other items' ([`Called::committing`]).
    pub async fn call(
        &self,
        step: Arc<StepContext>,
        input: impl Into<StepInput>,
        item: Option<&ItemId>,
        cap: OutputCap,
    ) -> Result<Called, Failed> {
        let policy = self.retry.unwrap_or(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        });
        let mut failed = Vec::new();
        let mut input = input.into();
        let mut attempt = 1;
        loop {
            // The input is copied only while another attempt may follow
            // (a compare step's input can be hundreds of MiB).
            let text = if attempt < policy.max_attempts {
                input.clone()
            } else {
                std::mem::take(&mut input)
            };
            let result = self.attempt(step.clone(), text, item, cap, attempt).await;
            let error = match result {
                Ok(Attempted { output, committing }) => {
                    let tries = Tries {
                        made: attempt,
                        failed,
                    };
                    return Ok(Called {
                        output,
                        tries,
                        committing,
                    });
                }
                Err(e) => e,
            };
            let mut stopped = None;
            if error.retryable() && attempt < policy.max_attempts {
                match self.wait(backoff(&policy, attempt, 1.0)).await {
                    Ok(()) => {
                        failed.push((attempt, error));
                        attempt += 1;
                        continue;
                    }
                    Err(why) => stopped = Some(why),
                }
            }
            let tries = Tries {
                made: attempt,
                failed,
            };
            let mut failed = Failed::after(error, tries);
            failed.stopped = stopped.or(failed.stopped);
            return Err(failed);
        }
    }

    /// Waits `delay` before another attempt; `Err` says why no attempt
    /// follows: the run was stopped, or its lease lost, meanwhile.
    async fn wait(&self, delay: Duration) -> Result<(), String> {
        let stopped = || "the run was stopped while it waited to try again".to_string();
        let mut left = delay;
        while !left.is_zero() {
            if self.cancel.load(Ordering::SeqCst) {
                return Err(stopped());
            }
            let slice = left.min(WAIT_SLICE);
            tokio::time::sleep(slice).await;
            left -= slice;
        }
        if let Some(guard) = &self.guard
            && let Err(why) = guard.may_go_on().await
        {
            self.cancel.store(true, Ordering::SeqCst);
            return Err(why);
        }
        if self.cancel.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        Ok(())
    }

    /// One attempt, in a fresh instance, numbered `attempt` in its run context.
    async fn attempt(
        &self,
        step: Arc<StepContext>,
        input: StepInput,
        item: Option<&ItemId>,
        cap: OutputCap,
        attempt: u32,
    ) -> Result<Attempted, CallError> {
        let mut invocation = self.invocation.clone();
        invocation.attempt = attempt;
        if let Some(item) = item {
            invocation.item_index = Some(item.index);
            invocation.item_key = item.key.clone();
        }
        let call = Call {
            step,
            state: CallState::new(
                self.state.clone(),
                &invocation.flow,
                &invocation.run_id,
                self.overlay.clone(),
            )
            .after(self.queue.clone()),
            invocation,
            paged: input.paged,
            outputs: OutputLists::new(self.lists.clone(), cap),
            waiting: Waiting::default(),
        };
        let done = self
            .engine
            .call(&self.prepared, call, input.text, self.timeout)
            .await?;
        // Checked before its writes are kept: an unreadable output fails
        // the call like any other failure.
        let start: String = done.output.chars().take(40).collect();
        // Lists with items handed over: those items were checked as they came.
        let appended: Vec<String> = (done.lists.iter())
            .filter(|(_, list)| list.len > 0)
            .map(|(name, _)| name.clone())
            .collect();
        let output = splice::spliced(done.output, done.lists).map_err(|e| match e {
            SpliceError::Json(e) => CallError::InvalidOutput(format!(
                "its output is not valid JSON: {e} (output starts with {start:?})"
            )),
            other => CallError::InvalidOutput(format!("its output cannot be used: {other}")),
        })?;
        if let Some(schema) = &self.output_schema {
            let handed: Vec<&str> = appended.iter().map(String::as_str).collect();
            schema.check_output(&output, &handed).map_err(|e| {
                CallError::InvalidOutput(format!(
                    "its output does not fit the output schema it describes: {e}"
                ))
            })?;
            output.fits(schema);
        }
        let committing = match &self.queue {
            Some(queue) if !done.writes.is_empty() => Some(Committing {
                queue: queue.clone(),
                writes: state::batch(done.writes),
            }),
            _ => {
                self.keep(done.writes).await?;
                None
            }
        };
        Ok(Attempted { output, committing })
    }

    /// Makes a successful call's writes durable, or in a dry run visible to
    /// the rest of the run only.
    async fn keep(&self, writes: Writes) -> Result<(), CallError> {
        if writes.is_empty() {
            return Ok(());
        }
        if let Some(overlay) = &self.overlay {
            overlay.apply(writes);
            return Ok(());
        }
        let invocation = &self.invocation;
        self.state
            .apply(&invocation.flow, &invocation.run_id, state::batch(writes))
            .await
            .map_err(state_error)
    }
}
