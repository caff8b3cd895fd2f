//! Group commit of flow state batches on SQLite.
//!
//! Each call of a `for_each` item applies its own small batch (one key per
//! created person). One transaction and one trip to a blocking thread per
//! batch made the commit, not the writes, the cost. So batches that arrive
//! while another is being written wait in a queue, and one writer applies
//! every queued batch in one transaction, each in a savepoint of its own:
//!
//! - a batch that fails (a value over the limit, a lost lease's fencing
//!   number) is rolled back alone, and only its caller gets the error;
//! - every caller is answered only after the transaction that holds its
//!   batch is committed (or with the commit's error): nothing is reported
//!   durable before it is;
//! - batches are applied in the order they arrived, so the same key is
//!   last-writer-wins, as when each had its own transaction.
//!
//! The writer is a blocking task started by the first batch that finds no
//! writer at work; each time it holds the connection it takes what is
//! queued (up to [`MAX_GROUP`]), until it finds the queue empty.

use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::{StateBatch, StoreError};

/// The most batches applied in one transaction, so one transaction stays
/// short however many callers wait.
const MAX_GROUP: usize = 256;

/// One caller's batch and where its result goes.
struct Pending {
    flow: String,
    batch: StateBatch,
    done: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// Whether a writer task is at work (it takes whatever is queued).
    writing: bool,
}

/// The queue of state batches waiting for their transaction.
#[derive(Default)]
pub(crate) struct StateCommits {
    queue: Mutex<Queue>,
}

impl StateCommits {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `batch` to `flow`'s state in the next group transaction on
    /// `conn` and waits until that transaction is committed.
    pub(crate) async fn apply(
        self: &Arc<Self>,
        conn: &Arc<Mutex<Connection>>,
        flow: String,
        batch: StateBatch,
    ) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        let start_writer = {
            let mut queue = self.queue();
            queue.pending.push(Pending { flow, batch, done });
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            let writer = Writer {
                commits: self.clone(),
                conn: conn.clone(),
                at_work: true,
            };
            tokio::task::spawn_blocking(move || writer.write_all());
        }
        result.await.unwrap_or_else(|_| {
            Err(StoreError::Task(
                "the state writer stopped before the batch was committed".into(),
            ))
        })
    }
}

/// The one writer task at work. Should it end without emptying the queue
/// (a panic, or a runtime that shuts down before it runs), dropping it
/// answers every queued caller with an error and lets the next batch
/// start a writer: no caller waits for ever.
struct Writer {
    commits: Arc<StateCommits>,
    conn: Arc<Mutex<Connection>>,
    at_work: bool,
}

impl Writer {
    /// Writes groups until the queue is empty, then lets the next batch
    /// start a writer again.
    fn write_all(mut self) {
        let conn = self.conn.clone();
        loop {
            // The group is taken once the connection is ours, so batches
            // that came while another write held it join this one.
            let mut conn = super::lock(&conn);
            let group: Vec<Pending> = {
                let mut queue = self.commits.queue();
                if queue.pending.is_empty() {
                    queue.writing = false;
                    self.at_work = false;
                    return;
                }
                let n = queue.pending.len().min(MAX_GROUP);
                queue.pending.drain(..n).collect()
            };
            commit_group(&mut conn, group);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.at_work {
            let mut queue = self.commits.queue();
            queue.pending.clear();
            queue.writing = false;
        }
    }
}

/// Applies each batch of `group` in its own savepoint of one transaction,
/// commits, and answers each caller.
fn commit_group(conn: &mut Connection, group: Vec<Pending>) {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let why = e.to_string();
            for p in group {
                let _ = p.done.send(Err(not_committed(&why)));
            }
            return;
        }
    };
    let answers: Vec<_> = group
        .into_iter()
        .map(|p| {
            let result = apply_alone(&mut tx, &p.flow, &p.batch);
            (p.done, result)
        })
        .collect();
    match tx.commit() {
        Ok(()) => {
            for (done, result) in answers {
                let _ = done.send(result);
            }
        }
        // Nothing of the group is stored: every caller gets the failure (a
        // batch that had failed on its own keeps its own error).
        Err(e) => {
            let why = e.to_string();
            for (done, result) in answers {
                let _ = done.send(result.and(Err(not_committed(&why))));
            }
        }
    }
}

fn not_committed(why: &str) -> StoreError {
    StoreError::Task(format!(
        "the state transaction could not be committed: {why}"
    ))
}

/// One batch (its state writes, then its history writes) in a savepoint:
/// kept when it applies whole, rolled back alone when it does not.
fn apply_alone(
    tx: &mut rusqlite::Transaction<'_>,
    flow: &str,
    batch: &StateBatch,
) -> Result<(), StoreError> {
    let savepoint = tx.savepoint()?;
    super::state::apply(&savepoint, flow, batch)?;
    if let Some(run) = batch.history_run(flow)? {
        super::history::apply(&savepoint, &run, &batch.history)?;
    }
    savepoint.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::{Acquired, Backend, LeaseGrant, Location, StateError, StateKey, StateWrite};

    fn batch(key: &str, value: serde_json::Value, fence: Option<i64>) -> StateBatch {
        StateBatch {
            writes: vec![StateWrite::Set {
                key: StateKey::try_from(key).unwrap(),
                value,
            }],
            run_id: Some("r1".into()),
            fence,
            history: Vec::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_batches_share_one_transaction_and_each_gets_its_own_result() {
        let backend = Arc::new(
            super::super::SqliteBackend::open(Location::SqliteMemory)
                .await
                .unwrap(),
        );
        let grant = LeaseGrant {
            flow: "f".into(),
            replica: "one".into(),
            token: "t".into(),
            host: None,
            pid: None,
            run_id: "r1".into(),
        };
        let Acquired::Granted { fence, .. } = backend
            .acquire_lease(&grant, Duration::from_secs(60))
            .await
            .unwrap()
        else {
            panic!("the lease is free");
        };
        let too_large = json!("x".repeat(crate::state::MAX_VALUE_BYTES));
        let batches = vec![
            batch("a", json!(1), Some(fence)),
            batch("b", too_large, Some(fence)),
            batch("c", json!(3), Some(fence + 1)),
            batch("d", json!(4), None),
            batch("a", json!(5), Some(fence)),
        ];
        let n = batches.len();
        // While the connection is held elsewhere, every batch queues for
        // the writer.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (locked, is_locked) = oneshot::channel();
        let conn = backend.conn.clone();
        let holder = tokio::task::spawn_blocking(move || {
            let _held = super::super::lock(&conn);
            let _ = locked.send(());
            let _ = released.recv();
        });
        is_locked.await.unwrap();
        // One at a time, each queued before the next is sent: spawned
        // tasks may reach the queue in any order, and the order is what
        // this checks.
        let mut calls = Vec::new();
        for (queued, b) in batches.into_iter().enumerate() {
            let sender = backend.clone();
            calls.push(tokio::spawn(
                async move { sender.state_apply("f", b).await },
            ));
            while backend.state_commits.queue().pending.len() <= queued {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(backend.state_commits.queue().pending.len(), n);
        release.send(()).unwrap();
        holder.await.unwrap();
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await.unwrap());
        }
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(
            matches!(
                results[1],
                Err(StoreError::State(StateError::ValueTooLarge { .. }))
            ),
            "{:?}",
            results[1]
        );
        assert!(
            matches!(results[2], Err(StoreError::Fenced { .. })),
            "{:?}",
            results[2]
        );
        assert!(results[3].is_ok() && results[4].is_ok(), "{results:?}");
        let get = |k: &str| {
            let (backend, key) = (backend.clone(), StateKey::try_from(k).unwrap());
            async move { backend.state_get("f", &key).await.unwrap() }
        };
        // In arrival order: the later write of `a` is the one kept.
        assert_eq!(get("a").await, Some(json!(5)));
        assert_eq!(get("b").await, None);
        assert_eq!(get("c").await, None);
        assert_eq!(get("d").await, Some(json!(4)));
        // The writer let go: a batch after the group starts a new one.
        backend
            .state_apply("f", batch("e", json!(6), None))
            .await
            .unwrap();
        assert_eq!(get("e").await, Some(json!(6)));
    }
}
