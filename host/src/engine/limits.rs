//! Resource limits of one step instance and how a breach is reported.

use std::time::Duration;

/// Memory growth past the cap; the instance traps with this as its cause.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the component tried to grow its memory to {desired} bytes, over the limit of {limit} bytes"
)]
pub struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

/// The step ran past its deadline; raised from the epoch callback.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the step ran longer than its timeout of {0:?}")]
pub struct DeadlineExceeded(pub Duration);

/// Caps linear memory and table growth of one store.
pub struct MemoryCap {
    pub limit: usize,
}

/// One million table elements: far beyond any real component's needs.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired,
                limit: self.limit,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
