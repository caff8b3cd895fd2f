//! Flow state in memory: for tests, and for a runner that has no data
//! directory (state then lasts as long as the process).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use super::{Json, StateStore, StoreError, Write};

/// Every flow's state, in one map keyed by (flow, key).
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<(String, String), Json>>,
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, flow: &str, key: &str) -> Result<Option<Json>, StoreError> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Ok(entries.get(&(flow.to_string(), key.to_string())).cloned())
    }

    async fn list(
        &self,
        flow: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Json)>, StoreError> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded((flow.into(), after.into())),
            _ => Bound::Included((flow.into(), prefix.into())),
        };
        Ok(entries
            .range((lower, Bound::Unbounded))
            .take_while(|((f, k), _)| f == flow && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn apply(&self, flow: &str, _run: &str, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for write in writes {
            let id = (flow.to_string(), write.key().to_string());
            match write {
                Write::Set(_, value) => entries.insert(id, value),
                Write::Delete(_) => entries.remove(&id),
            };
        }
        Ok(())
    }
}
