//! The typed context of one run, shared by every step of it.
//!
//! [`RunContext`] holds what does not change while a run goes on: the
//! flow, the run's options, who watches, the redactor, the run's
//! connections, its `${run.*}` fields and where the flow's state lives.
//! [`Results`] holds what the run has produced so far. Steps get both instead of a long list of arguments.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::events::{Observer, RunEvent};
use super::executor::RunOptions;
use super::output::StepOutput;
use crate::connections::Connections;
use crate::engine::Engine;
use crate::flow::Flow;
use crate::flow::resolve::Scope;
use crate::redact::Redactor;
use crate::state::{Overlay, StateStore};

/// The `${run.*}` fields a flow can read. Their names are the contract:
/// a field added here is readable as `${run.<name>}`.
#[derive(Debug, Clone, Serialize)]
pub struct RunFields {
    /// The run's id.
    pub id: String,
    /// Whether the run is a rehearsal.
    pub dry_run: bool,
    /// When the run started, RFC 3339 in UTC.
    pub started_at: String,
    /// The flow's name.
    pub flow: String,
    /// The run's own folder, where artifacts are written.
    pub output_dir: String,
    /// For each step with `approval`, the keys of its open plan by state
    /// as the run starts: what an earlier step may take into account (the
    /// license sync's compare: which leavers an admin rejected).
    pub approvals: BTreeMap<String, super::approval::KeysByState>,
    /// The flow's runs since its last success that were stopped or failed
    /// after doing something: what no report has told yet.
    pub earlier_unfinished: Vec<super::earlier::EarlierRun>,
    /// `--only KEY`: the keys this run's `for_each` steps were limited to
    /// (empty: every item), so a report can say whom it left out.
    pub only: Vec<String>,
}

/// Why a run stopped early, already phrased for people.
#[derive(Debug)]
pub enum StepFailure {
    Failed(String),
    Interrupted(String),
    /// A step failure that fails the run whatever its `on_error` says:
    /// the flow's state could not be saved, so going on would act on the
    /// services without recording it.
    Halted(String),
}

/// What does not change while a run goes on.
pub struct RunContext<'a> {
    pub engine: &'a Arc<Engine>,
    pub flow: &'a Flow,
    pub options: &'a RunOptions,
    pub observer: Arc<dyn Observer>,
    pub redactor: Redactor,
    pub connections: Connections,
    pub fields: RunFields,
    /// Where the flow's state lives.
    pub state: Arc<dyn StateStore>,
    /// A dry run's state writes, seen by the rest of the run only.
    pub overlay: Option<Arc<Overlay>>,
    /// `fields` as the JSON references walk, built once.
    fields_value: Value,
}

/// What a run is given besides its flow and options.
pub struct RunServices {
    pub observer: Arc<dyn Observer>,
    pub redactor: Redactor,
    pub connections: Connections,
    pub state: Arc<dyn StateStore>,
}

impl<'a> RunContext<'a> {
    pub fn new(
        engine: &'a Arc<Engine>,
        flow: &'a Flow,
        options: &'a RunOptions,
        services: RunServices,
        fields: RunFields,
    ) -> Self {
        // Strings, a bool and maps of string lists always serialise.
        let fields_value = serde_json::to_value(&fields).unwrap_or(Value::Null);
        Self {
            engine,
            flow,
            options,
            observer: services.observer,
            redactor: services.redactor,
            connections: services.connections,
            state: services.state,
            overlay: options.dry_run.then(Arc::default),
            fields,
            fields_value,
        }
    }

    pub fn emit(&self, event: &RunEvent) {
        self.observer.event(event);
    }

    pub fn cancelled(&self) -> bool {
        self.options.cancelled()
    }

    /// What references see before any item: params, the outputs so far
    /// and the run's fields (the environment was read when the flow was
    /// bound).
    pub fn scope<'s>(&'s self, results: &'s Results) -> Scope<'s> {
        Scope {
            params: Some(&self.flow.params),
            steps: Some(&results.outputs),
            run: Some(&self.fields_value),
            ..Default::default()
        }
    }
}

/// What a run has produced so far.
#[derive(Debug, Default)]
pub struct Results {
    /// Each finished step's output (null when skipped or failed under
    /// `on_error = "continue"`), its JSON text shared with the events that
    /// show it.
    pub outputs: BTreeMap<String, StepOutput>,
    pub artifacts: Vec<PathBuf>,
    /// Steps that have had their `StepFinished`.
    pub finished: HashSet<String>,
    /// Steps that failed and the run went on past (`on_error = "continue"`).
    pub failed_and_continued: Vec<String>,
}
