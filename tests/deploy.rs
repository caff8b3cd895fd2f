//! The deployment files: the Dockerfile passes hadolint, and the Kubernetes
//! manifests under deploy/kubernetes validate (strictly: no unknown field)
//! against the Kubernetes schemas `kubernetes-validate` bundles — and a
//! broken copy of each does not, so the checks can fail. Both tools come
//! from PyPI, installed by `scripts/test-deps` into `<target>/deploy-venv`.
//! Then what the files must say: two replicas on PostgreSQL with secrets
//! from a Secret; a CronJob that forbids overlap and has a starting
//! deadline; a non-root, multi-stage image; and arguments that this
//! `sluice` accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A checker from the virtual environment; this test runs from
/// `<target>/debug/deps/`.
fn tool(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let tool = target.join("deploy-venv/bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing: run scripts/test-deps, which installs the deployment checkers",
        tool.display()
    );
    tool
}

fn run(tool_name: &str, args: &[&str]) -> Output {
    Command::new(tool(tool_name))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

#[test]
fn the_dockerfile_passes_hadolint_and_a_bad_one_does_not() {
    let out = run("hadolint", &["--no-color", "Dockerfile"]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian\nRUN apt-get install curl\n").unwrap();
    let out = run("hadolint", &["--no-color", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("DL3006"), "{}", text(&out));
}

#[test]
fn the_kubernetes_manifests_validate_against_the_schemas_and_broken_ones_do_not() {
    let files = manifests();
    let names: Vec<&str> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "configmap.yaml",
            "cronjob.yaml",
            "deployment.yaml",
            "secret.example.yaml"
        ]
    );
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = run("kubernetes-validate", &args);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_eq!(said.matches("passed for resource").count(), 4, "{said}");
    // A misspelt field and a value of the wrong type are caught.
    let dir = tempfile::tempdir().unwrap();
    for (file, from, to) in [
        (
            "cronjob.yaml",
            "concurrencyPolicy: Forbid",
            "concurencyPolicy: Forbid",
        ),
        ("deployment.yaml", "replicas: 2", "replicas: \"two\""),
    ] {
        let broken = read(&format!("deploy/kubernetes/{file}")).replace(from, to);
        let path = dir.path().join(file);
        std::fs::write(&path, broken).unwrap();
        let out = run("kubernetes-validate", &["--strict", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{file}: {}", text(&out));
    }
}

#[test]
fn the_deployment_runs_two_replicas_on_postgres_with_secrets_from_a_secret() {
    let d = read("deploy/kubernetes/deployment.yaml");
    for needle in [
        "kind: Deployment",
        "replicas: 2",
        "- serve",
        "secretRef:\n                name: sluice",
        "name: SLUICE_REPLICA",
        "fieldPath: metadata.name",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
    ] {
        assert!(d.contains(needle), "{needle:?} missing");
    }
    let secret = read("deploy/kubernetes/secret.example.yaml");
    assert!(secret.contains("SLUICE_DATABASE_URL: \"postgres://"));
    // Secrets come from the Secret, never from the ConfigMap or the spec.
    let config = read("deploy/kubernetes/configmap.yaml");
    for name in ["SECRET", "TOKEN", "DATABASE_URL"] {
        assert!(!config.contains(name), "{name} in the ConfigMap");
        assert!(!d.contains(&format!("{name}:")), "{name} in the Deployment");
    }
}

#[test]
fn the_cronjob_forbids_overlap_has_a_deadline_and_the_image_runs_as_non_root() {
    let c = read("deploy/kubernetes/cronjob.yaml");
    for needle in [
        "kind: CronJob",
        "concurrencyPolicy: Forbid",
        "startingDeadlineSeconds: 300",
        "- run",
        "/etc/sluice/flows/procore-license-sync.toml",
    ] {
        assert!(c.contains(needle), "{needle:?} missing");
    }
    let docker = read("Dockerfile");
    assert_eq!(docker.matches("\nFROM ").count(), 2, "two stages");
    assert!(docker.contains("rustup target add wasm32-wasip2"));
    assert!(docker.contains("USER 65532:65532"));
    assert!(docker.contains("COPY flows /etc/sluice/flows"));
    assert!(read(".dockerignore").lines().any(|l| l == "target"));
}

/// The container arguments a manifest gives `sluice`: the items of its
/// `args:` list.
fn container_args(manifest: &str) -> Vec<String> {
    let mut lines = manifest.lines().skip_while(|l| l.trim() != "args:");
    lines.next();
    lines
        .map(str::trim)
        .take_while(|l| l.starts_with("- "))
        .map(|l| l.trim_start_matches("- ").to_string())
        .collect()
}

#[test]
fn the_manifests_give_sluice_arguments_it_accepts() {
    for (file, command) in [("deployment.yaml", "serve"), ("cronjob.yaml", "run")] {
        let args = container_args(&read(&format!("deploy/kubernetes/{file}")));
        assert_eq!(args.first().map(String::as_str), Some(command), "{file}");
        // `--help` after them: the arguments are parsed, nothing is run.
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {args:?}: {}", text(&out));
        // And one it does not know is refused, so the check can fail.
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .args(["--no-such-flag", "--help"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{file}: an unknown flag passed");
    }
}
