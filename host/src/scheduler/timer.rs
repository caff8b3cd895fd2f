//! One flow's timer: a firing at each time its schedule gives.
//!
//! - The schedule comes through a watch channel: a reload that changes it
//!   re-arms the timer at once, so the new times apply from then on.
//! - Sleeps are short ([`super::clock::MAX_SLEEP`]) and the wall clock is
//!   read after each, so a suspend or a clock change is noticed.
//! - No backlog: when several times have come at once (the machine slept
//!   through them, or the host was stalled, for any length of time), only
//!   the latest still runs, if it is less than [`MISSED_AFTER`] late; the
//!   others are reported together (one `Missed`: how many, the first and
//!   the last), and the next time is counted from now. A single time
//!   found more than [`MISSED_AFTER`] late is reported, not run.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use super::clock::{Clock, MAX_SLEEP};
use crate::flow::schedule::Schedule;

/// How late a firing may be and still run.
pub const MISSED_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// Its time has come: run the flow for this scheduled instant.
    Fire(DateTime<Utc>),
    /// Scheduled instants passed unseen; none of them is run.
    Missed(Missed),
}

/// The scheduled times a stall passed over, reported as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    pub first: DateTime<Utc>,
    /// The last one counted (`first` when only one was missed).
    pub last: DateTime<Utc>,
    /// How many, from `first` to `last`.
    pub count: u64,
    /// More passed after `last` than the timer counts
    /// ([`MAX_MISSED_WALK`]): `count` is a lower bound.
    pub more: bool,
}

/// A tick of the timer tagged `tag` (the scheduler uses the flow file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing<T> {
    pub tag: T,
    pub tick: Tick,
}

enum Wait {
    Reached,
    Changed,
    Closed,
}

/// Sends `tag`'s firings until the schedule's sender or `fire`'s receiver
/// is dropped.
pub async fn run<T: Clone + Send + 'static>(
    tag: T,
    mut schedule: watch::Receiver<Option<Schedule>>,
    clock: Arc<dyn Clock>,
    fire: mpsc::UnboundedSender<Firing<T>>,
) {
    let mut after = clock.now();
    // The last time fired (or missed): never again, whatever the schedule.
    let mut last: Option<DateTime<Utc>> = None;
    loop {
        let next = schedule
            .borrow_and_update()
            .as_ref()
            .and_then(|s| s.next_after(after));
        let Some(next) = next else {
            // No schedule, or one that never fires again: wait for another.
            if schedule.changed().await.is_err() {
                return;
            }
            after = rearm_from(clock.now(), None, last);
            continue;
        };
        match wait_until(next, clock.as_ref(), &mut schedule).await {
            Wait::Reached => {}
            Wait::Changed => {
                after = rearm_from(clock.now(), Some(next), last);
                continue;
            }
            Wait::Closed => return,
        }
        let now = clock.now();
        // Every time due by now, from `next`: one, unless the host was
        // stalled or asleep across several (any stall, not only one of
        // more than a minute: a schedule that fires every few seconds
        // passes several in a short one).
        let due = due_since(schedule.borrow().as_ref(), next, now);
        let mut ticks = Vec::with_capacity(2);
        match due.before_latest {
            // The time that has come, a little late at most.
            None if !is_missed(next, now) => ticks.push(Tick::Fire(next)),
            // Several came: the latest runs if it is still recent, and
            // the ones before it are reported, not run.
            Some(before) if !is_missed(due.latest, now) => {
                ticks.push(Tick::Missed(Missed {
                    first: next,
                    last: before,
                    count: due.count - 1,
                    more: false,
                }));
                ticks.push(Tick::Fire(due.latest));
            }
            _ => ticks.push(Tick::Missed(Missed {
                first: next,
                last: due.latest,
                count: due.count,
                more: due.more,
            })),
        }
        let fired = due.latest;
        for tick in ticks {
            let firing = Firing {
                tag: tag.clone(),
                tick,
            };
            if fire.send(firing).is_err() {
                return;
            }
        }
        last = Some(fired);
        after = fired.max(now);
    }
}

/// Whether a time that fell due at `at` is too late to run at `now`.
fn is_missed(at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    (now - at).to_std().unwrap_or_default() > MISSED_AFTER
}

/// Bounds the walk over times missed in a long gap (a week of a schedule
/// that fires every second is 604 800 of them).
const MAX_MISSED_WALK: u64 = 1_000_000;

/// The scheduled times at or before `now`, from `first` (which is one).
struct Due {
    latest: DateTime<Utc>,
    /// The one before `latest`, if `first` is not the only one.
    before_latest: Option<DateTime<Utc>>,
    /// How many, `first` and `latest` included.
    count: u64,
    /// The walk stopped at [`MAX_MISSED_WALK`] with more still due.
    more: bool,
}

fn due_since(schedule: Option<&Schedule>, first: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    let mut due = Due {
        latest: first,
        before_latest: None,
        count: 1,
        more: false,
    };
    let Some(schedule) = schedule else {
        return due;
    };
    while let Some(t) = schedule.next_after(due.latest).filter(|t| *t <= now) {
        if due.count >= MAX_MISSED_WALK {
            due.more = true;
            break;
        }
        due.before_latest = Some(due.latest);
        due.latest = t;
        due.count += 1;
    }
    due
}

/// Where a re-armed timer counts from: just before now — or before the
/// time that was due, if the change came as it fell due — so a time that
/// falls due as the schedule changes is not lost; but never at or before a
/// time already fired.
fn rearm_from(
    now: DateTime<Utc>,
    due: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let from = due.map_or(now, |d| now.min(d)) - chrono::Duration::milliseconds(1);
    last.map_or(from, |l| from.max(l))
}

/// Sleeps in short steps until the wall clock reaches `at`, or the
/// schedule changes.
async fn wait_until(
    at: DateTime<Utc>,
    clock: &dyn Clock,
    schedule: &mut watch::Receiver<Option<Schedule>>,
) -> Wait {
    loop {
        let now = clock.now();
        if now >= at {
            return Wait::Reached;
        }
        let wait = (at - now).to_std().unwrap_or_default().min(MAX_SLEEP);
        tokio::select! {
            _ = clock.sleep(wait) => {}
            changed = schedule.changed() => {
                return if changed.is_ok() { Wait::Changed } else { Wait::Closed };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::super::clock::manual::ManualClock;
    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, h, m, s).single().unwrap()
    }

    fn every(cron: &str) -> Option<Schedule> {
        Some(Schedule::parse(cron, None).unwrap())
    }

    struct Harness {
        clock: Arc<ManualClock>,
        schedule: watch::Sender<Option<Schedule>>,
        ticks: mpsc::UnboundedReceiver<Firing<&'static str>>,
    }

    fn start(now: DateTime<Utc>, schedule: Option<Schedule>) -> Harness {
        let clock = Arc::new(ManualClock::new(now));
        let (schedule, rx) = watch::channel(schedule);
        let (fire, ticks) = mpsc::unbounded_channel();
        tokio::spawn(run("flow", rx, clock.clone(), fire));
        Harness {
            clock,
            schedule,
            ticks,
        }
    }

    impl Harness {
        async fn next(&mut self) -> Tick {
            self.ticks.recv().await.unwrap().tick
        }
        /// Nothing more was sent by the time the timer sleeps again.
        async fn quiet_after(&mut self, sleeps: usize) {
            self.clock.until_sleeps(sleeps).await;
            assert_eq!(self.ticks.try_recv().ok(), None);
        }
    }

    #[tokio::test]
    async fn fires_at_each_time_and_never_early() {
        let mut h = start(at(10, 0, 30), every("0 * * * * *"));
        h.clock.until_sleeps(1).await;
        h.clock.set(at(10, 0, 59));
        h.quiet_after(2).await;
        h.clock.set(at(10, 1, 0));
        assert_eq!(h.next().await, Tick::Fire(at(10, 1, 0)));
        // A little late (a loaded machine) still runs.
        h.clock.set(at(10, 2, 40));
        assert_eq!(h.next().await, Tick::Fire(at(10, 2, 0)));
        h.quiet_after(4).await;
        h.clock.set(at(10, 3, 0));
        assert_eq!(h.next().await, Tick::Fire(at(10, 3, 0)));
    }

    #[tokio::test]
    async fn a_gap_across_many_firings_is_not_replayed() {
        let mut h = start(at(10, 0, 30), every("0 * * * * *"));
        h.clock.until_sleeps(1).await;
        // The machine sleeps (or the host stalls) from 10:00:30 to 10:05:30:
        // five firings pass unseen. The four older ones are reported missed,
        // together, and not run; the latest, 30 s ago, still is, once.
        h.clock.set(at(10, 5, 30));
        assert_eq!(
            h.next().await,
            Tick::Missed(Missed {
                first: at(10, 1, 0),
                last: at(10, 4, 0),
                count: 4,
                more: false
            })
        );
        assert_eq!(h.next().await, Tick::Fire(at(10, 5, 0)));
        h.quiet_after(2).await;
        // The next run is the next time from now, once.
        h.clock.set(at(10, 6, 0));
        assert_eq!(h.next().await, Tick::Fire(at(10, 6, 0)));
        h.quiet_after(3).await;
    }

    #[tokio::test]
    async fn after_a_gap_the_latest_time_runs_only_if_it_is_recent() {
        let mut h = start(at(10, 0, 30), every("0 */10 * * * *"));
        h.clock.until_sleeps(1).await;
        // Asleep from 10:00:30 to 10:25:30: 10:10 and 10:20 passed; 10:20 is
        // five minutes late, too late to run.
        h.clock.set(at(10, 25, 30));
        assert_eq!(
            h.next().await,
            Tick::Missed(Missed {
                first: at(10, 10, 0),
                last: at(10, 20, 0),
                count: 2,
                more: false
            })
        );
        h.quiet_after(2).await;
        h.clock.set(at(10, 30, 0));
        assert_eq!(h.next().await, Tick::Fire(at(10, 30, 0)));
    }

    /// A stall shorter than a minute across several times of a schedule
    /// that fires every few seconds: the latest runs and the ones before
    /// it are reported. The earliest ran (late) and the rest were dropped
    /// without a word.
    #[tokio::test]
    async fn a_short_stall_across_several_times_runs_the_latest_and_reports_the_rest() {
        let mut h = start(at(10, 0, 31), every("*/5 * * * * *"));
        h.clock.until_sleeps(1).await;
        h.clock.set(at(10, 0, 56));
        assert_eq!(
            h.next().await,
            Tick::Missed(Missed {
                first: at(10, 0, 35),
                last: at(10, 0, 50),
                count: 4,
                more: false
            })
        );
        assert_eq!(h.next().await, Tick::Fire(at(10, 0, 55)));
        h.quiet_after(2).await;
        h.clock.set(at(10, 1, 0));
        assert_eq!(h.next().await, Tick::Fire(at(10, 1, 0)));
    }

    #[tokio::test]
    async fn a_single_missed_time_is_reported_alone() {
        let mut h = start(at(10, 0, 30), every("0 0 * * * *"));
        h.clock.until_sleeps(1).await;
        // 11:00 passed two minutes ago, the only time that did.
        h.clock.set(at(11, 2, 0));
        assert_eq!(
            h.next().await,
            Tick::Missed(Missed {
                first: at(11, 0, 0),
                last: at(11, 0, 0),
                count: 1,
                more: false
            })
        );
        h.quiet_after(2).await;
    }

    #[test]
    fn a_walk_too_long_to_count_says_there_were_more() {
        // Every second for twelve days: more than the walk counts.
        let schedule = every("* * * * * *");
        let first = at(0, 0, 1);
        let now = first + chrono::Duration::days(12);
        let due = due_since(schedule.as_ref(), first, now);
        assert_eq!(due.count, MAX_MISSED_WALK);
        assert!(due.more);
        assert!(due.latest < now);
        let few = due_since(schedule.as_ref(), first, at(0, 0, 10));
        assert_eq!(
            (few.count, few.latest, few.before_latest, few.more),
            (10, at(0, 0, 10), Some(at(0, 0, 9)), false)
        );
    }

    #[tokio::test]
    async fn a_changed_schedule_re_arms_at_once() {
        let mut h = start(at(10, 0, 1), every("0 0 0 1 1 *"));
        h.clock.until_sleeps(1).await;
        // Armed for next New Year, it sleeps no longer than a minute at once.
        h.schedule.send_replace(every("*/10 * * * * *"));
        h.clock.until_sleeps(2).await;
        h.clock.set(at(10, 0, 10));
        assert_eq!(h.next().await, Tick::Fire(at(10, 0, 10)));
        // A schedule that fires later than the old one would have: the old
        // time does not fire.
        h.clock.until_sleeps(3).await;
        h.schedule.send_replace(every("0 30 10 * * *"));
        h.clock.until_sleeps(4).await;
        h.clock.set(at(10, 0, 20));
        h.quiet_after(5).await;
        h.clock.set(at(10, 30, 0));
        assert_eq!(h.next().await, Tick::Fire(at(10, 30, 0)));
        // No schedule at all: nothing fires until there is one again.
        h.schedule.send_replace(None);
        h.clock.set(at(11, 30, 0));
        tokio::task::yield_now().await;
        assert_eq!(h.ticks.try_recv().ok(), None);
        // A schedule that arrives as its time falls due still fires it.
        h.schedule.send_replace(every("0 45 11 * * *"));
        h.clock.set(at(11, 45, 0));
        assert_eq!(h.next().await, Tick::Fire(at(11, 45, 0)));
        // Reloading right after a firing does not fire the same time twice.
        h.schedule.send_replace(every("0 45 11 * * *"));
        h.clock
            .set(at(11, 45, 0) + chrono::Duration::milliseconds(200));
        h.clock.until_sleeps(8).await;
        tokio::task::yield_now().await;
        assert_eq!(h.ticks.try_recv().ok(), None);
    }

    #[tokio::test]
    async fn a_reload_as_a_time_falls_due_does_not_lose_it() {
        // What re-arming relies on: a time a millisecond ahead is next.
        let minutely = every("0 * * * * *").unwrap();
        assert_eq!(
            minutely.next_after(at(10, 1, 0) - chrono::Duration::milliseconds(1)),
            Some(at(10, 1, 0))
        );
        let mut h = start(at(10, 0, 0), every("0 * * * * *"));
        h.clock.until_sleeps(1).await;
        // The time comes and the (unchanged) schedule is reloaded before
        // the timer runs again: whichever it sees first, 10:01 fires once.
        h.clock
            .set(at(10, 1, 0) + chrono::Duration::milliseconds(500));
        h.schedule.send_replace(every("0 * * * * *"));
        assert_eq!(h.next().await, Tick::Fire(at(10, 1, 0)));
        h.quiet_after(2).await;
        h.clock.set(at(10, 2, 0));
        assert_eq!(h.next().await, Tick::Fire(at(10, 2, 0)));
    }

    #[tokio::test]
    async fn sleeps_are_at_most_a_minute_and_the_timer_ends_with_its_schedule() {
        let h = start(at(10, 0, 0), every("0 0 0 1 1 *"));
        h.clock.until_sleeps(1).await;
        assert_eq!(h.clock.longest_sleep(), MAX_SLEEP);
        let Harness {
            schedule,
            mut ticks,
            ..
        } = h;
        drop(schedule);
        assert_eq!(ticks.recv().await, None, "the timer ended");
    }
}
