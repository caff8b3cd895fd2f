//! Which process wrote a run, and whether it is still alive.
//!
//! A run row carries the writer's pid and a token naming this process
//! instance (pid plus the time the process first used the history). The
//! token tells a restarted process that reuses an old pid — a container's
//! pid 1 — from the one that wrote the row. Whether another pid is alive is
//! known only on Linux (via `/proc`); elsewhere the answer is
//! [`Liveness::Unknown`] and a `running` row is taken at its word until
//! [`crate::History::recover_stale_runs`] is asked. A pid reused by an
//! unrelated process reads as alive: the row stays `running` until
//! recovery.

use std::sync::OnceLock;

/// This process, as it signs the runs it writes.
#[derive(Debug)]
pub struct ProcessMark {
    pub pid: u32,
    pub token: String,
}

/// The mark of the current process, fixed on first use.
pub fn this_process() -> &'static ProcessMark {
    static MARK: OnceLock<ProcessMark> = OnceLock::new();
    MARK.get_or_init(|| {
        let pid = std::process::id();
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        ProcessMark {
            pid,
            token: format!("{pid}@{nanos}"),
        }
    })
}

/// Whether the process that wrote a row still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// This very process instance.
    ThisProcess,
    /// Another process with that pid exists.
    Alive,
    /// Known to be gone.
    Gone,
    /// Cannot tell on this platform, or the row has no pid, or it has this
    /// process's pid but no token (written before schema 2).
    Unknown,
}

/// Judges the writer of a row from its pid and token.
pub fn liveness(pid: Option<i64>, token: Option<&str>) -> Liveness {
    let me = this_process();
    let Some(pid) = pid else {
        return Liveness::Unknown;
    };
    if pid == i64::from(me.pid) {
        // Rows from before schema 2 have no token: the same pid alone does
        // not prove the row is ours (pids are reused), nor that its writer
        // is gone.
        return match token {
            Some(t) if t == me.token => Liveness::ThisProcess,
            Some(_) => Liveness::Gone,
            None => Liveness::Unknown,
        };
    }
    if cfg!(target_os = "linux") {
        if pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists() {
            Liveness::Alive
        } else {
            Liveness::Gone
        }
    } else {
        Liveness::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_writers() {
        let me = this_process();
        let pid = Some(i64::from(me.pid));
        assert_eq!(liveness(pid, Some(&me.token)), Liveness::ThisProcess);
        // A row without a token (schema 1) that carries our pid was written
        // by an earlier process that had it, or by us: nobody can tell.
        assert_eq!(liveness(pid, None), Liveness::Unknown);
        assert_eq!(liveness(pid, Some("1@0")), Liveness::Gone);
        assert_eq!(liveness(None, None), Liveness::Unknown);
        if cfg!(target_os = "linux") {
            assert_eq!(liveness(Some(999_999_999), None), Liveness::Gone);
        }
    }
}
