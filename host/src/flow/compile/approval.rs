//! A step's `for_each_key` and `approval`.
//!
//! - `for_each_key` names each item of a `for_each` list, through
//!   `${item}` (`"${item.key}"`); it belongs to a `for_each` step.
//! - `approval = "always"`, or a table: `above = N` (a whole number, or
//!   exactly one reference to one, such as
//!   `"${params.max_unapproved_creates}"`) and `when = "${steps.x.guard}"`
//!   (a guard an earlier step computes; truthy: everything waits). A step
//!   with `approval` needs `for_each` and `for_each_key`: approvals are
//!   given to keys.
//!
//! `above` and `when` are evaluated once for the whole step, so they
//! cannot use `${item}`. A param that `above` names must hold a whole
//! number (after `--param` overrides); a reference known to be no number
//! (an environment variable, which is always text, a run field, an output
//! field whose schema says so) is refused, as `for_each` over one known to
//! be no list is.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::Value;
use toml::Spanned;

use super::super::authored::{AuthoredStep, Node};
use super::super::for_each_key::{self, KeyError};
use super::super::model::{Approval, Threshold, whole_number};
use super::super::resolve::Scope;
use super::super::schema::shape::type_names;
use super::super::template::{Root, Template};
use super::Compiler;
use super::references::{ItemRule, RefRules};

const APPROVAL_HINT: &str = "write `approval = \"always\"`, or `approval = { above = 10 }` (a number or a param such as \"${params.max_unapproved}\"), optionally with `when = \"${steps.x.guard}\"`";

impl Compiler<'_, '_> {
    /// The step's `for_each_key`, checked.
    pub(super) fn for_each_key(
        &mut self,
        step: &AuthoredStep,
        refs: &RefRules<'_>,
    ) -> Option<Template> {
        let key = step.fields.for_each_key.as_ref()?;
        if step.has_for_each() == Some(false) {
            self.error(
                key.span(),
                "`for_each_key` only applies to a step with `for_each`",
                "remove it, or add `for_each`",
            );
            return None;
        }
        let template = self.checked_template(key, refs, "for_each_key")?;
        let uses_item = template
            .references()
            .iter()
            .any(|(r, _)| matches!(r.root, Root::Item));
        if !uses_item {
            self.error(
                key.span(),
                "`for_each_key` must name each item through `${item}`; as written every item gets the same key",
                "for example `for_each_key = \"${item.key}\"`",
            );
            return None;
        }
        Some(template)
    }

    /// A `for_each` list known in full (a param) whose items the step's
    /// `for_each_key` gives no key (a field they lack) or, with
    /// `approval`, one key twice: refused now, as a run would refuse it.
    /// A key that reads what only a run has (an earlier step's output, an
    /// environment variable) is left to the run.
    pub(super) fn known_item_keys(
        &mut self,
        key: &Spanned<String>,
        template: &Template,
        list: &str,
        items: &[Value],
        params: &BTreeMap<String, Value>,
        unique: bool,
    ) {
        let scope = Scope {
            params: Some(params),
            ..Default::default()
        };
        let (why, hint) = match for_each_key::keys(template, items, &scope, unique) {
            Ok(_) | Err(KeyError::Unresolved { .. }) => return,
            Err(e @ KeyError::NotAKey { .. }) => (
                e,
                "name a field every item has, for example `for_each_key = \"${item.key}\"`",
            ),
            Err(e @ KeyError::Shared { .. }) => (
                e,
                "name a field that differs between items, or leave the repeated item out of the list",
            ),
        };
        self.error(key.span(), format!("`{list}`, {why}"), hint);
    }

    /// The step's `approval`, checked; `has_key` says whether the step has
    /// a valid `for_each_key`.
    pub(super) fn approval(
        &mut self,
        step: &AuthoredStep,
        refs: &RefRules<'_>,
        has_key: bool,
    ) -> Option<Approval> {
        let node = step.approval.as_ref()?;
        let approval = self.approval_rule(node, refs)?;
        if step.has_for_each() == Some(false) {
            self.error(
                node.span(),
                "`approval` applies to a step with `for_each`: it holds items back until their keys are approved",
                "add `for_each` and `for_each_key`, or remove `approval`",
            );
            return None;
        }
        if step.fields.for_each_key.is_none() && !step.unreadable("for_each_key") {
            self.error(
                node.span(),
                "a step with `approval` needs `for_each_key`: approvals are given to each item's key",
                "add for example `for_each_key = \"${item.key}\"`",
            );
            return None;
        }
        has_key.then_some(approval)
    }

    fn approval_rule(&mut self, node: &Spanned<Node>, refs: &RefRules<'_>) -> Option<Approval> {
        let entries = match node.get_ref() {
            Node::String(s) if s == "always" => {
                return Some(Approval {
                    always: true,
                    above: None,
                    when: None,
                });
            }
            Node::String(s) => {
                self.error(
                    node.span(),
                    format!("`approval = \"{s}\"` is not a rule"),
                    APPROVAL_HINT,
                );
                return None;
            }
            Node::Table(entries) => entries,
            other => {
                self.error(
                    node.span(),
                    format!(
                        "`approval` must be \"always\" or a table, not {}",
                        other.kind()
                    ),
                    APPROVAL_HINT,
                );
                return None;
            }
        };
        let mut approval = Approval {
            always: false,
            above: None,
            when: None,
        };
        let mut ok = true;
        for (key, value) in entries {
            match key.get_ref().as_str() {
                "above" => match self.threshold(value, refs) {
                    Some(t) => approval.above = Some(t),
                    None => ok = false,
                },
                "when" => match self.guard(value, refs) {
                    Some(t) => approval.when = Some(t),
                    None => ok = false,
                },
                other => {
                    ok = false;
                    self.error(
                        key.span(),
                        format!("unknown key `{other}` in `approval`"),
                        "`approval` takes `above` (how many items may run without approval) and `when` (a guard that makes every item wait)",
                    );
                }
            }
        }
        if ok && approval.above.is_none() && approval.when.is_none() {
            self.error(
                node.span(),
                "`approval` says neither `above` nor `when`",
                APPROVAL_HINT,
            );
            return None;
        }
        ok.then_some(approval)
    }

    /// `above = N`: a whole number, or exactly one reference to one.
    fn threshold(&mut self, value: &Spanned<Node>, refs: &RefRules<'_>) -> Option<Threshold> {
        let hint = "write a whole number (`above = 10`) or one reference to one (`above = \"${params.max_unapproved}\"`)";
        let text = match value.get_ref() {
            Node::Integer(n) => match u64::try_from(*n) {
                Ok(n) => return Some(Threshold::Count(n)),
                Err(_) => {
                    self.error(value.span(), format!("`above = {n}` is below zero"), hint);
                    return None;
                }
            },
            Node::String(s) => Spanned::new(value.span(), s.clone()),
            other => {
                let message = format!("`above` must be a whole number, not {}", other.kind());
                self.error(value.span(), message, hint);
                return None;
            }
        };
        let template = self.whole_step_template(&text, refs, "above")?;
        if template.is_literal() {
            return match text.get_ref().trim().parse::<u64>() {
                Ok(n) => Some(Threshold::Count(n)),
                Err(_) => {
                    let message = format!("`above = \"{}\"` is not a whole number", text.get_ref());
                    self.error(text.span(), message, hint);
                    None
                }
            };
        }
        let Some(reference) = template.as_single_ref() else {
            self.error(
                text.span(),
                "`above` must be exactly one reference, with no text around it",
                hint,
            );
            return None;
        };
        // A param is known in full: one that is not a whole number would
        // stop the step at run time (`for_each` over one that is not a
        // list is refused the same way).
        if let Root::Param(name) = &reference.root
            && let Some(value) = refs.known.value(reference)
            && whole_number(&value).is_none()
        {
            let written: Vec<&str> = std::iter::once(name.as_str())
                .chain(reference.path.iter().map(String::as_str))
                .collect();
            let written = written.join(".");
            self.error(
                text.span(),
                format!("`params.{written}` is {value}, but `above` needs a whole number from 0 up"),
                if reference.path.is_empty() {
                    format!("set `{name}` to a number such as 500 (in `[params]` or with --param {name}=500)")
                } else {
                    format!("make `params.{written}` a number such as 500 in `[params]`")
                },
            );
            return None;
        }
        // Known to be no number (an environment variable is always text,
        // a run field text or a boolean, an output field as its schema
        // says): the run would read a number out of text, or stop the step.
        if let Some((types, source)) = refs.known.types(reference)
            && !types.is_empty()
            && !types.iter().any(|t| t == "integer" || t == "number")
        {
            let hint = match &reference.root {
                Root::Env { .. } => {
                    "an environment variable is always text: put the number in `[params]` (for example `max_unapproved = 500`, or --param max_unapproved=500) and write `above = \"${params.max_unapproved}\"`"
                }
                _ => hint,
            };
            self.error(
                text.span(),
                format!(
                    "`{}` ({source}) is {}, but `above` needs a whole number from 0 up",
                    text.get_ref(),
                    type_names(types.iter().map(String::as_str))
                ),
                hint,
            );
            return None;
        }
        Some(Threshold::Reference(template))
    }

    /// `when = "${steps.x.guard}"`: any text with references.
    fn guard(&mut self, value: &Spanned<Node>, refs: &RefRules<'_>) -> Option<Template> {
        let Node::String(s) = value.get_ref() else {
            let message = format!(
                "`when` in `approval` must be a string, not {}",
                value.get_ref().kind()
            );
            self.error(
                value.span(),
                message,
                "for example `when = \"${steps.diff.guard}\"`",
            );
            return None;
        };
        self.whole_step_template(&Spanned::new(value.span(), s.clone()), refs, "when")
    }

    /// A template evaluated once for the whole step: no `${item}`.
    fn whole_step_template(
        &mut self,
        s: &Spanned<String>,
        refs: &RefRules<'_>,
        part: &'static str,
    ) -> Option<Template> {
        let template = self.template(s)?;
        let item: Option<Range<usize>> = template
            .references()
            .into_iter()
            .find(|(r, _)| matches!(r.root, Root::Item))
            .map(|(_, range)| range);
        if let Some(range) = item {
            let span = self.inner_span(s, range);
            self.error(
                span,
                format!("the approval's `{part}` is decided once for the whole step, before any item, so it cannot use `${{item}}`"),
                "compute it in an earlier step and refer to that step's output",
            );
            return None;
        }
        let rules = RefRules {
            item: ItemRule::InWhen,
            ..*refs
        };
        self.checked_template(s, &rules, "approval")
    }
}
