//! Run history: every run of a flow — scheduled or by hand — with its steps,
//! `for_each` items, inputs and outputs, errors, request counts and report
//! files, in an embedded SQLite database (`history.sqlite` in the data
//! directory).
//!
//! - Each write is its own transaction, committed as the run progresses, so
//!   a crash leaves an honest partial record. A `running` run whose process
//!   is known to be gone reads as `interrupted`;
//!   [`History::recover_stale_runs`] records that for good.
//! - Inputs and outputs are capped in size ([`cap`]), always as valid JSON.
//! - The history stores what it is given and cannot know what is secret:
//!   the host redacts every text and value before it records it.
//! - WAL mode and a busy timeout let the scheduler, `sluice run` and
//!   `sluice runs` use one file at once. [`History`] is `Send + Sync`: share
//!   it with an `Arc`; each call holds its connection only briefly.
//!
//! Modules: [`schema`] (migrations), [`store`] (writes), [`query`] (reads,
//! pruning, recovery), [`render`] (text for the CLI), [`model`] (types),
//! [`cap`] (size limits), [`duration`] (`30d`, `12h`), [`process`] (which
//! process wrote a run, and whether it lives). The crate also owns run ids
//! ([`new_run_id`]) and where Sluice keeps its data ([`default_data_dir`]).

pub mod cap;
pub mod duration;
pub mod model;
pub mod process;
pub mod query;
pub mod render;
pub mod schema;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

pub use duration::{DurationError, parse_duration};
pub use model::*;
pub use render::{DetailOptions, render_run_detail, render_run_detail_with, render_runs_table};
pub use schema::SCHEMA_VERSION;

/// What can go wrong with the history. Messages name the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot open the run history at {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot create the folder {path} for the run history: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot migrate the run history at {path} to schema {version}: {source}")]
    Migrate {
        path: String,
        version: i64,
        source: rusqlite::Error,
    },
    #[error(
        "the run history at {path} was written by a newer Sluice (schema {found}; this one knows up to {known}); upgrade Sluice or point --data-dir elsewhere"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("the run history has no run `{0}`")]
    UnknownRun(String),
    #[error(
        "the run id prefix `{prefix}` matches {count} runs (such as {examples}); give more of it"
    )]
    AmbiguousRun {
        prefix: String,
        count: usize,
        examples: String,
    },
    #[error("cannot record in the run history: {0}")]
    Word(#[from] UnknownWord),
    #[error("the run history database failed: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// The run history: one SQLite connection behind a mutex.
#[derive(Debug)]
pub struct History {
    conn: Mutex<Connection>,
    /// The database file (`:memory:` for [`History::open_in_memory`]).
    pub path: PathBuf,
}

/// Waiting this long for another process's write lock lets `serve`, `run`
/// and `sluice runs` share the file; every write holds it for milliseconds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl History {
    /// Opens the history at `path`, creating the file and its folder and
    /// migrating the schema as needed.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::Folder {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let open_error = |source| HistoryError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        Self::init(conn, path)
    }

    /// A history that lives as long as the value: for tests and `--no-history`.
    pub fn open_in_memory() -> Result<History, HistoryError> {
        Self::init(Connection::open_in_memory()?, Path::new(":memory:"))
    }

    fn init(conn: Connection, path: &Path) -> Result<History, HistoryError> {
        Self::configure(&conn).map_err(|source| HistoryError::Open {
            path: path.display().to_string(),
            source,
        })?;
        schema::migrate(&conn, path)?;
        Ok(History {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    fn configure(conn: &Connection) -> rusqlite::Result<()> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers never block the writer, nor the writer readers.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode NORMAL survives a crash of the process (what the
        // history must survive) without an fsync per item.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }

    /// The schema version of the open file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, HistoryError> {
        Ok(schema::version(&self.conn())?)
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction
        // behind (it rolls back on drop), so the connection is still good.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one write transaction, taken up front (`IMMEDIATE`) so
    /// that a concurrent writer makes it wait rather than fail midway.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, HistoryError>,
    ) -> Result<T, HistoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` over one consistent snapshot.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, HistoryError>,
    ) -> Result<T, HistoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let value = f(&tx)?;
        tx.finish()?;
        Ok(value)
    }
}

/// The history file inside a data directory: `history.sqlite`.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join("history.sqlite")
}

/// Where runs keep their files (reports) inside a data directory: `runs/`.
/// Pruning deletes only folders under it.
pub fn runs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("runs")
}

/// One run's folder: `runs/<run id>`.
pub fn run_dir(data_dir: &Path, run_id: &str) -> PathBuf {
    runs_dir(data_dir).join(run_id)
}

/// Where Sluice keeps its data: `$SLUICE_DATA_DIR` if set, else
/// `$XDG_DATA_HOME/sluice`, else `~/.local/share/sluice`, else `.sluice`
/// in the current folder when there is no home.
pub fn default_data_dir() -> PathBuf {
    data_dir_from(|name| std::env::var_os(name))
}

/// [`default_data_dir`] with the environment given as a look-up, so its
/// order of precedence is tested without changing the process's
/// environment (shared by every thread of a test binary). An empty
/// variable counts as unset.
pub fn data_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |name| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("SLUICE_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("sluice");
    }
    match var("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/sluice"),
        None => PathBuf::from(".sluice"),
    }
}

/// A new run id: the start time in UTC to the second, then 6 random hex
/// digits, e.g. `20261124T054200Z-3f9a1c`. Ids sort by start time as text,
/// read well in a folder listing, and any unique prefix finds the run.
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = chrono::Utc::now();
    // RandomState is seeded from the OS per process; the counter and the
    // clock keep ids made in one process apart.
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_i64(now.timestamp_nanos_opt().unwrap_or_default());
    h.write_u32(std::process::id());
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%SZ"),
        h.finish() & 0xff_ffff
    )
}

/// Now, as the history writes timestamps.
pub(crate) fn now_text() -> String {
    timestamp(chrono::Utc::now())
}

pub(crate) fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds between two stored timestamps, when both parse.
pub(crate) fn millis_between(start: &str, end: Option<&str>) -> Option<u64> {
    let start = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end?).ok()?;
    u64::try_from((end - start).num_milliseconds().max(0)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), "20261124T054200Z-3f9a1c".len());
        assert!(a.as_bytes()[8] == b'T' && a.as_bytes()[15] == b'Z');
    }

    #[test]
    fn history_is_shareable_across_threads() {
        fn check<T: Send + Sync>() {}
        check::<History>();
    }
}
