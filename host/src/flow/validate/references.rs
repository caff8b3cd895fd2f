//! What a `${…}` in a step may point at: params the flow declares, steps
//! that run earlier, `${item}` only inside `for_each` (and not in its
//! `when`), environment variables that are set or have a default.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use serde_json::Value;
use toml::Spanned;

use super::super::authored::Node;
use super::super::model::ValueTemplate;
use super::super::template::{Part, Reference, Root, Template};
use super::{Validator, literal_json};

#[derive(Clone, Copy)]
pub(super) struct RefRules<'a> {
    pub params: &'a BTreeMap<String, Value>,
    pub earlier: &'a HashSet<&'a str>,
    pub later: &'a [String],
    pub step: &'a str,
    pub item: ItemRule,
}

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

impl Validator<'_, '_> {
    /// The template of a step's string, when every reference in it is allowed.
    pub(super) fn checked_template(
        &mut self,
        s: &Spanned<String>,
        rules: &RefRules<'_>,
    ) -> Option<Template> {
        let template = self.template(s)?;
        let mut ok = true;
        for (r, range) in template.references() {
            let span = self.inner_span(s, range);
            ok &= self.check_reference(r, span, rules);
        }
        ok.then_some(template)
    }

    /// Whether one reference is allowed; reports it when it is not.
    fn check_reference(&mut self, r: &Reference, span: Range<usize>, rules: &RefRules<'_>) -> bool {
        match &r.root {
            Root::Param(name) if !rules.params.contains_key(name) => {
                let known: Vec<&str> = rules.params.keys().map(String::as_str).collect();
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
            Root::Step(id) if id == rules.step => self.error(
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
                    "step `{}` uses `${{item}}` in `when`, which is checked once for the whole step, before any item runs",
                    rules.step
                ),
                "filter the list in an earlier step and give `for_each` only the items to handle, or let the component skip an item",
            ),
            Root::Env {
                name,
                default: None,
            } if !self.ctx.env.contains_key(name) => self.error(
                span,
                format!("environment variable {name} is not set"),
                format!("set {name}, or give a default with `${{env.{name}:-value}}`"),
            ),
            _ => return true,
        }
        false
    }

    /// A reference to a step that is not before this one: later, or none.
    fn unknown_step(&mut self, id: &str, span: Range<usize>, rules: &RefRules<'_>) {
        if rules.later.iter().any(|l| l == id) {
            self.error(
                span,
                format!(
                    "step `{}` refers to step `{id}`, which runs later",
                    rules.step
                ),
                "move this step after it, or read an earlier step",
            );
            return;
        }
        let mut known: Vec<&str> = rules.earlier.iter().copied().collect();
        known.sort();
        self.error(
            span,
            format!("there is no step `{id}` before step `{}`", rules.step),
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
                let t = self.checked_template(&Spanned::new(node.span(), s.clone()), rules)?;
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

fn text_of(t: &Template) -> String {
    t.parts
        .iter()
        .map(|p| match p {
            Part::Literal(s) => s.as_str(),
            Part::Ref(..) => "",
        })
        .collect()
}
