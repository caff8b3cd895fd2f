//! A step's `with` against its component's input schema, before anything
//! runs.
//!
//! What is known of the input now is checked: its literal parts and params
//! as values (with the full schema), and each reference whose shape is
//! known (another step's output schema, `${item}` from such a list, run
//! fields, environment variables, which are text) by its JSON type. Values
//! known only at run time are checked then, by [`InputSchema::check`].
//!
//! Every reference a step makes into an earlier step's output is checked
//! against that step's output schema, whether its component describes its
//! own input or not ([`Compiler::check_output_path`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;
use toml::Spanned;

use super::super::authored::{AuthoredStep, Node, OnError};
use super::super::catalog::Description;
use super::super::item_key::{BLANK_KEY_HINT, BLANK_KEY_WHY, item_key};
use super::super::resolve::walk;
use super::super::schema::shape::{self, compatible, type_names};
use super::super::schema::{InputPath, InputSchema, Segment};
use super::super::template::{Reference, Root, Template};
use super::references::{param_path_problem, text_of};
use super::{Compiler, literal_json};

/// What a later step can know of an earlier one's output.
pub(super) struct StepShape {
    description: Option<Arc<Description>>,
    /// Skipped (`when`) or failed under `continue`: its output reads as null.
    may_be_null: bool,
    /// A `for_each` step's output is its items' results, not the schema's.
    for_each: bool,
}

impl StepShape {
    /// What is known of the output of `step`, whose component describes
    /// itself as `description`: the same whether the step has problems of
    /// its own or not. A setting that could not be read counts as set.
    pub(super) fn of(step: &AuthoredStep, description: Option<Arc<Description>>) -> Self {
        let when = match &step.when {
            Some(w) => !matches!(w.get_ref(), Node::Array(items) if items.is_empty()),
            None => step.unreadable("when"),
        };
        let continues = match &step.fields.on_error {
            Some(o) => *o.get_ref() == OnError::Continue,
            None => step.unreadable("on_error"),
        };
        Self {
            description,
            may_be_null: when || continues,
            for_each: step.has_for_each() != Some(false),
        }
    }

    /// Nothing known: a step whose id is used twice.
    pub(super) fn unknown() -> Self {
        Self {
            description: None,
            may_be_null: true,
            for_each: false,
        }
    }
}

/// What references can be known to be while compiling one step.
pub(super) struct Known<'a> {
    params: &'a BTreeMap<String, Value>,
    shapes: &'a BTreeMap<String, StepShape>,
    /// The step being compiled: a reference to its own output is an
    /// error, not something to type by another step of that id.
    own: &'a str,
    /// `${item}` is an element of this step's output at this path.
    item: Option<(String, Vec<String>)>,
}

impl<'a> Known<'a> {
    /// `for_each` is the step's list, when it is known to be a reference
    /// to one; `${item}` is then typed as its element.
    pub(super) fn new(
        params: &'a BTreeMap<String, Value>,
        shapes: &'a BTreeMap<String, StepShape>,
        own: &'a str,
        for_each: Option<&Template>,
    ) -> Self {
        let item = for_each
            .and_then(Template::as_single_ref)
            .and_then(|r| match &r.root {
                Root::Step(id) => {
                    let mut path = r.path.clone();
                    path.push("0".to_string());
                    Some((id.clone(), path))
                }
                _ => None,
            });
        Self {
            params,
            shapes,
            own,
            item,
        }
    }

    /// The value a reference is known to have already: a param's, which
    /// the flow (and `--param`) gives in full.
    pub(super) fn value(&self, r: &Reference) -> Option<Value> {
        match self.shape(r) {
            Shape::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The JSON types (null left out) a reference is known to have, and
    /// what says so ("environment variables are text"), when its type is
    /// known but not its value.
    pub(super) fn types(&self, r: &Reference) -> Option<(Vec<String>, String)> {
        match self.shape(r) {
            Shape::Types(types, source) => {
                let types = types.into_iter().filter(|t| t != "null").collect();
                Some((types, source))
            }
            _ => None,
        }
    }

    /// What a reference is known to be now.
    fn shape(&self, r: &Reference) -> Shape {
        let run_field = |t: &str| Shape::Types([t.to_string()].into(), "a run field".into());
        match &r.root {
            // A path that can hold nothing is told once, as such (see
            // `param_path_problem`), not again as a null of the wrong type.
            Root::Param(name) => match self.params.get(name) {
                Some(v) if param_path_problem(name, v, &r.path).is_none() => {
                    Shape::Value(walk(v.clone(), &r.path))
                }
                _ => Shape::Unknown,
            },
            Root::Env { .. } => Shape::Types(
                ["string".into()].into(),
                "environment variables are text".into(),
            ),
            Root::Run(field) if field == "dry_run" => run_field("boolean"),
            Root::Run(field) if field == "approvals" => Shape::Unknown,
            Root::Run(field) if field == "earlier_unfinished" || field == "only" => {
                match r.path.is_empty() {
                    true => run_field("array"),
                    false => Shape::Unknown,
                }
            }
            Root::Run(_) => run_field("string"),
            Root::Step(id) => self.output_shape(id, &r.path),
            Root::Item => match &self.item {
                Some((id, path)) => {
                    let mut full = path.clone();
                    full.extend(r.path.iter().cloned());
                    self.output_shape(id, &full)
                }
                None => Shape::Unknown,
            },
            Root::Secret(_) => Shape::Unknown,
        }
    }

    /// The shape at `path` in step `id`'s output, from its output schema.
    fn output_shape(&self, id: &str, path: &[String]) -> Shape {
        let Some((d, step)) = self.described(id) else {
            return Shape::Unknown;
        };
        let Ok(Some(schema)) = shape::output_at(&d.output_schema, path) else {
            return Shape::Unknown;
        };
        match shape::types_of(&d.output_schema, schema) {
            Some(mut types) => {
                if step.may_be_null {
                    types.insert("null".into());
                }
                Shape::Types(types, format!("output of `{}`", d.name))
            }
            None => Shape::Unknown,
        }
    }

    /// The description of an earlier step whose output is what its output
    /// schema says (not a `for_each` step's list of results).
    fn described(&self, id: &str) -> Option<(&Description, &StepShape)> {
        if id == self.own {
            return None;
        }
        let step = self.shapes.get(id)?;
        match (&step.description, step.for_each) {
            (Some(d), false) => Some((d, step)),
            _ => None,
        }
    }
}

/// A reference's value or type, as far as it is known.
enum Shape {
    Value(Value),
    Types(BTreeSet<String>, String),
    Unknown,
}

/// The input as known now, and where each part of it is written.
#[derive(Default)]
struct Probe {
    unknown: Vec<InputPath>,
    typed: Vec<(InputPath, BTreeSet<String>, String)>,
    spans: BTreeMap<InputPath, Range<usize>>,
}

impl Compiler<'_, '_> {
    /// A reference into an earlier step's output (or to `${item}` of
    /// such a list) names a field its output schema has: a misspelt one
    /// would read as null, and a step would get nothing, be skipped, run
    /// no item or wait for no approval without a word.
    pub(super) fn check_output_path(
        &mut self,
        r: &Reference,
        span: Range<usize>,
        known: &Known<'_>,
    ) {
        let (id, path, list) = match &r.root {
            Root::Step(id) => (id, r.path.clone(), 0),
            Root::Item => {
                let Some((id, list)) = &known.item else {
                    return;
                };
                let mut path = list.clone();
                path.extend(r.path.iter().cloned());
                (id, path, list.len())
            }
            _ => return,
        };
        let Some((d, _)) = known.described(id) else {
            return;
        };
        // A list `for_each` misnames is reported there, not at each use of
        // `${item}`.
        if shape::output_at(&d.output_schema, &path[..list]).is_err() {
            return;
        }
        let Err(e) = shape::output_at(&d.output_schema, &path) else {
            return;
        };
        // `${item}`'s path starts with its list's, which is fine.
        let at = |depth: usize| match &r.root {
            Root::Item => ["item"]
                .into_iter()
                .chain(path[list.min(depth)..depth].iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join("."),
            _ => ["steps", id.as_str()]
                .into_iter()
                .chain(path[..depth].iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join("."),
        };
        match e.holds_nothing_there(at) {
            Some(why) => {
                let hint = match e.holds {
                    Some((shape::Holds::List, _)) => {
                        "a path into a list names a place (0, 1, …); to handle each item, point a step's `for_each` at the list"
                    }
                    _ => "end the reference at the value itself",
                };
                self.error(span, why, hint);
            }
            None => self.error(
                span,
                format!("step `{id}` has no output field `{}`", e.field),
                format!("`{}` returns: {}", d.name, e.known.join(", ")),
            ),
        }
    }

    /// `for_each` over what is known not to be a list would fail at run
    /// time ("`for_each` must be a list, but it is an object"): a param
    /// that holds something else, an environment variable (always text),
    /// a run field, or a field whose type the step's output schema gives.
    /// Null is an empty list, so what may be null or a list passes. A list
    /// known in full is also checked for items with a blank key.
    /// Whether `for_each` may be a list (its items can then be typed).
    pub(super) fn for_each_list(
        &mut self,
        fe: &Spanned<String>,
        template: &Template,
        known: &Known<'_>,
    ) -> bool {
        let Some(r) = template.as_single_ref() else {
            return true;
        };
        let text = fe.get_ref();
        let example =
            "point `for_each` at a list, for example `for_each = \"${steps.diff.missing}\"`";
        let (message, hint) = match known.shape(r) {
            Shape::Value(value) => {
                let kind = shape::json_type(&value);
                if let Value::Array(items) = &value {
                    self.blank_item_keys(fe, items);
                }
                if matches!(kind, "array" | "null") {
                    return true;
                }
                let hint = match &r.root {
                    Root::Param(name) if r.path.is_empty() => format!(
                        "make `{name}` a list (in `[params]` or with --param {name}='[...]'), or point `for_each` at one"
                    ),
                    _ => example.to_string(),
                };
                (format!("`{text}` is {}", type_names([kind])), hint)
            }
            Shape::Types(types, source) => {
                let kinds: Vec<&str> = types
                    .iter()
                    .map(String::as_str)
                    .filter(|t| *t != "null")
                    .collect();
                if kinds.is_empty() || kinds.contains(&"array") {
                    return true;
                }
                let hint = match &r.root {
                    Root::Env { .. } => "an environment variable is always text: put the list in `[params]` or in an earlier step's output, and point `for_each` at it".to_string(),
                    _ => example.to_string(),
                };
                (
                    format!("`{text}` ({source}) is {}", type_names(kinds)),
                    hint,
                )
            }
            Shape::Unknown => return true,
        };
        self.error(
            fe.span(),
            format!("`for_each` must be a list, but {message}"),
            hint,
        );
        false
    }

    /// A list known in full (a param) whose items name themselves with a
    /// blank key would fail those items at run time ([`item_key`]): the
    /// first is refused at `for_each`, with how many more there are.
    fn blank_item_keys(&mut self, fe: &Spanned<String>, items: &[Value]) {
        let mut blank = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| item_key(item).err().map(|why| (i, why)));
        let Some((first, why)) = blank.next() else {
            return;
        };
        let more = match blank.count() {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        self.error(
            fe.span(),
            format!(
                "item {} of `{}`{more} has a blank key: {why}; {BLANK_KEY_WHY}",
                first + 1,
                fe.get_ref()
            ),
            BLANK_KEY_HINT,
        );
    }

    /// The step's `with` (or no `with`, `None`) against its component's
    /// input schema, as far as it is known now; `uses` is where a problem
    /// of the whole input is reported when there is no `with`.
    pub(super) fn check_inputs(
        &mut self,
        uses: &Spanned<String>,
        with: Option<&Spanned<Node>>,
        schema: &InputSchema,
        known: &Known<'_>,
    ) {
        let mut probe = Probe::default();
        let instance = match with {
            Some(node) => self.probe(node, InputPath::default(), known, &mut probe),
            None => Value::Object(serde_json::Map::new()),
        };
        let root = with.map_or(uses.span(), Spanned::span);
        let span_of = |path: &InputPath| {
            let mut path = path.clone();
            loop {
                if let Some(span) = probe.spans.get(&path) {
                    return span.clone();
                }
                if path.0.pop().is_none() {
                    return root.clone();
                }
            }
        };
        for m in schema.known_mismatches(&instance, &probe.unknown) {
            self.error(span_of(&m.path), m.message, m.hint);
        }
        for (path, actual, what) in &probe.typed {
            let Some(expected) = shape::subschema_at(schema.schema(), &path.0)
                .and_then(|s| shape::types_of(schema.schema(), s))
            else {
                continue;
            };
            if !compatible(&expected, actual) {
                let expected = type_names(expected.iter().map(String::as_str));
                let actual = type_names(actual.iter().map(String::as_str));
                self.error(
                    span_of(path),
                    format!("`{path}` must be {expected}, but {what} is {actual}"),
                    format!("give `{path}` {expected}, or read another value"),
                );
            }
        }
    }

    /// The value of `node` as far as it is known; records what is not.
    fn probe(
        &mut self,
        node: &Spanned<Node>,
        at: InputPath,
        known: &Known<'_>,
        probe: &mut Probe,
    ) -> Value {
        match node.get_ref() {
            Node::String(s) => {
                self.probe_text(&Spanned::new(node.span(), s.clone()), at, known, probe)
            }
            Node::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let mut path = at.clone();
                        path.0.push(Segment::Index(i));
                        probe.spans.insert(path.clone(), item.span());
                        self.probe(item, path, known, probe)
                    })
                    .collect(),
            ),
            Node::Table(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let mut path = at.clone();
                        path.0.push(Segment::Key(k.get_ref().clone()));
                        probe.spans.insert(path.clone(), k.span());
                        (k.get_ref().clone(), self.probe(v, path, known, probe))
                    })
                    .collect(),
            ),
            other => literal_json(other),
        }
    }

    fn probe_text(
        &mut self,
        s: &Spanned<String>,
        at: InputPath,
        known: &Known<'_>,
        probe: &mut Probe,
    ) -> Value {
        let Ok(template) = Template::parse(s.get_ref()) else {
            // Reported where the template is read; nothing known here.
            probe.unknown.push(at);
            return Value::Null;
        };
        if template.is_literal() {
            return Value::String(text_of(&template));
        }
        let shape = match template.as_single_ref() {
            Some(r) => known.shape(r),
            None => Shape::Types(["string".to_string()].into(), "text".to_string()),
        };
        match shape {
            Shape::Value(v) => v,
            Shape::Types(types, source) => {
                let what = format!("`{}` ({source})", s.get_ref());
                probe.unknown.push(at.clone());
                probe.typed.push((at, types, what));
                Value::Null
            }
            Shape::Unknown => {
                probe.unknown.push(at);
                Value::Null
            }
        }
    }
}
