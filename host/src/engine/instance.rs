//! What a step instance's store holds.
//!
//! Each call gets a fresh [`StepState`]: an empty WASI context (no
//! preopened directories, no environment, no sockets; clocks and random
//! only), the memory cap, and the [`Call`] it serves: the step's shared
//! [`StepContext`] (granted connections, log, request counts), the
//! [`Invocation`] the component receives as its run context, and the
//! call's view of the flow's state. A `describe` call gets a state with no
//! call at all: any import it makes traps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::MemoryCap;
use super::paged::PagedInputs;
use super::paged_output::OutputLists;
use super::waiting::Waiting;
use crate::connections::{self, Connection, RequestStats};
use crate::run::RunGuard;
use crate::state::CallState;

/// Log levels a component can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Receives a component's log lines: `(level, message)`.
pub type LogSink = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// Per-step facts shared by every instance of the step (every item).
pub struct StepContext {
    pub step_id: String,
    pub component: String,
    /// The connection each name the component may use stands for: its
    /// roles, or for a component without `describe`, the granted names.
    pub granted: BTreeMap<String, Arc<Connection>>,
    pub dry_run: bool,
    /// The run's hold on its flow's lease (`sluice serve`), asked again
    /// before each write a connection sends.
    pub lease: Option<Arc<dyn RunGuard>>,
    pub log: LogSink,
    pub stats: Mutex<BTreeMap<String, RequestStats>>,
    /// The most linear memory any of the step's instances held (every
    /// item's too): how near the step came to its memory cap.
    pub memory: Arc<MemoryPeak>,
}

/// The most linear memory a step's instances held, and the cap each had.
/// Linear memory only grows, so an instance's size when its call ends is
/// its peak.
#[derive(Debug, Default)]
pub struct MemoryPeak {
    peak: AtomicUsize,
    limit: AtomicUsize,
}

/// A step's peak linear memory beside its cap, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUse {
    pub peak: usize,
    pub limit: usize,
}

impl MemoryPeak {
    /// Counts one instance that held `bytes` under a cap of `limit`.
    pub fn record(&self, bytes: usize, limit: usize) {
        self.peak.fetch_max(bytes, Ordering::Relaxed);
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// `None` until an instance was counted.
    pub fn get(&self) -> Option<MemoryUse> {
        let limit = self.limit.load(Ordering::Relaxed);
        (limit > 0).then(|| MemoryUse {
            peak: self.peak.load(Ordering::Relaxed),
            limit,
        })
    }
}

impl StepContext {
    pub fn stats(&self) -> BTreeMap<String, RequestStats> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Adds what one request (or one item) did on a connection.
    pub fn record(&self, connection: &str, stats: &RequestStats) {
        if let Ok(mut all) = self.stats.lock() {
            match all.get_mut(connection) {
                Some(known) => known.add(stats),
                None => {
                    all.insert(connection.to_string(), *stats);
                }
            }
        }
    }

    /// The same step's context for one `for_each` item, counting its own
    /// requests from zero.
    pub fn for_item(&self) -> StepContext {
        StepContext {
            step_id: self.step_id.clone(),
            component: self.component.clone(),
            granted: self.granted.clone(),
            dry_run: self.dry_run,
            lease: self.lease.clone(),
            log: self.log.clone(),
            stats: Mutex::new(BTreeMap::new()),
            memory: self.memory.clone(),
        }
    }
}

/// The run context a component receives (the WIT's `run-context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub run_id: String,
    pub flow: String,
    pub step: String,
    pub item_index: Option<u64>,
    pub item_key: Option<String>,
    pub dry_run: bool,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// From 1.
    pub attempt: u32,
}

/// One call of a component: whose, for what, its view of the state, the
/// lists of its input it reads in pages and those of its output it hands
/// over in pages.
pub struct Call {
    pub step: Arc<StepContext>,
    pub invocation: Invocation,
    pub state: CallState,
    pub paged: PagedInputs,
    pub outputs: OutputLists,
    /// The request it waits on, told when it times out.
    pub waiting: Waiting,
}

/// Why a component's call was ended by the host rather than by itself.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SandboxViolation(pub String);

/// The run's lease on its flow is lost: the call is ended before a write
/// it asked for went out (it is the new owner's flow now).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LeaseLost(pub String);

impl From<connections::policy::Violation> for SandboxViolation {
    fn from(v: connections::policy::Violation) -> Self {
        SandboxViolation(v.to_string())
    }
}

pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) memory: MemoryCap,
    pub(super) stderr: MemoryOutputPipe,
    /// `None` while `describe` runs: it may call nothing.
    pub(super) call: Option<Call>,
    /// Log lines the component wrote, and how many of them were dropped
    /// past [`MAX_LOG_LINES`].
    pub(super) logged: u64,
    pub(super) dropped: u64,
}

/// The most a call's output may be, as JSON text, and the flow key that
/// says so (named when the cap is hit).
#[derive(Debug, Clone, Copy)]
pub struct OutputCap {
    pub bytes: usize,
    pub key: &'static str,
}

/// Log lines one call (a step, or one `for_each` item) may write; the rest
/// are counted and reported in one line when the call ends. A thousand is
/// far more than anyone reads of one item, and a million are refused
/// without filling the history.
pub const MAX_LOG_LINES: u64 = 1000;

/// 64 KiB of a component's stderr is kept to explain a panic.
const STDERR_CAPTURE: usize = 64 * 1024;

impl StepState {
    pub fn new(call: Option<Call>, memory: MemoryCap) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        // Nothing is granted: no preopens, no env, no args; sockets are denied
        // by the default address check. stdout goes nowhere.
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            memory,
            stderr,
            call,
            logged: 0,
            dropped: 0,
        }
    }

    /// Says once, when the call ends, how many log lines were dropped.
    pub(super) fn report_dropped_lines(&self) {
        if let Some(call) = &self.call
            && self.dropped > 0
        {
            let note = format!(
                "{} more log lines were dropped: a step or item logs at most {MAX_LOG_LINES}",
                self.dropped
            );
            (call.step.log)(LogLevel::Warn, &note);
        }
    }

    /// The call this instance serves, or a trap naming what `describe`
    /// tried to use.
    pub(super) fn call(&mut self, import: &str) -> wasmtime::Result<&mut Call> {
        self.call.as_mut().ok_or_else(|| {
            wasmtime::Error::new(SandboxViolation(format!(
                "`describe` called `{import}`; it must return constant data and call nothing"
            )))
        })
    }

    /// Counts this instance's linear memory in its step's peak.
    pub(super) fn record_memory(&self) {
        if let Some(call) = &self.call {
            call.step
                .memory
                .record(self.memory.memory_bytes(), self.memory.limit());
        }
    }

    /// The call's state writes, once the instance is done.
    pub fn into_call(self) -> Option<Call> {
        self.call
    }

    /// Why a commit the component asked for was fenced off, if one was
    /// ([`crate::state::CallState::fenced`]).
    pub fn fenced(&self) -> Option<String> {
        self.call.as_ref()?.state.fenced().map(str::to_string)
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
