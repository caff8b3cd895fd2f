//! Why a call of a component produced no output, and how a wasmtime error
//! becomes one of those reasons in words a flow author can act on.

use std::time::Duration;

use sluice_contract::ErrorKind;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::budget::BudgetExhausted;
use super::instance::SandboxViolation;
use super::limits::{DeadlineExceeded, MemoryLimitExceeded};
use super::paged_output::ListsTooLarge;

/// Why a step call produced no output. The engine's own failures (a trap, a
/// limit) and the component's reported error are kept apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("the component reported {kind} [{code}]: {message}")]
    Reported {
        kind: ErrorKind,
        code: String,
        message: String,
    },
    /// Past the step's `timeout`; `waiting` says which request it waited
    /// on then, if any (a service that never answered).
    #[error("it ran longer than its timeout of {}{}", humantime::format_duration(*limit), waiting.as_ref().map(|w| format!("; {w}")).unwrap_or_default())]
    Timeout {
        limit: Duration,
        waiting: Option<String>,
    },
    #[error("it exceeded its memory limit ({desired} bytes requested, limit {limit} bytes)")]
    MemoryLimit { desired: usize, limit: usize },
    /// The process's shared memory budget could not hold a growth.
    #[error("{exhausted}; {hint}", exhausted = .0, hint = .0.hint())]
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
    /// Its output cannot be used: not JSON, placeholders that do not
    /// match the lists handed over, or not what its schema describes
    /// (the text says which, whole).
    #[error("{0}")]
    InvalidOutput(String),
    #[error("it could not be instantiated: {0}")]
    Instantiate(String),
    /// The flow's state could not be made durable after the call succeeded.
    #[error(
        "it ran to the end, but its state could not be saved: {0}; what its requests did stands, unrecorded"
    )]
    State(String),
    /// The state was refused because the flow's lease is another
    /// replica's now: the run was taken over, so it stops (interrupted,
    /// as the history the other replica wrote says), it has not failed.
    #[error("its state was not saved: {0}")]
    Fenced(String),
    /// A write the call asked for was not sent: the flow's lease is
    /// another replica's now. Stopped, as [`CallError::Fenced`] is.
    #[error("it was stopped: {0}")]
    LeaseLost(String),
    /// A `for_each` item whose name (the run context's `item-key`) would
    /// be blank: the host did not call the component for it.
    #[error("it was not called: its key is blank ({0}); {why}: {hint}", why = crate::flow::item_key::BLANK_KEY_WHY, hint = crate::flow::item_key::BLANK_KEY_HINT)]
    BlankItemKey(#[from] crate::flow::item_key::BlankKey),
}

impl CallError {
    /// The component's code, or the host's name for what happened.
    pub fn code(&self) -> &str {
        match self {
            CallError::Reported { code, .. } => code,
            CallError::Timeout { .. } => "timeout",
            CallError::MemoryLimit { .. } => "memory-limit",
            CallError::MemoryBudget(_) => "memory-budget",
            CallError::Exited(_) => "exited",
            CallError::OutputTooLarge { .. } => "output-too-large",
            CallError::Violation(_) => "sandbox-violation",
            CallError::Trap(_) => "trap",
            CallError::InvalidOutput(_) => "invalid-output",
            CallError::Instantiate(_) => "instantiate",
            CallError::State(_) => "state",
            CallError::Fenced(_) | CallError::LeaseLost(_) => "fenced",
            CallError::BlankItemKey(_) => "blank-item-key",
        }
    }

    /// The component's kind; whatever the host stopped is `internal`
    /// (a timeout or a trap would happen again: no retry policy applies);
    /// an item the host would not call for is `bad-input`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CallError::Reported { kind, .. } => *kind,
            CallError::BlankItemKey(_) => ErrorKind::BadInput,
            _ => ErrorKind::Internal,
        }
    }

    /// Whether a step's `retry` may call again.
    pub fn retryable(&self) -> bool {
        self.kind().retryable()
    }
}

/// Turns a wasmtime error into what happened. `stderr` is the instance's
/// captured standard error, where a Rust guest prints its panic.
pub(super) fn classify(
    error: wasmtime::Error,
    stderr: &MemoryOutputPipe,
    instantiating: bool,
    max_wasm_stack: usize,
) -> CallError {
    if let Some(d) = error.downcast_ref::<DeadlineExceeded>() {
        return CallError::Timeout {
            limit: d.0,
            waiting: None,
        };
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
    if let Some(l) = error.downcast_ref::<ListsTooLarge>() {
        return CallError::OutputTooLarge {
            size: l.size,
            limit: l.limit,
            key: l.key,
        };
    }
    if let Some(v) = error.downcast_ref::<SandboxViolation>() {
        return CallError::Violation(v.0.clone());
    }
    if let Some(lost) = error.downcast_ref::<super::instance::LeaseLost>() {
        return CallError::LeaseLost(lost.0.clone());
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
    match printed_panic(stderr) {
        Some(line) => CallError::Trap(format!("{trap}; the component printed: {line}")),
        None => CallError::Trap(trap),
    }
}

/// What a Rust guest's panic printed, else the last line it printed.
fn printed_panic(stderr: &MemoryOutputPipe) -> Option<String> {
    panic_text(&String::from_utf8_lossy(&stderr.contents()))
}

/// A panic's "panicked at FILE:LINE:COL:" line with the message Rust
/// (since 1.73) prints on the lines after it, up to the `note:` line or a
/// blank one; else the last line printed.
fn panic_text(printed: &str) -> Option<String> {
    let mut lines = printed.lines().skip_while(|l| !l.contains("panicked"));
    if let Some(at) = lines.next() {
        let message: Vec<&str> = lines
            .take_while(|l| !l.trim().is_empty() && !l.starts_with("note:"))
            .map(str::trim)
            .collect();
        let at = at.trim();
        return Some(match message.is_empty() {
            true => at.to_string(),
            false => format!("{at} {}", message.join(" ")),
        });
    }
    printed
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("note:"))
        .map(|l| l.trim().to_string())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_keeps_its_message_from_the_lines_after_where_it_happened() {
        let printed = "thread '<unnamed>' (1) panicked at src/lib.rs:130:19:\nhostile component asked to trap\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_text(printed).unwrap(),
            "thread '<unnamed>' (1) panicked at src/lib.rs:130:19: hostile component asked to trap"
        );
        // Rust before 1.73 printed it on the same line.
        let old = "thread 'main' panicked at 'boom', src/lib.rs:1:1\nnote: run with …\n";
        assert_eq!(
            panic_text(old).unwrap(),
            "thread 'main' panicked at 'boom', src/lib.rs:1:1"
        );
        assert_eq!(panic_text("one\nlast words\n").unwrap(), "last words");
        assert_eq!(panic_text(""), None);
    }
}
