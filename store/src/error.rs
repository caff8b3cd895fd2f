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
    #[error("the SQLite store failed: {}", sqlite_why(.0))]
    Sqlite(#[from] rusqlite::Error),
    /// tokio-postgres keeps the cause (the server's message, the refused
    /// connection) apart from its one-word description: both are shown.
    #[error("the PostgreSQL store failed: {}", with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no connection to PostgreSQL could be had: {0}")]
    Pool(String),
    #[error("a store call stopped unexpectedly: {0}")]
    Task(String),
    /// A read its caller stopped waiting for: a server that takes
    /// connections and then answers nothing would hold it for ever.
    #[error("the store did not answer within {} s", .0.as_secs())]
    NoAnswer(std::time::Duration),
}

impl StoreError {
    /// Whether the store failed for now rather than for good: it could not
    /// be reached, its connection was lost, it was shutting down, or it was
    /// busy. The same write may succeed once it answers again; a write it
    /// refused (a fenced one, a damaged file, a constraint) will not.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool(_) | StoreError::NoAnswer(_) => true,
            StoreError::Postgres(e) => match e.code() {
                // No answer from the server at all: a refused or lost
                // connection (not a value the client could not read).
                None => e.is_closed() || caused_by_io(e),
                Some(code) => {
                    let code = code.code();
                    // Connection exceptions, the server shutting down or
                    // starting, a serialization failure, a deadlock, or
                    // a row lock not had within `lock_timeout`.
                    code.starts_with("08")
                        || matches!(
                            code,
                            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03"
                        )
                }
            },
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

/// Refuses a database at schema `found` when this Sluice knows up to
/// `known`: what a newer Sluice wrote, this one must not act on.
pub(crate) fn refuse_newer(
    location: &dyn std::fmt::Display,
    found: i64,
    known: i64,
) -> Result<(), StoreError> {
    if found > known {
        return Err(StoreError::TooNew {
            location: location.to_string(),
            found,
            known,
        });
    }
    Ok(())
}

/// A health probe's words for a database that does not answer at all.
pub const NOT_ANSWERING: &str = "not answering";

impl StoreError {
    /// What is wrong with the database, in words a health probe may show
    /// to anyone (no address, no user, no server message): the class of
    /// the server's answer, so that an operator reading `/healthz` looks
    /// in the right place. The full error goes to the log.
    pub fn health_word(&self) -> &'static str {
        let code = match self {
            StoreError::Postgres(e) => e.code().map(|c| c.code()),
            StoreError::TooNew { .. } => return "written by a newer Sluice",
            _ => None,
        };
        match code {
            // Invalid authorization, invalid password.
            Some(c) if c.starts_with("28") => {
                "refuses the login (the password, or the role's right to log in)"
            }
            // Too many connections (the server's or the role's limit).
            Some("53300") => "refuses new sessions: its connection limit is reached",
            Some("57P03") => "starting up or shutting down",
            Some("3D000") => "has no such database",
            _ => NOT_ANSWERING,
        }
    }
}

/// Whether an I/O error (a refused, reset or timed-out connection) is
/// among `error`'s causes.
fn caused_by_io(error: &dyn std::error::Error) -> bool {
    let mut cause = error.source();
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// An SQLite error in words, with what to do when the file is damaged.
pub(crate) fn sqlite_why(error: &rusqlite::Error) -> String {
    format!("{error}{}", damaged_hint(error))
}

/// What to do about an SQLite file that is damaged or not a database:
/// nothing Sluice can repair, and not something to retry.
fn damaged_hint(error: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match error.sqlite_error_code() {
        Some(DatabaseCorrupt) => {
            " (the file is damaged: restore it from a backup, or move it aside, with its -wal file, to start a new history; the runs, approvals and flow state in it go with it)"
        }
        // Also what any other file (a typo in `--database`) gets.
        Some(NotADatabase) => {
            " (the file is not an SQLite database: if `--database` or the data directory names another file than Sluice's history, name the right one; if it is the history, it is damaged: restore it from a backup, or move it aside, with its -wal file, to start a new history)"
        }
        _ => "",
    }
}

/// An error and each cause it does not already say, joined by ": "
/// ("error connecting to server: Connection refused (os error 111)").
/// Libraries often repeat their cause in their own message (rusqlite:
/// "malformed", then "Error code 11: malformed"): a cause whose text, or
/// whose detail after its last ": ", the paragraph says already is left
/// out. The CLI prints every error this way.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        let detail = more.rsplit_once(": ").map(|(_, tail)| tail);
        if !text.contains(&more) && !detail.is_some_and(|d| text.contains(d)) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(e),
            deadpool_postgres::PoolError::Timeout(
                deadpool_postgres::TimeoutType::Create | deadpool_postgres::TimeoutType::Recycle,
            ) => StoreError::Pool(
                "the server did not finish starting a session in time (each host's `connect_timeout` from the URL, 10 s when it names none, and one more for startup and login): it may take connections without answering"
                    .into(),
            ),
            other => StoreError::Pool(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError::Task(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error connecting to server")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Plain(String, #[source] Option<Box<Plain>>);

    fn chain(parts: &[&str]) -> Plain {
        let mut error: Option<Box<Plain>> = None;
        for part in parts.iter().rev() {
            error = Some(Box::new(Plain((*part).to_string(), error)));
        }
        *error.unwrap()
    }

    #[test]
    fn a_cause_already_said_is_left_out() {
        let e = chain(&[
            "the SQLite store failed: disk image is malformed (the file is damaged: restore it)",
            "disk image is malformed",
            "Error code 11: disk image is malformed",
        ]);
        assert_eq!(
            with_causes(&e),
            "the SQLite store failed: disk image is malformed (the file is damaged: restore it)"
        );
        let e = chain(&["cannot open the store", "permission denied"]);
        assert_eq!(with_causes(&e), "cannot open the store: permission denied");
    }

    #[test]
    fn a_damaged_sqlite_file_says_what_to_do() {
        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some("database disk image is malformed".into()),
        );
        let shown = StoreError::from(corrupt).to_string();
        assert!(
            shown.starts_with("the SQLite store failed: database disk image is malformed (the file is damaged: restore it from a backup, or move it aside"),
            "{shown}"
        );
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(!StoreError::from(busy).to_string().contains("damaged"));
        // Any other file (`--database sqlite:/etc/passwd`) is named as
        // perhaps the wrong one before it is called damaged.
        let other = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
            Some("file is not a database".into()),
        );
        let shown = StoreError::from(other).to_string();
        assert!(
            shown.contains("(the file is not an SQLite database: if `--database` or the data directory names another file"),
            "{shown}"
        );
    }

    #[test]
    fn a_cause_kept_apart_is_shown_after_the_error() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let shown = with_causes(&Outer(refused));
        assert_eq!(shown, "error connecting to server: connection refused");
    }
}
