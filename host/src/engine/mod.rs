//! The WebAssembly engine: one per process.
//!
//! Owns the wasmtime `Engine` (component model, async host calls, epoch
//! interruption), a `Linker` built once with WASI and the step world's
//! imports, and a cache of pre-instantiated components keyed by content
//! digest. Running a step is `Store::new` + instantiate + call: nothing is
//! linked or compiled on that path, and no state survives between calls.
//!
//! - [`bindings`]: the `sluice:flow@0.2.3` world, host side; [`imports`]
//!   serves its imports ([`instance`] is what each instance holds;
//!   [`paged`] the lists a call reads in pages, [`paged_output`] those it
//!   hands over in pages)
//! - [`contract`]: a component built for another contract version is
//!   refused when it is prepared, naming both versions
//! - [`describe`]: the optional `describe` export, asked once per component
//! - [`catalog`]: components read, prepared and described for the flow's
//!   checks (the engine as the flow's `ComponentCatalog`) and for runs
//! - [`error`]: why a call produced no output
//! - [`cache`], [`config`], [`limits`]: compiled components on disk, the
//!   engine's knobs, and what one instance may use
//! - [`pool`], [`runtime`]: instances from wasmtime's pooling allocator
//!   (copy-on-write memory images), on demand when the pool is full

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
pub mod paged;
pub mod paged_output;
pub mod pool;
mod runtime;
pub mod waiting;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::Instance;
use wasmtime::{Store, UpdateDeadline};

pub use crate::flow::{ConnectionRole, Description};
use budget::MemoryBudget;
pub use cache::Origin;
pub use config::EngineConfig;
pub use error::CallError;
use error::classify;
pub use instance::{
    Call, Invocation, LogLevel, LogSink, MAX_LOG_LINES, MemoryPeak, MemoryUse, OutputCap,
    SandboxViolation, StepContext, StepState,
};
use limits::{DeadlineExceeded, MemoryCap};
pub use paged::{PagedInputs, PagedList, StepInput};
pub use paged_output::{AppendedList, AppendedLists, ListRules, OutputLists};
pub use pool::{PoolSize, PoolStats};
use runtime::{Ready, Runtime};
pub use waiting::Waiting;

/// A component ready to instantiate.
pub struct Prepared {
    /// On the on-demand runtime.
    ready: Ready,
    /// The same component on the pool's runtime, made by its first pooled
    /// call; `None` when it does not fit the pool's slots (its calls are
    /// then all served on demand).
    pooled: OnceLock<Option<Ready>>,
    /// What `describe` said, once asked.
    described: tokio::sync::OnceCell<Result<Option<Arc<Description>>, CallError>>,
    pub digest: String,
    pub origin: Origin,
}

/// What a successful call left behind.
#[derive(Debug)]
pub struct CallOutput {
    /// The component's output, its JSON text as returned (the run checks
    /// and indexes it once: see `crate::run::output`).
    pub output: String,
    /// The flow state it wrote, for the run to keep (see [`crate::state`]).
    pub writes: crate::state::Writes,
    /// The lists it handed over in pages, for the run to put in the
    /// output's placeholders (see [`paged_output`]).
    pub lists: AppendedLists,
}

impl CallOutput {
    /// The output as a tree: for tests and callers of small components.
    /// (A run checks and parses outputs itself; see `crate::run::output`.)
    pub fn value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.output)
    }
}

/// A live instance, its store, and the pool slot it holds (none when it
/// was made on demand): the slot goes back when this is dropped.
struct Live<'a> {
    store: Store<StepState>,
    instance: Instance,
    ready: &'a Ready,
    _slot: Option<OwnedSemaphorePermit>,
}

/// `describe` returns constant data: a second is thousands of times what
/// that takes, and bounds a component that loops in it.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Engine {
    /// Compiles every component, answers `describe`, and serves the calls
    /// the pool cannot.
    on_demand: Runtime,
    /// Where calls take their instances first (see [`pool`]).
    pool: pool::Pool,
    config: EngineConfig,
    budget: Arc<MemoryBudget>,
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> anyhow::Result<Arc<Engine>> {
        Ok(Arc::new(Engine {
            on_demand: Runtime::new(&config, None)?,
            pool: pool::Pool::new(config.pool),
            budget: Arc::new(MemoryBudget::new(config.memory_budget)),
            config,
            prepared: Mutex::new(HashMap::new()),
        }))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Sizes the instance pool (for the flows this process is about to
    /// run); `false` once a call has made the pool, whose size is then
    /// fixed.
    pub fn size_pool(&self, size: PoolSize) -> bool {
        self.pool.resize(size)
    }

    /// How many calls the pool and the on-demand allocator served, and how
    /// many pooled instances are alive now.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
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
            &self.on_demand.engine,
            self.config.cache_dir.as_deref(),
            bytes,
            &digest,
        )?;
        contract::check(&component, &self.on_demand.engine)?;
        let prepared = Arc::new(Prepared {
            ready: Ready::new(&self.on_demand, &component)?,
            pooled: OnceLock::new(),
            described: tokio::sync::OnceCell::new(),
            digest: digest.clone(),
            origin,
        });
        if let Ok(mut m) = self.prepared.lock() {
            m.insert(digest, prepared.clone());
        }
        Ok(prepared)
    }

    /// A store for one call: memory capped per instance and against the
    /// engine-wide budget, and the step's deadline enforced by epochs (each
    /// tick past it ends the instance; before it, the guest yields so other
    /// steps and items on this thread make progress).
    fn store(
        &self,
        engine: &wasmtime::Engine,
        call: Option<Call>,
        timeout: Duration,
    ) -> Store<StepState> {
        let memory = MemoryCap::new(self.config.memory_limit, self.budget.clone());
        let mut store = Store::new(engine, StepState::new(call, memory));
        store.limiter_async(|s| &mut s.memory);
        // What a guest hands the host at once (its output above all) is
        // bounded by its memory cap; wasmtime's own default of 128 MiB
        // would trap a step whose output is larger (the people of a
        // million-member tenant are about 230 MB of text).
        store.set_hostcall_fuel(self.config.memory_limit);
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

    /// A fresh instance of the component for `call`: from the pool when a
    /// slot is free and the component fits it, else on demand (see
    /// [`pool`]).
    async fn instantiate<'a>(
        &self,
        prepared: &'a Prepared,
        mut call: Option<Call>,
        timeout: Duration,
    ) -> Result<Live<'a>, CallError> {
        let max_stack = self.config.max_wasm_stack;
        if let Some(pool) = self.pool.get(&self.config)
            && let Some(slot) = pool.slot()
            && let Some(ready) = prepared
                .pooled
                .get_or_init(|| pool.runtime.adopt(prepared.ready.pre.component()).ok())
        {
            let mut store = self.store(&pool.runtime.engine, call, timeout);
            match ready.pre.instantiate_async(&mut store).await {
                Ok(instance) => {
                    self.pool.count(true);
                    return Ok(Live {
                        store,
                        instance,
                        ready,
                        _slot: Some(slot),
                    });
                }
                // The pool's totals ran out before its slots did (a
                // component with more parts than a slot's share).
                Err(e) if pool::pool_full(&e) => call = store.into_data().into_call(),
                Err(e) => {
                    let stderr = store.data().stderr.clone();
                    return Err(classify(e, &stderr, true, max_stack));
                }
            }
        }
        self.pool.count(false);
        self.on_demand_instance(prepared, call, timeout).await
    }

    /// A fresh instance from the on-demand allocator.
    async fn on_demand_instance<'a>(
        &self,
        prepared: &'a Prepared,
        call: Option<Call>,
        timeout: Duration,
    ) -> Result<Live<'a>, CallError> {
        let mut store = self.store(&self.on_demand.engine, call, timeout);
        let stderr = store.data().stderr.clone();
        let instance = prepared
            .ready
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| classify(e, &stderr, true, self.config.max_wasm_stack))?;
        Ok(Live {
            store,
            instance,
            ready: &prepared.ready,
            _slot: None,
        })
    }

    /// Runs the component once in a fresh instance; its output (JSON text,
    /// with the lists it appended) may be at most the call's output cap
    /// (`call.outputs`).
    pub async fn call(
        &self,
        prepared: &Prepared,
        call: Call,
        input: String,
        timeout: Duration,
    ) -> Result<CallOutput, CallError> {
        let cap = call.outputs.cap();
        let context = run_context(&call.invocation);
        let waiting = call.waiting.clone();
        let max_stack = self.config.max_wasm_stack;
        // Epochs do not interrupt a guest waiting in a host call (a slow
        // request); the outer timeout covers that case.
        let run = async {
            let mut live = self.instantiate(prepared, Some(call), timeout).await?;
            let stderr = live.store.data().stderr.clone();
            let step = live
                .ready
                .indices
                .load(&mut live.store, &live.instance)
                .map_err(|e| classify(e, &stderr, true, max_stack))?;
            let output = step
                .call_run(&mut live.store, &input, &context)
                .await
                .map_err(|e| classify(e, &stderr, false, max_stack));
            live.store.data().report_dropped_lines();
            live.store.data().record_memory();
            // The pool slot goes back with the store, not before.
            Ok::<_, CallError>((live, output?))
        };
        let grace = self.config.epoch_tick.saturating_mul(5);
        let ended = tokio::time::timeout(timeout.saturating_add(grace), run).await;
        let (live, output) = match ended {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(CallError::Timeout {
                    limit: timeout,
                    waiting: waiting.describe(),
                });
            }
        };
        // A commit the component asked for was refused because another
        // replica holds the flow now: the call was stopped, whatever the
        // component returned after the refusal.
        if let Some(why) = live.store.data().fenced() {
            return Err(CallError::Fenced(why));
        }
        let output = match output {
            Ok(output) => output,
            Err(reported) => return Err(reported_error(reported)),
        };
        // A run's instance always holds its call; `describe`'s has none.
        let (writes, lists) = match live.store.into_data().into_call() {
            Some(call) => (call.state.into_writes(), call.outputs),
            None => (Default::default(), OutputLists::none(cap)),
        };
        let size = output.len().saturating_add(lists.bytes());
        if size > cap.bytes {
            return Err(CallError::OutputTooLarge {
                size,
                limit: cap.bytes,
                key: cap.key,
            });
        }
        // The instance (its linear memory, hundreds of MiB for a compare
        // at 100k members) is gone before the output is read.
        Ok(CallOutput {
            output,
            writes,
            lists: lists.into_lists(),
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
        let Some(index) = prepared.ready.describe else {
            return Ok(None);
        };
        let max_stack = self.config.max_wasm_stack;
        let run = async {
            // Never from the pool: describing is done before a run sizes it.
            let mut live = self
                .on_demand_instance(prepared, None, DESCRIBE_TIMEOUT)
                .await?;
            let stderr = live.store.data().stderr.clone();
            let store = &mut live.store;
            let func = live
                .instance
                .get_typed_func::<(), (bindings::types::Description,)>(&mut *store, &index)
                .map_err(|e| {
                    CallError::Instantiate(format!(
                        "its `describe` export is not the sluice:flow@{} one: {e}",
                        contract::SPOKEN
                    ))
                })?;
            func.call_async(&mut *store, ())
                .await
                .map_err(|e| classify(e, &stderr, false, max_stack))
        };
        let (wit,) = match tokio::time::timeout(DESCRIBE_TIMEOUT, run).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(CallError::Timeout {
                    limit: DESCRIBE_TIMEOUT,
                    waiting: None,
                });
            }
        };
        describe::from_wit(wit)
            .map(|d| Some(Arc::new(d)))
            .map_err(|why| {
                CallError::InvalidOutput(format!("what it returned cannot be used: {why}"))
            })
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
        message: cut_before_redaction(e.message),
    }
}

/// How much of a component's error message the host keeps, in characters:
/// far more than is shown, so the cut after redaction
/// ([`crate::redact::Redactor::redact_error`]) decides, and a message of
/// megabytes is not copied into every event that tells it.
const MAX_MESSAGE_BEFORE_REDACTION: usize = 64 * 1024;

fn cut_before_redaction(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_BEFORE_REDACTION) {
        Some((end, _)) => sluice_store::cap::cut_note(&message[..end], message.len()),
        None => message,
    }
}

/// wasmtime has its own error type; its text (with causes) is what we keep.
pub(crate) fn to_anyhow(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_may_hand_over_as_much_as_its_memory_holds() {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let store = engine.store(&engine.on_demand.engine, None, Duration::from_secs(1));
        assert_eq!(store.hostcall_fuel(), engine.config.memory_limit);
        assert!(
            store.hostcall_fuel() > 128 << 20,
            "above wasmtime's default"
        );
    }

    /// With `perf_map`, a compiled component's functions are named in
    /// the process's perf map, where `perf report` looks for them.
    #[test]
    fn a_perf_map_names_a_compiled_components_functions() {
        let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()));
        let before = std::fs::read_to_string(&map).unwrap_or_default().len();
        let engine = Engine::new(EngineConfig {
            perf_map: true,
            ..EngineConfig::default()
        })
        .unwrap();
        let hostile = sluice_builtins::fixture("hostile").unwrap();
        engine.prepare(&std::fs::read(hostile).unwrap()).unwrap();
        let text = std::fs::read_to_string(&map).unwrap();
        let added: Vec<&str> = text[before..].lines().collect();
        assert!(
            added.iter().any(|l| l.contains("wasm")),
            "no guest function in {}: {added:?}",
            map.display()
        );
        for line in &added {
            let mut fields = line.splitn(3, ' ');
            let (start, size) = (fields.next().unwrap(), fields.next().unwrap());
            assert!(start.starts_with("0x"), "{line}");
            assert!(u64::from_str_radix(size, 16).is_ok(), "{line}");
            assert!(fields.next().is_some_and(|name| !name.is_empty()), "{line}");
        }
        if before == 0 {
            let _ = std::fs::remove_file(&map);
        }
    }
}
