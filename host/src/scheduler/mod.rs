//! `sluice serve`: runs flows at the times their schedules give.
//!
//! - Each served flow file has a timer ([`timer`]) that sends its firings;
//!   the serving loop starts the runs, so state lives in one place.
//! - A firing that comes while the flow's previous run is still going is
//!   skipped and recorded as skipped.
//! - Several replicas may serve the same flows on one store: each firing
//!   is claimed by exactly one of them, and a run holds its flow's lease
//!   while it goes ([`replicas`]; the [`Host`] asks the store). Runs of different flows overlap
//!   freely. Missed firings are not replayed ([`timer`]).
//! - Flow files are watched by content ([`sources`]): a changed file is
//!   reloaded at its next firing and at every rescan — each
//!   [`Scheduler::rescan_every`] (a minute) and at once on SIGHUP. A rescan
//!   also lists the paths again: a new (or newly fixed) file is served, a
//!   removed one retired (a run of it in progress finishes). A file found
//!   gone at its firing (or at a "run now") is retired there and then,
//!   and nothing runs. Of two files of one flow `name` (whose state, lease
//!   and approval plans they would share) the one served already keeps
//!   it, at start the first in path order; the other is refused until the
//!   name is free. A change that
//!   does not validate keeps the previous version and says why; a changed
//!   schedule re-arms the timer at once, and a firing of the old schedule
//!   that the new one does not have is not run.
//! - SIGINT/SIGTERM stop the firing; running steps (and started `for_each`
//!   items) finish within the grace period; a run still going after it, or
//!   after a second signal, is recorded as interrupted. A run whose task
//!   panics is recorded as failed with the panic's message, and its flow
//!   keeps firing.
//! - A [`control::Control`] handle (the web console's) lists the served
//!   flows, starts a run now, and checks that the serving loop answers.

pub mod clock;
pub mod control;
pub mod events;
pub mod replicas;
pub mod sources;
pub mod timer;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinError, JoinSet};

use self::clock::{Clock, SystemClock};
use self::control::{Control, Request, RunNowRefused, ServedFlow};
pub use self::events::ServeEvent;
pub use self::replicas::Busy;
use self::sources::{Fingerprint, fingerprint};
use self::timer::{Firing, Tick};
use crate::flow::Flow;
use crate::flow::schedule::Schedule;
use crate::redact::Redactor;
use crate::run::{Observer, RunGuard, RunOptions, Runner, Status};

/// What the scheduler needs from the rest of the host: how to load a flow,
/// how to watch and record a run, and where runs write their files.
pub trait Host: Send + Sync + 'static {
    /// Loads and validates a flow file; the error is the full report.
    fn load(&self, path: &Path) -> Result<Flow, String>;
    /// The observer for a new run (progress and history).
    fn observer(
        &self,
        flow: &Flow,
        run_id: &str,
        trigger: &str,
        options: &RunOptions,
    ) -> Arc<dyn Observer>;
    /// Whether this host takes the firing of `flow` at `at`, to run it as
    /// `run_id` (of several replicas on one store, exactly one does).
    fn claim(
        &self,
        flow: &Flow,
        at: DateTime<Utc>,
        run_id: &str,
    ) -> impl Future<Output = bool> + Send;
    /// Takes what a run needs before it starts (the flow's lease, kept
    /// while it runs; `cancel` stops the run if it is lost), and the guard
    /// the run asks before each step, if any; `Err` says why the run
    /// cannot start now.
    fn begin(
        &self,
        flow: &Flow,
        run_id: &str,
        cancel: Arc<AtomicBool>,
    ) -> impl Future<Output = Result<Option<Arc<dyn RunGuard>>, Busy>> + Send;
    /// A run's task is over: once its record is written, what
    /// [`Host::begin`] took is given back.
    fn end(&self, run_id: &str) -> impl Future<Output = ()> + Send;
    /// Records a firing skipped because the previous run was still going,
    /// as run `run_id` (the id its claim named).
    fn record_skipped(&self, flow: &Flow, run_id: &str, reason: &str);
    /// Records a run that was stopped without finishing.
    fn record_interrupted(&self, flow: &Flow, run_id: &str, reason: &str);
    /// Records a run whose task died (a panic) before it could end itself.
    fn record_failed(&self, flow: &Flow, run_id: &str, reason: &str);
    /// Resolves once everything recorded so far is written (when the host
    /// stops, it also gives back what runs still hold).
    fn flush(&self) -> impl Future<Output = ()> + Send;
    fn output_dir(&self, run_id: &str) -> PathBuf;
    /// Something the operator should know.
    fn event(&self, event: ServeEvent);
    /// Where a run keeps approval plans (the store its history goes to,
    /// with the run's fencing number); `None`: a step with `approval`
    /// fails and runs nothing.
    fn approvals(&self, _flow: &Flow, _run_id: &str) -> Option<crate::run::ApprovalStore> {
        None
    }
    /// Where a run keeps its flow's state (the store its history goes to,
    /// with the run's fencing number); `None`: the runner's, in memory.
    fn state(&self, _flow: &Flow, _run_id: &str) -> Option<Arc<dyn crate::state::StateStore>> {
        None
    }
}

/// How far a stop has gone: the first SIGINT/SIGTERM stops gracefully,
/// the second at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shutdown {
    #[default]
    No,
    Graceful,
    Now,
}

impl Shutdown {
    /// One more stop signal.
    pub fn escalate(&mut self) {
        *self = match self {
            Shutdown::No => Shutdown::Graceful,
            _ => Shutdown::Now,
        };
    }
}

/// One served flow file.
struct Entry {
    path: PathBuf,
    flow: Mutex<Arc<Flow>>,
    /// The content last loaded (or tried).
    fingerprint: Mutex<Option<Fingerprint>>,
    /// The schedule its timer follows; replacing it re-arms the timer.
    schedule: watch::Sender<Option<Schedule>>,
    /// The rescan that admitted it (0: at start).
    admitted_in: u64,
    /// The `name` its last change took from another served file, which
    /// kept it: that change is tried again once the name is free.
    name_taken: Mutex<Option<String>>,
}

impl Entry {
    fn new(path: &Path, flow: Flow, print: Option<Fingerprint>, admitted_in: u64) -> Entry {
        Entry {
            path: path.to_path_buf(),
            schedule: watch::Sender::new(flow.schedule.clone()),
            flow: Mutex::new(Arc::new(flow)),
            fingerprint: Mutex::new(print),
            admitted_in,
            name_taken: Mutex::new(None),
        }
    }

    fn flow(&self) -> Arc<Flow> {
        lock(&self.flow).clone()
    }
}

/// The flows with a run going, by name, with that run's id: by name, not
/// by file, so a copy of a flow file in a served folder cannot run the
/// same flow twice at once.
type RunningFlows = Arc<Mutex<HashMap<String, String>>>;

/// Takes a flow's place among the running ones, if it is free, and gives it
/// back when its run's task ends: normally, by a panic, or aborted (even
/// before it first ran).
struct RunningFlag {
    running: RunningFlows,
    flow: String,
}

impl RunningFlag {
    /// The flag for run `run_id`; `Err` gives the id of the flow's run
    /// that holds it.
    fn take(running: &RunningFlows, flow: &str, run_id: &str) -> Result<RunningFlag, String> {
        let mut flows = lock(running);
        if let Some(holder) = flows.get(flow) {
            return Err(holder.clone());
        }
        flows.insert(flow.to_string(), run_id.to_string());
        Ok(RunningFlag {
            running: running.clone(),
            flow: flow.to_string(),
        })
    }
}

impl Drop for RunningFlag {
    fn drop(&mut self) {
        lock(&self.running).remove(&self.flow);
    }
}

struct Served {
    entry: Arc<Entry>,
    timer: Option<AbortHandle>,
}

/// A run in progress, by its task.
struct InFlight {
    run_id: String,
    flow: Arc<Flow>,
    cancel: Arc<AtomicBool>,
    /// The run's own redactor, which knows the tokens it obtained too.
    redactor: Redactor,
    /// Whether the run started: a firing another replica claimed, or one
    /// skipped, has no run to record.
    started: Arc<AtomicBool>,
}

/// What exists only while serving.
struct Live {
    fire: mpsc::UnboundedSender<Firing<PathBuf>>,
    runs: JoinSet<()>,
    inflight: HashMap<tokio::task::Id, InFlight>,
}

/// How long aborted runs get to drop their work before they are recorded
/// as interrupted. Aborting a run drops its `for_each` items unawaited; an
/// item whose call completes in the poll that is under way may still record
/// its end after the run is marked interrupted, which the record tolerates.
const ABORT_SETTLE: Duration = Duration::from_secs(2);

/// How long a stop at once waits for the history to write what is queued.
const FLUSH_WHEN_STOPPING_AT_ONCE: Duration = Duration::from_secs(5);

pub struct Scheduler<H: Host> {
    host: Arc<H>,
    runner: Runner,
    /// The files and directories given, listed again at each rescan.
    paths: Vec<PathBuf>,
    served: BTreeMap<PathBuf, Served>,
    /// Files found but not served (invalid, unscheduled, or naming a flow
    /// another file serves) with the content last tried, so each is
    /// reported once per change.
    unserved: BTreeMap<PathBuf, Unserved>,
    /// How many rescans there have been.
    scans: u64,
    /// What was wrong with the paths at the last rescan.
    path_problems: Vec<String>,
    running: RunningFlows,
    /// How long running steps may take to finish after a stop signal.
    pub grace: Duration,
    /// How often the paths are listed again and the files checked for
    /// changes (SIGHUP does it at once).
    pub rescan_every: Duration,
    pub clock: Arc<dyn Clock>,
    /// Requests from a [`Control`] handle, if one was made.
    requests: Option<mpsc::Receiver<Request>>,
    /// The served flows, published for [`Control::flows`].
    published: watch::Sender<Vec<ServedFlow>>,
}

impl<H: Host> Scheduler<H> {
    /// Loads every flow file the paths name; bad ones and unscheduled ones
    /// are reported and left out. A path that is neither a file nor a
    /// readable directory is an error.
    pub fn new(host: Arc<H>, runner: Runner, paths: Vec<PathBuf>) -> Result<Self, String> {
        let found = sources::expand(&paths);
        if !found.problems.is_empty() {
            return Err(found.problems.join("\n"));
        }
        let mut scheduler = Self {
            host,
            runner,
            paths,
            served: BTreeMap::new(),
            unserved: BTreeMap::new(),
            scans: 0,
            path_problems: Vec::new(),
            running: RunningFlows::default(),
            grace: Duration::from_secs(30),
            rescan_every: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            requests: None,
            published: watch::Sender::new(Vec::new()),
        };
        // A flow file in a served folder that cannot be read is told, and
        // again at a rescan only if what is wrong changes.
        for problem in &found.unreadable {
            scheduler.host.event(ServeEvent::PathUnreadable {
                error: problem.clone(),
            });
        }
        scheduler.path_problems = found.unreadable;
        // Sorted, so that of two files of one flow name the first in path
        // order is the one served.
        let mut files = found.files;
        files.sort();
        for path in files {
            let print = fingerprint(&path);
            scheduler.admit(path, print);
        }
        Ok(scheduler)
    }

    pub fn flow_count(&self) -> usize {
        self.served.len()
    }

    /// The most step instances the served flows run at once when they all
    /// run together: the sum of each flow's largest `concurrency`.
    pub fn concurrency(&self) -> usize {
        self.served
            .values()
            .map(|served| {
                let steps = &served.entry.flow().steps;
                steps.iter().map(|s| s.concurrency).max().unwrap_or(1)
            })
            .sum()
    }

    /// A handle to list the served flows, run one now, and check that the
    /// serving loop answers. Requests are answered once [`Scheduler::serve`]
    /// runs; a second call replaces the first handle's channel.
    pub fn control(&mut self) -> Control {
        let (requests, receiver) = mpsc::channel(control::QUEUE);
        self.requests = Some(receiver);
        self.publish();
        Control {
            requests,
            flows: self.published.subscribe(),
        }
    }

    /// Publishes the served flows for [`Control::flows`].
    fn publish(&self) {
        let flows = self
            .served
            .values()
            .map(|served| {
                let flow = served.entry.flow();
                ServedFlow {
                    name: flow.name.clone(),
                    description: flow.description.clone(),
                    path: served.entry.path.clone(),
                    schedule: flow.schedule.clone(),
                }
            })
            .collect();
        self.published.send_replace(flows);
    }

    /// Loads a file not served yet: served if it validates, has a schedule
    /// and names a flow no other served file has (its timer starts with
    /// [`Scheduler::arm`]), else reported.
    fn admit(&mut self, path: PathBuf, print: Option<Fingerprint>) -> bool {
        let mut taken = None;
        match self.host.load(&path) {
            Ok(flow) if flow.schedule.is_none() => {
                self.host.event(ServeEvent::FlowNotScheduled {
                    file: path.clone(),
                    flow: flow.name.clone(),
                });
            }
            Ok(flow) => match self.holder_of(&flow.name, &path) {
                Some(holder) => {
                    let keeps = if holder.admitted_in == self.scans {
                        NameKeptBy::PathOrder
                    } else {
                        NameKeptBy::ServedAlready
                    };
                    self.host.event(ServeEvent::FlowRejected {
                        file: path.clone(),
                        error: name_taken(&flow.name, &holder.path, keeps),
                    });
                    taken = Some(flow.name.clone());
                }
                None => {
                    let entry = Arc::new(Entry::new(&path, flow, print, self.scans));
                    self.served.insert(path, Served { entry, timer: None });
                    return true;
                }
            },
            Err(report) => self.host.event(ServeEvent::FlowRejected {
                file: path.clone(),
                error: report,
            }),
        }
        self.unserved.insert(path, Unserved { print, taken });
        false
    }

    /// The served file, other than `path`, of the flow named `name`.
    fn holder_of(&self, name: &str, path: &Path) -> Option<Arc<Entry>> {
        self.served
            .values()
            .find(|s| s.entry.path != path && s.entry.flow().name == name)
            .map(|s| s.entry.clone())
    }

    /// Starts the timer of a served file and says when it fires next.
    fn arm(&mut self, path: &Path, live: &Live) {
        let Some(served) = self.served.get_mut(path) else {
            return;
        };
        if let Some(old) = served.timer.take() {
            old.abort();
        }
        let task = tokio::spawn(timer::run(
            path.to_path_buf(),
            served.entry.schedule.subscribe(),
            self.clock.clone(),
            live.fire.clone(),
        ));
        served.timer = Some(task.abort_handle());
        let flow = served.entry.flow();
        if let Some(s) = &flow.schedule {
            self.host.event(ServeEvent::FlowLoaded {
                file: path.to_path_buf(),
                flow: flow.name.clone(),
                cron: s.cron.clone(),
                next: next_local(s, self.clock.now()),
            });
        }
        self.publish();
    }

    /// Runs until a stop signal (`stop` leaves [`Shutdown::No`]), then
    /// shuts down gracefully. A change of `reload` (SIGHUP) rescans now.
    pub async fn serve(
        mut self,
        mut stop: watch::Receiver<Shutdown>,
        mut reload: watch::Receiver<u64>,
    ) {
        let (fire, mut firings) = mpsc::unbounded_channel();
        let mut live = Live {
            fire,
            runs: JoinSet::new(),
            inflight: HashMap::new(),
        };
        let paths: Vec<PathBuf> = self.served.keys().cloned().collect();
        for path in paths {
            self.arm(&path, &live);
        }
        let mut rescan = tokio::time::interval_at(
            tokio::time::Instant::now() + self.rescan_every,
            self.rescan_every,
        );
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A channel whose sender is gone can never change again: its branch
        // is turned off rather than polled in a loop.
        let (mut stop_open, mut reload_open) = (true, true);
        let mut requests = self.requests.take();
        loop {
            tokio::select! {
                changed = stop.changed(), if stop_open => match changed {
                    Ok(()) if *stop.borrow() != Shutdown::No => break,
                    Ok(()) => {}
                    Err(_) => stop_open = false,
                },
                changed = reload.changed(), if reload_open => match changed {
                    Ok(()) => {
                        self.host.event(ServeEvent::Rescanning);
                        self.rescan(true, &live);
                    }
                    Err(_) => reload_open = false,
                },
                _ = rescan.tick() => self.rescan(false, &live),
                Some(firing) = firings.recv() => self.fire(firing, &mut live),
                Some(request) = next_request(&mut requests) => self.answer(request, &mut live),
                Some(joined) = live.runs.join_next_with_id(), if !live.runs.is_empty() => {
                    self.joined(joined, &mut live.inflight, "the run's task was stopped");
                }
            }
        }
        self.shut_down(stop, live).await;
    }

    async fn shut_down(&mut self, mut stop: watch::Receiver<Shutdown>, mut live: Live) {
        for served in self.served.values_mut() {
            if let Some(timer) = served.timer.take() {
                timer.abort();
            }
        }
        // No new steps or items; the running ones finish.
        for run in live.inflight.values() {
            run.cancel.store(true, Ordering::SeqCst);
        }
        if !live.inflight.is_empty() {
            self.host.event(ServeEvent::Stopping {
                running: live.inflight.len(),
                grace: self.grace,
            });
        }
        let deadline = tokio::time::sleep(self.grace);
        tokio::pin!(deadline);
        let second = async {
            if *stop.borrow_and_update() == Shutdown::Now {
                return;
            }
            if stop.wait_for(|s| *s == Shutdown::Now).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(second);
        let mut cut_short = None;
        while !live.runs.is_empty() {
            tokio::select! {
                Some(joined) = live.runs.join_next_with_id() => {
                    self.joined(joined, &mut live.inflight, "the host was stopped");
                }
                _ = &mut deadline => {
                    cut_short = Some("the host was stopped and the grace period ran out");
                    break;
                }
                _ = &mut second => {
                    cut_short = Some("the host was stopped at once by a second stop signal");
                    break;
                }
            }
        }
        if let Some(why) = cut_short {
            self.host.event(ServeEvent::StoppingNow {
                reason: why.to_string(),
                interrupted: live.inflight.len(),
            });
            live.runs.abort_all();
            let settle = async {
                while let Some(joined) = live.runs.join_next_with_id().await {
                    self.joined(joined, &mut live.inflight, why);
                }
            };
            let _ = tokio::time::timeout(ABORT_SETTLE, settle).await;
            for (_, run) in live.inflight.drain() {
                if run.started.load(Ordering::SeqCst) {
                    self.host.record_interrupted(&run.flow, &run.run_id, why);
                    self.host.event(ServeEvent::RunFinished {
                        flow: run.flow.name.clone(),
                        run_id: run.run_id.clone(),
                        status: Status::Interrupted,
                        error: Some(why.to_string()),
                        setbacks: Default::default(),
                    });
                }
            }
            // Stopping at once means not waiting long on a busy database
            // either; a run left `running` reads as interrupted later.
            let _ = tokio::time::timeout(FLUSH_WHEN_STOPPING_AT_ONCE, self.host.flush()).await;
            return;
        }
        self.host.flush().await;
    }

    /// A run's task ended: a panic is recorded as a failure, an abort as an
    /// interruption (a run that ended itself has recorded its end).
    fn joined(
        &self,
        joined: Result<(tokio::task::Id, ()), JoinError>,
        inflight: &mut HashMap<tokio::task::Id, InFlight>,
        aborted_why: &str,
    ) {
        let (id, failure) = match joined {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), Some(e)),
        };
        let Some(run) = inflight.remove(&id) else {
            return;
        };
        let Some(failure) = failure else {
            return;
        };
        if !run.started.load(Ordering::SeqCst) {
            return;
        }
        if failure.is_panic() {
            let text = panic_text(failure.into_panic().as_ref());
            // The runner gave the redactor the flow's secrets before it
            // could panic, and the tokens its connections obtained since.
            let why = run
                .redactor
                .redact(&format!("the run stopped unexpectedly: {text}"));
            self.host.record_failed(&run.flow, &run.run_id, &why);
            self.host.event(ServeEvent::RunFinished {
                flow: run.flow.name.clone(),
                run_id: run.run_id.clone(),
                status: Status::Failed,
                error: Some(why),
                setbacks: Default::default(),
            });
        } else {
            self.host
                .record_interrupted(&run.flow, &run.run_id, aborted_why);
            self.host.event(ServeEvent::RunFinished {
                flow: run.flow.name.clone(),
                run_id: run.run_id.clone(),
                status: Status::Interrupted,
                error: Some(aborted_why.to_string()),
                setbacks: Default::default(),
            });
        }
        // The task ended without giving back what its run held.
        let host = self.host.clone();
        tokio::spawn(async move { host.end(&run.run_id).await });
    }

    /// A timer's tick: reload the file if it changed, then run the flow
    /// unless its previous run is still going.
    fn fire(&mut self, firing: Firing<PathBuf>, live: &mut Live) {
        let Some(entry) = self.served.get(&firing.tag).map(|s| s.entry.clone()) else {
            return; // retired since
        };
        let at = match firing.tick {
            Tick::Fire(at) => at,
            Tick::Missed(missed) => {
                let flow = entry.flow();
                let zone = |t| in_zone(flow.schedule.as_ref(), t);
                self.host.event(ServeEvent::Missed {
                    flow: flow.name.clone(),
                    first: zone(missed.first),
                    last: zone(missed.last),
                    count: missed.count,
                    more: missed.more,
                });
                return;
            }
        };
        if self.refresh(&entry, false) == Refreshed::Gone {
            // Deleting the file is how an operator stops a flow: it does
            // not run again, not even this once.
            self.retire(&entry.path);
            return;
        }
        let flow = entry.flow();
        let Some(schedule) = flow.schedule.as_ref() else {
            return;
        };
        let at = in_zone(Some(schedule), at);
        if !fires_at(schedule, at.to_utc()) {
            self.host.event(ServeEvent::NotInSchedule {
                flow: flow.name.clone(),
                at,
                next: next_local(schedule, self.clock.now()),
            });
            return;
        }
        self.spawn(flow, Some(at.to_utc()), None, live);
    }

    /// Starts the task of a firing (`at`), or of a run by hand (`reply`
    /// then learns whether it started).
    fn spawn(
        &self,
        flow: Arc<Flow>,
        at: Option<DateTime<Utc>>,
        reply: Option<Reply>,
        live: &mut Live,
    ) {
        let run_id = crate::run::new_run_id();
        let options = RunOptions::new(run_id.clone(), self.host.output_dir(&run_id), false);
        let started = Arc::new(AtomicBool::new(false));
        let firing = FiringTask {
            host: self.host.clone(),
            runner: self.runner.clone(),
            flow: flow.clone(),
            running: self.running.clone(),
            started: started.clone(),
            at,
            reply,
        };
        let (cancel, redactor) = (options.cancel.clone(), options.redactor.clone());
        let task = live.runs.spawn(firing.run(options));
        live.inflight.insert(
            task.id(),
            InFlight {
                run_id,
                flow,
                cancel,
                redactor,
                started,
            },
        );
    }

    /// A request from a [`Control`] handle.
    fn answer(&mut self, request: Request, live: &mut Live) {
        match request {
            Request::Ping(reply) => {
                let _ = reply.send(());
            }
            Request::RunNow { flow, reply } => match self.served_named(&flow) {
                Ok(entry) => {
                    if self.refresh(&entry, false) == Refreshed::Gone {
                        self.retire(&entry.path);
                        let _ = reply.send(Err(RunNowRefused::Gone {
                            flow,
                            file: entry.path.clone(),
                        }));
                        return;
                    }
                    self.spawn(entry.flow(), None, Some(reply), live);
                }
                Err(refused) => {
                    let _ = reply.send(Err(refused));
                }
            },
        }
    }

    /// The one served file of the flow named `name`.
    fn served_named(&self, name: &str) -> Result<Arc<Entry>, RunNowRefused> {
        let mut entries = self
            .served
            .values()
            .map(|s| s.entry.clone())
            .filter(|e| e.flow().name == name);
        let entry = entries
            .next()
            .ok_or_else(|| RunNowRefused::Unknown(name.to_string()))?;
        if entries.next().is_some() {
            return Err(RunNowRefused::Ambiguous(name.to_string()));
        }
        Ok(entry)
    }

    /// Lists the paths again: new or changed files are loaded, removed ones
    /// retired. `force` (SIGHUP) reloads every file, changed or not.
    fn rescan(&mut self, force: bool, live: &Live) {
        let found = sources::expand(&self.paths);
        let problems: Vec<String> = found
            .problems
            .iter()
            .chain(&found.unreadable)
            .cloned()
            .collect();
        if problems != self.path_problems {
            for problem in &problems {
                self.host.event(ServeEvent::PathUnreadable {
                    error: problem.clone(),
                });
            }
            self.path_problems = problems;
        }
        let gone: Vec<PathBuf> = self
            .served
            .keys()
            .filter(|p| !found.files.contains(p))
            .cloned()
            .collect();
        for path in gone {
            self.retire(&path);
        }
        self.unserved.retain(|p, _| found.files.contains(p));
        self.scans += 1;
        let mut files = found.files;
        files.sort();
        // The served files first: a change of `name` there may free a name
        // a file waiting below asks for.
        for path in &files {
            if let Some(served) = self.served.get(path) {
                let entry = served.entry.clone();
                if self.refresh(&entry, force) == Refreshed::Gone {
                    self.retire(path); // removed since it was listed
                }
            }
        }
        for path in files {
            if self.served.contains_key(&path) {
                continue;
            }
            let print = fingerprint(&path);
            if !force
                && let Some(before) = self.unserved.get(&path)
                && before.print == print
                && before
                    .taken
                    .as_ref()
                    .is_none_or(|name| self.holder_of(name, &path).is_some())
            {
                continue; // reported already, and unchanged
            }
            self.unserved.remove(&path);
            if self.admit(path.clone(), print) {
                self.arm(&path, live);
            }
        }
    }

    /// Stops serving a file that is gone: its timer stops and it leaves the
    /// served flows; a run of it in progress goes on to its end.
    fn retire(&mut self, path: &Path) {
        let Some(served) = self.served.remove(path) else {
            return;
        };
        self.publish();
        if let Some(timer) = served.timer {
            timer.abort();
        }
        let flow = served.entry.flow().name.clone();
        let run_goes_on = lock(&self.running).contains_key(&flow);
        self.host.event(ServeEvent::FlowRetired {
            file: path.to_path_buf(),
            flow,
            run_goes_on,
        });
    }

    /// Reloads a served file if its content changed (or when forced); keeps
    /// the old version when the new one does not validate. A new schedule
    /// re-arms the timer. A file that is no longer there (what a rescan
    /// would not list) is [`Refreshed::Gone`], for the caller to retire.
    fn refresh(&self, entry: &Entry, force: bool) -> Refreshed {
        if !entry.path.is_file() {
            return Refreshed::Gone;
        }
        let now = fingerprint(&entry.path);
        {
            let mut last = lock(&entry.fingerprint);
            let freed = lock(&entry.name_taken)
                .as_ref()
                .is_some_and(|name| self.holder_of(name, &entry.path).is_none());
            if !force && now == *last && !freed {
                return Refreshed::Served;
            }
            *last = now;
        }
        *lock(&entry.name_taken) = None;
        let loaded = self.host.load(&entry.path);
        let holder = match &loaded {
            Ok(flow) if flow.schedule.is_some() => self.holder_of(&flow.name, &entry.path),
            _ => None,
        };
        match (loaded, holder) {
            (Ok(flow), Some(holder)) => {
                *lock(&entry.name_taken) = Some(flow.name.clone());
                self.host.event(ServeEvent::ReloadRejected {
                    file: entry.path.clone(),
                    flow: entry.flow().name.clone(),
                    error: name_taken(&flow.name, &holder.path, NameKeptBy::ServedAlready),
                });
            }
            (Ok(flow), None) if flow.schedule.is_some() => {
                let schedule = flow.schedule.clone();
                let name = flow.name.clone();
                *lock(&entry.flow) = Arc::new(flow);
                let next = schedule
                    .as_ref()
                    .and_then(|s| next_local(s, self.clock.now()));
                entry.schedule.send_replace(schedule);
                self.publish();
                self.host.event(ServeEvent::FlowReloaded {
                    file: entry.path.clone(),
                    flow: name,
                    next,
                });
            }
            (Ok(_), None) => self.host.event(ServeEvent::ReloadRejected {
                file: entry.path.clone(),
                flow: entry.flow().name.clone(),
                error: "the new version has no schedule".to_string(),
            }),
            // Removed while it was being read.
            (Err(_), _) if !entry.path.is_file() => return Refreshed::Gone,
            (Err(report), _) => self.host.event(ServeEvent::ReloadRejected {
                file: entry.path.clone(),
                flow: entry.flow().name.clone(),
                error: report,
            }),
        }
        Refreshed::Served
    }
}

/// A file found but not served, as last tried.
struct Unserved {
    print: Option<Fingerprint>,
    /// The flow `name` it has, which another served file kept: it is tried
    /// again once that name is free, even unchanged.
    taken: Option<String>,
}

/// Why, of two files of one flow `name`, the other one keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKeptBy {
    /// It was served before this one appeared (or took that name).
    ServedAlready,
    /// Both were found at once, and it comes first in path order.
    PathOrder,
}

/// Why a file whose flow `name` another file keeps is not served: two
/// files of one name would share the flow's state, lease and approval
/// plans.
pub fn name_taken(name: &str, holder: &Path, keeps: NameKeptBy) -> String {
    let why = match keeps {
        NameKeptBy::ServedAlready => "it was served first",
        NameKeptBy::PathOrder => "it comes first in path order",
    };
    format!(
        "flow `{name}` is already served from {}, which keeps the name ({why}); {SHARED}",
        holder.display()
    )
}

/// What two files of one flow `name` would share, and what to do.
pub const SHARED: &str = "two files of one flow `name` would share its state, its lease and its approval plans. Give each flow its own `name`";

/// What [`Scheduler::refresh`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refreshed {
    /// The file is there: served as it is now, or as it was if its change
    /// was refused.
    Served,
    /// The file is gone.
    Gone,
}

/// Where a run started by hand learns whether it started, and its id.
type Reply = oneshot::Sender<Result<String, RunNowRefused>>;

/// One firing, from its claim to the end of its run; or one run by hand.
struct FiringTask<H: Host> {
    host: Arc<H>,
    runner: Runner,
    flow: Arc<Flow>,
    running: RunningFlows,
    started: Arc<AtomicBool>,
    /// The firing's time; `None` for a run by hand, which claims nothing.
    at: Option<DateTime<Utc>>,
    /// For a run by hand: told whether it started.
    reply: Option<Reply>,
}

impl<H: Host> FiringTask<H> {
    /// Claims the firing, then runs the flow unless its previous run (here
    /// or on another replica) is still going, which is recorded as a skip
    /// (a run by hand is refused instead).
    async fn run(self, mut options: RunOptions) {
        let FiringTask {
            host,
            runner,
            flow,
            running,
            started,
            at,
            reply,
        } = self;
        if let Some(at) = at
            && !host.claim(&flow, at, &options.run_id).await
        {
            return; // another replica's, to run or to skip
        }
        let at_local = at.map(|at| in_zone(flow.schedule.as_ref(), at));
        let _flag = match RunningFlag::take(&running, &flow.name, &options.run_id) {
            Ok(flag) => flag,
            Err(holder) => {
                let busy = Busy {
                    why: format!("the previous run ({holder}) was still going"),
                    run_id: Some(holder),
                };
                return refuse(&*host, &flow, &options.run_id, (reply, at_local), busy);
            }
        };
        match host
            .begin(&flow, &options.run_id, options.cancel.clone())
            .await
        {
            Ok(guard) => options.guard = guard,
            Err(busy) => {
                return refuse(&*host, &flow, &options.run_id, (reply, at_local), busy);
            }
        }
        started.store(true, Ordering::SeqCst);
        let trigger = match (reply, at_local) {
            (Some(reply), _) => {
                host.event(ServeEvent::RunNow {
                    flow: flow.name.clone(),
                    run_id: options.run_id.clone(),
                });
                let _ = reply.send(Ok(options.run_id.clone()));
                "manual"
            }
            (None, at) => {
                if let Some(at) = at {
                    host.event(ServeEvent::Firing {
                        flow: flow.name.clone(),
                        run_id: options.run_id.clone(),
                        at,
                    });
                }
                "schedule"
            }
        };
        options.approvals = host.approvals(&flow, &options.run_id);
        options.state = host.state(&flow, &options.run_id);
        let observer = host.observer(&flow, &options.run_id, trigger, &options);
        let outcome = runner.run(&flow, &options, observer).await;
        host.event(ServeEvent::RunFinished {
            flow: flow.name.clone(),
            run_id: outcome.run_id,
            status: outcome.status,
            error: outcome.error,
            setbacks: outcome.setbacks,
        });
        host.end(&options.run_id).await;
    }
}

/// A firing that cannot run now is recorded as skipped; a run by hand is
/// refused, with the reason.
fn refuse<H: Host>(
    host: &H,
    flow: &Flow,
    run_id: &str,
    (reply, at): (Option<Reply>, Option<DateTime<Tz>>),
    busy: Busy,
) {
    if let Some(reply) = reply {
        let _ = reply.send(Err(RunNowRefused::Busy {
            flow: flow.name.clone(),
            why: busy.why,
        }));
        return;
    }
    if let Some(at) = at {
        host.event(ServeEvent::SkippedStillRunning {
            flow: flow.name.clone(),
            running_run_id: busy.run_id.clone(),
            skipped_run_id: run_id.to_string(),
            at,
            reason: busy.why.clone(),
        });
    }
    host.record_skipped(flow, run_id, &busy.why);
}

/// The next request of a [`Control`] handle; never, without one.
async fn next_request(requests: &mut Option<mpsc::Receiver<Request>>) -> Option<Request> {
    match requests {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether `at` is one of the schedule's times (they fall on whole seconds).
fn fires_at(schedule: &Schedule, at: DateTime<Utc>) -> bool {
    schedule.next_after(at - chrono::Duration::seconds(1)) == Some(at)
}

/// An instant in the schedule's zone (UTC without one), as its times are
/// written.
fn in_zone(schedule: Option<&Schedule>, at: DateTime<Utc>) -> DateTime<Tz> {
    at.with_timezone(&schedule.map_or(Tz::UTC, |s| s.timezone))
}

/// The schedule's next time after `now`, in its zone; `None`: never.
fn next_local(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Tz>> {
    schedule.next_after(now).map(|t| in_zone(Some(schedule), t))
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use chrono::TimeZone;

    use super::clock::manual::ManualClock;
    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use crate::run::RunEvent;

    const SECRET: &str = "hunter2-scheduler-secret";

    /// Records what the scheduler asks of its host. Every run's observer
    /// panics at the run's first event, so a run is quick and needs no
    /// component compiled.
    #[derive(Default)]
    struct FakeHost {
        events: Mutex<Vec<ServeEvent>>,
        started: AtomicUsize,
        skipped: AtomicUsize,
        failed: Mutex<Vec<(String, String)>>,
        interrupted: Mutex<Vec<String>>,
        out: PathBuf,
    }

    struct Explodes;

    impl Observer for Explodes {
        fn event(&self, _: &RunEvent) {
            panic!("observer exploded near {SECRET}");
        }
    }

    impl Host for FakeHost {
        fn load(&self, path: &Path) -> Result<Flow, String> {
            let builtins = sluice_builtins::names();
            let env: std::collections::BTreeMap<String, String> =
                [("API_TOKEN".to_string(), SECRET.to_string())].into();
            let ctx = crate::flow::Context {
                builtins: &builtins,
                catalog: &crate::flow::Undescribed,
                param_overrides: &[],
                remote: &crate::flow::NoRegistry,
            };
            crate::flow::load(path, &ctx, &env).map_err(|e| e.to_string())
        }
        fn observer(&self, _: &Flow, _: &str, _: &str, _: &RunOptions) -> Arc<dyn Observer> {
            self.started.fetch_add(1, Ordering::SeqCst);
            Arc::new(Explodes)
        }
        async fn claim(&self, _: &Flow, _: DateTime<Utc>, _: &str) -> bool {
            true
        }
        async fn begin(
            &self,
            _: &Flow,
            _: &str,
            _: Arc<AtomicBool>,
        ) -> Result<Option<Arc<dyn RunGuard>>, Busy> {
            Ok(None)
        }
        async fn end(&self, _: &str) {}
        fn record_skipped(&self, _: &Flow, _: &str, _: &str) {
            self.skipped.fetch_add(1, Ordering::SeqCst);
        }
        fn record_interrupted(&self, _: &Flow, run_id: &str, _: &str) {
            lock(&self.interrupted).push(run_id.to_string());
        }
        fn record_failed(&self, _: &Flow, run_id: &str, reason: &str) {
            lock(&self.failed).push((run_id.to_string(), reason.to_string()));
        }
        async fn flush(&self) {}
        fn output_dir(&self, run_id: &str) -> PathBuf {
            self.out.join(run_id)
        }
        fn event(&self, event: ServeEvent) {
            lock(&self.events).push(event);
        }
    }

    impl FakeHost {
        fn saw(&self, what: impl Fn(&ServeEvent) -> bool) -> bool {
            lock(&self.events).iter().any(what)
        }

        /// Whether flow `name` was loaded (its timer armed).
        fn loaded(&self, name: &str) -> bool {
            self.saw(|e| matches!(e, ServeEvent::FlowLoaded { flow, .. } if flow == name))
        }
    }

    fn flow_text(name: &str, cron: &str) -> String {
        format!(
            "name = \"{name}\"\nschedule = {{ cron = \"{cron}\" }}\n[secrets]\napi_token = {{ env = \"API_TOKEN\" }}\n[[step]]\nid = \"s\"\nuses = \"{}\"\nwith = {{ action = \"echo\" }}\n",
            sluice_builtins::fixture("hostile").unwrap()
        )
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, h, m, s).single().unwrap()
    }

    /// Lets every task run until all of them wait: the tests run on
    /// paused time, which moves to the next timer only when nothing else
    /// can run (nor a blocking task is under way), so whatever the last
    /// move of the manual clock set off has happened when this returns.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    /// Settles until `ok` holds (bounded).
    async fn until(what: &str, ok: impl Fn() -> bool) {
        for _ in 0..2_000 {
            if ok() {
                return;
            }
            settle().await;
        }
        panic!("timed out waiting until {what}");
    }

    struct Serving {
        host: Arc<FakeHost>,
        clock: Arc<ManualClock>,
        stop: watch::Sender<Shutdown>,
        reload: watch::Sender<u64>,
        task: tokio::task::JoinHandle<()>,
        control: Control,
    }

    fn serve(dir: &Path) -> Serving {
        let host = Arc::new(FakeHost {
            out: dir.join("out"),
            ..FakeHost::default()
        });
        let runner = Runner::new(Engine::new(EngineConfig::default()).unwrap()).unwrap();
        let mut scheduler = Scheduler::new(host.clone(), runner, vec![dir.join("flows")]).unwrap();
        let clock = Arc::new(ManualClock::new(at(10, 0, 0)));
        scheduler.clock = clock.clone();
        let control = scheduler.control();
        let (stop, stop_rx) = watch::channel(Shutdown::No);
        let (reload, reload_rx) = watch::channel(0);
        let task = tokio::spawn(scheduler.serve(stop_rx, reload_rx));
        Serving {
            host,
            clock,
            stop,
            reload,
            task,
            control,
        }
    }

    impl Serving {
        async fn stop(self) -> Arc<FakeHost> {
            self.stop.send_replace(Shutdown::Graceful);
            self.task.await.unwrap();
            self.host
        }
    }

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("flows")).unwrap();
        dir
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_panics_is_recorded_failed_and_its_flow_keeps_firing() {
        let dir = folder();
        std::fs::write(
            dir.path().join("flows/boom.toml"),
            flow_text("boom", "* * * * * *"),
        )
        .unwrap();
        let s = serve(dir.path());
        s.clock.until_sleeps(1).await;
        s.clock.set(at(10, 0, 1));
        until("the panic is recorded", || lock(&s.host.failed).len() == 1).await;
        // Its flag was cleared: the next firing runs instead of being skipped.
        s.clock.set(at(10, 0, 2));
        until("the second run is recorded", || {
            lock(&s.host.failed).len() == 2
        })
        .await;
        let host = s.stop().await;
        assert_eq!(host.started.load(Ordering::SeqCst), 2);
        assert_eq!(host.skipped.load(Ordering::SeqCst), 0);
        let failed = lock(&host.failed).clone();
        assert_ne!(failed[0].0, failed[1].0);
        let why = &failed[0].1;
        assert!(
            why.contains("the run stopped unexpectedly: observer exploded near [redacted]"),
            "{why}"
        );
        assert!(!why.contains(SECRET));
        assert!(lock(&host.interrupted).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_added_later_is_served_after_a_reload_and_a_removed_one_retired() {
        let dir = folder();
        std::fs::write(
            dir.path().join("flows/a.toml"),
            flow_text("a", "0 0 0 1 1 *"),
        )
        .unwrap();
        std::fs::write(dir.path().join("flows/bad.toml"), "name = ").unwrap();
        let s = serve(dir.path());
        s.clock.until_sleeps(1).await;
        assert!(s.host.saw(
            |e| matches!(e, ServeEvent::FlowRejected { file, .. } if file.ends_with("bad.toml"))
        ));
        std::fs::write(
            dir.path().join("flows/b.toml"),
            flow_text("b", "* * * * * *"),
        )
        .unwrap();
        // The broken file, fixed, is picked up too.
        std::fs::write(
            dir.path().join("flows/bad.toml"),
            flow_text("fixed", "0 0 12 * * *"),
        )
        .unwrap();
        s.reload.send_modify(|n| *n += 1);
        until("b is served", || s.host.loaded("b")).await;
        assert!(s.host.loaded("fixed"));
        // a (re-armed by the reload), b and the fixed file all wait.
        s.clock.until_sleeps(4).await;
        s.clock.set(at(10, 0, 1));
        until("b runs", || s.host.started.load(Ordering::SeqCst) == 1).await;
        until("b's run ends", || lock(&s.host.failed).len() == 1).await;
        // Removed: retired at the next rescan, and never fires again.
        std::fs::remove_file(dir.path().join("flows/b.toml")).unwrap();
        s.reload.send_modify(|n| *n += 1);
        until("b is retired", || {
            s.host
                .saw(|e| matches!(e, ServeEvent::FlowRetired { flow, .. } if flow == "b"))
        })
        .await;
        s.clock.set(at(10, 0, 2));
        s.clock.set(at(10, 0, 3));
        settle().await;
        let host = s.stop().await;
        assert_eq!(host.started.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_firing_the_reloaded_schedule_does_not_have_is_not_run() {
        let dir = folder();
        let file = dir.path().join("flows/c.toml");
        std::fs::write(&file, flow_text("c", "* * * * * *")).unwrap();
        let s = serve(dir.path());
        s.clock.until_sleeps(1).await;
        // The file changes on disk (no SIGHUP) to fire only at noon; the
        // firing at 10:00:01, armed under the old schedule, must not run.
        std::fs::write(&file, flow_text("c", "0 0 12 * * *")).unwrap();
        s.clock.set(at(10, 0, 1));
        until("the firing is dropped", || {
            let dropped = at(10, 0, 1);
            s.host.saw(
                |e| matches!(e, ServeEvent::NotInSchedule { at, .. } if at.to_utc() == dropped),
            )
        })
        .await;
        // Re-armed for noon: nothing at 10:00:02, a run at 12:00.
        s.clock.set(at(10, 0, 2));
        settle().await;
        assert_eq!(s.host.started.load(Ordering::SeqCst), 0);
        s.clock.set(at(12, 0, 0));
        until("the noon run", || {
            s.host.started.load(Ordering::SeqCst) == 1
        })
        .await;
        s.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_control_handle_lists_flows_runs_one_now_and_answers_pings() {
        let dir = folder();
        std::fs::write(
            dir.path().join("flows/a.toml"),
            flow_text("a", "0 0 0 1 1 *"),
        )
        .unwrap();
        let s = serve(dir.path());
        s.clock.until_sleeps(1).await;
        let flows = s.control.flows();
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].name, "a");
        assert!(flows[0].schedule.is_some());
        assert!(s.control.ping(Duration::from_secs(5)).await);
        let wait = Duration::from_secs(5);
        let run_id = s.control.run_now("a", wait).await.unwrap();
        until("the run is recorded", || lock(&s.host.failed).len() == 1).await;
        assert_eq!(lock(&s.host.failed)[0].0, run_id);
        assert_eq!(
            s.control.run_now("nope", wait).await,
            Err(RunNowRefused::Unknown("nope".into()))
        );
        let control = s.control.clone();
        let host = s.stop().await;
        assert_eq!(host.started.load(Ordering::SeqCst), 1);
        assert!(!control.ping(Duration::from_millis(100)).await);
        assert_eq!(
            control.run_now("a", wait).await,
            Err(RunNowRefused::Unavailable)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_gone_at_its_firing_or_at_run_now_is_retired_and_nothing_runs() {
        let dir = folder();
        let (a, b) = (
            dir.path().join("flows/a.toml"),
            dir.path().join("flows/b.toml"),
        );
        std::fs::write(&a, flow_text("a", "* * * * * *")).unwrap();
        std::fs::write(&b, flow_text("b", "0 0 0 1 1 *")).unwrap();
        let s = serve(dir.path());
        s.clock.until_sleeps(2).await;
        // Both removed between rescans (the next is a minute away).
        std::fs::remove_file(&a).unwrap();
        std::fs::remove_file(&b).unwrap();
        s.clock.set(at(10, 0, 1));
        until("a is retired at its firing", || {
            s.host
                .saw(|e| matches!(e, ServeEvent::FlowRetired { flow, .. } if flow == "a"))
        })
        .await;
        let wait = Duration::from_secs(5);
        assert_eq!(
            s.control.run_now("b", wait).await,
            Err(RunNowRefused::Gone {
                flow: "b".into(),
                file: b.clone()
            })
        );
        assert!(
            s.host
                .saw(|e| matches!(e, ServeEvent::FlowRetired { flow, .. } if flow == "b"))
        );
        assert!(s.control.flows().is_empty());
        s.clock.set(at(10, 0, 2));
        settle().await;
        let host = s.stop().await;
        assert_eq!(host.started.load(Ordering::SeqCst), 0);
        assert!(!host.saw(|e| matches!(e, ServeEvent::ReloadRejected { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn of_two_files_of_one_flow_name_one_is_served_and_the_other_when_it_is_free() {
        let dir = folder();
        let file = |name: &str| dir.path().join("flows").join(name);
        let yearly = |name: &str| flow_text(name, "0 0 0 1 1 *");
        std::fs::write(file("b.toml"), yearly("same")).unwrap();
        std::fs::write(file("a.toml"), yearly("same")).unwrap();
        std::fs::write(file("d.toml"), yearly("d")).unwrap();
        let s = serve(dir.path());
        s.clock.until_sleeps(2).await;
        let rejected = |host: &FakeHost, name: &str| -> Vec<String> {
            lock(&host.events)
                .iter()
                .filter_map(|e| match e {
                    ServeEvent::FlowRejected { file, error } if file.ends_with(name) => {
                        Some(error.clone())
                    }
                    _ => None,
                })
                .collect()
        };
        let served = |s: &Serving| -> Vec<(String, String)> {
            let mut flows: Vec<_> = s
                .control
                .flows()
                .iter()
                .map(|f| {
                    (
                        f.name.clone(),
                        f.path.file_name().unwrap().to_string_lossy().into(),
                    )
                })
                .collect();
            flows.sort();
            flows
        };
        // At start, the first in path order keeps the name.
        let why = rejected(&s.host, "b.toml");
        assert_eq!(why.len(), 1);
        assert!(
            why[0].contains(&format!(
                "flow `same` is already served from {}, which keeps the name (it comes first in path order)",
                file("a.toml").display()
            )) && why[0].contains("Give each flow its own `name`"),
            "{why:?}"
        );
        assert_eq!(
            served(&s),
            [
                ("d".into(), "d.toml".into()),
                ("same".into(), "a.toml".into())
            ]
        );
        // A file added later does not take a served flow's name.
        std::fs::write(file("c.toml"), yearly("same")).unwrap();
        // Nor does a served file that changes its name to it.
        std::fs::write(file("d.toml"), yearly("same")).unwrap();
        s.reload.send_modify(|n| *n += 1);
        until("c is rejected", || !rejected(&s.host, "c.toml").is_empty()).await;
        assert!(rejected(&s.host, "c.toml")[0].contains("(it was served first)"));
        assert!(s.host.saw(
            |e| matches!(e, ServeEvent::ReloadRejected { flow, error, .. }
            if flow == "d" && error.contains("(it was served first)"))
        ));
        assert_eq!(
            served(&s),
            [
                ("d".into(), "d.toml".into()),
                ("same".into(), "a.toml".into())
            ]
        );
        // Once the file that kept the name is gone, the first waiting in
        // path order is served at the next rescan, unchanged; the other
        // still waits, and is not reported again.
        std::fs::remove_file(file("a.toml")).unwrap();
        std::fs::write(file("d.toml"), yearly("d2")).unwrap();
        let minute = async || tokio::time::sleep(Duration::from_secs(60)).await;
        minute().await;
        until("b is served", || {
            served(&s).contains(&("same".into(), "b.toml".into()))
        })
        .await;
        assert_eq!(
            served(&s),
            [
                ("d2".into(), "d.toml".into()),
                ("same".into(), "b.toml".into())
            ]
        );
        // Reported at start and on SIGHUP (which reloads every file).
        assert_eq!(rejected(&s.host, "b.toml").len(), 2);
        assert_eq!(rejected(&s.host, "c.toml").len(), 1);
        // A served file's change refused for its name is served, unchanged,
        // once the name is free (the files served go first).
        std::fs::write(file("d.toml"), yearly("same")).unwrap();
        minute().await;
        until("d's change is refused", || {
            s.host
                .saw(|e| matches!(e, ServeEvent::ReloadRejected { flow, .. } if flow == "d2"))
        })
        .await;
        std::fs::remove_file(file("b.toml")).unwrap();
        minute().await;
        until("d is served as `same`", || {
            served(&s) == [("same".to_string(), "d.toml".to_string())]
        })
        .await;
        assert_eq!(rejected(&s.host, "c.toml").len(), 1);
        let host = s.stop().await;
        assert_eq!(host.started.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_second_stop_signal_escalates() {
        let mut s = Shutdown::No;
        s.escalate();
        assert_eq!(s, Shutdown::Graceful);
        s.escalate();
        assert_eq!(s, Shutdown::Now);
        s.escalate();
        assert_eq!(s, Shutdown::Now);
    }
}
