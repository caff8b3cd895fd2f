//! Flow files, in three stages, each its own type:
//!
//! 1. [`authored`]: the TOML as written, with spans ([`authored::AuthoredFlow`]).
//! 2. [`compile`]: everything that needs no environment — syntax, ids,
//!    references, schedules, component files, the components' `describe`
//!    schemas and the inputs given to them, declared secrets
//!    ([`CompiledFlow`]). `sluice validate FILE` stops here.
//! 3. [`bind`]: the compiled flow bound to an environment — variables,
//!    secret values, connections resolved ([`Flow`], the model in [`model`]
//!    that runs). `sluice validate --env FILE` and `sluice run` go this far.
//!
//! Every problem of every stage is reported at once, with file, line,
//! column and a hint ([`Diagnostics`]). Nothing here knows about wasmtime:
//! components are known through a [`ComponentCatalog`].

pub mod authored;
pub mod bind;
pub mod catalog;
pub mod compile;
pub mod compiled;
pub mod component_file;
pub mod environment;
pub mod for_each_key;
pub mod item_key;
pub mod model;
pub mod reads;
pub mod remote;
pub mod resolve;
pub mod schedule;
pub mod schema;
pub mod source;
pub mod template;

use std::path::Path;

use crate::redact::Redactor;

pub use catalog::{CatalogError, ComponentCatalog, ConnectionRole, Description, Undescribed};
pub use compile::Context;
pub use compiled::CompiledFlow;
pub use environment::{Environment, ProcessEnv};
pub use model::{ComponentRef, ConnectionGrant, Flow, Step};
pub use remote::{NoRegistry, RemoteComponents, RemoteError};
pub use source::{Diagnostic, Diagnostics, SourceFile};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("error: cannot read flow file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "error: flow file {path} is larger than {} MiB: a flow file is TOML text; check that the path names the flow",
        MAX_FLOW_BYTES >> 20
    )]
    TooLarge { path: String },
    #[error(
        "error: {path}:{line}:{column}: the flow file is not UTF-8 text here: save it as UTF-8 (TOML files must be)"
    )]
    NotUtf8 {
        path: String,
        line: usize,
        column: usize,
    },
    #[error("{0}")]
    Invalid(Box<Diagnostics>),
}

/// Flow files larger than this are refused before they are read whole: a
/// flow is a page or two of TOML (a large literal, a mail body, can make
/// it megabytes), and a path that names a device or a runaway file must
/// not take the host's memory. The same cap as a component file's.
pub const MAX_FLOW_BYTES: u64 = 64 << 20;

/// Reads a flow file's text.
pub fn read(path: &Path) -> Result<SourceFile, LoadError> {
    let shown = || path.display().to_string();
    let bytes =
        crate::capped_read::read(path, MAX_FLOW_BYTES).map_err(|source| LoadError::Read {
            path: shown(),
            source,
        })?;
    if bytes.len() as u64 > MAX_FLOW_BYTES {
        return Err(LoadError::TooLarge { path: shown() });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // Valid up to there, so the prefix is text.
        let before = String::from_utf8_lossy(valid);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        LoadError::NotUtf8 {
            path: shown(),
            line,
            column,
        }
    })?;
    Ok(SourceFile::new(path, text))
}

/// Reads and compiles a flow file: every problem that needs no environment.
pub fn compile_file(path: &Path, ctx: &Context<'_>) -> Result<CompiledFlow, LoadError> {
    compile_source(read(path)?, ctx)
}

pub fn compile_source(source: SourceFile, ctx: &Context<'_>) -> Result<CompiledFlow, LoadError> {
    let mut diags = Vec::new();
    let compiled = compile_into(&source, ctx, &mut diags);
    finish(source, diags, compiled, Redactor::default())
}

/// Binds a compiled flow to an environment.
pub fn bind_flow(compiled: CompiledFlow, env: &dyn Environment) -> Result<Flow, LoadError> {
    let mut diags = Vec::new();
    let source = compiled.source.clone();
    let flow = bind::bind(compiled, env, &mut diags);
    let redactor = secrets_of(&flow);
    finish(source, diags, Some(flow), redactor)
}

/// Reads, compiles and binds a flow file, reporting every problem at once.
pub fn load(path: &Path, ctx: &Context<'_>, env: &dyn Environment) -> Result<Flow, LoadError> {
    load_source(read(path)?, ctx, env)
}

pub fn load_source(
    source: SourceFile,
    ctx: &Context<'_>,
    env: &dyn Environment,
) -> Result<Flow, LoadError> {
    let mut diags = Vec::new();
    // A flow that did not compile is still bound, so that the problems of
    // both stages are reported together.
    let flow = compile_into(&source, ctx, &mut diags).map(|c| bind::bind(c, env, &mut diags));
    let redactor = flow.as_ref().map(secrets_of).unwrap_or_default();
    finish(source, diags, flow, redactor)
}

/// The bound flow's secrets: a problem's message is redacted as it is
/// made, and the line it quotes (a secret pasted into the flow file) as
/// it is shown.
fn secrets_of(flow: &Flow) -> Redactor {
    Redactor::new(flow.secrets.iter().map(|s| s.expose().to_string()))
}

fn compile_into(
    source: &SourceFile,
    ctx: &Context<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<CompiledFlow> {
    // A section that failed to parse is left out of the authored flow (a
    // step only when it is not a table: otherwise it is kept with what
    // could be read of it, with or without an id); the rest is still
    // checked so that every problem is reported at once.
    let mut authored = authored::parse(source, diags)?;
    let oversized = std::mem::take(&mut authored.oversized);
    let compiled = compile::compile(source, authored, ctx, diags);
    // A number too large to hold is told once, where it is written, not
    // again in serde's words for the field it was given to.
    diags.retain(|d| !oversized.iter().any(|o| o.span == d.span));
    diags.extend(oversized);
    Some(compiled)
}

fn finish<T>(
    source: SourceFile,
    mut diags: Vec<Diagnostic>,
    done: Option<T>,
    redactor: Redactor,
) -> Result<T, LoadError> {
    if diags.is_empty()
        && let Some(done) = done
    {
        return Ok(done);
    }
    diags.sort_by(|a, b| (a.span.start, &a.message).cmp(&(b.span.start, &b.message)));
    diags.dedup();
    Err(LoadError::Invalid(Box::new(Diagnostics {
        source,
        items: diags,
        redactor,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_file_too_large_or_not_utf8_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_FLOW_BYTES as usize + 1]).unwrap();
        let e = read(&big).unwrap_err().to_string();
        assert!(
            e.starts_with("error: flow file ") && e.contains("larger than 64 MiB"),
            "{e}"
        );
        // A device is cut off at the cap, not read for ever.
        let e = read(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, b"name = \"x\"\n# caf\xe9 \xff\n").unwrap();
        let e = read(&bad).unwrap_err().to_string();
        assert!(e.contains(&format!("{}:2:6:", bad.display())), "{e}");
        assert!(e.contains("save it as UTF-8"), "{e}");

        let e = read(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("error: cannot read flow file "), "{e}");
        // Just under the cap is read.
        std::fs::write(&big, vec![b'#'; MAX_FLOW_BYTES as usize]).unwrap();
        assert!(read(&big).is_ok());
    }
}
