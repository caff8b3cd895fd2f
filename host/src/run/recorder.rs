//! Writes a run's events into the store's run history as they happen, so a
//! crash leaves an honest partial record.
//!
//! Observers are called synchronously from the run; store calls are async
//! and may wait (on SQLite's lock, on PostgreSQL's network). So every write
//! goes, in the order it was made, through a channel to one task of its
//! own ([`HistoryWriter`]), which applies the writes queued for one run
//! together in one transaction, waiting a moment ([`LINGER`]) for more
//! when the queue runs dry, so items that end a few at a time share one.
//! Whoever needs the record complete — the scheduler after a run, `sluice
//! run` before it exits — awaits [`HistoryWriter::flush`].
//! A step's ledger entries (a first run adopts a whole tenant: tens of
//! thousands of rows) go in a lane of their own, written once every write
//! queued before them is, so they never hold up what comes after them
//! ([`HistoryWriter::flush_events`] waits for the other lane only), but
//! for the run's end, written once its ledger is. While the store cannot
//! be reached, writes are kept and tried again for a while ([`PATIENCE`]):
//! a database restart loses no record. A history that cannot be written
//! even so is reported once per run, and the run goes on: losing a record
//! must not lose work.
//! A run whose replica lost the flow's lease has its writes refused by the
//! store ([`sluice_store::StoreError::Fenced`]); that is reported once too,
//! and the run stops before its next step (its lease guard finds out).
//!
//! A `for_each` item whose state writes were committed with its record
//! ([`crate::state::CommitQueue`]) says so in its event
//! (`recorded: true`), and is not written again here.
//!
//! Each write carries the time its event happened, taken as the
//! [`Recorder`] sees it (observers are called as things happen), not when
//! the write lands: a batch written later, or behind a backlog, keeps the
//! run's and its steps' real times, so a run never looks shorter than the
//! steps inside it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sluice_store::{
    GateRecord, HistoryJson, HistoryWrite, ItemEnd, ItemStatus, NewRun, RunRef, RunStatus, StepEnd,
    StepStart, StepStatus, Store, StoreError, Trigger,
};
use tokio::sync::{Notify, mpsc, oneshot};

use super::events::{Observer, RunEvent, Status};
use super::ledger::KeyedEntries;
use super::payload::Payload;

/// The most writes applied in one transaction: enough to absorb a burst
/// of `for_each` items, small enough that one transaction stays short.
const MAX_BATCH: usize = 256;

/// How long the writer waits for more writes when the queue runs dry
/// before a batch is full. `for_each` items end a few at a time; a
/// transaction (and a hop to a blocking thread) for each handful cost
/// about as much as writing their rows, and waiting lets many share one.
/// The writes are queued, not awaited, so nothing waits on this but
/// [`HistoryWriter::flush`], which cuts the wait short.
const LINGER: Duration = Duration::from_millis(20);

/// The most ledger entries written in one transaction: they are all there
/// at once, so they need no waiting to fill a large batch.
const KEYED_BATCH: usize = 1024;

enum Job {
    /// Writes for one run (named in the warning if they fail).
    Write {
        run: RunRef,
        writes: Vec<HistoryWrite>,
    },
    /// Writes made once `ledger` answers: every ledger entry queued before
    /// them is written (a run is never recorded as ended with its ledger
    /// still to come).
    AfterLedger {
        run: RunRef,
        writes: Vec<HistoryWrite>,
        ledger: oneshot::Receiver<()>,
    },
    /// Answered once every job sent before it is done.
    Flush(oneshot::Sender<()>),
}

/// A job of the ledger lane.
enum LedgerJob {
    /// A step's ledger entries, made and written a batch at a time once
    /// `after` answers (every event written before them is).
    Keyed {
        run: RunRef,
        step: String,
        entries: KeyedEntries,
        /// When they were made (their items' end).
        at: DateTime<Utc>,
        after: oneshot::Receiver<()>,
    },
    /// Answered once every job sent before it is done.
    Flush(oneshot::Sender<()>),
}

/// The tasks that write to the history, each fed in order by a channel:
/// one for events, one for ledger entries.
pub struct HistoryWriter {
    sender: mpsc::UnboundedSender<Job>,
    ledger: mpsc::UnboundedSender<LedgerJob>,
    store: Store,
    /// Told by [`HistoryWriter::flush_events`], so the writer stops waiting
    /// for more writes to batch ([`LINGER`]).
    flushing: Arc<Notify>,
    /// The runs some of whose writes failed.
    warned: Warned,
}

impl HistoryWriter {
    /// Starts the writer tasks (on the current tokio runtime).
    pub fn start(store: Store) -> Arc<HistoryWriter> {
        Self::start_telling(store, Arc::new(|warning: String| eprintln!("{warning}")))
    }

    /// Starts the writer tasks, telling a run's lost writes with `tell`
    /// (`sluice serve`: in its log, in the log's format).
    pub fn start_telling(store: Store, tell: Tell) -> Arc<HistoryWriter> {
        let (sender, jobs) = mpsc::unbounded_channel();
        let (ledger, keyed) = mpsc::unbounded_channel();
        let flushing = Arc::new(Notify::new());
        let warned = Arc::new(WarnedRuns {
            runs: Mutex::new(HashMap::new()),
            tell,
            down_since: Mutex::new(None),
        });
        tokio::spawn(drain(store.clone(), jobs, flushing.clone(), warned.clone()));
        tokio::spawn(drain_ledger(store.clone(), keyed, warned.clone()));
        Arc::new(HistoryWriter {
            sender,
            ledger,
            store,
            flushing,
            warned,
        })
    }

    /// Whether some of run `run_id`'s history (its record, its ledger
    /// entries) could not be written: what `sluice runs` and `sluice
    /// ledger` show of it is incomplete. Known once the writes are flushed.
    pub fn lost_writes(&self, run_id: &str) -> Option<Lost> {
        (self.warned.runs.lock().unwrap_or_else(|e| e.into_inner()))
            .get(run_id)
            .copied()
    }

    /// A write to the same store (the flow's state) failed for now and
    /// is to be tried again: the outage is told, as for the history's
    /// own writes, once.
    pub fn store_unanswered(&self, e: &StoreError) {
        self.warned.may_wait(e);
    }

    /// A write to the same store succeeded: an outage told is over.
    pub fn store_answered(&self) {
        self.warned.store_answered();
    }

    /// The store written to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn send(&self, job: Job) {
        // The task ends only when every sender is gone, or with its
        // runtime: a failed send means the history is lost either way.
        let _ = self.sender.send(job);
    }

    /// Queues writes for `run`; they are made after every write queued before.
    pub fn write(&self, run: &RunRef, writes: Vec<HistoryWrite>) {
        self.send(Job::Write {
            run: run.clone(),
            writes,
        });
    }

    /// Queues writes for `run` to be made once every ledger entry queued so
    /// far is written, and after every write queued so far.
    fn write_after_ledger(&self, run: &RunRef, writes: Vec<HistoryWrite>) {
        let (done, ledger) = oneshot::channel();
        let _ = self.ledger.send(LedgerJob::Flush(done));
        self.send(Job::AfterLedger {
            run: run.clone(),
            writes,
            ledger,
        });
    }

    /// Queues a step's ledger entries, to be written after every write
    /// queued so far.
    fn send_keyed(&self, run: RunRef, step: String, entries: KeyedEntries, at: DateTime<Utc>) {
        let (done, after) = oneshot::channel();
        self.send(Job::Flush(done));
        let _ = self.ledger.send(LedgerJob::Keyed {
            run,
            step,
            entries,
            at,
            after,
        });
    }

    /// Waits until every write queued so far is made, ledger entries too.
    pub async fn flush(&self) {
        self.flush_events().await;
        let (done, wait) = oneshot::channel();
        let _ = self.ledger.send(LedgerJob::Flush(done));
        let _ = wait.await;
    }

    /// Waits until every write queued so far is made, but for ledger
    /// entries (which may take a while, and nothing waits on).
    pub async fn flush_events(&self) {
        let (done, wait) = oneshot::channel();
        self.send(Job::Flush(done));
        self.flushing.notify_one();
        let _ = wait.await;
    }
}

/// Where a warning goes: one line, already phrased.
pub type Tell = Arc<dyn Fn(String) + Send + Sync>;

/// Who was warned that their run's history could not be written: once
/// per run, whichever lane found out.
type Warned = Arc<WarnedRuns>;

pub struct WarnedRuns {
    /// The runs some of whose history was not written, and why.
    runs: Mutex<HashMap<String, Lost>>,
    tell: Tell,
    /// Since when the store has failed to answer, if it has.
    down_since: Mutex<Option<std::time::Instant>>,
}

/// How long the history's writes are kept and tried again while the store
/// cannot be reached.
const PATIENCE: Duration = crate::state::STORE_PATIENCE;

/// The pause between two tries while the store cannot be reached.
const RETRY_PAUSE: Duration = crate::state::STORE_RETRY_PAUSE;

impl WarnedRuns {
    /// A write failed for now: whether to try it again, telling the first
    /// failure of an outage. Once the store has failed for [`PATIENCE`],
    /// no write waits (each is tried once, and lost).
    fn may_wait(&self, e: &StoreError) -> bool {
        let mut down = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        let since = match *down {
            Some(since) => since,
            None => {
                let now = std::time::Instant::now();
                *down = Some(now);
                (self.tell)(format!(
                    "warning: the run history and the flow's state cannot be written at the moment ({e}); the run waits, its writes are kept and tried again every {} for up to {}",
                    humantime::format_duration(RETRY_PAUSE),
                    humantime::format_duration(PATIENCE)
                ));
                now
            }
        };
        since.elapsed() < PATIENCE
    }

    /// A write succeeded: an outage is over, and is told so.
    fn store_answered(&self) {
        let mut down = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = down.take() {
            (self.tell)(format!(
                "the run history and the flow's state are written again: the store answered {} after the first write it refused",
                humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()))
            ));
        }
    }
}

/// Why some of a run's history was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// The store refused or failed the writes: the history is incomplete.
    Failed,
    /// The flow's lease was taken over: the new owner records the run
    /// from there on, and the history is as it should be.
    TakenOver,
}

fn warn_once(warned: &Warned, run: &RunRef, e: &StoreError) {
    let why = match e {
        StoreError::Fenced { .. } => Lost::TakenOver,
        _ => Lost::Failed,
    };
    let first = (warned.runs.lock().unwrap_or_else(|e| e.into_inner()))
        .insert(run.id.clone(), why)
        .is_none();
    if first {
        (warned.tell)(format!("warning: {}", not_written(run, e)));
    }
}

/// Writes the ledger lane's jobs in order, each once the events before it
/// are written (its run's row among them).
async fn drain_ledger(store: Store, mut jobs: mpsc::UnboundedReceiver<LedgerJob>, warned: Warned) {
    while let Some(job) = jobs.recv().await {
        match job {
            LedgerJob::Flush(done) => {
                let _ = done.send(());
            }
            LedgerJob::Keyed {
                run,
                step,
                entries,
                at,
                after,
            } => {
                let _ = after.await;
                write_keyed(&store, &run, (&step, at), &entries, &warned).await;
            }
        }
    }
}

/// Applies the jobs in order; consecutive writes for one run go together.
async fn drain(
    store: Store,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    flushing: Arc<Notify>,
    warned: Warned,
) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let (run, mut writes) = match job {
            Job::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Job::AfterLedger {
                run,
                writes,
                ledger,
            } => {
                let _ = ledger.await;
                if let Err(e) = write_batch(&store, &run, writes, &warned).await {
                    warn_once(&warned, &run, &e);
                }
                continue;
            }
            Job::Write { run, writes } => (run, writes),
        };
        next = gather(&mut jobs, &flushing, &run, &mut writes).await;
        if let Err(e) = write_batch(&store, &run, writes, &warned).await {
            warn_once(&warned, &run, &e);
        }
    }
}

/// Adds to `writes` the writes for `run` queued after them, up to
/// [`MAX_BATCH`], waiting once ([`LINGER`], or until a flush is asked
/// for) for more if the queue runs dry first; returns the job that ended
/// the batch, if one did.
async fn gather(
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    flushing: &Notify,
    run: &RunRef,
    writes: &mut Vec<HistoryWrite>,
) -> Option<Job> {
    let mut lingered = false;
    while writes.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(Job::Write { run: r, writes: w }) if r == *run => writes.extend(w),
            Ok(other) => return Some(other),
            Err(mpsc::error::TryRecvError::Empty) if !lingered => {
                lingered = true;
                tokio::select! {
                    _ = tokio::time::sleep(LINGER) => {}
                    _ = flushing.notified() => {}
                }
            }
            Err(_) => return None,
        }
    }
    None
}

/// A step's ledger entries as its items, [`KEYED_BATCH`] to a transaction,
/// each batch made only as it is written: however many there are, only
/// one batch of them is held at once.
async fn write_keyed(
    store: &Store,
    run: &RunRef,
    (step, at): (&str, DateTime<Utc>),
    entries: &KeyedEntries,
    warned: &Warned,
) {
    for first in (0..entries.len()).step_by(KEYED_BATCH) {
        let batch = entries.page_for_history(first, KEYED_BATCH);
        let writes = keyed_items(step, batch, first, at).collect();
        if let Err(e) = write_batch(store, run, writes, warned).await {
            warn_once(warned, run, &e);
        }
    }
}

/// Why a run's record stops here, and what becomes of the run.
fn not_written(run: &RunRef, e: &StoreError) -> String {
    match e {
        // The lease is gone, so the run stops before its next step (its
        // guard asks the store) and the record is the new owner's.
        StoreError::Fenced { .. } => format!(
            "run {} is no longer recorded here ({e}); the run stops before its next step and its record is left to the flow's new owner",
            run.id
        ),
        _ => format!(
            "the run history could not be written for run {} ({e}); its record is incomplete (the run is not stopped for it)",
            run.id
        ),
    }
}

/// Writes a batch in one transaction. While the store cannot be reached
/// (a database restarting, a lost connection) the batch is kept and tried
/// again, for up to [`PATIENCE`] from the first failure: a short outage
/// loses no record, and the run's own outcome is written by the replica
/// that knows it, rather than guessed by another that finds its lease
/// lapsed. If the batch fails for another reason than the lease, each
/// write is tried on its own, so one bad write does not take the others
/// with it.
async fn write_batch(
    store: &Store,
    run: &RunRef,
    writes: Vec<HistoryWrite>,
    warned: &Warned,
) -> Result<(), StoreError> {
    let failed = loop {
        match store.write(run, writes.clone()).await {
            Ok(()) => {
                warned.store_answered();
                return Ok(());
            }
            Err(e) if e.is_transient() => match warned.may_wait(&e) {
                true => tokio::time::sleep(RETRY_PAUSE).await,
                false => return Err(e),
            },
            Err(e) => break e,
        }
    };
    match failed {
        e @ StoreError::Fenced { .. } => Err(e),
        e if writes.len() == 1 => Err(e),
        _ => {
            let mut first = Ok(());
            for w in writes {
                if let Err(e) = store.write_one(run, w).await
                    && first.is_ok()
                {
                    first = Err(e);
                }
            }
            first
        }
    }
}

/// How a run is recorded: its file, trigger, replica and fencing number.
#[derive(Debug, Clone)]
pub struct RecordAs {
    pub flow_file: String,
    pub trigger: Trigger,
    /// The replica running it.
    pub replica: Option<String>,
    /// The fencing number of the flow's lease, when the run holds one.
    pub fence: Option<i64>,
}

/// Records one run's events through a [`HistoryWriter`].
pub struct Recorder {
    writer: Arc<HistoryWriter>,
    record_as: RecordAs,
    run: Mutex<Option<RunRef>>,
}

impl Recorder {
    pub fn new(writer: Arc<HistoryWriter>, record_as: RecordAs) -> Self {
        Self {
            writer,
            record_as,
            run: Mutex::new(None),
        }
    }
}

fn step_status(s: Status) -> StepStatus {
    match s {
        Status::Succeeded => StepStatus::Succeeded,
        Status::Failed => StepStatus::Failed,
        Status::Skipped => StepStatus::Skipped,
        Status::Interrupted => StepStatus::Interrupted,
    }
}

fn item_status(s: Status) -> ItemStatus {
    match s {
        Status::Succeeded => ItemStatus::Succeeded,
        Status::Failed => ItemStatus::Failed,
        Status::Skipped => ItemStatus::Skipped,
        Status::Interrupted => ItemStatus::Interrupted,
    }
}

fn run_status(s: Status) -> RunStatus {
    match s {
        Status::Succeeded => RunStatus::Succeeded,
        Status::Failed => RunStatus::Failed,
        Status::Skipped => RunStatus::Skipped,
        Status::Interrupted => RunStatus::Interrupted,
    }
}

impl Observer for Recorder {
    fn event(&self, event: &RunEvent) {
        if matches!(event, RunEvent::Log { .. } | RunEvent::StillWorking { .. }) {
            return;
        }
        let run = {
            let mut run = self.run.lock().unwrap_or_else(|e| e.into_inner());
            if let RunEvent::RunStarted { run_id, flow, .. } = event {
                *run = Some(RunRef {
                    id: run_id.clone(),
                    flow: flow.clone(),
                    fence: self.record_as.fence,
                });
            }
            run.clone()
        };
        // Events before the run started have no run to belong to.
        let Some(run) = run else {
            return;
        };
        // Now is when the event happened: the run calls its observers as
        // things happen.
        let at = Utc::now();
        if let RunEvent::Keyed { step, entries } = event {
            // Many at once (a first run adopts a whole tenant): the writer
            // makes and writes them in batches (see `write_keyed`).
            (self.writer).send_keyed(run, step.clone(), entries.clone(), at);
            return;
        }
        // Committed with its state writes already.
        if let RunEvent::ItemFinished { recorded: true, .. } = event {
            return;
        }
        // Its end waits for its ledger: a run recorded as ended has it all.
        if let RunEvent::RunFinished { .. } = event
            && let Some(write) = history_write(&self.record_as, event, at)
        {
            self.writer.write_after_ledger(&run, vec![write]);
            return;
        }
        if let Some(write) = history_write(&self.record_as, event, at) {
            self.writer.write(&run, vec![write]);
        }
    }
}

/// A step's ledger entries as its items, in order, the first at `first`.
fn keyed_items<'a>(
    step: &'a str,
    entries: impl Iterator<Item = (String, HistoryJson)> + 'a,
    first: usize,
    at: DateTime<Utc>,
) -> impl Iterator<Item = HistoryWrite> + 'a {
    entries.enumerate().map(move |(n, (key, detail))| {
        HistoryWrite::Item(ItemEnd {
            step: step.to_string(),
            index: first + n,
            key: Some(key),
            status: ItemStatus::Succeeded,
            input: HistoryJson::null(),
            output: Some(detail),
            error: None,
            connections: json!({}),
            duration_ms: 0,
            attempts: None,
            ended_at: at,
            spends_approval: None,
        })
    })
}

/// An item's end, which happened `at`, as its record in the run history
/// (`None` for any other event): what the recorder would write for it.
pub fn item_record(event: &RunEvent, at: DateTime<Utc>) -> Option<HistoryWrite> {
    let RunEvent::ItemFinished {
        step,
        index,
        key,
        status,
        input,
        output,
        error,
        duration,
        connections,
        attempts,
        spends_approval,
        ..
    } = event
    else {
        return None;
    };
    Some(HistoryWrite::Item(ItemEnd {
        step: step.clone(),
        index: *index,
        key: key.clone(),
        status: item_status(*status),
        input: input.capped(),
        output: output.as_ref().map(Payload::capped),
        error: error.clone(),
        connections: json!(connections),
        duration_ms: duration.as_millis() as u64,
        attempts: Some(attempts.clone()),
        ended_at: at,
        spends_approval: spends_approval.clone(),
    }))
}

/// One event, which happened `at`, as a history write.
fn history_write(
    record_as: &RecordAs,
    event: &RunEvent,
    at: DateTime<Utc>,
) -> Option<HistoryWrite> {
    Some(match event {
        RunEvent::RunStarted {
            run_id,
            flow,
            dry_run,
            output_dir,
        } => HistoryWrite::StartRun(NewRun {
            id: run_id.clone(),
            flow: flow.clone(),
            flow_file: record_as.flow_file.clone(),
            trigger: record_as.trigger,
            // A replay changes nothing either: the history keeps it as a
            // rehearsal, so no ledger or managed-people query counts it.
            dry_run: *dry_run || record_as.trigger == Trigger::Replay,
            output_dir: output_dir.display().to_string(),
            replica: record_as.replica.clone(),
            started_at: at,
        }),
        RunEvent::StepStarted {
            step,
            component,
            input,
            items,
        } => HistoryWrite::StartStep(StepStart {
            step: step.clone(),
            component: component.clone(),
            input: input.capped_value(),
            items_total: *items,
            started_at: at,
        }),
        RunEvent::ItemFinished { .. } => return item_record(event, at),
        RunEvent::StepFinished {
            step,
            component,
            status,
            output,
            error,
            duration,
            connections,
            attempts,
            ..
        } => HistoryWrite::FinishStep(StepEnd {
            step: step.clone(),
            component: component.clone(),
            status: step_status(*status),
            output: output.as_ref().map(Payload::capped_value),
            error: error.clone(),
            connections: json!(connections),
            duration_ms: duration.as_millis() as u64,
            attempts: attempts.clone(),
            ended_at: at,
        }),
        RunEvent::Artifact { name, path, .. } => HistoryWrite::Artifact {
            name: name.clone(),
            path: path.display().to_string(),
        },
        RunEvent::RunFinished { status, error, .. } => HistoryWrite::FinishRun {
            status: run_status(*status),
            error: error.clone(),
            ended_at: at,
        },
        RunEvent::ItemHeld {
            step,
            index,
            key,
            held,
            input,
        } => HistoryWrite::Item(ItemEnd {
            step: step.clone(),
            index: *index,
            key: Some(key.clone()),
            status: held.item_status(),
            input: input.capped(),
            output: None,
            error: None,
            connections: json!({}),
            duration_ms: 0,
            attempts: None,
            ended_at: at,
            spends_approval: None,
        }),
        RunEvent::ApprovalGate { summary, revision } => HistoryWrite::Gate(GateRecord {
            step: summary.step.clone(),
            plan_id: summary.plan.clone(),
            reason: summary.reason.clone(),
            approved: summary.approved,
            unapproved: summary.unapproved,
            waiting: summary.waiting.len() as u64,
            rejected: summary.rejected.len() as u64,
            closed: summary.closed,
            revision: *revision,
            approve: summary.approve.clone(),
        }),
        RunEvent::Log { .. } | RunEvent::Keyed { .. } | RunEvent::StillWorking { .. } => {
            return None;
        }
    })
}

/// A run of `flow` started by hand now, as tests record one.
#[cfg(test)]
pub(crate) fn started_by_hand(id: &str, flow: &str) -> NewRun {
    NewRun {
        id: id.into(),
        flow: flow.into(),
        flow_file: format!("{flow}.toml"),
        trigger: Trigger::Manual,
        dry_run: false,
        output_dir: String::new(),
        replica: None,
        started_at: Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::output::StepOutput;
    use serde_json::Value;

    fn record_as() -> RecordAs {
        RecordAs {
            flow_file: "f.toml".into(),
            trigger: Trigger::Manual,
            replica: Some("here".into()),
            fence: None,
        }
    }

    #[tokio::test]
    async fn writes_in_order_and_flushes() {
        let r = started().await;
        for i in 0..50 {
            r.recorder.event(&RunEvent::ItemFinished {
                step: "each".into(),
                index: i,
                key: None,
                status: Status::Succeeded,
                input: Payload::tree(Arc::new(json!(i)), &Default::default()),
                output: None,
                error: None,
                duration: std::time::Duration::from_millis(1),
                done: i + 1,
                total: 50,
                failed: 0,
                connections: Default::default(),
                attempts: sluice_store::Attempts {
                    made: 1,
                    failed: Vec::new(),
                },
                recorded: false,
                spends_approval: None,
            });
        }
        r.recorder.event(&RunEvent::RunFinished {
            status: Status::Succeeded,
            setbacks: Default::default(),
            error: None,
            duration: std::time::Duration::from_millis(60),
        });
        r.writer.flush().await;
        let d = r.store.run_detail("r1").await.unwrap().unwrap();
        assert_eq!(d.run.status, "succeeded");
        assert_eq!(d.run.replica.as_deref(), Some("here"));
        assert_eq!(d.items.len(), 50);
    }

    /// A run whose history cannot be written is told once, where the
    /// writer was told to tell it (`sluice serve`: its log, as JSON when
    /// asked), not always on stderr as plain text.
    #[tokio::test]
    async fn lost_writes_are_told_where_the_writer_was_told_to() {
        let store = Store::in_memory().await.unwrap();
        let told: Arc<Mutex<Vec<String>>> = Arc::default();
        let tell: Tell = {
            let told = told.clone();
            Arc::new(move |line: String| told.lock().unwrap().push(line))
        };
        let writer = HistoryWriter::start_telling(store.clone(), tell);
        let dir = tempfile::tempdir().unwrap();
        // Fenced writes for a flow whose lease the store never gave out.
        let recorder = Recorder::new(
            writer.clone(),
            RecordAs {
                fence: Some(7),
                ..record_as()
            },
        );
        for _ in 0..2 {
            recorder.event(&RunEvent::RunStarted {
                run_id: "r1".into(),
                flow: "f".into(),
                dry_run: false,
                output_dir: dir.path().join("runs/r1"),
            });
        }
        writer.flush().await;
        assert_eq!(writer.lost_writes("r1"), Some(Lost::TakenOver));
        let told = told.lock().unwrap().clone();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(
            told[0].starts_with("warning: ") && told[0].contains("r1"),
            "{told:?}"
        );
    }

    /// A recorder over an in-memory store whose run `r1` has started.
    struct Recording {
        store: Store,
        writer: Arc<HistoryWriter>,
        recorder: Recorder,
        _dir: tempfile::TempDir,
    }

    async fn started() -> Recording {
        let store = Store::in_memory().await.unwrap();
        let writer = HistoryWriter::start(store.clone());
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::new(writer.clone(), record_as());
        recorder.event(&RunEvent::RunStarted {
            run_id: "r1".into(),
            flow: "f".into(),
            dry_run: false,
            output_dir: dir.path().join("runs/r1"),
        });
        Recording {
            store,
            writer,
            recorder,
            _dir: dir,
        }
    }

    /// Items that end faster than they are written share transactions;
    /// however many batches that takes, every one is there after a flush,
    /// in order, with what the run gave.
    #[tokio::test]
    async fn items_over_several_batches_are_all_written_before_flush_returns() {
        let r = started().await;
        let redactor = crate::redact::Redactor::new(["s3cret-value".to_string()]);
        let total = MAX_BATCH * 2 + 7;
        for i in 0..total {
            let input = json!({"n": i, "note": "s3cret-value"});
            r.recorder.event(&RunEvent::ItemFinished {
                step: "each".into(),
                index: i,
                key: Some(format!("k{i}")),
                status: Status::Succeeded,
                input: Payload::text(Arc::new(input.to_string()), &redactor),
                output: Some(Payload::output(
                    StepOutput::of(&json!({"done": i})),
                    &redactor,
                )),
                error: None,
                duration: std::time::Duration::from_millis(1),
                done: i + 1,
                total,
                failed: 0,
                connections: Default::default(),
                attempts: sluice_store::Attempts {
                    made: 1,
                    failed: Vec::new(),
                },
                recorded: false,
                spends_approval: None,
            });
        }
        r.writer.flush().await;
        let d = r.store.run_detail("r1").await.unwrap().unwrap();
        assert_eq!(d.items.len(), total);
        for (i, item) in d.items.iter().enumerate() {
            assert_eq!(item.index, i as u64);
            assert_eq!(item.key.as_deref(), Some(format!("k{i}").as_str()));
            assert_eq!(item.input, Some(json!({"n": i, "note": "[redacted]"})));
            assert_eq!(item.output, Some(json!({"done": i})));
        }
    }

    /// A step's ledger entries, more than one batch of them, are recorded
    /// as its items in order, keyed, each redacted.
    #[tokio::test]
    async fn ledger_entries_are_recorded_in_order_across_batches() {
        let r = started().await;
        let redactor = crate::redact::Redactor::new(["s3cret-value".to_string()]);
        let total = KEYED_BATCH * 2 + 3;
        let note = |i: usize| {
            if i.is_multiple_of(100) {
                "s3cret-value"
            } else {
                "ok"
            }
        };
        let list: Vec<Value> = (0..total)
            .map(|i| json!({"key": format!("u{i}@x"), "note": note(i)}))
            .collect();
        let output = StepOutput::of(&json!({ "adopted": list }));
        let (entries, _) = super::super::ledger::entries(&["adopted".into()], &output, &redactor);
        r.recorder.event(&RunEvent::Keyed {
            step: "diff".into(),
            entries: entries.unwrap(),
        });
        r.writer.flush().await;
        let d = r.store.run_detail("r1").await.unwrap().unwrap();
        assert_eq!(d.items.len(), total);
        for (i, item) in d.items.iter().enumerate() {
            let key = format!("u{i}@x");
            let shown = if i.is_multiple_of(100) {
                "[redacted]"
            } else {
                "ok"
            };
            assert_eq!(item.index, i as u64);
            assert_eq!(item.key.as_deref(), Some(key.as_str()));
            assert_eq!(item.output, Some(json!({"key": key, "note": shown})));
        }
    }

    /// Ledger entries go in a lane of their own, but a run is recorded as
    /// ended only once its whole ledger is written: once the events are
    /// (`flush_events`, not `flush`), so is every entry.
    #[tokio::test]
    async fn a_run_is_recorded_as_ended_only_with_its_whole_ledger() {
        let r = started().await;
        let total = KEYED_BATCH * 3 + 1;
        let list: Vec<Value> = (0..total)
            .map(|i| json!({"key": format!("u{i}@x")}))
            .collect();
        let output = StepOutput::of(&json!({ "adopted": list }));
        let (entries, _) =
            super::super::ledger::entries(&["adopted".into()], &output, &Default::default());
        r.recorder.event(&RunEvent::Keyed {
            step: "diff".into(),
            entries: entries.unwrap(),
        });
        r.recorder.event(&RunEvent::RunFinished {
            status: Status::Succeeded,
            setbacks: Default::default(),
            error: None,
            duration: std::time::Duration::from_millis(1),
        });
        r.writer.flush_events().await;
        let d = r.store.run_detail("r1").await.unwrap().unwrap();
        assert_eq!(d.run.status, "succeeded");
        assert_eq!(d.items.len(), total);
    }

    /// Writes that land together (here all in one batch, as behind a
    /// backlog) keep the times their events happened: the run is as long
    /// as the step it waited for, and the step lies inside it.
    #[tokio::test]
    async fn times_are_when_events_happen_not_when_they_are_written() {
        // The writer shares this single-threaded runtime, so nothing is
        // written until the test awaits: every write lands in one batch.
        let r = started().await;
        let nap = std::time::Duration::from_millis(30);
        let step = |started: bool| {
            if started {
                RunEvent::StepStarted {
                    step: "nap".into(),
                    component: "c".into(),
                    input: Payload::tree(Arc::new(json!({})), &Default::default()),
                    items: None,
                }
            } else {
                RunEvent::StepFinished {
                    step: "nap".into(),
                    component: "c".into(),
                    status: Status::Succeeded,
                    output: None,
                    error: None,
                    duration: nap,
                    connections: Default::default(),
                    attempts: None,
                    memory: None,
                }
            }
        };
        std::thread::sleep(std::time::Duration::from_millis(5));
        r.recorder.event(&step(true));
        std::thread::sleep(nap);
        r.recorder.event(&step(false));
        std::thread::sleep(std::time::Duration::from_millis(5));
        r.recorder.event(&RunEvent::RunFinished {
            status: Status::Succeeded,
            setbacks: Default::default(),
            error: None,
            duration: nap,
        });
        r.writer.flush().await;
        let d = r.store.run_detail("r1").await.unwrap().unwrap();
        let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
        let s = &d.steps[0];
        let (run_start, run_end) = (
            at(&d.run.started_at),
            at(d.run.ended_at.as_deref().unwrap()),
        );
        let (step_start, step_end) = (at(&s.started_at), at(s.ended_at.as_deref().unwrap()));
        assert!(
            run_start < step_start && step_start < step_end && step_end < run_end,
            "{d:?}"
        );
        assert!((step_end - step_start).num_milliseconds() >= 30, "{d:?}");
        assert!(
            d.run.duration_ms.unwrap() >= s.duration_ms.unwrap() + 10,
            "{d:?}"
        );
    }

    #[tokio::test]
    async fn one_bad_write_in_a_batch_does_not_lose_the_others() {
        let store = Store::in_memory().await.unwrap();
        let writer = HistoryWriter::start(store.clone());
        let run = RunRef::unfenced("r2", "f");
        let start = HistoryWrite::StartRun(started_by_hand("r2", "f"));
        // Finishing a run that does not exist fails; the start beside it lands.
        let bad = RunRef::unfenced("nope", "f");
        writer.write(&run, vec![start]);
        writer.write(
            &bad,
            vec![HistoryWrite::FinishRun {
                status: RunStatus::Succeeded,
                error: None,
                ended_at: Utc::now(),
            }],
        );
        writer.write(
            &run,
            vec![HistoryWrite::FinishRun {
                status: RunStatus::Succeeded,
                error: None,
                ended_at: Utc::now(),
            }],
        );
        writer.flush().await;
        let runs = store.list_runs(None, 10).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, "succeeded");
    }
}
