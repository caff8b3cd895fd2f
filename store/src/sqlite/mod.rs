//! The SQLite backend: one file (WAL mode) for one host.
//!
//! - One connection behind a mutex; every call runs on tokio's blocking
//!   threads ([`SqliteBackend::call`]), so async callers never block.
//! - WAL mode and a busy timeout let `sluice serve`, `sluice run` and
//!   `sluice runs` use one file at once; a write takes the write lock up
//!   front (`BEGIN IMMEDIATE`) so a concurrent writer makes it wait rather
//!   than fail midway. Switching a fresh file to WAL, which SQLite does not
//!   wait for, is retried for as long ([`use_wal`]).
//! - Leases work as on PostgreSQL, by this host's clock: two `sluice serve`
//!   on one data directory never run a flow twice at once.
//!
//! - Flow state batches are group-committed ([`group`]): those that arrive
//!   while one is written share the next transaction, each in its own
//!   savepoint, and each caller is answered once its batch is committed.
//!
//! Modules: [`schema`] (migrations), [`history`] (run writes), [`query`]
//! (reads, pruning, recovery), [`state`] (flow state), [`approval`]
//! (plans and decisions), [`ledger`] (a key's story), [`lease`] (firings
//! and leases), [`browse`] (the web console's reads).

pub mod approval;
pub mod browse;
mod group;
pub mod history;
pub mod lease;
pub mod ledger;
pub mod query;
pub mod schema;
pub mod state;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::browse::{
    FlowLatest, ItemCount, ItemFilter, ItemMention, ItemPage, RunFilter, RunOverview, RunPage,
};
use crate::{
    Acquired, Backend, Claim, DecisionOutcome, DecisionRequest, Firing, GateUpdate, HistoryWrite,
    LeaseGrant, LedgerEntry, LedgerKeysPage, LedgerKeysQuery, Location, PlanDetail, PlanItemState,
    PlanQuery, PlanSummary, PrunedRun, RunDetail, RunRef, RunSummary, Settled, StateBatch,
    StateKey, StatePage, StateQuery, StoreError, Takeover,
};

/// Waiting this long for another process's write lock lets `serve`, `run`
/// and `sluice runs` share the file; every write holds it for milliseconds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between two tries at switching a file to WAL.
const WAL_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The SQLite backend.
pub struct SqliteBackend {
    conn: Arc<Mutex<Connection>>,
    location: Location,
    /// State batches waiting for their (shared) transaction.
    state_commits: Arc<group::StateCommits>,
    /// The file opened, to tell when its path names another
    /// ([`Backend::still_in_place`]); `None` in memory.
    file: Option<FileId>,
}

/// A file's identity on its device, which a path does not keep: a file
/// deleted and made again under the same name is another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: u64,
    inode: u64,
}

impl FileId {
    /// The file `path` names now: `Ok(None)` when there is none.
    fn of(path: &Path) -> std::io::Result<Option<FileId>> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(FileId {
                device: meta.dev(),
                inode: meta.ino(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl SqliteBackend {
    /// Opens (creating the file and its folder) and migrates.
    pub async fn open(location: Location) -> Result<SqliteBackend, StoreError> {
        tokio::task::spawn_blocking(move || Self::open_now(location)).await?
    }

    fn open_now(location: Location) -> Result<SqliteBackend, StoreError> {
        let open_error = |e: &dyn std::fmt::Display| StoreError::Open {
            location: location.to_string(),
            why: e.to_string(),
        };
        let (conn, path) = match &location {
            Location::Sqlite(path) => {
                if path.is_dir() {
                    return Err(open_error(&format_args!(
                        "it is a folder, not a file: name a file in it, e.g. sqlite:{}",
                        path.join("history.sqlite").display()
                    )));
                }
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                        location: location.to_string(),
                        why: format!(
                            "cannot create the folder {}: {}",
                            dir.display(),
                            crate::location::folder_not_made(dir, &e)
                        ),
                    })?;
                }
                (Connection::open(path), path.as_path())
            }
            Location::SqliteMemory => (Connection::open_in_memory(), Path::new(":memory:")),
            Location::Postgres(_) => return Err(open_error(&"not an SQLite location")),
        };
        let conn = conn.map_err(|e| open_error(&crate::error::sqlite_why(&e)))?;
        configure(&conn).map_err(|e| open_error(&crate::error::sqlite_why(&e)))?;
        schema::migrate(&conn, path)?;
        let file = FileId::of(path).ok().flatten();
        Ok(SqliteBackend {
            conn: Arc::new(Mutex::new(conn)),
            location,
            state_commits: Arc::default(),
            file,
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&conn))).await?
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never block the writer, nor the writer readers.
    use_wal(conn, BUSY_TIMEOUT)?;
    // In WAL mode NORMAL survives a crash of the process (what the
    // history must survive) without an fsync per item.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Puts the file in WAL mode, waiting up to `patience` for another
/// connection that holds its write lock.
///
/// SQLite does not apply the busy timeout here. Switching a file that is
/// still in rollback mode (a fresh one) upgrades a read lock to the write
/// lock, and SQLite refuses such an upgrade at once ("database is locked")
/// rather than risk a deadlock. So when two processes create the history
/// together (`serve` starting while `sluice runs` looks), the one that
/// asks second is refused while the first switches or migrates the file.
/// Asking again once the read lock is let go is safe: the holder finishes.
fn use_wal(conn: &Connection, patience: Duration) -> rusqlite::Result<()> {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(WAL_RETRY_PAUSE);
            }
            done => return done,
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves no half-done transaction
    // behind (it rolls back on drop), so the connection is still good.
    conn.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` in one write transaction, taken up front (`IMMEDIATE`).
pub(crate) fn write<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Runs `f` over one consistent snapshot.
pub(crate) fn read<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = conn.transaction()?;
    let value = f(&tx)?;
    tx.finish()?;
    Ok(value)
}

#[async_trait]
impl Backend for SqliteBackend {
    fn location(&self) -> &Location {
        &self.location
    }

    fn still_in_place(&self) -> bool {
        match (&self.location, self.file) {
            // Only a file that is gone or another says so: a path that
            // cannot be looked at now (a passing I/O error) is no proof.
            (Location::Sqlite(path), Some(opened)) => match FileId::of(path) {
                Ok(now) => now == Some(opened),
                Err(_) => true,
            },
            _ => true,
        }
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        self.call(|c| Ok(schema::version(c)?)).await
    }

    async fn write(&self, run: &RunRef, writes: Vec<HistoryWrite>) -> Result<(), StoreError> {
        let run = run.clone();
        self.call(move |c| write(c, |tx| history::apply(tx, &run, &writes)))
            .await
    }

    async fn list_runs(
        &self,
        flow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunSummary>, StoreError> {
        let flow = flow.map(str::to_string);
        self.call(move |c| read(c, |tx| query::list_runs(tx, flow.as_deref(), limit)))
            .await
    }

    async fn run_detail(&self, id: &str) -> Result<Option<RunDetail>, StoreError> {
        let id = id.to_string();
        self.call(move |c| read(c, |tx| query::run_detail(tx, &id)))
            .await
    }

    async fn prune_older_than(&self, age: Duration) -> Result<Vec<PrunedRun>, StoreError> {
        self.call(move |c| {
            let pruned = write(c, |tx| query::prune_older_than(tx, age))?;
            // The deletions went through the write-ahead log, which grew
            // by what they freed (an operator saw it triple): folded back
            // into the file and cut to nothing now. Best effort, and
            // without waiting: a truncating checkpoint that waited on a
            // reader (`sluice serve`) would hold its writes back meanwhile.
            if !pruned.is_empty() {
                let _ = c.busy_timeout(Duration::ZERO);
                let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                let _ = c.busy_timeout(BUSY_TIMEOUT);
            }
            Ok(pruned)
        })
        .await
    }

    async fn recover_stale_runs(&self, since: DateTime<Utc>) -> Result<usize, StoreError> {
        self.call(move |c| write(c, |tx| query::recover_stale_runs(tx, since)))
            .await
    }

    async fn runs_page(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        let filter = filter.clone();
        self.call(move |c| read(c, |tx| browse::runs_page(tx, &filter)))
            .await
    }

    async fn run_overview(&self, id: &str) -> Result<Option<RunOverview>, StoreError> {
        let id = id.to_string();
        self.call(move |c| read(c, |tx| browse::run_overview(tx, &id)))
            .await
    }

    async fn item_counts(&self, runs: &[String]) -> Result<Vec<Vec<ItemCount>>, StoreError> {
        let runs = runs.to_vec();
        self.call(move |c| read(c, |tx| browse::item_counts(tx, &runs)))
            .await
    }

    async fn items_page(
        &self,
        run: &str,
        step: &str,
        filter: &ItemFilter,
    ) -> Result<ItemPage, StoreError> {
        let (run, step, filter) = (run.to_string(), step.to_string(), filter.clone());
        self.call(move |c| read(c, |tx| browse::items_page(tx, &run, &step, &filter)))
            .await
    }

    async fn flows_latest(&self) -> Result<Vec<FlowLatest>, StoreError> {
        self.call(|c| read(c, browse::flows_latest)).await
    }

    async fn runs_from(&self, floor: &str) -> Result<Vec<RunSummary>, StoreError> {
        let floor = floor.to_string();
        self.call(move |c| read(c, |tx| browse::runs_from(tx, &floor)))
            .await
    }

    async fn runs_by_id(&self, ids: &[String]) -> Result<Vec<RunSummary>, StoreError> {
        let ids = ids.to_vec();
        self.call(move |c| read(c, |tx| browse::runs_by_id(tx, &ids)))
            .await
    }

    async fn items_mentioning(
        &self,
        text: &str,
        max: usize,
    ) -> Result<Vec<ItemMention>, StoreError> {
        let text = text.to_string();
        self.call(move |c| read(c, |tx| browse::items_mentioning(tx, &text, max)))
            .await
    }

    async fn state_get_text(
        &self,
        flow: &str,
        key: &StateKey,
    ) -> Result<Option<String>, StoreError> {
        let (flow, key) = (flow.to_string(), key.clone());
        let text = self
            .call(move |c| read(c, |tx| state::get(tx, &flow, &key)))
            .await?;
        Ok(text.map(crate::state::json_text))
    }

    async fn state_list_text(
        &self,
        flow: &str,
        query: &StateQuery,
    ) -> Result<StatePage<String>, StoreError> {
        let (flow, query) = (flow.to_string(), query.clone());
        let page = self
            .call(move |c| read(c, |tx| state::list(tx, &flow, &query)))
            .await?;
        Ok(page.map(crate::state::json_text))
    }

    async fn state_apply(&self, flow: &str, batch: StateBatch) -> Result<(), StoreError> {
        self.state_commits
            .apply(&self.conn, flow.to_string(), batch)
            .await
    }

    async fn open_plan(&self, flow: &str, step: &str) -> Result<Option<PlanDetail>, StoreError> {
        let (flow, step) = (flow.to_string(), step.to_string());
        self.call(move |c| read(c, |tx| approval::open_plan(tx, &flow, &step)))
            .await
    }

    async fn record_gate(&self, update: &GateUpdate) -> Result<Option<PlanSummary>, StoreError> {
        let update = update.clone();
        self.call(move |c| write(c, |tx| approval::record_gate(tx, &update)))
            .await
    }

    async fn plan_item_state(
        &self,
        plan_id: &str,
        key: &str,
    ) -> Result<Option<PlanItemState>, StoreError> {
        let (plan, key) = (plan_id.to_string(), key.to_string());
        self.call(move |c| read(c, |tx| approval::item_state(tx, &plan, &key)))
            .await
    }

    async fn settle_items(&self, plan_id: &str, settled: &[Settled]) -> Result<(), StoreError> {
        let (plan, settled) = (plan_id.to_string(), settled.to_vec());
        self.call(move |c| write(c, |tx| approval::settle(tx, &plan, &settled)))
            .await
    }

    async fn list_plans(&self, query: &PlanQuery) -> Result<Vec<PlanSummary>, StoreError> {
        let query = query.clone();
        self.call(move |c| read(c, |tx| approval::list_plans(tx, &query)))
            .await
    }

    async fn plan_detail(&self, id: &str) -> Result<Option<PlanDetail>, StoreError> {
        let id = id.to_string();
        self.call(move |c| read(c, |tx| approval::plan_detail(tx, &id)))
            .await
    }

    async fn decide(&self, request: &DecisionRequest) -> Result<DecisionOutcome, StoreError> {
        let request = request.clone();
        self.call(move |c| write(c, |tx| approval::decide(tx, &request)))
            .await
    }

    async fn ledger(&self, key: &str, flow: Option<&str>) -> Result<Vec<LedgerEntry>, StoreError> {
        let (key, flow) = (key.to_string(), flow.map(str::to_string));
        self.call(move |c| read(c, |tx| ledger::ledger(tx, &key, flow.as_deref())))
            .await
    }

    async fn ledger_keys(&self, query: &LedgerKeysQuery) -> Result<LedgerKeysPage, StoreError> {
        let query = query.clone();
        self.call(move |c| read(c, |tx| ledger::ledger_keys(tx, &query)))
            .await
    }

    async fn claim_firing(&self, firing: &Firing) -> Result<Claim, StoreError> {
        let firing = firing.clone();
        let shown = self.location.to_string();
        self.call(move |c| {
            write(c, |tx| {
                schema::not_newer(tx, &shown)?;
                lease::claim_firing(tx, &firing)
            })
        })
        .await
    }

    async fn acquire_lease(
        &self,
        grant: &LeaseGrant,
        ttl: Duration,
    ) -> Result<Acquired, StoreError> {
        let grant = grant.clone();
        let shown = self.location.to_string();
        self.call(move |c| {
            write(c, |tx| {
                schema::not_newer(tx, &shown)?;
                lease::acquire(tx, &grant, ttl)
            })
        })
        .await
    }

    async fn renew_lease(&self, flow: &str, fence: i64, ttl: Duration) -> Result<bool, StoreError> {
        let flow = flow.to_string();
        self.call(move |c| write(c, |tx| lease::renew(tx, &flow, fence, ttl)))
            .await
    }

    async fn release_lease(&self, flow: &str, fence: i64) -> Result<(), StoreError> {
        let flow = flow.to_string();
        self.call(move |c| write(c, |tx| lease::release(tx, &flow, fence)))
            .await
    }

    async fn take_over_expired(
        &self,
        replica: &str,
        ttl: Duration,
    ) -> Result<Vec<Takeover>, StoreError> {
        let replica = replica.to_string();
        self.call(move |c| write(c, |tx| lease::take_over_expired(tx, &replica, ttl)))
            .await
    }
}
