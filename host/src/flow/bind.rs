//! Stage three: binding a compiled flow to an environment.
//!
//! Reads only the variables the flow names: each declared secret's source,
//! and each `${env.…}`. A variable needed without a default and not set is
//! reported where it is written, as is a secret whose variable is unset or
//! empty. Connections are resolved (URLs, headers and the bearer token
//! checked again with their real values), and every `${env.…}` in a step is replaced by its
//! value, so the bound [`Flow`] keeps no copy of the environment.

use std::collections::BTreeMap;
use std::sync::Arc;

use url::Url;

use super::compiled::{CompiledAuth, CompiledConnection, CompiledFlow, EnvUse, LocatedTemplate};
use super::environment::Environment;
use super::model::{Auth, ConnectionSpec, Flow, Secret, Step, Threshold, ValueTemplate};
use super::resolve::Scope;
use super::source::Diagnostic;
use super::template::{Part, Root, Template};
use crate::http_rules;
use crate::redact::{MIN_SECRET_LEN, Redactor};

/// Binds `flow` to `env`; the problems go to `diags`.
pub fn bind(flow: CompiledFlow, env: &dyn Environment, diags: &mut Vec<Diagnostic>) -> Flow {
    let mut b = Binder {
        env,
        diags,
        redactor: Redactor::default(),
        secret_vars: flow
            .secrets
            .iter()
            .map(|s| (s.name.clone(), s.env.clone()))
            .collect(),
    };
    b.check_env_uses(&flow);
    let secrets = b.secrets(&flow);
    for value in secrets.values() {
        b.redactor.add(value.clone());
    }
    // What compiling found may quote a value given with `--param`, which
    // may be a secret's: told redacted too, as binding's own problems are.
    for d in b.diags.iter_mut() {
        d.message = b.redactor.redact(&d.message);
        d.hint = d.hint.as_deref().map(|h| b.redactor.redact(h));
    }
    let scope = Scope {
        params: Some(&flow.params),
        env: Some(env),
        secrets: Some(&secrets),
        ..Default::default()
    };
    let mut redacted: Vec<Secret> = secrets.values().cloned().map(Secret::new).collect();
    let connections = flow
        .connections
        .iter()
        .filter_map(|c| b.connection(c, &scope, &mut redacted))
        .map(|spec| (spec.name.clone(), Arc::new(spec)))
        .collect();
    redacted.sort();
    redacted.dedup();
    Flow {
        name: flow.name,
        description: flow.description,
        source: flow.source,
        schedule: flow.schedule,
        params: flow.params,
        connections,
        steps: {
            let bound: Vec<Step> = flow
                .steps
                .iter()
                .map(|s| bind_step(s.clone(), env))
                .collect();
            let pairs: Vec<(&Step, &Step)> = flow.steps.iter().zip(&bound).collect();
            b.check_bound_inputs(&pairs, &flow.env_uses);
            bound
        },
        secrets: redacted,
    }
}

struct Binder<'a> {
    env: &'a dyn Environment,
    diags: &'a mut Vec<Diagnostic>,
    /// The secrets' values, once read: a problem quotes a setting's value
    /// (an invalid URL), and a secret pasted into the wrong variable must
    /// not be printed with it.
    redactor: Redactor,
    /// Each declared secret's variable, to name where a bad value came from.
    secret_vars: BTreeMap<String, String>,
}

impl Binder<'_> {
    fn error(&mut self, span: std::ops::Range<usize>, message: String, hint: impl Into<String>) {
        let message = self.redactor.redact(&message);
        let hint = self.redactor.redact(&hint.into());
        self.diags.push(Diagnostic::new(span, message).hint(hint));
    }

    /// Every variable needed without a default is set. An unset variable
    /// is one problem however often the flow uses it: reported where it is
    /// first needed, with the lines of the other uses.
    fn check_env_uses(&mut self, flow: &CompiledFlow) {
        let mut unset: Vec<(&str, Vec<&std::ops::Range<usize>>)> = Vec::new();
        for u in &flow.env_uses {
            let needed = !u.has_default
                && u.inside_defaults_of
                    .iter()
                    .all(|v| self.env.var(v).is_none());
            // Set to nothing (`X=` in a file of variables, say) is a
            // mistake too: `${env.X:-}` says when nothing is meant.
            let blank = |v: String| v.trim().is_empty();
            if needed && self.env.var(&u.name).is_none_or(blank) {
                match unset.iter_mut().find(|(name, _)| *name == u.name) {
                    Some((_, spans)) => spans.push(&u.span),
                    None => unset.push((&u.name, vec![&u.span])),
                }
            }
        }
        for (name, spans) in unset {
            let set = self.env.var(name).is_some();
            let mut hint = if set {
                format!("give {name} a value, or write `${{env.{name}:-}}` where nothing is meant")
            } else {
                format!("set {name}, or give a default with `${{env.{name}:-value}}`")
            };
            let mut lines: Vec<usize> = spans[1..]
                .iter()
                .map(|s| flow.source.line_col(s.start).0)
                .collect();
            lines.dedup();
            if !lines.is_empty() {
                let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
                let (s, list) = listed(&lines);
                hint.push_str(&format!(" (it is also needed on line{s} {list})"));
            }
            let what = if set { "is empty" } else { "is not set" };
            self.error(
                spans[0].clone(),
                format!("environment variable {name} {what}"),
                hint,
            );
        }
    }

    /// A `with` value made only of variables and text is known once they
    /// are read: checked here against the component's input schema, so a
    /// variable the component cannot take (a Procore id that is not a
    /// number) is one error where the variable is first used, before
    /// anything runs, not a failure of every item. Each refused variable
    /// is one problem, naming every step that refuses it.
    fn check_bound_inputs(&mut self, steps: &[(&Step, &Step)], uses: &[EnvUse]) {
        let mut refused: Vec<Refusal> = Vec::new();
        for (before, bound) in steps {
            for refusal in refused_values(before, bound) {
                match refused.iter_mut().find(|r| r.var == refusal.var) {
                    Some(r) => r.steps.extend(refusal.steps),
                    None => refused.push(refusal),
                }
            }
        }
        for r in refused {
            let Some(used) = uses.iter().find(|u| u.name == r.var) else {
                continue;
            };
            let shown = match &r.value {
                serde_json::Value::String(text) => format!("`{text}`"),
                other => other.to_string(),
            };
            let steps: Vec<String> = r.steps.iter().map(|s| format!("`{s}`")).collect();
            let (s, steps) = listed(&steps);
            self.error(
                used.span.clone(),
                format!(
                    "environment variable {} is {shown}, which step{s} {steps} cannot take as `{}`",
                    r.var, r.key
                ),
                match &r.why {
                    Some(said) => format!("set {} to a value `{}` takes ({said})", r.var, r.key),
                    None => format!("set {} to a value `{}` takes", r.var, r.key),
                },
            );
        }
    }

    /// Each declared secret's value, read from its variable.
    fn secrets(&mut self, flow: &CompiledFlow) -> BTreeMap<String, String> {
        let mut values = BTreeMap::new();
        for s in &flow.secrets {
            match self.env.var(&s.env) {
                // Blanks only would redact every run of blanks in output.
                Some(v) if v.trim().chars().count() >= MIN_SECRET_LEN => {
                    values.insert(s.name.clone(), v);
                }
                // Too short to tell apart from ordinary text, so it could
                // not be kept out of output: refused rather than shown.
                Some(v) if !v.trim().is_empty() => self.error(
                    s.span.clone(),
                    format!(
                        "secret `{}` reads {}, whose value is shorter than {MIN_SECRET_LEN} characters: too short to keep out of output and run history",
                        s.name, s.env
                    ),
                    format!(
                        "set {} to the real credential (a value this short would match ordinary text)",
                        s.env
                    ),
                ),
                found => self.error(
                    s.span.clone(),
                    format!(
                        "secret `{}` reads {}, which is {}",
                        s.name,
                        s.env,
                        if found.is_some() { "empty" } else { "not set" }
                    ),
                    format!("set {} to the secret's value", s.env),
                ),
            }
        }
        values
    }

    fn connection(
        &mut self,
        c: &CompiledConnection,
        scope: &Scope<'_>,
        redacted: &mut Vec<Secret>,
    ) -> Option<ConnectionSpec> {
        let base_url = self.url(&c.base_url, scope, http_rules::base_url);
        let mut headers = Vec::new();
        for (name, value) in &c.headers {
            let Some(text) = self.text(value, scope) else {
                continue;
            };
            if !self.sendable_in_header(&format!("header `{name}`"), value, &text) {
                continue;
            }
            if value.template.reads_a_secret() {
                redacted.push(Secret::new(text.clone()));
            }
            headers.push((name.clone(), text));
        }
        let auth = self.auth(&c.auth, scope)?;
        Some(ConnectionSpec {
            name: c.name.clone(),
            base_url: base_url.map(http_rules::collapse_slashes)?,
            headers,
            auth,
            rate_limit: c.rate_limit,
            retry: c.retry,
            max_response_bytes: c.max_response_bytes,
            request_timeout: c.request_timeout,
        })
    }

    fn auth(&mut self, auth: &CompiledAuth, scope: &Scope<'_>) -> Option<Auth> {
        Some(match auth {
            CompiledAuth::None => Auth::None,
            CompiledAuth::Bearer(at) => {
                let token = self.text(at, scope)?;
                if !self.sendable_in_header("the bearer token", at, &format!("Bearer {token}")) {
                    return None;
                }
                Auth::Bearer(Secret::new(token))
            }
            CompiledAuth::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope: wanted,
            } => {
                let token_url = self.url(token_url, scope, http_rules::endpoint_url);
                let client_id = self.text(client_id, scope);
                let client_secret = self.text(client_secret, scope);
                let wanted = match wanted {
                    Some(w) => Some(self.text(w, scope)?),
                    None => None,
                };
                Auth::OAuth2ClientCredentials {
                    token_url: token_url?,
                    client_id: client_id?,
                    client_secret: Secret::new(client_secret?),
                    scope: wanted,
                }
            }
        })
    }

    fn url(
        &mut self,
        at: &LocatedTemplate,
        scope: &Scope<'_>,
        check: fn(&str) -> Result<Url, http_rules::BaseUrlError>,
    ) -> Option<Url> {
        let text = self.text(at, scope)?;
        match check(&text) {
            Ok(url) => Some(url),
            Err(e) => {
                self.error(at.token.clone(), e.to_string(), e.hint());
                None
            }
        }
    }

    /// Whether `text`, what `at` reads, can be sent in a header (`what`
    /// names it). A bad value usually comes from the environment (a
    /// trailing newline from a file), so its variables are named; the
    /// value never is, as it may be a credential.
    fn sendable_in_header(&mut self, what: &str, at: &LocatedTemplate, text: &str) -> bool {
        let Some((problem, hint)) = http_rules::header_value_problem(text) else {
            return true;
        };
        let mut sources: Vec<String> = at
            .template
            .references()
            .iter()
            .filter_map(|(r, _)| match &r.root {
                Root::Secret(name) => Some(match self.secret_vars.get(name) {
                    Some(var) => format!("{var} (secret `{name}`)"),
                    None => format!("secret `{name}`"),
                }),
                Root::Env { name, .. } if self.env.var(name).is_some() => Some(name.clone()),
                _ => None,
            })
            .collect();
        sources.dedup();
        let hint = if sources.is_empty() {
            hint.to_string()
        } else {
            format!("{hint}; it is read from {}", sources.join(" and "))
        };
        self.error(at.token.clone(), format!("{what} {problem}"), hint);
        false
    }

    /// The text of a setting; a missing variable was reported already.
    fn text(&mut self, at: &LocatedTemplate, scope: &Scope<'_>) -> Option<String> {
        scope.resolve_string(&at.template).ok()
    }
}

/// A variable a step's input refuses (see [`Binder::check_bound_inputs`]).
struct Refusal {
    var: String,
    value: serde_json::Value,
    /// The input's property.
    key: String,
    /// What the schema check said of it (what the property takes).
    why: Option<String>,
    steps: Vec<String>,
}

/// The `with` values of `bound` made only of variables and text (in
/// `before`) that its component's input schema refuses, each with the
/// first variable it reads and what the check said of it.
fn refused_values(before: &Step, bound: &Step) -> Vec<Refusal> {
    let (Some(schema), Some(ValueTemplate::Object(was)), Some(ValueTemplate::Object(now))) =
        (&bound.input_schema, &before.with, &bound.with)
    else {
        return Vec::new();
    };
    let mut refused = Vec::new();
    for ((key, was), (_, now)) in was.iter().zip(now) {
        let (ValueTemplate::Text(template), ValueTemplate::Literal(value)) = (was, now) else {
            continue;
        };
        let var = template.parts.iter().find_map(|p| match p {
            Part::Ref(r, _) => match &r.root {
                Root::Env { name, .. } => Some(name.clone()),
                _ => None,
            },
            Part::Literal(_) => None,
        });
        let Some(var) = var else {
            continue;
        };
        if let Err(mismatch) = schema.check_property(key, value) {
            refused.push(Refusal {
                var,
                value: value.clone(),
                key: key.clone(),
                why: mismatch.0.first().map(|m| m.hint.clone()),
                steps: vec![bound.id.clone()],
            });
        }
    }
    refused
}

/// `items` as words: "a", "a and b", "a, b and c"; and "s" when there is
/// more than one.
fn listed(items: &[String]) -> (&'static str, String) {
    match items.split_last() {
        Some((last, [])) => ("", last.clone()),
        Some((last, rest)) => ("s", format!("{} and {last}", rest.join(", "))),
        None => ("", String::new()),
    }
}

/// The step with every `${env.…}` replaced by its value.
fn bind_step(mut step: Step, env: &dyn Environment) -> Step {
    step.with = step.with.map(|w| bind_value(w, env));
    step.for_each = step.for_each.map(|t| bind_template(&t, env));
    step.for_each_key = step.for_each_key.map(|t| bind_template(&t, env));
    if let Some(approval) = &mut step.approval {
        approval.when = approval.when.as_ref().map(|t| bind_template(t, env));
        if let Some(Threshold::Reference(t)) = &approval.above {
            approval.above = Some(Threshold::Reference(bind_template(t, env)));
        }
    }
    for condition in &mut step.when {
        condition.template = bind_template(&condition.template, env);
    }
    step
}

fn bind_value(value: ValueTemplate, env: &dyn Environment) -> ValueTemplate {
    match value {
        ValueTemplate::Text(t) => {
            let bound = bind_template(&t, env);
            if bound.is_literal() {
                let text = bound
                    .parts
                    .iter()
                    .map(|p| match p {
                        Part::Literal(s) => s.as_str(),
                        Part::Ref(..) => "",
                    })
                    .collect();
                ValueTemplate::Literal(serde_json::Value::String(text))
            } else {
                ValueTemplate::Text(bound)
            }
        }
        ValueTemplate::Array(items) => {
            ValueTemplate::Array(items.into_iter().map(|i| bind_value(i, env)).collect())
        }
        ValueTemplate::Object(entries) => ValueTemplate::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k, bind_value(v, env)))
                .collect(),
        ),
        literal @ ValueTemplate::Literal(_) => literal,
    }
}

/// A set variable becomes its text; an unset one with a default keeps the
/// reference (its default, itself bound, is read at run time).
fn bind_template(t: &Template, env: &dyn Environment) -> Template {
    let mut parts: Vec<Part> = Vec::new();
    for part in &t.parts {
        let bound = match part {
            Part::Ref(r, range) => match &r.root {
                Root::Env { name, default } => match env.var(name) {
                    Some(value) => Part::Literal(value),
                    None => {
                        let mut r = r.clone();
                        r.root = Root::Env {
                            name: name.clone(),
                            default: default.as_ref().map(|d| bind_template(d, env)),
                        };
                        Part::Ref(r, range.clone())
                    }
                },
                _ => part.clone(),
            },
            Part::Literal(_) => part.clone(),
        };
        match (parts.last_mut(), bound) {
            (Some(Part::Literal(prev)), Part::Literal(next)) => prev.push_str(&next),
            (_, bound) => parts.push(bound),
        }
    }
    Template { parts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_variables_become_text_and_unset_ones_keep_their_default() {
        let env = BTreeMap::from([("A".to_string(), "alpha".to_string())]);
        let t = Template::parse("x-${env.A}-${env.B:-${env.A}!}").unwrap();
        let bound = bind_template(&t, &env);
        // No environment at run time: the default, bound already, is read.
        let scope = Scope::default();
        assert_eq!(scope.resolve(&bound).unwrap(), json!("x-alpha-alpha!"));
        assert!(
            !bound
                .references()
                .iter()
                .any(|(r, _)| matches!(&r.root, Root::Env { name, .. } if name == "A"))
        );
        let whole = bind_value(
            ValueTemplate::Text(Template::parse("${env.A}").unwrap()),
            &env,
        );
        assert_eq!(whole, ValueTemplate::Literal(json!("alpha")));
    }
}
