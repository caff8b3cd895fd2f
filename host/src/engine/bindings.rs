//! Host-side bindings of the `sluice:flow` step world.
//!
//! `connection.send` is the one import that blocks, so it is async (and
//! trappable: a sandbox violation ends the instance). `log` is synchronous.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "step",
    imports: {
        "sluice:flow/connection.send": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});

pub use self::sluice::flow::connection;
pub use self::sluice::flow::log as guest_log;
pub use self::sluice::flow::types::StepError as GuestStepError;
