//! Every engine knob in one place, each default with its reason.

use std::path::PathBuf;
use std::time::Duration;

use super::pool::PoolSize;

/// How the engine runs components.
///
/// Stacks: each step call runs on its own native stack (a wasmtime async
/// fiber) of `max_wasm_stack + host_stack` bytes. WebAssembly may use up to
/// `max_wasm_stack` of it and then traps with "call stack exhausted"; host
/// functions the component calls (`log`, `connection.send`, WASI) run on
/// the same fiber, below the WebAssembly frames, so they always need room
/// of their own. Were the fiber no larger than `max_wasm_stack`, a
/// component recursing to its limit and then calling the host would
/// overflow the fiber inside host code, which aborts the whole process
/// rather than failing the step.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where compiled components are kept between runs. `None` compiles
    /// every time (tests that measure compilation use this).
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances. 10 ms keeps deadline overshoot small
    /// and lets long-running guests yield to other tasks often enough,
    /// while costing almost nothing (one atomic increment per tick).
    pub epoch_tick: Duration,
    /// Linear memory one step instance may use, all its memories together.
    /// 512 MiB holds the 100k-user sync's largest step (compare: two lists
    /// and an index) several times over, and stops a runaway before it
    /// hurts the host.
    pub memory_limit: usize,
    /// Linear memory all live instances may use together (every step and
    /// `for_each` item running at once, in every flow of a `serve`). A
    /// growth past it waits for another instance to end, or fails the call
    /// when none can (see [`super::budget`]). 2 GiB lets four instances
    /// use their whole cap at once; `SLUICE_MEMORY_BUDGET` sets it.
    pub memory_budget: usize,
    /// WebAssembly stack. 2 MiB is deep enough for serde on nested JSON.
    pub max_wasm_stack: usize,
    /// Native stack kept for host functions beyond `max_wasm_stack` (see
    /// the type's doc). 2 MiB is what wasmtime gives a whole fiber by
    /// default and several times what a `connection.send` (reqwest, TLS,
    /// our own unoptimised debug build) uses at its deepest; it is address
    /// space, touched only as far as it is used.
    pub host_stack: usize,
    /// Instances the pooling allocator keeps slots for (see
    /// [`super::pool`]); a call beyond them is served on demand. `sluice
    /// run` sizes it from the flow's largest `concurrency`;
    /// [`PoolSize::DEFAULT`] otherwise. `instances: 0` turns it off.
    pub pool: PoolSize,
    /// Name every compiled guest function in `/tmp/perf-PID.map`, so that
    /// `perf report` shows guest code by function (by its own name when
    /// the component keeps its name section) instead of bare addresses.
    /// Off unless asked (`SLUICE_PERF_MAP=1`): the file grows with every
    /// component loaded.
    pub perf_map: bool,
}

impl EngineConfig {
    /// The size of each call's fiber stack: WebAssembly's part plus the host's.
    pub fn async_stack_size(&self) -> usize {
        self.max_wasm_stack.saturating_add(self.host_stack)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            epoch_tick: Duration::from_millis(10),
            memory_limit: 512 * 1024 * 1024,
            memory_budget: 2 * 1024 * 1024 * 1024,
            max_wasm_stack: 2 * 1024 * 1024,
            host_stack: 2 * 1024 * 1024,
            pool: PoolSize::DEFAULT,
            perf_map: false,
        }
    }
}
