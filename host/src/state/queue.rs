//! The state writes of a `for_each` step's items, committed together.
//!
//! An item that kept its place among the `concurrency` running items until
//! its writes were committed made every item wait for a transaction, and
//! one transaction per item made the commit, not the writes, the cost (a
//! create step of 8,000 items spent a fifth of its CPU on it). So an item
//! hands its writes to this queue when its call ends, gives its place to
//! the next item once its output and outcome are counted, and waits here
//! for them to be durable:
//!
//! - the writes of items whose calls end close together are applied as
//!   one batch, in the order the calls ended (the same key is
//!   last-writer-wins, as before). A batch waits at most [`LINGER`] for
//!   more, or none once [`MAX_BATCH`] items are queued;
//! - a read of the state by a call of the same step first waits for every
//!   write queued before it, and cuts that wait short: a call sees the
//!   writes of every item whose call ended before its read, as when each
//!   item held its place until its writes were committed;
//! - when a batch cannot be applied, each item's writes are applied alone,
//!   so only an item whose own writes are refused (or cannot be stored)
//!   fails;
//! - an item is finished only once its writes are committed (its answer
//!   comes from here), so nothing is reported durable before it is;
//! - an item's record (its row in the run history) is committed in the
//!   same transaction as its writes where the store keeps both
//!   ([`StateStore::apply_recorded`]): a crash between two commits would
//!   leave a person changed and recorded as managed, but no ledger line
//!   saying so, and the item shown as never started. The step's first
//!   records wait until the run's history so far is written, so none is
//!   ahead of its step.
//!
//! The committer is a task started by the first writes that find none at
//! work; it ends when the queue is empty.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot, watch};

use sluice_store::HistoryWrite;

use super::{Recorded, StateStore, StoreError, Write};

/// The longest a batch waits for more items' writes before it is applied.
pub const LINGER: Duration = Duration::from_millis(3);
/// The most items' writes applied in one batch.
pub const MAX_BATCH: usize = 256;

/// One item's writes, its record, and where its answer goes.
struct Queued {
    writes: Vec<Write>,
    record: Option<HistoryWrite>,
    done: oneshot::Sender<Result<Recorded, StoreError>>,
}

#[derive(Default)]
struct Pending {
    queued: Vec<Queued>,
    /// How many writes were ever queued (the reads' horizon).
    total: u64,
    /// Whether a committer task is at work.
    committing: bool,
    /// Whether a read waits: the next batch goes without lingering.
    wanted: bool,
}

/// The commit queue of one step's items, for one flow and run.
pub struct CommitQueue {
    store: Arc<dyn StateStore>,
    flow: String,
    run: String,
    pending: Mutex<Pending>,
    /// Rung when writes are queued or a read waits.
    wake: Notify,
    /// How many queued writes are answered; they are answered in order.
    answered: watch::Sender<u64>,
    /// Whether the run's history was settled before the step's first
    /// records ([`StateStore::settle_history`]).
    history_settled: AtomicBool,
}

impl CommitQueue {
    pub fn new(store: Arc<dyn StateStore>, flow: &str, run: &str) -> Arc<CommitQueue> {
        Arc::new(CommitQueue {
            store,
            flow: flow.to_string(),
            run: run.to_string(),
            pending: Mutex::default(),
            wake: Notify::new(),
            answered: watch::Sender::new(0),
            history_settled: AtomicBool::new(false),
        })
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one item's writes, and the record it has if they are kept.
    /// The returned future answers once they are committed (or could not
    /// be), saying whether the record went with them; the writes are
    /// queued when this returns, so a read that starts afterwards sees
    /// them.
    pub fn queue(
        self: &Arc<Self>,
        writes: Vec<Write>,
        record: Option<HistoryWrite>,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + use<> {
        let (done, answer) = oneshot::channel();
        let start = {
            let mut pending = self.pending();
            pending.queued.push(Queued {
                writes,
                record,
                done,
            });
            pending.total += 1;
            !std::mem::replace(&mut pending.committing, true)
        };
        if start {
            tokio::spawn(self.clone().commit_all());
        } else {
            self.wake.notify_one();
        }
        async move {
            answer.await.unwrap_or_else(|_| {
                Err(StoreError::new(
                    "the state writer stopped before the writes were committed",
                ))
            })
        }
    }

    /// Waits until every write queued before this call is answered,
    /// asking the committer not to linger meanwhile.
    pub async fn settled(&self) {
        let mut answered = self.answered.subscribe();
        let horizon = {
            let mut pending = self.pending();
            if *answered.borrow_and_update() >= pending.total {
                return;
            }
            pending.wanted = true;
            pending.total
        };
        self.wake.notify_one();
        // The sender lives as long as `self`: this cannot end early.
        let _ = answered.wait_for(|n| *n >= horizon).await;
    }

    /// Applies batches until the queue is empty.
    async fn commit_all(self: Arc<Self>) {
        let mut stopped = Stopped(Some(&self));
        loop {
            self.linger().await;
            let batch: Vec<Queued> = {
                let mut pending = self.pending();
                pending.wanted = false;
                if pending.queued.is_empty() {
                    pending.committing = false;
                    stopped.0 = None;
                    return;
                }
                let n = pending.queued.len().min(MAX_BATCH);
                pending.queued.drain(..n).collect()
            };
            let n = batch.len() as u64;
            self.commit(batch).await;
            self.answered.send_modify(|answered| *answered += n);
        }
    }

    /// Waits until a batch is worth applying: [`MAX_BATCH`] writes queued,
    /// a read waiting, or [`LINGER`] passed.
    async fn linger(&self) {
        let deadline = tokio::time::Instant::now() + LINGER;
        loop {
            {
                let pending = self.pending();
                if pending.queued.len() >= MAX_BATCH || pending.wanted {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, self.wake.notified())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Applies `batch` (with its records) in one transaction; when that
    /// fails, each item's alone, so each item gets its own answer. The
    /// step's first records wait for the run's history to be settled.
    async fn commit(&self, batch: Vec<Queued>) {
        if batch.iter().any(|q| q.record.is_some())
            && !self.history_settled.swap(true, Ordering::SeqCst)
        {
            self.store.settle_history().await;
        }
        let together = match batch.len() > 1 {
            true => {
                // Copied: should the batch fail, each item's are applied alone.
                let all: Vec<Write> = batch.iter().flat_map(|q| q.writes.clone()).collect();
                let records = batch.iter().filter_map(|q| q.record.clone()).collect();
                let applied = self
                    .store
                    .apply_recorded(&self.flow, &self.run, all, records);
                applied.await.ok()
            }
            false => None,
        };
        for queued in batch {
            let result = match together {
                Some(recorded) => Ok(recorded),
                None => {
                    let record = queued.record.into_iter().collect();
                    let applied =
                        self.store
                            .apply_recorded(&self.flow, &self.run, queued.writes, record);
                    applied.await
                }
            };
            let _ = queued.done.send(result);
        }
    }
}

/// Should the committer task end before the queue is empty (a panic, a
/// runtime shutting down), answers every queued item with an error (their
/// senders are dropped), counts every write as answered so no read waits
/// for ever, and lets the next writes start a committer.
struct Stopped<'a>(Option<&'a CommitQueue>);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if let Some(queue) = self.0 {
            let mut pending = queue.pending();
            pending.queued.clear();
            pending.committing = false;
            queue.answered.send_replace(pending.total);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::state::{Json, MemoryStore};

    /// A memory store that counts its transactions, refuses any that sets
    /// the key `bad`, and panics on one that sets `boom`.
    #[derive(Default)]
    struct Counted {
        inner: MemoryStore,
        applied: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl StateStore for Counted {
        async fn get(&self, flow: &str, key: &str) -> Result<Option<Json>, StoreError> {
            self.inner.get(flow, key).await
        }

        async fn list(
            &self,
            flow: &str,
            prefix: &str,
            start_after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<(String, Json)>, StoreError> {
            self.inner.list(flow, prefix, start_after, limit).await
        }

        async fn apply(&self, flow: &str, run: &str, writes: Vec<Write>) -> Result<(), StoreError> {
            assert!(writes.iter().all(|w| w.key() != "boom"), "the store broke");
            if writes.iter().any(|w| w.key() == "bad") {
                return Err(StoreError::new("the key `bad` is refused"));
            }
            self.applied.fetch_add(1, Ordering::SeqCst);
            self.inner.apply(flow, run, writes).await
        }
    }

    fn set(key: &str, value: i64) -> Vec<Write> {
        vec![Write::Set(key.into(), Json::of(&json!(value)))]
    }

    fn queue_on(store: &Arc<Counted>) -> Arc<CommitQueue> {
        CommitQueue::new(store.clone(), "f", "r")
    }

    #[tokio::test]
    async fn writes_queued_together_are_one_transaction_in_the_order_they_came() {
        let store = Arc::new(Counted::default());
        let queue = queue_on(&store);
        let answers: Vec<_> = (0..10).map(|i| queue.queue(set("k", i), None)).collect();
        for answer in answers {
            answer.await.unwrap();
        }
        assert_eq!(store.applied.load(Ordering::SeqCst), 1);
        assert_eq!(
            store.get("f", "k").await.unwrap(),
            Some(Json::of(&json!(9))),
            "the last queued wins"
        );
    }

    #[tokio::test]
    async fn only_the_item_whose_writes_are_refused_fails() {
        let store = Arc::new(Counted::default());
        let queue = queue_on(&store);
        let good = queue.queue(set("a", 1), None);
        let bad = queue.queue(set("bad", 2), None);
        let later = queue.queue(set("c", 3), None);
        assert!(good.await.is_ok());
        let refused = bad.await.unwrap_err();
        assert!(refused.message.contains("`bad` is refused"), "{refused}");
        assert!(later.await.is_ok());
        assert_eq!(
            store.get("f", "a").await.unwrap(),
            Some(Json::of(&json!(1)))
        );
        assert_eq!(
            store.get("f", "c").await.unwrap(),
            Some(Json::of(&json!(3)))
        );
        assert_eq!(store.get("f", "bad").await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_waits_for_the_writes_queued_before_it_without_lingering() {
        let store = Arc::new(Counted::default());
        let queue = queue_on(&store);
        let answer = queue.queue(set("k", 1), None);
        let start = tokio::time::Instant::now();
        queue.settled().await;
        assert!(
            start.elapsed() < LINGER,
            "the read cut the batch's wait short"
        );
        assert_eq!(
            store.get("f", "k").await.unwrap(),
            Some(Json::of(&json!(1)))
        );
        answer.await.unwrap();
        // Nothing queued: a read does not wait at all.
        queue.settled().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_item_waits_at_most_the_linger() {
        let store = Arc::new(Counted::default());
        let queue = queue_on(&store);
        let start = tokio::time::Instant::now();
        queue.queue(set("k", 1), None).await.unwrap();
        assert!(start.elapsed() >= LINGER);
        assert!(start.elapsed() < LINGER * 2);
    }

    #[tokio::test]
    async fn a_committer_that_stops_answers_every_item_and_read() {
        let store = Arc::new(Counted::default());
        let queue = queue_on(&store);
        let broken = queue.queue(set("boom", 1), None);
        let error = broken.await.unwrap_err();
        assert!(error.message.contains("stopped before"), "{error}");
        queue.settled().await;
        // The next writes start a committer again.
        queue.queue(set("k", 2), None).await.unwrap();
        assert_eq!(
            store.get("f", "k").await.unwrap(),
            Some(Json::of(&json!(2)))
        );
    }
}
