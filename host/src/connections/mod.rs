//! Connections: the only way a step reaches the outside world.
//!
//! A [`Connection`] owns one named connection of a flow: its base URL and
//! static headers, its credentials ([`auth`]), its pacing ([`throttle`]) and
//! its retry policy. Components hand it a request; it checks the request
//! against [`policy`], waits its turn, authenticates, sends over a [`wire`],
//! and after each attempt does what [`decide`] says (send again, wait,
//! refresh the token, give up) until it can return the final response.
//! Nothing a component sends or receives ever carries a credential. A run
//! may record every exchange, or answer them from a recording ([`tape`]).

pub mod auth;
pub mod decide;
pub mod policy;
pub mod services;
pub mod tape;
pub mod throttle;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use crate::flow::model::{Auth, ConnectionSpec, Flow, Secret};
use crate::redact::Redactor;
use crate::run::RunGuard;
use auth::{AuthError, TokenSource};
use decide::{Attempt, Decision, GiveUp, Next, Resend, Rules, Tally, decide};
use policy::Violation;
pub use services::Services;
use tape::{Tape, Tapes};
use throttle::{Pace, Throttle};
use wire::{ReadFailure, Wire};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn as_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        }
    }

    pub fn is_read(self) -> bool {
        matches!(self, Method::Get | Method::Head)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_reqwest().as_str())
    }
}

#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    pub method: Method,
    pub url: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// The service applies it at most once: repeat it like a read.
    pub idempotent: bool,
    /// Repeat it only after answers that prove the service did not act
    /// (see [`decide`]).
    pub retry_when_not_acted: bool,
}

#[derive(Debug, Clone)]
pub struct IncomingResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// For the run's log, when secrets were removed from the response.
    pub scrubbed: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("dry run: {0} was not sent")]
    DryRun(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    AuthFailed(#[from] AuthError),
    #[error("the response is larger than the connection's limit of {0} bytes")]
    TooLarge(u64),
    #[error("sandbox violation: {0}")]
    Violation(#[from] Violation),
    /// A write not sent: the run's lease on its flow is lost (another
    /// replica owns the flow now). The call ends there, as interrupted.
    #[error("{0}")]
    LeaseLost(String),
}

/// What one step did on one connection, for progress and history.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct RequestStats {
    pub requests: u64,
    pub retried: u64,
    pub throttled: u64,
    pub wait_ms: u64,
}

impl RequestStats {
    pub fn add(&mut self, other: &RequestStats) {
        self.requests += other.requests;
        self.retried += other.retried;
        self.throttled += other.throttled;
        self.wait_ms += other.wait_ms;
    }
}

pub struct Connection {
    pub spec: Arc<ConnectionSpec>,
    /// `spec.base_url`, ready to resolve requests in.
    base: policy::Base,
    /// The API's token, shared with every connection to it ([`Services`]).
    tokens: Arc<TokenSource>,
    /// The API's budget, shared likewise.
    throttle: Arc<Throttle>,
    /// This connection's own `rate_limit` on the shared budget.
    _pace: Option<Pace>,
    http: reqwest::Client,
    /// The run's redactor.
    redactor: Redactor,
    tape: Tape,
    /// The last access token taught to the run's redactor: the token may
    /// have been obtained by another run's request.
    learned: Mutex<Option<String>>,
}

/// All connections of one run, by name.
pub type Connections = BTreeMap<String, Arc<Connection>>;

/// One HTTP client per process: connection pools are shared, redirects are
/// never followed (a redirect could leave the allow-listed base URL).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .build()?)
}

/// A run's connections, on the process's shared tokens and budgets; with
/// `tapes`, recording or replaying.
pub fn for_flow(
    flow: &Flow,
    services: &Services,
    redactor: &Redactor,
    tapes: Option<&Tapes>,
) -> Connections {
    flow.connections
        .iter()
        .map(|(name, spec)| {
            let connection = services.connect(spec.clone(), redactor.clone());
            let tape = tapes.map(|t| t.for_connection(name)).unwrap_or_default();
            (name.clone(), Arc::new(connection.on_tape(tape)))
        })
        .collect()
}

impl Connection {
    /// A connection with a token and a budget of its own, shared with no
    /// other (tests and benchmarks; runs use [`Services::connect`]).
    pub fn new(spec: Arc<ConnectionSpec>, http: reqwest::Client, redactor: Redactor) -> Self {
        let tokens = Arc::new(TokenSource::new(
            spec.auth.clone(),
            redactor.clone(),
            spec.request_timeout,
            spec.retry,
        ));
        let throttle = Arc::new(Throttle::new(None));
        Self::on_services(spec, http, redactor, tokens, throttle)
    }

    /// A connection for `spec` on the given token source and budget.
    fn on_services(
        spec: Arc<ConnectionSpec>,
        http: reqwest::Client,
        redactor: Redactor,
        tokens: Arc<TokenSource>,
        throttle: Arc<Throttle>,
    ) -> Self {
        // The connection's own credentials, whatever the flow declared:
        // every response is scrubbed of them.
        match &spec.auth {
            Auth::OAuth2ClientCredentials { client_secret, .. } => {
                redactor.add(client_secret.expose().to_string());
            }
            Auth::Bearer(token) => redactor.add(token.expose().to_string()),
            Auth::None => {}
        }
        Self {
            _pace: throttle.pace(spec.rate_limit.map(|r| r.per_second)),
            base: policy::Base::new(&spec.base_url),
            tokens,
            throttle,
            spec,
            http,
            redactor,
            tape: Tape::Live,
            learned: Mutex::new(None),
        }
    }

    /// Records this connection's exchanges, or answers them from a recording.
    pub fn on_tape(mut self, tape: Tape) -> Self {
        self.tape = tape;
        self
    }

    /// The `Authorization` header, its token taught to the run's redactor
    /// (it may come from another run's request on the shared source).
    async fn authorization(&self) -> Result<Option<Secret>, AuthError> {
        let Some((header, _)) = self.tokens.authorization(&self.http).await? else {
            return Ok(None);
        };
        let token = header.expose();
        let token = token.strip_prefix("Bearer ").unwrap_or(token);
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if learned.as_deref() != Some(token) {
            self.redactor.add(token.to_string());
            *learned = Some(token.to_string());
        }
        Ok(Some(header))
    }

    /// Fetches a token now, so bad credentials fail a run before any step.
    /// A replayed connection needs none and calls no token endpoint.
    pub async fn check_credentials(&self) -> Result<(), AuthError> {
        if self.tape.is_replay() {
            return Ok(());
        }
        self.authorization().await.map(|_| ())
    }

    /// A request as this connection would send it, for an error: resolved
    /// against the base URL (the path as given when it does not resolve),
    /// shortened and redacted.
    pub fn shown_request(&self, url: &str, query: &[(String, String)]) -> String {
        let resolved = match self.base.resolve(url, query) {
            Ok(resolved) => shown_url(resolved.as_str()),
            Err(_) => shown_url(url),
        };
        self.redactor.redact(&resolved)
    }

    /// What holds this connection's requests back now (its throttle is
    /// shared by every connection to the same API in the process).
    pub fn busy(&self) -> throttle::Busy {
        self.throttle.busy()
    }

    pub fn needs_token(&self) -> bool {
        self.tokens.needs_token()
    }

    /// Sends a component's request. Returns the outcome and what it cost.
    /// `lease`, the run's hold on its flow when it has one, is asked again
    /// right before each write goes out: a process paused while the write
    /// waited for its turn may have lost the flow to another replica,
    /// which has done the same work since.
    pub async fn send(
        &self,
        request: OutgoingRequest,
        dry_run: bool,
        lease: Option<&dyn RunGuard>,
    ) -> (Result<IncomingResponse, SendError>, RequestStats) {
        let mut stats = RequestStats::default();
        let result = self.send_inner(request, dry_run, lease, &mut stats).await;
        let result = result.map_err(|e| match e {
            SendError::Unavailable(m) => SendError::Unavailable(self.redactor.redact(&m)),
            other => other,
        });
        (result, stats)
    }

    async fn send_inner(
        &self,
        request: OutgoingRequest,
        dry_run: bool,
        lease: Option<&dyn RunGuard>,
        stats: &mut RequestStats,
    ) -> Result<IncomingResponse, SendError> {
        policy::check_headers(&request.headers, &self.spec.headers)?;
        policy::check_body(request.method, request.body.as_deref())?;
        let url = self.base.resolve(&request.url, &request.query)?;
        if dry_run && !request.method.is_read() {
            return Err(SendError::DryRun(format!(
                "{} {}",
                request.method,
                shown_url(url.as_str())
            )));
        }
        let http = wire::Http(&self.http);
        let response = match &self.tape {
            Tape::Live => self.exchange(&http, &request, &url, lease, stats).await?,
            Tape::Record(recorder) => {
                let wire = tape::record::Recording {
                    http,
                    recorder,
                    redactor: &self.redactor,
                    cap: self.spec.max_response_bytes,
                };
                self.exchange(&wire, &request, &url, lease, stats).await?
            }
            Tape::Replay(player) => {
                let wire = tape::replay::Replaying {
                    player,
                    redactor: &self.redactor,
                };
                self.exchange(&wire, &request, &url, lease, stats).await?
            }
        };
        Ok(self.scrub(response, &request, &url))
    }

    /// Removes every secret the host holds from a response before the
    /// component sees it: a service that echoes the request (or a gateway's
    /// error page quoting it) would otherwise hand the component the token.
    fn scrub(
        &self,
        mut response: IncomingResponse,
        request: &OutgoingRequest,
        url: &url::Url,
    ) -> IncomingResponse {
        // One look at the secrets for the whole response.
        let scrubber = self.redactor.scrubber();
        let (body, mut found) = scrubber.scrub(&response.body);
        if let std::borrow::Cow::Owned(clean) = body {
            response.body = clean;
        }
        for (name, value) in &mut response.headers {
            for text in [name, value] {
                let (clean, n) = scrubber.scrub(text.as_bytes());
                if n > 0 {
                    *text = String::from_utf8_lossy(&clean).into_owned();
                    found += n;
                }
            }
        }
        drop(scrubber);
        if found > 0 {
            response.scrubbed = Some(format!(
                "the host removed {found} secret{} from the answer to {} {} before the component saw {}",
                if found == 1 { "" } else { "s" },
                request.method,
                shown_url(url.as_str()),
                if found == 1 { "it" } else { "them" },
            ));
        }
        response
    }

    /// Sends until a decision hands a response over or gives up.
    async fn exchange<W: Wire>(
        &self,
        wire: &W,
        request: &OutgoingRequest,
        url: &url::Url,
        lease: Option<&dyn RunGuard>,
        stats: &mut RequestStats,
    ) -> Result<IncomingResponse, SendError> {
        let rules = Rules {
            safe_to_repeat: request.method.is_read() || request.idempotent,
            resend_when_not_acted: request.retry_when_not_acted,
            can_refresh: matches!(self.spec.auth, Auth::OAuth2ClientCredentials { .. }),
            retry: self.spec.retry,
        };
        // Named only in messages: most requests never need the text.
        let what = Named {
            method: request.method,
            url,
        };
        let mut tally = Tally::default();
        loop {
            let (authorization, permit) = self.turn(&what, stats).await?;
            if let Some(lease) = lease.filter(|_| !request.method.is_read())
                && let Err(why) = lease.may_go_on().await
            {
                return Err(SendError::LeaseLost(format!("{what} was not sent: {why}")));
            }
            stats.requests += 1;
            let outgoing = self.outgoing(request, url, authorization.as_ref());
            let head = match wire.send(outgoing).await {
                Ok(head) => head,
                Err(failure) => {
                    let attempt = Attempt::NoAnswer {
                        built: failure.built,
                        connected: failure.connected,
                    };
                    let decision = decide(attempt, tally, &rules, jitter());
                    // In force before the permit's end wakes anyone.
                    self.hold(decision.hold);
                    drop(permit);
                    let cause = Cause::NoAnswer(&failure.reason);
                    tally = self
                        .carry_out(decision, tally, stats, &what, cause, None)
                        .await?;
                    continue;
                }
            };
            let attempt = Attempt::Answered {
                status: head.status,
                retry_after: head
                    .headers
                    .iter()
                    .find(|(n, _)| n == "retry-after")
                    .and_then(|(_, v)| self.throttle.retry_after(v)),
            };
            let decision = decide(attempt, tally, &rules, jitter());
            permit.answered(&head.headers, decision.hold);
            let cause = Cause::Status(head.status);
            if decision.next != Next::Deliver {
                let token = authorization.as_ref();
                tally = self
                    .carry_out(decision, tally, stats, &what, cause, token)
                    .await?;
                continue;
            }
            let cap = self.spec.max_response_bytes;
            match wire.read(head.body, cap, self.spec.request_timeout).await {
                Ok(body) if !body.is_empty() && undecoded(&head.headers).is_some() => {
                    let encoding = undecoded(&head.headers).unwrap_or_default();
                    return Err(SendError::Unavailable(format!(
                        "{what}: the service answered in Content-Encoding `{encoding}`, which the host does not decode (it offers gzip, deflate and br) and so cannot check for secrets"
                    )));
                }
                Ok(body) => {
                    return Ok(IncomingResponse {
                        status: head.status,
                        headers: visible(head.headers),
                        body,
                        scrubbed: None,
                    });
                }
                Err(ReadFailure::TooLarge) => return Err(SendError::TooLarge(cap)),
                Err(ReadFailure::Broken(reason)) => {
                    let decision = decide(Attempt::BodyBroken, tally, &rules, jitter());
                    self.hold(decision.hold);
                    let cause = Cause::BodyBroken(&reason);
                    tally = self
                        .carry_out(decision, tally, stats, &what, cause, None)
                        .await?;
                }
            }
        }
    }

    /// Waits for a request's turn: its token first (requests queued behind
    /// a slow token fetch must not each take a slot of the rate budget and
    /// then go out at once), then its place in the throttle. The permit
    /// counts the request in flight until it is answered; dropped
    /// unanswered (a transport error, the step's deadline dropping this
    /// future) it gives its place back.
    async fn turn(
        &self,
        what: &Named<'_>,
        stats: &mut RequestStats,
    ) -> Result<(Option<Secret>, throttle::Permit<'_>), SendError> {
        // A replayed request goes nowhere: it carries no credential.
        let replay = self.tape.is_replay();
        let mut authorization = match replay {
            true => None,
            false => self.authorization().await?,
        };
        let (permit, waited) = self
            .throttle
            .acquire()
            .await
            .map_err(|closed| SendError::Unavailable(format!("{what}: {closed}")))?;
        stats.wait_ms += millis(waited);
        if !waited.is_zero() && !replay {
            // A long wait may have outlasted the token: ask again (a
            // cached token that is still good costs nothing).
            authorization = self.authorization().await?;
        }
        Ok((authorization, permit))
    }

    /// The request as it goes out: the connection's headers, the
    /// component's, and the credential.
    fn outgoing<'a>(
        &'a self,
        request: &'a OutgoingRequest,
        url: &'a url::Url,
        authorization: Option<&'a Secret>,
    ) -> wire::Outgoing<'a> {
        let mut headers: Vec<(&str, &str)> = self
            .spec
            .headers
            .iter()
            .chain(request.headers.iter())
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if let Some(header) = authorization {
            headers.push(("authorization", header.expose()));
        }
        wire::Outgoing {
            method: request.method,
            url,
            headers,
            body: request.body.as_deref(),
            timeout: self.spec.request_timeout,
        }
    }

    /// Nothing goes out on this connection before `hold` has passed.
    fn hold(&self, hold: Option<Duration>) {
        if let Some(delay) = hold {
            // A delay past the longest wait closes the connection for a
            // while; the decision already gives this request up.
            let _ = self.throttle.hold_for(delay);
        }
    }

    /// Carries out a decision that does not deliver: sleeps, drops a
    /// rejected token, or says why it gave up. The decision's hold is the
    /// caller's to put in force, before the request's permit ends (that
    /// wakes the requests waiting behind it). Returns the request's tally
    /// for its next attempt.
    async fn carry_out(
        &self,
        decision: Decision,
        tally: Tally,
        stats: &mut RequestStats,
        what: &Named<'_>,
        cause: Cause<'_>,
        token: Option<&Secret>,
    ) -> Result<Tally, SendError> {
        match decision.next {
            Next::Resend { sleep, why } => {
                match why {
                    Resend::Failed => stats.retried += 1,
                    Resend::Throttled => stats.throttled += 1,
                    Resend::FailedWhileHeld => {
                        stats.retried += 1;
                        stats.throttled += 1;
                    }
                }
                tokio::time::sleep(sleep).await;
                stats.wait_ms += millis(sleep);
            }
            Next::RefreshToken => {
                if let Some(token) = token {
                    self.tokens.invalidate(token).await;
                }
                stats.retried += 1;
            }
            Next::GiveUp(why) => {
                if matches!(why, GiveUp::Closed { .. }) {
                    stats.throttled += 1;
                }
                return Err(SendError::Unavailable(gave_up(what, why, cause, tally)));
            }
            // Delivering reads the body, which is the loop's to do.
            Next::Deliver => {}
        }
        Ok(tally.after(&decision.next))
    }
}

/// A request as messages name it: its method and its URL (cut to
/// [`MAX_SHOWN_URL`]), written out only when a message needs it.
struct Named<'a> {
    method: Method,
    url: &'a url::Url,
}

impl std::fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, shown_url(self.url.as_str()))
    }
}

/// What ended an attempt, for the message when the request is given up.
#[derive(Clone, Copy)]
enum Cause<'a> {
    NoAnswer(&'a str),
    BodyBroken(&'a str),
    Status(u16),
}

/// What a write given up without an answer says when the service may
/// have acted on it (what [`crate::engine::Waiting`] looks for).
pub const MAY_HAVE_REACHED: &str =
    "the write may have reached the service and is not marked idempotent";

/// Why a request was given up, in one line naming it and its attempts.
fn gave_up(what: &Named<'_>, why: GiveUp, cause: Cause<'_>, tally: Tally) -> String {
    let attempts = tally.attempts();
    let tried = format!(
        "after {attempts} attempt{}",
        if attempts == 1 { "" } else { "s" }
    );
    // An earlier attempt may have been resent (it provably did not reach
    // the service); this last one may have, so it is not resent again.
    let note = |unsafe_write: bool| match (unsafe_write, attempts) {
        (false, _) => String::new(),
        (true, 1) => format!("; it was not retried because {MAY_HAVE_REACHED}"),
        (true, _) => format!("; the last attempt was not retried because {MAY_HAVE_REACHED}"),
    };
    let reason = match cause {
        Cause::NoAnswer(r) | Cause::BodyBroken(r) => r.to_string(),
        Cause::Status(status) => format!("HTTP {status}"),
    };
    match why {
        GiveUp::NoAnswer { unsafe_write } => {
            format!("{what} failed {tried}: {reason}{}", note(unsafe_write))
        }
        GiveUp::BodyBroken { unsafe_write } => format!(
            "{what}: reading the response failed {tried}: {reason}{}",
            note(unsafe_write)
        ),
        GiveUp::Closed { status, delay } => {
            format!("{what} answered {status}: {}", throttle::Closed(delay))
        }
    }
}

/// A content encoding left on a response: the HTTP client removes the
/// header of each encoding it decoded, so one still there was not.
fn undecoded(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(n, v)| n == "content-encoding" && !v.trim().eq_ignore_ascii_case("identity"))
        .map(|(_, v)| v.as_str())
}

/// The response headers a component may see.
fn visible(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(n, _)| !policy::hidden_response_header(n))
        .collect()
}

/// The longest URL quoted whole in a message; longer ones are cut in the
/// middle, keeping the host and the path's end, which say most.
const MAX_SHOWN_URL: usize = 160;

/// A URL as quoted in messages: at most [`MAX_SHOWN_URL`] characters.
pub fn shown_url(url: &str) -> String {
    let count = url.chars().count();
    if count <= MAX_SHOWN_URL {
        return url.to_string();
    }
    let keep = MAX_SHOWN_URL - 1;
    let head: String = url.chars().take(keep * 2 / 3).collect();
    let tail: String = url.chars().skip(count - (keep - keep * 2 / 3)).collect();
    format!("{head}…{tail}")
}

/// Jitter for backoff waits, within [0.5, 1] of the full step.
fn jitter() -> f64 {
    rand::rng().random_range(0.5..=1.0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
