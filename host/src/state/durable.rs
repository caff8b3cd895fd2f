//! Flow state in the run history's store (SQLite or PostgreSQL): what a
//! run keeps from one run to the next when it is recorded.
//!
//! One [`DurableStore`] serves one run: its batches carry the run's id and,
//! under a replica's lease, the lease's fencing number, so a replica that
//! lost its flow cannot write over the next owner's state (the store
//! refuses the batch and the call that made it fails).

use sluice_store::{StateBatch, StateKey, StateQuery, StateWrite, Store};

use super::{Json, StateStore, StoreError, Write};

/// A run's view of the store's flow state.
#[derive(Debug, Clone)]
pub struct DurableStore {
    store: Store,
    /// The run's fencing number when it holds its flow's lease.
    fence: Option<i64>,
}

impl DurableStore {
    pub fn new(store: Store, fence: Option<i64>) -> Self {
        Self { store, fence }
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
        let batch = StateBatch {
            writes: batch,
            run_id: Some(run.to_string()),
            fence: self.fence,
        };
        self.store
            .state_apply(flow, batch)
            .await
            .map_err(|e| StoreError {
                fenced: matches!(e, sluice_store::StoreError::Fenced { .. }),
                message: e.to_string(),
            })
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
}
