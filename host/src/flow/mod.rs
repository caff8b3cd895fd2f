//! Flow files: parsing (`authored`), checking (`validate`) and the checked
//! model (`model`) the engine runs. Nothing here knows about wasmtime.

pub mod authored;
pub mod model;
pub mod resolve;
pub mod schedule;
pub mod source;
pub mod template;
pub mod validate;

use std::collections::BTreeMap;
use std::path::Path;

pub use model::{ComponentRef, Flow, Step};
pub use source::{Diagnostic, Diagnostics, SourceFile};
pub use validate::Context;

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

/// Reads and validates a flow file, reporting every problem at once.
pub fn load(path: &Path, ctx: &Context<'_>) -> Result<Flow, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_source(SourceFile::new(path, text), ctx)
}

pub fn load_source(source: SourceFile, ctx: &Context<'_>) -> Result<Flow, LoadError> {
    let mut diags = Vec::new();
    // A section that failed to parse is left out of the authored flow; the
    // rest is still validated so that every problem is reported at once.
    if let Some(authored) = authored::parse(&source, &mut diags) {
        let parsed_cleanly = diags.is_empty();
        if let Some(flow) = validate::validate(&source, authored, ctx, &mut diags)
            && parsed_cleanly
        {
            return Ok(flow);
        }
    }
    diags.sort_by_key(|d| d.span.start);
    Err(LoadError::Invalid(Box::new(Diagnostics {
        source,
        items: diags,
    })))
}

/// The process environment as a map.
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}
