//! Faults on demand, seeded so a run repeats.
//!
//! Three ways to aim a fault, checked in this order for every API request
//! (token and admin requests are never faulted):
//!
//! 1. [`Faults::targeted`]: the Nth request (or every one) that matches a
//!    method, a path suffix and optionally a piece of the body, so a test
//!    can hit exactly "the first create POST" or "the sendMail".
//! 2. Fixed ordinals (`fail_503_at`, …): API requests counted from 1 since
//!    the faults were last set.
//! 3. Rates (`rate_503`, …): each request draws from a generator seeded with
//!    [`Faults::seed`] and its ordinal, so the same seed faults the same
//!    ordinals on every run, whatever the timing.
//!
//! A 500, 503 or dropped connection "before" is decided before the request
//! is handled: its write is never applied. The "after apply" kinds handle
//! the request first (the user is created, the mail is sent) and then lose
//! the answer, which is what makes a blind retry of a write dangerous.
//! `repeat_next_link` (targeted only, Graph only) handles the request and
//! then points the page's `@odata.nextLink` at the page itself, so a
//! client that does not notice loops; `no_account_enabled` (the same)
//! takes `accountEnabled` off the page's users, `users_as_devices`
//! labels them devices; `empty_page` (Procore
//! only) serves a list page empty with its paging headers as they were.
//!
//! Graph delta has knobs of its own, for what Microsoft documents delta
//! may do and a kind emulator would otherwise never do (all off unless
//! set): `delta_repeats` (an entity listed once per change, in order),
//! `delta_replays` (a round starts with the previous round's last page
//! again), `delta_shuffle` (a large group's `members@delta` parts
//! interleave with other groups'), `delta_page_members` (smaller pages, so
//! small tenants split too) and `lookup_lag` (id look-ups miss recently
//! changed users for a while; see [`crate::graph::lookup_lag`]).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "style", content = "value", rename_all = "snake_case")]
pub enum RetryAfterStyle {
    /// `Retry-After: 2`
    #[default]
    Integer,
    /// `Retry-After: 1.5` (Graph sends fractions)
    Fractional,
    /// No Retry-After header at all (on Graph's 429s and Procore's budget 429s).
    Absent,
    /// An HTTP date.
    HttpDate,
}

/// What an injected fault does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 429 in the service's own shape, with the configured Retry-After.
    TooMany,
    /// 503 with `Retry-After: 1`; the write is not applied.
    Unavailable,
    /// 500; the write is not applied.
    ServerError,
    /// Headers, then the connection breaks; the write is not applied.
    Drop,
    /// The write is applied, then the connection breaks before the answer.
    DropAfterApply,
    /// The write is applied, then the answer is a 500.
    ServerErrorAfterApply,
    /// Graph only: the page is served with `@odata.nextLink` set to its own
    /// URL (and no `@odata.deltaLink`), so following it serves it again.
    RepeatNextLink,
    /// 502 from the gateway in front of the service, as an HTML page (not
    /// the service's JSON error); the request never reached the service.
    BadGateway,
    /// The write is applied, then the gateway gives up waiting for it: a
    /// 504 HTML page.
    GatewayTimeoutAfterApply,
    /// Graph only: the page's users come without `accountEnabled`, though
    /// the request selected it (a malformed answer: Graph returns every
    /// selected property). A client must not take a user whose account
    /// state it was not told for a disabled one.
    NoAccountEnabled,
    /// Graph only: the page's users are labelled devices
    /// (`"@odata.type": "#microsoft.graph.device"`), a malformed answer:
    /// object ids are unique across the directory, so a client that knows
    /// one of them as a user must not take them for someone who left.
    UsersAsDevices,
    /// Procore only: a list page comes back empty, its `Total`, `Per-Page`
    /// and `Link` headers as they were (a gateway cache or a replica that
    /// lost rows). A client must not take the users it did not get for
    /// absent.
    EmptyPage,
}

impl FaultKind {
    /// Whether the request is handled before the fault strikes.
    pub fn after_apply(self) -> bool {
        matches!(
            self,
            FaultKind::DropAfterApply
                | FaultKind::ServerErrorAfterApply
                | FaultKind::RepeatNextLink
                | FaultKind::GatewayTimeoutAfterApply
                | FaultKind::NoAccountEnabled
                | FaultKind::UsersAsDevices
                | FaultKind::EmptyPage
        )
    }

    /// The name the request log shows.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::TooMany => "429",
            FaultKind::Unavailable => "503",
            FaultKind::ServerError => "500",
            FaultKind::Drop => "drop",
            FaultKind::DropAfterApply => "drop_after_apply",
            FaultKind::ServerErrorAfterApply => "500_after_apply",
            FaultKind::RepeatNextLink => "repeat_next_link",
            FaultKind::BadGateway => "502",
            FaultKind::GatewayTimeoutAfterApply => "504_after_apply",
            FaultKind::NoAccountEnabled => "no_account_enabled",
            FaultKind::UsersAsDevices => "users_as_devices",
            FaultKind::EmptyPage => "empty_page",
        }
    }
}

/// A fault aimed at particular requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetedFault {
    /// `GET`, `POST`, … (any case).
    pub method: String,
    /// The request path ends with this, e.g. `/users` for a Procore create
    /// or `/sendMail`.
    pub path_suffix: String,
    /// Only requests whose body contains this text (e.g. one email address).
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Which matching requests, counted from 1 since the faults were set
    /// among those that reach the service (a request refused for its token
    /// or its budget is not counted); empty means every matching request.
    #[serde(default)]
    pub at: Vec<u64>,
    pub fault: FaultKind,
}

impl TargetedFault {
    pub fn matches(&self, method: &str, path: &str, body: &str) -> bool {
        self.method.eq_ignore_ascii_case(method)
            && path.ends_with(self.path_suffix.as_str())
            && self
                .body_contains
                .as_deref()
                .is_none_or(|needle| body.contains(needle))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// A token stops working after this many API calls (401, real shapes).
    pub token_expires_after_calls: Option<u32>,
    /// `expires_in` the token endpoints return (defaults: Graph 3599, Procore 5400).
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
    /// API request ordinals that are applied, then their connection dropped.
    pub drop_after_apply_at: Vec<u64>,
    /// API request ordinals that are applied, then answered 500.
    pub fail_500_after_apply_at: Vec<u64>,
    /// API request ordinals answered 502 by the gateway (an HTML page),
    /// write not applied.
    pub fail_502_at: Vec<u64>,
    /// API request ordinals that are applied, then answered 504 by the
    /// gateway (an HTML page).
    pub fail_504_after_apply_at: Vec<u64>,
    /// Share (0.0–1.0) of API requests answered 429, drawn from `seed`.
    pub rate_429: f64,
    /// Share answered 503 (write not applied), drawn from `seed`.
    pub rate_503: f64,
    /// Share answered 500 (write not applied), drawn from `seed`.
    pub rate_500: f64,
    /// Share whose connection is dropped (write not applied), drawn from `seed`.
    pub rate_drop: f64,
    /// Share applied and then dropped, drawn from `seed`.
    pub rate_drop_after_apply: f64,
    /// Share answered 502 by the gateway (write not applied), drawn from `seed`.
    pub rate_502: f64,
    /// Share applied and then answered 504 by the gateway, drawn from `seed`.
    pub rate_504_after_apply: f64,
    /// Faults aimed at particular requests.
    pub targeted: Vec<TargetedFault>,
    /// Delay before every API response.
    pub slow_ms: Option<u64>,
    /// Graph collections start with an empty page that still has a nextLink.
    pub empty_graph_pages: bool,
    /// Graph delta lists every change of an entity, in the order it
    /// happened, instead of one net entry: users delta a user deleted and
    /// restored as `@removed` then the object (each object as that change
    /// left it), group delta a member who left and came back as the
    /// `@removed` entry then the join ("a single entity will be contained
    /// multiple times in the response, if that entity was changed multiple
    /// times").
    pub delta_repeats: bool,
    /// A Graph delta round that follows a deltaLink starts with a page
    /// holding the previous round's last page again ("replays, which occur
    /// when the same change appears in subsequent responses").
    pub delta_replays: bool,
    /// Group delta cuts each group's `members@delta` into parts of at most
    /// half a page and serves the parts of different groups in turns
    /// (seeded by `seed`), never two parts of one group in a row while
    /// another group has parts left ("the same group could show up
    /// anywhere in the nextLink sequence").
    pub delta_shuffle: bool,
    /// At most this many `members@delta` entries on one group delta page
    /// (Graph's usual 1000 when unset).
    pub delta_page_members: Option<usize>,
    /// Replication delay: a user whose latest change (join, leave, account,
    /// mail, deletion, restore, creation) is among the last N changes is
    /// left out of the next N `GET /users?$filter=…` answers that filter on
    /// `id` and would hold them.
    pub lookup_lag: Option<u32>,
    /// Procore refuses a write that repeats one it already applied, with a
    /// 422: adding a project member again, deactivating an inactive user
    /// (instead of the 404 of a user it does not know) and reactivating an
    /// active one. Its documentation gives no answer to these, so a strict
    /// server may refuse the resend that a lost answer causes.
    pub refuse_repeats: bool,
    /// Seed of the rate-based faults and of `delta_shuffle`.
    pub seed: u64,
}

/// SplitMix64: a tiny, well-mixed hash, so each (seed, ordinal, kind) has
/// its own independent draw.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1) for one request and one kind of fault.
pub(crate) fn draw(seed: u64, ordinal: u64, stream: u64) -> f64 {
    let h = mix(mix(seed ^ mix(ordinal)) ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Faults {
    /// Why these faults cannot be meant: a rate outside 0–1 (`2` read as
    /// "every request" would hide a typo for `0.2`).
    pub fn problem(&self) -> Option<String> {
        let rates = [
            ("rate_429", self.rate_429),
            ("rate_503", self.rate_503),
            ("rate_500", self.rate_500),
            ("rate_drop", self.rate_drop),
            ("rate_drop_after_apply", self.rate_drop_after_apply),
            ("rate_502", self.rate_502),
            ("rate_504_after_apply", self.rate_504_after_apply),
        ];
        rates
            .iter()
            .find(|(_, rate)| !(0.0..=1.0).contains(rate))
            .map(|(name, rate)| {
                format!(
                    "`{name}` is {rate}; a rate is a share of requests from 0 to 1 (0.05 for one in twenty)"
                )
            })
    }

    /// The fault for API request number `ordinal` (from 1), if any, leaving
    /// targeted faults aside (see [`Faults::targeted_fault`]).
    pub fn decide(&self, ordinal: u64) -> Option<FaultKind> {
        let fixed = [
            (&self.drop_connection_at, FaultKind::Drop),
            (&self.drop_after_apply_at, FaultKind::DropAfterApply),
            (&self.fail_503_at, FaultKind::Unavailable),
            (&self.fail_500_at, FaultKind::ServerError),
            (
                &self.fail_500_after_apply_at,
                FaultKind::ServerErrorAfterApply,
            ),
            (&self.fail_502_at, FaultKind::BadGateway),
            (
                &self.fail_504_after_apply_at,
                FaultKind::GatewayTimeoutAfterApply,
            ),
        ];
        if let Some((_, kind)) = fixed.iter().find(|(at, _)| at.contains(&ordinal)) {
            return Some(*kind);
        }
        if self
            .rate_429_every
            .is_some_and(|n| n > 0 && ordinal.is_multiple_of(n))
        {
            return Some(FaultKind::TooMany);
        }
        let rates = [
            (self.rate_drop, FaultKind::Drop),
            (self.rate_drop_after_apply, FaultKind::DropAfterApply),
            (self.rate_503, FaultKind::Unavailable),
            (self.rate_500, FaultKind::ServerError),
            (self.rate_429, FaultKind::TooMany),
            // Later kinds draw from later streams: earlier seeds keep their faults.
            (self.rate_502, FaultKind::BadGateway),
            (
                self.rate_504_after_apply,
                FaultKind::GatewayTimeoutAfterApply,
            ),
        ];
        rates
            .iter()
            .enumerate()
            .find(|(stream, (rate, _))| {
                *rate > 0.0 && draw(self.seed, ordinal, *stream as u64) < *rate
            })
            .map(|(_, (_, kind))| *kind)
    }

    /// The targeted fault for a request, given how many earlier requests
    /// matched each target (`seen`, one counter per target, updated here).
    pub fn targeted_fault(
        &self,
        seen: &mut Vec<u64>,
        method: &str,
        path: &str,
        body: &str,
    ) -> Option<FaultKind> {
        seen.resize(self.targeted.len(), 0);
        let mut hit = None;
        for (t, count) in self.targeted.iter().zip(seen.iter_mut()) {
            if !t.matches(method, path, body) {
                continue;
            }
            *count += 1;
            if hit.is_none() && (t.at.is_empty() || t.at.contains(count)) {
                hit = Some(t.fault);
            }
        }
        hit
    }

    /// Whether any targeted fault looks at request bodies (so the gate
    /// knows whether to read them).
    pub fn needs_body(&self) -> bool {
        self.targeted.iter().any(|t| t.body_contains.is_some())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_repeat_for_a_seed_and_differ_across_seeds() {
        let faults = |seed| Faults {
            rate_503: 0.1,
            rate_429: 0.1,
            seed,
            ..Faults::default()
        };
        let run = |f: &Faults| (1..=2000).map(|n| f.decide(n)).collect::<Vec<_>>();
        assert_eq!(run(&faults(7)), run(&faults(7)));
        assert_ne!(run(&faults(7)), run(&faults(8)));
        let hits = run(&faults(7));
        let n503 = hits
            .iter()
            .filter(|h| **h == Some(FaultKind::Unavailable))
            .count();
        let n429 = hits
            .iter()
            .filter(|h| **h == Some(FaultKind::TooMany))
            .count();
        // About 10% each (binomial, n = 2000): far from both 0 and 400.
        assert!((120..=280).contains(&n503), "{n503}");
        assert!((100..=280).contains(&n429), "{n429}");
        assert!(run(&Faults::default()).iter().all(Option::is_none));
    }

    #[test]
    fn fixed_ordinals_come_first() {
        let f = Faults {
            drop_after_apply_at: vec![2],
            fail_500_after_apply_at: vec![3],
            rate_429: 1.0,
            ..Faults::default()
        };
        assert_eq!(f.decide(2), Some(FaultKind::DropAfterApply));
        assert_eq!(f.decide(3), Some(FaultKind::ServerErrorAfterApply));
        assert_eq!(f.decide(4), Some(FaultKind::TooMany));
    }

    #[test]
    fn targets_count_their_own_matches() {
        let f = Faults {
            targeted: vec![
                TargetedFault {
                    method: "post".into(),
                    path_suffix: "/users".into(),
                    body_contains: None,
                    at: vec![2],
                    fault: FaultKind::DropAfterApply,
                },
                TargetedFault {
                    method: "POST".into(),
                    path_suffix: "/sendMail".into(),
                    body_contains: Some("it-team@".into()),
                    at: vec![],
                    fault: FaultKind::Unavailable,
                },
            ],
            ..Faults::default()
        };
        let mut seen = Vec::new();
        let users = "/rest/v1.0/companies/1/users";
        assert_eq!(f.targeted_fault(&mut seen, "GET", users, ""), None);
        assert_eq!(f.targeted_fault(&mut seen, "POST", users, ""), None);
        assert_eq!(
            f.targeted_fault(&mut seen, "POST", users, ""),
            Some(FaultKind::DropAfterApply)
        );
        assert_eq!(f.targeted_fault(&mut seen, "POST", users, ""), None);
        let mail = "/v1.0/users/a@x.com/sendMail";
        assert_eq!(
            f.targeted_fault(&mut seen, "POST", mail, "to: other@"),
            None
        );
        for _ in 0..3 {
            assert_eq!(
                f.targeted_fault(&mut seen, "POST", mail, "to: it-team@x.com"),
                Some(FaultKind::Unavailable)
            );
        }
        assert!(f.needs_body());
    }
}
