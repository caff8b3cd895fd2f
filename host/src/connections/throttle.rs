//! Pacing one connection's requests: rate limits, budgets and Retry-After.
//!
//! One [`Throttle`] per connection, shared by every step and `for_each` item
//! using it. A request waits for its turn when any of these says so:
//! - the flow's own `rate_limit` (evenly spaced slots);
//! - a `Retry-After` from a 429 or 503: nothing is sent on the connection
//!   before it has passed;
//! - the service's budget headers (`X-Rate-Limit-Remaining`/`-Reset` as
//!   Procore sends them, `RateLimit-Remaining`/`-Reset` from the IETF draft):
//!   once the budget is spent, requests wait for the window to reset instead
//!   of running into 429s. Requests in flight are counted against the budget
//!   before the server reports them. While the budget is not known (the
//!   first request on the connection, and the first after a spent window
//!   resets) one request goes alone, and its answer says what the window
//!   allows: a budget smaller than a step's concurrency is never overrun,
//!   and a window that rolls (Procore's spike limit) gives back at its
//!   reset only what has left it by then, which a burst of every waiting
//!   request would overrun. A `Retry-After` hold ends the same way: the
//!   service that refused a burst learns from one request that it takes
//!   requests again before the rest follow.
//!
//! Every wait comes from a remote header, so none is trusted blindly: no
//! wait is longer than [`MAX_WAIT`]. A budget window said to reset later
//! than that (a Reset in milliseconds, a garbled value) is ignored, as if
//! the service had sent no budget. A `Retry-After` longer than that closes
//! the connection until it passes: requests fail at once with a retryable
//! error instead of holding a run for hours.
//!
//! Time: every wait is measured on tokio's clock, and the Unix time that
//! Procore's `X-Rate-Limit-Reset` is read against comes from a
//! [`WallClock`]. A test pauses tokio's clock and gives the throttle a wall
//! clock that follows it, so every clock the throttle reads stands still or
//! moves together, and waits are exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Where a [`Throttle`] reads the Unix time.
#[derive(Debug, Clone, Copy)]
pub enum WallClock {
    /// The system's clock, read each time: right across suspends and clock
    /// changes, which a clock derived from a monotonic one would not be.
    System,
    /// `unix` (since the epoch) at tokio's instant `at`, moving with tokio's
    /// clock from there: paused and advanced with it.
    FollowsTokio { at: Instant, unix: Duration },
}

impl WallClock {
    /// A clock that says `unix` now and then moves with tokio's clock.
    pub fn following_tokio(unix: Duration) -> WallClock {
        WallClock::FollowsTokio {
            at: Instant::now(),
            unix,
        }
    }

    /// Time since the Unix epoch.
    pub fn now(&self) -> Duration {
        match self {
            WallClock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            WallClock::FollowsTokio { at, unix } => unix.saturating_add(at.elapsed()),
        }
    }
}

/// Waiting a little past the announced reset absorbs whole-second rounding.
const RESET_MARGIN: Duration = Duration::from_millis(250);

/// How long requests waiting behind a probe go without looking again, if
/// nothing wakes them.
const PROBE_SAFEGUARD: Duration = Duration::from_secs(1);

/// The longest a request waits for its turn. Rate-limit windows are
/// seconds to an hour long (Procore's is a minute, Graph's seconds); a
/// longer wait is a garbled header or a service that wants us gone for
/// the day, and is better reported than slept through. Flow checking caps
/// retry delays with the same value, so it lives in [`crate::http_rules`].
pub const MAX_WAIT: Duration = crate::http_rules::MAX_WAIT;

/// `at + d`, or the furthest representable point not beyond a year from
/// `at`: remote input must not make instant arithmetic overflow.
fn later(at: Instant, d: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(366 * 24 * 3600);
    at.checked_add(d.min(YEAR))
        .or_else(|| at.checked_add(MAX_WAIT))
        .unwrap_or(at)
}

#[derive(Debug)]
pub struct Throttle {
    /// The pace given at creation; connections sharing the throttle add
    /// their own ([`Throttle::pace`]) and the slowest of all applies.
    interval: Option<Duration>,
    /// Names the next [`Pace`].
    next_pace: AtomicU64,
    wall: WallClock,
    state: Mutex<State>,
    /// Wakes waiting requests when a response gives budget back (the
    /// server's exact count after guessing about requests in flight).
    budget_changed: tokio::sync::Notify,
}

#[derive(Debug)]
struct State {
    next_slot: Instant,
    not_before: Instant,
    /// Set by a `Retry-After` longer than [`MAX_WAIT`]: until then every
    /// request fails at once.
    closed_until: Option<Instant>,
    budget: Option<Budget>,
    /// Requests sent and not yet answered: the server's next count may not
    /// include them yet. Only [`Permit`]s change it, so a request that is
    /// abandoned (its step timed out, its token could not be had) still
    /// gives its place back.
    in_flight: u64,
    /// The `rate_limit` of each connection using the throttle now.
    paces: Vec<(u64, Duration)>,
    /// Whether the budget is known, or one request must find it out.
    probe: Probe,
    /// A `Retry-After` hold was put in force and has not been followed by
    /// a probe yet: the first request after it goes alone.
    held: bool,
}

/// Whether an answer has said what the budget is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// It has (or has said the service announces none): requests go by
    /// the budget.
    Known,
    /// No answer has said yet, or a spent budget's window has reset since:
    /// the next request goes alone (the probe).
    Wanted,
    /// The probe is in flight, and the others wait for its answer. Only
    /// it holds them back: requests sent before a reset may still be in
    /// flight, and need not be waited for.
    Out,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    remaining: u64,
    /// The lowest count the server has announced in this window: answers
    /// can arrive out of order, and within a window the count only falls.
    lowest_announced: u64,
    reset_at: Instant,
    /// The server's own name for the window, to tell a new window from an old one.
    window: u64,
}

/// What a throttle holds back now: requests sent and not answered yet
/// (by every connection sharing it), and whether nothing may go out for a
/// while, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Busy {
    pub in_flight: u64,
    pub held: Option<(Duration, Held)>,
}

/// Why nothing goes out for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A `Retry-After` the service sent.
    AsAsked,
    /// The budget the service announced is spent until its window resets.
    BudgetSpent,
    /// A `Retry-After` past [`MAX_WAIT`]: requests fail at once until then.
    Closed,
}

impl Busy {
    /// In words, or `None` when nothing is in flight or held.
    pub fn words(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.in_flight > 0 {
            parts.push(format!(
                "{} request{} waiting for an answer",
                self.in_flight,
                if self.in_flight == 1 { "" } else { "s" }
            ));
        }
        parts.extend(self.held_words());
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// What holds requests back, in words, or `None` when nothing does.
    pub fn held_words(&self) -> Option<String> {
        let (left, why) = self.held?;
        let left = humantime::format_duration(Duration::from_secs(left.as_secs().max(1)));
        Some(match why {
            Held::AsAsked => {
                format!("nothing sent for {left} more, as the service asked (Retry-After)")
            }
            Held::BudgetSpent => format!("its rate budget is spent until it resets in {left}"),
            Held::Closed => format!(
                "requests refused for {left} more: the service asked for a longer wait than Sluice makes"
            ),
        })
    }
}

/// A request's place among those in flight; dropping it without
/// [`Permit::answered`] means the request ended without a response.
#[derive(Debug)]
#[must_use]
pub struct Permit<'a> {
    throttle: &'a Throttle,
    answered: bool,
    /// This request is the probe: its answer ends the probing.
    probe: bool,
}

impl Permit<'_> {
    /// The request was answered: puts the `hold` its answer asks for (a
    /// Retry-After) in force, then reads its budget headers (names
    /// lower-case). In that order: the answer wakes the requests waiting
    /// behind a probe, and they must find the hold.
    pub fn answered(mut self, headers: &[(String, String)], hold: Option<Duration>) {
        self.answered = true;
        if let Some(delay) = hold {
            // A delay past the longest wait closes the connection; the
            // caller's decision already gives its request up.
            let _ = self.throttle.hold_for(delay);
        }
        self.throttle.observe(headers, self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.answered
            && let Ok(mut s) = self.throttle.state.lock()
        {
            s.in_flight = s.in_flight.saturating_sub(1);
            if self.probe {
                // A probe that got no answer: the next request probes.
                s.probe = Probe::Wanted;
                drop(s);
                self.throttle.budget_changed.notify_waiters();
            }
        }
    }
}

/// One connection's own `rate_limit` on a throttle it shares with others:
/// in force while the connection holds it.
#[derive(Debug)]
pub struct Pace {
    throttle: Arc<Throttle>,
    id: u64,
}

impl Drop for Pace {
    fn drop(&mut self) {
        if let Ok(mut s) = self.throttle.state.lock() {
            s.paces.retain(|(id, _)| *id != self.id);
        }
    }
}

/// Requests `per_second` apart, within [`MAX_WAIT`]. Validation keeps rates
/// within bounds; a rate that is not (zero, negative, not finite) spaces
/// requests by the longest wait.
fn spacing(per_second: f64) -> Duration {
    Duration::try_from_secs_f64(1.0 / per_second)
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT)
}

/// The service asked for no requests for longer than [`MAX_WAIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the service asked for no requests on this connection for another {}, longer than the {} Sluice waits; try again later",
    readable(self.0),
    humantime::format_duration(MAX_WAIT)
)]
pub struct Closed(pub Duration);

/// A wait in words, to the second; anything past a year is just that.
pub(super) fn readable(d: Duration) -> String {
    if d > Duration::from_secs(366 * 24 * 3600) {
        "more than a year".to_string()
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// A request's turn: now, with its permit, or not before an instant.
enum Turn<'a> {
    Now(Permit<'a>),
    At(Instant),
}

/// What [`Throttle::hold_for`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Requests wait until the delay has passed.
    Wait,
    /// The delay is longer than [`MAX_WAIT`]: requests fail until it passes.
    Closed(Closed),
}

impl Throttle {
    pub fn new(per_second: Option<f64>) -> Self {
        Self::with_wall_clock(per_second, WallClock::System)
    }

    /// A throttle that reads Unix time from `wall` (tests: a clock that
    /// follows tokio's paused one).
    pub fn with_wall_clock(per_second: Option<f64>, wall: WallClock) -> Self {
        let now = Instant::now();
        Self {
            wall,
            interval: per_second.map(spacing),
            next_pace: AtomicU64::new(0),
            budget_changed: tokio::sync::Notify::new(),
            state: Mutex::new(State {
                next_slot: now,
                not_before: now,
                closed_until: None,
                budget: None,
                in_flight: 0,
                paces: Vec::new(),
                probe: Probe::Wanted,
                held: false,
            }),
        }
    }

    /// Adds a connection's own `rate_limit` to a shared throttle for as
    /// long as the returned [`Pace`] lives. Requests are spaced by the
    /// slowest pace in force: every connection sharing the throttle talks
    /// to the same API, and the strictest limit anyone declared for it is
    /// the one that keeps all of them within it.
    pub fn pace(self: &Arc<Self>, per_second: Option<f64>) -> Option<Pace> {
        let interval = spacing(per_second?);
        let id = self.next_pace.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.state.lock() {
            s.paces.push((id, interval));
        }
        Some(Pace {
            throttle: self.clone(),
            id,
        })
    }

    /// The spacing in force: the slowest of the throttle's own and every pace.
    fn interval(&self, s: &State) -> Option<Duration> {
        s.paces.iter().map(|(_, i)| *i).chain(self.interval).max()
    }

    /// Waits for this request's turn; returns its permit and how long it
    /// waited (zero when it went at once), or why the connection is closed
    /// for now.
    pub async fn acquire(&self) -> Result<(Permit<'_>, Duration), Closed> {
        // Most requests go at once: only one that must wait listens for
        // changes.
        let mut wait_until = match self.turn()? {
            Turn::Now(permit) => return Ok((permit, Duration::ZERO)),
            Turn::At(at) => at,
        };
        let started = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wait_until) => {}
                _ = self.changed_after(wait_until) => {}
            }
            wait_until = match self.turn()? {
                Turn::Now(permit) => return Ok((permit, started.elapsed())),
                Turn::At(at) => at,
            };
        }
    }

    /// Resolves when the budget changes after this is called, or at once
    /// when the turn it was asked for has come (a change made between the
    /// caller's read and this call is not missed).
    async fn changed_after(&self, wait_until: Instant) {
        // Listening before the state is read again: a change made after
        // the read wakes this wait.
        let changed = self.budget_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if matches!(self.turn_at(), Some(at) if at < wait_until) {
            return;
        }
        changed.await;
    }

    /// When a request could go now, without taking a turn; `None` when
    /// the lock is poisoned or the connection is closed (the next
    /// [`Throttle::turn`] says so).
    fn turn_at(&self) -> Option<Instant> {
        let s = self.state.lock().ok()?;
        let now = Instant::now();
        if s.closed_until.is_some_and(|until| until > now) {
            return None;
        }
        Some(self.earliest(&s, now))
    }

    /// The earliest a request may go, by the state as it is.
    fn earliest(&self, s: &State, now: Instant) -> Instant {
        let mut at = s.not_before.max(now);
        if self.interval(s).is_some() {
            at = at.max(s.next_slot);
        }
        if let Some(b) = s.budget
            && b.remaining == 0
            && b.reset_at > now
        {
            at = at.max(b.reset_at);
        }
        if s.probe == Probe::Out {
            // Woken by the probe's answer ([`Throttle::observe`]) or its
            // end without one ([`Permit`]'s drop); looking again after a
            // while is only a safeguard.
            at = at.max(later(now, PROBE_SAFEGUARD));
        }
        at
    }

    /// Takes a turn if this request may go now; otherwise says when to
    /// look again.
    fn turn(&self) -> Result<Turn<'_>, Closed> {
        let Ok(mut s) = self.state.lock() else {
            // A poisoned lock paces nothing; the permit counts nothing.
            return Ok(Turn::Now(Permit {
                throttle: self,
                answered: true,
                probe: false,
            }));
        };
        let now = Instant::now();
        if let Some(until) = s.closed_until {
            if until > now {
                return Err(Closed(until - now));
            }
            s.closed_until = None;
        }
        if let Some(b) = s.budget
            && b.remaining == 0
            && b.reset_at <= now
        {
            // The window has reset; the next response tells the new budget.
            s.budget = None;
            if s.probe == Probe::Known {
                s.probe = Probe::Wanted;
            }
        }
        if s.held && s.not_before <= now && s.probe != Probe::Out {
            // The hold has passed: one request finds out whether the
            // service takes requests again, and the others follow its
            // answer rather than all going at once. (A probe still out
            // ends its probing first; its answer lets this happen.)
            s.held = false;
            s.probe = Probe::Wanted;
        }
        let at = self.earliest(&s, now);
        if at > now {
            return Ok(Turn::At(at));
        }
        if let Some(interval) = self.interval(&s) {
            s.next_slot = later(s.next_slot.max(now), interval);
        }
        if let Some(b) = s.budget.as_mut() {
            b.remaining = b.remaining.saturating_sub(1);
        }
        s.in_flight += 1;
        let probe = s.probe == Probe::Wanted;
        if probe {
            s.probe = Probe::Out;
        }
        Ok(Turn::Now(Permit {
            throttle: self,
            answered: false,
            probe,
        }))
    }

    /// What holds requests back now, for a run that has been quiet a
    /// while (see [`Busy`]).
    pub fn busy(&self) -> Busy {
        let Ok(s) = self.state.lock() else {
            return Busy::default();
        };
        let now = Instant::now();
        let held = if let Some(until) = s.closed_until.filter(|u| *u > now) {
            Some((until - now, Held::Closed))
        } else if s.not_before > now {
            Some((s.not_before - now, Held::AsAsked))
        } else {
            s.budget
                .filter(|b| b.remaining == 0 && b.reset_at > now)
                .map(|b| (b.reset_at - now, Held::BudgetSpent))
        };
        Busy {
            in_flight: s.in_flight,
            held,
        }
    }

    /// Nothing is sent before `delay` from now has passed. A delay longer
    /// than [`MAX_WAIT`] closes the connection until then instead.
    pub fn hold_for(&self, delay: Duration) -> Hold {
        let Ok(mut s) = self.state.lock() else {
            return Hold::Wait;
        };
        let now = Instant::now();
        let until = later(now, delay);
        s.held = true;
        if delay > MAX_WAIT {
            s.closed_until = Some(s.closed_until.map_or(until, |c| c.max(until)));
            return Hold::Closed(Closed(delay));
        }
        s.not_before = s.not_before.max(until);
        Hold::Wait
    }

    /// A response's `Retry-After`, a date read on this throttle's wall clock.
    pub fn retry_after(&self, value: &str) -> Option<Duration> {
        parse_retry_after_at(value, self.wall.now())
    }

    /// Reads a response's budget headers; its request is no longer in
    /// flight. The answer to the probe (`probe`) ends the probing.
    fn observe(&self, headers: &[(String, String)], probe: bool) {
        let announced = budget_from(headers, self.wall.now());
        // One critical section: what is in flight and the budget must agree.
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.in_flight = s.in_flight.saturating_sub(1);
        // The probe's answer announced the budget, or that the service
        // announces none. Other answers may be from before a reset.
        let probed = probe && s.probe != Probe::Known;
        if probe {
            s.probe = Probe::Known;
        }
        let Some((remaining, until_reset, window)) = announced else {
            drop(s);
            if probed {
                self.budget_changed.notify_waiters();
            }
            return;
        };
        let announced = remaining;
        // Requests still in flight may not be in the server's count yet.
        let settled = s.in_flight == 0;
        let remaining = announced.saturating_sub(s.in_flight);
        let now = Instant::now();
        let reset_at = later(now, until_reset + RESET_MARGIN);
        s.budget = Some(match s.budget {
            // A late answer from a window that has passed, or one from an
            // earlier window that binds less tightly than the budget in
            // force, says nothing now.
            Some(b) if window < b.window && (until_reset.is_zero() || b.remaining <= remaining) => {
                b
            }
            // Same window, nothing else in flight: the server's lowest count
            // is exact, and gives back what guessing about requests in
            // flight held back (at a window's end that is the difference
            // between finishing now and a whole window later).
            Some(b) if b.window == window && settled => {
                let lowest = b.lowest_announced.min(announced);
                Budget {
                    remaining: lowest,
                    lowest_announced: lowest,
                    ..b
                }
            }
            // Same window: the smaller count wins, since our own count
            // already includes requests the server has not answered yet.
            Some(b) if b.window == window => Budget {
                remaining: b.remaining.min(remaining),
                lowest_announced: b.lowest_announced.min(announced),
                ..b
            },
            // A spent window holds until it resets, whatever window the
            // answer names: Procore announces either its 10-second or its
            // hourly window, whichever it expects a client to exceed first,
            // so a spent 10-second window must not be forgotten when the
            // next answer names the hour.
            Some(b) if b.window != window && b.remaining == 0 && b.reset_at > now => b,
            _ => Budget {
                remaining,
                lowest_announced: announced,
                reset_at,
                window,
            },
        });
        drop(s);
        self.budget_changed.notify_waiters();
    }
}

/// The budget a response announces: requests remaining, time until the
/// window resets, and the window's name. `None` when it announces none,
/// or a reset further away than [`MAX_WAIT`], which no real window is.
/// `now_unix` is the time since the Unix epoch.
fn budget_from(headers: &[(String, String)], now_unix: Duration) -> Option<(u64, Duration, u64)> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    };
    let (remaining, until_reset, window) = if let (Some(r), Some(reset)) =
        (get("x-rate-limit-remaining"), get("x-rate-limit-reset"))
    {
        // Procore: Reset is the Unix time (seconds) at which the window resets.
        (
            r,
            Duration::from_secs(reset).saturating_sub(now_unix),
            reset,
        )
    } else if let (Some(r), Some(reset)) = (get("ratelimit-remaining"), get("ratelimit-reset")) {
        // IETF draft: Reset is seconds from now.
        let until = Duration::from_secs(reset);
        (r, until, now_unix.as_secs().saturating_add(reset))
    } else {
        return None;
    };
    (until_reset <= MAX_WAIT).then_some((remaining, until_reset, window))
}

/// Parses `Retry-After`: delta seconds (possibly fractional, as Graph sends)
/// or an HTTP date. A value too large to represent reads as the longest
/// duration, which callers treat as "longer than we wait".
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, WallClock::System.now())
}

/// [`parse_retry_after`] with a date read against `now_unix` (time since
/// the Unix epoch).
fn parse_retry_after_at(value: &str, now_unix: Duration) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_nan() || seconds < 0.0 {
            return None;
        }
        return Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Some(at.saturating_sub(now_unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a quiet run's line says of a throttle: its requests in flight
    /// and the wait in force, and nothing when idle.
    #[tokio::test(start_paused = true)]
    async fn busy_says_what_is_in_flight_and_held() {
        let throttle = Throttle::new(None);
        assert_eq!(throttle.busy().words(), None);
        let (permit, _) = throttle.acquire().await.unwrap();
        let _ = throttle.hold_for(Duration::from_secs(40));
        assert_eq!(
            throttle.busy().words().as_deref(),
            Some(
                "1 request waiting for an answer, nothing sent for 40s more, as the service asked (Retry-After)"
            )
        );
        permit.answered(&[], None);
        tokio::time::advance(Duration::from_secs(41)).await;
        assert_eq!(throttle.busy().words(), None);
        let _ = throttle.hold_for(MAX_WAIT + Duration::from_secs(60));
        assert!(
            throttle
                .busy()
                .words()
                .is_some_and(|w| w.starts_with("requests refused for ")),
            "{:?}",
            throttle.busy()
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("2.128"),
            Some(Duration::from_secs_f64(2.128))
        );
        assert_eq!(parse_retry_after("soon"), None);
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&future).unwrap();
        assert!(
            d > Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
    }

    /// A Retry-After date is read on the throttle's wall clock, which
    /// follows tokio's paused clock in tests.
    #[tokio::test(start_paused = true)]
    async fn a_retry_after_date_is_read_on_the_clock_tests_pause() {
        let t = at_start();
        let date = UNIX_EPOCH + Duration::from_secs(START + 90);
        let date = httpdate::fmt_http_date(date);
        assert_eq!(t.retry_after(&date), Some(Duration::from_secs(90)));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(t.retry_after(&date), Some(Duration::from_secs(30)));
        assert_eq!(t.retry_after("2.5"), Some(Duration::from_millis(2500)));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(t.retry_after(&date), Some(Duration::ZERO), "a date past");
    }

    // Paused time: waits are exact, and take no real time.
    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_waits_for_the_reset() {
        let t = Throttle::new(None);
        t.observe(&budget("1", "ratelimit-reset", "30".into()), true);
        assert_eq!(t.acquire().await.unwrap().1, Duration::ZERO);
        let waited = t.acquire().await.unwrap().1;
        assert_eq!(waited, Duration::from_secs(30) + RESET_MARGIN);
    }

    /// On the real clock: a request that finds nothing to wait for says it
    /// waited not at all (the connection asks for a token again only
    /// after a wait), and one held back says how long.
    #[tokio::test]
    async fn a_request_that_goes_at_once_reports_no_wait() {
        let t = Throttle::new(None);
        for _ in 0..3 {
            let (permit, waited) = t.acquire().await.unwrap();
            assert_eq!(waited, Duration::ZERO);
            permit.answered(&[], None);
        }
        assert_eq!(t.hold_for(Duration::from_millis(30)), Hold::Wait);
        let (_, waited) = t.acquire().await.unwrap();
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_every_request() {
        let t = Throttle::new(None);
        assert_eq!(t.hold_for(Duration::from_millis(200)), Hold::Wait);
        assert_eq!(t.acquire().await.unwrap().1, Duration::from_millis(200));
        assert_eq!(t.acquire().await.unwrap().1, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_requests() {
        let t = Throttle::new(Some(50.0));
        let start = Instant::now();
        for _ in 0..11 {
            let _ = t.acquire().await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }

    /// Connections sharing a throttle: the slowest pace in force spaces
    /// every request, and a pace ends with the connection that set it.
    #[tokio::test(start_paused = true)]
    async fn the_slowest_pace_of_the_connections_sharing_a_throttle_applies() {
        let t = std::sync::Arc::new(Throttle::new(None));
        let fast = t.pace(Some(100.0));
        let slow = t.pace(Some(10.0));
        assert!(t.pace(None).is_none(), "no rate_limit, no pace");
        let start = Instant::now();
        for _ in 0..3 {
            let _ = t.acquire().await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        drop(slow);
        // The slot after the last one taken at the slow pace, then the fast pace.
        let start = Instant::now();
        for _ in 0..3 {
            let _ = t.acquire().await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::from_millis(120));
        drop(fast);
        let start = Instant::now();
        for _ in 0..3 {
            let _ = t.acquire().await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "no pace left: at once");
    }

    /// The Unix second the tests' wall clock starts at (2026-05-28).
    const START: u64 = 1_780_000_000;

    /// A throttle whose wall clock says [`START`] now and follows tokio's
    /// (paused) clock from there.
    fn at_start() -> Throttle {
        Throttle::with_wall_clock(None, WallClock::following_tokio(Duration::from_secs(START)))
    }

    /// Procore's Unix-seconds reset moves with tokio's clock: a window
    /// announced to reset in a minute, 40 s later, is waited out for 20 s.
    #[tokio::test(start_paused = true)]
    async fn a_unix_reset_is_read_on_the_clock_tests_pause() {
        let t = at_start();
        let (p, _) = t.acquire().await.unwrap();
        p.answered(
            &budget("0", "x-rate-limit-reset", (START + 60).to_string()),
            None,
        );
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(t.wall.now(), Duration::from_secs(START + 40));
        let waited = t.acquire().await.unwrap().1;
        assert_eq!(waited, Duration::from_secs(20) + RESET_MARGIN);
        assert_eq!(t.wall.now(), Duration::from_secs(START + 60) + RESET_MARGIN);
    }

    fn budget(remaining: &str, reset_name: &str, reset: String) -> Vec<(String, String)> {
        let prefix = reset_name.trim_end_matches("reset");
        vec![
            (format!("{prefix}remaining"), remaining.to_string()),
            (reset_name.to_string(), reset),
        ]
    }

    /// A request that waits for its turn in a task of its own, is answered
    /// without a budget, and says how long it waited.
    fn waiter(t: &std::sync::Arc<Throttle>) -> tokio::task::JoinHandle<Duration> {
        let t = t.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (p, _) = t.acquire().await.unwrap();
            p.answered(&[], None);
            started.elapsed()
        })
    }

    /// Goes at once (well within half a second), or the test fails.
    async fn goes_at_once(t: &Throttle) {
        let _permit = tokio::time::timeout(Duration::from_millis(500), t.acquire())
            .await
            .expect("the request was held")
            .expect("the connection is closed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_request_gives_its_place_back() {
        let t = at_start();
        // A request whose token could not be had, or whose step timed out
        // while it was being sent: its permit is dropped unanswered.
        let (abandoned, _) = t.acquire().await.unwrap();
        drop(abandoned);
        let (answered, _) = t.acquire().await.unwrap();
        // One request left in a window that resets in half an hour: were the
        // abandoned request still counted in flight, that one would be spent.
        answered.answered(
            &budget("1", "x-rate-limit-reset", (START + 1800).to_string()),
            None,
        );
        goes_at_once(&t).await;
    }

    #[tokio::test(start_paused = true)]
    async fn budget_held_back_for_requests_in_flight_is_given_back_to_waiters() {
        let t = std::sync::Arc::new(at_start());
        let reset = (START + 1800).to_string();
        let (p, _) = t.acquire().await.unwrap();
        p.answered(&budget("5", "x-rate-limit-reset", reset.clone()), None);
        // Three requests in flight; the first answer says 2 remain, which
        // (two others in flight, maybe not yet counted) leaves none to use.
        let (first, _) = t.acquire().await.unwrap();
        let (second, _) = t.acquire().await.unwrap();
        let (third, _) = t.acquire().await.unwrap();
        first.answered(&budget("2", "x-rate-limit-reset", reset.clone()), None);
        // A fourth waits, for half an hour at worst…
        let waiter = waiter(&t);
        tokio::task::yield_now().await;
        // …until the others are answered and the server's count, exact now
        // that nothing is in flight, says 1 remains.
        second.answered(&budget("1", "x-rate-limit-reset", reset.clone()), None);
        third.answered(&budget("1", "x-rate-limit-reset", reset), None);
        // Woken at once, not at the window's reset half an hour on.
        assert_eq!(waiter.await.unwrap(), Duration::ZERO);
    }

    /// Procore announces either its 10-second or its hourly window,
    /// whichever a client is likelier to exceed first: a spent 10-second
    /// window is waited out though the hourly one it follows has plenty
    /// left, and an answer naming the hour again does not undo it.
    #[tokio::test(start_paused = true)]
    async fn a_spent_short_window_binds_beside_a_long_one() {
        let t = at_start();
        let hour = (START + 3000).to_string();
        let (p, _) = t.acquire().await.unwrap();
        p.answered(&budget("3500", "x-rate-limit-reset", hour.clone()), None);
        let (first, _) = t.acquire().await.unwrap();
        let (second, _) = t.acquire().await.unwrap();
        // The first answer (a 429) names the 10-second window, spent; the
        // second, sent before it, still names the hour.
        first.answered(
            &budget("0", "x-rate-limit-reset", (START + 8).to_string()),
            None,
        );
        second.answered(&budget("3497", "x-rate-limit-reset", hour.clone()), None);
        let waited = t.acquire().await.unwrap().1;
        assert_eq!(waited, Duration::from_secs(8) + RESET_MARGIN);
        // After its reset the hour's count governs again.
        let (p, _) = t.acquire().await.unwrap();
        p.answered(&budget("3490", "x-rate-limit-reset", hour), None);
        goes_at_once(&t).await;
    }

    /// A window that rolls (Procore's spike limit) gives back at its reset
    /// only what has left it by then: after a spent window resets, one
    /// request goes alone, and its answer says how many may follow.
    #[tokio::test(start_paused = true)]
    async fn after_a_spent_window_resets_one_request_learns_the_new_budget() {
        let t = std::sync::Arc::new(at_start());
        let (p, _) = t.acquire().await.unwrap();
        p.answered(
            &budget("0", "x-rate-limit-reset", (START + 10).to_string()),
            None,
        );
        let (probe, waited) = t.acquire().await.unwrap();
        assert_eq!(waited, Duration::from_secs(10) + RESET_MARGIN);
        let follower = waiter(&t);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !follower.is_finished(),
            "a second request went before the first was answered"
        );
        // Two let through, until the window's next request leaves it.
        probe.answered(
            &budget("2", "x-rate-limit-reset", (START + 20).to_string()),
            None,
        );
        assert_eq!(
            follower.await.unwrap(),
            Duration::from_secs(5),
            "woken by the answer"
        );
        goes_at_once(&t).await;
        let waited = t.acquire().await.unwrap().1;
        assert_eq!(waited, Duration::from_secs(5));
    }

    /// Before any answer the budget is unknown, and may be smaller than a
    /// step's concurrency: the first request goes alone. A service that
    /// announces no budget is not paced at all after it.
    #[tokio::test(start_paused = true)]
    async fn the_first_request_goes_alone_until_answered() {
        let t = std::sync::Arc::new(at_start());
        let (first, _) = t.acquire().await.unwrap();
        let second = waiter(&t);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "the second went before the first was answered"
        );
        first.answered(&[], None);
        assert_eq!(second.await.unwrap(), Duration::from_millis(300));
        let (a, _) = t.acquire().await.unwrap();
        let (b, _) = t.acquire().await.unwrap();
        drop((a, b));
    }

    /// A probe's answer that asks for a wait (a 503's Retry-After) wakes
    /// the requests behind it with the hold already in force.
    #[tokio::test(start_paused = true)]
    async fn a_probes_hold_is_in_force_when_its_answer_wakes_the_others() {
        let t = std::sync::Arc::new(at_start());
        let (probe, _) = t.acquire().await.unwrap();
        let follower = waiter(&t);
        tokio::task::yield_now().await;
        probe.answered(&[], Some(Duration::from_secs(7)));
        assert_eq!(follower.await.unwrap(), Duration::from_secs(7));
    }

    /// A `Retry-After` hold passes with one request alone: a service that
    /// refused a burst (Graph, which announces no budget) is asked once
    /// whether it takes requests again before the others follow, instead
    /// of refusing every waiting request at once.
    #[tokio::test(start_paused = true)]
    async fn after_a_hold_one_request_goes_alone_until_answered() {
        let t = std::sync::Arc::new(at_start());
        let (first, _) = t.acquire().await.unwrap();
        first.answered(&[], None);
        let (refused, _) = t.acquire().await.unwrap();
        let (also_refused, _) = t.acquire().await.unwrap();
        refused.answered(&[], Some(Duration::from_secs(3)));
        also_refused.answered(&[], Some(Duration::from_secs(3)));
        // Three requests wait out the hold; each says when it got through,
        // and is answered when the test says so.
        let (through_tx, mut through) = tokio::sync::mpsc::unbounded_channel();
        let mut answer = Vec::new();
        for _ in 0..3 {
            let (t, through_tx) = (t.clone(), through_tx.clone());
            let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<()>();
            answer.push(answer_tx);
            tokio::spawn(async move {
                let (p, waited) = t.acquire().await.unwrap();
                through_tx.send(waited).unwrap();
                let _ = answer_rx.await;
                p.answered(&[], None);
            });
        }
        tokio::time::sleep(Duration::from_millis(3400)).await;
        assert_eq!(through.recv().await, Some(Duration::from_secs(3)));
        assert!(
            through.try_recv().is_err(),
            "a request went beside the one asking after the hold"
        );
        for a in answer {
            let _ = a.send(());
        }
        for _ in 0..2 {
            assert_eq!(through.recv().await, Some(Duration::from_millis(3400)));
        }
        // Answered: nothing holds requests back any more.
        goes_at_once(&t).await;
        goes_at_once(&t).await;
    }

    /// After a reset only the probe holds the others back: a request sent
    /// before the window was spent and still unanswered (a slow one) does
    /// not keep the probe from going.
    #[tokio::test(start_paused = true)]
    async fn a_probe_does_not_wait_for_requests_sent_before_the_reset() {
        let t = at_start();
        let reset = (START + 10).to_string();
        let (p, _) = t.acquire().await.unwrap();
        p.answered(&budget("2", "x-rate-limit-reset", reset.clone()), None);
        let (slow, _) = t.acquire().await.unwrap();
        let (spent, _) = t.acquire().await.unwrap();
        spent.answered(&budget("0", "x-rate-limit-reset", reset), None);
        tokio::time::advance(Duration::from_secs(11)).await;
        goes_at_once(&t).await;
        drop(slow);
    }

    /// A probe that ends without an answer (its step timed out) hands the
    /// probing to the next request at once.
    #[tokio::test(start_paused = true)]
    async fn a_probe_that_gets_no_answer_lets_the_next_request_probe() {
        let t = std::sync::Arc::new(at_start());
        let (p, _) = t.acquire().await.unwrap();
        p.answered(
            &budget("0", "x-rate-limit-reset", (START + 10).to_string()),
            None,
        );
        let (probe, _) = t.acquire().await.unwrap();
        let follower = waiter(&t);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        drop(probe);
        assert_eq!(follower.await.unwrap(), Duration::from_millis(2500));
        // Its answer announced no budget: nothing holds requests back.
        goes_at_once(&t).await;
        goes_at_once(&t).await;
    }

    /// An answer from a window that has passed, arriving after the next
    /// window's, changes nothing; so does one from an earlier window that
    /// still runs but has more left than the budget in force.
    #[tokio::test(start_paused = true)]
    async fn earlier_windows_bind_only_while_they_run_and_bind_tighter() {
        let t = at_start();
        let (p, _) = t.acquire().await.unwrap();
        p.answered(&[], None);
        let (late, _) = t.acquire().await.unwrap();
        let (p, _) = t.acquire().await.unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        p.answered(
            &budget("5", "x-rate-limit-reset", (START + 70).to_string()),
            None,
        );
        late.answered(
            &budget("0", "x-rate-limit-reset", (START + 10).to_string()),
            None,
        );
        goes_at_once(&t).await;
        let (p, _) = t.acquire().await.unwrap();
        p.answered(
            &budget("9", "x-rate-limit-reset", (START + 12).to_string()),
            None,
        );
        // 5 were left, 2 requests went since: 3 go at once, the fourth waits
        // for the minute's window.
        for _ in 0..2 {
            goes_at_once(&t).await;
        }
        let waited = t.acquire().await.unwrap().1;
        assert_eq!(waited, Duration::from_secs(60) + RESET_MARGIN);
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_budget_resets_are_ignored_not_waited_for() {
        let cases = [
            // A reset that would overflow the clock.
            ("x-rate-limit-reset", u64::MAX.to_string()),
            ("ratelimit-reset", u64::MAX.to_string()),
            // Unix time in milliseconds: millennia away when read as seconds.
            ("x-rate-limit-reset", ((START + 1) * 1000).to_string()),
            // More than an hour away.
            ("ratelimit-reset", (MAX_WAIT.as_secs() + 1).to_string()),
            ("x-rate-limit-reset", (START + 2 * 3600).to_string()),
        ];
        let now = Duration::from_secs(START);
        for (name, reset) in cases {
            let t = at_start();
            let (p, _) = t.acquire().await.unwrap();
            p.answered(&budget("0", name, reset.clone()), None);
            assert!(budget_from(&budget("0", name, reset.clone()), now).is_none());
            goes_at_once(&t).await;
        }
        // Within the hour, a spent budget still waits.
        for (name, reset) in [
            ("ratelimit-reset", "600".to_string()),
            ("x-rate-limit-reset", (START + 600).to_string()),
        ] {
            let within = budget("0", name, reset);
            assert!(
                budget_from(&within, now)
                    .is_some_and(|(_, until, _)| until == Duration::from_secs(600))
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_retry_after_closes_the_connection_instead_of_stalling() {
        for value in [
            "1e300",
            "inf",
            "99999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "7200",
        ] {
            let delay = parse_retry_after(value).unwrap();
            assert!(delay > MAX_WAIT, "{value}: {delay:?}");
            let t = Throttle::new(None);
            let Hold::Closed(closed) = t.hold_for(delay) else {
                panic!("{value}: a wait past the maximum held the connection");
            };
            let refused = tokio::time::timeout(Duration::from_millis(500), t.acquire())
                .await
                .expect("refused at once, not held");
            let Err(again) = refused else {
                panic!("{value}: a request went out");
            };
            assert!(again.0 > MAX_WAIT, "{again:?}");
            assert!(closed.to_string().contains("try again later"), "{closed}");
            if value != "7200" {
                assert!(closed.to_string().contains("more than a year"), "{closed}");
            }
        }
        assert_eq!(parse_retry_after("-5"), None);
        assert_eq!(parse_retry_after("NaN"), None);
    }

    #[test]
    fn tiny_and_broken_rates_do_not_panic() {
        for rate in [1e-300, 0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            let t = Throttle::new(Some(rate));
            assert!(t.interval.is_some_and(|i| i <= MAX_WAIT), "{rate}");
        }
    }
}
