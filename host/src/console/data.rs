//! Every read the console makes from the storage layer, in one place so
//! that a change of storage is a change here only.
//!
//! The console opens its own store (its own connections), so its reads
//! never queue behind the runs' writes in this process. An SQLite store is
//! one connection, so a few are kept and taken in turn, and one slow page
//! does not hold up the others (WAL lets them read while runs write); a
//! PostgreSQL store is a pool already.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_store::browse::{
    FlowLatest, ItemFilter, ItemMention, ItemPage, RunFilter, RunOverview, RunPage,
};
use sluice_store::{
    DecisionOutcome, DecisionRequest, Location, PlanDetail, PlanQuery, PlanSummary, RunSummary,
    Store, StoreError,
};

/// SQLite connections kept open for the console's reads.
const SQLITE_CONNECTIONS: usize = 4;

/// How long one new-session check answers readiness probes: they are open
/// without the token on loopback (or with `--metrics-public`), and each
/// check opens a database session, so a flood of probes must not be a
/// flood of sessions.
const SESSION_CHECK_KEPT: Duration = Duration::from_secs(5);

/// The longest a new-session check waits: under the probes' own wait, so
/// a server that does not answer is answered, and kept, as such.
const SESSION_WAIT: Duration = Duration::from_millis(1500);

/// The longest a page's read waits for the store: a PostgreSQL that
/// stopped answering held every page (and every metrics scrape) for as long
/// as it did. The page then says the history could not be read.
const READ_WAIT: Duration = Duration::from_secs(10);

/// `read`, given up after [`READ_WAIT`].
async fn bounded<T>(read: impl Future<Output = Result<T, StoreError>>) -> Result<T, DataError> {
    tokio::time::timeout(READ_WAIT, read)
        .await
        .unwrap_or(Err(StoreError::NoAnswer(READ_WAIT)))
}

/// The last new-session check.
struct SessionCheck {
    at: Instant,
    /// What was wrong, in a probe's words.
    outcome: Result<(), &'static str>,
}

/// A storage read failed.
pub type DataError = StoreError;

/// The console's way into the storage layer.
pub struct Data {
    stores: Vec<Store>,
    next: AtomicUsize,
    /// The schema version this binary migrates its backend to.
    schema: i64,
    session_check: tokio::sync::Mutex<Option<SessionCheck>>,
}

impl Data {
    /// Opens the store (creating and migrating it if need be).
    pub async fn open(location: &Location) -> Result<Data, StoreError> {
        let (count, schema) = match location {
            Location::Postgres(_) => (1, sluice_store::postgres::schema::SCHEMA_VERSION),
            _ => (
                SQLITE_CONNECTIONS,
                sluice_store::sqlite::schema::SCHEMA_VERSION,
            ),
        };
        let mut stores = Vec::with_capacity(count);
        for _ in 0..count {
            stores.push(Store::open(location).await?);
        }
        Ok(Data {
            stores,
            next: AtomicUsize::new(0),
            schema,
            session_check: tokio::sync::Mutex::new(None),
        })
    }

    fn store(&self) -> &Store {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.stores.len();
        &self.stores[i]
    }

    /// Proves the database answers.
    pub async fn ping(&self) -> Result<(), DataError> {
        self.schema().await.map(|_| ())
    }

    /// Whether a new database session can be had now (what is wrong, in
    /// a probe's words, when not), checked at most once every
    /// [`SESSION_CHECK_KEPT`] and waited for at most [`SESSION_WAIT`];
    /// the full error goes to the log.
    pub async fn new_session(&self) -> Result<(), &'static str> {
        let mut last = self.session_check.lock().await;
        if let Some(check) = last.as_ref()
            && check.at.elapsed() < SESSION_CHECK_KEPT
        {
            return check.outcome;
        }
        let answered = tokio::time::timeout(SESSION_WAIT, self.store().new_session_answers()).await;
        let outcome = match answered {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                super::notice(&format!(
                    "console: a new session with the store could not be had: {e}"
                ));
                Err(e.health_word())
            }
            Err(_) => Err(sluice_store::error::NOT_ANSWERING),
        };
        *last = Some(SessionCheck {
            at: Instant::now(),
            outcome,
        });
        outcome
    }

    /// Whether the database read is still the one its location names (an
    /// SQLite file deleted or replaced meanwhile is read and written on,
    /// unseen by anyone else).
    pub fn still_in_place(&self) -> bool {
        self.stores.iter().all(|s| s.still_in_place())
    }

    /// The schema version the database is at, and the one this binary
    /// works with (they differ once a newer `sluice` migrated it).
    pub async fn schema(&self) -> Result<(i64, i64), DataError> {
        let found = bounded(self.store().schema_version()).await?;
        Ok((found, self.schema))
    }

    pub async fn runs_page(&self, filter: RunFilter) -> Result<RunPage, DataError> {
        bounded(self.store().runs_page(&filter)).await
    }

    /// How many items each run of `runs` has, and how many of them failed.
    pub async fn item_totals(&self, runs: Vec<String>) -> Result<Vec<(u64, u64)>, DataError> {
        let counts = bounded(self.store().item_counts(&runs)).await?;
        Ok(counts
            .iter()
            .map(|run| {
                let total = run.iter().map(|c| c.count).sum();
                let failed = run
                    .iter()
                    .filter(|c| c.status == sluice_store::ItemStatus::Failed)
                    .map(|c| c.count)
                    .sum();
                (total, failed)
            })
            .collect())
    }

    pub async fn overview(&self, id: String) -> Result<Option<RunOverview>, DataError> {
        bounded(self.store().run_overview(&id)).await
    }

    pub async fn items_page(
        &self,
        run: String,
        step: String,
        filter: ItemFilter,
    ) -> Result<ItemPage, DataError> {
        bounded(self.store().items_page(&run, &step, &filter)).await
    }

    pub async fn flows_latest(&self) -> Result<Vec<FlowLatest>, DataError> {
        bounded(self.store().flows_latest()).await
    }

    pub async fn mentions(&self, text: String, max: usize) -> Result<Vec<ItemMention>, DataError> {
        bounded(self.store().items_mentioning(&text, max)).await
    }

    /// What people decided about a key (any case) in approval plans, and
    /// the plan items closed as no longer needed, oldest first.
    pub async fn decisions(
        &self,
        key: String,
    ) -> Result<Vec<sluice_store::LedgerEntry>, DataError> {
        let entries = bounded(self.store().ledger(&key, None)).await?;
        Ok(entries
            .into_iter()
            .filter(|e| !matches!(e.event, sluice_store::LedgerEvent::Item { .. }))
            .collect())
    }

    pub async fn runs_from(&self, floor: String) -> Result<Vec<RunSummary>, DataError> {
        bounded(self.store().runs_from(&floor)).await
    }

    pub async fn runs_by_id(&self, ids: Vec<String>) -> Result<Vec<RunSummary>, DataError> {
        bounded(self.store().runs_by_id(&ids)).await
    }

    /// Approval plans, open ones first, then newest first.
    pub async fn plans(&self, query: PlanQuery) -> Result<Vec<PlanSummary>, DataError> {
        bounded(self.store().list_plans(&query)).await
    }

    pub async fn plan(&self, id: String) -> Result<Option<PlanDetail>, DataError> {
        bounded(self.store().plan_detail(&id)).await
    }

    /// Records a decision (the store refuses one that cannot apply).
    pub async fn decide(&self, request: DecisionRequest) -> Result<DecisionOutcome, DataError> {
        self.store().decide(&request).await
    }
}
