//! Flow state in the run history's store (SQLite or PostgreSQL): what a
//! run keeps from one run to the next when it is recorded.
//!
//! One [`DurableStore`] serves one run: its batches carry the run's id and,
//! under a replica's lease, the lease's fencing number, so a replica that
//! lost its flow cannot write over the next owner's state (the store
//! refuses the batch and the call that made it fails).

use std::sync::Arc;

use sluice_store::{HistoryWrite, StateBatch, StateKey, StateQuery, StateWrite, Store};

use crate::run::recorder::HistoryWriter;

use super::{Json, Recorded, StateStore, StoreError, Write};

/// A run's view of the store's flow state.
#[derive(Clone)]
pub struct DurableStore {
    store: Store,
    /// The run's fencing number when it holds its flow's lease.
    fence: Option<i64>,
    /// What writes the run's history to the same store, when the run is
    /// recorded there: items' records then go with their writes.
    history: Option<Arc<HistoryWriter>>,
}

impl DurableStore {
    pub fn new(store: Store, fence: Option<i64>) -> Self {
        Self {
            store,
            fence,
            history: None,
        }
    }

    /// The store of a run whose history `writer` writes to the same store.
    pub fn recorded_by(mut self, writer: Arc<HistoryWriter>) -> Self {
        self.history = Some(writer);
        self
    }
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(e.to_string())
}

fn key(key: impl Into<String>) -> Result<StateKey, StoreError> {
    StateKey::try_from(key.into()).map_err(failed)
}

#[async_trait::async_trait]
impl StateStore for DurableStore {
    async fn get(&self, flow: &str, k: &str) -> Result<Option<Json>, StoreError> {
        let text = self.store.state_get_text(flow, &key(k)?).await;
        Ok(text.map_err(failed)?.map(Json::stored))
    }

    async fn list(
        &self,
        flow: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Json)>, StoreError> {
        let query = StateQuery {
            prefix: prefix.to_string(),
            start_after: start_after.map(str::to_string),
            limit,
        };
        let page = self.store.state_list_text(flow, &query).await;
        let entries = page.map_err(failed)?.entries.into_iter();
        Ok(entries.map(|e| (e.key, Json::stored(e.value))).collect())
    }

    async fn apply(&self, flow: &str, run: &str, writes: Vec<Write>) -> Result<(), StoreError> {
        let batch = self.batch(run, writes, Vec::new())?;
        apply_patiently(&self.store, flow, batch, self.history.as_deref())
            .await
            .map_err(state_error)
    }

    /// The record goes with the writes when the run is recorded here.
    /// Should it be refused (its run was never recorded, say) the writes
    /// are applied alone: losing a record must not lose work.
    async fn apply_recorded(
        &self,
        flow: &str,
        run: &str,
        writes: Vec<Write>,
        record: Vec<HistoryWrite>,
    ) -> Result<Recorded, StoreError> {
        if self.history.is_none() || record.is_empty() {
            return self.apply(flow, run, writes).await.map(|()| Recorded::Not);
        }
        // Copied only so the writes can go alone should the record fail:
        // an item writes a few keys.
        let batch = self.batch(run, writes.clone(), record)?;
        match apply_patiently(&self.store, flow, batch, self.history.as_deref()).await {
            Ok(()) => Ok(Recorded::WithWrites),
            // Refused for the writes themselves (the lease moved on, a
            // value over the limit): alone they would be refused again.
            Err(
                e @ (sluice_store::StoreError::Fenced { .. } | sluice_store::StoreError::State(_)),
            ) => Err(state_error(e)),
            // The store stayed out of reach for the whole patience: alone
            // they would only wait as long again.
            Err(e) if e.is_transient() => Err(state_error(e)),
            Err(_) => self.apply(flow, run, writes).await.map(|()| Recorded::Not),
        }
    }

    async fn settle_history(&self) {
        if let Some(history) = &self.history {
            history.flush_events().await;
        }
    }
}

impl DurableStore {
    /// `writes` as the store applies them, with `history` for `run`.
    fn batch(
        &self,
        run: &str,
        writes: Vec<Write>,
        history: Vec<HistoryWrite>,
    ) -> Result<StateBatch, StoreError> {
        // Sized once: a first run's compare hands over a write per person.
        let mut batch = Vec::with_capacity(writes.len());
        for w in writes {
            batch.push(match w {
                Write::Set(k, value) => StateWrite::SetText {
                    key: key(k)?,
                    text: value.into_string(),
                },
                Write::Delete(k) => StateWrite::Delete { key: key(k)? },
            });
        }
        Ok(StateBatch {
            writes: batch,
            run_id: Some(run.to_string()),
            fence: self.fence,
            history,
        })
    }
}

/// Applies `batch`, trying it again while the store cannot be reached (a
/// database restarting, a file locked by another process) for up to
/// [`super::STORE_PATIENCE`] from the first failure: writes that record a
/// change already made in a remote system (a user created) must not be
/// lost to a blip, or the item is reported failed though it was done.
async fn apply_patiently(
    store: &sluice_store::Store,
    flow: &str,
    batch: StateBatch,
    history: Option<&HistoryWriter>,
) -> Result<(), sluice_store::StoreError> {
    let started = std::time::Instant::now();
    let mut waited = false;
    loop {
        match store.state_apply(flow, batch.clone()).await {
            Err(e) if e.is_transient() && started.elapsed() < super::STORE_PATIENCE => {
                // Told where the history's own waits are: a run that
                // stalls on its state says why.
                if let Some(history) = history {
                    history.store_unanswered(&e);
                }
                waited = true;
                tokio::time::sleep(super::STORE_RETRY_PAUSE).await;
            }
            done => {
                if let (true, Ok(()), Some(history)) = (waited, &done, history) {
                    history.store_answered();
                }
                return done;
            }
        }
    }
}

/// A store error as the run sees it: fenced when the lease moved on.
fn state_error(e: sluice_store::StoreError) -> StoreError {
    StoreError {
        fenced: matches!(e, sluice_store::StoreError::Fenced { .. }),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[tokio::test]
    async fn writes_land_in_the_store_and_read_back_in_pages() {
        let store = Store::in_memory().await.unwrap();
        let state = DurableStore::new(store.clone(), None);
        let writes = (0..5)
            .map(|i| Write::Set(format!("k{i}"), Json::of(&json!(i))))
            .chain([Write::Delete("k0".into())])
            .collect();
        state.apply("f", "r1", writes).await.unwrap();
        let value = |v: Option<Json>| v.map(|v| v.value());
        assert_eq!(value(state.get("f", "k1").await.unwrap()), Some(json!(1)));
        assert_eq!(state.get("f", "k0").await.unwrap(), None);
        assert_eq!(state.get("g", "k1").await.unwrap(), None);
        let page = state.list("f", "k", Some("k1"), 2).await.unwrap();
        let page: Vec<(String, Value)> = page.into_iter().map(|(k, v)| (k, v.value())).collect();
        assert_eq!(page, vec![("k2".into(), json!(2)), ("k3".into(), json!(3))]);
        // Another handle on the same store sees the same state.
        let other = DurableStore::new(store, None);
        assert_eq!(other.list("f", "", None, 1000).await.unwrap().len(), 4);
    }

    /// An item's record is committed with its writes; when it cannot be
    /// (its run was never recorded) the writes are kept all the same and
    /// the record is left to the recorder.
    #[tokio::test]
    async fn a_record_goes_with_its_writes_or_the_writes_go_alone() {
        use chrono::Utc;
        use sluice_store::{ItemEnd, ItemStatus, RunRef};
        let store = Store::in_memory().await.unwrap();
        let new_run = crate::run::recorder::started_by_hand("r1", "f");
        let r1 = RunRef::unfenced("r1", "f");
        store
            .write_one(&r1, HistoryWrite::StartRun(new_run))
            .await
            .unwrap();
        let record = |index| {
            vec![HistoryWrite::Item(ItemEnd {
                step: "each".into(),
                index,
                key: Some(format!("k{index}")),
                status: ItemStatus::Succeeded,
                input: json!({}).into(),
                output: None,
                error: None,
                connections: Value::Null,
                duration_ms: 1,
                attempts: None,
                ended_at: Utc::now(),
                spends_approval: None,
            })]
        };
        let set = |k: &str| vec![Write::Set(k.into(), Json::of(&json!(1)))];
        let writer = HistoryWriter::start(store.clone());
        let state = DurableStore::new(store.clone(), None).recorded_by(writer);
        let kept = state.apply_recorded("f", "r1", set("a"), record(0));
        assert_eq!(kept.await.unwrap(), Recorded::WithWrites);
        let alone = state.apply_recorded("f", "r-unknown", set("b"), record(1));
        assert_eq!(alone.await.unwrap(), Recorded::Not);
        assert!(state.get("f", "b").await.unwrap().is_some(), "kept alone");
        let detail = store.run_detail("r1").await.unwrap().unwrap();
        let keys: Vec<_> = detail.items.iter().map(|i| i.key.clone()).collect();
        assert_eq!(keys, vec![Some("k0".to_string())]);
        assert!(state.get("f", "a").await.unwrap().is_some());
    }
}
