//! Running a validated flow: steps in order, `when`, `for_each` with bounded
//! concurrency, error policies, artifacts, and the events that describe it.

pub mod events;
pub mod executor;
pub mod recorder;

pub use events::{Fanout, Observer, RunEvent, Status};
pub use executor::{RunOptions, RunOutcome, Runner};

/// A run id that sorts by start time: `20261124T054200Z-3f9a1c`.
pub fn new_run_id() -> String {
    use rand::Rng;
    let now = chrono::Utc::now();
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%SZ"),
        rand::rng().random_range(0..0x100_0000u32)
    )
}
