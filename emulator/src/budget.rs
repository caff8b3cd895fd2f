//! The services' request budgets, and which of them a response reports.
//!
//! Procore's rate-limiting guide describes two limits at once: an hourly one
//! (a fixed window) and a spike limit over 10 seconds, whose remaining count
//! "may increase again after a brief pause as the window rolls forward".
//! Every request counts against both, refused ones too. Each response's
//! `X-Rate-Limit-*` headers report one of them: "the limit your app is most
//! likely to exceed first", which is the spike limit until the hour is
//! nearly spent. A request past either limit is refused with 429.
//!
//! Here the long window is [`EmulatorConfig::rate_window_secs`] long (a
//! minute unless set: an hour is too long to rehearse with), and the spike
//! window rolls over [`EmulatorConfig::spike_window_secs`] when a spike
//! limit is set. The spike window's `X-Rate-Limit-Reset` is when its oldest
//! counted request leaves it: the first moment a request would be let
//! through again, not the moment the whole limit is back. That is the
//! demanding reading for a client: one that lets every waiting request go at
//! the reset is refused.
//!
//! [`EmulatorConfig::rate_window_secs`]: crate::config::EmulatorConfig::rate_window_secs
//! [`EmulatorConfig::spike_window_secs`]: crate::config::EmulatorConfig::spike_window_secs

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::PROCORE_DEFAULT_RATE_LIMIT;
use crate::state::{Data, Service, Shared};

/// What a service has counted, across requests.
#[derive(Debug, Default)]
pub struct Counters {
    /// The long window: its number (Unix seconds over its length) and the
    /// requests counted in it.
    fixed: (u64, u32),
    /// The spike window: when each request it still counts arrived, in
    /// milliseconds since the Unix epoch, oldest first.
    rolling: VecDeque<u64>,
}

/// One limit, as it stands after counting a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Requests the window allows.
    pub limit: u32,
    /// Requests it has counted, this one included.
    pub used: u32,
    /// When it next lets a request through again, in Unix seconds.
    pub reset: u64,
}

impl Window {
    fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }

    fn exceeded(&self) -> bool {
        self.used > self.limit
    }
}

/// Where one request stands in its service's limits.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// The window the response reports: the one with the fewest requests
    /// remaining, and of those the one that resets last, so that a client
    /// waiting until the reported reset is let through.
    reported: Window,
    /// Whether any window is past its limit.
    exceeded: bool,
    /// Unix seconds when counted.
    now: u64,
}

impl Budget {
    /// Whether the request is past a limit, and must be refused.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Seconds until the reported window lets a request through again.
    pub fn wait_secs(&self) -> u64 {
        self.reported.reset.saturating_sub(self.now).max(1)
    }

    /// The window the response reports.
    pub fn reported(&self) -> Window {
        self.reported
    }

    /// Procore's `X-Rate-Limit-*` headers for the reported window.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        let w = self.reported;
        [
            ("x-rate-limit-limit", w.limit.to_string()),
            ("x-rate-limit-remaining", w.remaining().to_string()),
            ("x-rate-limit-reset", w.reset.to_string()),
        ]
    }
}

/// Counts a request against its service's limits, if it has any. Procore
/// always has a long one (a large one when none is configured), because its
/// rate-limit headers are on every response.
pub fn count(s: &Shared, service: Service) -> Option<Budget> {
    let config = &s.config;
    let (fixed_limit, spike_limit) = match service {
        Service::Procore => (
            config
                .procore_rate_limit
                .unwrap_or(PROCORE_DEFAULT_RATE_LIMIT),
            config.procore_spike_limit,
        ),
        Service::Graph => (config.graph_rate_limit?, None),
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut d = s.lock();
    let counters = counters(&mut d, service);
    let fixed = count_fixed(
        &mut counters.fixed,
        fixed_limit,
        config.rate_window_secs,
        now_ms,
    );
    let spike = spike_limit.map(|limit| {
        count_rolling(
            &mut counters.rolling,
            limit,
            config.spike_window_secs,
            now_ms,
        )
    });
    Some(budget(fixed, spike, now_ms / 1000))
}

fn counters(d: &mut Data, service: Service) -> &mut Counters {
    match service {
        Service::Procore => &mut d.procore_budget,
        Service::Graph => &mut d.graph_budget,
    }
}

/// Counts a request in a fixed window of `length` seconds.
fn count_fixed(slot: &mut (u64, u32), limit: u32, length: u64, now_ms: u64) -> Window {
    let length = length.max(1);
    let window = now_ms / 1000 / length;
    if slot.0 != window {
        *slot = (window, 0);
    }
    slot.1 = slot.1.saturating_add(1);
    Window {
        limit,
        used: slot.1,
        reset: (window + 1) * length,
    }
}

/// Counts a request in a window rolling over the last `length` seconds.
fn count_rolling(log: &mut VecDeque<u64>, limit: u32, length: u64, now_ms: u64) -> Window {
    let length_ms = length.max(1) * 1000;
    while log.front().is_some_and(|&at| at + length_ms <= now_ms) {
        log.pop_front();
    }
    log.push_back(now_ms);
    let oldest = log.front().copied().unwrap_or(now_ms);
    Window {
        limit,
        used: u32::try_from(log.len()).unwrap_or(u32::MAX),
        reset: (oldest + length_ms).div_ceil(1000),
    }
}

/// The budget of a request counted in the long window and, if there is
/// one, the spike window.
fn budget(fixed: Window, spike: Option<Window>, now: u64) -> Budget {
    let key = |w: &Window| (w.remaining(), std::cmp::Reverse(w.reset));
    let reported = match spike {
        Some(spike) if key(&spike) < key(&fixed) => spike,
        _ => fixed,
    };
    Budget {
        reported,
        exceeded: fixed.exceeded() || spike.is_some_and(|w| w.exceeded()),
        now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolling_window_gives_requests_back_as_its_oldest_leave() {
        let mut log = VecDeque::new();
        // `ms` milliseconds after the Unix second 1,000,000.
        let mut at = |ms: u64| count_rolling(&mut log, 3, 10, 1_000_000_000 + ms);
        assert_eq!(
            at(0),
            Window {
                limit: 3,
                used: 1,
                reset: 1_000_010
            }
        );
        assert_eq!(at(4_000).used, 2);
        let third = at(4_500);
        assert_eq!((third.used, third.reset), (3, 1_000_010));
        // Past the limit, and refused requests count.
        let fourth = at(9_000);
        assert!(fourth.exceeded());
        assert_eq!(fourth.reset, 1_000_010, "when the first request leaves");
        // The first has left; the refused one still counts.
        let fifth = at(10_000);
        assert_eq!((fifth.used, fifth.reset), (4, 1_000_014));
        // The three from 4 s to 9 s have left.
        let sixth = at(19_500);
        assert_eq!((sixth.used, sixth.remaining()), (2, 1));
        assert_eq!(sixth.reset, 1_000_020);
        // A reset between seconds is rounded up: 29.5 s.
        let seventh = at(24_600);
        assert_eq!((seventh.used, seventh.reset), (2, 1_000_030));
    }

    #[test]
    fn a_fixed_window_starts_again_at_its_boundary() {
        let mut slot = (0, 0);
        let first = count_fixed(&mut slot, 5, 60, 120_000);
        assert_eq!(
            first,
            Window {
                limit: 5,
                used: 1,
                reset: 180
            }
        );
        assert_eq!(count_fixed(&mut slot, 5, 60, 179_999).used, 2);
        assert_eq!(count_fixed(&mut slot, 5, 60, 180_000).used, 1);
    }

    #[test]
    fn the_window_with_the_fewest_remaining_is_reported_and_either_refuses() {
        let hour = Window {
            limit: 3600,
            used: 100,
            reset: 5000,
        };
        let spike = Window {
            limit: 25,
            used: 5,
            reset: 1010,
        };
        let b = budget(hour, Some(spike), 1000);
        assert_eq!(b.reported(), spike, "the spike limit, most of the time");
        assert!(!b.exceeded());
        assert_eq!(b.wait_secs(), 10);

        let nearly_spent = Window { used: 3590, ..hour };
        let b = budget(nearly_spent, Some(spike), 1000);
        assert_eq!(b.reported(), nearly_spent, "the hour, once nearly spent");
        assert_eq!(b.headers()[1], ("x-rate-limit-remaining", "10".into()));

        let spiked = Window { used: 26, ..spike };
        let b = budget(hour, Some(spiked), 1000);
        assert!(b.exceeded());
        assert_eq!(b.reported(), spiked);

        // Both spent: the one that lets a request through last.
        let spent = Window { used: 3601, ..hour };
        let b = budget(spent, Some(spiked), 1000);
        assert_eq!(b.reported(), spent);
        assert_eq!(b.wait_secs(), 4000);
    }
}
