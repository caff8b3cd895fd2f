//! Running a validated flow: steps in order, `when`, `for_each` with bounded
//! concurrency, error policies, artifacts, and the events that describe it.

pub mod events;
pub mod executor;
pub mod recorder;

pub use events::{Fanout, Observer, RunEvent, Status};
pub use executor::{RunOptions, RunOutcome, Runner};

/// Run ids belong to the history, which sorts and finds runs by them.
pub use sluice_store::new_run_id;
