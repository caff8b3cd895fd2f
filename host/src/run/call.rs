//! One call of a step's component, as the run makes it: the run context
//! the component receives, its view of the flow's state, and what happens
//! to the state it wrote — kept when the call succeeds (in the store, or
//! in a dry run only for the rest of the run), dropped when it fails.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::engine::{Call, CallError, Engine, Invocation, OutputCap, Prepared, StepContext};
use crate::state::{self, CallState, Overlay, StateStore, Writes};

/// Everything needed to call one step's component, shareable with the
/// tasks of its `for_each` items.
pub struct Caller {
    pub engine: Arc<Engine>,
    pub prepared: Arc<Prepared>,
    pub state: Arc<dyn StateStore>,
    /// The dry run's overlay; `None` in a real run.
    pub overlay: Option<Arc<Overlay>>,
    /// The run context every call of the step shares (no item, attempt 1).
    pub invocation: Invocation,
    pub timeout: Duration,
}

/// Which item of a `for_each` a call is for.
#[derive(Debug, Clone)]
pub struct ItemId {
    pub index: u64,
    pub key: Option<String>,
}

impl ItemId {
    /// The item at `index`; its key is the item itself when it is a
    /// string or a number, else its `key` field when that is one.
    pub fn of(index: usize, item: &Value) -> ItemId {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let key = text(item).or_else(|| item.get("key").and_then(text));
        ItemId {
            index: index as u64,
            key,
        }
    }
}

impl Caller {
    /// Calls the component once with `input` (JSON text), its output (JSON
    /// text) at most `cap`, and keeps the state it wrote if it succeeded.
    /// Returns the output and its size as the component returned it.
    pub async fn call(
        &self,
        step: Arc<StepContext>,
        input: String,
        item: Option<&ItemId>,
        cap: OutputCap,
    ) -> Result<(Value, usize), CallError> {
        let mut invocation = self.invocation.clone();
        if let Some(item) = item {
            invocation.item_index = Some(item.index);
            invocation.item_key = item.key.clone();
        }
        let call = Call {
            step,
            state: CallState::new(self.state.clone(), &invocation.flow, self.overlay.clone()),
            invocation,
        };
        let done = self
            .engine
            .call(&self.prepared, call, input, self.timeout, cap)
            .await?;
        self.keep(done.writes).await?;
        Ok((done.output, done.bytes))
    }

    /// Makes a successful call's writes durable, or in a dry run visible to
    /// the rest of the run only.
    async fn keep(&self, writes: Writes) -> Result<(), CallError> {
        if writes.is_empty() {
            return Ok(());
        }
        if let Some(overlay) = &self.overlay {
            overlay.apply(writes);
            return Ok(());
        }
        let invocation = &self.invocation;
        self.state
            .apply(&invocation.flow, &invocation.run_id, state::batch(writes))
            .await
            .map_err(|e| CallError::State(e.to_string()))
    }
}
