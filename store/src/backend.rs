//! The one storage interface ([`Backend`]) and the handle the host holds
//! ([`Store`]). Both backends — SQLite ([`crate::sqlite`]) and PostgreSQL
//! ([`crate::postgres`]) — implement every method with the same meaning,
//! and the store's tests run one body against each.
//!
//! The interface is async: PostgreSQL's client is, and SQLite's blocking
//! calls go to tokio's blocking threads, so no caller ever blocks an async
//! worker. Arguments are owned where a backend moves them to another thread.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::approval::{
    DecisionOutcome, DecisionRequest, GateUpdate, PlanDetail, PlanItemState, PlanQuery,
    PlanSummary, Settled,
};
use crate::browse::{
    FlowLatest, ItemCount, ItemFilter, ItemMention, ItemPage, RunFilter, RunOverview, RunPage,
};
use crate::lease::{Acquired, Claim, Firing, LeaseGrant, Takeover};
use crate::ledger::{LedgerEntry, LedgerKeysPage, LedgerKeysQuery};
use crate::{
    HistoryWrite, Location, PrunedRun, RunDetail, RunRef, RunSummary, StateBatch, StateKey,
    StatePage, StateQuery, StoreError,
};

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Where the data lives, safe to show (no password).
    fn location(&self) -> &Location;

    /// How many migrations the database has had.
    async fn schema_version(&self) -> Result<i64, StoreError>;

    /// Whether the database this store writes is still the one its
    /// location names: an SQLite file deleted, moved or replaced while it
    /// is open takes every later write with it, unseen by every process
    /// that opens the path. Always so for a server. It looks at the file
    /// system: call it off the async workers.
    fn still_in_place(&self) -> bool {
        true
    }

    /// Whether a new session with the database can be had now, beside the
    /// ones this store holds: a server whose connection limit is reached,
    /// or that refuses the login since, still answers on a kept one while
    /// every run that needs another fails. Asked by readiness probes,
    /// which bound the wait: a session is not left open when they stop.
    async fn new_session_answers(&self) -> Result<(), StoreError> {
        self.schema_version().await.map(|_| ())
    }

    // ---- run history -------------------------------------------------

    /// Applies `writes` for one run, in order, in one transaction, after
    /// checking the run's fencing number against the flow's lease
    /// ([`StoreError::Fenced`] when another replica took it over).
    async fn write(&self, run: &RunRef, writes: Vec<HistoryWrite>) -> Result<(), StoreError>;

    /// The newest `limit` runs, of one flow (its `name`) or of all.
    async fn list_runs(
        &self,
        flow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunSummary>, StoreError>;

    /// A run with its steps (in the order they started), items and report
    /// files. A unique prefix of the id finds the run too; a prefix shared
    /// by several runs is a [`StoreError::AmbiguousRun`].
    async fn run_detail(&self, id: &str) -> Result<Option<RunDetail>, StoreError>;

    /// Deletes the runs that ended more than `age` ago, with everything
    /// they recorded, and returns them so the caller can delete their
    /// files. A run still going is never pruned; one whose process (on
    /// this host) is known to be gone is first recorded as interrupted.
    async fn prune_older_than(&self, age: Duration) -> Result<Vec<PrunedRun>, StoreError>;

    /// Records as `interrupted` the runs this host left `running` before
    /// `since` (the start of the current process) whose process is gone,
    /// ending them at their last sign of life. Returns how many.
    async fn recover_stale_runs(&self, since: DateTime<Utc>) -> Result<usize, StoreError>;

    // ---- browsing (the web console; see [`crate::browse`]) -------------

    /// A page of runs, newest first, by flow and status, after a cursor (a
    /// cursor that names no run lists from the newest).
    async fn runs_page(&self, filter: &RunFilter) -> Result<RunPage, StoreError>;

    /// One run by its exact id, with its steps, how many items of each
    /// step ended how, and its report files — without the items.
    async fn run_overview(&self, id: &str) -> Result<Option<RunOverview>, StoreError>;

    /// For each of `runs` (in order), how many items of each step ended
    /// how; an unknown run has none.
    async fn item_counts(&self, runs: &[String]) -> Result<Vec<Vec<ItemCount>>, StoreError>;

    /// A page of one step's items matching a text, failed ones first, then
    /// interrupted, then the rest, each by position.
    async fn items_page(
        &self,
        run: &str,
        step: &str,
        filter: &ItemFilter,
    ) -> Result<ItemPage, StoreError>;

    /// Each flow that has runs, with its newest run and the end of its
    /// latest success, by name.
    async fn flows_latest(&self) -> Result<Vec<FlowLatest>, StoreError>;

    /// The runs whose id is at least `floor`, by id: those that started
    /// since then, as ids begin with the start time.
    async fn runs_from(&self, floor: &str) -> Result<Vec<RunSummary>, StoreError>;

    /// The runs with these exact ids that exist.
    async fn runs_by_id(&self, ids: &[String]) -> Result<Vec<RunSummary>, StoreError>;

    /// The items (of any run) whose key, input or output contains `text`
    /// (ASCII letters compared case-insensitively), oldest first, at most
    /// `max`. It reads every item, so it also finds a person named only in
    /// the data (the ledger index answers by exact key).
    async fn items_mentioning(
        &self,
        text: &str,
        max: usize,
    ) -> Result<Vec<ItemMention>, StoreError>;

    // ---- flow state ---------------------------------------------------

    /// The value of a flow's key, if set.
    async fn state_get(&self, flow: &str, key: &StateKey) -> Result<Option<Value>, StoreError> {
        let text = self.state_get_text(flow, key).await?;
        Ok(text.map(crate::state::parse_value))
    }

    /// A page of a flow's keys that start with a prefix, in byte order.
    async fn state_list(&self, flow: &str, query: &StateQuery) -> Result<StatePage, StoreError> {
        let page = self.state_list_text(flow, query).await?;
        Ok(page.map(crate::state::parse_value))
    }

    /// [`Backend::state_get`], the value as its JSON text (a stored text
    /// that is not JSON comes back as a JSON string).
    async fn state_get_text(
        &self,
        flow: &str,
        key: &StateKey,
    ) -> Result<Option<String>, StoreError>;

    /// [`Backend::state_list`], each value as its JSON text.
    async fn state_list_text(
        &self,
        flow: &str,
        query: &StateQuery,
    ) -> Result<StatePage<String>, StoreError>;

    /// Applies a batch of sets and deletes in one transaction (all or none),
    /// checking its fencing number first when it has one.
    async fn state_apply(&self, flow: &str, batch: StateBatch) -> Result<(), StoreError>;

    // ---- approvals -------------------------------------------------------

    /// The open plan of a flow's step, with its items and decisions.
    async fn open_plan(&self, flow: &str, step: &str) -> Result<Option<PlanDetail>, StoreError>;

    /// Records what a run's approval gate held back and which keys left
    /// the step's items ([`GateUpdate`]), in one transaction; the plan
    /// after it, or `None` when there was none and nothing was held.
    async fn record_gate(&self, update: &GateUpdate) -> Result<Option<PlanSummary>, StoreError>;

    /// Where one item of a plan stands now (`None`: the plan has no such
    /// key): a run asks again just before it runs an item on the plan's
    /// word, since an admin may have rejected it after the run read the plan.
    async fn plan_item_state(
        &self,
        plan_id: &str,
        key: &str,
    ) -> Result<Option<PlanItemState>, StoreError>;

    /// Marks items of a plan that ran as done (their approval is spent),
    /// and closes the plan if nothing in it is left.
    async fn settle_items(&self, plan_id: &str, settled: &[Settled]) -> Result<(), StoreError>;

    /// Plans, open ones first, then newest first.
    async fn list_plans(&self, query: &PlanQuery) -> Result<Vec<PlanSummary>, StoreError>;

    /// One plan with its items and decisions.
    async fn plan_detail(&self, id: &str) -> Result<Option<PlanDetail>, StoreError>;

    /// Records a person's decision about a plan, all of it or nothing
    /// ([`StoreError::Approval`] says why not).
    async fn decide(&self, request: &DecisionRequest) -> Result<DecisionOutcome, StoreError>;

    // ---- the ledger --------------------------------------------------------

    /// Everything recorded about one key (case-insensitive), of one flow
    /// or all, oldest first.
    async fn ledger(&self, key: &str, flow: Option<&str>) -> Result<Vec<LedgerEntry>, StoreError>;

    /// A page of a flow's keys, each with its latest state.
    async fn ledger_keys(&self, query: &LedgerKeysQuery) -> Result<LedgerKeysPage, StoreError>;

    // ---- replicas: firings and leases ----------------------------------

    /// Claims one firing of a flow (its scheduled time) for `replica`,
    /// which will run it as `run_id`: exactly one caller per firing gets
    /// [`Claim::Won`], however many replicas ask at once.
    async fn claim_firing(&self, firing: &Firing) -> Result<Claim, StoreError>;

    /// Takes the flow's lease for a run, for `ttl`, when it is free, has
    /// expired, or its holder's process on this host is known to be gone
    /// (the run it covered is then recorded interrupted, in the same
    /// transaction); the new fencing number is one more than the last.
    async fn acquire_lease(
        &self,
        grant: &LeaseGrant,
        ttl: Duration,
    ) -> Result<Acquired, StoreError>;

    /// Extends the lease by `ttl` from now if `fence` still holds it;
    /// `false` when another replica took it over.
    async fn renew_lease(&self, flow: &str, fence: i64, ttl: Duration) -> Result<bool, StoreError>;

    /// Frees the lease if `fence` still holds it (the run ended).
    async fn release_lease(&self, flow: &str, fence: i64) -> Result<(), StoreError>;

    /// Takes over every expired lease that still covers a run, recording
    /// each run interrupted on behalf of `replica`; returns what was done.
    /// `ttl` is the sweeping replica's lease length: the run a lapsed
    /// lease covered ends no earlier than that before the lease expired
    /// (its holder's last renewal, as the replicas share one length).
    async fn take_over_expired(
        &self,
        replica: &str,
        ttl: Duration,
    ) -> Result<Vec<Takeover>, StoreError>;
}

/// The store the host holds: a cheap, shareable handle on one backend.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.backend.location())
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &(dyn Backend + 'static) {
        &*self.backend
    }
}

impl Store {
    /// Opens the store at `location`, creating and migrating it as needed.
    /// Safe when several processes open an empty database at once: exactly
    /// one of them migrates it.
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        let backend: Arc<dyn Backend> = match location {
            Location::Sqlite(_) | Location::SqliteMemory => {
                Arc::new(crate::sqlite::SqliteBackend::open(location.clone()).await?)
            }
            Location::Postgres(url) => Arc::new(crate::postgres::PgBackend::open(url).await?),
        };
        Ok(Store { backend })
    }

    /// A store that lives as long as the value: for tests and tools.
    pub async fn in_memory() -> Result<Store, StoreError> {
        Store::open(&Location::SqliteMemory).await
    }

    /// One history write for one run.
    pub async fn write_one(&self, run: &RunRef, write: HistoryWrite) -> Result<(), StoreError> {
        self.backend.write(run, vec![write]).await
    }
}
