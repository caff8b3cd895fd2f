//! Strings of the flow file: parsing their `${…}` templates, pointing at a
//! part of a string token, what a connection setting says without the
//! environment, and durations.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde_json::Value;
use toml::Spanned;

use super::super::compiled::LocatedTemplate;
use super::super::resolve::Scope;
use super::super::template::Template;
use super::Compiler;

impl Compiler<'_, '_> {
    pub(super) fn template(&mut self, s: &Spanned<String>) -> Option<Template> {
        let (template, well_formed) = self.template_checking_all(s);
        well_formed.then_some(template)
    }

    /// The template of the string's well-formed references, and whether
    /// it had none malformed; every malformed one is reported.
    pub(super) fn template_checking_all(&mut self, s: &Spanned<String>) -> (Template, bool) {
        let (template, errors) = Template::parse_all(s.get_ref());
        let well_formed = errors.is_empty();
        for e in errors {
            let span = self.inner_span(s, e.range.clone());
            self.error(span, e.message, e.hint);
        }
        (template, well_formed)
    }

    /// Where the text of the string token at `s` starts in the file, when
    /// the token is written without escapes (so offsets inside the string
    /// are offsets in the file).
    pub(super) fn body_start(&self, s: &Spanned<String>) -> Option<usize> {
        let token = s.span();
        let raw = self.source.text.get(token.clone()).unwrap_or("");
        ["\"\"\"", "'''", "\"", "'"].iter().find_map(|quote| {
            let body = raw.strip_prefix(quote)?.strip_suffix(quote)?;
            (body == s.get_ref()).then_some(token.start + quote.len())
        })
    }

    /// The file span of `range` inside the string token at `s`, when the
    /// token is written without escapes; the whole token otherwise.
    pub(super) fn inner_span(&self, s: &Spanned<String>, range: Range<usize>) -> Range<usize> {
        match self.body_start(s) {
            Some(start) => start + range.start..start + range.end,
            None => s.span(),
        }
    }

    /// The text of a connection setting as far as the file alone says:
    /// `None` when it needs a variable without a default, or a secret.
    pub(super) fn static_text(
        &self,
        located: &LocatedTemplate,
        params: &BTreeMap<String, Value>,
    ) -> Option<String> {
        let no_env = BTreeMap::<String, String>::new();
        let scope = Scope {
            params: Some(params),
            env: Some(&no_env),
            ..Default::default()
        };
        scope.resolve_string(&located.template).ok()
    }

    /// A duration from `min` to `max` (`max` a whole number of hours;
    /// `what` names the setting). Below `min` nothing could be done in
    /// time, and every run would fail.
    pub(super) fn duration(
        &mut self,
        d: &Spanned<String>,
        what: &str,
        min: Duration,
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
            Ok(duration) if duration.is_zero() => (
                "a duration of zero is not allowed".to_string(),
                "for example \"30s\", \"5m\" or \"1h\"".to_string(),
            ),
            Ok(duration) if duration < min => {
                let least = humantime::format_duration(min);
                (
                    format!("{what} `{text}` is shorter than the {least} it must be at least"),
                    format!("use at least \"{least}\""),
                )
            }
            Ok(duration) => return Some(duration),
            Err(e) => (
                format!("`{text}` is not a duration: {e}"),
                "for example \"30s\", \"5m\" or \"1h\"".to_string(),
            ),
        };
        self.error(d.span(), message, hint);
        None
    }
}
