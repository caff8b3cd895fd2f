//! Run history: every run of a flow — scheduled or by hand — with its steps,
//! `for_each` items, errors, request counts and report files, in an embedded
//! SQLite database.
//!
//! Each write commits on its own, as the run progresses, so a crash leaves
//! an honest partial record: a run whose process is gone while it says
//! `running` is shown as interrupted. Inputs and outputs are capped in size
//! ([`cap`]). The host redacts secrets before anything reaches this crate.

pub mod cap;
pub mod model;
pub mod query;
pub mod render;
pub mod schema;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

pub use model::*;

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
    #[error("the run history database failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "the run history at {path} was written by a newer Sluice (schema {found}, this one knows {known})"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
}

pub struct History {
    conn: Mutex<Connection>,
    pub path: PathBuf,
}

/// Waiting this long for a lock lets `serve` and `sluice runs` share the file.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl History {
    /// Opens (creating and migrating as needed) the history at `path`.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::Folder {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| HistoryError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::init(conn, path.to_path_buf())
    }

    pub fn open_in_memory() -> Result<History, HistoryError> {
        Self::init(Connection::open_in_memory()?, PathBuf::from(":memory:"))
    }

    fn init(conn: Connection, path: PathBuf) -> Result<History, HistoryError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&conn, &path)?;
        Ok(History {
            conn: Mutex::new(conn),
            path,
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The history file inside a data directory.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join("history.sqlite")
}
