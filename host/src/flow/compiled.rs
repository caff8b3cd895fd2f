//! Stage two: a compiled flow, checked without the environment.
//!
//! Everything that can be known from the file and its components is
//! checked: syntax, ids, references, schedules, component files, the
//! components' `describe` schemas and the inputs given to them, declared
//! secrets and where they are used. What comes from the environment
//! (variables, secret values) is still a reference, kept with its place in
//! the file so that binding ([`super::bind`]) can point at it.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::Value;

use super::model::{RateLimit, RetryPolicy, Step};
use super::schedule::Schedule;
use super::source::SourceFile;
use super::template::Template;

/// A flow that compiled: ready to bind to an environment.
#[derive(Debug, Clone)]
pub struct CompiledFlow {
    pub name: String,
    pub description: Option<String>,
    pub source: SourceFile,
    pub schedule: Option<Schedule>,
    pub params: BTreeMap<String, Value>,
    pub secrets: Vec<SecretDecl>,
    pub connections: Vec<CompiledConnection>,
    /// Steps whose templates may still hold `${env.…}` references.
    pub steps: Vec<Step>,
    /// Every `${env.…}` the flow reads, where, and when it is needed.
    pub env_uses: Vec<EnvUse>,
}

impl CompiledFlow {
    /// The environment variables the flow reads (secrets' sources
    /// included), sorted and each once.
    pub fn variables(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .env_uses
            .iter()
            .map(|u| u.name.as_str())
            .chain(self.secrets.iter().map(|s| s.env.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// `[secrets] NAME = { env = "VAR" }`.
#[derive(Debug, Clone)]
pub struct SecretDecl {
    pub name: String,
    /// The environment variable that holds the value.
    pub env: String,
    /// The declaration, for errors found when binding.
    pub span: Range<usize>,
}

/// One `${env.NAME}` in the flow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvUse {
    pub name: String,
    pub span: Range<usize>,
    pub has_default: bool,
    /// Inside the defaults of these variables: needed only when all of
    /// them are unset.
    pub inside_defaults_of: Vec<String>,
}

/// A template from a string of the file, and where that string is.
#[derive(Debug, Clone)]
pub struct LocatedTemplate {
    pub template: Template,
    /// The whole string token.
    pub token: Range<usize>,
    /// Where the string's text starts in the file, when it is written
    /// without escapes (so offsets inside it map to the file).
    pub body_start: Option<usize>,
}

impl LocatedTemplate {
    /// The file span of `range` inside the string, or the whole token.
    pub fn span(&self, range: Range<usize>) -> Range<usize> {
        match self.body_start {
            Some(start) => start + range.start..start + range.end,
            None => self.token.clone(),
        }
    }
}

/// A connection whose strings are templates still to resolve.
#[derive(Debug, Clone)]
pub struct CompiledConnection {
    pub name: String,
    pub base_url: LocatedTemplate,
    pub headers: Vec<(String, LocatedTemplate)>,
    pub auth: CompiledAuth,
    pub rate_limit: Option<RateLimit>,
    pub retry: RetryPolicy,
    pub max_response_bytes: u64,
    pub request_timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub enum CompiledAuth {
    None,
    OAuth2ClientCredentials {
        token_url: LocatedTemplate,
        client_id: LocatedTemplate,
        /// Exactly one `${secrets.NAME}`.
        client_secret: LocatedTemplate,
        scope: Option<LocatedTemplate>,
    },
    /// Exactly one `${secrets.NAME}`.
    Bearer(LocatedTemplate),
}
