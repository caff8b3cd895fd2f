//! Which version of the step contract a component was built for, checked
//! before it is linked, so a component built for another version is
//! refused with a message that names both versions instead of a linker
//! error about a missing import.

use std::collections::BTreeSet;

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// The step contract this host speaks (the `wit/` package's version).
pub const SPOKEN: &str = "0.2.3";
const PACKAGE: &str = "sluice:flow";

/// A component built for a version of the contract the host does not speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "it was built for the step contract {PACKAGE}@{found}, and this host speaks {PACKAGE}@{SPOKEN}: rebuild it against {PACKAGE}@{SPOKEN} (the WIT in Sluice's wit/ folder, or the sluice-guest SDK)"
)]
pub struct WrongVersion {
    /// The version the component targets.
    pub found: String,
}

/// Whether `component` targets a contract this host speaks: every
/// `sluice:flow` interface it imports must be a 0.2 one, and a component
/// that imports none of them must export `run` with a run context.
pub fn check(component: &Component, engine: &wasmtime::Engine) -> Result<(), WrongVersion> {
    let ty = component.component_type();
    let versions: BTreeSet<&str> = ty
        .imports(engine)
        .filter_map(|(name, _)| version_of(name))
        .collect();
    if let Some(other) = versions.into_iter().find(|v| !compatible(v)) {
        return Err(WrongVersion {
            found: other.to_string(),
        });
    }
    // 0.1's `run` took the input alone; nothing else tells a 0.1
    // component that imports nothing of ours from a 0.2 one. A `run` of
    // another shape is no step of any version: linking names what is
    // missing or wrong.
    if let Some(run) = ty.get_export(engine, "run")
        && let ComponentItem::ComponentFunc(f) = run.ty
        && is_run_of_0_1(&f)
    {
        return Err(WrongVersion {
            found: "0.1.0".into(),
        });
    }
    Ok(())
}

/// `run: func(input: json) -> result<json, step-error>`, as 0.1 had it
/// (`json` is a string, `step-error` a record).
fn is_run_of_0_1(f: &wasmtime::component::types::ComponentFunc) -> bool {
    use wasmtime::component::types::Type;
    let params: Vec<Type> = f.params().map(|(_, t)| t).collect();
    let results: Vec<Type> = f.results().collect();
    matches!(params.as_slice(), [Type::String])
        && matches!(results.as_slice(), [Type::Result(r)]
            if matches!(r.ok(), Some(Type::String)) && matches!(r.err(), Some(Type::Record(_))))
}

/// The version in an import name such as `sluice:flow/log@0.1.0`.
fn version_of(import: &str) -> Option<&str> {
    let rest = import.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    Some(rest.split_once('@').map_or("(unversioned)", |(_, v)| v))
}

/// Same major and minor: 0.2.x additions are marked `@since` and linking
/// decides about them.
fn compatible(version: &str) -> bool {
    version.starts_with("0.2.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_import_names() {
        assert_eq!(version_of("sluice:flow/log@0.1.0"), Some("0.1.0"));
        assert_eq!(version_of("sluice:flow/state@0.2.0"), Some("0.2.0"));
        assert_eq!(version_of("sluice:flow/log"), Some("(unversioned)"));
        assert_eq!(version_of("wasi:io/streams@0.2.6"), None);
        assert_eq!(version_of("sluice:flowers/x@1.0.0"), None);
        assert!(compatible("0.2.0") && compatible("0.2.3"));
        assert!(!compatible("0.1.0") && !compatible("1.0.0") && !compatible("0.20.0"));
    }
}
