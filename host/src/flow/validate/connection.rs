//! `[connections.NAME]`: base URL, static headers, auth, rate limit, retry
//! policy and limits, resolved against params and the environment.

use std::collections::BTreeMap;

use serde_json::Value;
use toml::Spanned;
use url::Url;

use super::super::authored::{
    AuthoredAuth, AuthoredConnection, AuthoredFlow, AuthoredOAuth2, AuthoredRateLimit,
    AuthoredRetry,
};
use super::super::model::*;
use super::{MAX_REQUEST_TIMEOUT, MAX_RETRY_DELAY, MIN_RATE_PER_SECOND, Validator, is_identifier};
use crate::http_rules;

impl Validator<'_, '_> {
    pub(super) fn connections(
        &mut self,
        authored: &AuthoredFlow,
        params: &BTreeMap<String, Value>,
        secrets: &mut Vec<String>,
    ) -> BTreeMap<String, ConnectionSpec> {
        let mut connections = BTreeMap::new();
        for (name, conn) in &authored.connections {
            if let Some(spec) = self.connection(name, conn.get_ref(), params, secrets) {
                connections.insert(name.get_ref().clone(), spec);
            }
        }
        connections
    }

    fn connection(
        &mut self,
        name: &Spanned<String>,
        c: &AuthoredConnection,
        params: &BTreeMap<String, Value>,
        secrets: &mut Vec<String>,
    ) -> Option<ConnectionSpec> {
        if !is_identifier(name.get_ref()) {
            self.error(
                name.span(),
                format!("connection name `{}` is not valid", name.get_ref()),
                "use letters, digits, `-` and `_`",
            );
        }
        let base_url = self
            .load_time_string(&c.base_url, params)
            .and_then(|text| self.url(&c.base_url, &text))
            .map(http_rules::collapse_slashes);
        let headers = self.headers(c, params);
        let auth = match &c.auth {
            None => Auth::None,
            Some(auth) => self.auth(auth, params, secrets),
        };
        let rate_limit = c.rate_limit.as_ref().and_then(|r| self.rate_limit(r));
        let retry = c
            .retry
            .as_ref()
            .map_or_else(RetryPolicy::default, |r| self.retry(r));
        let request_timeout = c
            .request_timeout
            .as_ref()
            .and_then(|d| self.duration(d, "request_timeout", MAX_REQUEST_TIMEOUT))
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let max_response_bytes = c
            .max_response_bytes
            .as_ref()
            .map_or(DEFAULT_MAX_RESPONSE_BYTES, |m| *m.get_ref());
        Some(ConnectionSpec {
            name: name.get_ref().clone(),
            base_url: base_url?,
            headers,
            auth,
            rate_limit,
            retry,
            max_response_bytes,
            request_timeout,
        })
    }

    fn headers(
        &mut self,
        c: &AuthoredConnection,
        params: &BTreeMap<String, Value>,
    ) -> Vec<(String, String)> {
        let mut headers = Vec::new();
        for (header, value) in &c.headers {
            if !http_rules::valid_header_name(header) {
                self.error(
                    value.span(),
                    format!("`{header}` is not a valid header name"),
                    "header names are letters, digits and `-`",
                );
                continue;
            }
            if http_rules::is_reserved_header(header) {
                self.error(
                    value.span(),
                    format!("header `{header}` is set by the host"),
                    "use `auth` for credentials",
                );
                continue;
            }
            let Some(text) = self.load_time_string(value, params) else {
                continue;
            };
            if text.contains(['\r', '\n']) {
                self.error(
                    value.span(),
                    format!("header `{header}` contains a line break"),
                    "remove CR/LF from the value",
                );
            } else if !http_rules::valid_header_value(&text) {
                self.error(
                    value.span(),
                    format!("header `{header}` has a value HTTP does not allow"),
                    "header values are printable ASCII: no accented letters, dashes other than `-`, or control characters",
                );
            } else {
                headers.push((header.clone(), text));
            }
        }
        headers
    }

    fn auth(
        &mut self,
        auth: &Spanned<AuthoredAuth>,
        params: &BTreeMap<String, Value>,
        secrets: &mut Vec<String>,
    ) -> Auth {
        let a = auth.get_ref();
        match (&a.oauth2_client_credentials, &a.bearer) {
            (Some(o), None) => self.oauth2(o.get_ref(), params, secrets),
            (None, Some(b)) => match self.load_time_string(&b.get_ref().token, params) {
                Some(token) => {
                    secrets.push(token.clone());
                    Auth::Bearer(Secret::new(token))
                }
                None => Auth::None,
            },
            _ => {
                self.error(
                    auth.span(),
                    "`auth` must name exactly one method",
                    "use `auth.oauth2_client_credentials = {…}` or `auth.bearer = { token = \"${env.TOKEN}\" }`",
                );
                Auth::None
            }
        }
    }

    fn oauth2(
        &mut self,
        o: &AuthoredOAuth2,
        params: &BTreeMap<String, Value>,
        secrets: &mut Vec<String>,
    ) -> Auth {
        let token_url = self
            .load_time_string(&o.token_url, params)
            .and_then(|t| self.url(&o.token_url, &t));
        let client_id = self.load_time_string(&o.client_id, params);
        let client_secret = self.load_time_string(&o.client_secret, params);
        let scope = o
            .scope
            .as_ref()
            .and_then(|s| self.load_time_string(s, params));
        if let Some(secret) = &client_secret {
            if secret.is_empty() {
                self.error(
                    o.client_secret.span(),
                    "the client secret is empty",
                    "set the variable it reads to the app's secret",
                );
            }
            secrets.push(secret.clone());
        }
        match (token_url, client_id, client_secret) {
            (Some(token_url), Some(client_id), Some(secret)) => Auth::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret: Secret::new(secret),
                scope,
            },
            _ => Auth::None,
        }
    }

    fn rate_limit(&mut self, r: &Spanned<AuthoredRateLimit>) -> Option<RateLimit> {
        let r = r.get_ref();
        let rates = [
            r.per_second.as_ref().map(|v| (v, 1.0)),
            r.per_minute.as_ref().map(|v| (v, 60.0)),
            r.per_hour.as_ref().map(|v| (v, 3600.0)),
        ];
        let mut best: Option<f64> = None;
        for (value, seconds) in rates.into_iter().flatten() {
            if !(*value.get_ref() > 0.0 && value.get_ref().is_finite()) {
                self.error(
                    value.span(),
                    "a rate limit must be a positive number",
                    "for example `per_minute = 600`",
                );
                continue;
            }
            let per_second = value.get_ref() / seconds;
            // Slower than one an hour would space requests further
            // apart than any wait the host allows.
            if per_second < MIN_RATE_PER_SECOND {
                self.error(
                    value.span(),
                    "a rate limit below one request per hour is not allowed",
                    "use at least `per_hour = 1`, or remove the rate limit",
                );
                continue;
            }
            best = Some(best.map_or(per_second, |b: f64| b.min(per_second)));
        }
        best.map(|per_second| RateLimit { per_second })
    }

    fn retry(&mut self, r: &Spanned<AuthoredRetry>) -> RetryPolicy {
        let r = r.get_ref();
        let mut retry = RetryPolicy::default();
        if let Some(n) = &r.max_attempts {
            if *n.get_ref() == 0 {
                self.error(
                    n.span(),
                    "`max_attempts` counts the first attempt too and must be at least 1",
                    "use 1 to disable retries",
                );
            }
            retry.max_attempts = (*n.get_ref()).max(1);
        }
        if let Some(d) = &r.base_delay {
            retry.base_delay = self
                .duration(d, "base_delay", MAX_RETRY_DELAY)
                .unwrap_or(retry.base_delay);
        }
        if let Some(d) = &r.max_delay {
            retry.max_delay = self
                .duration(d, "max_delay", MAX_RETRY_DELAY)
                .unwrap_or(retry.max_delay);
        }
        retry
    }

    fn url(&mut self, at: &Spanned<String>, text: &str) -> Option<Url> {
        match http_rules::endpoint_url(text) {
            Ok(url) => Some(url),
            Err(e) => {
                self.error(at.span(), e.to_string(), e.hint());
                None
            }
        }
    }
}
