//! Access tokens for a connection: fetched once, shared, refreshed early.
//!
//! OAuth2 client credentials (RFC 6749 §4.4) as both the Microsoft identity
//! platform and Procore implement it: a form-encoded POST with the client id
//! and secret (and `scope` for Microsoft). The token is shared by every step
//! and `for_each` item using the connection, refreshed shortly before
//! `expires_in` runs out, and dropped when the service answers 401 so the
//! next request fetches a fresh one. Token types are compared without case
//! (Procore says `bearer`, Microsoft `Bearer`).

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use crate::flow::model::{Auth, Secret};
use crate::redact::Redactor;

/// Refresh this long before expiry, so a token never dies mid-request.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The provider rejected the credentials; carries its `error` and
    /// `error_description`, never the secret.
    #[error("the token endpoint {endpoint} rejected the credentials ({status}): {detail}")]
    Rejected {
        endpoint: String,
        status: u16,
        detail: String,
    },
    #[error("could not get a token from {endpoint}: {detail}")]
    Unavailable { endpoint: String, detail: String },
}

pub struct TokenSource {
    auth: Auth,
    cached: Mutex<Option<CachedToken>>,
    redactor: Redactor,
}

#[derive(Clone)]
struct CachedToken {
    value: Secret,
    refresh_at: Instant,
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

impl TokenSource {
    pub fn new(auth: Auth, redactor: Redactor) -> Self {
        Self {
            auth,
            cached: Mutex::new(None),
            redactor,
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
                if let Some(token) = cached.as_ref()
                    && Instant::now() < token.refresh_at
                {
                    return Ok(Some((token.value.clone(), false)));
                }
                let token = self
                    .fetch(http, token_url, client_id, client_secret, scope.as_deref())
                    .await?;
                let header = token.value.clone();
                *cached = Some(token);
                Ok(Some((header, true)))
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

    async fn fetch(
        &self,
        http: &reqwest::Client,
        token_url: &Url,
        client_id: &str,
        client_secret: &Secret,
        scope: Option<&str>,
    ) -> Result<CachedToken, AuthError> {
        let endpoint = token_url.to_string();
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let unavailable = |detail: String| AuthError::Unavailable {
            endpoint: endpoint.clone(),
            detail: self.redactor.redact(&detail),
        };
        let response = http
            .post(token_url.clone())
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(crate::connections::describe_reqwest_error(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !status.is_success() {
            let detail = match serde_json::from_slice::<TokenErrorBody>(&body) {
                Ok(TokenErrorBody {
                    error: Some(error),
                    error_description,
                }) => {
                    let description = error_description.unwrap_or_default();
                    let description = description.lines().next().unwrap_or("").trim().to_string();
                    if description.is_empty() {
                        error
                    } else {
                        format!("{error}: {description}")
                    }
                }
                _ => String::from_utf8_lossy(&body).chars().take(300).collect(),
            };
            let detail = self.redactor.redact(&detail);
            return Err(if status.is_client_error() {
                AuthError::Rejected {
                    endpoint,
                    status: status.as_u16(),
                    detail,
                }
            } else {
                AuthError::Unavailable {
                    endpoint,
                    detail: format!("HTTP {status}: {detail}"),
                }
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("the response is not a token: {e}")))?;
        if let Some(kind) = &parsed.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(unavailable(format!(
                "token type `{kind}` is not supported; expected bearer"
            )));
        }
        self.redactor.add(parsed.access_token.clone());
        // Some providers send `expires_in` as a string; an absent one means an hour.
        let lifetime = match &parsed.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(3600.0),
            Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(3600.0),
            _ => 3600.0,
        };
        let lifetime = Duration::from_secs_f64(lifetime.max(0.0));
        // Refresh a minute early, or at 90% of a short lifetime.
        let margin = REFRESH_MARGIN.min(lifetime / 10);
        Ok(CachedToken {
            value: Secret::new(format!("Bearer {}", parsed.access_token)),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        })
    }
}
