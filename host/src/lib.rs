//! Sluice: automation flows whose steps are sandboxed WebAssembly components.
//!
//! - [`flow`]: flow files, from TOML to a validated model (no wasmtime here)
//! - [`engine`]: wasmtime, the step world's host side, limits, compile cache
//! - [`connections`]: HTTP for components: auth, allow-listing, pacing, retries
//! - [`run`]: executing a flow and the events that describe a run
//! - [`scheduler`]: `sluice serve`, running flows at their scheduled times
//! - [`oci`]: components pulled from OCI registries, pinned in `sluice.lock`
//! - [`state`]: the key-value store a flow keeps between runs
//! - [`http_rules`]: URL and header rules shared by flow checking and connections
//! - [`redact`]: keeping secrets out of everything that is shown or stored
//! - [`console`]: the web console, `/metrics` and `/healthz`
//! - [`cli`]: the `sluice` command

// The crate prints with these instead of std's macros, which panic when
// the reader has gone (`sluice runs show ID --json | head -1`: "failed
// printing to stdout: Broken pipe", exit 101) or the terminal has (EIO
// after a hang-up). A write that cannot be made is dropped; the command
// goes on and exits as it would have (a run still finishes and is
// recorded). Declared before the modules, so every module sees them in
// place of std's; not in unit tests, whose output the harness captures
// only through std's.
#[cfg(not(test))]
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
#[cfg(not(test))]
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}
#[cfg(not(test))]
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
#[cfg(not(test))]
macro_rules! eprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

pub mod capped_read;
pub mod cli;
pub mod connections;
pub mod console;
pub mod engine;
pub mod flow;
pub mod http_rules;
pub mod oci;
pub mod redact;
pub mod run;
pub mod scheduler;
pub mod state;
