//! What a step instance's store holds, and the host side of its imports.
//!
//! Each call gets a fresh [`StepState`]: an empty WASI context (no
//! preopened directories, no environment, no sockets; clocks and random
//! only), the memory cap, and a shared [`StepContext`] naming the step, its
//! granted connections and where its log lines and request counts go.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{connection, guest_log, sluice};
use super::limits::MemoryCap;
use crate::connections::{self, Connection, RequestStats, SendError};

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
    pub granted: BTreeMap<String, Arc<Connection>>,
    pub dry_run: bool,
    pub log: LogSink,
    pub stats: Mutex<BTreeMap<String, RequestStats>>,
}

impl StepContext {
    pub fn stats(&self) -> BTreeMap<String, RequestStats> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Adds what one request (or one item) did on a connection.
    pub fn record(&self, connection: &str, stats: &RequestStats) {
        if let Ok(mut all) = self.stats.lock() {
            all.entry(connection.to_string()).or_default().add(stats);
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
            log: self.log.clone(),
            stats: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Why a component's call was ended by the host rather than by itself.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SandboxViolation(pub connections::policy::Violation);

pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) memory: MemoryCap,
    pub(super) stderr: MemoryOutputPipe,
    pub(super) step: Arc<StepContext>,
    /// Log lines the component wrote, and how many of them were dropped
    /// past [`MAX_LOG_LINES`].
    logged: u64,
    dropped: u64,
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

/// How much of a log line a component's `log` call hands on, in
/// characters: far more than is shown, so the cut after redaction decides.
const MAX_LOG_LINE_BEFORE_REDACTION: usize = 64 * 1024;

impl StepState {
    pub fn new(step: Arc<StepContext>, memory: MemoryCap) -> Self {
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
            step,
            logged: 0,
            dropped: 0,
        }
    }

    /// Says once, when the call ends, how many log lines were dropped.
    pub(super) fn report_dropped_lines(&self) {
        if self.dropped > 0 {
            let note = format!(
                "{} more log lines were dropped: a step or item logs at most {MAX_LOG_LINES}",
                self.dropped
            );
            (self.step.log)(LogLevel::Warn, &note);
        }
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

impl sluice::flow::types::Host for StepState {}

impl guest_log::Host for StepState {
    fn log(&mut self, level: guest_log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            guest_log::Level::Debug => LogLevel::Debug,
            guest_log::Level::Info => LogLevel::Info,
            guest_log::Level::Warn => LogLevel::Warn,
            guest_log::Level::Error => LogLevel::Error,
        };
        self.logged += 1;
        if self.logged > MAX_LOG_LINES {
            self.dropped += 1;
            return Ok(());
        }
        // One line, bounded: a log call must not flood the run's output.
        // Cut generously here; the run cuts it short after redacting, so a
        // secret that straddles the cut is never left half shown.
        let line: String = message
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(MAX_LOG_LINE_BEFORE_REDACTION)
            .collect();
        (self.step.log)(level, &line);
        Ok(())
    }
}

impl connection::Host for StepState {
    async fn send(
        &mut self,
        name: String,
        request: connection::Request,
    ) -> wasmtime::Result<Result<connection::Response, connection::SendError>> {
        let Some(conn) = self.step.granted.get(&name).cloned() else {
            return Err(wasmtime::Error::new(SandboxViolation(
                connections::policy::Violation::NotGranted(name),
            )));
        };
        let method = match request.method {
            connection::Method::Get => connections::Method::Get,
            connection::Method::Head => connections::Method::Head,
            connection::Method::Post => connections::Method::Post,
            connection::Method::Put => connections::Method::Put,
            connection::Method::Patch => connections::Method::Patch,
            connection::Method::Delete => connections::Method::Delete,
        };
        let outgoing = connections::OutgoingRequest {
            method,
            url: request.url,
            query: request.query,
            headers: request.headers,
            body: request.body,
            idempotent: request.idempotent,
        };
        let (result, stats) = conn.send(outgoing, self.step.dry_run).await;
        self.step.record(&name, &stats);
        if let Ok(r) = &result
            && let Some(note) = &r.scrubbed
        {
            // The host's own line: not counted against the component's.
            (self.step.log)(LogLevel::Warn, note);
        }
        Ok(match result {
            Ok(r) => Ok(connection::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(SendError::Violation(v)) => return Err(wasmtime::Error::new(SandboxViolation(v))),
            Err(SendError::DryRun(what)) => Err(connection::SendError::DryRun(what)),
            Err(SendError::Unavailable(why)) => Err(connection::SendError::Unavailable(why)),
            Err(SendError::AuthFailed(e)) => Err(connection::SendError::AuthFailed(e.to_string())),
            Err(SendError::TooLarge(n)) => Err(connection::SendError::TooLarge(n)),
        })
    }
}
