//! Stop and reload signals, as `serve` and `run` both read them.
//!
//! SIGINT/SIGTERM (Ctrl-C elsewhere) escalate a [`Shutdown`]: the first
//! asks for a graceful stop, the second for a stop at once; a third leaves
//! the process without waiting for anything. SIGHUP (Unix only) counts up a
//! reload number in `serve`; elsewhere it is the terminal or SSH session
//! going away, and stops the process gracefully (its default action would
//! end a run the way `kill -9` does, its running items unrecorded).

use tokio::sync::watch;

use crate::scheduler::Shutdown;

/// The signals being watched.
pub struct Signals {
    pub stop: watch::Receiver<Shutdown>,
    /// Bumped on each SIGHUP; never changes where there is none.
    pub reload: watch::Receiver<u64>,
}

/// What SIGHUP means to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHangup {
    /// Read the flow files again (`serve`).
    Reload,
    /// The terminal is gone: stop gracefully, as for a first SIGTERM (a
    /// second SIGHUP adds nothing). A process started with SIGHUP ignored
    /// (`nohup`) keeps it ignored.
    Stop,
}

/// Starts watching stop signals and SIGHUP; the handlers replace the
/// default action of those signals.
pub fn watch(on_hangup: OnHangup) -> anyhow::Result<Signals> {
    let (stop_tx, stop) = watch::channel(Shutdown::No);
    let (reload_tx, reload_rx) = watch::channel(0u64);
    let reload = (on_hangup == OnHangup::Reload).then_some(reload_tx);
    spawn_handlers(stop_tx, reload)?;
    Ok(Signals {
        stop,
        reload: reload_rx,
    })
}

/// One more stop signal. A third leaves without waiting for anything: what
/// the history has not written by then is lost, and the runs it shows as
/// running read as interrupted later.
fn escalate(stop: &watch::Sender<Shutdown>) {
    if *stop.borrow() == Shutdown::Now {
        eprintln!("stopping without waiting: a third stop signal");
        std::process::exit(130);
    }
    stop.send_modify(Shutdown::escalate);
}

#[cfg(unix)]
fn spawn_handlers(
    stop: watch::Sender<Shutdown>,
    reload: Option<watch::Sender<u64>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // A process started under `nohup` (or `trap '' HUP`) was asked to
    // outlive its terminal: watching SIGHUP would replace that, so a
    // command that would stop on it leaves it ignored.
    let watch_hangup = reload.is_some() || !hangup_ignored();
    let mut hup = if watch_hangup {
        Some(signal(SignalKind::hangup())?)
    } else {
        None
    };
    tokio::spawn(async move {
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(hup) => hup.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term.recv() => escalate(&stop),
                _ = int.recv() => escalate(&stop),
                Some(()) = hangup => match &reload {
                    Some(reload) => reload.send_modify(|n| *n += 1),
                    None => hung_up(&stop),
                },
            }
        }
    });
    Ok(())
}

/// A hang-up asks for a graceful stop, never more: closing a terminal
/// often sends SIGHUP twice (the shell's to its jobs, the kernel's as the
/// session ends), and the second must not cut the running items off.
#[cfg(unix)]
fn hung_up(stop: &watch::Sender<Shutdown>) {
    stop.send_if_modified(|level| {
        let first = *level == Shutdown::No;
        if first {
            *level = Shutdown::Graceful;
        }
        first
    });
}

/// Whether SIGHUP is ignored (the process was started under `nohup`).
#[cfg(unix)]
fn hangup_ignored() -> bool {
    // SAFETY: with a null new action, `sigaction` only reads the current
    // one into `current`, which is a plain C struct.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(not(unix))]
fn spawn_handlers(
    stop: watch::Sender<Shutdown>,
    reload: Option<watch::Sender<u64>>,
) -> anyhow::Result<()> {
    tokio::spawn(async move {
        // No SIGHUP here: the reload sender is kept (never used) so a
        // reader's reload branch stays quiet rather than seeing it closed.
        let _reload = reload;
        while tokio::signal::ctrl_c().await.is_ok() {
            escalate(&stop);
        }
    });
    Ok(())
}
