//! The scheduler's sense of time, behind a trait so tests can move it by
//! hand instead of sleeping.
//!
//! Firing times are wall-clock instants, but a sleep is measured on a
//! monotonic clock that stops while the machine is suspended: a sleep
//! armed for an hour before a suspend ends long after the hour has passed.
//! So the timer never sleeps longer than [`MAX_SLEEP`] at once and reads the
//! wall clock again after each sleep; [`Clock::sleep`] may return early.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The longest single sleep: after a suspend or a clock change the timer
/// notices within this long.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// A sleep's future.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Wall-clock time and a way to wait.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// Waits about `duration`; may end early (callers read [`Clock::now`]
    /// again), never much later except across a suspend.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told, for tests: every sleep ends at the
/// next move.
#[cfg(test)]
pub mod manual {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;
    use tokio::sync::watch;

    pub struct ManualClock {
        now: watch::Sender<DateTime<Utc>>,
        sleeps: AtomicUsize,
        longest_ms: AtomicU64,
    }

    impl ManualClock {
        pub fn new(start: DateTime<Utc>) -> Self {
            Self {
                now: watch::Sender::new(start),
                sleeps: AtomicUsize::new(0),
                longest_ms: AtomicU64::new(0),
            }
        }

        /// Sets the time and wakes every sleeper.
        pub fn set(&self, to: DateTime<Utc>) {
            self.now.send_replace(to);
        }

        /// How many sleeps have begun.
        pub fn sleeps(&self) -> usize {
            self.sleeps.load(Ordering::SeqCst)
        }

        /// The longest sleep asked for.
        pub fn longest_sleep(&self) -> Duration {
            Duration::from_millis(self.longest_ms.load(Ordering::SeqCst))
        }

        /// Lets other tasks run until `n` sleeps have begun (bounded).
        pub async fn until_sleeps(&self, n: usize) {
            for _ in 0..10_000 {
                if self.sleeps() >= n {
                    return;
                }
                tokio::task::yield_now().await;
            }
            panic!("only {} sleeps began, expected {n}", self.sleeps());
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.now.borrow()
        }

        fn sleep(&self, duration: Duration) -> Sleep {
            let mut moved = self.now.subscribe();
            let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            self.longest_ms.fetch_max(ms, Ordering::SeqCst);
            self.sleeps.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let _ = moved.changed().await;
            })
        }
    }
}
