//! What the engine benches share: medians, a printed line, and a call as a
//! run makes it (a step's context, the run context, a view of the state).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::connections::Connection;
use sluice::engine::{Call, Invocation, LogLevel, OutputCap, OutputLists, StepContext};
use sluice::state::{CallState, StateStore};

/// The benches' outputs are not capped: no cap is measured.
pub const NO_CAP: OutputCap = OutputCap {
    bytes: usize::MAX,
    key: "max_output_bytes",
};

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub fn show(label: &str, d: Duration) {
    println!("{label:<58} {:>12.1} µs", d.as_secs_f64() * 1e6);
}

pub fn context(granted: BTreeMap<String, Arc<Connection>>) -> Arc<StepContext> {
    Arc::new(StepContext {
        step_id: "bench".into(),
        component: "bench".into(),
        granted,
        dry_run: false,
        lease: None,
        log: Arc::new(|_: LogLevel, _: &str| {}),
        stats: Mutex::new(BTreeMap::new()),
        memory: Default::default(),
    })
}

/// The run context every bench passes.
pub fn invocation() -> Invocation {
    Invocation {
        run_id: "bench".into(),
        flow: "bench".into(),
        step: "bench".into(),
        item_index: None,
        item_key: None,
        dry_run: false,
        started_at: "2025-01-01T00:00:00+00:00".into(),
        attempt: 1,
    }
}

/// One call as the run makes it.
pub fn call(step: &Arc<StepContext>, state: &Arc<dyn StateStore>) -> Call {
    Call {
        step: step.clone(),
        invocation: invocation(),
        state: CallState::new(state.clone(), "bench", "bench-run", None),
        paged: Default::default(),
        outputs: OutputLists::none(NO_CAP),
        waiting: Default::default(),
    }
}
