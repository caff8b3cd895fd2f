//! What the web console reads, once per backend from one body: run pages
//! by flow and status with a cursor (a run whose process died counts as
//! interrupted), a run without its items, items failed first and
//! searched, each flow's latest run, the runs since a point, and the item
//! search behind the ledger page.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use common::Db;
use serde_json::{Value, json};
use sluice_store::browse::{ItemFilter, RunFilter};
use sluice_store::{
    HistoryWrite, ItemEnd, ItemStatus, NewRun, RunRef, RunStatus, RunSummary, StepStart, Store,
    Trigger,
};

async fn w(s: &Store, run: &str, flow: &str, write: HistoryWrite) {
    s.write_one(&RunRef::unfenced(run, flow), write)
        .await
        .unwrap();
}

async fn start(s: &Store, id: &str, flow: &str) {
    let new = NewRun {
        id: id.into(),
        flow: flow.into(),
        flow_file: "flows/x.toml".into(),
        trigger: Trigger::Schedule,
        dry_run: false,
        output_dir: String::new(),
        replica: None,
        started_at: chrono::Utc::now(),
    };
    w(s, id, flow, HistoryWrite::StartRun(new)).await;
}

async fn finish(s: &Store, id: &str, flow: &str, status: RunStatus) {
    let write = HistoryWrite::FinishRun {
        status,
        error: None,
        ended_at: chrono::Utc::now(),
    };
    w(s, id, flow, write).await;
}

fn ids(runs: &[RunSummary]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

/// Ten runs of two flows, started in id order; every third one failed.
async fn ten_runs(s: &Store) {
    for i in 0..10 {
        let id = format!("r{i:02}");
        let flow = if i % 2 == 0 { "even" } else { "odd" };
        start(s, &id, flow).await;
        let status = if i % 3 == 0 {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        finish(s, &id, flow, status).await;
        // Start times are stored to the millisecond: keep them apart.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

async fn page(
    s: &Store,
    flow: Option<&str>,
    status: Option<RunStatus>,
    after: Option<&str>,
) -> sluice_store::browse::RunPage {
    s.runs_page(&RunFilter {
        flow: flow.map(String::from),
        status,
        after: after.map(String::from),
        limit: 3,
    })
    .await
    .unwrap()
}

async fn run_pages_follow_the_cursor_newest_first_with_filters(db: Db) {
    let s = &db.store;
    ten_runs(s).await;
    let first = page(s, None, None, None).await;
    assert_eq!(ids(&first.runs), ["r09", "r08", "r07"]);
    assert!(first.more);
    let second = page(s, None, None, Some("r07")).await;
    assert_eq!(ids(&second.runs), ["r06", "r05", "r04"]);
    let last = page(s, None, None, Some("r01")).await;
    assert_eq!(ids(&last.runs), ["r00"]);
    assert!(!last.more);
    let failed_even = page(s, Some("even"), Some(RunStatus::Failed), None).await;
    assert_eq!(ids(&failed_even.runs), ["r06", "r00"]);
    assert!(!failed_even.more);
    // A cursor that names no run lists from the newest.
    let unknown = page(s, None, None, Some("nope")).await;
    assert_eq!(ids(&unknown.runs), ["r09", "r08", "r07"]);
}

async fn a_run_whose_process_died_is_listed_as_interrupted_not_running(db: Db) {
    let s = &db.store;
    start(s, "alive", "f").await;
    start(s, "dead", "f").await;
    db.sql("UPDATE runs SET process_token = 'earlier' WHERE id = 'dead'")
        .await;
    let running = page(s, None, Some(RunStatus::Running), None).await;
    assert_eq!(ids(&running.runs), ["alive"]);
    let interrupted = page(s, None, Some(RunStatus::Interrupted), None).await;
    assert_eq!(ids(&interrupted.runs), ["dead"]);
}

async fn item(s: &Store, run: &str, index: usize, status: ItemStatus, input: Value) {
    let end = ItemEnd {
        step: "each".into(),
        index,
        key: None,
        status,
        input: input.into(),
        output: None,
        error: (status == ItemStatus::Failed).then(|| "boom".to_string()),
        connections: json!({"procore": {"requests": 1, "retried": 0, "throttled": 0, "wait_ms": 0}}),
        duration_ms: 5,
        attempts: None,
        ended_at: chrono::Utc::now(),
        spends_approval: None,
    };
    w(s, run, "f", HistoryWrite::Item(end)).await;
}

async fn start_each(s: &Store, run: &str, total: usize) {
    let step = StepStart {
        step: "each".into(),
        component: "procore-create-user".into(),
        input: json!({}),
        items_total: Some(total),
        started_at: chrono::Utc::now(),
    };
    w(s, run, "f", HistoryWrite::StartStep(step)).await;
}

fn filter(search: Option<&str>, offset: usize, limit: usize) -> ItemFilter {
    ItemFilter {
        search: search.map(String::from),
        offset,
        limit,
    }
}

async fn overview_counts_items_and_item_pages_put_failures_first(db: Db) {
    let s = &db.store;
    start(s, "r1", "f").await;
    start_each(s, "r1", 5).await;
    item(
        s,
        "r1",
        0,
        ItemStatus::Succeeded,
        json!({"email": "Ann@Example.com"}),
    )
    .await;
    item(
        s,
        "r1",
        1,
        ItemStatus::Failed,
        json!({"email": "bob@example.com"}),
    )
    .await;
    item(
        s,
        "r1",
        2,
        ItemStatus::Succeeded,
        json!({"email": "cy@example.com"}),
    )
    .await;
    item(
        s,
        "r1",
        3,
        ItemStatus::Interrupted,
        json!({"email": "di@example.com"}),
    )
    .await;
    item(
        s,
        "r1",
        4,
        ItemStatus::Failed,
        json!({"email": "ed@example.com"}),
    )
    .await;
    let o = s.run_overview("r1").await.unwrap().unwrap();
    assert_eq!(o.run.status, RunStatus::Running);
    assert_eq!(o.steps.len(), 1);
    let failed = o
        .item_counts
        .iter()
        .find(|c| c.status == ItemStatus::Failed)
        .unwrap();
    assert_eq!(failed.count, 2);
    assert!(
        s.run_overview("r").await.unwrap().is_none(),
        "exact ids only"
    );
    let counts = s.item_counts(&["r1".into(), "gone".into()]).await.unwrap();
    assert_eq!(counts[0], o.item_counts);
    assert!(counts[1].is_empty());

    let page = s
        .items_page("r1", "each", &filter(None, 0, 3))
        .await
        .unwrap();
    let order: Vec<u64> = page.items.iter().map(|i| i.index).collect();
    assert_eq!(order, [1, 4, 3]);
    assert_eq!(page.matching, 5);
    let found = s
        .items_page("r1", "each", &filter(Some("ANN@example"), 0, 10))
        .await
        .unwrap();
    assert_eq!(found.matching, 1);
    assert_eq!(found.items[0].index, 0);
    let errors = s
        .items_page("r1", "each", &filter(Some("boom"), 1, 10))
        .await
        .unwrap();
    assert_eq!((errors.matching, errors.items.len()), (2, 1));
}

async fn flows_latest_runs_since_and_mentions(db: Db) {
    let s = &db.store;
    ten_runs(s).await;
    let flows = s.flows_latest().await.unwrap();
    let names: Vec<&str> = flows.iter().map(|f| f.flow.as_str()).collect();
    assert_eq!(names, ["even", "odd"]);
    assert_eq!(flows[0].last_run.id, "r08");
    assert!(flows[0].last_success.is_some());
    assert_eq!(flows[1].last_run.id, "r09");

    start(s, "r10", "f").await;
    start_each(s, "r10", 2).await;
    item(
        s,
        "r10",
        0,
        ItemStatus::Succeeded,
        json!({"email": "Ann@Example.com"}),
    )
    .await;
    item(
        s,
        "r10",
        1,
        ItemStatus::Succeeded,
        json!({"email": "bob@example.com"}),
    )
    .await;
    let found = s.items_mentioning("ann@EXAMPLE.com", 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].run_id.as_str(), found[0].item.index), ("r10", 0));
    // A person named only by the item's key (its `for_each_key`).
    let keyed = ItemEnd {
        step: "each".into(),
        index: 2,
        key: Some("Dave@Example.com".into()),
        status: ItemStatus::Succeeded,
        input: json!({"n": 1}).into(),
        output: None,
        error: None,
        connections: json!({}),
        duration_ms: 5,
        attempts: None,
        ended_at: chrono::Utc::now(),
        spends_approval: None,
    };
    w(s, "r10", "f", HistoryWrite::Item(keyed)).await;
    let found = s.items_mentioning("dave@example.COM", 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].item.key.as_deref(), Some("Dave@Example.com"));

    assert_eq!(
        ids(&s.runs_from("r08").await.unwrap()),
        ["r08", "r09", "r10"]
    );
    let some = s
        .runs_by_id(&["r01".to_string(), "gone".to_string()])
        .await
        .unwrap();
    assert_eq!(ids(&some), ["r01"]);
}

both!(
    run_pages_follow_the_cursor_newest_first_with_filters,
    a_run_whose_process_died_is_listed_as_interrupted_not_running,
    overview_counts_items_and_item_pages_put_failures_first,
    flows_latest_runs_since_and_mentions,
);
