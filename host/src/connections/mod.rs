//! Connections: the only way a step reaches the outside world.
//!
//! A [`Connection`] owns one named connection of a flow: its base URL and
//! static headers, its credentials ([`auth`]), its pacing ([`throttle`]) and
//! its retry policy. Components hand it a request; it checks the request
//! against [`policy`], waits its turn, authenticates, sends, retries what is
//! safe to retry, and returns the final response. Nothing a component sends
//! or receives ever carries a credential.

pub mod auth;
pub mod policy;
pub mod throttle;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use crate::flow::model::{ConnectionSpec, Flow};
use crate::redact::Redactor;
use auth::{AuthError, TokenSource};
use policy::Violation;
use throttle::{Hold, Throttle, parse_retry_after};

/// 429s are the service asking us to wait, not failing: allow more rounds of them.
const MAX_THROTTLED_ATTEMPTS: u32 = 10;

/// A 401 drops the token and sends the request again with a new one. Twice,
/// not once: among concurrent requests, the replacement a retry picks up may
/// itself have been revoked a moment later (a service that expires tokens by
/// use, or a key rotation). Wrong credentials still end at the token
/// endpoint, which refuses them.
const MAX_TOKEN_REFRESHES_PER_REQUEST: u32 = 2;

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
    pub idempotent: bool,
}

#[derive(Debug, Clone)]
pub struct IncomingResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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
    tokens: TokenSource,
    throttle: Throttle,
    http: reqwest::Client,
    redactor: Redactor,
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

pub fn for_flow(flow: &Flow, http: &reqwest::Client, redactor: &Redactor) -> Connections {
    flow.connections
        .iter()
        .map(|(name, spec)| {
            (
                name.clone(),
                Arc::new(Connection::new(
                    spec.clone(),
                    http.clone(),
                    redactor.clone(),
                )),
            )
        })
        .collect()
}

impl Connection {
    pub fn new(spec: Arc<ConnectionSpec>, http: reqwest::Client, redactor: Redactor) -> Self {
        Self {
            tokens: TokenSource::new(
                spec.auth.clone(),
                redactor.clone(),
                spec.request_timeout,
                spec.retry,
            ),
            throttle: Throttle::new(spec.rate_limit.map(|r| r.per_second)),
            spec,
            http,
            redactor,
        }
    }

    /// Fetches a token now, so bad credentials fail a run before any step.
    pub async fn check_credentials(&self) -> Result<(), AuthError> {
        self.tokens.authorization(&self.http).await.map(|_| ())
    }

    pub fn needs_token(&self) -> bool {
        self.tokens.needs_token()
    }

    /// Sends a component's request. Returns the outcome and what it cost.
    pub async fn send(
        &self,
        request: OutgoingRequest,
        dry_run: bool,
    ) -> (Result<IncomingResponse, SendError>, RequestStats) {
        let mut stats = RequestStats::default();
        let result = self.send_inner(request, dry_run, &mut stats).await;
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
        stats: &mut RequestStats,
    ) -> Result<IncomingResponse, SendError> {
        policy::check_headers(&request.headers, &self.spec.headers)?;
        let url = policy::resolve_url(&self.spec.base_url, &request.url, &request.query)?;
        if dry_run && !request.method.is_read() {
            return Err(SendError::DryRun(format!("{} {url}", request.method)));
        }
        let safe_to_repeat = request.method.is_read() || request.idempotent;
        let retry = self.spec.retry;
        let mut failures = 0u32;
        let mut throttled = 0u32;
        let mut refreshed_after_401 = 0u32;
        loop {
            // The token first: requests queued behind a slow token fetch must
            // not each take a slot of the rate budget and then go out at once.
            let mut authorization = self.tokens.authorization(&self.http).await?;
            // The permit counts this request in flight until it is answered;
            // dropped unanswered (transport error, the step's deadline
            // dropping this future) it gives its place back.
            let (permit, waited) = self.throttle.acquire().await.map_err(|closed| {
                SendError::Unavailable(format!("{} {url}: {closed}", request.method))
            })?;
            stats.wait_ms += millis(waited);
            if !waited.is_zero() {
                // A long wait may have outlasted the token: ask again (a
                // cached token that is still good costs nothing).
                authorization = self.tokens.authorization(&self.http).await?;
            }
            let mut builder = self
                .http
                .request(request.method.as_reqwest(), url.clone())
                .timeout(self.spec.request_timeout);
            for (name, value) in self.spec.headers.iter().chain(request.headers.iter()) {
                builder = builder.header(name, value);
            }
            if let Some((header, _)) = &authorization {
                builder = builder.header(reqwest::header::AUTHORIZATION, header.expose());
            }
            if let Some(body) = &request.body {
                builder = builder.body(body.clone());
            }
            stats.requests += 1;
            let response = match builder.send().await {
                Ok(response) => response,
                Err(e) => {
                    drop(permit);
                    let reason = describe_reqwest_error(&e);
                    // A request that could not even be built was never sent,
                    // and sending it again would fail the same way.
                    if !e.is_builder() && safe_to_repeat && failures + 1 < retry.max_attempts {
                        failures += 1;
                        stats.retried += 1;
                        stats.wait_ms += sleep(backoff(&retry, failures)).await;
                        continue;
                    }
                    let tried = if failures > 0 {
                        format!(" after {} attempts", failures + 1)
                    } else {
                        String::new()
                    };
                    let note = if safe_to_repeat || e.is_builder() {
                        String::new()
                    } else {
                        "; it was not retried because the write may have reached the service and is not marked idempotent".to_string()
                    };
                    return Err(SendError::Unavailable(format!(
                        "{} {url} failed{tried}: {reason}{note}",
                        request.method
                    )));
                }
            };
            let status = response.status().as_u16();
            let headers: Vec<(String, String)> = response
                .headers()
                .iter()
                .filter(|(n, _)| !policy::hidden_response_header(n.as_str()))
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            permit.answered(&headers);
            let retry_after = headers
                .iter()
                .find(|(n, _)| n == "retry-after")
                .and_then(|(_, v)| parse_retry_after(v));
            // A 429 or 503 with Retry-After holds the whole connection,
            // whether or not this request is sent again: no request of any
            // step goes out before it has passed.
            let mut held = false;
            if matches!(status, 429 | 503)
                && let Some(delay) = retry_after
            {
                held = true;
                if let Hold::Closed(closed) = self.throttle.hold_for(delay) {
                    stats.throttled += 1;
                    return Err(SendError::Unavailable(format!(
                        "{} {url} answered {status}: {closed}",
                        request.method
                    )));
                }
            }
            if status == 429 && throttled + 1 < MAX_THROTTLED_ATTEMPTS {
                // The service did not process the request: any method may be resent.
                throttled += 1;
                stats.throttled += 1;
                if !held {
                    self.throttle.hold_for(backoff(&retry, throttled));
                }
                continue;
            }
            if status == 401
                && refreshed_after_401 < MAX_TOKEN_REFRESHES_PER_REQUEST
                && let Some((header, _)) = &authorization
                && matches!(
                    self.spec.auth,
                    crate::flow::model::Auth::OAuth2ClientCredentials { .. }
                )
            {
                refreshed_after_401 += 1;
                self.tokens.invalidate(header).await;
                stats.retried += 1;
                continue;
            }
            if status >= 500 && safe_to_repeat && failures + 1 < retry.max_attempts {
                failures += 1;
                stats.retried += 1;
                if held {
                    // The next attempt waits for the hold in `acquire`.
                    stats.throttled += 1;
                } else {
                    stats.wait_ms += sleep(backoff(&retry, failures)).await;
                }
                continue;
            }
            match read_capped(response, self.spec.max_response_bytes).await {
                Ok(body) => {
                    return Ok(IncomingResponse {
                        status,
                        headers,
                        body,
                    });
                }
                // The connection broke mid-body: like a transport failure, the
                // request may have been processed, so only safe ones are repeated.
                Err(SendError::Unavailable(_))
                    if safe_to_repeat && failures + 1 < retry.max_attempts =>
                {
                    failures += 1;
                    stats.retried += 1;
                    stats.wait_ms += sleep(backoff(&retry, failures)).await;
                }
                Err(SendError::Unavailable(reason)) if !safe_to_repeat => {
                    return Err(SendError::Unavailable(format!(
                        "{} {url}: {reason}; it was not retried because the write may have reached the service and is not marked idempotent",
                        request.method
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sleeps, and says for how long in milliseconds (for the request stats).
async fn sleep(duration: Duration) -> u64 {
    tokio::time::sleep(duration).await;
    millis(duration)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Exponential backoff with full jitter, between half and all of the step.
fn backoff(policy: &crate::flow::model::RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(policy.max_delay);
    let jitter = rand::rng().random_range(0.5..=1.0);
    capped.mul_f64(jitter)
}

async fn read_capped(mut response: reqwest::Response, cap: u64) -> Result<Vec<u8>, SendError> {
    if response.content_length().is_some_and(|len| len > cap) {
        return Err(SendError::TooLarge(cap));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > cap {
                    return Err(SendError::TooLarge(cap));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(SendError::Unavailable(format!(
                    "reading the response failed: {}",
                    describe_reqwest_error(&e)
                )));
            }
        }
    }
}

/// A one-line reason for a transport failure, including its cause chain.
pub fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    match causes.last() {
        Some(root) => format!("{kind} ({root})"),
        None => kind.to_string(),
    }
}
