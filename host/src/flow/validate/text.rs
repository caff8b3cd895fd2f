//! Strings of the flow file: parsing their `${…}` templates, pointing at a
//! part of a string token, resolving connection settings against params and
//! the environment, and durations.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde_json::Value;
use toml::Spanned;

use super::super::resolve::{ResolveError, Scope};
use super::super::template::{Root, Template};
use super::Validator;

impl Validator<'_, '_> {
    pub(super) fn template(&mut self, s: &Spanned<String>) -> Option<Template> {
        match Template::parse(s.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                let span = self.inner_span(s, e.range.clone());
                self.error(span, e.message, e.hint);
                None
            }
        }
    }

    /// The file span of `range` inside the string token at `s`, when the
    /// token is written without escapes; the whole token otherwise.
    pub(super) fn inner_span(&self, s: &Spanned<String>, range: Range<usize>) -> Range<usize> {
        let token = s.span();
        let raw = self.source.text.get(token.clone()).unwrap_or("");
        for quote in ["\"\"\"", "'''", "\"", "'"] {
            if let Some(body) = raw.strip_prefix(quote).and_then(|b| b.strip_suffix(quote))
                && body == s.get_ref()
            {
                let start = token.start + quote.len();
                return start + range.start..start + range.end;
            }
        }
        token
    }

    /// Resolves a load-time string of a connection: only params and env.
    pub(super) fn load_time_string(
        &mut self,
        s: &Spanned<String>,
        params: &BTreeMap<String, Value>,
    ) -> Option<String> {
        let template = self.template(s)?;
        for (r, range) in template.references() {
            if matches!(r.root, Root::Step(_) | Root::Item | Root::Run(_)) {
                self.error(
                    self.inner_span(s, range),
                    "connection settings are resolved before the flow runs and can only use `params` and `env`",
                    "move step-dependent values into a step's `with`",
                );
                return None;
            }
        }
        let scope = Scope {
            params: Some(params),
            env: Some(&self.ctx.env),
            ..Default::default()
        };
        match scope.resolve_string(&template) {
            Ok(text) => Some(text),
            Err(e) => {
                self.resolve_error(s, &template, e);
                None
            }
        }
    }

    fn resolve_error(&mut self, s: &Spanned<String>, template: &Template, e: ResolveError) {
        let span = template
            .references()
            .into_iter()
            .find(|(r, _)| matches!((&r.root, &e), (Root::Env { name, .. }, ResolveError::MissingEnv(m)) if name == m))
            .map_or(s.span(), |(_, range)| self.inner_span(s, range));
        match e {
            ResolveError::MissingEnv(name) => self.error(
                span,
                format!("environment variable {name} is not set"),
                format!("set {name}, or give a default with `${{env.{name}:-value}}`"),
            ),
            ResolveError::Unavailable(what) => self.error(
                span,
                format!("`{what}` is not available here"),
                "see the flow format in the README",
            ),
        }
    }

    /// A positive duration no longer than `max`, a whole number of hours
    /// (`what` names the setting).
    pub(super) fn duration(
        &mut self,
        d: &Spanned<String>,
        what: &str,
        max: Duration,
    ) -> Option<Duration> {
        let text = d.get_ref();
        let (message, hint) = match humantime::parse_duration(text) {
            Ok(duration) if duration > max => {
                let hours = max.as_secs() / 3600;
                (
                    format!("{what} `{text}` is longer than the {hours}h allowed"),
                    format!("use at most \"{hours}h\""),
                )
            }
            Ok(duration) if !duration.is_zero() => return Some(duration),
            Ok(_) => (
                "a duration of zero is not allowed".to_string(),
                "for example \"30s\", \"5m\" or \"1h\"".to_string(),
            ),
            Err(e) => (
                format!("`{text}` is not a duration: {e}"),
                "for example \"30s\", \"5m\" or \"1h\"".to_string(),
            ),
        };
        self.error(d.span(), message, hint);
        None
    }
}
