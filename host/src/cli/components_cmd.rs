//! `sluice components`: the built-ins, and components in OCI registries.
//!
//! - `sluice components` lists the built-in components
//! - `sluice components show NAME|PATH [--json]` says what one takes and
//!   returns (its `describe`: input and output JSON Schemas, connection
//!   roles): what a component of your own must accept to replace it
//! - `sluice components pull FLOW` fetches every `oci://` component the flow
//!   uses into the cache and pins each tag in `sluice.lock`
//! - `sluice components update FLOW` resolves the tags again and pins what
//!   they point at now
//! - `sluice components push PATH REF` publishes a component file

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::terminal;
use crate::engine::catalog::EngineCatalog;
use crate::flow::model::ComponentRef;
use crate::flow::{ComponentCatalog, Description};
use crate::oci::{Mode, Resolver, reference::OciRef, registry::Registry};

#[derive(Debug, Args)]
pub struct ComponentsArgs {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// What a component takes and returns: a built-in's name or a .wasm path
    Show {
        /// A built-in's name (`sluice components` lists them) or a .wasm file
        component: String,
        /// Its description as JSON (the `describe` record)
        #[arg(long)]
        json: bool,
    },
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
        Some(Action::Show { component, json }) => Ok(show(&component, json, data_dir)),
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

/// Loads one component (a built-in by name, else a file) and prints its
/// `describe`: exit 2 when it cannot be loaded, 1 when it has none.
fn show(component: &str, json: bool, data_dir: &Path) -> ExitCode {
    let reference = match sluice_builtins::find(component) {
        Some(_) => ComponentRef::Builtin(component.to_string()),
        None if !component.ends_with(".wasm") && !Path::new(component).exists() => {
            eprintln!(
                "error: `{}` is neither a built-in component nor a file",
                terminal::line(component)
            );
            eprintln!(
                "  hint: `sluice components` lists the built-ins; a component of your own is a path to its .wasm file"
            );
            return ExitCode::from(2);
        }
        None => ComponentRef::file(component),
    };
    let engine = match super::run_cmd::engine_for(data_dir) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!(
                "error: components cannot be loaded: {}",
                terminal::line(&sluice_store::error::with_causes(e.as_ref()))
            );
            return ExitCode::from(2);
        }
    };
    let described = EngineCatalog::new(engine).describe(&reference);
    match described {
        Ok(Some(d)) if json => {
            println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(Some(d)) => {
            println!("{}", terminal::lines(&described_text(&d)));
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!(
                "{}: exports no `describe`, so what it takes and returns is not known (a flow that uses it is not checked before it runs)",
                terminal::line(component)
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!(
                "error: {}: {}",
                terminal::line(component),
                terminal::line(&e.message)
            );
            eprintln!("  hint: {}", terminal::line(&e.hint));
            ExitCode::from(2)
        }
    }
}

/// A description for a person: name, version and summary, the roles, and
/// each schema as indented JSON.
fn described_text(d: &Description) -> String {
    let mut text = format!("{} {}: {}\n", d.name, d.version, d.summary);
    if d.connections.is_empty() {
        text.push_str("\nconnection roles: none (it sends no requests)\n");
    } else {
        text.push_str(
            "\nconnection roles (`connections = [...]` binds each to a connection of the flow):\n",
        );
        let width = d
            .connections
            .iter()
            .map(|c| c.role.len())
            .max()
            .unwrap_or(0);
        for c in &d.connections {
            text.push_str(&format!("  {:width$}  {}\n", c.role, c.summary));
        }
    }
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    text.push_str(&format!(
        "\ninput (the step's `with`), JSON Schema:\n{}\n\noutput (what later steps read as `${{steps.ID.…}}`), JSON Schema:\n{}",
        pretty(&d.input_schema),
        pretty(&d.output_schema)
    ));
    text
}

/// Compiles the flow with a resolver, which pulls and pins as it goes
/// (components are not described: `sluice validate` checks them).
fn pin(file: &Path, data_dir: &Path, mode: Mode) -> ExitCode {
    let resolver = Resolver::new(data_dir, mode);
    let catalog = crate::flow::Undescribed;
    let compiled = super::with_resolver(&resolver, &catalog, &[], |ctx| {
        crate::flow::compile_file(file, ctx)
    });
    let resolved = resolver.resolved();
    if resolved.is_empty() && compiled.is_ok() {
        // Said, not left silent: the command did its whole job.
        println!(
            "{} uses no oci:// component: nothing to pull or pin",
            terminal::line(&file.display().to_string())
        );
    }
    for r in resolved {
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
