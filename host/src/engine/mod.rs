//! The WebAssembly engine: one per process.
//!
//! Owns the wasmtime `Engine` (component model, async host calls, epoch
//! interruption), a `Linker` built once with WASI and the step world's
//! imports, and a cache of pre-instantiated components keyed by content
//! digest. Running a step is `Store::new` + instantiate + call: nothing is
//! linked or compiled on that path, and no state survives between calls.
//!
//! - [`bindings`]: the `sluice:flow@0.2.0` world, host side; [`imports`]
//!   serves its imports ([`instance`] is what each instance holds)
//! - [`contract`]: a component built for another contract version is
//!   refused when it is prepared, naming both versions
//! - [`describe`]: the optional `describe` export, asked once per component
//! - [`catalog`]: components read, prepared and described for the flow's
//!   checks (the engine as the flow's `ComponentCatalog`) and for runs
//! - [`error`]: why a call produced no output
//! - [`cache`], [`config`], [`limits`]: compiled components on disk, the
//!   engine's knobs, and what one instance may use

pub mod bindings;
pub mod budget;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod contract;
pub mod describe;
pub mod error;
mod imports;
pub mod instance;
pub mod limits;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{ComponentExportIndex, HasSelf, Linker};
use wasmtime::{Store, UpdateDeadline};

pub use crate::flow::{ConnectionRole, Description};
use budget::MemoryBudget;
pub use cache::Origin;
pub use config::EngineConfig;
pub use error::CallError;
use error::classify;
pub use instance::{
    Call, Invocation, LogLevel, LogSink, MAX_LOG_LINES, OutputCap, SandboxViolation, StepContext,
    StepState,
};
use limits::{DeadlineExceeded, MemoryCap};

/// A component ready to instantiate.
pub struct Prepared {
    pre: bindings::StepPre<StepState>,
    /// Where its `describe` export is, if it has one.
    describe: Option<ComponentExportIndex>,
    /// What `describe` said, once asked.
    described: tokio::sync::OnceCell<Result<Option<Arc<Description>>, CallError>>,
    pub digest: String,
    pub origin: Origin,
}

/// What a successful call left behind.
#[derive(Debug)]
pub struct CallOutput {
    /// The component's output, parsed.
    pub output: serde_json::Value,
    /// Its size as the component returned it (JSON text).
    pub bytes: usize,
    /// The flow state it wrote, for the run to keep (see [`crate::state`]).
    pub writes: crate::state::Writes,
}

/// `describe` returns constant data: a second is thousands of times what
/// that takes, and bounds a component that loops in it.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// component; repeated calls with the same bytes are free. A component
    /// built for another version of the step contract is refused here.
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
        contract::check(&component, &self.engine)?;
        let describe = component.get_export_index(None, "describe");
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!("it does not implement the sluice:flow@{} step world, or imports something the host does not grant: {e}", contract::SPOKEN)
        })?;
        let pre = bindings::StepPre::new(instance_pre).map_err(|e| {
            anyhow::anyhow!("it does not export the step world's `run` function: {e}")
        })?;
        let prepared = Arc::new(Prepared {
            pre,
            describe,
            described: tokio::sync::OnceCell::new(),
            digest: digest.clone(),
            origin,
        });
        if let Ok(mut m) = self.prepared.lock() {
            m.insert(digest, prepared.clone());
        }
        Ok(prepared)
    }

    /// A store for one instance: the memory cap (its own, and the engine's
    /// budget, given back when the store is dropped), and a deadline
    /// enforced by epochs (each tick past it ends the instance; before it,
    /// the guest yields so other steps and items on this thread make
    /// progress).
    fn store(&self, call: Option<Call>, timeout: Duration) -> Store<StepState> {
        let memory = MemoryCap::new(self.config.memory_limit, self.budget.clone());
        let mut store = Store::new(&self.engine, StepState::new(call, memory));
        store.limiter_async(|s| &mut s.memory);
        // Validation caps step timeouts at a day; stay safe with any value.
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(366 * 24 * 3600));
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineExceeded(timeout)))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Runs the component once in a fresh instance; its output (JSON text)
    /// may be at most `cap`.
    pub async fn call(
        &self,
        prepared: &Prepared,
        call: Call,
        input: String,
        timeout: Duration,
        cap: OutputCap,
    ) -> Result<CallOutput, CallError> {
        let context = run_context(&call.invocation);
        let mut store = self.store(Some(call), timeout);
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
                .call_run(&mut store, &input, &context)
                .await
                .map_err(|e| classify(e, &stderr, false, max_stack))
        };
        let grace = self.config.epoch_tick.saturating_mul(5);
        let ended = tokio::time::timeout(timeout.saturating_add(grace), run).await;
        store.data().report_dropped_lines();
        let output = match ended {
            Ok(Ok(Ok(output))) if output.len() > cap.bytes => {
                return Err(CallError::OutputTooLarge {
                    size: output.len(),
                    limit: cap.bytes,
                    key: cap.key,
                });
            }
            Ok(Ok(Ok(output))) => output,
            Ok(Ok(Err(reported))) => return Err(reported_error(reported)),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(CallError::Timeout(timeout)),
        };
        let bytes = output.len();
        let output = serde_json::from_str(&output).map_err(|e| {
            CallError::InvalidOutput(format!(
                "{e} (output starts with {:?})",
                output.chars().take(40).collect::<String>()
            ))
        })?;
        let writes = store
            .into_data()
            .into_call()
            .map(|c| c.state.into_writes())
            .unwrap_or_default();
        Ok(CallOutput {
            output,
            bytes,
            writes,
        })
    }

    /// The component's description, from its `describe` export, or `None`
    /// when it has none. Asked once per component: the answer (or the
    /// failure) is kept with the prepared component.
    pub async fn describe(
        &self,
        prepared: &Prepared,
    ) -> Result<Option<Arc<Description>>, CallError> {
        prepared
            .described
            .get_or_init(|| self.call_describe(prepared))
            .await
            .clone()
    }

    async fn call_describe(
        &self,
        prepared: &Prepared,
    ) -> Result<Option<Arc<Description>>, CallError> {
        let Some(index) = prepared.describe else {
            return Ok(None);
        };
        let mut store = self.store(None, DESCRIBE_TIMEOUT);
        let stderr = store.data().stderr.clone();
        let max_stack = self.config.max_wasm_stack;
        let run = async {
            let instance = prepared
                .pre
                .instance_pre()
                .instantiate_async(&mut store)
                .await
                .map_err(|e| classify(e, &stderr, true, max_stack))?;
            let func = instance
                .get_typed_func::<(), (bindings::types::Description,)>(&mut store, &index)
                .map_err(|e| {
                    CallError::Instantiate(format!(
                        "its `describe` export is not the sluice:flow@{} one: {e}",
                        contract::SPOKEN
                    ))
                })?;
            func.call_async(&mut store, ())
                .await
                .map_err(|e| classify(e, &stderr, false, max_stack))
        };
        let (wit,) = match tokio::time::timeout(DESCRIBE_TIMEOUT, run).await {
            Ok(result) => result?,
            Err(_) => return Err(CallError::Timeout(DESCRIBE_TIMEOUT)),
        };
        describe::from_wit(wit)
            .map(|d| Some(Arc::new(d)))
            .map_err(|why| CallError::InvalidOutput(format!("its `describe`: {why}")))
    }
}

/// The run context as the component receives it.
fn run_context(i: &Invocation) -> bindings::types::RunContext {
    bindings::types::RunContext {
        run_id: i.run_id.clone(),
        flow: i.flow.clone(),
        step: i.step.clone(),
        item_index: i.item_index,
        item_key: i.item_key.clone(),
        dry_run: i.dry_run,
        started_at: i.started_at.clone(),
        attempt: i.attempt,
    }
}

/// The component's own error, with its kind as the contract crate spells it.
fn reported_error(e: bindings::types::StepError) -> CallError {
    use bindings::types::ErrorKind as Wit;
    use sluice_contract::ErrorKind;
    let kind = match e.kind {
        Wit::BadInput => ErrorKind::BadInput,
        Wit::NotFound => ErrorKind::NotFound,
        Wit::Conflict => ErrorKind::Conflict,
        Wit::Forbidden => ErrorKind::Forbidden,
        Wit::Unavailable => ErrorKind::Unavailable,
        Wit::RateLimited => ErrorKind::RateLimited,
        Wit::Internal => ErrorKind::Internal,
    };
    CallError::Reported {
        kind,
        code: e.code,
        message: e.message,
    }
}

/// wasmtime has its own error type; its text (with causes) is what we keep.
pub(crate) fn to_anyhow(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
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
