//! `cargo bench -p sluice-store --bench history`: the cost of one run's
//! history writes on PostgreSQL beside SQLite, same run, same machine, one
//! bench run. The run is the license sync's shape: 6 steps, one of them a
//! `for_each` of 200 items, each write its own transaction as the host
//! writes them when nothing queues up (`one write each`), and the same run
//! with each step's writes in one transaction, as the host's writer does
//! when writes queue (`batched per step`). SQLite is a file in WAL mode
//! with `synchronous = NORMAL` (a commit survives the process crashing, not
//! the machine: no fsync per commit); PostgreSQL a local cluster over
//! loopback TCP, once with its default durability (an fsync per commit)
//! and once with `synchronous_commit = off`, the same promise SQLite makes
//! here. Prints the median of several runs for each, and the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_store::testing::TempPostgres;
use sluice_store::{
    HistoryWrite, ItemEnd, ItemStatus, Location, NewRun, RunRef, RunStatus, StepEnd, StepStart,
    StepStatus, Store, Trigger,
};

const STEPS: usize = 6;
const ITEMS: usize = 200;
const ROUNDS: usize = 7;

/// One run's writes, step by step.
fn run_writes(id: &str) -> Vec<Vec<HistoryWrite>> {
    let mut steps = vec![vec![HistoryWrite::StartRun(NewRun {
        id: id.into(),
        flow: "bench".into(),
        flow_file: "bench.toml".into(),
        trigger: Trigger::Schedule,
        dry_run: false,
        output_dir: String::new(),
        replica: Some("bench".into()),
        started_at: chrono::Utc::now(),
    })]];
    for s in 0..STEPS {
        let step = format!("step{s}");
        let items = if s == 3 { ITEMS } else { 0 };
        let mut writes = vec![HistoryWrite::StartStep(StepStart {
            step: step.clone(),
            component: "c".into(),
            input: json!({"prefixes": ["License – Microsoft"]}),
            items_total: (items > 0).then_some(items),
            started_at: chrono::Utc::now(),
        })];
        for i in 0..items {
            writes.push(HistoryWrite::Item(ItemEnd {
                step: step.clone(),
                index: i,
                status: ItemStatus::Succeeded,
                input: json!({"user": {"mail": format!("user{i}@example.com")}}).into(),
                output: Some(json!({"status": "created", "id": i}).into()),
                error: None,
                key: Some(format!("user{i}@example.com")),
                connections: json!({"procore": {"requests": 1, "retried": 0, "throttled": 0, "wait_ms": 0}}),
                duration_ms: 12,
                attempts: None,
                ended_at: chrono::Utc::now(),
                spends_approval: None,
            }));
        }
        writes.push(HistoryWrite::FinishStep(StepEnd {
            step,
            component: "c".into(),
            status: StepStatus::Succeeded,
            output: Some(json!({"count": items})),
            error: None,
            connections: json!({}),
            duration_ms: 40,
            attempts: None,
            ended_at: chrono::Utc::now(),
        }));
        steps.push(writes);
    }
    steps.push(vec![HistoryWrite::FinishRun {
        status: RunStatus::Succeeded,
        error: None,
        ended_at: chrono::Utc::now(),
    }]);
    steps
}

async fn one_run(store: &Store, id: &str, batched: bool) -> Duration {
    let run = RunRef::unfenced(id, "bench");
    let steps = run_writes(id);
    let start = Instant::now();
    for writes in steps {
        if batched {
            store.write(&run, writes).await.unwrap();
        } else {
            for w in writes {
                store.write_one(&run, w).await.unwrap();
            }
        }
    }
    start.elapsed()
}

async fn median(store: &Store, label: &str, batched: bool) -> Duration {
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        times.push(one_run(store, &format!("{label}-{batched}-{round}"), batched).await);
    }
    times.sort();
    times[ROUNDS / 2]
}

fn ms(d: Duration) -> String {
    format!("{:8.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&Location::Sqlite(dir.path().join("history.sqlite")))
        .await
        .unwrap();
    let cluster = TempPostgres::start(true);
    let url = cluster.new_database().await;
    let pg = Store::open(&Location::Postgres(url.clone())).await.unwrap();
    let relaxed = format!("{url}?options=-c%20synchronous_commit%3Doff");
    let pg_relaxed = Store::open(&Location::Postgres(relaxed)).await.unwrap();
    let writes: usize = run_writes("x").iter().map(Vec::len).sum();
    println!(
        "one run's history: {STEPS} steps, {ITEMS} items, {writes} writes; median of {ROUNDS} runs"
    );
    println!(
        "{:<18} {:>11} {:>11} {:>9} {:>13} {:>9}",
        "", "SQLite", "PG fsync", "ratio", "PG no-fsync", "ratio"
    );
    for (label, batched) in [("one write each", false), ("batched per step", true)] {
        let s = median(&sqlite, "sqlite", batched).await;
        let p = median(&pg, "pg", batched).await;
        let r = median(&pg_relaxed, "pg-relaxed", batched).await;
        let ratio = |d: Duration| d.as_secs_f64() / s.as_secs_f64();
        println!(
            "{label:<18} {} {} {:>8.1}x {}    {:>8.1}x",
            ms(s),
            ms(p),
            ratio(p),
            ms(r),
            ratio(r)
        );
    }
}
