//! The WebAssembly engine: one per process.
//!
//! Owns the wasmtime `Engine` (component model, async host calls, epoch
//! interruption), a `Linker` built once with WASI and the step world's
//! imports, and a cache of pre-instantiated components keyed by content
//! digest. Running a step is `Store::new` + instantiate + call: nothing is
//! linked or compiled on that path, and no state survives between calls.

pub mod bindings;
pub mod budget;
pub mod cache;
pub mod config;
pub mod limits;
pub mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Store, UpdateDeadline};

use budget::{BudgetExhausted, MemoryBudget};
pub use cache::Origin;
pub use config::EngineConfig;
use limits::{DeadlineExceeded, MemoryCap, MemoryLimitExceeded};
pub use state::{
    LogLevel, LogSink, MAX_LOG_LINES, OutputCap, SandboxViolation, StepContext, StepState,
};

/// A component ready to instantiate.
pub struct Prepared {
    pre: bindings::StepPre<StepState>,
    pub digest: String,
    pub origin: Origin,
}

/// Why a step call produced no output. The engine's own failures (a trap, a
/// limit) and the component's reported error are kept apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("the component returned an error [{code}]: {message}")]
    Reported {
        code: String,
        message: String,
        retryable: bool,
    },
    #[error("it ran longer than its timeout of {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("it exceeded its memory limit ({desired} bytes requested, limit {limit} bytes)")]
    MemoryLimit { desired: usize, limit: usize },
    /// The process's shared memory budget could not hold a growth.
    #[error("{0}; run fewer items at once (a lower `concurrency`) or raise SLUICE_MEMORY_BUDGET")]
    MemoryBudget(BudgetExhausted),
    /// The component called WASI's `exit` instead of returning.
    #[error(
        "it exited with status {0} instead of returning a result or an error (the component called exit(), e.g. std::process::exit)"
    )]
    Exited(i32),
    /// Its output, as JSON text, is over the step's cap.
    #[error("its output is {size} bytes, over the limit of {limit} bytes (`{key}`)")]
    OutputTooLarge {
        size: usize,
        limit: usize,
        /// The flow key that sets the limit.
        key: &'static str,
    },
    #[error("sandbox violation: {0}")]
    Violation(String),
    #[error("it trapped: {0}")]
    Trap(String),
    #[error("its output is not valid JSON: {0}")]
    InvalidOutput(String),
    #[error("it could not be instantiated: {0}")]
    Instantiate(String),
}

impl CallError {
    pub fn code(&self) -> &str {
        match self {
            CallError::Reported { code, .. } => code,
            CallError::Timeout(_) => "timeout",
            CallError::MemoryLimit { .. } => "memory-limit",
            CallError::MemoryBudget(_) => "memory-budget",
            CallError::Exited(_) => "exited",
            CallError::OutputTooLarge { .. } => "output-too-large",
            CallError::Violation(_) => "sandbox-violation",
            CallError::Trap(_) => "trap",
            CallError::InvalidOutput(_) => "invalid-output",
            CallError::Instantiate(_) => "instantiate",
        }
    }

    pub fn retryable(&self) -> bool {
        matches!(
            self,
            CallError::Reported {
                retryable: true,
                ..
            }
        )
    }
}

pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<StepState>,
    config: EngineConfig,
    budget: Arc<MemoryBudget>,
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> anyhow::Result<Arc<Engine>> {
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            // Host functions run on the same fiber below the guest's frames:
            // the fiber must be larger than the guest's share (see EngineConfig).
            .async_stack_size(config.async_stack_size());
        let engine = wasmtime::Engine::new(&wasm).map_err(to_anyhow)?;
        let mut linker = Linker::<StepState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(to_anyhow)?;
        bindings::Step::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
            .map_err(to_anyhow)?;
        spawn_epoch_ticker(&engine, config.epoch_tick);
        Ok(Arc::new(Engine {
            engine,
            linker,
            budget: Arc::new(MemoryBudget::new(config.memory_budget)),
            config,
            prepared: Mutex::new(HashMap::new()),
        }))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The linear memory every live instance of this engine shares.
    pub fn memory_budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Compiles (or loads from the on-disk cache) and pre-instantiates a
    /// component; repeated calls with the same bytes are free.
    pub fn prepare(&self, bytes: &[u8]) -> anyhow::Result<Arc<Prepared>> {
        let digest = cache::digest(bytes);
        if let Some(p) = self
            .prepared
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).cloned())
        {
            return Ok(p);
        }
        let (component, origin) = cache::load_or_compile(
            &self.engine,
            self.config.cache_dir.as_deref(),
            bytes,
            &digest,
        )?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!("it does not implement the sluice:flow step world, or imports something the host does not grant: {e}")
        })?;
        let pre = bindings::StepPre::new(instance_pre).map_err(|e| {
            anyhow::anyhow!("it does not export the step world's `run` function: {e}")
        })?;
        let prepared = Arc::new(Prepared {
            pre,
            digest: digest.clone(),
            origin,
        });
        if let Ok(mut m) = self.prepared.lock() {
            m.insert(digest, prepared.clone());
        }
        Ok(prepared)
    }

    /// Runs the component once in a fresh instance; its output (JSON text)
    /// may be at most `cap`. The instance's memory counts against its own
    /// cap and the engine's budget, given back when the store is dropped.
    pub async fn call(
        &self,
        prepared: &Prepared,
        step: Arc<StepContext>,
        input: &str,
        timeout: Duration,
        cap: OutputCap,
    ) -> Result<String, CallError> {
        let memory = MemoryCap::new(self.config.memory_limit, self.budget.clone());
        let mut store = Store::new(&self.engine, StepState::new(step, memory));
        store.limiter_async(|s| &mut s.memory);
        // Validation caps step timeouts at a day; stay safe with any value.
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(366 * 24 * 3600));
        store.set_epoch_deadline(1);
        // Each tick: past the deadline, end the instance; otherwise yield so
        // other steps and items on this thread make progress.
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineExceeded(timeout)))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let stderr = store.data().stderr.clone();
        let max_stack = self.config.max_wasm_stack;
        // Epochs do not interrupt a guest waiting in a host call (a slow
        // request); the outer timeout covers that case.
        let run = async {
            let instance = prepared
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| classify(e, &stderr, true, max_stack))?;
            instance
                .call_run(&mut store, &input.to_string())
                .await
                .map_err(|e| classify(e, &stderr, false, max_stack))
        };
        let grace = self.config.epoch_tick.saturating_mul(5);
        let ended = tokio::time::timeout(timeout.saturating_add(grace), run).await;
        store.data().report_dropped_lines();
        let outcome = match ended {
            Ok(result) => result?,
            Err(_) => return Err(CallError::Timeout(timeout)),
        };
        match outcome {
            Ok(output) if output.len() > cap.bytes => Err(CallError::OutputTooLarge {
                size: output.len(),
                limit: cap.bytes,
                key: cap.key,
            }),
            Ok(output) => match serde_json::from_str::<serde_json::Value>(&output) {
                Ok(_) => Ok(output),
                Err(e) => Err(CallError::InvalidOutput(format!(
                    "{e} (output starts with {:?})",
                    output.chars().take(40).collect::<String>()
                ))),
            },
            Err(e) => Err(CallError::Reported {
                code: e.code,
                message: e.message,
                retryable: e.retryable,
            }),
        }
    }
}

/// Turns a wasmtime error into what happened, in words a flow author can act on.
fn classify(
    error: wasmtime::Error,
    stderr: &wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    instantiating: bool,
    max_wasm_stack: usize,
) -> CallError {
    if let Some(d) = error.downcast_ref::<DeadlineExceeded>() {
        return CallError::Timeout(d.0);
    }
    if let Some(m) = error.downcast_ref::<MemoryLimitExceeded>() {
        return CallError::MemoryLimit {
            desired: m.desired,
            limit: m.limit,
        };
    }
    if let Some(b) = error.downcast_ref::<BudgetExhausted>() {
        return CallError::MemoryBudget(*b);
    }
    if let Some(v) = error.downcast_ref::<SandboxViolation>() {
        return CallError::Violation(v.0.to_string());
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return CallError::Exited(exit.0);
    }
    if instantiating {
        return CallError::Instantiate(format!("{error:#}"));
    }
    let trap = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::StackOverflow) => format!(
            "{}: it recursed deeper than the {} KiB stack a step may use",
            wasmtime::Trap::StackOverflow,
            max_wasm_stack / 1024
        ),
        Some(t) => t.to_string(),
        None => first_line(&format!("{error}")),
    };
    // A Rust guest prints its panic message to stderr before trapping.
    let printed = String::from_utf8_lossy(&stderr.contents()).into_owned();
    let panic = printed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .find(|l| l.contains("panicked"))
        .map(str::to_string);
    let last = printed
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("note:"))
        .map(str::to_string);
    match panic.or(last) {
        Some(line) => CallError::Trap(format!("{trap}; the component printed: {}", line.trim())),
        None => CallError::Trap(trap),
    }
}

/// wasmtime has its own error type; its text (with causes) is what we keep.
pub(crate) fn to_anyhow(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// Advances the engine's epoch every `tick` until the engine is dropped.
fn spawn_epoch_ticker(engine: &wasmtime::Engine, tick: Duration) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        });
    // Without the ticker deadlines would only be enforced by the outer
    // timeout; a runaway loop would then block its thread. Say so loudly.
    if let Err(e) = spawned {
        eprintln!(
            "warning: could not start the epoch thread ({e}); step timeouts may not interrupt busy loops"
        );
    }
}
