//! Microsoft's own Graph SDK for Python (msgraph-sdk, with msgraph-core and
//! Kiota underneath) against `sluice emulate`, with faults off and on: the
//! emulator must answer as Graph does, not as our components happen to ask.
//! `graph_sdk/check_graph.py` makes the SDK calls and compares every model
//! it parses with the emulator's own state; it runs in the virtual
//! environment `scripts/test-deps` makes in the target directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The script's virtual environment: `<target dir>/graph-sdk-venv`, where
/// `scripts/test-deps` puts it. This test runs from `<target>/debug/deps/`.
fn python() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let python = target.join("graph-sdk-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test-deps, which installs Microsoft's Graph SDK for this test",
        python.display()
    );
    python
}

/// A running `sluice emulate` and the environment it printed.
struct Emulator {
    child: Child,
    env: Vec<(String, String)>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Undoes the emulator's shell quoting of an exported value.
fn unquote(value: &str) -> String {
    match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace(r"'\''", "'"),
        None => value.to_string(),
    }
}

fn emulate(faults: Option<&str>) -> Emulator {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args(["emulate", "--port", "0"]);
    if let Some(f) = faults {
        command.args(["--faults", f]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut env = Vec::new();
    // It prints where it listens, the exports, then "then: sluice run …".
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("Graph and Procore emulators listening on ") {
            env.push(("EMULATOR_URL".to_string(), url.trim().to_string()));
        }
        if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            env.push((k.to_string(), unquote(v)));
        }
        if line.starts_with("then:") {
            break;
        }
    }
    // Whatever it prints later must not meet a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    assert!(
        env.iter().any(|(k, _)| k == "GRAPH_TOKEN_URL"),
        "sluice emulate did not print its environment"
    );
    Emulator { child, env }
}

/// Runs the SDK script against an emulator; panics with its output unless
/// every check passed.
fn check_with_sdk(faults: Option<&str>) -> String {
    let emulator = emulate(faults);
    let mut command = Command::new(python());
    command.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/graph_sdk/check_graph.py"
    ));
    if faults.is_some() {
        command.arg("--expect-faults");
    }
    let output = command.envs(emulator.env.iter().cloned()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the Graph SDK check failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn microsofts_graph_sdk_reads_the_emulator_as_graph() {
    let summary = check_with_sdk(None);
    assert!(summary.contains("\"faults_ridden_out\": 0"), "{summary}");
}

#[test]
fn microsofts_graph_sdk_rides_out_the_emulators_faults() {
    // 429s and 503s with Retry-After, which the SDK's retry handler honours,
    // and empty first pages that still carry a nextLink. Dropped
    // connections and 500s are left out: the SDK does not retry them.
    let summary = check_with_sdk(Some(
        r#"{"rate_429": 0.08, "rate_503": 0.08, "retry_after_secs": 1, "empty_graph_pages": true, "seed": 7}"#,
    ));
    assert!(!summary.contains("\"faults_ridden_out\": 0"), "{summary}");
}
