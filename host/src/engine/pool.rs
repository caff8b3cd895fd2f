//! Instances from a pool: wasmtime's pooling allocator, whose memories
//! start as copy-on-write mappings of each component's initial image,
//! sized for the instances the flows may run at once, with the on-demand
//! allocator beside it for when the pool is full.
//!
//! Each step call and each `for_each` item is a fresh instance. From the
//! pool, its memories, tables and fiber stack are slots reserved once per
//! process and reset when it ends (in place, where Linux can say which
//! pages it wrote: see [`PoolSize::wasmtime`]); the memory's initial contents are
//! mapped copy-on-write from the component's image, so a call copies
//! nothing it does not write. The pool is made by the first call, at the
//! size the process set by then from its flows (`sluice run`: the flow's
//! largest `concurrency`), and holds [`PoolSize::instances`] instances. A
//! call that finds every slot taken, or a component that does not fit a
//! slot, gets its instance from the engine's on-demand runtime instead and
//! goes on. Which one served each call is counted ([`PoolStats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::EngineConfig;
use super::runtime::Runtime;

/// How many instances the pool holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    /// Instances alive at once. 0 turns the pool off (every instance on demand).
    pub instances: u32,
}

impl PoolSize {
    /// What `sluice serve` and tests use when no flow says more: 32
    /// instances (several flows with `concurrency` 4–8 running together).
    pub const DEFAULT: PoolSize = PoolSize { instances: 32 };

    /// The largest a pool may be: each memory slot reserves address space
    /// (not memory) of about 4 GiB, so that compiled code needs no bounds
    /// checks; 256 instances reserve 2 TiB of the 128 TiB a process has.
    /// Instances beyond it are made on demand.
    pub const MAX: u32 = 256;

    /// A pool for flows that may run `concurrency` instances at once (the
    /// largest `for_each` concurrency of a run, summed over flows that run
    /// together). `describe` calls never take a slot.
    pub fn for_concurrency(concurrency: usize) -> PoolSize {
        PoolSize {
            instances: u32::try_from(concurrency.max(1))
                .unwrap_or(Self::MAX)
                .min(Self::MAX),
        }
    }

    /// wasmtime's pooling configuration for this many instances. A Rust
    /// step component is one component instance of a few core instances
    /// (its module and the shims `wit-component` adds), one memory and a
    /// few tables; components built by other toolchains have more. The
    /// per-instance shares below are generous: a component over them is
    /// refused by the pool and served on demand.
    pub fn wasmtime(self, memory_limit: usize) -> wasmtime::PoolingAllocationConfig {
        let n = self.instances;
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES))
            .total_memories(n.saturating_mul(MEMORIES))
            .total_tables(n.saturating_mul(TABLES))
            // One fiber per live store; a store waiting for the pool holds
            // none (see `Pool::slot`), so one stack per instance suffices.
            .total_stacks(n)
            .max_memory_size(memory_limit);
        // When an instance ends, its slot is reset for the next one. By
        // default wasmtime unmaps the pages it wrote (`madvise`), so the
        // next instance page-faults on each again, and each `madvise`
        // stalls every thread of the process: more than half of a
        // trivial step's cost. Linux 6.7+ can say which pages were
        // written (PAGEMAP_SCAN): up to the amounts below, those are
        // then reset in place from the component's image and stay
        // mapped. Without that scan, keeping pages resident would mean a
        // memset of the whole amount at every reset, slower than the
        // `madvise` it saves, so the slots are then reset as before.
        if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
                .table_keep_resident(KEEP_RESIDENT_TABLE);
        }
        pool
    }
}

/// Written bytes of a slot's memory reset in place rather than unmapped
/// (see [`PoolSize::wasmtime`]): a small step writes a few hundred KiB
/// (its stack's top, its data, its heap); a larger one has the rest
/// unmapped. An idle pool keeps at most this much resident per slot
/// (32 MiB for the default 32 instances).
const KEEP_RESIDENT_MEMORY: usize = 1024 * 1024;
/// The same for each table: 8192 function references.
const KEEP_RESIDENT_TABLE: usize = 64 * 1024;

/// Core instances, memories and tables one pooled instance may have (a
/// Rust step component has one memory; the shims' tables are small).
const CORE_INSTANCES: u32 = 16;
const MEMORIES: u32 = 2;
const TABLES: u32 = 8;

/// The pool: made by the first call that wants it, at the size set by
/// then, so a process sizes it from its flows after it has read them
/// (checking a flow runs no step and makes no pool).
pub(super) struct Pool {
    size: Mutex<PoolSize>,
    made: OnceLock<Option<Pooled>>,
    pooled: AtomicU64,
    on_demand: AtomicU64,
}

/// The pool's runtime and its slots, one per instance alive at once.
pub(super) struct Pooled {
    pub(super) runtime: Runtime,
    slots: Arc<Semaphore>,
}

/// How many calls each allocator served, and how many pooled instances are
/// alive now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    pub pooled: u64,
    pub on_demand: u64,
    pub in_use: u32,
    pub size: u32,
}

impl Pool {
    pub(super) fn new(size: PoolSize) -> Pool {
        Pool {
            size: Mutex::new(size),
            made: OnceLock::new(),
            pooled: AtomicU64::new(0),
            on_demand: AtomicU64::new(0),
        }
    }

    /// Sets the pool's size; `false` when the pool is already made (its
    /// size is then fixed).
    pub(super) fn resize(&self, size: PoolSize) -> bool {
        let mut current = self.size.lock().unwrap_or_else(PoisonError::into_inner);
        if self.made.get().is_some() {
            return false;
        }
        *current = size;
        true
    }

    /// The pool, made now if it is not yet; `None` when it is turned off
    /// or could not be made (said once; every call then goes on demand).
    pub(super) fn get(&self, config: &EngineConfig) -> Option<&Pooled> {
        if let Some(made) = self.made.get() {
            return made.as_ref();
        }
        // Made under the size's lock, so `resize` sees exactly whether the
        // size it sets is the one used.
        let size = self.size.lock().unwrap_or_else(PoisonError::into_inner);
        self.made
            .get_or_init(|| {
                if size.instances == 0 {
                    return None;
                }
                match Runtime::new(config, Some(*size)) {
                    Ok(runtime) => Some(Pooled {
                        runtime,
                        slots: Arc::new(Semaphore::new(size.instances as usize)),
                    }),
                    Err(e) => {
                        eprintln!(
                            "warning: the instance pool could not be made ({e:#}); every step instance is made on demand"
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Counts one call by where its instance came from.
    pub(super) fn count(&self, pooled: bool) {
        let counter = if pooled {
            &self.pooled
        } else {
            &self.on_demand
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn stats(&self) -> PoolStats {
        let size = *self.size.lock().unwrap_or_else(PoisonError::into_inner);
        let free = match self.made.get() {
            Some(Some(pooled)) => pooled.slots.available_permits(),
            _ => size.instances as usize,
        };
        let free = u32::try_from(free).unwrap_or(u32::MAX);
        PoolStats {
            pooled: self.pooled.load(Ordering::Relaxed),
            on_demand: self.on_demand.load(Ordering::Relaxed),
            in_use: size.instances.saturating_sub(free),
            size: size.instances,
        }
    }
}

impl Pooled {
    /// A slot for one instance, held until its store is dropped; `None`
    /// when every slot is taken (the call then goes on demand).
    pub(super) fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

/// Whether an instantiation failed only because the pool had no slot left
/// (for a part the pool counts: memories, tables, core instances, stacks).
pub(super) fn pool_full(e: &wasmtime::Error) -> bool {
    e.chain()
        .any(|cause| cause.is::<wasmtime::PoolConcurrencyLimitError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_is_sized_from_the_concurrency_up_to_its_most() {
        assert_eq!(PoolSize::for_concurrency(4).instances, 4);
        assert_eq!(PoolSize::for_concurrency(0).instances, 1);
        assert_eq!(
            PoolSize::for_concurrency(usize::MAX).instances,
            PoolSize::MAX
        );
    }

    #[test]
    fn a_pool_is_sized_until_it_is_made_and_then_hands_out_its_slots() {
        let pool = Pool::new(PoolSize { instances: 0 });
        assert!(pool.resize(PoolSize { instances: 2 }));
        let config = EngineConfig::default();
        let made = pool.get(&config).expect("a pool of two");
        assert!(!pool.resize(PoolSize { instances: 5 }));
        let a = made.slot();
        let b = made.slot();
        assert!(a.is_some() && b.is_some());
        assert!(made.slot().is_none());
        assert_eq!((pool.stats().in_use, pool.stats().size), (2, 2));
        drop(a);
        assert!(made.slot().is_some());
    }

    #[test]
    fn a_pool_of_no_instances_is_never_made() {
        let pool = Pool::new(PoolSize { instances: 0 });
        assert!(pool.get(&EngineConfig::default()).is_none());
    }
}
