//! Host-side bindings of the `sluice:flow@0.2.3` step world.
//!
//! `connection.send` blocks on the network and `state.get`, `state.list`
//! and `state.commit` on the state store (SQLite): they are async, so a call waiting on them
//! never holds a worker thread. `send` is trappable (a sandbox violation
//! ends the instance); the rest are synchronous and trappable too, so a
//! host-side breach can end the call. `describe` is not part of the `step`
//! world (it is optional): [`super::describe`] finds it by name.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "step",
    imports: {
        "sluice:flow/connection.send": async | trappable,
        "sluice:flow/state.get": async | trappable,
        "sluice:flow/state.list": async | trappable,
        "sluice:flow/state.commit": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});

pub use self::sluice::flow::connection;
pub use self::sluice::flow::log as guest_log;
pub use self::sluice::flow::paged as guest_paged;
pub use self::sluice::flow::paged_output as guest_paged_output;
pub use self::sluice::flow::state as guest_state;
pub use self::sluice::flow::types;
