//! What the timer host tells its operator, as typed events: the scheduler
//! says what happened and the CLI decides how it reads (a line of text, or
//! a JSON object with stable field names, through `tracing`). Times are in
//! the flow's own zone, as its schedule is written. Errors that come from a
//! run are redacted before they get here.

use std::path::PathBuf;
use std::time::Duration;

use chrono::DateTime;
use chrono_tz::Tz;

use crate::run::Status;

#[derive(Debug, Clone, PartialEq)]
pub enum ServeEvent {
    /// The host starts loading its flow files: compiling the components
    /// its cache does not hold yet takes a minute or so on a first start,
    /// which must not look like a hang.
    Loading { paths: Vec<String> },
    /// The host is up: its flows are armed and its signal handlers ready.
    Serving {
        flows: usize,
        replica: String,
        lease: Duration,
        history: String,
    },
    /// The web console (`--http`) listens at `url`; `note` says what to
    /// open when that address is every address of the host.
    ConsoleListening { url: String, note: Option<String> },
    /// What the replicas' coordination says: a lease taken over from a
    /// replica gone quiet, or lost, with what follows for the run.
    Replica { message: String },
    /// Runs an earlier process left `running` were recorded as interrupted.
    Recovered { runs: usize },
    /// Runs an earlier process left `running` could not be settled.
    RecoveryFailed { error: String },
    /// A flow file is served: its timer is armed (at start, when a file
    /// is added, and again when it is reloaded).
    FlowLoaded {
        file: PathBuf,
        flow: String,
        cron: String,
        next: Option<DateTime<Tz>>,
    },
    /// A flow file that does not validate is not served.
    FlowRejected { file: PathBuf, error: String },
    /// A valid flow file without a schedule is not served.
    FlowNotScheduled { file: PathBuf, flow: String },
    /// A path given to `serve` could not be listed.
    PathUnreadable { error: String },
    /// SIGHUP: every flow file is read again now.
    Rescanning,
    /// A served file changed and its new version is served.
    FlowReloaded {
        file: PathBuf,
        flow: String,
        next: Option<DateTime<Tz>>,
    },
    /// A served file changed but the change does not validate (or has lost
    /// its schedule): the previous version goes on.
    ReloadRejected {
        file: PathBuf,
        flow: String,
        error: String,
    },
    /// A served file is gone and its flow no longer served; a run of it in
    /// progress goes on to its end.
    FlowRetired {
        file: PathBuf,
        flow: String,
        run_goes_on: bool,
    },
    /// A firing starts a run.
    Firing {
        flow: String,
        run_id: String,
        at: DateTime<Tz>,
    },
    /// A run asked for by hand (the console's "run now") starts.
    RunNow { flow: String, run_id: String },
    /// A firing came while the flow's previous run was still going (here
    /// or on another replica): `reason` says which. The skip is recorded
    /// as run `skipped_run_id`.
    SkippedStillRunning {
        flow: String,
        /// The run still going, when known (another replica's lease may
        /// name none).
        running_run_id: Option<String>,
        skipped_run_id: String,
        at: DateTime<Tz>,
        reason: String,
    },
    /// Firings passed unseen (the host stalled or the machine slept):
    /// `count` of them from `first` to `last`, none run late (`more`: the
    /// timer stopped counting, so more than `count` passed).
    Missed {
        flow: String,
        first: DateTime<Tz>,
        last: DateTime<Tz>,
        count: u64,
        more: bool,
    },
    /// A firing armed under a schedule the reloaded file no longer has.
    NotInSchedule {
        flow: String,
        at: DateTime<Tz>,
        next: Option<DateTime<Tz>>,
    },
    /// A run ended: succeeded, failed (its task died, too) or interrupted.
    RunFinished {
        flow: String,
        run_id: String,
        status: Status,
        error: Option<String>,
        /// What failed that the run went on past.
        setbacks: crate::run::Setbacks,
    },
    /// A stop signal: no new runs; the running ones get the grace period.
    Stopping { running: usize, grace: Duration },
    /// The grace period ran out, or a second signal came: the runs still
    /// going are recorded as interrupted.
    StoppingNow { reason: String, interrupted: usize },
    /// The host has stopped.
    Stopped,
    /// The host cannot start, or cannot go on: it exits after this. `error`
    /// is one line; `detail` holds a flow file's diagnostics, if any.
    Fatal {
        error: String,
        detail: Option<String>,
    },
    /// A warning about the host itself that is no event of its own (the
    /// compiled-component cache cannot be used).
    Warning { message: String },
}

impl ServeEvent {
    /// The event's stable name (the `event` field of a JSON line).
    pub fn name(&self) -> &'static str {
        match self {
            ServeEvent::Loading { .. } => "loading",
            ServeEvent::Serving { .. } => "serving",
            ServeEvent::ConsoleListening { .. } => "console_listening",
            ServeEvent::Recovered { .. } => "recovered",
            ServeEvent::Replica { .. } => "replica",
            ServeEvent::RecoveryFailed { .. } => "recovery_failed",
            ServeEvent::FlowLoaded { .. } => "flow_loaded",
            ServeEvent::FlowRejected { .. } => "flow_rejected",
            ServeEvent::FlowNotScheduled { .. } => "flow_not_scheduled",
            ServeEvent::PathUnreadable { .. } => "path_unreadable",
            ServeEvent::Rescanning => "rescanning",
            ServeEvent::FlowReloaded { .. } => "flow_reloaded",
            ServeEvent::ReloadRejected { .. } => "reload_rejected",
            ServeEvent::FlowRetired { .. } => "flow_retired",
            ServeEvent::Firing { .. } => "firing",
            ServeEvent::RunNow { .. } => "run_now",
            ServeEvent::SkippedStillRunning { .. } => "skipped_still_running",
            ServeEvent::Missed { .. } => "missed",
            ServeEvent::NotInSchedule { .. } => "not_in_schedule",
            ServeEvent::RunFinished { .. } => "run_finished",
            ServeEvent::Stopping { .. } => "stopping",
            ServeEvent::StoppingNow { .. } => "stopping_now",
            ServeEvent::Stopped => "stopped",
            ServeEvent::Fatal { .. } => "fatal",
            ServeEvent::Warning { .. } => "warning",
        }
    }
}
