//! Stop and reload signals, as `serve` and `run` both read them.
//!
//! SIGINT/SIGTERM (Ctrl-C elsewhere) escalate a [`Shutdown`]: the first
//! asks for a graceful stop, the second for a stop at once; a third leaves
//! the process without waiting for anything. SIGHUP (Unix only) counts up a
//! reload number in `serve`; elsewhere it is the terminal or SSH session
//! going away, and stops the process as SIGTERM does (its default action
//! would end a run the way `kill -9` does, its running items unrecorded).

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
    /// The terminal is gone: stop as for SIGTERM. (What the commands
    /// print to a terminal that is gone is dropped, not a panic: see the
    /// print macros in `cli`.)
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
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => escalate(&stop),
                _ = int.recv() => escalate(&stop),
                Some(()) = hup.recv() => match &reload {
                    Some(reload) => reload.send_modify(|n| *n += 1),
                    None => escalate(&stop),
                },
            }
        }
    });
    Ok(())
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
