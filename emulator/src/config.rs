//! How an emulator is set up.

use crate::faults::Faults;
use crate::scenario::Scenario;

/// Client ids and secrets the emulated token endpoints accept.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub graph_client_id: String,
    pub graph_client_secret: String,
    pub procore_client_id: String,
    pub procore_client_secret: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            graph_client_id: "5a1c3d52-8b7e-4f0a-9c61-2d4e6f8a0b13".into(),
            graph_client_secret: "emulated-graph-secret~Q8w.3xZ".into(),
            procore_client_id: "emulated-procore-client".into(),
            procore_client_secret: "emulated-procore-secret-5d1f".into(),
        }
    }
}

/// Which paging headers Procore list responses carry. Procore documents all
/// three; the others let tests prove a client does not depend on one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PagingHeaders {
    /// `Link`, `Total` and `Per-Page`, as documented.
    #[default]
    All,
    /// The same, but each link in a `Link` field of its own and `next`
    /// last, as RFC 8288 allows: a client reading only the first field
    /// never sees `next`.
    SeparateLinkFields,
    /// `Total` and `Per-Page`, no `Link`.
    NoLink,
    /// `Total` only.
    TotalOnly,
    /// None at all: only an empty page says the list is over.
    None,
}

/// The most a Procore list hands out per page, whatever `per_page` asks:
/// Procore's pagination guide gives 10,000 as the highest `per_page`.
pub const PROCORE_MAX_PER_PAGE: usize = 10_000;

/// The Procore budget when none is configured: a minute's worth that a
/// flow of tens of thousands of people stays under. A tenant of a million
/// creates more than this in a minute, and then waits for the next one.
pub const PROCORE_DEFAULT_RATE_LIMIT: u32 = 100_000;

/// The length of Procore's spike window: 10 seconds, by its rate-limiting
/// guide.
pub const PROCORE_SPIKE_WINDOW_SECS: u64 = 10;

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// 0 picks a free port; always 127.0.0.1.
    pub port: u16,
    pub scenario: Scenario,
    pub faults: Faults,
    /// Procore requests per window of `rate_window_secs` (Procore's hourly
    /// limit, counted over a minute unless set); `None` is
    /// [`PROCORE_DEFAULT_RATE_LIMIT`], still announced in headers, as
    /// Procore always does.
    pub procore_rate_limit: Option<u32>,
    /// Procore's spike limit: requests per `spike_window_secs`, a window
    /// that rolls; `None` is no spike limit. See [`crate::budget`].
    pub procore_spike_limit: Option<u32>,
    /// The length of the spike window in seconds: 10, as Procore documents.
    pub spike_window_secs: u64,
    /// Graph requests per minute; `None` is unlimited.
    pub graph_rate_limit: Option<u32>,
    /// The length of the long rate-limit window (Procore's hourly one, and
    /// Graph's) in seconds: 60 unless set, since an hour is too long to
    /// rehearse with; tests shorten it to see several windows in a few
    /// seconds.
    pub rate_window_secs: u64,
    /// 409 or 422 for a duplicate Procore user.
    pub conflict_status: u16,
    /// The paging headers of Procore lists.
    pub procore_paging: PagingHeaders,
    /// The most a Procore list page holds, whatever `per_page` asks (at most
    /// [`PROCORE_MAX_PER_PAGE`]); smaller values make a server that pages
    /// by fewer than the client asked.
    pub procore_max_per_page: usize,
    pub credentials: Credentials,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            port: 0,
            scenario: Scenario::generate(40, 7),
            faults: Faults::default(),
            procore_rate_limit: None,
            graph_rate_limit: None,
            rate_window_secs: 60,
            procore_spike_limit: None,
            spike_window_secs: PROCORE_SPIKE_WINDOW_SECS,
            conflict_status: 422,
            procore_paging: PagingHeaders::All,
            procore_max_per_page: PROCORE_MAX_PER_PAGE,
            credentials: Credentials::default(),
        }
    }
}
