//! What one call of a component sees of its flow's state, and the writes
//! it leaves for the run to make durable (or, in a dry run, to show the
//! rest of the run).
//!
//! Reads look in three layers, top first: the call's own writes, the dry
//! run's [`Overlay`] (a dry run only), the store. A key deleted in an upper
//! layer is absent whatever a lower one holds. A call may commit its writes
//! before it ends ([`CallState::commit`]); those stay whatever it returns.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use super::{
    CommitQueue, Json, MAX_PAGE, MAX_WRITE_BYTES_PER_CALL, Refused, StateStore, StoreError, Writes,
    held_bytes,
};

/// The writes of a dry run's calls that succeeded: what later steps and
/// items of the same run see instead of the store. Dropped with the run.
#[derive(Debug, Default)]
pub struct Overlay {
    writes: Mutex<Writes>,
}

impl Overlay {
    /// Adds a successful call's writes; later ones win.
    pub fn apply(&self, writes: Writes) {
        let mut all = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        all.extend(writes);
    }

    fn get(&self, key: &str) -> Option<Option<Json>> {
        let all = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        all.get(key).cloned()
    }

    /// Writes whose keys start with `prefix` and sort after `start_after`.
    fn range(&self, prefix: &str, start_after: Option<&str>) -> Writes {
        let all = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        in_range(&all, prefix, start_after)
    }
}

/// One page of `list`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub entries: Vec<(String, Json)>,
    /// The last key of this page, when more may follow.
    pub next: Option<String>,
}

/// One call's view of its flow's state.
pub struct CallState {
    store: Arc<dyn StateStore>,
    flow: String,
    /// The run, named with what the call commits itself.
    run: String,
    overlay: Option<Arc<Overlay>>,
    /// The step's items' writes not yet committed: a read waits for them.
    queued: Option<Arc<CommitQueue>>,
    writes: Writes,
    /// What `writes` holds, by [`held_bytes`].
    held: usize,
    /// The most `writes` may hold.
    limit: usize,
    /// Why a commit the component asked for was fenced off: the flow's
    /// lease is another replica's, so the call ends stopped whatever the
    /// component makes of the refusal ([`Self::fenced`]).
    fenced: Option<String>,
}

impl CallState {
    /// A call of `flow`'s step in `run`; `overlay` is the run's in a dry run.
    pub fn new(
        store: Arc<dyn StateStore>,
        flow: &str,
        run: &str,
        overlay: Option<Arc<Overlay>>,
    ) -> Self {
        Self {
            store,
            flow: flow.to_string(),
            run: run.to_string(),
            overlay,
            queued: None,
            writes: Writes::new(),
            held: 0,
            limit: MAX_WRITE_BYTES_PER_CALL,
            fenced: None,
        }
    }

    /// Why a commit the component asked for was fenced off, if one was.
    pub fn fenced(&self) -> Option<&str> {
        self.fenced.as_deref()
    }

    /// The same call, whose reads first wait for the writes `queue` holds
    /// (those of the step's items whose calls ended before the read).
    pub fn after(self, queue: Option<Arc<CommitQueue>>) -> Self {
        Self {
            queued: queue,
            ..self
        }
    }

    /// The store's view, once the writes queued before now are committed.
    async fn settled(&self) -> &Arc<dyn StateStore> {
        if let Some(queue) = &self.queued {
            queue.settled().await;
        }
        &self.store
    }

    /// The same call with a smaller memory limit for its writes.
    #[cfg(test)]
    fn with_limit(self, limit: usize) -> Self {
        Self { limit, ..self }
    }

    /// The value under `key` as this call sees it, as text.
    pub async fn get(&self, key: &str) -> Result<Option<Json>, StoreError> {
        if let Some(value) = self.writes.get(key) {
            return Ok(value.clone());
        }
        if let Some(value) = self.overlay.as_ref().and_then(|o| o.get(key)) {
            return Ok(value);
        }
        self.settled().await.get(&self.flow, key).await
    }

    pub fn set(&mut self, key: String, value: Json) -> Result<(), Refused> {
        self.write(key, Some(value))
    }

    pub fn delete(&mut self, key: String) -> Result<(), Refused> {
        self.write(key, None)
    }

    /// Buffers a write, refused when the call's writes would hold more
    /// than its limit ([`MAX_WRITE_BYTES_PER_CALL`]; a write over the same key
    /// replaces what it held).
    fn write(&mut self, key: String, value: Option<Json>) -> Result<(), Refused> {
        let before = self
            .writes
            .get(&key)
            .map_or(0, |old| held_bytes(&key, old.as_ref()));
        let held = self.held - before + held_bytes(&key, value.as_ref());
        if held > self.limit {
            return Err(Refused::TooManyWrites);
        }
        self.held = held;
        self.writes.insert(key, value);
        Ok(())
    }

    /// Makes the writes buffered so far durable now, in one transaction,
    /// whatever the call returns later: the record of a change made in
    /// another system, kept before the call's next request. In a dry run
    /// (an overlay) nothing is stored and the writes stay buffered, as
    /// they would have without the commit. When the store refuses, the
    /// writes stay buffered too, for the call's end.
    pub async fn commit(&mut self) -> Result<(), StoreError> {
        if self.overlay.is_some() || self.writes.is_empty() {
            return Ok(());
        }
        // Writes of the step's items queued before this one land first, so
        // last-writer-wins still follows the order the writes were made.
        self.settled().await;
        // Copied: should the store refuse, they stay the call's.
        let writes = super::batch(self.writes.clone());
        if let Err(e) = self.store.apply(&self.flow, &self.run, writes).await {
            if e.fenced {
                self.fenced = Some(e.message.clone());
            }
            return Err(e);
        }
        self.writes.clear();
        self.held = 0;
        Ok(())
    }

    /// Up to `limit` entries (0 or more than [`MAX_PAGE`]: that many) whose
    /// keys start with `prefix`, after `start_after`, all layers merged.
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = if limit == 0 {
            MAX_PAGE
        } else {
            limit.min(MAX_PAGE)
        };
        let mut upper = self
            .overlay
            .as_ref()
            .map(|o| o.range(prefix, start_after))
            .unwrap_or_default();
        upper.extend(in_range(&self.writes, prefix, start_after));
        // Each key deleted above may hide one of the store's: ask for that
        // many more (within a store's page), so `limit` survivors are there
        // if the store has them.
        let deleted = upper.values().filter(|v| v.is_none()).count();
        let asked = (limit + deleted).min(MAX_PAGE);
        let stored = self
            .settled()
            .await
            .list(&self.flow, prefix, start_after, asked)
            .await?;
        // A full page may have more after it: nothing past its last key is
        // known to come next.
        let horizon = (stored.len() == asked).then(|| stored.last().map(|(k, _)| k.clone()));
        let mut merged: BTreeMap<String, Json> = stored
            .into_iter()
            .filter(|(k, _)| !upper.contains_key(k))
            .collect();
        merged.extend(upper.into_iter().filter_map(|(k, v)| Some((k, v?))));
        if let Some(Some(last)) = &horizon {
            merged.retain(|k, _| k <= last);
        }
        let more = horizon.is_some() || merged.len() > limit;
        let entries: Vec<(String, Json)> = merged.into_iter().take(limit).collect();
        let next = entries.last().map(|(k, _)| k.clone()).filter(|_| more);
        Ok(Page { entries, next })
    }

    /// The writes the call made, for the run to keep if it succeeded.
    pub fn into_writes(self) -> Writes {
        self.writes
    }
}

/// The entries of `writes` whose keys start with `prefix`, after `start_after`.
fn in_range(writes: &Writes, prefix: &str, start_after: Option<&str>) -> Writes {
    let lower = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after.to_string()),
        _ => Bound::Included(prefix.to_string()),
    };
    writes
        .range((lower, Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{MemoryStore, Write, held_bytes};
    use super::*;
    use serde_json::{Value, json};

    async fn store(entries: &[(&str, Value)]) -> Arc<dyn StateStore> {
        let store = MemoryStore::default();
        let writes: Vec<Write> = entries
            .iter()
            .map(|(k, v)| Write::Set(k.to_string(), Json::of(v)))
            .collect();
        store.apply("f", "r", writes).await.unwrap();
        Arc::new(store)
    }

    fn keys(page: &Page) -> Vec<&str> {
        page.entries.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[tokio::test]
    async fn a_call_sees_its_own_writes_over_the_store() {
        let mut call = CallState::new(
            store(&[("a", json!(1)), ("b", json!(2))]).await,
            "f",
            "r",
            None,
        );
        call.set("a".into(), Json::of(&json!(10))).unwrap();
        call.delete("b".into()).unwrap();
        assert_eq!(call.get("a").await.unwrap(), Some(Json::of(&json!(10))));
        assert_eq!(call.get("b").await.unwrap(), None);
        let other_flow = CallState::new(store(&[("a", json!(1))]).await, "g", "r", None);
        assert_eq!(
            other_flow.get("a").await.unwrap(),
            None,
            "scoped to the flow"
        );
    }

    #[tokio::test]
    async fn pages_merge_every_layer_and_say_when_more_may_follow() {
        let stored: Vec<(String, Value)> = (0..10).map(|i| (format!("k{i}"), json!(i))).collect();
        let stored: Vec<(&str, Value)> = stored
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let overlay = Arc::new(Overlay::default());
        overlay.apply(Writes::from([
            ("k0".to_string(), None),
            ("k05".to_string(), Some(Json::of(&json!("o")))),
        ]));
        let mut call = CallState::new(store(&stored).await, "f", "r", Some(overlay));
        call.delete("k1".into()).unwrap();
        call.delete("k2".into()).unwrap();
        call.set("k05".into(), Json::of(&json!("mine"))).unwrap();
        call.set("other".into(), Json::of(&json!(0))).unwrap();
        let page = call.list("k", None, 3).await.unwrap();
        assert_eq!(keys(&page), ["k05", "k3", "k4"]);
        assert_eq!(page.entries[0].1.value(), json!("mine"));
        assert_eq!(page.next.as_deref(), Some("k4"));
        let page = call.list("k", Some("k4"), 10).await.unwrap();
        assert_eq!(keys(&page), ["k5", "k6", "k7", "k8", "k9"]);
        assert_eq!(page.next, None);
        let everything = call.list("", None, 0).await.unwrap();
        assert_eq!(everything.entries.len(), 9);
        assert_eq!(everything.entries.last().unwrap().0, "other");
    }

    #[tokio::test]
    async fn a_call_writes_as_much_as_its_memory_limit_and_no_more() {
        let value = Json::of(&json!("0123456789"));
        let one = held_bytes("k00", Some(&value));
        let mut call = CallState::new(store(&[]).await, "f", "r", None).with_limit(10 * one);
        for i in 0..10 {
            call.set(format!("k{i:02}"), value.clone()).unwrap();
        }
        assert_eq!(
            call.set("k10".into(), value.clone()),
            Err(Refused::TooManyWrites)
        );
        // Writing a key again replaces what it held; a delete holds less.
        call.set("k00".into(), value.clone()).unwrap();
        call.delete("k01".into()).unwrap();
        assert_eq!(
            call.set("k00".into(), Json::of(&json!("a longer value than before"))),
            Err(Refused::TooManyWrites)
        );
        assert_eq!(call.held, 10 * one - value.as_str().len());
        assert_eq!(call.into_writes().len(), 10);
    }

    #[tokio::test]
    async fn a_call_may_write_many_more_keys_than_ten_thousand() {
        let mut call = CallState::new(store(&[]).await, "f", "r", None);
        let record = json!({"procore_id": 123456, "origin": "adopted", "status": "active"});
        for i in 0..50_000 {
            call.set(format!("managed/person{i}@example.com"), Json::of(&record))
                .unwrap();
        }
        // About 0.15 KiB a record: a million fit well under the limit.
        assert!(call.held < 10 * 1024 * 1024, "{}", call.held);
        assert!(call.held * 20 < MAX_WRITE_BYTES_PER_CALL);
        assert_eq!(call.into_writes().len(), 50_000);
    }

    #[tokio::test]
    async fn a_commit_keeps_the_writes_so_far_whatever_the_call_does_next() {
        let store = store(&[("gone", json!(0))]).await;
        let mut call = CallState::new(store.clone(), "f", "r", None);
        call.set("done".into(), Json::of(&json!("deactivated")))
            .unwrap();
        call.delete("gone".into()).unwrap();
        call.commit().await.unwrap();
        assert_eq!(
            store.get("f", "done").await.unwrap(),
            Some(Json::of(&json!("deactivated")))
        );
        assert_eq!(store.get("f", "gone").await.unwrap(), None);
        // Later writes are buffered again; a call that then fails leaves
        // them out (its writes are dropped), and the committed ones stay.
        call.set("later".into(), Json::of(&json!(1))).unwrap();
        assert_eq!(
            call.get("done").await.unwrap(),
            Some(Json::of(&json!("deactivated")))
        );
        assert_eq!(call.into_writes().len(), 1);
        assert_eq!(store.get("f", "later").await.unwrap(), None);
        assert_eq!(
            store.get("f", "done").await.unwrap(),
            Some(Json::of(&json!("deactivated")))
        );
    }

    #[tokio::test]
    async fn a_dry_run_commit_stores_nothing_and_keeps_the_writes_buffered() {
        let store = store(&[]).await;
        let overlay = Arc::new(Overlay::default());
        let mut call = CallState::new(store.clone(), "f", "r", Some(overlay));
        call.set("done".into(), Json::of(&json!(1))).unwrap();
        call.commit().await.unwrap();
        assert_eq!(store.get("f", "done").await.unwrap(), None);
        assert_eq!(call.get("done").await.unwrap(), Some(Json::of(&json!(1))));
        assert_eq!(call.into_writes().len(), 1);
    }
}
