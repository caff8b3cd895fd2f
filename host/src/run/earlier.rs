//! What earlier runs of a flow did without telling it: `${run.earlier_unfinished}`.
//!
//! A run stopped part-way (Ctrl-C, SIGTERM in a deploy, `kill -9`, a lost
//! lease) or failed after some of its items had run never reaches its
//! report and mail steps, and the next run reports only what it does
//! itself: people created or deactivated by the stopped run were told to
//! nobody. So a run is given, from the run history, every run of its flow
//! since the last one that succeeded that ended interrupted or failed
//! with `for_each` items done, failed or left without a record, with how
//! many of each step's; the license sync's report tells them.

use std::collections::BTreeMap;

use serde::Serialize;
use sluice_store::browse::RunOverview;
use sluice_store::{ItemStatus, RunStatus, StepStatus, Store};

use super::context::StepFailure;

/// How many of the flow's latest runs are looked at: far more than any
/// run of stopped runs in a row.
const LOOK_BACK: usize = 50;

/// An earlier run of the flow that ended without succeeding, and what its
/// `for_each` steps' items did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EarlierRun {
    pub id: String,
    /// `interrupted` or `failed`.
    pub status: String,
    pub started_at: String,
    /// Why it ended, as its record says (already redacted when written).
    pub error: Option<String>,
    /// For each `for_each` step, how many of its items succeeded.
    pub done: BTreeMap<String, u64>,
    /// For each `for_each` step, how many of its items failed.
    pub failed: BTreeMap<String, u64>,
    /// For each `for_each` step its process did not end (killed, or its
    /// lease taken over), how many of its items have no record: not
    /// started, or under way, and maybe done.
    pub unrecorded: BTreeMap<String, u64>,
}

/// The runs of `flow` since its last run that succeeded (dry runs aside,
/// and not `current`), newest first, that ended interrupted or failed
/// with a `for_each` item done, failed, or left without a record. Empty
/// without a history. A history that cannot be read fails the run before
/// it does anything, as the approvals do: its report would otherwise say
/// nothing of what stopped runs did.
pub async fn unfinished(
    store: Option<&Store>,
    flow: &str,
    current: &str,
) -> Result<Vec<EarlierRun>, StepFailure> {
    let Some(store) = store else {
        return Ok(Vec::new());
    };
    read(store, flow, current).await.map_err(|e| {
        StepFailure::Failed(format!(
            "the earlier runs of flow `{flow}` could not be read from the run history ({e}), so nothing was run"
        ))
    })
}

async fn read(
    store: &Store,
    flow: &str,
    current: &str,
) -> Result<Vec<EarlierRun>, sluice_store::StoreError> {
    let mut earlier = Vec::new();
    for run in store.list_runs(Some(flow), LOOK_BACK).await? {
        if run.dry_run || run.id == current {
            continue;
        }
        match run.status {
            RunStatus::Succeeded => break,
            RunStatus::Interrupted | RunStatus::Failed => {}
            RunStatus::Running | RunStatus::Skipped => continue,
        }
        let Some(overview) = store.run_overview(&run.id).await? else {
            continue;
        };
        let told = told(&overview);
        if told.done.is_empty() && told.failed.is_empty() && told.unrecorded.is_empty() {
            continue;
        }
        earlier.push(EarlierRun {
            id: run.id,
            status: run.status.as_str().to_string(),
            started_at: run.started_at,
            error: run.error,
            ..told
        });
    }
    Ok(earlier)
}

/// What a run's `for_each` steps (the steps with a count of items; a
/// step's `ledger` entries are recorded as items too, and are not work
/// done) did, by item status; the other fields are left empty.
fn told(overview: &RunOverview) -> EarlierRun {
    let mut told = EarlierRun {
        id: String::new(),
        status: String::new(),
        started_at: String::new(),
        error: None,
        done: BTreeMap::new(),
        failed: BTreeMap::new(),
        unrecorded: BTreeMap::new(),
    };
    for step in &overview.steps {
        let Some(total) = step.items_total else {
            continue;
        };
        let counts = (overview.item_counts.iter()).filter(|c| c.step_id == step.step_id);
        let mut recorded = 0;
        for c in counts {
            recorded += c.count;
            let into = match c.status {
                ItemStatus::Succeeded => &mut told.done,
                ItemStatus::Failed => &mut told.failed,
                _ => continue,
            };
            *into.entry(step.step_id.clone()).or_insert(0) += c.count;
        }
        // Ended by its own process, a step's missing items never started;
        // ended by another (no error of its own), they may have run.
        let ended_by_another = step.status == StepStatus::Interrupted && step.error.is_none();
        if ended_by_another && recorded < total {
            told.unrecorded
                .insert(step.step_id.clone(), total - recorded);
        }
    }
    told
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};
    use serde_json::Value;
    use sluice_store::{HistoryJson, HistoryWrite, ItemEnd, NewRun, RunRef, StepStart, Trigger};

    use super::*;

    /// Writes run `id` of flow `f`, started `minute` minutes in, with
    /// `done` items of step `create` succeeded, ended `status`.
    async fn run(
        store: &Store,
        id: &str,
        minute: i64,
        dry_run: bool,
        done: usize,
        status: RunStatus,
    ) {
        let at = Utc.with_ymd_and_hms(2026, 12, 6, 16, 0, 0).unwrap() + Duration::minutes(minute);
        let mut writes = vec![
            HistoryWrite::StartRun(NewRun {
                id: id.into(),
                flow: "f".into(),
                flow_file: "f.toml".into(),
                trigger: Trigger::Manual,
                dry_run,
                output_dir: String::new(),
                replica: None,
                started_at: at,
            }),
            HistoryWrite::StartStep(StepStart {
                step: "create".into(),
                component: "c".into(),
                input: Value::Null,
                items_total: Some(done + 1),
                started_at: at,
            }),
        ];
        let item = |step: &str, index: usize| {
            HistoryWrite::Item(ItemEnd {
                step: step.into(),
                index,
                key: Some(format!("k{index}")),
                status: ItemStatus::Succeeded,
                input: HistoryJson::null(),
                output: None,
                error: None,
                connections: Value::Null,
                duration_ms: 1,
                attempts: None,
                ended_at: at,
                spends_approval: None,
            })
        };
        writes.extend((0..done).map(|index| item("create", index)));
        // A step's ledger entries are recorded as its items, and are no work.
        writes.push(HistoryWrite::StartStep(StepStart {
            step: "diff".into(),
            component: "c".into(),
            input: Value::Null,
            items_total: None,
            started_at: at,
        }));
        writes.push(item("diff", 0));
        writes.push(HistoryWrite::FinishRun {
            status,
            error: Some(format!("{status:?}")),
            ended_at: at,
        });
        store
            .write(&RunRef::unfenced(id, "f"), writes)
            .await
            .unwrap();
    }

    /// Newest first, back to the last success: stopped and failed runs
    /// that did something; not dry runs, runs that did nothing, the run
    /// asking, or anything before the last success.
    #[tokio::test]
    async fn the_runs_since_the_last_success_that_did_something() {
        let store = Store::in_memory().await.unwrap();
        run(&store, "r1", 1, false, 4, RunStatus::Interrupted).await;
        run(&store, "r2", 2, false, 1, RunStatus::Succeeded).await;
        run(&store, "r3", 3, false, 2, RunStatus::Interrupted).await;
        run(&store, "r4", 4, true, 0, RunStatus::Succeeded).await;
        run(&store, "r5", 5, false, 0, RunStatus::Failed).await;
        run(&store, "r6", 6, false, 3, RunStatus::Failed).await;
        let got = unfinished(Some(&store), "f", "r7").await.unwrap();
        let seen: Vec<(&str, &str, u64)> = (got.iter())
            .map(|r| (r.id.as_str(), r.status.as_str(), r.done["create"]))
            .collect();
        assert_eq!(seen, [("r6", "failed", 3), ("r3", "interrupted", 2)]);
        assert!(got.iter().all(|r| !r.done.contains_key("diff")), "{got:?}");
        // r3's create step was ended by recovery, not its process: its
        // item without a record may have been under way.
        assert_eq!(got[1].unrecorded.get("create"), Some(&1), "{got:?}");
        // The run asking is not among them, nor anything without a history.
        let got = unfinished(Some(&store), "f", "r6").await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(unfinished(None, "f", "r7").await.unwrap().is_empty());
    }
}
