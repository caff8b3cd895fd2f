//! What a connection does after each attempt of a request: one pure function.
//!
//! [`decide`] takes what the attempt came to ([`Attempt`]), what the request
//! went through so far ([`Tally`]) and what it allows ([`Rules`]), and says
//! what happens next ([`Decision`]): hand the response to the component,
//! send again (after how long, and whether the whole connection waits),
//! fetch a new token first, or give up and why. It does no I/O and reads no
//! clock, so every case is checked by the table test below; the send loop in
//! [`super`] only carries decisions out.
//!
//! The rules, in the order they apply:
//! - A 429 or 503 with `Retry-After` holds the whole connection for that
//!   long, whether or not this request is sent again; a wait past
//!   [`MAX_WAIT`] gives up at once (the throttle then refuses requests
//!   until it has passed).
//! - A 429 says the service did not act: any request is sent again, up to
//!   [`MAX_THROTTLED_ATTEMPTS`]; without `Retry-After` the connection waits
//!   the backoff.
//! - A 401 on an OAuth2 connection drops the token and sends again with a
//!   new one, up to [`MAX_TOKEN_REFRESHES_PER_REQUEST`].
//! - A 5xx, a transport failure or a body that broke off is sent again only
//!   when the request is safe to repeat (a read, or a write marked
//!   idempotent), up to the connection's `max_attempts`.
//! - A write marked `retry_when_not_acted` is also sent again, within the
//!   same allowance, after the answers that prove the service did not act
//!   on it: a 503, or a connection that could not be opened (nothing was
//!   sent). Never after another 5xx, a timeout or a connection lost after
//!   sending: the service may have acted.
//! - Everything else is the component's to read.

use std::time::Duration;

use super::throttle::MAX_WAIT;
use crate::flow::model::RetryPolicy;

/// 429s are the service asking us to wait, not failing: allow more rounds of them.
pub const MAX_THROTTLED_ATTEMPTS: u32 = 10;

/// A 401 drops the token and sends the request again with a new one. Twice,
/// not once: among concurrent requests, the replacement a retry picks up may
/// itself have been revoked a moment later (a service that expires tokens by
/// use, or a key rotation). Wrong credentials still end at the token
/// endpoint, which refuses them.
pub const MAX_TOKEN_REFRESHES_PER_REQUEST: u32 = 2;

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attempt {
    /// No answer: the request failed in transport. `built` is false when it
    /// could not even be built, so it never left and would fail again;
    /// `connected` is false when no connection could be opened, so nothing
    /// was sent.
    NoAnswer { built: bool, connected: bool },
    /// The status line and headers arrived.
    Answered {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// The service answered, then the body broke off: the request may have
    /// been processed.
    BodyBroken,
}

/// What a request went through so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Transport failures, 5xx and broken bodies.
    pub failures: u32,
    /// 429s.
    pub throttled: u32,
    /// Tokens dropped after a 401.
    pub refreshed: u32,
}

impl Tally {
    /// The tally once `next` has been carried out.
    pub fn after(self, next: &Next) -> Tally {
        let mut t = self;
        match next {
            Next::Resend {
                why: Resend::Failed | Resend::FailedWhileHeld,
                ..
            } => t.failures += 1,
            Next::Resend {
                why: Resend::Throttled,
                ..
            } => t.throttled += 1,
            Next::RefreshToken => t.refreshed += 1,
            Next::Deliver | Next::GiveUp(_) => {}
        }
        t
    }

    /// Attempts made so far that failed, plus the one that just did.
    pub fn attempts(self) -> u32 {
        self.failures + 1
    }
}

/// What a request allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// A read, or a write marked idempotent: sending it twice does no harm.
    pub safe_to_repeat: bool,
    /// A write marked `retry_when_not_acted`: it may go again when the
    /// answer proves the service did not act (a 503, no connection).
    pub resend_when_not_acted: bool,
    /// The connection fetches its own tokens (OAuth2), so a 401 may be a
    /// token that expired or was revoked.
    pub can_refresh: bool,
    pub retry: RetryPolicy,
}

/// Why a request is sent again (for the tally and the request stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// A transport failure, a 5xx or a broken body.
    Failed,
    /// A 5xx whose `Retry-After` holds the connection: a failure, and a wait
    /// the service asked for.
    FailedWhileHeld,
    /// A 429.
    Throttled,
}

/// Why a request is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// No answer. `unsafe_write`: it was not sent again because it may
    /// have reached the service.
    NoAnswer { unsafe_write: bool },
    /// The body broke off; `unsafe_write` as above.
    BodyBroken { unsafe_write: bool },
    /// The service asked for a pause longer than [`MAX_WAIT`].
    Closed { status: u16, delay: Duration },
}

/// What the send loop does next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Hand the response to the component.
    Deliver,
    /// Send again after `sleep` (and after any hold on the connection,
    /// which the next turn waits for).
    Resend {
        sleep: Duration,
        why: Resend,
    },
    /// Drop the token the attempt carried; send again with a new one.
    RefreshToken,
    GiveUp(GiveUp),
}

/// The decision after one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Nothing goes out on the connection before this has passed (from now).
    pub hold: Option<Duration>,
    pub next: Next,
}

impl Decision {
    fn next(next: Next) -> Self {
        Decision { hold: None, next }
    }
}

/// Decides what follows an attempt. `jitter`, within [0.5, 1], scales
/// backoff waits (the caller draws it, so this stays pure).
pub fn decide(attempt: Attempt, tally: Tally, rules: &Rules, jitter: f64) -> Decision {
    let failures_left = tally.failures + 1 < rules.retry.max_attempts;
    let may_repeat = rules.safe_to_repeat && failures_left;
    // Only where nothing can have happened: a 503, or no connection.
    let may_repeat_unacted = may_repeat || (rules.resend_when_not_acted && failures_left);
    let unsafe_write = !rules.safe_to_repeat;
    let backoff_after_failure = || backoff(&rules.retry, tally.failures + 1, jitter);
    let (status, retry_after) = match attempt {
        Attempt::NoAnswer { built: false, .. } => {
            return Decision::next(Next::GiveUp(GiveUp::NoAnswer {
                unsafe_write: false,
            }));
        }
        Attempt::NoAnswer { connected, .. } if may_repeat || (!connected && may_repeat_unacted) => {
            return Decision::next(Next::Resend {
                sleep: backoff_after_failure(),
                why: Resend::Failed,
            });
        }
        // A write that never connected cannot have reached the service:
        // it is given up because its attempts ran out, not for fear of a
        // double write, and its message must not say otherwise.
        Attempt::NoAnswer { connected, .. } => {
            return Decision::next(Next::GiveUp(GiveUp::NoAnswer {
                unsafe_write: unsafe_write && connected,
            }));
        }
        Attempt::BodyBroken if may_repeat => {
            return Decision::next(Next::Resend {
                sleep: backoff_after_failure(),
                why: Resend::Failed,
            });
        }
        Attempt::BodyBroken => {
            return Decision::next(Next::GiveUp(GiveUp::BodyBroken { unsafe_write }));
        }
        Attempt::Answered {
            status,
            retry_after,
        } => (status, retry_after),
    };
    // A 429 or 503 that names its wait holds the whole connection.
    let hold = retry_after.filter(|_| matches!(status, 429 | 503));
    if let Some(delay) = hold
        && delay > MAX_WAIT
    {
        return Decision {
            hold,
            next: Next::GiveUp(GiveUp::Closed { status, delay }),
        };
    }
    if status == 429 && tally.throttled + 1 < MAX_THROTTLED_ATTEMPTS {
        // Without a Retry-After, the connection still backs off: the
        // service is telling every request on it to slow down.
        let hold = hold.or_else(|| Some(backoff(&rules.retry, tally.throttled + 1, jitter)));
        return Decision {
            hold,
            next: Next::Resend {
                sleep: Duration::ZERO,
                why: Resend::Throttled,
            },
        };
    }
    if status == 401 && rules.can_refresh && tally.refreshed < MAX_TOKEN_REFRESHES_PER_REQUEST {
        return Decision {
            hold,
            next: Next::RefreshToken,
        };
    }
    let repeat = if status == 503 {
        may_repeat_unacted
    } else {
        may_repeat
    };
    let next = if status >= 500 && repeat {
        match hold {
            // The next turn waits for the hold.
            Some(_) => Next::Resend {
                sleep: Duration::ZERO,
                why: Resend::FailedWhileHeld,
            },
            None => Next::Resend {
                sleep: backoff_after_failure(),
                why: Resend::Failed,
            },
        }
    } else {
        Next::Deliver
    };
    Decision { hold, next }
}

/// Exponential backoff: `base_delay` doubled for each earlier attempt, at
/// most `max_delay`, scaled by `jitter`.
pub fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    exp.min(policy.max_delay).mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn rules(safe_to_repeat: bool, can_refresh: bool) -> Rules {
        Rules {
            safe_to_repeat,
            resend_when_not_acted: false,
            can_refresh,
            // 1 s doubling to 8 s; three attempts in all.
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: S,
                max_delay: 8 * S,
            },
        }
    }

    fn answered(status: u16, retry_after: Option<u64>) -> Attempt {
        Attempt::Answered {
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    fn tally(failures: u32, throttled: u32, refreshed: u32) -> Tally {
        Tally {
            failures,
            throttled,
            refreshed,
        }
    }

    fn resend(sleep: Duration, why: Resend) -> Next {
        Next::Resend { sleep, why }
    }

    fn held(hold: u64, next: Next) -> Decision {
        Decision {
            hold: Some(Duration::from_secs(hold)),
            next,
        }
    }

    fn plain(next: Next) -> Decision {
        Decision { hold: None, next }
    }

    /// Every kind of attempt, against a read and a write, with and without
    /// token refresh, fresh and with its allowance spent. Jitter is 1 so
    /// the waits are the backoff's upper bounds.
    #[test]
    fn every_attempt_has_one_decision() {
        let fresh = Tally::default();
        let failed_once = tally(1, 0, 0);
        let failed_out = tally(2, 0, 0);
        let throttled_out = tally(0, MAX_THROTTLED_ATTEMPTS - 1, 0);
        let refreshed_out = tally(0, 0, MAX_TOKEN_REFRESHES_PER_REQUEST);
        let read = rules(true, true);
        let write = rules(false, true);
        let read_static_token = rules(true, false);
        let unacted_write = Rules {
            resend_when_not_acted: true,
            ..write
        };
        let no_answer = Attempt::NoAnswer {
            built: true,
            connected: true,
        };
        let no_connection = Attempt::NoAnswer {
            built: true,
            connected: false,
        };
        let unbuilt = Attempt::NoAnswer {
            built: false,
            connected: false,
        };
        let far = MAX_WAIT.as_secs() + 1;
        let far_closed = |status| {
            held(
                far,
                Next::GiveUp(GiveUp::Closed {
                    status,
                    delay: Duration::from_secs(far),
                }),
            )
        };
        #[rustfmt::skip]
        let table: Vec<(&str, Attempt, Tally, Rules, Decision)> = vec![
            // Success and the component's own errors are delivered.
            ("200", answered(200, None), fresh, read, plain(Next::Deliver)),
            ("404", answered(404, None), fresh, read, plain(Next::Deliver)),
            ("409 write", answered(409, None), fresh, write, plain(Next::Deliver)),
            ("200 with a stray Retry-After", answered(200, Some(5)), fresh, read, plain(Next::Deliver)),
            // Transport failures: reads back off and go again, writes stop.
            ("no answer, read", no_answer, fresh, read, plain(resend(S, Resend::Failed))),
            ("no answer, read, second", no_answer, failed_once, read, plain(resend(2 * S, Resend::Failed))),
            ("no answer, read, spent", no_answer, failed_out, read, plain(Next::GiveUp(GiveUp::NoAnswer { unsafe_write: false }))),
            ("no answer, write", no_answer, fresh, write, plain(Next::GiveUp(GiveUp::NoAnswer { unsafe_write: true }))),
            ("not built", unbuilt, fresh, read, plain(Next::GiveUp(GiveUp::NoAnswer { unsafe_write: false }))),
            ("not built, write", unbuilt, fresh, write, plain(Next::GiveUp(GiveUp::NoAnswer { unsafe_write: false }))),
            // Never connected: nothing can have reached the service.
            ("no connection, write", no_connection, fresh, write, plain(Next::GiveUp(GiveUp::NoAnswer { unsafe_write: false }))),
            ("no connection, read", no_connection, fresh, read, plain(resend(S, Resend::Failed))),
            // A write that may go again when the service did not act: only
            // after a 503 or a connection that never opened.
            ("no connection, unacted write", no_connection, fresh, unacted_write, plain(resend(S, Resend::Failed))),
            ("no connection, unacted write, spent", no_connection, failed_out, unacted_write, plain(Next::GiveUp(GiveUp::NoAnswer { unsafe_write: false }))),
            ("no answer, unacted write", no_answer, fresh, unacted_write, plain(Next::GiveUp(GiveUp::NoAnswer { unsafe_write: true }))),
            ("broken body, unacted write", Attempt::BodyBroken, fresh, unacted_write, plain(Next::GiveUp(GiveUp::BodyBroken { unsafe_write: true }))),
            ("503, unacted write", answered(503, None), fresh, unacted_write, plain(resend(S, Resend::Failed))),
            ("503 + RA, unacted write", answered(503, Some(7)), fresh, unacted_write, held(7, resend(Duration::ZERO, Resend::FailedWhileHeld))),
            ("503, unacted write, spent", answered(503, None), failed_out, unacted_write, plain(Next::Deliver)),
            ("500, unacted write", answered(500, None), fresh, unacted_write, plain(Next::Deliver)),
            ("502, unacted write", answered(502, None), fresh, unacted_write, plain(Next::Deliver)),
            ("504, unacted write", answered(504, None), fresh, unacted_write, plain(Next::Deliver)),
            ("429, unacted write", answered(429, None), fresh, unacted_write, held(1, resend(Duration::ZERO, Resend::Throttled))),
            // A body that broke off: like no answer.
            ("broken body, read", Attempt::BodyBroken, fresh, read, plain(resend(S, Resend::Failed))),
            ("broken body, read, spent", Attempt::BodyBroken, failed_out, read, plain(Next::GiveUp(GiveUp::BodyBroken { unsafe_write: false }))),
            ("broken body, write", Attempt::BodyBroken, fresh, write, plain(Next::GiveUp(GiveUp::BodyBroken { unsafe_write: true }))),
            // 5xx: reads go again; with Retry-After the connection holds.
            ("500, read", answered(500, None), fresh, read, plain(resend(S, Resend::Failed))),
            ("502, read, second", answered(502, None), failed_once, read, plain(resend(2 * S, Resend::Failed))),
            ("500, read, spent", answered(500, None), failed_out, read, plain(Next::Deliver)),
            ("500, write", answered(500, None), fresh, write, plain(Next::Deliver)),
            ("503 + RA, read", answered(503, Some(7)), fresh, read, held(7, resend(Duration::ZERO, Resend::FailedWhileHeld))),
            ("503 + RA, write", answered(503, Some(7)), fresh, write, held(7, Next::Deliver)),
            ("503 + RA, read, spent", answered(503, Some(7)), failed_out, read, held(7, Next::Deliver)),
            ("500 + RA: no hold", answered(500, Some(7)), fresh, read, plain(resend(S, Resend::Failed))),
            ("503 + RA past the max", answered(503, Some(far)), fresh, read, far_closed(503)),
            // 429: anything goes again, the connection holds.
            ("429 + RA, read", answered(429, Some(3)), fresh, read, held(3, resend(Duration::ZERO, Resend::Throttled))),
            ("429 + RA, write", answered(429, Some(3)), fresh, write, held(3, resend(Duration::ZERO, Resend::Throttled))),
            ("429, no RA: backoff hold", answered(429, None), fresh, write, held(1, resend(Duration::ZERO, Resend::Throttled))),
            ("429, no RA, fourth", answered(429, None), tally(0, 3, 0), read, held(8, resend(Duration::ZERO, Resend::Throttled))),
            ("429 after failures", answered(429, Some(3)), failed_out, read, held(3, resend(Duration::ZERO, Resend::Throttled))),
            ("429 + RA, spent", answered(429, Some(3)), throttled_out, read, held(3, Next::Deliver)),
            ("429, no RA, spent", answered(429, None), throttled_out, read, plain(Next::Deliver)),
            ("429 + RA past the max", answered(429, Some(far)), fresh, write, far_closed(429)),
            // 401: a new token, twice; a static token or spent: delivered.
            ("401", answered(401, None), fresh, write, plain(Next::RefreshToken)),
            ("401, second", answered(401, None), tally(0, 0, 1), read, plain(Next::RefreshToken)),
            ("401, spent", answered(401, None), refreshed_out, read, plain(Next::Deliver)),
            ("401, static token", answered(401, None), fresh, read_static_token, plain(Next::Deliver)),
            ("403 is not a 401", answered(403, None), fresh, read, plain(Next::Deliver)),
        ];
        for (name, attempt, tally, rules, expected) in table {
            assert_eq!(decide(attempt, tally, &rules, 1.0), expected, "{name}");
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_jitter_only_shortens() {
        let policy = rules(true, true).retry;
        let waits: Vec<Duration> = (1..=6).map(|n| backoff(&policy, n, 1.0)).collect();
        assert_eq!(waits, [S, 2 * S, 4 * S, 8 * S, 8 * S, 8 * S]);
        assert_eq!(backoff(&policy, 2, 0.5), S);
        assert_eq!(backoff(&policy, u32::MAX, 1.0), 8 * S);
        assert_eq!(backoff(&policy, 1, 7.0), S, "jitter above 1 is clamped");
    }

    /// Follows decisions from a fresh request, as the send loop does, and
    /// checks where each kind of persistent failure ends.
    #[test]
    fn a_request_that_keeps_failing_ends() {
        let cases = [
            (answered(500, None), rules(true, true), 3, Next::Deliver),
            (answered(429, None), rules(false, true), 10, Next::Deliver),
            (answered(401, None), rules(true, true), 3, Next::Deliver),
            (
                Attempt::NoAnswer {
                    built: true,
                    connected: true,
                },
                rules(true, true),
                3,
                Next::GiveUp(GiveUp::NoAnswer {
                    unsafe_write: false,
                }),
            ),
        ];
        for (attempt, rules, attempts, last) in cases {
            let mut t = Tally::default();
            let mut made = 1;
            let end = loop {
                let d = decide(attempt, t, &rules, 1.0);
                if matches!(d.next, Next::Deliver | Next::GiveUp(_)) {
                    break d.next;
                }
                t = t.after(&d.next);
                made += 1;
            };
            assert_eq!((made, end), (attempts, last), "{attempt:?}");
        }
    }
}
