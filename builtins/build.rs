//! Builds every guest crate (components/* and tests/fixtures/*) for
//! wasm32-wasip2 with a nested cargo, in its own target directory so the
//! outer build's lock is not contended, and generates the tables that embed
//! them. Guests are never compiled for the host target by this step.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "guest";

struct Guest {
    package: String,
    description: String,
    dir: PathBuf,
}

fn main() {
    if let Err(message) = run() {
        // A build script's panic is the only way to stop the build; make it readable.
        eprintln!("\nerror: {message}\n");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = manifest_dir
        .parent()
        .ok_or("builtins/ has no parent directory")?
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    for watched in [
        "wit",
        "guest-sdk",
        "guest-services",
        "contract",
        "identity",
        "components",
        "tests/fixtures",
        "Cargo.lock",
        // The `guest` profile (opt-level per component) is set here.
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let components = guests(&root.join("components"))?;
    let fixtures = guests(&root.join("tests/fixtures"))?;
    let target_dir = root.join("target").join("guests");
    let all: Vec<&Guest> = components.iter().chain(fixtures.iter()).collect();
    if !all.is_empty() {
        build(&root, &target_dir, &all)?;
    }
    let wasm_dir = target_dir.join(TARGET).join(PROFILE);
    let wasm_path = |g: &Guest| wasm_dir.join(format!("{}.wasm", g.package.replace('-', "_")));
    let mut code = String::from(
        "/// The built-in components, embedded at build time.\npub static BUILTINS: &[Builtin] = &[\n",
    );
    for g in &components {
        let path = wasm_path(g);
        let _ = writeln!(
            code,
            "    Builtin {{ name: {:?}, description: {:?}, wasm: include_bytes!({:?}) }},",
            g.package,
            g.description,
            path.display().to_string()
        );
    }
    code.push_str("];\n\n/// Test fixtures: name and path of the built .wasm.\npub static FIXTURES: &[(&str, &str)] = &[\n");
    for g in &fixtures {
        let _ = writeln!(
            code,
            "    ({:?}, {:?}),",
            g.package,
            wasm_path(g).display().to_string()
        );
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("builtins.rs"), code).map_err(|e| e.to_string())?;
    Ok(())
}

fn guests(dir: &Path) -> Result<Vec<Guest>, String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    for d in dirs {
        let text = std::fs::read_to_string(d.join("Cargo.toml"))
            .map_err(|e| format!("{}: {e}", d.display()))?;
        let manifest: toml::Table =
            toml::from_str(&text).map_err(|e| format!("{}/Cargo.toml: {e}", d.display()))?;
        let package = manifest
            .get("package")
            .and_then(|p| p.as_table())
            .ok_or(format!("{}: no [package]", d.display()))?;
        let name = package
            .get("name")
            .and_then(|n| n.as_str())
            .ok_or(format!("{}: no package name", d.display()))?;
        let description = package
            .get("description")
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        out.push(Guest {
            package: name.to_string(),
            description,
            dir: d.clone(),
        });
    }
    Ok(out)
}

fn build(root: &Path, target_dir: &Path, guests: &[&Guest]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--target",
            TARGET,
            "--profile",
            PROFILE,
            "--target-dir",
        ])
        .arg(target_dir);
    for g in guests {
        cmd.args(["-p", &g.package]);
        let _ = &g.dir;
    }
    // The outer build's settings are for the host target; keep them out.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd
        .output()
        .map_err(|e| format!("could not run cargo to build the components: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("wasm32-wasip2")
            && (stderr.contains("may not be installed")
                || stderr.contains("can't find crate for `core`")
                || stderr.contains("can't find crate for `std`"))
        {
            "\n\nThe wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2` (the README's commands do this for you)."
        } else {
            ""
        };
        return Err(format!(
            "building the guest components for {TARGET} failed:\n{stderr}{hint}"
        ));
    }
    Ok(())
}
