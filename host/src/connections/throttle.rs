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
//!   before the server reports them.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// tokio's clock, so tests can run with paused time.
use tokio::time::Instant;

/// Waiting a little past the announced reset absorbs whole-second rounding.
const RESET_MARGIN: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub struct Throttle {
    interval: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    next_slot: Instant,
    not_before: Instant,
    budget: Option<Budget>,
    /// Requests sent and not yet answered: the server's next count may not
    /// include them yet.
    in_flight: u64,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    remaining: u64,
    reset_at: Instant,
    /// The server's own name for the window, to tell a new window from an old one.
    window: u64,
}

impl Throttle {
    pub fn new(per_second: Option<f64>) -> Self {
        let now = Instant::now();
        Self {
            interval: per_second.map(|r| Duration::from_secs_f64(1.0 / r)),
            state: Mutex::new(State {
                next_slot: now,
                not_before: now,
                budget: None,
                in_flight: 0,
            }),
        }
    }

    /// Waits for this request's turn; returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let started = Instant::now();
        loop {
            let wait_until = {
                let Ok(mut s) = self.state.lock() else {
                    return started.elapsed();
                };
                let now = Instant::now();
                let mut at = s.not_before.max(now);
                if self.interval.is_some() {
                    at = at.max(s.next_slot);
                }
                if let Some(b) = s.budget
                    && b.remaining == 0
                {
                    if b.reset_at > now {
                        at = at.max(b.reset_at);
                    } else {
                        // The window has reset; the next response tells the new budget.
                        s.budget = None;
                    }
                }
                if at <= now {
                    if let Some(interval) = self.interval {
                        s.next_slot = s.next_slot.max(now) + interval;
                    }
                    if let Some(b) = s.budget.as_mut() {
                        b.remaining = b.remaining.saturating_sub(1);
                    }
                    s.in_flight += 1;
                    return started.elapsed();
                }
                at
            };
            tokio::time::sleep_until(wait_until).await;
        }
    }

    /// Nothing is sent before `delay` from now has passed.
    pub fn hold_for(&self, delay: Duration) {
        if let Ok(mut s) = self.state.lock() {
            let until = Instant::now() + delay;
            s.not_before = s.not_before.max(until);
        }
    }

    /// A request ended without a response.
    pub fn finished(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }

    /// A request was answered: reads its budget headers (names lower-case).
    pub fn observe(&self, headers: &[(String, String)]) {
        let in_flight = match self.state.lock() {
            Ok(mut s) => {
                s.in_flight = s.in_flight.saturating_sub(1);
                s.in_flight
            }
            Err(_) => return,
        };
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        };
        let (remaining, reset_at, window) = if let (Some(r), Some(reset)) =
            (get("x-rate-limit-remaining"), get("x-rate-limit-reset"))
        {
            // Procore: Reset is the Unix time at which the window resets.
            let now_unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let delta = Duration::from_secs(reset).saturating_sub(now_unix);
            (r, Instant::now() + delta + RESET_MARGIN, reset)
        } else if let (Some(r), Some(reset)) = (get("ratelimit-remaining"), get("ratelimit-reset"))
        {
            // IETF draft: Reset is seconds from now.
            let reset_at = Instant::now() + Duration::from_secs(reset) + RESET_MARGIN;
            let window = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                + reset;
            (r, reset_at, window)
        } else {
            return;
        };
        // Requests still in flight may not be in the server's count yet.
        let remaining = remaining.saturating_sub(in_flight);
        if let Ok(mut s) = self.state.lock() {
            s.budget = Some(match s.budget {
                // Same window: the smaller count wins, since our own count
                // already includes requests the server has not answered yet.
                Some(b) if b.window == window => Budget {
                    remaining: b.remaining.min(remaining),
                    ..b
                },
                _ => Budget {
                    remaining,
                    reset_at,
                    window,
                },
            });
        }
    }
}

/// Parses `Retry-After`: delta seconds (possibly fractional, as Graph sends)
/// or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    // These use real time with short waits: they check that waiting
    // happens, with lower bounds only.
    #[tokio::test]
    async fn a_spent_budget_waits_for_the_reset() {
        let t = Throttle::new(None);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        // Announce a window that resets at the next whole second.
        let reset = now.as_secs() + 1;
        let until_reset = Duration::from_secs(reset) - now;
        t.observe(&[
            ("x-rate-limit-remaining".into(), "1".into()),
            ("x-rate-limit-reset".into(), reset.to_string()),
        ]);
        assert!(t.acquire().await < Duration::from_millis(50));
        let waited = t.acquire().await;
        assert!(waited >= until_reset, "{waited:?} < {until_reset:?}");
    }

    #[tokio::test]
    async fn retry_after_holds_every_request() {
        let t = Throttle::new(None);
        t.hold_for(Duration::from_millis(200));
        assert!(t.acquire().await >= Duration::from_millis(190));
    }

    #[tokio::test]
    async fn rate_limit_spaces_requests() {
        let t = Throttle::new(Some(50.0));
        let start = Instant::now();
        for _ in 0..11 {
            t.acquire().await;
        }
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
    }
}
