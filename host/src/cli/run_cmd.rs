//! `sluice run FILE`: validate, run, show progress, say where the report is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Args;

use super::progress::{Mode, Progress};
use crate::connections::tape::{RunId, Tapes};
use crate::engine::{Engine, EngineConfig, PoolSize};
use crate::redact::Redactor;
use sluice_store::{Location, Store, Trigger};

use crate::run::recorder::{HistoryWriter, RecordAs, Recorder};
use crate::run::{
    ApprovalStore, Fanout, GateSummary, Observer, RunGuard, RunOptions, RunOutcome, Runner, Status,
};
use crate::scheduler::Shutdown;
use crate::scheduler::replicas::Replica;

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
    /// Write every exchange of every connection to DIR, one cassette per
    /// connection (DIR/CONNECTION.yml, Ruby VCR layout), secrets removed
    #[arg(long, value_name = "DIR", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Answer every request from the cassettes in DIR instead of the
    /// network: no token is fetched and nothing is changed anywhere
    #[arg(long, value_name = "DIR")]
    pub replay: Option<PathBuf>,
    /// Only the items with this key in each `for_each` step (repeatable):
    /// every read as usual, and each of these items shown step by step
    #[arg(long = "only", value_name = "KEY", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub only: Vec<String>,
    /// How long the flow's lease lasts unless renewed (as for `serve`)
    #[arg(long, env = "SLUICE_LEASE", default_value = DEFAULT_LEASE, value_parser = super::parse_lease)]
    pub lease: Duration,
}

/// The lease of a run unless `--lease` or `SLUICE_LEASE` says otherwise.
const DEFAULT_LEASE: &str = "30s";

impl RunArgs {
    /// `sluice run FILE`, nothing else said (`SLUICE_LEASE` still counts).
    pub fn of(file: PathBuf) -> Self {
        let lease = std::env::var("SLUICE_LEASE").unwrap_or_else(|_| DEFAULT_LEASE.to_string());
        Self {
            file,
            params: Vec::new(),
            dry_run: false,
            quiet: false,
            json: false,
            verbose: false,
            record: None,
            replay: None,
            only: Vec::new(),
            lease: super::parse_lease(&lease).unwrap_or(Duration::from_secs(30)),
        }
    }
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not NAME=VALUE")),
    }
}

/// The process's one engine: the components a flow's checks compiled and
/// described are not compiled again for its runs. Compiled components are
/// cached in the data directory's `cache/` when the directory exists
/// (`sluice validate` creates nothing).
pub fn engine_for(data_dir: &Path) -> anyhow::Result<Arc<Engine>> {
    static ENGINE: std::sync::OnceLock<Arc<Engine>> = std::sync::OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine.clone());
    }
    let defaults = EngineConfig::default();
    let engine = Engine::new(EngineConfig {
        cache_dir: data_dir.is_dir().then(|| data_dir.join("cache")),
        memory_budget: memory_budget(defaults.memory_budget)?,
        perf_map: perf_map(std::env::var(PERF_MAP_VAR).ok().as_deref())?,
        ..defaults
    })?;
    Ok(ENGINE.get_or_init(|| engine).clone())
}

/// The instance pool for one run of `flow`: its steps run one at a time,
/// so the most instances alive at once is its largest `concurrency`.
pub fn pool_for(flow: &crate::flow::Flow) -> PoolSize {
    let most = flow.steps.iter().map(|s| s.concurrency).max().unwrap_or(1);
    PoolSize::for_concurrency(most)
}

/// `SLUICE_MEMORY_BUDGET`: the memory all running steps share, in MiB
/// (`4096`) or with a unit (`4GiB`, `512MiB`); `default` when unset.
fn memory_budget(default: usize) -> anyhow::Result<usize> {
    match std::env::var(BUDGET_VAR) {
        Ok(text) => parse_memory_budget(&text),
        Err(_) => Ok(default),
    }
}

const BUDGET_VAR: &str = "SLUICE_MEMORY_BUDGET";

const PERF_MAP_VAR: &str = "SLUICE_PERF_MAP";

/// `SLUICE_PERF_MAP`: `1` names the guests' functions for `perf` (see
/// [`EngineConfig::perf_map`]); unset, empty or `0` does not.
fn perf_map(value: Option<&str>) -> anyhow::Result<bool> {
    match value.map(str::trim) {
        None | Some("" | "0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(anyhow::anyhow!(
            "{PERF_MAP_VAR}={other} is not 1 or 0: set it to 1 to write /tmp/perf-PID.map for `perf report`"
        )),
    }
}

/// A memory size in MiB (`4096`) or with a unit (`4GiB`, `512MiB`).
fn parse_memory_budget(text: &str) -> anyhow::Result<usize> {
    let trimmed = text.trim();
    let (number, unit) = match trimmed.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => trimmed.split_at(at),
        None => (trimmed, "MiB"),
    };
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        _ => 0,
    };
    let a_unit = !unit.trim().is_empty() && unit.trim().chars().all(|c| c.is_ascii_alphabetic());
    if scale == 0 && a_unit && number.parse::<usize>().is_ok_and(|n| n > 0) {
        // A size in another unit (`1KiB`, `4TB`): say which units it takes.
        return Err(anyhow::anyhow!(
            "{BUDGET_VAR}={text}: `{}` is not a unit it takes; write MiB as a number (`4096`) or with MiB or GiB (`512MiB`, `4GiB`)",
            unit.trim()
        ));
    }
    match number.parse::<usize>() {
        Ok(n) if n > 0 && scale > 0 => n
            .checked_mul(scale)
            .ok_or_else(|| anyhow::anyhow!("{BUDGET_VAR}={text} is too large")),
        _ => Err(anyhow::anyhow!(
            "{BUDGET_VAR}={text} is not a size: write MiB as a number (`4096`) or with a unit (`4GiB`, `512MiB`)"
        )),
    }
}

/// What watches a run started from the command line: the progress display
/// and the run history; with [`Lease`], the flow's lease the run holds.
/// [`Recording::finish`] waits for the last history writes, then frees the
/// lease.
pub struct Recording {
    pub observer: Arc<dyn Observer>,
    writer: Option<Arc<HistoryWriter>>,
    lease: Option<(Arc<Replica>, String)>,
    /// The lease's guard, for the run's options: asked before each step.
    pub guard: Option<Arc<dyn RunGuard>>,
    /// The lease's fencing number, carried by the run's writes.
    fence: Option<i64>,
}

impl Recording {
    /// Where approval plans are kept for this run: the store its history
    /// goes to (none when the store could not be opened), with the run's
    /// flow file and `--param` overrides for `approve --run`, written under
    /// the run's fencing number when it holds the flow's lease.
    pub fn approvals(&self, flow_file: &str, params: &[(String, String)]) -> Option<ApprovalStore> {
        self.writer.as_ref().map(|w| ApprovalStore {
            store: w.store().clone(),
            flow_file: flow_file.to_string(),
            params: params.to_vec(),
            fence: self.fence,
        })
    }

    /// Where the run keeps its flow's state: the store its history goes to,
    /// written under the lease's fencing number when the run holds it (none
    /// when the store could not be opened: the run's state then lives in
    /// memory and is gone when it ends).
    pub fn state(&self) -> Option<Arc<dyn crate::state::StateStore>> {
        self.writer.as_ref().map(|w| {
            let store = crate::state::DurableStore::new(w.store().clone(), self.fence)
                .recorded_by(w.clone());
            Arc::new(store) as Arc<dyn crate::state::StateStore>
        })
    }

    /// What of run `run_id`'s history is missing, in words (after
    /// [`Recording::finish`]): all of it when the store could not be
    /// opened, or the writes that failed; `None` when nothing is.
    pub fn lost_history(&self, run_id: &str) -> Option<LostHistory> {
        match &self.writer {
            None => Some(LostHistory::Unopened),
            Some(w) if !w.store().still_in_place() => Some(LostHistory::Unlinked),
            Some(w) => w.lost_writes(run_id).map(|lost| match lost {
                crate::run::recorder::Lost::Failed => LostHistory::Unwritten,
                crate::run::recorder::Lost::TakenOver => LostHistory::TakenOver,
            }),
        }
    }

    /// Waits until the run's history is written; frees the flow's lease.
    pub async fn finish(&self) {
        if let Some(writer) = &self.writer {
            writer.flush().await;
        }
        if let Some((replica, run_id)) = &self.lease {
            replica.end(run_id).await;
        }
    }
}

/// Why what `sluice runs` shows of a run is not all it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostHistory {
    /// The run history could not be opened: nothing is recorded.
    Unopened,
    /// Some of its history could not be written.
    Unwritten,
    /// Its lease was taken over: its record is the new owner's from there.
    TakenOver,
    /// The run history's file was deleted, moved or replaced while it
    /// ran: its record went with the file it had opened.
    Unlinked,
}

/// Why `flow` must not run unrecorded (its store could not be opened), if
/// it must not: its approval gates keep their plans and decisions in the
/// run history, and without it the gated steps would fail while the run
/// went on to "finish" (and, under `on_error = "continue"`, exit 0),
/// having done nothing, with its state gone when it ends. A dry run too:
/// it reads the approvals to say what would run and what would wait, and
/// without them its gated steps fail and its rehearsal says nothing.
fn needs_history(flow: &crate::flow::Flow, recording: &Recording) -> Option<String> {
    if recording.writer.is_some() {
        return None;
    }
    let gated: Vec<String> = flow
        .steps
        .iter()
        .filter(|s| s.approval.is_some())
        .map(|s| format!("`{}`", s.id))
        .collect();
    if gated.is_empty() {
        return None;
    }
    Some(format!(
        "its approval steps ({}) keep their approvals in the run history, which could not be opened (see the warning above); fix what it names (the data directory: `--data-dir`, SLUICE_DATA_DIR; or the database: `--database`, SLUICE_DATABASE_URL) and run again",
        gated.join(", ")
    ))
}

/// The flow's lease a command-line run takes, as a `sluice serve` run
/// does, so it never runs while the flow runs elsewhere (a replica, a
/// CronJob's second Job).
pub struct Lease<'a> {
    pub flow: &'a str,
    pub run_id: &'a str,
    pub ttl: Duration,
    pub cancel: Arc<AtomicBool>,
}

/// Starts recording a command-line run, taking `lease` first if asked. A
/// store that cannot be opened is reported and the run goes on without it:
/// losing a record must not stop the work. `Err`: the flow runs elsewhere.
pub async fn watch_and_record(
    database: &Location,
    progress: Progress,
    flow_file: &str,
    trigger: Trigger,
    lease: Option<Lease<'_>>,
) -> Result<Recording, String> {
    let progress: Arc<dyn Observer> = Arc::new(progress);
    let store = match Store::open(database).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "warning: {}; this run is not recorded",
                super::terminal::line(&e.to_string())
            );
            return Ok(Recording {
                observer: progress,
                writer: None,
                lease: None,
                guard: None,
                fence: None,
            });
        }
    };
    let name = super::replica_name();
    let (mut fence, mut held, mut guard) = (None, None, None);
    if let Some(l) = lease {
        let say: Arc<dyn Fn(String) + Send + Sync> =
            Arc::new(|line: String| eprintln!("{}", super::terminal::line(&line)));
        let replica = Arc::new(Replica::new(store.clone(), name.clone(), l.ttl, say));
        let (taken, held_by) = replica
            .begin(l.flow, l.run_id, l.cancel)
            .await
            .map_err(|busy| busy.why)?;
        (fence, guard) = (Some(taken), Some(held_by));
        held = Some((replica, l.run_id.to_string()));
    }
    let writer = HistoryWriter::start(store);
    let record_as = RecordAs {
        flow_file: flow_file.to_string(),
        trigger,
        replica: Some(name),
        fence,
    };
    let recorder: Arc<dyn Observer> = Arc::new(Recorder::new(writer.clone(), record_as));
    Ok(Recording {
        observer: Arc::new(Fanout(vec![progress, recorder])),
        writer: Some(writer),
        lease: held,
        guard,
        fence,
    })
}

/// Says on stderr why the flow was not run (`shown`, laid out for the
/// terminal), and with `--json` as the stream's one event
/// (`run_not_started`: `error`, the reason in one line, and `problems`,
/// a flow file's, each where it is), so that a script reading stdout
/// learns why rather than reading nothing.
fn not_started(mode: Mode, shown: &str, error: &str, problems: serde_json::Value) {
    eprintln!("{}", super::terminal::lines(shown));
    if mode == Mode::Json {
        let event = serde_json::json!({
            "event": "run_not_started",
            "error": error,
            "problems": problems,
        });
        println!("{}", super::terminal::json(&event.to_string()));
    }
}

/// [`not_started`] for a one-paragraph reason, with no flow-file problems.
fn refused(mode: Mode, why: &str) {
    let shown = format!("error: {}", super::terminal::line(why));
    not_started(mode, &shown, why, serde_json::json!([]));
}

/// [`not_started`] for a flow file that could not be loaded.
fn unloadable(mode: Mode, error: &crate::flow::LoadError) {
    let shown = error.to_string();
    // The summary line of a file's problems, or the one error.
    let last = shown.lines().last().unwrap_or_default();
    let why = last.strip_prefix("error: ").unwrap_or(last);
    not_started(mode, &shown, why, problems_of(error));
}

/// A flow file's problems for `run_not_started`.
fn problems_of(error: &crate::flow::LoadError) -> serde_json::Value {
    use crate::flow::LoadError;
    let diags = match error {
        LoadError::Invalid(diags) => diags,
        LoadError::NotUtf8 { path, line, column } => {
            return serde_json::json!([{
                "file": path,
                "line": line,
                "column": column,
                "message": "the flow file is not UTF-8 text here",
                "hint": "save it as UTF-8 (TOML files must be)",
            }]);
        }
        LoadError::Read { .. } | LoadError::TooLarge { .. } => return serde_json::json!([]),
    };
    diags
        .items
        .iter()
        .map(|d| {
            let (line, column) = diags.source.line_col(d.span.start);
            serde_json::json!({
                "file": diags.source.path.display().to_string(),
                "line": line,
                "column": column,
                "message": d.message,
                "hint": d.hint,
            })
        })
        .collect()
}

pub async fn run(args: RunArgs, data_dir: &Path, database: &Location) -> anyhow::Result<ExitCode> {
    let mode = if args.json {
        Mode::Json
    } else if args.quiet {
        Mode::Quiet
    } else {
        Mode::Human
    };
    // Watched first: loading the flow compiles its components (seconds on
    // a first run), and a stop asked for then must start nothing.
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = stop_gracefully_on_signal(cancel.clone(), mode);
    let flow = match super::try_load_flow(&args.file, data_dir, &args.params) {
        Ok(flow) => flow,
        Err(e) => {
            unloadable(mode, &e);
            return Ok(ExitCode::from(2));
        }
    };
    let flow_file = super::recorded_path(&args.file);
    let run_id = crate::run::new_run_id();
    let mut options = RunOptions::new(
        run_id.clone(),
        sluice_store::run_dir(data_dir, &run_id),
        args.dry_run,
    );
    options.cancel = cancel;
    let run = RunId::new(&run_id).started_at(&options.started_at);
    let tapes = match tapes(&args, &flow, &run) {
        Ok(tapes) => tapes,
        Err(e) => {
            refused(mode, &e.to_string());
            return Ok(ExitCode::from(2));
        }
    };
    let runner = engine_for(data_dir).and_then(|engine| {
        engine.size_pool(pool_for(&flow));
        Runner::new(engine)
    });
    // Before the lease is taken: nothing may return early while it is held
    // but not yet freed by `Recording::finish`.
    let runner = runner.and_then(|runner| watching.map(|()| runner));
    let runner = match runner {
        Ok(runner) => runner,
        Err(e) => {
            let why = sluice_store::error::with_causes(e.as_ref());
            refused(mode, &format!("flow `{}` was not run: {why}", flow.name));
            return Ok(ExitCode::from(1));
        }
    };
    // Stopped while the flow loaded: nothing was started, nothing is
    // recorded, no token is fetched.
    if options.cancel.load(std::sync::atomic::Ordering::SeqCst) {
        refused(
            mode,
            &format!(
                "flow `{}` was not run: it was stopped (Ctrl-C or SIGTERM) while it loaded, before anything started",
                flow.name
            ),
        );
        return Ok(ExitCode::from(1));
    }
    options.tapes = tapes.clone();
    // A dry run or a replay changes nothing, so it needs no lease.
    let lease = (!args.dry_run && args.replay.is_none()).then(|| Lease {
        flow: &flow.name,
        run_id: &run_id,
        ttl: args.lease,
        cancel: options.cancel.clone(),
    });
    let progress = Progress::new(mode, args.verbose).tracing(!args.only.is_empty());
    let trigger = match args.replay {
        Some(_) => Trigger::Replay,
        None => Trigger::Manual,
    };
    let recording = match watch_and_record(database, progress, &flow_file, trigger, lease).await {
        Ok(recording) => recording,
        Err(busy) => {
            refused(mode, &format!("flow `{}` was not run: {busy}", flow.name));
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(why) = needs_history(&flow, &recording)
        .or_else(|| crate::run::prepare::output_folder(&flow, &options.output_dir).err())
    {
        // The lease, when taken, is freed now, not when it lapses.
        recording.finish().await;
        refused(mode, &format!("flow `{}` was not run: {why}", flow.name));
        return Ok(ExitCode::from(1));
    }
    options.guard = recording.guard.clone();
    options.approvals = recording.approvals(&flow_file, &args.params);
    options.state = recording.state();
    options.only = args.only.clone();
    if let Some(tapes) = &tapes
        && let Err(e) = taped_state(tapes, &mut options, &flow.name, mode).await
    {
        recording.finish().await;
        refused(mode, &format!("flow `{}` was not run: {e}", flow.name));
        return Ok(ExitCode::from(1));
    }
    let outcome = runner
        .run(&flow, &options, recording.observer.clone())
        .await;
    recording.finish().await;
    if mode == Mode::Human {
        super::narrative::print_stories(&flow, &outcome, &args.only);
    }
    let taped = match &tapes {
        Some(tapes) => after_tape(tapes, args.record.is_some(), &options.redactor, mode),
        None => true,
    };
    // The run did its work, but its record or the ledger of whom it
    // changed is incomplete: not a success an operator may overlook.
    let lost = recording.lost_history(&outcome.run_id);
    if let Some(lost) = lost {
        // Only a run that succeeded ran to its end; another has said why
        // it ended already.
        let ended = match outcome.status {
            Status::Succeeded => "ran to its end, but",
            _ => "ended, and",
        };
        let (what, advice) = match lost {
            LostHistory::Unopened => (
                "is not recorded at all: the run history could not be opened",
                "repair or move the run history (`--data-dir`, `--database`) before the next run",
            ),
            LostHistory::Unwritten => (
                "part of its history (its record, or ledger entries of whom it changed) could not be written",
                "repair or move the run history (`--data-dir`, `--database`) before the next run",
            ),
            LostHistory::TakenOver => (
                "its history stops where another process took the flow's lease over",
                "the history itself is sound: the process that took the flow over recorded the run as interrupted, and the flow's next run reads the services afresh",
            ),
            LostHistory::Unlinked => (
                "is not recorded where the next run reads: the run history's file was deleted, moved or replaced while it ran, and its record (with the flow's state and ledger entries) went with the old file",
                "the flow's next run starts from whatever history file is there now, and reads the services afresh",
            ),
        };
        eprintln!(
            "error: {}",
            super::terminal::line(&format!(
                "run {} {ended} {what}{}, so `sluice runs` and `sluice ledger` do not show all it did; {advice}",
                outcome.run_id,
                if lost == LostHistory::Unlinked {
                    ""
                } else {
                    " (see the warning above)"
                }
            ))
        );
    }
    let lost = lost.is_some();
    Ok(match finish(&outcome, mode) {
        code if code == ExitCode::SUCCESS && (!taped || lost) => ExitCode::from(1),
        code => code,
    })
}

/// The run's cassettes, for `--record` or `--replay`: one per connection
/// the flow declares.
fn tapes(
    args: &RunArgs,
    flow: &crate::flow::Flow,
    run: &RunId,
) -> anyhow::Result<Option<Arc<Tapes>>> {
    let connections = flow.connections.keys();
    Ok(match (&args.record, &args.replay) {
        (Some(dir), _) => Some(Arc::new(Tapes::record(dir, connections, run)?)),
        (None, Some(dir)) => Some(Arc::new(Tapes::replay(dir, connections, run)?)),
        (None, None) => None,
    })
}

/// The flow's state around a recording or a replay. A recording keeps the
/// state the run starts from, to write beside its cassettes. A replay runs
/// against a copy in memory of the state the recorded run started from
/// (or, for a recording made before Sluice kept it, of the flow's state
/// now), so it asks what the recorded run asked and stores nothing.
async fn taped_state(
    tapes: &Tapes,
    options: &mut RunOptions,
    flow: &str,
    mode: Mode,
) -> Result<(), crate::state::StoreError> {
    use crate::state::snapshot;
    let stored = options.state.clone();
    let now = async {
        match &stored {
            Some(store) => snapshot::read_all(store.as_ref(), flow).await,
            None => Ok(Vec::new()),
        }
    };
    if !tapes.replaying() {
        tapes.keep_starting_state(now.await?);
        return Ok(());
    }
    let entries = match tapes.take_starting_state() {
        Some(entries) => entries,
        None => {
            if mode == Mode::Human {
                eprintln!(
                    "  note: the recording keeps no state ({} is missing: it was made by an older Sluice); the replay starts from the flow's state now",
                    crate::connections::tape::starting_state::FILE
                );
            }
            now.await?
        }
    };
    options.state = Some(Arc::new(snapshot::in_memory(flow, entries).await));
    Ok(())
}

/// Writes a recording's cassettes, or reports the requests a replay had
/// no answer for. False when a cassette could not be written or a
/// replayed request went unanswered: the run did not do what was asked.
fn after_tape(tapes: &Tapes, recorded: bool, redactor: &Redactor, mode: Mode) -> bool {
    let quiet = mode != Mode::Human;
    if recorded {
        return match tapes.save(redactor) {
            Ok(paths) => {
                for path in paths.iter().filter(|_| !quiet) {
                    eprintln!("  cassette: {}", shown(path));
                }
                true
            }
            Err(e) => {
                eprintln!("error: {}", super::terminal::line(&e.to_string()));
                false
            }
        };
    }
    let misses = tapes.misses();
    for miss in &misses {
        eprintln!("error: {}", super::terminal::line(&redactor.redact(miss)));
    }
    misses.is_empty()
}

/// What a second stop signal leaves behind, said before the process ends.
const STOPPED_AT_ONCE: &str = "error: the run was stopped at once by a second stop signal (Ctrl-C or SIGTERM): the step and items that were running were cut off without being recorded, though a request they had sent may have been acted on. The run history shows the run as interrupted once the flow runs again; the shipped license sync reads Procore afresh then, so it creates nobody twice. Stop once to let the running step finish.";

/// Ctrl-C or SIGTERM stops a run the way `serve` does: the running step
/// (and `for_each` items already started) finish, nothing new starts, the
/// run is recorded as interrupted and its history written; a second signal
/// leaves at once.
fn stop_gracefully_on_signal(
    cancel: Arc<std::sync::atomic::AtomicBool>,
    mode: Mode,
) -> anyhow::Result<()> {
    let mut stop = super::signals::watch(super::signals::OnHangup::Stop)?.stop;
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
                    eprintln!("{}", STOPPED_AT_ONCE);
                    std::process::exit(130);
                }
            }
        }
    });
    Ok(())
}

/// Prints the outcome's last words and picks the exit status.
pub fn finish(outcome: &RunOutcome, mode: Mode) -> ExitCode {
    if mode == Mode::Human {
        waiting_lines(outcome);
    }
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
            // One paragraph, whatever the component or service wrote; on
            // stderr in every mode (`--json` keeps stdout for its events),
            // so whoever watches stderr never sees a silent failure.
            eprintln!(
                "error: {}",
                super::terminal::line(outcome.error.as_deref().unwrap_or("the run failed"))
            );
            if mode != Mode::Json {
                for path in &outcome.artifacts {
                    eprintln!("  partial report: {}", shown(path));
                }
            }
            ExitCode::from(1)
        }
    }
}

/// What waits for approval after the run, with the command that approves
/// it: the last words of a run that held something back.
fn waiting_lines(outcome: &RunOutcome) {
    for (step, output) in outcome.outputs.iter() {
        let Some(gate) = output
            .field("approval")
            .and_then(|a| serde_json::from_str::<GateSummary>(a.text()).ok())
        else {
            continue;
        };
        // A dry run writes no plan: it names the open plan an earlier run
        // left, if any, and says it added nothing to it.
        if gate.dry_run && !gate.waiting.is_empty() {
            let items = format!(
                "{} item{} of step {}",
                gate.waiting.len(),
                if gate.waiting.len() == 1 { "" } else { "s" },
                super::terminal::line(step),
            );
            match (&gate.plan, &gate.approve) {
                (Some(plan), Some(cmd)) => eprintln!(
                    "  would wait for approval: {items}; plan {} is open from an earlier run (`sluice approvals show {}`, `{}`), and a dry run adds nothing to it",
                    super::terminal::line(plan),
                    super::terminal::line(plan),
                    super::terminal::line(cmd),
                ),
                _ => eprintln!(
                    "  would wait for approval: {items} (a dry run opens no plan and changes no approval)"
                ),
            }
            continue;
        }
        let (Some(plan), Some(cmd)) = (&gate.plan, &gate.approve) else {
            continue;
        };
        eprintln!(
            "  waiting for approval: {} item{} of step {} in plan {}; approve with `{}`",
            gate.waiting.len(),
            if gate.waiting.len() == 1 { "" } else { "s" },
            super::terminal::line(step),
            super::terminal::line(plan),
            super::terminal::line(cmd),
        );
    }
}

/// A path as printed: its characters escaped like any other text.
fn shown(path: &Path) -> String {
    super::terminal::line(&path.display().to_string()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{parse_memory_budget, perf_map};

    #[test]
    fn a_memory_budget_is_mib_or_a_size_with_its_unit() {
        let mib = 1024 * 1024;
        for (text, bytes) in [
            ("4096", 4096 * mib),
            ("4GiB", 4096 * mib),
            ("4 GiB", 4096 * mib),
            ("512MiB", 512 * mib),
            ("512m", 512 * mib),
            ("2g", 2048 * mib),
        ] {
            assert_eq!(parse_memory_budget(text).ok(), Some(bytes), "{text}");
        }
        for text in ["", "0", "-1", "4TB", "1KiB", "GiB", "1.5GiB"] {
            let e = parse_memory_budget(text).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains("SLUICE_MEMORY_BUDGET") && e.contains("4GiB")),
                "{text}: {e:?}"
            );
        }
        let e = parse_memory_budget("1KiB").unwrap_err().to_string();
        assert!(
            e.contains("`KiB` is not a unit it takes") && !e.contains("not a size"),
            "{e}"
        );
    }

    #[test]
    fn the_perf_map_is_on_only_when_asked_with_1() {
        for (value, on) in [
            (None, false),
            (Some(""), false),
            (Some("0"), false),
            (Some("1"), true),
        ] {
            assert_eq!(perf_map(value).ok(), Some(on), "{value:?}");
        }
        for value in ["yes", "true", "2"] {
            let e = perf_map(Some(value)).unwrap_err().to_string();
            assert!(
                e.contains("SLUICE_PERF_MAP") && e.contains("1"),
                "{value}: {e}"
            );
        }
    }
}
