//! The timer host and the run history, through the `sluice` binary: runs at
//! the scheduled times, skips overlapping firings, stops gracefully on
//! SIGTERM, leaves a readable record after a crash, and never stores a secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture;
use sluice_history::History;

const SECRET: &str = "hunter2-super-secret-token";

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

fn flow(name: &str, cron: &str, steps: &str) -> String {
    format!(
        "name = \"{name}\"\nschedule = {{ cron = \"{cron}\", timezone = \"Europe/Paris\" }}\n{steps}"
    )
}

fn step(id: &str, with: &str, extra: &str) -> String {
    format!(
        "\n[[step]]\nid = \"{id}\"\nuses = \"{}\"\nwith = {with}\n{extra}\n",
        fixture("hostile").display()
    )
}

fn sluice(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env_clear()
        .env("SLUICE_DATA_DIR", data)
        .env("API_TOKEN", SECRET)
        .args(args);
    cmd
}

fn serve(data: &Path, flows: &Path, grace: &str) -> Child {
    sluice(data, &["serve", flows.to_str().unwrap(), "--grace", grace])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(mut child: Child, within: Duration) -> (i32, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        assert!(
            start.elapsed() < within,
            "the host did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn history(data: &Path) -> History {
    History::open(&sluice_history::path_in(data)).unwrap()
}

/// Waits (bounded) until the history satisfies `ok`.
fn wait_for(
    data: &Path,
    within: Duration,
    ok: impl Fn(&[sluice_history::RunSummary]) -> bool,
) -> Vec<sluice_history::RunSummary> {
    let start = Instant::now();
    loop {
        let runs = history(data).list_runs(None, 100).unwrap();
        if ok(&runs) || start.elapsed() > within {
            return runs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_schedule_every_second_runs_and_records_each_run_and_a_bad_file_is_skipped() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "tick.toml",
        &flow(
            "tick",
            "* * * * * *",
            &step(
                "echo",
                r#"{ action = "echo", token = "${env.API_TOKEN}" }"#,
                "",
            ),
        ),
    );
    write(
        flows.path(),
        "broken.toml",
        "name = \"broken\"\nschedule = { cron = \"nope\" }\n",
    );
    let child = serve(data.path(), flows.path(), "5s");
    let runs = wait_for(data.path(), Duration::from_secs(20), |r| {
        r.iter().filter(|r| r.status == "succeeded").count() >= 3
    });
    signal(&child, "TERM");
    let (code, stderr) = wait_exit(child, Duration::from_secs(20));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("broken.toml is skipped"), "{stderr}");
    assert!(
        stderr.contains("tick") && stderr.contains("next run"),
        "{stderr}"
    );
    let ok: Vec<_> = runs.iter().filter(|r| r.status == "succeeded").collect();
    assert!(ok.len() >= 3, "{runs:?}");
    assert!(
        ok.iter()
            .all(|r| r.flow == "tick" && r.trigger == "schedule")
    );
    // The step received the secret; the history never stored it.
    let bytes = std::fs::read(sluice_history::path_in(data.path())).unwrap();
    let wal = std::fs::read(data.path().join("history.sqlite-wal")).unwrap_or_default();
    let contains = |hay: &[u8]| hay.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
    assert!(
        !contains(&bytes) && !contains(&wal),
        "the secret reached the history database"
    );
    let show = sluice(data.path(), &["runs", "show", &ok[0].id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("SUCCEEDED") && text.contains("echo") && text.contains("[redacted]"),
        "{text}"
    );
    assert!(!text.contains(SECRET));
}

#[test]
fn an_overlapping_firing_is_skipped_and_recorded() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "slow.toml",
        &flow(
            "slow",
            "* * * * * *",
            &step("nap", r#"{ action = "sleep", ms = 2500 }"#, ""),
        ),
    );
    let child = serve(data.path(), flows.path(), "10s");
    let runs = wait_for(data.path(), Duration::from_secs(20), |r| {
        r.iter().any(|r| r.status == "skipped") && r.iter().any(|r| r.status == "succeeded")
    });
    signal(&child, "TERM");
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    let skipped: Vec<_> = runs.iter().filter(|r| r.status == "skipped").collect();
    assert!(!skipped.is_empty(), "{runs:?}");
    assert!(
        skipped[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("still going")
    );
    assert!(stderr.contains("this firing is skipped"), "{stderr}");
    // Never two runs of the flow at once: no two non-skipped runs overlap in time.
    let mut spans: Vec<(String, String)> = runs
        .iter()
        .filter(|r| r.status != "skipped")
        .filter_map(|r| Some((r.started_at.clone(), r.ended_at.clone()?)))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlap: {pair:?}");
    }
}

#[test]
fn sigterm_mid_run_lets_the_step_finish_records_interrupted_and_exits_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let steps = step(
        "each",
        r#"{ action = "sleep", ms = 800, value = "${item}" }"#,
        "for_each = \"${params.items}\"\nconcurrency = 1",
    );
    write(
        flows.path(),
        "long.toml",
        &flow(
            "long",
            "* * * * * *",
            &format!("[params]\nitems = [1, 2, 3, 4, 5, 6, 7, 8]\n{steps}"),
        ),
    );
    let child = serve(data.path(), flows.path(), "10s");
    // Once the run is under way, stop the host.
    wait_for(data.path(), Duration::from_secs(20), |r| {
        r.iter().any(|r| r.status == "running")
    });
    std::thread::sleep(Duration::from_millis(1200));
    signal(&child, "TERM");
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    let h = history(data.path());
    let runs: Vec<_> = h
        .list_runs(None, 10)
        .unwrap()
        .into_iter()
        .filter(|r| r.status != "skipped")
        .collect();
    assert_eq!(runs.len(), 1, "no run started after the signal: {runs:?}");
    assert_eq!(runs[0].status, "interrupted", "{runs:?}");
    let detail = h.run_detail(&runs[0].id).unwrap().unwrap();
    let finished = detail
        .items
        .iter()
        .filter(|i| i.status == "succeeded")
        .count();
    assert!(
        (1..8).contains(&finished),
        "the running item finished, the rest never started: {finished}"
    );
    assert_eq!(detail.steps[0].status, "interrupted");
}

#[test]
fn a_killed_run_leaves_a_readable_partial_record() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let steps = format!(
        "{}{}",
        step("first", r#"{ action = "echo", value = 1 }"#, ""),
        step(
            "second",
            r#"{ action = "sleep", ms = 30000 }"#,
            "timeout = \"1m\""
        )
    );
    write(
        flows.path(),
        "crash.toml",
        &format!("name = \"crash\"\n{steps}"),
    );
    let mut child = sluice(
        data.path(),
        &[
            "run",
            flows.path().join("crash.toml").to_str().unwrap(),
            "--quiet",
        ],
    )
    .spawn()
    .unwrap();
    wait_for(data.path(), Duration::from_secs(20), |_| {
        h_step_running(data.path(), "second")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let out = sluice(data.path(), &["runs"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("crash") && table.contains("interrupted"),
        "{table}"
    );
    let id = history(data.path()).list_runs(None, 1).unwrap()[0]
        .id
        .clone();
    let show = sluice(data.path(), &["runs", "show", &id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("INTERRUPTED") && text.contains("ended before the run finished"),
        "{text}"
    );
    assert!(
        text.contains("first") && text.contains("succeeded"),
        "{text}"
    );
    assert!(
        text.contains("second") && text.contains("interrupted"),
        "{text}"
    );
}

fn h_step_running(data: &Path, step: &str) -> bool {
    let h = history(data);
    let Ok(runs) = h.list_runs(None, 1) else {
        return false;
    };
    let Some(run) = runs.first() else {
        return false;
    };
    h.run_detail(&run.id).ok().flatten().is_some_and(|d| {
        d.steps
            .iter()
            .any(|s| s.step_id == step && s.status == "running")
    })
}

#[test]
fn runs_can_be_listed_by_flow_and_pruned() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "a.toml",
        &format!(
            "name = \"alpha\"\n{}",
            step("s", r#"{ action = "echo" }"#, "")
        ),
    );
    for _ in 0..2 {
        let status = sluice(
            data.path(),
            &[
                "run",
                flows.path().join("a.toml").to_str().unwrap(),
                "--quiet",
            ],
        )
        .status()
        .unwrap();
        assert!(status.success());
    }
    let out = sluice(data.path(), &["runs", "--flow", "alpha", "--limit", "1"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 2, "{table}");
    let out = sluice(data.path(), &["runs", "prune", "--older-than", "30d"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 0 runs"));
    let out = sluice(data.path(), &["runs", "show", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_changed_file_is_reloaded_and_a_broken_change_keeps_the_previous_version() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let version = |v: u32| {
        flow(
            "reload",
            "* * * * * *",
            &step(
                "echo",
                &format!(r#"{{ action = "echo", version = {v} }}"#),
                "",
            ),
        )
    };
    write(flows.path(), "reload.toml", &version(1));
    let child = serve(data.path(), flows.path(), "5s");
    let outputs = |data: &Path| -> Vec<String> {
        let h = history(data);
        h.list_runs(None, 100)
            .unwrap()
            .iter()
            .filter(|r| r.status == "succeeded")
            .filter_map(|r| h.run_detail(&r.id).ok().flatten())
            .filter_map(|d| {
                d.steps
                    .first()
                    .and_then(|s| s.output.as_ref().map(|v| v.to_string()))
            })
            .collect()
    };
    wait_for(data.path(), Duration::from_secs(20), |r| {
        r.iter().any(|r| r.status == "succeeded")
    });
    write(flows.path(), "reload.toml", &version(2));
    let start = Instant::now();
    while !outputs(data.path())
        .iter()
        .any(|o| o.contains("\"version\":2"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the change was never picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken edit is reported and the previous version keeps running.
    write(
        flows.path(),
        "reload.toml",
        "name = \"reload\"\nschedule = { cron = \"* * * * * *\" }\n[[step]]\nid = \"x\"\nuses = \"nope\"\n",
    );
    let before = outputs(data.path()).len();
    let start = Instant::now();
    while outputs(data.path()).len() < before + 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the flow stopped running after a broken edit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&child, "TERM");
    let (code, stderr) = wait_exit(child, Duration::from_secs(20));
    assert_eq!(code, 0);
    assert!(
        stderr.contains("does not validate; keeping the previous version"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`nope` is not a built-in component"),
        "the reason is reported: {stderr}"
    );
    assert!(
        outputs(data.path())
            .iter()
            .take(2)
            .all(|o| o.contains("\"version\":2")),
        "newest runs use the last good version"
    );
}
