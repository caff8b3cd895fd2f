//! Running a validated flow: steps in order, `when`, `for_each` with bounded
//! concurrency, error policies, artifacts, and the events that describe it.
//!
//! - [`executor`]: the [`Runner`] and the run loop
//! - [`context`]: the typed context every step of a run shares
//! - [`prepare`]: what is checked before the first step
//! - [`step`]: one step, from its `when` to its `StepFinished`
//! - [`call`]: one call of a component: its run context, its state;
//!   [`paged`]: the lists of its input it reads in pages
//! - [`for_each`]: one call per item, and the typed output that lists them
//! - [`approval`]: the approval gate of a `for_each` step with `approval`
//! - [`earlier`]: what earlier runs stopped part-way did (`${run.earlier_unfinished}`)
//! - [`output`]: a step's output as the run holds it (its JSON text) and
//!   the references that read it; [`splice`]: the lists a component
//!   handed over in pages, put in its output
//! - [`artifacts`]: output fields written as files
//! - [`ledger`]: what a step says about each key it handled
//! - [`events`] and [`recorder`]: what watchers and the run history see;
//!   [`payload`]: the inputs and outputs they carry, shared, redacted when shown

pub mod approval;
pub mod artifacts;
pub mod call;
pub mod context;
pub mod earlier;
pub mod events;
pub mod executor;
pub mod for_each;
pub mod ledger;
pub mod output;
pub mod paged;
pub mod payload;
pub mod prepare;
pub mod recorder;
pub mod splice;
pub mod step;

pub use approval::{ApprovalStore, GateSummary};
pub use context::RunFields;
pub use events::{Fanout, Observer, RunEvent, Setbacks, Status};
pub use executor::{RunGuard, RunOptions, RunOutcome, Runner};
pub use output::{Json, ListItems, Outputs, StepOutput};
pub use payload::Payload;
pub use sluice_contract::ForEachOutput;

/// Run ids belong to the history, which sorts and finds runs by them.
pub use sluice_store::new_run_id;
