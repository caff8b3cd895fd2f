//! From the authored flow to a validated [`Flow`], finding every problem.
//!
//! Checks, each reported with its location and a hint: duplicate or
//! malformed step ids, references to unknown params, to unknown, later or
//! the same step, `${item}` outside `for_each`, unknown connections, unset
//! environment variables without a default, components that are neither a
//! built-in nor an existing file, bad durations, cron expressions and time
//! zones, durations and rates beyond their caps (a step timeout over a day,
//! request timeouts and retry delays over an hour, fewer than one request
//! an hour), `${item}` in a `for_each` step's `when`, and connection
//! settings (URLs, auth, limits).
//!
//! One module per part of the file: [`header`] (name, schedule, params),
//! [`connection`], [`step`]; [`references`] checks what a `${…}` may point
//! at and [`text`] turns strings into templates and durations.

mod connection;
mod header;
mod references;
mod step;
mod text;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::authored::{AuthoredFlow, Node};
use super::model::Flow;
use super::source::{Diagnostic, SourceFile};

/// What the validator needs to know about the world outside the file.
pub struct Context<'a> {
    pub builtins: &'a [&'a str],
    pub env: BTreeMap<String, String>,
    pub param_overrides: &'a [(String, String)],
}

pub fn validate(
    source: &SourceFile,
    authored: AuthoredFlow,
    ctx: &Context<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Flow> {
    let mut v = Validator { source, diags, ctx };
    let name = v.name(&authored);
    let schedule = authored.schedule.as_ref().and_then(|s| v.schedule(s));
    let params = v.params(&authored.params);
    let mut secrets = Vec::new();
    let connections = v.connections(&authored, &params, &mut secrets);
    let steps = v.steps(&authored, &params);
    secrets.extend(credential_looking_env(&ctx.env));
    secrets.sort();
    secrets.dedup();
    if !v.diags.is_empty() {
        return None;
    }
    Some(Flow {
        name,
        description: authored.description,
        source: source.clone(),
        schedule,
        params,
        connections: connections
            .into_iter()
            .map(|(k, spec)| (k, Arc::new(spec)))
            .collect(),
        steps,
        env: Arc::new(ctx.env.clone()),
        secrets,
    })
}

/// Every env value that looks like a credential is redacted too, in case a
/// flow passes one to a component by hand.
fn credential_looking_env(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter()
        .filter(|(key, value)| {
            let upper = key.to_ascii_uppercase();
            [
                "SECRET", "TOKEN", "PASSWORD", "PASSWD", "API_KEY", "PRIVATE",
            ]
            .iter()
            .any(|w| upper.contains(w))
                && value.len() >= 4
        })
        .map(|(_, value)| value.clone())
        .collect()
}

/// The longest step `timeout`: a step that needs more than a day is a
/// flow of its own, and a larger value would overflow deadline arithmetic.
const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The longest `request_timeout`: an HTTP request an hour long is a hang.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest retry `base_delay`/`max_delay`, the same hour the host
/// waits at most for a service's `Retry-After` or rate-limit window.
const MAX_RETRY_DELAY: Duration = crate::http_rules::MAX_WAIT;
/// One request per hour: the slowest `rate_limit` (see MAX_RETRY_DELAY).
const MIN_RATE_PER_SECOND: f64 = 1.0 / 3600.0;

/// Walks the authored flow, collecting diagnostics as it goes.
struct Validator<'a, 'b> {
    source: &'a SourceFile,
    diags: &'a mut Vec<Diagnostic>,
    ctx: &'a Context<'b>,
}

impl Validator<'_, '_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(Diagnostic::new(span, message).hint(hint));
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A TOML value as JSON; strings are taken literally.
pub fn literal_json(node: &Node) -> Value {
    match node {
        Node::String(s) | Node::Datetime(s) => Value::String(s.clone()),
        Node::Integer(i) => Value::from(*i),
        Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Node::Bool(b) => Value::Bool(*b),
        Node::Array(items) => {
            Value::Array(items.iter().map(|i| literal_json(i.get_ref())).collect())
        }
        Node::Table(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.get_ref().clone(), literal_json(v.get_ref())))
                .collect(),
        ),
    }
}
