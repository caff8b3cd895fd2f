//! Replicas: which one runs a firing, and which one owns a flow's run.
//!
//! Several `sluice serve` processes on one database coordinate through two
//! kinds of rows, never through locks held by a session (those do not
//! survive a pooler in transaction mode, and a dead client can hold one
//! until TCP notices):
//!
//! - **Firings** (`flow`, `scheduled_at`) have a unique key: the replica
//!   whose insert lands claims the firing ([`Claim::Won`]); every other
//!   replica's insert finds the row and leaves the firing alone.
//! - **A lease per flow** says which replica runs the flow now, until
//!   when (`expires_at`, renewed by the running replica every third of the
//!   lease's time), and its **fencing number**: one more each time the
//!   lease changes hands. Every history and state write of a run carries
//!   the number it was granted, and the store refuses it once the lease's
//!   number has moved on, so a replica that was paused or cut off past
//!   its lease cannot write over the run of the flow's next owner.
//! - A lease that expires while it covers a run means its replica died or
//!   stalled: another replica takes it over ([`crate::Backend::take_over_expired`],
//!   or when it acquires the lease), records the run `interrupted` and
//!   bumps the number, all in one transaction; the next firing runs as
//!   usual.
//!
//! PostgreSQL judges expiry by its own clock (`now()`), so the replicas'
//! clocks need not agree; SQLite serves one host and uses its clock.

use serde::Serialize;

/// How long a claimed firing's row is kept: long enough that no replica
/// can still be about to fire it (a firing late by more than a minute is
/// not run at all), short enough that the table stays small.
pub const FIRINGS_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// One firing of a flow, as a replica claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub flow: String,
    /// The time the schedule gave (whole seconds): the same on every replica.
    pub scheduled_at: chrono::DateTime<chrono::Utc>,
    pub replica: String,
    /// The run it will be, if it runs.
    pub run_id: String,
}

/// The outcome of claiming a firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This replica claimed it and decides what happens to it.
    Won,
    /// Another replica did (named).
    Lost { replica: String },
}

/// Who asks for a flow's lease, for which run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    pub flow: String,
    /// The replica's name, as `sluice runs` shows it.
    pub replica: String,
    /// This process instance ([`crate::process::this_process`]): two
    /// processes with one replica name are still told apart.
    pub token: String,
    pub run_id: String,
}

/// The outcome of asking for a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours under this fencing number. `took_over` says whose
    /// expired lease it replaced, if any.
    Granted {
        fence: i64,
        took_over: Option<Takeover>,
    },
    /// Another run holds it and has not expired.
    Held {
        replica: String,
        run_id: Option<String>,
        /// When it lapses unless renewed (RFC 3339, UTC): a holder that
        /// stopped without letting go holds it until then.
        expires_at: String,
    },
}

/// An expired lease taken over, with the run it covered (now recorded
/// interrupted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Takeover {
    pub flow: String,
    /// The run the lease covered, if it was still running.
    pub run_id: Option<String>,
    /// The replica that held it.
    pub from_replica: String,
    /// When it expired (RFC 3339, UTC).
    pub expired_at: String,
    /// The fencing number after the takeover.
    pub fence: i64,
}

/// What a replica is told once its lease under `fence` was taken over:
/// the same words whether a refused write or a renewal finds it out.
pub fn lost(fence: i64) -> String {
    format!(
        "this replica no longer holds the flow's lease (fence {fence}; another replica took it over)"
    )
}

/// The error recorded on a run whose replica stopped renewing its lease.
pub(crate) fn lapsed(from: &str, expired_at: &str, by: &str) -> String {
    format!(
        "replica {from} stopped renewing the flow's lease (it expired at {expired_at}): the replica died or was cut off; recorded as interrupted by replica {by}"
    )
}
