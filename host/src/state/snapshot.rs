//! A flow's whole state at one moment, and a store that starts from it:
//! what `--record` keeps beside its cassettes and what `--replay` runs
//! against, so a replay sees the state the recorded run saw and keeps
//! nothing it writes.

use super::{Json, MAX_PAGE, MemoryStore, StateStore, StoreError, Write};

/// Every entry of `flow`'s state in `store`, in key order.
pub async fn read_all(
    store: &dyn StateStore,
    flow: &str,
) -> Result<Vec<(String, Json)>, StoreError> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(flow, "", after.as_deref(), MAX_PAGE).await?;
        let full = page.len() == MAX_PAGE;
        after = page.last().map(|(k, _)| k.clone());
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// A store in memory holding `entries` as `flow`'s state: a run against it
/// reads them and keeps its writes only until it ends.
pub async fn in_memory(flow: &str, entries: Vec<(String, Json)>) -> MemoryStore {
    let store = MemoryStore::default();
    let writes = entries.into_iter().map(|(k, v)| Write::Set(k, v)).collect();
    // A memory store refuses nothing.
    let _ = store.apply(flow, "", writes).await;
    store
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn every_entry_is_read_across_pages_and_starts_a_store_of_its_own() {
        let store = MemoryStore::default();
        let writes = (0..2500)
            .map(|i| Write::Set(format!("k{i:05}"), Json::of(&json!({"n": i}))))
            .collect();
        store.apply("f", "r", writes).await.unwrap();
        store
            .apply(
                "g",
                "r",
                vec![Write::Set("other".into(), Json::of(&json!(1)))],
            )
            .await
            .unwrap();
        let all = read_all(&store, "f").await.unwrap();
        assert_eq!(all.len(), 2500);
        assert_eq!(all[2499].0, "k02499");
        let copy = in_memory("f", all).await;
        assert_eq!(
            copy.get("f", "k01234").await.unwrap(),
            Some(Json::of(&json!({"n": 1234})))
        );
        copy.apply("f", "r", vec![Write::Delete("k00000".into())])
            .await
            .unwrap();
        assert_eq!(copy.get("f", "k00000").await.unwrap(), None);
        assert!(store.get("f", "k00000").await.unwrap().is_some());
    }
}
