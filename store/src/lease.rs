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
//! - A process that acquires a lease not yet expired takes it over the
//!   same way, at once, when its holder is known to be gone: the lease
//!   names its holder's process (host, pid and token, as a run row names
//!   its writer), that process was on this host, and it has ended
//!   ([`holder_gone`]). So a `sluice run` killed with `kill -9` does not
//!   keep the next run on its host waiting, whether it was killed mid-run
//!   or before its run wrote anything; another host's holder, or one that
//!   cannot be judged, holds it until it expires. (A lease written before
//!   leases named their process is judged by its run's row, so only once
//!   that run is written.)
//!
//! PostgreSQL judges expiry by its own clock (`now()`), so the replicas'
//! clocks need not agree; SQLite serves one host and uses its clock.

use serde::Serialize;

use crate::process::{Liveness, liveness};

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
    /// The host and pid of the process `token` names, kept with the lease
    /// so a process on that host can see it gone before its run wrote
    /// anything; `None`: it cannot be judged, and holds the lease until it
    /// expires.
    pub host: Option<String>,
    pub pid: Option<i64>,
    pub run_id: String,
}

impl LeaseGrant {
    /// A lease for `run_id` asked by this process, under replica name
    /// `replica`.
    pub fn for_this_process(flow: &str, replica: &str, run_id: &str) -> Self {
        let me = crate::process::this_process();
        Self {
            flow: flow.to_string(),
            replica: replica.to_string(),
            token: me.token.clone(),
            host: Some(me.host.clone()),
            pid: Some(i64::from(me.pid)),
            run_id: run_id.to_string(),
        }
    }
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

/// A lease taken over from a holder that did not let go, with the run it
/// covered (now recorded interrupted, if it had written anything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Takeover {
    pub flow: String,
    /// The run the lease covered.
    pub run_id: Option<String>,
    /// Whether that run's row was found unfinished and is now recorded
    /// interrupted; false when it has none (its process ended before the
    /// run wrote anything) or it had ended.
    pub recorded: bool,
    /// The replica that held it.
    pub from_replica: String,
    /// When it expired (RFC 3339, UTC); for [`Lapse::HolderGone`], when it
    /// would have.
    pub expired_at: String,
    /// Why it could be taken.
    pub cause: Lapse,
    /// The fencing number after the takeover.
    pub fence: i64,
}

/// Why a lease its holder never let go of may be taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lapse {
    /// Its holder stopped renewing it and it expired.
    Expired,
    /// Before it expired: its holder's process (this pid), on this host,
    /// is known to be gone.
    HolderGone { pid: i64 },
}

impl Lapse {
    /// The error recorded on the run the lease covered, which replica
    /// `from` held and replica `by` took over.
    pub(crate) fn reason(&self, from: &str, expired_at: &str, by: &str) -> String {
        match self {
            Lapse::Expired => format!(
                "replica {from} stopped renewing the flow's lease (it expired at {expired_at}): the replica died or was cut off; recorded as interrupted by replica {by}"
            ),
            Lapse::HolderGone { pid } => format!(
                "the process of replica {from} that ran it (pid {pid}, on this host) ended before the run finished, holding the flow's lease; recorded as interrupted by replica {by}, which took the lease over at once"
            ),
        }
    }
}

/// A process as a row names it: the holder a lease names, or the writer
/// of a run.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pub host: Option<String>,
    pub pid: Option<i64>,
    pub token: Option<String>,
}

impl Writer {
    /// The process a lease row names, when it names one (a lease written
    /// before leases named their process has no pid).
    pub(crate) fn holding(
        host: Option<String>,
        pid: Option<i64>,
        token: Option<String>,
    ) -> Option<Writer> {
        pid.map(|pid| Writer {
            host,
            pid: Some(pid),
            token,
        })
    }
}

/// Whether the holder of a lease not yet expired is known to be gone, so
/// the lease can be taken over now rather than when it lapses: `writer` is
/// the process the lease names (or, for a lease that names none, the
/// writer of its run), it is the very process the lease's token names, it
/// was on this host, and it has ended ([`Liveness::Gone`]). A process on
/// another host, one alive (or a pid some other process now has), or one
/// that cannot be judged keeps the lease until it expires, as before:
/// taking a live run's lease would run the flow twice.
pub(crate) fn holder_gone(holder_token: Option<&str>, writer: Option<&Writer>) -> Option<Lapse> {
    let writer = writer?;
    let token = writer.token.as_deref()?;
    if holder_token != Some(token) {
        return None;
    }
    let pid = writer.pid?;
    (liveness(writer.host.as_deref(), Some(pid), Some(token)) == Liveness::Gone)
        .then_some(Lapse::HolderGone { pid })
}

/// What a replica is told once its lease under `fence` was taken over:
/// the same words whether a refused write or a renewal finds it out. The
/// new holder may be this very replica, once the lease lapsed while it
/// could not renew it (a database outage), so the words name neither.
pub fn lost(fence: i64) -> String {
    format!(
        "the flow's lease held under fence {fence} was taken over (by another replica, or by this one once it had lapsed)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::this_process;

    /// A run written on this host by an earlier process with our pid (a
    /// restarted container's pid 1): gone on every platform.
    fn earlier(token: &str) -> Writer {
        let me = this_process();
        Writer {
            host: Some(me.host.clone()),
            pid: Some(i64::from(me.pid)),
            token: Some(token.into()),
        }
    }

    #[test]
    fn only_a_holder_known_gone_on_this_host_gives_up_its_lease_early() {
        let me = this_process();
        let pid = i64::from(me.pid);
        let gone = earlier("earlier");
        assert_eq!(
            holder_gone(Some("earlier"), Some(&gone)),
            Some(Lapse::HolderGone { pid })
        );
        // The run's writer is not the process the lease names.
        assert_eq!(holder_gone(Some("another"), Some(&gone)), None);
        assert_eq!(holder_gone(None, Some(&gone)), None);
        // No run row yet: nothing to judge by.
        assert_eq!(holder_gone(Some("earlier"), None), None);
        // This very process is alive.
        let alive = earlier(&me.token);
        assert_eq!(holder_gone(Some(&me.token), Some(&alive)), None);
        // Another host's process is judged by its lease, not from here.
        let elsewhere = Writer {
            host: Some("another-host".into()),
            pid: Some(999_999_999),
            token: Some("t".into()),
        };
        assert_eq!(holder_gone(Some("t"), Some(&elsewhere)), None);
        // A row without a pid, or a token (written before schema 2).
        let no_pid = Writer {
            pid: None,
            ..gone.clone()
        };
        assert_eq!(holder_gone(Some("earlier"), Some(&no_pid)), None);
        let no_token = Writer {
            token: None,
            ..gone
        };
        assert_eq!(holder_gone(None, Some(&no_token)), None);
        if cfg!(target_os = "linux") {
            // Another pid on this host: gone when /proc has none, alive
            // (even if reused by another process) when it has.
            let dead = Writer {
                pid: Some(999_999_999),
                ..earlier("t")
            };
            assert_eq!(
                holder_gone(Some("t"), Some(&dead)),
                Some(Lapse::HolderGone { pid: 999_999_999 })
            );
            let live = Writer {
                pid: Some(1),
                ..earlier("t")
            };
            assert_eq!(holder_gone(Some("t"), Some(&live)), None);
        }
    }
}
