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
