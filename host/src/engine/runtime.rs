//! One wasmtime engine with the linker built on it, and a component
//! pre-instantiated on it.
//!
//! The engine has two: the on-demand runtime, which compiles every
//! component, asks `describe`, and serves the calls the pool cannot; and
//! the pool's runtime ([`super::pool`]), made at the first call. Both are
//! configured alike but for where instances come from, so a component
//! compiled by one loads into the other without compiling again.

use std::time::Duration;

use wasmtime::component::{Component, ComponentExportIndex, HasSelf, InstancePre, Linker};

use super::pool::PoolSize;
use super::{EngineConfig, StepState, bindings, contract, to_anyhow};

/// One wasmtime engine and the linker built on it.
pub(super) struct Runtime {
    pub(super) engine: wasmtime::Engine,
    pub(super) linker: Linker<StepState>,
}

impl Runtime {
    /// A runtime with the engine's settings; its instances from a pool of
    /// `pool` when given, on demand otherwise. Its epoch advances every
    /// `config.epoch_tick` for as long as it lives.
    pub(super) fn new(config: &EngineConfig, pool: Option<PoolSize>) -> anyhow::Result<Runtime> {
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            // Host functions run on the same fiber below the guest's frames:
            // the fiber must be larger than the guest's share (see EngineConfig).
            .async_stack_size(config.async_stack_size())
            // A memory starts as a copy-on-write mapping of the component's
            // initial image (wasmtime's default; said here because the pool's
            // speed relies on it).
            .memory_init_cow(true);
        if config.perf_map {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(size) = pool {
            wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
                size.wasmtime(config.memory_limit),
            ));
        }
        let engine = wasmtime::Engine::new(&wasm).map_err(to_anyhow)?;
        let mut linker = Linker::<StepState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(to_anyhow)?;
        bindings::Step::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
            .map_err(to_anyhow)?;
        spawn_epoch_ticker(engine.weak(), config.epoch_tick);
        Ok(Runtime { engine, linker })
    }

    /// `component` (compiled by another runtime of this engine) on this
    /// one: its compiled code copied over, not compiled again.
    pub(super) fn adopt(&self, component: &Component) -> anyhow::Result<Ready> {
        let compiled = component.serialize().map_err(to_anyhow)?;
        // SAFETY: the bytes were serialized just now, in this process, by
        // wasmtime from a component another runtime of this engine
        // compiled with the same settings (`Runtime::new`); wasmtime checks
        // the settings match as it loads them.
        let component =
            unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(to_anyhow)?;
        Ready::new(self, &component)
    }
}

/// A component pre-instantiated on one runtime, with where its exports are
/// (an export's index belongs to one runtime's copy of the component).
pub(super) struct Ready {
    pub(super) pre: InstancePre<StepState>,
    pub(super) indices: bindings::StepIndices,
    /// Where its `describe` export is, if it has one.
    pub(super) describe: Option<ComponentExportIndex>,
}

impl Ready {
    pub(super) fn new(runtime: &Runtime, component: &Component) -> anyhow::Result<Ready> {
        let describe = component.get_export_index(None, "describe");
        let pre = runtime.linker.instantiate_pre(component).map_err(|e| {
            anyhow::anyhow!("it does not implement the sluice:flow@{} step world, or imports something the host does not grant: {e}", contract::SPOKEN)
        })?;
        let indices = bindings::StepIndices::new(&pre).map_err(|e| {
            anyhow::anyhow!(
                "it does not export the step world's `run` function (`run: func(input: json, context: run-context) -> result<json, step-error>`, sluice:flow@{}): {e:#}",
                contract::SPOKEN
            )
        })?;
        Ok(Ready {
            pre,
            indices,
            describe,
        })
    }
}

/// Advances the engine's epoch every `tick` until the engine is dropped.
fn spawn_epoch_ticker(weak: wasmtime::EngineWeak, tick: Duration) {
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
