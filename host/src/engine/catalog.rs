//! The engine as the flow's [`ComponentCatalog`]: a step's component is
//! read (a built-in's embedded bytes, or a file through the one checked
//! path, [`component_file::read`]), prepared (which refuses a component
//! built for another contract version) and asked to `describe` itself, so
//! `sluice validate` checks each `with` against the component's input
//! schema and each grant against its roles before anything runs.
//!
//! [`prepare`] is also how a run loads its components: what validation
//! accepted is exactly what runs.

use std::sync::Arc;

use super::{Engine, Prepared, contract};
use crate::flow::component_file;
use crate::flow::model::ComponentRef;
use crate::flow::{CatalogError, ComponentCatalog, Description};

/// A component's bytes, held where they already are: a built-in's
/// embedded ones, or the file's as the flow first read them (shared with
/// the flow, not copied for each run).
pub enum Wasm {
    Builtin(&'static [u8]),
    File(Arc<[u8]>),
}

impl std::ops::Deref for Wasm {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Wasm::Builtin(bytes) => bytes,
            Wasm::File(bytes) => bytes,
        }
    }
}

/// A component's bytes: a built-in's, or the file's, read through its checks.
pub fn bytes(component: &ComponentRef) -> Result<Wasm, CatalogError> {
    match component {
        ComponentRef::Builtin(name) => match sluice_builtins::find(name) {
            Some(b) => Ok(Wasm::Builtin(b.wasm)),
            None => Err(CatalogError::new(
                format!("`{name}` is not a built-in component"),
                "give a built-in's name or a path to a .wasm file",
            )),
        },
        ComponentRef::File(file) => file
            .content(component_file::read)
            .map(Wasm::File)
            .map_err(|e| CatalogError::new(e.to_string(), e.hint())),
    }
}

/// Reads and prepares a component (compiled once per process, and cached
/// on disk when the engine has a cache).
pub fn prepare(engine: &Engine, component: &ComponentRef) -> Result<Arc<Prepared>, CatalogError> {
    let bytes = bytes(component)?;
    engine.prepare(&bytes).map_err(|e| {
        CatalogError::new(
            format!("{e:#}"),
            format!(
                "`uses` takes a component built for the step contract sluice:flow@{} (wasm32-wasip2)",
                contract::SPOKEN
            ),
        )
    })
}

/// Describes components through one engine.
pub struct EngineCatalog {
    engine: Arc<Engine>,
}

impl EngineCatalog {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

impl ComponentCatalog for EngineCatalog {
    fn describe(&self, component: &ComponentRef) -> Result<Option<Description>, CatalogError> {
        let prepared = prepare(&self.engine, component)?;
        let described = describe_blocking(&self.engine, &prepared).map_err(|why| {
            CatalogError::new(
                format!("its `describe` failed: {why}"),
                "fix the component's `describe` export, or remove it (then nothing is checked before the run)",
            )
        })?;
        Ok(described.map(|d| (*d).clone()))
    }
}

/// `describe` is async (it runs the component under the engine's time
/// limits) and compiling a flow is not: it is asked on a thread of its own
/// with a runtime of its own, which works whether or not the caller is
/// inside a runtime.
fn describe_blocking(
    engine: &Engine,
    prepared: &Prepared,
) -> Result<Option<Arc<Description>>, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .map_err(|e| format!("no runtime to call it on: {e}"))?;
                runtime
                    .block_on(engine.describe(prepared))
                    .map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("it stopped unexpectedly".to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    #[test]
    fn a_built_in_describes_itself_outside_and_inside_a_runtime() {
        let catalog = EngineCatalog::new(Engine::new(EngineConfig::default()).unwrap());
        let users = ComponentRef::Builtin("procore-users".into());
        let d = catalog.describe(&users).unwrap().unwrap();
        assert_eq!(d.name, "procore-users");
        assert_eq!(d.connections[0].role, "procore");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let again = runtime.block_on(async { catalog.describe(&users) });
        assert_eq!(again.unwrap().unwrap(), d);
        let missing = ComponentRef::file("/nonexistent/x.wasm");
        let e = catalog.describe(&missing).unwrap_err();
        assert!(e.message.contains("does not exist"), "{e}");
    }
}
