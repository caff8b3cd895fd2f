//! Access tokens for a connection: fetched once, shared, refreshed early.
//!
//! OAuth2 client credentials (RFC 6749 §4.4) as both the Microsoft identity
//! platform and Procore implement it: a form-encoded POST with the client id
//! and secret (and `scope` for Microsoft). The token is shared by every step
//! and `for_each` item using the connection, refreshed shortly before
//! `expires_in` runs out, and dropped when the service answers 401 so the
//! next request fetches a fresh one. Token types are compared without case
//! (Procore says `bearer`, Microsoft `Bearer`).
//!
//! One fetch at a time: the cache's lock is held while fetching, so
//! concurrent requests (and a burst of 401s) share one token request.
//! The token request has the connection's `request_timeout` and a size cap
//! on its answer, and is retried like a read: on transport errors, 429 and
//! 5xx, with backoff that honours `Retry-After` (up to the connection's
//! `max_delay`; a longer wait is reported rather than slept through). Only a
//! 400 or 401 means the credentials were rejected. When an early refresh
//! fails for any other reason, the current token is used while it lasts.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use super::throttle::parse_retry_after;
use super::wire::{ReadFailure, read_capped};
use crate::flow::model::{Auth, RetryPolicy, Secret};
use crate::redact::Redactor;

/// Refresh this long before expiry, so a token never dies mid-request.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// `expires_in` is read within [0, 24 h]: providers issue tokens for an
/// hour or so, and a larger (or infinite) value must not overflow the clock.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// An absent or unreadable `expires_in`: an hour, what both providers issue.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The shortest lifetime believed: at most one token request a second.
const MIN_LIFETIME: Duration = Duration::from_secs(1);
/// A token response is a few KiB (an Entra JWT is the largest); 64 KiB is
/// many times that, and keeps a broken endpoint from filling memory.
const MAX_TOKEN_RESPONSE: u64 = 64 * 1024;
/// After an early refresh fails, the current token is used for this long
/// (or half its remaining life, if less) before the next try.
const REFRESH_RETRY_PAUSE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The provider rejected the credentials (400 or 401); carries its
    /// `error` and `error_description`, never the secret.
    #[error("the token endpoint {endpoint} rejected the credentials ({status}): {detail}; {hint}")]
    Rejected {
        endpoint: String,
        status: u16,
        detail: String,
        hint: String,
    },
    /// The endpoint could not be reached or kept failing (transport
    /// errors, 429, 5xx): a later run may well succeed.
    #[error("the token endpoint {endpoint} is unavailable: {detail}")]
    Unavailable { endpoint: String, detail: String },
    /// The endpoint answered, but not with a token (another status, a body
    /// that is not a token, an unsupported token type).
    #[error("the token endpoint {endpoint} did not issue a token: {detail}")]
    BadResponse { endpoint: String, detail: String },
}

pub struct TokenSource {
    auth: Auth,
    cached: Mutex<Option<CachedToken>>,
    redactor: Redactor,
    request_timeout: Duration,
    retry: RetryPolicy,
}

/// What a client-credentials token request sends.
#[derive(Clone, Copy)]
struct ClientCredentials<'a> {
    token_url: &'a Url,
    client_id: &'a str,
    client_secret: &'a Secret,
    scope: Option<&'a str>,
}

#[derive(Clone)]
struct CachedToken {
    value: Secret,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct TokenErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// How one token request ended, when it did not bring a token.
enum Failure {
    /// Asking again will not help.
    Final(AuthError),
    /// Asking again may help, after `retry_after` if the endpoint said so.
    Transient {
        error: AuthError,
        retry_after: Option<Duration>,
    },
}

impl TokenSource {
    pub fn new(
        auth: Auth,
        redactor: Redactor,
        request_timeout: Duration,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            auth,
            cached: Mutex::new(None),
            redactor,
            request_timeout,
            retry,
        }
    }

    pub fn needs_token(&self) -> bool {
        !matches!(self.auth, Auth::None)
    }

    /// The `Authorization` header value, fetching a token when needed.
    /// Returns the value and whether a token endpoint was called.
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
    ) -> Result<Option<(Secret, bool)>, AuthError> {
        match &self.auth {
            Auth::None => Ok(None),
            Auth::Bearer(token) => Ok(Some((
                Secret::new(format!("Bearer {}", token.expose())),
                false,
            ))),
            Auth::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                let mut cached = self.cached.lock().await;
                let now = Instant::now();
                if let Some(token) = cached.as_ref()
                    && now < token.refresh_at
                {
                    return Ok(Some((token.value.clone(), false)));
                }
                let still_valid = cached.clone().filter(|t| now < t.expires_at);
                // With a token that still works, one try: a failing endpoint
                // must not hold every request up while it is retried.
                let attempts = if still_valid.is_some() {
                    1
                } else {
                    self.retry.max_attempts.max(1)
                };
                let credentials = ClientCredentials {
                    token_url,
                    client_id,
                    client_secret,
                    scope: scope.as_deref(),
                };
                let fetched = self.fetch(http, &credentials, attempts).await;
                match (fetched, still_valid) {
                    (Ok(token), _) => {
                        let header = token.value.clone();
                        *cached = Some(token);
                        Ok(Some((header, true)))
                    }
                    // Rejected: the credentials no longer work; say so now.
                    (Err(e @ AuthError::Rejected { .. }), _) | (Err(e), None) => Err(e),
                    (Err(_), Some(mut current)) => {
                        let left = current.expires_at.saturating_duration_since(now);
                        current.refresh_at = now + REFRESH_RETRY_PAUSE.min(left / 2);
                        let header = current.value.clone();
                        *cached = Some(current);
                        Ok(Some((header, false)))
                    }
                }
            }
        }
    }

    /// Forgets `rejected` (after a 401) unless another request already replaced it.
    pub async fn invalidate(&self, rejected: &Secret) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|t| &t.value == rejected) {
            *cached = None;
        }
    }

    /// Asks for a token up to `attempts` times.
    async fn fetch(
        &self,
        http: &reqwest::Client,
        credentials: &ClientCredentials<'_>,
        attempts: u32,
    ) -> Result<CachedToken, AuthError> {
        let mut attempt = 1;
        loop {
            let failure = match self.fetch_once(http, credentials).await {
                Ok(token) => return Ok(token),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transient { error, retry_after }) => (error, retry_after),
            };
            let (error, retry_after) = failure;
            let tried = |e: AuthError| match e {
                AuthError::Unavailable { endpoint, detail } if attempt > 1 => {
                    AuthError::Unavailable {
                        endpoint,
                        detail: format!("{detail} (after {attempt} attempts)"),
                    }
                }
                other => other,
            };
            if attempt >= attempts {
                return Err(tried(error));
            }
            let wait = match retry_after {
                // A token endpoint that wants a longer pause than the
                // connection's longest retry delay would stall the run.
                Some(delay) if delay > self.retry.max_delay => {
                    return Err(match tried(error) {
                        AuthError::Unavailable { endpoint, detail } => AuthError::Unavailable {
                            endpoint,
                            detail: format!(
                                "{detail}; it asked to wait {}, longer than the connection's max_delay of {}",
                                super::throttle::readable(delay),
                                humantime::format_duration(self.retry.max_delay)
                            ),
                        },
                        other => other,
                    });
                }
                Some(delay) => delay,
                None => super::decide::backoff(&self.retry, attempt, super::jitter()),
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One token request.
    async fn fetch_once(
        &self,
        http: &reqwest::Client,
        credentials: &ClientCredentials<'_>,
    ) -> Result<CachedToken, Failure> {
        let ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
        } = *credentials;
        // Shown in errors, so without its query (where keys go).
        let endpoint = crate::http_rules::shown_endpoint(token_url.as_str());
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let transient = |detail: String, retry_after: Option<Duration>| Failure::Transient {
            error: AuthError::Unavailable {
                endpoint: endpoint.clone(),
                detail: self.redactor.redact(&detail),
            },
            retry_after,
        };
        let bad = |detail: String| {
            Failure::Final(AuthError::BadResponse {
                endpoint: endpoint.clone(),
                detail: self.redactor.redact(&detail),
            })
        };
        // Lifetimes count from before the request: never later than the provider's.
        let requested_at = Instant::now();
        let response = http
            .post(token_url.clone())
            .header("Accept", "application/json")
            .timeout(self.request_timeout)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                transient(
                    super::wire::describe_reqwest_error(&e, self.request_timeout),
                    None,
                )
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = match read_capped(response, MAX_TOKEN_RESPONSE, self.request_timeout).await {
            Ok(body) => body,
            Err(ReadFailure::TooLarge) => {
                return Err(bad(format!(
                    "HTTP {status} with a response larger than {MAX_TOKEN_RESPONSE} bytes"
                )));
            }
            Err(ReadFailure::Broken(reason)) => {
                return Err(transient(
                    format!("reading the response failed: {reason}"),
                    None,
                ));
            }
        };
        if !status.is_success() {
            let (code, detail) = error_detail(&body, &self.redactor);
            return Err(match status.as_u16() {
                // Entra's error codes for "try again" (its error-code
                // reference: "the server is temporarily too busy… retry
                // the request after a short delay"): not a rejection of
                // the credentials.
                400 | 401 if code.as_deref().is_some_and(says_try_again) => {
                    transient(format!("HTTP {status}: {detail}"), retry_after)
                }
                400 | 401 => Failure::Final(AuthError::Rejected {
                    endpoint,
                    status: status.as_u16(),
                    detail,
                    hint: rejection_hint(code.as_deref()).to_string(),
                }),
                429 | 500..=599 => transient(format!("HTTP {status}: {detail}"), retry_after),
                _ => bad(format!(
                    "HTTP {status}: {detail}; check the connection's token_url"
                )),
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the response is not a token: {e}")))?;
        if let Some(kind) = &parsed.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(bad(format!(
                "token type `{kind}` is not supported; expected bearer"
            )));
        }
        // A token this short would match ordinary text: under 4 characters
        // it is not searched for at all, and under 8 not in every form (the
        // floor a flow's own secrets are held to). A service echoing it
        // would hand it over.
        let length = parsed.access_token.chars().count();
        if length < crate::redact::MIN_SECRET_LEN {
            return Err(bad(format!(
                "the access token is {length} characters long, too short to be kept out of what components receive and of every output (at least {}); it is not used; check the connection's token_url",
                crate::redact::MIN_SECRET_LEN
            )));
        }
        self.redactor.add(parsed.access_token.clone());
        let lifetime = lifetime(parsed.expires_in.as_ref());
        // Refresh a minute early, or at 90% of a short lifetime.
        let margin = REFRESH_MARGIN.min(lifetime / 10);
        Ok(CachedToken {
            value: Secret::new(format!("Bearer {}", parsed.access_token)),
            refresh_at: requested_at + lifetime.saturating_sub(margin),
            expires_at: requested_at + lifetime,
        })
    }
}

/// Whether a token endpoint's `error` code says the service, not the
/// request, failed: `temporarily_unavailable` ("the server is temporarily
/// too busy… retry the request after a short delay") or `server_error`.
fn says_try_again(code: &str) -> bool {
    matches!(code.trim(), "temporarily_unavailable" | "server_error")
}

/// A token's lifetime from `expires_in` (a number, or a string as some
/// providers send), within [[`MIN_LIFETIME`], [`MAX_LIFETIME`]]; absent,
/// unreadable, zero or negative means [`DEFAULT_LIFETIME`].
fn lifetime(expires_in: Option<&serde_json::Value>) -> Duration {
    let seconds = match expires_in {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match seconds {
        // Zero or less says nothing usable: without a default, every
        // request would fetch a token. A 401 still refreshes it.
        Some(s) if !s.is_nan() && s > 0.0 => Duration::try_from_secs_f64(
            s.clamp(MIN_LIFETIME.as_secs_f64(), MAX_LIFETIME.as_secs_f64()),
        )
        .unwrap_or(DEFAULT_LIFETIME),
        _ => DEFAULT_LIFETIME,
    }
}

/// The provider's `error` code, and a one-line description of the
/// failure, redacted. The whole text is redacted before it is cut to a
/// line: cut first, a secret the endpoint echoed across the cut would no
/// longer be found, and all of it but its end would be shown.
fn error_detail(body: &[u8], redactor: &Redactor) -> (Option<String>, String) {
    match serde_json::from_slice::<TokenErrorBody>(body) {
        Ok(TokenErrorBody {
            error: Some(error),
            error_description,
        }) => {
            let error = redactor.redact(&error);
            let description = redactor.redact(&error_description.unwrap_or_default());
            let description = description.lines().next().unwrap_or("").trim().to_string();
            let detail = if description.is_empty() {
                error.clone()
            } else {
                format!("{error}: {description}")
            };
            (Some(error), detail)
        }
        _ => (
            None,
            redactor
                .redact(&String::from_utf8_lossy(body))
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect(),
        ),
    }
}

/// What to check, by the provider's `error` code (RFC 6749 §5.2).
fn rejection_hint(code: Option<&str>) -> &'static str {
    match code {
        Some("invalid_scope") => "check the connection's scope",
        Some("unsupported_grant_type") => {
            "the endpoint does not offer client credentials; check the connection's token_url"
        }
        Some("invalid_client" | "unauthorized_client") => {
            "check the client id and secret the flow reads for this connection"
        }
        _ => "check the client id, secret and scope the flow reads for this connection",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expires_in_is_clamped_and_never_panics() {
        let cases = [
            (json!(3599), Duration::from_secs(3599)),
            (json!("3599"), Duration::from_secs(3599)),
            (json!(1.5), Duration::from_millis(1500)),
            (json!(0.2), MIN_LIFETIME),
            (json!(0), DEFAULT_LIFETIME),
            (json!(-5), DEFAULT_LIFETIME),
            (json!("-1e300"), DEFAULT_LIFETIME),
            (json!(1e300), MAX_LIFETIME),
            (json!(u64::MAX), MAX_LIFETIME),
            (json!("inf"), MAX_LIFETIME),
            (json!("-inf"), DEFAULT_LIFETIME),
            (json!("NaN"), DEFAULT_LIFETIME),
            (json!("soon"), DEFAULT_LIFETIME),
            (json!(null), DEFAULT_LIFETIME),
            (json!([1]), DEFAULT_LIFETIME),
        ];
        for (value, expected) in cases {
            assert_eq!(lifetime(Some(&value)), expected, "{value}");
        }
        assert_eq!(lifetime(None), DEFAULT_LIFETIME);
    }

    #[test]
    fn rejections_say_what_to_check() {
        let none = Redactor::default();
        let (code, detail) = error_detail(
            br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret.\r\nTrace ID: 1"}"#,
            &none,
        );
        assert_eq!(code.as_deref(), Some("invalid_client"));
        assert_eq!(
            detail,
            "invalid_client: AADSTS7000215: Invalid client secret."
        );
        assert!(rejection_hint(code.as_deref()).contains("client id and secret"));
        assert!(rejection_hint(Some("invalid_scope")).contains("scope"));
        let (code, detail) = error_detail(b"<html>\n<body>Bad Request</body>", &none);
        assert_eq!((code, detail.as_str()), (None, "<html>"));
    }

    /// An endpoint that echoes the request in its error has the secret
    /// removed before the text is cut to a line: no part of it is shown,
    /// wherever the cut falls.
    #[test]
    fn an_echoed_secret_is_redacted_before_the_detail_is_cut() {
        let secret = "Q8w8Q~aB3.dE5_fG7-hJ9kL1mN2pR4sT6vX8zY0";
        let redactor = Redactor::new([secret.to_string()]);
        for pad in 270..300 {
            let body = format!("{}client_secret={secret}&grant_type=x", "x".repeat(pad));
            let (_, detail) = error_detail(body.as_bytes(), &redactor);
            assert!(!detail.contains(&secret[..12]), "{pad}: {detail}");
            let json = format!(
                r#"{{"error":"invalid_client","error_description":"echo {}\nclient_secret={secret}"}}"#,
                "y".repeat(pad)
            );
            let (_, detail) = error_detail(json.as_bytes(), &redactor);
            assert!(!detail.contains(&secret[..12]), "{pad}: {detail}");
        }
    }

    /// A token endpoint on loopback answering every request with `status`
    /// (a token for 200), counting the requests.
    async fn endpoint(
        status: std::sync::Arc<std::sync::atomic::AtomicU16>,
        hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> Url {
        use std::sync::atomic::Ordering;
        let app = axum::Router::new().fallback(move || {
            let (status, hits) = (status.clone(), hits.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let status = status.load(Ordering::SeqCst);
                let body = if status == 200 {
                    json!({"access_token": "fresh-token", "token_type": "bearer", "expires_in": 3600})
                } else {
                    json!({"error": if status == 401 { "invalid_client" } else { "temporarily_unavailable" }})
                };
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    axum::Json(body),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // With a key in its query, as an Azure Function's URL has one.
        let url = format!(
            "http://{}/token?code=the-function-key",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Url::parse(&url).unwrap()
    }

    /// Client credentials for app `app` at `token_url`, retried as `retry`.
    fn client_credentials(token_url: Url, retry: RetryPolicy) -> TokenSource {
        TokenSource::new(
            Auth::OAuth2ClientCredentials {
                token_url,
                client_id: "app".into(),
                client_secret: Secret::new("the-client-secret".into()),
                scope: None,
            },
            Redactor::default(),
            Duration::from_secs(10),
            retry,
        )
    }

    #[tokio::test]
    async fn a_failed_early_refresh_keeps_the_current_token_while_it_lasts() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
        let status = Arc::new(AtomicU16::new(503));
        let hits = Arc::new(AtomicUsize::new(0));
        let token_url = endpoint(status.clone(), hits.clone()).await;
        let source = client_credentials(
            token_url,
            RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
            },
        );
        let http = crate::connections::http_client().unwrap();
        let in_refresh_window = |expires_in: Duration| CachedToken {
            value: Secret::new("Bearer current".into()),
            refresh_at: Instant::now(),
            expires_at: Instant::now() + expires_in,
        };
        let header = |r: Result<Option<(Secret, bool)>, AuthError>| {
            let (value, fetched) = r.unwrap().unwrap();
            (value.expose().to_string(), fetched)
        };

        // Due for refresh, still valid for an hour: one try fails, the current token goes on.
        *source.cached.lock().await = Some(in_refresh_window(Duration::from_secs(3600)));
        let got = header(source.authorization(&http).await);
        assert_eq!(got, ("Bearer current".to_string(), false));
        assert_eq!(hits.load(Ordering::SeqCst), 1, "one try, not a retry loop");
        // The next request does not try again at once.
        let got = header(source.authorization(&http).await);
        assert_eq!(got, ("Bearer current".to_string(), false));
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // Once the endpoint is back, the next refresh replaces the token.
        status.store(200, Ordering::SeqCst);
        *source.cached.lock().await = Some(in_refresh_window(Duration::from_secs(3600)));
        let got = header(source.authorization(&http).await);
        assert_eq!(got, ("Bearer fresh-token".to_string(), true));
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        // A rejection is reported even while the current token lasts.
        status.store(401, Ordering::SeqCst);
        *source.cached.lock().await = Some(in_refresh_window(Duration::from_secs(3600)));
        let e = source.authorization(&http).await.unwrap_err();
        assert!(matches!(e, AuthError::Rejected { status: 401, .. }), "{e}");
        assert!(!e.to_string().contains("the-client-secret"), "{e}");
        assert!(!e.to_string().contains("the-function-key"), "{e}");
        assert!(e.to_string().contains("/token?… rejected"), "{e}");

        // An expired token is never used: every attempt, then the error.
        status.store(503, Ordering::SeqCst);
        *source.cached.lock().await = Some(in_refresh_window(Duration::ZERO));
        let before = hits.load(Ordering::SeqCst);
        let e = source.authorization(&http).await.unwrap_err();
        assert!(
            matches!(&e, AuthError::Unavailable { detail, .. } if detail.contains("HTTP 503") && detail.contains("after 3 attempts")),
            "{e}"
        );
        assert!(!e.to_string().contains("the-function-key"), "{e}");
        assert_eq!(hits.load(Ordering::SeqCst) - before, 3);

        // A 400 whose `error` says "try again" is the service's trouble,
        // not a rejection of the credentials: retried like a 503.
        status.store(400, Ordering::SeqCst);
        *source.cached.lock().await = Some(in_refresh_window(Duration::ZERO));
        let before = hits.load(Ordering::SeqCst);
        let e = source.authorization(&http).await.unwrap_err();
        assert!(
            matches!(&e, AuthError::Unavailable { detail, .. } if detail.contains("HTTP 400") && detail.contains("temporarily_unavailable")),
            "{e}"
        );
        assert_eq!(hits.load(Ordering::SeqCst) - before, 3);
    }

    /// A token too short to search for in responses is refused, never
    /// sent: a service that echoed it would hand it to the component.
    #[tokio::test]
    async fn an_access_token_too_short_to_redact_is_not_used() {
        let app = axum::Router::new().fallback(|| async {
            axum::Json(json!({"access_token": "abc", "token_type": "bearer", "expires_in": 3600}))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let token_url =
            Url::parse(&format!("http://{}/token", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let source = client_credentials(token_url, RetryPolicy::default());
        let http = crate::connections::http_client().unwrap();
        let e = source.authorization(&http).await.unwrap_err();
        assert!(matches!(e, AuthError::BadResponse { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("the access token is 3 characters long"),
            "{text}"
        );
        assert!(!text.contains("abc"), "{text}");
    }

    #[test]
    fn only_the_codes_that_say_try_again_are_retried() {
        assert!(says_try_again("temporarily_unavailable"));
        assert!(says_try_again("server_error"));
        for code in [
            "invalid_client",
            "invalid_grant",
            "invalid_scope",
            "unauthorized_client",
            "",
        ] {
            assert!(!says_try_again(code), "{code}");
        }
    }
}
