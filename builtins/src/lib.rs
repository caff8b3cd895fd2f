//! The built-in step components, compiled for wasm32-wasip2 by this crate's
//! build script and embedded, so `uses = "compare"` works from any directory.

/// One built-in component.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The name a flow uses in `uses`.
    pub name: &'static str,
    /// One line for `sluice components`.
    pub description: &'static str,
    /// The component's bytes.
    pub wasm: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The built-in called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// Names of all built-ins, for validation messages.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).collect()
}

/// Path of a test fixture component built alongside the built-ins.
pub fn fixture(name: &str) -> Option<&'static str> {
    FIXTURES.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}
