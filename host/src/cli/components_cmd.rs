//! `sluice components`: the built-ins, and components in OCI registries.
//!
//! - `sluice components` lists the built-in components
//! - `sluice components pull FLOW` fetches every `oci://` component the flow
//!   uses into the cache and pins each tag in `sluice.lock`
//! - `sluice components update FLOW` resolves the tags again and pins what
//!   they point at now
//! - `sluice components push PATH REF` publishes a component file

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::terminal;
use crate::oci::{Mode, Resolver, reference::OciRef, registry::Registry};

#[derive(Debug, Args)]
pub struct ComponentsArgs {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Fetch the flow's `oci://` components and pin their tags in sluice.lock
    Pull {
        /// The flow file
        file: PathBuf,
    },
    /// Resolve the flow's tags again and pin what they point at now
    Update {
        /// The flow file
        file: PathBuf,
    },
    /// Publish a component: `push step.wasm oci://REGISTRY/REPO:TAG`
    Push {
        /// The component file (.wasm)
        path: PathBuf,
        /// Where to publish it: oci://REGISTRY/REPO:TAG
        reference: String,
    },
}

pub async fn components(args: ComponentsArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    match args.action {
        None => Ok(list()),
        Some(Action::Pull { file }) => Ok(pin(&file, data_dir, Mode::Locked)),
        Some(Action::Update { file }) => Ok(pin(&file, data_dir, Mode::Update)),
        Some(Action::Push { path, reference }) => push(&path, &reference).await,
    }
}

fn list() -> ExitCode {
    let width = sluice_builtins::BUILTINS
        .iter()
        .map(|b| b.name.len())
        .max()
        .unwrap_or(0);
    for b in sluice_builtins::BUILTINS {
        println!("{:width$}  {}", b.name, b.description);
    }
    ExitCode::SUCCESS
}

/// Compiles the flow with a resolver, which pulls and pins as it goes
/// (components are not described: `sluice validate` checks them).
fn pin(file: &Path, data_dir: &Path, mode: Mode) -> ExitCode {
    let resolver = Resolver::new(data_dir, mode);
    let catalog = crate::flow::Undescribed;
    let compiled = super::with_resolver(&resolver, &catalog, &[], |ctx| {
        crate::flow::compile_file(file, ctx)
    });
    for r in resolver.resolved() {
        let how = match (&r.replaced, r.pulled) {
            (Some(old), _) => format!("pinned {} (was {old})", r.digest),
            (None, true) => format!("pulled {}", r.digest),
            (None, false) => format!("{} (cached)", r.digest),
        };
        println!("{}  {}", terminal::line(&r.reference), how);
    }
    match compiled {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", terminal::lines(&e.to_string()));
            ExitCode::from(2)
        }
    }
}

async fn push(path: &Path, reference: &str) -> anyhow::Result<ExitCode> {
    let r = match OciRef::parse(reference) {
        Ok(r) if r.digest().is_none() => r,
        Ok(_) => {
            eprintln!("error: push to a tag (oci://REGISTRY/REPO:TAG), not a digest");
            return Ok(ExitCode::from(2));
        }
        Err(e) => {
            eprintln!("error: {}", terminal::line(&e.to_string()));
            return Ok(ExitCode::from(2));
        }
    };
    let wasm = match crate::flow::component_file::read(path) {
        Ok(wasm) => wasm,
        Err(e) => {
            eprintln!("error: {}", terminal::line(&e.to_string()));
            eprintln!("  hint: {}", e.hint());
            return Ok(ExitCode::from(2));
        }
    };
    let size = wasm.len();
    let digest = Registry::for_registry(r.registry())
        .push(&r.reference, wasm)
        .await?;
    println!(
        "pushed {} ({size} bytes) as {}",
        terminal::line(reference),
        digest
    );
    Ok(ExitCode::SUCCESS)
}
