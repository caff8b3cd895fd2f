//! A step's `with` against its component's input schema, before anything
//! runs.
//!
//! What is known of the input now is checked: its literal parts and params
//! as values (with the full schema), and each reference whose shape is
//! known (another step's output schema, `${item}` from such a list, run
//! fields, environment variables, which are text) by its JSON type. Values
//! known only at run time are checked then, by [`InputSchema::check`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;
use toml::Spanned;

use super::super::authored::{AuthoredStep, Node, OnError, StepFields};
use super::super::catalog::Description;
use super::super::model::Step;
use super::super::resolve::walk;
use super::super::schema::shape::{self, compatible, type_names};
use super::super::schema::{InputPath, InputSchema, Segment};
use super::super::template::{Reference, Root, Template};
use super::references::text_of;
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
    pub(super) fn of(step: &Step) -> Self {
        Self {
            description: step.description.clone(),
            may_be_null: !step.when.is_empty() || step.on_error == OnError::Continue,
            for_each: step.for_each.is_some(),
        }
    }
}

/// What references can be known to be while compiling one step.
pub(super) struct Known<'a> {
    params: &'a BTreeMap<String, Value>,
    shapes: &'a BTreeMap<String, StepShape>,
    /// `${item}` is an element of this step's output at this path.
    item: Option<(String, Vec<String>)>,
}

impl<'a> Known<'a> {
    pub(super) fn new(
        params: &'a BTreeMap<String, Value>,
        shapes: &'a BTreeMap<String, StepShape>,
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
            item,
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
    /// The output fields a step's settings read besides `with` (`when`,
    /// `for_each`, `for_each_key`, `approval`) exist: a misspelt one would
    /// read as nothing, and a step would be skipped, run no item or wait
    /// for no approval without a word.
    pub(super) fn check_setting_paths(&mut self, step: &AuthoredStep, known: &Known<'_>) {
        let f = &step.fields;
        let mut texts: Vec<Spanned<String>> = Vec::new();
        texts.extend(f.for_each.iter().cloned());
        texts.extend(f.for_each_key.iter().cloned());
        for node in [&step.when, &step.approval].into_iter().flatten() {
            strings_of(node, &mut texts);
        }
        for text in &texts {
            let Ok(template) = Template::parse(text.get_ref()) else {
                continue;
            };
            for (r, _) in template.references() {
                if matches!(r.root, Root::Step(_) | Root::Item) {
                    self.shape_of(r, text, known);
                }
            }
        }
    }

    pub(super) fn check_inputs(
        &mut self,
        f: &StepFields,
        with: Option<&Spanned<Node>>,
        schema: &InputSchema,
        known: &Known<'_>,
    ) {
        let mut probe = Probe::default();
        let instance = match with {
            Some(node) => self.probe(node, InputPath::default(), known, &mut probe),
            None => Value::Object(serde_json::Map::new()),
        };
        let root = with.map_or(f.uses.span(), Spanned::span);
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
            return Value::Null;
        };
        if template.is_literal() {
            return Value::String(text_of(&template));
        }
        let shape = match template.as_single_ref() {
            Some(r) => self.shape_of(r, s, known),
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

    fn shape_of(&mut self, r: &Reference, s: &Spanned<String>, known: &Known<'_>) -> Shape {
        let run_field = |t: &str| Shape::Types([t.to_string()].into(), "a run field".into());
        match &r.root {
            Root::Param(name) => known
                .params
                .get(name)
                .map_or(Shape::Unknown, |v| Shape::Value(walk(v.clone(), &r.path))),
            Root::Env { .. } => Shape::Types(
                ["string".into()].into(),
                "environment variables are text".into(),
            ),
            Root::Run(field) if field == "dry_run" => run_field("boolean"),
            Root::Run(field) if field == "approvals" => Shape::Unknown,
            Root::Run(_) => run_field("string"),
            Root::Step(id) => self.output_shape(id, &r.path, s, known),
            Root::Item => match &known.item {
                Some((id, path)) => {
                    let mut full = path.clone();
                    full.extend(r.path.iter().cloned());
                    self.output_shape(id, &full, s, known)
                }
                None => Shape::Unknown,
            },
            Root::Secret(_) => Shape::Unknown,
        }
    }

    /// The shape at `path` in step `id`'s output, from its output schema.
    fn output_shape(
        &mut self,
        id: &str,
        path: &[String],
        s: &Spanned<String>,
        known: &Known<'_>,
    ) -> Shape {
        let Some(step) = known.shapes.get(id) else {
            return Shape::Unknown;
        };
        let (Some(d), false) = (&step.description, step.for_each) else {
            return Shape::Unknown;
        };
        let schema = match shape::output_at(&d.output_schema, path) {
            Ok(Some(schema)) => schema,
            Ok(None) => return Shape::Unknown,
            Err(e) => {
                self.error(
                    s.span(),
                    format!("step `{id}` has no output field `{}`", e.field),
                    format!("`{}` returns: {}", d.name, e.known.join(", ")),
                );
                return Shape::Unknown;
            }
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
}

/// Every text in `node` (a `when` list, an `approval` table), with its span.
fn strings_of(node: &Spanned<Node>, out: &mut Vec<Spanned<String>>) {
    match node.get_ref() {
        Node::String(text) => out.push(Spanned::new(node.span(), text.clone())),
        Node::Array(items) => items.iter().for_each(|i| strings_of(i, out)),
        Node::Table(entries) => entries.iter().for_each(|(_, v)| strings_of(v, out)),
        _ => {}
    }
}
