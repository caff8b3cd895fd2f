//! `[[step]]` sections: ids, components, granted connections, `with`,
//! `for_each` (with `for_each_key` and `approval`: see [`super::approval`]),
//! `when`, concurrency, timeout, retry and artifacts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use toml::Spanned;

use super::super::authored::{AuthoredFlow, AuthoredStep, Node, OnError, StepFields};
use super::super::catalog::Description;
use super::super::component_file;
use super::super::model::*;
use super::super::remote::OCI_SCHEME;
use super::super::schema::InputSchema;
use super::super::schema::shape;
use super::super::template::Template;
use super::inputs::{Known, StepShape};
use super::references::{ItemRule, RefRules, StepName};
use super::{Compiler, MAX_STEP_TIMEOUT, MIN_STEP_TIMEOUT, is_identifier};

/// The longest file name Linux's file systems take (ext4, xfs, btrfs): an
/// artifact named longer failed its run after the step had run.
const MAX_ARTIFACT_NAME_BYTES: usize = 255;

impl Compiler<'_, '_> {
    /// Every step, in order; each may read only the steps before it.
    /// A step with problems is left out of the result, but its id stays
    /// known and what its component says about its output is still used
    /// to check the steps after it. A step without a readable id is
    /// checked all the same (named by its line), and nothing can read it.
    pub(super) fn steps(
        &mut self,
        authored: &AuthoredFlow,
        params: &BTreeMap<String, Value>,
    ) -> Vec<Step> {
        let declared: HashSet<&str> = authored
            .connections
            .iter()
            .map(|(n, _)| n.get_ref().as_str())
            .chain(authored.unreadable_connections.iter().map(String::as_str))
            .collect();
        let ids_after = |index: usize| -> Vec<String> {
            (authored.steps[index + 1..].iter())
                .filter_map(|s| s.get_ref().id.as_ref().map(|id| id.get_ref().clone()))
                .collect()
        };
        // `${run.approvals.ID…}` may name any step with `approval`, before
        // or after the one reading it: the plans are read as the run starts.
        let gated: HashSet<&str> = (authored.steps.iter())
            .filter(|s| {
                let s = s.get_ref();
                // An unreadable `approval` (reported) may have been meant.
                s.approval.is_some() || s.unreadable.iter().any(|k| k == "approval")
            })
            .filter_map(|s| s.get_ref().id.as_ref().map(|id| id.get_ref().as_str()))
            .collect();
        let mut steps = Vec::new();
        let mut seen: HashMap<String, Range<usize>> = HashMap::new();
        // Each artifact's file name (ignoring case, as some file systems
        // do), where a step that always runs first writes it: a second
        // such step would replace the first's file.
        let mut artifact_files: HashMap<String, Range<usize>> = HashMap::new();
        let mut shapes: BTreeMap<String, StepShape> = BTreeMap::new();
        for (index, step) in authored.steps.iter().enumerate() {
            let earlier: HashSet<&str> = seen.keys().map(String::as_str).collect();
            let later = ids_after(index);
            let name = match &step.get_ref().id {
                Some(id) => StepName::Id(id.get_ref().clone()),
                None => StepName::OnLine(self.source.line_col(step.span().start).0),
            };
            let context = StepContext {
                params,
                declared: &declared,
                earlier: &earlier,
                later: &later,
                gated: &gated,
                shapes: &shapes,
            };
            let (compiled, shape) = self.step(step.get_ref(), &name, &context);
            steps.extend(compiled);
            // Steps with a `when` may be meant to write it in turn.
            if step.get_ref().when.is_none() {
                self.one_writer_per_artifact(&step.get_ref().fields, &mut artifact_files);
            }
            let Some(id) = &step.get_ref().id else {
                continue;
            };
            if let Some(first) = seen.get(id.get_ref()) {
                let (line, _) = self.source.line_col(first.start);
                self.error(
                    id.span(),
                    format!("step id `{}` is used twice", id.get_ref()),
                    format!("it is first used on line {line}; give each step its own id"),
                );
                // Which of the two a later reference reads is not known.
                shapes.insert(id.get_ref().clone(), StepShape::unknown());
            } else {
                seen.insert(id.get_ref().clone(), id.span());
                shapes.insert(id.get_ref().clone(), shape);
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

    /// One step, checked; `None` when it has a problem. Each check stands
    /// on its own, so that every problem of the step is reported at once:
    /// a part that another problem leaves unknown is not checked (a value
    /// with a bad reference, the items of a `for_each` that is wrong), but
    /// nothing else is skipped for it. Also what the step's component says
    /// about its output, for the steps after it.
    fn step(
        &mut self,
        step: &AuthoredStep,
        name: &StepName,
        at: &StepContext<'_>,
    ) -> (Option<Step>, StepShape) {
        let f = &step.fields;
        // No reference names a step by "": one without an id reads nothing
        // of its own.
        let own = name.id().unwrap_or_default();
        let before = self.diags.len();
        if let Some(id) = &step.id {
            self.valid_name(
                id,
                "step id",
                "use letters, digits, `-` and `_`, like `create-users`",
            );
        }
        let component = f.uses.as_ref().and_then(|u| self.component(u));
        let description = component.as_ref().and_then(|(_, d, _)| d.clone());
        let shape = StepShape::of(step, description.clone());
        let connections = self.grants(step, name, at.declared, description.as_deref());
        // `for_each` reads what is before the step, not its items.
        let outer = Known::new(at.params, at.shapes, own, None);
        let outer_refs = RefRules {
            params: at.params,
            earlier: at.earlier,
            later: at.later,
            gated: at.gated,
            step: name,
            item: ItemRule::OutsideForEach,
            known: &outer,
        };
        let for_each = f
            .for_each
            .as_ref()
            .and_then(|fe| self.for_each(fe, &outer_refs));
        // Items of what is not a list are not typed.
        let list = match (&f.for_each, &for_each) {
            (Some(fe), Some(t)) => self.for_each_list(fe, t, &outer).then_some(t),
            _ => None,
        };
        let known = Known::new(at.params, at.shapes, own, list);
        let refs = RefRules {
            item: if step.has_for_each() == Some(false) {
                ItemRule::OutsideForEach
            } else {
                ItemRule::Allowed
            },
            known: &known,
            ..outer_refs
        };
        let with = step.with.as_ref().and_then(|w| self.with(w, &refs));
        let for_each_key = self.for_each_key(step, &refs);
        let approval = self.approval(step, &refs, for_each_key.is_some());
        if let (Some(key), Some(template), Some(fe), Some(Value::Array(items))) = (
            &f.for_each_key,
            &for_each_key,
            &f.for_each,
            list.and_then(Template::as_single_ref)
                .and_then(|r| outer.value(r)),
        ) {
            let unique = approval.is_some();
            self.known_item_keys(key, template, fe.get_ref(), &items, at.params, unique);
        }
        let when = step
            .when
            .as_ref()
            .map_or_else(Vec::new, |w| self.when(w, &refs));
        let input_schema = component.as_ref().and_then(|(_, _, s)| s.clone());
        // A `with` that is not a table is reported as such, and one that
        // could not be read is not there to check.
        let with_readable = match &step.with {
            Some(w) => matches!(w.get_ref(), Node::Table(_)),
            None => !step.unreadable("with"),
        };
        if let (Some(schema), Some(uses)) = (&input_schema, &f.uses)
            && with_readable
        {
            self.check_inputs(uses, step.with.as_ref(), schema, &known);
        }
        let fields = self.step_fields(step);
        if step.has_for_each() == Some(false)
            && let Some(d) = &description
        {
            self.check_artifact_paths(f, d);
            if let (Some(path), Some(segments)) = (&f.ledger, &fields.ledger) {
                self.check_ledger_path(path, segments, d);
            }
        }
        if self.diags.len() > before || !step.unreadable.is_empty() {
            return (None, shape);
        }
        let (Some((uses, _, _)), Some(id)) = (component, &step.id) else {
            return (None, shape);
        };
        let id = id.get_ref().clone();
        let step = Step {
            id,
            uses,
            connections,
            description,
            input_schema,
            retry: fields.retry,
            with,
            for_each,
            for_each_key,
            approval,
            concurrency: fields.concurrency,
            when,
            timeout: fields.timeout,
            on_error: fields.on_error,
            artifacts: fields.artifacts,
            max_output: fields.max_output,
            max_item_output: fields.max_item_output,
            ledger: fields.ledger,
            // Set once every step is known (`mark_items_read`).
            items_read: true,
        };
        (Some(step), shape)
    }

    /// The step's settings that stand alone.
    fn step_fields(&mut self, step: &AuthoredStep) -> Fields {
        let f = &step.fields;
        Fields {
            concurrency: self.concurrency(step),
            timeout: f
                .timeout
                .as_ref()
                .and_then(|t| self.duration(t, "timeout", MIN_STEP_TIMEOUT, MAX_STEP_TIMEOUT))
                .unwrap_or(DEFAULT_STEP_TIMEOUT),
            on_error: f.on_error.as_ref().map_or(OnError::Fail, |o| *o.get_ref()),
            retry: f.retry.as_ref().map(|r| self.retry(r)),
            artifacts: self.artifacts(f),
            max_output: f
                .max_output_bytes
                .as_ref()
                .map_or(DEFAULT_MAX_OUTPUT_BYTES, |m| {
                    self.output_cap(m, "max_output_bytes")
                }),
            ledger: self.ledger(f),
            max_item_output: match &f.max_item_output_bytes {
                None => DEFAULT_MAX_ITEM_OUTPUT_BYTES,
                Some(m) => {
                    if step.has_for_each() == Some(false) {
                        self.error(
                            m.span(),
                            "`max_item_output_bytes` only applies to a step with `for_each`",
                            "remove it, or use `max_output_bytes` for the step's output",
                        );
                    }
                    self.output_cap(m, "max_item_output_bytes")
                }
            },
        }
    }

    /// An output cap in bytes: from 1 to [`MAX_OUTPUT_CAP`].
    fn output_cap(&mut self, m: &Spanned<i64>, key: &str) -> usize {
        match usize::try_from(*m.get_ref()) {
            Ok(n @ 1..=MAX_OUTPUT_CAP) => n,
            _ => {
                self.error(
                    m.span(),
                    format!("`{key} = {}` is out of range", m.get_ref()),
                    format!("use a number of bytes from 1 to {MAX_OUTPUT_CAP} (1 GiB)"),
                );
                DEFAULT_MAX_OUTPUT_BYTES
            }
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
        let t = self.checked_template(fe, &rules, "for_each")?;
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
    fn when(&mut self, node: &Spanned<Node>, refs: &RefRules<'_>) -> Vec<Condition> {
        let rules = RefRules {
            item: match refs.item {
                ItemRule::Allowed => ItemRule::InWhen,
                other => other,
            },
            ..*refs
        };
        let hint = "write `when = \"${steps.x.ok}\"`";
        match node.get_ref() {
            Node::String(s) => self.condition(node.span(), s, &rules).into_iter().collect(),
            // An empty list of conditions would always hold, though `[]`
            // as a condition's value is false: say which was meant.
            Node::Array(items) if items.is_empty() => {
                self.error(
                    node.span(),
                    "`when = []` lists no condition",
                    "remove `when` to run the step always, or list the conditions that must all hold",
                );
                Vec::new()
            }
            Node::Array(items) => items
                .iter()
                .filter_map(|i| match i.get_ref() {
                    Node::String(s) => self.condition(i.span(), s, &rules),
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

    /// One `when` condition, checked, with its text as written.
    fn condition(
        &mut self,
        span: Range<usize>,
        text: &str,
        rules: &RefRules<'_>,
    ) -> Option<Condition> {
        let template =
            self.checked_template(&Spanned::new(span.clone(), text.to_string()), rules, "when")?;
        // A condition that reads nothing never changes: an empty one never
        // lets the step run, and any other text ("no", "off") always does.
        // Only `true` and `false` say so on purpose.
        if template.is_literal() && !matches!(text, "true" | "false") {
            // Only the empty text is false: blanks are a text, so true.
            let never = text.is_empty();
            self.error(
                span,
                format!(
                    "`when = {text:?}` reads no value, so the step would {}",
                    if never { "never run" } else { "always run" }
                ),
                "a condition reads a value, such as `when = \"${params.send_mail}\"` (false when empty, 0, false, null or an empty list); to turn the step off for now, write `when = \"false\"`",
            );
            return None;
        }
        Some(Condition {
            template,
            text: text.to_string(),
        })
    }

    fn concurrency(&mut self, step: &AuthoredStep) -> usize {
        let Some(c) = &step.fields.concurrency else {
            return 1;
        };
        if step.has_for_each() == Some(false) {
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

    /// Each artifact's path names a field its component's output has: a
    /// misspelt one would write no file and say nothing.
    fn check_artifact_paths(&mut self, f: &StepFields, d: &Description) {
        for (file, path) in &f.artifacts {
            let text = path.get_ref();
            if text.is_empty() || text.contains("${") || file.get_ref().contains("${") {
                continue;
            }
            let segments: Vec<String> = text.split('.').map(str::to_string).collect();
            if let Err(e) = shape::output_at(&d.output_schema, &segments) {
                let message = match e.holds_nothing_there(|depth| segments[..depth].join(".")) {
                    Some(why) => format!("artifact `{}` reads nothing: {why}", file.get_ref()),
                    None => format!(
                        "artifact `{}` reads output field `{}`, which `{}` does not return",
                        file.get_ref(),
                        e.field,
                        d.name
                    ),
                };
                // The fields where the path went astray, or, past a
                // list or a value, the output's own.
                let fields = if e.known.is_empty() {
                    shape::property_names(&d.output_schema, &[])
                } else {
                    e.known
                };
                self.error(
                    path.span(),
                    message,
                    format!("`{}` returns: {}", d.name, fields.join(", ")),
                );
            }
        }
    }

    /// `ledger` names a list its component's output has: a misspelt path
    /// would record nobody in the ledger, run after run, and say nothing.
    fn check_ledger_path(&mut self, path: &Spanned<String>, segments: &[String], d: &Description) {
        let hint = || {
            format!(
                "name a list in the output whose entries have a `key`; `{}` returns: {}",
                d.name,
                shape::property_names(&d.output_schema, &[]).join(", ")
            )
        };
        match shape::output_at(&d.output_schema, segments) {
            Err(e) => {
                let message = match e.holds_nothing_there(|depth| segments[..depth].join(".")) {
                    Some(why) => format!("`ledger = \"{}\"` names nothing: {why}", path.get_ref()),
                    None => format!(
                        "`ledger = \"{}\"` names output field `{}`, which `{}` does not return",
                        path.get_ref(),
                        e.field,
                        d.name
                    ),
                };
                self.error(path.span(), message, hint());
            }
            Ok(Some(schema)) => {
                let types = shape::types_of(&d.output_schema, schema);
                if types.is_some_and(|t| !t.contains("array")) {
                    let message = format!(
                        "`ledger = \"{}\"` names a field of `{}` that is never a list",
                        path.get_ref(),
                        d.name
                    );
                    self.error(path.span(), message, hint());
                }
            }
            Ok(None) => {}
        }
    }

    /// Refuses an artifact file an earlier step that always runs writes
    /// too (`first`: each name's first such writer): the run would keep
    /// only the later one's file and report the same path twice.
    fn one_writer_per_artifact(
        &mut self,
        f: &StepFields,
        first: &mut HashMap<String, Range<usize>>,
    ) {
        for (file, _) in &f.artifacts {
            let name = file.get_ref();
            if name.contains("${") {
                continue;
            }
            match first.get(&name.to_lowercase()) {
                Some(earlier) => {
                    let (line, _) = self.source.line_col(earlier.start);
                    self.error(
                        file.span(),
                        format!("artifact `{name}` is written by an earlier step too"),
                        format!(
                            "it is first written on line {line}, and one step's file would replace the other's; give each artifact its own file name"
                        ),
                    );
                }
                None => {
                    first.insert(name.to_lowercase(), file.span());
                }
            }
        }
    }

    fn artifacts(&mut self, f: &StepFields) -> Vec<(String, Vec<String>)> {
        let mut artifacts = Vec::new();
        for (file, path) in &f.artifacts {
            let name = file.get_ref();
            if self.reference_in_artifact(file) || self.reference_in_artifact(path) {
                continue;
            }
            if name.is_empty()
                || name.contains(['/', '\\'])
                || name.starts_with('.')
                || name.chars().any(char::is_control)
            {
                self.error(
                    file.span(),
                    format!(
                        "artifact name `{}` must be a plain file name",
                        name.escape_debug()
                    ),
                    "for example `report.html`: no folder, no leading `.`, no control characters",
                );
                continue;
            }
            if name.len() > MAX_ARTIFACT_NAME_BYTES {
                self.error(
                    file.span(),
                    format!(
                        "artifact name is {} bytes long, more than a file name may be ({MAX_ARTIFACT_NAME_BYTES})",
                        name.len()
                    ),
                    "give it a shorter name: the file is written under it once the step has run",
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

    /// `ledger`: a dotted path into the output of a step without
    /// `for_each` (whose items the ledger records already).
    fn ledger(&mut self, f: &StepFields) -> Option<Vec<String>> {
        let path = f.ledger.as_ref()?;
        if f.for_each.is_some() {
            self.error(
                path.span(),
                "`ledger` only applies to a step without `for_each`",
                "a `for_each` step's items are in the ledger already, by their `for_each_key`",
            );
            return None;
        }
        let segments: Vec<String> = path.get_ref().split('.').map(str::to_string).collect();
        if segments.iter().any(|s| !is_identifier(s)) {
            self.error(
                path.span(),
                format!("`ledger = \"{}\"` is not a path into the step's output", path.get_ref()),
                "name a list in the output whose entries have a `key`, for example `ledger = \"adopted\"`",
            );
            return None;
        }
        Some(segments)
    }

    /// `artifacts` name files and paths into the output: no references,
    /// and above all no secret.
    fn reference_in_artifact(&mut self, s: &Spanned<String>) -> bool {
        let Ok(template) = Template::parse(s.get_ref()) else {
            return false;
        };
        let Some((r, range)) = template.references().into_iter().next() else {
            return false;
        };
        let span = self.inner_span(s, range);
        match &r.root {
            super::super::template::Root::Secret(name) => self.error(
                span,
                format!("secret `{name}` cannot be used in a step's `artifacts`"),
                "secrets go only where credentials go (a connection's `auth` or `headers`)",
            ),
            _ => self.error(
                span,
                "`artifacts` take a file name and a path into the step's output, not references",
                "for example `artifacts = { \"report.html\" = \"html\" }`",
            ),
        }
        true
    }

    /// The step's component, what it says about itself and its input schema
    /// (asked once per component, and reported at each step using it).
    fn component(&mut self, uses: &Spanned<String>) -> Option<Component> {
        let component = self.uses(uses)?;
        // A component used by several steps is described once, and each
        // step keeps the one read of its file.
        let (component, described) = match self.described.iter().find(|(c, _)| *c == component) {
            Some((first, described)) => (first.clone(), described.clone()),
            None => {
                let described = self.describe(&component);
                self.described.push((component.clone(), described.clone()));
                (component, described)
            }
        };
        match described {
            Ok((description, schema)) => Some((component, description, schema)),
            Err((message, hint)) => {
                self.error(uses.span(), message, hint);
                None
            }
        }
    }

    /// What `component` says about itself, and its input schema compiled.
    fn describe(&self, component: &ComponentRef) -> Described {
        let description = match self.ctx.catalog.describe(component) {
            Ok(d) => d.map(Arc::new),
            Err(e) => {
                return Err((
                    format!("component `{component}` cannot be used: {}", e.message),
                    e.hint,
                ));
            }
        };
        let schema = match &description {
            Some(d) => match InputSchema::new(&d.name, &d.input_schema) {
                Ok(schema) => Some(Arc::new(schema)),
                Err(e) => {
                    return Err((
                        format!("component `{component}` describes its input with a schema that is not valid: {e}"),
                        "fix the component's `describe`: its input schema must be JSON Schema draft 2020-12".into(),
                    ));
                }
            },
            None => None,
        };
        Ok((description, schema))
    }

    fn uses(&mut self, uses: &Spanned<String>) -> Option<ComponentRef> {
        let text = uses.get_ref();
        if text.starts_with(OCI_SCHEME) {
            return match self.ctx.remote.resolve(text, &self.source.path) {
                Ok(path) => Some(ComponentRef::pulled(path, text)),
                Err(e) => {
                    self.error(uses.span(), e.message, e.hint);
                    None
                }
            };
        }
        // `https://…/step.wasm` would be looked for as a file named so.
        if let Some((scheme, _)) = text.split_once("://") {
            self.error(
                uses.span(),
                format!("`uses` cannot fetch a component over `{scheme}://`"),
                "publish it to an OCI registry and write `uses = \"oci://REGISTRY/REPO:TAG\"`, or download the .wasm file and give its path",
            );
            return None;
        }
        let looks_like_path = text.ends_with(".wasm")
            || text.contains('/')
            || text.contains('\\')
            || text == "."
            || text == "..";
        if looks_like_path {
            let path = PathBuf::from(text);
            let path = if path.is_absolute() {
                path
            } else {
                self.source.dir().join(path)
            };
            return match component_file::check(&path) {
                Ok(()) => Some(ComponentRef::file(path)),
                Err(e) => {
                    self.error(uses.span(), e.to_string(), e.hint());
                    None
                }
            };
        }
        if self.ctx.builtins.contains(&text.as_str()) {
            return Some(ComponentRef::Builtin(text.clone()));
        }
        self.error(
            uses.span(),
            format!("`{text}` is not a built-in component"),
            format!(
                "built-ins are: {}; or give a path to a .wasm file, or `oci://REGISTRY/REPO:TAG`",
                self.ctx.builtins.join(", ")
            ),
        );
        None
    }
}

type Component = (
    ComponentRef,
    Option<Arc<Description>>,
    Option<Arc<InputSchema>>,
);

/// A component's description and compiled input schema, or why it cannot
/// be used (the message and hint of the error each step using it gets).
pub(super) type Described =
    Result<(Option<Arc<Description>>, Option<Arc<InputSchema>>), (String, String)>;

/// A step's settings that need nothing but themselves.
struct Fields {
    concurrency: usize,
    timeout: std::time::Duration,
    on_error: OnError,
    retry: Option<RetryPolicy>,
    artifacts: Vec<(String, Vec<String>)>,
    max_output: usize,
    max_item_output: usize,
    ledger: Option<Vec<String>>,
}

/// What a step may refer to, from where it stands in the flow.
struct StepContext<'a> {
    params: &'a BTreeMap<String, Value>,
    declared: &'a HashSet<&'a str>,
    earlier: &'a HashSet<&'a str>,
    later: &'a [String],
    /// The steps with `approval`, wherever they are.
    gated: &'a HashSet<&'a str>,
    /// What is known of the earlier steps' outputs.
    shapes: &'a BTreeMap<String, StepShape>,
}
