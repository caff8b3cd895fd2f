//! The APIs this process talks to, each once: one token and one rate budget
//! per API, whatever number of flows, runs and `for_each` items use it.
//!
//! A run builds its own [`Connection`]s (its flow's base URL, headers,
//! retry policy and redactor), but what belongs to the API is shared
//! through [`Services`], which the [`crate::run::Runner`] holds for the
//! whole process (every flow of `sluice serve`, overlapping runs):
//! - the **budget** ([`Throttle`]): keyed by the API's identity, its token
//!   endpoint, client id, scope and base URL. A `Retry-After` or an
//!   announced `X-Rate-Limit-*` budget seen by one run holds back all of
//!   them, and each connection's own `rate_limit` joins the shared pace
//!   while its run lasts.
//! - the **token** ([`TokenSource`]): keyed by the token endpoint, client
//!   id and scope, and the secret too, so a flow whose secret is wrong (or
//!   was rotated) never rides on a token another flow obtained. A token
//!   source is created with the first connection's request timeout and
//!   retry policy.
//!
//! Entries live as long as the process: there are as many as distinct
//! APIs the flows name, and a token kept between runs is a token not
//! fetched again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Connection;
use super::auth::TokenSource;
use super::throttle::Throttle;
use crate::flow::model::{Auth, ConnectionSpec};
use crate::redact::Redactor;

/// Who a connection talks to, as the API counts its budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ApiKey {
    base_url: String,
    credentials: CredentialKey,
}

/// Whose credentials a token is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CredentialKey {
    None,
    /// A fixed token: identified by its digest, never by the token itself.
    Bearer {
        digest: String,
    },
    OAuth2 {
        token_url: String,
        client_id: String,
        scope: Option<String>,
    },
}

/// The shared parts of every API this process uses.
pub struct Services {
    http: reqwest::Client,
    budgets: Mutex<HashMap<ApiKey, Arc<Throttle>>>,
    /// Keyed by the credentials and the digest of the secret.
    tokens: Mutex<HashMap<(CredentialKey, String), Arc<TokenSource>>>,
}

impl Services {
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            budgets: Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    /// The process's HTTP client, shared by every connection.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A run's connection for `spec`, on the API's shared token and budget.
    pub fn connect(&self, spec: Arc<ConnectionSpec>, redactor: Redactor) -> Connection {
        let credentials = credential_key(&spec.auth);
        let api = ApiKey {
            base_url: spec.base_url.as_str().trim_end_matches('/').to_string(),
            credentials: credentials.clone(),
        };
        let throttle = shared(&self.budgets, api, || Arc::new(Throttle::new(None)));
        let tokens = shared(
            &self.tokens,
            (credentials, secret_digest(&spec.auth)),
            || Arc::new(token_source(&spec)),
        );
        Connection::on_services(spec, self.http.clone(), redactor, tokens, throttle)
    }
}

/// The entry for `key`, made by `make` the first time.
fn shared<K: Eq + std::hash::Hash, V: Clone>(
    map: &Mutex<HashMap<K, V>>,
    key: K,
    make: impl FnOnce() -> V,
) -> V {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(key).or_insert_with(make).clone()
}

/// A token source of its own: its redactor knows the client secret and
/// the tokens it obtains, so its errors never carry them; each run's
/// connection teaches its own redactor the tokens it is handed.
fn token_source(spec: &ConnectionSpec) -> TokenSource {
    let redactor = Redactor::default();
    if let Some(secret) = secret_of(&spec.auth) {
        redactor.add(secret.to_string());
    }
    TokenSource::new(
        spec.auth.clone(),
        redactor,
        spec.request_timeout,
        spec.retry,
    )
}

fn credential_key(auth: &Auth) -> CredentialKey {
    match auth {
        Auth::None => CredentialKey::None,
        Auth::Bearer(token) => CredentialKey::Bearer {
            digest: digest(token.expose()),
        },
        Auth::OAuth2ClientCredentials {
            token_url,
            client_id,
            scope,
            ..
        } => CredentialKey::OAuth2 {
            token_url: token_url.to_string(),
            client_id: client_id.clone(),
            scope: scope.clone(),
        },
    }
}

fn secret_of(auth: &Auth) -> Option<&str> {
    match auth {
        Auth::None => None,
        Auth::Bearer(token) => Some(token.expose()),
        Auth::OAuth2ClientCredentials { client_secret, .. } => Some(client_secret.expose()),
    }
}

fn secret_digest(auth: &Auth) -> String {
    secret_of(auth).map(digest).unwrap_or_default()
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
