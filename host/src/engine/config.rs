//! Every engine knob in one place, each default with its reason.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where compiled components are kept between runs. `None` compiles
    /// every time (tests that measure compilation use this).
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances. 10 ms keeps deadline overshoot small
    /// and lets long-running guests yield to other tasks often enough,
    /// while costing almost nothing (one atomic increment per tick).
    pub epoch_tick: Duration,
    /// Linear memory a single step instance may use. 512 MiB holds the
    /// 100k-user sync's largest step (compare: two lists and an index)
    /// several times over, and stops a runaway before it hurts the host.
    pub memory_limit: usize,
    /// WebAssembly stack. 2 MiB is deep enough for serde on nested JSON.
    pub max_wasm_stack: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            epoch_tick: Duration::from_millis(10),
            memory_limit: 512 * 1024 * 1024,
            max_wasm_stack: 2 * 1024 * 1024,
        }
    }
}
