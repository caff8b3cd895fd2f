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

pub use catalog::{CatalogError, ComponentCatalog, ConnectionRole, Description, Undescribed};
pub use compile::Context;
pub use compiled::CompiledFlow;
pub use environment::{Environment, ProcessEnv};
pub use model::{ComponentRef, ConnectionGrant, Flow, Step};
pub use remote::{NoRegistry, RemoteComponents, RemoteError};
pub use source::{Diagnostic, Diagnostics, SourceFile};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read flow file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Box<Diagnostics>),
}

/// Reads a flow file's text.
pub fn read(path: &Path) -> Result<SourceFile, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
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
    finish(source, diags, compiled)
}

/// Binds a compiled flow to an environment.
pub fn bind_flow(compiled: CompiledFlow, env: &dyn Environment) -> Result<Flow, LoadError> {
    let mut diags = Vec::new();
    let source = compiled.source.clone();
    let flow = bind::bind(compiled, env, &mut diags);
    finish(source, diags, Some(flow))
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
    finish(source, diags, flow)
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
    let authored = authored::parse(source, diags)?;
    Some(compile::compile(source, authored, ctx, diags))
}

fn finish<T>(
    source: SourceFile,
    mut diags: Vec<Diagnostic>,
    done: Option<T>,
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
    })))
}
