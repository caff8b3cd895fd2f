//! Helpers for writing Sluice step components in Rust.
//!
//! A component is a function from JSON to JSON:
//!
//! ```ignore
//! use sluice_guest::{Value, StepError, json};
//!
//! fn run(input: Value) -> Result<Value, StepError> {
//!     Ok(json!({ "echo": input }))
//! }
//!
//! sluice_guest::step!(run);
//! ```
//!
//! [`http`] sends requests through the flow's connections and follows Graph
//! and Procore paging; [`log`] writes to the run's log. The raw bindings of
//! the `sluice:flow` world are in [`bindings`].

// The generated bindings name this crate by its path, from inside it too.
extern crate self as sluice_guest;

pub mod errors;
pub mod http;
pub mod log;
pub mod paging;

#[allow(clippy::all, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "step",
        pub_export_macro: true,
        default_bindings_module: "sluice_guest::bindings",
        runtime_path: "sluice_guest::wit_bindgen::rt",
    });
}

pub use bindings::sluice::flow::types::StepError;
pub use errors::{bad_input, fail, retryable};
pub use serde_json::{self, Value, json};
pub use wit_bindgen;

/// Runs `f` on the parsed input and serialises its output; the glue behind [`step!`].
pub fn run_json(
    input: &str,
    f: impl FnOnce(Value) -> Result<Value, StepError>,
) -> Result<String, StepError> {
    let value: Value = serde_json::from_str(input)
        .map_err(|e| bad_input(format!("the input is not JSON: {e}")))?;
    let output = f(value)?;
    serde_json::to_string(&output)
        .map_err(|e| fail("output", format!("the output could not be serialised: {e}")))
}

/// Reads a typed input, naming the field that is wrong.
pub fn parse_input<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, StepError> {
    serde_json::from_value(input).map_err(|e| {
        bad_input(format!(
            "the step's `with` does not fit this component: {e}"
        ))
    })
}

/// Exports `run: fn(Value) -> Result<Value, StepError>` as the component's `run`.
#[macro_export]
macro_rules! step {
    ($run:path) => {
        struct SluiceStep;
        impl $crate::bindings::Guest for SluiceStep {
            fn run(input: ::std::string::String) -> ::std::result::Result<::std::string::String, $crate::StepError> {
                $crate::run_json(&input, $run)
            }
        }
        $crate::bindings::export!(SluiceStep with_types_in $crate::bindings);
    };
}
