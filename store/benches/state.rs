//! `cargo bench -p sluice-store --bench state`: what a first run of the
//! license sync costs the flow state store at 100k members. Its compare
//! step adopts 73,927 people, one key each (`managed/<address>`, a small
//! JSON record), and the host applies them as one batch, in one
//! transaction, when the step succeeds. Timed on SQLite (a file in WAL
//! mode, as `sluice run` keeps it) and on PostgreSQL (a local cluster over
//! loopback TCP): the batch of new keys (a first run), then the same keys
//! written again (a run that rewrites them). Prints the median of several
//! rounds, and the time per key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sluice_store::testing::TempPostgres;
use sluice_store::{Location, StateBatch, StateKey, StateWrite, Store};

const KEYS: usize = 73_927;
const ROUNDS: usize = 5;

/// The batch compare hands the host: as the host holds it, compact text.
fn adoptions(round: usize) -> StateBatch {
    let writes = (0..KEYS)
        .map(|i| StateWrite::SetText {
            key: StateKey::try_from(format!("managed/person{i}.{round}@contoso.com")).unwrap(),
            text: format!(
                r#"{{"procore_id":{},"origin":"adopted","status":"active","since":"2026-12-02T06:00:00Z"}}"#,
                100_000 + i
            ),
        })
        .collect();
    StateBatch {
        writes,
        run_id: Some(format!("run-{round}")),
        fence: None,
        history: Vec::new(),
    }
}

/// The median time to apply a first run's batch, and the same keys again.
async fn median(store: &Store) -> (Duration, Duration) {
    let (mut first, mut again) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let flow = format!("sync-{round}");
        for times in [&mut first, &mut again] {
            let batch = adoptions(round);
            let start = Instant::now();
            store.state_apply(&flow, batch).await.unwrap();
            times.push(start.elapsed());
        }
    }
    first.sort();
    again.sort();
    (first[ROUNDS / 2], again[ROUNDS / 2])
}

fn shown(d: Duration) -> String {
    format!(
        "{:8.1} ms ({:.2} µs a key)",
        d.as_secs_f64() * 1000.0,
        d.as_secs_f64() * 1e6 / KEYS as f64
    )
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&Location::Sqlite(dir.path().join("state.sqlite")))
        .await
        .unwrap();
    let cluster = TempPostgres::start(true);
    let url = cluster.new_database().await;
    let pg = Store::open(&Location::Postgres(url)).await.unwrap();
    println!("{KEYS} state keys in one batch, one transaction; median of {ROUNDS} rounds");
    for (name, store) in [("SQLite", &sqlite), ("PostgreSQL", &pg)] {
        let (first, again) = median(store).await;
        println!(
            "{name:<11} new keys {}   same keys again {}",
            shown(first),
            shown(again)
        );
    }
}
