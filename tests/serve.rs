//! The timer host and the run history, through the `sluice` binary: runs at
//! the scheduled times, skips overlapping firings, stops gracefully on
//! SIGTERM or SIGINT (at once on a second one, or when the grace period
//! ends), reloads and picks up new files on SIGHUP, settles runs a dead
//! process left behind, leaves a readable record after a crash (and the
//! flow's lease to the next run at once), records
//! per-item request counts, and never stores a secret — nor writes one into
//! a report file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fixture;
use sluice_store::{Location, Store, StoreError};

const SECRET: &str = "hunter2-super-secret-token";

fn write(dir: &Path, name: &str, body: &str) {
    write_file(&dir.join(name), body);
}

/// Writes a flow file; a flow with a step that sends nothing gets the
/// connection its `api` role is bound to (the hostile component declares
/// that role, and every role must be bound).
fn write_file(path: &Path, body: &str) {
    let mut body = body.to_string();
    if body.contains(IDLE_GRANT) {
        body.push_str("\n[connections.idle]\nbase_url = \"https://idle.invalid\"\n");
    }
    std::fs::write(path, body).unwrap();
}

/// How a step of the hostile component that sends nothing binds its role.
const IDLE_GRANT: &str = "connections = { api = \"idle\" }";

fn flow(name: &str, cron: &str, steps: &str) -> String {
    format!(
        "name = \"{name}\"\nschedule = {{ cron = \"{cron}\", timezone = \"Europe/Paris\" }}\n{steps}"
    )
}

fn step(id: &str, with: &str, extra: &str) -> String {
    let grant = if extra.contains("connections") {
        ""
    } else {
        IDLE_GRANT
    };
    format!(
        "\n[[step]]\nid = \"{id}\"\nuses = \"{}\"\nwith = {with}\n{grant}\n{extra}\n",
        fixture("hostile").display()
    )
}

/// A loopback service that echoes the bearer token it is sent (as a
/// careless service or a gateway's error page might), and the flow text
/// that declares the secret and a connection to it: the only way a secret
/// can reach a component's output.
fn echoing_service(rt: &tokio::runtime::Runtime) -> (common::TestServer, String) {
    let server = rt.block_on(common::TestServer::start(|seen, _| {
        let auth = seen.header("authorization").unwrap_or_default();
        let token = auth.strip_prefix("Bearer ").unwrap_or(auth);
        (200, vec![], token.to_string())
    }));
    let tables = format!(
        "\n[secrets]\napi_token = {{ env = \"API_TOKEN\" }}\n[connections.api]\nbase_url = \"{}/\"\nauth.bearer = {{ token = \"${{secrets.api_token}}\" }}\n",
        server.url
    );
    (server, tables)
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
    serve_with(data, flows, &["--grace", grace])
}

fn serve_with(data: &Path, flows: &Path, args: &[&str]) -> Child {
    let mut all = vec!["serve", flows.to_str().unwrap()];
    all.extend_from_slice(args);
    sluice(data, &all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A `sluice serve` whose stderr is read as it comes, so a test can wait
/// for what the host says (such as its signal handlers being ready).
struct Serving {
    child: Child,
    said: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Serving {
    fn start(data: &Path, flows: &Path, grace: &str) -> Serving {
        let mut child = serve(data, flows, grace);
        let mut stderr = child.stderr.take().unwrap();
        let said = Arc::new(Mutex::new(String::new()));
        let sink = said.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let serving = Serving {
            child,
            said,
            reader,
        };
        // Signals sent before the handlers are in place would kill it.
        serving.wait_said("serving ", Duration::from_secs(60));
        serving
    }

    fn said(&self) -> String {
        self.said.lock().unwrap().clone()
    }

    fn wait_said(&self, part: &str, within: Duration) {
        let start = Instant::now();
        while !self.said().contains(part) {
            assert!(
                start.elapsed() < within,
                "the host never said {part:?}:\n{}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }

    /// Waits (bounded) for the exit; the exit code and all it said.
    fn exit(mut self, within: Duration) -> (i32, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < within,
                "the host did not exit within {within:?}:\n{}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let said = self.said.clone();
        self.reader.join().unwrap();
        (status.code().unwrap_or(-1), said.lock().unwrap().clone())
    }
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

/// The store of a data directory, read from these synchronous tests on a
/// small runtime of their own.
struct Records {
    rt: tokio::runtime::Runtime,
    store: Store,
}

impl Records {
    fn list_runs(
        &self,
        flow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<sluice_store::RunSummary>, StoreError> {
        self.rt.block_on(self.store.list_runs(flow, limit))
    }

    fn run_detail(&self, id: &str) -> Result<Option<sluice_store::RunDetail>, StoreError> {
        self.rt.block_on(self.store.run_detail(id))
    }
}

fn history(data: &Path) -> Records {
    try_history(data).unwrap()
}

/// Opens the history, or says why not: while `serve` is still creating and
/// migrating a fresh database, opening it beside it may be refused for a
/// moment, which a poll treats as "not yet".
fn try_history(data: &Path) -> Result<Records, StoreError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let location = Location::Sqlite(sluice_store::path_in(data));
    let store = rt.block_on(Store::open(&location))?;
    Ok(Records { rt, store })
}

/// Waits (bounded) until the history satisfies `ok`.
fn wait_for(
    data: &Path,
    within: Duration,
    ok: impl Fn(&[sluice_store::RunSummary]) -> bool,
) -> Vec<sluice_store::RunSummary> {
    let start = Instant::now();
    loop {
        let runs = match try_history(data).and_then(|h| h.list_runs(None, 100)) {
            Ok(runs) => runs,
            Err(_) if start.elapsed() <= within => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => panic!("the history could not be read: {e}"),
        };
        if ok(&runs) || start.elapsed() > within {
            return runs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until a running run has recorded an item: compiling and
/// starting up are behind it, and it is in the middle of its work.
fn wait_for_an_item(data: &Path) {
    wait_for(data, Duration::from_secs(60), |r| {
        r.iter().any(|r| {
            r.status == "running"
                && history(data)
                    .run_detail(&r.id)
                    .ok()
                    .flatten()
                    .is_some_and(|d| !d.items.is_empty())
        })
    });
}

#[test]
fn a_schedule_every_second_runs_and_records_each_run_and_a_bad_file_is_skipped() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_service, tables) = echoing_service(&rt);
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "tick.toml",
        &flow(
            "tick",
            "* * * * * *",
            &format!(
                "{tables}{}",
                step(
                    "echo",
                    r#"{ action = "get", connection = "api", url = "whoami" }"#,
                    "connections = [\"api\"]",
                )
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
        stderr.contains("loading the flows of ") && stderr.contains("compiled first"),
        "{stderr}"
    );
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
    // The service handed the component the secret; the history never stored it.
    let bytes = std::fs::read(sluice_store::path_in(data.path())).unwrap();
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
    overlapping_firings_are_skipped("text");
}

/// The JSON log's `skipped_still_running` gives the run still going as
/// its `run_id`.
#[test]
fn a_skipped_firing_names_the_run_still_going_in_the_json_log() {
    overlapping_firings_are_skipped("json");
}

/// Serves a flow whose run outlasts the next firings; the skips are
/// recorded, and each log line of one names the run still going (the
/// text in its sentence, JSON in `run_id` too) and the skip's own record.
fn overlapping_firings_are_skipped(log_format: &str) {
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
    let child = serve_with(
        data.path(),
        flows.path(),
        &["--grace", "10s", "--log-format", log_format],
    );
    let runs = wait_for(data.path(), Duration::from_secs(20), |r| {
        r.iter().any(|r| r.status == "skipped") && r.iter().any(|r| r.status == "succeeded")
    });
    signal(&child, "TERM");
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(runs.iter().any(|r| r.status == "skipped"), "{runs:?}");
    // Everything recorded, up to the stop.
    let runs = history(data.path()).list_runs(None, 10_000).unwrap();
    let skipped: Vec<_> = runs.iter().filter(|r| r.status == "skipped").collect();
    assert!(
        skipped[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("still going")
    );
    // Every skip the log reports names a run of the flow that ran, and
    // the skip's own record.
    let ran: Vec<&str> = runs
        .iter()
        .filter(|r| r.status != "skipped")
        .map(|r| r.id.as_str())
        .collect();
    let skip_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("this firing is skipped"))
        .collect();
    assert!(!skip_lines.is_empty(), "{stderr}");
    for line in &skip_lines {
        let (message, running) = if log_format == "json" {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["event"], "skipped_still_running", "{line}");
            let running = v["run_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no run_id: {line}"));
            (
                v["message"].as_str().unwrap().to_string(),
                running.to_string(),
            )
        } else {
            let running = ran
                .iter()
                .find(|id| line.contains(&format!("the previous run ({id}) was still going")))
                .unwrap_or_else(|| panic!("no run that ran is named in: {line}\n{runs:?}"));
            (line.to_string(), running.to_string())
        };
        assert!(ran.contains(&running.as_str()), "{running} ran: {runs:?}");
        assert!(
            message.contains(&format!("the previous run ({running}) was still going")),
            "{message}"
        );
        assert!(
            skipped
                .iter()
                .any(|r| message.contains(&format!("recorded as run {})", r.id))),
            "{message}\n{runs:?}"
        );
    }
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
    stop_mid_run("TERM");
}

#[test]
fn sigint_mid_run_stops_the_same_way() {
    stop_mid_run("INT");
}

fn stop_mid_run(sig: &str) {
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
    wait_for_an_item(data.path());
    signal(&child, sig);
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    let h = history(data.path());
    let runs: Vec<_> = h
        .list_runs(None, 10_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.status != "skipped")
        .collect();
    assert_eq!(runs.len(), 1, "no run started after the signal: {runs:?}");
    assert_stopped_partway(data.path(), &runs[0]);
}

/// The run of eight items was stopped partway: recorded `interrupted`, the
/// running item finished and the rest never started, and its record says
/// how far the step got (so every item that ran was written).
fn assert_stopped_partway(data: &Path, run: &sluice_store::RunSummary) {
    assert_eq!(run.status, "interrupted", "{run:?}");
    let detail = history(data).run_detail(&run.id).unwrap().unwrap();
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
    let text = show(data, &run.id, &[]);
    assert!(
        text.contains(&format!(
            "items: {finished} of 8 done, 0 failed; {} not started",
            8 - finished
        )),
        "{text}"
    );
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

/// A `sluice run` killed with SIGKILL lets go of nothing, its flow's lease
/// included; but it ran on this host and its process is gone, so the next
/// `sluice run` of the flow takes the lease over at once (not once its 30 s
/// have lapsed) and records the killed run interrupted, saying why.
#[test]
fn the_next_run_takes_over_at_once_the_lease_of_a_killed_run() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let nap = step(
        "nap",
        r#"{ action = "sleep", ms = "${params.nap}" }"#,
        "timeout = \"1m\"",
    );
    let file = flows.path().join("crash.toml");
    write_file(
        &file,
        &format!("name = \"crash\"\n[params]\nnap = 30000\n{nap}"),
    );
    let file = file.to_str().unwrap();
    let mut child = sluice(data.path(), &["run", file, "--quiet"])
        .spawn()
        .unwrap();
    wait_for(data.path(), Duration::from_secs(20), |_| {
        h_step_running(data.path(), "nap")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = history(data.path()).list_runs(None, 1).unwrap()[0].clone();
    // Refused (exit 1) until the lease lapsed, before.
    let out = sluice(data.path(), &["run", file, "--quiet", "--param", "nap=0"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "(pid {}, on this host) is gone; its run {} is recorded as interrupted by",
            child.id(),
            killed.id
        )),
        "{said}"
    );
    let runs = history(data.path()).list_runs(None, 10).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].status, "succeeded");
    assert_eq!(runs[0].fence, killed.fence.map(|f| f + 1));
    // Recorded interrupted, not only read so: it has an end, and the
    // takeover's reason.
    let d = history(data.path())
        .run_detail(&killed.id)
        .unwrap()
        .unwrap();
    assert_eq!(d.run.status, "interrupted");
    assert!(d.run.ended_at.is_some(), "{:?}", d.run);
    let error = d.run.error.unwrap();
    assert!(
        error.contains(&format!("(pid {}, on this host) ended", child.id()))
            && error.contains("which took the lease over at once"),
        "{error}"
    );
    assert_eq!(d.steps[0].status, "interrupted");
}

/// Whether a running run is in `step` (the newest runs may be skipped
/// firings, recorded while it goes).
fn h_step_running(data: &Path, step: &str) -> bool {
    let h = history(data);
    let Ok(runs) = h.list_runs(None, 50) else {
        return false;
    };
    runs.iter().filter(|r| r.status == "running").any(|run| {
        h.run_detail(&run.id).ok().flatten().is_some_and(|d| {
            d.steps
                .iter()
                .any(|s| s.step_id == step && s.status == "running")
        })
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
        stderr.contains("the new version is refused; keeping the previous version"),
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

/// Deleting a served file stops its flow at its next firing, not at the
/// next minute's rescan; the run in progress finishes.
#[test]
fn a_deleted_file_stops_its_flow_at_its_next_firing_and_its_run_finishes() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "slow.toml",
        &flow(
            "slow",
            "* * * * * *",
            &step("nap", r#"{ action = "sleep", ms = 2000 }"#, ""),
        ),
    );
    let host = Serving::start(data.path(), flows.path(), "10s");
    wait_for(data.path(), Duration::from_secs(60), |_| {
        h_step_running(data.path(), "nap")
    });
    std::fs::remove_file(flows.path().join("slow.toml")).unwrap();
    // The next firing (a second away) finds it gone; the rescan is a
    // minute away.
    host.wait_said(
        "slow.toml is gone: flow `slow` is no longer served (its current run goes on to its end)",
        Duration::from_secs(10),
    );
    let recorded = |data: &Path| history(data).list_runs(None, 100).unwrap();
    let at_retirement = recorded(data.path()).len();
    let runs = wait_for(data.path(), Duration::from_secs(20), |r| {
        r.iter().all(|r| r.status != "running")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        recorded(data.path()).len(),
        at_retirement,
        "nothing fired after the file was found gone"
    );
    host.signal("TERM");
    let (code, stderr) = host.exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("keeping the previous version"), "{stderr}");
    let ran: Vec<_> = runs.iter().filter(|r| r.status != "skipped").collect();
    assert_eq!(ran.len(), 1, "{runs:?}");
    assert_eq!(ran[0].status, "succeeded", "the run in progress finished");
}

/// `serve` and `run` given relative paths record each run's flow file by
/// its absolute path, which works from any directory; the log keeps the
/// path as given.
#[test]
fn runs_record_the_absolute_path_of_their_flow_file() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("flows")).unwrap();
    write(
        &dir.path().join("flows"),
        "tick.toml",
        &flow(
            "tick",
            "* * * * * *",
            &step("s", r#"{ action = "echo" }"#, ""),
        ),
    );
    let by_hand = sluice(data.path(), &["run", "flows/tick.toml", "--quiet"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(by_hand.status.success(), "{by_hand:?}");
    let mut child = sluice(data.path(), &["serve", "flows"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runs = wait_for(data.path(), Duration::from_secs(60), |r| {
        r.iter()
            .any(|r| r.trigger == "schedule" && r.status == "succeeded")
    });
    signal(&child, "TERM");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");
    assert!(stderr.contains("(flows/tick.toml) runs on"), "{stderr}");
    let absolute = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("flows/tick.toml");
    let h = history(data.path());
    for trigger in ["manual", "schedule"] {
        let run = runs.iter().find(|r| r.trigger == trigger).unwrap();
        let detail = h.run_detail(&run.id).unwrap().unwrap();
        assert_eq!(
            Path::new(&detail.run.flow_file),
            absolute,
            "{trigger}: {detail:?}"
        );
    }
    let id = &runs.iter().find(|r| r.trigger == "schedule").unwrap().id;
    assert!(show(data.path(), id, &[]).contains(absolute.to_str().unwrap()));
}

/// A run's history keeps when things happened, not when their records
/// were written (a batch lands all at once): each step lies inside its
/// run, and the run lasts at least as long as its steps one after another.
#[test]
fn a_runs_recorded_times_hold_its_steps() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let steps: String = (1..=6)
        .map(|n| step(&format!("nap{n}"), r#"{ action = "sleep", ms = 4 }"#, ""))
        .collect();
    write(
        flows.path(),
        "naps.toml",
        &flow("naps", "0 0 5 * * *", &steps),
    );
    let out = run_flow(data.path(), &flows.path().join("naps.toml"));
    assert!(out.status.success(), "{out:?}");
    let h = history(data.path());
    let run = &h.list_runs(None, 1).unwrap()[0];
    let detail = h.run_detail(&run.id).unwrap().unwrap();
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
    let (start, end) = (at(&run.started_at), at(run.ended_at.as_deref().unwrap()));
    let mut sum = 0;
    for s in &detail.steps {
        let (s_start, s_end) = (at(&s.started_at), at(s.ended_at.as_deref().unwrap()));
        assert!(
            start <= s_start && s_start <= s_end && s_end <= end,
            "step {} ({s_start} to {s_end}) outside its run ({start} to {end})",
            s.step_id
        );
        let took = s.duration_ms.unwrap();
        assert!(took >= 4, "{s:?}");
        sum += took;
    }
    assert_eq!(detail.steps.len(), 6);
    let run_took = run.duration_ms.unwrap();
    assert!(
        run_took >= sum,
        "the run took {run_took} ms, its steps {sum} ms: {detail:?}"
    );
}

fn contains_secret(hay: &[u8]) -> bool {
    hay.windows(SECRET.len()).any(|w| w == SECRET.as_bytes())
}

/// The history database and its write-ahead log, as bytes on disk.
fn history_bytes(data: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(sluice_store::path_in(data)).unwrap();
    bytes.extend(std::fs::read(data.join("history.sqlite-wal")).unwrap_or_default());
    bytes
}

fn run_flow(data: &Path, file: &Path) -> std::process::Output {
    sluice(data, &["run", file.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap()
}

fn show(data: &Path, id: &str, extra: &[&str]) -> String {
    let mut args = vec!["runs", "show", id];
    args.extend_from_slice(extra);
    let out = sluice(data, &args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn serve_settles_runs_a_dead_process_left_running_as_interrupted() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let steps = step(
        "nap",
        r#"{ action = "sleep", ms = 30000 }"#,
        "timeout = \"1m\"",
    );
    let crash = flows.path().join("crash.toml");
    write_file(&crash, &format!("name = \"crash\"\n{steps}"));
    let mut child = sluice(data.path(), &["run", crash.to_str().unwrap(), "--quiet"])
        .spawn()
        .unwrap();
    wait_for(data.path(), Duration::from_secs(20), |_| {
        h_step_running(data.path(), "nap")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let id = history(data.path()).list_runs(None, 1).unwrap()[0]
        .id
        .clone();
    // Read as interrupted already (its process is gone), but not settled:
    // its end is unknown.
    assert_eq!(
        history(data.path())
            .run_detail(&id)
            .unwrap()
            .unwrap()
            .run
            .ended_at,
        None
    );
    let served = tempfile::tempdir().unwrap();
    write(
        served.path(),
        "yearly.toml",
        &flow(
            "yearly",
            "0 0 0 1 1 *",
            &step("s", r#"{ action = "echo" }"#, ""),
        ),
    );
    let host = Serving::start(data.path(), served.path(), "5s");
    host.signal("TERM");
    let (code, stderr) = host.exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("recorded 1 run left unfinished by a process that stopped as interrupted"),
        "{stderr}"
    );
    let d = history(data.path()).run_detail(&id).unwrap().unwrap();
    assert_eq!(d.run.status, "interrupted");
    let error = d.run.error.unwrap();
    assert!(
        error.contains("ended before the run finished")
            && error.contains("recorded as interrupted at"),
        "{error}"
    );
    // It ended at its last sign of life: when its step started.
    assert_eq!(
        d.run.ended_at.as_deref(),
        Some(d.steps[0].started_at.as_str())
    );
    assert_eq!(d.steps[0].status, "interrupted");
}

#[test]
fn sighup_re_arms_a_changed_schedule_at_once() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let file = |cron: &str| flow("rearm", cron, &step("s", r#"{ action = "echo" }"#, ""));
    write(flows.path(), "rearm.toml", &file("0 0 0 1 1 *"));
    let host = Serving::start(data.path(), flows.path(), "5s");
    // Armed for next New Year; changed to every second and reloaded.
    write(flows.path(), "rearm.toml", &file("* * * * * *"));
    host.signal("HUP");
    let runs = wait_for(data.path(), Duration::from_secs(20), |r| {
        r.iter().filter(|r| r.status == "succeeded").count() >= 2
    });
    host.signal("TERM");
    let (code, stderr) = host.exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("reloaded"), "{stderr}");
    assert!(
        runs.iter().filter(|r| r.status == "succeeded").count() >= 2,
        "the new schedule never fired: {runs:?}\n{stderr}"
    );
}

#[test]
fn sighup_serves_a_flow_file_added_to_the_directory() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "first.toml",
        &flow(
            "first",
            "0 0 0 1 1 *",
            &step("s", r#"{ action = "echo" }"#, ""),
        ),
    );
    let host = Serving::start(data.path(), flows.path(), "5s");
    let runs = add_and_reload(&host, data.path(), flows.path(), "added");
    host.signal("TERM");
    let (code, stderr) = host.exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        runs.iter()
            .any(|r| r.flow == "added" && r.status == "succeeded"),
        "the added flow never ran: {runs:?}\n{stderr}"
    );
    assert!(stderr.contains("flow `added`"), "{stderr}");
}

/// Writes flow `name` (every second, one echo step) into the served
/// folder, sends SIGHUP, and waits (up to 20 s) until a run of it has
/// succeeded; the runs recorded by then.
fn add_and_reload(
    host: &Serving,
    data: &Path,
    flows: &Path,
    name: &str,
) -> Vec<sluice_store::RunSummary> {
    write(
        flows,
        &format!("{name}.toml"),
        &flow(
            name,
            "* * * * * *",
            &step("s", r#"{ action = "echo" }"#, ""),
        ),
    );
    host.signal("HUP");
    wait_for(data, Duration::from_secs(20), |r| {
        r.iter().any(|r| r.flow == name && r.status == "succeeded")
    })
}

/// A flow whose first step outlasts any grace period, and a step after it.
fn slow_flow(dir: &Path) {
    let steps = format!(
        "{}{}",
        step(
            "nap",
            r#"{ action = "sleep", ms = 120000 }"#,
            "timeout = \"5m\""
        ),
        step("after", r#"{ action = "echo" }"#, "")
    );
    write(dir, "slow.toml", &flow("slow", "* * * * * *", &steps));
}

fn the_interrupted_run(data: &Path) -> sluice_store::RunDetail {
    let h = history(data);
    // Every second while it runs is a skipped firing, each a record of its
    // own: on a slow machine, many more than ten.
    let runs: Vec<_> = h
        .list_runs(None, 10_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.status != "skipped")
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    h.run_detail(&runs[0].id).unwrap().unwrap()
}

#[test]
fn a_run_still_going_when_the_grace_period_ends_is_recorded_interrupted() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    slow_flow(flows.path());
    let host = Serving::start(data.path(), flows.path(), "1s");
    wait_for(data.path(), Duration::from_secs(20), |_| {
        h_step_running(data.path(), "nap")
    });
    host.signal("TERM");
    let (code, stderr) = host.exit(Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("grace period ran out"), "{stderr}");
    let d = the_interrupted_run(data.path());
    assert_eq!(d.run.status, "interrupted");
    assert!(d.run.ended_at.is_some());
    assert!(
        d.run
            .error
            .as_deref()
            .unwrap()
            .contains("grace period ran out"),
        "{:?}",
        d.run.error
    );
    let steps: Vec<_> = d
        .steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.status.as_str(), s.error.as_deref()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("nap", "interrupted", None),
            ("after", "skipped", Some("the run was interrupted")),
        ]
    );
}

#[test]
fn a_second_stop_signal_does_not_wait_for_the_grace_period() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    slow_flow(flows.path());
    // A grace period far longer than the test may take.
    let host = Serving::start(data.path(), flows.path(), "1h");
    wait_for(data.path(), Duration::from_secs(20), |_| {
        h_step_running(data.path(), "nap")
    });
    host.signal("INT");
    host.wait_said(
        "a second Ctrl-C or SIGTERM stops at once",
        Duration::from_secs(20),
    );
    host.signal("TERM");
    let (code, stderr) = host.exit(Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    let d = the_interrupted_run(data.path());
    assert_eq!(d.run.status, "interrupted");
    assert!(
        d.run
            .error
            .as_deref()
            .unwrap()
            .contains("second stop signal"),
        "{:?}",
        d.run.error
    );
    assert_eq!(d.steps[0].status, "interrupted");
}

#[test]
fn secrets_in_errors_and_failing_items_never_reach_the_history_or_a_report() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_service, tables) = echoing_service(&rt);
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    // A service echoes the secret to the component; the component's errors
    // repeat it (an unknown action is echoed back), as does the report the
    // second step writes.
    let steps = format!(
        "{tables}{}{}{}{}{}{}",
        step(
            "leak",
            r#"{ action = "get", connection = "api", url = "whoami" }"#,
            "connections = [\"api\"]"
        ),
        step(
            "report",
            r#"{ action = "echo", html = "<p>token ${steps.leak.body}</p>", actions = ["${steps.leak.body}", "echo"] }"#,
            "artifacts = { \"report.html\" = \"html\" }"
        ),
        step(
            "each",
            r#"{ action = "${item}" }"#,
            "for_each = \"${steps.report.actions}\"\non_error = \"continue\""
        ),
        step(
            "flaky",
            r#"{ action = "unavailable", code = "c-${steps.leak.body}", message = "down: ${steps.leak.body}" }"#,
            "retry = { max_attempts = 2, base_delay = \"1ms\" }\non_error = \"continue\""
        ),
        step("fail", r#"{ action = "${steps.leak.body}" }"#, ""),
        step("never", r#"{ action = "echo" }"#, ""),
    );
    let file = flows.path().join("leaky.toml");
    write_file(&file, &format!("name = \"leaky\"\n{steps}"));
    let out = run_flow(data.path(), &file);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!contains_secret(&out.stderr) && !contains_secret(&out.stdout));
    assert!(
        !contains_secret(&history_bytes(data.path())),
        "the secret reached the history database"
    );
    let h = history(data.path());
    let id = h.list_runs(None, 1).unwrap()[0].id.clone();
    let d = h.run_detail(&id).unwrap().unwrap();
    // The report was written, redacted.
    let report = std::fs::read(&d.artifacts[0].path).unwrap();
    assert!(
        !contains_secret(&report),
        "the secret reached the report file"
    );
    assert!(String::from_utf8_lossy(&report).contains("<p>token [redacted]</p>"));
    // What failed is recorded with its reason, redacted.
    let items: Vec<_> = d.items_of("each").collect();
    assert_eq!(items[0].status, "failed");
    assert!(
        items[0]
            .error
            .as_deref()
            .unwrap()
            .contains("unknown action `[redacted]`"),
        "{:?}",
        items[0].error
    );
    assert_eq!(items[1].status, "succeeded");
    assert!(d.run.error.as_deref().unwrap().contains("[redacted]"));
    let text = show(data.path(), &id, &["--items"]);
    assert!(!text.contains(SECRET), "{text}");
    for needle in [
        "FAILED",
        "items: 2 of 2 done, 1 failed",
        "unknown action `[redacted]`",
        "never",
        "why: an earlier step failed",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    let never = d.steps.iter().find(|s| s.step_id == "never").unwrap();
    assert_eq!(never.status, "skipped");
    // A retried step's failed attempts are recorded redacted too.
    let flaky = d.steps.iter().find(|s| s.step_id == "flaky").unwrap();
    let attempts = flaky.attempts.as_ref().unwrap();
    assert_eq!(attempts.made, 2);
    let first = &attempts.failed[0];
    assert_eq!(
        (first.code.as_str(), first.message.as_str()),
        ("c-[redacted]", "down: [redacted]")
    );
    assert!(
        text.contains("1. unavailable [c-[redacted]]: down: [redacted]"),
        "{text}"
    );
}

#[test]
fn runs_show_gives_each_items_own_request_counts() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Item 2's first request is throttled once; the others go through.
    let server = rt.block_on(common::TestServer::start(|seen, earlier| {
        let tries = earlier.iter().filter(|s| s.path == seen.path).count();
        if seen.path == "/things/2" && tries == 0 {
            (
                429,
                vec![("retry-after".into(), "0".into())],
                "slow down".into(),
            )
        } else {
            common::json_reply(200, serde_json::json!({"ok": true}))
        }
    }));
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let file = flows.path().join("counts.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"counts\"\n[params]\nthings = [1, 2, 3]\n[connections.api]\nbase_url = \"{}\"\n{}",
            server.url,
            step(
                "fetch",
                r#"{ action = "get", connection = "api", url = "things/${item}" }"#,
                "connections = [\"api\"]\nfor_each = \"${params.things}\""
            )
        ),
    )
    .unwrap();
    let out = run_flow(data.path(), &file);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(server.requests().len(), 4);
    let h = history(data.path());
    let id = h.list_runs(None, 1).unwrap()[0].id.clone();
    let d = h.run_detail(&id).unwrap().unwrap();
    let counts: Vec<_> = d
        .items
        .iter()
        .map(|i| {
            let c = &i.connections.as_ref().unwrap()["api"];
            (c["requests"].as_u64(), c["throttled"].as_u64())
        })
        .collect();
    assert_eq!(
        counts,
        vec![(Some(1), Some(0)), (Some(2), Some(1)), (Some(1), Some(0))]
    );
    assert_eq!(
        d.steps[0].connections.as_ref().unwrap()["api"]["requests"],
        serde_json::json!(4)
    );
    let text = show(data.path(), &id, &["--items"]);
    assert!(
        text.contains("#2 succeeded after") && text.contains("api: 2 requests (1 throttled)"),
        "{text}"
    );
    assert!(text.contains("api: 1 request\n"), "{text}");
}

#[test]
fn prune_deletes_run_folders_and_an_ambiguous_id_is_a_usage_error() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let file = flows.path().join("r.toml");
    write_file(
        &file,
        &format!(
            "name = \"r\"\n{}",
            step(
                "s",
                r#"{ action = "echo", html = "hi" }"#,
                "artifacts = { \"report.html\" = \"html\" }"
            )
        ),
    );
    for _ in 0..2 {
        assert!(run_flow(data.path(), &file).status.success());
    }
    let runs = history(data.path()).list_runs(None, 10).unwrap();
    let folders: Vec<_> = runs
        .iter()
        .map(|r| std::path::PathBuf::from(r.output_dir.clone().unwrap()))
        .collect();
    assert!(folders.iter().all(|f| f.join("report.html").is_file()));
    // Both ids start with the year: a prefix that fits both is refused like
    // an unknown id.
    let out = sluice(data.path(), &["runs", "show", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches 2 runs"));
    let out = sluice(data.path(), &["runs", "prune", "--older-than", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("like 30d"),
        "{out:?}"
    );
    // A folder outside the data directory is never deleted, whatever the
    // record says.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep"), "x").unwrap();
    let records = history(data.path());
    let elsewhere = sluice_store::HistoryWrite::Skipped {
        run: sluice_store::NewRun {
            id: "19990101T000000Z-000000".into(),
            flow: "r".into(),
            flow_file: "r.toml".into(),
            trigger: sluice_store::Trigger::Manual,
            dry_run: false,
            output_dir: outside.path().to_str().unwrap().into(),
            replica: None,
            started_at: chrono::Utc::now(),
        },
        reason: "a record pointing elsewhere".into(),
    };
    let run = sluice_store::RunRef::unfenced("19990101T000000Z-000000", "r");
    records
        .rt
        .block_on(records.store.write_one(&run, elsewhere))
        .unwrap();
    // A zero age prunes every run that has ended.
    let out = sluice(data.path(), &["runs", "prune", "--older-than", "0s"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("removed 3 runs"), "{said}");
    assert!(said.contains("and 2 run folders"), "{said}");
    assert!(folders.iter().all(|f| !f.exists()));
    assert!(outside.path().join("keep").exists());
    assert!(history(data.path()).list_runs(None, 10).unwrap().is_empty());
}

/// `sluice run` of a flow whose `items` each sleep `ms`, one at a time,
/// once its first item is recorded; with the data and flow directories.
fn a_run_under_way(items: usize, ms: u64) -> (tempfile::TempDir, tempfile::TempDir, Child) {
    a_run_under_way_with(items, ms, |_| {})
}

/// [`a_run_under_way`], its command set up by `setup` first.
fn a_run_under_way_with(
    items: usize,
    ms: u64,
    setup: impl FnOnce(&mut Command),
) -> (tempfile::TempDir, tempfile::TempDir, Child) {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let steps = step(
        "each",
        &format!(r#"{{ action = "sleep", ms = {ms}, value = "${{item}}" }}"#),
        "for_each = \"${params.items}\"\nconcurrency = 1",
    );
    let file = flows.path().join("long.toml");
    let list: Vec<String> = (1..=items).map(|i| i.to_string()).collect();
    write_file(
        &file,
        &format!(
            "name = \"long\"\n[params]\nitems = [{}]\n{steps}",
            list.join(", ")
        ),
    );
    let mut command = sluice(data.path(), &["run", file.to_str().unwrap()]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    setup(&mut command);
    let child = command.spawn().unwrap();
    wait_for_an_item(data.path());
    (data, flows, child)
}

#[test]
fn ctrl_c_stops_sluice_run_gracefully_and_its_history_is_complete() {
    // Once the run is under way, press Ctrl-C.
    let (data, _flows, child) = a_run_under_way(8, 600);
    signal(&child, "INT");
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 1, "an interrupted run is not a success: {stderr}");
    assert!(
        stderr.contains("stopping: the running step finishes"),
        "{stderr}"
    );
    // The last line says what the history says.
    assert!(stderr.contains("✗ interrupted after"), "{stderr}");
    assert!(!stderr.contains("failed after"), "{stderr}");
    let runs = history(data.path()).list_runs(None, 10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_stopped_partway(data.path(), &runs[0]);
}

/// A second Ctrl-C stops `sluice run` at once, and says so in a paragraph
/// that names what was cut off.
#[test]
fn a_second_ctrl_c_stops_sluice_run_at_once_and_says_what_was_cut_off() {
    let (_data, _flows, child) = a_run_under_way(3, 5000);
    signal(&child, "INT");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "INT");
    let (code, stderr) = wait_exit(child, Duration::from_secs(4));
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("error: the run was stopped at once by a second stop signal")
            && stderr.contains("cut off without being recorded")
            && stderr.contains("Stop once to let the running step finish"),
        "{stderr}"
    );
}

/// A closed terminal or a dropped SSH session sends SIGHUP. Its default
/// action ended `sluice run` as `kill -9` does, its running items cut off
/// unrecorded: it stops the run as Ctrl-C does, and a run whose output
/// goes to a file still says so there.
#[test]
fn a_hang_up_stops_sluice_run_gracefully() {
    let (data, _flows, mut child) = a_run_under_way_with(8, 600, hang_ups_as_default);
    assert!(child.try_wait().unwrap().is_none(), "it ended too soon");
    signal(&child, "HUP");
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("stopping: the running step finishes"),
        "{stderr}"
    );
    assert!(stderr.contains("✗ interrupted after"), "{stderr}");
    let runs = history(data.path()).list_runs(None, 10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_stopped_partway(data.path(), &runs[0]);
}

/// A run history file deleted while a run wrote to it took the run's
/// record with it, and the run said nothing: it says so, and fails.
#[test]
fn a_run_whose_history_file_was_deleted_meanwhile_says_it_is_not_recorded() {
    let (data, _flows, mut child) = a_run_under_way(8, 600);
    let file = sluice_store::path_in(data.path());
    for end in ["", "-wal", "-shm"] {
        let mut name = file.clone().into_os_string();
        name.push(end);
        let _ = std::fs::remove_file(name);
    }
    assert!(child.try_wait().unwrap().is_none(), "it ended too soon");
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("is not recorded where the next run reads: the run history's file was deleted, moved or replaced while it ran"),
        "{stderr}"
    );
    assert!(!stderr.contains("see the warning above"), "{stderr}");
}

/// `sluice serve` whose `history.sqlite` is deleted goes on recording
/// its runs in the deleted file, where no other process reads them: each
/// run's end says so, and what to do.
#[test]
fn serve_says_when_its_runs_go_to_a_deleted_history_file() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "tick.toml",
        &flow(
            "tick",
            "* * * * * *",
            &step("echo", r#"{ action = "echo" }"#, ""),
        ),
    );
    let host = Serving::start(data.path(), flows.path(), "10s");
    wait_for(data.path(), Duration::from_secs(60), |r| !r.is_empty());
    std::fs::remove_file(sluice_store::path_in(data.path())).unwrap();
    host.wait_said(
        "was recorded in a history file that is no longer at",
        Duration::from_secs(30),
    );
    assert!(
        host.said()
            .contains("restart sluice serve to use the one there now"),
        "{}",
        host.said()
    );
    host.signal("TERM");
    host.exit(Duration::from_secs(30));
}

/// Closing a terminal often sends SIGHUP twice; the second must not cut
/// the running item off as a second Ctrl-C does.
#[test]
fn a_second_hang_up_is_still_a_graceful_stop() {
    let (data, _flows, mut child) = a_run_under_way_with(8, 1500, hang_ups_as_default);
    assert!(child.try_wait().unwrap().is_none(), "it ended too soon");
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "HUP");
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("stopped at once"), "{stderr}");
    let runs = history(data.path()).list_runs(None, 10).unwrap();
    assert_stopped_partway(data.path(), &runs[0]);
}

/// Sets the child's SIGHUP to `action` (the tests themselves may run
/// under `nohup`, and a child inherits an ignored signal).
fn hang_ups(command: &mut Command, action: libc::sighandler_t) {
    use std::os::unix::process::CommandExt;
    // SAFETY: `signal` is async-signal-safe, as `pre_exec` requires.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGHUP, action);
            Ok(())
        });
    }
}

fn hang_ups_as_default(command: &mut Command) {
    hang_ups(command, libc::SIG_DFL);
}

/// A run started under `nohup` (SIGHUP ignored) was asked to outlive its
/// terminal: a hang-up leaves it running.
#[test]
fn a_run_started_with_hang_ups_ignored_goes_on_after_one() {
    let (data, _flows, mut child) =
        a_run_under_way_with(3, 600, |command| hang_ups(command, libc::SIG_IGN));
    assert!(child.try_wait().unwrap().is_none(), "it ended too soon");
    signal(&child, "HUP");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "it did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    let runs = history(data.path()).list_runs(None, 10).unwrap();
    assert_eq!(runs[0].status, "succeeded", "{:?}", runs[0]);
}

/// Two files of one flow `name` (a backup copy left in the folder, a copy
/// pointed at another tenant) would share the flow's state, lease and
/// approval plans: one is served, the other refused, naming both, until
/// the name is free.
#[test]
fn of_two_files_of_one_flow_name_only_the_first_is_served_until_the_name_is_free() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let body = |v: u32| {
        flow(
            "same",
            "* * * * * *",
            &step("echo", &format!(r#"{{ action = "echo", copy = {v} }}"#), ""),
        )
    };
    write(flows.path(), "same.toml", &body(1));
    write(flows.path(), "same-backup.toml", &body(2));
    let (first, second) = (
        flows.path().join("same-backup.toml"),
        flows.path().join("same.toml"),
    );
    let host = Serving::start(data.path(), flows.path(), "10s");
    let said = host.said();
    assert!(
        said.contains(&format!("{} is skipped:", second.display()))
            && said.contains(&format!(
                "flow `same` is already served from {}, which keeps the name (it comes first in path order); two files of one flow `name` would share its state, its lease and its approval plans. Give each flow its own `name`",
                first.display()
            )),
        "{said}"
    );
    let files_run = |data: &Path| -> Vec<String> {
        let h = history(data);
        h.list_runs(None, 1000)
            .unwrap()
            .iter()
            .filter(|r| r.status == "succeeded")
            .filter_map(|r| h.run_detail(&r.id).ok().flatten())
            .map(|d| d.run.flow_file)
            .collect()
    };
    wait_for(data.path(), Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.status == "succeeded").count() >= 2
    });
    let ran = files_run(data.path());
    assert!(
        ran.iter().all(|f| f.ends_with("same-backup.toml")),
        "{ran:?}"
    );
    // The conflict gone, the other file is served at the rescan.
    std::fs::remove_file(&first).unwrap();
    host.signal("HUP");
    host.wait_said(
        &format!("flow `same` ({}) runs", second.display()),
        Duration::from_secs(20),
    );
    let start = Instant::now();
    while !files_run(data.path())
        .iter()
        .any(|f| f.ends_with("same.toml"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the other file never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    host.signal("TERM");
    let (code, stderr) = host.exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn the_json_log_is_one_object_per_line_with_stable_fields() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let echo = step(
        "echo",
        r#"{ action = "echo", token = "${env.API_TOKEN}" }"#,
        "",
    );
    write(
        flows.path(),
        "tick.toml",
        &flow("tick", "* * * * * *", &echo),
    );
    write(
        flows.path(),
        "broken.toml",
        "name = \"broken\"\n[[step]]\nid = 1\n",
    );
    let child = serve_with(
        data.path(),
        flows.path(),
        &["--log-format", "json", "--verbose"],
    );
    wait_for(data.path(), Duration::from_secs(20), |r| {
        r.iter().any(|r| r.status == "succeeded")
    });
    signal(&child, "TERM");
    let (code, stderr) = wait_exit(child, Duration::from_secs(20));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        for field in ["time", "level", "event", "message"] {
            assert!(line[field].is_string(), "no {field}: {line}");
        }
    }
    let first = |event: &str| {
        lines
            .iter()
            .find(|l| l["event"] == event)
            .unwrap_or_else(|| panic!("no {event} in:\n{stderr}"))
            .clone()
    };
    // First what it loads (compiling can take a while), then each file.
    assert_eq!(lines[0]["event"], "loading", "{stderr}");
    assert_eq!(lines[1]["event"], "flow_rejected", "{stderr}");
    let rejected = first("flow_rejected");
    assert_eq!(rejected["level"], "WARN");
    assert!(rejected["file"].as_str().unwrap().ends_with("broken.toml"));
    assert!(
        rejected["error"].as_str().unwrap().contains("broken.toml"),
        "{rejected}"
    );
    let loaded = first("flow_loaded");
    assert_eq!(
        (&loaded["flow"], &loaded["level"]),
        (&"tick".into(), &"INFO".into())
    );
    assert!(loaded["file"].as_str().unwrap().ends_with("tick.toml"));
    let next = chrono::DateTime::parse_from_rfc3339(loaded["next_run"].as_str().unwrap());
    let paris = next.unwrap().offset().local_minus_utc();
    assert!(
        [3600, 7200].contains(&paris),
        "in the flow's zone: {loaded}"
    );
    first("serving");
    // The first run, from its firing to its end, under one run id.
    let firing = first("firing");
    let run_id = firing["run_id"].as_str().unwrap();
    assert_eq!(firing["flow"], "tick");
    let of_run = |event: &str| {
        lines
            .iter()
            .find(|l| l["event"] == event && l["run_id"] == run_id)
            .unwrap_or_else(|| panic!("no {event} for {run_id} in:\n{stderr}"))
            .clone()
    };
    let step = of_run("step_finished");
    assert_eq!(
        (&step["flow"], &step["step"], &step["status"]),
        (&"tick".into(), &"echo".into(), &"succeeded".into())
    );
    let finished = of_run("run_finished");
    assert_eq!(
        (&finished["flow"], &finished["status"], &finished["level"]),
        (&"tick".into(), &"succeeded".into(), &"INFO".into())
    );
    assert!(finished.get("error").is_none(), "{finished}");
    assert_eq!(lines.last().unwrap()["event"], "stopped", "{stderr}");
}

/// Flow state through `sluice serve` on its SQLite store: a flow fired
/// every second counts its runs in the state store; each run reads the
/// count the run before it kept, so the second firing sees the first's.
#[test]
fn a_served_flow_keeps_its_state_from_one_firing_to_the_next() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "counter.toml",
        &flow(
            "counter",
            "* * * * * *",
            &format!(
                "\n[[step]]\nid = \"count\"\nuses = \"{}\"\nwith = {{ read = [\"runs\"], increment = \"runs\" }}\n",
                fixture("contract-0-2").display()
            ),
        ),
    );
    let child = serve(data.path(), flows.path(), "5s");
    let runs = wait_for(data.path(), Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.status == "succeeded").count() >= 2
    });
    signal(&child, "TERM");
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    let h = history(data.path());
    let mut all = h.list_runs(Some("counter"), 100).unwrap();
    all.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    // Each run whose step succeeded kept its count, whatever became of
    // the run after (the stop may interrupt the last one).
    let outputs: Vec<serde_json::Value> = all
        .iter()
        .filter_map(|r| {
            let detail = h.run_detail(&r.id).unwrap()?;
            let step = detail.steps.into_iter().next()?;
            (step.status == "succeeded").then_some(step.output?)
        })
        .collect();
    assert!(outputs.len() >= 2, "{runs:?}\n{stderr}");
    for (n, output) in outputs.iter().enumerate() {
        // The run before this one kept n; this one read it and kept n + 1.
        let read = match n {
            0 => serde_json::Value::Null,
            n => serde_json::json!(n),
        };
        assert_eq!(output["read"]["runs"], read, "{output}");
        assert_eq!(output["counter"], serde_json::json!(n + 1), "{output}");
    }
    let query = sluice_store::StateQuery {
        prefix: String::new(),
        start_after: None,
        limit: 10,
    };
    let page =
        h.rt.block_on(h.store.state_list("counter", &query))
            .unwrap();
    let kept: Vec<_> = page.entries.into_iter().map(|e| (e.key, e.value)).collect();
    assert_eq!(
        kept,
        vec![("runs".to_string(), serde_json::json!(outputs.len()))]
    );
}

/// A data directory where a run's folder cannot be made (`runs` is a
/// file): a served run of a flow that writes a report fails before its
/// first step, saying why, instead of after every change, at the report.
#[test]
fn a_served_run_whose_report_cannot_be_written_runs_no_step() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("runs"), "not a folder").unwrap();
    let steps = format!(
        "{}{}",
        step("first", r#"{ action = "echo" }"#, ""),
        step(
            "report",
            r#"{ action = "echo", html = "<p>done</p>" }"#,
            "artifacts = { \"report.html\" = \"html\" }"
        ),
    );
    write(
        flows.path(),
        "tick.toml",
        &flow("tick", "* * * * * *", &steps),
    );
    let child = serve(data.path(), flows.path(), "5s");
    let runs = wait_for(data.path(), Duration::from_secs(30), |r| {
        r.iter().any(|r| r.status == "failed")
    });
    signal(&child, "TERM");
    let (code, stderr) = wait_exit(child, Duration::from_secs(20));
    assert_eq!(code, 0, "{stderr}");
    let failed = runs
        .iter()
        .find(|r| r.status == "failed")
        .unwrap_or_else(|| panic!("no run failed: {runs:?}\n{stderr}"));
    let error = failed.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("its report files go to") && error.contains("which cannot be made"),
        "{error}"
    );
    let detail = history(data.path())
        .run_detail(&failed.id)
        .unwrap()
        .unwrap();
    assert!(
        detail
            .steps
            .iter()
            .all(|s| s.status == "skipped" && s.duration_ms == Some(0)),
        "{:?}",
        detail.steps
    );
}

/// A blank replica name (an empty `--replica`, or a Kubernetes variable
/// that resolved to nothing) is refused: runs and leases are kept under it.
#[test]
fn a_blank_replica_name_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let path = flows.path().to_str().unwrap();
    for (args, env) in [
        (vec!["serve", path, "--replica", ""], None),
        (vec!["serve", path, "--replica", "  "], None),
        (vec!["serve", path], Some(" ")),
    ] {
        let mut cmd = sluice(data.path(), &args);
        if let Some(value) = env {
            cmd.env("SLUICE_REPLICA", value);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("a replica needs a name"), "{stderr}");
    }
}

/// A served flow runs the component it was checked with: a `.wasm`
/// replaced under it (half-copied, rebuilt, or one the flow would refuse)
/// is not run at the next firing, only once SIGHUP has loaded and checked
/// it, and a refused one never. It was read again at every firing.
#[test]
fn a_replaced_component_runs_only_once_reloaded_and_checked() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let component = flows.path().join("comp.wasm");
    std::fs::copy(fixture("hostile"), &component).unwrap();
    let shipped = step("echo", r#"{ action = "echo", version = 1 }"#, "")
        .replace(&fixture("hostile").display().to_string(), "comp.wasm");
    write(
        flows.path(),
        "pinned.toml",
        &flow("pinned", "* * * * * *", &shipped),
    );
    let host = Serving::start(data.path(), flows.path(), "5s");
    let succeeded = |data: &Path| -> Vec<String> {
        let h = history(data);
        (h.list_runs(None, 100).unwrap().iter())
            .filter(|r| r.status == "succeeded")
            .filter_map(|r| h.run_detail(&r.id).ok().flatten())
            .filter_map(|d| d.steps.first().and_then(|s| s.output.clone()))
            .map(|o| o.to_string())
            .collect()
    };
    let wait_runs = |n: usize| {
        let start = Instant::now();
        while succeeded(data.path()).len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the flow stopped running: {}",
                host.said()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_runs(1);
    // A component this flow would refuse: it has no `api` role to bind.
    std::fs::copy(fixture("noop"), &component).unwrap();
    let before = succeeded(data.path()).len();
    wait_runs(before + 2);
    host.signal("HUP");
    host.wait_said("the new version is refused", Duration::from_secs(20));
    let reloaded = succeeded(data.path()).len();
    wait_runs(reloaded + 2);
    host.signal("TERM");
    let (code, stderr) = host.exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("has no connection role `api`"), "{stderr}");
    let outputs = succeeded(data.path());
    assert!(
        outputs.iter().all(|o| o.contains("\"version\":1")),
        "every run ran the component the flow was checked with: {outputs:?}"
    );
}

/// A served folder with no valid scheduled flow yet (a fresh mount, a
/// file being fixed) is waited on, with a warning, and a flow written
/// into it is served once found. `serve` exited with status 2, which a
/// service manager turns into a crash loop.
#[test]
fn an_empty_folder_is_served_until_a_flow_arrives() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let host = Serving::start(data.path(), flows.path(), "5s");
    assert!(
        host.said().contains("serving 0 flows")
            && host
                .said()
                .contains("no served folder has a valid scheduled flow yet"),
        "{}",
        host.said()
    );
    let runs = add_and_reload(&host, data.path(), flows.path(), "late");
    host.signal("TERM");
    let (code, stderr) = host.exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        runs.iter().any(|r| r.status == "succeeded"),
        "the flow written later never ran: {runs:?}\n{stderr}"
    );
}

/// With `--log-format json`, what stops `serve` before it serves is a
/// JSON line too (`fatal`), and so is the compiled-component cache's
/// warning: a log shipper reads every line of it.
#[test]
fn a_refusal_at_start_is_a_json_line_in_a_json_log() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    // A flow whose component is compiled, then refused for its `with`.
    let refused = flows.path().join("refused.toml");
    std::fs::write(
        &refused,
        "name = \"refused\"\n\n[[step]]\nid = \"g\"\nuses = \"graph-groups\"\n",
    )
    .unwrap();
    // A cache others can write is not used, with a warning.
    let cache = data.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = sluice(
        data.path(),
        &["serve", refused.to_str().unwrap(), "--log-format", "json"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
        .collect();
    let event = |name: &str| {
        lines
            .iter()
            .find(|l| l["event"] == name)
            .unwrap_or_else(|| panic!("no {name} line: {stderr}"))
    };
    let fatal = event("fatal");
    assert_eq!(fatal["level"], "ERROR");
    assert_eq!(fatal["error"], "no valid scheduled flow to serve");
    assert_eq!(event("flow_rejected")["file"], refused.to_str().unwrap());
    let warning = event("warning");
    assert_eq!(warning["level"], "WARN");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("the compiled-component cache is not used"),
        "{warning}"
    );
}

/// Ctrl-C while `sluice serve` loads its flows (compiling components: a
/// minute or so on a first start) stops it before it serves anything,
/// even a process started with SIGINT ignored (in the background by a
/// script), which used to keep the signal from the handler installed
/// only once the flows had loaded, and serve on.
#[test]
fn ctrl_c_while_serve_loads_its_flows_serves_nothing() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    // Built-ins take seconds to compile into a fresh data directory.
    let mut steps = String::from("\n[connections.idle]\nbase_url = \"https://idle.invalid\"\n");
    for uses in ["graph-groups", "graph-group-members", "graph-send-mail"] {
        steps.push_str(&format!(
            "\n[[step]]\nid = \"{uses}\"\nuses = \"{uses}\"\nconnections = {{ graph = \"idle\" }}\nwhen = false\n"
        ));
    }
    write(
        flows.path(),
        "slow.toml",
        &flow("slow", "* * * * * *", &steps),
    );
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"trap '' INT; exec "$0" "$@""#,
        env!("CARGO_BIN_EXE_sluice"),
        "serve",
        flows.path().to_str().unwrap(),
    ])
    .env_clear()
    .env("SLUICE_DATA_DIR", data.path())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "INT");
    let (code, stderr) = wait_exit(child, Duration::from_secs(120));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("loading the flows of"), "{stderr}");
    assert!(
        stderr.contains("stopping: nothing is served once the flows have loaded"),
        "{stderr}"
    );
    assert!(!stderr.contains("serving 1 flow"), "{stderr}");
    assert!(
        stderr.lines().last().unwrap().ends_with("stopped"),
        "{stderr}"
    );
    assert!(history(data.path()).list_runs(None, 10).unwrap().is_empty());
}

/// `sluice run` paused past its lease, whose flow another run took over
/// meanwhile, says on resuming that its history stops where the other
/// took over, and that the history is sound: not that it must be
/// repaired, which it need not.
#[test]
fn a_run_whose_lease_was_taken_over_does_not_ask_to_repair_the_history() {
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    let steps = step(
        "each",
        r#"{ action = "sleep", ms = 400, value = "${item}" }"#,
        "for_each = \"${params.items}\"\nconcurrency = 1",
    );
    let file = flows.path().join("long.toml");
    write_file(
        &file,
        &format!("name = \"long\"\n[params]\nitems = [1, 2, 3, 4, 5, 6, 7, 8]\n{steps}"),
    );
    let file = file.to_str().unwrap();
    let first = sluice(data.path(), &["run", file, "--lease", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_an_item(data.path());
    signal(&first, "STOP");
    std::thread::sleep(Duration::from_millis(2500));
    // Its lease lapsed: another run takes the flow over and runs it.
    let second = sluice(data.path(), &["run", file, "--lease", "30s"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(0), "{said}");
    signal(&first, "CONT");
    let (code, stderr) = wait_exit(first, Duration::from_secs(60));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("its history stops where another process took the flow's lease over")
            && stderr.contains("the history itself is sound"),
        "{stderr}"
    );
    assert!(!stderr.contains("repair or move"), "{stderr}");
}
