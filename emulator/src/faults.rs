//! Faults on demand, at chosen request ordinals or rates, seeded so a run
//! repeats. Ordinals count API requests (not token or admin requests) from 1
//! since the faults were last set. A 500, 503 or dropped connection is
//! decided before the request is handled, so its write is never applied.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "style", content = "value", rename_all = "snake_case")]
pub enum RetryAfterStyle {
    /// `Retry-After: 2`
    #[default]
    Integer,
    /// `Retry-After: 1.5` (Graph sends fractions)
    Fractional,
    /// No Retry-After header at all.
    Absent,
    /// An HTTP date.
    HttpDate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// A token stops working after this many API calls (401, real shapes).
    pub token_expires_after_calls: Option<u32>,
    /// `expires_in` the token endpoints return (defaults: Graph 3599, Procore 7200).
    pub token_lifetime_secs: Option<u64>,
    /// Every Nth API request is answered 429.
    pub rate_429_every: Option<u64>,
    /// How a 429 says when to come back.
    pub retry_after: RetryAfterStyle,
    /// Seconds a 429 asks to wait (fractional style adds .25).
    pub retry_after_secs: u64,
    /// API request ordinals answered 503 (with Retry-After: 1), write not applied.
    pub fail_503_at: Vec<u64>,
    /// API request ordinals answered 500, write not applied.
    pub fail_500_at: Vec<u64>,
    /// API request ordinals whose connection is dropped mid-response, write not applied.
    pub drop_connection_at: Vec<u64>,
    /// Delay before every API response.
    pub slow_ms: Option<u64>,
    /// Graph collections start with an empty page that still has a nextLink.
    pub empty_graph_pages: bool,
    /// Seed for anything random a fault does.
    pub seed: u64,
}

/// What to do with one API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    None,
    TooMany,
    Unavailable,
    ServerError,
    Drop,
}

impl Faults {
    pub fn decide(&self, ordinal: u64) -> Injected {
        if self.drop_connection_at.contains(&ordinal) {
            Injected::Drop
        } else if self.fail_503_at.contains(&ordinal) {
            Injected::Unavailable
        } else if self.fail_500_at.contains(&ordinal) {
            Injected::ServerError
        } else if self
            .rate_429_every
            .is_some_and(|n| n > 0 && ordinal.is_multiple_of(n))
        {
            Injected::TooMany
        } else {
            Injected::None
        }
    }

    /// The Retry-After header value for a 429, if any.
    pub fn retry_after_value(&self) -> Option<String> {
        let secs = self.retry_after_secs.max(1);
        match self.retry_after {
            RetryAfterStyle::Integer => Some(secs.to_string()),
            RetryAfterStyle::Fractional => Some(format!("{secs}.25")),
            RetryAfterStyle::Absent => None,
            RetryAfterStyle::HttpDate => Some(httpdate::fmt_http_date(
                std::time::SystemTime::now() + std::time::Duration::from_secs(secs + 1),
            )),
        }
    }
}
