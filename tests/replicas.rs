//! Several `sluice serve` replicas on one real PostgreSQL (a throwaway
//! cluster this test process starts), through the binary: they migrate an
//! empty database once, run every firing exactly once and never two runs
//! of a flow at once; a replica killed mid-run has its run recorded
//! interrupted by another (here, on one host, as soon as the other sees
//! its process gone; across hosts, once its lease expires), and the flow
//! goes on (a `sluice run` killed before its run wrote anything, too); a
//! replica paused past its lease and resumed cannot record anything into
//! the flow's runs. Each run's steps mark their start and end on a loopback
//! test server, whose log the test reads.
//!
//! The figures of the closing note (firings claimed and run per replica,
//! the gap between a replica's death and the next run) are printed: run
//! with `--nocapture` to see them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Seen, TestServer, fixture};
use sluice_store::testing::TempPostgres;

/// A loopback server that answers every request with `{}` and keeps them.
async fn marker_server() -> TestServer {
    TestServer::start(|_, _| {
        (
            200,
            vec![("content-type".into(), "application/json".into())],
            "{}".into(),
        )
    })
    .await
}

/// A flow firing on `cron` whose run marks its start, works for
/// `work_ms`, then marks its end.
fn flow_text(name: &str, cron: &str, server: &str, work_ms: u64) -> String {
    marked_flow(
        name,
        &format!("schedule = {{ cron = \"{cron}\" }}\n"),
        server,
        &format!("with = {{ action = \"sleep\", ms = {work_ms} }}"),
    )
}

/// A flow (`head` after its name: a schedule, params) whose run marks its
/// start at `/start/RUN_ID` on `server`, runs its `work` step (the step's
/// keys after `connections`), then marks its end at `/end/RUN_ID`.
fn marked_flow(name: &str, head: &str, server: &str, work: &str) -> String {
    let hostile = fixture("hostile");
    format!(
        r#"
name = "{name}"
{head}
[connections.marks]
base_url = "{server}"

[[step]]
id = "begin"
uses = "{hostile}"
connections = ["marks"]
with = {{ action = "get", connection = "api", url = "/start/${{run.id}}" }}

[[step]]
id = "work"
uses = "{hostile}"
connections = ["marks"]
{work}

[[step]]
id = "end"
uses = "{hostile}"
connections = ["marks"]
with = {{ action = "get", connection = "api", url = "/end/${{run.id}}" }}
"#,
        hostile = hostile.display()
    )
}

/// One `sluice serve` replica, its stderr read as it comes.
struct Replica {
    name: String,
    child: Child,
    said: Arc<Mutex<String>>,
}

impl Replica {
    fn start(name: &str, data: &Path, flows: &Path, database: &str, lease: &str) -> Replica {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .env_clear()
            .env("SLUICE_DATA_DIR", data)
            .env("SLUICE_DATABASE_URL", database)
            .args(["serve", flows.to_str().unwrap(), "--grace", "10s"])
            .args(["--replica", name, "--lease", lease])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let said = Arc::new(Mutex::new(String::new()));
        let (mut err, sink) = (child.stderr.take().unwrap(), said.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Replica {
            name: name.to_string(),
            child,
            said,
        }
    }

    fn said(&self) -> String {
        self.said.lock().unwrap().clone()
    }

    /// Waits (bounded) until the replica has said `part`.
    fn wait_said(&self, part: &str, within: Duration) {
        let start = Instant::now();
        while !self.said().contains(part) {
            assert!(
                start.elapsed() < within,
                "{} did not say {part:?} within {within:?}:\n{}",
                self.name,
                self.said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Stops it with SIGTERM and waits for it to exit.
    fn stop(self) -> String {
        self.signal("TERM");
        self.exited()
    }

    /// Waits (bounded, generously: a run's step finishes first) for it to exit.
    fn exited(mut self) -> String {
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} did not stop:\n{}",
                self.name,
                self.said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.said()
    }
}

/// Stops every replica at once (SIGTERM to all, then waits for each).
fn stop_all(replicas: Vec<Replica>) -> Vec<String> {
    for r in &replicas {
        r.signal("TERM");
    }
    replicas.into_iter().map(Replica::exited).collect()
}

/// The database under the replicas, read directly.
struct Db {
    client: tokio_postgres::Client,
    rt: tokio::runtime::Runtime,
}

impl Db {
    fn connect(url: &str) -> Db {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
        });
        Db { client, rt }
    }

    fn rows(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        self.rt.block_on(self.client.query(sql, &[])).unwrap()
    }

    /// Every run of `flow`, oldest first.
    fn runs(&self, flow: &str) -> Vec<RunRow> {
        self.rows(&format!(
            "SELECT id, replica, status, fence, error FROM runs WHERE flow = '{flow}' ORDER BY started_at"
        ))
        .iter()
        .map(|r| RunRow {
            id: r.get(0),
            replica: r.get(1),
            status: r.get(2),
            fence: r.get(3),
            error: r.get(4),
        })
        .collect()
    }

    /// Waits (bounded) until `ok` holds of `flow`'s runs; returns them.
    fn wait_runs(
        &self,
        flow: &str,
        within: Duration,
        ok: impl Fn(&[RunRow]) -> bool,
    ) -> Vec<RunRow> {
        let start = Instant::now();
        loop {
            let runs = self.runs(flow);
            if ok(&runs) {
                return runs;
            }
            assert!(
                start.elapsed() < within,
                "timed out after {within:?}; runs: {runs:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn step_status(&self, run: &str, step: &str) -> Option<String> {
        self.rows(&format!(
            "SELECT status FROM steps WHERE run_id = '{run}' AND step_id = '{step}'"
        ))
        .first()
        .map(|r| r.get(0))
    }
}

#[derive(Debug, Clone)]
struct RunRow {
    id: String,
    replica: Option<String>,
    status: String,
    fence: Option<i64>,
    error: Option<String>,
}

fn setup(
    name: &str,
    cron: &str,
    work_ms: u64,
) -> (String, TestServer, tempfile::TempDir, tempfile::TempDir) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let database = rt.block_on(TempPostgres::shared().new_database());
    let server = rt.block_on(marker_server());
    // The server's runtime lives as long as the test.
    std::mem::forget(rt);
    let (data, flows) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let text = flow_text(name, cron, &server.url, work_ms);
    std::fs::write(flows.path().join(format!("{name}.toml")), text).unwrap();
    (database, server, data, flows)
}

/// Marks on the server, by run id: `(start, end)` times.
fn marks(seen: &[Seen]) -> BTreeMap<String, (Vec<Instant>, Vec<Instant>)> {
    let mut by_run: BTreeMap<String, (Vec<Instant>, Vec<Instant>)> = BTreeMap::new();
    for s in seen {
        let mut parts = s.path.trim_start_matches('/').splitn(2, '/');
        let (Some(kind), Some(run)) = (parts.next(), parts.next()) else {
            continue;
        };
        let entry = by_run.entry(run.to_string()).or_default();
        match kind {
            "start" => entry.0.push(s.at),
            "end" => entry.1.push(s.at),
            _ => {}
        }
    }
    by_run
}

#[test]
fn three_replicas_started_at_once_migrate_once_and_run_each_firing_exactly_once() {
    let (database, server, data, flows) = setup("tick", "* * * * * *", 200);
    // A lease long enough for a loaded machine: it only matters once a
    // replica dies, and none does here.
    let replicas: Vec<Replica> = ["r1", "r2", "r3"]
        .iter()
        .map(|r| Replica::start(r, data.path(), flows.path(), &database, "10s"))
        .collect();
    for r in &replicas {
        r.wait_said(
            &format!("serving 1 flow as replica {}", r.name),
            Duration::from_secs(60),
        );
    }
    // Twenty seconds of firings, one a second, shared by three replicas.
    std::thread::sleep(Duration::from_secs(20));
    let names: Vec<String> = replicas.iter().map(|r| r.name.clone()).collect();
    let said: BTreeMap<String, String> = names.into_iter().zip(stop_all(replicas)).collect();
    let db = Db::connect(&database);

    // Migrated once: one row per migration, though three started at once.
    let versions = db.rows("SELECT version, applied_by FROM sluice_schema ORDER BY version");
    assert_eq!(
        versions.len() as i64,
        sluice_store::postgres::schema::SCHEMA_VERSION
    );

    // Every firing claimed exactly once (the key makes two impossible),
    // and no second of the window without its firing.
    let firings = db.rows(
        "SELECT extract(epoch FROM scheduled_at)::bigint, replica, run_id FROM firings
         WHERE flow = 'tick' ORDER BY scheduled_at",
    );
    let seconds: Vec<i64> = firings.iter().map(|r| r.get(0)).collect();
    assert!(
        seconds.len() >= 10,
        "too few firings: {seconds:?}\n{said:#?}"
    );
    for pair in seconds.windows(2) {
        assert_eq!(pair[1] - pair[0], 1, "a firing was lost between {pair:?}");
    }
    // Each claimed firing has exactly one run record, under its claim's id
    // and by the replica that claimed it; every record belongs to a firing.
    let runs = db.runs("tick");
    let by_id: BTreeMap<&str, &RunRow> = runs.iter().map(|r| (r.id.as_str(), r)).collect();
    assert_eq!(runs.len(), firings.len(), "{runs:#?}");
    let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    let (mut skipped, mut stopped) = (0, 0);
    for f in &firings {
        let (replica, run_id): (String, String) = (f.get(1), f.get(2));
        *claimed.entry(replica.clone()).or_default() += 1;
        let run = by_id.get(run_id.as_str()).expect("the firing's run");
        assert_eq!(run.replica.as_deref(), Some(replica.as_str()));
        match run.status.as_str() {
            "succeeded" => *ran.entry(replica).or_default() += 1,
            // A run slowed past a second by the machine: the next firing
            // is skipped, and says by whom.
            "skipped" => skipped += 1,
            // The run a replica was in when the test stopped it: its step
            // finished and nothing new started. Only its last run, and
            // only when it said it was stopping with a run going.
            "interrupted" => {
                stopped += 1;
                let last = runs
                    .iter()
                    .rfind(|r| r.replica == run.replica && r.status != "skipped")
                    .unwrap();
                let error = run.error.as_deref().unwrap_or_default();
                assert!(
                    last.id == run.id
                        && error.starts_with("the run was stopped before step `")
                        && error.ends_with('`')
                        && said[&replica].contains("stopping: waiting up to"),
                    "run {} ended interrupted, not by the stop: {error}\n{}",
                    run.id,
                    said[&replica]
                );
            }
            other => panic!("run {} ended {other}: {:?}", run.id, run.error),
        }
    }
    // The work was shared: more than one replica ran the flow.
    assert!(ran.len() >= 2, "ran: {ran:?}");
    // Never two at once: by the marks the steps left on the server, each
    // run started and ended once, and the next began after it ended.
    let marks = marks(&server.seen.lock().unwrap());
    let mut spans: Vec<(Instant, Instant, &str)> = Vec::new();
    for run in runs.iter().filter(|r| r.status == "succeeded") {
        let (starts, ends) = marks.get(&run.id).expect("marks of a run");
        assert_eq!((starts.len(), ends.len()), (1, 1), "run {}", run.id);
        spans.push((starts[0], ends[0], &run.id));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "runs {} and {} overlapped",
            pair[0].2,
            pair[1].2
        );
    }
    let figures: Vec<String> = claimed
        .iter()
        .map(|(r, n)| format!("{r}: claimed {n}, ran {}", ran.get(r).copied().unwrap_or(0)))
        .collect();
    println!(
        "FIGURES 3 replicas x 20 s, one firing a second: {} firings, {} runs, {skipped} skipped, {stopped} stopped by the test's SIGTERM; {}",
        firings.len(),
        spans.len(),
        figures.join("; ")
    );
}

/// The run of `flow` that `who` is in the middle of (its `work` step running).
fn working(db: &Db, flow: &str, within: Duration) -> RunRow {
    let runs = db.wait_runs(flow, within, |runs| {
        runs.iter().any(|r| {
            r.status == "running" && db.step_status(&r.id, "work").as_deref() == Some("running")
        })
    });
    runs.into_iter()
        .find(|r| {
            r.status == "running" && db.step_status(&r.id, "work").as_deref() == Some("running")
        })
        .unwrap()
}

#[test]
fn a_replica_killed_mid_run_is_recorded_interrupted_by_another_and_the_flow_goes_on() {
    let lease = Duration::from_secs(4);
    let (database, _server, data, flows) = setup("long", "*/2 * * * * *", 5000);
    let mut replicas: Vec<Replica> = ["a", "b"]
        .iter()
        .map(|r| Replica::start(r, data.path(), flows.path(), &database, "4s"))
        .collect();
    for r in &replicas {
        r.wait_said(
            &format!("serving 1 flow as replica {}", r.name),
            Duration::from_secs(60),
        );
    }
    let db = Db::connect(&database);
    let victim_run = working(&db, "long", Duration::from_secs(60));
    let victim = victim_run.replica.clone().unwrap();
    let at = replicas.iter().position(|r| r.name == victim).unwrap();
    let mut dead = replicas.remove(at);
    dead.signal("KILL");
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();
    let _ = dead.child.wait();
    let survivor = replicas.pop().unwrap();

    // Recorded interrupted in the database (not only shown so) by the
    // survivor (the time it took is a figure, not a test: a loaded machine
    // stretches it). Both replicas run on this host, so the survivor's next
    // firing finds the victim's process gone and takes its lease at once;
    // should a sweep see the lease expired first, it says so instead.
    let runs = db.wait_runs("long", lease + Duration::from_secs(60), |runs| {
        runs.iter()
            .any(|r| r.id == victim_run.id && r.status == "interrupted")
    });
    let interrupted_after = killed.elapsed();
    let record = runs.iter().find(|r| r.id == victim_run.id).unwrap();
    let error = record.error.clone().unwrap();
    let gone = format!(
        "the process of replica {victim} that ran it (pid {}, on this host) ended",
        dead.child.id()
    );
    let expired = format!("replica {victim} stopped renewing the flow's lease");
    let how = if error.contains(&gone) {
        "its process seen gone"
    } else {
        "its lease expired"
    };
    assert!(
        (error.contains(&gone) || error.contains(&expired))
            && error.contains(&format!(
                "recorded as interrupted by replica {}",
                survivor.name
            )),
        "{error}"
    );
    assert_eq!(
        db.step_status(&victim_run.id, "work").as_deref(),
        Some("interrupted")
    );
    // A later firing runs normally, on the survivor.
    let runs = db.wait_runs("long", Duration::from_secs(60), |runs| {
        runs.iter()
            .any(|r| r.fence > victim_run.fence && r.status == "succeeded")
    });
    let next = runs
        .iter()
        .find(|r| r.fence > victim_run.fence && r.status != "skipped")
        .unwrap();
    assert_eq!(next.replica.as_deref(), Some(survivor.name.as_str()));
    // The next run's start as recorded (this machine's clock, as here).
    let next_started: chrono::DateTime<chrono::Utc> = db.rows(&format!(
        "SELECT started_at FROM runs WHERE id = '{}'",
        next.id
    ))[0]
        .get(0);
    let gap = (next_started - killed_at).num_milliseconds() as f64 / 1000.0;
    println!(
        "FIGURES kill -9 of replica {victim} mid-run (lease {lease:?}): recorded interrupted ({how}) after {:.1} s; next run of the flow started {gap:.1} s after the death",
        interrupted_after.as_secs_f64(),
    );
    let told = format!(
        "its run {} is recorded as interrupted by {}",
        victim_run.id, survivor.name
    );
    let said = survivor.stop();
    assert!(said.contains(&told), "{said}");
}

#[test]
fn a_replica_paused_past_its_lease_cannot_record_into_the_flows_runs_when_resumed() {
    let (database, server, data, flows) = setup("paused", "*/2 * * * * *", 5000);
    let (db, stale, paused, owner) = pause_the_working_replica(&database, &data, &flows, "paused");
    // The other replica takes the flow over and starts a run of its own.
    let runs = db.wait_runs("paused", Duration::from_secs(60), |runs| {
        runs.iter()
            .any(|r| r.id == stale.id && r.status == "interrupted")
            && runs.iter().any(|r| {
                r.replica.as_deref() == Some(owner.name.as_str())
                    && r.fence > stale.fence
                    && r.status != "skipped"
            })
    });
    let taken: Vec<RunRow> = runs
        .iter()
        .filter(|r| r.replica.as_deref() == Some(owner.name.as_str()) && r.fence > stale.fence)
        .cloned()
        .collect();
    let before = snapshot(&db, &stale.id);
    // Resumed: before its next step the run asks whether its lease still
    // holds; the store says another replica took it over, so the run
    // stops there, and what it tries to record is refused.
    paused.signal("CONT");
    let lost = format!(
        "the flow's lease held under fence {} was taken over (by another replica, or by this one once it had lapsed)",
        stale.fence.unwrap()
    );
    let within = Duration::from_secs(60);
    paused.wait_said(&format!("✗ paused: {lost}; the run stops here"), within);
    paused.wait_said(
        &format!(
            "paused run {} was interrupted: the run was stopped before step `end`: {lost}",
            stale.id
        ),
        within,
    );
    paused.wait_said(
        &format!(
            "run {} is no longer recorded here (flow `paused`: {lost}, so the write for run {} was refused)",
            stale.id, stale.id
        ),
        within,
    );
    // Nothing it wrote landed: its run reads as the takeover left it, and
    // the owner's runs are the owner's.
    assert_eq!(snapshot(&db, &stale.id), before);
    assert_eq!(
        db.step_status(&stale.id, "work").as_deref(),
        Some("interrupted")
    );
    assert_eq!(db.step_status(&stale.id, "end"), None);
    // Nor did it act: its step `end` never called out.
    let marks = marks(&server.seen.lock().unwrap());
    let (_, ends) = marks.get(&stale.id).cloned().unwrap_or_default();
    assert!(ends.is_empty(), "the paused replica ran step `end`");
    for run in &taken {
        let now = db
            .runs("paused")
            .into_iter()
            .find(|r| r.id == run.id)
            .unwrap();
        assert_eq!(now.replica, run.replica);
        assert!(now.error.is_none() || now.status == "skipped", "{now:?}");
    }
    // Resumed, it is a replica like any other: a run it starts later
    // takes the lease afresh. No two runs ever shared a grant.
    let runs = db.runs("paused");
    let mut fences: Vec<i64> = runs
        .iter()
        .filter(|r| r.status != "skipped")
        .filter_map(|r| r.fence)
        .collect();
    let granted = fences.len();
    fences.sort();
    fences.dedup();
    assert_eq!(fences.len(), granted, "{runs:#?}");
    stop_all(vec![owner, paused]);
}

#[test]
fn a_replica_paused_while_its_write_waited_sends_nothing_once_resumed() {
    let (database, server, data, flows) = setup("writes", "*/2 * * * * *", 0);
    // The work step waits, then writes: the replica is paused inside the
    // wait, so its write is due the moment it resumes.
    let work = r#"with = { action = "post", connection = "api", url = "/write/${run.id}", body = "{}", sleep_ms = 5000 }"#;
    let text = marked_flow(
        "writes",
        "schedule = { cron = \"*/2 * * * * *\" }\n",
        &server.url,
        work,
    );
    std::fs::write(flows.path().join("writes.toml"), text).unwrap();
    let (db, stale, paused, owner) = pause_the_working_replica(&database, &data, &flows, "writes");
    // The other replica takes the flow over, and its own run writes.
    db.wait_runs("writes", Duration::from_secs(60), |runs| {
        runs.iter()
            .any(|r| r.id == stale.id && r.status == "interrupted")
            && runs.iter().any(|r| {
                r.replica.as_deref() == Some(owner.name.as_str())
                    && r.fence > stale.fence
                    && r.status == "succeeded"
            })
    });
    // Resumed, its write is due at once, and the renewal finds the lease
    // gone at about the same moment: whichever comes first, the write is
    // not sent, and the run ends once its step has.
    paused.signal("CONT");
    paused.wait_said(
        &format!("writes run {} was interrupted", stale.id),
        Duration::from_secs(60),
    );
    let writes: Vec<String> = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "POST")
        .map(|s| s.path.clone())
        .collect();
    assert!(
        !writes.contains(&format!("/write/{}", stale.id)),
        "the paused replica's write went out after the takeover: {writes:?}"
    );
    assert!(!writes.is_empty(), "the owner's runs wrote");
    stop_all(vec![owner, paused]);
}

/// Replicas `a` and `b` (leases of 4 s) serving `flows`; the one that runs
/// `flow` is paused (SIGSTOP) in its step `work`. The database, that run,
/// the paused replica and the other.
fn pause_the_working_replica(
    database: &str,
    data: &tempfile::TempDir,
    flows: &tempfile::TempDir,
    flow: &str,
) -> (Db, RunRow, Replica, Replica) {
    let mut replicas: Vec<Replica> = ["a", "b"]
        .iter()
        .map(|r| Replica::start(r, data.path(), flows.path(), database, "4s"))
        .collect();
    for r in &replicas {
        r.wait_said(
            &format!("serving 1 flow as replica {}", r.name),
            Duration::from_secs(60),
        );
    }
    let db = Db::connect(database);
    let stale = working(&db, flow, Duration::from_secs(60));
    let name = stale.replica.clone().unwrap();
    let at = replicas.iter().position(|r| r.name == name).unwrap();
    let paused = replicas.remove(at);
    let owner = replicas.pop().unwrap();
    paused.signal("STOP");
    (db, stale, paused, owner)
}

/// Everything recorded about one run, as text, to compare before and after.
fn snapshot(db: &Db, run: &str) -> String {
    let run_row = db.rows(&format!(
        "SELECT status, coalesce(error, ''), coalesce(ended_at::text, '') FROM runs WHERE id = '{run}'"
    ));
    let steps = db.rows(&format!(
        "SELECT step_id, status, coalesce(ended_at::text, ''), coalesce(error, '') FROM steps WHERE run_id = '{run}' ORDER BY position"
    ));
    let mut text = String::new();
    for r in run_row {
        text.push_str(&format!(
            "{} {} {}\n",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2)
        ));
    }
    for s in steps {
        text.push_str(&format!(
            "{} {} {} {}\n",
            s.get::<_, String>(0),
            s.get::<_, String>(1),
            s.get::<_, String>(2),
            s.get::<_, String>(3)
        ));
    }
    text
}

/// Writes to `file` a flow named `name` whose one step echoes: it asks
/// for a connection (the hostile fixture needs one) and sends nothing.
fn echo_flow(file: &Path, name: &str) {
    let text = format!(
        r#"
name = "{name}"

[connections.unused]
base_url = "http://127.0.0.1:9"

[[step]]
id = "s"
uses = "{}"
connections = ["unused"]
with = {{ action = "echo" }}
"#,
        fixture("hostile").display()
    );
    std::fs::write(file, text).unwrap();
}

#[test]
fn sluice_run_takes_the_flows_lease_so_a_second_job_of_a_cronjob_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let database = rt.block_on(TempPostgres::shared().new_database());
    let store = rt
        .block_on(sluice_store::Store::open(
            &sluice_store::Location::Postgres(database.clone()),
        ))
        .unwrap();
    let (data, flows) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = flows.path().join("once.toml");
    echo_flow(&file, "once");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .env_clear()
            .env("SLUICE_DATA_DIR", data.path())
            .env("SLUICE_DATABASE_URL", &database)
            .env("SLUICE_REPLICA", "job-2")
            .arg("run")
            .arg(&file)
            .args(extra)
            .output()
            .unwrap()
    };
    // The first Job's run holds the flow's lease.
    let first = sluice_store::LeaseGrant {
        flow: "once".into(),
        replica: "job-1".into(),
        token: "job-1".into(),
        host: None,
        pid: None,
        run_id: "first".into(),
    };
    let acquired = rt
        .block_on(store.acquire_lease(&first, Duration::from_secs(60)))
        .unwrap();
    let sluice_store::Acquired::Granted { fence, .. } = acquired else {
        panic!("{acquired:?}")
    };
    let out = run(&[]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    // It says who holds the lease, and when it lapses should that holder
    // have died without letting go.
    assert!(
        said.contains(
            "flow `once` was not run: replica job-1 holds the flow's lease (run first) until 20"
        ),
        "{said}"
    );
    assert!(
        said.contains(
            "its run is still going, or it stopped without letting go and the lease lapses in"
        ),
        "{said}"
    );
    // A dry run changes nothing and needs no lease.
    let out = run(&["--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Once the first has ended, the next runs under the next fencing number.
    rt.block_on(store.release_lease("once", fence)).unwrap();
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = rt.block_on(store.list_runs(Some("once"), 10)).unwrap();
    let real: Vec<_> = runs.iter().filter(|r| !r.dry_run).collect();
    assert_eq!(real.len(), 1, "{runs:?}");
    assert_eq!(real[0].status, sluice_store::RunStatus::Succeeded);
    assert_eq!(real[0].fence, Some(fence + 1));
    assert_eq!(real[0].replica.as_deref(), Some("job-2"));
}

/// A `sluice run` killed after it took the flow's lease but before its run
/// wrote anything (here its first history write waits on a lock the test
/// holds on `runs`) leaves a lease with no run behind it. Its process is
/// gone on this host, so the next `sluice run` takes the lease over at
/// once, as it does after a run killed mid-way, rather than being refused
/// until the lease lapses (30 s); nothing is recorded for the killed run.
#[test]
fn a_run_killed_before_its_first_write_does_not_keep_the_next_one_waiting() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let database = rt.block_on(TempPostgres::shared().new_database());
    // Migrated now, so the table to lock is there.
    rt.block_on(sluice_store::Store::open(
        &sluice_store::Location::Postgres(database.clone()),
    ))
    .unwrap();
    let (data, flows) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = flows.path().join("early.toml");
    echo_flow(&file, "early");
    let run = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.env_clear()
            .env("SLUICE_DATA_DIR", data.path())
            .env("SLUICE_DATABASE_URL", &database)
            .args(["run", file.to_str().unwrap(), "--quiet"]);
        cmd
    };
    // Taking the lease reads `runs` at most; writing a run waits.
    let locker = Db::connect(&database);
    locker
        .rt
        .block_on(
            locker
                .client
                .batch_execute("BEGIN; LOCK TABLE runs IN EXCLUSIVE MODE"),
        )
        .unwrap();
    let mut first = run()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = Db::connect(&database);
    let held = || db.rows("SELECT run_id FROM leases WHERE flow = 'early' AND holder IS NOT NULL");
    let deadline = Instant::now() + Duration::from_secs(30);
    while held().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first run never took the lease"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed_run: String = held()[0].get(0);
    first.kill().unwrap();
    first.wait().unwrap();
    locker
        .rt
        .block_on(locker.client.batch_execute("ROLLBACK"))
        .unwrap();
    assert!(db.runs("early").is_empty(), "the killed run wrote nothing");

    let out = run().output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "(pid {}, on this host) is gone; its run {killed_run} has no open record to close (it ended, was recovered, or never began); taken over by",
            first.id()
        )),
        "{said}"
    );
    let runs = db.runs("early");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, "succeeded");
}

/// PostgreSQL stopping for a few seconds in the middle of a run (a
/// restart, a fail-over) loses none of the run's history: the writes made
/// meanwhile are kept and written once it answers again, so the run is
/// recorded whole, `succeeded`, by the process that ran it, and exits 0.
/// They were dropped: the run exited 1 and its record lacked the items
/// that ended during the outage (and under `serve` another replica then
/// recorded a live replica's run as interrupted).
#[test]
fn a_short_store_outage_loses_none_of_a_runs_history() {
    // A cluster of its own, as this test stops it; durable, as a crash of
    // one that commits asynchronously loses its last commits (here the
    // store's tables).
    let pg = TempPostgres::start(true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let database = rt.block_on(pg.new_database());
    let server = rt.block_on(marker_server());
    let (data, flows) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = flows.path().join("outage.toml");
    // Items that sleep, and between them items that commit flow state
    // mid-call (as a create does once Procore has the user), during the
    // outage too.
    let items: Vec<String> = (1..=12)
        .map(|n| {
            let action = if n % 2 == 0 { "commit" } else { "sleep" };
            format!("{{ key = \"{n}\", action = \"{action}\" }}")
        })
        .collect();
    let text = marked_flow(
        "outage",
        &format!("[params]\nitems = [{}]\n", items.join(", ")),
        &server.url,
        "for_each = \"${params.items}\"\nwith = { action = \"${item.action}\", ms = 400 }",
    );
    std::fs::write(&file, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .env("SLUICE_DATA_DIR", data.path())
        .env("SLUICE_DATABASE_URL", &database)
        .arg("run")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !server
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.path.starts_with("/start/"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run never began"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Down for most of the 2.4 s the items take.
    std::thread::sleep(Duration::from_millis(300));
    pg.stop();
    std::thread::sleep(Duration::from_millis(1500));
    pg.start_again();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("the run history and the flow's state cannot be written at the moment")
            && said.contains("the run history and the flow's state are written again"),
        "the outage was not met, or not told: {said}"
    );
    let store = rt
        .block_on(sluice_store::Store::open(
            &sluice_store::Location::Postgres(database.clone()),
        ))
        .unwrap();
    let runs = rt.block_on(store.list_runs(Some("outage"), 10)).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0].status,
        sluice_store::RunStatus::Succeeded,
        "{runs:?}"
    );
    let detail = rt.block_on(store.run_detail(&runs[0].id)).unwrap().unwrap();
    let steps: Vec<(&str, sluice_store::StepStatus)> = (detail.steps.iter())
        .map(|s| (s.step_id.as_str(), s.status))
        .collect();
    let ok = sluice_store::StepStatus::Succeeded;
    assert_eq!(steps, [("begin", ok), ("work", ok), ("end", ok)]);
    assert_eq!(detail.items.len(), 12, "every item's record is there");
    assert!(
        (detail.items.iter()).all(|i| i.status == sluice_store::ItemStatus::Succeeded),
        "{:?}",
        detail.items
    );
}
