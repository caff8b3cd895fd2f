//! `[[step]]` sections: ids, components, granted connections, `with`,
//! `for_each`, `when`, concurrency, timeout and artifacts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;

use serde_json::Value;
use toml::Spanned;

use super::super::authored::{AuthoredFlow, AuthoredStep, Node, OnError, StepFields};
use super::super::model::*;
use super::super::template::Template;
use super::references::{ItemRule, RefRules};
use super::{MAX_STEP_TIMEOUT, Validator, is_identifier};

impl Validator<'_, '_> {
    /// Every step, in order; each may read only the steps before it.
    pub(super) fn steps(
        &mut self,
        authored: &AuthoredFlow,
        params: &BTreeMap<String, Value>,
    ) -> Vec<Step> {
        let declared: HashSet<&str> = authored
            .connections
            .iter()
            .map(|(n, _)| n.get_ref().as_str())
            .collect();
        let all_ids: Vec<String> = authored
            .steps
            .iter()
            .map(|s| s.get_ref().fields.id.get_ref().clone())
            .collect();
        let mut steps = Vec::new();
        let mut seen: HashMap<String, Range<usize>> = HashMap::new();
        for (index, step) in authored.steps.iter().enumerate() {
            let earlier: HashSet<&str> = seen.keys().map(String::as_str).collect();
            let context = StepContext {
                params,
                declared: &declared,
                earlier: &earlier,
                later: &all_ids[index + 1..],
            };
            if let Some(s) = self.step(step.get_ref(), &context) {
                steps.push(s);
            }
            let id = &step.get_ref().fields.id;
            if let Some(first) = seen.get(id.get_ref()) {
                let (line, _) = self.source.line_col(first.start);
                self.error(
                    id.span(),
                    format!("step id `{}` is used twice", id.get_ref()),
                    format!("it is first used on line {line}; give each step its own id"),
                );
            } else {
                seen.insert(id.get_ref().clone(), id.span());
            }
        }
        if authored.steps_written == 0 {
            let start = authored.document.start;
            self.error(
                start..start,
                "the flow has no steps",
                "add at least one `[[step]]` section",
            );
        }
        steps
    }

    fn step(&mut self, step: &AuthoredStep, at: &StepContext<'_>) -> Option<Step> {
        let f = &step.fields;
        let id = f.id.get_ref().clone();
        let before = self.diags.len();
        if !is_identifier(&id) {
            self.error(
                f.id.span(),
                format!("step id `{id}` is not valid"),
                "use letters, digits, `-` and `_`, like `create-users`",
            );
        }
        let uses = self.uses(&f.uses);
        self.grants(f, at.declared);
        let refs = RefRules {
            params: at.params,
            earlier: at.earlier,
            later: at.later,
            step: &id,
            item: if f.for_each.is_some() {
                ItemRule::Allowed
            } else {
                ItemRule::OutsideForEach
            },
        };
        let with = step.with.as_ref().and_then(|w| self.with(w, &refs));
        let for_each = f.for_each.as_ref().and_then(|fe| self.for_each(fe, &refs));
        let when = step
            .when
            .as_ref()
            .map_or_else(Vec::new, |w| self.when(w, &refs));
        let concurrency = self.concurrency(f);
        let timeout = f
            .timeout
            .as_ref()
            .and_then(|t| self.duration(t, "timeout", MAX_STEP_TIMEOUT))
            .unwrap_or(DEFAULT_STEP_TIMEOUT);
        let on_error = f.on_error.as_ref().map_or(OnError::Fail, |o| *o.get_ref());
        let artifacts = self.artifacts(f);
        if self.diags.len() > before {
            return None;
        }
        Some(Step {
            id,
            uses: uses?,
            connections: f.connections.iter().map(|c| c.get_ref().clone()).collect(),
            with,
            for_each,
            concurrency,
            when,
            timeout,
            on_error,
            artifacts,
        })
    }

    /// Each connection a step asks for is declared by the flow.
    fn grants(&mut self, f: &StepFields, declared: &HashSet<&str>) {
        let id = f.id.get_ref();
        for c in &f.connections {
            if declared.contains(c.get_ref().as_str()) {
                continue;
            }
            let mut known: Vec<&str> = declared.iter().copied().collect();
            known.sort();
            self.error(
                c.span(),
                format!(
                    "step `{id}` asks for connection `{}`, which the flow does not declare",
                    c.get_ref()
                ),
                if known.is_empty() {
                    "declare it under `[connections.NAME]`".to_string()
                } else {
                    format!("declared connections: {}", known.join(", "))
                },
            );
        }
    }

    fn with(&mut self, w: &Spanned<Node>, refs: &RefRules<'_>) -> Option<ValueTemplate> {
        if !matches!(w.get_ref(), Node::Table(_)) {
            self.error(
                w.span(),
                format!("`with` must be a table, not {}", w.get_ref().kind()),
                "write `with = { key = \"value\" }`",
            );
            return None;
        }
        self.value_template(w, refs)
    }

    fn for_each(&mut self, fe: &Spanned<String>, refs: &RefRules<'_>) -> Option<Template> {
        let rules = RefRules {
            item: ItemRule::OutsideForEach,
            ..*refs
        };
        let t = self.checked_template(fe, &rules)?;
        if t.as_single_ref().is_none() {
            self.error(
                fe.span(),
                "`for_each` must be exactly one reference to a list",
                "for example `for_each = \"${steps.diff.missing}\"`",
            );
        }
        Some(t)
    }

    /// `when` decides once whether the whole step runs, before any item.
    fn when(&mut self, node: &Spanned<Node>, refs: &RefRules<'_>) -> Vec<Template> {
        let rules = RefRules {
            item: match refs.item {
                ItemRule::Allowed => ItemRule::InWhen,
                other => other,
            },
            ..*refs
        };
        let hint = "write `when = \"${steps.x.ok}\"`";
        match node.get_ref() {
            Node::String(s) => self
                .checked_template(&Spanned::new(node.span(), s.clone()), &rules)
                .into_iter()
                .collect(),
            Node::Array(items) => items
                .iter()
                .filter_map(|i| match i.get_ref() {
                    Node::String(s) => {
                        self.checked_template(&Spanned::new(i.span(), s.clone()), &rules)
                    }
                    other => {
                        let message =
                            format!("a `when` condition must be a string, not {}", other.kind());
                        self.error(i.span(), message, hint);
                        None
                    }
                })
                .collect(),
            other => {
                let message = format!(
                    "`when` must be a string or a list of strings, not {}",
                    other.kind()
                );
                self.error(node.span(), message, hint);
                Vec::new()
            }
        }
    }

    fn concurrency(&mut self, f: &StepFields) -> usize {
        let Some(c) = &f.concurrency else {
            return 1;
        };
        if f.for_each.is_none() {
            self.error(
                c.span(),
                "`concurrency` only applies to a step with `for_each`",
                "remove it, or add `for_each`",
            );
        }
        match usize::try_from(*c.get_ref()) {
            Ok(n @ 1..=256) => n,
            _ => {
                self.error(
                    c.span(),
                    format!("`concurrency = {}` is out of range", c.get_ref()),
                    "use a number from 1 to 256",
                );
                1
            }
        }
    }

    fn artifacts(&mut self, f: &StepFields) -> Vec<(String, Vec<String>)> {
        let mut artifacts = Vec::new();
        for (file, path) in &f.artifacts {
            let name = file.get_ref();
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                self.error(
                    file.span(),
                    format!("artifact name `{name}` must be a plain file name"),
                    "for example `report.html`",
                );
                continue;
            }
            let segments: Vec<String> = if path.get_ref().is_empty() {
                Vec::new()
            } else {
                path.get_ref().split('.').map(str::to_string).collect()
            };
            artifacts.push((name.clone(), segments));
        }
        artifacts
    }

    fn uses(&mut self, uses: &Spanned<String>) -> Option<ComponentRef> {
        let text = uses.get_ref();
        let looks_like_path = text.ends_with(".wasm") || text.contains('/') || text.contains('\\');
        if looks_like_path {
            let path = PathBuf::from(text);
            let path = if path.is_absolute() {
                path
            } else {
                self.source.dir().join(path)
            };
            if path.is_file() {
                return Some(ComponentRef::File(path));
            }
            self.error(
                uses.span(),
                format!("component file `{}` does not exist", path.display()),
                "paths in `uses` are relative to the flow file; build the component with `cargo build --target wasm32-wasip2`",
            );
            return None;
        }
        if self.ctx.builtins.contains(&text.as_str()) {
            return Some(ComponentRef::Builtin(text.clone()));
        }
        self.error(
            uses.span(),
            format!("`{text}` is not a built-in component"),
            format!(
                "built-ins are: {}; or give a path to a .wasm file",
                self.ctx.builtins.join(", ")
            ),
        );
        None
    }
}

/// What a step may refer to, from where it stands in the flow.
struct StepContext<'a> {
    params: &'a BTreeMap<String, Value>,
    declared: &'a HashSet<&'a str>,
    earlier: &'a HashSet<&'a str>,
    later: &'a [String],
}
