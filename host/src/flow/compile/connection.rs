//! `[connections.NAME]`: base URL, static headers, auth, rate limit, retry
//! policy and limits. What the file alone determines is checked here (a
//! literal URL, a literal header); what comes from the environment is
//! checked when the flow is bound.

use std::collections::BTreeMap;

use serde_json::Value;
use toml::Spanned;

use super::super::authored::{
    AuthoredAuth, AuthoredConnection, AuthoredFlow, AuthoredOAuth2, AuthoredRateLimit,
    AuthoredRetry,
};
use super::super::compiled::{CompiledAuth, CompiledConnection, LocatedTemplate};
use super::super::model::*;
use super::super::template::Root;
use super::references::Place;
use super::{
    Compiler, MAX_ATTEMPTS, MAX_REQUEST_TIMEOUT, MAX_RETRY_DELAY, MIN_RATE_PER_SECOND,
    MIN_REQUEST_TIMEOUT, MIN_RESPONSE_BYTES,
};
use crate::http_rules;

impl Compiler<'_, '_> {
    pub(super) fn connections(
        &mut self,
        authored: &AuthoredFlow,
        params: &BTreeMap<String, Value>,
    ) -> Vec<CompiledConnection> {
        authored
            .connections
            .iter()
            .filter_map(|(name, conn)| self.connection(name, conn.get_ref(), params))
            .collect()
    }

    fn connection(
        &mut self,
        name: &Spanned<String>,
        c: &AuthoredConnection,
        params: &BTreeMap<String, Value>,
    ) -> Option<CompiledConnection> {
        self.valid_name(name, "connection name", "use letters, digits, `-` and `_`");
        let base_url = self.url(&c.base_url, params, true);
        let headers = self.headers(c, params);
        let auth = match &c.auth {
            None => Some(CompiledAuth::None),
            Some(auth) => self.auth(auth, params),
        };
        let rate_limit = c.rate_limit.as_ref().and_then(|r| self.rate_limit(r));
        let retry = c
            .retry
            .as_ref()
            .map_or_else(RetryPolicy::default, |r| self.retry(r));
        let request_timeout = c
            .request_timeout
            .as_ref()
            .and_then(|d| {
                self.duration(
                    d,
                    "request_timeout",
                    MIN_REQUEST_TIMEOUT,
                    MAX_REQUEST_TIMEOUT,
                )
            })
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let max_response_bytes = match &c.max_response_bytes {
            None => DEFAULT_MAX_RESPONSE_BYTES,
            // Not even an error body fits in less: every request would fail.
            Some(m) if *m.get_ref() < MIN_RESPONSE_BYTES => {
                self.error(
                    m.span(),
                    format!(
                        "`max_response_bytes = {}` would refuse nearly every answer (it must be at least {MIN_RESPONSE_BYTES})",
                        m.get_ref()
                    ),
                    format!(
                        "leave it out for the default ({} MiB), or give a number of bytes",
                        DEFAULT_MAX_RESPONSE_BYTES >> 20
                    ),
                );
                DEFAULT_MAX_RESPONSE_BYTES
            }
            Some(m) => *m.get_ref(),
        };
        Some(CompiledConnection {
            name: name.get_ref().clone(),
            base_url: base_url?,
            headers,
            auth: auth?,
            rate_limit,
            retry,
            max_response_bytes,
            request_timeout,
        })
    }

    /// A base (`base`) or token URL: no secret in it, and checked now when
    /// the file alone determines it (a variable's default included).
    fn url(
        &mut self,
        s: &Spanned<String>,
        params: &BTreeMap<String, Value>,
        base: bool,
    ) -> Option<LocatedTemplate> {
        let located = self.located_template(s, Place::Connection { params, url: true })?;
        let check = if base {
            http_rules::base_url
        } else {
            http_rules::endpoint_url
        };
        if let Some(text) = self.static_text(&located, params)
            && let Err(e) = check(&text)
        {
            self.error(s.span(), e.to_string(), e.hint());
            return None;
        }
        Some(located)
    }

    fn headers(
        &mut self,
        c: &AuthoredConnection,
        params: &BTreeMap<String, Value>,
    ) -> Vec<(String, LocatedTemplate)> {
        let mut headers = Vec::new();
        for (name, value) in &c.headers {
            let header = name.get_ref();
            if !http_rules::valid_header_name(header) {
                self.error(
                    name.span(),
                    // Escaped: a name with a newline or a control
                    // character would otherwise break the message's lines.
                    format!("`{}` is not a valid header name", header.escape_debug()),
                    "header names are letters, digits and `-`",
                );
                continue;
            }
            if http_rules::is_reserved_header(header) {
                self.error(
                    name.span(),
                    format!("header `{header}` is set by the host"),
                    "use `auth` for credentials",
                );
                continue;
            }
            let place = Place::Connection { params, url: false };
            let Some(located) = self.located_template(value, place) else {
                continue;
            };
            // Written in the file or read from a variable, a credential
            // would be shown wherever the host shows the header's value:
            // only a declared secret is kept out of output, logs and history.
            if http_rules::names_a_credential(header) && !located.template.reads_a_secret() {
                self.error(
                    value.span(),
                    format!("header `{header}` carries a credential, so its value must come from `[secrets]`"),
                    format!(
                        "declare it (`[secrets]` `api_key = {{ env = \"API_KEY\" }}`) and write `\"{header}\" = \"${{secrets.api_key}}\"`: a secret is kept out of every output, log and error, other values are not"
                    ),
                );
                continue;
            }
            if let Some(text) = self.static_text(&located, params)
                && let Err((message, hint)) = http_rules::header_value(header, &text)
            {
                self.error(value.span(), message, hint);
                continue;
            }
            headers.push((header.clone(), located));
        }
        headers
    }

    fn auth(
        &mut self,
        auth: &Spanned<AuthoredAuth>,
        params: &BTreeMap<String, Value>,
    ) -> Option<CompiledAuth> {
        let a = auth.get_ref();
        match (&a.oauth2_client_credentials, &a.bearer) {
            (Some(o), None) => self.oauth2(o.get_ref(), params),
            (None, Some(b)) => Some(CompiledAuth::Bearer(self.credential(
                &b.get_ref().token,
                "bearer token",
                params,
            )?)),
            _ => {
                self.error(
                    auth.span(),
                    "`auth` must name exactly one method",
                    "use `auth.oauth2_client_credentials = {…}` or `auth.bearer = { token = \"${secrets.NAME}\" }`",
                );
                None
            }
        }
    }

    fn oauth2(
        &mut self,
        o: &AuthoredOAuth2,
        params: &BTreeMap<String, Value>,
    ) -> Option<CompiledAuth> {
        let place = Place::Connection { params, url: false };
        let token_url = self.url(&o.token_url, params, false);
        let client_id = self.located_template(&o.client_id, place);
        let client_secret = self.credential(&o.client_secret, "client secret", params);
        let scope = match &o.scope {
            Some(s) => Some(self.located_template(s, place)?),
            None => None,
        };
        Some(CompiledAuth::OAuth2ClientCredentials {
            token_url: token_url?,
            client_id: client_id?,
            client_secret: client_secret?,
            scope,
        })
    }

    /// A client secret or bearer token: exactly one declared secret.
    fn credential(
        &mut self,
        s: &Spanned<String>,
        what: &str,
        params: &BTreeMap<String, Value>,
    ) -> Option<LocatedTemplate> {
        let located = self.located_template(s, Place::Connection { params, url: false })?;
        let is_secret = located
            .template
            .as_single_ref()
            .is_some_and(|r| matches!(r.root, Root::Secret(_)));
        if !is_secret {
            self.error(
                s.span(),
                format!("the {what} must be a declared secret"),
                "declare it under `[secrets]` (`name = { env = \"VARIABLE\" }`) and write `\"${secrets.name}\"` here",
            );
            return None;
        }
        Some(located)
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

    pub(super) fn retry(&mut self, r: &Spanned<AuthoredRetry>) -> RetryPolicy {
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
            if *n.get_ref() > MAX_ATTEMPTS {
                self.error(
                    n.span(),
                    format!(
                        "`max_attempts` is {}, more than the {MAX_ATTEMPTS} allowed",
                        n.get_ref()
                    ),
                    format!(
                        "use at most {MAX_ATTEMPTS}; a longer `max_delay` (up to 1h) waits longer between attempts"
                    ),
                );
            }
            retry.max_attempts = (*n.get_ref()).clamp(1, MAX_ATTEMPTS);
        }
        if let Some(d) = &r.base_delay {
            retry.base_delay = self
                .duration(
                    d,
                    "base_delay",
                    std::time::Duration::from_nanos(1),
                    MAX_RETRY_DELAY,
                )
                .unwrap_or(retry.base_delay);
        }
        if let Some(d) = &r.max_delay {
            retry.max_delay = self
                .duration(
                    d,
                    "max_delay",
                    std::time::Duration::from_nanos(1),
                    MAX_RETRY_DELAY,
                )
                .unwrap_or(retry.max_delay);
        }
        retry
    }
}
