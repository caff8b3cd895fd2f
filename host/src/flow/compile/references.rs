//! What a `${…}` may point at, depending on where it is written.
//!
//! Everywhere: params the flow declares, secrets it declares, and no
//! `${env.X}` of a variable that holds a declared secret. In a step:
//! steps that run earlier, `${item}` only inside `for_each` (and not in
//! its `when`), and no secret at all. In a connection: no step, item or
//! run value (connections are set up before the flow runs), and no secret
//! in a URL. Every `${env.…}` is noted for binding.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use serde_json::Value;
use toml::Spanned;

use super::super::authored::Node;
use super::super::compiled::{EnvUse, LocatedTemplate};
use super::super::model::ValueTemplate;
use super::super::template::{Part, Reference, Root, Template};
use super::inputs::Known;
use super::{Compiler, literal_json};

/// A step as messages name it: by its id, or, when it has no readable id
/// (reported), by the line its `[[step]]` starts on.
pub(super) enum StepName {
    Id(String),
    OnLine(usize),
}

impl StepName {
    /// Its id; none for a step without one, which nothing can refer to.
    pub(super) fn id(&self) -> Option<&str> {
        match self {
            StepName::Id(id) => Some(id),
            StepName::OnLine(_) => None,
        }
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepName::Id(id) => write!(f, "step `{id}`"),
            StepName::OnLine(line) => write!(f, "the step on line {line}"),
        }
    }
}

/// What a step's references may see.
#[derive(Clone, Copy)]
pub(super) struct RefRules<'a> {
    pub params: &'a BTreeMap<String, Value>,
    pub earlier: &'a HashSet<&'a str>,
    pub later: &'a [String],
    /// The steps with `approval`, whose plans `${run.approvals.ID}` reads.
    pub gated: &'a HashSet<&'a str>,
    pub step: &'a StepName,
    pub item: ItemRule,
    /// What the references it may make are known to be: a reference into
    /// an earlier step's output is checked against its output schema.
    pub known: &'a Known<'a>,
}

/// The lists of keys `${run.approvals.ID}` holds, by their state in the plan.
const APPROVAL_LISTS: &[&str] = &["pending", "approved", "rejected"];

/// Where `${item}` may appear.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ItemRule {
    /// In a `for_each` step's `with`.
    Allowed,
    /// In a step without `for_each`, or in `for_each` itself.
    OutsideForEach,
    /// In a `for_each` step's `when`, which is checked before any item.
    InWhen,
}

/// Where a template is written.
#[derive(Clone, Copy)]
pub(super) enum Place<'a> {
    /// In a step's `with`, `when` or `for_each` (the key's name).
    Step(&'a RefRules<'a>, &'static str),
    /// In a connection setting; `url` for its base or token URL.
    Connection {
        params: &'a BTreeMap<String, Value>,
        url: bool,
    },
}

impl Place<'_> {
    fn params(&self) -> &BTreeMap<String, Value> {
        match self {
            Place::Step(rules, _) => rules.params,
            Place::Connection { params, .. } => params,
        }
    }
}

impl Compiler<'_, '_> {
    /// The template of a string, when every reference in it is allowed
    /// where it is written.
    pub(super) fn located_template(
        &mut self,
        s: &Spanned<String>,
        place: Place<'_>,
    ) -> Option<LocatedTemplate> {
        // The well-formed references are checked even beside a malformed
        // one, so that every problem of the string is reported at once.
        let (template, well_formed) = self.template_checking_all(s);
        let located = LocatedTemplate {
            body_start: self.body_start(s),
            token: s.span(),
            template,
        };
        self.note_env_uses(&located, &located.template, &[]);
        let whole = located.template.as_single_ref();
        let mut ok = true;
        for (r, range) in located.template.references() {
            let span = located.span(range);
            let allowed = self.check_reference(r, span.clone(), place);
            // Only a reference allowed here is looked up, so that one
            // mistake is not reported twice. A reference spliced into
            // text is checked like a whole one, and pointed at itself.
            if allowed && let Place::Step(rules, _) = place {
                let is_whole = whole.is_some_and(|w| std::ptr::eq(w, r));
                self.check_output_path(r, if is_whole { s.span() } else { span }, rules.known);
            }
            ok &= allowed;
        }
        (ok && well_formed).then_some(located)
    }

    /// A step's string as a template, when every reference is allowed.
    pub(super) fn checked_template(
        &mut self,
        s: &Spanned<String>,
        rules: &RefRules<'_>,
        part: &'static str,
    ) -> Option<Template> {
        self.located_template(s, Place::Step(rules, part))
            .map(|l| l.template)
    }

    fn note_env_uses(&mut self, at: &LocatedTemplate, template: &Template, inside: &[String]) {
        for part in &template.parts {
            let Part::Ref(r, range) = part else { continue };
            let Root::Env { name, default } = &r.root else {
                continue;
            };
            self.env_uses.push(EnvUse {
                name: name.clone(),
                span: at.span(range.clone()),
                has_default: default.is_some(),
                inside_defaults_of: inside.to_vec(),
            });
            if let Some(default) = default {
                let mut deeper = inside.to_vec();
                deeper.push(name.clone());
                self.note_env_uses(at, default, &deeper);
            }
        }
    }

    /// Whether one reference is allowed; reports it when it is not.
    fn check_reference(&mut self, r: &Reference, span: Range<usize>, place: Place<'_>) -> bool {
        match (&r.root, place) {
            (Root::Param(name), _) if !place.params().contains_key(name) => {
                self.unknown_param(name, span, place.params())
            }
            (Root::Param(name), _)
                if let Some(why) = place
                    .params()
                    .get(name)
                    .and_then(|v| param_path_problem(name, v, &r.path)) =>
            {
                self.error(
                    span,
                    why,
                    "a path into a param names a field of a table or a place (0, 1, …) in a list",
                )
            }
            (Root::Secret(name), _) => return self.secret_use(name, span, place),
            (Root::Env { name, .. }, _) if self.secret_reading(name).is_some() => {
                let secret = self.secret_reading(name).map(|s| s.name.clone());
                self.error(
                    span,
                    format!(
                        "`${{env.{name}}}` reads the variable of secret `{}`",
                        secret.unwrap_or_default()
                    ),
                    "a secret is read only through `${secrets.NAME}`, in a connection's `auth` or `headers`",
                );
            }
            (Root::Step(_) | Root::Item | Root::Run(_), Place::Connection { .. }) => self.error(
                span,
                "connection settings are resolved before the flow runs and can only use `params`, `env` and `secrets`",
                "move step-dependent values into a step's `with`",
            ),
            (_, Place::Step(rules, _)) => return self.step_reference(r, span, rules),
            _ => return true,
        }
        false
    }

    fn unknown_param(&mut self, name: &str, span: Range<usize>, params: &BTreeMap<String, Value>) {
        let known: Vec<&str> = params.keys().map(String::as_str).collect();
        self.error(
            span,
            format!("`params.{name}` is not a param of this flow"),
            if known.is_empty() {
                "declare it under `[params]`".to_string()
            } else {
                format!("params are: {}", known.join(", "))
            },
        );
    }

    /// A `${secrets.NAME}`: declared, and where credentials go.
    fn secret_use(&mut self, name: &str, span: Range<usize>, place: Place<'_>) -> bool {
        if !self.secrets.iter().any(|s| s.name == name) {
            let known: Vec<String> = self.secrets.iter().map(|s| s.name.clone()).collect();
            self.error(
                span,
                format!("there is no secret `{name}`"),
                if known.is_empty() {
                    format!("declare it: `[secrets]` then `{name} = {{ env = \"VARIABLE\" }}`")
                } else {
                    format!("declared secrets: {}", known.join(", "))
                },
            );
            return false;
        }
        match place {
            Place::Step(_, part) => self.error(
                span,
                format!("secret `{name}` cannot be used in a step's `{part}`"),
                "secrets go only where credentials go (a connection's `auth` or `headers`): the host adds them to requests, so a component never needs them",
            ),
            Place::Connection { url: true, .. } => self.error(
                span,
                format!("secret `{name}` cannot be part of a URL"),
                "URLs are shown in errors and logs; put the secret in the connection's `auth` or `headers`",
            ),
            Place::Connection { .. } => return true,
        }
        false
    }

    /// A step's reference to params, steps, `item` or `run`.
    fn step_reference(&mut self, r: &Reference, span: Range<usize>, rules: &RefRules<'_>) -> bool {
        match &r.root {
            Root::Step(id) if rules.step.id() == Some(id.as_str()) => self.error(
                span,
                format!("step `{id}` refers to its own output"),
                "a step can only read the output of steps before it",
            ),
            Root::Step(id) if !rules.earlier.contains(id.as_str()) => {
                self.unknown_step(id, span, rules)
            }
            Root::Item if rules.item == ItemRule::OutsideForEach => self.error(
                span,
                "`${item}` is only available in a step with `for_each`",
                "add `for_each = \"${steps.x.list}\"` to the step",
            ),
            Root::Item if rules.item == ItemRule::InWhen => self.error(
                span,
                format!(
                    "{} uses `${{item}}` in `when`, which is checked once for the whole step, before any item runs",
                    rules.step
                ),
                "filter the list in an earlier step and give `for_each` only the items to handle, or let the component skip an item",
            ),
            Root::Run(field) if field == "approvals" => {
                return self.approvals_reference(&r.path, span, rules);
            }
            _ => return true,
        }
        false
    }

    /// `${run.approvals.ID.STATE…}`: ID is a step with `approval` and
    /// STATE one of its plan's lists. A misspelt or renamed step would
    /// otherwise read as null, and quietly take the admins' decisions out
    /// of the step reading them.
    fn approvals_reference(
        &mut self,
        path: &[String],
        span: Range<usize>,
        rules: &RefRules<'_>,
    ) -> bool {
        let mut gated: Vec<&str> = rules.gated.iter().copied().collect();
        gated.sort();
        if let Some(id) = path.first()
            && !rules.gated.contains(id.as_str())
        {
            self.error(
                span,
                format!("`${{run.approvals.{id}}}` names no step with `approval`"),
                match gated.as_slice() {
                    [] => "no step of this flow has `approval`, so there are no approvals to read"
                        .to_string(),
                    _ => format!("steps with `approval`: {}", gated.join(", ")),
                },
            );
            return false;
        }
        if let (Some(id), Some(list)) = (path.first(), path.get(1))
            && !APPROVAL_LISTS.contains(&list.as_str())
        {
            self.error(
                span,
                format!("`${{run.approvals.{id}.{list}}}` is not a list of the plan"),
                "a plan's keys are in `pending`, `approved` and `rejected`",
            );
            return false;
        }
        true
    }

    /// A reference to a step that is not before this one: later, or none.
    fn unknown_step(&mut self, id: &str, span: Range<usize>, rules: &RefRules<'_>) {
        if rules.later.iter().any(|l| l == id) {
            self.error(
                span,
                format!("{} refers to step `{id}`, which runs later", rules.step),
                "move this step after it, or read an earlier step",
            );
            return;
        }
        let mut known: Vec<&str> = rules.earlier.iter().copied().collect();
        known.sort();
        self.error(
            span,
            format!("there is no step `{id}` before {}", rules.step),
            if known.is_empty() {
                "this is the first step; it can only use params and env".to_string()
            } else {
                format!("earlier steps: {}", known.join(", "))
            },
        );
    }

    /// A `with` value: its strings become templates, the rest stays literal.
    pub(super) fn value_template(
        &mut self,
        node: &Spanned<Node>,
        rules: &RefRules<'_>,
    ) -> Option<ValueTemplate> {
        Some(match node.get_ref() {
            Node::String(s) => {
                let s = Spanned::new(node.span(), s.clone());
                let t = self.checked_template(&s, rules, "with")?;
                if t.is_literal() {
                    ValueTemplate::Literal(Value::String(text_of(&t)))
                } else {
                    ValueTemplate::Text(t)
                }
            }
            Node::Array(items) => {
                // Every item is checked, so that all problems are reported.
                let out: Vec<Option<ValueTemplate>> = items
                    .iter()
                    .map(|i| self.value_template(i, rules))
                    .collect();
                ValueTemplate::Array(out.into_iter().collect::<Option<_>>()?)
            }
            Node::Table(entries) => {
                let out: Vec<Option<(String, ValueTemplate)>> = entries
                    .iter()
                    .map(|(k, v)| Some((k.get_ref().clone(), self.value_template(v, rules)?)))
                    .collect();
                ValueTemplate::Object(out.into_iter().collect::<Option<_>>()?)
            }
            other => ValueTemplate::Literal(literal_json(other)),
        })
    }
}

/// The literal text of a template without references.
pub(super) fn text_of(t: &Template) -> String {
    t.parts
        .iter()
        .map(|p| match p {
            Part::Literal(s) => s.as_str(),
            Part::Ref(..) => "",
        })
        .collect()
}

/// Why a path into a param's value can hold nothing whatever the run's
/// `--param`s: a field of a text, number or boolean, or a word as a place
/// in a list. (A place past a list's end, or a field a table lacks, is
/// left alone: `--param` may give a longer list or another table.) Such a
/// reference would read as nothing at every run.
pub(super) fn param_path_problem(name: &str, value: &Value, path: &[String]) -> Option<String> {
    let mut at = format!("params.{name}");
    let mut value = value;
    for segment in path {
        value = match value {
            Value::Object(fields) => fields.get(segment)?,
            Value::Array(items) => match segment.parse::<usize>() {
                Ok(place) => items.get(place)?,
                Err(_) => {
                    return Some(format!(
                        "`{at}` is a list: `{segment}` is not a place in it (0, 1, …)"
                    ));
                }
            },
            scalar => {
                let kind = match scalar {
                    Value::String(_) => "a text",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                return Some(format!("`{at}` is {kind}, which has no field `{segment}`"));
            }
        };
        at.push('.');
        at.push_str(segment);
    }
    None
}
