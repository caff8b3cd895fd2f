//! What can go wrong with the store. Messages say where (the SQLite file or
//! the PostgreSQL server, never its password) and what to do.

use crate::approval::ApprovalError;
use crate::model::UnknownWord;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {location}: {why}")]
    Open { location: String, why: String },
    #[error("cannot migrate the store at {location} to schema {version}: {why}")]
    Migrate {
        location: String,
        version: i64,
        why: String,
    },
    #[error(
        "the store at {location} was written by a newer Sluice (schema {found}; this one knows up to {known}); upgrade Sluice or point --database/--data-dir elsewhere"
    )]
    TooNew {
        location: String,
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
    /// A write carried a fencing number that is no longer the flow's: the
    /// lease was taken over by another replica, which owns the flow now.
    #[error(
        "flow `{flow}`: {}, so the write for run {run} was refused",
        crate::lease::lost(*fence)
    )]
    Fenced {
        flow: String,
        run: String,
        fence: i64,
    },
    #[error("cannot record in the run history: {0}")]
    Word(#[from] UnknownWord),
    #[error(transparent)]
    State(#[from] StateError),
    /// A decision about an approval plan that cannot be made.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    #[error("the SQLite store failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the PostgreSQL store failed: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no connection to PostgreSQL could be had: {0}")]
    Pool(String),
    #[error("a store call stopped unexpectedly: {0}")]
    Task(String),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(e),
            other => StoreError::Pool(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError::Task(e.to_string())
    }
}
