//! Which process wrote a run, and whether it is still alive.
//!
//! A run row carries the writer's host name, pid and a token naming this
//! process instance (pid plus the time the process first used the
//! history). Only a row written on this host can be judged here: a run of
//! another replica reads as [`Liveness::OtherHost`], and its lease says
//! whether it lives ([`crate::lease`]). The
//! token tells a restarted process that reuses an old pid — a container's
//! pid 1 — from the one that wrote the row. Whether another pid is alive is
//! known only on Unix (the kernel is asked, see [`pid_liveness`]); elsewhere the answer is
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
    /// The host name ([`host_name`]).
    pub host: String,
}

/// This machine's name (in a container, the pod's): the kernel's, else
/// `$HOSTNAME`, else `localhost`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The mark of the current process, fixed on first use. Its token is
/// `PID@NANOS`, and `/NAMESPACE` after it where the pid namespace is known
/// (see [`pid_namespace`]).
pub fn this_process() -> &'static ProcessMark {
    static MARK: OnceLock<ProcessMark> = OnceLock::new();
    MARK.get_or_init(|| {
        let pid = std::process::id();
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let namespace = pid_namespace()
            .map(|ns| format!("/{ns}"))
            .unwrap_or_default();
        ProcessMark {
            pid,
            token: format!("{pid}@{nanos}{namespace}"),
            host: host_name(),
        }
    })
}

/// This process's pid namespace (Linux: the inode `/proc/self/ns/pid`
/// names). Two containers of one Kubernetes pod share a host name but not
/// their pids: a pid written in another namespace says nothing here.
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let text = link.to_string_lossy();
    let inode = text.strip_prefix("pid:[")?.strip_suffix(']')?;
    inode
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| inode.to_string())
}

/// The pid namespace a token names, if it names one.
fn namespace_of(token: &str) -> Option<&str> {
    token.split_once('/').map(|(_, ns)| ns)
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
    /// Written on another host: its lease, not this host, says whether it
    /// lives.
    OtherHost,
    /// Cannot tell: this platform has no `/proc`, or the row has no pid,
    /// or it has this process's pid but no token (written before schema 2).
    Unknown,
}

/// Judges the writer of a row from its host, pid and token. A row without
/// a host (written before schema 5) was written on the one host that used
/// the file.
pub fn liveness(host: Option<&str>, pid: Option<i64>, token: Option<&str>) -> Liveness {
    let me = this_process();
    let Some(pid) = pid else {
        return Liveness::Unknown;
    };
    if host.is_some_and(|h| h != me.host) {
        return Liveness::OtherHost;
    }
    // Same host name, another pid namespace (another container of the
    // pod): its pids cannot be looked up from here.
    if let (Some(theirs), Some(ours)) = (token.and_then(namespace_of), namespace_of(&me.token))
        && theirs != ours
    {
        return Liveness::Unknown;
    }
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
    pid_liveness(pid)
}

/// Whether a pid of this host and pid namespace names a process: asked of
/// the kernel (`kill(pid, 0)`), not read from `/proc`, which hides other
/// users' processes where it is mounted `hidepid=2` or a unit has
/// `ProtectProc=invisible`. Only "no such process" is gone; a process of
/// another user (`EPERM`) is alive.
#[cfg(unix)]
fn pid_liveness(pid: i64) -> Liveness {
    // 0 and negative pids name process groups, not a process.
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return Liveness::Unknown;
    };
    if pid <= 0 {
        return Liveness::Unknown;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the pid exists
    // and may be signalled.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return Liveness::Alive;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => Liveness::Gone,
        Some(libc::EPERM) => Liveness::Alive,
        _ => Liveness::Unknown,
    }
}

#[cfg(not(unix))]
fn pid_liveness(_: i64) -> Liveness {
    Liveness::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_writers() {
        let me = this_process();
        let pid = Some(i64::from(me.pid));
        let here = Some(me.host.as_str());
        assert_eq!(liveness(here, pid, Some(&me.token)), Liveness::ThisProcess);
        // A row without a token (schema 1) that carries our pid was written
        // by an earlier process that had it, or by us: nobody can tell.
        assert_eq!(liveness(None, pid, None), Liveness::Unknown);
        assert_eq!(liveness(here, pid, Some("1@0")), Liveness::Gone);
        assert_eq!(liveness(None, None, None), Liveness::Unknown);
        // Another machine's process cannot be looked up from here.
        assert_eq!(
            liveness(Some("elsewhere"), Some(999_999_999), None),
            Liveness::OtherHost
        );
        if cfg!(unix) {
            assert_eq!(liveness(here, Some(999_999_999), None), Liveness::Gone);
        }
    }

    /// A process of another user is alive, whether or not `/proc` shows
    /// it: the kernel answers "not permitted", not "no such process". Pid
    /// 1 always runs and, for any user but root, belongs to another.
    #[cfg(unix)]
    #[test]
    fn another_users_process_is_alive_and_a_pid_group_is_unknown() {
        let here = Some(this_process().host.as_str());
        assert_eq!(liveness(here, Some(1), None), Liveness::Alive);
        assert_eq!(pid_liveness(0), Liveness::Unknown);
        assert_eq!(pid_liveness(-5), Liveness::Unknown);
        assert_eq!(pid_liveness(i64::MAX), Liveness::Unknown);
        // A process that has ended and been reaped is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i64::from(child.id());
        child.wait().unwrap();
        assert_eq!(pid_liveness(pid), Liveness::Gone);
    }

    #[test]
    fn a_writer_in_another_pid_namespace_is_not_judged_by_its_pid() {
        let me = this_process();
        let here = Some(me.host.as_str());
        let Some(ours) = namespace_of(&me.token) else {
            return; // no pid namespaces here: nothing to tell apart
        };
        let other = format!("999999999@1/{}0", ours);
        assert_eq!(
            liveness(here, Some(999_999_999), Some(&other)),
            Liveness::Unknown,
            "another container's pid"
        );
        let same = format!("999999999@1/{ours}");
        assert_eq!(
            liveness(here, Some(999_999_999), Some(&same)),
            Liveness::Gone
        );
        // A token written before namespaces were kept is judged as before.
        assert_eq!(
            liveness(here, Some(999_999_999), Some("999999999@1")),
            Liveness::Gone
        );
    }
}
