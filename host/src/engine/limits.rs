//! Resource limits of one step instance and how a breach is reported.
//!
//! A step's component may hold several core instances, memories and tables
//! (a Rust component has three instances, one memory and two tables); the
//! caps here apply to the whole store, so splitting an allocation over
//! several memories or instances gains nothing.

use std::sync::Arc;
use std::time::Duration;

use super::budget::MemoryBudget;

/// Memory growth past the cap; the instance traps with this as its cause.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the component tried to grow its memory to {desired} bytes, over the limit of {limit} bytes"
)]
pub struct MemoryLimitExceeded {
    /// All the store's linear memories together, had the growth gone ahead.
    pub desired: usize,
    pub limit: usize,
}

/// The step ran past its deadline; raised from the epoch callback.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the step ran longer than its timeout of {0:?}")]
pub struct DeadlineExceeded(pub Duration);

/// Core instances one step's store may create: twenty times what a Rust
/// component needs, room for components composed of many modules, and far
/// below wasmtime's default of 10 000.
pub const MAX_INSTANCES: usize = 64;
/// Linear memories one store may hold (all count against the memory cap).
pub const MAX_MEMORIES: usize = 8;
/// Tables one store may hold.
pub const MAX_TABLES: usize = 64;
/// Table elements across all tables of a store: one million is far beyond
/// any real component's function tables, and ~8 MiB of host memory at most.
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Caps the linear memory and table elements of one store, all memories
/// and tables together, and how many instances, memories and tables it
/// has; and counts its memory against the process's shared budget, given
/// back when the store is dropped.
pub struct MemoryCap {
    limit: usize,
    budget: Arc<MemoryBudget>,
    /// Bytes of every linear memory of the store together.
    memory_bytes: usize,
    /// Elements of every table of the store together.
    table_elements: usize,
}

impl MemoryCap {
    pub fn new(limit: usize, budget: Arc<MemoryBudget>) -> Self {
        Self {
            limit,
            budget,
            memory_bytes: 0,
            table_elements: 0,
        }
    }

    /// Bytes of every linear memory of the store together, now.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// The cap on [`Self::memory_bytes`].
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        self.budget.release(self.memory_bytes);
    }
}

#[async_trait::async_trait]
impl wasmtime::ResourceLimiterAsync for MemoryCap {
    async fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A new memory arrives as growth from 0 to its initial size.
        let more = desired.saturating_sub(current);
        let total = self.memory_bytes.saturating_add(more);
        if total > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired: total,
                limit: self.limit,
            }));
        }
        self.budget
            .reserve(self.memory_bytes, more)
            .await
            .map_err(wasmtime::Error::new)?;
        // A growth allowed here that the memory then refuses (its own
        // maximum, or the system out of memory) stays counted: the store
        // lives for one call, and erring strict keeps the cap a cap.
        self.memory_bytes = total;
        Ok(true)
    }

    async fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_elements
            .saturating_add(desired.saturating_sub(current));
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;
    /// WebAssembly pages are 64 KiB.
    const PAGE: usize = 64 * 1024;

    fn leb(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    /// A core module (binary format) that defines `count` memories of
    /// `bytes` each and nothing else.
    fn module_with_memories(count: usize, bytes: usize) -> Vec<u8> {
        let mut section = leb(count);
        for _ in 0..count {
            section.push(0x00); // limits: minimum only
            section.extend(leb(bytes / PAGE));
        }
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.push(0x05); // memory section
        module.extend(leb(section.len()));
        module.extend(section);
        module
    }

    fn store(engine: &wasmtime::Engine, limit: usize) -> wasmtime::Store<MemoryCap> {
        let budget = Arc::new(MemoryBudget::new(usize::MAX));
        let mut store = wasmtime::Store::new(engine, MemoryCap::new(limit, budget));
        store.limiter_async(|cap| cap);
        store
    }

    fn instantiate(
        store: &mut wasmtime::Store<MemoryCap>,
        module: &wasmtime::Module,
    ) -> wasmtime::Result<wasmtime::Instance> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(wasmtime::Error::new)?;
        runtime.block_on(wasmtime::Instance::new_async(store, module, &[]))
    }

    #[test]
    fn the_cap_covers_all_memories_together() {
        let engine = wasmtime::Engine::default();
        // Two memories of 40 MiB: each under a 64 MiB cap, together over it.
        let two = wasmtime::Module::new(&engine, module_with_memories(2, 40 * MIB)).unwrap();
        let e = instantiate(&mut store(&engine, 64 * MIB), &two).unwrap_err();
        let breach = e
            .downcast_ref::<MemoryLimitExceeded>()
            .unwrap_or_else(|| panic!("not a memory-limit breach: {e:?}"));
        assert_eq!((breach.desired, breach.limit), (80 * MIB, 64 * MIB));
        assert!(e.to_string().contains("over the limit"), "{e}");
        // Under a cap that holds both, the same module instantiates.
        instantiate(&mut store(&engine, 96 * MIB), &two).unwrap();
    }

    #[test]
    fn the_cap_covers_all_instances_of_a_store() {
        let engine = wasmtime::Engine::default();
        let one = wasmtime::Module::new(&engine, module_with_memories(1, 40 * MIB)).unwrap();
        let mut store = store(&engine, 64 * MIB);
        instantiate(&mut store, &one).unwrap();
        let e = instantiate(&mut store, &one).unwrap_err();
        assert!(e.downcast_ref::<MemoryLimitExceeded>().is_some(), "{e:?}");
    }

    #[test]
    fn instances_and_memories_are_counted() {
        let engine = wasmtime::Engine::default();
        let empty = wasmtime::Module::new(&engine, module_with_memories(0, 0)).unwrap();
        let mut s = store(&engine, 64 * MIB);
        for _ in 0..MAX_INSTANCES {
            instantiate(&mut s, &empty).unwrap();
        }
        let e = instantiate(&mut s, &empty).unwrap_err();
        assert!(e.to_string().contains("instance count too high"), "{e}");

        let many =
            wasmtime::Module::new(&engine, module_with_memories(MAX_MEMORIES + 1, 0)).unwrap();
        let e = instantiate(&mut store(&engine, 64 * MIB), &many).unwrap_err();
        assert!(e.to_string().contains("memory count too high"), "{e}");
        let most =
            wasmtime::Module::new(&engine, module_with_memories(MAX_MEMORIES, PAGE)).unwrap();
        instantiate(&mut store(&engine, 64 * MIB), &most).unwrap();
    }
}
