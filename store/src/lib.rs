//! Sluice's storage: the run history (every run with its steps, `for_each`
//! items with their keys, inputs and outputs, errors, request counts and
//! report files), the flow state store, approval plans and the decisions
//! made about them, the ledger (an index of items by key), and the rows
//! replicas coordinate through (claimed firings, leases with fencing
//! numbers) — behind one interface,
//! [`Backend`], with two backends:
//!
//! - **SQLite** (the default): `history.sqlite` in the data directory, or
//!   any file (`--database sqlite:PATH`); for one host.
//! - **PostgreSQL** (`--database postgres://…` / `SLUICE_DATABASE_URL`):
//!   shared by any number of `sluice serve` replicas.
//!
//! Invariants both keep:
//! - Each history write (or batch of writes for one run) is one committed
//!   transaction, made as the run progresses, so a crash leaves an honest
//!   partial record. A `running` run whose process (on this host) is known
//!   to be gone reads as `interrupted`; [`Backend::recover_stale_runs`]
//!   records that for good, and a replica whose lease expired has its run
//!   recorded interrupted by another ([`lease`]).
//! - Inputs and outputs are capped in size ([`cap`]), always as valid JSON.
//! - The store keeps what it is given and cannot know what is secret: the
//!   host redacts every text and value before it records it.
//! - Versioned migrations run when a store opens, once, however many
//!   processes open an empty database at once.
//!
//! Modules: [`backend`] (the interface and the [`Store`] handle),
//! [`browse`] (what the web console reads),
//! [`location`] (`--database`), [`sqlite`] and [`postgres`] (the
//! backends and their migrations), [`model`] (history types), [`state`]
//! (flow state types), [`approval`] (plans and decisions), [`ledger`]
//! (a key's story), [`lease`] (replica coordination), [`render`] (text
//! for the CLI), [`cap`] (size limits), [`duration`] (`30d`, `12h`),
//! [`process`] (which process wrote a run, and whether it lives). The crate
//! also owns run ids ([`new_run_id`]) and where Sluice keeps its data
//! ([`default_data_dir`]).

pub mod approval;
pub mod backend;
pub mod browse;
pub mod cap;
pub mod duration;
pub mod error;
pub mod lease;
pub mod ledger;
pub mod location;
pub mod model;
pub mod postgres;
pub mod process;
pub mod render;
pub mod sqlite;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::{Path, PathBuf};

pub use approval::{
    ApprovalError, Decision, DecisionOutcome, DecisionRecord, DecisionRequest, GateUpdate,
    HeldItem, PlanCounts, PlanDetail, PlanItem, PlanItemOutcome, PlanItemState, PlanQuery,
    PlanStatus, PlanSummary, Settled, key_norm, some_keys,
};
pub use backend::{Backend, Store};
pub use duration::{DurationError, parse_duration};
pub use error::StoreError;
pub use lease::{Acquired, Claim, Firing, Lapse, LeaseGrant, Takeover};
pub use ledger::{
    KeyApproval, LedgerEntry, LedgerEvent, LedgerKey, LedgerKeysPage, LedgerKeysQuery,
    MAX_KEYS_PAGE,
};
pub use location::{Location, LocationError};
pub use model::*;
pub use render::{DetailOptions, render_run_detail, render_run_detail_with, render_runs_table};
pub use state::{StateBatch, StateEntry, StateError, StateKey, StatePage, StateQuery, StateWrite};

/// The default SQLite file inside a data directory: `history.sqlite` (the
/// name it had before it held more than history).
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
/// `$XDG_DATA_HOME/sluice`, else `~/.local/share/sluice`, the home being
/// `$HOME` or, when that is unset (a service, a container), the user's
/// home in the system's user database (when it is a folder, and not
/// `/`). `None` when there is no such home: the caller says so and picks
/// a folder.
pub fn default_data_dir() -> Option<PathBuf> {
    // A system user's home may be `/nonexistent` or `/`: no place for
    // data, as no home is.
    let usable = |home: &PathBuf| home.is_dir() && home.as_path() != Path::new("/");
    data_dir_from(
        |name| std::env::var_os(name),
        || std::env::home_dir().filter(usable),
    )
}

/// [`default_data_dir`] with the environment and the user database given
/// as look-ups, so its order of precedence is tested without changing the
/// process's environment (shared by every thread of a test binary). An
/// empty variable counts as unset.
pub fn data_dir_from(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    home: impl FnOnce() -> Option<PathBuf>,
) -> Option<PathBuf> {
    let var = |name| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("SLUICE_DATA_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_DATA_HOME") {
        return Some(PathBuf::from(dir).join("sluice"));
    }
    let home = var("HOME")
        .map(PathBuf::from)
        .or_else(home)
        .filter(|h| !h.as_os_str().is_empty())?;
    Some(home.join(".local/share/sluice"))
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

/// A time as the history writes it: RFC 3339, UTC, milliseconds.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
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
    fn the_store_is_shareable_across_threads() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Store>();
    }
}
