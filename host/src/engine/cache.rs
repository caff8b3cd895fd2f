//! Compiled components on disk, so a second `sluice run` does not compile.
//!
//! An entry is keyed by the SHA-256 of the component's bytes and by the
//! engine's compatibility hash (wasmtime version, target, settings), so a
//! changed component or engine never loads a stale artefact. Entries are
//! written to a temporary file and renamed, so a crash never leaves half
//! an entry; an entry that fails to load is compiled again and replaced.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn engine_key(engine: &wasmtime::Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

pub fn entry_path(dir: &Path, engine: &wasmtime::Engine, digest: &str) -> PathBuf {
    dir.join(format!("{digest}-{}.cwasm", engine_key(engine)))
}

/// How a component was obtained, for the benchmark and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Compiled,
    Cached,
}

pub fn load_or_compile(
    engine: &wasmtime::Engine,
    dir: Option<&Path>,
    bytes: &[u8],
    digest: &str,
) -> anyhow::Result<(Component, Origin)> {
    let Some(dir) = dir else {
        return Ok((
            Component::new(engine, bytes).map_err(super::to_anyhow)?,
            Origin::Compiled,
        ));
    };
    let path = entry_path(dir, engine, digest);
    // Read into memory rather than mapped: another process replacing or
    // truncating the file must not be able to pull pages from under us.
    if let Ok(cached) = std::fs::read(&path) {
        // SAFETY: the file is in our own cache directory, named by the
        // engine's compatibility hash; wasmtime checks its header and
        // rejects artefacts of another engine or version.
        if let Ok(component) = unsafe { Component::deserialize(engine, &cached) } {
            return Ok((component, Origin::Cached));
        }
    }
    let compiled = engine
        .precompile_component(bytes)
        .map_err(super::to_anyhow)?;
    // A cache that cannot be written only costs time; the run goes on.
    if std::fs::create_dir_all(dir).is_ok() {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &compiled).is_ok() && std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    // SAFETY: `compiled` was produced just now by this engine.
    let component =
        unsafe { Component::deserialize(engine, &compiled) }.map_err(super::to_anyhow)?;
    Ok((component, Origin::Compiled))
}
