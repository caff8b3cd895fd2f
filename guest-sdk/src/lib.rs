//! The Rust SDK for Sluice step components (contract `sluice:flow@0.2.3`).
//!
//! A step is a function from a typed input to a typed output. The SDK
//! reads the input from JSON, writes the output to JSON, derives both JSON
//! Schemas (draft 2020-12) from the types, and implements the component's
//! `describe` from them and from the crate's name, version and description:
//!
//! ```ignore
//! use sluice_guest::{Context, JsonSchema, StepError};
//! use serde::{Deserialize, Serialize};
//!
//! /// Who to greet.
//! #[derive(Deserialize, JsonSchema)]
//! struct Input { name: String }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct Output { greeting: String }
//!
//! fn run(input: Input, _context: &Context) -> Result<Output, StepError> {
//!     Ok(Output { greeting: format!("Hello, {}!", input.name) })
//! }
//!
//! sluice_guest::step!(run);
//! ```
//!
//! A component that uses connections declares the role each plays, and
//! names the role when it sends (the flow binds roles to its connections):
//!
//! ```ignore
//! sluice_guest::step!(run, connections: { "graph": "reads the license groups" });
//! // …and in `run`: Call::get("graph", "groups").read_ok()?
//! ```
//!
//! - [`http`]: requests through the flow's connections ([`Call`]); in a dry
//!   run a write comes back as a [`WouldSend`] to report, not as a failure
//! - [`state`]: the flow's key-value store, kept between runs
//! - [`paged`]: an input list read from the host a page at a time
//!   ([`Paged`]), for lists too large to hold as JSON text
//! - [`output_list`]: an output list handed to the host a page at a time
//!   ([`OutputList`]), the same for what a step outputs
//! - [`log`]: the run's log
//! - [`Context`]: which run, step and item this is; whether it is a dry run
//! - [`StepError`]: a failure with its [`ErrorKind`], which decides whether
//!   the flow's `retry` may call the step again
//!
//! Vendor helpers (Graph and Procore paging and error bodies) live in the
//! `sluice-guest-services` crate.
#![deny(missing_docs)]

// The generated bindings name this crate by its path, from inside it too.
extern crate self as sluice_guest;

mod context;
mod error;
#[doc(hidden)]
pub mod glue;
pub mod http;
pub mod log;
mod output;
pub mod output_list;
pub mod paged;
pub mod state;

/// The generated bindings of the `described-step` world. Not part of the
/// SDK's API: use the typed wrappers instead.
#[doc(hidden)]
#[allow(clippy::all, missing_docs)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "described-step",
        pub_export_macro: true,
        default_bindings_module: "sluice_guest::__bindings",
        runtime_path: "sluice_guest::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use context::Context;
pub use error::StepError;
pub use http::{Call, Method, Response, Sent, WouldSend};
pub use output::{JsonText, StepOutput};
pub use output_list::OutputList;
pub use paged::Paged;
pub use schemars::{self, JsonSchema};
pub use serde_json::{self, Value, json};
pub use sluice_contract::ErrorKind;
pub use sluice_contract::{
    ForEachOutput, GateSummary, HeldEntry, ItemEntry, ItemError, ItemResult,
};

/// Exports a typed step function as the component's `run`, and implements
/// `describe` from its input and output types.
///
/// The function is `fn(Input, &Context) -> Result<Output, StepError>`,
/// where `Input: Deserialize + JsonSchema` and `Output: Serialize +
/// JsonSchema` (`serde_json::Value` works for either, with an open schema),
/// or a [`JsonText`] the step wrote itself (for an output too large to
/// hold twice while it is serialised).
/// `describe` reports the crate's `name`, `version` and `description` from
/// its `Cargo.toml`, the two schemas, and the connection roles given as
/// `connections: { "role": "what the component does through it", … }`.
///
/// An input that does not fit `Input` fails the step with a `bad-input`
/// error naming what is wrong; the output is serialised once.
#[macro_export]
macro_rules! step {
    ($run:path $(, connections: { $($role:literal : $summary:literal),* $(,)? })? $(,)?) => {
        struct SluiceStep;
        impl $crate::__bindings::Guest for SluiceStep {
            fn run(
                input: ::std::string::String,
                context: $crate::__bindings::RunContext,
            ) -> ::std::result::Result<::std::string::String, $crate::__bindings::StepError> {
                $crate::glue::run(&input, context, $run)
            }
            fn describe() -> $crate::__bindings::Description {
                $crate::glue::describe(
                    $run,
                    $crate::glue::Package {
                        name: env!("CARGO_PKG_NAME"),
                        version: env!("CARGO_PKG_VERSION"),
                        summary: env!("CARGO_PKG_DESCRIPTION"),
                    },
                    &[$($(($role, $summary)),*)?],
                )
            }
        }
        $crate::__bindings::export!(SluiceStep with_types_in $crate::__bindings);
    };
}
