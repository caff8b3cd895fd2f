//! One API as the reference client sees it: a base URL, client-credentials
//! tokens fetched once and shared, and requests counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::sync::Mutex;

/// Path segments keep letters, digits and `-._~@` (as the guest SDK does).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

pub fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}

/// A response, read whole.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the response is not JSON")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    token_url: String,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    headers: Vec<(String, String)>,
    token: Mutex<Option<String>>,
    pub requests: AtomicU64,
}

/// A 429 is waited out at most this many times per request.
const MAX_ATTEMPTS: usize = 5;

impl Api {
    pub fn new(
        http: reqwest::Client,
        base: String,
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
        headers: Vec<(String, String)>,
    ) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token_url,
            client_id,
            client_secret,
            scope,
            headers,
            token: Mutex::new(None),
            requests: AtomicU64::new(0),
        }
    }

    /// The current token, fetched once and shared by every request.
    async fn token(&self, stale: Option<&str>) -> anyhow::Result<String> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && stale != Some(token.as_str())
        {
            return Ok(token.clone());
        }
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let answer = self.http.post(&self.token_url).form(&form).send().await?;
        if !answer.status().is_success() {
            bail!("{} answered {}", self.token_url, answer.status());
        }
        let body: Value = answer.json().await?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .context("no access_token")?
            .to_string();
        *cached = Some(token.clone());
        Ok(token)
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    /// Sends a request built by `build`, with the token and the API's headers;
    /// refreshes a rejected token once and waits out 429s.
    async fn send(&self, build: impl Fn() -> reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let mut stale: Option<String> = None;
        for _ in 0..MAX_ATTEMPTS {
            let token = self.token(stale.as_deref()).await?;
            let mut request = build().bearer_auth(&token);
            for (name, value) in &self.headers {
                request = request.header(name, value);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await?.to_vec();
            let answer = Answer {
                status,
                headers,
                body,
            };
            match status {
                401 if stale.is_none() => stale = Some(token),
                429 | 503 => {
                    let wait = answer
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(1.0);
                    tokio::time::sleep(Duration::from_secs_f64(wait.clamp(0.0, 60.0))).await;
                }
                _ => return Ok(answer),
            }
        }
        bail!("gave up after {MAX_ATTEMPTS} attempts")
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Answer> {
        let url = self.url(path);
        let answer = self.send(|| self.http.get(&url).query(query)).await?;
        if answer.status != 200 {
            bail!("GET {url} answered {}", answer.status);
        }
        Ok(answer)
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        let url = self.url(path);
        self.send(|| self.http.post(&url).json(body)).await
    }
}
